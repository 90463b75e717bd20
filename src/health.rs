//! Host-path health (B6): does the path exist under the host root, with the
//! configured kind, and (optionally) as a mount point? Also creates
//! `DirectoryOrCreate` / `FileOrCreate` paths.
//!
//! Pure functions of the filesystem: the health thread in `daemon` calls
//! them on a schedule; nothing here blocks on anything but the syscalls.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::{HostPathType, Resource};

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Why not, in words for the log: "missing", "is a regular file,
    /// expected Directory", "not a mount point".
    Unhealthy(String),
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Healthy => f.write_str("Healthy"),
            Health::Unhealthy(why) => write!(f, "Unhealthy ({why})"),
        }
    }
}

/// Where a host path is visible to this process: `host_root` + `path`.
pub fn inspect_path(host_root: &Path, path: &str) -> PathBuf {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        host_root.to_path_buf()
    } else {
        host_root.join(rel)
    }
}

fn describe(ft: fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_fifo() {
        "a FIFO"
    } else {
        "an unknown kind of file"
    }
}

fn kind_matches(t: HostPathType, ft: fs::FileType) -> bool {
    match t {
        HostPathType::Unset => true,
        HostPathType::Directory | HostPathType::DirectoryOrCreate => ft.is_dir(),
        HostPathType::File | HostPathType::FileOrCreate => ft.is_file(),
        HostPathType::Socket => ft.is_socket(),
        HostPathType::CharDevice => ft.is_char_device(),
        HostPathType::BlockDevice => ft.is_block_device(),
    }
}

/// Most symlinks followed in one resolution, as the kernel's limit.
const MAX_SYMLINKS: usize = 40;

/// Where host path `path` really is under `host_root`, following symlinks
/// as the host would: an absolute target starts again at the host root, and
/// `..` never climbs above it. With host root `/` the kernel does exactly
/// this, so the path is returned as is. Missing components stay as written.
///
/// # Errors
///
/// A reason when the symlinks loop or a link cannot be read.
pub fn resolve_in_root(host_root: &Path, path: &str) -> Result<PathBuf, String> {
    if host_root == Path::new("/") {
        return Ok(PathBuf::from(path));
    }
    let mut pending: std::collections::VecDeque<std::ffi::OsString> = Path::new(path)
        .iter()
        .filter(|c| *c != "/")
        .map(|c| c.to_os_string())
        .collect();
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let under_root = |parts: &[std::ffi::OsString]| -> PathBuf {
        std::iter::once(host_root.as_os_str())
            .chain(parts.iter().map(|c| c.as_os_str()))
            .collect()
    };
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        if c == "." {
            continue;
        }
        if c == ".." {
            resolved.pop();
            continue;
        }
        resolved.push(c);
        let full = under_root(&resolved);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err("too many levels of symbolic links".into());
                }
                let target = fs::read_link(&full)
                    .map_err(|e| format!("cannot read symlink {}: {e}", full.display()))?;
                resolved.pop();
                if target.is_absolute() {
                    resolved.clear();
                }
                for (i, t) in target.iter().filter(|c| *c != "/").enumerate() {
                    pending.insert(i, t.to_os_string());
                }
            }
            _ => {}
        }
    }
    Ok(under_root(&resolved))
}

/// Checks one resource's path; creates OrCreate paths that are missing.
pub fn check(host_root: &Path, r: &Resource) -> Health {
    let full = match resolve_in_root(host_root, &r.host_path) {
        Ok(p) => p,
        Err(why) => return Health::Unhealthy(why),
    };
    let meta = match fs::metadata(&full) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => match create(&full, r.path_type) {
            Some(Ok(())) => match fs::metadata(&full) {
                Ok(m) => {
                    log::info!(
                        "{}: created missing {} {}",
                        r.resource_name,
                        r.path_type,
                        r.host_path
                    );
                    m
                }
                Err(e) => return Health::Unhealthy(format!("cannot stat after creating it: {e}")),
            },
            Some(Err(e)) => {
                return Health::Unhealthy(format!("missing, and creating it failed: {e}"))
            }
            None => return Health::Unhealthy("missing".into()),
        },
        Err(e) => return Health::Unhealthy(format!("cannot stat: {e}")),
    };
    let ft = meta.file_type();
    if !kind_matches(r.path_type, ft) {
        return Health::Unhealthy(format!("is {}, expected {}", describe(ft), r.path_type));
    }
    if r.require_mount_point && !is_mount_point(&full, host_root) {
        return Health::Unhealthy("not a mount point".into());
    }
    Health::Healthy
}

