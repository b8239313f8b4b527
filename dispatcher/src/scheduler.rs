//! The scheduler: claims ready jobs from the stream, admits them, spawns their workloads
//! and records the spawns.
//!
//! It stops between claims when shutdown begins; claims already read are finished first.
//! A claim whose spawn is never recorded (the process died) stays pending in the stream's
//! group and is taken over by another dispatcher's watchdog ([`crate::watchdog`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, instrument, warn};

use crate::context::Context;
use crate::metrics::{seconds_between, Stage};
use crate::telemetry::chain;
use queue::{now_ms, Admission, AttemptFailure, Claim, Job, SpawnRecord};

/// Claims and spawns until `ctx.shutdown` is cancelled, with up to `queue.claim_batch`
/// claims in flight: a slow spawn does not hold up the others. On shutdown it stops
/// claiming and waits for the claims in flight.
pub async fn run(ctx: Arc<Context>) {
    let mut conn = None;
    let permits = Arc::new(Semaphore::new(ctx.settings.queue.claim_batch));
    let mut in_flight = JoinSet::new();
    while !ctx.shutdown.is_cancelled() {
        while in_flight.try_join_next().is_some() {}
        if conn.is_none() {
            match ctx.queue.dedicated_connection().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    warn!(error = %chain(&e), "scheduler cannot reach redis; retrying");
                    pause(&ctx, Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        // One free slot at least, then as many more as are free.
        let first = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let wanted = permits.available_permits() + 1;
        let claims = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            claims = ctx.queue.claim(c, &ctx.consumer, wanted, Duration::from_secs(2)) => claims,
        };
        let claims = match claims {
            Ok(claims) => claims,
            Err(e) => {
                warn!(error = %chain(&e), "claiming from the ready queue failed; retrying");
                conn = None;
                pause(&ctx, Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut first = Some(first);
        for (claim, attempt, job) in admit_all(&ctx, claims).await {
            let permit = match first.take() {
                Some(p) => p,
                None => Arc::clone(&permits)
                    .try_acquire_owned()
                    .expect("no more claims than free permits were asked for"),
            };
            let ctx = Arc::clone(&ctx);
            in_flight.spawn(async move {
                spawn_claim(&ctx, &claim, attempt, &job).await;
                drop(permit);
            });
        }
    }
    while in_flight.join_next().await.is_some() {}
    info!("scheduler stopped");
}

/// Admits a batch of claims (in order, in one call) and spawns the admitted jobs
/// concurrently, waiting for all of them.
pub async fn process_batch(ctx: &Arc<Context>, claims: Vec<Claim>) {
    let mut tasks = JoinSet::new();
    for (claim, attempt, job) in admit_all(ctx, claims).await {
        let ctx = Arc::clone(ctx);
        tasks.spawn(async move { spawn_claim(&ctx, &claim, attempt, &job).await });
    }
    while tasks.join_next().await.is_some() {}
}

/// The claims whose jobs were admitted, with their attempt and record. A Redis error
/// leaves every claim pending, to be taken over later.
async fn admit_all(ctx: &Context, claims: Vec<Claim>) -> Vec<(Claim, u32, Box<Job>)> {
    let admissions = match ctx.queue.admit(&claims).await {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %chain(&e), claims = claims.len(), "admission failed; the claims stay pending");
            return Vec::new();
        }
    };
    claims
        .into_iter()
        .zip(admissions)
        .filter_map(|(claim, admission)| match admission {
            Admission::Spawn { attempt, job } => Some((claim, attempt, job)),
            Admission::Wait | Admission::Skip => None,
        })
        .collect()
}

/// Spawns an admitted attempt and records the spawn; a failure is recorded as a failed
/// attempt (retried when the spawner says it may pass).
#[instrument(skip(ctx, claim, job), fields(job_id = %claim.job_id, attempt))]
pub async fn spawn_claim(ctx: &Arc<Context>, claim: &Claim, attempt: u32, job: &Job) {
    tracing::Span::current().record("attempt", attempt);
    if attempt == 1 {
        ctx.observe_stage(Stage::Queue, job, seconds_between(job.created_at, now_ms()));
    }
    let spec = match ctx.job_spec(job, attempt) {
        Ok(spec) => spec,
        Err(reason) => {
            record_failure(ctx, claim, attempt, &reason, false).await;
            return;
        }
    };
    let started = Instant::now();
    match ctx.spawner.spawn(&spec).await {
        Ok(handle) => match ctx.queue.record_spawn(claim, attempt, &handle).await {
            Ok(SpawnRecord::Recorded) => {
                let seconds = started.elapsed().as_secs_f64();
                ctx.metrics.spawn_latency.observe(seconds);
                ctx.observe_stage(Stage::Spawn, job, seconds);
                info!(workload = %handle.name, backend = ctx.spawner.backend(), "spawned");
            }
            Ok(record) => {
                info!(workload = %handle.name, ?record, "attempt no longer wants this workload; stopping it");
                if let Err(e) = ctx.spawner.cancel(&handle, ctx.grace()).await {
                    warn!(error = %chain(&e), "stopping the unwanted workload failed");
                }
            }
            Err(e) => {
                warn!(error = %chain(&e), "recording the spawn failed; the claim stays pending and will be adopted")
            }
        },
        Err(e) => {
            let reason = format!("spawn failed: {e}");
            record_failure(ctx, claim, attempt, &reason, e.is_retryable()).await;
        }
    }
}

async fn record_failure(ctx: &Context, claim: &Claim, attempt: u32, reason: &str, retryable: bool) {
    match ctx
        .queue
        .fail_attempt(
            &claim.job_id,
            attempt,
            reason,
            retryable,
            Some(&claim.entry),
            false,
        )
        .await
    {
        Ok(AttemptFailure::Retrying) => warn!(reason, "attempt failed; retrying later"),
        Ok(AttemptFailure::Failed) => warn!(reason, "job failed"),
        Ok(AttemptFailure::Stale) => {}
        Err(e) => {
            warn!(error = %chain(&e), "recording the failure failed; the claim stays pending")
        }
    }
}

/// Sleeps, waking early on shutdown.
pub(crate) async fn pause(ctx: &Context, duration: Duration) {
    tokio::select! {
        _ = ctx.shutdown.cancelled() => {}
        _ = tokio::time::sleep(duration) => {}
    }
}
