//! Percentiles estimated from a histogram's buckets, as Prometheus's `histogram_quantile`
//! does: find the bucket that holds the rank, interpolate linearly within it. One piece of
//! math for both the cumulative histogram (read back from the `/metrics` text) and the
//! last hour's [`Window`](super::window::Window).

use serde::Serialize;

/// Percentiles estimated from a histogram's buckets, in seconds; `None` when nothing was
/// observed.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Observations.
    pub count: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

impl Percentiles {
    /// The percentiles of cumulative `buckets`: pairs of an upper bound and the
    /// observations at or below it, in ascending order of bound, the last `+Inf` (so its
    /// count is every observation).
    pub fn from_cumulative(buckets: &[(f64, u64)]) -> Self {
        let count = buckets.last().map(|b| b.1).unwrap_or(0);
        let quantile = |q: f64| -> Option<f64> {
            if count == 0 {
                return None;
            }
            let rank = q * count as f64;
            let mut lower = (0.0, 0u64);
            for &(le, cumulative) in buckets {
                if cumulative as f64 >= rank {
                    if le.is_infinite() {
                        // Beyond the last finite bucket: its bound is the best we can say.
                        return Some(lower.0);
                    }
                    let in_bucket = cumulative.saturating_sub(lower.1) as f64;
                    let fraction = if in_bucket > 0.0 {
                        (rank - lower.1 as f64) / in_bucket
                    } else {
                        1.0
                    };
                    return Some(lower.0 + (le - lower.0) * fraction);
                }
                lower = (le, cumulative);
            }
            None
        };
        Percentiles {
            count,
            p50: quantile(0.5),
            p90: quantile(0.9),
            p99: quantile(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rank_is_interpolated_within_the_bucket_that_holds_it() {
        let buckets = [(1.0, 0), (2.0, 10), (4.0, 20), (f64::INFINITY, 20)];
        let p = Percentiles::from_cumulative(&buckets);
        assert_eq!(p.count, 20);
        assert_eq!(p.p50, Some(2.0));
        assert!((p.p90.unwrap() - 3.6).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn a_rank_beyond_the_last_finite_bucket_is_that_buckets_bound() {
        let buckets = [(1.0, 1), (2.0, 1), (f64::INFINITY, 100)];
        let p = Percentiles::from_cumulative(&buckets);
        assert_eq!(p.count, 100);
        assert_eq!(p.p99, Some(2.0), "{p:?}");
    }

    #[test]
    fn no_buckets_or_no_observations_give_no_percentiles() {
        assert_eq!(Percentiles::from_cumulative(&[]), Percentiles::default());
        let empty = Percentiles::from_cumulative(&[(1.0, 0), (f64::INFINITY, 0)]);
        assert_eq!(empty, Percentiles::default());
    }
}
