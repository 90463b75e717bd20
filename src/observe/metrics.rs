//! The Prometheus text exposition of the daemon's state (DESIGN.md B17),
//! rendered from what the status board, each resource's counters and
//! `/proc/self` say at the instant of the scrape. Nothing is kept between
//! scrapes: a scrape costs a few short locks and one pass over the
//! resources.

use std::fmt::Write;

use super::process::Process;
use crate::control::Status;
use crate::core::resource::Api;
use crate::core::state::ResourceState;
use crate::core::stats::{AllocateResult, HistogramSnapshot, Stats};

/// Every series of ours starts with this.
pub const PREFIX: &str = "hostpath_device_plugin_";

/// What one scrape sees of a resource.
pub struct ResourceView {
    pub name: String,
    pub api: Api,
    pub from_generic_device_plugin: bool,
    /// Devices listed healthy and unhealthy (slots counted).
    pub devices: (u64, u64),
    /// Its health as a whole (path present, scan answering).
    pub healthy: bool,
    pub serving: bool,
    pub registered: bool,
    pub serves: u64,
    pub registrations: u64,
    pub allocations: [u64; 4],
    pub containers_allocated: u64,
    pub allocate_latency: HistogramSnapshot,
    pub health_checks: u64,
    pub hung_checks: u64,
    pub full_scans: HistogramSnapshot,
    pub partial_scans: HistogramSnapshot,
    pub lists_cut: u64,
}

impl ResourceView {
    /// Reads one resource: its state (one lock) and the board's report.
    pub fn read(state: &ResourceState, status: &Status) -> ResourceView {
        let r = state.resource();
        let board = status.resource(&r.resource_name);
        let s = &state.stats;
        ResourceView {
            name: r.resource_name.clone(),
            api: r.api,
            from_generic_device_plugin: r.from_generic_device_plugin,
            devices: state.device_counts(),
            healthy: state.checked() && state.healthy(),
            serving: board.is_some_and(|b| b.socket.is_some()),
            registered: board.is_some_and(|b| b.registered),
            serves: board.map_or(0, |b| b.serves),
            registrations: board.map_or(0, |b| b.registrations),
            allocations: AllocateResult::ALL.map(|r| s.allocations(r)),
            containers_allocated: Stats::read(&s.containers_allocated),
            allocate_latency: s.allocate_latency.snapshot(),
            health_checks: Stats::read(&s.health_checks),
            hung_checks: Stats::read(&s.hung_checks),
            full_scans: s.full_scans.snapshot(),
            partial_scans: s.partial_scans.snapshot(),
            lists_cut: Stats::read(&s.lists_cut),
        }
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines
/// escaped. Resource names are validated already; this is for safety.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A number as the text format wants it.
fn num(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

/// Writes families: each `# HELP` and `# TYPE` once, then its samples.
struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<f64>) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", num(value.into()));
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (bound, count) in &h.buckets {
            let le = num(*bound);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, *count as f64);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, h.count as f64);
        self.sample(&format!("{name}_sum"), labels, h.sum_seconds);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }

    /// One family with a sample per resource.
    fn per_resource(
        &mut self,
        views: &[ResourceView],
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&ResourceView) -> u64,
    ) {
        let name = format!("{PREFIX}{name}");
        self.family(&name, kind, help);
        for v in views {
            self.sample(&name, &[("resource", &v.name)], value(v) as f64);
        }
    }
}

fn flag(b: bool) -> u64 {
    u64::from(b)
}

