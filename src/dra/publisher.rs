//! The publisher thread: this node's ResourceSlices kept equal to what its
//! DRA pools offer (B18, PROTOCOL.md §6.3), with flat load on the API
//! server.
//!
//! - At rest it writes nothing and reads once per resync (a jittered
//!   [`RESYNC`], one list of this node's slices of the driver).
//! - A device change wakes it through the pools' states; changes within
//!   [`COALESCE`] of each other make one sync, which starts at once.
//! - A kubelet registration (after a kubelet restart, which wipes the
//!   node's slices, or a lost connection) brings a few quick resyncs, so
//!   slices wiped just after a publish come back within seconds.
//! - A failed sync is retried with backoff (logged once per distinct
//!   error); what is prepared keeps working meanwhile.
//! - Slices of pools this node no longer serves are deleted: a resource
//!   retired now, or removed while the daemon was down.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::StreamExt;

use super::prepare::Pool;
use super::publish::{delete_slice, list_slices, node_ref, sync_pool, NodeRef};
use super::slices::offered;
use crate::kube::{Client, KubeError};
use crate::retry::Backoff;
use crate::util::{block_on_timeout, lock};

/// How often the slices are compared with the API server at rest (each
/// node picks a time within ±20% of it, so a fleet does not move together).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Changes this close together make one sync.
pub const COALESCE: Duration = Duration::from_millis(10);
/// After a kubelet registration, resync after these delays: the kubelet
/// wipes the node's slices when it starts, possibly after our publish.
pub const AFTER_REGISTRATION: [Duration; 4] = [
    Duration::from_millis(0),
    Duration::from_secs(2),
    Duration::from_secs(6),
    Duration::from_secs(20),
];
/// Retries of a failed sync start here and double up to [`RETRY_MAX`].
pub const RETRY_START: Duration = Duration::from_millis(500);
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// What the daemon asks of the publisher.
#[derive(Default)]
struct Asks {
    stop: bool,
    /// With `stop`: delete this node's slices first.
    withdraw: bool,
    /// The kubelet registered the driver (again).
    registered: bool,
}

/// Asks the publisher things: cheap to clone, usable from any thread.
#[derive(Clone)]
pub(crate) struct Poker {
    asks: Arc<Mutex<Asks>>,
    wake: mpsc::Sender<()>,
}

impl Poker {
    /// A poker with no publisher behind it (a front that publishes
    /// nothing): its asks go nowhere.
    pub(crate) fn detached() -> Poker {
        let (wake, _) = mpsc::channel(1);
        Poker {
            asks: Arc::default(),
            wake,
        }
    }

    /// A sender that wakes the publisher: given to each pool's state.
    pub(crate) fn waker(&self) -> mpsc::Sender<()> {
        self.wake.clone()
    }

    fn ask(&self, f: impl FnOnce(&mut Asks)) {
        f(&mut lock(&self.asks));
        // Full: a wake-up is already pending.
        let _ = self.wake.clone().try_send(());
    }

    /// The kubelet registered the driver: it may have wiped the slices.
    pub(crate) fn registered(&self) {
        self.ask(|a| a.registered = true);
    }

    /// The pools changed (one retired): the next sync deletes what is no
    /// longer served.
    pub(crate) fn pools_changed(&self) {
        self.ask(|_| {});
    }
}

/// The daemon's end of the publisher.
pub(crate) struct Publisher {
    pub(crate) poker: Poker,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    /// Starts the thread for `pools` (shared with the front).
    pub(crate) fn start(
        client: Arc<Client>,
        driver: String,
        node: String,
        pools: Arc<Mutex<Vec<Pool>>>,
    ) -> std::io::Result<Publisher> {
        let (wake, rx) = mpsc::channel(1);
        let asks = Arc::new(Mutex::new(Asks::default()));
        let mut worker = Worker {
            client,
            driver,
            node,
            node_ref: None,
            pools,
            asks: asks.clone(),
            rx,
            floors: BTreeMap::new(),
            backoff: Backoff::up_to(RETRY_START, RETRY_MAX),
        };
        let thread = std::thread::Builder::new()
            .name("dra-publish".into())
            .spawn(move || worker.run())?;
        Ok(Publisher {
            poker: Poker { asks, wake },
            thread: Some(thread),
        })
    }

    /// Stops the thread, waiting at most `grace` for a request in flight.
    pub(crate) fn stop(&mut self, grace: Duration) {
        self.finish(grace, false);
    }

    /// Stops the thread once it has deleted this node's slices of the
    /// driver, waiting at most `grace` for that: the last instance of the
    /// driver on the node is going, and nothing would keep them true.
    pub(crate) fn withdraw(&mut self, grace: Duration) {
        self.finish(grace, true);
    }

    fn finish(&mut self, grace: Duration, withdraw: bool) {
        self.poker.ask(|a| {
            a.stop = true;
            a.withdraw = withdraw;
        });
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + grace;
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                log::debug!("the DRA publisher is still in a request: left to the exit");
            }
        }
    }
}

/// A duration within ±20% of `base`, different per process.
pub fn jittered(base: Duration) -> Duration {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().rotate_left(16);
    let mut x = u64::from(seed) | 1;
    // xorshift64: one step is enough to spread the seed.
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let permille = (x % 401) as u32; // 0..=400 → −20%..+20%
    base * (800 + permille) / 1000
}

