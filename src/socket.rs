//! Socket files: what may be bound over, how a new socket gets its public
//! name, and removal that only ever touches the socket this process created.
//!
//! gRPC's C core unlinks whatever socket sits at the path it binds, both
//! before binding and when the server shuts down, and it follows symlinks
//! to decide. So gRPC is never given the public name: it binds a private
//! temporary name ([`temp_name`]), which [`publish`] then hard-links to the
//! public name (failing, never replacing, if anything is there) and
//! unlinks. [`prepare`] first clears the public name of a dead socket of
//! ours, and refuses a symlink, another kind of file, or a live socket.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The longest [`temp_name`] there can be: `.` + a pid (at most 7 digits
/// on Linux) + `.` + a counter; config validation keeps room for it.
pub const TEMP_NAME_MAX: usize = 20;

/// Why a socket path cannot be used.
#[derive(Debug)]
pub enum SocketError {
    /// A symlink, directory, regular file… sits at the path.
    NotASocket { path: PathBuf, what: &'static str },
    /// Another process answers on the socket (or its backlog is full).
    InUse { path: PathBuf },
    /// Something appeared at the public name while ours was being bound.
    Raced { path: PathBuf },
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketError::NotASocket { path, what } => {
                write!(
                    f,
                    "{}: {what} is in the way of the socket; not touching it",
                    path.display()
                )
            }
            SocketError::InUse { path } => {
                write!(
                    f,
                    "{}: another process is serving on this socket",
                    path.display()
                )
            }
            SocketError::Raced { path } => {
                write!(
                    f,
                    "{}: another file appeared at this name while our socket was being bound; not replacing it",
                    path.display()
                )
            }
            SocketError::Io {
                path,
                action,
                source,
            } => {
                write!(f, "{}: cannot {action}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for SocketError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SocketError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Makes `path` free for a bind: nothing there, or a dead socket (removed).
///
/// # Errors
///
/// [`SocketError`] when something else is there or a server answers on it.
pub fn prepare(path: &Path) -> Result<(), SocketError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SocketError::Io {
                path: path.into(),
                action: "inspect",
                source,
            });
        }
    };
    let ft = meta.file_type();
    if !ft.is_socket() {
        let what = if ft.is_symlink() {
            "a symlink"
        } else if ft.is_dir() {
            "a directory"
        } else {
            "a file that is not a socket"
        };
        return Err(SocketError::NotASocket {
            path: path.into(),
            what,
        });
    }
    match listening(path) {
        Ok(true) => Err(SocketError::InUse { path: path.into() }),
        Ok(false) => {
            // Nobody listens: a leftover of an earlier run. Remove it only
            // if it is still the very file we looked at.
            remove_if_same(path, FileId::of(&meta));
            Ok(())
        }
        Err(source) => Err(SocketError::Io {
            path: path.into(),
            action: "probe the socket in the way",
            source,
        }),
    }
}

/// Whether a server listens on the socket at `path`, asked without ever
/// blocking: a non-blocking `connect(2)` either succeeds, finds the backlog
/// full (`EAGAIN`: a live listener that does not accept), or is refused
/// (`ECONNREFUSED`: nobody has it open). Any other error is returned, and
/// the file must then be left alone.
///
/// # Errors
///
/// The `connect` error, other than refused.
pub fn listening(path: &Path) -> io::Result<bool> {
    match connect_nonblocking(path) {
        Ok(_) => Ok(true),
        Err(e) => match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EINPROGRESS) => Ok(true),
            Some(libc::ECONNREFUSED) => Ok(false),
            _ => Err(e),
        },
    }
}

/// A non-blocking `connect(2)` to the Unix socket at `path`: the connected
/// descriptor, or the error at once (`EAGAIN` when the backlog is full),
/// never a wait.
///
/// # Errors
///
/// The `socket` or `connect` error; a path too long for `sun_path`.
pub fn connect_nonblocking(path: &Path) -> io::Result<OwnedFd> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: a plain zeroed sockaddr_un, filled below within its bounds.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &b) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = b as libc::c_char;
    }
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc == 0 {
        Ok(fd)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A fresh private name in `dir` for gRPC to bind: starts with `.` (the
/// kubelet's plugin watcher ignores such files), unique within this
/// process, and at most [`TEMP_NAME_MAX`] bytes. Names already taken are
/// skipped, never reused.
pub fn temp_name(dir: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = dir.join(format!(".{}.{n}", std::process::id()));
        if fs::symlink_metadata(&p).is_err() {
            return p;
        }
    }
}

/// Gives the socket gRPC just bound at `temp` its public name `path`: a
/// hard link, which fails rather than replace anything that is there, then
/// the temporary name goes. gRPC's own unlinks (at shutdown) then concern
/// only `temp`, a name nobody else uses.
///
/// # Errors
///
/// [`SocketError::Raced`] when something took `path` meanwhile;
/// [`SocketError::NotASocket`] when `temp` is not the socket just bound.
pub fn publish(temp: &Path, path: &Path) -> Result<OwnedSocket, SocketError> {
    let bound = OwnedSocket::record(temp)?;
    let result = match fs::hard_link(temp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(SocketError::Raced { path: path.into() })
        }
        Err(source) => Err(SocketError::Io {
            path: path.into(),
            action: "link the new socket into place",
            source,
        }),
    };
    // The link changed the inode's ctime: the temporary name is told by
    // device and inode alone, still never following a link.
    match fs::symlink_metadata(temp) {
        Ok(m)
            if m.file_type().is_socket() && m.dev() == bound.id.dev && m.ino() == bound.id.ino =>
        {
            if let Err(e) = fs::remove_file(temp) {
                log::warn!(
                    "{}: cannot remove the temporary socket name: {e}",
                    temp.display()
                );
            }
        }
        _ => {}
    }
    result?;
    // Linking and unlinking changed the inode's ctime: record it anew, and
    // make sure the name still holds the inode gRPC bound.
    let meta = fs::symlink_metadata(path).map_err(|source| SocketError::Io {
        path: path.into(),
        action: "inspect the new socket",
        source,
    })?;
    if !(meta.file_type().is_socket() && meta.dev() == bound.id.dev && meta.ino() == bound.id.ino) {
        return Err(SocketError::Raced { path: path.into() });
    }
    Ok(OwnedSocket {
        path: path.into(),
        id: FileId::of(&meta),
    })
}

