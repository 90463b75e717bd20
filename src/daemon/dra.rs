//! The supervisor's DRA side (B18): the resources served through DRA, and
//! the front that serves them, started when the first one arrives.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::{Environment, Server};

use crate::cli::Options;
use crate::control::Board;
use crate::core::state::ResourceState;
use crate::deviceplugin::server::{stop_all, Late};
use crate::dra::front::{self, Front};
use crate::dra::names::is_dns_subdomain;
use crate::kube::config::SERVICE_ACCOUNT_DIR;
use crate::kube::{Client, KubeConfig};

/// Where DRA runs and how it reaches the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DraOptions {
    pub driver: String,
    /// This node (`--node-name`, else `$NODE_NAME`).
    pub node: Option<String>,
    pub registry_dir: PathBuf,
    pub plugins_dir: PathBuf,
    pub cdi_dir: PathBuf,
    /// A kubeconfig; else the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// `$POD_UID` (the downward API's `metadata.uid`), when it can name a
    /// socket: the DRA sockets carry it, for rolling updates.
    pub instance: Option<String>,
}

impl Default for DraOptions {
    fn default() -> Self {
        DraOptions::from_options(&Options::default())
    }
}

impl DraOptions {
    pub fn from_options(opts: &Options) -> DraOptions {
        DraOptions {
            driver: opts.driver_name.clone(),
            node: opts.node_name.clone(),
            registry_dir: opts.plugins_registry_dir.clone(),
            plugins_dir: opts.plugins_dir.clone(),
            cdi_dir: opts.cdi_dir.clone(),
            kubeconfig: opts.kubeconfig.clone(),
            instance: instance_from_env(),
        }
    }

    /// What the front needs, or what is missing, named.
    ///
    /// # Errors
    ///
    /// No node name, a node name that is not one, or no way to reach the
    /// API server.
    pub fn resolve(&self) -> Result<(front::Settings, KubeConfig), String> {
        let node = match self.node.as_deref() {
            None | Some("") => {
                return Err(
                    "DRA needs this node's name: set NODE_NAME (the downward API's \
                     spec.nodeName) or --node-name"
                        .into(),
                )
            }
            Some(n) if !is_dns_subdomain(n) => {
                return Err(format!(
                    "node name {} is not a Kubernetes node name",
                    crate::text::shown(n)
                ))
            }
            Some(n) => n.to_string(),
        };
        let kube = match &self.kubeconfig {
            Some(p) => KubeConfig::from_kubeconfig(p),
            None => KubeConfig::in_cluster(
                std::env::var("KUBERNETES_SERVICE_HOST").ok().as_deref(),
                std::env::var("KUBERNETES_SERVICE_PORT").ok().as_deref(),
                std::path::Path::new(SERVICE_ACCOUNT_DIR),
            ),
        }
        .map_err(|e| format!("DRA cannot reach the API server: {e}"))?;
        Ok((self.settings(node), kube))
    }

    /// Where the front lives, for `node`.
    fn settings(&self, node: String) -> front::Settings {
        front::Settings {
            driver: self.driver.clone(),
            node,
            registry_dir: self.registry_dir.clone(),
            plugins_dir: self.plugins_dir.clone(),
            cdi_dir: self.cdi_dir.clone(),
            instance: self.instance.clone(),
        }
    }
}

/// `$POD_UID`, when it can name a socket (else the fixed names are used,
/// and the reason logged).
pub fn instance_from_env() -> Option<String> {
    let uid = std::env::var("POD_UID").ok().filter(|u| !u.is_empty())?;
    if front::is_instance(&uid) {
        Some(uid)
    } else {
        log::warn!(
            "POD_UID {} cannot name a socket (lower-case letters, digits and -, at most 63): \
             the DRA sockets keep their fixed names",
            crate::text::shown(&uid)
        );
        None
    }
}

/// `$NODE_NAME` and `$KUBECONFIG` when the command line gives neither.
pub fn from_env(opts: &mut Options) {
    if opts.node_name.is_none() {
        opts.node_name = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty());
    }
    if opts.kubeconfig.is_none() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        opts.kubeconfig = std::env::var_os("KUBECONFIG")
            .filter(|k| !k.is_empty())
            .map(PathBuf::from);
    }
}

/// How often a daemon that serves nothing through DRA looks again, while
/// claims prepared here by an earlier one remain and another instance of
/// the driver still serves the node.
const LEFTOVER_LOOK: Duration = Duration::from_secs(5);

/// Claims an earlier DRA daemon prepared on this node, for a daemon that
/// serves nothing through DRA (the node moved to the device-plugin API).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leftover {
    /// Look at this moment.
    Look(Instant),
    /// An unprepare-only front serves them.
    Serving,
    /// None (or a real front): never looked at again.
    Done,
}

