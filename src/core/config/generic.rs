//! Form C: generic-device-plugin's config file, read unchanged. A top-level
//! `devices:` list of `{name, groups: [{paths, usb, count}]}` and an
//! optional `domain`; each device becomes one resource `<domain>/<name>`.
//! That project's own keys for its command line (`plugin-directory`,
//! `listen`, `log-level`) are accepted with a warning saying what applies.

use super::devices::DEFAULT_REMOVE_AFTER;
use super::rules::{join, kind_of};
use super::*;
use crate::core::resource::{Discovery, Group, MatchKind, NodeRule, Perm, Source};

/// The domain generic-device-plugin declares devices under unless told.
pub const GENERIC_DEFAULT_DOMAIN: &str = "devic.es";

const TOP_KEYS: &[&str] = &[
    "devices",
    "domain",
    "plugin-directory",
    "listen",
    "log-level",
];
const DEVICE_KEYS: &[&str] = &["name", "groups"];
const GROUP_KEYS: &[&str] = &["paths", "usb", "count"];
const PATH_KEYS: &[&str] = &[
    "path",
    "mountPath",
    "type",
    "permissions",
    "readOnly",
    "limit",
    "optional",
];

/// Whether a device name is what generic-device-plugin accepts:
/// lower-case letters, digits and `-`, not starting or ending with `-`.
fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

impl Validator {
    pub(super) fn generic_document(&mut self, map: &BTreeMap<String, Value>) -> Vec<Resource> {
        for key in map.keys() {
            if !TOP_KEYS.contains(&key.as_str()) {
                if RESOURCE_KEYS_HINT.contains(&key.as_str()) {
                    self.error(
                        key,
                        "cannot be mixed with a generic-device-plugin `devices` list",
                    );
                } else {
                    self.unknown_key("", key, TOP_KEYS);
                }
            }
        }
        let said = |k: &str| match k {
            "plugin-directory" => "is ignored: sockets go where --device-plugin-dir says",
            "listen" => "is ignored: pass --listen (as generic-device-plugin's DaemonSets do)",
            _ => "is ignored: pass --log-level, or set RUST_LOG (default info)",
        };
        for k in ["plugin-directory", "listen", "log-level"] {
            if map.contains_key(k) {
                self.warn(k, said(k));
            }
        }
        let domain = match (self.overrides.domain.clone(), map.get("domain")) {
            (Some(d), _) => {
                if !crate::kubelet::is_dns_subdomain(&d) {
                    self.error(
                        "domain",
                        format!("--domain `{}` is not a DNS subdomain", d.escape_debug()),
                    );
                }
                d
            }
            (None, None | Some(Value::Null)) => {
                if map.contains_key("devices") {
                    self.warn(
                        "domain",
                        format!(
                            "not set: resources are named {GENERIC_DEFAULT_DOMAIN}/<name>, the \
                             default of generic-device-plugin 0.2 (0.1 used squat.ai; set \
                             `domain: squat.ai` or --domain squat.ai to keep those names)"
                        ),
                    );
                }
                GENERIC_DEFAULT_DOMAIN.to_string()
            }
            (None, Some(v)) => self.string(v, "domain").unwrap_or_default(),
        };
        let mut out = Vec::new();
        for (field, m) in self.mappings(&map["devices"], "devices", "devices", "device") {
            out.extend(self.generic_device(&m, &field, &domain));
        }
        out
    }

