//! One resource's owner: its state, its server and socket, its registration
//! in flight and its retry timers. The supervisor only dispatches: an event
//! names an owner, the owner acts.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{select, Either};
use grpcio::{CallOption, Environment, Server};

use crate::api::v1beta1::RegisterRequest;
use crate::api::v1beta1_grpc::RegistrationClient;
use crate::cli::Registration;
use crate::control::Board;
use crate::core::resource::Resource;
use crate::core::state::ResourceState;
use crate::deviceplugin::server::{self, Late};
use crate::kubelet::{API_VERSION, KUBELET_SOCKET};
use crate::retry::{self, Backoff, RegisterError, QUICK_RETRY};
use crate::socket::OwnedSocket;
use crate::util::{lock, unix_channel, Notifier};

/// How long one Register call may take before it is abandoned and retried.
const REGISTER_DEADLINE: Duration = Duration::from_secs(5);

/// A registration result, reported by grpcio's thread to the supervisor.
pub(crate) struct RegisterDone {
    pub id: u64,
    pub generation: u64,
    pub result: Result<(), RegisterError>,
}

/// Registration results, filled by grpcio's threads, drained by the supervisor.
pub(crate) struct Results {
    queue: Mutex<VecDeque<RegisterDone>>,
    notifier: Notifier,
}

impl Results {
    pub(crate) fn new(notifier: Notifier) -> Results {
        Results {
            queue: Mutex::new(VecDeque::new()),
            notifier,
        }
    }

    fn push(&self, e: RegisterDone) {
        lock(&self.queue).push_back(e);
        self.notifier.notify();
    }

    pub(crate) fn take(&self) -> VecDeque<RegisterDone> {
        std::mem::take(&mut *lock(&self.queue))
    }
}

/// What serving needs from the daemon, lent to an owner for one call.
pub(crate) struct Context<'a> {
    pub env: &'a Arc<Environment>,
    pub socket_dir: &'a Path,
    pub kubelet_socket: &'a Path,
    pub mode: Registration,
    pub results: &'a Arc<Results>,
    pub board: &'a Board,
}

