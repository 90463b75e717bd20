//! The daemon's handles to the outside: the stop and reload requests it
//! obeys, and the state it reports, which in-process tests wait on instead
//! of reading log text.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::core::state::ResourceState;
use crate::util::{lock, wait_on, Notifier, WakeFd};

/// What the daemon reports about one resource.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceStatus {
    pub name: String,
    /// The public socket it serves on, while it serves.
    pub socket: Option<PathBuf>,
    /// Whether the kubelet accepted its registration (or, in plugin-watcher
    /// mode, whether it serves: the kubelet finds it by itself).
    pub registered: bool,
    /// How many times it has been served (1 after start; every kubelet
    /// restart or lost socket adds one).
    pub serves: u64,
    /// How many registrations the kubelet accepted.
    pub registrations: u64,
}

/// What the daemon reports as a whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// The running resources, in the order they were added.
    pub resources: Vec<ResourceStatus>,
    /// Config reloads applied and refused.
    pub reloads: u64,
    pub refused_reloads: u64,
    /// Set once the daemon has stopped everything it served.
    pub stopped: bool,
    /// Kubelet restarts the daemon has seen (a new `kubelet.sock`).
    pub kubelet_restarts: u64,
    /// DRA claims prepared and unprepared, and those refused.
    pub claims: ClaimCounts,
    /// Where the metrics and health endpoint listens (`--listen`), once
    /// bound: a port of 0 is resolved here.
    pub listen: Option<std::net::SocketAddr>,
}

/// DRA claims the daemon has answered, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClaimCounts {
    pub prepared: u64,
    pub prepare_failed: u64,
    pub unprepared: u64,
    pub unprepare_failed: u64,
}

impl Status {
    pub fn resource(&self, name: &str) -> Option<&ResourceStatus> {
        self.resources.iter().find(|r| r.name == name)
    }
}

#[derive(Default)]
struct BoardState {
    resources: BTreeMap<u64, ResourceStatus>,
    /// The state of each resource the daemon runs, for the metrics.
    states: BTreeMap<u64, Arc<ResourceState>>,
    reloads: u64,
    refused_reloads: u64,
    stopped: bool,
    kubelet_restarts: u64,
    claims: ClaimCounts,
    listen: Option<std::net::SocketAddr>,
}

/// The daemon's state as its owners last wrote it; one short lock per change.
#[derive(Default)]
pub(crate) struct Board {
    state: Mutex<BoardState>,
    changed: Condvar,
}

impl Board {
    pub(crate) fn update(&self, id: u64, f: impl FnOnce(&mut ResourceStatus)) {
        f(lock(&self.state).resources.entry(id).or_default());
        self.changed.notify_all();
    }

    pub(crate) fn remove(&self, id: u64) {
        let mut s = lock(&self.state);
        s.resources.remove(&id);
        s.states.remove(&id);
        drop(s);
        self.changed.notify_all();
    }

    /// Keeps a resource's state where the metrics find it, until
    /// [`Board::remove`].
    pub(crate) fn track(&self, id: u64, state: Arc<ResourceState>) {
        lock(&self.state).states.insert(id, state);
    }

    /// The states of the resources running now, in the order they were
    /// added.
    pub(crate) fn states(&self) -> Vec<Arc<ResourceState>> {
        lock(&self.state).states.values().cloned().collect()
    }

    pub(crate) fn kubelet_restarted(&self) {
        lock(&self.state).kubelet_restarts += 1;
        self.changed.notify_all();
    }

    /// One DRA claim answered: prepared (or unprepared), or refused.
    pub(crate) fn claim_done(&self, prepare: bool, ok: bool) {
        let mut s = lock(&self.state);
        let c = &mut s.claims;
        *match (prepare, ok) {
            (true, true) => &mut c.prepared,
            (true, false) => &mut c.prepare_failed,
            (false, true) => &mut c.unprepared,
            (false, false) => &mut c.unprepare_failed,
        } += 1;
        drop(s);
        self.changed.notify_all();
    }

    pub(crate) fn set_listen(&self, addr: std::net::SocketAddr) {
        lock(&self.state).listen = Some(addr);
        self.changed.notify_all();
    }

    /// What the daemon reports now.
    pub(crate) fn status(&self) -> Status {
        Self::snapshot(&lock(&self.state))
    }

