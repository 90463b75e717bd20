//! The metrics and health endpoint (`--listen`, DESIGN.md B17): a small
//! synchronous HTTP/1.1 server on one thread of its own, `http`.
//!
//! One `poll(2)` loop over the listener, a stop eventfd and every open
//! connection, all non-blocking: no client can hold the thread. Each
//! connection gets one request and one answer, then is closed. Bounds:
//! [`MAX_CONNECTIONS`] open at once (a new one pushes out the oldest, so a
//! crowd of idle clients cannot lock a scraper out), [`MAX_REQUEST`] bytes
//! of request head, and [`CONNECTION_DEADLINE`] from accept to the last
//! byte of the answer. It reads the board and the resources' counters;
//! it never takes a lock that Allocate, a health check or registration
//! holds for longer than a copy.
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | the Prometheus text exposition ([`metrics`]) |
//! | `/health`, `/healthz` | 200 `ok` while every resource is served and registered; 503 with one reason per line otherwise |

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod metrics;
pub mod process;

use crate::control::{Board, Status};
use crate::util::{poll_events, Notifier, WakeFd};

/// Connections open at once; past it, the oldest is closed.
pub const MAX_CONNECTIONS: usize = 64;
/// The most bytes of request head read (request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// From accept to the answer's last byte.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);
/// New connections taken per turn of the loop, so a flood of connects
/// cannot starve the answers in progress.
const ACCEPTS_PER_TURN: usize = 128;

/// The running endpoint; [`Server::stop`] (or drop) ends its thread.
pub struct Server {
    addr: SocketAddr,
    stop: Notifier,
    thread: Option<JoinHandle<()>>,
    /// Held for its descriptor's sake: the thread polls it.
    _pipe: Arc<WakeFd>,
}

/// The addresses `--listen` names, to bind in order: generic-device-plugin's
/// `:8080` (every interface: IPv6 and IPv4 where the host has IPv6, else
/// IPv4), `host:port`, `[v6]:port`.
///
/// # Errors
///
/// A message naming what is wrong with `spec`.
pub fn resolve(spec: &str) -> Result<Vec<SocketAddr>, String> {
    use std::net::{Ipv4Addr, Ipv6Addr, ToSocketAddrs};
    let bad = |why: &str| format!("--listen: `{}` {why}", spec.escape_debug());
    if let Some(port) = spec.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| bad("has no valid port"))?;
        return Ok(vec![
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        ]);
    }
    if let Ok(a) = spec.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let (host, port) = spec
        .rsplit_once(':')
        .ok_or_else(|| bad("is not host:port or :port"))?;
    if port.parse::<u16>().is_err() {
        return Err(bad("has no valid port"));
    }
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(bad("is not host:port or :port"));
    }
    let addrs: Vec<SocketAddr> = spec
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot be resolved: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(bad("resolves to no address"));
    }
    Ok(addrs)
}

impl Server {
    /// Binds the first of `addrs` that can be bound and serves on a new
    /// thread.
    ///
    /// # Errors
    ///
    /// When no address can be bound (in use, not local, no permission):
    /// the last error; or when the thread cannot start.
    pub(crate) fn start(addrs: &[SocketAddr], board: Arc<Board>) -> io::Result<Server> {
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on");
        let mut bound = None;
        for a in addrs {
            match TcpListener::bind(a) {
                Ok(l) => {
                    bound = Some(l);
                    break;
                }
                Err(e) => {
                    let fatal = matches!(
                        e.kind(),
                        io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
                    );
                    last = io::Error::new(e.kind(), format!("{a}: {e}"));
                    // Only a missing address family moves on (no IPv6).
                    if fatal {
                        break;
                    }
                }
            }
        }
        let listener = bound.ok_or(last)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let pipe = Arc::new(WakeFd::new()?);
        let stop = pipe.notifier();
        let thread_pipe = pipe.clone();
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || serve(&listener, &thread_pipe, &board))?;
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
            _pipe: pipe,
        })
    }

    /// Starts the endpoint when `addrs` name any, and says where (in the
    /// log and on the board).
    ///
    /// # Errors
    ///
    /// As [`Server::start`].
    pub(crate) fn start_if(addrs: &[SocketAddr], board: &Arc<Board>) -> io::Result<Option<Server>> {
        if addrs.is_empty() {
            return Ok(None);
        }
        let server = Server::start(addrs, board.clone())?;
        log::info!(
            "metrics on http://{0}/metrics, health on http://{0}/health",
            server.addr
        );
        board.set_listen(server.addr);
        Ok(Some(server))
    }

    /// Where it listens (a port of 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and every connection, and waits for the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.notify();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One client's exchange.
