//! The fault of the sentinel and cluster variants: the primary serving the queue SIGKILLed
//! while jobs flow, a few times over the run. Each kill comes [`LAG`] after the replica fell
//! behind: frozen (SIGSTOP) and its link to the primary cut, so the primary dies holding
//! writes the replica never received. That is the case `redis.min_replicas_acked` is for; on one
//! machine replication is otherwise too quick for a kill to catch a write in flight, and
//! a frozen replica's kernel still takes in what the primary sends.
//!
//! After each kill the harness watches the sentinels (or the cluster) until they name the
//! new primary, brings the dead server back a second later (the sentinels make it a
//! replica of the new primary; a cluster node learns that its slots have a new owner and
//! becomes its replica; either way writes can be acknowledged by a replica again), and
//! waits until it is in sync. What differs between the two is behind [`Topology`]. What
//! followed each kill is a [`Failover`]; the submits' side of it (when they succeeded
//! again, how many were refused meanwhile) is read from the submit requests afterwards
//! ([`Failover::submits`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::ctx::{now_ms, Ctx, Try, TryOutcome};
use crate::topology::Topology;

/// How long each step of a failover may take before the harness stops waiting for it.
const STEP_LIMIT: Duration = Duration::from_secs(30);
/// How long the killed primary stays dead after its successor was named.
const DEAD_FOR: Duration = Duration::from_secs(1);
/// How long the replica is behind before the primary is killed: the primary's writes of
/// that time die with it. Under the sentinels' `down-after-milliseconds` and the cluster's
/// `cluster-node-timeout` (1 s each), so neither counts the frozen replica down, and it is
/// still promoted at once.
pub const LAG: Duration = Duration::from_millis(700);

/// One primary kill and what followed it (times in ms since the epoch).
#[derive(Debug, Clone, Default)]
pub struct Failover {
    /// The killed primary's port.
    pub killed_port: u16,
    /// When it was killed.
    pub killed_ms: i64,
    /// The new primary's port and when a sentinel (or a cluster node) first named it.
    pub promoted: Option<(u16, i64)>,
    /// When the killed server was started again.
    pub restarted_ms: Option<i64>,
    /// When it was a replica of the new primary, in sync.
    pub in_sync_ms: Option<i64>,
}

/// The submits' side of a failover.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Submits {
    /// From the kill until the answer of the first submit sent after it that was
    /// acknowledged (ms); `None` when none was.
    pub acknowledged_again_after: Option<i64>,
    /// Submit requests answered 503 between the kill and that submit.
    pub refused: u64,
    /// Submit requests answered another 5xx (500) in that time.
    pub failed: u64,
    /// Submit requests without an answer (connection error, timeout) in that time.
    pub unanswered: u64,
}

impl Failover {
    /// When the submits succeeded again after this kill, and what was refused until then,
    /// from every submit request of the run.
    pub fn submits(&self, tries: &[Try]) -> Submits {
        let first_ok = tries
            .iter()
            .filter(|t| t.outcome == TryOutcome::Acknowledged && t.sent_ms >= self.killed_ms)
            .min_by_key(|t| t.sent_ms);
        let until = first_ok.map_or(i64::MAX, |t| t.sent_ms);
        let meanwhile = |outcome| {
            tries
                .iter()
                .filter(|t| t.outcome == outcome)
                .filter(|t| t.answered_ms >= self.killed_ms && t.sent_ms < until)
                .count() as u64
        };
        Submits {
            acknowledged_again_after: first_ok.map(|t| t.answered_ms - self.killed_ms),
            refused: meanwhile(TryOutcome::Refused),
            failed: meanwhile(TryOutcome::Failed),
            unanswered: meanwhile(TryOutcome::NoAnswer),
        }
    }
}

/// Kills the primary `count` times, evenly over `spread` (the time the load runs), each
/// once the set or cluster can fail over again; stops early when the faults stop.
pub async fn primary_faults(ctx: Arc<Ctx>, spread: Duration, count: u32) {
    let start = Instant::now();
    for n in 1..=count {
        let at = spread.mul_f64(f64::from(n) / f64::from(count + 1));
        tokio::time::sleep(at.saturating_sub(start.elapsed())).await;
        if ctx.stop_faults.load(Ordering::SeqCst) {
            return;
        }
        let ready = testkit::wait_until(STEP_LIMIT, || blocking(&ctx, |t| t.ready())).await;
        if !ready {
            eprintln!(
                "[{:>5.1}s] the primary cannot fail over (no replica in sync): primary kill {n} skipped",
                start.elapsed().as_secs_f64()
            );
            continue;
        }
        // No replica kill or freeze in the middle: the figures are the failover's own.
        let _guard = ctx.replica_ops.lock().await;
        let failover = fail_over(&ctx, start).await;
        ctx.stats.failovers.lock().expect("lock").push(failover);
    }
}

