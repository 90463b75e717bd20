//! Configuration: load the YAML file, validate it into typed [`Resource`]s.
//!
//! Two stages, as the rest of the code only ever sees validated values:
//! serde_yaml reads the text into a generic value tree, then [`parse`] walks
//! that tree and checks every key and rule, collecting *all* problems with
//! their field path (`resources[1].hostPath.path`). A serde struct with
//! `deny_unknown_fields` would stop at the first problem, and `check` must
//! report every one. Parsing works from a `&str`, so tests need no files.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::Value;

pub use crate::kubelet::MAX_MESSAGE_BYTES;
use crate::kubelet::{CHECKPOINT_FILE, KUBELET_SOCKET, UNHEALTHY};

/// Longest Unix socket path the kernel accepts (`sun_path` is 108 bytes with
/// the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Smallest accepted `healthCheckInterval`: faster polling only burns CPU on
/// edge nodes, and inotify covers the fast path.
pub const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(100);

const DEFAULT_NUM_DEVICES: u64 = 100;
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);

/// A `hostPath.type` value (PROTOCOL.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostPathType {
    /// `""`: any kind of file is accepted.
    Unset,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

impl HostPathType {
    const ALL: [HostPathType; 8] = [
        HostPathType::Unset,
        HostPathType::DirectoryOrCreate,
        HostPathType::Directory,
        HostPathType::FileOrCreate,
        HostPathType::File,
        HostPathType::Socket,
        HostPathType::CharDevice,
        HostPathType::BlockDevice,
    ];

    /// The exact Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HostPathType::Unset => "",
            HostPathType::DirectoryOrCreate => "DirectoryOrCreate",
            HostPathType::Directory => "Directory",
            HostPathType::FileOrCreate => "FileOrCreate",
            HostPathType::File => "File",
            HostPathType::Socket => "Socket",
            HostPathType::CharDevice => "CharDevice",
            HostPathType::BlockDevice => "BlockDevice",
        }
    }

    fn parse(s: &str) -> Option<HostPathType> {
        HostPathType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Char and block devices are handed to the runtime as `DeviceSpec`s
    /// (cgroup device access), everything else as bind mounts.
    /// DirectoryOrCreate and FileOrCreate: created when missing (B1, B6).
    pub fn creates(self) -> bool {
        matches!(
            self,
            HostPathType::DirectoryOrCreate | HostPathType::FileOrCreate
        )
    }

    pub fn is_device(self) -> bool {
        matches!(self, HostPathType::CharDevice | HostPathType::BlockDevice)
    }
}

impl fmt::Display for HostPathType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPathType::Unset => f.write_str("any kind"),
            t => f.write_str(t.as_str()),
        }
    }
}

/// One validated resource: everything the daemon needs to serve it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// Extended resource name, e.g. `hostpath-device.k8s.io/sample`.
    pub resource_name: String,
    /// Socket file name inside the device-plugin (or plugins-registry) dir.
    pub socket_name: String,
    /// Number of devices advertised; IDs are `"0"`..`"N-1"` as in the original.
    pub num_devices: u32,
    /// Normalised absolute host path, as the kubelet sees it (no host root).
    pub host_path: String,
    pub path_type: HostPathType,
    /// Where the path appears in the container.
    pub mount_path: String,
    pub read_only: bool,
    /// cgroup device permissions (`rwm` letters); used for devices only.
    pub permissions: String,
    pub envs: BTreeMap<String, String>,
    /// Healthy only while `host_path` is a mount point.
    pub require_mount_point: bool,
    pub health_check_interval: Duration,
    pub allow_sensitive_path: bool,
}

/// A validated configuration: at least one resource, names unique.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub resources: Vec<Resource>,
}

/// A problem in a config file, located by file and field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file as the user named it (or `<input>` for text).
    pub file: String,
    /// Dotted field path, e.g. `resources[1].hostPath.path`; empty for the
    /// whole document.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.field, self.message)
        }
    }
}

/// Every error found in a config; never empty.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A loaded config with the warnings found on the way (ignored keys,
/// normalised paths). Warnings never stop the daemon.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Problem>,
    /// The text it was read from (a reload compares against it).
    pub text: String,
}

/// Reads and validates the file at `path`. `socket_dir` is where the
/// resources' sockets will live (for the socket path length rule).
///
/// # Errors
///
/// A [`ConfigError`] listing every problem, including an unreadable file.
pub fn load(path: &Path, socket_dir: &Path) -> Result<Loaded, ConfigError> {
    let name = path.display().to_string();
    match read_file(path) {
        Ok(text) => parse(&text, &name, socket_dir),
        Err(e) => Err(ConfigError {
            problems: vec![Problem {
                file: name,
                field: String::new(),
                message: e.to_string(),
            }],
        }),
    }
}

/// The largest config file read (a ConfigMap holds at most 1 MiB).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// The deepest nesting of collections accepted before parsing (real
/// configs are 6 deep; the YAML parser's time grows with the square of it).
pub const MAX_NESTING: usize = 64;

