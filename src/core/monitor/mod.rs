//! The health monitor (B6, B16): every host-path check and watch happens on
//! its threads, never on the supervisor's, so a path whose `stat` never
//! returns (a dead NFS server) delays nothing but itself.
//!
//! Threads:
//! - `health` (the dispatcher) decides what is due, reads the host-path
//!   inotify queue (its own: busy host directories cannot overflow the
//!   queue that carries `kubelet.sock`) and the mount table, and hands
//!   checks to the workers. It never touches a host path itself.
//! - `health-check` workers run one check at a time: resolve, `stat`,
//!   create an OrCreate path, and re-arm the path's watches. A check that
//!   has run [`SPARE_AFTER`] with more checks waiting gets a new worker
//!   beside it (at most [`MAX_WORKERS`]), so one hung path holds one thread.
//!   A check still running after [`HUNG_AFTER`] makes the resource
//!   Unhealthy with that reason. Workers are never joined: one may be stuck
//!   in the kernel until the process exits. The last one idle ends after
//!   [`WORKER_LINGER`] without work, and the dispatcher starts one again
//!   when a check is due.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use inotify::{Inotify, WatchDescriptor, WatchMask, Watches};

use crate::core::discovery::Leaf;
use crate::core::health::{self, Health};
use crate::core::state::ResourceState;
use crate::core::stats::Stats;
use crate::util::path_and_ancestors;
use crate::util::{lock, poll_events, Notifier, WakeFd};

mod events;
mod mounts;
mod report;
mod scan;
use events::read_events;
use mounts::Mounts;
pub use report::publish;
use scan::{look_again, names_to_look_at, nanos_since, scan, NeedsFullScan};

/// A check that has shown no progress for this long while others wait
/// gets a spare worker. A scan reading a large directory shows progress
/// (`discovery::Hooks::progress`), so a storm of slow scans runs on one or
/// two workers, not one each.
pub const SPARE_AFTER: Duration = Duration::from_millis(20);
/// A check without progress this long makes its resource Unhealthy until
/// it returns.
pub const HUNG_AFTER: Duration = Duration::from_secs(1);
/// Most worker threads at once (each hung path can hold one).
pub const MAX_WORKERS: usize = 32;
/// How long the last worker waits for more work before it ends too: long
/// enough that a burst of events or a storm reuses it, short enough that
/// a node checked every 10 s holds no worker most of the time.
pub const WORKER_LINGER: Duration = Duration::from_secs(1);
/// How long a resource's changes gather, per entry of its list, before the
/// next merge (each merge sends the whole list): 100 ms at 100,000
/// entries, nothing to speak of at a few hundred.
pub const MERGE_GAP_PER_ENTRY: Duration = Duration::from_micros(1);
/// The longest a change waits to be merged, however large the list.
pub const MAX_MERGE_GAP: Duration = Duration::from_millis(100);

/// How often a resource whose directories cannot all be watched is
/// rescanned instead: the latency hotplug degrades to, never silence.
pub const UNWATCHED_RESCAN: Duration = Duration::from_secs(1);

/// The host-path watches the daemon allows itself: a quarter of the
/// kernel's per-user limit (root's budget is shared with the kubelet,
/// containerd and systemd), between 256 and 65,536.
pub fn default_watch_budget() -> usize {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map_or(2048, |max| (max / 4).clamp(256, 65_536))
}

