//! CDI spec files (PROTOCOL.md §6.5): how a prepared claim's devices reach
//! its containers. One transient spec per claim, named after the claim's
//! UID, in the dynamic CDI directory (`/var/run/cdi`); the runtime reads it
//! when the container starts.
//!
//! Files are written atomically (a temporary name, `fsync`, `rename`), every
//! step through a descriptor of the directory opened with `O_NOFOLLOW`, so
//! nothing is ever written through a symlink. Only our own specs are ever
//! removed: a regular file whose name is ours (`<vendor>-<class>_<uid>.json`,
//! the UID checked) and never what a symlink points at. The spec on disk is
//! also the record of the preparation: unpreparing after a restart, or after
//! the claim left the API server, needs only the UID.

use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::names::is_claim_uid;
use crate::core::resource::Grant;

/// The CDI class of every device we hand out (`<driver>/device`).
pub const CLASS: &str = "device";

/// One container edit set (CDI `containerEdits`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Edits {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    /// Where it appears in the container.
    pub path: String,
    /// Only when it differs from `path` (needs cdiVersion 0.5.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// cgroup permissions, `rwm` letters.
    pub permissions: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    pub options: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiDevice {
    pub name: String,
    pub container_edits: Edits,
}

/// A spec file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub cdi_version: &'static str,
    pub kind: String,
    pub devices: Vec<CdiDevice>,
}

/// The edits that hand `grants` and `envs` to a container.
pub fn edits(grants: &[Grant], envs: &[(String, String)]) -> Edits {
    let mut e = Edits {
        env: envs.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        ..Edits::default()
    };
    for g in grants {
        let at = g.container_path().into_owned();
        if g.device {
            e.device_nodes.push(DeviceNode {
                host_path: (at != *g.host).then(|| g.host.to_string()),
                path: at,
                permissions: g.permissions.letters(),
            });
        } else {
            let mut options = vec!["rbind".to_string()];
            if g.read_only {
                options.push("ro".into());
            }
            e.mounts.push(Mount {
                host_path: g.host.to_string(),
                container_path: at,
                options,
            });
        }
    }
    e
}

/// The lowest `cdiVersion` whose fields the devices use: a device node at
/// another container path needs `hostPath` (0.5.0), and so does a device
/// name that starts with a digit (a claim UID can: containerd 2.4 refused
/// such a spec at 0.3.0 in make e2e-cluster); the rest is 0.3.0.
pub fn lowest_version(devices: &[CdiDevice]) -> &'static str {
    let host_path = devices.iter().any(|d| {
        d.container_edits
            .device_nodes
            .iter()
            .any(|n| n.host_path.is_some())
    });
    let digit_first = devices
        .iter()
        .any(|d| d.name.starts_with(|c: char| c.is_ascii_digit()));
    if host_path || digit_first {
        "0.5.0"
    } else {
        "0.3.0"
    }
}

/// Why a spec could not be written or removed.
#[derive(Debug)]
pub enum CdiError {
    /// A claim UID that is not one (it would become part of a file name).
    BadUid(String),
    Io(&'static str, PathBuf, io::Error),
}

impl std::fmt::Display for CdiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CdiError::BadUid(u) => write!(f, "claim UID {} is not a UID", crate::text::shown(u)),
            CdiError::Io(what, p, e) => write!(f, "{what} {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for CdiError {}

/// The most of a spec file that is read back.
pub const MAX_SPEC: u64 = 1 << 20;

/// A device of a prepared claim, from its spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecDevice {
    /// Its DRA device name (the spec's device name without the claim UID).
    pub name: String,
    /// The host paths it hands out.
    pub hosts: std::collections::BTreeSet<String>,
}

/// The devices of claim `uid`'s spec (as [`CdiDir::write`] wrote it).
pub fn spec_devices(spec: &serde_json::Value, uid: &str) -> Vec<SpecDevice> {
    let list = |v: &serde_json::Value| v.as_array().cloned().unwrap_or_default();
    let prefix = format!("{uid}-");
    list(&spec["devices"])
        .iter()
        .filter_map(|d| {
            let name = d["name"].as_str()?.strip_prefix(&prefix)?.to_string();
            let edits = &d["containerEdits"];
            let nodes = list(&edits["deviceNodes"]).into_iter().filter_map(|n| {
                n["hostPath"]
                    .as_str()
                    .or_else(|| n["path"].as_str())
                    .map(str::to_string)
            });
            let mounts = list(&edits["mounts"])
                .into_iter()
                .filter_map(|m| m["hostPath"].as_str().map(str::to_string));
            Some(SpecDevice {
                name,
                hosts: nodes.chain(mounts).collect(),
            })
        })
        .collect()
}

/// The CDI directory and the kind our specs carry there.
#[derive(Clone, Debug)]
pub struct CdiDir {
    pub dir: PathBuf,
    /// `<vendor>/<class>`: the driver name and [`CLASS`].
    pub kind: String,
}

fn cstring(name: &str) -> CString {
    CString::new(name).expect("names are checked: no NUL")
}

impl CdiDir {
    pub fn new(dir: &Path, driver: &str) -> CdiDir {
        CdiDir {
            dir: dir.to_path_buf(),
            kind: format!("{driver}/{CLASS}"),
        }
    }

