//! The validator: walks the YAML value tree, checks every key and rule,
//! collects every problem with its field path.

use super::rules::{join, kind_of};
use super::*;
use crate::core::given::env_names;
use crate::core::glob;
use crate::core::resource::{NodeRule, Perm, Source};

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
    "usb",
    "nodes",
    "group",
    "removeAfter",
    "api",
];
pub(super) const HOST_PATH_KEYS: &[&str] = &["path", "type"];
pub(super) const VOLUME_MOUNT_KEYS: &[&str] = &["mountPath", "readOnly", "name"];
/// Keys of a Kubernetes VolumeMount that a device plugin's Mount cannot carry.
pub(super) const VOLUME_MOUNT_UNSUPPORTED: &[&str] =
    &["subPath", "subPathExpr", "mountPropagation"];

/// Where a USB resource's nodes live.
pub(super) const USB_DIR: &str = "/dev/bus/usb";

/// Which of the native forms a resource uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    Path,
    Usb,
    Group,
}

pub(super) struct Validator {
    pub(super) file: String,
    /// Settings from the command line over the file's (`--domain`).
    pub(super) overrides: Overrides,
    pub(super) socket_dir: PathBuf,
    pub(super) errors: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
}

/// Joins a field path: `join("resources[0]", "hostPath")`.
impl Validator {
    pub(super) fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(Problem {
            file: self.file.clone(),
            field: field.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn warn(&mut self, field: &str, message: impl Into<String>) {
        self.warnings.push(Problem {
            file: self.file.clone(),
            field: field.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn document(&mut self, text: &str) -> Vec<Resource> {
        let mut root: Value = match serde_yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                self.error("", format!("not valid YAML: {e}"));
                return Vec::new();
            }
        };
        // `<<: *anchor` merge keys, as generic-device-plugin's parser applies.
        if let Err(e) = root.apply_merge() {
            self.error("", format!("a YAML merge key (`<<`): {e}"));
            return Vec::new();
        }
        let Some(map) = self.mapping(&root, "") else {
            return Vec::new();
        };
        if map.is_empty() {
            self.error("", "the config is empty: it needs `resourceName` and `hostPath`, or a `resources` list");
            return Vec::new();
        }
        let resources = if map.contains_key("devices") && !map.contains_key("resources") {
            self.generic_document(&map)
        } else if map.contains_key("resources") {
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
    pub(super) fn mapping(&mut self, v: &Value, field: &str) -> Option<BTreeMap<String, Value>> {
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

    pub(super) fn unknown_key(&mut self, prefix: &str, key: &str, known: &[&str]) {
        let hint = match suggest(key, known) {
            Some(s) => format!("; did you mean `{s}`?"),
            None => format!("; known keys: {}", known.join(", ")),
        };
        self.error(&join(prefix, key), format!("unknown key{hint}"));
    }

    pub(super) fn check_keys(
        &mut self,
        map: &BTreeMap<String, Value>,
        prefix: &str,
        known: &[&str],
    ) {
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                self.unknown_key(prefix, key, known);
            }
        }
    }

    fn resource_list(&mut self, v: &Value) -> Vec<Resource> {
        let mut out = Vec::new();
        for (field, map) in self.mappings(v, "resources", "resources", "resource") {
            out.extend(self.resource(&map, &field));
        }
        out
    }

    /// A list of mappings at `field` (`what`: its entries, in messages;
    /// `one`: one of them, for "at least one"; empty for an empty list
    /// being fine): each entry with its own field path. A value that is not
    /// a list, and entries that are not mappings, are reported.
    pub(super) fn mappings(
        &mut self,
        v: &Value,
        field: &str,
        what: &str,
        one: &str,
    ) -> Vec<(String, BTreeMap<String, Value>)> {
        let Value::Sequence(items) = v else {
            self.error(
                field,
                format!("expected a list of {what}, found {}", kind_of(v)),
            );
            return Vec::new();
        };
        if items.is_empty() && !one.is_empty() {
            self.error(field, format!("must list at least one {one}"));
        }
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let f = format!("{field}[{i}]");
            if let Some(m) = self.mapping(item, &f) {
                out.push((f, m));
            }
        }
        out
    }

    pub(super) fn string(&mut self, v: &Value, field: &str) -> Option<String> {
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

    /// A required string under `key`; its absence names an example.
    pub(super) fn required_string(
        &mut self,
        map: &BTreeMap<String, Value>,
        key: &str,
        prefix: &str,
        example: &str,
    ) -> Option<String> {
        let field = join(prefix, key);
        match map.get(key) {
            None | Some(Value::Null) => {
                self.error(&field, format!("is required (e.g. `{example}`)"));
                None
            }
            Some(v) => self.string(v, &field),
        }
    }

    pub(super) fn boolean(
        &mut self,
        map: &BTreeMap<String, Value>,
        key: &str,
        prefix: &str,
    ) -> bool {
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
        let resource_name = self.required_string(map, "resourceName", prefix, "example.com/disk");
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

        let dynamic = devices::is_dynamic(map);
        let num_field = join(prefix, "numDevices");
        let default_num = if dynamic { 1 } else { DEFAULT_NUM_DEVICES };
        let num_devices = match map.get("numDevices") {
            None | Some(Value::Null) => default_num,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) if n >= 1 => n,
                _ => {
                    self.error(
                        &num_field,
                        format!("must be a whole number of at least 1, found {n}"),
                    );
                    default_num
                }
            },
            Some(other) => {
                self.error(
                    &num_field,
                    format!("expected a number, found {}", kind_of(other)),
                );
                default_num
            }
        };
        let max = max_devices();
        if dynamic {
            self.slots_fit(&num_field, num_devices);
        } else if num_devices > max {
            let size = list_and_watch_size(num_devices, UNHEALTHY.len());
            self.error(
                &num_field,
                format!(
                    "{num_devices} devices make a ListAndWatch message of {size} bytes when all are Unhealthy, \
                     over the kubelet's limit of {MAX_MESSAGE_BYTES} bytes; at most {max} devices fit"
                ),
            );
        }
        let allow_sensitive_path = self.boolean(map, "allowSensitivePath", prefix);

        let source = if map.contains_key("usb") {
            for key in ["hostPath", "volumeMount", "group"] {
                if map.contains_key(key) {
                    self.error(
                        &join(prefix, key),
                        "cannot be combined with `usb`: a USB device is handed out as its nodes; \
                         give where they go in `nodes` (e.g. [{subsystem: tty, mountPath: /dev/zigbee}])",
                    );
                }
            }
            Form::Usb
        } else if map.contains_key("nodes") {
            self.error(
                &join(prefix, "nodes"),
                "applies only with `usb`: it chooses which nodes of each USB device are handed out",
            );
            Form::Path
        } else if map.contains_key("group") {
            for key in ["hostPath", "volumeMount", "permissions"] {
                if map.contains_key(key) {
                    self.error(
                        &join(prefix, key),
                        "cannot be combined with `group`: give it on each member of the group",
                    );
                }
            }
            Form::Group
        } else {
            Form::Path
        };
        let (host_path, path_type) = match source {
            Form::Path => self.host_path(map, prefix),
            Form::Usb => (Some(USB_DIR.to_string()), Some(HostPathType::CharDevice)),
            Form::Group => (None, Some(HostPathType::Unset)),
        };
        let pattern = source == Form::Path && host_path.as_deref().is_some_and(glob::has_glob);
        let host_path = match (&source, pattern) {
            (Form::Path, true) => {
                self.pattern_meaning(
                    &join(prefix, "hostPath.path"),
                    host_path.as_deref(),
                    prefix.is_empty(),
                );
                host_path
            }
            (Form::Path, false) => host_path.map(|p| glob::unescape(&p)),
            _ => host_path,
        };
        let (mount_path, read_only) = match source {
            Form::Path => self.volume_mount(map, prefix, host_path.as_deref()),
            _ => (host_path.clone(), false),
        };

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
                        let fits = t.is_device() || (pattern && t == HostPathType::Unset);
                        if !fits {
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
        let remove_after = self.remove_after(map, prefix, dynamic);
        let api = self.api(map, prefix);
        let count = u32::try_from(num_devices).unwrap_or(1);

        let mut host_path = host_path;
        let discovery = match source {
            Form::Usb => {
                let selectors = self.usb_selectors(&map["usb"], &join(prefix, "usb"), false);
                let perm = Perm::from_letters(&permissions);
                let nodes = match map.get("nodes") {
                    Some(v) => self.node_rules(v, &join(prefix, "nodes"), perm),
                    None => vec![NodeRule::raw(perm)],
                };
                Some(devices::single(
                    Source::Usb { selectors, nodes },
                    count,
                    remove_after,
                ))
            }
            Form::Group => {
                let rules =
                    self.group_rules(&map["group"], &join(prefix, "group"), allow_sensitive_path);
                host_path = rules.first().map(|r| r.pattern.clone());
                Some(devices::single(Source::Paths(rules), count, remove_after))
            }
            Form::Path if pattern => {
                let path = host_path.clone().unwrap_or_default();
                let kind = path_type.and_then(devices::match_kind);
                if kind.is_none() {
                    if let Some(t) = path_type {
                        self.error(
                            &join(prefix, "hostPath.type"),
                            format!(
                                "{} cannot be used with a pattern: nothing is created for a pattern",
                                t.as_str()
                            ),
                        );
                    }
                }
                let mp = mount_path.clone().filter(|m| *m != path);
                if mp.as_deref().is_some_and(devices::is_fixed) {
                    self.shared_mount_warning(&join(prefix, "volumeMount.mountPath"));
                }
                kind.and_then(|kind| {
                    self.path_rule(
                        &join(prefix, "hostPath.path"),
                        &path,
                        kind,
                        mp,
                        read_only,
                        Perm::from_letters(&permissions),
                        1,
                        allow_sensitive_path,
                    )
                })
                .map(|rule| devices::single(Source::Paths(vec![rule]), count, remove_after))
            }
            Form::Path => None,
        };

        if source == Form::Path && !pattern {
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
        }

        if self.errors.len() > errors_before {
            return None;
        }
        let mount_path = if source == Form::Group {
            host_path.clone()
        } else {
            mount_path
        };
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
            discovery,
            api,
            from_generic_device_plugin: false,
        };
        self.answer_fits(r, prefix)
    }

    /// A pattern with one container path: every match lands there.
    pub(super) fn shared_mount_warning(&mut self, field: &str) {
        self.warn(
            field,
            "puts every match of the pattern at this one container path: a container given \
             several of these devices is refused (two host paths cannot share one container path)",
        );
    }

    /// The fixed Allocate answer must fit the kubelet's message limit.
    pub(super) fn answer_fits(&mut self, r: Resource, prefix: &str) -> Option<Resource> {
        let bytes = super::rules::allocate_answer_size(&r);
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
        // The variables that tell a container which devices it got (B20).
        let mut told: HashMap<String, usize> = HashMap::new();
        for (i, r) in resources.iter().enumerate() {
            for name in env_names(&r.resource_name) {
                if r.envs.contains_key(&name) {
                    self.error(
                        &field(i, "envs"),
                        format!(
                            "`{name}` is set by the daemon: it lists the devices a container \
                             was given; choose another name"
                        ),
                    );
                }
                if let Some(first) = told.insert(name.clone(), i) {
                    if first != i {
                        self.warn(
                            &field(i, "resourceName"),
                            format!(
                                "its devices are listed in `{name}`, as those of resources[{first}] \
                                 ({}) are: a container given both sees only one list",
                                resources[first].resource_name
                            ),
                        );
                    }
                    told.insert(name, first);
                }
            }
        }
    }
}
