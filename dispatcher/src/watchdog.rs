//! The watchdog: the periodic half of the dispatcher.
//!
//! Every tick it moves due retries back to the ready queue, checks jobs whose lease has
//! run out (their runner has not been heard from): it asks the spawner what happened and
//! extends the lease, retries the attempt, or fails the job, with the reason; and lets
//! questions nobody answered in time take their default (or fail their job). Less often
//! it takes over claims a dead dispatcher left unrecorded, reconciles workloads with job
//! records, and sweeps the index of expired jobs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spawner::{JobHandle, WorkloadStatus};
use tracing::{info, instrument, warn};

use crate::context::Context;
use crate::scheduler::{pause, process_batch};
use crate::telemetry::chain;
use queue::{now_ms, AttemptFailure, JobState};

/// Runs the housekeeping loop until `ctx.shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>) {
    let tick = Duration::from_millis(ctx.settings.queue.tick_ms);
    let reclaim_every = Duration::from_secs(ctx.settings.queue.reclaim_idle_secs.clamp(1, 10));
    let slow_every = Duration::from_secs(ctx.settings.spawner.reconcile_secs);
    let probe_every = Duration::from_secs(ctx.settings.spawner.probe_secs);
    let mut last_reclaim = Instant::now();
    let mut last_slow: Option<Instant> = None;
    let mut last_probe = Instant::now();
    while !ctx.shutdown.is_cancelled() {
        if last_probe.elapsed() >= probe_every {
            last_probe = Instant::now();
            probe_targets(&ctx).await;
        }
        if let Err(e) = ctx.queue.promote_due().await {
            warn!(error = %chain(&e), "promoting due retries failed");
        }
        check_leases(&ctx).await;
        ctx.expire_questions().await;
        if last_reclaim.elapsed() >= reclaim_every {
            last_reclaim = Instant::now();
            reclaim(&ctx).await;
        }
        if last_slow.is_none_or(|t| t.elapsed() >= slow_every) {
            last_slow = Some(Instant::now());
            reconcile(&ctx).await;
            for (target, e) in ctx.spawner.housekeeping().await {
                warn!(error = %chain(&e), %target, "spawner housekeeping failed");
            }
            match ctx.queue.sweep().await {
                Ok(0) => {}
                Ok(n) => info!(dropped = n, "swept expired jobs from the index"),
                Err(e) => warn!(error = %chain(&e), "sweeping the index failed"),
            }
        }
        pause(&ctx, tick).await;
    }
    info!("watchdog stopped");
}

/// Probes every spawner target, saying when one goes down or comes back: a target that is
/// down gets no new attempts (see the scheduler) until a probe passes.
pub async fn probe_targets(ctx: &Context) {
    let before: Vec<bool> = ctx
        .spawner
        .targets()
        .map(|t| t.health().is_usable())
        .collect();
    for ((target, result), was_usable) in ctx.spawner.probe_all().await.into_iter().zip(before) {
        match result {
            Err(e) if was_usable => {
                warn!(error = %chain(&e), %target, "spawner target is down: no new attempts go to it")
            }
            Ok(()) if !was_usable => info!(%target, "spawner target is back in service"),
            _ => {}
        }
    }
}

/// Deals with every job whose lease has run out.
pub async fn check_leases(ctx: &Arc<Context>) {
    let expired = match ctx.queue.expired_leases(100).await {
        Ok(ids) => ids,
        Err(e) => {
            warn!(error = %chain(&e), "reading expired leases failed");
            return;
        }
    };
    for id in expired {
        check_lease(ctx, &id).await;
    }
}