    /// `<vendor>-<class>_`: what every spec file of ours starts with.
    fn prefix(&self) -> String {
        format!("{}_", self.kind.replace('/', "-"))
    }

    /// The file name of claim `uid`'s spec.
    pub fn file_name(&self, uid: &str) -> String {
        format!("{}{uid}.json", self.prefix())
    }

    /// The qualified CDI ID of device `name`.
    pub fn device_id(&self, name: &str) -> String {
        format!("{}={name}", self.kind)
    }

    /// The UID of one of our spec files, from its name.
    pub fn uid_of<'a>(&self, file_name: &'a str) -> Option<&'a str> {
        let uid = file_name
            .strip_prefix(&self.prefix())?
            .strip_suffix(".json")?;
        is_claim_uid(uid).then_some(uid)
    }

    fn open(&self, create: bool) -> Result<OwnedFd, CdiError> {
        let io_err = |e| CdiError::Io("cannot open the CDI directory", self.dir.clone(), e);
        if create {
            // The directory's parents are the host's own (/var/run is often
            // a link to /run); only the last component must not be a link.
            match std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&self.dir)
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        let path = CString::new(self.dir.as_os_str().as_bytes())
            .map_err(|_| io_err(io::Error::from(io::ErrorKind::InvalidInput)))?;
        // SAFETY: a valid C string; the descriptor is owned at once.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io_err(io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just opened and is ours.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Writes claim `uid`'s spec atomically (replacing an earlier one: a
    /// repeated prepare writes the same content).
    ///
    /// # Errors
    ///
    /// A bad UID, or the step that failed with the path.
    pub fn write(&self, uid: &str, spec: &Spec) -> Result<PathBuf, CdiError> {
        if !is_claim_uid(uid) {
            return Err(CdiError::BadUid(uid.to_string()));
        }
        let dir = self.open(true)?;
        let name = self.file_name(uid);
        let final_path = self.dir.join(&name);
        let tmp = format!(".{name}.{}.tmp", std::process::id());
        let io_err = |what, e| CdiError::Io(what, final_path.clone(), e);
        let body = serde_json::to_vec(spec).expect("a spec always serialises");
        let ctmp = cstring(&tmp);
        // A temporary name left by a crash of this same PID is ours.
        // SAFETY: valid descriptor and C string; unlinkat never follows.
        unsafe { libc::unlinkat(dir.as_raw_fd(), ctmp.as_ptr(), 0) };
        // SAFETY: valid descriptor and C string.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                ctmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o644 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io_err(
                "cannot create a spec beside",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` was just opened and is ours.
        let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let written = file.write_all(&body).and_then(|()| file.sync_all());
        drop(file);
        let cname = cstring(&name);
        let renamed = written.and_then(|()| {
            // SAFETY: valid descriptors and C strings; rename replaces a
            // link at the final name itself, never its target.
            let rc = unsafe {
                libc::renameat(
                    dir.as_raw_fd(),
                    ctmp.as_ptr(),
                    dir.as_raw_fd(),
                    cname.as_ptr(),
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
        if let Err(e) = renamed {
            // SAFETY: as above.
            unsafe { libc::unlinkat(dir.as_raw_fd(), ctmp.as_ptr(), 0) };
            return Err(io_err("cannot write the spec", e));
        }
        Ok(final_path)
    }

    /// Removes claim `uid`'s spec. `Ok(false)`: there was none (already
    /// unprepared). A file of that name that is not a regular file (a
    /// symlink, a directory) is not ours and stays: an error says so.
    ///
    /// # Errors
    ///
    /// A bad UID, something not ours at the name, or the failed step.
    pub fn remove(&self, uid: &str) -> Result<bool, CdiError> {
        if !is_claim_uid(uid) {
            return Err(CdiError::BadUid(uid.to_string()));
        }
        let dir = match self.open(false) {
            Ok(d) => d,
            Err(CdiError::Io(_, _, e)) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let name = self.file_name(uid);
        let path = self.dir.join(&name);
        let cname = cstring(&name);
        // SAFETY: a zeroed stat is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, C string and out-parameter.
        let rc = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                cname.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::NotFound {
                return Ok(false);
            }
            return Err(CdiError::Io("cannot inspect", path, e));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(CdiError::Io(
                "not removed, not a spec we wrote:",
                path,
                io::Error::other("not a regular file"),
            ));
        }
        // SAFETY: valid descriptor and C string; unlinkat never follows.
        if unsafe { libc::unlinkat(dir.as_raw_fd(), cname.as_ptr(), 0) } != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::NotFound {
                return Ok(false);
            }
            return Err(CdiError::Io("cannot remove", path, e));
        }
        Ok(true)
    }

    /// The claim UIDs whose specs of ours are on disk.
    pub fn prepared(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<String> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let n = e.file_name();
                self.uid_of(n.to_str()?).map(str::to_string)
            })
            .collect();
        out.sort();
        out
    }

    /// The devices of every claim prepared here, as their specs hand them
    /// out: what a daemon serving the same devices through the device
    /// plugin must not offer (the kubelet's pod-resources API does not
    /// list a claim that a pod got for its `limits:`). A spec that cannot
    /// be read is skipped; one is read only up to [`MAX_SPEC`] bytes and
    /// never through a symlink.
    pub fn prepared_devices(&self) -> Vec<SpecDevice> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut out = Vec::new();
        for uid in self.prepared() {
            let path = self.dir.join(self.file_name(&uid));
            let mut text = Vec::new();
            let read = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&path)
                .and_then(|f| f.take(MAX_SPEC).read_to_end(&mut text));
            let spec: serde_json::Value = match read.map(|_| serde_json::from_slice(&text)) {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    log::debug!("{}: not a CDI spec: {e}", path.display());
                    continue;
                }
                Err(e) => {
                    log::debug!("{}: {e}", path.display());
                    continue;
                }
            };
            out.extend(spec_devices(&spec, &uid));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::resource::Perm;

    const UID: &str = "a0b1c2d3-4e5f-6789-abcd-ef0123456789";

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hpdp-cdi-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn spec(cdi: &CdiDir, grants: &[Grant]) -> Spec {
        let devices = vec![CdiDevice {
            name: format!("{UID}-tty0"),
            container_edits: edits(grants, &[("A".into(), "b".into())]),
        }];
        Spec {
            cdi_version: lowest_version(&devices),
            kind: cdi.kind.clone(),
            devices,
        }
    }

    #[test]
    fn edits_and_the_lowest_version() {
        let node = Grant::node("/dev/ttyUSB0", Perm::from_letters("rw"));
        let mut moved = node.clone();
        moved.container = Some("/dev/zigbee".into());
        let mount = Grant {
            host: "/data".into(),
            container: Some("/in".into()),
            device: false,
            read_only: true,
            permissions: Perm::default(),
        };
        let cdi = CdiDir::new(Path::new("/x"), "hostpath-device.k8s.io");
        let s = spec(&cdi, &[node.clone(), mount]);
        assert_eq!(s.cdi_version, "0.3.0");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["kind"], "hostpath-device.k8s.io/device");
        let e = &json["devices"][0]["containerEdits"];
        assert_eq!(e["env"][0], "A=b");
        assert_eq!(e["deviceNodes"][0]["path"], "/dev/ttyUSB0");
        assert!(e["deviceNodes"][0].get("hostPath").is_none());
        assert_eq!(e["deviceNodes"][0]["permissions"], "rw");
        assert_eq!(e["mounts"][0]["containerPath"], "/in");
        assert_eq!(
            e["mounts"][0]["options"],
            serde_json::json!(["rbind", "ro"])
        );
        let s = spec(&cdi, &[moved]);
        assert_eq!(s.cdi_version, "0.5.0");
        assert_eq!(
            serde_json::to_value(&s).unwrap()["devices"][0]["containerEdits"]["deviceNodes"][0]
                ["hostPath"],
            "/dev/ttyUSB0"
        );
        assert_eq!(cdi.device_id("x"), "hostpath-device.k8s.io/device=x");
        // A name that starts with a digit (a claim UID may) needs 0.5.0.
        let digit = vec![CdiDevice {
            name: "0a1b2c3d-4e5f-6789-abcd-ef0123456789-0".into(),
            container_edits: edits(&[node], &[]),
        }];
        assert_eq!(lowest_version(&digit), "0.5.0");
    }

    #[test]
    fn written_atomically_found_again_and_removed_once() {
        let d = tmp("write");
        let cdi = CdiDir::new(&d.join("cdi"), "hostpath-device.k8s.io");
        let s = spec(&cdi, &[Grant::node("/dev/null", Perm::from_letters("rw"))]);
        let p = cdi.write(UID, &s).unwrap();
        assert_eq!(
            p,
            d.join("cdi/hostpath-device.k8s.io-device_a0b1c2d3-4e5f-6789-abcd-ef0123456789.json")
        );
        let back: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(back, serde_json::to_value(&s).unwrap());
        cdi.write(UID, &s).unwrap(); // idempotent
        assert_eq!(cdi.prepared(), [UID]);
        // Read back as the device plugin reads it: the DRA device name and
        // the host paths it hands out.
        assert_eq!(
            cdi.prepared_devices(),
            [SpecDevice {
                name: "tty0".into(),
                hosts: ["/dev/null".to_string()].into()
            }]
        );
        let names: Vec<_> = std::fs::read_dir(d.join("cdi"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        assert!(cdi.remove(UID).unwrap());
        assert!(!cdi.remove(UID).unwrap());
        assert!(cdi.prepared().is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn never_through_a_symlink_and_never_what_is_not_ours() {
        let d = tmp("links");
        std::fs::create_dir_all(d.join("elsewhere")).unwrap();
        // The directory itself a link: refused, nothing written there.
        std::os::unix::fs::symlink(d.join("elsewhere"), d.join("cdi")).unwrap();
        let cdi = CdiDir::new(&d.join("cdi"), "hostpath-device.k8s.io");
        let s = spec(&cdi, &[]);
        assert!(cdi.write(UID, &s).is_err());
        assert_eq!(std::fs::read_dir(d.join("elsewhere")).unwrap().count(), 0);
        // Nor read through one: a link at a spec's name says nothing.
        std::fs::write(d.join("elsewhere/spec.json"), b"{\"devices\": []}").unwrap();
        let linked = d.join("elsewhere").join(cdi.file_name(UID));
        std::os::unix::fs::symlink(d.join("elsewhere/spec.json"), &linked).unwrap();
        let other = CdiDir::new(&d.join("elsewhere"), "hostpath-device.k8s.io");
        assert!(other.prepared_devices().is_empty());
        std::fs::remove_file(&linked).unwrap();
        std::fs::remove_file(d.join("cdi")).unwrap();
        // A link at our file name: replaced by the spec, its target untouched.
        std::fs::create_dir_all(d.join("cdi")).unwrap();
        std::fs::write(d.join("victim"), b"keep").unwrap();
        let name = cdi.file_name(UID);
        std::os::unix::fs::symlink(d.join("victim"), d.join("cdi").join(&name)).unwrap();
        assert!(cdi.remove(UID).is_err(), "a link is not ours to remove");
        assert!(d.join("cdi").join(&name).symlink_metadata().is_ok());
        cdi.write(UID, &s).unwrap();
        assert_eq!(std::fs::read(d.join("victim")).unwrap(), b"keep");
        assert!(d
            .join("cdi")
            .join(&name)
            .symlink_metadata()
            .unwrap()
            .is_file());
        // Other files, and bad UIDs, are never touched.
        std::fs::write(d.join("cdi/vendor.com-gpu_x.json"), b"{}").unwrap();
        assert!(matches!(cdi.remove("../victim"), Err(CdiError::BadUid(_))));
        assert!(matches!(cdi.write("a/b", &s), Err(CdiError::BadUid(_))));
        assert_eq!(cdi.prepared(), [UID]);
        assert!(d.join("cdi/vendor.com-gpu_x.json").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
