//! Command line (DESIGN.md §2): a small hand-written parser.

use std::fmt;
use std::path::PathBuf;

use crate::core::resource::Api;
use crate::kubelet;

/// The DRA driver name by default: the domain of the original's resources.
pub const DEFAULT_DRIVER: &str = "hostpath-device.k8s.io";
/// Where dynamic CDI specs go (the runtimes read it by default).
pub const DEFAULT_CDI_DIR: &str = "/var/run/cdi";
/// The kubelet's pod-resources socket (`<root-dir>/pod-resources/kubelet.sock`).
pub const DEFAULT_POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
/// The kubelet's plugins directory (the DRA service socket goes under it).
pub const DEFAULT_PLUGINS_DIR: &str = "/var/lib/kubelet/plugins";

/// What the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the daemon (`run`, `deviceplugin`, or no subcommand).
    Run,
    /// Validate the config and print the resolved resources.
    Check,
    /// Exit 0 when every configured resource answers on its socket.
    Probe,
    Version,
    Help,
}

/// How the daemon announces itself to the kubelet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// Classic `Register` call on `kubelet.sock`.
    KubeletSocket,
    /// Sockets in the kubelet's plugins_registry directory (B14).
    PluginWatcher,
}

impl Registration {
    pub fn as_str(self) -> &'static str {
        match self {
            Registration::KubeletSocket => "kubelet-socket",
            Registration::PluginWatcher => "plugin-watcher",
        }
    }
}

/// Every option, with the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub command: Command,
    pub config: PathBuf,
    pub device_plugin_dir: PathBuf,
    pub plugins_registry_dir: PathBuf,
    pub registration: Registration,
    pub host_root: PathBuf,
    /// `--max-watches`: host-path inotify watches at most (default: a
    /// quarter of the kernel's per-user limit).
    pub max_watches: Option<usize>,
    pub debug: bool,
    /// `--api`: serve every resource through this API, whatever the config
    /// says (B18).
    pub api: Option<Api>,
    /// `--node-name` (else `$NODE_NAME`): the node DRA publishes for.
    pub node_name: Option<String>,
    /// `--driver-name`: the DRA driver (ResourceSlices, CDI vendor).
    pub driver_name: String,
    /// `--kubeconfig` (else `$KUBECONFIG`, else in-cluster).
    pub kubeconfig: Option<PathBuf>,
    pub cdi_dir: PathBuf,
    pub plugins_dir: PathBuf,
    /// `--pod-resources-socket`: the kubelet's pod-resources API, which says
    /// which devices running pods hold through the other API (B19).
    pub pod_resources_socket: PathBuf,
    /// `--listen`: where the metrics and health endpoint listens (off
    /// unless given), as given (`:8080`, `host:port`).
    pub listen: Option<String>,
    /// `--log-format`: text (default) or JSON lines.
    pub log_format: LogFormat,
    /// `--config` was given (else the default, or generic-device-plugin's).
    pub config_given: bool,
    /// A device-plugin directory was given (`--device-plugin-dir` or
    /// `--plugin-directory`).
    pub device_plugin_dir_given: bool,
    /// generic-device-plugin's command line (§3, Form C): `--device` specs
    /// (JSON or YAML objects), instead of a config file.
    pub devices: Vec<String>,
    /// generic-device-plugin's `--domain`, over its file's `domain`.
    pub domain: Option<String>,
    /// generic-device-plugin's `--log-level` (all, debug, info, warn,
    /// error, none); `RUST_LOG` wins.
    pub log_level: Option<String>,
    /// One of generic-device-plugin's own flags was given.
    pub generic_flags: bool,
    /// What [`resolve_generic`] took from the environment or defaults,
    /// to log once logging is set up.
    pub notes: Vec<String>,
}

/// generic-device-plugin's default config file, in the order it looks.
pub const GENERIC_CONFIG_PATHS: &[&str] =
    &["/etc/generic-device-plugin/config.yaml", "config.yaml"];

/// generic-device-plugin's log levels, and the filter each means here.
const GENERIC_LOG_LEVELS: &[(&str, &str)] = &[
    ("all", "trace"),
    ("debug", "debug"),
    ("info", "info"),
    ("warn", "warn"),
    ("error", "error"),
    ("none", "off"),
];

