//! A resource's device set over time: what each scan found, merged with
//! what was listed before. A device that vanishes stays listed, Unhealthy,
//! for `removeAfter`, and comes back under the same ID.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Grant;
use crate::kubelet::{HEALTHY, MAX_MESSAGE_BYTES, UNHEALTHY};

/// A device's paths, stored compactly for the usual case.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Paths {
    /// One path, the device's own ID, at the same place in the container
    /// (a plain pattern match): nothing stored twice.
    AtId {
        device: bool,
        read_only: bool,
        permissions: super::Perm,
    },
    Listed(Arc<[Grant]>),
}

impl Paths {
    fn new(id: &str, mut grants: Vec<Grant>) -> Paths {
        match grants.as_slice() {
            [g] if *g.host == *id && g.container.is_none() => Paths::AtId {
                device: g.device,
                read_only: g.read_only,
                permissions: g.permissions,
            },
            _ => {
                grants.shrink_to_fit();
                Paths::Listed(grants.into())
            }
        }
    }

    fn grants(&self, id: &str) -> Arc<[Grant]> {
        match self {
            Paths::AtId {
                device,
                read_only,
                permissions,
            } => Arc::new([Grant {
                host: id.into(),
                container: None,
                device: *device,
                read_only: *read_only,
                permissions: *permissions,
            }]),
            Paths::Listed(g) => g.clone(),
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    /// Where its ID is in the set's `ids` text.
    at: u32,
    len: u32,
    paths: Paths,
    /// When it was last seen missing; `None` while present.
    vanished: Option<Instant>,
}

/// Devices sorted by ID (the order lists are sent and cut in). A sorted
/// vector and one text holding every ID, rather than a map of strings: no
/// node slack, and a few large blocks that the allocator maps and unmaps
/// whole instead of thousands of small ones scattered among a scan's
/// freed ones, so 10,000 devices cost little more than their entries.
#[derive(Clone, Debug, Default)]
pub struct DeviceSet {
    ids: String,
    devices: Vec<Entry>,
}

/// What a device set knows of one ID.
pub enum Lookup {
    Present(Arc<[Grant]>),
    Vanished,
    Unknown,
}

/// What a merge changed, for the log and the streams.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merged {
    pub appeared: Vec<String>,
    pub back: Vec<String>,
    pub vanished: Vec<String>,
    pub removed: Vec<String>,
    /// When the next vanished device is due to leave the list.
    pub next_removal: Option<Instant>,
}

impl Merged {
    /// Whether the list the kubelet sees changed (IDs or health).
    pub fn changed(&self) -> bool {
        !(self.appeared.is_empty()
            && self.back.is_empty()
            && self.vanished.is_empty()
            && self.removed.is_empty())
    }
}

/// The encoded size of one `Device` entry in a ListAndWatchResponse.
fn entry_size(id: usize, health: usize) -> usize {
    let varint = |mut v: usize| {
        let mut n = 1;
        while v >= 0x80 {
            v >>= 7;
            n += 1;
        }
        n
    };
    let device = 1 + varint(id) + id + 1 + varint(health) + health;
    1 + varint(device) + device
}

impl DeviceSet {
    /// Merges one scan (sorted by ID, unique) at time `now`.
    pub fn merge(
        &mut self,
        found: Vec<(String, Vec<Grant>)>,
        now: Instant,
        remove_after: Duration,
    ) -> Merged {
        let mut m = Merged::default();
        let old_ids = std::mem::take(&mut self.ids);
        let old = std::mem::take(&mut self.devices);
        let text: usize = found.iter().map(|(id, _)| id.len()).sum::<usize>() + old_ids.len();
        let mut ids = String::with_capacity(text);
        let mut out: Vec<Entry> = Vec::with_capacity(old.len().max(found.len()));
        let mut next: Option<Instant> = None;
        let old_id = |e: &Entry| &old_ids[e.at as usize..(e.at + e.len) as usize];
        let keep = |mut e: Entry, id: &str, ids: &mut String, out: &mut Vec<Entry>| {
            e.at = u32::try_from(ids.len()).unwrap_or(u32::MAX);
            e.len = u32::try_from(id.len()).unwrap_or(0);
            ids.push_str(id);
            out.push(e);
        };
        let mut gone = |mut e: Entry, ids: &mut String, out: &mut Vec<Entry>, m: &mut Merged| {
            let id = old_id(&e);
            let since = *e.vanished.get_or_insert(now);
            if now.saturating_duration_since(since) >= remove_after {
                m.removed.push(id.to_string());
                return;
            }
            if since == now {
                m.vanished.push(id.to_string());
            }
            let due = since + remove_after;
            next = Some(next.map_or(due, |t: Instant| t.min(due)));
            keep(e, id, ids, out);
        };
        let mut old = old.into_iter().peekable();
        for (id, grants) in found {
            while old.peek().is_some_and(|e| old_id(e) < id.as_str()) {
                let e = old.next().expect("peeked");
                gone(e, &mut ids, &mut out, &mut m);
            }
            let paths = Paths::new(&id, grants);
            match old.next_if(|e| old_id(e) == id) {
                Some(mut e) => {
                    if e.vanished.take().is_some() {
                        m.back.push(id.clone());
                    }
                    if e.paths != paths {
                        e.paths = paths;
                    }
                    keep(e, &id, &mut ids, &mut out);
                }
                None => {
                    let e = Entry {
                        at: 0,
                        len: 0,
                        paths,
                        vanished: None,
                    };
                    keep(e, &id, &mut ids, &mut out);
                    m.appeared.push(id);
                }
            }
        }
        for e in old {
            gone(e, &mut ids, &mut out, &mut m);
        }
        out.shrink_to_fit();
        ids.shrink_to_fit();
        self.devices = out;
        self.ids = ids;
        m.next_removal = next;
        m
    }

    fn id(&self, e: &Entry) -> &str {
        &self.ids[e.at as usize..(e.at + e.len) as usize]
    }

    fn find(&self, id: &str) -> Option<&Entry> {
        self.devices
            .binary_search_by(|e| self.id(e).cmp(id))
            .ok()
            .map(|i| &self.devices[i])
    }

    /// What the set knows of device `id`.
    pub fn lookup(&self, id: &str) -> Lookup {
        match self.find(id) {
            Some(e) if e.vanished.is_none() => Lookup::Present(e.paths.grants(id)),
            Some(_) => Lookup::Vanished,
            None => Lookup::Unknown,
        }
    }

    /// The paths of device `id`, if it is listed and present.
    pub fn grants(&self, id: &str) -> Option<Arc<[Grant]>> {
        match self.lookup(id) {
            Lookup::Present(g) => Some(g),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn present(&self) -> usize {
        self.devices.iter().filter(|e| e.vanished.is_none()).count()
    }

    /// The devices to list, in ID order, with their health (`all_down`:
    /// the resource itself is unhealthy, e.g. its scan hangs), as many as
    /// fit one ListAndWatch message; and how many were left out.
    pub fn list(&self, all_down: bool) -> (Vec<(&str, &'static str)>, usize) {
        let mut out = Vec::with_capacity(self.devices.len());
        let mut bytes = 0usize;
        for e in &self.devices {
            let id = self.id(e);
            let health = if all_down || e.vanished.is_some() {
                UNHEALTHY
            } else {
                HEALTHY
            };
            bytes += entry_size(id.len(), health.len());
            if bytes > MAX_MESSAGE_BYTES {
                break;
            }
            out.push((id, health));
        }
        let left = self.devices.len() - out.len();
        (out, left)
    }
}
