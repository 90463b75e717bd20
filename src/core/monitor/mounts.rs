//! The mount table as the health monitor follows it: which resources a
//! mount appearing or going concerns (`requireMountPoint`).

use std::path::Path;

use super::{poke_locked, Shared};
use crate::core::health;

/// The mount table as last read, to tell which mount points a change
/// concerns: a node whose mounts change ten times a second for other
/// reasons costs a table read each time, not a rescan of every resource
/// that asks for a mount point.
pub(super) struct Mounts {
    /// The host root as the mount table spells it (canonical).
    root: Vec<u8>,
    last: Option<health::MountTable>,
}

impl Mounts {
    pub(super) fn new(host_root: &Path) -> Mounts {
        let root = std::fs::canonicalize(host_root).unwrap_or_else(|_| host_root.to_path_buf());
        Mounts {
            root: root.as_os_str().as_encoded_bytes().to_vec(),
            last: health::MountTable::read(),
        }
    }

    /// Reads the table again (following it starts now).
    pub(super) fn refresh(&mut self) {
        self.last = health::MountTable::read();
    }

    /// A mount point of the table as a host path, if it is under the host
    /// root.
    fn host_path(&self, mount_point: &[u8]) -> Option<String> {
        let rest = if self.root == b"/" {
            mount_point
        } else {
            let rest = mount_point.strip_prefix(self.root.as_slice())?;
            if !rest.is_empty() && !rest.starts_with(b"/") {
                return None;
            }
            rest
        };
        let rest = std::str::from_utf8(rest).ok()?;
        Some(if rest.is_empty() {
            "/".into()
        } else {
            rest.into()
        })
    }

    /// The mount table changed: re-read it (which re-arms `POLLPRI`) and
    /// check each resource that asks for a mount point and that a changed
    /// mount point concerns. Unreadable: check them all.
    pub(super) fn changed(&mut self, shared: &Shared, f: &mut std::fs::File) {
        use std::io::{Read, Seek};
        let mut text = String::new();
        let read = f
            .seek(std::io::SeekFrom::Start(0))
            .and_then(|_| f.read_to_string(&mut text));
        let now = read.ok().map(|_| health::MountTable::parse(&text));
        let changed: Option<Vec<String>> = match (&self.last, &now) {
            (Some(old), Some(new)) => Some(
                old.changed(new)
                    .into_iter()
                    .filter_map(|m| self.host_path(m))
                    .collect(),
            ),
            _ => None,
        };
        self.last = now;
        if changed.as_ref().is_some_and(Vec::is_empty) {
            return;
        }
        log::debug!("mount table changed: {changed:?}");
        let mut inner = shared.lock();
        let ids: Vec<u64> = inner
            .entries
            .iter()
            .filter(|(_, e)| {
                let r = e.state.resource();
                r.require_mount_point
                    && changed
                        .as_ref()
                        .is_none_or(|c| c.iter().any(|m| r.concerns_mount_point(m)))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            poke_locked(&mut inner, id);
        }
    }
}
