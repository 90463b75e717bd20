//! What the daemon cannot go below from its own side (issue 26), measured
//! beside the side-by-side table: gRPC's C core alone, and the kernel's
//! price for closing an inotify instance that has watches.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use grpcio::{EnvBuilder, ServerBuilder, ServerCredentials};

/// Set in the environment of the bench's own child, which then only holds
/// what it names until killed: `grpc <socket>`, a bare gRPC server;
/// `inotify <dir>`, an inotify instance watching `dir` and its parent;
/// `nothing`, nothing.
pub const ALONE: &str = "BENCH_FLOOR_ALONE";

/// The child's part (see [`ALONE`]). SIGTERM keeps its default action:
/// the kernel ends the process, no code of ours runs.
pub fn hold(what: &str) -> ! {
    match what.split_once(' ') {
        Some(("grpc", socket)) => serve_alone(Path::new(socket)),
        Some(("inotify", dir)) => {
            let dir = Path::new(dir);
            let held = inotify_with(&[dir, dir.parent().unwrap_or(dir)]);
            fs::write(dir.join("ready"), b"").expect("ready file");
            loop {
                thread::park();
                let _ = &held;
            }
        }
        _ => loop {
            thread::park();
        },
    }
}

/// grpcio's environment as the daemon builds it (one completion queue),
/// one server on a Unix socket, no service, no other thread or descriptor
/// of ours.
fn serve_alone(socket: &Path) -> ! {
    let env = std::sync::Arc::new(EnvBuilder::new().cq_count(1).name_prefix("grpc").build());
    let mut server = ServerBuilder::new(env).build().expect("a bare server");
    let addr = format!("unix:{}", socket.display());
    server
        .add_listening_port(addr, ServerCredentials::insecure())
        .expect("bind");
    server.start();
    loop {
        thread::park();
    }
}

/// Threads, open descriptors and context switches over `idle` of a bare
/// gRPC server, started as the daemon is (same `GRPC_POLL_STRATEGY`, as
/// the daemon sets it when unset).
pub struct Alone {
    pub threads: u64,
    pub fds: usize,
    pub names: String,
    pub wakeups: u64,
}

pub fn grpc_alone(scratch: &Path, idle: Duration) -> Option<Alone> {
    let socket = scratch.join("alone.sock");
    let mut child = Command::new(std::env::current_exe().ok()?)
        .env(ALONE, format!("grpc {}", socket.display()))
        .env(
            "GRPC_POLL_STRATEGY",
            std::env::var("GRPC_POLL_STRATEGY").unwrap_or_else(|_| "poll".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_secs(1));
    let w0: u64 = super::switches(pid).iter().map(|(_, n)| n).sum();
    thread::sleep(idle);
    let w1: u64 = super::switches(pid).iter().map(|(_, n)| n).sum();
    let names = super::switches(pid)
        .iter()
        .map(|(n, _)| n.clone())
        .collect::<Vec<_>>()
        .join(", ");
    let alone = Alone {
        threads: super::proc_status(pid, "Threads:"),
        fds: fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count),
        names,
        wakeups: (w1.saturating_sub(w0)) * 30 / idle.as_secs().max(1),
    };
    let _ = child.kill();
    let _ = child.wait();
    Some(alone)
}

/// An inotify instance with a watch on each of `dirs`.
fn inotify_with(dirs: &[&Path]) -> Option<OwnedFd> {
    // SAFETY: no pointers; a non-negative result is a new descriptor.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is open and ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    for d in dirs {
        let c = std::ffi::CString::new(d.to_str()?).ok()?;
        // SAFETY: a valid descriptor and NUL-terminated path.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_CREATE) } < 0 {
            return None;
        }
    }
    Some(fd)
}

/// SIGTERM → reaped for a process of the bench's own that holds only an
/// inotify instance watching `dir` and its parent (`inotify`), or nothing
/// (`false`), ended by the kernel's default action: what a process that
/// watches with inotify pays at exit whatever its code does.
pub fn bare_exit(dir: &Path, inotify: bool) -> Option<Duration> {
    let what = if inotify {
        format!("inotify {}", dir.display())
    } else {
        "nothing".into()
    };
    let ready = dir.join("ready");
    let _ = fs::remove_file(&ready);
    let mut child = Command::new(std::env::current_exe().ok()?)
        .env(ALONE, what)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let started = || !inotify || ready.exists();
    while !started() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(2));
    }
    thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    super::sigterm(child.id());
    let _ = child.wait();
    Some(t.elapsed())
}

/// Marks every descriptor this process inherited (beyond stdio) close-on-
/// exec, so the daemons it starts hold only what they open themselves,
/// however the bench was started.
pub fn keep_inherited_to_ourselves() {
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD on a descriptor number; one closed
        // meanwhile (the directory's own) gives EBADF and nothing else.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}