/// Creates a missing OrCreate path; `None` for the other types.
fn create(full: &Path, t: HostPathType) -> Option<io::Result<()>> {
    match t {
        HostPathType::DirectoryOrCreate => Some(create_dir_all(full)),
        HostPathType::FileOrCreate => Some(create_file(full)),
        _ => None,
    }
}

/// `mkdir -p` with mode 0755 on every directory it creates, whatever the
/// process umask (the daemon runs with a strict umask for its sockets).
fn create_dir_all(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(0o755).create(path) {
        Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(0o755)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// An empty file with mode 0644; the parent must exist (as the kubelet does).
fn create_file(path: &Path) -> io::Result<()> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f.set_permissions(fs::Permissions::from_mode(0o644)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `full` is a mount point: listed as a mount point in
/// `/proc/self/mountinfo` (catches bind mounts of the same filesystem), or on
/// a different device than its parent. The host root itself counts.
pub fn is_mount_point(full: &Path, host_root: &Path) -> bool {
    let Ok(canonical) = fs::canonicalize(full) else {
        return false;
    };
    if let Ok(root) = fs::canonicalize(host_root) {
        if canonical == root {
            return true;
        }
    }
    if let Ok(info) = fs::read_to_string("/proc/self/mountinfo") {
        if mountinfo_has(&info, &canonical) {
            return true;
        }
    }
    match (
        fs::metadata(&canonical),
        canonical.parent().map(fs::metadata),
    ) {
        (Ok(m), Some(Ok(p))) => m.dev() != p.dev(),
        _ => false,
    }
}

/// Whether a mountinfo text lists `path` as a mount point (field 5, with
/// the kernel's octal escapes for space, tab, newline and backslash).
fn mountinfo_has(info: &str, path: &Path) -> bool {
    let want = path.as_os_str().as_encoded_bytes();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|field| unescape_mountinfo(field) == want)
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_path_joins_under_root() {
        assert_eq!(
            inspect_path(Path::new("/host"), "/a/b"),
            PathBuf::from("/host/a/b")
        );
        assert_eq!(
            inspect_path(Path::new("/host"), "/"),
            PathBuf::from("/host")
        );
        assert_eq!(
            inspect_path(Path::new("/"), "/dev/null"),
            PathBuf::from("/dev/null")
        );
    }

    #[test]
    fn symlinks_resolve_inside_the_host_root() {
        let root = std::env::temp_dir().join(format!("hpdp-resolve-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("data/real")).unwrap();
        std::os::unix::fs::symlink("/data/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("data/real", root.join("rel")).unwrap();
        std::os::unix::fs::symlink("../../../../data", root.join("data/up")).unwrap();
        std::os::unix::fs::symlink("/loop", root.join("loop")).unwrap();
        assert_eq!(
            resolve_in_root(&root, "/abs").unwrap(),
            root.join("data/real")
        );
        assert_eq!(
            resolve_in_root(&root, "/abs/sub").unwrap(),
            root.join("data/real/sub")
        );
        assert_eq!(
            resolve_in_root(&root, "/rel").unwrap(),
            root.join("data/real")
        );
        assert_eq!(
            resolve_in_root(&root, "/data/up/real").unwrap(),
            root.join("data/real")
        );
        assert!(resolve_in_root(&root, "/loop")
            .unwrap_err()
            .contains("too many levels"));
        assert_eq!(
            resolve_in_root(Path::new("/"), "/abs").unwrap(),
            PathBuf::from("/abs")
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn mountinfo_parsing() {
        let info =
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n30 22 0:5 / /mnt/my\\040disk rw - tmpfs t rw\n";
        assert!(mountinfo_has(info, Path::new("/mnt/my disk")));
        assert!(mountinfo_has(info, Path::new("/")));
        assert!(!mountinfo_has(info, Path::new("/mnt")));
    }

    #[test]
    fn proc_is_a_mount_point_and_its_subdir_is_not() {
        assert!(is_mount_point(Path::new("/proc"), Path::new("/")));
        assert!(is_mount_point(Path::new("/"), Path::new("/")));
        assert!(!is_mount_point(Path::new("/proc/self/fd"), Path::new("/")));
    }
}
