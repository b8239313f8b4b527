//! Leases and the periodic work of the queue: due retries back to the ready queue, jobs
//! whose lease ran out, extensions for workloads the spawner still sees, the index sweep and
//! the backfill of the list indexes.

use std::time::Duration;

use crate::{now_ms, JobState, Queue, Result};

/// Jobs past the retention one sweep call checks for expiry, the oldest first. Jobs still
/// kept (ended less than the retention ago) stay at the head of `jobs`, so this many of them
/// hold the sweep up.
const CHECKED: usize = 1000;

/// Jobs one sweep call drops, and one backfill call walks, at most. Dropping or indexing a
/// job is about ten commands, so a call holds Redis for a few milliseconds.
const BATCH: usize = 200;

/// Sweep calls per sweep at most, while each drops a whole batch (a backlog of expired jobs,
/// after the dispatchers were down).
const SWEEP_CALLS: usize = 10;

/// Backfill calls per sweep at most: with the dispatcher sweeping every
/// `spawner.reconcile_secs` (60 s by default), 10,000 older jobs are indexed a minute.
const BACKFILL_CALLS: usize = 50;

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

    /// Drops expired jobs from the indexes and advances the backfill of the state and project
    /// indexes; returns how many jobs were dropped.
    ///
    /// Each script call checks the 1,000 oldest jobs past the retention and drops up to 200
    /// whose records have expired; calls follow while each drops 200, up to 2,000 a sweep.
    ///
    /// Jobs stored before the state and project indexes existed have no entries in them:
    /// unfiltered lists show them at once, filtered lists once the backfill has walked past
    /// them (a job that changes state meanwhile is indexed by its state and its project's
    /// state at once, by its project alone only then). The backfill walks `jobs` from the
    /// oldest, up to 50 script calls of 200 jobs per sweep, and keeps its position in Redis
    /// (`jobs:backfill`), so it runs once per installation, whichever dispatcher sweeps.
    /// Deleting that key runs it again; indexing a job twice changes nothing.
    pub async fn sweep(&self) -> Result<u64> {
        // A record expires only after its job has ended (`finish` sets the expiry, a retry
        // lifts it), so its last state is one of those.
        let mut args = vec![CHECKED.to_string(), BATCH.to_string()];
        args.extend(
            JobState::ALL
                .into_iter()
                .filter(|state| state.is_terminal())
                .map(|state| state.as_str().to_string()),
        );
        let keys = [self.keys.project_of()];
        let mut dropped = 0;
        for _ in 0..SWEEP_CALLS {
            let now: u64 = self.eval(&self.scripts.sweep, &keys, &args).await?;
            dropped += now;
            if now < BATCH as u64 {
                break;
            }
        }
        self.backfill().await?;
        Ok(dropped)
    }

    /// Advances the backfill of the state and project indexes by up to `BACKFILL_CALLS`
    /// batches, each one script call, so other clients are served between them.
    async fn backfill(&self) -> Result<()> {
        let keys = [self.keys.project_of(), self.keys.index_backfill()];
        let batch = BATCH.to_string();
        let mut indexed = 0;
        for _ in 0..BACKFILL_CALLS {
            let walked: i64 = self
                .eval(&self.scripts.backfill, &keys, std::slice::from_ref(&batch))
                .await?;
            if walked < 0 {
                return Ok(());
            }
            indexed += walked;
            if walked < BATCH as i64 {
                tracing::info!(indexed, "the list indexes hold every job");
                return Ok(());
            }
        }
        tracing::info!(indexed, "indexing jobs from before the list indexes");
        Ok(())
    }
}
