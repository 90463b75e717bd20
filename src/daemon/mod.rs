//! The daemon: serve every resource, register it, keep it registered through
//! kubelet restarts and reloads, stop cleanly (B1–B5, B9, B10, B12–B14).
//!
//! Threads:
//! - the caller's thread is the *supervisor*: one `poll(2)` loop over the
//!   control's wake counter (stop and reload requests, registration
//!   results) and the inotify descriptor (socket directory, config directory). It
//!   dispatches: an event names a resource, that resource's [`Owner`] acts.
//!   Owners hold their server, socket and registration, so their lifecycle
//!   has one place and no locks. It never inspects a host path.
//! - the health monitor's threads ([`crate::core::monitor`]): every host-path
//!   check and watch, pushed into the resources' state (a stuck `stat` on
//!   NFS delays neither shutdown, registration nor the other resources).
//! - grpcio's completion-queue threads run the RPC handlers and the
//!   registration calls (asynchronously: a hanging kubelet blocks nothing).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::{EnvBuilder, Environment};

pub mod dra;
pub mod fs_events;
pub mod handover;
pub mod release;
pub mod reload;
pub mod watch;

use crate::cli::{Options, Registration};
pub use crate::control::{Control, Handle, ResourceStatus, Status};
use crate::core::config::{self, Config, Loaded};
use crate::core::monitor::Monitor;
use crate::core::resource::{Api, Resource};
use crate::core::state::ResourceState;
use crate::deviceplugin::owner::{Context, Owner, Results};
use crate::deviceplugin::server::{self, Late};
use crate::kubelet::KUBELET_SOCKET;
use crate::observe;
use crate::socket::{self, FileId};
use crate::util::poll_events;
use dra::{DraOptions, DraSide};
use fs_events::Meaning;
use handover::{Handover, Lister};
use watch::{Fired, Key, Watcher};

/// Config-directory events come in bursts (write, rename, symlink swap):
/// wait this long after the last one before reading the file.
const RELOAD_SETTLE: Duration = Duration::from_millis(20);
/// While the socket directory is missing, look for it this often (inotify
/// on its parent usually sees it first).
const MISSING_DIR_POLL: Duration = Duration::from_secs(1);

/// What the daemon needs to know about where it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The kubelet's device-plugin directory (where `kubelet.sock` is).
    pub device_plugin_dir: PathBuf,
    /// Where our sockets go: the device-plugin directory, or the plugins
    /// registry in plugin-watcher mode.
    pub socket_dir: PathBuf,
    /// Host paths are resolved inside this root.
    pub host_root: PathBuf,
    pub registration: Registration,
    /// The config file, watched for reloads.
    pub config: PathBuf,
    /// The most host-path inotify watches the daemon holds.
    pub max_watches: usize,
    /// `--api`: every resource through this API, whatever the config says.
    pub api: Option<Api>,
    pub dra: DraOptions,
    /// The kubelet's pod-resources socket (B19).
    pub pod_resources_socket: PathBuf,
    /// Where the metrics and health endpoint listens, in the order to try
    /// (B17); empty: off. See [`crate::observe::resolve`].
    pub listen: Vec<std::net::SocketAddr>,
    /// Command-line settings over the config's (`--domain`), at every
    /// reload too.
    pub overrides: config::Overrides,
    /// The config came from generic-device-plugin's `--device` flags:
    /// there is no file to watch or reload.
    pub config_from_flags: bool,
}

impl Settings {
    pub fn from_options(opts: &Options) -> Settings {
        Settings {
            device_plugin_dir: opts.device_plugin_dir.clone(),
            socket_dir: opts.socket_dir().to_path_buf(),
            host_root: opts.host_root.clone(),
            registration: opts.registration,
            config: opts.config.clone(),
            max_watches: opts
                .max_watches
                .unwrap_or_else(crate::core::monitor::default_watch_budget),
            api: opts.api,
            dra: DraOptions::from_options(opts),
            pod_resources_socket: opts.pod_resources_socket.clone(),
            listen: Vec::new(),
            overrides: config::Overrides::default(),
            config_from_flags: false,
        }
    }

    fn kubelet_socket(&self) -> PathBuf {
        self.device_plugin_dir.join(KUBELET_SOCKET)
    }
}

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

