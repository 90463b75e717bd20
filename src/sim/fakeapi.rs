//! A fake API server on a real socket (plain HTTP): just enough of
//! `resource.k8s.io/v1` ResourceSlices and ResourceClaims and core Nodes
//! for the DRA front, with an in-memory store, resourceVersions, delete
//! preconditions, a request log with arrival times, and a switch that makes
//! it refuse everything. For the tests and `make bench`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::{json, Value};

#[derive(Default)]
pub struct Store {
    pub slices: BTreeMap<String, Value>,
    pub nodes: BTreeMap<String, String>,
    /// ResourceClaims by `namespace/name`.
    pub claims: BTreeMap<String, Value>,
    /// Events (namespace `default`) by name.
    pub events: BTreeMap<String, Value>,
    pub version: u64,
    /// `METHOD path` of every request, in order.
    pub log: Vec<String>,
    /// When each request of `log` arrived (its head read).
    pub arrived: Vec<std::time::Instant>,
}

pub struct FakeApi {
    pub port: u16,
    pub store: Arc<Mutex<Store>>,
    /// While set, every request gets a 503.
    pub down: Arc<AtomicBool>,
}

impl FakeApi {
    pub fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let store = Arc::new(Mutex::new(Store::default()));
        let down = Arc::new(AtomicBool::new(false));
        let (s, d) = (store.clone(), down.clone());
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, d) = (s.clone(), d.clone());
                thread::spawn(move || handle(conn, &s, &d));
            }
        });
        FakeApi { port, store, down }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The Events written, in name order.
    pub fn events(&self) -> Vec<Value> {
        self.store
            .lock()
            .unwrap()
            .events
            .values()
            .cloned()
            .collect()
    }

    /// Writes of the DRA front (slices): every request but reads and the
    /// Node's Events, which have their own tests.
    pub fn writes(&self) -> usize {
        let s = self.store.lock().unwrap();
        s.log
            .iter()
            .filter(|l| !l.starts_with("GET") && !l.contains("/events"))
            .count()
    }

    /// A kubeconfig file for this server, with a bearer token.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let p = dir.join("kubeconfig");
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{}\"}}\n\
                 users:\n- name: u\n  user: {{token: secret-token}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\n\
                 current-context: x\n",
                self.url()
            ),
        )
        .unwrap();
        p
    }

    /// Adds an allocated claim whose results are `(request, pool, device)`
    /// of `driver`.
    pub fn add_claim(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        driver: &str,
        results: &[(&str, &str, &str)],
    ) {
        let results: Vec<Value> = results
            .iter()
            .map(|(r, p, d)| json!({"request": r, "driver": driver, "pool": p, "device": d}))
            .collect();
        let claim = json!({
            "kind": "ResourceClaim",
            "metadata": {"namespace": ns, "name": name, "uid": uid},
            "status": {"allocation": {"devices": {"results": results}}}
        });
        self.store
            .lock()
            .unwrap()
            .claims
            .insert(format!("{ns}/{name}"), claim);
    }

    /// The device names of `pool`, sorted.
    pub fn devices(&self, pool: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .pool(pool)
            .iter()
            .flat_map(|s| s["spec"]["devices"].as_array().cloned().unwrap_or_default())
            .filter_map(|d| d["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    pub fn pool(&self, pool: &str) -> Vec<Value> {
        let s = self.store.lock().unwrap();
        s.slices
            .values()
            .filter(|v| v["spec"]["pool"]["name"] == pool)
            .cloned()
            .collect()
    }
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "reason": reason, "message": message}),
    )
}

