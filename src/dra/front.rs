//! The DRA front as the daemon runs it (B18): one driver per node, one pool
//! per DRA resource, two sockets (the registration socket in the plugins
//! registry, the DRA service socket under the plugins directory), a
//! publisher thread and two preparation workers.
//!
//! The sockets follow B16 as the device-plugin ones do: gRPC binds private
//! names (mode 0600 under the daemon's umask) that are then linked into
//! place, never replacing a file; only the inodes we linked are removed.
//! A socket removed or replaced by someone else is served afresh at the
//! next tick; the kubelet's plugin watcher then registers us again.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use grpcio::{Environment, Server, ServerBuilder, ServerCredentials};

use super::cdi::CdiDir;
use super::names::pool_name;
use super::prepare::{self, ClaimRef, Pool};
use super::publisher::{Poker, Publisher};
use super::service::{self, Service};
use super::shared::{Job, Shared};
use crate::control::Board;
use crate::core::state::ResourceState;
use crate::deviceplugin::server::{bind_error, stop_all, Late};
use crate::kube::Client;
use crate::retry::Backoff;
use crate::socket::{self, OwnedSocket, SocketError};
use crate::util::{lock, unix_target};

/// Preparation workers: the kubelet calls one at a time per claim, and an
/// API server that hangs one worker leaves the other.
const WORKERS: usize = 2;
/// Calls waiting for a worker before new ones are refused (RESOURCE_EXHAUSTED).
const QUEUE: usize = 32;
/// A call's claims are worked on for at most this long; the rest get an
/// error the kubelet retries (it gives each call 45 s).
pub const CALL_BUDGET: Duration = Duration::from_secs(30);
/// How long an instance keeps serving after withdrawing its registration
/// at shutdown: the kubelet's plugin watcher reconciles once a second.
const DEREGISTER_GRACE: Duration = Duration::from_millis(1500);
/// How long a last instance's stop waits for its slices to be deleted.
const WITHDRAW_GRACE: Duration = Duration::from_secs(3);
/// How often the sockets are looked at (a `stat` each).
const SOCKET_CHECK: Duration = Duration::from_secs(2);

/// Where the front lives on the node.
#[derive(Clone, Debug)]
pub struct Settings {
    pub driver: String,
    pub node: String,
    /// The kubelet's plugins registry (registration socket).
    pub registry_dir: PathBuf,
    /// The kubelet's plugins directory (`<dir>/<driver>/dra.sock`).
    pub plugins_dir: PathBuf,
    pub cdi_dir: PathBuf,
    /// This instance (the pod's UID, `$POD_UID`): its sockets carry it, so
    /// a rolling update's new pod registers beside the old one.
    pub instance: Option<String>,
}

/// The registration socket of `driver` in the plugins registry
/// `registry`: `<driver>-reg.sock`, or `<driver>-<instance>-reg.sock`.
pub fn registration_socket(registry: &Path, driver: &str, instance: Option<&str>) -> PathBuf {
    match instance {
        Some(i) => registry.join(format!("{driver}-{i}-reg.sock")),
        None => registry.join(format!("{driver}-reg.sock")),
    }
}

/// The DRA service socket: `<plugins>/<driver>/dra.sock`, or
/// `dra-<instance>.sock` there.
pub fn service_socket(plugins: &Path, driver: &str, instance: Option<&str>) -> PathBuf {
    let dir = plugins.join(driver);
    match instance {
        Some(i) => dir.join(format!("dra-{i}.sock")),
        None => dir.join("dra.sock"),
    }
}