struct Supervisor {
    settings: Settings,
    kubelet_socket: PathBuf,
    env: Arc<Environment>,
    owners: Vec<Owner>,
    /// The resources served through DRA, and their front.
    dra: DraSide,
    /// What running pods hold through the API a resource is not served
    /// through here.
    handover: Handover,
    next_id: u64,
    results: Arc<Results>,
    watcher: Option<Watcher>,
    monitor: Monitor,
    control: Control,
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

/// Runs the daemon until `control` asks it to stop (a [`Handle`], or the
/// signals [`Control::install_signal_handlers`] routes to it), then stops
/// everything it started. `loaded` is the config read from
/// `settings.config` at start. Process-wide set-up is the caller's: the
/// umask (0177 makes gRPC's sockets 0600 from the first instant), logging,
/// the open-file limit, signal handlers.
///
/// # Errors
///
/// [`DaemonError`] when the daemon cannot start at all; problems with a
/// single resource are logged and the others keep serving.
pub fn run(settings: Settings, mut loaded: Loaded, control: Control) -> Result<(), DaemonError> {
    loaded.config.override_api(settings.api);
    ensure_dir(&settings.socket_dir)?;
    if settings.registration == Registration::PluginWatcher {
        log::info!(
            "registration mode: plugin watcher, sockets in {}",
            settings.socket_dir.display()
        );
    }
    let setup = |what| move |source| DaemonError::Setup { what, source };
    let results = Arc::new(Results::new(control.wake.notifier()));
    let watcher = match Watcher::new() {
        Ok(w) => Some(w),
        Err(e) => {
            log::warn!("inotify unavailable ({e}): kubelet restarts, reloads and path changes are seen only by polling");
            None
        }
    };
    let env = Arc::new(EnvBuilder::new().cq_count(1).name_prefix("grpc").build());
    let monitor = Monitor::start(&settings.host_root, settings.max_watches)
        .map_err(setup("the health monitor"))?;
    let http = observe::Server::start_if(&settings.listen, &control.board)
        .map_err(setup("the metrics endpoint (--listen)"))?;
    let handover = Handover::new(Lister::new(
        &env,
        &settings.pod_resources_socket,
        &settings.dra.driver,
        settings.dra.node.as_deref(),
        &settings.dra.cdi_dir,
    ));
    handover.start();

    let mut sup = Supervisor {
        kubelet_socket: settings.kubelet_socket(),
        settings,
        env,
        owners: Vec::new(),
        dra: DraSide::default(),
        handover,
        next_id: 0,
        results,
        watcher,
        monitor,
        control,
        kubelet_id: None,
        config_text: loaded.text,
        reload_due: None,
        socket_dir_missing: false,
    };
    sup.kubelet_id = socket::identity(&sup.kubelet_socket);
    sup.watch_sockets();
    sup.watch_config();
    // A resource that cannot be served is retried with backoff; the daemon
    // never exits for it (its probe says what is not serving).
    for r in loaded.config.resources {
        sup.add(Arc::new(r));
    }
    let result = sup.event_loop();
    sup.stop();
    if let Some(server) = http {
        server.stop();
    }
    log::info!("shutdown complete");
    // All the kubelet can see is done. Tearing down gRPC's runtime (joining
    // its threads) takes 10–20 ms: it runs on a thread of its own, which an
    // exiting process simply ends, and which finishes the job in-process.
    let teardown = std::thread::Builder::new()
        .name("teardown".into())
        .spawn(move || drop(sup));
    if let Err(e) = teardown {
        log::debug!("no teardown thread ({e}): gRPC's runtime was torn down inline");
    }
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
        })
}

impl Supervisor {
    /// Splits the supervisor into the context owners serve with and the
    /// owners themselves.
    fn parts(&mut self) -> (Context<'_>, &mut Vec<Owner>) {
        let cx = Context {
            env: &self.env,
            socket_dir: &self.settings.socket_dir,
            kubelet_socket: &self.kubelet_socket,
            mode: self.settings.registration,
            results: &self.results,
            board: &self.control.board,
        };
        (cx, &mut self.owners)
    }

    fn kubelet_mode(&self) -> bool {
        self.settings.registration == Registration::KubeletSocket
    }

    /// Watches the socket directory and its parent (to see it re-created).
    fn watch_sockets(&mut self) {
        let dir = self.settings.socket_dir.clone();
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
        if self.settings.config_from_flags {
            return;
        }
        let dir = match self.settings.config.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
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
        self.next_id += 1;
        if resource.api == Api::Dra {
            let state = ResourceState::new(resource);
            self.control.board.track(self.next_id, state.clone());
            self.handover.add(self.next_id, Api::Dra, &state);
            self.monitor.add(self.next_id, state.clone());
            self.dra.add(
                self.next_id,
                state,
                &self.settings.dra,
                &self.env,
                &self.control.board,
            );
            return;
        }
        let mut owner = Owner::new(self.next_id, resource);
        self.control.board.track(owner.id(), owner.state().clone());
        self.handover
            .add(owner.id(), Api::DevicePlugin, owner.state());
        self.monitor.add(owner.id(), owner.state().clone());
        let (cx, owners) = self.parts();
        owner.serve(&cx);
        owners.push(owner);
    }

