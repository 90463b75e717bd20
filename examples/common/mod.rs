//! Shared by the example programs (demo, bench, soak); not an example itself.

use std::path::{Path, PathBuf};

/// The daemon binary to drive: `DAEMON_BIN` when set (e.g. a qemu wrapper),
/// else the binary built beside the examples
/// (target/<triple>/release/examples/X -> target/<triple>/release/<binary>).
///
/// # Errors
///
/// A message when neither can be found.
pub fn daemon_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("DAEMON_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("k8s-hostpath-device-plugin"))
        .ok_or_else(|| "cannot locate the daemon binary; set DAEMON_BIN".to_string())
}

/// User and system CPU of process `pid` so far, in clock ticks (0 when it
/// cannot be read).
#[allow(dead_code)] // bench and soak, not demo
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which ends at the last ')':
    // utime and stime, fields 14 and 15 of proc(5), are 12th and 13th here.
    let after = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Clock ticks per second.
#[allow(dead_code)] // bench and soak, not demo
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100).max(1)
}