struct Conn {
    stream: TcpStream,
    deadline: Instant,
    request: Vec<u8>,
    /// The answer, once the request is read; and how much is written.
    answer: Option<Vec<u8>>,
    written: usize,
}

impl Conn {
    /// Reads what has arrived; `true` when the connection is done with.
    fn on_readable(&mut self, board: &Board) -> bool {
        let mut buf = [0u8; 2048];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => {
                    let room = MAX_REQUEST + 4 - self.request.len();
                    self.request.extend_from_slice(&buf[..n.min(room)]);
                    if let Some(end) = head_end(&self.request) {
                        self.request.truncate(end);
                        self.answer = Some(answer(&self.request, board));
                        return self.on_writable();
                    }
                    if self.request.len() > MAX_REQUEST {
                        self.answer = Some(response(
                            431,
                            "Request Header Fields Too Large",
                            "text/plain",
                            b"request head too large\n",
                            true,
                        ));
                        return self.on_writable();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }

    /// Writes what the socket takes; `true` once all is written (or the
    /// client is gone).
    fn on_writable(&mut self) -> bool {
        let Some(answer) = &self.answer else {
            return false;
        };
        while self.written < answer.len() {
            match self.stream.write(&answer[self.written..]) {
                Ok(0) => return true,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        true
    }
}

/// Where the request head ends (after its blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// After an accept fails (out of descriptors), the listener rests this
/// long: it stays readable, and polling it at once would spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

fn serve(listener: &TcpListener, stop: &WakeFd, board: &Board) {
    let mut conns: Vec<Conn> = Vec::new();
    let mut paused: Option<Instant> = None;
    loop {
        if paused.is_some_and(|t| Instant::now() >= t) {
            paused = None;
        }
        // poll(2) skips a negative descriptor: the paused listener.
        let listening = if paused.is_some() {
            -1
        } else {
            listener.as_raw_fd()
        };
        let mut fds = vec![(stop.fd(), libc::POLLIN), (listening, libc::POLLIN)];
        for c in &conns {
            let events = if c.answer.is_some() {
                libc::POLLOUT
            } else {
                libc::POLLIN
            };
            fds.push((c.stream.as_raw_fd(), events));
        }
        let timeout = conns
            .iter()
            .map(|c| c.deadline)
            .chain(paused)
            .min()
            .map(|d| d.saturating_duration_since(Instant::now()));
        let revents = match poll_events(&fds, timeout) {
            Ok(r) => r,
            Err(e) => {
                log::error!("metrics endpoint stopped: poll: {e}");
                return;
            }
        };
        if revents[0] != 0 {
            return;
        }
        // Connections first, so an answer in progress is never pushed out
        // by the connects of this same turn.
        let now = Instant::now();
        let mut done = vec![false; conns.len()];
        for (i, c) in conns.iter_mut().enumerate() {
            let r = revents[i + 2];
            done[i] = if now >= c.deadline {
                true
            } else if r == 0 {
                false
            } else if c.answer.is_some() {
                c.on_writable()
            } else {
                c.on_readable(board)
            };
        }
        let mut i = 0;
        conns.retain(|_| {
            i += 1;
            !done[i - 1]
        });
        if revents[1] != 0 && !accept(listener, &mut conns, board) {
            paused = Some(Instant::now() + ACCEPT_PAUSE);
        }
    }
}

/// Takes the connections waiting; the oldest open ones make room. False
/// when accept failed (out of descriptors): the listener should rest.
fn accept(listener: &TcpListener, conns: &mut Vec<Conn>, board: &Board) -> bool {
    for _ in 0..ACCEPTS_PER_TURN {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                if conns.len() >= MAX_CONNECTIONS {
                    // Oldest first: the vector is in accept order.
                    conns.remove(0);
                }
                let mut c = Conn {
                    stream,
                    deadline: Instant::now() + CONNECTION_DEADLINE,
                    request: Vec::new(),
                    answer: None,
                    written: 0,
                };
                // A request already there is answered now.
                if !c.on_readable(board) {
                    conns.push(c);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and the like: what is open is served; the
                // listener rests, then is tried again.
                log::debug!("metrics endpoint: accept: {e}");
                return false;
            }
        }
    }
    true
}

fn response(code: u16, reason: &str, kind: &str, body: &[u8], send_body: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if send_body {
        out.extend_from_slice(body);
    }
    out
}

/// The answer to a request head.
fn answer(head: &[u8], board: &Board) -> Vec<u8> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let bad = |code, reason, text: &str| {
        response(
            code,
            reason,
            "text/plain; charset=utf-8",
            text.as_bytes(),
            true,
        )
    };
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return bad(400, "Bad Request", "bad request\n");
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return bad(405, "Method Not Allowed", "only GET and HEAD\n");
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            let status = board.status();
            let views: Vec<metrics::ResourceView> = board
                .states()
                .iter()
                .map(|s| metrics::ResourceView::read(s, &status))
                .collect();
            let process = process::Process::read(Path::new("/proc/self"));
            let text = metrics::render(&status, &views, &process);
            response(
                200,
                "OK",
                "text/plain; version=0.0.4; charset=utf-8",
                text.as_bytes(),
                !head_only,
            )
        }
        "/health" | "/healthz" => {
            let problems = health_problems(&board.status(), &board_names(board));
            let (code, reason, body) = if problems.is_empty() {
                (200, "OK", "ok\n".to_string())
            } else {
                (
                    503,
                    "Service Unavailable",
                    problems.iter().map(|p| format!("{p}\n")).collect(),
                )
            };
            response(
                code,
                reason,
                "text/plain; charset=utf-8",
                body.as_bytes(),
                !head_only,
            )
        }
        _ => bad(404, "Not Found", "not found: try /metrics or /health\n"),
    }
}

