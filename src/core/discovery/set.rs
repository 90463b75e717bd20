//! A resource's device set over time: what each scan found, merged with
//! what was listed before. A device that vanishes stays listed, Unhealthy,
//! for `removeAfter`, and comes back under the same ID.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{id, Found};
use crate::core::resource::Grant;
use crate::kubelet::{HEALTHY, MAX_MESSAGE_BYTES, UNHEALTHY};
use crate::text::shown;

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
    /// How many times it is listed (`ID#0`… when more than one).
    slots: u32,
    paths: Paths,
    /// When it was last seen missing; `None` while present.
    vanished: Option<Instant>,
}

impl Entry {
    /// Appends its ID to the set's text `ids` and points at it there.
    fn place(&mut self, id: &str, ids: &mut String) {
        self.at = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        self.len = u32::try_from(id.len()).unwrap_or(0);
        ids.push_str(id);
    }
}

/// Devices sorted by ID (the order lists are sent and cut in). A sorted
/// vector and one text holding every ID, rather than a map of strings: no
/// node slack, and a few large blocks that the allocator maps and unmaps
/// whole instead of thousands of small ones scattered among a scan's
/// freed ones, so 10,000 devices cost little more than their entries.
/// Slots are derived, never stored: memory follows the devices present,
/// not `count`.
#[derive(Clone, Debug, Default)]
pub struct DeviceSet {
    ids: String,
    devices: Vec<Entry>,
    /// Bytes of `ids` no entry uses any more (left by [`DeviceSet::update`];
    /// the text is rebuilt when they are half of it).
    dead: usize,
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
    /// Devices a reload no longer configures (removed at once).
    pub unconfigured: Vec<String>,
    /// Devices found but not listed, each with why: two devices with one
    /// ID, or a device paired by position that would share a path with
    /// another.
    pub refused: Vec<String>,
    /// When the next vanished device is due to leave the list.
    pub next_removal: Option<Instant>,
}

impl Merged {
    /// Whether the list the kubelet sees changed (IDs or health).
    pub fn changed(&self) -> bool {
        !(self.appeared.is_empty()
            && self.back.is_empty()
            && self.vanished.is_empty()
            && self.removed.is_empty()
            && self.unconfigured.is_empty())
    }
}

