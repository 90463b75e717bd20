//! Handing a node from one API to the other without giving a device twice
//! (B19). A node moves from the device plugin to DRA (or back) while pods
//! hold devices through the API it leaves; those devices must not be
//! offered through the new one until the pods end. The kubelet's
//! pod-resources API says who holds what: device-plugin devices by resource
//! and ID, DRA devices by driver, pool and device name. It does not list
//! the claims pods got for their `limits:` (KEP-5004), so the claims'
//! CDI specs on the node are read too: a device whose DRA name and one of
//! whose host paths a prepared claim's spec has is held.
//!
//! One thread asks it: at start (before anything is served, so the first
//! list is already right), then every [`POLL`] while any device is held
//! elsewhere or within [`SETTLE`] of the start or of a resource added (the
//! other daemon may still be answering its last calls), and not at all
//! once the node has settled: then the thread ends, closing its channel to
//! the kubelet, and a resource added later starts it again. An idle node
//! costs no thread, descriptor or wake-up. A missing or silent socket
//! holds nothing back: it is logged once, and the node is served as before.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grpcio::{CallOption, ChannelBuilder, Environment};

use crate::api::podresources_v1::ListPodResourcesRequest;
use crate::api::podresources_v1_grpc::PodResourcesListerClient;
use crate::core::resource::Api;
use crate::core::state::{Offer, ResourceState};
use crate::dra::cdi::{CdiDir, SpecDevice};
use crate::dra::names::pool_name;
use crate::dra::slices::{published, Published};
use crate::util::lock;

/// How often the kubelet is asked while devices are held elsewhere.
pub const POLL: Duration = Duration::from_secs(1);
/// How long after a start (or a resource added) it is asked in any case.
pub const SETTLE: Duration = Duration::from_secs(30);
/// The longest one List call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Who holds what through each API, as the kubelet said.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holdings {
    /// Device-plugin devices: resource name → device IDs.
    pub device_plugin: BTreeMap<String, BTreeSet<String>>,
    /// DRA devices of `driver`: pool → device names.
    pub dra: BTreeMap<String, BTreeSet<String>>,
    /// This node, which names its pools; without it a pool is told by
    /// its `/<resource>` suffix (pod-resources lists this node's pods only).
    pub node: Option<String>,
    /// The devices of the claims prepared on this node, from their CDI
    /// specs: pod-resources leaves out a claim that a pod got for its
    /// `limits:` (it lists only claims that containers name).
    pub prepared: Vec<SpecDevice>,
}

impl Holdings {
    /// The IDs of `state`'s resource held through the API it is not served
    /// through here.
    pub fn held(&self, api: Api, state: &ResourceState) -> BTreeSet<String> {
        let name = state.resource().resource_name.clone();
        match api {
            Api::Dra => self.device_plugin.get(&name).cloned().unwrap_or_default(),
            Api::DevicePlugin => {
                let names: BTreeSet<&String> = match &self.node {
                    Some(node) => self
                        .dra
                        .get(&pool_name(node, &name))
                        .into_iter()
                        .flatten()
                        .collect(),
                    None => {
                        let suffix = format!("/{name}");
                        self.dra
                            .iter()
                            .filter(|(pool, _)| pool.ends_with(&suffix))
                            .flat_map(|(_, names)| names)
                            .collect()
                    }
                };
                if names.is_empty() && self.prepared.is_empty() {
                    return BTreeSet::new();
                }
                // DRA names a device by its name in the slice: the IDs whose
                // name that is, and those of a prepared claim's spec that
                // hands out one of the device's own host paths.
                let by_spec = |p: &Published| {
                    self.prepared.iter().any(|d| {
                        d.name == p.name && p.grants.iter().any(|g| d.hosts.contains(&*g.host))
                    })
                };
                state
                    .with_devices(|r, set| {
                        // Whatever its health: the first list must already
                        // leave them out.
                        let all = if r.is_dynamic() {
                            Offer::Found(set)
                        } else {
                            Offer::Fixed(r.num_devices)
                        };
                        published(r, all)
                    })
                    .into_iter()
                    .filter(|p| names.contains(&p.name) || by_spec(p))
                    .map(|p| p.id)
                    .collect()
            }
        }
    }
}

/// Asks the kubelet's pod-resources API who holds what.
pub struct Lister {
    env: Arc<Environment>,
    /// Made by the first call that finds the socket: no gRPC channel (and
    /// none of its work) on a node without pod-resources.
    client: Option<PodResourcesListerClient>,
    socket: PathBuf,
    driver: String,
    node: Option<String>,
    /// Where the driver's CDI specs are.
    cdi: CdiDir,
}

