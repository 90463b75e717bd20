//! Host-path health (B6, B16): does the path exist under the host root, with
//! the configured kind, (optionally) as a mount point, and not resolving
//! into a sensitive place? Also creates `DirectoryOrCreate` /
//! `FileOrCreate` paths, through directory descriptors that never follow a
//! symlink.
//!
//! Pure functions of the filesystem, called only from the health
//! monitor's worker threads (`monitor`): a `stat` here may hang on a dead
//! NFS mount, and nothing else waits for it.

use std::ffi::{CString, OsString};
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::core::resource::{HostPathType, Resource};
use crate::core::sensitive::{self, Category};

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy(Reason),
}

/// Why a path is unhealthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    Missing,
    WrongKind {
        found: &'static str,
        expected: HostPathType,
    },
    NotMountPoint,
    CannotStat(String),
    TooManyLinks,
    CannotReadLink {
        link: PathBuf,
        error: String,
    },
    /// An OrCreate path missing behind a symlink: creating it would create
    /// the link's target (the kubelet refuses it too).
    DanglingSymlink {
        at: String,
    },
    /// A symlink or non-directory met while creating, never followed.
    NotCreatedThroughLink {
        at: String,
    },
    CreateFailed(String),
    /// What the path resolves to is sensitive, and the resource did not opt in.
    Sensitive {
        target: String,
        category: Category,
    },
    /// The check has not returned for this long (a hung filesystem?).
    Hung(Duration),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Missing => f.write_str("missing"),
            Reason::WrongKind { found, expected } => write!(f, "is {found}, expected {expected}"),
            Reason::NotMountPoint => f.write_str("not a mount point"),
            Reason::CannotStat(e) => write!(f, "cannot stat: {e}"),
            Reason::TooManyLinks => f.write_str("too many levels of symbolic links"),
            Reason::CannotReadLink { link, error } => {
                write!(f, "cannot read symlink {}: {error}", link.display())
            }
            Reason::DanglingSymlink { at } => write!(
                f,
                "missing, behind the dangling symlink {at}; not creating through a symlink"
            ),
            Reason::NotCreatedThroughLink { at } => write!(
                f,
                "missing, and {at} is a symlink or not a directory; not creating through it"
            ),
            Reason::CreateFailed(e) => write!(f, "missing, and creating it failed: {e}"),
            Reason::Sensitive { target, category } => write!(
                f,
                "resolves to {target}, {category}; set allowSensitivePath to serve it"
            ),
            Reason::Hung(d) => write!(
                f,
                "the check has not returned for {:.1} s (a hung filesystem?)",
                d.as_secs_f64()
            ),
        }
    }
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Healthy => f.write_str(crate::kubelet::HEALTHY),
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

/// What kind of file `ft` is, in words for messages.
pub fn describe(ft: fs::FileType) -> &'static str {
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

/// A host path resolved inside the host root.
#[derive(Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Its components below the host root, every symlink resolved.
    pub parts: Vec<OsString>,
    /// The first missing component came from a symlink's target: the
    /// link dangles (`None` when nothing is missing or it came from the
    /// configured path itself), and where that link was.
    pub dangling: Option<String>,
}

impl Resolved {
    /// The path as this process sees it.
    pub fn full(&self, host_root: &Path) -> PathBuf {
        std::iter::once(host_root.as_os_str())
            .chain(self.parts.iter().map(|c| c.as_os_str()))
            .collect()
    }

    /// The path as the host sees it (for the sensitivity rule).
    pub fn host_path(&self) -> String {
        let mut s = String::new();
        for p in &self.parts {
            s.push('/');
            s.push_str(&p.to_string_lossy());
        }
        if s.is_empty() {
            s.push('/');
        }
        s
    }
}