fn route(s: &mut Store, method: &str, target: &str, body: Option<Value>) -> (u16, Value) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    const EVENTS: &str = "/api/v1/namespaces/default/events";
    if path == EVENTS && method == "POST" {
        let mut v = body.unwrap_or_default();
        let Some(name) = v["metadata"]["name"].as_str().map(str::to_string) else {
            return status(422, "Invalid", "no name");
        };
        if s.events.contains_key(&name) {
            return status(409, "AlreadyExists", "exists");
        }
        s.version += 1;
        v["metadata"]["resourceVersion"] = json!(s.version.to_string());
        s.events.insert(name, v.clone());
        return (201, v);
    }
    if let Some(name) = path.strip_prefix(&format!("{EVENTS}/")) {
        if method != "PUT" {
            return status(405, "MethodNotAllowed", method);
        }
        if !s.events.contains_key(name) {
            return status(404, "NotFound", "no such event");
        }
        let mut v = body.unwrap_or_default();
        s.version += 1;
        v["metadata"]["resourceVersion"] = json!(s.version.to_string());
        s.events.insert(name.to_string(), v.clone());
        return (200, v);
    }
    const SLICES: &str = "/apis/resource.k8s.io/v1/resourceslices";
    if let Some(node) = path.strip_prefix("/api/v1/nodes/") {
        return match s.nodes.get(node) {
            Some(uid) => (
                200,
                json!({"kind": "Node", "metadata": {"name": node, "uid": uid}}),
            ),
            None => status(404, "NotFound", "no such node"),
        };
    }
    if let Some(rest) = path.strip_prefix("/apis/resource.k8s.io/v1/namespaces/") {
        if let Some((ns, name)) = rest.split_once("/resourceclaims/") {
            return match s.claims.get(&format!("{ns}/{name}")) {
                Some(c) if method == "GET" => (200, c.clone()),
                Some(_) => status(405, "MethodNotAllowed", method),
                None => status(404, "NotFound", "no such claim"),
            };
        }
    }
    if path == SLICES && method == "GET" {
        let q = query.replace("%3D", "=").replace("%2C", ",");
        let want: Vec<(&str, &str)> = q
            .strip_prefix("fieldSelector=")
            .unwrap_or("")
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let items: Vec<Value> = s
            .slices
            .values()
            .filter(|v| {
                want.iter().all(|(k, val)| match *k {
                    "spec.nodeName" => v["spec"]["nodeName"] == *val,
                    "spec.driver" => v["spec"]["driver"] == *val,
                    _ => false,
                })
            })
            .cloned()
            .collect();
        return (200, json!({"kind": "ResourceSliceList", "items": items}));
    }
    if path == SLICES && method == "POST" {
        let mut v = body.unwrap_or_default();
        let Some(name) = v["metadata"]["name"].as_str().map(str::to_string) else {
            return status(422, "Invalid", "no name");
        };
        if s.slices.contains_key(&name) {
            return status(409, "AlreadyExists", "exists");
        }
        s.version += 1;
        v["metadata"]["resourceVersion"] = json!(s.version.to_string());
        v["metadata"]["uid"] = json!(format!("uid-{}", s.version));
        v["spec"]["perDeviceNodeSelection"] = json!(false); // a server default
        s.slices.insert(name, v.clone());
        return (201, v);
    }
    if let Some(name) = path.strip_prefix(&format!("{SLICES}/")) {
        let Some(old) = s.slices.get(name).cloned() else {
            return status(404, "NotFound", "no such slice");
        };
        return match method {
            "GET" => (200, old),
            "PUT" => {
                let mut v = body.unwrap_or_default();
                if v["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
                    return status(409, "Conflict", "the object has been modified");
                }
                s.version += 1;
                v["metadata"]["resourceVersion"] = json!(s.version.to_string());
                v["metadata"]["uid"] = old["metadata"]["uid"].clone();
                s.slices.insert(name.to_string(), v.clone());
                (200, v)
            }
            "DELETE" => {
                let pre = body
                    .as_ref()
                    .and_then(|b| b["preconditions"]["uid"].as_str());
                if pre.is_some_and(|u| old["metadata"]["uid"] != u) {
                    return status(409, "Conflict", "precondition failed");
                }
                s.slices.remove(name);
                (200, json!({"kind": "Status", "status": "Success"}))
            }
            _ => status(405, "MethodNotAllowed", method),
        };
    }
    status(404, "NotFound", target)
}

/// Reads one HTTP/1.1 request: its head (request line and headers, as
/// sent) and its body (by Content-Length). `None` when nothing came.
pub fn read_request(conn: &TcpStream) -> Option<(String, Vec<u8>)> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut head = String::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
    }
    if head.is_empty() {
        return None;
    }
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    Some((head, body))
}

fn handle(conn: TcpStream, store: &Mutex<Store>, down: &AtomicBool) {
    let Some((head, body)) = read_request(&conn) else {
        return;
    };
    let arrived = std::time::Instant::now();
    let first = head.lines().next().unwrap_or("");
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (code, answer) = if down.load(Ordering::SeqCst) {
        status(503, "ServiceUnavailable", "down for the test")
    } else {
        let mut s = store.lock().unwrap();
        s.log.push(format!("{method} {target}"));
        s.arrived.push(arrived);
        route(&mut s, method, target, serde_json::from_slice(&body).ok())
    };
    let text = answer.to_string();
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}
