//! The figures of devices that come and go: hotplug latency, scans, and
//! the daemon at 100,000 matches and under event storms (issues 11, 20).

use super::*;

/// A pattern resource over `/dev/tty*` with a long interval (inotify
/// only) and `removeAfter: 0s`; the daemon runs with a host root whose
/// `dev` is a scratch directory, so IDs are as long as on a node.
fn pattern_config(s: &Scratch) -> PathBuf {
    let text = "resources:\n- resourceName: example.com/p\n  hostPath: {path: '/dev/tty*'}\n  healthCheckInterval: 1h\n  removeAfter: 0s\n";
    let p = s.0.join("config.yaml");
    fs::write(&p, text).unwrap();
    p
}

fn spawn_rooted(s: &Scratch, root: &Path) -> Stop {
    let cfg = pattern_config(s);
    Stop(s.spawn_with(&cfg, &["--host-root", root.to_str().unwrap()]))
}

/// Devices that come and go (issue 11): the first list of 10,000 matches,
/// a burst of 100 new ones, single plugs, and the memory 10,000 take.
pub(crate) fn come_and_go(t: &mut Table) {
    const N: usize = 10_000;
    let name = "example.com/p";
    let s = Scratch::new("g");
    let many = s.0.join("many");
    fs::create_dir_all(many.join("dev")).unwrap();
    for i in 0..N {
        fs::write(many.join(format!("dev/tty{i:05}")), b"").unwrap();
    }
    let mut first = Vec::new();
    for _ in 0..10 {
        let k = SimKubelet::start(&s.dp()).unwrap();
        let child = spawn_rooted(&s, &many);
        let rec = k
            .wait_for(WAIT, |r| {
                r.counts(name).filter(|c| c.1 == N).map(|_| r.clone())
            })
            .expect("10k list");
        first.push(rec.first_list_at[name] - rec.registered_at[0]);
        drop(child);
        drop(k);
        let _ = fs::remove_file(s.dp().join("example.com-p.sock"));
    }
    t.times(
        "10,000 matches in one directory: Register → first list",
        "≤ 50 ms",
        Some(Duration::from_millis(50)),
        first,
        false,
    );

    // Bursts, plugs and memory on one daemon watching an empty directory.
    let root = s.0.join("plug");
    let dir = root.join("dev");
    fs::create_dir_all(&dir).unwrap();
    let k = SimKubelet::start(&s.dp()).unwrap();
    let d = spawn_rooted(&s, &root);
    let pid = d.0.id();
    k.wait_for(WAIT, |r| r.counts(name).filter(|c| c.1 == 0))
        .expect("empty list");
    let wait_total = |n: usize| {
        k.wait_for(WAIT, |r| {
            r.counts(name)
                .filter(|c| c.0 == n && c.1 == n)
                .map(|_| r.last_list_at[name])
        })
        .expect("list")
    };
    let mut plugs = Vec::new();
    for i in 0..200 {
        let p = dir.join(format!("tty{i}"));
        let t0 = Instant::now();
        fs::write(&p, b"").unwrap();
        plugs.push(wait_total(1) - t0);
        fs::remove_file(&p).unwrap();
        wait_total(0);
    }
    t.times(
        "one plug → the kubelet lists it",
        "≤ 100 ms",
        Some(Duration::from_millis(100)),
        plugs,
        false,
    );
    let mut bursts = Vec::new();
    for round in 0..20 {
        let mut last = Instant::now();
        for i in 0..100 {
            fs::write(dir.join(format!("tty{round}-{i}")), b"").unwrap();
            last = Instant::now();
        }
        bursts.push(wait_total(100).saturating_duration_since(last));
        for i in 0..100 {
            fs::remove_file(dir.join(format!("tty{round}-{i}"))).unwrap();
        }
        wait_total(0);
    }
    t.times(
        "burst of 100 new matches: last created → all 100 listed",
        "≤ 100 ms",
        Some(Duration::from_millis(100)),
        bursts,
        false,
    );
    thread::sleep(Duration::from_secs(1));
    let idle = proc_status(pid, "VmRSS:");
    for i in 0..N {
        fs::write(dir.join(format!("tty{i:05}")), b"").unwrap();
    }
    wait_total(N);
    thread::sleep(Duration::from_secs(1));
    let full = proc_status(pid, "VmRSS:");
    let delta = full.saturating_sub(idle);
    t.value(
        "RSS with 10,000 devices listed, above the same daemon idle",
        "≤ 2 MB",
        format!(
            "+{:.2} MB ({:.1} → {:.1} MB)",
            delta as f64 / 1024.0,
            idle as f64 / 1024.0,
            full as f64 / 1024.0
        ),
        Some(delta <= 2 * 1024),
    );
}

/// Peak threads of a process while `during` runs, sampled every 2 ms.
fn peak_threads(pid: u32, during: impl FnOnce()) -> u64 {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let sampler = thread::spawn(move || {
        let mut peak = 0;
        while !s.load(Ordering::SeqCst) {
            peak = peak.max(proc_status(pid, "Threads:"));
            thread::sleep(Duration::from_millis(2));
        }
        peak
    });
    during();
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap()
}

