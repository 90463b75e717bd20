//! A resource's device set over time: what each scan found, merged with
//! what was listed before. A device that vanishes stays listed, Unhealthy,
//! for `removeAfter`, and comes back under the same ID.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Grant;
use crate::kubelet::{HEALTHY, MAX_MESSAGE_BYTES, UNHEALTHY};

#[derive(Clone, Debug)]
struct Entry {
    grants: Arc<[Grant]>,
    /// When it was last seen missing; `None` while present.
    vanished: Option<Instant>,
}

/// Devices by ID, in ID order (the order lists are sent and cut in).
#[derive(Clone, Debug, Default)]
pub struct DeviceSet {
    devices: BTreeMap<String, Entry>,
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
        let mut seen: BTreeMap<String, Entry> = BTreeMap::new();
        for (id, grants) in found {
            match self.devices.remove(&id) {
                Some(mut e) => {
                    if e.vanished.take().is_some() {
                        m.back.push(id.clone());
                    }
                    if *e.grants != *grants {
                        e.grants = grants.into();
                    }
                    seen.insert(id, e);
                }
                None => {
                    m.appeared.push(id.clone());
                    seen.insert(
                        id,
                        Entry {
                            grants: grants.into(),
                            vanished: None,
                        },
                    );
                }
            }
        }
        for (id, mut e) in std::mem::take(&mut self.devices) {
            let since = *e.vanished.get_or_insert(now);
            if now.saturating_duration_since(since) >= remove_after {
                m.removed.push(id);
                continue;
            }
            if since == now {
                m.vanished.push(id.clone());
            }
            let due = since + remove_after;
            m.next_removal = Some(m.next_removal.map_or(due, |t: Instant| t.min(due)));
            seen.insert(id, e);
        }
        self.devices = seen;
        m
    }

    /// The paths of device `id`, if it is listed and present.
    pub fn grants(&self, id: &str) -> Option<Arc<[Grant]>> {
        self.devices
            .get(id)
            .filter(|e| e.vanished.is_none())
            .map(|e| e.grants.clone())
    }

    /// Whether `id` is listed but has vanished.
    pub fn is_vanished(&self, id: &str) -> bool {
        self.devices.get(id).is_some_and(|e| e.vanished.is_some())
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn present(&self) -> usize {
        self.devices
            .values()
            .filter(|e| e.vanished.is_none())
            .count()
    }

    /// The devices to list, in ID order, with their health (`all_down`:
    /// the resource itself is unhealthy, e.g. its scan hangs), as many as
    /// fit one ListAndWatch message; and how many were left out.
    pub fn list(&self, all_down: bool) -> (Vec<(&str, &'static str)>, usize) {
        let mut out = Vec::with_capacity(self.devices.len());
        let mut bytes = 0usize;
        for (id, e) in &self.devices {
            let health = if all_down || e.vanished.is_some() {
                UNHEALTHY
            } else {
                HEALTHY
            };
            bytes += entry_size(id.len(), health.len());
            if bytes > MAX_MESSAGE_BYTES {
                break;
            }
            out.push((id.as_str(), health));
        }
        let left = self.devices.len() - out.len();
        (out, left)
    }
}