/// The encoded size of one `Device` entry in a ListAndWatchResponse.
pub fn entry_size(id: usize, health: usize) -> usize {
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

/// How the devices of a merge that follows a reload are judged: whether
/// the new config still describes a device (else it is no longer
/// configured, rather than vanished).
pub type StillConfigured<'a> = &'a dyn Fn(&[Grant]) -> bool;

impl DeviceSet {
    /// Merges one scan (sorted by ID) at time `now`.
    pub fn merge(&mut self, found: Vec<Found>, now: Instant, remove_after: Duration) -> Merged {
        self.merge_with(found, now, remove_after, None)
    }

    /// Merges one scan; after a reload, `configured` tells a device the
    /// new config no longer describes (removed at once, said so) from one
    /// that vanished.
    pub fn merge_with(
        &mut self,
        found: Vec<Found>,
        now: Instant,
        remove_after: Duration,
        configured: Option<StillConfigured<'_>>,
    ) -> Merged {
        let mut m = Merged::default();
        let found = self.admit(found, &mut m);
        let old_ids = std::mem::take(&mut self.ids);
        let old = std::mem::take(&mut self.devices);
        let text: usize = found.iter().map(|f| f.id.len()).sum::<usize>() + old_ids.len();
        let mut ids = String::with_capacity(text);
        let mut out: Vec<Entry> = Vec::with_capacity(old.len().max(found.len()));
        let mut next: Option<Instant> = None;
        let old_id = |e: &Entry| &old_ids[e.at as usize..(e.at + e.len) as usize];
        let keep = |mut e: Entry, id: &str, ids: &mut String, out: &mut Vec<Entry>| {
            e.place(id, ids);
            out.push(e);
        };
        let mut gone = |mut e: Entry, ids: &mut String, out: &mut Vec<Entry>, m: &mut Merged| {
            let id = old_id(&e);
            if let Some(still) = configured {
                if !still(&e.paths.grants(id)) {
                    m.unconfigured.push(id.to_string());
                    return;
                }
            }
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
        for f in found {
            let id = f.id;
            while old.peek().is_some_and(|e| old_id(e) < id.as_str()) {
                let e = old.next().expect("peeked");
                gone(e, &mut ids, &mut out, &mut m);
            }
            let paths = Paths::new(&id, f.grants);
            match old.next_if(|e| old_id(e) == id) {
                Some(mut e) => {
                    if e.vanished.take().is_some() {
                        m.back.push(id.clone());
                    }
                    e.paths = paths;
                    e.slots = f.slots;
                    keep(e, &id, &mut ids, &mut out);
                }
                None => {
                    let e = Entry {
                        at: 0,
                        len: 0,
                        slots: f.slots,
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
        self.dead = 0;
        m.next_removal = next;
        m
    }

    /// What one ID is now, looked at alone after an inotify event named
    /// its path: `found` (`None`: nothing there). The outcomes of a merge
    /// for that one ID — appeared, back, vanished, removed — added to `m`;
    /// the rest of the set is untouched. O(log n) to find it, a move of
    /// the entries after it to make or close room; no scan of the tree.
    /// `m.next_removal` is left to the caller ([`DeviceSet::next_removal`],
    /// once for a batch).
    pub fn update(
        &mut self,
        id: &str,
        found: Option<Found>,
        now: Instant,
        remove_after: Duration,
        m: &mut Merged,
    ) {
        let at = self.devices.binary_search_by(|e| self.id(e).cmp(id));
        match (at, found) {
            (Ok(i), Some(f)) => {
                let paths = Paths::new(id, f.grants);
                let e = &mut self.devices[i];
                if e.vanished.take().is_some() {
                    m.back.push(id.to_string());
                }
                e.paths = paths;
                e.slots = f.slots;
            }
            (Err(i), Some(f)) => {
                let mut e = Entry {
                    at: 0,
                    len: 0,
                    slots: f.slots,
                    paths: Paths::new(id, f.grants),
                    vanished: None,
                };
                e.place(id, &mut self.ids);
                self.devices.insert(i, e);
                m.appeared.push(id.to_string());
            }
            (Ok(i), None) if self.devices[i].vanished.is_none() => {
                if remove_after.is_zero() {
                    let e = self.devices.remove(i);
                    self.dead += e.len as usize;
                    m.removed.push(id.to_string());
                } else {
                    self.devices[i].vanished = Some(now);
                    m.vanished.push(id.to_string());
                }
            }
            _ => {}
        }
        if self.dead > 4096 && self.dead * 2 > self.ids.len() {
            self.compact();
        }
    }

    /// When the next vanished device is due to leave the list: what a
    /// merge reports in `next_removal`, for a batch of [`DeviceSet::update`]s.
    pub fn next_removal(&self, remove_after: Duration) -> Option<Instant> {
        self.devices
            .iter()
            .filter_map(|e| e.vanished.map(|t| t + remove_after))
            .min()
    }

    /// The bytes of ID text held, dead ones included.
    #[cfg(test)]
    pub(super) fn text_bytes(&self) -> usize {
        self.ids.len()
    }

    /// Rebuilds the ID text without the bytes no entry uses.
    fn compact(&mut self) {
        let mut ids = String::with_capacity(self.ids.len() - self.dead);
        for e in &mut self.devices {
            let text = &self.ids[e.at as usize..(e.at + e.len) as usize];
            e.place(text, &mut ids);
        }
        self.ids = ids;
        self.dead = 0;
    }

    /// What of a scan may be listed. Two devices with one ID (a hash
    /// collision, which a name cannot force): the one the set already
    /// lists under it keeps it, the others are refused. A device paired
    /// by position whose exclusive path belongs to another device (one
    /// listed, or another of this scan) is refused unless the set already
    /// lists it under this ID (an ID always names the same paths).
    fn admit(&self, mut found: Vec<Found>, m: &mut Merged) -> Vec<Found> {
        if !found.is_sorted_by(|a, b| a.id <= b.id) {
            found.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        }
        let mut out: Vec<Found> = Vec::with_capacity(found.len());
        let mut run: Vec<Found> = Vec::new();
        let flush = |run: &mut Vec<Found>, out: &mut Vec<Found>, m: &mut Merged| {
            if run.len() <= 1 {
                out.append(run);
                return;
            }
            let id = run[0].id.clone();
            let listed = self.find(&id).map(|e| e.paths.grants(&id));
            let keep = run
                .iter()
                .position(|f| listed.as_deref() == Some(f.grants.as_slice()));
            for (i, f) in run.drain(..).enumerate() {
                if Some(i) == keep {
                    out.push(f);
                } else {
                    let paths: Vec<&str> = f.grants.iter().map(|g| &*g.host).collect();
                    m.refused.push(format!(
                        "{} ({}): another device has the same ID",
                        shown(&id),
                        shown(&paths.join(", "))
                    ));
                }
            }
        };
        for f in found {
            if run.last().is_some_and(|r| r.id != f.id) {
                flush(&mut run, &mut out, m);
            }
            run.push(f);
        }
        flush(&mut run, &mut out, m);
        if out.iter().all(|f| f.exclusive.is_none()) {
            return out;
        }
        // Who holds each path: the devices listed, then this scan's.
        let mut holders: HashMap<&str, Vec<&str>> = HashMap::new();
        let old_grants: Vec<(&str, Arc<[Grant]>)> = self
            .devices
            .iter()
            .map(|e| (self.id(e), e.paths.grants(self.id(e))))
            .collect();
        for (id, grants) in &old_grants {
            for g in grants.iter() {
                holders.entry(&g.host).or_default().push(id);
            }
        }
        for f in &out {
            for g in &f.grants {
                holders.entry(&g.host).or_default().push(&f.id);
            }
        }
        let mut refused: Vec<usize> = Vec::new();
        for (i, f) in out.iter().enumerate() {
            let Some(excl) = &f.exclusive else { continue };
            if self.find(&f.id).is_some() {
                continue;
            }
            let clash = f.grants.iter().zip(excl).find(|(g, x)| {
                **x && holders
                    .get(&*g.host)
                    .is_some_and(|ids| ids.iter().any(|other| *other != f.id))
            });
            if let Some((g, _)) = clash {
                m.refused.push(format!(
                    "{}: its member {} belongs to another device (members paired by position)",
                    shown(&f.id),
                    shown(&g.host)
                ));
                refused.push(i);
            }
        }
        drop(holders);
        drop(old_grants);
        let mut i = 0;
        out.retain(|_| {
            let keep = !refused.contains(&i);
            i += 1;
            keep
        });
        out
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

    /// What the set knows of the ID `id` (a device's, or one of its
    /// slots').
    pub fn lookup(&self, id: &str) -> Lookup {
        let Some((base, slot)) = id::split_slot(id) else {
            return Lookup::Unknown;
        };
        let entry = self.find(base).filter(|e| match slot {
            None => e.slots == 1,
            Some(n) => e.slots > 1 && n < e.slots,
        });
        match entry {
            Some(e) if e.vanished.is_none() => Lookup::Present(e.paths.grants(base)),
            Some(_) => Lookup::Vanished,
            None => Lookup::Unknown,
        }
    }

    /// The paths of the device `id` names, if it is listed and present.
    pub fn grants(&self, id: &str) -> Option<Arc<[Grant]>> {
        match self.lookup(id) {
            Lookup::Present(g) => Some(g),
            _ => None,
        }
    }

    /// Every present device, in ID order, with its slot count and paths:
    /// what a front that offers only what is there may offer.
    pub fn present_devices(&self) -> impl Iterator<Item = (&str, u32, Arc<[Grant]>)> + '_ {
        self.devices
            .iter()
            .filter(|e| e.vanished.is_none())
            .map(|e| {
                let id = self.id(e);
                (id, e.slots, e.paths.grants(id))
            })
    }

    /// Devices listed (present or vanished), slots not counted.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Devices present, slots not counted.
    pub fn present(&self) -> usize {
        self.devices.iter().filter(|e| e.vanished.is_none()).count()
    }

    /// Entries of the devices present: every slot of each.
    pub fn present_entries(&self) -> u64 {
        self.devices
            .iter()
            .filter(|e| e.vanished.is_none())
            .map(|e| u64::from(e.slots))
            .sum()
    }

    /// Entries the list would have: every slot of every device.
    pub fn entries(&self) -> u64 {
        self.devices.iter().map(|e| u64::from(e.slots)).sum()
    }

    /// The IDs to list, in ID order (as text: a device's slots too),
    /// with their health (`all_down`: the resource itself is unhealthy,
    /// e.g. its scan hangs), as many as fit one ListAndWatch message; and
    /// how many entries were left out.
    pub fn list(&self, all_down: bool) -> (Vec<(Cow<'_, str>, &'static str)>, u64) {
        let mut out = Vec::with_capacity(self.devices.len());
        let mut bytes = 0usize;
        'devices: for e in &self.devices {
            let id = self.id(e);
            let health = if all_down || e.vanished.is_some() {
                UNHEALTHY
            } else {
                HEALTHY
            };
            for slot in id::slots_in_id_order(e.slots) {
                let sid = id::slot_id(id, slot, e.slots);
                bytes += entry_size(sid.len(), health.len());
                if bytes > MAX_MESSAGE_BYTES {
                    break 'devices;
                }
                out.push((sid, health));
            }
        }
        let left = self.entries() - out.len() as u64;
        (out, left)
    }
}
