//! The metrics and health endpoint (`--listen`, B17): scraped over real
//! TCP while the daemon serves the simulated kubelet, allocates and flips
//! health; each scrape checked by Prometheus's own `promtool check
//! metrics` when `PROMTOOL` names it (`make test` builds it);
//! generic-device-plugin's series; the dashboard's queries. Hostile
//! clients are in `observe_hostile`.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_hostpath_device_plugin::sim::SimKubelet;

use crate::harness::{dir_config, wait_counts, wait_until, Daemon, TestDir, WAIT};

const R: &str = "example.com/data";

/// The address the daemon says it listens on (`--listen 127.0.0.1:0`).
#[track_caller]
pub(crate) fn listen_addr(d: &Daemon) -> SocketAddr {
    logged_addr(&d.log)
}

/// The listen address a daemon's log at `log` names.
#[track_caller]
pub(crate) fn logged_addr(log: &std::path::Path) -> SocketAddr {
    let text = || fs::read_to_string(log).unwrap_or_default();
    let mut addr = None;
    let found = wait_until(WAIT, || {
        addr = text().lines().find_map(|l| {
            let rest = l.split("metrics on http://").nth(1)?;
            rest.split('/').next()?.parse().ok()
        });
        addr.is_some()
    });
    assert!(found, "no listen address in the log:\n{}", text());
    addr.unwrap()
}

/// One HTTP exchange: status code and body.
pub(crate) fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, WAIT)?;
    s.set_read_timeout(Some(WAIT))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((code, body.to_string()))
}

/// A scrape, linted by promtool when the build gave one.
#[track_caller]
pub(crate) fn scrape(addr: SocketAddr) -> String {
    let (code, body) = get(addr, "/metrics").expect("scrape");
    assert_eq!(code, 200, "{body}");
    if let Ok(promtool) = std::env::var("PROMTOOL") {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics refused the scrape:\n{}{}\n--- scrape ---\n{body}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    body
}

/// The value of the sample `series` (name and labels exactly as written).
pub(crate) fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.parse().ok()
    })
}

/// Waits until the sample `series` of a scrape has `want`.
#[track_caller]
pub(crate) fn wait_value(addr: SocketAddr, d: &Daemon, series: &str, want: f64) -> String {
    let mut last = String::new();
    if wait_until(WAIT, || {
        last = scrape(addr);
        value(&last, series) == Some(want)
    }) {
        return last;
    }
    panic!(
        "{series} never {want}: {:?}\n{last}\n{}",
        value(&last, series),
        d.log()
    )
}

#[track_caller]
pub(crate) fn wait_health(addr: SocketAddr, d: &Daemon, want: u16) -> String {
    let mut last = (0, String::new());
    if wait_until(WAIT, || {
        last = get(addr, "/health").unwrap_or((0, String::new()));
        last.0 == want
    }) {
        return last.1;
    }
    panic!("/health never {want}: {last:?}\n{}", d.log())
}

