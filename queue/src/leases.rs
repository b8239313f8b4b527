//! Leases and the periodic work of the queue: due retries back to the ready queue, jobs
//! whose lease ran out, extensions for workloads the spawner still sees, the index sweep.

use std::time::Duration;

use crate::{now_ms, Queue, Result};

impl Queue {
    /// Moves due retries back to the ready queue; returns how many.
    pub async fn promote_due(&self) -> Result<u64> {
        self.eval(&self.scripts.promote, &[], &["500".to_string()])
            .await
    }

    /// Jobs whose lease has run out (at most `limit`).
    pub async fn expired_leases(&self, limit: usize) -> Result<Vec<String>> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            Ok(redis::cmd("ZRANGEBYSCORE")
                .arg(self.keys.running())
                .arg("-inf")
                .arg(now_ms())
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut conn)
                .await?)
        })
        .await
    }

    /// Extends the lease of an attempt by `by`; false if the attempt is over.
    pub async fn extend_lease(&self, job_id: &str, attempt: u32, by: Duration) -> Result<bool> {
        let until = now_ms() + by.as_millis() as i64;
        let extended: i64 = self
            .eval(
                &self.scripts.extend_lease,
                &[self.keys.job(job_id)],
                &[job_id.to_string(), attempt.to_string(), until.to_string()],
            )
            .await?;
        Ok(extended == 1)
    }

    /// Drops index entries of expired jobs; returns how many.
    pub async fn sweep(&self) -> Result<u64> {
        self.eval(&self.scripts.sweep, &[], &["1000".to_string()])
            .await
    }
}
