//! A simulated kubelet: the device-plugin side of a real kubelet, enough to
//! drive the daemon end to end in tests and in `make demo`.
//!
//! It serves `v1beta1.Registration` on `<dir>/kubelet.sock` and behaves as
//! PROTOCOL.md §3 describes: Register checks the version and the resource
//! name, dials the plugin's endpoint (joined to the directory) and calls
//! GetDevicePluginOptions *before* answering; then it holds ListAndWatch on
//! that connection and records every list. A later registration of the same
//! resource replaces the earlier one. [`SimKubelet::allocate`] calls
//! Allocate like the kubelet does at pod admission.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use futures::StreamExt;
use grpcio::{
    CallOption, ChannelBuilder, EnvBuilder, Environment, RpcContext, RpcStatus, RpcStatusCode,
    Server, ServerBuilder, ServerCredentials, UnarySink,
};

use crate::api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateRequest, DevicePluginOptions, Empty,
    RegisterRequest,
};
use crate::api::v1beta1_grpc::{create_registration, DevicePluginClient, Registration};
use crate::daemon::KUBELET_SOCKET;
use crate::plugin::API_VERSION;
use crate::util::block_on_timeout;

/// What the simulated kubelet has seen. Tests wait on predicates over it.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// Every accepted registration, in order.
    pub registrations: Vec<RegisterRequest>,
    /// Refused registrations with the error returned.
    pub rejected: Vec<(RegisterRequest, String)>,
    /// Options fetched during each resource's latest registration.
    pub options: HashMap<String, DevicePluginOptions>,
    /// Latest device list per resource: (ID, health).
    pub devices: HashMap<String, Vec<(String, String)>>,
    /// How many lists each resource has sent, over all its streams.
    pub lists: HashMap<String, usize>,
    /// How many ListAndWatch streams ended, per resource.
    pub streams_ended: HashMap<String, usize>,
}

impl Recorded {
    /// `(healthy, total)` devices of a resource, if it ever sent a list.
    pub fn counts(&self, resource: &str) -> Option<(usize, usize)> {
        self.devices
            .get(resource)
            .map(|d| (d.iter().filter(|(_, h)| h == "Healthy").count(), d.len()))
    }

    pub fn registrations_of(&self, resource: &str) -> usize {
        self.registrations
            .iter()
            .filter(|r| r.resource_name == resource)
            .count()
    }
}

struct Shared {
    dir: PathBuf,
    recorded: Mutex<Recorded>,
    cv: Condvar,
    /// Latest client per resource, for Allocate.
    clients: Mutex<HashMap<String, DevicePluginClient>>,
    stopping: AtomicBool,
}

impl Shared {
    fn record(&self, f: impl FnOnce(&mut Recorded)) {
        let mut r = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut r);
        self.cv.notify_all();
    }
}

#[derive(Clone)]
struct RegistrationServer {
    shared: Arc<Shared>,
    env: Arc<Environment>,
}

impl Registration for RegistrationServer {
    fn register(&mut self, ctx: RpcContext, req: RegisterRequest, sink: UnarySink<Empty>) {
        let refuse = |msg: String| {
            self.shared
                .record(|r| r.rejected.push((req.clone(), msg.clone())));
            RpcStatus::with_message(RpcStatusCode::UNKNOWN, msg)
        };
        let early = if req.version != API_VERSION {
            Some(refuse(format!(
                "requested API version {:?} is not supported by kubelet",
                req.version
            )))
        } else if let Err(e) = crate::config::validate_extended_resource_name(&req.resource_name) {
            Some(refuse(format!(
                "the ResourceName {:?} is invalid: {e}",
                req.resource_name
            )))
        } else {
            None
        };
        if let Some(status) = early {
            ctx.spawn(async move {
                let _ = sink.fail(status).await;
            });
            return;
        }
        // Like the kubelet: Go's filepath.Join keeps the endpoint inside the dir.
        let endpoint = self.shared.dir.join(req.endpoint.trim_start_matches('/'));
        let channel = ChannelBuilder::new(self.env.clone())
            .default_authority("localhost")
            .connect(&format!("unix:{}", endpoint.display()));
        let client = DevicePluginClient::new(channel);
        let shared = self.shared.clone();
        let call = client.get_device_plugin_options_async(
            &Empty::new(),
            CallOption::default().timeout(Duration::from_secs(10)),
        );
        ctx.spawn(async move {
            let options = match call {
                Ok(receiver) => receiver.await,
                Err(e) => Err(e),
            };
            match options {
                Ok(opts) => {
                    let name = req.resource_name.clone();
                    shared.record(|r| {
                        r.registrations.push(req.clone());
                        r.options.insert(name.clone(), opts);
                    });
                    shared
                        .clients
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.clone(), client.clone());
                    let _ = sink.success(Empty::new()).await;
                    spawn_list_and_watch(shared, name, client);
                }
                Err(e) => {
                    let msg = format!("failed to get device plugin options: {e}");
                    shared.record(|r| r.rejected.push((req.clone(), msg.clone())));
                    let _ = sink
                        .fail(RpcStatus::with_message(RpcStatusCode::UNKNOWN, msg))
                        .await;
                }
            }
        });
    }
}