/// One resource as the monitor tracks it.
struct Entry {
    state: Arc<ResourceState>,
    /// When the next periodic check is due.
    next: Instant,
    /// Handed to the workers, not yet taken.
    queued: bool,
    /// When the check in progress started.
    running: Option<Instant>,
    /// When it last showed progress: nanoseconds after `Shared::epoch`,
    /// written by the worker, read by the dispatcher.
    progress: Arc<AtomicU64>,
    /// Poked while a check ran: check again as soon as it returns.
    again: bool,
    /// The running check was reported as hung (logged once).
    hung: bool,
    /// The inotify watches its last check set.
    wds: Vec<WatchDescriptor>,
    /// Its last scan could not watch every directory it reached (said
    /// once): it is rescanned every [`UNWATCHED_RESCAN`] meanwhile.
    unwatched: bool,
    /// Where the matches of a single pattern live, by watch, as the last
    /// full scan found them with the settings `leaves_of`: an event there
    /// names the one entry to look at again.
    leaves: HashMap<WatchDescriptor, Leaf>,
    leaves_of: Option<Arc<crate::core::resource::Resource>>,
    /// Entries named by events in its leaves since its last check.
    names: Vec<(WatchDescriptor, String)>,
    /// Something other than a leaf's entry changed (or too many did): the
    /// next check scans everything.
    full: bool,
    /// When the next full scan is due anyway (`healthCheckInterval`, or
    /// the removal of a vanished device).
    full_due: Instant,
    /// When its devices were last merged, and how long to let changes
    /// gather before the next merge: [`MERGE_GAP_PER_ENTRY`] per entry of
    /// its list, so a storm on a large resource costs a few lists a
    /// second, not one per event, while the first change after a quiet
    /// spell is merged at once.
    merged_at: Option<Instant>,
    gap: Duration,
}

struct Inner {
    entries: HashMap<u64, Entry>,
    /// Which resources each watch serves (several can share a directory).
    by_wd: HashMap<WatchDescriptor, BTreeSet<u64>>,
    queue: VecDeque<u64>,
    workers: usize,
    idle: usize,
    stop: bool,
}

struct Shared {
    host_root: PathBuf,
    /// What progress times count from.
    epoch: Instant,
    inner: Mutex<Inner>,
    /// Wakes idle workers when the queue fills or the monitor stops.
    work: Condvar,
    /// Wakes the dispatcher (a poke, a new resource, a finished check).
    wake: Notifier,
    /// Adds and removes host-path watches from any thread.
    watches: Option<Watches>,
    /// The most host-path watches held at once.
    watch_budget: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }
}

/// Handle to the monitor, held by the supervisor.
pub struct Monitor {
    shared: Arc<Shared>,
    dispatcher: Option<JoinHandle<()>>,
    /// The host-path inotify instance's descriptor (-1 without one), to be
    /// released early at shutdown.
    inotify_fd: std::os::fd::RawFd,
}

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
}

