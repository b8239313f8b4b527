//! Time as the fleet measures it: one clock for the runners' stamps and the followers'
//! readings, and the measured window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Microseconds since the epoch of `at`, from one reading of the wall clock taken the first
/// time this is called: runners stamp lines and followers read them on the same monotonic
/// clock, so a wall-clock step in between cannot show as latency.
pub fn epoch_us(at: Instant) -> u64 {
    static BASE: OnceLock<(Instant, u64)> = OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        (Instant::now(), now)
    });
    epoch_us_from(base, at)
}

/// `at` in microseconds on the clock where `base.0` reads `base.1`. The offset is taken in
/// nanoseconds and floored once, so the difference of two stamps is the same whichever side
/// of the base they fall on (two truncations, one each way, would lose a microsecond).
fn epoch_us_from((base, base_us): (Instant, u64), at: Instant) -> u64 {
    let offset_ns = match at.checked_duration_since(base) {
        Some(after) => after.as_nanos() as i128,
        None => -(base.duration_since(at).as_nanos() as i128),
    };
    (i128::from(base_us) + offset_ns.div_euclid(1000)).max(0) as u64
}

/// The measured window, in [`epoch_us`]: closed (nothing counts) until opened.
pub struct Window {
    start: AtomicU64,
    end: AtomicU64,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            start: AtomicU64::new(u64::MAX),
            end: AtomicU64::new(u64::MAX),
        }
    }
}

impl Window {
    /// Opens the window now.
    pub fn open(&self) {
        self.start.store(epoch_us(Instant::now()), Ordering::SeqCst);
    }

    /// Closes the window now: later stamps no longer count.
    pub fn close(&self) {
        self.end.store(epoch_us(Instant::now()), Ordering::SeqCst);
    }

    /// Whether a stamp falls inside the window.
    pub fn contains(&self, us: u64) -> bool {
        us >= self.start.load(Ordering::Relaxed) && us < self.end.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_closed_window_counts_nothing_and_an_open_one_what_follows() {
        let window = Window::default();
        let now = epoch_us(Instant::now());
        assert!(!window.contains(now));
        window.open();
        assert!(window.contains(now + 1_000_000));
        assert!(!window.contains(now.saturating_sub(1_000_000)));
        window.close();
        assert!(!window.contains(now + 1_000_000));
    }

    #[test]
    fn stamps_follow_the_monotonic_clock() {
        let now = Instant::now();
        let later = now + Duration::from_millis(1500);
        assert_eq!(epoch_us(later) - epoch_us(now), 1_500_000);
    }

    #[test]
    fn a_span_across_the_base_loses_no_microsecond() {
        let base = (Instant::now(), 1_000_000_000);
        // Stamps a fraction of a microsecond before the base, and 1.5 s after them.
        for nanos in [1, 300, 700, 999, 1_000, 1_001, 1_700] {
            let Some(before) = base.0.checked_sub(Duration::from_nanos(nanos)) else {
                continue;
            };
            let after = before + Duration::from_millis(1500);
            assert_eq!(
                epoch_us_from(base, after) - epoch_us_from(base, before),
                1_500_000,
                "{nanos} ns before the base"
            );
        }
    }
}
