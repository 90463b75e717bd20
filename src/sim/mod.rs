//! A simulated kubelet: the device-plugin side of a real kubelet, enough to
//! drive the daemon end to end in tests and in `make demo`.
//!
//! As PROTOCOL.md §2–3 describes:
//! - it serves `v1beta1.Registration` on `<dir>/kubelet.sock`. Register
//!   checks the version and the resource name, dials the plugin's endpoint
//!   (joined to the directory) and calls GetDevicePluginOptions *before*
//!   answering; then it holds ListAndWatch on that connection and records
//!   every list. A later registration of a resource replaces the earlier one.
//! - with a plugins-registry directory, it also discovers sockets there
//!   (ignoring dot-files and non-sockets), calls GetInfo (1 s deadline),
//!   validates it, connects to the endpoint and reports the outcome with
//!   NotifyRegistrationStatus. It notices sockets by inotify, as the real
//!   one does (a socket re-created at once often reuses the inode number).
//!   Removing the socket deregisters the plugin; a re-created socket is
//!   deregistered and registered again.
//! - [`SimKubelet::restart`] does what a kubelet start does: the old process
//!   and its connections are gone, every socket in the device-plugin
//!   directory except the checkpoint is deleted, a new kubelet.sock appears.
//! - when an *older* stream of a resource ends while a newer registration
//!   of it is current, it disconnects the current one, as kubelets up to
//!   1.36 do, and counts it in [`Recorded::late_stream_ends`].

mod calls;
pub mod dra;
pub mod fakeapi;
pub mod podres;

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use futures::future::{select, Either};
use futures::StreamExt;
use grpcio::{
    CallOption, EnvBuilder, Environment, RpcContext, RpcStatus, RpcStatusCode, Server,
    ServerBuilder, ServerCredentials, UnarySink,
};
use inotify::EventMask;

use crate::api::pluginregistration::{InfoRequest, RegistrationStatus};
use crate::api::pluginregistration_grpc::RegistrationClient as WatcherClient;
use crate::api::v1beta1::{DevicePluginOptions, Empty, RegisterRequest};
use crate::api::v1beta1_grpc::{create_registration, DevicePluginClient, Registration};
use crate::daemon::watch::{Key, Watcher};
use crate::kubelet::{API_VERSION, DEVICE_PLUGIN_TYPE, HEALTHY, KUBELET_SOCKET, UNHEALTHY};
use crate::util::{block_on_timeout, lock, poll_readable, unix_channel, wait_on};

/// The kubelet's checkpoint file; a restart never deletes it.
pub use crate::kubelet::CHECKPOINT_FILE as CHECKPOINT;

/// What the simulated kubelet has seen. Tests wait on predicates over it.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// Every accepted registration, in order. In plugin-watcher mode the
    /// endpoint is the socket path the plugin was found at.
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
    /// Plugin-watcher deregistrations (socket removed), per resource.
    pub deregistrations: HashMap<String, usize>,
    /// Older streams that ended while a newer registration was current:
    /// each one cut the current registration (the kubelet ≤ 1.36 race).
    pub late_stream_ends: usize,
    /// How many times this kubelet has started.
    pub starts: usize,
    /// When each entry of `registrations` was accepted.
    pub registered_at: Vec<Instant>,
    /// When the latest list of each resource arrived, and the first list
    /// after its latest registration.
    pub last_list_at: HashMap<String, Instant>,
    pub first_list_at: HashMap<String, Instant>,
}

impl Recorded {
    /// `(healthy, total)` devices of a resource, if it ever sent a list.
    pub fn counts(&self, resource: &str) -> Option<(usize, usize)> {
        self.devices
            .get(resource)
            .map(|d| (d.iter().filter(|(_, h)| h == HEALTHY).count(), d.len()))
    }

    pub fn registrations_of(&self, resource: &str) -> usize {
        self.registrations
            .iter()
            .filter(|r| r.resource_name == resource)
            .count()
    }
}

/// One registration: its client and the signal that disconnects it.
#[derive(Clone)]
struct Connection {
    seq: u64,
    client: DevicePluginClient,
    stop: Arc<Signal>,
}

/// A flag raised once, which a thread blocked on a stream also awaits: a
/// ListAndWatch thread sleeps until the daemon sends or the connection is
/// dropped, with no polling (2,000 streams polled every 20 ms kept a
/// 2-core machine's run queue ~170 deep).
#[derive(Default)]
struct Signal {
    raised: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Signal {
    fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        for w in lock(&self.wakers).drain(..) {
            w.wake();
        }
    }

    fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// Completes once the signal is raised.
    fn raised(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            if self.is_raised() {
                return Poll::Ready(());
            }
            let mut wakers = lock(&self.wakers);
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            drop(wakers);
            // Raised between the first look and the registration.
            if self.is_raised() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

struct Shared {
    dir: PathBuf,
    registry: Option<PathBuf>,
    recorded: Mutex<Recorded>,
    cv: Condvar,
    /// Current connection per resource (this incarnation).
    current: Mutex<HashMap<String, Connection>>,
    next_seq: Mutex<u64>,
}

impl Shared {
    fn record(&self, f: impl FnOnce(&mut Recorded)) {
        let mut r = lock(&self.recorded);
        f(&mut r);
        self.cv.notify_all();
    }

    fn mark_unhealthy(r: &mut Recorded, name: &str) {
        if let Some(devs) = r.devices.get_mut(name) {
            for d in devs.iter_mut() {
                d.1 = UNHEALTHY.into();
            }
        }
    }

    /// Makes `client` the current connection of `name` and starts its
    /// ListAndWatch, as the kubelet does after a successful registration.
    fn connect(
        self: &Arc<Self>,
        name: &str,
        client: DevicePluginClient,
        incarnation: &Arc<Signal>,
    ) {
        let seq = {
            let mut n = lock(&self.next_seq);
            *n += 1;
            *n
        };
        let conn = Connection {
            seq,
            client,
            stop: Arc::new(Signal::default()),
        };
        lock(&self.current).insert(name.to_string(), conn.clone());
        let shared = self.clone();
        let name = name.to_string();
        let incarnation = incarnation.clone();
        let spawned = thread::Builder::new()
            .name("sim-watch".into())
            .spawn(move || shared.watch(&name, &conn, &incarnation));
        if let Err(e) = spawned {
            log::error!("simulated kubelet: cannot start a ListAndWatch thread: {e}");
        }
    }

    fn watch(&self, name: &str, conn: &Connection, incarnation: &Signal) {
        let Ok(mut stream) = conn
            .client
            .list_and_watch(&Empty::new(), CallOption::default())
        else {
            return;
        };
        loop {
            let next = futures::executor::block_on(select(
                stream.next(),
                select(incarnation.raised(), conn.stop.raised()),
            ));
            match next {
                Either::Right(_) => {
                    stream.cancel();
                    // A kubelet process that is gone just drops its
                    // connections; a deregistration is recorded.
                    if !incarnation.is_raised() {
                        self.record(|r| {
                            *r.deregistrations.entry(name.to_string()).or_default() += 1;
                            Self::mark_unhealthy(r, name);
                        });
                    }
                    return;
                }
                Either::Left((Some(Ok(list)), _)) => {
                    let current = lock(&self.current).get(name).map(|c| c.seq) == Some(conn.seq);
                    if !current {
                        continue; // a replaced connection: the kubelet no longer reads it
                    }
                    let now = Instant::now();
                    self.record(|r| {
                        let devices = list
                            .devices
                            .iter()
                            .map(|d| (d.ID.clone(), d.health.clone()))
                            .collect();
                        r.devices.insert(name.to_string(), devices);
                        *r.lists.entry(name.to_string()).or_default() += 1;
                        r.last_list_at.insert(name.to_string(), now);
                        r.first_list_at.entry(name.to_string()).or_insert(now);
                    });
                }
                Either::Left(_) => {
                    if incarnation.is_raised() {
                        return;
                    }
                    let current = lock(&self.current).get(name).map(|c| c.seq);
                    self.record(|r| {
                        *r.streams_ended.entry(name.to_string()).or_default() += 1;
                        if current != Some(conn.seq) && current.is_some() {
                            r.late_stream_ends += 1;
                        }
                        // Either way the resource's current client is dropped
                        // and every device turns unhealthy.
                        Self::mark_unhealthy(r, name);
                    });
                    return;
                }
            }
        }
    }
}

#[derive(Clone)]
struct RegistrationServer {
    shared: Arc<Shared>,
    env: Arc<Environment>,
    incarnation: Arc<Signal>,
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
        } else if let Err(e) =
            crate::core::config::validate_extended_resource_name(&req.resource_name)
        {
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
        let client = dial(&self.env, &endpoint);
        let shared = self.shared.clone();
        let incarnation = self.incarnation.clone();
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
                        r.registered_at.push(Instant::now());
                        r.first_list_at.remove(&name);
                        r.options.insert(name.clone(), opts);
                    });
                    let _ = sink.success(Empty::new()).await;
                    shared.connect(&name, client, &incarnation);
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

fn dial(env: &Arc<Environment>, socket: &Path) -> DevicePluginClient {
    DevicePluginClient::new(unix_channel(env, socket))
}

/// One kubelet process: its server and its discovery thread.
struct Incarnation {
    server: Server,
    /// Set when this process "dies": its threads and streams stop.
    gone: Arc<Signal>,
    discovery: Option<thread::JoinHandle<()>>,
}

/// A running simulated kubelet. Stops (and removes its socket) on drop.
pub struct SimKubelet {
    shared: Arc<Shared>,
    env: Arc<Environment>,
    running: Option<Incarnation>,
}

impl SimKubelet {
    /// Starts serving on `<dir>/kubelet.sock`, creating `dir` if needed.
    ///
    /// # Errors
    ///
    /// When the directory or the socket cannot be created.
    pub fn start(dir: &Path) -> std::io::Result<SimKubelet> {
        Self::start_inner(dir, None)
    }