#[test]
fn metrics_follow_what_the_daemon_does() {
    let dir = TestDir::new();
    let data = dir.host("data");
    fs::create_dir_all(&data).unwrap();
    let d = Daemon::start(
        &dir,
        &dir_config(R, &data, "numDevices: 2\n"),
        &["--listen", "127.0.0.1:0"],
    );
    let addr = listen_addr(&d);
    let lbl = format!("resource=\"{R}\"");

    // No kubelet yet: served, not registered, and /health says so.
    let body = wait_health(addr, &d, 503);
    assert!(body.contains(&format!("{R}: not registered")), "{body}");
    let s = scrape(addr);
    assert_eq!(
        value(
            &s,
            &format!("hostpath_device_plugin_resource_registered{{{lbl}}}")
        ),
        Some(0.0),
        "{s}"
    );
    assert!(
        s.contains("hostpath_device_plugin_build_info{version=\""),
        "{s}"
    );
    assert!(
        value(&s, "process_open_fds").is_some_and(|v| v > 3.0),
        "{s}"
    );
    assert!(
        value(&s, "process_threads").is_some_and(|v| v >= 4.0),
        "{s}"
    );
    assert!(
        value(&s, "process_resident_memory_bytes").is_some_and(|v| v > 1e6),
        "{s}"
    );

    let mut k = SimKubelet::start(&dir.dp()).unwrap();
    wait_counts(&k, &d, R, (2, 2));
    assert_eq!(wait_health(addr, &d, 200), "ok\n");
    let s = wait_value(
        addr,
        &d,
        &format!("hostpath_device_plugin_devices{{{lbl},health=\"healthy\"}}"),
        2.0,
    );
    assert_eq!(
        value(
            &s,
            &format!("hostpath_device_plugin_registrations_total{{{lbl}}}")
        ),
        Some(1.0)
    );

    // Allocate: one answered for two containers, one refused.
    k.allocate(R, &[&["0"], &["1"]]).expect("allocate");
    k.allocate(R, &[&["7"]]).expect_err("unknown ID");
    let s = wait_value(
        addr,
        &d,
        &format!("hostpath_device_plugin_allocations_total{{{lbl},result=\"ok\"}}"),
        1.0,
    );
    assert_eq!(
        value(
            &s,
            &format!("hostpath_device_plugin_allocations_total{{{lbl},result=\"invalid\"}}")
        ),
        Some(1.0),
        "{s}"
    );
    assert_eq!(
        value(
            &s,
            &format!("hostpath_device_plugin_allocate_duration_seconds_count{{{lbl}}}")
        ),
        Some(2.0),
        "{s}"
    );
    let checks = value(
        &s,
        &format!("hostpath_device_plugin_health_checks_total{{{lbl}}}"),
    )
    .unwrap();
    assert!(checks >= 1.0, "{s}");

    // Health flips: the path goes, the devices turn unhealthy; it comes back.
    fs::remove_dir(&data).unwrap();
    wait_counts(&k, &d, R, (0, 2));
    let s = wait_value(
        addr,
        &d,
        &format!("hostpath_device_plugin_devices{{{lbl},health=\"unhealthy\"}}"),
        2.0,
    );
    assert_eq!(
        value(
            &s,
            &format!("hostpath_device_plugin_resource_healthy{{{lbl}}}")
        ),
        Some(0.0)
    );
    // A missing path is the node's news, not the daemon's failure.
    assert_eq!(wait_health(addr, &d, 200), "ok\n");
    fs::create_dir(&data).unwrap();
    wait_counts(&k, &d, R, (2, 2));
    wait_value(
        addr,
        &d,
        &format!("hostpath_device_plugin_devices{{{lbl},health=\"healthy\"}}"),
        2.0,
    );

    // A kubelet restart: seen, served afresh, registered again. (The
    // kubelet that started after the daemon was not a restart, but did
    // serve it afresh.)
    let serves = value(
        &scrape(addr),
        &format!("hostpath_device_plugin_serves_total{{{lbl}}}"),
    )
    .unwrap();
    k.restart(Duration::from_millis(50)).unwrap();
    let s = wait_value(
        addr,
        &d,
        &format!("hostpath_device_plugin_registrations_total{{{lbl}}}"),
        2.0,
    );
    assert_eq!(
        value(&s, "hostpath_device_plugin_kubelet_restarts_total"),
        Some(1.0),
        "{s}"
    );
    assert_eq!(
        value(&s, &format!("hostpath_device_plugin_serves_total{{{lbl}}}")),
        Some(serves + 1.0),
        "{s}"
    );
    // Not a generic-device-plugin file: none of that project's series.
    assert!(!s.contains("generic_device_plugin_"), "{s}");
    dashboard_names_only_exported_metrics(&s);
    let (code, _) = get(addr, "/nope").unwrap();
    assert_eq!(code, 404);
    k.stop();
}