/// Resolves host path `path` under `host_root` as the host would: an
/// absolute symlink target starts again at the host root, and `..` never
/// climbs above it. Missing components stay as written.
///
/// # Errors
///
/// A [`Reason`] when the symlinks loop or a link cannot be read.
pub fn resolve(host_root: &Path, path: &str) -> Result<Resolved, Reason> {
    // Each pending component, and where the symlink it came from was.
    let mut pending: std::collections::VecDeque<(OsString, Option<String>)> = Path::new(path)
        .iter()
        .filter(|c| *c != "/")
        .map(|c| (c.to_os_string(), None))
        .collect();
    let mut out = Resolved {
        parts: Vec::new(),
        dangling: None,
    };
    let mut missing = false;
    let mut hops = 0;
    while let Some((c, from_link)) = pending.pop_front() {
        if c == "." {
            continue;
        }
        if c == ".." {
            out.parts.pop();
            continue;
        }
        out.parts.push(c);
        if missing {
            continue;
        }
        let full = out.full(host_root);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(Reason::TooManyLinks);
                }
                let target = fs::read_link(&full).map_err(|e| Reason::CannotReadLink {
                    link: full.clone(),
                    error: e.to_string(),
                })?;
                let at = out.host_path();
                out.parts.pop();
                if target.is_absolute() {
                    out.parts.clear();
                }
                for (i, t) in target.iter().filter(|c| *c != "/").enumerate() {
                    pending.insert(i, (t.to_os_string(), Some(at.clone())));
                }
            }
            Ok(_) => {}
            Err(_) => {
                missing = true;
                out.dangling = from_link;
            }
        }
    }
    Ok(out)
}

/// [`resolve`], as a path this process can open.
///
/// # Errors
///
/// A [`Reason`] when the symlinks loop or a link cannot be read.
pub fn resolve_in_root(host_root: &Path, path: &str) -> Result<PathBuf, Reason> {
    resolve(host_root, path).map(|r| r.full(host_root))
}

/// Checks one resource's path; creates OrCreate paths that are missing.
pub fn check(host_root: &Path, r: &Resource) -> Health {
    let resolved = match resolve(host_root, &r.host_path) {
        Ok(p) => p,
        Err(why) => return Health::Unhealthy(why),
    };
    if !r.allow_sensitive_path {
        let target = resolved.host_path();
        if target != r.host_path {
            if let Some(category) = sensitive::classify(&target) {
                return Health::Unhealthy(Reason::Sensitive { target, category });
            }
        }
    }
    let full = resolved.full(host_root);
    let meta = match fs::metadata(&full) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !r.path_type.creates() {
                return Health::Unhealthy(Reason::Missing);
            }
            if let Some(at) = resolved.dangling {
                return Health::Unhealthy(Reason::DanglingSymlink { at });
            }
            if let Err(why) = create_in_root(host_root, &resolved.parts, r.path_type) {
                return Health::Unhealthy(why);
            }
            log::info!(
                "{}: created missing {} {}",
                r.resource_name,
                r.path_type,
                r.host_path
            );
            match fs::metadata(&full) {
                Ok(m) => m,
                Err(e) => return Health::Unhealthy(Reason::CannotStat(e.to_string())),
            }
        }
        Err(e) => return Health::Unhealthy(Reason::CannotStat(e.to_string())),
    };
    let ft = meta.file_type();
    if !kind_matches(r.path_type, ft) {
        return Health::Unhealthy(Reason::WrongKind {
            found: describe(ft),
            expected: r.path_type,
        });
    }
    if r.require_mount_point && !is_mount_point(&full, host_root) {
        return Health::Unhealthy(Reason::NotMountPoint);
    }
    Health::Healthy
}