/// Identity of a file: device, inode, and change time. Inode numbers are
/// reused at once after an unlink (a new socket at the same path often gets
/// the old number), so the inode alone cannot tell two sockets apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl FileId {
    fn of(m: &fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// The identity of the socket at `path` (`lstat`), if a socket is there.
pub fn identity(path: &Path) -> Option<FileId> {
    fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_socket())
        .map(|m| FileId::of(&m))
}

/// A socket this process bound, identified by [`FileId`].
#[derive(Debug)]
pub struct OwnedSocket {
    path: PathBuf,
    id: FileId,
}

impl OwnedSocket {
    /// Records the socket just bound at `path`.
    ///
    /// # Errors
    ///
    /// When the path is not a socket right after the bind.
    pub fn record(path: &Path) -> Result<OwnedSocket, SocketError> {
        let meta = fs::symlink_metadata(path).map_err(|source| SocketError::Io {
            path: path.into(),
            action: "inspect the new socket",
            source,
        })?;
        if !meta.file_type().is_socket() {
            return Err(SocketError::NotASocket {
                path: path.into(),
                what: "something other than our socket",
            });
        }
        Ok(OwnedSocket {
            path: path.into(),
            id: FileId::of(&meta),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether our socket file is still in place (not deleted or replaced).
    pub fn intact(&self) -> bool {
        fs::symlink_metadata(&self.path)
            .map(|m| m.file_type().is_socket() && FileId::of(&m) == self.id)
            .unwrap_or(false)
    }

    /// Removes the file if, and only if, it is still our socket.
    pub fn remove(&self) {
        remove_if_same(&self.path, self.id);
    }
}

/// Unlinks `path` only when it is a socket with this identity; `lstat`
/// never follows a symlink, and `unlink` removes a name, not a target.
fn remove_if_same(path: &Path, id: FileId) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() && FileId::of(&m) == id => {
            if let Err(e) = fs::remove_file(path) {
                if e.kind() != io::ErrorKind::NotFound {
                    log::warn!("{}: cannot remove socket: {e}", path.display());
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hpdp-sock-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn prepare_refuses_live_symlink_and_files() {
        let d = tmp("prep");
        let live = d.join("live.sock");
        let _l = UnixListener::bind(&live).unwrap();
        assert!(matches!(prepare(&live), Err(SocketError::InUse { .. })));
        assert!(live.exists());

        let file = d.join("file.sock");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            prepare(&file),
            Err(SocketError::NotASocket { .. })
        ));
        assert!(file.exists());

        let link = d.join("link.sock");
        std::os::unix::fs::symlink(&live, &link).unwrap();
        assert!(matches!(
            prepare(&link),
            Err(SocketError::NotASocket {
                what: "a symlink",
                ..
            })
        ));
        assert!(fs::symlink_metadata(&link).is_ok());

        let dead = d.join("dead.sock");
        drop(UnixListener::bind(&dead).unwrap());
        prepare(&dead).unwrap();
        assert!(fs::symlink_metadata(&dead).is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn liveness_probe_never_blocks() {
        use std::os::fd::AsRawFd;
        let d = tmp("probe");
        let p = d.join("full.sock");
        let l = UnixListener::bind(&p).unwrap();
        // SAFETY: listen(2) again on our own socket, to shrink its backlog.
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
        // Enough probes to fill the backlog many times over: each answers.
        for _ in 0..10 {
            assert!(listening(&p).unwrap());
        }
        drop(l);
        assert!(!listening(&p).unwrap(), "no listener: refused");
        assert!(listening(&d.join("missing.sock")).is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn publish_links_and_never_replaces() {
        let d = tmp("publish");
        let temp = temp_name(&d);
        assert!(temp.file_name().unwrap().len() <= TEMP_NAME_MAX);
        let _l = UnixListener::bind(&temp).unwrap();
        let public = d.join("pub.sock");
        let owned = publish(&temp, &public).unwrap();
        assert!(owned.intact());
        assert!(fs::symlink_metadata(&temp).is_err(), "temporary name gone");

        let temp2 = temp_name(&d);
        let _l2 = UnixListener::bind(&temp2).unwrap();
        assert!(matches!(
            publish(&temp2, &public),
            Err(SocketError::Raced { .. })
        ));
        assert!(owned.intact(), "the first socket was not replaced");
        owned.remove();
        assert!(fs::symlink_metadata(&public).is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn remove_only_our_inode() {
        let d = tmp("own");
        let p = d.join("a.sock");
        let l = UnixListener::bind(&p).unwrap();
        let owned = OwnedSocket::record(&p).unwrap();
        assert!(owned.intact());
        drop(l);
        // Another socket renamed over ours: certainly a different file.
        let other_path = d.join("b.sock");
        let _other = UnixListener::bind(&other_path).unwrap();
        fs::rename(&other_path, &p).unwrap();
        assert!(!owned.intact());
        owned.remove();
        assert!(p.exists(), "a socket someone else created must survive");
        fs::remove_dir_all(&d).unwrap();
    }
}
