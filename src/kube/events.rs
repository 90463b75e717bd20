//! Kubernetes Events on this daemon's Node (issue 23, item 4): a resource
//! turned Unhealthy or Healthy, devices appeared or vanished, a reload was
//! refused. `kubectl describe node` then says what happened.
//!
//! [`Recorder::record`] never blocks: it hands the note to the `events`
//! thread through a bounded queue (full: the note is dropped and counted).
//! That thread writes Events with the client's deadline per request. The
//! same reason and message within [`AGGREGATE_FOR`] update one Event's
//! `count` and `lastTimestamp` instead of making another, as the kubelet
//! does; at most [`BURST`] writes at once, then one per [`REFILL`]: what
//! comes faster is counted into its Event at the next write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::Client;

/// Notes waiting for the thread at most.
pub const QUEUE: usize = 64;
/// One Event per reason and message for this long.
pub const AGGREGATE_FOR: Duration = Duration::from_secs(600);
/// Writes allowed at once, and the pace after.
pub const BURST: u32 = 10;
pub const REFILL: Duration = Duration::from_secs(6);
/// The longest message an Event carries (the API's limit is 1 KiB).
const MAX_MESSAGE: usize = 1024;
/// Where Events of cluster-scoped objects (a Node) go.
const NAMESPACE: &str = "default";
const COMPONENT: &str = "k8s-hostpath-device-plugin";

/// One thing to tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    /// CamelCase, e.g. `DevicesVanished`.
    pub reason: String,
    pub message: String,
}

