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