#[test]
fn generic_device_plugin_series_for_its_file() {
    let dir = TestDir::new();
    let dev = dir.host("dev");
    fs::create_dir_all(&dev).unwrap();
    for n in ["ttyX0", "ttyX1", "ttyX2"] {
        fs::write(dev.join(n), "").unwrap();
    }
    let config = format!(
        "domain: example.com\ndevices:\n  - name: serial\n    groups:\n      - paths:\n          - path: {}/ttyX*\n            type: Mount\n",
        dev.display()
    );
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = Daemon::start(&dir, &config, &["--listen", "127.0.0.1:0"]);
    let addr = listen_addr(&d);
    let name = "example.com/serial";
    wait_counts(&k, &d, name, (3, 3));
    let series = format!("generic_device_plugin_devices{{resource=\"{name}\"}}");
    wait_value(addr, &d, &series, 3.0);
    let ids: Vec<String> = k.recorded().devices[name]
        .iter()
        .take(2)
        .map(|(id, _)| id.clone())
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    k.allocate(name, &[&ids[..1], &ids[1..2]])
        .expect("allocate");
    let s = wait_value(
        addr,
        &d,
        &format!("generic_device_plugin_allocations_total{{resource=\"{name}\"}}"),
        2.0,
    );
    assert_eq!(
        value(
            &s,
            &format!("generic_device_plugin_restarts_total{{resource=\"{name}\"}}")
        ),
        Some(0.0),
        "{s}"
    );
    fs::remove_file(dev.join("ttyX2")).unwrap();
    wait_value(addr, &d, &series, 2.0);
}

/// The series names a scrape exports: each family's samples (a histogram's
/// `_bucket`, `_sum` and `_count`).
fn exported(scrape: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for l in scrape.lines() {
        let Some(rest) = l.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        if kind == "histogram" {
            for s in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{name}{s}"));
            }
        } else {
            out.insert(name.to_string());
        }
    }
    out
}

/// The metric names a PromQL expression reads: identifiers left once
/// strings, label matchers, ranges and `by (…)` lists are removed, that
/// are neither functions (followed by `(`) nor keywords.
fn promql_metrics(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "or",
        "and",
        "unless",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
    ];
    let mut plain = String::new();
    let mut depth_brace = 0;
    let mut in_string = false;
    let mut in_range = false;
    for c in expr.chars() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => in_range = true,
            ']' => in_range = false,
            _ if depth_brace > 0 || in_range => {}
            c => plain.push(c),
        }
    }
    // `by (a, b)` / `without (…)`: label names, not metrics.
    for kw in ["by", "without"] {
        while let Some(at) = plain.find(&format!("{kw} (")) {
            let end = plain[at..].find(')').map_or(plain.len(), |e| at + e + 1);
            plain.replace_range(at..end, " ");
        }
    }
    let mut names = Vec::new();
    let chars: Vec<char> = plain.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if next != Some(&'(') && !KEYWORDS.contains(&word.as_str()) {
                names.push(word);
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

/// deploy/monitoring/dashboard.json: every query names only metrics a
/// live scrape exports (a renamed metric would leave a panel empty).
#[track_caller]
fn dashboard_names_only_exported_metrics(scrape: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/monitoring/dashboard.json"
    );
    let dash: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    let have = exported(scrape);
    let mut named = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let names = promql_metrics(expr);
            assert!(!names.is_empty(), "no metric in {expr:?}");
            for n in names {
                assert!(
                    have.contains(&n),
                    "panel {:?}: {n} is not exported (query {expr:?}); exported: {have:?}",
                    panel["title"]
                );
                named += 1;
            }
        }
    }
    assert!(
        named >= 15,
        "only {named} metric references in the dashboard"
    );
}

#[test]
fn promql_names_are_found() {
    assert_eq!(
        promql_metrics(
            "histogram_quantile(0.99, sum by (le, resource) (rate(x_bucket{a=\"b(\"}[5m]))) or vector(0)"
        ),
        ["x_bucket"]
    );
    assert_eq!(
        promql_metrics("count(up == 0) / process_threads"),
        ["up", "process_threads"]
    );
}
