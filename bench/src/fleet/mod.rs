//! A fleet of agents (`--only fleet`, issue 17): many simulated runners reporting to two
//! dispatcher replicas on one Redis, each printing a few lines a second and heartbeating,
//! with SSE followers of some of their jobs.
//!
//! Per fleet size: two in-process replicas ([`replica`]) on the bench's Redis under a fresh
//! prefix, sharing a no-op backend that announces each spawn; as many jobs as runners,
//! submitted through the queue; one simulated runner ([`runner`]) per spawned attempt,
//! speaking the runner protocol over HTTP to the replicas in turn; followers
//! ([`follower`]) of the first jobs, on both replicas. Once every runner has reported
//! `started` and every follower is connected, a window of `duration` is measured: lines
//! recorded, line-to-follower latency, CPU of each replica's threads and of Redis. After it,
//! the queue's counters and every job's record say whether a lease ran out.
//!
//! | module | what |
//! |---|---|
//! | this file | the configuration, what a size measured, the verdict, the ramp |
//! | `size` | one size's run: replicas, fleet, followers, window, checks |
//! | `table` | the phase's table |
//! | `replica` | a replica on its own runtime; the shared announcing backend |
//! | `runner` | a simulated runner: token exchange, batches, heartbeats, retries |
//! | `follower` | an SSE follower timing each line |
//! | `connection` | a runner's keep-alive HTTP/1.1 connection |
//! | `latency` | one clock, the window, histograms |

mod connection;
mod follower;
mod latency;
mod replica;
mod runner;
mod size;
mod table;

use std::time::Duration;

pub use self::table::render;
use crate::histogram::Percentiles;
use crate::redis_info::BenchRedis;

/// The p99 line-to-follower latency a fleet must stay under (issue 17).
pub const TARGET_P99_MS: u64 = 500;

/// How the phase is run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The fleet measured first (5,000 in the issue).
    pub runners: usize,
    /// The ramp: sizes above `runners` when it met the target, below it otherwise.
    pub sizes: Vec<usize>,
    /// SSE followers (each of its own job while there are jobs enough).
    pub followers: usize,
    /// Lines a second each runner prints.
    pub lines_per_sec: u32,
    /// The measured window of each size.
    pub duration: Duration,
    /// Worker threads of each replica's runtime (an `agentsmith serve` has one per core).
    pub workers: usize,
    /// Key prefix (the size is appended).
    pub prefix: String,
}

/// What one fleet size measured.
#[derive(Debug, Clone, Default)]
pub struct Size {
    /// Simulated runners.
    pub runners: usize,
    /// The measured window.
    pub window: Duration,
    /// Lines the replicas recorded within the window.
    pub lines: u64,
    /// Line-to-follower latency of lines printed within the window.
    pub latency: Percentiles,
    /// Latency of the runners' event posts within the window.
    pub post_latency: Percentiles,
    /// Lines printed within the window by followed runners (once per follower), and how
    /// many of them the followers got.
    pub followed: (u64, u64),
    /// Times a watchdog found a lease run out (it asks the backend about the workload only
    /// then), from the first spawn until the end: every runner was reporting all along, so
    /// each is false.
    pub lease_expiries: u64,
    /// Attempts that ended (retrying, failed, timed out, cancelled), by the queue's counters.
    pub ended_attempts: i64,
    /// Jobs not `running` on their first attempt at the end.
    pub not_running: usize,
    /// CPU seconds within the window: each replica, Redis, the simulated fleet.
    pub cpu: [f64; 2],
    /// Redis's.
    pub redis_cpu: f64,
    /// The simulated runners' and followers'.
    pub fleet_cpu: f64,
    /// The whole bench process's (replicas, fleet, and the bench's own tasks).
    pub process_cpu: f64,
    /// The whole machine busy, and stolen by the hypervisor, within the window.
    pub machine: (f64, f64),
    /// Redis commands within the window.
    pub redis_commands: u64,
    /// The commands Redis spent most time in within the window: name, calls, microseconds
    /// (a script's time includes its commands').
    pub redis_top: Vec<(String, u64, u64)>,
    /// Largest RSS of the bench process (both replicas and the fleet) in the window.
    pub rss_max: u64,
    /// Batches recorded within the window by each replica.
    pub batches: [u64; 2],
    /// Posts sent again, runners told they are gone, followers dropped as `lagged`,
    /// follower connections that failed (whole run).
    pub retries: u64,
    /// Runners told their attempt is no longer wanted.
    pub gone: u64,
    /// `lagged` drops.
    pub lagged: u64,
    /// Failed follower connections.
    pub follower_failures: u64,
    /// Seconds between each runner's heartbeats (`queue.heartbeat_secs`).
    pub heartbeat_secs: u64,
    /// Set-up: from the first submit until every runner had reported `started`.
    pub ramp_up: Duration,
    /// Anything else that went wrong.
    pub problems: Vec<String>,
}