/// The whole exposition.
pub fn render(status: &Status, views: &[ResourceView], process: &Process) -> String {
    let mut o = Out {
        text: String::with_capacity(4096 + views.len() * 3072),
    };
    let name = format!("{PREFIX}build_info");
    o.family(&name, "gauge", "Always 1; the daemon's version as a label.");
    o.sample(&name, &[("version", env!("CARGO_PKG_VERSION"))], 1.0);

    let name = format!("{PREFIX}resource_info");
    o.family(
        &name,
        "gauge",
        "Always 1 per configured resource; the kubelet API serving it as a label.",
    );
    for v in views {
        let api = match v.api {
            Api::DevicePlugin => "device-plugin",
            Api::Dra => "dra",
        };
        o.sample(&name, &[("resource", &v.name), ("api", api)], 1.0);
    }
    o.per_resource(
        views,
        "resource_serving",
        "gauge",
        "1 while the resource's socket is served.",
        |v| flag(v.serving),
    );
    o.per_resource(
        views,
        "resource_registered",
        "gauge",
        "1 while the kubelet has accepted the resource's registration.",
        |v| flag(v.registered),
    );
    o.per_resource(
        views,
        "resource_healthy",
        "gauge",
        "1 while the resource's path is present (or its scan answers).",
        |v| flag(v.healthy),
    );

    let name = format!("{PREFIX}devices");
    o.family(
        &name,
        "gauge",
        "Devices listed to the kubelet, by health (each slot counted).",
    );
    for v in views {
        o.sample(
            &name,
            &[("resource", &v.name), ("health", "healthy")],
            v.devices.0 as f64,
        );
        o.sample(
            &name,
            &[("resource", &v.name), ("health", "unhealthy")],
            v.devices.1 as f64,
        );
    }

    let name = format!("{PREFIX}allocations_total");
    o.family(&name, "counter", "Allocate calls answered, by result.");
    for v in views {
        for (r, n) in AllocateResult::ALL.iter().zip(v.allocations) {
            o.sample(
                &name,
                &[("resource", &v.name), ("result", r.label())],
                n as f64,
            );
        }
    }
    let name = format!("{PREFIX}allocate_duration_seconds");
    o.family(
        &name,
        "histogram",
        "Time to build an Allocate answer (or refusal), in seconds.",
    );
    for v in views {
        o.histogram(&name, &[("resource", &v.name)], &v.allocate_latency);
    }

    o.per_resource(
        views,
        "serves_total",
        "counter",
        "Times the resource was served on a fresh socket (start, kubelet restart, lost socket).",
        |v| v.serves,
    );
    o.per_resource(
        views,
        "registrations_total",
        "counter",
        "Registrations the kubelet accepted.",
        |v| v.registrations,
    );
    let name = format!("{PREFIX}kubelet_restarts_total");
    o.family(
        &name,
        "counter",
        "Kubelet restarts seen (a new kubelet.sock).",
    );
    o.sample(&name, &[], status.kubelet_restarts as f64);

    o.per_resource(
        views,
        "health_checks_total",
        "counter",
        "Host-path health checks finished.",
        |v| v.health_checks,
    );
    o.per_resource(
        views,
        "hung_checks_total",
        "counter",
        "Checks or scans that stopped making progress (a hung filesystem).",
        |v| v.hung_checks,
    );
    let name = format!("{PREFIX}discovery_scan_duration_seconds");
    o.family(
        &name,
        "histogram",
        "Discovery scans of resources whose devices come and go, in seconds: \
         full, or a look at the entries an event named.",
    );
    for v in views
        .iter()
        .filter(|v| v.full_scans.count + v.partial_scans.count > 0)
    {
        o.histogram(
            &name,
            &[("resource", &v.name), ("scan", "full")],
            &v.full_scans,
        );
        o.histogram(
            &name,
            &[("resource", &v.name), ("scan", "partial")],
            &v.partial_scans,
        );
    }
    o.per_resource(
        views,
        "lists_cut_total",
        "counter",
        "Device lists cut to fit the kubelet's 4 MiB message limit.",
        |v| v.lists_cut,
    );

    let name = format!("{PREFIX}config_reloads_total");
    o.family(&name, "counter", "Config reloads, applied or refused.");
    o.sample(&name, &[("result", "applied")], status.reloads as f64);
    o.sample(
        &name,
        &[("result", "refused")],
        status.refused_reloads as f64,
    );

    let name = format!("{PREFIX}dra_claims_total");
    o.family(
        &name,
        "counter",
        "DRA claims answered by the kubelet plugin, by operation and result.",
    );
    let c = &status.claims;
    for (op, result, n) in [
        ("prepare", "ok", c.prepared),
        ("prepare", "error", c.prepare_failed),
        ("unprepare", "ok", c.unprepared),
        ("unprepare", "error", c.unprepare_failed),
    ] {
        o.sample(&name, &[("operation", op), ("result", result)], n as f64);
    }

    process.render(&mut |name, kind, help, value| {
        o.family(name, kind, help);
        o.sample(name, &[], value);
    });

    // generic-device-plugin's own series, for resources read from its
    // file, with its `resource` label: its dashboards keep working.
    let generic: Vec<&ResourceView> = views
        .iter()
        .filter(|v| v.from_generic_device_plugin)
        .collect();
    if !generic.is_empty() {
        let series = [
            (
                "generic_device_plugin_devices",
                "gauge",
                "The number of devices managed by this device plugin.",
            ),
            (
                "generic_device_plugin_allocations_total",
                "counter",
                "The total number of device allocations made by this device plugin.",
            ),
            (
                "generic_device_plugin_restarts_total",
                "counter",
                "The number of times that the device plugin has restarted.",
            ),
        ];
        for (i, (name, kind, help)) in series.iter().enumerate() {
            o.family(name, kind, help);
            for v in &generic {
                let value = match i {
                    0 => v.devices.0,
                    1 => v.containers_allocated,
                    _ => v.serves.saturating_sub(1),
                };
                o.sample(name, &[("resource", &v.name)], value as f64);
            }
        }
    }
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(num(f64::INFINITY), "+Inf");
        assert_eq!(num(0.000_25), "0.00025");
        assert_eq!(num(3.0), "3");
    }

    #[test]
    fn histogram_lines() {
        let mut o = Out {
            text: String::new(),
        };
        let h = HistogramSnapshot {
            buckets: vec![(0.001, 1), (0.01, 3)],
            count: 4,
            sum_seconds: 2.5,
        };
        o.histogram("x_seconds", &[("resource", "a/b")], &h);
        assert_eq!(
            o.text,
            "x_seconds_bucket{resource=\"a/b\",le=\"0.001\"} 1\n\
             x_seconds_bucket{resource=\"a/b\",le=\"0.01\"} 3\n\
             x_seconds_bucket{resource=\"a/b\",le=\"+Inf\"} 4\n\
             x_seconds_sum{resource=\"a/b\"} 2.5\n\
             x_seconds_count{resource=\"a/b\"} 4\n"
        );
    }
}