impl Options {
    /// The log filter the options ask for (before `RUST_LOG`, which wins).
    pub fn log_filter(&self) -> &'static str {
        if self.debug {
            return "debug";
        }
        self.log_level
            .as_deref()
            .and_then(|l| GENERIC_LOG_LEVELS.iter().find(|(n, _)| *n == l))
            .map_or("info", |(_, f)| f)
    }
}

/// generic-device-plugin's settings from the environment and its default
/// config path, as that project reads them (its viper binds each flag to
/// the variable of the same name, upper-cased, `-` as `_`). They apply
/// only to a generic-device-plugin invocation: one of its flags given,
/// one of `DEVICE`, `DOMAIN` or `PLUGIN_DIRECTORY` set, or no `--config`
/// and no file at this project's default path. A flag wins over the
/// variable. `env` reads a variable; `exists` says whether a file is there.
///
/// # Errors
///
/// A [`UsageError`] for a variable whose value a flag would refuse.
pub fn resolve_generic(
    opts: &mut Options,
    env: &dyn Fn(&str) -> Option<String>,
    exists: &dyn Fn(&std::path::Path) -> bool,
) -> Result<(), UsageError> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    let ours = Options::default().config;
    let generic = opts.generic_flags
        || ["DEVICE", "DOMAIN", "PLUGIN_DIRECTORY"]
            .iter()
            .any(|k| get(k).is_some())
        || (!opts.config_given && !exists(&ours));
    if !generic {
        return Ok(());
    }
    let mut took = Vec::new();
    if opts.domain.is_none() {
        if let Some(v) = get("DOMAIN") {
            took.push("DOMAIN");
            opts.domain = Some(v);
        }
    }
    if opts.devices.is_empty() {
        if let Some(v) = get("DEVICE") {
            took.push("DEVICE");
            opts.devices = split_device_list(&v);
        }
    }
    if !opts.device_plugin_dir_given {
        if let Some(v) = get("PLUGIN_DIRECTORY") {
            took.push("PLUGIN_DIRECTORY");
            opts.device_plugin_dir = PathBuf::from(v);
        }
    }
    if opts.listen.is_none() {
        if let Some(v) = get("LISTEN") {
            took.push("LISTEN");
            opts.listen = Some(v);
        }
    }
    if opts.log_level.is_none() {
        if let Some(v) = get("LOG_LEVEL") {
            check_log_level("LOG_LEVEL", &v)?;
            took.push("LOG_LEVEL");
            opts.log_level = Some(v);
        }
    }
    if !took.is_empty() {
        opts.notes.push(format!(
            "generic-device-plugin settings from the environment: {}",
            took.join(", ")
        ));
    }
    if !opts.config_given && opts.devices.is_empty() && !exists(&ours) {
        if let Some(p) = GENERIC_CONFIG_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| exists(p))
        {
            opts.notes.push(format!(
                "no --config and nothing at {}: reading generic-device-plugin's {}",
                ours.display(),
                p.display()
            ));
            opts.config = p;
        }
    }
    Ok(())
}

/// `$DEVICE`: one device object, or a list of them (JSON or YAML).
fn split_device_list(v: &str) -> Vec<String> {
    match serde_yaml::from_str::<serde_yaml::Value>(v) {
        Ok(serde_yaml::Value::Sequence(items)) => items
            .iter()
            .filter_map(|i| serde_yaml::to_string(i).ok())
            .collect(),
        _ => vec![v.to_string()],
    }
}

