//! The host-path inotify queue as the health monitor reads it: each event
//! becomes a poke of the resources whose watches it came from.

use std::collections::BTreeSet;
use std::io;

use inotify::{EventMask, Inotify, WatchDescriptor};

use super::{poke_locked, wake_locked, Shared, MAX_NAMES};

/// Drains the host-path inotify queue and pokes the resources concerned;
/// an overflow pokes every resource (events were lost, so look again).
pub(super) fn read_events(shared: &Shared, inotify: &mut Inotify, buf: &mut [u8]) {
    let mut poked: BTreeSet<u64> = BTreeSet::new();
    // (resource, watch, entry name) of events that name an entry.
    let mut named: Vec<(u64, WatchDescriptor, String)> = Vec::new();
    let mut overflow = false;
    let mut gone: Vec<WatchDescriptor> = Vec::new();
    {
        let inner = shared.lock();
        loop {
            let events = match inotify.read_events(buf) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("host-path inotify read failed: {e}");
                    break;
                }
            };
            let mut any = false;
            for e in events {
                any = true;
                if e.mask.contains(EventMask::Q_OVERFLOW) {
                    overflow = true;
                    continue;
                }
                if let Some(ids) = inner.by_wd.get(&e.wd) {
                    let name = e.name.and_then(|n| n.to_str()).map(str::to_string);
                    for id in ids {
                        match &name {
                            Some(n) => named.push((*id, e.wd.clone(), n.clone())),
                            None => {
                                poked.insert(*id);
                            }
                        }
                    }
                }
                if e.mask.contains(EventMask::IGNORED) {
                    gone.push(e.wd.clone());
                }
            }
            if !any {
                break;
            }
        }
    }
    let mut inner = shared.lock();
    for wd in gone {
        inner.by_wd.remove(&wd);
    }
    // An entry of a leaf is looked at alone; anything else, a full scan.
    for (id, wd, name) in named {
        let Some(e) = inner.entries.get_mut(&id) else {
            continue;
        };
        if e.leaves.contains_key(&wd) && e.names.len() < MAX_NAMES {
            e.names.push((wd, name));
            wake_locked(&mut inner, id);
        } else {
            e.names.clear();
            poked.insert(id);
        }
    }
    if overflow {
        log::debug!("host-path inotify queue overflowed: checking every resource");
        poked.extend(inner.entries.keys().copied());
    }
    for id in poked {
        poke_locked(&mut inner, id);
    }
}
