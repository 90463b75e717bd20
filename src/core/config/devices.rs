//! The native keys for devices that come and go (B15): a pattern in
//! `hostPath.path`, `usb` selectors, a `group` of paths handed out
//! together, and `removeAfter`.

use super::rules::{join, kind_of};
use super::*;
use crate::core::discovery;
use crate::core::glob;
use crate::core::resource::{
    Discovery, Group, MatchKind, NodeRule, PathRule, Perm, Source, Subsystem, UsbSelector, NUMBER,
};
use crate::core::sensitive::Category;
use crate::text::shown;

pub(super) const DEFAULT_REMOVE_AFTER: Duration = Duration::from_secs(60);
const USB_KEYS: &[&str] = &["vendor", "product", "serial"];
/// generic-device-plugin's USB entries (0.2): also where the node lands.
const GENERIC_USB_KEYS: &[&str] = &["vendor", "product", "serial", "mountPath"];
const NODE_KEYS: &[&str] = &["subsystem", "name", "mountPath", "permissions"];
const MEMBER_KEYS: &[&str] = &["hostPath", "volumeMount", "permissions", "limit"];

/// Where a pattern's sensitive reach is tested: every tree and path the
/// rule of B16 names, with `/var/run` spellings of `/run` ones.
pub(super) fn sensitive_reach(components: &[glob::Component]) -> Option<(String, Category)> {
    use crate::core::sensitive::{classify, roots};
    for (root, subtree) in roots() {
        let spellings = match root.strip_prefix("/run") {
            Some(rest) => vec![root.to_string(), format!("/var/run{rest}")],
            None => vec![root.to_string()],
        };
        for s in spellings {
            if glob::could_reach(components, &s, subtree) {
                return classify(&s).map(|c| (s, c));
            }
        }
    }
    // `/etc/sudoers*`: any name that starts so.
    let etc_name = |c: &[glob::Component]| c.len() == 2 && c[0].matches("etc");
    if etc_name(components) && components[1].could_start_with("sudoers") {
        return Some(("/etc/sudoers*".into(), Category::Credentials));
    }
    if let Some(hit) = session_reach(components) {
        return Some((hit, Category::ClusterState));
    }
    // Direct children of /usr and /var are system directories themselves.
    if components.len() == 2 {
        for parent in ["usr", "var"] {
            if components[0].matches(parent) {
                return Some((format!("/{parent}/…"), Category::SystemDirectory));
            }
        }
    }
    None
}

/// Whether a pattern could reach a login session's sockets (see
/// `sensitive::classify`): `/run/user/<any user>` itself, its `bus*` and
/// `systemd/…`, and anything of root's (`0`).
fn session_reach(components: &[glob::Component]) -> Option<String> {
    for base in [&["run", "user"][..], &["var", "run", "user"][..]] {
        let n = base.len();
        if components.len() < n || !base.iter().zip(components).all(|(b, c)| c.matches(b)) {
            continue;
        }
        let shown = format!("/{}/<user>", base.join("/"));
        match components.len() - n {
            0 | 1 => return Some(shown),
            _ => {
                let inside = &components[n + 1];
                if components[n].matches("0") {
                    return Some(format!("/{}/0/…", base.join("/")));
                }
                if inside.could_start_with("bus") {
                    return Some(format!("{shown}/bus"));
                }
                if inside.matches("systemd") {
                    return Some(format!("{shown}/systemd/…"));
                }
            }
        }
    }
    None
}

pub(super) fn match_kind(t: HostPathType) -> Option<MatchKind> {
    Some(match t {
        HostPathType::Unset => MatchKind::Any,
        HostPathType::Directory => MatchKind::Directory,
        HostPathType::File => MatchKind::File,
        HostPathType::Socket => MatchKind::Socket,
        HostPathType::CharDevice => MatchKind::CharDevice,
        HostPathType::BlockDevice => MatchKind::BlockDevice,
        HostPathType::DirectoryOrCreate | HostPathType::FileOrCreate => return None,
    })
}

/// Whether `map` (a resource) finds its devices at runtime: a `usb` or
/// `group` key, or glob characters in `hostPath.path`.
pub(super) fn is_dynamic(map: &BTreeMap<String, Value>) -> bool {
    map.contains_key("usb")
        || map.contains_key("group")
        || map
            .get("hostPath")
            .and_then(|h| h.get("path"))
            .and_then(Value::as_str)
            .is_some_and(glob::has_glob)
}