    pub(crate) fn reload_done(&self, applied: bool) {
        let mut s = lock(&self.state);
        if applied {
            s.reloads += 1;
        } else {
            s.refused_reloads += 1;
        }
        drop(s);
        self.changed.notify_all();
    }

    pub(crate) fn set_stopped(&self) {
        lock(&self.state).stopped = true;
        self.changed.notify_all();
    }

    fn snapshot(state: &BoardState) -> Status {
        Status {
            resources: state.resources.values().cloned().collect(),
            reloads: state.reloads,
            refused_reloads: state.refused_reloads,
            stopped: state.stopped,
            kubelet_restarts: state.kubelet_restarts,
            claims: state.claims,
            listen: state.listen,
        }
    }
}

/// What has been asked of the daemon since it last looked.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    stop: AtomicBool,
    reload: AtomicBool,
}

impl Requests {
    /// Whether a stop was asked (it stays asked).
    pub(crate) fn stop(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Whether a reload was asked since the last call.
    pub(crate) fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::SeqCst)
    }
}

/// Asks the daemon for a stop or a reload: the flag, then a wake-up.
/// Async-signal-safe (an atomic store and one `write(2)`; nothing
/// allocated or locked), so the signal handlers use it too.
#[derive(Clone, Debug)]
struct Asker {
    requests: Arc<Requests>,
    wake: Notifier,
}

impl Asker {
    fn stop(&self) {
        self.requests.stop.store(true, Ordering::SeqCst);
        self.wake.notify();
    }

    fn reload(&self) {
        self.requests.reload.store(true, Ordering::SeqCst);
        self.wake.notify();
    }
}

/// The daemon's inputs: termination and reload requests, from signals or
/// from a [`Handle`], each a flag plus a wake-up of the daemon's one wake
/// counter (which its registration results share); and the board it
/// reports on.
pub struct Control {
    pub(crate) wake: WakeFd,
    pub(crate) requests: Arc<Requests>,
    pub(crate) board: Arc<Board>,
}

impl Control {
    /// # Errors
    ///
    /// When the wake counter cannot be created.
    pub fn new() -> io::Result<Control> {
        Ok(Control {
            wake: WakeFd::new()?,
            requests: Arc::default(),
            board: Arc::default(),
        })
    }

    /// SIGTERM/SIGINT/SIGQUIT request a clean stop; a second one exits at
    /// once with status 1. SIGHUP requests a reload. Process-wide: the
    /// binary's caller installs them, in-process tests do not. No
    /// descriptor is added: the handlers set a flag and wake the daemon
    /// through its wake counter.
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
            let ask = self.asker();
            // SAFETY: the action is async-signal-safe (see `Asker`).
            unsafe { signal_hook::low_level::register(sig, move || ask.stop())? };
        }
        let ask = self.asker();
        // SAFETY: as above.
        unsafe { signal_hook::low_level::register(SIGHUP, move || ask.reload())? };
        Ok(())
    }

    /// A handle that asks the daemon to stop or reload and reads its state
    /// from another thread.
    pub fn handle(&self) -> Handle {
        Handle {
            ask: self.asker(),
            board: self.board.clone(),
        }
    }

    fn asker(&self) -> Asker {
        Asker {
            requests: self.requests.clone(),
            wake: self.wake.notifier(),
        }
    }
}

/// Asks a running daemon to stop or reload, and waits on what it reports.
#[derive(Clone)]
pub struct Handle {
    ask: Asker,
    board: Arc<Board>,
}

impl Handle {
    /// What SIGTERM does: a clean stop.
    pub fn stop(&self) {
        self.ask.stop();
    }

    /// What SIGHUP does: read the config again, even if unchanged.
    pub fn reload(&self) {
        self.ask.reload();
    }

    pub fn status(&self) -> Status {
        Board::snapshot(&lock(&self.board.state))
    }

    /// Waits until `f` returns `Some` for the daemon's state, or `timeout`
    /// passes (then `None`). Woken by every change, no polling.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&Status) -> Option<T>,
    ) -> Option<T> {
        wait_on(&self.board.state, &self.board.changed, timeout, |s| {
            f(&Board::snapshot(s))
        })
    }
}
