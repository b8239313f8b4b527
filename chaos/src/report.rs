//! The summary on stdout: a table of figures, the end states by kind, the failovers of the
//! sentinel and cluster variants, the lists behind every count (the first 20 of each), and the
//! `VERDICT:` line.

use std::sync::atomic::Ordering;

use crate::args::RedisKind;
use crate::config::MAX_CONCURRENT;
use crate::ctx::Ctx;
use crate::failover::Failover;
use crate::recorder;
use crate::verdict::Verdict;

/// Prints the summary and the verdict; returns the promises broken.
pub fn print(
    ctx: &Ctx,
    verdict: &Verdict,
    jobs: usize,
    drain_secs: f64,
    recorded: &recorder::Counts,
) -> Vec<String> {
    figures(ctx, verdict, jobs, drain_secs, recorded);
    end_states(ctx, verdict);
    if ctx.world.redis_kind != RedisKind::Single {
        failovers(ctx);
    }
    lists(ctx, verdict);
    if verdict.allowed_loss {
        let cause = match ctx.world.redis_kind {
            RedisKind::Single => "appendfsync everysec",
            RedisKind::Sentinel | RedisKind::Cluster => "min_replicas_acked 0",
        };
        println!(
            "{cause}: {} acknowledged job(s) lost across the Redis faults",
            verdict.lost.len()
        );
    }
    let broken = verdict.broken();
    println!();
    if broken.is_empty() {
        println!("VERDICT: every promise held");
    } else {
        println!("VERDICT: BROKEN — {}", broken.join("; "));
    }
    broken
}

/// The table of figures.
fn figures(ctx: &Ctx, v: &Verdict, jobs: usize, drain_secs: f64, recorded: &recorder::Counts) {
    let stats = &ctx.stats;
    println!();
    println!("== chaos summary ==");
    println!("| figure | value |");
    println!("|---|---|");
    println!("| jobs submitted | {jobs} |");
    println!("| jobs acknowledged | {} |", v.acknowledged);
    println!(
        "| submits never acknowledged (not counted) | {} |",
        stats.unacked.load(Ordering::Relaxed)
    );
    println!(
        "| submit retries (connection error / 5xx) | {} |",
        stats.submit_retries.load(Ordering::Relaxed)
    );
    for (kind, n) in stats.faults.lock().expect("lock").iter() {
        println!("| fault: {kind} | {n} |");
    }
    println!("| lost (404) | {} |", v.lost.len());
    println!("| stuck (not terminal after drain) | {} |", v.stuck.len());
    println!(
        "| duplicated (same attempt spawned twice) | {} |",
        v.dup_spawn.len()
    );
    println!(
        "| duplicated (two jobs for one idempotency key) | {} |",
        v.duplicates_by_key.len()
    );
    println!(
        "| quick jobs that ran to completion more than once (different attempts) | {} |",
        v.completed_twice.len()
    );
    println!("| succeeded without a recorded run | {} |", v.phantom.len());
    println!("| retried (final attempt > 1) | {} |", v.retried);
    println!(
        "| terminal event missing from stream | {} |",
        v.missing_terminal_event.len()
    );
    println!(
        "| more than one / inconsistent terminal event | {} |",
        v.multiple_terminal_events.len()
    );
    println!(
        "| concurrency samples / max admitted / over {MAX_CONCURRENT} | {} / {} / {} |",
        stats.samples.load(Ordering::Relaxed),
        stats.admitted_max.load(Ordering::Relaxed),
        v.over_limit.len()
    );
    println!(
        "| submit→end latency p50 / p99 / max | {:.1} s / {:.1} s / {:.1} s |",
        percentile(&v.latencies, 0.5) as f64 / 1000.0,
        percentile(&v.latencies, 0.99) as f64 / 1000.0,
        v.latencies.last().copied().unwrap_or_default() as f64 / 1000.0
    );
    println!("| drain time | {drain_secs:.1} s |");
    if ctx.world.docker.is_some() {
        println!(
            "| agent containers still running 10 s after all jobs ended | {} |",
            v.leftovers.len()
        );
        println!(
            "| recorder: lines recorded / empty connections / requests rejected | {} / {} / {} |",
            recorded.recorded.load(Ordering::Relaxed),
            recorded.empty.load(Ordering::Relaxed),
            recorded.rejected.load(Ordering::Relaxed)
        );
    } else {
        println!(
            "| runner/agent processes left 10 s after all jobs ended | {} |",
            v.leftovers.len()
        );
    }
}

