//! The kubelet's side of DRA, simulated (PROTOCOL.md §6.1, §6.2): its
//! plugin watcher's registration (GetInfo, the checks the kubelet makes,
//! NotifyRegistrationStatus), NodePrepareResources and
//! NodeUnprepareResources in either API version, and a NodeWatchResources
//! stream whose last message is kept. Over the real sockets, with gRPC.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use futures::StreamExt;
use grpcio::{CallOption, EnvBuilder, Environment};

use crate::api::pluginregistration::{InfoRequest, PluginInfo, RegistrationStatus};
use crate::api::pluginregistration_grpc::RegistrationClient;
use crate::api::{dra_v1, dra_v1_grpc, dra_v1beta1, dra_v1beta1_grpc};
use crate::api::{health_v1, health_v1_grpc};
use crate::util::{lock, unix_channel};

/// A call's deadline, as the kubelet gives it.
pub const CALL_DEADLINE: Duration = Duration::from_secs(45);

/// The kubelet's DRA side, for one driver.
pub struct DraKubelet {
    env: Arc<Environment>,
}

impl Default for DraKubelet {
    fn default() -> Self {
        DraKubelet {
            env: Arc::new(EnvBuilder::new().cq_count(1).name_prefix("simdra").build()),
        }
    }
}

/// A claim as the kubelet names it: namespace, name, UID.
pub type Claim<'a> = (&'a str, &'a str, &'a str);

/// The devices of one NodeWatchResources message: (pool, device, healthy).
pub type Health = Vec<(String, String, i32)>;

/// The latest message of a NodeWatchResources stream, and how many came.
#[derive(Default)]
pub struct Watch {
    state: Mutex<(Health, usize, bool)>,
    changed: Condvar,
}

impl Watch {
    /// Waits until `f` holds for the latest message; the message count.
    pub fn wait_for(&self, timeout: Duration, f: impl Fn(&Health) -> bool) -> Option<usize> {
        let guard = lock(&self.state);
        let (g, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |(h, n, _)| *n == 0 || !f(h))
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (g.1 > 0 && f(&g.0)).then_some(g.1)
    }

    /// Whether the stream has ended.
    pub fn ended(&self) -> bool {
        lock(&self.state).2
    }
}