fn check_log_level(what: &str, v: &str) -> Result<(), UsageError> {
    if GENERIC_LOG_LEVELS.iter().any(|(n, _)| *n == v) {
        return Ok(());
    }
    let names: Vec<&str> = GENERIC_LOG_LEVELS.iter().map(|(n, _)| *n).collect();
    Err(UsageError(format!(
        "{what}: unknown level `{}`; use one of {}",
        v.escape_debug(),
        names.join(", ")
    )))
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line (`time`, `level`, `resource`, `event`,
    /// `path`, `message`).
    Json,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            command: Command::Run,
            config: PathBuf::from("/k8s-hostpath-device-plugin/config.yaml"),
            device_plugin_dir: PathBuf::from(kubelet::DEFAULT_DEVICE_PLUGIN_DIR),
            plugins_registry_dir: PathBuf::from(kubelet::DEFAULT_PLUGINS_REGISTRY_DIR),
            registration: Registration::KubeletSocket,
            host_root: PathBuf::from("/"),
            max_watches: None,
            debug: false,
            api: None,
            node_name: None,
            driver_name: DEFAULT_DRIVER.to_string(),
            kubeconfig: None,
            cdi_dir: PathBuf::from(DEFAULT_CDI_DIR),
            plugins_dir: PathBuf::from(DEFAULT_PLUGINS_DIR),
            pod_resources_socket: PathBuf::from(DEFAULT_POD_RESOURCES_SOCKET),
            listen: None,
            log_format: LogFormat::Text,
            config_given: false,
            device_plugin_dir_given: false,
            devices: Vec::new(),
            domain: None,
            log_level: None,
            generic_flags: false,
            notes: Vec::new(),
        }
    }
}

impl Options {
    /// Where the DevicePlugin sockets live for the chosen registration mode.
    pub fn socket_dir(&self) -> &std::path::Path {
        match self.registration {
            Registration::KubeletSocket => &self.device_plugin_dir,
            Registration::PluginWatcher => &self.plugins_registry_dir,
        }
    }
}

/// A command line that cannot be understood (exit code 2).
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\nRun with --help for usage.", self.0)
    }
}

impl std::error::Error for UsageError {}

pub const USAGE: &str = "\
k8s-hostpath-device-plugin: advertise host paths as Kubernetes extended resources

Usage:
  k8s-hostpath-device-plugin [run|deviceplugin] [OPTIONS]   run the daemon (the default)
  k8s-hostpath-device-plugin check [--config PATH]           validate a config, print the resolved resources
  k8s-hostpath-device-plugin probe [OPTIONS]                 exit 0 when every resource is serving
  k8s-hostpath-device-plugin --version | --help

