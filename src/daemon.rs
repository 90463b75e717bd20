//! The daemon: serve every resource, register it, keep it registered through
//! kubelet restarts and reloads, stop cleanly (B1–B5, B9, B10, B12–B14).
//!
//! Threads:
//! - the caller's thread is the *supervisor*: one `poll(2)` loop over the
//!   signal pipes, an internal wake pipe (registration results) and the
//!   inotify descriptor (socket directory, config directory, host paths).
//!   It owns every server and socket, so their lifecycle has one place and
//!   no locks. It never inspects a host path.
//! - the health monitor's threads ([`crate::monitor`]): every host-path
//!   check and watch, pushed into the resources' state (a stuck `stat` on
//!   NFS delays neither shutdown, registration nor the other resources).
//! - grpcio's completion-queue threads run the RPC handlers and the
//!   registration calls (asynchronously: a hanging kubelet blocks nothing).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{select, Either};
use grpcio::{CallOption, EnvBuilder, Environment, Server, ServerBuilder, ServerCredentials};

use crate::api::pluginregistration_grpc::create_registration;
use crate::api::v1beta1::{DevicePluginOptions, RegisterRequest};
use crate::api::v1beta1_grpc::{create_device_plugin, RegistrationClient};
use crate::cli::{Options, Registration};
use crate::config::{self, Config, Loaded, Resource};
use crate::fs_events::{self, Meaning};
use crate::monitor::Monitor;
use crate::plugin::{DevicePluginService, RegistrationService, ResourceState, API_VERSION};
use crate::reload;
use crate::retry::{self, Backoff, RegisterError, QUICK_RETRY};
use crate::socket::{self, FileId, OwnedSocket, SocketError};
use crate::util::{
    block_on_timeout, lock, poll_events, unix_channel, unix_target, Notifier, WakePipe,
};
use crate::watch::{Fired, Key, Watcher};

