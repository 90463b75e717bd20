//! The daemon: serve every resource, register it, keep it registered, stop
//! cleanly (B1–B5, B9, B12, B14).
//!
//! Threads:
//! - the caller's thread is the *supervisor*: one `poll(2)` loop over the
//!   signal pipes, an internal wake pipe (registration results) and the
//!   inotify descriptor watching the device-plugin directory. It owns every
//!   server and socket, so their lifecycle has one place and no locks.
//! - `health`: re-checks host paths on each resource's interval and pushes
//!   changes into the resources' state (a stuck `stat` on NFS cannot block
//!   shutdown).
//! - grpcio's completion-queue threads run the RPC handlers and the
//!   registration calls (asynchronously: a hanging kubelet blocks nothing).

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{select, Either};
use grpcio::{
    CallOption, ChannelBuilder, EnvBuilder, Environment, Server, ServerBuilder, ServerCredentials,
};
use inotify::{EventMask, Inotify, WatchMask};

use crate::api::pluginregistration_grpc::create_registration;
use crate::api::v1beta1::{DevicePluginOptions, RegisterRequest};
use crate::api::v1beta1_grpc::{create_device_plugin, RegistrationClient};
use crate::cli::{Options, Registration};
use crate::config::{Config, Resource};
use crate::health::{self, Health};
use crate::plugin::{DevicePluginService, RegistrationService, ResourceState, API_VERSION};
use crate::socket::{self, OwnedSocket, SocketError};
use crate::util::{block_on_timeout, poll_readable, Notifier, WakePipe};

/// The kubelet's registration socket, inside the device-plugin directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// How long one Register call may take before it is abandoned and retried.
const REGISTER_DEADLINE: Duration = Duration::from_secs(5);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a server may take to finish its calls at shutdown before they
/// are cancelled (the whole stop must fit in 1 s).
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

/// Errors that stop the daemon (exit code 1).
#[derive(Debug)]
pub enum DaemonError {
    Setup {
        what: &'static str,
        source: io::Error,
    },
    Directory {
        path: PathBuf,
        source: io::Error,
    },
    /// Not a single resource could be served.
    NothingServed,
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Setup { what, source } => write!(f, "cannot set up {what}: {source}"),
            DaemonError::Directory { path, source } => write!(f, "{}: {source}", path.display()),
            DaemonError::NothingServed => {
                f.write_str("no resource could be served; see the errors above")
            }
        }
    }
}

impl std::error::Error for DaemonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DaemonError::Setup { source, .. } | DaemonError::Directory { source, .. } => {
                Some(source)
            }
            DaemonError::NothingServed => None,
        }
    }
}

/// The daemon's inputs from outside: termination and reload requests.
/// Signals write into these pipes; tests write into them through a
/// [`ControlHandle`] instead.
pub struct Control {
    term: WakePipe,
    hup: WakePipe,
}

/// Asks a running daemon to stop or reload, from any thread.
#[derive(Clone, Debug)]
pub struct ControlHandle {
    term: Notifier,
    hup: Notifier,
}

impl ControlHandle {
    pub fn shutdown(&self) {
        self.term.notify();
    }
    pub fn reload(&self) {
        self.hup.notify();
    }
}

impl Control {
    /// # Errors
    ///
    /// When the pipes cannot be created.
    pub fn new() -> io::Result<Control> {
        Ok(Control {
            term: WakePipe::new()?,
            hup: WakePipe::new()?,
        })
    }

    /// # Errors
    ///
    /// When a descriptor cannot be duplicated.
    pub fn handle(&self) -> io::Result<ControlHandle> {
        Ok(ControlHandle {
            term: self.term.notifier()?,
            hup: self.hup.notifier()?,
        })
    }

    /// SIGTERM/SIGINT/SIGQUIT request a clean stop; a second one exits at
    /// once with status 1. SIGHUP requests a reload. Call before spawning
    /// threads.
    ///
    /// # Errors
    ///
    /// When a handler cannot be registered.
    pub fn install_signal_handlers(&self) -> io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
        let armed = Arc::new(AtomicBool::new(false));
        for sig in [SIGTERM, SIGINT, SIGQUIT] {
            // Order matters: the exit check runs before the flag is set,
            // so only a second signal exits.
            signal_hook::flag::register_conditional_shutdown(sig, 1, armed.clone())?;
            signal_hook::flag::register(sig, armed.clone())?;
            signal_hook::low_level::pipe::register(sig, self.term.writer()?)?;
        }
        signal_hook::low_level::pipe::register(SIGHUP, self.hup.writer()?)?;
        Ok(())
    }
}