impl Context<'_> {
    fn kubelet_present(&self) -> bool {
        self.kubelet_socket.exists()
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

pub(crate) struct Owner {
    /// Unique for the daemon's life; keys its health entry and its results.
    id: u64,
    state: Arc<ResourceState>,
    server: Option<Server>,
    socket: Option<OwnedSocket>,
    reg: Reg,
    /// Bumped on every (re)serve, so a late result of an older
    /// registration is recognised and ignored.
    generation: u64,
    reg_backoff: Backoff,
    /// Serve retries (a read-only or missing directory, a foreign file in
    /// the way) and when the next is due.
    serve_backoff: Backoff,
    serve_retry: Option<Instant>,
    /// Quick retries used on a refused connection since the last serve.
    quick_retries: u32,
}

impl Owner {
    pub(crate) fn new(id: u64, resource: Arc<Resource>) -> Owner {
        Owner {
            id,
            state: ResourceState::new(resource),
            server: None,
            socket: None,
            reg: Reg::WaitingForKubelet,
            generation: 0,
            reg_backoff: Backoff::default(),
            serve_backoff: Backoff::default(),
            serve_retry: None,
            quick_retries: 0,
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn state(&self) -> &Arc<ResourceState> {
        &self.state
    }

    pub(crate) fn resource(&self) -> Arc<Resource> {
        self.state.resource()
    }

    /// (Re)starts the server on a fresh socket. The old server is stopped
    /// first and its streams have ended before the new registration is sent.
    pub(crate) fn serve(&mut self, cx: &Context<'_>) {
        self.state.new_epoch();
        if let Some(old) = self.server.take() {
            server::stop_all(vec![old], Late::Cancel);
        }
        if let Some(old) = self.socket.take() {
            old.remove();
        }
        self.cancel_registration();
        self.generation += 1;
        self.reg_backoff.reset();
        self.quick_retries = 0;
        let resource = self.state.resource();
        let name = &resource.resource_name;
        let path = cx.socket_dir.join(&resource.socket_name);
        match server::start(cx.env, &self.state, &path, cx.mode) {
            Ok((srv, owned)) => {
                log::info!("{name}: serving on {}", path.display());
                self.server = Some(srv);
                self.socket = Some(owned);
                self.reg = match cx.mode {
                    Registration::PluginWatcher => Reg::NotNeeded,
                    Registration::KubeletSocket if cx.kubelet_present() => Reg::Due(Instant::now()),
                    Registration::KubeletSocket => {
                        log::info!(
                            "{name}: waiting for {} to register",
                            cx.kubelet_socket.display()
                        );
                        Reg::WaitingForKubelet
                    }
                };
                self.serve_retry = None;
                self.serve_backoff.reset();
            }
            Err(e) => {
                // Nothing is lost: try again, with backoff, until it works.
                let msg = e.to_string();
                let f = self.serve_backoff.failed(&msg);
                if f.repeat {
                    log::debug!(
                        "{name}: still cannot serve: {msg}; retrying in {:?}",
                        f.delay
                    );
                } else {
                    log::error!("{name}: cannot serve: {msg}; retrying in {:?}", f.delay);
                }
                self.serve_retry = Some(Instant::now() + f.delay);
            }
        }
        let served = u64::from(self.server.is_some());
        self.report(cx.board, |st| st.serves += served);
    }

    /// Takes a changed resource in place: same socket, same streams.
    pub(crate) fn update(&self, resource: Resource, board: &Board) {
        log::info!("{}: updated in place", resource.resource_name);
        self.state.update_resource(Arc::new(resource));
        self.report(board, |_| {});
    }

    /// Retires the resource (B5, B10): an empty list on its streams, then
    /// the server stops and its socket goes.
    pub(crate) fn retire(mut self, board: &Board) {
        self.state.retire();
        self.cancel_registration();
        if let Some(old) = self.server.take() {
            server::stop_all(vec![old], Late::Cancel);
        }
        if let Some(sock) = self.socket.take() {
            sock.remove();
        }
        board.remove(self.id);
        log::info!(
            "{}: retired (no longer in the config)",
            self.state.resource().resource_name
        );
    }

    /// First step of the daemon's stop (B9): end the streams, abandon the
    /// registration, remove the public socket. The server is taken
    /// afterwards with [`Owner::take_server`], so all stop together.
    pub(crate) fn stop(&mut self, board: &Board) {
        self.state.stop();
        self.cancel_registration();
        if let Some(sock) = self.socket.take() {
            sock.remove();
        }
        self.report(board, |_| {});
    }

    pub(crate) fn take_server(&mut self) -> Option<Server> {
        self.server.take()
    }

    /// The next instant this owner needs attention without an event.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let reg = match self.reg {
            Reg::Due(t) => Some(t),
            _ => None,
        };
        match (reg, self.serve_retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Does what is due at `now`: a serve retry, a registration.
    pub(crate) fn tick(&mut self, now: Instant, cx: &Context<'_>) {
        if self.serve_retry.is_some_and(|t| t <= now) {
            self.serve(cx);
        }
        if matches!(self.reg, Reg::Due(t) if t <= now) {
            self.reg = if cx.kubelet_present() {
                self.register(cx)
            } else {
                Reg::WaitingForKubelet
            };
        }
    }

    /// Our socket was deleted or replaced (B4): serve again, unless the
    /// file is still ours.
    pub(crate) fn socket_touched(&mut self, cx: &Context<'_>) {
        let Some(sock) = &self.socket else { return };
        if sock.intact() {
            return;
        }
        log::warn!(
            "{}: our socket {} was removed; serving again",
            self.state.resource().resource_name,
            sock.path().display()
        );
        self.serve(cx);
    }

    /// Sends Register asynchronously; the result comes back as a [`RegisterDone`].
    fn register(&self, cx: &Context<'_>) -> Reg {
        let resource = self.state.resource();
        let mut req = RegisterRequest::new();
        req.version = API_VERSION.to_string();
        req.endpoint = resource.socket_name.clone();
        req.resource_name = resource.resource_name.clone();
        req.options = Some(super::alloc::options(self.state.handing_over())).into();
        let client = RegistrationClient::new(unix_channel(cx.env, cx.kubelet_socket));
        let opt = CallOption::default().timeout(REGISTER_DEADLINE);
        let (id, generation) = (self.id, self.generation);
        match client.register_async(&req, opt) {
            Ok(mut receiver) => {
                let (cancel_tx, cancel_rx) = oneshot::channel();
                let results = cx.results.clone();
                let keep_channel = client.clone();
                log::debug!(
                    "{}: Register sent to {}",
                    resource.resource_name,
                    cx.kubelet_socket.display()
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
                    results.push(RegisterDone {
                        id,
                        generation,
                        result,
                    });
                });
                Reg::InFlight(cancel_tx)
            }
            Err(e) => {
                cx.results.push(RegisterDone {
                    id,
                    generation,
                    result: Err(RegisterError::from(e)),
                });
                Reg::WaitingForKubelet
            }
        }
    }

    /// Takes a registration result: registered, or retry when due.
    pub(crate) fn registered(&mut self, done: RegisterDone, cx: &Context<'_>) {
        if done.generation != self.generation
            || !matches!(self.reg, Reg::InFlight(_) | Reg::WaitingForKubelet)
        {
            return; // a result for a server that has since been replaced
        }
        let name = self.state.resource().resource_name.clone();
        let e = match done.result {
            Ok(()) => {
                log::info!(
                    resource = name.as_str(), event = "registered";
                    "{name}: registered with the kubelet (endpoint {})",
                    self.state.resource().socket_name
                );
                self.reg = Reg::Registered;
                self.reg_backoff.reset();
                self.report(cx.board, |st| st.registrations += 1);
                return;
            }
            Err(e) => e,
        };
        let retry = match retry::after_register_failure(&e, self.quick_retries) {
            // A kubelet.sock that was just created may not be listening
            // yet: again shortly, before the backoff.
            retry::Next::Quick => {
                self.quick_retries += 1;
                log::debug!(
                    "{name}: {KUBELET_SOCKET} not listening yet; retrying in {QUICK_RETRY:?}"
                );
                QUICK_RETRY
            }
            retry::Next::Backoff => {
                let f = self.reg_backoff.failed(&e.to_string());
                if f.repeat {
                    log::debug!(
                        "{name}: registration failed again: {e}; retrying in {:?}",
                        f.delay
                    );
                } else {
                    log::warn!(
                        resource = name.as_str(), event = "registration_failed";
                        "{name}: registration failed: {e}; retrying in {:?} (backoff up to {:?})",
                        f.delay,
                        retry::MAX
                    );
                }
                f.delay
            }
        };
        self.reg = if cx.kubelet_present() {
            Reg::Due(Instant::now() + retry)
        } else {
            Reg::WaitingForKubelet
        };
        self.report(cx.board, |_| {});
    }

    /// Abandons a Register call that is out (its late result is ignored).
    fn cancel_registration(&mut self) {
        if let Reg::InFlight(cancel) = std::mem::replace(&mut self.reg, Reg::WaitingForKubelet) {
            let _ = cancel.send(());
        }
    }

    /// Writes this owner's state to the board, after `extra`.
    fn report(&self, board: &Board, extra: impl FnOnce(&mut crate::control::ResourceStatus)) {
        board.update(self.id, |st| {
            st.name.clone_from(&self.state.resource().resource_name);
            st.socket = self.socket.as_ref().map(|s| s.path().to_path_buf());
            st.registered = matches!(self.reg, Reg::Registered | Reg::NotNeeded);
            extra(st);
        });
    }
}
