//! The process's own figures, read from `/proc/self` at each scrape, under
//! the names Prometheus's process collectors use (`process_*`).

use std::path::Path;

/// What `/proc` says about this process now; a figure it could not read
/// is left out of the exposition rather than shown as zero.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Process {
    pub resident_bytes: Option<u64>,
    pub threads: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

impl Process {
    /// Reads the figures of the process whose `/proc` directory is `proc`
    /// (`/proc/self`).
    pub fn read(proc: &Path) -> Process {
        let status = std::fs::read_to_string(proc.join("status")).unwrap_or_default();
        let field = |key: &str| {
            status.lines().find_map(|l| {
                l.strip_prefix(key)?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
        };
        let open_fds = std::fs::read_dir(proc.join("fd"))
            .ok()
            .map(|d| d.count() as u64);
        // SAFETY: sysconf and getrlimit only read process settings.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid rlimit for the call to fill.
        let max_fds = (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0)
            .then_some(lim.rlim_cur);
        let (cpu_seconds, start_time_seconds) = std::fs::read_to_string(proc.join("stat"))
            .ok()
            .and_then(|stat| times(&stat, ticks))
            .map_or((None, None), |(cpu, start_ticks)| {
                let boot = boot_time();
                (
                    Some(cpu),
                    boot.map(|b| b as f64 + start_ticks as f64 / ticks as f64),
                )
            });
        Process {
            resident_bytes: field("VmRSS:").map(|kb| kb * 1024),
            threads: field("Threads:"),
            open_fds,
            max_fds,
            cpu_seconds,
            start_time_seconds,
        }
    }

    /// Calls `out(name, type, help, value)` for each figure read.
    pub fn render(&self, out: &mut dyn FnMut(&str, &str, &str, f64)) {
        let figures: [(&str, &str, &str, Option<f64>); 6] = [
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                self.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_threads",
                "gauge",
                "Threads of the process.",
                self.threads.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "gauge",
                "Open file descriptors.",
                self.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "gauge",
                "The open-file limit (soft).",
                self.max_fds.map(|v| v as f64),
            ),
            (
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time spent, in seconds.",
                self.cpu_seconds,
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the Unix epoch, in seconds.",
                self.start_time_seconds,
            ),
        ];
        for (name, kind, help, value) in figures {
            if let Some(v) = value {
                out(name, kind, help, v);
            }
        }
    }
}

/// CPU seconds (user + system) and the start time in clock ticks after
/// boot, from `/proc/<pid>/stat`. The command name (field 2) may hold
/// spaces and parentheses: fields are counted after its last `)`.
fn times(stat: &str, ticks: i64) -> Option<(f64, u64)> {
    if ticks <= 0 {
        return None;
    }
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15, starttime 22.
    let at = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let cpu = (at(14)? + at(15)?) as f64 / ticks as f64;
    Some((cpu, at(22)?))
}

/// The boot time (`btime` of `/proc/stat`), in seconds since the epoch.
fn boot_time() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_hostile_name() {
        // A command name with spaces and a `)` of its own.
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 7 0 12345 0 0";
        assert_eq!(times(stat, 100), Some((4.0, 12345)));
        assert_eq!(times("garbage", 100), None);
    }

    #[test]
    fn reads_this_process() {
        let p = Process::read(Path::new("/proc/self"));
        assert!(p.resident_bytes.unwrap() > 0);
        assert!(p.threads.unwrap() >= 1);
        assert!(p.open_fds.unwrap() >= 3);
        let mut names = Vec::new();
        p.render(&mut |n, _, _, _| names.push(n.to_string()));
        assert!(names.contains(&"process_open_fds".to_string()), "{names:?}");
    }
}