/// What the completion-queue thread reports back to the supervisor.
enum Event {
    RegisterDone {
        name: String,
        generation: u64,
        result: Result<(), String>,
    },
}

/// Registration results, filled by grpcio's threads, drained by the supervisor.
struct Events {
    queue: Mutex<VecDeque<Event>>,
    notifier: Notifier,
}

impl Events {
    fn push(&self, e: Event) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(e);
        self.notifier.notify();
    }
    fn take(&self) -> VecDeque<Event> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Where a resource's registration stands.
enum Reg {
    /// No kubelet.sock yet: waiting for it to appear.
    WaitingForKubelet,
    Due(Instant),
    /// A Register call is out; the sender cancels it.
    InFlight(oneshot::Sender<()>),
    Registered,
    /// Plugin-watcher mode: the kubelet finds the socket by itself.
    NotNeeded,
}

/// One configured resource and what the supervisor holds for it.
struct Served {
    state: Arc<ResourceState>,
    server: Option<Server>,
    socket: Option<OwnedSocket>,
    reg: Reg,
    /// Bumped on every (re)serve, so a late result of an older
    /// registration is recognised and ignored.
    generation: u64,
    backoff: Duration,
    /// The last registration error logged, to log repeats at debug only.
    last_error: Option<String>,
}

impl Served {
    fn name(&self) -> String {
        self.state.resource().resource_name.clone()
    }
}

/// Resources the health thread watches, and its stop flag.
struct HealthShared {
    inner: Mutex<HealthInner>,
    cv: Condvar,
}

struct HealthInner {
    entries: Vec<(Arc<ResourceState>, Instant)>,
    stop: bool,
}

struct Supervisor {
    opts: Options,
    env: Arc<Environment>,
    served: Vec<Served>,
    events: Arc<Events>,
    wake: WakePipe,
    inotify: Option<Inotify>,
    health: Arc<HealthShared>,
}

/// Runs the daemon until `control` asks it to stop.
///
/// # Errors
///
/// [`DaemonError`] when the daemon cannot start at all; problems with a
/// single resource are logged and the others keep serving.
pub fn run(opts: &Options, config: Config, control: &Control) -> Result<(), DaemonError> {
    // Sockets are created by gRPC with the process umask: 0177 makes them
    // 0600 from the first instant. Files created on purpose get explicit modes.
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o177) };

    let socket_dir = opts.socket_dir().to_path_buf();
    ensure_dir(&socket_dir)?;
    if opts.registration == Registration::PluginWatcher {
        log::info!(
            "registration mode: plugin watcher, sockets in {}",
            socket_dir.display()
        );
    }

    let wake = WakePipe::new().map_err(|source| DaemonError::Setup {
        what: "the wake pipe",
        source,
    })?;
    let events = Arc::new(Events {
        queue: Mutex::new(VecDeque::new()),
        notifier: wake.notifier().map_err(|source| DaemonError::Setup {
            what: "the wake pipe",
            source,
        })?,
    });
    let inotify = watch_dir(&opts.device_plugin_dir);
    let env = Arc::new(EnvBuilder::new().cq_count(1).name_prefix("grpc").build());
    let health = Arc::new(HealthShared {
        inner: Mutex::new(HealthInner {
            entries: Vec::new(),
            stop: false,
        }),
        cv: Condvar::new(),
    });

    let mut sup = Supervisor {
        opts: opts.clone(),
        env,
        served: Vec::new(),
        events,
        wake,
        inotify,
        health: health.clone(),
    };
    for r in config.resources {
        sup.add(Arc::new(r));
    }
    if sup.served.iter().all(|s| s.server.is_none()) {
        sup.stop();
        return Err(DaemonError::NothingServed);
    }

    let host_root = opts.host_root.clone();
    let health_thread = thread::Builder::new()
        .name("health".into())
        .spawn(move || health_loop(&health, &host_root))
        .map_err(|source| DaemonError::Setup {
            what: "the health thread",
            source,
        })?;

    let result = sup.event_loop(control);
    sup.stop();
    {
        let mut h = sup.health.inner.lock().unwrap_or_else(|p| p.into_inner());
        h.stop = true;
        sup.health.cv.notify_all();
    }
    let _ = health_thread.join();
    log::info!("shutdown complete");
    result
}

