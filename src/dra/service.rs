//! The gRPC services of the DRA front (PROTOCOL.md §6.1, §6.2): the
//! plugin-watcher registration (`DRAPlugin`), `DRAPlugin` v1 and v1beta1,
//! and `DRAResourceHealth` v1 and v1alpha1.
//!
//! Handlers never block a completion-queue thread: preparation (which
//! reads claims from the API server) goes to the front's workers and the
//! answer is awaited as a future. The older API versions carry the same
//! fields under the same numbers as v1 (v1beta1 lacks only `share_id`,
//! which we never set), so they are served by re-reading v1's bytes: one
//! implementation, checked against both schemas by the tests.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use grpcio::{
    RpcContext, RpcStatus, RpcStatusCode, ServerBuilder, ServerStreamingSink, UnarySink, WriteFlags,
};
use protobuf::Message;

use super::names::device_name;
use super::prepare::{ClaimRef, Pool, PreparedDevice};
use super::shared::{Job, Prepared, Shared, Unprepared};
use crate::api::dra_v1 as v1;
use crate::api::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use crate::api::pluginregistration_grpc::{create_registration, Registration};
use crate::api::{dra_v1_grpc, dra_v1beta1, dra_v1beta1_grpc};
use crate::api::{health_v1, health_v1_grpc, health_v1alpha1, health_v1alpha1_grpc};
use crate::core::state::Listing;
use crate::kubelet::HEALTHY;
use crate::util::lock;

/// The plugin type the kubelet's DRA handler takes.
pub const DRA_PLUGIN_TYPE: &str = "DRAPlugin";
/// The services we offer, most preferred first (the kubelet takes the
/// first DRAPlugin version it supports; listing a health service makes a
/// 1.37 kubelet open NodeWatchResources).
pub const SUPPORTED_VERSIONS: [&str; 4] = [
    "v1.DRAPlugin",
    "v1beta1.DRAPlugin",
    "v1.DRAResourceHealth",
    "v1alpha1.DRAResourceHealth",
];

/// All the front's services.
#[derive(Clone)]
pub(crate) struct Service {
    pub shared: Arc<Shared>,
}

/// Adds every service of `s` to `builder`.
pub(crate) fn register_all(builder: ServerBuilder, s: &Service) -> ServerBuilder {
    builder
        .register_service(create_registration(s.clone()))
        .register_service(dra_v1_grpc::create_dra_plugin(s.clone()))
        .register_service(dra_v1beta1_grpc::create_dra_plugin(s.clone()))
        .register_service(health_v1_grpc::create_dra_resource_health(s.clone()))
        .register_service(health_v1alpha1_grpc::create_dra_resource_health(s.clone()))
}

/// Re-reads a message as another version's type with the same fields.
fn convert<A: Message, B: Message>(a: &A) -> Result<B, RpcStatus> {
    a.write_to_bytes()
        .and_then(|b| B::parse_from_bytes(&b))
        .map_err(|e| RpcStatus::with_message(RpcStatusCode::INTERNAL, e.to_string()))
}

fn claims(list: &[v1::Claim]) -> Vec<ClaimRef> {
    list.iter()
        .map(|c| ClaimRef {
            namespace: c.namespace.clone(),
            name: c.name.clone(),
            uid: c.uid.clone(),
        })
        .collect()
}

pub(crate) fn log_prepared(c: &ClaimRef, r: &Result<Vec<PreparedDevice>, String>) {
    let who = format!(
        "{}/{} ({})",
        crate::text::shown(&c.namespace),
        crate::text::shown(&c.name),
        crate::text::shown(&c.uid)
    );
    match r {
        Ok(devices) if devices.is_empty() => {
            log::info!("DRA: claim {who} prepared: none of its devices are ours")
        }
        Ok(devices) => {
            let names: Vec<String> = devices
                .iter()
                .map(|d| format!("{}/{}", d.pool, d.device))
                .collect();
            log::info!("DRA: claim {who} prepared: {}", names.join(", "));
        }
        Err(e) => log::warn!("DRA: claim {who} not prepared: {e}"),
    }
}

fn prepare_answer(out: Prepared) -> v1::NodePrepareResourcesResponse {
    let mut resp = v1::NodePrepareResourcesResponse::new();
    for (uid, r) in out {
        let mut one = v1::NodePrepareResourceResponse::new();
        match r {
            Ok(devices) => {
                one.devices = devices
                    .into_iter()
                    .map(|d| {
                        let mut dev = v1::Device::new();
                        dev.request_names = vec![d.request];
                        dev.pool_name = d.pool;
                        dev.device_name = d.device;
                        dev.cdi_device_ids = vec![d.cdi_id];
                        dev
                    })
                    .collect();
            }
            Err(e) => one.error = e,
        }
        resp.claims.insert(uid, one);
    }
    resp
}