/// The running recorder; dropping it lets the thread end after its
/// current request.
pub struct Recorder {
    tx: SyncSender<Note>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    /// Starts the `events` thread writing Events on node `node`.
    ///
    /// # Errors
    ///
    /// When the thread cannot start.
    pub fn start(client: Client, node: String) -> std::io::Result<Recorder> {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || Writer::new(client, node).run(&rx))?;
        Ok(Recorder {
            tx,
            dropped: Arc::default(),
        })
    }

    /// Queues a note; never blocks.
    pub fn record(&self, note: Note) {
        match self.tx.try_send(note) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Notes dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One reason and message: its Event once written, and the repeats not
/// yet written (no write token was left).
struct Entry {
    warning: bool,
    /// The Event as the server last returned it; `None` until created.
    written: Option<(String, Value)>,
    count: u64,
    pending: u64,
    first: Instant,
}

/// Reasons and messages remembered at most (past it, a new one is
/// dropped until older ones are written and expire).
const MAX_ENTRIES: usize = 256;

struct Writer {
    client: Client,
    node: String,
    /// The Node's UID, once read (an Event without it is still shown).
    uid: Option<String>,
    tokens: u32,
    refilled: Instant,
    entries: HashMap<(String, String), Entry>,
    seq: u64,
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Writer {
    fn new(client: Client, node: String) -> Writer {
        Writer {
            client,
            node,
            uid: None,
            tokens: BURST,
            refilled: Instant::now(),
            entries: HashMap::new(),
            seq: 0,
        }
    }

    fn run(mut self, rx: &Receiver<Note>) {
        loop {
            // While notes wait for a token, wake to write them.
            let waiting = self.entries.values().any(|e| e.pending > 0);
            let note = if waiting {
                match rx.recv_timeout(REFILL) {
                    Ok(n) => Some(n),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match rx.recv() {
                    Ok(n) => Some(n),
                    Err(_) => return,
                }
            };
            self.refill();
            if let Some(n) = note {
                self.note(n);
            }
            self.flush();
        }
    }

    fn refill(&mut self) {
        let gained = (self.refilled.elapsed().as_secs_f64() / REFILL.as_secs_f64()) as u32;
        if gained > 0 {
            self.tokens = (self.tokens + gained).min(BURST);
            self.refilled = Instant::now();
        }
    }

    fn note(&mut self, n: Note) {
        let message: String = n.message.chars().take(MAX_MESSAGE).collect();
        self.entries
            .retain(|_, e| e.first.elapsed() < AGGREGATE_FOR || e.pending > 0);
        let room = self.entries.len() < MAX_ENTRIES;
        match self.entries.entry((n.reason, message)) {
            std::collections::hash_map::Entry::Occupied(mut o) => o.get_mut().pending += 1,
            std::collections::hash_map::Entry::Vacant(v) if room => {
                v.insert(Entry {
                    warning: n.warning,
                    written: None,
                    count: 0,
                    pending: 1,
                    first: Instant::now(),
                });
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                log::debug!("event dropped (too many kinds waiting): {}", v.key().0);
            }
        }
    }

    /// Writes what waits, oldest first, one token a write: a new Event,
    /// or the count of one already written.
    fn flush(&mut self) {
        // News first (kinds not yet written), then counts; oldest first.
        let mut keys: Vec<((String, String), (bool, Instant))> = self
            .entries
            .iter()
            .filter(|(_, e)| e.pending > 0)
            .map(|(k, e)| (k.clone(), (e.written.is_some(), e.first)))
            .collect();
        keys.sort_by_key(|(_, order)| *order);
        for (key, _) in keys {
            if self.tokens == 0 {
                return;
            }
            self.tokens -= 1;
            let written = self.entries.get(&key).and_then(|e| e.written.clone());
            let result = match written {
                None => self.create(&key),
                Some((name, body)) => self.update(&key, &name, body),
            };
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            match result {
                Ok(created) => {
                    e.count += e.pending;
                    e.pending = 0;
                    e.written = Some(created);
                }
                Err(err) => {
                    // Not written: the repeats are told next time, as a
                    // new Event if this one is gone.
                    log::debug!("event not written: {err}");
                    e.written = None;
                }
            }
        }
    }

    fn create(&mut self, key: &(String, String)) -> Result<(String, Value), super::KubeError> {
        if self.uid.is_none() {
            let path = format!("/api/v1/nodes/{}", self.node);
            if let Ok(v) = self.client.get(&path, "the node, for its events") {
                self.uid = v["metadata"]["uid"].as_str().map(str::to_string);
            }
        }
        let (warning, count) = self
            .entries
            .get(key)
            .map_or((false, 1), |e| (e.warning, e.count + e.pending));
        self.seq += 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{}.{:x}{:x}", self.node, nanos, self.seq);
        let now = now_rfc3339();
        let mut involved = json!({"apiVersion": "v1", "kind": "Node", "name": self.node});
        if let Some(uid) = &self.uid {
            involved["uid"] = json!(uid);
        }
        let body = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "involvedObject": involved,
            "reason": key.0,
            "message": key.1,
            "type": if warning { "Warning" } else { "Normal" },
            "source": {"component": COMPONENT, "host": self.node},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": count,
        });
        let path = format!("/api/v1/namespaces/{NAMESPACE}/events");
        let created = self
            .client
            .request("POST", &path, Some(&body), "an event")?;
        Ok((name, created))
    }

    fn update(
        &mut self,
        key: &(String, String),
        name: &str,
        mut body: Value,
    ) -> Result<(String, Value), super::KubeError> {
        let count = self.entries.get(key).map_or(1, |e| e.count + e.pending);
        body["count"] = json!(count);
        body["lastTimestamp"] = json!(now_rfc3339());
        let path = format!("/api/v1/namespaces/{NAMESPACE}/events/{name}");
        let updated = self
            .client
            .request("PUT", &path, Some(&body), "an event's count")?;
        Ok((name.to_string(), updated))
    }
}

/// The note a log record stands for, if it is one of the events a Node
/// shows: a resource's health, devices coming and going, a reload refused.
pub fn note_of(event: &str, message: &str) -> Option<Note> {
    let (warning, reason) = match event {
        "unhealthy" => (true, "ResourceUnhealthy"),
        "healthy" => (false, "ResourceHealthy"),
        "devices_appeared" => (false, "DevicesAppeared"),
        "devices_back" => (false, "DevicesBack"),
        "devices_vanished" => (true, "DevicesVanished"),
        "devices_removed" => (false, "DevicesRemoved"),
        "reload_refused" => (true, "ConfigReloadRefused"),
        _ => return None,
    };
    Some(Note {
        warning,
        reason: reason.to_string(),
        message: message.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_678_890), "2026-12-07T21:28:10Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn which_log_events_are_node_events() {
        let n = note_of("unhealthy", "a/b: /x is missing").unwrap();
        assert!(n.warning);
        assert_eq!(n.reason, "ResourceUnhealthy");
        assert!(note_of("registered", "x").is_none());
        assert!(!note_of("healthy", "x").unwrap().warning);
    }
}
