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
use crate::settings::agents::Overflow;
use crate::telemetry::chain;
use queue::{now_ms, Admission, AttemptFailure, Claim, Job, SpawnRecord, TargetChoice};

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
    let Some(target) = choose_target(ctx, claim, attempt, job).await else {
        return;
    };
    if attempt == 1 {
        let waited = seconds_between(job.created_at, now_ms());
        ctx.observe_stage_on(Stage::Queue, job, Some(&target), waited);
    }
    let spec = match ctx.job_spec(job, attempt, &target) {
        Ok(spec) => spec,
        Err(reason) => {
            record_failure(ctx, claim, attempt, &reason, false).await;
            return;
        }
    };
    let started = Instant::now();
    match ctx.spawner.spawn_on(&target, &spec).await {
        Ok(handle) => match ctx.queue.record_spawn(claim, attempt, &handle).await {
            Ok(SpawnRecord::Recorded) => {
                let seconds = started.elapsed().as_secs_f64();
                ctx.metrics.spawn_latency.observe(seconds);
                ctx.observe_stage_on(Stage::Spawn, job, Some(&target), seconds);
                info!(workload = %handle.name, backend = ctx.spawner.backend_of(&target), %target, "spawned");
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

/// How long an attempt whose targets are all full or unhealthy waits before it is admitted
/// again.
const TARGETS_BUSY_DELAY: Duration = Duration::from_secs(5);

/// The target the attempt runs on: the first of its routes that is healthy and has room
/// (only its first with `overflow: wait`), or the one it already holds when its spawn is
/// being taken over. None when it cannot start now (it is deferred, with the reason) or
/// the attempt has moved on.
async fn choose_target(ctx: &Context, claim: &Claim, attempt: u32, job: &Job) -> Option<String> {
    let routes = ctx.routes(job);
    let target_of = |name: &str| ctx.spawner.get(name);
    // One target with no cap of its own: nothing to choose or count (and a target that is
    // down fails the spawn, to be retried, as a dispatcher of one backend always has).
    if let [only] = routes.as_slice() {
        if target_of(only).is_some_and(|t| t.max_concurrent_jobs() == 0) {
            return Some(only.clone());
        }
    }
    let overflow = ctx
        .settings
        .agents
        .get(&job.agent)
        .map(|a| a.overflow)
        .unwrap_or_default();
    let eligible = match overflow {
        Overflow::Next => routes.len(),
        Overflow::Wait => 1,
    };
    let candidates: Vec<(&str, u32)> = routes
        .iter()
        .take(eligible)
        .filter_map(|name| target_of(name))
        .filter(|t| t.health().is_usable())
        .map(|t| (t.name(), t.max_concurrent_jobs()))
        .collect();
    match ctx
        .queue
        .reserve_target(&job.id, attempt, &candidates)
        .await
    {
        Ok(TargetChoice::Target(name)) => Some(name),
        Ok(TargetChoice::Stale) => {
            if let Err(e) = ctx.queue.ack_claim(claim).await {
                warn!(error = %chain(&e), "acknowledging a stale claim failed");
            }
            None
        }
        Ok(TargetChoice::Full) => {
            let reason = busy_reason(ctx, &routes[..eligible.min(routes.len())]).await;
            match ctx
                .queue
                .defer_start(
                    &job.id,
                    attempt,
                    &reason,
                    TARGETS_BUSY_DELAY,
                    Some(&claim.entry),
                )
                .await
            {
                Ok(_) => info!(reason, "no target can take the job now; it waits"),
                Err(e) => {
                    warn!(error = %chain(&e), "deferring the job failed; the claim stays pending")
                }
            }
            None
        }
        Err(e) => {
            warn!(error = %chain(&e), "choosing a target failed; the claim stays pending");
            None
        }
    }
}

/// Why none of `routes` can take a job now: each one's state.
async fn busy_reason(ctx: &Context, routes: &[String]) -> String {
    let names: Vec<&str> = routes.iter().map(String::as_str).collect();
    let load = ctx.queue.target_load(&names).await.unwrap_or_default();
    let each: Vec<String> = routes
        .iter()
        .enumerate()
        .map(|(i, name)| match ctx.spawner.get(name) {
            Some(t) if !t.health().is_usable() => format!("{name} is unreachable"),
            Some(t) => format!(
                "{name} is full ({} of {})",
                load.get(i).copied().unwrap_or_default(),
                t.max_concurrent_jobs()
            ),
            None => format!("{name} is not configured"),
        })
        .collect();
    format!("waiting for a target: {}", each.join(", "))
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
