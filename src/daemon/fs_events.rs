//! What a batch of the supervisor's inotify events means (pure: no I/O).
//!
//! The supervisor acts on the [`Meaning`]: a kubelet restart serves every
//! resource afresh, our socket names touched are checked for still being
//! ours, the config is re-read after a settle time. An overflow says
//! nothing certain, so it asks the supervisor to *look* (is `kubelet.sock`
//! the same file as before? are our sockets intact?) rather than assume a
//! restart that would cut every stream.

use std::collections::BTreeSet;
use std::path::Path;

use inotify::EventMask;

use crate::daemon::watch::{Fired, Key};
use crate::kubelet::KUBELET_SOCKET;

/// The meaning of one batch of events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Meaning {
    /// A new `kubelet.sock` was created (classic registration only).
    pub kubelet_created: bool,
    /// The socket directory was removed or moved away.
    pub dir_gone: bool,
    /// The socket directory was created (again) in its parent.
    pub dir_back: bool,
    /// Names in the socket directory created, deleted or moved.
    pub touched: BTreeSet<String>,
    /// Something changed in the config file's directory.
    pub config_changed: bool,
    /// Events were lost: look at everything that matters.
    pub overflow: bool,
}

/// Reads a batch. `kubelet_mode`: registration through `kubelet.sock`.
pub fn interpret(fired: &[Fired], socket_dir: &Path, kubelet_mode: bool) -> Meaning {
    let dir_name = socket_dir.file_name();
    let mut m = Meaning::default();
    for f in fired {
        if f.mask.contains(EventMask::Q_OVERFLOW) {
            m.overflow = true;
            m.config_changed = true;
            continue;
        }
        for key in &f.keys {
            match key {
                Key::Config => m.config_changed = true,
                Key::Sockets if f.dir == socket_dir => {
                    if f.name.is_none()
                        && f.mask
                            .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
                    {
                        m.dir_gone = true;
                    } else if kubelet_mode
                        && f.name_is(KUBELET_SOCKET)
                        && f.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO)
                    {
                        m.kubelet_created = true;
                    } else if f.mask.intersects(
                        EventMask::DELETE
                            | EventMask::MOVED_FROM
                            | EventMask::MOVED_TO
                            | EventMask::CREATE,
                    ) {
                        if let Some(n) = f.name.as_ref().and_then(|n| n.to_str()) {
                            m.touched.insert(n.to_string());
                        }
                    }
                }
                Key::Sockets => {
                    // The parent: our directory re-created, or moved away.
                    if f.name.is_some() && f.name.as_deref() == dir_name {
                        if f.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                            m.dir_back = true;
                        } else if f.mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
                            m.dir_gone = true;
                        }
                    }
                }
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn ev(keys: &[Key], mask: EventMask, dir: &str, name: Option<&str>) -> Fired {
        Fired {
            keys: keys.to_vec(),
            mask,
            name: name.map(Into::into),
            dir: PathBuf::from(dir),
        }
    }

    const DIR: &str = "/k/device-plugins";

    #[test]
    fn a_kubelet_restart_is_one_meaning() {
        let batch = [
            ev(&[Key::Sockets], EventMask::DELETE, DIR, Some("a.sock")),
            ev(
                &[Key::Sockets],
                EventMask::DELETE,
                DIR,
                Some(KUBELET_SOCKET),
            ),
            ev(
                &[Key::Sockets],
                EventMask::CREATE,
                DIR,
                Some(KUBELET_SOCKET),
            ),
        ];
        let m = interpret(&batch, Path::new(DIR), true);
        assert!(m.kubelet_created && !m.overflow && !m.dir_gone);
        assert!(m.touched.contains("a.sock"));
        // In plugin-watcher mode kubelet.sock means nothing to us.
        let m = interpret(&batch, Path::new(DIR), false);
        assert!(!m.kubelet_created);
    }

    #[test]
    fn a_rename_over_our_socket_touches_it() {
        let batch = [ev(
            &[Key::Sockets],
            EventMask::MOVED_TO,
            DIR,
            Some("a.sock"),
        )];
        let m = interpret(&batch, Path::new(DIR), true);
        assert!(m.touched.contains("a.sock"));
    }

    #[test]
    fn the_directory_going_and_coming_back() {
        let gone = [ev(&[Key::Sockets], EventMask::DELETE_SELF, DIR, None)];
        assert!(interpret(&gone, Path::new(DIR), true).dir_gone);
        let back = [ev(
            &[Key::Sockets],
            EventMask::CREATE | EventMask::ISDIR,
            "/k",
            Some("device-plugins"),
        )];
        let m = interpret(&back, Path::new(DIR), true);
        assert!(m.dir_back && !m.dir_gone);
        let other = [ev(&[Key::Sockets], EventMask::CREATE, "/k", Some("pods"))];
        assert_eq!(interpret(&other, Path::new(DIR), true), Meaning::default());
    }

    #[test]
    fn an_overflow_asks_to_look_and_assumes_no_restart() {
        let batch = [ev(
            &[Key::Sockets, Key::Config],
            EventMask::Q_OVERFLOW,
            "",
            None,
        )];
        let m = interpret(&batch, Path::new(DIR), true);
        assert!(m.overflow && m.config_changed);
        assert!(!m.kubelet_created, "an overflow is not a kubelet restart");
        assert!(!m.dir_gone && m.touched.is_empty());
    }

    #[test]
    fn config_events_reload() {
        let batch = [ev(
            &[Key::Config],
            EventMask::MOVED_TO,
            "/etc/hp",
            Some("..data"),
        )];
        let m = interpret(&batch, Path::new(DIR), true);
        assert!(m.config_changed && m.touched.is_empty());
    }
}