impl Validator {
    /// Compiles a normalised path pattern into a rule, checking its kind
    /// and (unless allowed) what it could reach.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn path_rule(
        &mut self,
        field: &str,
        pattern: &str,
        kind: MatchKind,
        mount_path: Option<String>,
        read_only: bool,
        permissions: Perm,
        limit: u32,
        allow_sensitive: bool,
    ) -> Option<PathRule> {
        let components = match glob::path(pattern) {
            Ok(c) => c,
            Err(e) => {
                self.error(field, format!("`{pattern}` is not a valid pattern: {e}"));
                return None;
            }
        };
        if !allow_sensitive {
            let hit = if glob::has_glob(pattern) {
                sensitive_reach(&components)
            } else {
                sensitive_rule(pattern).map(|c| (pattern.to_string(), c))
            };
            if let Some((what, category)) = hit {
                let how = if what == pattern {
                    format!("{pattern} is a sensitive host path ({category})")
                } else {
                    format!("the pattern {pattern} could match {what}, {category}")
                };
                self.error(
                    field,
                    format!(
                        "{how}; set `allowSensitivePath: true` on this resource if you really mean to hand it to pods"
                    ),
                );
                return None;
            }
        }
        Some(PathRule {
            pattern: pattern.to_string(),
            components,
            kind,
            mount_path,
            read_only,
            permissions,
            limit,
            optional: false,
        })
    }

    /// `usb:` — a non-empty list of `{vendor, product, serial}`.
    pub(super) fn usb_selectors(
        &mut self,
        v: &Value,
        field: &str,
        generic: bool,
    ) -> Vec<UsbSelector> {
        let one = if generic { "" } else { "USB device" };
        let mut out = Vec::new();
        for (f, m) in self.mappings(v, field, "{vendor, product, serial}", one) {
            self.check_keys(&m, &f, if generic { GENERIC_USB_KEYS } else { USB_KEYS });
            let mount_path = match m.get("mountPath") {
                Some(v) if generic && !v.is_null() => {
                    self.container_template(v, &join(&f, "mountPath"), true)
                }
                _ => None,
            };
            let vendor = self.usb_id(m.get("vendor"), &join(&f, "vendor"), generic);
            let product = self.usb_id(m.get("product"), &join(&f, "product"), generic);
            let serial = match m.get("serial") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(other) => {
                    self.error(
                        &join(&f, "serial"),
                        format!("expected a string, found {}", kind_of(other)),
                    );
                    None
                }
            };
            if let (Some(vendor), Some(product)) = (vendor, product) {
                out.push(UsbSelector {
                    vendor,
                    product,
                    serial,
                    mount_path,
                });
            }
        }
        out
    }

    /// `nodes:` — which nodes of each USB device it is given as (B20),
    /// each `{subsystem, name, mountPath, permissions}`; `permissions`
    /// defaults to the resource's.
    pub(super) fn node_rules(&mut self, v: &Value, field: &str, default: Perm) -> Vec<NodeRule> {
        let mut out = Vec::new();
        let before = self.errors.len();
        let one = "{subsystem, name, mountPath, permissions}";
        for (f, m) in self.mappings(v, field, one, "node") {
            self.check_keys(&m, &f, NODE_KEYS);
            let sub_field = join(&f, "subsystem");
            let subsystem = match m.get("subsystem") {
                None | Some(Value::Null) => {
                    self.error(&sub_field, format!("is required: one of {}", subsystems()));
                    None
                }
                Some(v) => self.string(v, &sub_field).and_then(|s| {
                    let found = Subsystem::parse(&s);
                    if found.is_none() {
                        self.error(
                            &sub_field,
                            format!("`{}` is not one of {}", shown(&s), subsystems()),
                        );
                    }
                    found
                }),
            };
            let name_field = join(&f, "name");
            let name = match m.get("name") {
                None | Some(Value::Null) => None,
                Some(v) => self
                    .string(v, &name_field)
                    .and_then(|s| match glob::component(&s) {
                        Ok(c) if !s.is_empty() && !s.contains('/') => Some((s, c)),
                        Ok(_) => {
                            self.error(&name_field, "must be one non-empty name, without `/`");
                            None
                        }
                        Err(e) => {
                            self.error(
                                &name_field,
                                format!("`{}` is not a valid pattern: {e}", shown(&s)),
                            );
                            None
                        }
                    }),
            };
            let mount_path = match m.get("mountPath") {
                None | Some(Value::Null) => None,
                Some(v) => self.container_template(v, &join(&f, "mountPath"), true),
            };
            let permissions = self.permissions(&m, &f, default);
            if let Some(subsystem) = subsystem {
                out.push(NodeRule {
                    subsystem,
                    name,
                    mount_path,
                    permissions,
                });
            }
        }
        if out.is_empty() && self.errors.len() == before {
            self.error(
                field,
                "must list at least one node: e.g. [{subsystem: tty}]",
            );
        }
        out
    }

    /// `permissions` of a node or a group member: letters from `rwm`, or
    /// `default` when not given.
    fn permissions(&mut self, m: &BTreeMap<String, Value>, prefix: &str, default: Perm) -> Perm {
        let field = join(prefix, "permissions");
        match m.get("permissions") {
            None | Some(Value::Null) => default,
            Some(v) => {
                let p = self.string(v, &field).unwrap_or_default();
                if let Err(msg) = validate_permissions(&p) {
                    self.error(&field, msg);
                }
                Perm::from_letters(&p)
            }
        }
    }

    /// A container path for devices found at runtime: fixed (`/dev/zigbee`:
    /// a container gets at most one such path), numbered (`/dev/video{n}`:
    /// `0`, `1`, … per container), or, with `dir` and a trailing `/`, a
    /// directory each node keeps its own name in.
    pub(super) fn container_template(
        &mut self,
        v: &Value,
        field: &str,
        dir: bool,
    ) -> Option<String> {
        let raw = self.string(v, field)?;
        let is_dir = dir && raw.len() > 1 && raw.ends_with('/');
        let numbered = raw.matches(NUMBER).count();
        let rest = raw.replace(NUMBER, "");
        if numbered > 1 || rest.contains(['{', '}']) {
            self.error(
                field,
                format!(
                    "`{}`: the only placeholder is {NUMBER}, at most once (the device's number in the container, from 0)",
                    shown(&raw)
                ),
            );
            return None;
        }
        if is_dir && numbered == 1 {
            self.error(
                field,
                format!(
                    "`{}` is a directory (it ends in `/`) and numbered ({NUMBER}): choose one",
                    shown(&raw)
                ),
            );
            return None;
        }
        let path = self.abs_path(if is_dir { &raw[..raw.len() - 1] } else { &raw }, field)?;
        Some(if is_dir { format!("{path}/") } else { path })
    }

    /// A vendor or product id: 4 hex digits (generic-device-plugin's form
    /// also takes 1 to 4, and a YAML number as its value, with a warning).
    fn usb_id(&mut self, v: Option<&Value>, field: &str, generic: bool) -> Option<u16> {
        match v {
            None | Some(Value::Null) => {
                self.error(field, "is required: 4 hex digits, e.g. \"1a86\"");
                None
            }
            Some(Value::String(s)) => {
                let ok_len = if generic {
                    (1..=4).contains(&s.len())
                } else {
                    s.len() == 4
                };
                match u16::from_str_radix(s, 16) {
                    Ok(id) if ok_len && s.chars().all(|c| c.is_ascii_hexdigit()) => Some(id),
                    _ => {
                        self.error(
                            field,
                            format!("`{s}` is not a USB id: 4 hex digits, e.g. \"1a86\""),
                        );
                        None
                    }
                }
            }
            Some(Value::Number(n)) if generic => {
                match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                    Some(id) => {
                        self.warn(
                        field,
                        format!(
                            "{n} is a YAML number, read as the id {id:04x} as generic-device-plugin does; \
                             write hex ids in quotes (\"{n}\" is {})",
                            u16::from_str_radix(&n.to_string(), 16)
                                .map_or("not hex".to_string(), |h| format!("{h:04x}"))
                        ),
                    );
                        Some(id)
                    }
                    None => {
                        self.error(field, format!("{n} is not a USB id (0 to ffff)"));
                        None
                    }
                }
            }
            Some(Value::Number(n)) => {
                self.error(
                    field,
                    format!(
                        "{n} is a number: write the id as 4 hex digits in quotes, e.g. \"{n:0>4}\""
                    ),
                );
                None
            }
            Some(other) => {
                self.error(
                    field,
                    format!("expected 4 hex digits in quotes, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    /// `group:` — paths handed out together, each `{hostPath, volumeMount,
    /// permissions, limit}` as a resource's own.
    pub(super) fn group_rules(&mut self, v: &Value, field: &str, allow: bool) -> Vec<PathRule> {
        let mut out = Vec::new();
        for (f, m) in self.mappings(
            v,
            field,
            "{hostPath, volumeMount, permissions, limit}",
            "path",
        ) {
            self.check_keys(&m, &f, MEMBER_KEYS);
            let (path, t) = self.host_path(&m, &f);
            let (mount, read_only) = self.volume_mount(&m, &f, None);
            let default = Perm::from_letters(if read_only { "r" } else { "rw" });
            let permissions = self.permissions(&m, &f, default);
            let limit = self.count(&m, "limit", &f, 1);
            let (Some(path), Some(t)) = (path, t) else {
                continue;
            };
            let Some(kind) = match_kind(t) else {
                self.error(
                    &join(&f, "hostPath.type"),
                    format!(
                        "{} cannot be used in a group: nothing is created for it",
                        t.as_str()
                    ),
                );
                continue;
            };
            if mount.as_ref().is_some_and(|m| *m != path && is_fixed(m)) && glob::has_glob(&path) {
                self.shared_mount_warning(&join(&f, "volumeMount.mountPath"));
            }
            if let Some(rule) = self.path_rule(
                &join(&f, "hostPath.path"),
                &path,
                kind,
                mount,
                read_only,
                permissions,
                limit,
                allow,
            ) {
                out.push(rule);
            }
        }
        if !discovery::pairs_by_captures(&out) {
            let shapes: Vec<String> = out
                .iter()
                .map(|r| format!("{} has {}", r.pattern, r.wildcards()))
                .collect();
            self.error(
                field,
                format!(
                    "members pair by what their wildcards match, so every member with wildcards needs \
                     as many of them: {}",
                    shapes.join(", ")
                ),
            );
        }
        out
    }

    /// A device's slots (`count`, or `numDevices` on a pattern) must all
    /// fit one ListAndWatch message with the longest IDs, all Unhealthy.
    pub(super) fn slots_fit(&mut self, field: &str, slots: u64) {
        let max = u64::from(super::rules::max_slots());
        if slots > max {
            let entry =
                discovery::entry_size(discovery::MAX_ID_LEN, crate::kubelet::UNHEALTHY.len());
            self.error(
                field,
                format!(
                    "{slots} slots per device: each is listed with an ID of up to {} bytes ({entry} bytes \
                     an entry when Unhealthy), so at most {max} slots of one device fit the kubelet's \
                     limit of {MAX_MESSAGE_BYTES} bytes",
                    discovery::MAX_ID_LEN
                ),
            );
        }
    }

    /// A path with glob characters is a pattern: said once for the
    /// original project's format, which had none, so a path such as
    /// `/mnt/disk[1]` never changes meaning in silence.
    pub(super) fn pattern_meaning(&mut self, field: &str, path: Option<&str>, original: bool) {
        if let (Some(path), true) = (path, original) {
            self.warn(
                field,
                format!(
                    "`{path}` has glob characters, so it is a pattern: each match is a device. \
                     To serve that very path, escape them with `\\` (e.g. `\\[`)"
                ),
            );
        }
    }

    /// A whole number ≥ 1 under `key`, or `default`.
    pub(super) fn count(
        &mut self,
        map: &BTreeMap<String, Value>,
        key: &str,
        prefix: &str,
        default: u32,
    ) -> u32 {
        let field = join(prefix, key);
        match map.get(key) {
            None | Some(Value::Null) => default,
            Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n >= 1 => n,
                _ => {
                    self.error(
                        &field,
                        format!("must be a whole number of at least 1, found {n}"),
                    );
                    default
                }
            },
            Some(other) => {
                self.error(
                    &field,
                    format!("expected a number, found {}", kind_of(other)),
                );
                default
            }
        }
    }

    /// `removeAfter`: how long a vanished device stays listed.
    pub(super) fn remove_after(
        &mut self,
        map: &BTreeMap<String, Value>,
        prefix: &str,
        dynamic: bool,
    ) -> Duration {
        let field = join(prefix, "removeAfter");
        match map.get("removeAfter") {
            None | Some(Value::Null) => DEFAULT_REMOVE_AFTER,
            Some(_) if !dynamic => {
                self.error(
                    &field,
                    "applies only to patterns, `usb` and `group`: a fixed path is always listed",
                );
                DEFAULT_REMOVE_AFTER
            }
            Some(v) => match parse_interval(v) {
                Ok(d) => d,
                Err(msg) => {
                    self.error(&field, msg);
                    DEFAULT_REMOVE_AFTER
                }
            },
        }
    }
}

/// The subsystems a node rule may name, for messages.
fn subsystems() -> String {
    let names: Vec<&str> = Subsystem::ALL.iter().map(|s| s.as_str()).collect();
    names.join(", ")
}

/// Whether a container path puts every match at one place (not numbered,
/// not a directory).
pub(super) fn is_fixed(mount_path: &str) -> bool {
    !mount_path.contains(NUMBER) && !mount_path.ends_with('/')
}

/// A discovery of one group.
pub(super) fn single(source: Source, count: u32, remove_after: Duration) -> Discovery {
    Discovery {
        groups: vec![Group { source, count }],
        remove_after,
    }
}
