//! The per-resource cost model (issue 26, item 3): open files, threads,
//! resident memory and idle wake-ups of one daemon serving 1, 10 and 100
//! resources (a fixed path each, registered with the simulated kubelet,
//! 10 s health checks), measured once its start-up has settled; then a
//! straight line through the three points per figure, and what it
//! predicts for 50 resources, which is measured too. `BENCH_ONLY=cost`
//! runs only this; `BENCH_COST_SETTLE` (default 35 s: the handover's
//! first 30 s ask pod-resources every second) and `BENCH_COST_WINDOW`
//! (default 20 s) set the waits.

use std::fs;
use std::thread;
use std::time::Duration;

use k8s_hostpath_device_plugin::sim::SimKubelet;

use super::{cpu_ticks, env_num, proc_status, switches, Scratch, Stop, Table, WAIT};

/// What one daemon costs, settled and idle.
struct Cost {
    resources: usize,
    fds: f64,
    threads: f64,
    rss_kb: f64,
    /// Context switches of all its threads per 10 s idle.
    wakeups: f64,
    /// CPU ticks per 10 s idle.
    cpu_ticks: f64,
}

fn measure(resources: usize, settle: Duration, window: Duration) -> Cost {
    let s = Scratch::new("cost");
    let config = s.config(resources, 1, "10s");
    let k = SimKubelet::start(&s.dp()).expect("simulated kubelet");
    let daemon = Stop(s.spawn(&config));
    let pid = daemon.0.id();
    let registered = k.wait_for(WAIT * 3, |r| {
        let names: std::collections::BTreeSet<&str> = r
            .registrations
            .iter()
            .map(|g| g.resource_name.as_str())
            .collect();
        (names.len() == resources).then_some(())
    });
    assert!(
        registered.is_some(),
        "{resources} resources did not register"
    );
    thread::sleep(settle);
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()) as f64;
    let threads = proc_status(pid, "Threads:") as f64;
    let rss_kb = proc_status(pid, "VmRSS:") as f64;
    let sw = |v: Vec<(String, u64)>| v.iter().map(|(_, n)| n).sum::<u64>();
    let (sw0, cpu0) = (sw(switches(pid)), cpu_ticks(pid));
    thread::sleep(window);
    let (sw1, cpu1) = (sw(switches(pid)), cpu_ticks(pid));
    let per10 = 10.0 / window.as_secs_f64();
    Cost {
        resources,
        fds,
        threads,
        rss_kb,
        wakeups: (sw1 - sw0) as f64 * per10,
        cpu_ticks: (cpu1 - cpu0) as f64 * per10,
    }
}

/// Least squares `a + b·x` through the points.
fn fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let b = if sxx == 0.0 { 0.0 } else { sxy / sxx };
    (my - b * mx, b)
}

pub fn model(t: &mut Table) {
    let settle = Duration::from_secs(env_num("BENCH_COST_SETTLE", 35));
    let window = Duration::from_secs(env_num("BENCH_COST_WINDOW", 20));
    println!(
        "cost model: 1, 10, 100 and 50 resources, each settled {settle:?}, then {window:?} idle"
    );
    let points: Vec<Cost> = [1, 10, 100]
        .into_iter()
        .map(|n| measure(n, settle, window))
        .collect();
    let check = measure(50, settle, window);
    type Get = fn(&Cost) -> f64;
    let figures: [(&str, Get); 5] = [
        ("open files", |c| c.fds),
        ("threads", |c| c.threads),
        ("RSS, kB", |c| c.rss_kb),
        ("wake-ups per 10 s idle", |c| c.wakeups),
        ("CPU ticks per 10 s idle", |c| c.cpu_ticks),
    ];
    println!("\n| figure | 1 | 10 | 100 | model: a + b·N | predicted at 50 | measured at 50 |");
    println!("|---|---|---|---|---|---|---|");
    for (name, get) in figures {
        let xy: Vec<(f64, f64)> = points
            .iter()
            .map(|c| (c.resources as f64, get(c)))
            .collect();
        let (a, b) = fit(&xy);
        let predicted = a + b * 50.0;
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {a:.1} + {b:.3}·N | {predicted:.0} | {:.0} |",
            xy[0].1,
            xy[1].1,
            xy[2].1,
            get(&check)
        );
        t.value(
            &format!("cost model, {name}"),
            "a + b·N",
            format!(
                "{a:.1} + {b:.3}·N (50: predicted {predicted:.0}, measured {:.0})",
                get(&check)
            ),
            None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn a_line_is_fitted() {
        let (a, b) = fit(&[(1.0, 12.0), (10.0, 30.0), (100.0, 210.0)]);
        assert!((a - 10.0).abs() < 1e-9 && (b - 2.0).abs() < 1e-9, "{a} {b}");
    }
}
