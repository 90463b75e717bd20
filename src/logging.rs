//! Log lines: text (the default) or one JSON object per line
//! (`--log-format json`), with stable field names. Either way a line never
//! carries a raw control character: whatever a file name or a client put
//! in a message is escaped here, as the last step.
//!
//! JSON fields, always all present (`null` when unknown): `time` (RFC 3339,
//! UTC, milliseconds), `level`, `resource`, `event`, `path`, `message`,
//! `target`. `resource`, `event` and `path` come from the record's
//! key-values (`log::warn!(resource = …, event = "…", path = …; "…")`) where
//! the daemon gives them; otherwise `resource` is read from a message that
//! begins `<resource name>: `, as the daemon's per-resource lines do.

use std::borrow::Cow;
use std::io::Write;

use log::kv::{Error, Key, Value, VisitSource};

use crate::cli::LogFormat;

/// Sets up the process's logger: `RUST_LOG` when set, else `filter`
/// (`info`; `debug` with `--debug`; generic-device-plugin's `--log-level`).
pub fn init(format: LogFormat, filter: &str) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter));
    let b = &mut b;
    match format {
        LogFormat::Text => b.format(|buf, record| {
            let ts = buf.timestamp_millis();
            writeln!(
                buf,
                "[{ts} {:<5} {}] {}",
                record.level(),
                record.target(),
                clean(&record.args().to_string())
            )
        }),
        LogFormat::Json => b.format(|buf, record| {
            let ts = buf.timestamp_millis().to_string();
            let line = json_line(&ts, record);
            writeln!(buf, "{line}")
        }),
    };
    let inner = b.build();
    let level = inner.filter();
    if log::set_boxed_logger(Box::new(Tee { inner })).is_ok() {
        // Info and warnings reach the event sink whatever the filter.
        log::set_max_level(level.max(log::LevelFilter::Info));
    }
}

/// Where records that carry an `event` key go besides the log (the Node's
/// Events, when an API client is configured): set once.
type Sink = Box<dyn Fn(&str, Option<&str>, &str) + Send + Sync>;
static SINK: std::sync::OnceLock<Sink> = std::sync::OnceLock::new();

/// Sends every record with an `event` key to `sink(event, resource,
/// message)` from now on (the first call wins).
pub fn set_event_sink(sink: Sink) {
    let _ = SINK.set(sink);
}

/// The logger: env_logger's output, and the event sink.
struct Tee {
    inner: env_logger::Logger,
}

impl log::Log for Tee {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata) || SINK.get().is_some()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.inner.matches(record) {
            self.inner.log(record);
        }
        if let Some(sink) = SINK.get() {
            let mut f = Fields::default();
            let _ = record.key_values().visit(&mut f);
            if let Some(event) = &f.event {
                let message = record.args().to_string();
                sink(event, f.resource.as_deref(), &clean(&message));
            }
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// `s` with every control character written as `\xHH` (`\u{…}` past
/// U+00FF), so a line is always one line and no terminal escape passes.
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            let n = u32::from(c);
            if n <= 0xff {
                out.push_str(&format!("\\x{n:02x}"));
            } else {
                out.push_str(&format!("\\u{{{n:x}}}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The key-values the JSON line lifts into its own fields.
#[derive(Default)]
struct Fields {
    resource: Option<String>,
    event: Option<String>,
    path: Option<String>,
}

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), Error> {
        let slot = match key.as_str() {
            "resource" => &mut self.resource,
            "event" => &mut self.event,
            "path" => &mut self.path,
            _ => return Ok(()),
        };
        *slot = Some(value.to_string());
        Ok(())
    }
}

/// The resource a message begins with (`example.com/x: …`), if it does.
fn resource_prefix(message: &str) -> Option<&str> {
    let (head, _) = message.split_once(": ")?;
    let (domain, name) = head.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    (ok(domain) && ok(name)).then_some(head)
}

/// One record as a JSON object on one line.
pub fn json_line(time: &str, record: &log::Record<'_>) -> String {
    let mut f = Fields::default();
    let _ = record.key_values().visit(&mut f);
    let message = record.args().to_string();
    if f.resource.is_none() {
        f.resource = resource_prefix(&message).map(str::to_string);
    }
    let s = |v: &str| serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    let opt = |v: &Option<String>| v.as_deref().map_or_else(|| "null".into(), s);
    format!(
        "{{\"time\":{},\"level\":{},\"resource\":{},\"event\":{},\"path\":{},\"message\":{},\"target\":{}}}",
        s(time),
        s(&record.level().as_str().to_ascii_lowercase()),
        opt(&f.resource),
        opt(&f.event),
        opt(&f.path),
        s(&message),
        s(record.target()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("plain /dev/ttyUSB0"), "plain /dev/ttyUSB0");
        assert_eq!(
            clean("a\nfake line\x1b[31m\u{85}"),
            "a\\x0afake line\\x1b[31m\\x85"
        );
    }

    #[test]
    fn json_fields() {
        let kvs: &[(&str, &str)] = &[("event", "unhealthy"), ("path", "/data\n")];
        let record = log::Record::builder()
            .args(format_args!(
                "example.com/x: /data healthy -> unhealthy\x07"
            ))
            .level(log::Level::Warn)
            .target("k8s_hostpath_device_plugin::core::monitor")
            .key_values(&kvs)
            .build();
        let line = json_line("2026-12-07T21:00:00.000Z", &record);
        assert!(!line.chars().any(char::is_control), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["resource"], "example.com/x");
        assert_eq!(v["event"], "unhealthy");
        assert_eq!(v["path"], "/data\n");
        assert_eq!(
            v["message"],
            "example.com/x: /data healthy -> unhealthy\u{7}"
        );
        assert_eq!(v["time"], "2026-12-07T21:00:00.000Z");

        let plain = log::Record::builder()
            .args(format_args!("shutdown complete"))
            .level(log::Level::Info)
            .build();
        let v: serde_json::Value = serde_json::from_str(&json_line("t", &plain)).unwrap();
        assert!(v["resource"].is_null() && v["event"].is_null() && v["path"].is_null());
        assert_eq!(resource_prefix("kubelet restart seen: x"), None);
        assert_eq!(resource_prefix("a.b/c-d: x"), Some("a.b/c-d"));
    }
}
