//! The gRPC services a resource serves: `v1beta1.DevicePlugin` (B5, B7, B8)
//! and, in plugin-watcher mode, `pluginregistration.Registration` (B14).
//!
//! Handlers run on grpcio's completion-queue thread: they never block and
//! never panic. Each resource has one [`ResourceState`], versioned: health
//! changes and config updates bump the version and wake every open
//! ListAndWatch stream, which then sends the current full list.

use std::sync::{Arc, Mutex, MutexGuard};

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use grpcio::{RpcContext, RpcStatus, RpcStatusCode, ServerStreamingSink, UnarySink, WriteFlags};

use crate::api::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use crate::api::pluginregistration_grpc::Registration;
use crate::api::v1beta1::{
    AllocateRequest, AllocateResponse, DevicePluginOptions, Empty, ListAndWatchResponse,
    PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest,
    PreferredAllocationResponse,
};
use crate::api::v1beta1_grpc::DevicePlugin;
use crate::config::Resource;

use crate::alloc::{allocate, allocate_found, found_list, preferred};
use crate::alloc::{build_list, show_id, Refusal};
use crate::discovery::{DeviceSet, Merged};
use crate::kubelet::API_VERSION;

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
    memory: crate::discovery::Memory,
    /// A reload changed how devices are found: the next merge tells a
    /// device no longer configured from one that vanished.
    reconfigured: bool,
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
}

enum Step {
    Send(ListAndWatchResponse, u64),
    Wait,
    End { empty_first: bool },
}