    fn generic_device(
        &mut self,
        map: &BTreeMap<String, Value>,
        prefix: &str,
        domain: &str,
    ) -> Option<Resource> {
        let errors_before = self.errors.len();
        self.check_keys(map, prefix, DEVICE_KEYS);
        let name_field = join(prefix, "name");
        let name = self.required_string(map, "name", prefix, "serial");
        if let Some(n) = &name {
            if !valid_name(n) {
                self.error(
                    &name_field,
                    format!("`{n}` must be lower-case letters, digits and `-`, not starting or ending with `-`"),
                );
            }
        }
        let resource_name = name.as_ref().map(|n| format!("{domain}/{n}"));
        if let Some(rn) = &resource_name {
            if let Err(msg) = validate_extended_resource_name(rn) {
                self.error(&name_field, format!("the resource name {rn}: {msg}"));
            }
        }
        let socket_name = resource_name
            .as_ref()
            .map(|n| format!("{}.sock", n.replace('/', "-")));
        if let Some(s) = &socket_name {
            self.socket_name(s, &name_field);
        }
        let groups_field = join(prefix, "groups");
        let mut groups = Vec::new();
        match map.get("groups") {
            None | Some(Value::Null) => {
                self.error(&groups_field, "is required: a list of {paths, usb, count}")
            }
            Some(v) => {
                for (f, m) in self.mappings(v, &groups_field, "groups", "group") {
                    groups.extend(self.generic_group(&m, &f));
                }
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        let first = groups.first().map_or(String::new(), |g| match &g.source {
            Source::Paths(rules) => rules.first().map_or(String::new(), |r| r.pattern.clone()),
            Source::Usb { .. } => super::validate::USB_DIR.to_string(),
        });
        Some(Resource {
            resource_name: resource_name?,
            socket_name: socket_name?,
            num_devices: 1,
            host_path: first.clone(),
            path_type: HostPathType::Unset,
            mount_path: first,
            read_only: false,
            permissions: "rw".into(),
            envs: BTreeMap::new(),
            require_mount_point: false,
            health_check_interval: DEFAULT_HEALTH_INTERVAL,
            allow_sensitive_path: false,
            discovery: Some(Discovery {
                groups,
                remove_after: DEFAULT_REMOVE_AFTER,
            }),
            api: Default::default(),
            from_generic_device_plugin: true,
        })
    }

    fn generic_group(&mut self, map: &BTreeMap<String, Value>, prefix: &str) -> Option<Group> {
        self.check_keys(map, prefix, GROUP_KEYS);
        let count = self.count(map, "count", prefix, 1);
        self.slots_fit(&join(prefix, "count"), u64::from(count));
        let has = |k: &str| map.get(k).is_some_and(|v| !v.is_null());
        match (has("paths"), has("usb")) {
            (true, true) => {
                self.error(prefix, "a group has either `paths` or `usb`, not both");
                None
            }
            (false, false) => {
                self.error(prefix, "a group needs `paths` or `usb`");
                None
            }
            (false, true) => {
                let selectors = self.usb_selectors(&map["usb"], &join(prefix, "usb"), true);
                Some(Group {
                    source: Source::Usb {
                        selectors,
                        nodes: vec![NodeRule::raw(Perm::from_letters("rw"))],
                    },
                    count,
                })
            }
            (true, false) => {
                let field = join(prefix, "paths");
                let mut rules = Vec::new();
                for (f, m) in self.mappings(&map["paths"], &field, "paths", "path") {
                    rules.extend(self.generic_path(&m, &f));
                }
                if !crate::core::discovery::pairs_by_captures(&rules) {
                    self.warn(
                        &field,
                        "these paths' wildcards differ in number, so their matches pair by sorted \
                         position, as generic-device-plugin does: a device whose path belongs to \
                         another device is not listed until that one is gone",
                    );
                }
                Some(Group {
                    source: Source::Paths(rules),
                    count,
                })
            }
        }
    }

    fn generic_path(
        &mut self,
        map: &BTreeMap<String, Value>,
        prefix: &str,
    ) -> Option<crate::core::resource::PathRule> {
        self.check_keys(map, prefix, PATH_KEYS);
        let path_field = join(prefix, "path");
        let path = self.required_abs_path(map, "path", prefix);
        let mp_field = join(prefix, "mountPath");
        let mount_path = match map.get("mountPath") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            // 0.2: a trailing `/` is a directory each match keeps its name in.
            Some(v) => self.container_template(v, &mp_field, true),
        };
        let type_field = join(prefix, "type");
        let kind = match map.get("type") {
            None | Some(Value::Null) => Some(MatchKind::AnyDevice),
            Some(Value::String(s)) if s == "Device" || s.is_empty() => Some(MatchKind::AnyDevice),
            Some(Value::String(s)) if s == "Mount" => Some(MatchKind::Mount),
            Some(other) => {
                let shown = other
                    .as_str()
                    .map_or_else(|| kind_of(other).to_string(), |s| format!("`{s}`"));
                self.error(
                    &type_field,
                    format!("{shown} is not a type: `Device` or `Mount`"),
                );
                None
            }
        };
        let perm_field = join(prefix, "permissions");
        let permissions = match map.get("permissions") {
            None | Some(Value::Null) => "mrw".to_string(),
            Some(Value::String(s)) if s.is_empty() => "mrw".to_string(),
            Some(v) => {
                let p = self.string(v, &perm_field).unwrap_or_default();
                if let Err(msg) = validate_permissions(&p) {
                    self.error(&perm_field, msg);
                }
                p
            }
        };
        let read_only = self.boolean(map, "readOnly", prefix);
        let limit = self.count(map, "limit", prefix, 1);
        let optional = self.boolean(map, "optional", prefix);
        let (path, kind) = (path?, kind?);
        let mount_path = mount_path.filter(|m| *m != path);
        if mount_path.as_deref().is_some_and(super::devices::is_fixed)
            && crate::core::glob::has_glob(&path)
        {
            self.shared_mount_warning(&mp_field);
        }
        let mut rule = self.path_rule(
            &path_field,
            &path,
            kind,
            mount_path,
            read_only,
            Perm::from_letters(&permissions),
            limit,
            false,
        )?;
        rule.optional = optional;
        Some(rule)
    }
}

/// Native keys that hint at a mixed file.
const RESOURCE_KEYS_HINT: &[&str] = &["resources", "resourceName", "hostPath", "socketName"];

/// A generic-device-plugin config document made from its `--device` flags
/// (each a JSON or YAML object, as that project takes them), to validate
/// like a file named `--device`.
///
/// # Errors
///
/// A [`ConfigError`] naming the flag (by position) that is not an object.
pub fn document_from_flags(devices: &[String]) -> Result<String, ConfigError> {
    let mut list = Vec::new();
    let mut problems = Vec::new();
    for (i, text) in devices.iter().enumerate() {
        let field = format!("--device #{}", i + 1);
        match serde_yaml::from_str::<Value>(text) {
            Ok(v @ Value::Mapping(_)) => list.push(v),
            Ok(other) => problems.push(Problem {
                file: "--device".into(),
                field,
                message: format!(
                    "is {}, not an object like {{\"name\": \"serial\", \"groups\": [...]}}",
                    kind_of(&other)
                ),
            }),
            Err(e) => problems.push(Problem {
                file: "--device".into(),
                field,
                message: format!("is neither JSON nor YAML: {e}"),
            }),
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    let mut doc = serde_yaml::Mapping::new();
    doc.insert(Value::from("devices"), Value::Sequence(list));
    serde_yaml::to_string(&Value::Mapping(doc)).map_err(|e| ConfigError {
        problems: vec![Problem {
            file: "--device".into(),
            field: String::new(),
            message: e.to_string(),
        }],
    })
}