/// Issue 20, item 10: one plug among 100,000 matches, a storm of 100 new
/// matches a second, and 40 resources of 20,000 matches rescanning at once.
pub(crate) fn scale(t: &mut Table) {
    let n = env_num("BENCH_SCALE_MATCHES", 100_000) as usize;
    #[allow(non_snake_case)]
    let N = n;
    let name = "example.com/p";
    let s = Scratch::new("x");
    let root = s.0.join("big");
    let dir = root.join("dev");
    fs::create_dir_all(&dir).unwrap();
    for i in 0..N {
        fs::write(dir.join(format!("tty{i:06}")), b"").unwrap();
    }
    let k = SimKubelet::start(&s.dp()).unwrap();
    let d = spawn_rooted(&s, &root);
    let pid = d.0.id();
    let wait_total = |n: usize| {
        k.wait_for(Duration::from_secs(30), |r| {
            r.counts(name)
                .filter(|c| c.0 == n && c.1 == n)
                .map(|_| r.last_list_at[name])
        })
        .expect("list")
    };
    wait_total(N);
    let mut plugs = Vec::new();
    let cpu0 = cpu_ticks(pid);
    const PLUGS: usize = 20;
    for i in 0..PLUGS {
        let p = dir.join(format!("ttynew{i}"));
        let t0 = Instant::now();
        fs::write(&p, b"").unwrap();
        plugs.push(wait_total(N + 1) - t0);
        fs::remove_file(&p).unwrap();
        wait_total(N);
        // A quiet spell longer than the daemon's merge gap (100 ms at this
        // size): changes closer together are merged together.
        thread::sleep(Duration::from_millis(150));
    }
    let cpu = cpu_ticks(pid) - cpu0;
    t.times(
        "100,000 matches: one plug (after 150 ms quiet) → the kubelet lists it",
        "≤ 100 ms",
        Some(Duration::from_millis(100)),
        plugs,
        false,
    );
    let ticks = clock_ticks();
    t.value(
        "100,000 matches: daemon CPU per rescan (plug or unplug)",
        "—",
        format!(
            "{:.0} ms",
            cpu as f64 * 1000.0 / ticks as f64 / (2 * PLUGS) as f64
        ),
        None,
    );
    // A storm: 100 new matches a second for 5 s.
    let cpu0 = cpu_ticks(pid);
    let t0 = Instant::now();
    let mut settle = Duration::ZERO;
    let peak = peak_threads(pid, || {
        for i in 0..500 {
            fs::write(dir.join(format!("ttystorm{i}")), b"").unwrap();
            let due = t0 + Duration::from_millis(10 * (i + 1));
            thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let last = Instant::now();
        settle = wait_total(N + 500).saturating_duration_since(last);
    });
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_ticks(pid) - cpu0;
    t.value(
        "100,000 matches, 100 new a second for 5 s: daemon CPU, peak threads, peak RSS; last created → all listed",
        "bounded",
        format!(
            "{:.0}% of a core, {peak} threads, {:.1} MB; {}",
            cpu as f64 / ticks as f64 / secs * 100.0,
            proc_status(pid, "VmHWM:") as f64 / 1024.0,
            fmt_d(settle)
        ),
        None,
    );
    drop(d);
    drop(k);
    let _ = fs::remove_dir_all(&root);

    // 40 resources over one directory of 20,000 matches: one event
    // rescans all 40.
    const M: usize = 20_000;
    let s = Scratch::new("y");
    let root = s.0.join("wide");
    let dir = root.join("dev");
    fs::create_dir_all(&dir).unwrap();
    for i in 0..M {
        fs::write(dir.join(format!("tty{i:05}")), b"").unwrap();
    }
    let mut text = String::from("resources:\n");
    for r in 0..40 {
        text.push_str(&format!(
            "- resourceName: example.com/w{r}\n  hostPath: {{path: '/dev/tty*'}}\n  healthCheckInterval: 1h\n  removeAfter: 0s\n"
        ));
    }
    let cfg = s.0.join("wide.yaml");
    fs::write(&cfg, text).unwrap();
    let k = SimKubelet::start(&s.dp()).unwrap();
    let d = Stop(s.spawn_with(&cfg, &["--host-root", root.to_str().unwrap()]));
    let pid = d.0.id();
    let all = |n: usize| {
        k.wait_for(Duration::from_secs(60), |r| {
            (0..40)
                .all(|i| r.counts(&format!("example.com/w{i}")) == Some((n, n)))
                .then_some(())
        })
        .expect("40 lists")
    };
    all(M);
    let t0 = Instant::now();
    let peak = peak_threads(pid, || {
        fs::write(dir.join("tty-new"), b"").unwrap();
        all(M + 1);
    });
    t.value(
        "40 resources of 20,000 matches, one event: all 40 listed, peak threads, peak RSS",
        "bounded",
        format!(
            "{}, {peak} threads, {:.1} MB",
            fmt_d(t0.elapsed()),
            proc_status(pid, "VmHWM:") as f64 / 1024.0
        ),
        None,
    );
}