impl Lister {
    pub fn new(
        env: &Arc<Environment>,
        socket: &Path,
        driver: &str,
        node: Option<&str>,
        cdi_dir: &Path,
    ) -> Lister {
        Lister {
            env: env.clone(),
            client: None,
            socket: socket.to_path_buf(),
            driver: driver.to_string(),
            node: node.filter(|n| !n.is_empty()).map(str::to_string),
            cdi: CdiDir::new(cdi_dir, driver),
        }
    }

    /// One List call, bounded by [`CALL_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// The socket is missing, or the call failed or timed out.
    pub fn list(&mut self) -> Result<Holdings, String> {
        if std::fs::symlink_metadata(&self.socket).is_err() {
            return Err(format!("{}: no such socket", self.socket.display()));
        }
        let (env, socket) = (&self.env, &self.socket);
        let client = self.client.get_or_insert_with(|| {
            let channel =
                ChannelBuilder::new(env.clone()).connect(&crate::util::unix_target(socket));
            PodResourcesListerClient::new(channel)
        });
        let resp = client
            .list(
                &ListPodResourcesRequest::new(),
                CallOption::default().timeout(CALL_TIMEOUT),
            )
            .map_err(|e| format!("{}: List: {e}", self.socket.display()))?;
        let mut h = Holdings {
            node: self.node.clone(),
            prepared: self.cdi.prepared_devices(),
            ..Holdings::default()
        };
        for pod in &resp.pod_resources {
            for c in &pod.containers {
                for d in &c.devices {
                    h.device_plugin
                        .entry(d.resource_name.clone())
                        .or_default()
                        .extend(d.device_ids.iter().cloned());
                }
                for claim in &c.dynamic_resources {
                    for r in &claim.claim_resources {
                        if r.driver_name == self.driver {
                            h.dra
                                .entry(r.pool_name.clone())
                                .or_default()
                                .insert(r.device_name.clone());
                        }
                    }
                }
            }
        }
        Ok(h)
    }
}

enum Msg {
    Changed,
    Stop,
}

/// The resources served here, by id, with the API each is served through.
type Entries = Arc<Mutex<BTreeMap<u64, (Api, Arc<ResourceState>)>>>;

/// What the thread works with, kept here while it does not run.
struct Parts {
    lister: Lister,
    rx: Receiver<Msg>,
    /// [`SETTLE`], shorter in tests.
    settle: Duration,
    /// Whether the last call was answered (a change is logged once).
    reachable: bool,
}

/// Where a settled thread leaves its [`Parts`]. Its check for a message
/// and a sender's check for a settled thread happen under this one lock,
/// so a message is never left with no thread to read it.
type Parked = Arc<Mutex<Option<Parts>>>;

/// The thread that keeps every resource's held-elsewhere set current.
pub struct Handover {
    entries: Entries,
    first: Option<Holdings>,
    /// DRA claims were on the node at start (pod-resources or CDI specs).
    dra_on_node: bool,
    parked: Parked,
    tx: Option<Sender<Msg>>,
}

impl Handover {
    /// Asks the kubelet once, now; the thread starts with [`Handover::start`].
    pub fn new(mut lister: Lister) -> Handover {
        let first = match lister.list() {
            Ok(h) => Some(h),
            Err(e) => {
                log::info!(
                    "pod-resources: {e}: devices held through the other API cannot be told \
                     apart (no node handover in progress is assumed)"
                );
                None
            }
        };
        let dra_on_node = first
            .as_ref()
            .is_some_and(|h| !h.dra.is_empty() || !h.prepared.is_empty())
            || !lister.cdi.prepared().is_empty();
        let (tx, rx) = mpsc::channel();
        let reachable = first.is_some();
        Handover {
            entries: Arc::default(),
            dra_on_node,
            first,
            parked: Arc::new(Mutex::new(Some(Parts {
                lister,
                rx,
                settle: SETTLE,
                reachable,
            }))),
            tx: Some(tx),
        }
    }

    /// The same, settling after `settle` instead of [`SETTLE`].
    #[cfg(test)]
    fn settling_after(self, settle: Duration) -> Handover {
        if let Some(p) = lock(&self.parked).as_mut() {
            p.settle = settle;
        }
        self
    }

    /// Starts the polling thread.
    pub fn start(&self) {
        if let Some(tx) = &self.tx {
            self.send(tx, Msg::Changed);
        }
    }

    /// Sends `msg`, starting the thread again if it has settled and ended.
    fn send(&self, tx: &Sender<Msg>, msg: Msg) {
        let mut parked = lock(&self.parked);
        let _ = tx.send(msg);
        let Some(parts) = parked.take() else {
            return;
        };
        let (entries, slot) = (self.entries.clone(), self.parked.clone());
        let spawned = std::thread::Builder::new()
            .name("handover".into())
            .spawn(move || run(parts, &entries, &slot));
        if let Err(e) = spawned {
            // Its parts went with the closure: no handover polling from
            // now on, which the first list at start already covered.
            log::error!("cannot start the handover thread: {e}");
        }
    }

