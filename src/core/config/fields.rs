//! The fields of one fixed-path resource: its socket name, host path,
//! volume mount, envs and absolute paths, each checked with the
//! transformations the kubelet and the kernel apply to it.

use super::rules::{join, kind_of};
use super::validate::{Validator, HOST_PATH_KEYS, VOLUME_MOUNT_KEYS, VOLUME_MOUNT_UNSUPPORTED};
use super::*;

impl Validator {
    pub(super) fn socket_name(&mut self, s: &str, field: &str) {
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

    pub(super) fn host_path(
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
        let path = self.required_abs_path(&hp, "path", &field);
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

    pub(super) fn volume_mount(
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

    pub(super) fn envs(
        &mut self,
        map: &BTreeMap<String, Value>,
        prefix: &str,
    ) -> BTreeMap<String, String> {
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

    /// A required absolute path under `key`, normalised.
    pub(super) fn required_abs_path(
        &mut self,
        map: &BTreeMap<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Option<String> {
        let field = join(prefix, key);
        match map.get(key) {
            None | Some(Value::Null) => {
                self.error(&field, "is required");
                None
            }
            Some(v) => self
                .string(v, &field)
                .and_then(|p| self.abs_path(&p, &field)),
        }
    }

    /// Normalises an absolute path, recording an error or a warning.
    pub(super) fn abs_path(&mut self, p: &str, field: &str) -> Option<String> {
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
}

impl Validator {
    /// `api`: `devicePlugin` (the default) or `dra` (B18).
    pub(super) fn api(&mut self, map: &BTreeMap<String, Value>, prefix: &str) -> Api {
        let field = join(prefix, "api");
        let Some(v) = map.get("api").filter(|v| !v.is_null()) else {
            return Api::DevicePlugin;
        };
        let Some(s) = self.string(v, &field) else {
            return Api::DevicePlugin;
        };
        Api::parse(&s).unwrap_or_else(|| {
            let names = [Api::DevicePlugin.as_str(), Api::Dra.as_str()];
            let hint = suggest(&s, &names)
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            self.error(
                &field,
                format!("unknown API `{s}`{hint}; one of: devicePlugin, dra"),
            );
            Api::DevicePlugin
        })
    }
}