/// The names of the resources the daemon runs now, configured order.
fn board_names(board: &Board) -> Vec<String> {
    board
        .states()
        .iter()
        .map(|s| s.resource().resource_name.clone())
        .collect()
}

/// Why the daemon is not healthy, one line each; empty when it is: every
/// resource it runs is served and registered, and it is not stopping.
pub fn health_problems(status: &Status, resources: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if status.stopped {
        out.push("the daemon is stopping".to_string());
        return out;
    }
    if resources.is_empty() {
        out.push("no resource is running yet".to_string());
    }
    for name in resources {
        let shown = crate::text::shown(name);
        match status.resource(name) {
            None => out.push(format!("{shown}: not served")),
            Some(r) if r.socket.is_none() => out.push(format!("{shown}: not served")),
            Some(r) if !r.registered => out.push(format!("{shown}: not registered")),
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ResourceStatus;

    #[test]
    fn health_needs_every_resource_served_and_registered() {
        let names = vec!["a/x".to_string(), "a/y".to_string()];
        let mut status = Status::default();
        status.resources.push(ResourceStatus {
            name: "a/x".into(),
            socket: Some("/s/x.sock".into()),
            registered: true,
            ..Default::default()
        });
        assert_eq!(health_problems(&status, &names), vec!["a/y: not served"]);
        status.resources.push(ResourceStatus {
            name: "a/y".into(),
            socket: Some("/s/y.sock".into()),
            registered: false,
            ..Default::default()
        });
        assert_eq!(
            health_problems(&status, &names),
            vec!["a/y: not registered"]
        );
        status.resources[1].registered = true;
        assert!(health_problems(&status, &names).is_empty());
        status.stopped = true;
        assert_eq!(
            health_problems(&status, &names),
            vec!["the daemon is stopping"]
        );
    }

    #[test]
    fn request_heads() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        let board = Board::default();
        let text = |head: &[u8]| String::from_utf8(answer(head, &board)).unwrap();
        assert!(text(b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        assert!(text(b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
        assert!(text(b"\x00\xff garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
        assert!(text(b"GET /health HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 503 "));
        let head = text(b"HEAD /metrics?x=1 HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
        assert!(text(b"GET /metrics HTTP/1.1\r\n\r\n").contains("process_open_fds "));
    }
}
