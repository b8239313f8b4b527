//! The last hour of a histogram, for the dashboard: the Prometheus histograms are
//! cumulative since the process started (Prometheus computes windows itself), while the
//! dashboard wants "how long did this take lately".
//!
//! A [`Window`] keeps 60 one-minute slots, each the bucket counts of that minute's
//! observations, in a ring: the slot of a new minute is cleared before it is reused, so the
//! memory is fixed (slots × buckets counters) however many observations come. The
//! percentiles of the last hour merge the slots of the last 60 minutes and interpolate as
//! [`Percentiles::from_cumulative`] does for the cumulative histogram.
//!
//! Time comes from a [`Clock`] passed in, so a test can move it; the dispatcher's is
//! [`monotonic`].

use std::iter;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::percentiles::Percentiles;

/// How many slots a window keeps: an hour of minutes.
pub const SLOTS: usize = 60;

/// How long one slot covers, in milliseconds.
pub const SLOT_MS: u64 = 60_000;

/// Milliseconds on a clock that never goes back, from any origin.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Milliseconds since this clock was made, on the monotonic clock: a wall clock that
/// steps back (NTP) would make a window's slots look as if they were from the future.
pub fn monotonic() -> Clock {
    let origin = Instant::now();
    Arc::new(move || u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX))
}

/// The bucket counts of the last hour's observations, in one-minute slots.
///
/// One lock per window, held to bump one counter (or to sum 60 × buckets of them when the
/// overview asks), so observing per job stage costs next to nothing.
pub struct Window {
    /// The buckets' finite upper bounds, ascending; one more bucket, `+Inf`, follows.
    bounds: Box<[f64]>,
    slots: Mutex<Slots>,
}

/// The ring of slots.
struct Slots {
    /// The minute (`now_ms / SLOT_MS`) each slot counts, `None` for one never used.
    minutes: [Option<u64>; SLOTS],
    /// The slots' bucket counts, one slot after the other (`bounds.len() + 1` each).
    counts: Box<[u64]>,
}

impl Window {
    /// An empty window over buckets with these finite upper bounds (ascending, as a
    /// Prometheus histogram's; values above the last fall in `+Inf`).
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Box<[f64]> = bounds.into_iter().collect();
        let counts = vec![0; SLOTS * (bounds.len() + 1)].into_boxed_slice();
        Self {
            bounds,
            slots: Mutex::new(Slots {
                minutes: [None; SLOTS],
                counts,
            }),
        }
    }

    /// Counts one observation of `seconds` at `now_ms`, in the first bucket whose bound
    /// is at least `seconds` (as the Prometheus histogram does).
    pub fn observe(&self, now_ms: u64, seconds: f64) {
        if seconds.is_nan() {
            return;
        }
        let bucket = self.bounds.partition_point(|&le| le < seconds);
        let minute = now_ms / SLOT_MS;
        let slot = (minute % SLOTS as u64) as usize;
        let width = self.width();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let Slots { minutes, counts } = &mut *slots;
        let counts = &mut counts[slot * width..(slot + 1) * width];
        if minutes[slot] != Some(minute) {
            // The slot last counted a minute an hour or more ago: start it afresh.
            counts.fill(0);
            minutes[slot] = Some(minute);
        }
        counts[bucket] += 1;
    }

    /// The percentiles of the observations of the last hour as of `now_ms`: this minute's
    /// and the 59 before it's (so an observation leaves between 59 and 60 minutes after
    /// it was made).
    pub fn percentiles(&self, now_ms: u64) -> Percentiles {
        let minute = now_ms / SLOT_MS;
        let width = self.width();
        let mut merged = vec![0u64; width];
        {
            let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let recent = slots
                .minutes
                .iter()
                .enumerate()
                .filter(|(_, m)| m.is_some_and(|m| m <= minute && minute - m < SLOTS as u64));
            for (slot, _) in recent {
                let counts = &slots.counts[slot * width..(slot + 1) * width];
                for (sum, n) in merged.iter_mut().zip(counts) {
                    *sum += n;
                }
            }
        }
        let cumulative: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(iter::once(f64::INFINITY))
            .zip(merged)
            .scan(0, |total, (le, n)| {
                *total += n;
                Some((le, *total))
            })
            .collect();
        Percentiles::from_cumulative(&cumulative)
    }

    /// Counters per slot: one per finite bound and `+Inf`.
    fn width(&self) -> usize {
        self.bounds.len() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = SLOT_MS;
    const HOUR: u64 = SLOTS as u64 * MINUTE;

    fn window() -> Window {
        Window::new([1.0, 2.0, 4.0])
    }

    #[test]
    fn observations_in_give_the_percentiles_of_their_buckets_out() {
        let w = window();
        assert_eq!(w.percentiles(0), Percentiles::default());
        // Spread over two minutes: the slots are merged.
        for _ in 0..10 {
            w.observe(5 * MINUTE, 1.5);
            w.observe(6 * MINUTE + 59_999, 3.0);
        }
        let p = w.percentiles(7 * MINUTE);
        assert_eq!(p.count, 20);
        assert_eq!(p.p50, Some(2.0));
        assert!((p.p90.unwrap() - 3.6).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn a_bound_counts_in_its_own_bucket_and_anything_above_the_last_in_inf() {
        let w = window();
        w.observe(0, 2.0);
        let p99 = w.percentiles(0).p99.unwrap();
        assert!(p99 > 1.0 && p99 <= 2.0, "in the bucket (1, 2]: {p99}");
        let w = window();
        w.observe(0, 1000.0);
        let p = w.percentiles(0);
        assert_eq!(p.count, 1);
        assert_eq!(p.p50, Some(4.0), "the last finite bound: {p:?}");
    }

    #[test]
    fn observations_leave_the_window_an_hour_after_their_minute() {
        let w = window();
        w.observe(10 * MINUTE + 30_000, 1.5);
        w.observe(40 * MINUTE, 3.0);
        // Still within the hour: the 10th minute's slot is the oldest of 60.
        assert_eq!(w.percentiles(69 * MINUTE + 59_999).count, 2);
        // The 70th minute: the 10th has left, the 40th remains.
        let p = w.percentiles(70 * MINUTE);
        assert_eq!(p.count, 1);
        assert!(p.p50.unwrap() > 2.0, "only the 3.0 is left: {p:?}");
        // Long after: nothing, though no observation came to clear the slots.
        assert_eq!(w.percentiles(40 * MINUTE + HOUR), Percentiles::default());
        assert_eq!(w.percentiles(10 * HOUR), Percentiles::default());
    }

    #[test]
    fn a_slot_reused_an_hour_later_does_not_keep_its_old_counts() {
        let w = window();
        for _ in 0..5 {
            w.observe(3 * MINUTE, 0.5);
        }
        // The same slot (minute 63 = 3 + 60), an hour later.
        w.observe(3 * MINUTE + HOUR, 3.0);
        let p = w.percentiles(3 * MINUTE + HOUR);
        assert_eq!(p.count, 1, "{p:?}");
        assert!(p.p50.unwrap() > 2.0, "{p:?}");
        // And it stays so for the rest of its hour.
        assert_eq!(w.percentiles(3 * MINUTE + HOUR + 59 * MINUTE).count, 1);
        assert_eq!(w.percentiles(3 * MINUTE + 2 * HOUR).count, 0);
    }

    #[test]
    fn the_monotonic_clock_starts_near_zero_and_does_not_go_back() {
        let clock = monotonic();
        let first = clock();
        assert!(first < 1000, "{first}");
        assert!(clock() >= first);
    }
}