fn ensure_dir(dir: &Path) -> Result<(), DaemonError> {
    if dir.is_dir() {
        return Ok(());
    }
    log::info!("{}: creating the missing directory", dir.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(dir)
        .map_err(|source| DaemonError::Directory {
            path: dir.into(),
            source,
        })?;
    Ok(())
}

fn watch_dir(dir: &Path) -> Option<Inotify> {
    let inotify = match Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            log::warn!("inotify unavailable ({e}); kubelet restarts will not be noticed");
            return None;
        }
    };
    let mask = WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF;
    if let Err(e) = inotify.watches().add(dir, mask) {
        log::warn!(
            "{}: cannot watch the directory ({e}); kubelet restarts will not be noticed",
            dir.display()
        );
        return None;
    }
    Some(inotify)
}

impl Supervisor {
    fn kubelet_socket(&self) -> PathBuf {
        self.opts.device_plugin_dir.join(KUBELET_SOCKET)
    }

    fn kubelet_present(&self) -> bool {
        self.kubelet_socket().exists()
    }

    /// Starts serving a new resource (B1): create OrCreate paths, check
    /// health, serve, then schedule registration.
    fn add(&mut self, resource: Arc<Resource>) {
        if let Some(e) = health::create_missing(&self.opts.host_root, &resource) {
            log::warn!(
                "{}: cannot create {}: {e}",
                resource.resource_name,
                resource.host_path
            );
        }
        let h = health::check(&self.opts.host_root, &resource);
        log::info!("{}: {} is {h}", resource.resource_name, resource.host_path);
        let state = ResourceState::new(resource.clone(), h.is_healthy());
        let mut served = Served {
            state: state.clone(),
            server: None,
            socket: None,
            reg: Reg::WaitingForKubelet,
            generation: 0,
            backoff: BACKOFF_START,
            last_error: None,
        };
        self.serve(&mut served);
        self.served.push(served);
        let next = Instant::now() + resource.health_check_interval;
        let mut hi = self.health.inner.lock().unwrap_or_else(|p| p.into_inner());
        hi.entries.push((state, next));
        self.health.cv.notify_all();
    }

    /// (Re)starts a resource's server on a fresh socket. The old server is
    /// stopped first: gRPC unlinks its socket *path* when it shuts down.
    fn serve(&self, s: &mut Served) {
        s.state.new_epoch();
        if let Some(mut old) = s.server.take() {
            stop_server(&mut old);
        }
        if let Some(old) = s.socket.take() {
            old.remove();
        }
        if let Reg::InFlight(cancel) = std::mem::replace(&mut s.reg, Reg::WaitingForKubelet) {
            let _ = cancel.send(());
        }
        s.generation += 1;
        let resource = s.state.resource();
        let path = self.opts.socket_dir().join(&resource.socket_name);
        match start_server(&self.env, &s.state, &path, self.opts.registration) {
            Ok((server, owned)) => {
                log::info!("{}: serving on {}", resource.resource_name, path.display());
                s.server = Some(server);
                s.socket = Some(owned);
                s.reg = match self.opts.registration {
                    Registration::PluginWatcher => Reg::NotNeeded,
                    Registration::KubeletSocket if self.kubelet_present() => {
                        Reg::Due(Instant::now())
                    }
                    Registration::KubeletSocket => {
                        log::info!(
                            "{}: waiting for {} to register",
                            resource.resource_name,
                            self.kubelet_socket().display()
                        );
                        Reg::WaitingForKubelet
                    }
                };
            }
            Err(e) => log::error!("{}: cannot serve: {e}", resource.resource_name),
        }
    }