impl ResourceState {
    /// A resource whose health is not known yet: its streams wait for the
    /// first [`ResourceState::set_health`].
    pub fn new(resource: Arc<Resource>) -> Arc<ResourceState> {
        Arc::new(ResourceState {
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

    pub fn open_streams(&self) -> usize {
        self.lock().open_streams
    }

    /// Logs a refused Allocate, at most once a second with a count of the
    /// refusals not logged since.
    fn log_refusal(&self, msg: &str) {
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

    /// The full device list as it stands.
    pub fn device_list(&self) -> ListAndWatchResponse {
        let mut s = self.lock();
        Self::list_locked(&mut s)
    }

    fn list_locked(s: &mut State) -> ListAndWatchResponse {
        if !s.resource.is_dynamic() {
            return build_list(s.resource.num_devices, s.healthy);
        }
        let (devices, left) = s.set.list(!s.healthy);
        let resp = found_list(&devices);
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
        s.cut_said = left > 0;
        resp
    }

    /// Entries its list has now (every slot of every device listed).
    pub fn list_entries(&self) -> u64 {
        self.lock().set.entries()
    }

    /// What the scans of this resource remember, for the next scan.
    pub fn scan_memory(&self) -> crate::discovery::Memory {
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
        scan: crate::discovery::Scan,
        now: std::time::Instant,
        scanned: &Arc<Resource>,
        memory: crate::discovery::Memory,
    ) -> Option<Merged> {
        let mut s = self.lock();
        if !Arc::ptr_eq(&s.resource, scanned) {
            return None;
        }
        let d = s.resource.discovery.clone()?;
        s.memory = memory;
        let reconfigured = std::mem::take(&mut s.reconfigured);
        let still = |g: &[crate::discovery::Grant]| d.describes(g);
        let merged = s.set.merge_with(
            scan.devices,
            now,
            d.remove_after,
            reconfigured.then_some(&still as crate::discovery::StillConfigured<'_>),
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
        updates: Vec<(String, Option<crate::discovery::Found>)>,
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
            if what == "vanished" {
                log::warn!("{name}: {what}: {}{tail}", text.join(", "));
            } else {
                log::info!("{name}: {what}: {}{tail}", text.join(", "));
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

    /// The Allocate answer of a resource whose devices come and go, read
    /// from its device set under one lock.
    fn allocate_found(&self, req: &AllocateRequest) -> Result<AllocateResponse, Refusal> {
        let s = self.lock();
        allocate_found(&s.resource, req, &s.set)
    }

    fn next_step(&self, epoch: u64, last_sent: u64) -> Step {
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
        Step::Send(Self::list_locked(&mut s), s.version)
    }
}

/// The DevicePlugin service of one resource.
#[derive(Clone)]
pub struct DevicePluginService {
    pub state: Arc<ResourceState>,
}

fn reply<T: 'static + Send>(
    ctx: &RpcContext<'_>,
    sink: UnarySink<T>,
    result: Result<T, RpcStatus>,
    what: &'static str,
    resource: String,
) {
    let f = async move {
        let sent = match result {
            Ok(v) => sink.success(v).await,
            Err(status) => sink.fail(status).await,
        };
        if let Err(e) = sent {
            log::debug!("{resource}: {what}: reply not delivered: {e}");
        }
    };
    ctx.spawn(f);
}

impl DevicePlugin for DevicePluginService {
    fn get_device_plugin_options(
        &mut self,
        ctx: RpcContext,
        _req: Empty,
        sink: UnarySink<DevicePluginOptions>,
    ) {
        let name = self.state.resource().resource_name.clone();
        log::debug!("{name}: GetDevicePluginOptions from {}", ctx.peer());
        reply(
            &ctx,
            sink,
            Ok(DevicePluginOptions::new()),
            "GetDevicePluginOptions",
            name,
        );
    }

    fn list_and_watch(
        &mut self,
        ctx: RpcContext,
        _req: Empty,
        mut sink: ServerStreamingSink<ListAndWatchResponse>,
    ) {
        let state = self.state.clone();
        let (tx, mut rx) = mpsc::channel(1);
        let (name, epoch) = {
            let mut s = state.lock();
            s.watchers.push(tx);
            s.open_streams += 1;
            (s.resource.resource_name.clone(), s.epoch)
        };
        log::debug!("{name}: ListAndWatch opened by {}", ctx.peer());
        let f = async move {
            let mut last_sent = 0;
            let mut clean = true;
            loop {
                match state.next_step(epoch, last_sent) {
                    Step::Send(list, version) => {
                        let n = list.devices.len();
                        if let Err(e) = sink.send((list, WriteFlags::default())).await {
                            log::debug!("{name}: ListAndWatch stream gone: {e}");
                            clean = false;
                            break;
                        }
                        log::debug!("{name}: ListAndWatch sent {n} devices (version {version})");
                        last_sent = version;
                        if n >= crate::util::TRIM_AFTER {
                            crate::util::trim_heap();
                        }
                    }
                    Step::Wait => {
                        if rx.next().await.is_none() {
                            break;
                        }
                    }
                    Step::End { empty_first } => {
                        if empty_first {
                            let _ = sink
                                .send((ListAndWatchResponse::new(), WriteFlags::default()))
                                .await;
                        }
                        break;
                    }
                }
            }
            if clean {
                if let Err(e) = sink.close().await {
                    log::debug!("{name}: ListAndWatch close: {e}");
                }
            }
            state.lock().open_streams -= 1;
            log::debug!("{name}: ListAndWatch ended");
        };
        ctx.spawn(f);
    }

    fn get_preferred_allocation(
        &mut self,
        ctx: RpcContext,
        req: PreferredAllocationRequest,
        sink: UnarySink<PreferredAllocationResponse>,
    ) {
        let name = self.state.resource().resource_name.clone();
        log::debug!(
            "{name}: GetPreferredAllocation for {} container(s)",
            req.container_requests.len()
        );
        reply(
            &ctx,
            sink,
            Ok(preferred(&req)),
            "GetPreferredAllocation",
            name,
        );
    }

    fn allocate(
        &mut self,
        ctx: RpcContext,
        req: AllocateRequest,
        sink: UnarySink<AllocateResponse>,
    ) {
        let resource = self.state.resource();
        let name = resource.resource_name.clone();
        let result = if resource.is_dynamic() {
            self.state.allocate_found(&req)
        } else {
            allocate(&resource, &req)
        };
        let result = result.map_err(|refusal| {
            let code = match refusal {
                Refusal::UnknownIds { .. } | Refusal::Gone { .. } | Refusal::SamePath { .. } => {
                    RpcStatusCode::INVALID_ARGUMENT
                }
                Refusal::TooLarge { .. } => RpcStatusCode::RESOURCE_EXHAUSTED,
            };
            let msg = refusal.to_string();
            self.state.log_refusal(&msg);
            RpcStatus::with_message(code, msg)
        });
        if result.is_ok() {
            log::debug!("{name}: Allocate {}", describe_ids(&req));
        }
        reply(&ctx, sink, result, "Allocate", name);
    }

    fn pre_start_container(
        &mut self,
        ctx: RpcContext,
        req: PreStartContainerRequest,
        sink: UnarySink<PreStartContainerResponse>,
    ) {
        let name = self.state.resource().resource_name.clone();
        log::debug!(
            "{name}: PreStartContainer for {} device(s)",
            req.devices_ids.len()
        );
        reply(
            &ctx,
            sink,
            Ok(PreStartContainerResponse::new()),
            "PreStartContainer",
            name,
        );
    }
}

/// The device IDs of each container request, for the log: at most a few
/// per container, each cut short (they come from the client).
fn describe_ids(req: &AllocateRequest) -> String {
    const SHOWN: usize = 8;
    let per_container: Vec<String> = req
        .container_requests
        .iter()
        .take(SHOWN)
        .map(|c| {
            let mut ids: Vec<String> = c
                .devices_ids
                .iter()
                .take(SHOWN)
                .map(|s| show_id(s))
                .collect();
            if c.devices_ids.len() > SHOWN {
                ids.push(format!("… {} in all", c.devices_ids.len()));
            }
            format!("[{}]", ids.join(", "))
        })
        .collect();
    let mut out = per_container.join(" ");
    if req.container_requests.len() > SHOWN {
        out.push_str(&format!(" … {} containers", req.container_requests.len()));
    }
    out
}

/// The plugin-watcher registration service of one resource (B14).
#[derive(Clone)]
pub struct RegistrationService {
    pub state: Arc<ResourceState>,
}

use crate::kubelet::DEVICE_PLUGIN_TYPE;

impl Registration for RegistrationService {
    fn get_info(&mut self, ctx: RpcContext, _req: InfoRequest, sink: UnarySink<PluginInfo>) {
        let name = self.state.resource().resource_name.clone();
        log::debug!("{name}: GetInfo");
        let mut info = PluginInfo::new();
        info.type_ = DEVICE_PLUGIN_TYPE.to_string();
        info.name = name.clone();
        info.supported_versions = vec![API_VERSION.to_string()];
        reply(&ctx, sink, Ok(info), "GetInfo", name);
    }

    fn notify_registration_status(
        &mut self,
        ctx: RpcContext,
        req: RegistrationStatus,
        sink: UnarySink<RegistrationStatusResponse>,
    ) {
        let name = self.state.resource().resource_name.clone();
        if req.plugin_registered {
            log::info!("{name}: registered (plugin watcher)");
        } else {
            log::warn!(
                "{name}: the kubelet refused the registration: {}",
                req.error
            );
        }
        reply(
            &ctx,
            sink,
            Ok(RegistrationStatusResponse::new()),
            "NotifyRegistrationStatus",
            name,
        );
    }
}
