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

mod devices;
mod fields;
mod generic;
mod read;
mod rules;
#[cfg(test)]
mod tests;
mod validate;

pub use generic::{document_from_flags, GENERIC_DEFAULT_DOMAIN};
pub use read::{nesting_depth, read_file, ReadError, MAX_CONFIG_BYTES, MAX_NESTING};
pub use rules::*;
use validate::Validator;

use super::resource::{Api, HostPathType, Resource, Subsystem};

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

/// A validated configuration: at least one resource, names unique.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub resources: Vec<Resource>,
}

impl Config {
    /// The daemon's `--api` choice, over every resource's own (B18): one
    /// shared config, some nodes served through DRA, others not.
    pub fn override_api(&mut self, api: Option<Api>) {
        if let Some(api) = api {
            for r in &mut self.resources {
                r.api = api;
            }
        }
    }

    /// Whether any resource is served through DRA.
    pub fn uses_dra(&self) -> bool {
        self.resources.iter().any(|r| r.api == Api::Dra)
    }
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
    load_with(path, socket_dir, &Overrides::default())
}

/// Settings given on the command line that win over the file's, as
/// generic-device-plugin's flags win over its config file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--domain` (or `$DOMAIN`): the domain of a generic-device-plugin
    /// file's resources.
    pub domain: Option<String>,
}

/// [`load`] with `overrides` applied.
///
/// # Errors
///
/// A [`ConfigError`] listing every problem, including an unreadable file.
pub fn load_with(
    path: &Path,
    socket_dir: &Path,
    overrides: &Overrides,
) -> Result<Loaded, ConfigError> {
    let name = path.display().to_string();
    match read_file(path) {
        Ok(text) => parse_with(&text, &name, socket_dir, overrides),
        Err(e) => Err(ConfigError {
            problems: vec![Problem {
                file: name,
                field: String::new(),
                message: e.to_string(),
            }],
        }),
    }
}

/// Validates config text. `file` names the source in messages.
///
/// # Errors
///
/// A [`ConfigError`] listing every problem found.
pub fn parse(text: &str, file: &str, socket_dir: &Path) -> Result<Loaded, ConfigError> {
    parse_with(text, file, socket_dir, &Overrides::default())
}

/// [`parse`] with `overrides` applied.
///
/// # Errors
///
/// A [`ConfigError`] listing every problem found.
pub fn parse_with(
    text: &str,
    file: &str,
    socket_dir: &Path,
    overrides: &Overrides,
) -> Result<Loaded, ConfigError> {
    let mut v = Validator {
        file: file.to_string(),
        overrides: overrides.clone(),
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

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.resource_name)?;
        match self.api {
            Api::DevicePlugin => writeln!(
                f,
                "  api:          device plugin, socket {}",
                self.socket_name
            )?,
            Api::Dra => writeln!(
                f,
                "  api:          DRA (ResourceSlices, claims prepared with CDI)"
            )?,
        }
        if let Some(d) = &self.discovery {
            return display_discovery(self, d, f);
        }
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

fn display_discovery(
    r: &Resource,
    d: &crate::core::resource::Discovery,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    use crate::core::resource::Source;
    for (i, g) in d.groups.iter().enumerate() {
        let slots = if g.count == 1 {
            String::new()
        } else {
            format!(
                ", {} slots per device (at most {} fit one list)",
                g.count,
                rules::max_slots()
            )
        };
        match &g.source {
            Source::Paths(rules) if rules.len() == 1 => {
                writeln!(f, "  group {i}:      each match is a device{slots}")?
            }
            Source::Paths(rules) if crate::core::discovery::pairs_by_captures(rules) => writeln!(
                f,
                "  group {i}:      the matches whose wildcards matched the same text form one device{slots}"
            )?,
            Source::Paths(_) => writeln!(
                f,
                "  group {i}:      the i-th matches of these paths form the i-th device (by position){slots}"
            )?,
            Source::Usb { .. } => {
                writeln!(f, "  group {i}:      each USB device is a device, given as its nodes{slots}")?
            }
        }
        match &g.source {
            Source::Paths(rules) => {
                for rule in rules {
                    let to = rule.mount_path.as_deref().unwrap_or("the same path");
                    let how = match rule.kind {
                        crate::core::resource::MatchKind::Mount => "mounted".to_string(),
                        _ => format!("device nodes {}", rule.permissions.letters()),
                    };
                    write!(
                        f,
                        "    path:       {} ({}), at {to} in the container, {how}",
                        rule.pattern,
                        rule.kind.describe()
                    )?;
                    if rule.read_only {
                        write!(f, ", mounts read-only")?;
                    }
                    if rule.limit > 1 {
                        write!(f, ", each match shared by up to {} devices", rule.limit)?;
                    }
                    writeln!(f)?;
                }
            }
            Source::Usb { selectors, nodes } => {
                for s in selectors {
                    write!(f, "    usb:        {:04x}:{:04x}", s.vendor, s.product)?;
                    if let Some(serial) = &s.serial {
                        write!(f, " serial {}", crate::text::shown(serial))?;
                    }
                    if let Some(m) = &s.mount_path {
                        write!(f, ", its /dev/bus/usb node at {m}")?;
                    }
                    writeln!(f)?;
                }
                for n in nodes {
                    let which = match n.subsystem {
                        Subsystem::Usb => "its /dev/bus/usb node".to_string(),
                        s => format!("its {} nodes", s.as_str()),
                    };
                    let named = n
                        .name
                        .as_ref()
                        .map_or(String::new(), |(s, _)| format!(" named {s}"));
                    let to = n.mount_path.as_deref().unwrap_or("the same path");
                    writeln!(
                        f,
                        "    node:       {which}{named}, at {to} in the container, permissions {}",
                        n.permissions.letters()
                    )?;
                }
            }
        }
    }
    for (k, v) in &r.envs {
        writeln!(f, "  env:          {k}={v}")?;
    }
    if r.require_mount_point {
        writeln!(f, "  requires:     each match a mount point")?;
    }
    writeln!(
        f,
        "  vanished:     listed Unhealthy for {:?}, then removed",
        d.remove_after
    )?;
    write!(
        f,
        "  rescan:       on inotify events and every {:?}",
        r.health_check_interval
    )
}
