//! What happened to one resource, counted: plain atomics the fronts and the
//! monitor bump without a lock, and that the metrics endpoint reads
//! (DESIGN.md B17). The core counts; it neither names nor serves metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of Allocate's latency buckets: an answer built
/// from memory takes tens of microseconds; anything past 10 ms is news.
pub const ALLOCATE_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1,
];

/// Upper bounds (seconds) of a discovery scan's buckets: a look at one
/// entry is sub-millisecond, a full scan of 10,000 nodes tens of ms, one
/// stuck on a slow filesystem seconds.
pub const SCAN_BUCKETS: &[f64] = &[0.000_1, 0.001, 0.01, 0.1, 1.0, 10.0];

/// A cumulative histogram over fixed bucket bounds, lock-free.
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations at or below each bound (not cumulative: summed when
    /// read), then one for those above every bound.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// A histogram as read at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, cumulative count)` for each bound, in order.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0u64;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, c) in self.bounds.iter().zip(self.counts.iter()) {
            running += c.load(Ordering::Relaxed);
            buckets.push((*bound, running));
        }
        let count = running + self.counts[self.bounds.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            buckets,
            count,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// How an Allocate call ended, as the metrics label it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocateResult {
    Ok,
    /// Unknown, vanished or clashing IDs (INVALID_ARGUMENT).
    Invalid,
    /// The answer would exceed the kubelet's message limit.
    TooLarge,
    /// A device a pod holds through the other API (FAILED_PRECONDITION).
    Held,
}

impl AllocateResult {
    pub const ALL: [AllocateResult; 4] = [
        AllocateResult::Ok,
        AllocateResult::Invalid,
        AllocateResult::TooLarge,
        AllocateResult::Held,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AllocateResult::Ok => "ok",
            AllocateResult::Invalid => "invalid",
            AllocateResult::TooLarge => "too_large",
            AllocateResult::Held => "held",
        }
    }
}

/// One resource's counters. They live as long as its state, so a reload
/// that changes a resource keeps them; one retired and added again starts
/// from zero (Prometheus sees a counter reset, which `rate()` handles).
pub struct Stats {
    allocations: [AtomicU64; 4],
    /// Containers answered by successful Allocate calls
    /// (generic-device-plugin's `allocations_total` counts these).
    pub containers_allocated: AtomicU64,
    pub allocate_latency: Histogram,
    /// Host-path health checks finished (fixed paths).
    pub health_checks: AtomicU64,
    /// Checks or scans reported hung (no progress for the hang limit).
    pub hung_checks: AtomicU64,
    /// Full scans of a resource whose devices come and go.
    pub full_scans: Histogram,
    /// Looks at the single entries events named.
    pub partial_scans: Histogram,
    /// Lists sent cut to fit the kubelet's message limit.
    pub lists_cut: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            allocations: Default::default(),
            containers_allocated: AtomicU64::new(0),
            allocate_latency: Histogram::new(ALLOCATE_BUCKETS),
            health_checks: AtomicU64::new(0),
            hung_checks: AtomicU64::new(0),
            full_scans: Histogram::new(SCAN_BUCKETS),
            partial_scans: Histogram::new(SCAN_BUCKETS),
            lists_cut: AtomicU64::new(0),
        }
    }
}

impl Stats {
    /// One Allocate call: how it ended, how many containers it answered,
    /// and how long the answer took to build.
    pub fn allocated(&self, result: AllocateResult, containers: usize, took: Duration) {
        self.allocations[result as usize].fetch_add(1, Ordering::Relaxed);
        if result == AllocateResult::Ok {
            self.containers_allocated
                .fetch_add(containers as u64, Ordering::Relaxed);
        }
        self.allocate_latency.observe(took);
    }

    pub fn allocations(&self, result: AllocateResult) -> u64 {
        self.allocations[result as usize].load(Ordering::Relaxed)
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_keeps_the_overflow() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(2));
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(0.001, 2), (0.01, 3)]);
        assert_eq!(s.count, 4);
        assert!((s.sum_seconds - 2.0065).abs() < 1e-9, "{}", s.sum_seconds);
    }

    #[test]
    fn allocations_by_result() {
        let s = Stats::default();
        s.allocated(AllocateResult::Ok, 3, Duration::from_micros(80));
        s.allocated(AllocateResult::Held, 1, Duration::from_micros(20));
        assert_eq!(s.allocations(AllocateResult::Ok), 1);
        assert_eq!(s.allocations(AllocateResult::Held), 1);
        assert_eq!(s.allocations(AllocateResult::Invalid), 0);
        assert_eq!(Stats::read(&s.containers_allocated), 3);
        assert_eq!(s.allocate_latency.snapshot().count, 2);
    }
}
