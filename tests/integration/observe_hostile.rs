//! The metrics endpoint and the logs under hostile input: 1,000 idle
//! connections, a trickled request, a 10 MB request, garbage, running out
//! of descriptors; file names with control characters in both log formats.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_hostpath_device_plugin::sim::SimKubelet;

use crate::harness::{dir_config, wait_counts, wait_until, Daemon, TestDir, WAIT};
use crate::metrics::{get, listen_addr, logged_addr};

const R: &str = "example.com/data";

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