/// Whether `s` can name an instance in a socket name: a pod UID, which
/// is a UUID (`8-4-4-4-12` lower-case hex digits), so that no other
/// driver's socket name can be taken for one of ours.
pub fn is_instance(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

impl Settings {
    pub fn registration_socket(&self) -> PathBuf {
        registration_socket(&self.registry_dir, &self.driver, self.instance.as_deref())
    }

    pub fn service_socket(&self) -> PathBuf {
        service_socket(&self.plugins_dir, &self.driver, self.instance.as_deref())
    }
}

/// Removes the dead sockets that earlier instances of this driver left
/// (a pod killed before it could remove its own): the names only this
/// driver uses, and only when nobody listens ([`socket::prepare`]'s rule).
/// A live one is another instance during a rolling update: left alone.
fn sweep_earlier_instances(settings: &Settings) {
    let driver = settings.driver.as_str();
    let registry = |i: Option<&str>| registration_socket(&settings.registry_dir, driver, i);
    let service = |i: Option<&str>| service_socket(&settings.plugins_dir, driver, i);
    let ours = [settings.registration_socket(), settings.service_socket()];
    for make in [&registry as &dyn Fn(Option<&str>) -> PathBuf, &service] {
        let Some(dir) = make(None).parent().map(Path::to_path_buf) else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let named = e.file_name().to_str().is_some_and(|n| named_by(n, make));
            if !named || ours.contains(&path) {
                continue;
            }
            if socket::prepare(&path).is_ok() && socket::identity(&path).is_none() {
                log::info!(
                    "DRA: removed {}, left dead by an earlier instance",
                    path.display()
                );
            }
        }
    }
}

/// Whether `name` is a file name `make` gives: without an instance, or
/// with one ([`is_instance`]). The names are defined once, by `make`.
fn named_by(name: &str, make: &dyn Fn(Option<&str>) -> PathBuf) -> bool {
    const MARK: &str = "\u{0}";
    let file = |p: PathBuf| {
        p.file_name()
            .and_then(|f| f.to_str())
            .map(str::to_string)
            .unwrap_or_default()
    };
    if name == file(make(None)) {
        return true;
    }
    let template = file(make(Some(MARK)));
    template.split_once(MARK).is_some_and(|(head, tail)| {
        name.strip_prefix(head)
            .and_then(|r| r.strip_suffix(tail))
            .is_some_and(is_instance)
    })
}

/// The DRA front, owned by the supervisor.
pub(crate) struct Front {
    settings: Settings,
    shared: Arc<Shared>,
    server: Option<Server>,
    sockets: Vec<OwnedSocket>,
    workers: Vec<JoinHandle<()>>,
    /// None for a front that only unprepares.
    publisher: Option<Publisher>,
    serve_backoff: Backoff,
    next_check: Instant,
}

impl Front {
    /// Starts the workers and the publisher, and serves the sockets (a
    /// failure there is retried by [`Front::tick`]).
    ///
    /// # Errors
    ///
    /// When a thread cannot be started.
    pub(crate) fn start(
        env: &Arc<Environment>,
        settings: Settings,
        client: Client,
        board: Arc<Board>,
    ) -> io::Result<Front> {
        Front::start_with(env, settings, Some(client), board)
    }

    /// A front for the claims an earlier DRA daemon prepared on this node,
    /// now that the node's daemon serves the device-plugin API: it
    /// registers the driver so that the kubelet can unprepare them (it
    /// will not let their pods end before), publishes nothing, reads no
    /// claim, and refuses new ones.
    ///
    /// # Errors
    ///
    /// When a thread cannot be started.
    pub(crate) fn start_leftover(
        env: &Arc<Environment>,
        settings: Settings,
        board: Arc<Board>,
    ) -> io::Result<Front> {
        Front::start_with(env, settings, None, board)
    }