    /// Like [`start`](Self::start), and also discovers plugins in the
    /// plugins-registry directory `registry` (created if needed).
    ///
    /// # Errors
    ///
    /// When a directory or the socket cannot be created.
    pub fn start_with_registry(dir: &Path, registry: &Path) -> std::io::Result<SimKubelet> {
        std::fs::create_dir_all(registry)?;
        Self::start_inner(dir, Some(registry.to_path_buf()))
    }

    fn start_inner(dir: &Path, registry: Option<PathBuf>) -> std::io::Result<SimKubelet> {
        std::fs::create_dir_all(dir)?;
        let env = Arc::new(
            EnvBuilder::new()
                .cq_count(1)
                .name_prefix("sim-kubelet")
                .build(),
        );
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            registry,
            recorded: Mutex::new(Recorded::default()),
            cv: Condvar::new(),
            current: Mutex::new(HashMap::new()),
            next_seq: Mutex::new(0),
        });
        let mut sim = SimKubelet {
            shared,
            env,
            running: None,
        };
        sim.running = Some(sim.boot()?);
        Ok(sim)
    }

    /// Starts a kubelet process: cleans the device-plugin directory, serves
    /// a new kubelet.sock, scans and watches the plugins registry.
    fn boot(&self) -> std::io::Result<Incarnation> {
        lock(&self.shared.current).clear();
        // Before serving: a new kubelet knows no devices until plugins
        // register again (clearing later could wipe a fast plugin's list).
        self.shared.record(|r| {
            r.starts += 1;
            r.devices.clear();
        });
        for entry in std::fs::read_dir(&self.shared.dir)?.flatten() {
            let name = entry.file_name();
            if name == CHECKPOINT {
                continue;
            }
            // stat follows symlinks, as the kubelet's cleanup does.
            if std::fs::metadata(entry.path()).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let gone = Arc::new(Signal::default());
        let service = create_registration(RegistrationServer {
            shared: self.shared.clone(),
            env: self.env.clone(),
            incarnation: gone.clone(),
        });
        let sock = self.socket_path();
        let mut server = ServerBuilder::new(self.env.clone())
            .register_service(service)
            .build()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        server
            .add_listening_port(
                crate::util::unix_target(&sock),
                ServerCredentials::insecure(),
            )
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        server.start();
        let discovery = match &self.shared.registry {
            Some(registry) => {
                let (shared, env, gone, registry) = (
                    self.shared.clone(),
                    self.env.clone(),
                    gone.clone(),
                    registry.clone(),
                );
                Some(
                    thread::Builder::new()
                        .name("sim-discovery".into())
                        .spawn(move || {
                            discover(&shared, &env, &registry, &gone);
                        })?,
                )
            }
            None => None,
        };

        Ok(Incarnation {
            server,
            gone,
            discovery,
        })
    }

    pub fn socket_path(&self) -> PathBuf {
        self.shared.dir.join(KUBELET_SOCKET)
    }

    /// A copy of everything recorded so far.
    pub fn recorded(&self) -> Recorded {
        lock(&self.shared.recorded).clone()
    }

    /// Waits until `pred` returns `Some`, or `timeout` passes (`None`).
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        pred: impl FnMut(&Recorded) -> Option<T>,
    ) -> Option<T> {
        wait_on(&self.shared.recorded, &self.shared.cv, timeout, pred)
    }

    /// Stops the kubelet "process": its server, streams and discovery. The
    /// sockets it leaves behind stay until the next start.
    pub fn stop(&mut self) {
        if let Some(inc) = self.running.take() {
            inc.gone.raise();
            let mut server = inc.server;
            let f = server.shutdown();
            if block_on_timeout(f, Duration::from_millis(500)).is_none() {
                server.cancel_all_calls();
            }
            if let Some(t) = inc.discovery {
                let _ = t.join();
            }
        }
    }

    /// Restarts like a real kubelet: stop, then after `down` start again,
    /// deleting every socket in the directory except the checkpoint first.
    ///
    /// # Errors
    ///
    /// When the new kubelet.sock cannot be served.
    pub fn restart(&mut self, down: Duration) -> std::io::Result<()> {
        self.stop();
        if !down.is_zero() {
            thread::sleep(down);
        }
        self.running = Some(self.boot()?);
        Ok(())
    }
}