/// One failover: kill, wait for the new primary, restart the old one, wait until it is in
/// sync; each step bounded by [`STEP_LIMIT`].
async fn fail_over(ctx: &Ctx, start: Instant) -> Failover {
    let mut failover = Failover::default();
    let Some(port) = kill_behind_a_lagging_replica(ctx).await else {
        eprintln!("nothing names a primary of the queue: nothing killed");
        return failover;
    };
    failover.killed_port = port;
    failover.killed_ms = now_ms();
    let who = blocking(ctx, |t| t.who()).await;
    ctx.stats.fault("redis primary SIGKILL (failover)");
    eprintln!(
        "[{:>5.1}s] SIGKILL the redis primary (port {port}), its replica cut off for the {LAG:?} before",
        start.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + STEP_LIMIT;
    while failover.promoted.is_none() && Instant::now() < deadline {
        let named = blocking(ctx, |t| t.primary()).await;
        match named.filter(|p| *p != port) {
            Some(new) => failover.promoted = Some((new, now_ms())),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    match failover.promoted {
        Some((new, at)) => eprintln!(
            "[{:>5.1}s] {who} named port {new} primary, {:.1} s after the kill",
            start.elapsed().as_secs_f64(),
            (at - failover.killed_ms) as f64 / 1000.0
        ),
        None => eprintln!("{who} named no new primary within {STEP_LIMIT:?}"),
    }
    // Started again even without a failover: its AOF brings its data back.
    tokio::time::sleep(DEAD_FOR).await;
    match blocking(ctx, move |t| Some(t.restart(port))).await {
        Some(Ok(())) => failover.restarted_ms = Some(now_ms()),
        None => return failover,
        Some(Err(e)) => {
            eprintln!("restarting the killed primary: {e}");
            return failover;
        }
    }
    if testkit::wait_until(STEP_LIMIT, || blocking(ctx, move |t| t.in_sync(port))).await {
        failover.in_sync_ms = Some(now_ms());
        eprintln!(
            "[{:>5.1}s] port {port} is a replica again, in sync",
            start.elapsed().as_secs_f64()
        );
    } else {
        eprintln!("port {port} was not a replica in sync within {STEP_LIMIT:?} of its restart");
    }
    failover
}

/// Freezes the replica and cuts its link (so it neither has nor fetches what the primary
/// writes next), SIGKILLs the primary [`LAG`] later, thaws the replica; the killed
/// primary's port.
async fn kill_behind_a_lagging_replica(ctx: &Ctx) -> Option<u16> {
    let primary = blocking(ctx, |t| t.primary()).await?;
    let replica = blocking(ctx, move |t| t.pid(t.replica_of(primary)?)).await;
    let frozen = replica.filter(|pid| signal(*pid, Signal::SIGSTOP));
    if frozen.is_some() {
        let cut = blocking(ctx, move |t| t.cut_replication(primary)).await;
        if cut.unwrap_or(0) == 0 {
            eprintln!("the primary closed no replica link: the replica may not lag");
        }
        tokio::time::sleep(LAG).await;
    }
    blocking(ctx, move |t| t.kill(primary)).await;
    if let Some(pid) = frozen {
        signal(pid, Signal::SIGCONT);
    }
    Some(primary)
}

/// Sends `signal` to `pid`; whether it was delivered.
fn signal(pid: u32, signal: Signal) -> bool {
    i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), signal).is_ok())
}

/// `f` on the run's sentinel set or cluster, off the runtime's threads (it talks to the
/// servers synchronously); `T::default()` when there is neither.
async fn blocking<T: Default + Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce(&mut dyn Topology) -> T + Send + 'static,
) -> T {
    let world = ctx.world.clone();
    tokio::task::spawn_blocking(move || world.topology(f).unwrap_or_default())
        .await
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tried(sent_ms: i64, answered_ms: i64, outcome: TryOutcome) -> Try {
        Try {
            sent_ms,
            answered_ms,
            outcome,
        }
    }

    #[test]
    fn submits_count_what_was_refused_until_the_first_one_sent_after_the_kill_succeeded() {
        let failover = Failover {
            killed_ms: 1_000,
            ..Failover::default()
        };
        let tries = [
            // Before the kill: not counted.
            tried(500, 600, TryOutcome::Refused),
            // In flight at the kill, refused after it: counted.
            tried(900, 1_100, TryOutcome::NoAnswer),
            tried(1_200, 1_700, TryOutcome::Refused),
            tried(1_300, 1_800, TryOutcome::Refused),
            tried(1_400, 1_900, TryOutcome::Failed),
            // Sent before the kill, acknowledged after it: not the recovery.
            tried(950, 1_050, TryOutcome::Acknowledged),
            tried(4_000, 4_200, TryOutcome::Acknowledged),
            // After the recovery: not counted.
            tried(4_100, 4_600, TryOutcome::Refused),
        ];
        assert_eq!(
            failover.submits(&tries),
            Submits {
                acknowledged_again_after: Some(3_200),
                refused: 2,
                failed: 1,
                unanswered: 1,
            }
        );
        assert_eq!(failover.submits(&tries[..4]).acknowledged_again_after, None);
    }
}