    fn start_with(
        env: &Arc<Environment>,
        settings: Settings,
        client: Option<Client>,
        board: Arc<Board>,
    ) -> io::Result<Front> {
        let client = client.map(Arc::new);
        let pools: Arc<Mutex<Vec<Pool>>> = Arc::default();
        let publisher = match &client {
            Some(c) => Some(Publisher::start(
                c.clone(),
                settings.driver.clone(),
                settings.node.clone(),
                pools.clone(),
            )?),
            None => None,
        };
        let (tx, rx) = sync_channel(QUEUE);
        let shared = Arc::new(Shared {
            driver: settings.driver.clone(),
            endpoint: settings.service_socket(),
            cdi: CdiDir::new(&settings.cdi_dir, &settings.driver),
            pools,
            health: Mutex::default(),
            stopping: Default::default(),
            jobs: Mutex::new(Some(tx)),
            poker: publisher
                .as_ref()
                .map_or_else(Poker::detached, |p| p.poker.clone()),
            board,
            ids: Mutex::default(),
        });
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for i in 0..WORKERS {
            let (rx, shared, client) = (rx.clone(), shared.clone(), client.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("dra-prepare-{i}"))
                    .spawn(move || work(&rx, &shared, client.as_deref()))?,
            );
        }
        log::info!(
            "DRA: driver {}{} on node {}: registration socket {}, service socket {}, CDI specs in {}",
            settings.driver,
            if client.is_some() { "" } else { " (unprepare only)" },
            settings.node,
            settings.registration_socket().display(),
            settings.service_socket().display(),
            settings.cdi_dir.display()
        );
        let mut front = Front {
            settings,
            shared,
            server: None,
            sockets: Vec::new(),
            workers,
            publisher,
            serve_backoff: Backoff::default(),
            next_check: Instant::now(),
        };
        front.serve(env);
        Ok(front)
    }

    /// Whether this front only unprepares ([`Front::start_leftover`]).
    pub(crate) fn is_leftover(&self) -> bool {
        self.publisher.is_none()
    }

    /// The claims prepared on this node (their CDI specs).
    pub(crate) fn prepared(&self) -> usize {
        self.shared.cdi.prepared().len()
    }

    /// Serves a resource as a pool of this node.
    pub(crate) fn add(&self, id: u64, state: &Arc<ResourceState>) {
        let name = state.resource().resource_name.clone();
        let pool = pool_name(&self.settings.node, &name);
        state.notify(self.shared.poker.waker());
        for w in lock(&self.shared.health).iter() {
            state.notify(w.clone());
        }
        lock(&self.shared.pools).push(Pool {
            name: pool,
            state: state.clone(),
        });
        lock(&self.shared.ids).push((id, name.clone()));
        self.shared.board.update(id, |st| {
            st.name = name;
            st.socket = Some(self.settings.registration_socket());
            st.serves += 1;
        });
        // A state already checked sends no change the publisher would hear.
        self.shared.poker.pools_changed();
        self.shared.wake_health();
    }

    /// Stops serving a pool; the publisher deletes its slices.
    pub(crate) fn retire(&self, id: u64, state: &Arc<ResourceState>) {
        lock(&self.shared.pools).retain(|p| !Arc::ptr_eq(&p.state, state));
        lock(&self.shared.ids).retain(|(i, _)| *i != id);
        state.retire();
        self.shared.board.remove(id);
        self.shared.poker.pools_changed();
        self.shared.wake_health();
    }

    fn serve(&mut self, env: &Arc<Environment>) {
        if let Some(server) = self.server.take() {
            for s in self.sockets.drain(..) {
                s.remove();
            }
            stop_all(vec![server], Late::Cancel);
        }
        match start_server(env, &self.settings, &self.shared) {
            Ok((server, sockets)) => {
                self.server = Some(server);
                self.sockets = sockets;
                self.serve_backoff.reset();
                let reg = self.settings.registration_socket();
                for (id, _) in lock(&self.shared.ids).iter() {
                    self.shared.board.update(*id, |st| {
                        st.socket = Some(reg.clone());
                        st.serves += 1;
                    });
                }
                self.next_check = Instant::now() + SOCKET_CHECK;
            }
            Err(e) => {
                let f = self.serve_backoff.failed(&e.to_string());
                if f.repeat {
                    log::debug!("DRA: cannot serve the driver's sockets: {e}");
                } else {
                    log::error!("DRA: cannot serve the driver's sockets: {e}; retrying");
                }
                self.next_check = Instant::now() + f.delay;
            }
        }
    }

    /// Serves again when a socket of ours was removed or replaced, or when
    /// serving failed earlier.
    pub(crate) fn tick(&mut self, now: Instant, env: &Arc<Environment>) {
        if now < self.next_check {
            return;
        }
        let intact = self.server.is_some() && self.sockets.iter().all(OwnedSocket::intact);
        if intact {
            self.next_check = now + SOCKET_CHECK;
            return;
        }
        if self.server.is_some() {
            log::warn!("DRA: a socket of the driver was removed or replaced: serving afresh");
        }
        self.serve(env);
    }

    pub(crate) fn next_due(&self) -> Instant {
        self.next_check
    }

    /// Shutdown: sockets first, streams ended, threads told to stop.
    /// Slices stay while another instance of the driver serves the node
    /// (a rolling update): the kubelet keeps them. Without one, they are
    /// deleted: a node moved off DRA, or the driver uninstalled, must not
    /// go on advertising devices (the kubelet would keep them as long as
    /// an unprepare-only front there is registered). A restarted daemon
    /// publishes them again at once. Pods keep their prepared devices.
    pub(crate) fn stop(&mut self) -> Option<Server> {
        // Decided while our registration is still there: an unprepare-only
        // front waits for it to go before it registers, so it is never
        // taken for a successor.
        let last = self.publisher.is_some() && !other_instance_live(&self.settings);
        if self.settings.instance.is_some() && self.server.is_some() && self.publisher.is_some() {
            // A rolling update's old pod: the kubelet keeps sending calls
            // here until its plugin watcher has seen the registration
            // socket go (it reconciles once a second); until then the
            // service socket stays and answers, so no preparation fails.
            let reg = self.settings.registration_socket();
            if let Some(i) = self.sockets.iter().position(|s| s.path() == reg) {
                self.sockets.remove(i).remove();
                log::info!(
                    "DRA: registration withdrawn; serving {} ms more for calls already routed here",
                    DEREGISTER_GRACE.as_millis()
                );
                std::thread::sleep(DEREGISTER_GRACE);
            }
        }
        for s in self.sockets.drain(..) {
            s.remove();
        }
        self.shared
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.wake_health();
        lock(&self.shared.jobs).take();
        if let Some(p) = &mut self.publisher {
            if last {
                p.withdraw(WITHDRAW_GRACE);
            } else {
                p.stop(Duration::from_millis(300));
            }
        }
        for w in self.workers.drain(..) {
            if w.is_finished() {
                let _ = w.join();
            }
        }
        self.server.take()
    }
}

