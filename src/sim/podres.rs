//! A stand-in for the kubelet's pod-resources API (`v1.PodResourcesLister`,
//! List only) on a Unix socket: tests say which containers hold which
//! device-plugin devices and DRA devices, and the daemon asks (B19).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use grpcio::{EnvBuilder, RpcContext, Server, ServerBuilder, ServerCredentials, UnarySink};

use crate::api::podresources_v1::{
    ClaimResource, ContainerDevices, ContainerResources, DynamicResource, ListPodResourcesRequest,
    ListPodResourcesResponse, PodResources,
};
use crate::api::podresources_v1_grpc::{create_pod_resources_lister, PodResourcesLister};

/// One container's holdings.
#[derive(Clone, Debug, Default)]
pub struct Holder {
    pub pod: String,
    /// Device-plugin devices: (resource name, IDs).
    pub devices: Vec<(String, Vec<String>)>,
    /// DRA devices: (driver, pool, device name).
    pub dra: Vec<(String, String, String)>,
}

#[derive(Clone, Default)]
struct Service {
    holders: Arc<Mutex<Vec<Holder>>>,
    calls: Arc<AtomicU64>,
}

impl PodResourcesLister for Service {
    fn list(
        &mut self,
        ctx: RpcContext,
        _req: ListPodResourcesRequest,
        sink: UnarySink<ListPodResourcesResponse>,
    ) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut resp = ListPodResourcesResponse::new();
        for h in crate::util::lock(&self.holders).iter() {
            let mut c = ContainerResources::new();
            c.name = "main".into();
            for (res, ids) in &h.devices {
                let mut d = ContainerDevices::new();
                d.resource_name.clone_from(res);
                d.device_ids.clone_from(ids);
                c.devices.push(d);
            }
            if !h.dra.is_empty() {
                let mut claim = DynamicResource::new();
                claim.claim_name = format!("{}-claim", h.pod);
                claim.claim_namespace = "default".into();
                for (driver, pool, device) in &h.dra {
                    let mut r = ClaimResource::new();
                    r.driver_name.clone_from(driver);
                    r.pool_name.clone_from(pool);
                    r.device_name.clone_from(device);
                    claim.claim_resources.push(r);
                }
                c.dynamic_resources.push(claim);
            }
            let mut p = PodResources::new();
            p.name.clone_from(&h.pod);
            p.namespace = "default".into();
            p.containers.push(c);
            resp.pod_resources.push(p);
        }
        ctx.spawn(async move {
            let _ = sink.success(resp).await;
        });
    }
}

/// The fake pod-resources server; stops when dropped.
pub struct FakePodResources {
    service: Service,
    _server: Server,
}

impl FakePodResources {
    /// Serves on `socket` (which must not exist).
    ///
    /// # Errors
    ///
    /// The server cannot be built or bound.
    pub fn start(socket: &Path) -> std::io::Result<FakePodResources> {
        let env = Arc::new(
            EnvBuilder::new()
                .cq_count(1)
                .name_prefix("sim-podres")
                .build(),
        );
        let service = Service::default();
        let mut server = ServerBuilder::new(env)
            .register_service(create_pod_resources_lister(service.clone()))
            .build()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        server
            .add_listening_port(
                crate::util::unix_target(socket),
                ServerCredentials::insecure(),
            )
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        server.start();
        Ok(FakePodResources {
            service,
            _server: server,
        })
    }

    /// Replaces what the running containers hold.
    pub fn set(&self, holders: Vec<Holder>) {
        *crate::util::lock(&self.service.holders) = holders;
    }

    /// List calls answered so far.
    pub fn calls(&self) -> u64 {
        self.service.calls.load(Ordering::SeqCst)
    }
}