impl Monitor {
    /// Starts the dispatcher thread. Host paths are inspected under
    /// `host_root`.
    ///
    /// # Errors
    ///
    /// When the wake-up eventfd or the thread cannot be created. Without
    /// inotify the monitor still polls at each resource's interval.
    pub fn start(host_root: &Path, watch_budget: usize) -> io::Result<Monitor> {
        let wake = WakeFd::new()?;
        let inotify = match Inotify::init() {
            Ok(i) => Some(i),
            Err(e) => {
                log::warn!("inotify unavailable for host paths ({e}): changes are seen at each healthCheckInterval");
                None
            }
        };
        let shared = Arc::new(Shared {
            host_root: host_root.to_path_buf(),
            epoch: Instant::now(),
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                by_wd: HashMap::new(),
                queue: VecDeque::new(),
                workers: 0,
                idle: 0,
                stop: false,
            }),
            work: Condvar::new(),
            wake: wake.notifier(),
            watches: inotify.as_ref().map(Inotify::watches),
            watch_budget,
        });
        let inotify_fd = inotify.as_ref().map_or(-1, std::os::fd::AsRawFd::as_raw_fd);
        let s = shared.clone();
        let dispatcher = thread::Builder::new()
            .name("health".into())
            .spawn(move || dispatch(&s, &wake, inotify))?;
        Ok(Monitor {
            shared,
            dispatcher: Some(dispatcher),
            inotify_fd,
        })
    }

    /// Starts checking resource `id`, at once and then every interval.
    pub fn add(&self, id: u64, state: Arc<ResourceState>) {
        self.shared.lock().entries.insert(
            id,
            Entry {
                state,
                next: Instant::now(),
                queued: false,
                running: None,
                progress: Arc::new(AtomicU64::new(0)),
                again: false,
                hung: false,
                wds: Vec::new(),
                unwatched: false,
                leaves: HashMap::new(),
                leaves_of: None,
                names: Vec::new(),
                full: true,
                full_due: Instant::now(),
                merged_at: None,
                gap: Duration::ZERO,
            },
        );
        self.shared.wake.notify();
    }

    /// Checks resource `id` again now (its path or settings changed).
    pub fn poke(&self, id: u64) {
        let mut inner = self.shared.lock();
        poke_locked(&mut inner, id);
        drop(inner);
        self.shared.wake.notify();
    }

    /// Stops checking resource `id` and drops its watches.
    pub fn remove(&self, id: u64) {
        let mut inner = self.shared.lock();
        if let Some(e) = inner.entries.remove(&id) {
            release(&self.shared, &mut inner, id, &e.wds);
        }
        inner.queue.retain(|q| *q != id);
    }

    /// The host-path inotify instance's descriptor, -1 without one; open
    /// as long as the monitor is.
    pub fn inotify_fd(&self) -> std::os::fd::RawFd {
        self.inotify_fd
    }

    /// Tells the dispatcher and the workers to end, without waiting: a
    /// process about to exit has no use for their ending.
    pub fn stop(&self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_all();
        self.shared.wake.notify();
    }

    /// Stops the dispatcher and tells the workers to end. Returns at once
    /// even when a worker is stuck in a hung filesystem.
    pub fn shutdown(&mut self) {
        self.stop();
        if let Some(d) = self.dispatcher.take() {
            // The dispatcher never blocks on a host path: this join is
            // bounded by one poll wake-up.
            let _ = d.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Checks resource `id` again as soon as possible, scanning everything.
fn poke_locked(inner: &mut Inner, id: u64) {
    if let Some(e) = inner.entries.get_mut(&id) {
        e.full = true;
    }
    wake_locked(inner, id);
}

/// The most entries named by events kept for one check; past it, the check
/// scans everything. Each named entry that appears or goes moves the
/// entries after it in the device set (about 4 MB at 100,000 devices), so
/// past a few hundred names one full scan (~200 ms there) is cheaper.
const MAX_NAMES: usize = 256;

fn wake_locked(inner: &mut Inner, id: u64) {
    if let Some(e) = inner.entries.get_mut(&id) {
        if e.running.is_some() {
            e.again = true;
        } else {
            e.next = Instant::now();
        }
    }
}

/// Drops `id`'s interest in `wds`; a watch nobody needs is removed
/// (`inotify_rm_watch` looks up no path, so it cannot hang).
fn release(shared: &Shared, inner: &mut Inner, id: u64, wds: &[WatchDescriptor]) {
    for wd in wds {
        if let Some(ids) = inner.by_wd.get_mut(wd) {
            ids.remove(&id);
            if ids.is_empty() {
                inner.by_wd.remove(wd);
                if let Some(mut w) = shared.watches.clone() {
                    let _ = w.remove(wd.clone());
                }
            }
        }
    }
}

/// The dispatcher: queue what is due, spawn spare workers, report hung
/// checks, and turn inotify and mount-table events into pokes.
fn dispatch(shared: &Arc<Shared>, wake: &WakeFd, mut inotify: Option<Inotify>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut mounts = Mounts::new(&shared.host_root);
    let mut mountinfo: Option<std::fs::File> = None;
    loop {
        let now = Instant::now();
        let mut inner = shared.lock();
        if inner.stop {
            return;
        }
        let mut wake_at: Option<Instant> = None;
        let mut soonest = |t: Instant| wake_at = Some(wake_at.map_or(t, |w: Instant| w.min(t)));
        // A heap trim the rate limit put off (after a burst of large lists).
        match crate::util::trim_due() {
            Some(d) if d.is_zero() => crate::util::trim_heap(),
            Some(d) => soonest(now + d),
            None => {}
        }
        let mut due = Vec::new();
        let mut youngest_running: Option<Instant> = None;
        let epoch = shared.epoch;
        for (id, e) in inner.entries.iter_mut() {
            match e.running {
                Some(started) => {
                    let moved = epoch + Duration::from_nanos(e.progress.load(Ordering::Relaxed));
                    let last = moved.max(started);
                    youngest_running = Some(youngest_running.map_or(last, |y| y.max(last)));
                    if now.duration_since(last) >= HUNG_AFTER && !e.hung {
                        e.hung = true;
                        Stats::bump(&e.state.stats.hung_checks);
                        publish(
                            &e.state,
                            &Health::Unhealthy(health::Reason::Hung(now.duration_since(started))),
                        );
                    } else if !e.hung {
                        soonest(last + HUNG_AFTER);
                    }
                }
                None if e.queued => {}
                None if e.next <= now => {
                    e.queued = true;
                    due.push(*id);
                }
                None => soonest(e.next),
            }
        }
        inner.queue.extend(due);
        if !inner.queue.is_empty() {
            let stuck = youngest_running.is_none_or(|y| now.duration_since(y) >= SPARE_AFTER);
            if inner.idle == 0 && stuck && inner.workers < MAX_WORKERS {
                inner.workers += 1;
                let s = shared.clone();
                if let Err(e) = thread::Builder::new()
                    .name("health-check".into())
                    .spawn(move || work(&s))
                {
                    inner.workers -= 1;
                    log::warn!("cannot start a health-check thread: {e}");
                }
            } else if inner.idle == 0 {
                if let Some(y) = youngest_running {
                    soonest(y + SPARE_AFTER);
                }
            }
            shared.work.notify_one();
            // Look again soon while anything waits: a worker that takes a
            // check and hangs at once tells nobody, and the queue behind it
            // needs a spare (and the hung check its Unhealthy) all the same.
            soonest(now + SPARE_AFTER);
        }
        let wants_mounts = inner
            .entries
            .values()
            .any(|e| e.state.resource().require_mount_point);
        drop(inner);
        // The mount table is followed only while a resource asks for a
        // mount point: no descriptor held for it otherwise.
        match (&mountinfo, wants_mounts) {
            (None, true) => {
                mountinfo = std::fs::File::open("/proc/self/mountinfo").ok();
                mounts.refresh();
                // A mount that came before the table was followed: one
                // more look at each resource that asks for one.
                let mut inner = shared.lock();
                let ids: Vec<u64> = inner
                    .entries
                    .iter()
                    .filter(|(_, e)| e.state.resource().require_mount_point)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    poke_locked(&mut inner, id);
                }
            }
            (Some(_), false) => mountinfo = None,
            _ => {}
        }
        let mount_fd = mountinfo.as_ref().map_or(-1, AsRawFd::as_raw_fd);

        let fds = [
            (wake.fd(), libc::POLLIN),
            (inotify.as_ref().map_or(-1, |i| i.as_raw_fd()), libc::POLLIN),
            (mount_fd, libc::POLLPRI),
        ];
        let timeout = wake_at.map(|t| t.saturating_duration_since(Instant::now()));
        let revents = match poll_events(&fds, timeout) {
            Ok(r) => r,
            Err(e) => {
                log::error!("health monitor: poll failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if revents[0] != 0 {
            wake.drain();
        }
        if revents[1] != 0 {
            if let Some(i) = inotify.as_mut() {
                read_events(shared, i, &mut buf);
            }
        }
        if revents[2] != 0 {
            if let Some(f) = mountinfo.as_mut() {
                mounts.changed(shared, f);
            }
        }
    }
}

/// A worker: take a queued check, run it without any lock, record the
/// result. At most one worker waits idle, for [`WORKER_LINGER`]; the
/// others end at once.
fn work(shared: &Shared) {
    let mut inner = shared.lock();
    loop {
        if inner.stop {
            inner.workers -= 1;
            return;
        }
        let Some(id) = inner.queue.pop_front() else {
            if inner.idle >= 1 {
                inner.workers -= 1;
                return;
            }
            inner.idle += 1;
            let (guard, waited) = shared
                .work
                .wait_timeout(inner, WORKER_LINGER)
                .unwrap_or_else(|p| p.into_inner());
            inner = guard;
            inner.idle -= 1;
            if waited.timed_out() && inner.queue.is_empty() && !inner.stop {
                // Nothing for a while: the dispatcher starts one when
                // something is due (both under this lock).
                inner.workers -= 1;
                return;
            }
            continue;
        };
        let now = Instant::now();
        let Some(e) = inner.entries.get_mut(&id) else {
            continue;
        };
        e.queued = false;
        if let Some(at) = e.merged_at.filter(|at| now < *at + e.gap) {
            // Changes gather until the gap is over: one merge, one list.
            e.next = at + e.gap;
            shared.wake.notify();
            continue;
        }
        e.running = Some(now);
        let progress = e.progress.clone();
        progress.store(nanos_since(shared.epoch, now), Ordering::Relaxed);
        let state = e.state.clone();
        let resource = state.resource();
        let names = names_to_look_at(e, &resource, now);
        if names.is_empty() {
            e.full = false;
            e.full_due = now + resource.health_check_interval;
        }
        e.next = e.full_due;
        drop(inner);

        if resource.is_dynamic() {
            // The merge runs with the check still marked running, so a
            // second scan of the same resource cannot overtake it.
            let began = Instant::now();
            let due = if names.is_empty() {
                let due = scan(shared, id, &state, &resource, &progress);
                state.stats.full_scans.observe(began.elapsed());
                due
            } else {
                let due = look_again(shared, &state, &resource, names);
                state.stats.partial_scans.observe(began.elapsed());
                due
            };
            let entries = state.list_entries();
            inner = shared.lock();
            if let Some(e) = inner.entries.get_mut(&id) {
                e.merged_at = Some(Instant::now());
                e.gap = MERGE_GAP_PER_ENTRY
                    .saturating_mul(u32::try_from(entries).unwrap_or(u32::MAX))
                    .min(MAX_MERGE_GAP);
            }
            match due {
                Ok(due) => finish(&mut inner, id, &state, due),
                Err(NeedsFullScan) => {
                    poke_locked(&mut inner, id);
                    finish(&mut inner, id, &state, None);
                }
            }
            shared.wake.notify();
            continue;
        }
        // Watches first: whatever changes after they are set is an event
        // (and a check again); whatever changed before, the check sees.
        let wds = watch(shared, &resource.host_path);
        {
            let mut inner = shared.lock();
            for wd in &wds {
                inner.by_wd.entry(wd.clone()).or_default().insert(id);
            }
        }
        let h = health::check(&shared.host_root, &resource);
        Stats::bump(&state.stats.health_checks);

        inner = shared.lock();
        if settle_watches(shared, &mut inner, id, &state, wds) {
            finish(&mut inner, id, &state, None);
            publish(&state, &h);
        }
        shared.wake.notify();
    }
}

/// Records the watches a finished check or scan set: those it no longer
/// needs are dropped. Returns false (and drops all of them) when the
/// resource was removed or replaced meanwhile.
fn settle_watches(
    shared: &Shared,
    inner: &mut Inner,
    id: u64,
    state: &Arc<ResourceState>,
    wds: Vec<WatchDescriptor>,
) -> bool {
    match inner.entries.get_mut(&id) {
        Some(e) if Arc::ptr_eq(&e.state, state) => {
            let old = std::mem::replace(&mut e.wds, wds);
            let stale: Vec<WatchDescriptor> =
                old.into_iter().filter(|w| !e.wds.contains(w)).collect();
            release(shared, inner, id, &stale);
            true
        }
        _ => {
            release(shared, inner, id, &wds);
            false
        }
    }
}

/// Marks a check or scan done: at once again if poked meanwhile, and no
/// later than `due` (the next removal of a vanished device).
fn finish(inner: &mut Inner, id: u64, state: &Arc<ResourceState>, due: Option<Instant>) {
    if let Some(e) = inner.entries.get_mut(&id) {
        if Arc::ptr_eq(&e.state, state) {
            e.running = None;
            e.hung = false;
            if std::mem::take(&mut e.again) {
                e.next = Instant::now();
            }
            if let Some(due) = due {
                e.next = e.next.min(due);
                e.full_due = e.full_due.min(due);
            }
        }
    }
}

/// Watches a host path and its ancestors up to the nearest existing one,
/// and the chain of what it resolves to, so creation, removal and a
/// re-pointed symlink anywhere along the way are seen at once.
fn watch(shared: &Shared, host_path: &str) -> Vec<WatchDescriptor> {
    let Some(mut watches) = shared.watches.clone() else {
        return Vec::new();
    };
    let lexical = health::inspect_path(&shared.host_root, host_path);
    let mut paths = path_and_ancestors(&lexical);
    if let Ok(resolved) = health::resolve_in_root(&shared.host_root, host_path) {
        if resolved != lexical {
            paths.extend(path_and_ancestors(&resolved));
        }
    }
    let mut wds: Vec<WatchDescriptor> = Vec::new();
    for p in paths {
        if let Ok(wd) = watches.add(&p, mask()) {
            if !wds.contains(&wd) {
                wds.push(wd);
            }
        }
    }
    wds
}