fn v1_claims(list: &[Claim<'_>]) -> Vec<dra_v1::Claim> {
    list.iter()
        .map(|(ns, n, u)| {
            let mut c = dra_v1::Claim::new();
            (c.namespace, c.name, c.uid) = ((*ns).into(), (*n).into(), (*u).into());
            c
        })
        .collect()
}

impl DraKubelet {
    /// What the plugin watcher does with a registration socket: GetInfo
    /// (1 s), the DRA handler's checks, then NotifyRegistrationStatus.
    ///
    /// # Errors
    ///
    /// The failed call or check, as the kubelet would report it.
    pub fn register(&self, socket: &Path) -> Result<PluginInfo, String> {
        let c = RegistrationClient::new(unix_channel(&self.env, socket));
        let opt = || CallOption::default().timeout(Duration::from_secs(1));
        let info = c
            .get_info(&InfoRequest::new(), opt())
            .map_err(|e| format!("GetInfo: {e}"))?;
        let mut status = RegistrationStatus::new();
        let problem = if info.type_ != "DRAPlugin" {
            Some(format!("unknown plugin type {}", info.type_))
        } else if !info
            .supported_versions
            .iter()
            .any(|v| v == "v1.DRAPlugin" || v == "v1beta1.DRAPlugin")
        {
            Some("no supported DRAPlugin version".to_string())
        } else if !Path::new(&info.endpoint).is_absolute() {
            Some(format!("endpoint {} is not absolute", info.endpoint))
        } else {
            None
        };
        status.plugin_registered = problem.is_none();
        status.error = problem.clone().unwrap_or_default();
        c.notify_registration_status(
            &status,
            CallOption::default().timeout(Duration::from_secs(5)),
        )
        .map_err(|e| format!("NotifyRegistrationStatus: {e}"))?;
        match problem {
            Some(p) => Err(p),
            None => Ok(info),
        }
    }

    /// NodePrepareResources v1.
    ///
    /// # Errors
    ///
    /// An RPC-level failure.
    pub fn prepare(
        &self,
        endpoint: &Path,
        list: &[Claim<'_>],
    ) -> grpcio::Result<dra_v1::NodePrepareResourcesResponse> {
        let c = dra_v1_grpc::DRAPluginClient::new(unix_channel(&self.env, endpoint));
        let mut req = dra_v1::NodePrepareResourcesRequest::new();
        req.claims = v1_claims(list);
        c.node_prepare_resources(&req, CallOption::default().timeout(CALL_DEADLINE))
    }

    /// NodePrepareResources v1beta1 (a 1.32/1.33 kubelet).
    ///
    /// # Errors
    ///
    /// An RPC-level failure.
    pub fn prepare_v1beta1(
        &self,
        endpoint: &Path,
        list: &[Claim<'_>],
    ) -> grpcio::Result<dra_v1beta1::NodePrepareResourcesResponse> {
        let c = dra_v1beta1_grpc::DRAPluginClient::new(unix_channel(&self.env, endpoint));
        let mut req = dra_v1beta1::NodePrepareResourcesRequest::new();
        req.claims = list
            .iter()
            .map(|(ns, n, u)| {
                let mut c = dra_v1beta1::Claim::new();
                (c.namespace, c.name, c.uid) = ((*ns).into(), (*n).into(), (*u).into());
                c
            })
            .collect();
        c.node_prepare_resources(&req, CallOption::default().timeout(CALL_DEADLINE))
    }

    /// NodeUnprepareResources v1.
    ///
    /// # Errors
    ///
    /// An RPC-level failure.
    pub fn unprepare(
        &self,
        endpoint: &Path,
        list: &[Claim<'_>],
    ) -> grpcio::Result<dra_v1::NodeUnprepareResourcesResponse> {
        let c = dra_v1_grpc::DRAPluginClient::new(unix_channel(&self.env, endpoint));
        let mut req = dra_v1::NodeUnprepareResourcesRequest::new();
        req.claims = v1_claims(list);
        c.node_unprepare_resources(&req, CallOption::default().timeout(CALL_DEADLINE))
    }

    /// Opens NodeWatchResources (v1) and keeps its latest message.
    ///
    /// # Errors
    ///
    /// When the stream cannot be opened.
    pub fn watch(&self, endpoint: &Path) -> grpcio::Result<Arc<Watch>> {
        let c = health_v1_grpc::DRAResourceHealthClient::new(unix_channel(&self.env, endpoint));
        let mut stream = c.node_watch_resources(
            &health_v1::NodeWatchResourcesRequest::new(),
            CallOption::default(),
        )?;
        let watch = Arc::new(Watch::default());
        let w = watch.clone();
        std::thread::spawn(move || {
            let _client = c;
            while let Some(Ok(msg)) = futures::executor::block_on(stream.next()) {
                let list: Health = msg
                    .devices
                    .iter()
                    .map(|d| {
                        (
                            d.device.pool_name.clone(),
                            d.device.device_name.clone(),
                            d.health.value(),
                        )
                    })
                    .collect();
                let mut s = lock(&w.state);
                s.0 = list;
                s.1 += 1;
                w.changed.notify_all();
            }
            lock(&w.state).2 = true;
            w.changed.notify_all();
        });
        Ok(watch)
    }
}

/// The conventional socket paths of `driver` under a kubelet root's
/// registry and plugins directories.
pub fn sockets(registry: &Path, plugins: &Path, driver: &str) -> (PathBuf, PathBuf) {
    (
        crate::dra::front::registration_socket(registry, driver, None),
        crate::dra::front::service_socket(plugins, driver, None),
    )
}
