//! The metrics and health endpoint (`--listen`, B17): scraped over real
//! TCP while the daemon serves the simulated kubelet, allocates and flips
//! health; each scrape checked by Prometheus's own `promtool check
//! metrics` when `PROMTOOL` names it (`make test` builds it); hostile
//! HTTP clients that must not slow Allocate or health.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_hostpath_device_plugin::sim::SimKubelet;

use crate::harness::{dir_config, wait_counts, wait_until, Daemon, TestDir, WAIT};

const R: &str = "example.com/data";

/// The address the daemon says it listens on (`--listen 127.0.0.1:0`).
#[track_caller]
fn listen_addr(d: &Daemon) -> SocketAddr {
    logged_addr(&d.log)
}

/// The listen address a daemon's log at `log` names.
#[track_caller]
fn logged_addr(log: &std::path::Path) -> SocketAddr {
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
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
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
fn scrape(addr: SocketAddr) -> String {
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
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.parse().ok()
    })
}

/// Waits until the sample `series` of a scrape has `want`.
#[track_caller]
fn wait_value(addr: SocketAddr, d: &Daemon, series: &str, want: f64) -> String {
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
fn wait_health(addr: SocketAddr, d: &Daemon, want: u16) -> String {
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

/// Resident memory of a process, in kB.
fn rss_kb(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Allocate round trips through the simulated kubelet: the median, in µs.
fn allocate_median_us(k: &SimKubelet, n: usize) -> u128 {
    let mut t: Vec<u128> = (0..n)
        .map(|_| {
            let start = Instant::now();
            k.allocate(R, &[&["0"]]).expect("allocate");
            start.elapsed().as_micros()
        })
        .collect();
    t.sort_unstable();
    t[n / 2]
}

/// Raises this process's open-file limit to its hard limit (1,000 client
/// sockets and the harness's own).
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on this process with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

#[test]
fn hostile_http_clients_slow_nothing() {
    raise_nofile();
    let dir = TestDir::new();
    let data = dir.host("data");
    fs::create_dir_all(&data).unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = Daemon::start(
        &dir,
        &dir_config(R, &data, "numDevices: 2\n"),
        &["--listen", "127.0.0.1:0"],
    );
    let addr = listen_addr(&d);
    wait_counts(&k, &d, R, (2, 2));
    let pid = d.child.id();
    let quiet_us = allocate_median_us(&k, 200);
    let rss_before = rss_kb(pid);

    // 1,000 idle connections, a header trickled a byte a second, a 10 MB
    // request, and garbage.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        match TcpStream::connect_timeout(&addr, WAIT) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect {}: {e}", idle.len()),
        }
    }
    let big = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0usize;
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Big: ");
        while sent < 10 * 1024 * 1024 {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        (sent, answer)
    });
    for garbage in [
        &b"\x00\x01\x02\xff\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"BREW /pot HTCPCP/1.0\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(garbage).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 400 ") || answer.starts_with("HTTP/1.1 405 "),
            "{garbage:?} → {answer:?}"
        );
    }

    // The trickle starts once the server has taken the crowd (the garbage
    // was answered), so it meets the deadline rather than being pushed out.
    let trickle = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut sent = 0;
        for b in b"GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
        sent
    });
    // Meanwhile: Allocate, a health flip, and a scraper all work as usual.
    let hostile_us = allocate_median_us(&k, 200);
    let flip = Instant::now();
    fs::remove_dir(&data).unwrap();
    wait_counts(&k, &d, R, (0, 2));
    let flip_ms = flip.elapsed().as_secs_f64() * 1e3;
    fs::create_dir(&data).unwrap();
    wait_counts(&k, &d, R, (2, 2));
    let mut scraped = None;
    assert!(
        wait_until(WAIT, || {
            scraped = get(addr, "/health").ok();
            scraped.as_ref().is_some_and(|(c, _)| *c == 200)
        }),
        "no health answer among hostile clients: {scraped:?}\n{}",
        d.log()
    );
    let (sent, answer) = big.join().unwrap();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
        "10 MB request: {answer:?}"
    );
    let rss_during = rss_kb(pid);
    // Not stopped: it runs until the server cuts it (or its text ends).
    let trickled = trickle.join().unwrap();
    println!(
        "hostile HTTP clients: Allocate median {quiet_us} µs quiet, {hostile_us} µs under 1,000 idle \
         connections, a trickle ({trickled} bytes sent before the cut) and a 10 MB request \
         ({} KiB written before the cut); health flip seen in {flip_ms:.1} ms; RSS {rss_before} kB → {rss_during} kB",
        sent / 1024
    );
    // Generous bounds: an unbounded server would hold a thread, a buffer
    // or the whole request per client.
    assert!(
        (3..10).contains(&trickled),
        "the trickling client was cut after {trickled} bytes (the deadline is 5 s)"
    );
    assert!(sent < 10 * 1024 * 1024, "the 10 MB request was read whole");
    assert!(
        hostile_us < quiet_us * 10 + 5_000,
        "Allocate slowed: {quiet_us} µs → {hostile_us} µs"
    );
    assert!(
        rss_during < rss_before + 16 * 1024,
        "RSS grew: {rss_before} → {rss_during} kB"
    );
    drop(idle);
}

