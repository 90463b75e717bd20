//! The program behind `main`: run the command the user asked for.

use std::fmt;

use crate::cli::{self, Command, Options};
use crate::core::config;
use crate::{daemon, limits, probe};

/// Why the program exits non-zero; [`Failure::exit_code`] maps it.
#[derive(Debug)]
pub enum Failure {
    Usage(cli::UsageError),
    Config(config::ConfigError),
    Daemon(daemon::DaemonError),
    /// `probe` found resources not answering.
    Probe(Vec<(String, String)>),
    Setup(std::io::Error),
}

impl Failure {
    /// 2 for bad usage or config, 1 for everything else (DESIGN.md §2).
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Usage(_) | Failure::Config(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(e) => write!(f, "{e}"),
            Failure::Config(e) => write!(f, "invalid configuration:\n{e}"),
            Failure::Daemon(e) => write!(f, "{e}"),
            Failure::Probe(failed) => {
                write!(f, "probe failed for {} resource(s):", failed.len())?;
                for (name, why) in failed {
                    write!(f, "\n  {name}: {why}")?;
                }
                Ok(())
            }
            Failure::Setup(e) => write!(f, "cannot start: {e}"),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Failure::Usage(e) => Some(e),
            Failure::Config(e) => Some(e),
            Failure::Daemon(e) => Some(e),
            Failure::Setup(e) => Some(e),
            Failure::Probe(_) => None,
        }
    }
}

/// Warns when `resources` cannot all be served under the open-file limit
/// `limit` (the daemon raises its soft limit to the hard one at start).
fn warn_if_too_many(resources: usize, limit: u64) {
    let need = limits::files_needed(resources);
    if need > limit {
        log::warn!(
            "{resources} resources need about {need} open files, but only {limit} are allowed: \
             some would not be served; raise the limit (LimitNOFILE= in the systemd unit, \
             ulimit -n, or the container runtime's default) or split the config"
        );
    }
}

/// Events on this node (issue 23): when the node's name is known and an
/// API client can be made (`--kubeconfig`, or the pod's service account),
/// the records that carry an `event` the Node shows become Events.
fn start_node_events(opts: &Options) {
    use crate::kube::{events, Client, KubeConfig};
    let Some(node) = opts
        .node_name
        .clone()
        .filter(|n| crate::kubelet::is_dns_subdomain(n))
    else {
        log::debug!("Node events off: no node name (NODE_NAME or --node-name)");
        return;
    };
    let kube = match &opts.kubeconfig {
        Some(p) => KubeConfig::from_kubeconfig(p),
        None => KubeConfig::in_cluster(
            std::env::var("KUBERNETES_SERVICE_HOST").ok().as_deref(),
            std::env::var("KUBERNETES_SERVICE_PORT").ok().as_deref(),
            std::path::Path::new(crate::kube::config::SERVICE_ACCOUNT_DIR),
        ),
    };
    let client = match kube
        .map_err(|e| e.to_string())
        .and_then(|k| Client::new(&k).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            log::debug!("Node events off: no API client ({e})");
            return;
        }
    };
    match events::Recorder::start(client, node.clone()) {
        Ok(recorder) => {
            log::info!("Node events on: health changes, devices coming and going and refused reloads are recorded on node {node}");
            crate::logging::set_event_sink(Box::new(move |event, _resource, message| {
                if let Some(note) = events::note_of(event, message) {
                    recorder.record(note);
                }
            }));
        }
        Err(e) => log::warn!("Node events off: cannot start their thread: {e}"),
    }
}

/// Settings from the command line over the config's own.
fn overrides(opts: &Options) -> config::Overrides {
    config::Overrides {
        domain: opts.domain.clone(),
    }
}