/// End states by kind, agent starts per job, cancel answers.
fn end_states(ctx: &Ctx, v: &Verdict) {
    println!();
    println!("end states by kind (expected: quick→succeeded, fail→failed, slow→timed_out, cancel→cancelled):");
    for ((kind, state), n) in &v.by_state {
        let mark = if state == kind.expected() {
            ""
        } else {
            "  <- differs"
        };
        println!("  {kind:?} → {state}: {n}{mark}");
    }
    println!("agent starts per job (RUNS file): {:?}", v.runs_hist);
    println!(
        "cancel requests by answer: {:?}",
        ctx.stats.cancel_results.lock().expect("lock")
    );
}

/// The sentinel and cluster variants' failovers: one row per primary kill.
fn failovers(ctx: &Ctx) {
    let failovers = ctx.stats.failovers.lock().expect("lock").clone();
    let tries = ctx.stats.tries.lock().expect("lock").clone();
    let secs = |from: i64, to: Option<i64>| {
        to.map_or("never".to_string(), |to| {
            format!("{:.1} s", (to - from) as f64 / 1000.0)
        })
    };
    println!();
    let who = ctx.world.topology(|t| t.who()).unwrap_or("the topology");
    println!(
        "failovers (min_replicas_acked {}; times from the kill):",
        ctx.world.min_replicas_acked
    );
    println!("| # | primary killed | {who} named the new primary after | first submit acknowledged after | submits refused 503 / 500 / unanswered meanwhile | killed one restarted / a replica in sync after |");
    println!("|---|---|---|---|---|---|");
    for (n, f) in failovers.iter().enumerate() {
        let submits = f.submits(&tries);
        let promoted = f.promoted.map_or("never".to_string(), |(port, at)| {
            format!("{} (port {port})", secs(f.killed_ms, Some(at)))
        });
        println!(
            "| {} | port {} | {promoted} | {} | {} / {} / {} | {} / {} |",
            n + 1,
            f.killed_port,
            secs(
                f.killed_ms,
                submits.acknowledged_again_after.map(|d| f.killed_ms + d)
            ),
            submits.refused,
            submits.failed,
            submits.unanswered,
            secs(f.killed_ms, f.restarted_ms),
            secs(f.killed_ms, f.in_sync_ms),
        );
    }
    println!(
        "(refused submits were not acknowledged, so they cannot be lost: each was sent again with its idempotency key)"
    );
}

/// A lost job with when it was acknowledged, and in the failover variants how that was
/// placed against the nearest primary kill.
fn lost_job(ctx: &Ctx, id: &str) -> String {
    let acked = ctx.stats.acked.lock().expect("lock").clone();
    let Some(job) = acked.iter().find(|j| j.id == id) else {
        return id.to_string();
    };
    let failovers: Vec<Failover> = ctx.stats.failovers.lock().expect("lock").clone();
    let nearest = failovers
        .iter()
        .min_by_key(|f| (job.acked_ms - f.killed_ms).abs());
    match nearest {
        Some(f) => format!(
            "{id} ({:?}, acknowledged {:+.2} s from the kill of the primary on port {})",
            job.kind,
            (job.acked_ms - f.killed_ms) as f64 / 1000.0,
            f.killed_port
        ),
        None => format!("{id} ({:?}, acknowledged at {} ms)", job.kind, job.acked_ms),
    }
}

/// The lists behind the counts, the first 20 of each non-empty one.
fn lists(ctx: &Ctx, v: &Verdict) {
    let show = |title: &str, items: &[String]| {
        if !items.is_empty() {
            println!("{title} ({}):", items.len());
            for item in items.iter().take(20) {
                println!("  {item}");
            }
        }
    };
    show(
        "end state differs from the kind's expected one",
        &v.mismatch,
    );
    let lost: Vec<String> = v.lost.iter().map(|id| lost_job(ctx, id)).collect();
    show("LOST", &lost);
    show("STUCK", &v.stuck);
    show("DUPLICATE SPAWN", &v.dup_spawn);
    show(
        "DUPLICATE JOBS FOR ONE IDEMPOTENCY KEY",
        &v.duplicates_by_key,
    );
    show("quick jobs completed more than once", &v.completed_twice);
    show("SUCCEEDED WITHOUT A RUN", &v.phantom);
    show("TERMINAL EVENT MISSING", &v.missing_terminal_event);
    show("TERMINAL EVENTS INCONSISTENT", &v.multiple_terminal_events);
    show("CONCURRENCY OVER LIMIT", &v.over_limit);
    show(
        if ctx.world.docker.is_some() {
            "containers left after every job ended"
        } else {
            "processes left after every job ended"
        },
        &v.leftovers,
    );
}

/// The `p` quantile (0–1) of sorted values; 0 when there are none.
fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let sorted: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.5), 51);
        assert_eq!(percentile(&sorted, 0.99), 99);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