/// Holds the ListAndWatch stream of one registration on a plain thread,
/// recording each list; the end of the stream marks every device unhealthy,
/// as the kubelet does.
fn spawn_list_and_watch(shared: Arc<Shared>, name: String, client: DevicePluginClient) {
    let spawned = thread::Builder::new()
        .name("sim-watch".into())
        .spawn(move || {
            let mut stream = match client.list_and_watch(&Empty::new(), CallOption::default()) {
                Ok(s) => s,
                Err(_) => return,
            };
            loop {
                if shared.stopping.load(Ordering::SeqCst) {
                    stream.cancel();
                    return;
                }
                match block_on_timeout(stream.next(), Duration::from_millis(50)) {
                    None => continue,
                    Some(Some(Ok(list))) => shared.record(|r| {
                        let devices = list
                            .devices
                            .iter()
                            .map(|d| (d.ID.clone(), d.health.clone()))
                            .collect();
                        r.devices.insert(name.clone(), devices);
                        *r.lists.entry(name.clone()).or_default() += 1;
                    }),
                    Some(_) => {
                        shared.record(|r| {
                            *r.streams_ended.entry(name.clone()).or_default() += 1;
                            if let Some(devs) = r.devices.get_mut(&name) {
                                for d in devs.iter_mut() {
                                    d.1 = "Unhealthy".into();
                                }
                            }
                        });
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("simulated kubelet: cannot start a ListAndWatch thread: {e}");
    }
}

/// A running simulated kubelet. Stops (and removes its socket) on drop.
pub struct SimKubelet {
    shared: Arc<Shared>,
    server: Option<Server>,
}

impl SimKubelet {
    /// Starts serving on `<dir>/kubelet.sock`, creating `dir` if needed.
    ///
    /// # Errors
    ///
    /// When the directory or the socket cannot be created.
    pub fn start(dir: &Path) -> std::io::Result<SimKubelet> {
        std::fs::create_dir_all(dir)?;
        let env = Arc::new(
            EnvBuilder::new()
                .cq_count(1)
                .name_prefix("sim-kubelet")
                .build(),
        );
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            recorded: Mutex::new(Recorded::default()),
            cv: Condvar::new(),
            clients: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
        });
        let service = create_registration(RegistrationServer {
            shared: shared.clone(),
            env: env.clone(),
        });
        let sock = dir.join(KUBELET_SOCKET);
        let _ = std::fs::remove_file(&sock);
        let mut server = ServerBuilder::new(env)
            .register_service(service)
            .build()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        server
            .add_listening_port(
                format!("unix:{}", sock.display()),
                ServerCredentials::insecure(),
            )
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        server.start();
        Ok(SimKubelet {
            shared,
            server: Some(server),
        })
    }

    pub fn socket_path(&self) -> PathBuf {
        self.shared.dir.join(KUBELET_SOCKET)
    }

    /// A copy of everything recorded so far.
    pub fn recorded(&self) -> Recorded {
        self.shared
            .recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until `pred` returns `Some`, or `timeout` passes (`None`).
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Recorded) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut r: MutexGuard<'_, Recorded> = self
            .shared
            .recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = pred(&r) {
                return Some(v);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            r = self
                .shared
                .cv
                .wait_timeout(r, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Calls Allocate on the latest registration of `resource`, one
    /// container request per element of `containers`.
    ///
    /// # Errors
    ///
    /// The gRPC error, or `NOT_FOUND` when the resource never registered.
    pub fn allocate(
        &self,
        resource: &str,
        containers: &[&[&str]],
    ) -> grpcio::Result<AllocateResponse> {
        let client = self
            .shared
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(resource)
            .cloned();
        let Some(client) = client else {
            return Err(grpcio::Error::RpcFailure(RpcStatus::with_message(
                RpcStatusCode::NOT_FOUND,
                format!("{resource} is not registered"),
            )));
        };
        let mut req = AllocateRequest::new();
        for ids in containers {
            let mut c = ContainerAllocateRequest::new();
            c.devices_ids = ids.iter().map(|s| s.to_string()).collect();
            req.container_requests.push(c);
        }
        client.allocate(&req, CallOption::default().timeout(Duration::from_secs(5)))
    }

    /// Stops serving and ends every ListAndWatch stream it holds.
    pub fn stop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(mut server) = self.server.take() {
            let f = server.shutdown();
            if block_on_timeout(f, Duration::from_millis(500)).is_none() {
                server.cancel_all_calls();
            }
        }
        let _ = std::fs::remove_file(self.socket_path());
    }
}

impl Drop for SimKubelet {
    fn drop(&mut self) {
        self.stop();
    }
}