fn unprepare_answer(out: Unprepared) -> v1::NodeUnprepareResourcesResponse {
    let mut resp = v1::NodeUnprepareResourcesResponse::new();
    for (uid, r) in out {
        let mut one = v1::NodeUnprepareResourceResponse::new();
        if let Err(e) = r {
            one.error = e;
        }
        resp.claims.insert(uid, one);
    }
    resp
}

const BUSY: &str = "the DRA driver is busy with other calls; try again";

impl Service {
    /// Hands `job` to a worker and answers with what `answer` makes of its
    /// result, converted to the version asked.
    fn run<T, R, A>(
        &self,
        ctx: &RpcContext<'_>,
        sink: UnarySink<A>,
        make: impl FnOnce(oneshot::Sender<T>) -> Job,
        answer: fn(T) -> R,
    ) where
        T: Send + 'static,
        R: Message,
        A: Message + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        if !self.shared.submit(make(tx)) {
            let status = RpcStatus::with_message(RpcStatusCode::RESOURCE_EXHAUSTED, BUSY.into());
            ctx.spawn(async move {
                let _ = sink.fail(status).await;
            });
            return;
        }
        ctx.spawn(async move {
            let result = match rx.await {
                Ok(out) => convert::<R, A>(&answer(out)),
                Err(_) => Err(RpcStatus::with_message(
                    RpcStatusCode::UNAVAILABLE,
                    "the DRA driver is stopping".into(),
                )),
            };
            let sent = match result {
                Ok(v) => sink.success(v).await,
                Err(s) => sink.fail(s).await,
            };
            if let Err(e) = sent {
                log::debug!("DRA: reply not delivered: {e}");
            }
        });
    }

    fn prepare<A: Message + Send + 'static>(
        &self,
        ctx: &RpcContext<'_>,
        req: v1::NodePrepareResourcesRequest,
        sink: UnarySink<A>,
    ) {
        let list = claims(&req.claims);
        self.run(ctx, sink, |tx| Job::Prepare(list, tx), prepare_answer);
    }

    fn unprepare<A: Message + Send + 'static>(
        &self,
        ctx: &RpcContext<'_>,
        req: v1::NodeUnprepareResourcesRequest,
        sink: UnarySink<A>,
    ) {
        let list = claims(&req.claims);
        self.run(ctx, sink, |tx| Job::Unprepare(list, tx), unprepare_answer);
    }

    /// A NodeWatchResources stream: the complete list at once, then again
    /// on every change of any pool, until the daemon stops.
    fn watch<A: Message + Send + 'static>(
        &self,
        ctx: &RpcContext<'_>,
        mut sink: ServerStreamingSink<A>,
    ) {
        let shared = self.shared.clone();
        let (tx, mut rx) = mpsc::channel(1);
        for p in lock(&shared.pools).iter() {
            p.state.notify(tx.clone());
        }
        lock(&shared.health).push(tx);
        log::debug!("DRA: NodeWatchResources opened by {}", ctx.peer());
        ctx.spawn(async move {
            let mut last: Option<Vec<(String, String, bool)>> = None;
            loop {
                if shared.stopping.load(Ordering::SeqCst) {
                    let _ = sink.close().await;
                    break;
                }
                let pools: Vec<Pool> = lock(&shared.pools).clone();
                let now = health_list(&pools);
                if last.as_ref() != Some(&now) {
                    let msg = match convert::<_, A>(&health_message(&now)) {
                        Ok(m) => m,
                        Err(_) => break,
                    };
                    if let Err(e) = sink.send((msg, WriteFlags::default())).await {
                        log::debug!("DRA: NodeWatchResources stream gone: {e}");
                        break;
                    }
                    last = Some(now);
                }
                if rx.next().await.is_none() {
                    break;
                }
            }
            log::debug!("DRA: NodeWatchResources ended");
        });
    }
}

/// Every device of every pool with its health: (pool, device name,
/// healthy). A device that vanished stays here, unhealthy, for as long as
/// its resource keeps it listed (`removeAfter`).
pub fn health_list(pools: &[Pool]) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for p in pools {
        p.state.current(|listing| match listing {
            Listing::Fixed { n, healthy } => {
                for i in 0..n {
                    out.push((p.name.clone(), device_name(&i.to_string()), healthy));
                }
            }
            Listing::Found(devices) => {
                for (id, health) in devices {
                    out.push((p.name.clone(), device_name(id), *health == HEALTHY));
                }
            }
        });
    }
    out
}