pub use crate::kubelet::KUBELET_SOCKET;
/// Calls each server can accept at once before the next is queued.
const REQUEST_SLOTS: usize = 16;
/// How long one Register call may take before it is abandoned and retried.
const REGISTER_DEADLINE: Duration = Duration::from_secs(5);
/// How long a server may take to finish its calls when stopped before they
/// are cancelled (a whole shutdown must fit in 1 s).
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);
/// Config-directory events come in bursts (write, rename, symlink swap):
/// wait this long after the last one before reading the file.
const RELOAD_SETTLE: Duration = Duration::from_millis(20);
/// While the socket directory is missing, look for it this often (inotify
/// on its parent usually sees it first).
const MISSING_DIR_POLL: Duration = Duration::from_secs(1);

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
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Setup { what, source } => write!(f, "cannot set up {what}: {source}"),
            DaemonError::Directory { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for DaemonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DaemonError::Setup { source, .. } | DaemonError::Directory { source, .. } => {
                Some(source)
            }
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

/// A registration result, reported by grpcio's thread to the supervisor.
struct RegisterDone {
    id: u64,
    generation: u64,
    result: Result<(), RegisterError>,
}

/// Registration results, filled by grpcio's threads, drained by the supervisor.
struct Events {
    queue: Mutex<VecDeque<RegisterDone>>,
    notifier: Notifier,
}

impl Events {
    fn push(&self, e: RegisterDone) {
        lock(&self.queue).push_back(e);
        self.notifier.notify();
    }
    fn take(&self) -> VecDeque<RegisterDone> {
        std::mem::take(&mut *lock(&self.queue))
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
    /// Unique for the daemon's life; keys its watches and health entry.
    id: u64,
    state: Arc<ResourceState>,
    server: Option<Server>,
    socket: Option<OwnedSocket>,
    reg: Reg,
    /// Bumped on every (re)serve, so a late result of an older
    /// registration is recognised and ignored.
    generation: u64,
    /// Registration retries; serve retries (a read-only or missing
    /// directory, a foreign file in the way) and when the next is due.
    reg_backoff: Backoff,
    serve_backoff: Backoff,
    serve_retry: Option<Instant>,
    /// Quick retries used on a refused connection since the last serve.
    quick_retries: u32,
}

impl Served {
    /// Abandons a Register call that is out (its late result is ignored).
    fn cancel_registration(&mut self) {
        if let Reg::InFlight(cancel) = std::mem::replace(&mut self.reg, Reg::WaitingForKubelet) {
            let _ = cancel.send(());
        }
    }

    fn name(&self) -> String {
        self.state.resource().resource_name.clone()
    }
}

struct Supervisor {
    opts: Options,
    env: Arc<Environment>,
    served: Vec<Served>,
    next_id: u64,
    events: Arc<Events>,
    wake: WakePipe,
    watcher: Option<Watcher>,
    monitor: Monitor,
    /// The identity of kubelet.sock when last seen: after an inotify
    /// overflow, a restart is told by looking, not assumed.
    kubelet_id: Option<FileId>,
    /// The config text last evaluated (applied or refused), so unrelated
    /// events in its directory do not reload or re-log anything.
    config_text: String,
    reload_due: Option<Instant>,
    /// The socket directory vanished: serve again when it is back.
    socket_dir_missing: bool,
}

/// Runs the daemon until `control` asks it to stop. The caller sets the
/// process-wide state first: the umask (0177, so gRPC's sockets are 0600
/// from the first instant), logging, the open-file limit. Meant to be the last
/// thing a process does: on return gRPC's threads are still there, for the
/// process exit to end.
///
/// # Errors
///
/// [`DaemonError`] when the daemon cannot start at all; problems with a
/// single resource are logged and the others keep serving.
pub fn run(opts: &Options, loaded: Loaded, control: &Control) -> Result<(), DaemonError> {
    let socket_dir = opts.socket_dir().to_path_buf();
    ensure_dir(&socket_dir)?;
    if opts.registration == Registration::PluginWatcher {
        log::info!(
            "registration mode: plugin watcher, sockets in {}",
            socket_dir.display()
        );
    }

    let wake = WakePipe::new().map_err(setup_error("the wake pipe"))?;
    let events = Arc::new(Events {
        queue: Mutex::new(VecDeque::new()),
        notifier: wake.notifier().map_err(setup_error("the wake pipe"))?,
    });
    let watcher = match Watcher::new() {
        Ok(w) => Some(w),
        Err(e) => {
            log::warn!("inotify unavailable ({e}): kubelet restarts, reloads and path changes are seen only by polling");
            None
        }
    };
    let env = Arc::new(EnvBuilder::new().cq_count(1).name_prefix("grpc").build());
    let monitor = Monitor::start(&opts.host_root).map_err(setup_error("the health monitor"))?;

    let mut sup = Supervisor {
        opts: opts.clone(),
        env,
        served: Vec::new(),
        next_id: 0,
        events,
        wake,
        watcher,
        monitor,
        kubelet_id: None,
        config_text: loaded.text,
        reload_due: None,
        socket_dir_missing: false,
    };
    sup.kubelet_id = socket::identity(&sup.kubelet_socket());
    sup.watch_sockets();
    sup.watch_config();
    for r in loaded.config.resources {
        sup.add(Arc::new(r));
    }
    // A resource that could not be served is retried with backoff; the
    // daemon never exits for it (its probe says what is not serving).

    let result = sup.event_loop(control);
    sup.stop();
    sup.monitor.shutdown();
    log::info!("shutdown complete");
    // Streams are ended, servers stopped, our sockets removed: all that the
    // kubelet can see is done. Tearing down gRPC's runtime (joining its
    // threads, its global shutdown) only delays the exit by ~5 ms, so it is
    // left to the process exit that follows.
    std::mem::forget(sup);
    result
}

fn setup_error(what: &'static str) -> impl Fn(io::Error) -> DaemonError {
    move |source| DaemonError::Setup { what, source }
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
        })
}