/// Loads the config (generic-device-plugin's `--device` flags, or the
/// file), with `--api` applied over every resource's own.
fn load_config(opts: &Options) -> Result<config::Loaded, Failure> {
    let mut loaded = if opts.devices.is_empty() {
        config::load_with(&opts.config, opts.socket_dir(), &overrides(opts))
    } else {
        if opts.config_given {
            log::warn!(
                "{}: not read: --device flags give the devices, as generic-device-plugin's do",
                opts.config.display()
            );
        }
        config::document_from_flags(&opts.devices).and_then(|text| {
            config::parse_with(&text, "--device", opts.socket_dir(), &overrides(opts))
        })
    }
    .map_err(Failure::Config)?;
    loaded.config.override_api(opts.api);
    for w in &loaded.warnings {
        log::warn!("{w}");
    }
    if loaded
        .config
        .resources
        .iter()
        .any(|r| r.from_generic_device_plugin)
    {
        log::info!(
            "generic-device-plugin config: where this daemon differs, on purpose: device IDs are \
             the matched paths (USB: vendor, product and serial), not hashes; a device that goes \
             is Unhealthy at once, and a path's health is checked, not assumed; sensitive paths \
             (/dev/mem, /proc, /sys…) are refused (README, Moving from generic-device-plugin)"
        );
    }
    Ok(loaded)
}

/// At most two malloc arenas: glibc's default (8 per core) lets each of
/// the daemon's threads keep its own freed memory, and the resident size
/// is what counts on an edge node (`make bench`: 10,000 devices listed
/// varied between +1.7 and +3.0 MB above idle with the default, +1.7 to
/// +1.9 MB with two arenas, before the device set's compact layout).
fn limit_heap_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before the daemon's
    // threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// `check` on a resource whose devices come and go: what a scan finds
/// now under the host root, as the daemon would list it.
fn print_matches(
    r: &crate::core::resource::Resource,
    d: &crate::core::resource::Discovery,
    host_root: &std::path::Path,
) {
    use crate::text::shown;
    const SHOWN: usize = 20;
    let mut watched = 0usize;
    let scan = crate::core::discovery::scan(
        host_root,
        d,
        r.allow_sensitive_path,
        r.require_mount_point,
        &mut Default::default(),
        &mut |_: &std::path::Path| watched += 1,
    );
    println!("  found now:    {}", scan.devices.len());
    for f in scan.devices.iter().take(SHOWN) {
        let paths: Vec<&str> = f.grants.iter().map(|g| &*g.host).collect();
        let slots = if f.slots > 1 {
            format!(" (×{} slots)", f.slots)
        } else {
            String::new()
        };
        if paths.len() == 1 && paths[0] == f.id {
            println!("    {}{slots}", shown(&f.id));
        } else {
            println!("    {}{slots}: {}", shown(&f.id), shown(&paths.join(", ")));
        }
    }
    if scan.devices.len() > SHOWN {
        println!("    … and {} more", scan.devices.len() - SHOWN);
    }
    println!("  watches now:  {watched} directories (inotify)");
    for p in &scan.problems {
        println!("  note:         {p}");
    }
}

/// `check` on a DRA resource: its pool and the devices a ResourceSlice
/// would carry now (a fixed path's as if present), with their attributes.
fn print_dra(r: &crate::core::resource::Resource, opts: &Options) {
    use crate::core::state::ResourceState;
    use crate::dra::slices::{offered, Attr};
    use crate::text::shown;
    const SHOWN: usize = 10;
    let node = opts.node_name.as_deref().unwrap_or("<node>");
    println!(
        "  DRA pool:     {} (driver {})",
        crate::dra::names::pool_name(node, &r.resource_name),
        opts.driver_name
    );
    let resource = std::sync::Arc::new(r.clone());
    let state = ResourceState::new(resource.clone());
    if let Some(d) = &r.discovery {
        let mut memory = Default::default();
        let scan = crate::core::discovery::scan(
            &opts.host_root,
            d,
            r.allow_sensitive_path,
            r.require_mount_point,
            &mut memory,
            &mut |_: &std::path::Path| {},
        );
        state.merge_scan(scan, std::time::Instant::now(), &resource, memory);
    } else {
        state.set_health(true, "");
    }
    let devices = state.with_offer(offered);
    println!("  publishes:    {} device(s) now", devices.len());
    for p in devices.iter().take(SHOWN) {
        let attrs: Vec<String> = p
            .attributes
            .iter()
            .map(|(k, v)| match v {
                Attr::Str(s) => format!("{k}={}", shown(s)),
                Attr::Int(i) => format!("{k}={i}"),
            })
            .collect();
        println!("    {}: {}", p.name, attrs.join(" "));
    }
    if devices.len() > SHOWN {
        println!("    … and {} more", devices.len() - SHOWN);
    }
}