fn health_message(list: &[(String, String, bool)]) -> health_v1::NodeWatchResourcesResponse {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut resp = health_v1::NodeWatchResourcesResponse::new();
    for (pool, device, healthy) in list {
        let mut h = health_v1::DeviceHealth::new();
        let mut id = health_v1::DeviceIdentifier::new();
        id.pool_name.clone_from(pool);
        id.device_name.clone_from(device);
        h.device = Some(id).into();
        h.health = if *healthy {
            health_v1::HealthStatus::HEALTHY
        } else {
            health_v1::HealthStatus::UNHEALTHY
        }
        .into();
        h.last_updated_time = now;
        resp.devices.push(h);
    }
    resp
}

impl dra_v1_grpc::DRAPlugin for Service {
    fn node_prepare_resources(
        &mut self,
        ctx: RpcContext,
        req: v1::NodePrepareResourcesRequest,
        sink: UnarySink<v1::NodePrepareResourcesResponse>,
    ) {
        self.prepare(&ctx, req, sink);
    }

    fn node_unprepare_resources(
        &mut self,
        ctx: RpcContext,
        req: v1::NodeUnprepareResourcesRequest,
        sink: UnarySink<v1::NodeUnprepareResourcesResponse>,
    ) {
        self.unprepare(&ctx, req, sink);
    }
}

impl dra_v1beta1_grpc::DRAPlugin for Service {
    fn node_prepare_resources(
        &mut self,
        ctx: RpcContext,
        req: dra_v1beta1::NodePrepareResourcesRequest,
        sink: UnarySink<dra_v1beta1::NodePrepareResourcesResponse>,
    ) {
        match convert(&req) {
            Ok(req) => self.prepare(&ctx, req, sink),
            Err(s) => ctx.spawn(async move {
                let _ = sink.fail(s).await;
            }),
        }
    }

    fn node_unprepare_resources(
        &mut self,
        ctx: RpcContext,
        req: dra_v1beta1::NodeUnprepareResourcesRequest,
        sink: UnarySink<dra_v1beta1::NodeUnprepareResourcesResponse>,
    ) {
        match convert(&req) {
            Ok(req) => self.unprepare(&ctx, req, sink),
            Err(s) => ctx.spawn(async move {
                let _ = sink.fail(s).await;
            }),
        }
    }
}

impl health_v1_grpc::DRAResourceHealth for Service {
    fn node_watch_resources(
        &mut self,
        ctx: RpcContext,
        _req: health_v1::NodeWatchResourcesRequest,
        sink: ServerStreamingSink<health_v1::NodeWatchResourcesResponse>,
    ) {
        self.watch(&ctx, sink);
    }
}

impl health_v1alpha1_grpc::DRAResourceHealth for Service {
    fn node_watch_resources(
        &mut self,
        ctx: RpcContext,
        _req: health_v1alpha1::NodeWatchResourcesRequest,
        sink: ServerStreamingSink<health_v1alpha1::NodeWatchResourcesResponse>,
    ) {
        self.watch(&ctx, sink);
    }
}

impl Registration for Service {
    fn get_info(&mut self, ctx: RpcContext, _req: InfoRequest, sink: UnarySink<PluginInfo>) {
        log::debug!("DRA: GetInfo");
        let mut info = PluginInfo::new();
        info.type_ = DRA_PLUGIN_TYPE.to_string();
        info.name.clone_from(&self.shared.driver);
        info.endpoint = self.shared.endpoint.display().to_string();
        info.supported_versions = SUPPORTED_VERSIONS.iter().map(|s| s.to_string()).collect();
        ctx.spawn(async move {
            let _ = sink.success(info).await;
        });
    }

    fn notify_registration_status(
        &mut self,
        ctx: RpcContext,
        req: RegistrationStatus,
        sink: UnarySink<RegistrationStatusResponse>,
    ) {
        if req.plugin_registered {
            log::info!(
                "DRA: driver {} registered with the kubelet",
                self.shared.driver
            );
        } else {
            log::warn!(
                "DRA: the kubelet refused driver {}: {}",
                self.shared.driver,
                crate::text::shown(&req.error)
            );
        }
        self.shared.registered(req.plugin_registered);
        ctx.spawn(async move {
            let _ = sink.success(RegistrationStatusResponse::new()).await;
        });
    }
}
