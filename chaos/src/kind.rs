//! The jobs of a run: the four [`Kind`]s the load submits, the end each should reach, and
//! the record of an [`Acked`] one.

/// The kind of a job and what end it should reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `quick`: runs 0.3 s, succeeds.
    Quick,
    /// `fail`: exits 3.
    Fail,
    /// `slow`: runs 30 s against a 2 s limit.
    Slow,
    /// `sleeper`: runs 20 s, cancelled after ~1 s.
    Cancel,
}

impl Kind {
    /// The kind of the `i`th job: 70 % quick, 10 % each of the others.
    pub fn of(i: usize) -> Kind {
        match i % 10 {
            7 => Kind::Fail,
            8 => Kind::Slow,
            9 => Kind::Cancel,
            _ => Kind::Quick,
        }
    }

    /// The agent profile its jobs run.
    pub fn agent(self) -> &'static str {
        match self {
            Kind::Quick => "quick",
            Kind::Fail => "fail",
            Kind::Slow => "slow",
            Kind::Cancel => "sleeper",
        }
    }

    /// The end state its jobs should reach.
    pub fn expected(self) -> &'static str {
        match self {
            Kind::Quick => "succeeded",
            Kind::Fail => "failed",
            Kind::Slow => "timed_out",
            Kind::Cancel => "cancelled",
        }
    }
}

/// An acknowledged job.
#[derive(Debug, Clone)]
pub struct Acked {
    /// Its place in the load (which also picks its first replica).
    pub index: usize,
    /// Its kind.
    pub kind: Kind,
    /// Its id.
    pub id: String,
    /// When it was first submitted.
    pub submitted_ms: i64,
    /// When it was acknowledged.
    pub acked_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_in_ten_jobs_are_quick_and_one_each_fails_is_slow_or_is_cancelled() {
        let kinds: Vec<Kind> = (0..10).map(Kind::of).collect();
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Quick).count(), 7);
        assert_eq!(&kinds[7..], &[Kind::Fail, Kind::Slow, Kind::Cancel]);
        assert_eq!(Kind::Cancel.agent(), "sleeper");
        assert_eq!(Kind::Slow.expected(), "timed_out");
    }
}