impl Supervisor {
    fn kubelet_socket(&self) -> PathBuf {
        self.opts.device_plugin_dir.join(KUBELET_SOCKET)
    }

    fn kubelet_present(&self) -> bool {
        self.kubelet_socket().exists()
    }

    fn socket_dir(&self) -> &Path {
        self.opts.socket_dir()
    }

    /// Watches the socket directory and its parent (to see it re-created).
    fn watch_sockets(&mut self) {
        let dir = self.socket_dir().to_path_buf();
        let mut paths = vec![dir.clone()];
        paths.extend(dir.parent().map(Path::to_path_buf));
        if let Some(w) = self.watcher.as_mut() {
            let failed = w.set(Key::Sockets, &paths);
            if failed.contains(&dir) && dir.is_dir() {
                log::warn!(
                    "{}: cannot watch the directory; kubelet restarts will not be noticed",
                    dir.display()
                );
            }
        }
    }

    /// Watches the config file's directory: an in-place write, a
    /// write-and-rename, and a ConfigMap `..data` symlink swap all show there.
    fn watch_config(&mut self) {
        let dir = self
            .opts
            .config
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        if let Some(w) = self.watcher.as_mut() {
            if !w.set(Key::Config, std::slice::from_ref(&dir)).is_empty() {
                log::warn!(
                    "{}: cannot watch the config directory; reload with SIGHUP",
                    dir.display()
                );
            }
        }
    }

    /// Starts serving a new resource (B1): serve, schedule registration,
    /// and hand its path to the health monitor, whose first check (which
    /// also creates an OrCreate path) its streams wait for.
    fn add(&mut self, resource: Arc<Resource>) {
        let state = ResourceState::new(resource);
        self.next_id += 1;
        let id = self.next_id;
        let mut served = Served {
            id,
            state: state.clone(),
            server: None,
            socket: None,
            reg: Reg::WaitingForKubelet,
            generation: 0,
            reg_backoff: Backoff::default(),
            serve_backoff: Backoff::default(),
            serve_retry: None,
            quick_retries: 0,
        };
        self.monitor.add(id, state);
        self.serve(&mut served);
        self.served.push(served);
    }

