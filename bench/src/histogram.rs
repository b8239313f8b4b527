//! Latency histograms in 1 ms steps, shared by every task that records, and their
//! percentiles: what the streams and fleet phases report of line latency.

use std::sync::atomic::{AtomicU64, Ordering};

/// The histograms' last bucket (ms): slower samples land in it.
pub const MAX_MS: usize = 60_000;

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// 50th.
    pub p50: u64,
    /// 99th.
    pub p99: u64,
    /// Largest (bucketed; [`MAX_MS`] means at least that).
    pub max: u64,
}

/// Counts in 1 ms buckets, shared by every task that records.
pub struct Histogram(Vec<AtomicU64>);

impl Default for Histogram {
    fn default() -> Self {
        Self((0..=MAX_MS).map(|_| AtomicU64::new(0)).collect())
    }
}

impl Histogram {
    /// Records one sample of `ms` milliseconds.
    pub fn record(&self, ms: u64) {
        self.0[(ms as usize).min(MAX_MS)].fetch_add(1, Ordering::Relaxed);
    }

    /// The percentiles of what was recorded.
    pub fn percentiles(&self) -> Percentiles {
        let counts: Vec<u64> = self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        let at = |share: f64| {
            let rank = ((count as f64) * share).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (ms, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return ms as u64;
                }
            }
            MAX_MS as u64
        };
        Percentiles {
            count,
            p50: at(0.50),
            p99: at(0.99),
            max: counts.iter().rposition(|n| *n > 0).unwrap_or(0) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_count_in_milliseconds() {
        let h = Histogram::default();
        for ms in 1..=100 {
            h.record(ms);
        }
        h.record(1_000_000);
        let p = h.percentiles();
        assert_eq!(
            (p.count, p.p50, p.p99, p.max),
            (101, 51, 100, MAX_MS as u64)
        );
    }
}