/// A pattern resource over a directory where a hostile file name waits:
/// its lines name the resource, the events and the path, and no line
/// carries a raw control character, in either log format.
#[test]
fn log_lines_json_and_text() {
    for format in ["json", "text"] {
        let dir = TestDir::new();
        let dev = dir.host("dev");
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("ttyZ0"), "").unwrap();
        let config = format!(
            "resourceName: example.com/tty\nhostPath:\n  path: {}/tty*\nremoveAfter: 0s\nhealthCheckInterval: 100ms\n",
            dev.display()
        );
        let k = SimKubelet::start(&dir.dp()).unwrap();
        // The config's own file name carries an escape sequence and a
        // newline: the start line names it.
        let cfg = dir.path.join("c\x1b[31m\nfake.yaml");
        fs::write(&cfg, &config).unwrap();
        let d = Daemon::spawn_env(
            &dir,
            &["--config", cfg.to_str().unwrap(), "--log-format", format],
            &[("RUST_LOG", "info")],
            "daemon.log",
        );
        wait_counts(&k, &d, "example.com/tty", (1, 1));
        fs::write(dev.join("ttyZ\x1b[31m\nfake line"), "").unwrap();
        wait_counts(&k, &d, "example.com/tty", (2, 2));
        fs::remove_file(dev.join("ttyZ0")).unwrap();
        wait_counts(&k, &d, "example.com/tty", (1, 1));
        let log = d.log();
        for line in log.lines() {
            assert!(
                !line.chars().any(char::is_control),
                "{format}: a raw control character: {line:?}"
            );
        }
        if format == "text" {
            assert!(log.contains("example.com/tty: appeared: "), "{log}");
            assert!(log.contains("c\\x1b[31m\\x0afake.yaml"), "{log}");
            continue;
        }
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        for v in &lines {
            for key in [
                "time", "level", "resource", "event", "path", "message", "target",
            ] {
                assert!(v.get(key).is_some(), "no {key}: {v}");
            }
        }
        let event = |name: &str| {
            lines
                .iter()
                .find(|v| v["event"] == name)
                .unwrap_or_else(|| panic!("no {name} event:\n{log}"))
        };
        let appeared = event("devices_appeared");
        assert_eq!(appeared["resource"], "example.com/tty");
        assert!(
            appeared["message"].as_str().unwrap().contains("fake_line"), // the ID made from it: IDs are escaped too
            "{appeared}"
        );
        // removeAfter 0s: gone at once.
        assert_eq!(event("devices_removed")["resource"], "example.com/tty");
        assert_eq!(event("registered")["resource"], "example.com/tty");
        // A per-resource line without key-values still names its resource.
        assert!(
            lines
                .iter()
                .any(|v| v["event"].is_null() && v["resource"] == "example.com/tty"),
            "{log}"
        );
    }
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

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let at = |n: usize| {
        f.get(n - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (at(14) + at(15)) / ticks
}

/// Out of descriptors, the listener stays readable and every accept
/// fails: the endpoint must rest rather than spin on it.
#[test]
fn out_of_descriptors_the_endpoint_does_not_spin() {
    use std::os::unix::process::CommandExt;
    let dir = TestDir::new();
    let data = dir.host("data");
    fs::create_dir_all(&data).unwrap();
    let config = dir.write_config(&dir_config(R, &data, ""));
    let log = dir.path.join("daemon.log");
    let mut cmd = Command::new(crate::harness::bin());
    cmd.args([
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .arg("--device-plugin-dir")
    .arg(dir.dp())
    .arg("--pod-resources-socket")
    .arg(dir.pod_resources())
    .env("RUST_LOG", "info")
    .stderr(fs::File::create(&log).unwrap());
    // SAFETY: setrlimit in the child before exec; no allocation.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 40,
                rlim_max: 40,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let addr = logged_addr(&log);
    // More connections than descriptors left: the rest wait in the
    // listener's queue, which stays readable.
    let mut held = Vec::new();
    for _ in 0..60 {
        if let Ok(s) = TcpStream::connect_timeout(&addr, WAIT) {
            held.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_seconds(child.id());
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_seconds(child.id()) - before;
    let secs = window.elapsed().as_secs_f64();
    println!("out of descriptors: {used:.2} s of CPU in {secs:.2} s");
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        used < 0.3,
        "the endpoint spun: {used:.2} s of CPU in {secs:.2} s"
    );
}