    fn event_loop(&mut self, control: &Control) -> Result<(), DaemonError> {
        let inotify_fd = self.inotify.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        let fds = [
            control.term.fd(),
            control.hup.fd(),
            self.wake.fd(),
            inotify_fd,
        ];
        loop {
            self.start_due_registrations();
            let timeout = self
                .next_due()
                .map(|t| t.saturating_duration_since(Instant::now()));
            let ready = poll_readable(&fds, timeout).map_err(|source| DaemonError::Setup {
                what: "poll",
                source,
            })?;
            if ready[0] && control.term.drain() {
                log::info!("stop requested: shutting down");
                return Ok(());
            }
            if ready[1] && control.hup.drain() {
                log::info!("SIGHUP: live reload is not supported yet; keeping the current config");
            }
            if ready[2] {
                self.wake.drain();
                for event in self.events.take() {
                    self.handle(event);
                }
            }
            if ready[3] {
                self.read_inotify();
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.served
            .iter()
            .filter_map(|s| match s.reg {
                Reg::Due(t) => Some(t),
                _ => None,
            })
            .min()
    }

    fn start_due_registrations(&mut self) {
        let now = Instant::now();
        let kubelet = self.kubelet_socket();
        for i in 0..self.served.len() {
            if matches!(self.served[i].reg, Reg::Due(t) if t <= now) {
                if !kubelet.exists() {
                    self.served[i].reg = Reg::WaitingForKubelet;
                    continue;
                }
                let reg = self.register(&self.served[i]);
                self.served[i].reg = reg;
            }
        }
    }

    /// Sends Register asynchronously; the result comes back as an [`Event`].
    fn register(&self, s: &Served) -> Reg {
        let resource = s.state.resource();
        let mut req = RegisterRequest::new();
        req.version = API_VERSION.to_string();
        req.endpoint = resource.socket_name.clone();
        req.resource_name = resource.resource_name.clone();
        req.options = Some(DevicePluginOptions::new()).into();
        let channel = ChannelBuilder::new(self.env.clone())
            .default_authority("localhost")
            .connect(&format!("unix:{}", self.kubelet_socket().display()));
        let client = RegistrationClient::new(channel);
        let opt = CallOption::default().timeout(REGISTER_DEADLINE);
        let name = resource.resource_name.clone();
        let generation = s.generation;
        match client.register_async(&req, opt) {
            Ok(mut receiver) => {
                let (cancel_tx, cancel_rx) = oneshot::channel();
                let events = self.events.clone();
                let keep = client.clone();
                log::debug!(
                    "{name}: Register sent to {}",
                    self.kubelet_socket().display()
                );
                client.spawn(async move {
                    let _keep_channel = keep;
                    let result = match select(&mut receiver, cancel_rx).await {
                        Either::Left((r, _)) => r.map(|_| ()).map_err(|e| e.to_string()),
                        Either::Right(_) => {
                            receiver.cancel();
                            Err("cancelled".to_string())
                        }
                    };
                    events.push(Event::RegisterDone {
                        name,
                        generation,
                        result,
                    });
                });
                Reg::InFlight(cancel_tx)
            }
            Err(e) => {
                self.events.push(Event::RegisterDone {
                    name,
                    generation,
                    result: Err(e.to_string()),
                });
                Reg::WaitingForKubelet
            }
        }
    }

    fn handle(&mut self, event: Event) {
        let Event::RegisterDone {
            name,
            generation,
            result,
        } = event;
        let kubelet_present = self.kubelet_present();
        let Some(s) = self
            .served
            .iter_mut()
            .find(|s| s.generation == generation && s.name() == name)
        else {
            return; // a result for a server that has since been replaced
        };
        if !matches!(s.reg, Reg::InFlight(_) | Reg::WaitingForKubelet) {
            return;
        }
        match result {
            Ok(()) => {
                let r = s.state.resource();
                log::info!(
                    "{}: registered with the kubelet (endpoint {})",
                    r.resource_name,
                    r.socket_name
                );
                s.reg = Reg::Registered;
                s.backoff = BACKOFF_START;
                s.last_error = None;
            }
            Err(e) if e == "cancelled" => {}
            Err(e) => {
                let retry = s.backoff;
                if s.last_error.as_deref() == Some(e.as_str()) {
                    log::debug!("{name}: registration failed again: {e}; retrying in {retry:?}");
                } else {
                    log::warn!("{name}: registration failed: {e}; retrying in {retry:?} (backoff up to {BACKOFF_MAX:?})");
                }
                s.last_error = Some(e);
                s.backoff = (s.backoff * 2).min(BACKOFF_MAX);
                s.reg = if kubelet_present {
                    Reg::Due(Instant::now() + retry)
                } else {
                    Reg::WaitingForKubelet
                };
            }
        }
    }

    fn read_inotify(&mut self) {
        let mut buf = [0u8; 4096];
        let mut kubelet_created = false;
        let mut socket_events: Vec<String> = Vec::new();
        let mut dir_gone = false;
        {
            let Some(inotify) = self.inotify.as_mut() else {
                return;
            };
            loop {
                match inotify.read_events(&mut buf) {
                    Ok(events) => {
                        let mut any = false;
                        for e in events {
                            any = true;
                            if e.mask.intersects(
                                EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED,
                            ) {
                                dir_gone = true;
                            }
                            let Some(name) = e.name.and_then(OsStr::to_str) else {
                                continue;
                            };
                            log::debug!("inotify: {:?} {name}", e.mask);
                            if name == KUBELET_SOCKET
                                && e.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO)
                            {
                                kubelet_created = true;
                            } else if name != KUBELET_SOCKET {
                                socket_events.push(name.to_string());
                            }
                        }
                        if !any {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log::warn!("inotify read failed: {e}");
                        break;
                    }
                }
            }
        }
        if dir_gone {
            log::warn!(
                "{}: the device-plugin directory was removed or moved; no longer watching it",
                self.opts.device_plugin_dir.display()
            );
            self.inotify = None;
        }
        if kubelet_created && self.opts.registration == Registration::KubeletSocket {
            log::info!(
                "kubelet restart seen ({} created): serving afresh and registering again",
                KUBELET_SOCKET
            );
            let mut served = std::mem::take(&mut self.served);
            for s in &mut served {
                self.serve(s);
            }
            self.served = served;
            return;
        }
        let mut served = std::mem::take(&mut self.served);
        for s in &mut served {
            let name = s.state.resource().socket_name.clone();
            if !socket_events.contains(&name) {
                continue;
            }
            if let Some(sock) = &s.socket {
                if !sock.intact() {
                    log::warn!(
                        "{}: our socket {} was removed; serving again",
                        s.name(),
                        sock.path().display()
                    );
                    self.serve(s);
                }
            }
        }
        self.served = served;
    }

    /// B9: end the streams, stop the servers, remove our sockets.
    fn stop(&mut self) {
        for s in &mut self.served {
            s.state.stop();
            if let Reg::InFlight(cancel) = std::mem::replace(&mut s.reg, Reg::WaitingForKubelet) {
                let _ = cancel.send(());
            }
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut pending = Vec::new();
        for s in &mut self.served {
            if let Some(mut server) = s.server.take() {
                let f = server.shutdown();
                pending.push((server, f));
            }
        }
        for (mut server, f) in pending {
            let left = deadline.saturating_duration_since(Instant::now());
            if block_on_timeout(f, left).is_none() {
                server.cancel_all_calls();
            }
        }
        for s in &mut self.served {
            if let Some(sock) = s.socket.take() {
                sock.remove();
            }
        }
    }
}

fn start_server(
    env: &Arc<Environment>,
    state: &Arc<ResourceState>,
    path: &Path,
    mode: Registration,
) -> Result<(Server, OwnedSocket), SocketError> {
    socket::prepare(path)?;
    let mut builder = ServerBuilder::new(env.clone()).register_service(create_device_plugin(
        DevicePluginService {
            state: state.clone(),
        },
    ));
    if mode == Registration::PluginWatcher {
        builder = builder.register_service(create_registration(RegistrationService {
            state: state.clone(),
        }));
    }
    let io_err = |action: &'static str, e: grpcio::Error| SocketError::Io {
        path: path.into(),
        action,
        source: io::Error::other(e.to_string()),
    };
    let mut server = builder
        .build()
        .map_err(|e| io_err("build the gRPC server", e))?;
    server
        .add_listening_port(
            format!("unix:{}", path.display()),
            ServerCredentials::insecure(),
        )
        .map_err(|e| io_err("bind", e))?;
    server.start();
    let owned = OwnedSocket::record(path)?;
    Ok((server, owned))
}

/// Stops one server: its streams were told to end; give them a moment,
/// then cancel whatever is left.
fn stop_server(server: &mut Server) {
    let f = server.shutdown();
    if block_on_timeout(f, SHUTDOWN_GRACE).is_none() {
        server.cancel_all_calls();
    }
}

/// The health thread's loop: check each resource when due, push changes.
fn health_loop(shared: &HealthShared, host_root: &Path) {
    let mut inner = shared.inner.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if inner.stop {
            return;
        }
        let now = Instant::now();
        let due: Vec<Arc<ResourceState>> = inner
            .entries
            .iter()
            .filter(|(_, next)| *next <= now)
            .map(|(s, _)| s.clone())
            .collect();
        if !due.is_empty() {
            drop(inner);
            for state in &due {
                check_and_publish(host_root, state);
            }
            inner = shared.inner.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            for (s, next) in &mut inner.entries {
                if due.iter().any(|d| Arc::ptr_eq(d, s)) {
                    *next = now + s.resource().health_check_interval;
                }
            }
            continue;
        }
        let wait = inner
            .entries
            .iter()
            .map(|(_, next)| next.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(3600));
        inner = shared
            .cv
            .wait_timeout(inner, wait)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// One health check; a change is logged once and reaches every stream.
pub fn check_and_publish(host_root: &Path, state: &ResourceState) -> Health {
    let r = state.resource();
    let h = health::check(host_root, &r);
    let was = state.healthy();
    if state.set_healthy(h.is_healthy()) {
        let old = if was { "Healthy" } else { "Unhealthy" };
        match &h {
            Health::Healthy => log::info!("{}: {} {old} -> Healthy", r.resource_name, r.host_path),
            Health::Unhealthy(why) => {
                log::warn!(
                    "{}: {} {old} -> Unhealthy: {why}",
                    r.resource_name,
                    r.host_path
                );
            }
        }
    }
    h
}