/// Why a config file could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    /// A FIFO, device, socket or directory: reading it could block forever.
    NotRegular(&'static str),
    TooLarge(u64),
    NotUtf8,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "cannot read config file: {e}"),
            ReadError::NotRegular(what) => {
                write!(
                    f,
                    "cannot read config file: it is {what}, not a regular file"
                )
            }
            ReadError::TooLarge(n) => write!(
                f,
                "cannot read config file: {n} bytes or more, over the {MAX_CONFIG_BYTES}-byte limit"
            ),
            ReadError::NotUtf8 => f.write_str("cannot read config file: it is not UTF-8 text"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Reads a config file: only a regular file (symlinks, as ConfigMaps use,
/// are followed), opened without blocking so a FIFO or device never hangs
/// the caller, and at most [`MAX_CONFIG_BYTES`].
///
/// # Errors
///
/// [`ReadError`] saying what the file is or why it cannot be read.
pub fn read_file(path: &Path) -> Result<String, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        return Err(ReadError::NotRegular(crate::health::describe(ft)));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ReadError::TooLarge(meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

/// An upper estimate of how deeply `text` nests collections: block
/// indentation levels, compact `- ` entries on one line, and flow `[`/`{`
/// that open a node. Found before parsing, so no nesting is ever handed to
/// the YAML parser that would take it long. Returns (depth, line number).
pub fn nesting_depth(text: &str) -> (usize, usize) {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let (mut max, mut max_line) = (0usize, 0usize);
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches(' ');
        if flow == 0 {
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            while indents.last().is_some_and(|&i| i > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
        }
        let bytes = trimmed.as_bytes();
        let mut compact = 0usize;
        let mut line_flow = flow;
        let mut at_node = true;
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            let next_blank = bytes.get(i + 1).is_none_or(|b| *b == b' ');
            match c {
                b'-' | b'?' if at_node && flow == 0 && next_blank => compact += 1,
                b'[' | b'{' if at_node || flow > 0 => {
                    flow += 1;
                    line_flow = line_flow.max(flow);
                    at_node = true;
                    i += 1;
                    continue;
                }
                b']' | b'}' if flow > 0 => flow -= 1,
                b',' if flow > 0 => {
                    at_node = true;
                    i += 1;
                    continue;
                }
                b':' if next_blank || flow > 0 => {
                    at_node = true;
                    i += 1;
                    continue;
                }
                b'#' if i == 0 || bytes[i - 1] == b' ' => break,
                b'"' | b'\'' if at_node => {
                    // Skip the quoted scalar (to the end of the line at most).
                    let mut j = i + 1;
                    while j < bytes.len() {
                        if bytes[j] == b'\\' && c == b'"' {
                            j += 2;
                            continue;
                        }
                        if bytes[j] == c {
                            break;
                        }
                        j += 1;
                    }
                    i = j + 1;
                    at_node = false;
                    continue;
                }
                b' ' => {
                    i += 1;
                    continue;
                }
                _ => {}
            }
            if !matches!(c, b'-' | b'?') || !at_node {
                at_node = false;
            }
            i += 1;
        }
        let depth = indents.len() + compact + line_flow;
        if depth > max {
            (max, max_line) = (depth, n + 1);
        }
    }
    (max, max_line)
}

/// Validates config text. `file` names the source in messages.
///
/// # Errors
///
/// A [`ConfigError`] listing every problem found.
pub fn parse(text: &str, file: &str, socket_dir: &Path) -> Result<Loaded, ConfigError> {
    let mut v = Validator {
        file: file.to_string(),
        socket_dir: socket_dir.to_path_buf(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let (depth, line) = nesting_depth(text);
    let resources = if depth > MAX_NESTING {
        v.error(
            "",
            format!(
                "nesting about {depth} levels deep at line {line}, over the limit of {MAX_NESTING}"
            ),
        );
        Vec::new()
    } else {
        v.document(text)
    };
    if v.errors.is_empty() {
        Ok(Loaded {
            config: Config { resources },
            warnings: v.warnings,
            text: text.to_string(),
        })
    } else {
        Err(ConfigError { problems: v.errors })
    }
}

const RESOURCE_KEYS: &[&str] = &[
    "resourceName",
    "socketName",
    "numDevices",
    "hostPath",
    "volumeMount",
    "permissions",
    "envs",
    "requireMountPoint",
    "healthCheckInterval",
    "allowSensitivePath",
];
const HOST_PATH_KEYS: &[&str] = &["path", "type"];
const VOLUME_MOUNT_KEYS: &[&str] = &["mountPath", "readOnly", "name"];
/// Keys of a Kubernetes VolumeMount that a device plugin's Mount cannot carry.
const VOLUME_MOUNT_UNSUPPORTED: &[&str] = &["subPath", "subPathExpr", "mountPropagation"];

struct Validator {
    file: String,
    socket_dir: PathBuf,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

/// Joins a field path: `join("resources[0]", "hostPath")`.
fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

impl Validator {
    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(Problem {
            file: self.file.clone(),
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn warn(&mut self, field: &str, message: impl Into<String>) {
        self.warnings.push(Problem {
            file: self.file.clone(),
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn document(&mut self, text: &str) -> Vec<Resource> {
        let root: Value = match serde_yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                self.error("", format!("not valid YAML: {e}"));
                return Vec::new();
            }
        };
        let Some(map) = self.mapping(&root, "") else {
            return Vec::new();
        };
        if map.is_empty() {
            self.error("", "the config is empty: it needs `resourceName` and `hostPath`, or a `resources` list");
            return Vec::new();
        }
        let resources = if map.contains_key("resources") {
            let mixed: Vec<&str> = map
                .keys()
                .filter(|k| k.as_str() != "resources")
                .map(String::as_str)
                .collect();
            for key in mixed {
                if RESOURCE_KEYS.contains(&key) {
                    self.error(
                        key,
                        "cannot be mixed with a `resources` list: put it inside a list entry, or remove `resources`",
                    );
                } else {
                    self.unknown_key("", key, &["resources"]);
                }
            }
            self.resource_list(&map["resources"])
        } else {
            self.resource(&map, "").into_iter().collect()
        };
        self.cross_checks(&resources);
        resources
    }

    /// Returns the mapping as string keys, reporting non-string keys.
    fn mapping(&mut self, v: &Value, field: &str) -> Option<BTreeMap<String, Value>> {
        let Value::Mapping(m) = v else {
            self.error(field, format!("expected a mapping, found {}", kind_of(v)));
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, val) in m {
            match k {
                Value::String(s) => {
                    out.insert(s.clone(), val.clone());
                }
                other => self.error(
                    field,
                    format!("keys must be strings, found {}", kind_of(other)),
                ),
            }
        }
        Some(out)
    }

    fn unknown_key(&mut self, prefix: &str, key: &str, known: &[&str]) {
        let hint = match suggest(key, known) {
            Some(s) => format!("; did you mean `{s}`?"),
            None => format!("; known keys: {}", known.join(", ")),
        };
        self.error(&join(prefix, key), format!("unknown key{hint}"));
    }

    fn check_keys(&mut self, map: &BTreeMap<String, Value>, prefix: &str, known: &[&str]) {
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                self.unknown_key(prefix, key, known);
            }
        }
    }

    fn resource_list(&mut self, v: &Value) -> Vec<Resource> {
        let Value::Sequence(items) = v else {
            self.error(
                "resources",
                format!("expected a list of resources, found {}", kind_of(v)),
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.error("resources", "must list at least one resource");
        }
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let field = format!("resources[{i}]");
            if let Some(map) = self.mapping(item, &field) {
                out.extend(self.resource(&map, &field));
            }
        }
        out
    }

    fn string(&mut self, v: &Value, field: &str) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                self.error(
                    field,
                    format!("expected a string, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    fn boolean(&mut self, map: &BTreeMap<String, Value>, key: &str, prefix: &str) -> bool {
        match map.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.error(
                    &join(prefix, key),
                    format!("expected true or false, found {}", kind_of(other)),
                );
                false
            }
        }
    }

    /// Validates one resource; `None` when it has errors (already recorded).
    fn resource(&mut self, map: &BTreeMap<String, Value>, prefix: &str) -> Option<Resource> {
        let errors_before = self.errors.len();
        self.check_keys(map, prefix, RESOURCE_KEYS);

        let name_field = join(prefix, "resourceName");
        let resource_name = match map.get("resourceName") {
            None | Some(Value::Null) => {
                self.error(&name_field, "is required (e.g. `example.com/disk`)");
                None
            }
            Some(v) => self.string(v, &name_field),
        };
        if let Some(name) = &resource_name {
            if let Err(msg) = validate_extended_resource_name(name) {
                self.error(&name_field, msg);
            }
        }

        let socket_field = join(prefix, "socketName");
        let socket_name = match map.get("socketName") {
            None | Some(Value::Null) => resource_name
                .as_ref()
                .map(|n| format!("{}.sock", n.replace('/', "-"))),
            Some(v) => self.string(v, &socket_field),
        };
        if let Some(s) = &socket_name {
            self.socket_name(s, &socket_field);
        }

        let num_field = join(prefix, "numDevices");
        let num_devices = match map.get("numDevices") {
            None | Some(Value::Null) => DEFAULT_NUM_DEVICES,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) if n >= 1 => n,
                _ => {
                    self.error(
                        &num_field,
                        format!("must be a whole number of at least 1, found {n}"),
                    );
                    DEFAULT_NUM_DEVICES
                }
            },
            Some(other) => {
                self.error(
                    &num_field,
                    format!("expected a number, found {}", kind_of(other)),
                );
                DEFAULT_NUM_DEVICES
            }
        };
        let max = max_devices();
        if num_devices > max {
            let size = list_and_watch_size(num_devices, UNHEALTHY.len());
            self.error(
                &num_field,
                format!(
                    "{num_devices} devices make a ListAndWatch message of {size} bytes when all are Unhealthy, \
                     over the kubelet's limit of {MAX_MESSAGE_BYTES} bytes; at most {max} devices fit"
                ),
            );
        }

        let (host_path, path_type) = self.host_path(map, prefix);
        let (mount_path, read_only) = self.volume_mount(map, prefix, host_path.as_deref());

        let perm_field = join(prefix, "permissions");
        let permissions = match map.get("permissions") {
            None | Some(Value::Null) => {
                if read_only {
                    "r".to_string()
                } else {
                    "rw".to_string()
                }
            }
            Some(v) => {
                let p = self.string(v, &perm_field).unwrap_or_default();
                if !p.is_empty() {
                    if let Some(t) = path_type {
                        if !t.is_device() {
                            self.error(
                                &perm_field,
                                format!(
                                    "applies only to hostPath.type CharDevice or BlockDevice, not {}",
                                    if t == HostPathType::Unset { "\"\"" } else { t.as_str() }
                                ),
                            );
                        }
                    }
                }
                if let Err(msg) = validate_permissions(&p) {
                    self.error(&perm_field, msg);
                }
                p
            }
        };

        let envs = self.envs(map, prefix);
        let require_mount_point = self.boolean(map, "requireMountPoint", prefix);
        let allow_sensitive_path = self.boolean(map, "allowSensitivePath", prefix);

        let interval_field = join(prefix, "healthCheckInterval");
        let health_check_interval = match map.get("healthCheckInterval") {
            None | Some(Value::Null) => DEFAULT_HEALTH_INTERVAL,
            Some(v) => match parse_interval(v) {
                Ok(d) if d >= MIN_HEALTH_INTERVAL => d,
                Ok(d) => {
                    self.error(
                        &interval_field,
                        format!("{d:?} is too short: the minimum is 100ms"),
                    );
                    DEFAULT_HEALTH_INTERVAL
                }
                Err(msg) => {
                    self.error(&interval_field, msg);
                    DEFAULT_HEALTH_INTERVAL
                }
            },
        };

        if let Some(path) = &host_path {
            if !allow_sensitive_path {
                if let Some(rule) = sensitive_rule(path) {
                    self.error(
                        &join(prefix, "hostPath.path"),
                        format!(
                            "{path} is a sensitive host path ({rule}); set `allowSensitivePath: true` \
                             on this resource if you really mean to hand it to pods"
                        ),
                    );
                }
            }
        }

        if self.errors.len() > errors_before {
            return None;
        }
        let r = Resource {
            resource_name: resource_name?,
            socket_name: socket_name?,
            num_devices: u32::try_from(num_devices).ok()?,
            host_path: host_path?,
            path_type: path_type?,
            mount_path: mount_path?,
            read_only,
            permissions,
            envs,
            require_mount_point,
            health_check_interval,
            allow_sensitive_path,
        };
        let bytes = crate::alloc::largest_answer_bytes(&r);
        if bytes > MAX_MESSAGE_BYTES {
            self.error(
                &join(prefix, "envs"),
                format!(
                    "the Allocate answer would be {bytes} bytes with these envs and paths, \
                     over the kubelet's limit of {MAX_MESSAGE_BYTES} bytes"
                ),
            );
            return None;
        }
        Some(r)
    }

    fn socket_name(&mut self, s: &str, field: &str) {
        if let Err(msg) = validate_socket_name(s) {
            self.error(field, msg);
            return;
        }
        // gRPC binds a private name first (socket::temp_name): it must fit too.
        let full = self.socket_dir.join(s);
        let len = full
            .as_os_str()
            .len()
            .max(self.socket_dir.as_os_str().len() + 1 + crate::socket::TEMP_NAME_MAX);
        if len > MAX_SOCKET_PATH {
            self.error(
                field,
                format!(
                    "socket path {} is {len} bytes, over the {MAX_SOCKET_PATH}-byte limit of Unix socket paths",
                    full.display()
                ),
            );
        }
    }

    fn host_path(
        &mut self,
        map: &BTreeMap<String, Value>,
        prefix: &str,
    ) -> (Option<String>, Option<HostPathType>) {
        let field = join(prefix, "hostPath");
        let hp = match map.get("hostPath") {
            None | Some(Value::Null) => {
                self.error(&field, "is required, with at least `path`");
                return (None, None);
            }
            Some(v) => match self.mapping(v, &field) {
                Some(m) => m,
                None => return (None, None),
            },
        };
        self.check_keys(&hp, &field, HOST_PATH_KEYS);
        let path_field = join(&field, "path");
        let path = match hp.get("path") {
            None | Some(Value::Null) => {
                self.error(&path_field, "is required");
                None
            }
            Some(v) => self
                .string(v, &path_field)
                .and_then(|p| self.abs_path(&p, &path_field)),
        };
        let type_field = join(&field, "type");
        let path_type = match hp.get("type") {
            None | Some(Value::Null) => Some(HostPathType::Unset),
            Some(v) => self.string(v, &type_field).and_then(|t| {
                let parsed = HostPathType::parse(&t);
                if parsed.is_none() {
                    let names: Vec<&str> =
                        HostPathType::ALL[1..].iter().map(|t| t.as_str()).collect();
                    let hint = suggest(&t, &names)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    self.error(
                        &type_field,
                        format!(
                            "unknown type `{t}`{hint}; one of: \"\", {}",
                            names.join(", ")
                        ),
                    );
                }
                parsed
            }),
        };
        (path, path_type)
    }

    fn volume_mount(
        &mut self,
        map: &BTreeMap<String, Value>,
        prefix: &str,
        host_path: Option<&str>,
    ) -> (Option<String>, bool) {
        let field = join(prefix, "volumeMount");
        let vm = match map.get("volumeMount") {
            None | Some(Value::Null) => return (host_path.map(str::to_string), false),
            Some(v) => match self.mapping(v, &field) {
                Some(m) => m,
                None => return (None, false),
            },
        };
        for key in vm.keys() {
            if VOLUME_MOUNT_UNSUPPORTED.contains(&key.as_str()) {
                self.error(
                    &join(&field, key),
                    "is not supported: the kubelet's device-plugin mounts carry only mountPath and readOnly",
                );
            } else if !VOLUME_MOUNT_KEYS.contains(&key.as_str()) {
                self.unknown_key(&field, key, VOLUME_MOUNT_KEYS);
            }
        }
        if vm.contains_key("name") {
            self.warn(
                &join(&field, "name"),
                "is ignored: device-plugin mounts are named after their container path",
            );
        }
        let mp_field = join(&field, "mountPath");
        let mount_path = match vm.get("mountPath") {
            None | Some(Value::Null) => host_path.map(str::to_string),
            Some(v) => self
                .string(v, &mp_field)
                .and_then(|p| self.abs_path(&p, &mp_field)),
        };
        let read_only = self.boolean(&vm, "readOnly", &field);
        (mount_path, read_only)
    }

    fn envs(&mut self, map: &BTreeMap<String, Value>, prefix: &str) -> BTreeMap<String, String> {
        let field = join(prefix, "envs");
        let mut out = BTreeMap::new();
        let Some(v) = map.get("envs") else {
            return out;
        };
        if v.is_null() {
            return out;
        }
        let Some(m) = self.mapping(v, &field) else {
            return out;
        };
        for (k, val) in m {
            let f = join(&field, &k);
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                self.error(
                    &f,
                    "an environment variable name must be non-empty, without `=`",
                );
                continue;
            }
            let text = match val {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    self.error(
                        &f,
                        format!("expected a string value, found {}", kind_of(&other)),
                    );
                    continue;
                }
            };
            if text.contains('\0') {
                self.error(&f, "must not contain a NUL byte");
                continue;
            }
            out.insert(k, text);
        }
        out
    }

    /// Normalises an absolute path, recording an error or a warning.
    fn abs_path(&mut self, p: &str, field: &str) -> Option<String> {
        match normalize_path(p) {
            Ok(n) => {
                if n != p {
                    self.warn(field, format!("`{p}` is read as `{n}`"));
                }
                Some(n)
            }
            Err(msg) => {
                self.error(field, msg);
                None
            }
        }
    }

    fn cross_checks(&mut self, resources: &[Resource]) {
        let multi = resources.len() > 1;
        let field = |i: usize, key: &str| {
            if multi {
                format!("resources[{i}].{key}")
            } else {
                key.to_string()
            }
        };
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut sockets: HashMap<&str, usize> = HashMap::new();
        for (i, r) in resources.iter().enumerate() {
            if let Some(first) = names.insert(&r.resource_name, i) {
                self.error(
                    &field(i, "resourceName"),
                    format!(
                        "`{}` is already used by resources[{first}]",
                        r.resource_name
                    ),
                );
                names.insert(&r.resource_name, first);
            }
            if let Some(first) = sockets.insert(&r.socket_name, i) {
                self.error(
                    &field(i, "socketName"),
                    format!("`{}` is already used by resources[{first}]", r.socket_name),
                );
                sockets.insert(&r.socket_name, first);
            }
        }
    }
}

fn varint_len(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Encoded size of a ListAndWatchResponse with devices `"0"`..`"n-1"`, each
/// with a health word of `health_len` bytes and no topology.
pub fn list_and_watch_size(n: u64, health_len: usize) -> usize {
    let mut total = 0usize;
    let mut start = 0u64;
    // Group IDs by digit count: all IDs in a group encode to the same size.
    while start < n {
        let d = digits(start);
        let end = if d >= 19 {
            n
        } else {
            (10u64.pow(d as u32)).min(n)
        };
        let device = 1 + varint_len(d) + d + 1 + varint_len(health_len) + health_len;
        let entry = 1 + varint_len(device) + device;
        total = total.saturating_add(entry.saturating_mul((end - start) as usize));
        start = end;
    }
    total
}

/// The largest device count whose all-Unhealthy list fits the kubelet's limit.
pub fn max_devices() -> u64 {
    let (mut lo, mut hi) = (1u64, 1u64 << 32);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if list_and_watch_size(mid, UNHEALTHY.len()) <= MAX_MESSAGE_BYTES {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// Normalises an absolute path: collapses `//` and `.`, drops a trailing `/`.
/// Refuses relative paths and any `..` element before anything touches the
/// filesystem.
///
/// # Errors
///
/// A message saying what is wrong.
pub fn normalize_path(p: &str) -> Result<String, String> {
    if p.is_empty() {
        return Err("must not be empty".into());
    }
    if p.contains('\0') {
        return Err("must not contain a NUL byte".into());
    }
    if !p.starts_with('/') {
        return Err(format!("`{p}` must be an absolute path (start with `/`)"));
    }
    let mut parts = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("`{p}` must not contain `..`")),
            other => parts.push(other),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Why a path is sensitive (B16), or `None`: see [`crate::sensitive`].
pub fn sensitive_rule(path: &str) -> Option<crate::sensitive::Category> {
    crate::sensitive::classify(path)
}

/// The characters a socket name may use: ASCII letters, digits, `.`, `_`
/// and `-`, starting with a letter or digit. Nothing in it means anything
/// to a path (`/`), to gRPC's URI parser (`%`, `?`, `#`, `:`) or to the
/// kubelet's plugin watcher (a leading `.`), so the name the kubelet is told
/// and the file gRPC binds are one and the same.
///
/// # Errors
///
/// A message naming the first offending character, or the reserved name.
pub fn validate_socket_name(s: &str) -> Result<(), String> {
    let Some(first) = s.chars().next() else {
        return Err("must not be empty".into());
    };
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{}` contains {bad:?}: a socket name may use only ASCII letters, digits, `.`, `_` and `-`",
            s.escape_debug()
        ));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "`{s}` must start with a letter or digit (the kubelet's plugin watcher ignores names starting with `.`)"
        ));
    }
    if s == KUBELET_SOCKET || s == CHECKPOINT_FILE {
        return Err(format!("`{s}` belongs to the kubelet"));
    }
    Ok(())
}

fn validate_permissions(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("must not be empty: use letters from `rwm`".into());
    }
    let mut seen = [false; 3];
    for c in p.chars() {
        let i = match c {
            'r' => 0,
            'w' => 1,
            'm' => 2,
            _ => return Err(format!("`{p}` may contain only the letters r, w and m")),
        };
        if seen[i] {
            return Err(format!("`{p}` repeats `{c}`"));
        }
        seen[i] = true;
    }
    Ok(())
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// The kubelet's `IsExtendedResourceName` check (PROTOCOL.md §3.1), with a
/// message saying which rule failed.
///
/// # Errors
///
/// A message naming the rule the name breaks.
pub fn validate_extended_resource_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`{name}` is not a valid extended resource name: {why}"
        ))
    };
    let Some((domain, part)) = name.split_once('/') else {
        return bad("it needs a domain prefix, e.g. `example.com/disk`");
    };
    if name.contains("kubernetes.io/") {
        return bad("the `kubernetes.io/` prefix is reserved");
    }
    if name.starts_with("requests.") {
        return bad("names starting with `requests.` are reserved for quota");
    }
    if part.contains('/') {
        return bad("it may contain only one `/`");
    }
    let prefix = format!("requests.{domain}");
    if domain.is_empty() || !is_dns_subdomain(&prefix) {
        return bad("the domain must be lower-case letters, digits, `-` and `.`, each label starting and ending alphanumeric");
    }
    if prefix.len() > 253 {
        return bad("the domain must be at most 244 characters");
    }
    if part.len() > 63 {
        return bad("the part after `/` must be at most 63 characters");
    }
    if !is_qualified_name_part(part) {
        return bad("the part after `/` must be letters, digits, `-`, `_` or `.`, starting and ending alphanumeric");
    }
    Ok(())
}

/// Go's `time.ParseDuration` syntax, or an integer of nanoseconds (what the
/// original project's config accepted).
fn parse_interval(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(ns) => Ok(Duration::from_nanos(ns)),
            None => Err(format!("`{n}` must be a whole, non-negative number of nanoseconds, or a duration like `10s`")),
        },
        Value::String(s) => parse_go_duration(s),
        other => Err(format!("expected a duration like `10s`, found {}", kind_of(other))),
    }
}

/// Parses a Go duration string (`1h2m3.5s`, `500ms`, `250us`), non-negative.
///
/// # Errors
///
/// A message naming the bad duration.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("`{s}` is not a duration: use a number with a unit, e.g. `500ms`, `10s`, `1m`");
    let mut rest = s.trim();
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest.starts_with('-') {
        return Err(format!("`{s}` must not be negative"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = tail;
    }
    if !total.is_finite() || total > 1e9 {
        return Err(format!("`{s}` is too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// The closest known key, when it is close enough to be a plausible typo.
fn suggest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (levenshtein(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.resource_name)?;
        writeln!(f, "  socket:       {}", self.socket_name)?;
        writeln!(
            f,
            "  devices:      {} (IDs 0..{})",
            self.num_devices,
            self.num_devices - 1
        )?;
        writeln!(f, "  host path:    {} ({})", self.host_path, self.path_type)?;
        if self.path_type.is_device() {
            writeln!(
                f,
                "  device:       {} in the container, permissions {}",
                self.mount_path, self.permissions
            )?;
        } else {
            writeln!(
                f,
                "  mount:        {} in the container, {}",
                self.mount_path,
                if self.read_only {
                    "read-only"
                } else {
                    "read-write"
                }
            )?;
        }
        for (k, v) in &self.envs {
            writeln!(f, "  env:          {k}={v}")?;
        }
        if self.require_mount_point {
            writeln!(f, "  requires:     a mount point")?;
        }
        write!(f, "  health check: every {:?}", self.health_check_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Config {
        match parse(text, "c.yaml", Path::new("/var/lib/kubelet/device-plugins")) {
            Ok(l) => l.config,
            Err(e) => panic!("expected valid config, got:\n{e}"),
        }
    }

    fn errs(text: &str) -> Vec<String> {
        match parse(text, "c.yaml", Path::new("/var/lib/kubelet/device-plugins")) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn original_example_loads_unchanged() {
        let c = ok("resourceName: hostpath-device.k8s.io/sample\nsocketName: hostpath-device.k8s.io-sample.sock\n\
                    numDevices: 100\nhostPath:\n  path: /sample\n  type: Directory\nvolumeMount:\n  mountPath: /sample\n  readOnly: false\n");
        let r = &c.resources[0];
        assert_eq!(r.resource_name, "hostpath-device.k8s.io/sample");
        assert_eq!(r.socket_name, "hostpath-device.k8s.io-sample.sock");
        assert_eq!(r.num_devices, 100);
        assert_eq!(r.path_type, HostPathType::Directory);
        assert_eq!(r.mount_path, "/sample");
        assert_eq!(r.health_check_interval, Duration::from_secs(10));
    }

    #[test]
    fn defaults() {
        let c = ok("resources:\n- resourceName: example.com/kvm\n  hostPath: {path: /dev/kvm, type: CharDevice}\n");
        let r = &c.resources[0];
        assert_eq!(r.socket_name, "example.com-kvm.sock");
        assert_eq!(r.num_devices, 100);
        assert_eq!(r.mount_path, "/dev/kvm");
        assert_eq!(r.permissions, "rw");
        let c = ok(
            "resourceName: example.com/x\nhostPath: {path: /x}\nvolumeMount: {readOnly: true}\n",
        );
        assert_eq!(c.resources[0].permissions, "r");
        assert_eq!(c.resources[0].path_type, HostPathType::Unset);
    }

    #[test]
    fn resource_name_vectors() {
        let long_domain = format!("{}/x", "a".repeat(244));
        let too_long_domain = format!("{}/x", "a".repeat(245));
        let name63 = format!("example.com/{}", "a".repeat(63));
        let name64 = format!("example.com/{}", "a".repeat(64));
        let cases: &[(&str, bool)] = &[
            ("hostpath-device.k8s.io/sample", true),
            ("example.com/foo", true),
            ("foo", false),
            ("kubernetes.io/foo", false),
            ("nvidia.kubernetes.io/gpu", false),
            ("kubernetes.io.example.com/foo", true),
            ("requests.example.com/foo", false),
            ("example.com/requests.foo", true),
            (&name63, true),
            (&name64, false),
            (&long_domain, true),
            (&too_long_domain, false),
            ("Example.com/foo", false),
            ("example.com/Foo_Bar.baz", true),
            ("example.com/-foo", false),
            ("example.com/foo/bar", false),
            ("example_com/foo", false),
        ];
        for (name, accepted) in cases {
            assert_eq!(
                validate_extended_resource_name(name).is_ok(),
                *accepted,
                "{name}: {:?}",
                validate_extended_resource_name(name)
            );
        }
    }

    #[test]
    fn every_error_reported_with_field_path() {
        let e = errs(
            "resources:\n- resourceName: foo\n  hostPath: {path: relative}\n\
             - resourceName: example.com/b\n  hostPath: {path: /b, type: Dir}\n  numDevces: 3\n",
        );
        let all = e.join("\n");
        assert!(
            all.contains("c.yaml: resources[0].resourceName: `foo` is not a valid"),
            "{all}"
        );
        assert!(
            all.contains("resources[0].hostPath.path: `relative` must be an absolute path"),
            "{all}"
        );
        assert!(
            all.contains("resources[1].hostPath.type: unknown type `Dir`"),
            "{all}"
        );
        assert!(
            all.contains("resources[1].numDevces: unknown key; did you mean `numDevices`?"),
            "{all}"
        );
        assert_eq!(e.len(), 4, "{all}");
    }

    #[test]
    fn paths_normalised_or_refused() {
        assert_eq!(normalize_path("/a//b/./c/").unwrap(), "/a/b/c");
        assert_eq!(normalize_path("/").unwrap(), "/");
        assert!(normalize_path("/a/../etc").unwrap_err().contains(".."));
        assert!(normalize_path("a/b").unwrap_err().contains("absolute"));
        let l = parse(
            "resourceName: example.com/x\nhostPath: {path: /data//x/}\n",
            "c",
            Path::new("/d"),
        )
        .unwrap();
        assert_eq!(l.config.resources[0].host_path, "/data/x");
        assert_eq!(l.warnings.len(), 1);
    }

    #[test]
    fn size_bound_matches_encoder() {
        use crate::api::v1beta1::{Device, ListAndWatchResponse};
        use protobuf::Message;
        for n in [1u64, 9, 10, 11, 100, 1000, 12345] {
            let mut resp = ListAndWatchResponse::new();
            for i in 0..n {
                let mut d = Device::new();
                d.ID = i.to_string();
                d.health = UNHEALTHY.to_string();
                resp.devices.push(d);
            }
            assert_eq!(
                resp.compute_size() as usize,
                list_and_watch_size(n, UNHEALTHY.len()),
                "n={n}"
            );
        }
        let max = max_devices();
        assert!((200_000..210_000).contains(&max), "{max}");
        assert!(list_and_watch_size(max + 1, UNHEALTHY.len()) > MAX_MESSAGE_BYTES);
        let e = errs(&format!(
            "resourceName: example.com/x\nhostPath: {{path: /x}}\nnumDevices: {}\n",
            max + 1
        ));
        assert!(
            e[0].contains("over the kubelet's limit of 4194304 bytes"),
            "{e:?}"
        );
        ok(&format!(
            "resourceName: example.com/x\nhostPath: {{path: /x}}\nnumDevices: {max}\n"
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_go_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("1.5h").unwrap(),
            Duration::from_secs(5400)
        );
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("-1s").is_err());
        assert!(parse_go_duration("1x").is_err());
        let c = ok(
            "resourceName: example.com/x\nhostPath: {path: /x}\nhealthCheckInterval: 2000000000\n",
        );
        assert_eq!(c.resources[0].health_check_interval, Duration::from_secs(2));
        let e =
            errs("resourceName: example.com/x\nhostPath: {path: /x}\nhealthCheckInterval: 50ms\n");
        assert!(e[0].contains("minimum is 100ms"), "{e:?}");
    }

    #[test]
    fn sensitive_paths() {
        for p in [
            "/",
            "/etc",
            "/proc",
            "/sys",
            "/dev",
            "/boot",
            "/root",
            "/var/lib/kubelet",
            "/var/lib/kubelet/pods",
            "/run/containerd",
            "/run/containerd/containerd.sock",
            "/var/run/docker.sock",
            "/run/docker.sock",
            "/var/run/crio",
        ] {
            assert!(sensitive_rule(p).is_some(), "{p}");
            let e = errs(&format!(
                "resourceName: example.com/x\nhostPath: {{path: {p}}}\n"
            ));
            assert!(e[0].contains("allowSensitivePath"), "{e:?}");
            ok(&format!(
                "resourceName: example.com/x\nhostPath: {{path: {p}}}\nallowSensitivePath: true\n"
            ));
        }
        for p in ["/dev/kvm", "/etc2", "/var/lib/kubelet2", "/data", "/sys2"] {
            assert!(sensitive_rule(p).is_none(), "{p}");
        }
    }

    #[test]
    fn duplicates_and_mixing() {
        let e = errs("resources:\n- {resourceName: example.com/a, hostPath: {path: /a}}\n\
                      - {resourceName: example.com/a, socketName: example.com-a.sock, hostPath: {path: /b}}\n");
        let all = e.join("\n");
        assert!(
            all.contains(
                "resources[1].resourceName: `example.com/a` is already used by resources[0]"
            ),
            "{all}"
        );
        assert!(
            all.contains(
                "resources[1].socketName: `example.com-a.sock` is already used by resources[0]"
            ),
            "{all}"
        );
        let e = errs("resourceName: example.com/a\nresources: []\n");
        assert!(
            e.iter()
                .any(|m| m.contains("resourceName: cannot be mixed")),
            "{e:?}"
        );
    }

    #[test]
    fn volume_mount_rules() {
        let l = parse("resourceName: example.com/x\nhostPath: {path: /x}\nvolumeMount: {name: v, mountPath: /y}\n", "c", Path::new("/d")).unwrap();
        assert!(l.warnings[0]
            .to_string()
            .contains("volumeMount.name: is ignored"));
        assert_eq!(l.config.resources[0].mount_path, "/y");
        let e = errs("resourceName: example.com/x\nhostPath: {path: /x}\nvolumeMount: {subPath: a, mountPropagation: Bidirectional}\n");
        assert_eq!(e.len(), 2);
        assert!(e[0].contains("is not supported"), "{e:?}");
    }

    #[test]
    fn socket_and_permission_rules() {
        let long = "a".repeat(100);
        let e = errs(&format!(
            "resourceName: example.com/x\nsocketName: {long}.sock\nhostPath: {{path: /x}}\n"
        ));
        assert!(e[0].contains("over the 107-byte limit"), "{e:?}");
        for bad in [
            "a/b.sock",
            ".hidden.sock",
            "kubelet.sock",
            "kubelet_internal_checkpoint",
            "",
        ] {
            let e = errs(&format!(
                "resourceName: example.com/x\nsocketName: \"{bad}\"\nhostPath: {{path: /x}}\n"
            ));
            assert!(e[0].contains("socketName"), "{bad}: {e:?}");
        }
        let e = errs(
            "resourceName: example.com/x\nhostPath: {path: /x, type: Directory}\npermissions: rw\n",
        );
        assert!(
            e[0].contains("applies only to hostPath.type CharDevice or BlockDevice"),
            "{e:?}"
        );
        let e = errs("resourceName: example.com/x\nhostPath: {path: /dev/x, type: CharDevice}\npermissions: rx\n");
        assert!(e[0].contains("only the letters r, w and m"), "{e:?}");
    }

    #[test]
    fn nesting_is_bounded_before_parsing() {
        let real = "resources:\n  - resourceName: example.com/a\n    hostPath: {path: /a, type: Directory}\n    envs:\n      A: \"[x\"\n    volumeMount:\n      mountPath: /b\n";
        assert!(nesting_depth(real).0 <= 8, "{:?}", nesting_depth(real));
        ok(real);
        let flow = format!("resources: {}{}\n", "[".repeat(65), "]".repeat(65));
        assert!(nesting_depth(&flow).0 > MAX_NESTING);
        let e = errs(&flow);
        assert!(
            e[0].contains("nesting about") && e[0].contains("line 1"),
            "{e:?}"
        );
        let compact = format!("resources:\n{}x\n", "- ".repeat(70));
        assert!(errs(&compact)[0].contains("nesting"));
        // Glob brackets inside a plain scalar open no collection.
        assert!(nesting_depth("a: /dev/tty[0-9]\nb: [1, [2]]\n").0 <= 3);
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 9].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        text.push_str("resourceName: example.com/x\nhostPath: {path: /x}\n");
        let e = errs(&text);
        assert!(e.iter().any(|m| m.contains("repetition limit")), "{e:?}");
    }

    #[test]
    fn type_errors_and_empty() {
        let e = errs("");
        assert!(
            e[0].contains("expected a mapping") || e[0].contains("empty"),
            "{e:?}"
        );
        let e = errs("resourceName: example.com/x\nhostPath: {path: /x}\nnumDevices: many\nrequireMountPoint: yes\n");
        assert!(
            e.iter()
                .any(|m| m.contains("numDevices: expected a number, found a string")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("requireMountPoint: expected true or false")),
            "{e:?}"
        );
        let e = errs("resourceName: example.com/x\nhostPath: {path: /x}\nnumDevices: 0\n");
        assert!(e[0].contains("at least 1"), "{e:?}");
        let e = errs("resources: [\n");
        assert!(e[0].contains("not valid YAML"), "{e:?}");
    }
}