/// Whether another instance of this driver is registered on the node now:
/// a registration socket of the driver's, not ours, with a listener.
pub(crate) fn other_instance_live(settings: &Settings) -> bool {
    let make = |i: Option<&str>| registration_socket(&settings.registry_dir, &settings.driver, i);
    let ours = settings.registration_socket();
    let Ok(entries) = std::fs::read_dir(&settings.registry_dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        use std::os::unix::fs::FileTypeExt;
        let path = e.path();
        path != ours
            && e.file_name().to_str().is_some_and(|n| named_by(n, &make))
            && e.file_type().is_ok_and(|t| t.is_socket())
            && socket::listening(&path).unwrap_or(false)
    })
}

/// A worker: takes jobs until the queue closes.
fn work(rx: &Mutex<Receiver<Job>>, shared: &Shared, client: Option<&Client>) {
    loop {
        let job = match lock(rx).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        let started = Instant::now();
        let over = |c: &ClaimRef| {
            (started.elapsed() > CALL_BUDGET).then(|| {
                format!(
                    "claim {}/{} not attempted: the call took over {}s (the API server is slow); \
                     the kubelet will ask again",
                    c.namespace,
                    c.name,
                    CALL_BUDGET.as_secs()
                )
            })
        };
        match job {
            Job::Prepare(claims, reply) => {
                let pools: Vec<Pool> = lock(&shared.pools).clone();
                let out = claims
                    .iter()
                    .map(|c| {
                        let r = match (over(c), client) {
                            (Some(e), _) => Err(e),
                            (None, None) => Err(format!(
                                "this node's daemon serves {} through the device-plugin API now: \
                                 it unprepares the claims prepared here through DRA, and prepares \
                                 no new one",
                                shared.driver
                            )),
                            (None, Some(client)) => {
                                prepare::prepare(client, &shared.driver, &pools, &shared.cdi, c)
                            }
                        };
                        service::log_prepared(c, &r);
                        shared.board.claim_done(true, r.is_ok());
                        (c.uid.clone(), r)
                    })
                    .collect();
                let _ = reply.send(out);
            }
            Job::Unprepare(claims, reply) => {
                let out = claims
                    .iter()
                    .map(|c| {
                        let r = prepare::unprepare(&shared.cdi, &c.uid);
                        match &r {
                            Ok(true) => log::info!(
                                "DRA: claim {}/{} ({}) unprepared: CDI spec removed",
                                c.namespace,
                                c.name,
                                c.uid
                            ),
                            Ok(false) => log::debug!(
                                "DRA: claim {}/{} ({}) unprepared: it had no CDI spec",
                                c.namespace,
                                c.name,
                                c.uid
                            ),
                            Err(e) => log::warn!("DRA: cannot unprepare a claim: {e}"),
                        }
                        shared.board.claim_done(false, r.is_ok());
                        (c.uid.clone(), r.map(|_| ()))
                    })
                    .collect();
                let _ = reply.send(out);
            }
        }
    }
}

