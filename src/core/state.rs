//! One resource's versioned state, shared by the health monitor, the
//! supervisor and the fronts that serve it: its settings, its health (and
//! why), the devices found, and the streams open on it. Health changes and
//! config updates bump the version and wake every stream, which then sends
//! the current list; the front renders that list in its own protocol.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::channel::mpsc;

use super::discovery::{DeviceSet, Merged};
use super::resource::Resource;
use super::stats::Stats;

/// Where a resource is in its life, as its streams see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Retired by a reload: streams send an empty list, then end (B5).
    Retiring,
    /// Daemon shutdown: streams end cleanly.
    Stopping,
}

struct State {
    resource: Arc<Resource>,
    healthy: bool,
    /// The first health check has reported: until then streams send
    /// nothing (the kubelet shows no capacity yet, rather than a guess).
    checked: bool,
    /// Why it is unhealthy (empty when healthy), to log reason changes.
    reason: String,
    /// Bumped on every change a stream must send.
    version: u64,
    /// Bumped when the resource is served on a fresh socket: streams of an
    /// older epoch end, so the kubelet has let go of them before the new
    /// registration (kubelets up to 1.36 let a late end cut the new stream).
    epoch: u64,
    phase: Phase,
    /// One waker per open stream; capacity-1 channels, so a stream that is
    /// not reading holds at most one pending wake-up, never a queue.
    watchers: Vec<mpsc::Sender<()>>,
    open_streams: usize,
    /// Refused Allocate calls are logged at most once a second (a confused
    /// or hostile client must not flood the log); the rest are counted.
    last_refusal_log: Option<std::time::Instant>,
    refusals_unlogged: u64,
    /// The devices found so far (resources whose devices come and go).
    set: DeviceSet,
    /// The list was cut to fit one message: said once, until it fits again.
    cut_said: bool,
    /// The scan problems last logged, so each is logged once.
    problems: std::collections::BTreeSet<String>,
    /// What the scans remember (USB serials seen twice).
    memory: crate::core::discovery::Memory,
    /// A reload changed how devices are found: the next merge tells a
    /// device no longer configured from one that vanished.
    reconfigured: bool,
    /// Device IDs a running pod holds through the other API (the device
    /// plugin's, on a node that serves this resource through DRA, or the
    /// reverse) until that pod ends (B19). DRA leaves them out of its
    /// slices. The device plugin still lists them (the scheduler counts
    /// the pods that hold them against allocatable), but never gives one:
    /// preferred allocations avoid them and Allocate refuses them.
    held: BTreeSet<String>,
    /// Devices may be held through the other API on this node (DRA claims
    /// were there when the daemon started), whether or not this resource's
    /// are known yet: the device plugin then advertises
    /// GetPreferredAllocation, whose option the kubelet reads only once.
    handing_over: bool,
}

/// What a recorded health result changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The first result for the resource.
    First,
    /// Health or reason changed; the previous health.
    From(bool),
}

/// Per-resource state shared by the gRPC handlers, the health thread and
/// the supervisor. Survives re-serving on a new socket.
pub struct ResourceState {
    state: Mutex<State>,
    /// Its counters, read by the metrics without taking the lock.
    pub stats: Stats,
}

/// What a stream does next.
pub enum Step<T> {
    /// Send the list (rendered by the front) at this version.
    Send(T, u64),
    /// Nothing new: wait for a wake-up.
    Wait,
    /// End the stream, after an empty list when the resource was retired.
    End { empty_first: bool },
}

/// The device list as it stands, for a front to render.
pub enum Listing<'a> {
    /// A fixed path: IDs `"0"`..`"n-1"`, all with the same health.
    Fixed { n: u32, healthy: bool },
    /// Devices that come and go: each ID with its health, cut to fit one
    /// kubelet message.
    Found(&'a [(std::borrow::Cow<'a, str>, &'static str)]),
}