    /// (Re)starts a resource's server on a fresh socket. The old server is
    /// stopped first (gRPC unlinks its socket *path* when it shuts down), and
    /// its streams have ended before the new registration is sent.
    fn serve(&self, s: &mut Served) {
        s.state.new_epoch();
        if let Some(old) = s.server.take() {
            stop_servers(vec![old], Late::Cancel);
        }
        if let Some(old) = s.socket.take() {
            old.remove();
        }
        s.cancel_registration();
        s.generation += 1;
        s.reg_backoff.reset();
        s.quick_retries = 0;
        let resource = s.state.resource();
        let path = self.socket_dir().join(&resource.socket_name);
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
            Err(e) => {
                // Nothing is lost: try again, with backoff, until it works.
                let msg = e.to_string();
                let f = s.serve_backoff.failed(&msg);
                let retry = f.delay;
                if f.repeat {
                    log::debug!(
                        "{}: still cannot serve: {msg}; retrying in {retry:?}",
                        resource.resource_name
                    );
                } else {
                    log::error!(
                        "{}: cannot serve: {msg}; retrying in {retry:?}",
                        resource.resource_name
                    );
                }
                s.serve_retry = Some(Instant::now() + retry);
                return;
            }
        }
        s.serve_retry = None;
        s.serve_backoff.reset();
    }

    /// Serves again every resource whose last attempt failed and is due.
    fn retry_due_serves(&mut self) {
        let now = Instant::now();
        if !self
            .served
            .iter()
            .any(|s| s.serve_retry.is_some_and(|t| t <= now))
        {
            return;
        }
        let mut served = std::mem::take(&mut self.served);
        for s in served
            .iter_mut()
            .filter(|s| s.serve_retry.is_some_and(|t| t <= now))
        {
            self.serve(s);
        }
        self.served = served;
    }

    /// Serves every resource afresh, in config order.
    fn serve_all(&mut self) {
        let mut served = std::mem::take(&mut self.served);
        for s in &mut served {
            self.serve(s);
        }
        self.served = served;
    }

    fn event_loop(&mut self, control: &Control) -> Result<(), DaemonError> {
        loop {
            self.retry_due_serves();
            self.start_due_registrations();
            if self.reload_due.is_some_and(|t| t <= Instant::now()) {
                self.reload_due = None;
                self.reload(false);
            }
            if self.socket_dir_missing && self.socket_dir().is_dir() {
                self.socket_dir_back();
            }
            let inotify_fd = self.watcher.as_ref().map_or(-1, Watcher::fd);
            let fds = [
                (control.term.fd(), libc::POLLIN),
                (control.hup.fd(), libc::POLLIN),
                (self.wake.fd(), libc::POLLIN),
                (inotify_fd, libc::POLLIN),
            ];
            let timeout = self
                .next_due()
                .map(|t| t.saturating_duration_since(Instant::now()));
            let revents = poll_events(&fds, timeout).map_err(|source| DaemonError::Setup {
                what: "poll",
                source,
            })?;
            let ready: Vec<bool> = revents.iter().map(|r| *r != 0).collect();
            if ready[0] && control.term.drain() {
                log::info!("stop requested: shutting down");
                return Ok(());
            }
            if ready[1] && control.hup.drain() {
                log::info!("SIGHUP: reloading {}", self.opts.config.display());
                self.reload(true);
            }
            if ready[2] {
                self.wake.drain();
                for done in self.events.take() {
                    self.registered(done);
                }
            }
            if ready[3] {
                // Look for kubelet.sock *before* draining: if it exists now,
                // the event of its creation (when new) is already queued and
                // is seen in this same batch, so a kubelet restart is never
                // handled as two separate changes (two registrations).
                let kubelet_present = self.kubelet_present();
                let mut fired = Vec::new();
                while let Some(w) = self.watcher.as_mut() {
                    let more = w.read();
                    if more.is_empty() {
                        break;
                    }
                    fired.extend(more);
                }
                self.handle_fs_events(&fired, kubelet_present);
            }
        }
    }

    /// The next moment the loop must wake up without an event.
    fn next_due(&self) -> Option<Instant> {
        let regs = self.served.iter().filter_map(|s| match s.reg {
            Reg::Due(t) => Some(t),
            _ => None,
        });
        let dir_poll = self
            .socket_dir_missing
            .then(|| Instant::now() + MISSING_DIR_POLL);
        let serves = self.served.iter().filter_map(|s| s.serve_retry);
        regs.chain(serves)
            .chain(self.reload_due)
            .chain(dir_poll)
            .min()
    }

    fn start_due_registrations(&mut self) {
        let now = Instant::now();
        let kubelet_present = self.kubelet_present();
        for i in 0..self.served.len() {
            if matches!(self.served[i].reg, Reg::Due(t) if t <= now) {
                self.served[i].reg = if kubelet_present {
                    self.register(&self.served[i])
                } else {
                    Reg::WaitingForKubelet
                };
            }
        }
    }

    /// Sends Register asynchronously; the result comes back as a [`RegisterDone`].
    fn register(&self, s: &Served) -> Reg {
        let resource = s.state.resource();
        let mut req = RegisterRequest::new();
        req.version = API_VERSION.to_string();
        req.endpoint = resource.socket_name.clone();
        req.resource_name = resource.resource_name.clone();
        req.options = Some(DevicePluginOptions::new()).into();
        let channel = unix_channel(&self.env, &self.kubelet_socket());
        let client = RegistrationClient::new(channel);
        let opt = CallOption::default().timeout(REGISTER_DEADLINE);
        let (id, generation) = (s.id, s.generation);
        match client.register_async(&req, opt) {
            Ok(mut receiver) => {
                let (cancel_tx, cancel_rx) = oneshot::channel();
                let events = self.events.clone();
                let keep_channel = client.clone();
                log::debug!(
                    "{}: Register sent to {}",
                    resource.resource_name,
                    self.kubelet_socket().display()
                );
                client.spawn(async move {
                    let _keep_channel = keep_channel;
                    let result = match select(&mut receiver, cancel_rx).await {
                        Either::Left((r, _)) => r.map(|_| ()).map_err(RegisterError::from),
                        Either::Right(_) => {
                            receiver.cancel();
                            return;
                        }
                    };
                    events.push(RegisterDone {
                        id,
                        generation,
                        result,
                    });
                });
                Reg::InFlight(cancel_tx)
            }
            Err(e) => {
                self.events.push(RegisterDone {
                    id,
                    generation,
                    result: Err(RegisterError::from(e)),
                });
                Reg::WaitingForKubelet
            }
        }
    }

    fn registered(&mut self, done: RegisterDone) {
        let kubelet_present = self.kubelet_present();
        let Some(s) = self
            .served
            .iter_mut()
            .find(|s| s.id == done.id && s.generation == done.generation)
        else {
            return; // a result for a server that has since been replaced
        };
        if !matches!(s.reg, Reg::InFlight(_) | Reg::WaitingForKubelet) {
            return;
        }
        let name = s.name();
        match done.result {
            Ok(()) => {
                log::info!(
                    "{name}: registered with the kubelet (endpoint {})",
                    s.state.resource().socket_name
                );
                s.reg = Reg::Registered;
                s.reg_backoff.reset();
            }
            Err(e) => {
                let retry = match retry::after_register_failure(&e, s.quick_retries) {
                    // A kubelet.sock that was just created may not be
                    // listening yet: again shortly, before the backoff.
                    retry::Next::Quick => {
                        s.quick_retries += 1;
                        log::debug!(
                            "{name}: {KUBELET_SOCKET} not listening yet; retrying in {QUICK_RETRY:?}"
                        );
                        QUICK_RETRY
                    }
                    retry::Next::Backoff => {
                        let f = s.reg_backoff.failed(&e.to_string());
                        let retry = f.delay;
                        if f.repeat {
                            log::debug!(
                                "{name}: registration failed again: {e}; retrying in {retry:?}"
                            );
                        } else {
                            log::warn!("{name}: registration failed: {e}; retrying in {retry:?} (backoff up to {:?})", retry::MAX);
                        }
                        retry
                    }
                };
                s.reg = if kubelet_present {
                    Reg::Due(Instant::now() + retry)
                } else {
                    Reg::WaitingForKubelet
                };
            }
        }
    }

    fn handle_fs_events(&mut self, fired: &[Fired], kubelet_present: bool) {
        let socket_dir = self.socket_dir().to_path_buf();
        let kubelet_mode = self.opts.registration == Registration::KubeletSocket;
        for f in fired {
            log::debug!("inotify: {:?} {:?} in {}", f.mask, f.name, f.dir.display());
        }
        let Meaning {
            mut kubelet_created,
            mut dir_gone,
            dir_back,
            mut touched,
            config_changed,
            overflow,
        } = fs_events::interpret(fired, &socket_dir, kubelet_mode);
        if overflow {
            // Events were lost: look at what they could have said.
            log::warn!(
                "inotify queue overflowed: checking kubelet.sock, our sockets and the directory"
            );
            let now = socket::identity(&self.kubelet_socket());
            kubelet_created |= kubelet_mode && now.is_some() && now != self.kubelet_id;
            dir_gone |= !socket_dir.is_dir();
            touched.extend(
                self.served
                    .iter()
                    .map(|s| s.state.resource().socket_name.clone()),
            );
        }
        if config_changed {
            self.reload_due = Some(Instant::now() + RELOAD_SETTLE);
        }
        if dir_gone && !socket_dir.is_dir() && !self.socket_dir_missing {
            log::warn!(
                "{}: the socket directory is gone; serving again when it is back",
                socket_dir.display()
            );
            self.socket_dir_missing = true;
            self.watch_sockets();
        }
        if (dir_back || self.socket_dir_missing) && socket_dir.is_dir() {
            self.socket_dir_back();
            return;
        }
        if kubelet_created {
            self.kubelet_id = socket::identity(&self.kubelet_socket());
            log::info!("kubelet restart seen ({KUBELET_SOCKET} created): serving afresh and registering again");
            self.serve_all();
            return;
        }
        if touched.is_empty() {
            return;
        }
        // Our own socket deleted or replaced (B4). If kubelet.sock is gone
        // too, the kubelet is restarting: its new socket will re-serve all.
        if kubelet_mode && !kubelet_present {
            return;
        }
        let mut served = std::mem::take(&mut self.served);
        for s in &mut served {
            let name = s.state.resource().socket_name.clone();
            if !touched.contains(&name) {
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

    fn socket_dir_back(&mut self) {
        log::info!(
            "{}: the socket directory is back; serving again",
            self.socket_dir().display()
        );
        self.socket_dir_missing = false;
        self.watch_sockets();
        self.serve_all();
    }

    /// Reads the config again (B10). `forced` (SIGHUP) re-evaluates even an
    /// unchanged file. Invalid: log every problem, change nothing.
    fn reload(&mut self, forced: bool) {
        let path = self.opts.config.clone();
        let text = match config::read_file(&path) {
            Ok(t) => t,
            Err(e) => {
                let marker = format!("\0unreadable: {e}");
                if forced || self.config_text != marker {
                    log::warn!(
                        "{}: cannot read the config ({e}); keeping the current one",
                        path.display()
                    );
                }
                self.config_text = marker;
                return;
            }
        };
        if !forced && text == self.config_text {
            return;
        }
        self.config_text = text.clone();
        match config::parse(&text, &path.display().to_string(), self.socket_dir()) {
            Err(e) => {
                log::error!(
                    "reload refused: {} problem(s) in the new config; keeping the current one",
                    e.problems.len()
                );
                for p in &e.problems {
                    log::error!("{p}");
                }
            }
            Ok(loaded) => {
                for w in &loaded.warnings {
                    log::warn!("{w}");
                }
                self.apply(loaded.config);
            }
        }
    }

    /// Moves from the running resources to `new`: retire the removed (and
    /// renamed) ones first, then update in place, then add.
    fn apply(&mut self, new: Config) {
        let current: Vec<Arc<Resource>> = self.served.iter().map(|s| s.state.resource()).collect();
        let running: Vec<&Resource> = current.iter().map(|r| &**r).collect();
        let plan = reload::plan(&running, &new.resources);
        let updates: Vec<(u64, Arc<ResourceState>, Resource)> = plan
            .update
            .iter()
            .map(|&(i, j)| {
                let s = &self.served[i];
                (s.id, s.state.clone(), new.resources[j].clone())
            })
            .collect();
        // Retire first (highest index first, so the others keep theirs).
        for &i in plan.retire.iter().rev() {
            let s = self.served.remove(i);
            self.retire(s);
        }
        for (id, state, r) in updates {
            log::info!("{}: updated in place", r.resource_name);
            state.update_resource(Arc::new(r));
            self.monitor.poke(id);
        }
        for &j in &plan.add {
            self.add(Arc::new(new.resources[j].clone()));
        }
        log::info!(
            "reload applied: {} added, {} updated, {} retired, {} unchanged",
            plan.add.len(),
            plan.update.len(),
            plan.retire.len(),
            plan.unchanged.len()
        );
    }

    /// Retires a resource (B5, B10): an empty list on its streams, then the
    /// server stops and its socket goes.
    fn retire(&mut self, mut s: Served) {
        let name = s.name();
        s.state.retire();
        s.cancel_registration();
        if let Some(old) = s.server.take() {
            stop_servers(vec![old], Late::Cancel);
        }
        if let Some(sock) = s.socket.take() {
            sock.remove();
        }
        self.monitor.remove(s.id);
        log::info!("{name}: retired (no longer in the config)");
    }

    /// B9: end the streams, remove our sockets, stop the servers.
    fn stop(&mut self) {
        for s in &mut self.served {
            s.state.stop();
            s.cancel_registration();
        }
        // Our public names go first: no new connection can reach a server
        // that is stopping, and gRPC's own unlink concerns only the private
        // bind name, so the order is free.
        for s in &mut self.served {
            if let Some(sock) = s.socket.take() {
                sock.remove();
            }
        }
        stop_servers(
            self.served
                .iter_mut()
                .filter_map(|s| s.server.take())
                .collect(),
            Late::Abandon,
        );
    }
}

fn start_server(
    env: &Arc<Environment>,
    state: &Arc<ResourceState>,
    path: &Path,
    mode: Registration,
) -> Result<(Server, OwnedSocket), SocketError> {
    socket::prepare(path)?;
    // grpcio pre-allocates 1024 request slots per server by default (about
    // 0.4 MB each); the kubelet makes a few calls at a time per resource.
    let mut builder = ServerBuilder::new(env.clone())
        .requests_slot_per_cq(REQUEST_SLOTS)
        .register_service(create_device_plugin(DevicePluginService {
            state: state.clone(),
        }));
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
    // gRPC binds a private name and unlinks only that one (at shutdown);
    // the public name is linked to it afterwards, never replaced.
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = socket::temp_name(dir);
    if let Err(e) = server.add_listening_port(unix_target(&temp), ServerCredentials::insecure()) {
        return Err(bind_error(path, &e));
    }
    server.start();
    match socket::publish(&temp, path) {
        Ok(owned) => Ok((server, owned)),
        Err(e) => {
            stop_servers(vec![server], Late::Cancel);
            Err(e)
        }
    }
}

/// A failed bind, with its likely cause named: gRPC reports no errno (only
/// its address, a temporary name), so the directory and the open-file
/// limit are looked at here. The text is the same on every retry, so a
/// repeat is logged at debug only.
fn bind_error(path: &Path, _e: &grpcio::Error) -> SocketError {
    let dir = path.parent().unwrap_or(Path::new("."));
    let why = if let Some((open, limit)) = crate::limits::open_files().filter(|(o, l)| o + 8 >= *l)
    {
        format!(
            "{open} of the {limit} open files allowed are in use (raise LimitNOFILE / ulimit -n)"
        )
    } else if let Err(e) = writable(dir) {
        format!("the directory is not writable: {e}")
    } else {
        "gRPC could not bind a Unix socket there".to_string()
    };
    SocketError::Io {
        path: path.into(),
        action: "bind",
        source: io::Error::other(why),
    }
}

/// `access(dir, W_OK)`: whether this process may create files in `dir`.
fn writable(dir: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path; access(2) only reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What happens to a server still busy when the grace period is over.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Late {
    /// Cancel its calls, so it can be freed (a re-serve or a retire).
    Cancel,
    /// Leave it to the process exit that follows (daemon shutdown): with
    /// thousands of servers, cancelling one by one takes longer than the
    /// exit, and the kubelet sees the same end of its connections.
    Abandon,
}

/// Stops servers whose streams were told to end: all are shut down at
/// once, given one shared grace period to finish, then `late` applies.
fn stop_servers(servers: Vec<Server>, late: Late) {
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    let pending: Vec<_> = servers
        .into_iter()
        .map(|mut server| {
            let f = server.shutdown();
            (server, f)
        })
        .collect();
    let mut abandoned = 0;
    for (mut server, f) in pending {
        if block_on_timeout(f, deadline.saturating_duration_since(Instant::now())).is_none() {
            match late {
                Late::Cancel => server.cancel_all_calls(),
                Late::Abandon => {
                    abandoned += 1;
                    std::mem::forget(server);
                }
            }
        }
    }
    if abandoned > 0 {
        log::debug!("{abandoned} server(s) still finishing calls are left to the exit");
    }
}