/// Runs the command `opts` names. Output for the user (`check`, `--help`)
/// goes to stdout; everything else is logged.
///
/// # Errors
///
/// A [`Failure`] carrying what went wrong and the exit code.
pub fn run_command(opts: &Options) -> Result<(), Failure> {
    let mut opts = opts.clone();
    daemon::dra::from_env(&mut opts);
    let opts = &opts;
    for note in &opts.notes {
        log::info!("{note}");
    }
    match opts.command {
        Command::Help => {
            print!("{}", cli::USAGE);
            Ok(())
        }
        Command::Version => {
            println!("k8s-hostpath-device-plugin {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Check => {
            let config = load_config(opts)?.config;
            if let Ok((_, hard)) = limits::nofile() {
                warn_if_too_many(config.resources.len(), hard);
            }
            println!(
                "{}: valid, {} resource(s)",
                opts.config.display(),
                config.resources.len()
            );
            for r in &config.resources {
                println!("\n{r}");
                if let Some(d) = &r.discovery {
                    print_matches(r, d, &opts.host_root);
                }
                if r.api == crate::core::resource::Api::Dra {
                    print_dra(r, opts);
                }
            }
            Ok(())
        }
        Command::Probe => {
            let config = load_config(opts)?.config;
            let registration = crate::dra::front::registration_socket(
                &opts.plugins_registry_dir,
                &opts.driver_name,
                crate::daemon::dra::instance_from_env().as_deref(),
            );
            let failed = probe::probe(&config, opts.socket_dir(), &registration);
            if failed.is_empty() {
                Ok(())
            } else {
                Err(Failure::Probe(failed))
            }
        }
        Command::Run => {
            let listen = match &opts.listen {
                Some(spec) => {
                    crate::observe::resolve(spec).map_err(|e| Failure::Usage(cli::UsageError(e)))?
                }
                None => Vec::new(),
            };
            let loaded = load_config(opts)?;
            if loaded.config.uses_dra() {
                if let Err(e) = daemon::dra::DraOptions::from_options(opts).resolve() {
                    return Err(Failure::Usage(cli::UsageError(e)));
                }
            }
            match limits::raise_nofile() {
                Ok((old, new)) => {
                    if new > old {
                        log::debug!("open-file limit raised from {old} to {new}");
                    }
                    warn_if_too_many(loaded.config.resources.len(), new);
                }
                Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
            }
            limit_heap_arenas();
            // gRPC creates sockets with the process umask: 0177 makes them
            // 0600 from the first instant. Files created on purpose (OrCreate
            // paths) get explicit modes.
            // SAFETY: umask only changes this process's file-creation mask.
            unsafe { libc::umask(0o177) };
            start_node_events(opts);
            let control = daemon::Control::new().map_err(Failure::Setup)?;
            control.install_signal_handlers().map_err(Failure::Setup)?;
            log::info!(
                "k8s-hostpath-device-plugin {} starting with {} resource(s) from {}",
                env!("CARGO_PKG_VERSION"),
                loaded.config.resources.len(),
                opts.config.display()
            );
            let settings = daemon::Settings {
                listen,
                overrides: overrides(opts),
                config_from_flags: !opts.devices.is_empty(),
                ..daemon::Settings::from_options(opts)
            };
            daemon::run(settings, loaded, control).map_err(Failure::Daemon)
        }
    }
}