    /// Serves every resource afresh, in config order.
    fn serve_all(&mut self) {
        let (cx, owners) = self.parts();
        for o in owners.iter_mut() {
            o.serve(&cx);
        }
    }

    fn event_loop(&mut self) -> Result<(), DaemonError> {
        loop {
            let now = Instant::now();
            let (cx, owners) = self.parts();
            for o in owners.iter_mut() {
                o.tick(now, &cx);
            }
            self.dra
                .tick(now, &self.env, &self.settings.dra, &self.control.board);
            if self.reload_due.is_some_and(|t| t <= now) {
                self.reload_due = None;
                self.reload(false);
            }
            if self.socket_dir_missing && self.settings.socket_dir.is_dir() {
                self.socket_dir_back();
            }
            let fds = [
                (self.control.wake.fd(), libc::POLLIN),
                (self.watcher.as_ref().map_or(-1, Watcher::fd), libc::POLLIN),
            ];
            let timeout = self
                .next_due()
                .map(|t| t.saturating_duration_since(Instant::now()));
            let revents = poll_events(&fds, timeout).map_err(|source| DaemonError::Setup {
                what: "poll",
                source,
            })?;
            if revents[0] != 0 {
                // Reset first, then read the flags: a request made after
                // the reset wakes the next poll.
                self.control.wake.drain();
                if self.control.requests.stop() {
                    log::info!("stop requested: shutting down");
                    return Ok(());
                }
                if self.control.requests.take_reload() {
                    log::info!("SIGHUP: reloading {}", self.settings.config.display());
                    self.reload(true);
                }
                let (cx, owners) = self.parts();
                for done in cx.results.take() {
                    if let Some(o) = owners.iter_mut().find(|o| o.id() == done.id) {
                        o.registered(done, &cx);
                    }
                }
            }
            if revents[1] != 0 {
                self.read_fs_events();
            }
        }
    }

    /// The next moment the loop must wake up without an event.
    fn next_due(&self) -> Option<Instant> {
        let dir_poll = self
            .socket_dir_missing
            .then(|| Instant::now() + MISSING_DIR_POLL);
        self.owners
            .iter()
            .filter_map(Owner::next_due)
            .chain(self.dra.next_due())
            .chain(self.reload_due)
            .chain(dir_poll)
            .min()
    }

    fn read_fs_events(&mut self) {
        // Look for kubelet.sock *before* draining: if it exists now, the
        // event of its creation (when new) is already queued and is seen in
        // this same batch, so a kubelet restart is never handled as two
        // separate changes (two registrations).
        let kubelet_present = self.kubelet_socket.exists();
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

    fn handle_fs_events(&mut self, fired: &[Fired], kubelet_present: bool) {
        let socket_dir = self.settings.socket_dir.clone();
        let kubelet_mode = self.kubelet_mode();
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
            let now = socket::identity(&self.kubelet_socket);
            kubelet_created |= kubelet_mode && now.is_some() && now != self.kubelet_id;
            dir_gone |= !socket_dir.is_dir();
            touched.extend(self.owners.iter().map(|o| o.resource().socket_name.clone()));
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
            log::info!(event = "kubelet_restart"; "kubelet restart seen ({KUBELET_SOCKET} created): serving afresh and registering again");
            // The first kubelet seen (started after us) is no restart.
            if self.kubelet_id.is_some() {
                self.control.board.kubelet_restarted();
            }
            self.kubelet_id = socket::identity(&self.kubelet_socket);
            self.serve_all();
            return;
        }
        // Our own socket deleted or replaced (B4). If kubelet.sock is gone
        // too, the kubelet is restarting: its new socket will re-serve all.
        if touched.is_empty() || (kubelet_mode && !kubelet_present) {
            return;
        }
        let (cx, owners) = self.parts();
        for o in owners
            .iter_mut()
            .filter(|o| touched.contains(&o.resource().socket_name))
        {
            o.socket_touched(&cx);
        }
    }

    fn socket_dir_back(&mut self) {
        log::info!(
            "{}: the socket directory is back; serving again",
            self.settings.socket_dir.display()
        );
        self.socket_dir_missing = false;
        self.watch_sockets();
        self.serve_all();
    }

