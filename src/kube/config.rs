//! Where the API server is and how to prove who we are: in a pod, the
//! service account (PROTOCOL.md §6.3); on a bare host, a kubeconfig.
//!
//! Credentials are held as they were found and never shown: `Debug` of
//! [`Auth`] names the kind only. A token file is read again for every
//! request, so a rotated token is picked up without a restart.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_yaml::Value;

/// The service account's files in a pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How requests authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    /// A bearer token (kubeconfig `token`).
    Token(String),
    /// A bearer token read from this file for every request.
    TokenFile(PathBuf),
    /// A client certificate and its key, PEM.
    Cert {
        cert: Vec<u8>,
        key: Vec<u8>,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("no credentials"),
            Auth::Token(_) => f.write_str("a bearer token"),
            Auth::TokenFile(p) => write!(f, "the token in {}", p.display()),
            Auth::Cert { .. } => f.write_str("a client certificate"),
        }
    }
}

/// The API server's address, the CA to trust, and the credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeConfig {
    /// `https://host:port` (or `http://` for a test server).
    pub server: String,
    /// PEM certificates to trust (none: no `https`).
    pub ca: Option<Vec<u8>>,
    pub auth: Auth,
    /// Where it came from, for messages.
    pub source: String,
}

/// Why no API server configuration could be made.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError(format!("cannot read {what} {}: {e}", path.display())))
}

impl KubeConfig {
    /// The pod's service account: `KUBERNETES_SERVICE_HOST` and `_PORT`,
    /// the token and CA in `dir` (normally [`SERVICE_ACCOUNT_DIR`]).
    ///
    /// # Errors
    ///
    /// When the environment or the files are missing.
    pub fn in_cluster(
        host: Option<&str>,
        port: Option<&str>,
        dir: &Path,
    ) -> Result<KubeConfig, ConfigError> {
        let (Some(host), Some(port)) = (
            host.filter(|h| !h.is_empty()),
            port.filter(|p| !p.is_empty()),
        ) else {
            return Err(ConfigError(
                "not in a pod (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT unset): \
                 give --kubeconfig"
                    .into(),
            ));
        };
        if port.parse::<u16>().is_err() {
            return Err(ConfigError(format!(
                "KUBERNETES_SERVICE_PORT {port:?} is not a port"
            )));
        }
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let token = dir.join("token");
        read(&token, "the service account token")?;
        Ok(KubeConfig {
            server: format!("https://{host}:{port}"),
            ca: Some(read(&dir.join("ca.crt"), "the cluster CA")?),
            auth: Auth::TokenFile(token),
            source: format!("the service account in {}", dir.display()),
        })
    }