impl Size {
    /// Lines recorded a second within the window.
    pub fn lines_per_sec(&self) -> f64 {
        self.lines as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// `secs` of CPU within the window as a share of one core per 1,000 runners (%).
    pub fn per_thousand(&self, secs: f64) -> f64 {
        100.0 * secs / self.window.as_secs_f64().max(1e-9) / (self.runners as f64 / 1000.0)
    }

    /// The share of the machine's two cores that neither this process nor Redis used in
    /// the window (other processes, and kernel work charged to none), in %.
    pub fn others_share(&self) -> f64 {
        let busy = self.machine.0 - self.process_cpu - self.redis_cpu;
        100.0 * busy.max(0.0) / self.window.as_secs_f64().max(1e-9) / 2.0
    }

    /// Whether the size meets the targets: p99 under [`TARGET_P99_MS`] with every
    /// followed line delivered, and no lease expired.
    pub fn meets(&self) -> bool {
        self.latency.count > 0
            && self.latency.p99 < TARGET_P99_MS
            && self.followed.1 >= self.followed.0
            && self.lease_expiries == 0
            && self.ended_attempts == 0
            && self.not_running == 0
            && self.problems.is_empty()
    }
}

/// What the phase measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How it ran.
    pub config: Config,
    /// Each size, in the order run.
    pub sizes: Vec<Size>,
}

impl Outcome {
    /// The largest size that met the targets with every smaller size run meeting them too.
    pub fn largest_meeting(&self) -> Option<usize> {
        let mut sizes: Vec<&Size> = self.sizes.iter().collect();
        sizes.sort_by_key(|s| s.runners);
        sizes
            .iter()
            .take_while(|s| s.meets())
            .last()
            .map(|s| s.runners)
    }
}

/// Runs `cfg.runners`, then the ramp from it: larger sizes while they meet the target when
/// it did, smaller ones from the smallest up while they meet it when it did not.
pub async fn run(redis: &BenchRedis, cfg: &Config) -> anyhow::Result<Outcome> {
    let first = size::run(redis, cfg, cfg.runners).await?;
    report(&first);
    let met = first.meets();
    let mut sizes = vec![first];
    let mut ramp: Vec<usize> = cfg
        .sizes
        .iter()
        .copied()
        .filter(|&n| {
            n > 0
                && if met {
                    n > cfg.runners
                } else {
                    n < cfg.runners
                }
        })
        .collect();
    ramp.sort_unstable();
    ramp.dedup();
    for n in ramp {
        let size = size::run(redis, cfg, n).await?;
        report(&size);
        let met = size.meets();
        sizes.push(size);
        if !met {
            break;
        }
    }
    Ok(Outcome {
        config: cfg.clone(),
        sizes,
    })
}

fn report(size: &Size) {
    eprintln!(
        "bench: fleet: {} runners: {:.0} lines/s, p50 {} ms, p99 {} ms, {} lease expiries, replicas {:.0} % / {:.0} %, Redis {:.0} % of a core per 1,000 runners{}",
        size.runners,
        size.lines_per_sec(),
        size.latency.p50,
        size.latency.p99,
        size.lease_expiries,
        size.per_thousand(size.cpu[0]),
        size.per_thousand(size.cpu[1]),
        size.per_thousand(size.redis_cpu),
        if size.meets() { "" } else { " (MISS)" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(runners: usize, p99: u64) -> Size {
        Size {
            runners,
            latency: Percentiles {
                count: 10,
                p50: 1,
                p99,
                max: p99,
            },
            ..Size::default()
        }
    }

    #[test]
    fn the_largest_fleet_meeting_the_target_has_no_smaller_one_missing() {
        let config = Config {
            runners: 5000,
            sizes: vec![],
            followers: 200,
            lines_per_sec: 2,
            duration: Duration::from_secs(20),
            workers: 2,
            prefix: "p:".into(),
        };
        let outcome = |sizes| Outcome {
            config: config.clone(),
            sizes,
        };
        let missed_first = outcome(vec![size(5000, 900), size(1000, 100), size(2000, 600)]);
        assert_eq!(missed_first.largest_meeting(), Some(1000));
        let met_first = outcome(vec![size(5000, 300), size(6000, 499), size(8000, 500)]);
        assert_eq!(met_first.largest_meeting(), Some(6000));
        assert_eq!(outcome(vec![size(5000, 900)]).largest_meeting(), None);
    }

    #[test]
    fn a_lease_that_ran_out_misses_the_target_whatever_the_latency() {
        let mut s = size(1000, 10);
        assert!(s.meets());
        s.lease_expiries = 1;
        assert!(!s.meets());
    }
}