/// The resources served through DRA and their front.
pub(crate) struct DraSide {
    pub(crate) front: Option<Front>,
    pub(crate) states: Vec<(u64, Arc<ResourceState>)>,
    leftover: Leftover,
}

impl Default for DraSide {
    fn default() -> Self {
        DraSide {
            front: None,
            states: Vec::new(),
            leftover: Leftover::Look(Instant::now()),
        }
    }
}

impl DraSide {
    /// Serves `state` through DRA, starting the front first if needed.
    pub(crate) fn add(
        &mut self,
        id: u64,
        state: Arc<ResourceState>,
        options: &DraOptions,
        env: &Arc<Environment>,
        board: &Arc<Board>,
    ) {
        if self.front.as_ref().is_some_and(Front::is_leftover) {
            // A real front takes over the leftover claims too.
            self.stop_leftover("a resource is served through DRA again");
        }
        self.leftover = Leftover::Done;
        if self.front.is_none() {
            match start(options, env, board) {
                Ok(f) => self.front = Some(f),
                Err(e) => log::error!(
                    "{}: cannot be served through DRA: {e}",
                    state.resource().resource_name
                ),
            }
        }
        if let Some(f) = &self.front {
            f.add(id, &state);
        }
        self.states.push((id, state));
    }

    pub(crate) fn retire(&mut self, id: u64) {
        let Some(i) = self.states.iter().position(|(i, _)| *i == id) else {
            return;
        };
        let (_, state) = self.states.remove(i);
        match &self.front {
            Some(f) => f.retire(id, &state),
            None => state.retire(),
        }
    }

    pub(crate) fn tick(
        &mut self,
        now: Instant,
        env: &Arc<Environment>,
        options: &DraOptions,
        board: &Arc<Board>,
    ) {
        if let Some(f) = &mut self.front {
            f.tick(now, env);
        }
        match self.leftover {
            Leftover::Look(at) if at <= now => self.look(now, env, options, board),
            Leftover::Serving if self.front.as_ref().is_some_and(|f| f.prepared() == 0) => {
                self.stop_leftover("the last claim prepared here through DRA is unprepared");
            }
            _ => {}
        }
    }

    /// Serves the driver for the claims an earlier DRA daemon prepared on
    /// this node, once no other instance of it serves the node.
    fn look(
        &mut self,
        now: Instant,
        env: &Arc<Environment>,
        options: &DraOptions,
        board: &Arc<Board>,
    ) {
        self.leftover = Leftover::Done;
        if self.front.is_some() || !self.states.is_empty() {
            return;
        }
        let settings = options.settings(options.node.clone().unwrap_or_default());
        let prepared = crate::dra::cdi::CdiDir::new(&settings.cdi_dir, &settings.driver)
            .prepared()
            .len();
        if prepared == 0 {
            return;
        }
        if front::other_instance_live(&settings) {
            log::debug!(
                "DRA: {prepared} claim(s) prepared on this node; another instance of {} \
                 serves them",
                settings.driver
            );
            self.leftover = Leftover::Look(now + LEFTOVER_LOOK);
            return;
        }
        match Front::start_leftover(env, settings, board.clone()) {
            Ok(f) => {
                log::info!(
                    "DRA: {prepared} claim(s) prepared on this node by an earlier DRA daemon: \
                     serving the driver until the kubelet has unprepared them"
                );
                self.front = Some(f);
                self.leftover = Leftover::Serving;
            }
            Err(e) => {
                log::warn!("DRA: cannot serve the claims prepared on this node: {e}; retrying");
                self.leftover = Leftover::Look(now + LEFTOVER_LOOK);
            }
        }
    }

    fn stop_leftover(&mut self, why: &str) {
        log::info!("DRA: {why}: removing the unprepare-only driver's sockets");
        if let Some(server) = self.front.take().and_then(|mut f| f.stop()) {
            stop_all(vec![server], Late::Cancel);
        }
        self.leftover = Leftover::Done;
    }

    pub(crate) fn next_due(&self) -> Option<Instant> {
        let look = match self.leftover {
            Leftover::Look(at) => Some(at),
            _ => None,
        };
        self.front
            .as_ref()
            .map(Front::next_due)
            .into_iter()
            .chain(look)
            .min()
    }

    /// Shutdown: the streams end, the sockets go; the server is returned
    /// to be stopped with the others.
    pub(crate) fn stop(&mut self) -> Option<Server> {
        for (_, s) in &self.states {
            s.stop();
        }
        self.front.as_mut().and_then(Front::stop)
    }
}

fn start(
    options: &DraOptions,
    env: &Arc<Environment>,
    board: &Arc<Board>,
) -> Result<Front, String> {
    let (settings, kube) = options.resolve()?;
    let client = Client::new(&kube).map_err(|e| e.to_string())?;
    log::info!("DRA: API server {} ({})", kube.server, kube.source);
    Front::start(env, settings, client, board.clone())
        .map_err(|e| format!("cannot start the DRA front: {e}"))
}