Options:
  --config PATH                 YAML config [default: /k8s-hostpath-device-plugin/config.yaml]
  --device-plugin-dir DIR       kubelet.sock and plugin sockets [default: /var/lib/kubelet/device-plugins]
  --plugins-registry-dir DIR    the plugin watcher's: --registration plugin-watcher, DRA
                                [default: /var/lib/kubelet/plugins_registry]
  --registration MODE           kubelet-socket (default) or plugin-watcher
  --host-root DIR               where the host's / is visible, to inspect host paths [default: /]
  --max-watches N               host-path inotify watches at most; past it, a 1 s rescan
                                [default: a quarter of fs.inotify.max_user_watches]
  --api API                     serve every resource through this API, whatever the config
                                says: device-plugin or dra [default: each resource's `api`]
  --pod-resources-socket PATH   the kubelet's pod-resources API: devices that running pods
                                hold through the other API are not given until released
                                [default: /var/lib/kubelet/pod-resources/kubelet.sock]
DRA (resources with `api: dra`):
  --node-name NAME              this node [default: $NODE_NAME]
  --driver-name NAME            the DRA driver [default: hostpath-device.k8s.io]
  --kubeconfig PATH             for bare hosts (also Node events) [default: $KUBECONFIG, else in-cluster]
  --plugins-dir DIR             the DRA socket goes in DIR/<driver>/ [default: /var/lib/kubelet/plugins]
  --cdi-dir DIR                 CDI specs of prepared claims [default: /var/run/cdi]
generic-device-plugin's command line (its DaemonSets work unchanged; see README):
  --device JSON|YAML            a device as that project takes it (repeatable), instead of --config
  --domain DOMAIN               the domain of its resources [default: devic.es]
  --plugin-directory DIR        the same as --device-plugin-dir
  --log-level LEVEL             all, debug, info, warn, error or none [default: info]
  (and DEVICE, DOMAIN, PLUGIN_DIRECTORY, LISTEN, LOG_LEVEL from the environment)
Observability:
  --listen ADDR                 serve /metrics (Prometheus) and /health over HTTP at ADDR:
                                :8080, 127.0.0.1:8080, [::1]:8080 [default: off]
Logging:
  --log-format FORMAT           text or json (one object per line) [default: text]
  --debug                       debug logging (RUST_LOG wins when set)
  --log-pretty[=BOOL]           accepted for compatibility; no effect

Exit codes: 0 success, 1 runtime failure or failing probe, 2 bad usage or invalid config.
";

/// Parses the arguments after the program name.
///
/// # Errors
///
/// A [`UsageError`] naming the argument that is wrong.
pub fn parse<I, S>(args: I) -> Result<Options, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut opts = Options::default();
    let mut command: Option<Command> = None;
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, UsageError> {
            match inline.clone().or_else(|| args.next()) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(UsageError(format!("{name} needs a value ({what})"))),
            }
        };
        match name.as_str() {
            "--help" | "-h" => command = Some(Command::Help),
            "--version" | "-V" => command = Some(Command::Version),
            "--config" => {
                opts.config = PathBuf::from(value("a file path")?);
                opts.config_given = true;
            }
            "--device-plugin-dir" => {
                opts.device_plugin_dir = PathBuf::from(value("a directory")?);
                opts.device_plugin_dir_given = true;
            }
            // generic-device-plugin's own flags (§3, Form C).
            "--plugin-directory" => {
                opts.device_plugin_dir = PathBuf::from(value("a directory")?);
                opts.device_plugin_dir_given = true;
                opts.generic_flags = true;
            }
            "--device" => {
                opts.devices.push(value(
                    "a device as JSON or YAML: {\"name\": …, \"groups\": […]}",
                )?);
                opts.generic_flags = true;
            }
            "--domain" => {
                opts.domain = Some(value("a DNS subdomain")?);
                opts.generic_flags = true;
            }
            "--log-level" => {
                let v = value("all, debug, info, warn, error or none")?;
                check_log_level("--log-level", &v)?;
                opts.log_level = Some(v);
                opts.generic_flags = true;
            }
            "--plugins-registry-dir" => {
                opts.plugins_registry_dir = PathBuf::from(value("a directory")?)
            }
            "--host-root" => opts.host_root = PathBuf::from(value("a directory")?),
            "--max-watches" => {
                let v = value("a number of watches")?;
                opts.max_watches = match v.parse::<usize>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        return Err(UsageError(format!(
                            "--max-watches: `{v}` is not a whole number"
                        )))
                    }
                };
            }
            "--registration" => {
                opts.registration = match value("kubelet-socket or plugin-watcher")?.as_str() {
                    "kubelet-socket" => Registration::KubeletSocket,
                    "plugin-watcher" => Registration::PluginWatcher,
                    other => {
                        return Err(UsageError(format!(
                    "--registration: unknown mode `{other}`; use kubelet-socket or plugin-watcher"
                )))
                    }
                }
            }
            "--api" => {
                opts.api = match value("device-plugin or dra")?.as_str() {
                    "device-plugin" | "devicePlugin" => Some(Api::DevicePlugin),
                    "dra" => Some(Api::Dra),
                    other => {
                        return Err(UsageError(format!(
                            "--api: unknown API `{other}`; use device-plugin or dra"
                        )))
                    }
                }
            }
            "--node-name" => opts.node_name = Some(value("the node's name")?),
            "--driver-name" => {
                let v = value("a DNS subdomain")?;
                if !kubelet::is_dns_subdomain(&v) || v.len() > 63 {
                    return Err(UsageError(format!(
                        "--driver-name: `{}` is not a DNS subdomain of at most 63 characters",
                        v.escape_debug()
                    )));
                }
                opts.driver_name = v;
            }
            "--kubeconfig" => opts.kubeconfig = Some(PathBuf::from(value("a file path")?)),
            "--cdi-dir" => opts.cdi_dir = PathBuf::from(value("a directory")?),
            "--pod-resources-socket" => {
                opts.pod_resources_socket = PathBuf::from(value("a socket path")?)
            }
            "--plugins-dir" => opts.plugins_dir = PathBuf::from(value("a directory")?),
            "--listen" => opts.listen = Some(value("an address, e.g. :8080")?),
            "--log-format" => {
                opts.log_format = match value("text or json")?.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => {
                        return Err(UsageError(format!(
                            "--log-format: unknown format `{}`; use text or json",
                            other.escape_debug()
                        )))
                    }
                }
            }
            "--debug" => {
                opts.debug = match inline.as_deref() {
                    None => true,
                    Some(v) => parse_bool(&name, v)?,
                }
            }
            "--log-pretty" => {
                if let Some(v) = inline.as_deref() {
                    parse_bool(&name, v)?;
                }
            }
            "run" | "deviceplugin" | "check" | "probe" if command.is_none() => {
                command = Some(match name.as_str() {
                    "check" => Command::Check,
                    "probe" => Command::Probe,
                    _ => Command::Run,
                });
            }
            other if other.starts_with('-') => {
                return Err(UsageError(format!("unknown option `{other}`")));
            }
            other => return Err(UsageError(format!("unexpected argument `{other}`"))),
        }
    }
    opts.command = command.unwrap_or(Command::Run);
    Ok(opts)
}

