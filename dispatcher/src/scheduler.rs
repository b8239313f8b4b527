//! The scheduler: claims ready jobs from the stream, admits them, spawns their workloads
//! and records the spawns.
//!
//! It stops between claims when shutdown begins; a batch it has read is finished first.
//! A claim whose spawn is never recorded (the process died) stays pending in the stream's
//! group and is taken over by another dispatcher's watchdog ([`crate::watchdog`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::{info, instrument, warn};

use crate::context::Context;
use crate::queue::{Admission, AttemptFailure, Claim, SpawnRecord};

/// Claims and spawns until `ctx.shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>) {
    let mut conn = None;
    let batch = ctx.settings.queue.claim_batch;
    while !ctx.shutdown.is_cancelled() {
        if conn.is_none() {
            match ctx.queue.dedicated_connection().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    warn!(error = %e, "scheduler cannot reach redis; retrying");
                    pause(&ctx, Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let claims = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            claims = ctx.queue.claim(c, &ctx.consumer, batch, Duration::from_secs(2)) => claims,
        };
        match claims {
            Ok(claims) => process_batch(&ctx, claims).await,
            Err(e) => {
                warn!(error = %e, "claiming from the ready queue failed; retrying");
                conn = None;
                pause(&ctx, Duration::from_secs(1)).await;
            }
        }
    }
    info!("scheduler stopped");
}

/// Handles a batch of claims concurrently and waits for all of them.
pub async fn process_batch(ctx: &Arc<Context>, claims: Vec<Claim>) {
    if claims.len() == 1 {
        handle_claim(ctx, &claims[0]).await;
        return;
    }
    let mut tasks = JoinSet::new();
    for claim in claims {
        let ctx = Arc::clone(ctx);
        tasks.spawn(async move { handle_claim(&ctx, &claim).await });
    }
    while tasks.join_next().await.is_some() {}
}

/// Admits one claimed job and, when it gets a slot, spawns and records it. Redis errors
/// leave the claim pending, to be taken over later.
#[instrument(skip(ctx, claim), fields(job_id = %claim.job_id, attempt))]
pub async fn handle_claim(ctx: &Arc<Context>, claim: &Claim) {
    let admission = match ctx.queue.admit(claim).await {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "admission failed; the claim stays pending");
            return;
        }
    };
    let Admission::Spawn { attempt } = admission else {
        return;
    };
    tracing::Span::current().record("attempt", attempt);
    let job = match ctx.queue.get(&claim.job_id).await {
        Ok(Some(job)) => job,
        Ok(None) => return,
        Err(e) => {
            warn!(error = %e, "reading the job failed; the claim stays pending");
            return;
        }
    };
    let spec = match ctx.job_spec(&job, attempt) {
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
                ctx.metrics
                    .spawn_latency
                    .observe(started.elapsed().as_secs_f64());
                info!(workload = %handle.name, backend = ctx.spawner.backend(), "spawned");
            }
            Ok(record) => {
                info!(workload = %handle.name, ?record, "attempt no longer wants this workload; stopping it");
                if let Err(e) = ctx.spawner.cancel(&handle, ctx.grace()).await {
                    warn!(error = %e, "stopping the unwanted workload failed");
                }
            }
            Err(e) => {
                warn!(error = %e, "recording the spawn failed; the claim stays pending and will be adopted")
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
        Err(e) => warn!(error = %e, "recording the failure failed; the claim stays pending"),
    }
}

/// Sleeps, waking early on shutdown.
pub(crate) async fn pause(ctx: &Context, duration: Duration) {
    tokio::select! {
        _ = ctx.shutdown.cancelled() => {}
        _ = tokio::time::sleep(duration) => {}
    }
}
