//! Socket files: what may be bound over, and removal that only ever touches
//! the socket this process created.
//!
//! gRPC's C core unlinks whatever Unix socket sits at a path before it
//! binds, so [`prepare`] refuses first when the path is a symlink, not a
//! socket, or a socket someone is still serving on.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Why a socket path cannot be used.
#[derive(Debug)]
pub enum SocketError {
    /// A symlink, directory, regular file… sits at the path.
    NotASocket { path: PathBuf, what: &'static str },
    /// Another process answers on the socket.
    InUse { path: PathBuf },
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
    match UnixStream::connect(path) {
        Ok(_) => Err(SocketError::InUse { path: path.into() }),
        Err(_) => {
            // Nobody listens: a leftover of an earlier run of ours. Remove
            // it only if it is still the very file we looked at.
            remove_if_same(path, FileId::of(&meta));
            Ok(())
        }
    }
}

/// Identity of a file: device, inode, and change time. Inode numbers are
/// reused at once after an unlink (a new socket at the same path often gets
/// the old number), so the inode alone cannot tell two sockets apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
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
