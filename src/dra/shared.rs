//! What the DRA front's gRPC handlers, its workers and the supervisor
//! share: the pools, the health streams, the job queue, the publisher's
//! poker and the status board.

use std::path::PathBuf;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use futures::channel::{mpsc, oneshot};

use super::cdi::CdiDir;
use super::prepare::{ClaimRef, Pool, PreparedDevice};
use super::publisher::Poker;
use crate::control::Board;
use crate::util::lock;

/// Per claim UID, its devices or why not.
pub(crate) type Prepared = Vec<(String, Result<Vec<PreparedDevice>, String>)>;
/// Per claim UID, done or why not.
pub(crate) type Unprepared = Vec<(String, Result<(), String>)>;

/// A preparation job for a worker.
pub(crate) enum Job {
    Prepare(Vec<ClaimRef>, oneshot::Sender<Prepared>),
    Unprepare(Vec<ClaimRef>, oneshot::Sender<Unprepared>),
}

/// What the gRPC handlers, the workers and the daemon share.
pub(crate) struct Shared {
    pub driver: String,
    pub endpoint: PathBuf,
    pub cdi: CdiDir,
    pub pools: Arc<Mutex<Vec<Pool>>>,
    /// One waker per open NodeWatchResources stream.
    pub health: Mutex<Vec<mpsc::Sender<()>>>,
    pub stopping: std::sync::atomic::AtomicBool,
    pub jobs: Mutex<Option<SyncSender<Job>>>,
    pub poker: Poker,
    pub board: Arc<Board>,
    /// Board ids of the pools, to say they are registered.
    pub ids: Mutex<Vec<(u64, String)>>,
}

impl Shared {
    /// Queues a job; `false` when the queue is full or closed.
    pub(crate) fn submit(&self, job: Job) -> bool {
        match lock(&self.jobs).as_ref().map(|tx| tx.try_send(job)) {
            Some(Ok(())) => true,
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => false,
        }
    }

    /// Wakes every health stream (a pool came or went, or shutdown).
    pub(crate) fn wake_health(&self) {
        lock(&self.health).retain_mut(|w| match w.try_send(()) {
            Ok(()) => true,
            Err(e) => e.is_full(),
        });
    }

    /// The kubelet accepted (or refused) the driver.
    pub(crate) fn registered(&self, ok: bool) {
        for (id, name) in lock(&self.ids).iter() {
            self.board.update(*id, |st| {
                st.name.clone_from(name);
                st.registered = ok;
                if ok {
                    st.registrations += 1;
                }
            });
        }
        if ok {
            self.poker.registered();
        }
    }
}
