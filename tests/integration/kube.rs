//! The API-server client against a server on a real socket: the token
//! read again as it rotates, errors that say what came back and never
//! the token, and a server that hangs or floods costing a bounded time
//! and memory.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use k8s_hostpath_device_plugin::kube::{Auth, Client, KubeConfig, KubeError};

use crate::harness::TestDir;
use k8s_hostpath_device_plugin::sim::fakeapi::read_request;

/// One canned answer per request, in order; records each request's head.
struct Server {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

enum Answer {
    Json(u16, &'static str),
    Raw(Vec<u8>),
    Hang,
}

fn serve(answers: Vec<Answer>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    thread::spawn(move || {
        for (answer, conn) in answers.into_iter().zip(listener.incoming()) {
            let mut conn: TcpStream = conn.unwrap();
            let (head, _) = read_request(&conn).unwrap_or_default();
            seen.lock().unwrap().push(head);
            match answer {
                Answer::Json(code, body) => {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
                Answer::Raw(bytes) => {
                    let _ = conn.write_all(&bytes);
                }
                Answer::Hang => thread::sleep(Duration::from_secs(30)),
            }
        }
    });
    Server { port, heads }
}

fn config(s: &Server, auth: Auth) -> KubeConfig {
    KubeConfig {
        server: format!("http://127.0.0.1:{}", s.port),
        ca: None,
        auth,
        source: "test".into(),
    }
}

#[test]
fn the_token_is_read_again_as_it_rotates_and_never_shown() {
    let dir = TestDir::new();
    let token = dir.path.join("token");
    std::fs::write(&token, "first-secret\n").unwrap();
    let s = serve(vec![
        Answer::Json(200, r#"{"kind":"Node","metadata":{"name":"a","uid":"u1"}}"#),
        Answer::Json(
            403,
            r#"{"kind":"Status","reason":"Forbidden","message":"nodes \"a\" is forbidden"}"#,
        ),
    ]);
    let c = Client::new(&config(&s, Auth::TokenFile(token.clone()))).unwrap();
    let node = c.get("/api/v1/nodes/a", "get node a").unwrap();
    assert_eq!(node["metadata"]["uid"], "u1");
    std::fs::write(&token, "second-secret").unwrap();
    let e = c.get("/api/v1/nodes/a", "get node a").unwrap_err();
    assert_eq!(e.code(), Some(403));
    let shown = format!("{e} {e:?} {c:?}");
    assert!(
        shown.contains("Forbidden") && shown.contains("get node a"),
        "{shown}"
    );
    assert!(!shown.contains("secret"), "{shown}");
    let heads = s.heads.lock().unwrap().clone();
    assert!(heads[0].contains("Bearer first-secret"), "{heads:?}");
    assert!(heads[1].contains("Bearer second-secret"), "{heads:?}");
}

#[test]
fn a_malformed_flooding_or_hanging_server_costs_a_bounded_time() {
    let s = serve(vec![
        Answer::Json(200, "{not json"),
        Answer::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                64u64 << 20
            )
            .into_bytes()
            .into_iter()
            .chain(std::iter::repeat_n(b' ', 17 << 20))
            .collect(),
        ),
        Answer::Hang,
    ]);
    let c = Client::with_timeout(&config(&s, Auth::None), Duration::from_secs(2)).unwrap();
    assert!(matches!(
        c.get("/x", "read x"),
        Err(KubeError::Malformed { .. })
    ));
    let e = c.get("/x", "read x").unwrap_err();
    assert!(matches!(e, KubeError::Transport { .. }), "{e:?}");
    let t = Instant::now();
    let e = c.get("/x", "read x").unwrap_err();
    assert!(matches!(e, KubeError::Transport { .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}

#[test]
fn nobody_listening_is_a_transport_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = Server {
        port,
        heads: Default::default(),
    };
    let c = Client::new(&config(&s, Auth::Token("t0ken-secret".into()))).unwrap();
    let e = c.get("/x", "read x").unwrap_err();
    assert!(matches!(e, KubeError::Transport { .. }), "{e:?}");
    assert!(!format!("{e}").contains("t0ken-secret"));
}
