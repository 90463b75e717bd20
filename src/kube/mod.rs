//! The API-server client: synchronous HTTPS and JSON (DESIGN.md §1), for
//! the few objects the DRA front reads and writes.
//!
//! Every request has a deadline ([`REQUEST_TIMEOUT`]) and a bounded answer
//! ([`MAX_ANSWER_BYTES`]); a hostile or broken server costs at most that.
//! Errors say what was asked and what came back, never a credential.

pub mod config;
pub mod events;

use std::fmt;
use std::time::Duration;

use serde_json::Value;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

pub use config::{Auth, KubeConfig};

/// The deadline of one request, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read (a list of this node's slices is far smaller).
pub const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// What went wrong with a request.
#[derive(Debug)]
pub enum KubeError {
    /// No connection, a timeout, TLS: the server was not heard.
    Transport { what: String, error: String },
    /// The server answered with an error status.
    Status {
        what: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// The answer was not what the API promises.
    Malformed { what: String, error: String },
    /// The client could not be set up (a CA or key that is not PEM).
    Setup(String),
}

impl KubeError {
    /// The HTTP status, when the server answered with one.
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for KubeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubeError::Transport { what, error } => write!(f, "{what}: {error}"),
            KubeError::Status {
                what,
                code,
                reason,
                message,
            } => write!(f, "{what}: {code} {reason}: {message}"),
            KubeError::Malformed { what, error } => write!(f, "{what}: malformed answer: {error}"),
            KubeError::Setup(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for KubeError {}

/// A connection setting for one API server.
pub struct Client {
    agent: ureq::Agent,
    server: String,
    auth: Auth,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Client({}, {:?})", self.server, self.auth)
    }
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<Certificate<'static>>, KubeError> {
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| KubeError::Setup(format!("{what} is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(KubeError::Setup(format!("{what} holds no certificate")));
    }
    Ok(certs)
}

impl Client {
    /// # Errors
    ///
    /// A CA, certificate or key that cannot be read as PEM.
    pub fn new(cfg: &KubeConfig) -> Result<Client, KubeError> {
        Client::with_timeout(cfg, REQUEST_TIMEOUT)
    }

    /// A client whose requests each end within `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Client::new`].
    pub fn with_timeout(cfg: &KubeConfig, timeout: Duration) -> Result<Client, KubeError> {
        // ring is the one provider built in (it builds static with no
        // cmake, BUILD.md); rustls 0.23.48 deprecates it for offering no
        // post-quantum key exchange, which a cluster's own API server
        // does not need. Installing it twice is harmless.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut tls = TlsConfig::builder();
        if let Some(ca) = &cfg.ca {
            tls = tls.root_certs(RootCerts::new_with_certs(&certificates(ca, "the CA")?));
        }
        if let Auth::Cert { cert, key } = &cfg.auth {
            let chain = certificates(cert, "the client certificate")?;
            let key = PrivateKey::from_pem(key)
                .map_err(|e| KubeError::Setup(format!("the client key is not PEM: {e}")))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent("k8s-hostpath-device-plugin")
            .tls_config(tls.build())
            .build()
            .new_agent();
        Ok(Client {
            agent,
            server: cfg.server.clone(),
            auth: cfg.auth.clone(),
        })
    }

    fn bearer(&self, what: &str) -> Result<Option<String>, KubeError> {
        match &self.auth {
            Auth::Token(t) => Ok(Some(t.clone())),
            Auth::TokenFile(p) => std::fs::read_to_string(p)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| KubeError::Transport {
                    what: what.to_string(),
                    error: format!("cannot read the token {}: {e}", p.display()),
                }),
            Auth::None | Auth::Cert { .. } => Ok(None),
        }
    }

    /// One request: `method` on `path` (from `/apis/…`), with a JSON body.
    /// `what` names it in errors. Answers the JSON body of a 2xx.
    ///
    /// # Errors
    ///
    /// [`KubeError`]: transport, a non-2xx status (its Status message), or
    /// an answer that is not JSON.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, KubeError> {
        let url = format!("{}{path}", self.server);
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Accept", "application/json");
        if let Some(token) = self.bearer(what)? {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let transport = |e: ureq::Error| KubeError::Transport {
            what: what.to_string(),
            error: e.to_string(),
        };
        let answer = match body {
            Some(b) => {
                let bytes = serde_json::to_vec(b).expect("JSON values serialise");
                let req = req
                    .header("Content-Type", "application/json")
                    .body(bytes)
                    .map_err(|e| KubeError::Setup(format!("{what}: {e}")))?;
                self.agent.run(req)
            }
            None => {
                let req = req
                    .body(())
                    .map_err(|e| KubeError::Setup(format!("{what}: {e}")))?;
                self.agent.run(req)
            }
        };
        let mut answer = answer.map_err(transport)?;
        let code = answer.status().as_u16();
        let bytes = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(transport)?;
        let parsed: Result<Value, _> = serde_json::from_slice(&bytes);
        if !(200..300).contains(&code) {
            let field = |k: &str| {
                parsed
                    .as_ref()
                    .ok()
                    .and_then(|v| v.get(k))
                    .and_then(Value::as_str)
                    .map(|s| crate::text::shown(&s.chars().take(300).collect::<String>()))
                    .unwrap_or_default()
            };
            return Err(KubeError::Status {
                what: what.to_string(),
                code,
                reason: field("reason"),
                message: field("message"),
            });
        }
        parsed.map_err(|e| KubeError::Malformed {
            what: what.to_string(),
            error: e.to_string(),
        })
    }

    pub fn get(&self, path: &str, what: &str) -> Result<Value, KubeError> {
        self.request("GET", path, None, what)
    }
}
