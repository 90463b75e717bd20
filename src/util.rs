//! Small synchronous helpers shared by the daemon, the simulated kubelet and tests.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Locks a mutex whose data is never left half-updated (plain field
/// stores), so a panic elsewhere while holding it does not make it unusable.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits on `cv` until `f` returns `Some` for the state behind `m`, or
/// `timeout` passes (then `None`). Woken by every notify, no polling;
/// poison-tolerant like [`lock`].
pub fn wait_on<S, T>(
    m: &Mutex<S>,
    cv: &Condvar,
    timeout: Duration,
    mut f: impl FnMut(&S) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut state = lock(m);
    loop {
        if let Some(t) = f(&state) {
            return Some(t);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        state = cv
            .wait_timeout(state, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// A channel to a Unix socket as the kubelet dials: plaintext, authority
/// `localhost`, and a connection of its own. gRPC otherwise shares one
/// connection per address across channels, and a peer that restarted leaves
/// it in a reconnect backoff (1 s) that a new channel would inherit.
pub fn unix_channel(env: &Arc<grpcio::Environment>, socket: &Path) -> grpcio::Channel {
    grpcio::ChannelBuilder::new(env.clone())
        .default_authority("localhost")
        .use_local_subchannel_pool(true)
        .connect(&unix_target(socket))
}

/// The gRPC target naming exactly `path`. gRPC parses a `unix:` target as a
/// URI and percent-decodes it (`%2F` would become `/`, `?` would start a
/// query), so every byte outside the URI's unreserved set and `/` is
/// percent-encoded here, `%` included: gRPC decodes it back to `path`.
pub fn unix_target(path: &Path) -> String {
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::from("unix:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives `fut` on the calling thread until it completes or `timeout` passes.
///
/// For plain threads only: never call it on a gRPC completion-queue thread.
pub fn block_on_timeout<F: Future>(fut: F, timeout: Duration) -> Option<F::Output> {
    let deadline = Instant::now() + timeout;
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::park_timeout(deadline - now);
    }
}

/// A wake-up counter (`eventfd(2)`): any thread, or a signal handler, adds
/// to it to wake the thread that polls it. One descriptor, however many
/// [`Notifier`]s share it (a socket pair took two, and signal-hook's pipe
/// registration a duplicate per signal).
#[derive(Debug)]
pub struct WakeFd {
    fd: Arc<OwnedFd>,
}

impl WakeFd {
    /// # Errors
    ///
    /// When the eventfd cannot be created.
    pub fn new() -> io::Result<WakeFd> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new
        // descriptor that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: see above: `fd` is open and ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(WakeFd { fd: Arc::new(fd) })
    }

    /// A handle that can wake the reader from anywhere (the same
    /// descriptor, shared: nothing is duplicated).
    pub fn notifier(&self) -> Notifier {
        Notifier(self.fd.clone())
    }

    /// Resets the counter; returns whether anything had woken it.
    pub fn drain(&self) -> bool {
        let mut count = 0u64;
        loop {
            // SAFETY: reads 8 bytes into `count`, which is 8 bytes long.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    std::ptr::addr_of_mut!(count).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
            if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return n > 0 && count > 0;
            }
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Wakes a [`WakeFd`] reader. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Notifier(Arc<OwnedFd>);

impl Notifier {
    /// Adds one to the counter. Async-signal-safe (one `write(2)`, no
    /// allocation), so a signal handler may call it (signal-hook keeps
    /// errno around handlers); a counter at its maximum already means
    /// "wake up".
    pub fn notify(&self) {
        let one = 1u64;
        // SAFETY: `write` reads 8 bytes from `one`, which is 8 bytes long.
        unsafe {
            libc::write(
                self.0.as_raw_fd(),
                std::ptr::addr_of!(one).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (`None`: forever).
/// Returns the readiness of each descriptor, in order.
///
/// # Errors
///
/// When `poll(2)` fails for a reason other than a signal.
pub fn poll_readable(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let with_events: Vec<(RawFd, i16)> = fds.iter().map(|&fd| (fd, libc::POLLIN)).collect();
    Ok(poll_events(&with_events, timeout)?
        .into_iter()
        .map(|r| r & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
        .collect())
}

/// `poll(2)` over `(fd, events)` pairs; returns each `revents` (0 when the
/// wait was interrupted by a signal). Negative descriptors are ignored.
///
/// # Errors
///
/// When `poll(2)` fails for a reason other than a signal.
pub fn poll_events(fds: &[(RawFd, i16)], timeout: Option<Duration>) -> io::Result<Vec<i16>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        None => -1,
        Some(d) => i32::try_from(d.as_millis().max(u128::from(!d.is_zero()))).unwrap_or(i32::MAX),
    };
    // SAFETY: `pfds` is a valid, exclusively borrowed array of pollfd.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![0; fds.len()]);
        }
        return Err(err);
    }
    Ok(pfds.iter().map(|p| p.revents).collect())
}

/// Lists and scans this large hand their temporary memory back to the
/// system afterwards: on an edge node the resident size is what counts,
/// and glibc otherwise keeps the freed memory of each thread's arena.
pub const TRIM_AFTER: usize = 1000;

/// Returns free heap pages to the kernel (glibc's `malloc_trim`).
///
/// At most once a second: a trim hands free pages back to the kernel, and
/// the next large list faults them in again, so under a storm of changes
/// trimming after every list cost more CPU than the list itself.
pub fn trim_heap() {
    use std::sync::atomic::Ordering;
    let now = trim_clock();
    let last = LAST_TRIM.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < TRIM_EVERY_MS {
        // Done later by the health dispatcher ([`trim_due`]).
        TRIM_PENDING.store(true, Ordering::Relaxed);
        return;
    }
    LAST_TRIM.store(now.max(1), Ordering::Relaxed);
    TRIM_PENDING.store(false, Ordering::Relaxed);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

const TRIM_EVERY_MS: u64 = 1000;
static LAST_TRIM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static TRIM_PENDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Milliseconds on a monotonic clock that starts with the process.
fn trim_clock() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A trim skipped by the rate limit: how long until it may run (zero: now).
pub fn trim_due() -> Option<Duration> {
    use std::sync::atomic::Ordering;
    if !TRIM_PENDING.load(Ordering::Relaxed) {
        return None;
    }
    let since = trim_clock().saturating_sub(LAST_TRIM.load(Ordering::Relaxed));
    Some(Duration::from_millis(TRIM_EVERY_MS.saturating_sub(since)))
}

/// `path` itself, then its ancestors up to and including the nearest one
/// that exists: watching these sees the path appear, whatever is missing.
pub fn path_and_ancestors(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    let mut cur = path;
    while let Some(parent) = cur.parent() {
        out.push(parent.to_path_buf());
        if parent.is_dir() {
            break;
        }
        cur = parent;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_timeout_completes_and_times_out() {
        assert_eq!(
            block_on_timeout(async { 7 }, Duration::from_millis(10)),
            Some(7)
        );
        let never = futures::future::pending::<()>();
        let start = Instant::now();
        assert_eq!(block_on_timeout(never, Duration::from_millis(50)), None);
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn unix_targets_encode_what_grpc_would_decode() {
        assert_eq!(unix_target(Path::new("/a/b-c_d.e~f")), "unix:/a/b-c_d.e~f");
        assert_eq!(
            unix_target(Path::new("/d i/%2E?#:x")),
            "unix:/d%20i/%252E%3F%23%3Ax"
        );
    }

    /// gRPC itself decodes the encoded target back to the very path: a
    /// server bound through it creates the file with the literal name.
    #[test]
    fn grpc_binds_the_literal_path() {
        let dir = std::env::temp_dir().join(format!("hpdp-uri-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let name = "a%2Fb?c#d e";
        let path = dir.join(name);
        let env = Arc::new(grpcio::EnvBuilder::new().cq_count(1).build());
        let mut server = grpcio::ServerBuilder::new(env).build().unwrap();
        server
            .add_listening_port(unix_target(&path), grpcio::ServerCredentials::insecure())
            .unwrap();
        server.start();
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [name]);
        let _ = block_on_timeout(server.shutdown(), Duration::from_secs(5));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wake_pipe_wakes_poll() {
        let pipe = WakeFd::new().unwrap();
        assert_eq!(
            poll_readable(&[pipe.fd()], Some(Duration::ZERO)).unwrap(),
            vec![false]
        );
        pipe.notifier().notify();
        assert_eq!(
            poll_readable(&[pipe.fd()], Some(Duration::from_secs(5))).unwrap(),
            vec![true]
        );
        assert!(pipe.drain());
        assert!(!pipe.drain());
    }

    #[test]
    fn ancestors_stop_at_the_nearest_existing() {
        let d = std::env::temp_dir().join(format!("hpdp-util-anc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("a/b/c");
        assert_eq!(
            path_and_ancestors(&p),
            vec![p.clone(), d.join("a/b"), d.join("a"), d.clone()]
        );
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        assert_eq!(path_and_ancestors(&p), vec![p.clone(), d.join("a/b")]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