    /// Reads the config again (B10). `forced` (SIGHUP) re-evaluates even an
    /// unchanged file. Invalid: log every problem, change nothing.
    fn reload(&mut self, forced: bool) {
        if self.settings.config_from_flags {
            log::info!("the devices come from --device flags: there is no config file to reload");
            return;
        }
        let path = self.settings.config.clone();
        let text = match config::read_file(&path) {
            Ok(t) => t,
            Err(e) => {
                let marker = format!("\0unreadable: {e}");
                if forced || self.config_text != marker {
                    let shown = path.display().to_string();
                    log::warn!(
                        event = "reload_refused", path = shown.as_str();
                        "{shown}: cannot read the config ({e}); keeping the current one"
                    );
                    self.control.board.reload_done(false);
                }
                self.config_text = marker;
                return;
            }
        };
        if !forced && text == self.config_text {
            return;
        }
        self.config_text = text.clone();
        match config::parse_with(
            &text,
            &path.display().to_string(),
            &self.settings.socket_dir,
            &self.settings.overrides,
        ) {
            Err(e) => {
                let shown = path.display().to_string();
                log::error!(
                    event = "reload_refused", path = shown.as_str();
                    "reload refused: {} problem(s) in the new config; keeping the current one",
                    e.problems.len()
                );
                for p in &e.problems {
                    log::error!("{p}");
                }
                self.control.board.reload_done(false);
            }
            Ok(mut loaded) => {
                for w in &loaded.warnings {
                    log::warn!("{w}");
                }
                loaded.config.override_api(self.settings.api);
                if loaded.config.uses_dra() && self.dra.front.is_none() {
                    if let Err(e) = self.settings.dra.resolve() {
                        log::error!("reload refused: {e}; keeping the current config");
                        self.control.board.reload_done(false);
                        return;
                    }
                }
                self.apply(loaded.config);
                log::info!(
                    event = "reload_applied";
                    "config reloaded: {} resource(s)",
                    self.owners.len() + self.dra.states.len()
                );
                self.control.board.reload_done(true);
            }
        }
    }

    /// Moves from the running resources to `new`: retire the removed (and
    /// renamed) ones first, then update in place, then add.
    fn apply(&mut self, new: Config) {
        // The running resources: the device plugin's, then DRA's.
        let mut running: Vec<(u64, Arc<Resource>)> =
            self.owners.iter().map(|o| (o.id(), o.resource())).collect();
        running.extend(self.dra.states.iter().map(|(id, s)| (*id, s.resource())));
        let refs: Vec<&Resource> = running.iter().map(|(_, r)| &**r).collect();
        let plan = reload::plan(&refs, &new.resources);
        for &i in plan.retire.iter().rev() {
            let id = running[i].0;
            self.monitor.remove(id);
            self.handover.remove(id);
            if let Some(pos) = self.owners.iter().position(|o| o.id() == id) {
                self.owners.remove(pos).retire(&self.control.board);
            } else {
                self.dra.retire(id);
                self.control.board.remove(id);
            }
        }
        for &(i, j) in &plan.update {
            let (id, r) = (running[i].0, new.resources[j].clone());
            if let Some(o) = self.owners.iter().find(|o| o.id() == id) {
                o.update(r, &self.control.board);
            } else if let Some((_, s)) = self.dra.states.iter().find(|(i, _)| *i == id) {
                s.update_resource(Arc::new(r));
            }
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

    /// B9: end the streams, remove our sockets, stop the servers, stop the
    /// health monitor. Bounded even with a hung filesystem or a stuck call.
    fn stop(&mut self) {
        // Health checks end first (not waited for: the monitor is joined
        // when dropped): a change seen now would reach no kubelet, and
        // the checks' CPU is better spent on the exit.
        self.monitor.stop();
        self.handover.stop();
        // Our public names go first: no new connection can reach a server
        // that is stopping, and gRPC's own unlink concerns only the private
        // bind name, so the order is free.
        for o in &mut self.owners {
            o.stop(&self.control.board);
        }
        let mut servers: Vec<_> = self
            .owners
            .iter_mut()
            .filter_map(Owner::take_server)
            .collect();
        servers.extend(self.dra.stop());
        server::stop_all(servers, Late::Abandon);
        // Every inotify watch goes last, just before the exit, which then
        // closes both instances without two grace periods (release.rs).
        let watcher_fd = self.watcher.as_ref().map_or(-1, Watcher::fd);
        release::forget_watches(&[self.monitor.inotify_fd(), watcher_fd]);
        self.control.board.set_stopped();
    }
}