/// What a front may offer of a resource (see [`ResourceState::with_offer`]).
pub enum Offer<'a> {
    Nothing,
    /// A fixed path, healthy: devices `"0"`..`"n-1"`.
    Fixed(u32),
    /// Devices that come and go: the present ones of the set.
    Found(&'a DeviceSet),
}

/// A stream's registration: its wake-ups and the epoch it belongs to.
pub struct Subscription {
    pub wakeups: mpsc::Receiver<()>,
    pub epoch: u64,
    pub name: String,
}

impl ResourceState {
    /// A resource whose health is not known yet: its streams wait for the
    /// first [`ResourceState::set_health`].
    pub fn new(resource: Arc<Resource>) -> Arc<ResourceState> {
        Arc::new(ResourceState {
            stats: Stats::default(),
            state: Mutex::new(State {
                resource,
                healthy: false,
                checked: false,
                reason: String::new(),
                version: 1,
                epoch: 0,
                phase: Phase::Serving,
                watchers: Vec::new(),
                open_streams: 0,
                last_refusal_log: None,
                refusals_unlogged: 0,
                set: DeviceSet::default(),
                cut_said: false,
                problems: Default::default(),
                memory: Default::default(),
                reconfigured: false,
                held: BTreeSet::new(),
                handing_over: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::util::lock(&self.state)
    }

    pub fn resource(&self) -> Arc<Resource> {
        self.lock().resource.clone()
    }

    pub fn healthy(&self) -> bool {
        self.lock().healthy
    }

    /// Whether the first check (or scan) has reported since the resource's
    /// kind of devices was last set.
    pub fn checked(&self) -> bool {
        self.lock().checked
    }

    pub fn open_streams(&self) -> usize {
        self.lock().open_streams
    }

    /// Logs a refused request, at most once a second with a count of the
    /// refusals not logged since.
    pub fn log_refusal(&self, msg: &str) {
        let mut s = self.lock();
        let now = std::time::Instant::now();
        if s.last_refusal_log
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1))
        {
            s.refusals_unlogged += 1;
            return;
        }
        let skipped = std::mem::take(&mut s.refusals_unlogged);
        s.last_refusal_log = Some(now);
        drop(s);
        if skipped > 0 {
            log::warn!("{msg} ({skipped} more refused Allocate calls not logged)");
        } else {
            log::warn!("{msg}");
        }
    }

    /// Records a health result with its reason. Returns what changed:
    /// the first result, or the previous health when it or its reason
    /// changed. Streams are woken by the first result and when the health
    /// itself flips (the kubelet sees no reasons).
    pub fn set_health(&self, healthy: bool, reason: &str) -> Option<Change> {
        let mut s = self.lock();
        if !s.checked {
            s.checked = true;
            s.healthy = healthy;
            s.reason = reason.to_string();
            s.version += 1;
            Self::wake(&mut s);
            return Some(Change::First);
        }
        if s.healthy == healthy && s.reason == reason {
            return None;
        }
        let was = s.healthy;
        s.reason = reason.to_string();
        if s.healthy != healthy {
            s.healthy = healthy;
            s.version += 1;
            Self::wake(&mut s);
        }
        Some(Change::From(was))
    }

    /// Replaces the resource's settings in place (a reload that keeps the
    /// resource and socket name): new Allocate answers at once, and a new
    /// list on the streams if the device count changed.
    pub fn update_resource(&self, resource: Arc<Resource>) {
        let mut s = self.lock();
        let switched = s.resource.is_dynamic() != resource.is_dynamic();
        let devices_changed = s.resource.num_devices != resource.num_devices || switched;
        if switched {
            // Another kind of ID: wait for the first check or scan.
            s.set = DeviceSet::default();
            s.checked = false;
        } else if s.resource.discovery != resource.discovery {
            s.reconfigured = true;
        }
        s.resource = resource;
        if devices_changed {
            s.version += 1;
            Self::wake(&mut s);
        }
    }

    /// Ends every stream opened before now; later streams are unaffected.
    pub fn new_epoch(&self) {
        let mut s = self.lock();
        s.epoch += 1;
        Self::wake(&mut s);
    }

    /// Retire (reload removed the resource): empty list, then end.
    pub fn retire(&self) {
        let mut s = self.lock();
        s.phase = Phase::Retiring;
        Self::wake(&mut s);
    }

    /// Daemon shutdown: end every stream.
    pub fn stop(&self) {
        let mut s = self.lock();
        s.phase = Phase::Stopping;
        Self::wake(&mut s);
    }

    fn wake(s: &mut State) {
        s.watchers.retain_mut(|w| match w.try_send(()) {
            Ok(()) => true,
            Err(e) => e.is_full(),
        });
    }

    /// Renders the list under the lock (no copy of up to 4 MiB of IDs).
    fn list_locked<T>(s: &mut State, stats: &Stats, render: impl FnOnce(Listing<'_>) -> T) -> T {
        if !s.resource.is_dynamic() {
            return render(Listing::Fixed {
                n: s.resource.num_devices,
                healthy: s.healthy,
            });
        }
        let (devices, left) = s.set.list(!s.healthy);
        if left > 0 && !s.cut_said {
            log::warn!(
                "{}: {} device IDs do not fit one ListAndWatch message ({} bytes at most): \
                 listing the first {} by ID, leaving out {left}",
                s.resource.resource_name,
                s.set.entries(),
                crate::kubelet::MAX_MESSAGE_BYTES,
                devices.len()
            );
        }
        let cut = left > 0;
        if cut {
            Stats::bump(&stats.lists_cut);
        }
        let out = render(Listing::Found(&devices));
        drop(devices);
        s.cut_said = cut;
        out
    }

    /// A new stream: woken on every change it must send.
    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::channel(1);
        let mut s = self.lock();
        s.watchers.push(tx);
        s.open_streams += 1;
        Subscription {
            wakeups: rx,
            epoch: s.epoch,
            name: s.resource.resource_name.clone(),
        }
    }

    /// A stream has ended.
    pub fn unsubscribe(&self) {
        let mut s = self.lock();
        s.open_streams = s.open_streams.saturating_sub(1);
    }

    /// What may be offered now, under one lock: nothing until the first
    /// check and while the resource is unhealthy (its path missing, its
    /// scan hung), else its devices (a fixed path's `n`, or the set, of
    /// which only present devices may be offered).
    /// The IDs held through the other API are passed along: the front
    /// leaves them out.
    pub fn with_offer<T>(&self, f: impl FnOnce(&Resource, Offer<'_>, &BTreeSet<String>) -> T) -> T {
        let s = self.lock();
        let offer = if !s.checked || !s.healthy {
            Offer::Nothing
        } else if s.resource.is_dynamic() {
            Offer::Found(&s.set)
        } else {
            Offer::Fixed(s.resource.num_devices)
        };
        f(&s.resource, offer, &s.held)
    }

    /// Records the device IDs a running pod holds through the other API
    /// (B19): never offered nor given until released. A
    /// change wakes the streams; returns how many were held before, or
    /// `None` when nothing changed.
    pub fn set_held_elsewhere(&self, held: BTreeSet<String>) -> Option<usize> {
        let mut s = self.lock();
        if s.held == held {
            return None;
        }
        let before = std::mem::replace(&mut s.held, held).len();
        s.version += 1;
        Self::wake(&mut s);
        Some(before)
    }

    /// How many device IDs are held through the other API (see
    /// [`ResourceState::set_held_elsewhere`]).
    pub fn held_elsewhere(&self) -> usize {
        self.lock().held.len()
    }

    /// The device IDs held through the other API.
    pub fn held_ids(&self) -> BTreeSet<String> {
        self.lock().held.clone()
    }

    /// Records that devices may be held through the other API on this node.
    pub fn set_handing_over(&self, on: bool) {
        self.lock().handing_over = on;
    }

    /// Whether devices are, or may be, held through the other API: see
    /// [`ResourceState::set_handing_over`].
    pub fn handing_over(&self) -> bool {
        let s = self.lock();
        s.handing_over || !s.held.is_empty()
    }

    /// Wakes `tx` on every change a stream would send, without counting as
    /// a stream. A full channel is a wake-up already pending.
    pub fn notify(&self, tx: mpsc::Sender<()>) {
        let mut s = self.lock();
        s.watchers.push(tx);
    }

    /// The list as a stream would send it now; `None` before the first
    /// check and once the resource is retired or stopping.
    pub fn current<T>(&self, render: impl FnOnce(Listing<'_>) -> T) -> Option<T> {
        let mut s = self.lock();
        if !s.checked || s.phase != Phase::Serving {
            return None;
        }
        Some(Self::list_locked(&mut s, &self.stats, render))
    }

    /// Bumped on every change a stream must send.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// Reads the resource and its device set under one lock.
    pub fn with_devices<T>(&self, f: impl FnOnce(&Resource, &DeviceSet) -> T) -> T {
        let s = self.lock();
        f(&s.resource, &s.set)
    }

    /// How many entries its list has now, healthy and unhealthy (every
    /// slot counted, as the kubelet sees them); none before the first
    /// check or scan.
    pub fn device_counts(&self) -> (u64, u64) {
        let s = self.lock();
        if !s.checked {
            return (0, 0);
        }
        if !s.resource.is_dynamic() {
            let n = u64::from(s.resource.num_devices);
            return if s.healthy { (n, 0) } else { (0, n) };
        }
        let all = s.set.entries();
        let healthy = if s.healthy {
            s.set.present_entries()
        } else {
            0
        };
        (healthy, all - healthy)
    }

    /// Entries its list has now (every slot of every device listed).
    pub fn list_entries(&self) -> u64 {
        self.lock().set.entries()
    }

    /// What the scans of this resource remember, for the next scan.
    pub fn scan_memory(&self) -> crate::core::discovery::Memory {
        self.lock().memory.clone()
    }

    /// Merges one scan of a resource whose devices come and go, made with
    /// the settings `scanned` and remembering `memory`; the scan also
    /// means the resource itself is healthy (its scan returned). A scan
    /// made with settings a reload has since replaced is dropped (`None`):
    /// its devices are not what is configured now, and a new scan is
    /// already due. Logs what appeared, vanished, came back, was removed
    /// or is no longer configured, and wakes the streams when the list
    /// changed.
    pub fn merge_scan(
        &self,
        scan: crate::core::discovery::Scan,
        now: std::time::Instant,
        scanned: &Arc<Resource>,
        memory: crate::core::discovery::Memory,
    ) -> Option<Merged> {
        let mut s = self.lock();
        if !Arc::ptr_eq(&s.resource, scanned) {
            return None;
        }
        let d = s.resource.discovery.clone()?;
        s.memory = memory;
        let reconfigured = std::mem::take(&mut s.reconfigured);
        let still = |g: &[crate::core::resource::Grant]| d.describes(g);
        let merged = s.set.merge_with(
            scan.devices,
            now,
            d.remove_after,
            reconfigured.then_some(&still as crate::core::discovery::StillConfigured<'_>),
        );
        Some(Self::merged(s, merged, scan.problems, true))
    }

    /// Merges what single entries are now, each looked at alone after an
    /// inotify event named it (`(ID, what it is now)`), with the settings
    /// `scanned`: the same outcomes and log as [`ResourceState::merge_scan`]
    /// for those IDs, the rest untouched. `None` when the settings were
    /// replaced meanwhile, or the first scan has not been merged yet.
    pub fn merge_names(
        &self,
        updates: Vec<(String, Option<crate::core::discovery::Found>)>,
        problems: std::collections::BTreeSet<String>,
        now: std::time::Instant,
        scanned: &Arc<Resource>,
    ) -> Option<Merged> {
        let mut s = self.lock();
        if !Arc::ptr_eq(&s.resource, scanned) || !s.checked || s.reconfigured {
            return None;
        }
        let remove_after = s.resource.discovery.as_ref()?.remove_after;
        let mut merged = Merged::default();
        for (id, found) in updates {
            s.set.update(&id, found, now, remove_after, &mut merged);
        }
        merged.next_removal = s.set.next_removal(remove_after);
        Some(Self::merged(s, merged, problems, false))
    }

    /// The bookkeeping and log lines after a merge. `problems` replace the
    /// ones known (a full scan) or add to them (single entries).
    fn merged(
        mut s: MutexGuard<'_, State>,
        merged: Merged,
        mut problems: std::collections::BTreeSet<String>,
        full: bool,
    ) -> Merged {
        let name = s.resource.resource_name.clone();
        let first = !s.checked;
        let was_healthy = s.healthy;
        s.checked = true;
        s.healthy = true;
        s.reason.clear();
        if first || merged.changed() || !was_healthy {
            s.version += 1;
            Self::wake(&mut s);
        }
        problems.extend(merged.refused.iter().map(|r| format!("not listed: {r}")));
        let new_problems: Vec<String> = problems.difference(&s.problems).cloned().collect();
        if full {
            s.problems = problems;
        } else {
            s.problems.extend(problems);
        }
        let (listed, present) = (s.set.len(), s.set.present());
        drop(s);
        for p in new_problems {
            log::warn!("{name}: {p}");
        }
        if first {
            log::info!("{name}: {present} device(s) found");
        } else if !was_healthy {
            log::info!("{name}: scanning works again");
        }
        let say = |what: &str, ids: &[String]| {
            if ids.is_empty() {
                return;
            }
            const SHOWN: usize = 5;
            // In ID order already: merges walk the set in order.
            let text: Vec<String> = ids
                .iter()
                .take(SHOWN)
                .map(|id| crate::text::shown(id))
                .collect();
            let more = ids.len().saturating_sub(SHOWN);
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            let event = match what {
                "appeared" => "devices_appeared",
                "back" => "devices_back",
                "vanished" => "devices_vanished",
                "removed" => "devices_removed",
                _ => "devices_unconfigured",
            };
            let name = name.as_str();
            if what == "vanished" {
                log::warn!(resource = name, event = event; "{name}: {what}: {}{tail}", text.join(", "));
            } else {
                log::info!(resource = name, event = event; "{name}: {what}: {}{tail}", text.join(", "));
            }
        };
        if !first {
            say("appeared", &merged.appeared);
        }
        say("back", &merged.back);
        say("vanished", &merged.vanished);
        say("removed", &merged.removed);
        say("no longer configured, removed", &merged.unconfigured);
        if merged.changed() && !first {
            log::debug!("{name}: {listed} listed, {present} present");
        }
        merged
    }

    /// What a stream of `epoch` that last sent `last_sent` does next; the
    /// list is rendered by `render`.
    pub fn next_step<T>(
        &self,
        epoch: u64,
        last_sent: u64,
        render: impl FnOnce(Listing<'_>) -> T,
    ) -> Step<T> {
        let mut s = self.lock();
        match s.phase {
            Phase::Stopping => return Step::End { empty_first: false },
            Phase::Retiring => return Step::End { empty_first: true },
            Phase::Serving => {}
        }
        if s.epoch != epoch {
            return Step::End { empty_first: false };
        }
        if s.version == last_sent || !s.checked {
            return Step::Wait;
        }
        let version = s.version;
        Step::Send(Self::list_locked(&mut s, &self.stats, render), version)
    }
}