struct Worker {
    client: Arc<Client>,
    driver: String,
    node: String,
    node_ref: Option<NodeRef>,
    pools: Arc<Mutex<Vec<Pool>>>,
    asks: Arc<Mutex<Asks>>,
    rx: mpsc::Receiver<()>,
    /// Per pool, the highest generation this process wrote.
    floors: BTreeMap<String, i64>,
    backoff: Backoff,
}

impl Worker {
    fn run(&mut self) {
        let mut dirty = true;
        let mut retry_at: Option<Instant> = None;
        let mut resync_at = Instant::now() + jittered(RESYNC);
        let mut quick: Vec<Instant> = Vec::new();
        loop {
            let now = Instant::now();
            let due = [
                Some(resync_at),
                quick.iter().min().copied(),
                retry_at.filter(|_| dirty),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(resync_at);
            let woken = block_on_timeout(self.rx.next(), due.saturating_duration_since(now));
            if matches!(woken, Some(None)) {
                return; // every sender gone: the daemon is gone
            }
            if woken.is_some() {
                dirty = true;
                // More changes close behind this one join the same sync.
                while let Some(Some(())) = block_on_timeout(self.rx.next(), COALESCE) {}
            }
            let asks = std::mem::take(&mut *lock(&self.asks));
            if asks.stop {
                if asks.withdraw {
                    self.withdraw();
                }
                return;
            }
            let now = Instant::now();
            if asks.registered {
                quick = AFTER_REGISTRATION.iter().map(|d| now + *d).collect();
            }
            let quick_due = quick.iter().any(|t| *t <= now);
            quick.retain(|t| *t > now);
            if now >= resync_at || quick_due {
                dirty = true;
                resync_at = now + jittered(RESYNC);
            }
            if !dirty || retry_at.is_some_and(|t| t > now) && !quick_due {
                continue;
            }
            match self.sync() {
                Ok(writes) => {
                    dirty = false;
                    retry_at = None;
                    self.backoff.reset();
                    log::debug!("DRA: sync done, {writes} write(s)");
                }
                Err(e) => {
                    let f = self.backoff.failed(&e.to_string());
                    if f.repeat {
                        log::debug!("DRA: publishing ResourceSlices failed again: {e}");
                    } else {
                        log::warn!(
                            "DRA: publishing ResourceSlices failed: {e}; retrying with backoff \
                             (prepared claims keep working)"
                        );
                    }
                    retry_at = Some(Instant::now() + f.delay);
                }
            }
        }
    }

    /// Deletes every slice of this node's of the driver (errors logged:
    /// the kubelet wipes them 30 s after losing the driver anyway).
    fn withdraw(&mut self) {
        let existing = match list_slices(&self.client, &self.driver, &self.node) {
            Ok(e) => e,
            Err(e) => {
                log::warn!("DRA: cannot list this node's ResourceSlices to withdraw them: {e}");
                return;
            }
        };
        let mut deleted = 0;
        for s in &existing {
            match delete_slice(&self.client, s) {
                Ok(true) => deleted += 1,
                Ok(false) => {}
                Err(e) => log::warn!(
                    "DRA: cannot delete ResourceSlice {}: {e}",
                    s["metadata"]["name"].as_str().unwrap_or("")
                ),
            }
        }
        log::info!(
            "DRA: no other instance of the driver serves this node: its {deleted} ResourceSlice(s) \
             withdrawn"
        );
    }

    /// One sync of every pool; the number of writes.
    fn sync(&mut self) -> Result<usize, KubeError> {
        let node = match &self.node_ref {
            Some(n) => n.clone(),
            None => {
                let n = node_ref(&self.client, &self.node)?;
                self.node_ref = Some(n.clone());
                n
            }
        };
        let existing = list_slices(&self.client, &self.driver, &self.node)?;
        let pools: Vec<Pool> = lock(&self.pools).clone();
        let mut writes = 0;
        let mut served = BTreeSet::new();
        for pool in &pools {
            served.insert(pool.name.clone());
            // Before its first check a pool's content is not known: it is
            // neither published nor deleted.
            if !pool.state.checked() {
                continue;
            }
            let devices = pool.state.with_offer(offered);
            let floor = self.floors.get(&pool.name).copied().unwrap_or(0);
            let s = sync_pool(
                &self.client,
                &self.driver,
                &node,
                &pool.name,
                &devices,
                &existing,
                floor,
            )?;
            if s.writes() > 0 {
                self.floors
                    .insert(pool.name.clone(), s.generation.max(floor));
                log::info!(
                    "DRA: pool {}: {} device(s) published at generation {} ({} slice(s) created, \
                     {} updated, {} deleted)",
                    pool.name,
                    devices.len(),
                    s.generation,
                    s.created,
                    s.updated,
                    s.deleted
                );
            }
            writes += s.writes();
        }
        // Slices of pools no longer served here: retired now, or before a
        // restart.
        for s in &existing {
            let pool = s["spec"]["pool"]["name"].as_str().unwrap_or("");
            if !served.contains(pool) && delete_slice(&self.client, s)? {
                writes += 1;
                log::info!(
                    "DRA: pool {pool} is no longer served here: ResourceSlice {} deleted",
                    s["metadata"]["name"].as_str().unwrap_or("")
                );
            }
        }
        Ok(writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resyncs_spread_within_a_fifth_of_the_period() {
        for _ in 0..50 {
            let d = jittered(RESYNC);
            assert!(d >= RESYNC * 4 / 5 && d <= RESYNC * 6 / 5, "{d:?}");
        }
    }
}
