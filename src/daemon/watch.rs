//! The supervisor's inotify instance: the socket directory (where
//! `kubelet.sock` is re-created) and the config file's directory. Host-path
//! watches live in the health monitor's own instance, so busy host
//! directories can never overflow this queue.
//!
//! Owners say which paths a [`Key`] should watch with [`Watcher::set`]; it
//! re-adds each path every time (inotify returns the existing descriptor for
//! the same inode, a new one when the path now names another file), so a
//! re-created directory is picked up without tracking inode numbers.
//! [`Watcher::read`] drains events and reports which keys they concern.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

/// What a watch is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// The directory holding our sockets (and kubelet.sock), and its parent.
    Sockets,
    /// The config file's directory (ConfigMap `..data` swaps happen there).
    Config,
}

/// One event, with the keys whose watches it came from.
#[derive(Debug)]
pub struct Fired {
    pub keys: Vec<Key>,
    pub mask: EventMask,
    /// The entry name inside a watched directory, if any.
    pub name: Option<OsString>,
    /// The watched path the event is about (its directory for named events).
    pub dir: PathBuf,
}

impl Fired {
    pub fn name_is(&self, name: &str) -> bool {
        self.name.as_deref().is_some_and(|n| n == name)
    }
}

/// Every watch uses the same mask: adding a second purpose to an inode
/// replaces its mask, so a union keeps all purposes served.
fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
}

struct Watched {
    path: PathBuf,
    keys: BTreeSet<Key>,
}

pub struct Watcher {
    inotify: Inotify,
    by_wd: HashMap<WatchDescriptor, Watched>,
    /// What each key watches now.
    by_key: HashMap<Key, Vec<(PathBuf, WatchDescriptor)>>,
}

impl Watcher {
    /// # Errors
    ///
    /// When inotify cannot be initialised (e.g. the instance limit).
    pub fn new() -> io::Result<Watcher> {
        Ok(Watcher {
            inotify: Inotify::init()?,
            by_wd: HashMap::new(),
            by_key: HashMap::new(),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.inotify.as_raw_fd()
    }

    /// Makes `key` watch exactly those of `paths` that exist now. Returns
    /// the paths that could not be watched (missing, or an error).
    pub fn set(&mut self, key: Key, paths: &[PathBuf]) -> Vec<PathBuf> {
        let mut failed = Vec::new();
        let mut now = Vec::new();
        for p in paths {
            match self.inotify.watches().add(p, mask()) {
                Ok(wd) => {
                    let w = self.by_wd.entry(wd.clone()).or_insert_with(|| Watched {
                        path: p.clone(),
                        keys: BTreeSet::new(),
                    });
                    w.keys.insert(key);
                    now.push((p.clone(), wd));
                }
                Err(_) => failed.push(p.clone()),
            }
        }
        let old = self.by_key.insert(key, now.clone()).unwrap_or_default();
        for (_, wd) in old {
            if now.iter().any(|(_, w)| *w == wd) {
                continue;
            }
            self.release(&wd, key);
        }
        failed
    }

    /// Stops watching anything for `key`.
    pub fn clear(&mut self, key: Key) {
        for (_, wd) in self.by_key.remove(&key).unwrap_or_default() {
            self.release(&wd, key);
        }
    }

    fn release(&mut self, wd: &WatchDescriptor, key: Key) {
        if let Some(w) = self.by_wd.get_mut(wd) {
            w.keys.remove(&key);
            if w.keys.is_empty() {
                self.by_wd.remove(wd);
                let _ = self.inotify.watches().remove(wd.clone());
            }
        }
    }

    /// Drains pending events (non-blocking).
    pub fn read(&mut self) -> Vec<Fired> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let events = match self.inotify.read_events(&mut buf) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("inotify read failed: {e}");
                    break;
                }
            };
            let mut any = false;
            for e in events {
                any = true;
                if e.mask.contains(EventMask::Q_OVERFLOW) {
                    // Events were lost: every owner rechecks everything.
                    let keys: BTreeSet<Key> = self.by_key.keys().copied().collect();
                    out.push(Fired {
                        keys: keys.into_iter().collect(),
                        mask: e.mask,
                        name: None,
                        dir: PathBuf::new(),
                    });
                    continue;
                }
                let Some(w) = self.by_wd.get(&e.wd) else {
                    continue;
                };
                let fired = Fired {
                    keys: w.keys.iter().copied().collect(),
                    mask: e.mask,
                    name: e.name.map(|n| n.to_os_string()),
                    dir: w.path.clone(),
                };
                if e.mask.contains(EventMask::IGNORED) {
                    // The kernel dropped the watch (the inode is gone).
                    self.by_wd.remove(&e.wd);
                    for list in self.by_key.values_mut() {
                        list.retain(|(_, wd)| *wd != e.wd);
                    }
                }
                out.push(fired);
            }
            if !any {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::Duration;

    use crate::util::poll_readable;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hpdp-watch-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn wait_events(w: &mut Watcher) -> Vec<Fired> {
        let mut all = Vec::new();
        while poll_readable(&[w.fd()], Some(Duration::from_millis(200))).unwrap()[0] {
            all.extend(w.read());
        }
        all
    }

    #[test]
    fn recreated_directory_is_watched_again() {
        let d = tmp("recreate");
        let sub = d.join("sub");
        fs::create_dir(&sub).unwrap();
        let mut w = Watcher::new().unwrap();
        assert!(w.set(Key::Sockets, &[sub.clone(), d.clone()]).is_empty());
        fs::remove_dir(&sub).unwrap();
        let ev = wait_events(&mut w);
        assert!(ev.iter().any(|f| f.mask.contains(EventMask::DELETE_SELF)));
        assert!(ev
            .iter()
            .any(|f| f.name_is("sub") && f.mask.contains(EventMask::DELETE)));
        fs::create_dir(&sub).unwrap();
        let ev = wait_events(&mut w);
        assert!(ev
            .iter()
            .any(|f| f.name_is("sub") && f.mask.contains(EventMask::CREATE)));
        assert!(w.set(Key::Sockets, &[sub.clone(), d.clone()]).is_empty());
        fs::write(sub.join("x"), b"").unwrap();
        let ev = wait_events(&mut w);
        assert!(
            ev.iter()
                .any(|f| f.name_is("x") && f.keys == [Key::Sockets]),
            "{ev:?}"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn shared_directory_reports_every_key_and_clear_keeps_others() {
        let d = tmp("shared");
        let mut w = Watcher::new().unwrap();
        w.set(Key::Config, std::slice::from_ref(&d));
        w.set(Key::Sockets, std::slice::from_ref(&d));
        fs::write(d.join("a"), b"").unwrap();
        let ev = wait_events(&mut w);
        assert!(
            ev.iter().any(|f| f.keys == [Key::Sockets, Key::Config]),
            "{ev:?}"
        );
        w.clear(Key::Sockets);
        fs::write(d.join("b"), b"").unwrap();
        let ev = wait_events(&mut w);
        assert!(
            ev.iter().any(|f| f.name_is("b") && f.keys == [Key::Config]),
            "{ev:?}"
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