fn parse_bool(name: &str, v: &str) -> Result<bool, UsageError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(UsageError(format!(
            "{name}: expected true or false, got `{v}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_original_args() {
        let o = parse(["deviceplugin", "--debug"]).unwrap();
        assert_eq!(o.command, Command::Run);
        assert!(o.debug);
        assert_eq!(
            o.config,
            PathBuf::from("/k8s-hostpath-device-plugin/config.yaml")
        );
        assert_eq!(parse(Vec::<String>::new()).unwrap().command, Command::Run);
        assert_eq!(parse(["--log-pretty"]).unwrap().command, Command::Run);
        assert_eq!(parse(["--log-pretty=false"]).unwrap().command, Command::Run);
    }

    #[test]
    fn options_both_spellings() {
        let o = parse([
            "check",
            "--config=/c.yaml",
            "--device-plugin-dir",
            "/dp",
            "--registration",
            "plugin-watcher",
            "--plugins-registry-dir=/pr",
            "--host-root",
            "/host",
        ])
        .unwrap();
        assert_eq!(o.command, Command::Check);
        assert_eq!(o.config, PathBuf::from("/c.yaml"));
        assert_eq!(o.device_plugin_dir, PathBuf::from("/dp"));
        assert_eq!(o.socket_dir(), std::path::Path::new("/pr"));
        assert_eq!(o.host_root, PathBuf::from("/host"));
        assert_eq!(
            parse(["--max-watches", "64"]).unwrap().max_watches,
            Some(64)
        );
        assert!(parse(["--max-watches", "lots"]).is_err());
    }

    #[test]
    fn dra_options() {
        let o = parse([
            "--api=dra",
            "--node-name",
            "node-a",
            "--driver-name=example.com",
            "--kubeconfig",
            "/k",
            "--cdi-dir=/cdi",
            "--plugins-dir",
            "/p",
            "--pod-resources-socket=/pr.sock",
        ])
        .unwrap();
        assert_eq!(o.api, Some(Api::Dra));
        assert_eq!(o.node_name.as_deref(), Some("node-a"));
        assert_eq!(o.driver_name, "example.com");
        assert_eq!(o.kubeconfig, Some(PathBuf::from("/k")));
        assert_eq!(o.cdi_dir, PathBuf::from("/cdi"));
        assert_eq!(o.pod_resources_socket, PathBuf::from("/pr.sock"));
        assert_eq!(o.plugins_dir, PathBuf::from("/p"));
        assert_eq!(
            parse(["--api", "device-plugin"]).unwrap().api,
            Some(Api::DevicePlugin)
        );
        assert_eq!(parse(Vec::<String>::new()).unwrap().api, None);
        assert!(parse(["--api", "both"])
            .unwrap_err()
            .0
            .contains("unknown API `both`"));
        assert!(parse(["--driver-name", "Not_A/Name"])
            .unwrap_err()
            .0
            .contains("not a DNS subdomain"));
    }

    #[test]
    fn generic_device_plugin_flags() {
        let o = parse([
            "--device",
            r#"{"name": "serial", "groups": [{"paths": [{"path": "/dev/ttyUSB*"}]}]}"#,
            "--device=name: fuse\ngroups: [{count: 10, paths: [{path: /dev/fuse}]}]",
            "--domain",
            "example.org",
            "--plugin-directory",
            "/var/lib/kubelet/device-plugins",
            "--listen",
            ":8080",
            "--log-level",
            "warn",
        ])
        .unwrap();
        assert_eq!(o.devices.len(), 2);
        assert_eq!(o.domain.as_deref(), Some("example.org"));
        assert!(o.device_plugin_dir_given && o.generic_flags);
        assert_eq!(o.listen.as_deref(), Some(":8080"));
        assert_eq!(o.log_filter(), "warn");
        assert!(parse(["--log-level", "loud"])
            .unwrap_err()
            .0
            .contains("unknown level `loud`"));
        assert_eq!(parse(["--log-level=none"]).unwrap().log_filter(), "off");
        assert_eq!(parse(["--debug"]).unwrap().log_filter(), "debug");
    }

    #[test]
    fn generic_device_plugin_environment() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let present = |paths: &'static [&'static str]| {
            move |p: &std::path::Path| paths.iter().any(|q| std::path::Path::new(q) == p)
        };
        const OURS: &str = "/k8s-hostpath-device-plugin/config.yaml";
        const GDP: &str = "/etc/generic-device-plugin/config.yaml";
        let ours = OURS;
        // Our own invocation: the variables mean nothing.
        let mut o = parse(["--config", "/c.yaml"]).unwrap();
        let env = vars(&[("LISTEN", ":9"), ("LOG_LEVEL", "debug")]);
        resolve_generic(&mut o, &env, &present(&[OURS])).unwrap();
        assert_eq!((o.listen, o.log_level), (None, None));
        // DEVICE makes it generic-device-plugin's: the rest apply, flags win.
        let mut o = parse(["--listen", "127.0.0.1:1"]).unwrap();
        let env = vars(&[
            (
                "DEVICE",
                r#"[{"name": "a", "groups": []}, {"name": "b", "groups": []}]"#,
            ),
            ("DOMAIN", "example.org"),
            ("PLUGIN_DIRECTORY", "/dp"),
            ("LISTEN", ":9"),
            ("LOG_LEVEL", "error"),
        ]);
        resolve_generic(&mut o, &env, &present(&[OURS])).unwrap();
        assert_eq!(o.devices.len(), 2, "{:?}", o.devices);
        assert_eq!(o.domain.as_deref(), Some("example.org"));
        assert_eq!(o.device_plugin_dir, PathBuf::from("/dp"));
        assert_eq!(o.listen.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(o.log_filter(), "error");
        assert!(
            o.notes[0].contains("DOMAIN, DEVICE, PLUGIN_DIRECTORY, LOG_LEVEL"),
            "{:?}",
            o.notes
        );
        // No config of ours anywhere: generic-device-plugin's default file.
        let mut o = parse(Vec::<String>::new()).unwrap();
        let gdp = GDP;
        resolve_generic(&mut o, &vars(&[]), &present(&[GDP])).unwrap();
        assert_eq!(o.config, PathBuf::from(gdp));
        // Ours there: ours.
        let mut o = parse(Vec::<String>::new()).unwrap();
        resolve_generic(&mut o, &vars(&[]), &present(&[GDP, OURS])).unwrap();
        assert_eq!(o.config, PathBuf::from(ours));
        let mut o = parse(["--domain=x.org"]).unwrap();
        let bad = resolve_generic(&mut o, &vars(&[("LOG_LEVEL", "chatty")]), &present(&[]));
        assert!(bad.unwrap_err().0.contains("LOG_LEVEL: unknown level"));
    }

    #[test]
    fn usage_errors() {
        assert!(parse(["--config"])
            .unwrap_err()
            .0
            .contains("--config needs a value"));
        assert!(parse(["--bogus"])
            .unwrap_err()
            .0
            .contains("unknown option `--bogus`"));
        assert!(parse(["check", "probe"])
            .unwrap_err()
            .0
            .contains("unexpected argument `probe`"));
        assert!(parse(["--registration", "x"])
            .unwrap_err()
            .0
            .contains("unknown mode"));
        assert!(parse(["--debug=maybe"])
            .unwrap_err()
            .0
            .contains("expected true or false"));
        assert_eq!(parse(["--version"]).unwrap().command, Command::Version);
        assert_eq!(parse(["probe", "--help"]).unwrap().command, Command::Help);
    }
}