#[instrument(skip(ctx), fields(attempt))]
async fn check_lease(ctx: &Arc<Context>, job_id: &str) {
    let job = match ctx.queue.get(job_id).await {
        Ok(Some(job)) => job,
        Ok(None) => return,
        Err(e) => {
            warn!(error = %chain(&e), "reading the job failed");
            return;
        }
    };
    if !job.state.is_live() {
        return;
    }
    tracing::Span::current().record("attempt", job.attempt);
    // Workload names are deterministic, so a workload whose spawn is not recorded yet (the
    // runner may report before a slow spawn call returns) can be asked about too.
    let handle = job.handle.clone().unwrap_or_else(|| {
        // Not recorded yet: on the target it holds, else its only route (see the scheduler).
        let target = job
            .target
            .clone()
            .unwrap_or_else(|| ctx.routes(&job).swap_remove(0));
        JobHandle {
            backend: ctx.spawner.backend_of(&target).into(),
            name: contract::workload_name(&job.id, job.attempt),
            job_id: job.id.clone(),
            attempt: job.attempt,
            id: None,
            target,
        }
    });
    let status = match ctx.spawner.status(&handle).await {
        Ok(status) => status,
        Err(e) => {
            let down = ctx
                .spawner
                .get(&handle.target)
                .and_then(|t| match t.health() {
                    spawner::Health::Down(why) => Some(why),
                    _ => None,
                });
            let Some(why) = down else {
                warn!(error = %chain(&e), "asking the spawner failed; checking again next tick");
                return;
            };
            // Its target is down and its runner silent: the attempt goes elsewhere (the
            // workload, if it still runs, is stopped once the target answers again).
            WorkloadStatus::Failed {
                reason: format!("target {} is unreachable ({why})", handle.target),
                retryable: true,
            }
        }
    };
    let settings = &ctx.settings.queue;
    let within_start_timeout = job
        .admitted_at
        .is_some_and(|at| now_ms() - at < settings.start_timeout_secs as i64 * 1000);
    let keep_waiting = match (&status, job.state) {
        (WorkloadStatus::Running, JobState::Running | JobState::WaitingForInput) => {
            // The workload lives but its runner cannot reach us: trust the spawner's view.
            warn!("runner not heard from, but its workload is running; extending the lease");
            true
        }
        // Still being scheduled or pulled: give it until the start timeout.
        (WorkloadStatus::Pending { .. } | WorkloadStatus::Running, JobState::Starting) => {
            within_start_timeout
        }
        // The spawn may still be in flight (a slow engine or API server); a dispatcher that
        // died mid-spawn leaves its claim to be taken over (reclaim), which adopts or starts
        // the workload.
        (WorkloadStatus::NotFound, JobState::Starting) => {
            job.handle.is_none() && within_start_timeout
        }
        _ => false,
    };
    if keep_waiting {
        let lease = Duration::from_secs(settings.lease_secs);
        let _ = ctx.queue.extend_lease(&job.id, job.attempt, lease).await;
        return;
    }
    let (reason, retryable) = match (&status, job.state) {
        (WorkloadStatus::Pending { .. } | WorkloadStatus::Running, _) => (
            format!(
                "workload did not start within {}s ({})",
                settings.start_timeout_secs,
                status.describe()
            ),
            true,
        ),
        (WorkloadStatus::Failed { reason, retryable }, _) => {
            (format!("workload failed: {reason}"), *retryable)
        }
        (WorkloadStatus::NotFound, JobState::Starting) if job.handle.is_none() => (
            format!(
                "spawn was never recorded within {}s",
                settings.start_timeout_secs
            ),
            true,
        ),
        _ => (format!("runner lost: {}", status.describe()), true),
    };
    if status != WorkloadStatus::NotFound {
        if let Err(e) = ctx.spawner.cancel(&handle, ctx.grace()).await {
            warn!(error = %chain(&e), "stopping the lost workload failed");
        }
    }
    match ctx
        .queue
        .fail_attempt(&job.id, job.attempt, &reason, retryable, None, true)
        .await
    {
        Ok(AttemptFailure::Retrying) => warn!(reason, "lease expired; retrying"),
        Ok(AttemptFailure::Failed) => warn!(reason, "lease expired; job failed"),
        Ok(AttemptFailure::Stale) => {}
        Err(e) => warn!(error = %chain(&e), "recording the lost attempt failed"),
    }
}

/// Takes over claims another dispatcher left unrecorded.
pub async fn reclaim(ctx: &Arc<Context>) {
    let idle = Duration::from_secs(ctx.settings.queue.reclaim_idle_secs);
    match ctx.queue.reclaim(&ctx.consumer, idle, 50).await {
        Ok(claims) if claims.is_empty() => {}
        Ok(claims) => {
            info!(count = claims.len(), "taking over abandoned claims");
            process_batch(ctx, claims).await;
        }
        Err(e) => warn!(error = %chain(&e), "reclaiming abandoned claims failed"),
    }
}

/// Removes workloads that no live job attempt owns.
pub async fn reconcile(ctx: &Arc<Context>) {
    let (handles, failures) = ctx.spawner.list().await;
    for (target, e) in failures {
        warn!(error = %chain(&e), %target, "listing workloads failed");
    }
    // A runner whose job has just ended (it delivered its final event) is still winding
    // down: its workload ends by itself, so it is left this long before being stopped.
    let winding_down_ms =
        ((ctx.settings.spawner.grace_secs + ctx.settings.queue.lease_secs) * 1000 + 30_000) as i64;
    for handle in handles {
        let wanted = match ctx.queue.get(&handle.job_id).await {
            Ok(Some(job)) => {
                let winding_down = job.attempt == handle.attempt
                    && job.state.is_terminal()
                    && job
                        .finished_at
                        .is_some_and(|at| now_ms() - at < winding_down_ms);
                winding_down || (job.attempt == handle.attempt && job.state.is_live())
            }
            Ok(None) => {
                // No job record at all (another installation's leftovers, a flushed Redis):
                // nobody will read its output, so it goes at once.
                info!(workload = %handle.name, job_id = %handle.job_id, "removing a workload that has no job record");
                if let Err(e) = ctx.spawner.remove(&handle).await {
                    warn!(error = %chain(&e), workload = %handle.name, "removing the workload failed");
                }
                continue;
            }
            Err(_) => continue,
        };
        if !wanted {
            let status = ctx.spawner.status(&handle).await;
            if matches!(status, Ok(ref s) if s.is_over()) {
                continue;
            }
            info!(workload = %handle.name, job_id = %handle.job_id, "removing a workload no job attempt owns");
            if let Err(e) = ctx.spawner.cancel(&handle, ctx.grace()).await {
                warn!(error = %chain(&e), workload = %handle.name, "removing the workload failed");
            }
        }
    }
}