/// Makes the directory of the service socket: created when missing, and
/// refused when it is a symlink or not a directory.
fn socket_dir(path: &Path) -> Result<(), SocketError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let err = |action, source| SocketError::Io {
        path: dir.to_path_buf(),
        action,
        source,
    };
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(err(
            "use as the socket directory",
            io::Error::other("not a directory (a symlink is not followed)"),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|e| err("create", e))
        }
        Err(e) => Err(err("inspect", e)),
    }
}

fn start_server(
    env: &Arc<Environment>,
    settings: &Settings,
    shared: &Arc<Shared>,
) -> Result<(Server, Vec<OwnedSocket>), SocketError> {
    let reg = settings.registration_socket();
    let dra = settings.service_socket();
    socket_dir(&dra)?;
    socket_dir(&reg)?;
    socket::prepare(&dra)?;
    socket::prepare(&reg)?;
    if settings.instance.is_some() {
        sweep_earlier_instances(settings);
    }
    let service = Service {
        shared: shared.clone(),
    };
    let builder = service::register_all(
        ServerBuilder::new(env.clone()).requests_slot_per_cq(16),
        &service,
    );
    let io_err = |action: &'static str, e: grpcio::Error| SocketError::Io {
        path: dra.clone(),
        action,
        source: io::Error::other(e.to_string()),
    };
    let mut server = builder
        .build()
        .map_err(|e| io_err("build the gRPC server", e))?;
    let mut temps = Vec::new();
    for path in [&dra, &reg] {
        let temp = socket::temp_name(path.parent().unwrap_or(Path::new(".")));
        if let Err(e) = server.add_listening_port(unix_target(&temp), ServerCredentials::insecure())
        {
            return Err(bind_error(path, &e));
        }
        temps.push((temp, path));
    }
    server.start();
    // The service socket first: the kubelet dials it as soon as it has
    // read the registration.
    let mut sockets = Vec::new();
    for (temp, path) in temps {
        match socket::publish(&temp, path) {
            Ok(s) => sockets.push(s),
            Err(e) => {
                for s in sockets {
                    s.remove();
                }
                stop_all(vec![server], Late::Cancel);
                return Err(e);
            }
        }
    }
    Ok((server, sockets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_a_pod_uid_and_names_both_sockets() {
        let uid = "0a1b2c3d-0000-4000-8000-00000000000f";
        assert!(is_instance(uid));
        for bad in [
            "",
            "x",
            "0A1B2C3D-0000-4000-8000-000000000001",
            "0a1b2c3d-0000-4000-8000-00000000000g",
            "0a1b2c3d00000-4000-8000-000000000001",
            "../../../../etc/x-0000-4000-8000-0000",
            "0a1b2c3d-0000-4000-8000-0000000000011",
        ] {
            assert!(!is_instance(bad), "{bad}");
        }
        let (r, p) = (Path::new("/r"), Path::new("/p"));
        assert_eq!(
            registration_socket(r, "d.io", Some(uid)),
            Path::new("/r/d.io-0a1b2c3d-0000-4000-8000-00000000000f-reg.sock")
        );
        assert_eq!(
            registration_socket(r, "d.io", None),
            Path::new("/r/d.io-reg.sock")
        );
        assert_eq!(
            service_socket(p, "d.io", Some(uid)),
            Path::new("/p/d.io/dra-0a1b2c3d-0000-4000-8000-00000000000f.sock")
        );
        assert_eq!(
            service_socket(p, "d.io", None),
            Path::new("/p/d.io/dra.sock")
        );
        let reg = |i: Option<&str>| registration_socket(r, "d.io", i);
        assert!(named_by("d.io-reg.sock", &reg));
        assert!(named_by(&format!("d.io-{uid}-reg.sock"), &reg));
        assert!(!named_by("d.io-x-reg.sock", &reg), "not a pod UID");
        assert!(
            !named_by(&format!("e.io-{uid}-reg.sock"), &reg),
            "another driver"
        );
        let svc = |i: Option<&str>| service_socket(p, "d.io", i);
        assert!(named_by(&format!("dra-{uid}.sock"), &svc));
        assert!(named_by("dra.sock", &svc));
        assert!(!named_by(&format!("dra-{uid}.sock.tmp"), &svc));
    }
}