    /// A resource now served through `api`: its first list already leaves
    /// out what the other API holds.
    pub fn add(&self, id: u64, api: Api, state: &Arc<ResourceState>) {
        let held = self
            .first
            .as_ref()
            .map(|h| h.held(api, state))
            .unwrap_or_default();
        // A resource whose devices come and go has none before its first
        // scan, so which are held is known a poll later; that DRA claims
        // are on the node is known now.
        state.set_handing_over(api == Api::DevicePlugin && self.dra_on_node);
        apply(api, state, held);
        lock(&self.entries).insert(id, (api, state.clone()));
        if let Some(tx) = &self.tx {
            self.send(tx, Msg::Changed);
        }
    }

    pub fn remove(&self, id: u64) {
        lock(&self.entries).remove(&id);
    }

    /// Whether the thread runs now (it ends once the node has settled).
    #[cfg(test)]
    fn running(&self) -> bool {
        self.tx.is_some() && lock(&self.parked).is_none()
    }

    pub fn stop(&mut self) {
        if let Some(tx) = self.tx.take() {
            // Not started again for it, and not joined: a List in flight
            // ends within its timeout, and an exiting process need not
            // wait for it.
            let _ = tx.send(Msg::Stop);
        }
    }
}

/// Records `held` for `state`, logging a change.
fn apply(api: Api, state: &ResourceState, held: BTreeSet<String>) {
    let after = held.len();
    let Some(before) = state.set_held_elsewhere(held) else {
        return;
    };
    let name = state.resource().resource_name.clone();
    let (other, here) = match api {
        Api::Dra => ("the device-plugin API", "not offered here"),
        // Listed still: the scheduler counts the pods that hold them.
        Api::DevicePlugin => ("DRA", "listed, but never given"),
    };
    if after > 0 {
        log::info!(
            "{name}: {after} device(s) held by running pods through {other}: {here} until released"
        );
    } else if before > 0 {
        log::info!("{name}: the devices held through {other} are released: all offered");
    }
}

fn run(mut p: Parts, entries: &Entries, parked: &Parked) {
    let mut settle_until = Instant::now() + p.settle;
    loop {
        let any_held = lock(entries).values().any(|(_, s)| s.held_elsewhere() > 0);
        let msg = if any_held || Instant::now() < settle_until {
            p.rx.recv_timeout(POLL)
        } else {
            let mut slot = lock(parked);
            match p.rx.try_recv() {
                Ok(m) => Ok(m),
                Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => {
                    // Settled: the next sender starts a thread again.
                    p.lister.client = None;
                    *slot = Some(p);
                    return;
                }
            }
        };
        match msg {
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Msg::Changed) => {
                settle_until = Instant::now() + p.settle;
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        match p.lister.list() {
            Ok(h) => {
                if !p.reachable {
                    log::info!("pod-resources: the kubelet answers");
                    p.reachable = true;
                }
                let current: Vec<(Api, Arc<ResourceState>)> =
                    lock(entries).values().cloned().collect();
                for (api, state) in current {
                    apply(api, &state, h.held(api, &state));
                }
            }
            Err(e) => {
                // Kept as they were: a kubelet restarting says nothing new.
                if p.reachable {
                    log::warn!("pod-resources: {e}; asking again");
                    p.reachable = false;
                } else {
                    log::debug!("pod-resources: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn wait_until(mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        f()
    }

    #[test]
    fn the_thread_ends_once_settled_and_a_resource_added_starts_it_again() {
        let dir = std::env::temp_dir().join(format!("hpdp-handover-{}", std::process::id()));
        let env = Arc::new(grpcio::EnvBuilder::new().cq_count(1).build());
        // No pod-resources socket: every List fails fast, nothing is held.
        let lister = Lister::new(&env, &dir.join("none.sock"), "d", None, &dir);
        let h = Handover::new(lister).settling_after(Duration::from_millis(100));
        assert!(!h.running(), "not started yet");
        h.start();
        assert!(h.running());
        assert!(wait_until(|| !h.running()), "still running once settled");

        let text = "resources:\n- resourceName: example.com/a\n  hostPath: {path: /srv/a}\n";
        let r = crate::core::config::parse(text, "c", Path::new("/d"))
            .unwrap()
            .config
            .resources
            .remove(0);
        let state = ResourceState::new(Arc::new(r));
        h.add(1, Api::DevicePlugin, &state);
        assert!(h.running(), "a resource added starts it again");
        assert!(wait_until(|| !h.running()), "and it settles again");
    }
}