fn cstr(c: &OsString) -> io::Result<CString> {
    CString::new(c.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `openat(dir, name, O_NOFOLLOW | O_DIRECTORY)`: a directory, never a link.
fn open_dir_at(dir: &OwnedFd, name: &CString) -> io::Result<OwnedFd> {
    // SAFETY: a valid descriptor and NUL-terminated name; the result is checked.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fchmod(fd: &OwnedFd, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: fchmod on a descriptor we own.
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates a missing OrCreate path below `host_root`, one component at a
/// time through directory descriptors: `openat(O_NOFOLLOW|O_DIRECTORY)`,
/// `mkdirat` and `fchmod` (mode 0755 whatever the umask) for directories,
/// `O_CREAT|O_EXCL|O_NOFOLLOW` and `fchmod` (0644) for the file, whose
/// parent must exist (as the kubelet does). A symlink met on the way is an
/// error, never followed, so nothing is created or chmod-ed elsewhere.
fn create_in_root(host_root: &Path, parts: &[OsString], t: HostPathType) -> Result<(), Reason> {
    let fail = |e: io::Error| Reason::CreateFailed(e.to_string());
    let root = fs::File::open(host_root).map_err(fail)?;
    let mut dir = OwnedFd::from(root);
    let Some((last, parents)) = parts.split_last() else {
        return Ok(()); // the host root itself exists
    };
    let mut at = String::new();
    let make_dirs = t == HostPathType::DirectoryOrCreate;
    for (i, c) in parents.iter().chain(std::iter::once(last)).enumerate() {
        at.push('/');
        at.push_str(&c.to_string_lossy());
        let name = cstr(c).map_err(fail)?;
        let is_last = i == parents.len();
        if is_last && t == HostPathType::FileOrCreate {
            // SAFETY: a valid descriptor and name; the result is checked.
            let fd = unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_NONBLOCK
                        | libc::O_CLOEXEC,
                    0o644 as libc::c_uint,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    // Someone else made it meanwhile: the next stat judges it.
                    io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(fail(e)),
                };
            }
            // SAFETY: a fresh descriptor nothing else owns.
            let file = unsafe { OwnedFd::from_raw_fd(fd) };
            return fchmod(&file, 0o644).map_err(fail);
        }
        match open_dir_at(&dir, &name) {
            Ok(next) => dir = next,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && make_dirs => {
                // SAFETY: a valid descriptor and name; the result is checked.
                let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) };
                let created = rc == 0;
                if !created && io::Error::last_os_error().kind() != io::ErrorKind::AlreadyExists {
                    return Err(fail(io::Error::last_os_error()));
                }
                let next = open_dir_at(&dir, &name).map_err(|e| match e.raw_os_error() {
                    Some(libc::ELOOP | libc::ENOTDIR) => {
                        Reason::NotCreatedThroughLink { at: at.clone() }
                    }
                    _ => fail(e),
                })?;
                if created {
                    fchmod(&next, 0o755).map_err(fail)?;
                }
                dir = next;
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                return Err(Reason::NotCreatedThroughLink { at });
            }
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(())
}

/// The mount points of `/proc/self/mountinfo` (field 5, the kernel's
/// octal escapes undone), read once and asked many times: a scan of 2,000
/// matches reads the table once, not 2,000 times.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountTable(std::collections::HashSet<Vec<u8>>);

impl MountTable {
    /// The table as it is now; `None` when it cannot be read.
    pub fn read() -> Option<MountTable> {
        fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .map(|info| MountTable::parse(&info))
    }

    pub fn parse(info: &str) -> MountTable {
        MountTable(
            info.lines()
                .filter_map(|line| line.split(' ').nth(4))
                .map(unescape_mountinfo)
                .collect(),
        )
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.0.contains(path.as_os_str().as_encoded_bytes())
    }

    /// The mount points in one table and not the other, both ways.
    pub fn changed<'a>(&'a self, other: &'a MountTable) -> Vec<&'a [u8]> {
        self.0
            .symmetric_difference(&other.0)
            .map(Vec::as_slice)
            .collect()
    }
}

/// Whether `full` is a mount point: listed as a mount point in
/// `/proc/self/mountinfo` (catches bind mounts of the same filesystem), or on
/// a different device than its parent. The host root itself counts.
pub fn is_mount_point(full: &Path, host_root: &Path) -> bool {
    is_mount_point_in(full, host_root, MountTable::read().as_ref())
}

/// [`is_mount_point`] with the mount table already read (`None`: only the
/// device numbers are compared).
pub fn is_mount_point_in(full: &Path, host_root: &Path, table: Option<&MountTable>) -> bool {
    let Ok(canonical) = fs::canonicalize(full) else {
        return false;
    };
    if let Ok(root) = fs::canonicalize(host_root) {
        if canonical == root {
            return true;
        }
    }
    if table.is_some_and(|t| t.contains(&canonical)) {
        return true;
    }
    match (
        fs::metadata(&canonical),
        canonical.parent().map(fs::metadata),
    ) {
        (Ok(m), Some(Ok(p))) => m.dev() != p.dev(),
        _ => false,
    }
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
        assert_eq!(
            resolve_in_root(&root, "/loop").unwrap_err(),
            Reason::TooManyLinks
        );
        // With host root `/`, links resolve as the kernel would.
        assert_eq!(
            resolve_in_root(Path::new("/"), root.join("rel").to_str().unwrap()).unwrap(),
            root.join("data/real")
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn mountinfo_parsing() {
        let info =
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n30 22 0:5 / /mnt/my\\040disk rw - tmpfs t rw\n";
        assert!(MountTable::parse(info).contains(Path::new("/mnt/my disk")));
        assert!(MountTable::parse(info).contains(Path::new("/")));
        assert!(!MountTable::parse(info).contains(Path::new("/mnt")));
    }

    #[test]
    fn proc_is_a_mount_point_and_its_subdir_is_not() {
        assert!(is_mount_point(Path::new("/proc"), Path::new("/")));
        assert!(is_mount_point(Path::new("/"), Path::new("/")));
        assert!(!is_mount_point(Path::new("/proc/self/fd"), Path::new("/")));
    }
}