    /// A kubeconfig file's current context.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or lacks what is needed, naming what.
    pub fn from_kubeconfig(path: &Path) -> Result<KubeConfig, ConfigError> {
        let text = read(path, "the kubeconfig")?;
        let doc: Value = serde_yaml::from_slice(&text)
            .map_err(|e| ConfigError(format!("{}: not valid YAML: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        parse_kubeconfig(&doc, base).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }
}

fn named<'a>(doc: &'a Value, list: &str, name: &str, inner: &str) -> Result<&'a Value, String> {
    doc.get(list)
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|e| e.get(inner))
        .ok_or_else(|| format!("no {inner} named {name:?} in {list}"))
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Inline `<key>-data` (base64), or the file `<key>` relative to `base`.
fn data_or_file(v: &Value, key: &str, base: &Path) -> Result<Option<Vec<u8>>, String> {
    if let Some(b64) = text(v, &format!("{key}-data")) {
        let clean: String = b64.split_whitespace().collect();
        return base64::engine::general_purpose::STANDARD
            .decode(clean)
            .map(Some)
            .map_err(|e| format!("{key}-data is not base64: {e}"));
    }
    match text(v, key) {
        Some(p) => read(&base.join(p), key).map(Some).map_err(|e| e.0),
        None => Ok(None),
    }
}

fn parse_kubeconfig(doc: &Value, base: &Path) -> Result<KubeConfig, String> {
    let context_name = text(doc, "current-context").ok_or("no current-context")?;
    let context = named(doc, "contexts", context_name, "context")?;
    let cluster_name = text(context, "cluster").ok_or("the current context names no cluster")?;
    let cluster = named(doc, "clusters", cluster_name, "cluster")?;
    let server = text(cluster, "server").ok_or("the cluster has no server")?;
    if !(server.starts_with("https://") || server.starts_with("http://")) {
        return Err(format!("server {server:?} is not an http(s) URL"));
    }
    let ca = data_or_file(cluster, "certificate-authority", base)?;
    let auth = match text(context, "user") {
        None => Auth::None,
        Some(user_name) => {
            let user = named(doc, "users", user_name, "user")?;
            let cert = data_or_file(user, "client-certificate", base)?;
            let key = data_or_file(user, "client-key", base)?;
            if let Some(t) = text(user, "token") {
                Auth::Token(t.to_string())
            } else if let Some(f) = text(user, "tokenFile") {
                Auth::TokenFile(base.join(f))
            } else if let (Some(cert), Some(key)) = (cert, key) {
                Auth::Cert { cert, key }
            } else {
                Auth::None
            }
        }
    };
    Ok(KubeConfig {
        server: server.trim_end_matches('/').to_string(),
        ca,
        auth,
        source: format!("kubeconfig context {context_name:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hpdp-kubecfg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn in_cluster_reads_the_service_account() {
        let d = tmp("sa");
        assert!(KubeConfig::in_cluster(None, Some("443"), &d).is_err());
        assert!(KubeConfig::in_cluster(Some("10.0.0.1"), Some("x"), &d).is_err());
        let e = KubeConfig::in_cluster(Some("10.0.0.1"), Some("443"), &d).unwrap_err();
        assert!(e.0.contains("token"), "{e}");
        std::fs::write(d.join("token"), "secret-token").unwrap();
        std::fs::write(d.join("ca.crt"), "PEM").unwrap();
        let c = KubeConfig::in_cluster(Some("fd00::1"), Some("443"), &d).unwrap();
        assert_eq!(c.server, "https://[fd00::1]:443");
        assert_eq!(c.auth, Auth::TokenFile(d.join("token")));
        assert!(!format!("{c:?}").contains("secret-token"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn kubeconfig_current_context_with_inline_and_file_data() {
        let d = tmp("kc");
        std::fs::write(d.join("ca.pem"), "CA").unwrap();
        let kc = "apiVersion: v1\nkind: Config\ncurrent-context: b\n\
            clusters:\n- name: c1\n  cluster: {server: 'https://a:6443/', certificate-authority: ca.pem}\n\
            - name: c2\n  cluster: {server: 'https://b:6443', certificate-authority-data: Q0Ey}\n\
            contexts:\n- name: a\n  context: {cluster: c1, user: u1}\n- name: b\n  context: {cluster: c2, user: u2}\n\
            users:\n- name: u1\n  user: {token: tok}\n- name: u2\n  user: {client-certificate-data: Q0VSVA==, client-key-data: S0VZ}\n";
        std::fs::write(d.join("config"), kc).unwrap();
        let c = KubeConfig::from_kubeconfig(&d.join("config")).unwrap();
        assert_eq!(c.server, "https://b:6443");
        assert_eq!(c.ca.as_deref(), Some(&b"CA2"[..]));
        assert_eq!(
            c.auth,
            Auth::Cert {
                cert: b"CERT".to_vec(),
                key: b"KEY".to_vec()
            }
        );
        std::fs::write(
            d.join("config"),
            kc.replace("current-context: b", "current-context: a"),
        )
        .unwrap();
        let c = KubeConfig::from_kubeconfig(&d.join("config")).unwrap();
        assert_eq!(c.server, "https://a:6443");
        assert_eq!(c.ca.as_deref(), Some(&b"CA"[..]));
        assert_eq!(c.auth, Auth::Token("tok".into()));
        assert!(!format!("{c:?}").contains("tok\""));
        for (bad, says) in [
            ("current-context: z\n", "no context named \"z\""),
            (
                "current-context: a\ncontexts: []\n",
                "no context named \"a\"",
            ),
        ] {
            std::fs::write(d.join("config"), bad).unwrap();
            let e = KubeConfig::from_kubeconfig(&d.join("config")).unwrap_err();
            assert!(e.0.contains(says), "{e}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
