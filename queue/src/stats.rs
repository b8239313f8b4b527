//! Counters for metrics: jobs per state (now and ever), and the lengths of the queues.

use std::collections::HashMap;

use crate::fields::stats as c;
use crate::{Queue, Result};

/// Counters for metrics, read from Redis.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Jobs currently in each non-terminal state.
    pub current: HashMap<String, i64>,
    /// Jobs that ever entered each state.
    pub entered: HashMap<String, i64>,
    /// Entries in the ready stream not yet taken.
    pub ready: u64,
    /// Jobs waiting for a slot.
    pub waiting: u64,
    /// Retries waiting out their backoff.
    pub delayed: u64,
    /// Admitted jobs (starting or running).
    pub admitted: u64,
}

impl Queue {
    /// Counters for metrics.
    pub async fn stats(&self) -> Result<Stats> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let (counters, ready, waiting, delayed, admitted): (
                HashMap<String, i64>,
                u64,
                u64,
                u64,
                u64,
            ) = redis::pipe()
                .hgetall(self.keys.stats())
                .xlen(self.keys.queue())
                .zcard(self.keys.waiting())
                .zcard(self.keys.delayed())
                .zcard(self.keys.running())
                .query_async(&mut conn)
                .await?;
            let mut stats = Stats {
                ready,
                waiting,
                delayed,
                admitted,
                ..Stats::default()
            };
            for (key, value) in counters {
                if let Some(state) = key.strip_prefix(c::CURRENT) {
                    stats.current.insert(state.to_string(), value);
                } else if let Some(state) = key.strip_prefix(c::ENTERED) {
                    stats.entered.insert(state.to_string(), value);
                }
            }
            Ok(stats)
        })
        .await
    }
}