impl Drop for SimKubelet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The plugin watcher: find sockets in `registry` at start and through
/// inotify, register new or re-created ones, deregister removed ones, retry
/// failed ones (the real one retries from its 1 s reconciler).
fn discover(shared: &Arc<Shared>, env: &Arc<Environment>, registry: &Path, gone: &Arc<Signal>) {
    let retry = Duration::from_millis(200);
    // name -> (registered resource, last attempt)
    let mut known: HashMap<String, (Option<String>, Option<Instant>)> = HashMap::new();
    let mut watcher = match Watcher::new() {
        Ok(w) => w,
        Err(e) => {
            log::error!("simulated kubelet: inotify: {e}");
            return;
        }
    };
    watcher.set(Key::Sockets, &[registry.to_path_buf()]);
    if let Ok(rd) = std::fs::read_dir(registry) {
        for e in rd.flatten() {
            known.insert(e.file_name().to_string_lossy().into_owned(), (None, None));
        }
    }
    let deregister = |resource: &str| {
        if let Some(conn) = lock(&shared.current).remove(resource) {
            conn.stop.raise();
        }
    };
    while !gone.is_raised() {
        if poll_readable(&[watcher.fd()], Some(Duration::from_millis(20))).is_ok_and(|r| r[0]) {
            for f in watcher.read() {
                let Some(name) = f.name.as_ref().map(|n| n.to_string_lossy().into_owned()) else {
                    continue;
                };
                if f.mask.intersects(
                    EventMask::DELETE
                        | EventMask::MOVED_FROM
                        | EventMask::CREATE
                        | EventMask::MOVED_TO,
                ) {
                    // Removed, or re-created (a new socket): drop the old registration.
                    if let Some((Some(resource), _)) = known.remove(&name) {
                        deregister(&resource);
                    }
                }
                if f.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                    known.insert(name, (None, None));
                }
            }
        }
        for (name, (registered, last)) in known.iter_mut() {
            if registered.is_some()
                || name.starts_with('.')
                || last.is_some_and(|t| t.elapsed() < retry)
            {
                continue;
            }
            let path = registry.join(name);
            if !std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
                continue;
            }
            *last = Some(Instant::now());
            *registered = register_watched(shared, env, &path, gone);
        }
    }
}

/// One plugin-watcher registration (PROTOCOL.md §2.2 steps 3–9). Returns
/// the resource name on success.
fn register_watched(
    shared: &Arc<Shared>,
    env: &Arc<Environment>,
    path: &Path,
    gone: &Arc<Signal>,
) -> Option<String> {
    let reg = WatcherClient::new(unix_channel(env, path));
    let info = reg
        .get_info(
            &InfoRequest::new(),
            CallOption::default().timeout(Duration::from_secs(1)),
        )
        .ok()?;
    let notify = |ok: bool, error: String| {
        let mut s = RegistrationStatus::new();
        s.plugin_registered = ok;
        s.error = error;
        let _ = reg
            .notify_registration_status(&s, CallOption::default().timeout(Duration::from_secs(5)));
    };
    let endpoint = if info.endpoint.is_empty() {
        path.to_path_buf()
    } else {
        PathBuf::from(&info.endpoint)
    };
    let mut req = RegisterRequest::new();
    req.version = API_VERSION.to_string();
    req.endpoint = endpoint.display().to_string();
    req.resource_name = info.name.clone();
    let refuse = |msg: String| {
        shared.record(|r| r.rejected.push((req.clone(), msg.clone())));
        notify(false, msg);
        None
    };
    if info.type_ != DEVICE_PLUGIN_TYPE {
        return refuse(format!("no handler for plugin type {:?}", info.type_));
    }
    if !info.supported_versions.iter().any(|v| v == API_VERSION) {
        return refuse(format!(
            "none of the versions {:?} is supported",
            info.supported_versions
        ));
    }
    if let Err(e) = crate::core::config::validate_extended_resource_name(&info.name) {
        return refuse(format!("the ResourceName {:?} is invalid: {e}", info.name));
    }
    let client = dial(env, &endpoint);
    match client.get_device_plugin_options(
        &Empty::new(),
        CallOption::default().timeout(Duration::from_secs(10)),
    ) {
        Ok(opts) => {
            shared.record(|r| {
                r.registrations.push(req.clone());
                r.registered_at.push(Instant::now());
                r.first_list_at.remove(&info.name);
                r.options.insert(info.name.clone(), opts);
            });
            notify(true, String::new());
            shared.connect(&info.name, client, gone);
            Some(info.name)
        }
        Err(e) => refuse(format!("failed to get device plugin options: {e}")),
    }
}
