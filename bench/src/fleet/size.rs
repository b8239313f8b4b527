//! One fleet size, from fresh replicas to a clean Redis: the replicas and their shared
//! backend, the jobs, a runner per spawned attempt, the followers, the measured window, and
//! the checks after it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentsmith::settings::Settings;
use anyhow::{bail, Context as _};
use queue::{NewJob, Queue, Submission};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::follower::{self, Follower};
use super::latency::Window;
use super::replica::{FleetSpawner, Replica};
use super::runner::{self, Runner, Spawned};
use super::{Config, Size};
use crate::api::TOKEN;
use crate::redis_info::{BenchRedis, Snapshot};
use crate::runtime::NamedRuntime;
use crate::sys::{machine_cpu_secs, open_files_limit, own_cpu_secs, rss_bytes, threads_cpu_secs};

/// The names of the replicas' threads and of the simulated fleet's (read from `/proc`).
const REPLICAS: [&str; 2] = ["fleet-disp-a", "fleet-disp-b"];
const FLEET_THREAD: &str = "fleet-sim";
/// How long after the window closes followers still get its last lines.
const GRACE: Duration = Duration::from_secs(3);
/// How long every runner and follower has to connect before the window opens.
const SETTLE: Duration = Duration::from_secs(2);

/// Fails early when this process could not hold two ends of every connection.
fn check_fd_limit(connections: usize) -> anyhow::Result<()> {
    let needed = connections * 2 + 1000;
    match open_files_limit() {
        Some(n) if n < needed => bail!(
            "{connections} connections need about {needed} open files (both ends are in this process) and the limit is {n}: raise it (ulimit -n; bench/run.sh raises the soft limit to the hard one)"
        ),
        _ => Ok(()),
    }
}

/// The replicas' settings: the defaults plus the bench's Redis and prefix, the API token,
/// room for the fleet and the followers.
fn settings(
    redis: &BenchRedis,
    prefix: &str,
    runners: usize,
    followers: usize,
) -> anyhow::Result<Settings> {
    let mut settings = Settings::load_from(None, &[]).context("loading the default settings")?;
    settings.redis.url = redis.url.as_str().into();
    settings.redis.prefix = prefix.to_string();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.shutdown_grace_secs = 5;
    settings.api.tokens = vec![TOKEN.into()];
    settings.api.max_followers = followers + 100;
    settings.api.max_followers_per_client = followers + 100;
    // No admission limit may hold a runner back.
    settings.queue.max_concurrent_jobs = u32::try_from(runners.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .max(100_000);
    let problems = settings.validate();
    if !problems.is_empty() {
        bail!("fleet settings are invalid: {problems:?}");
    }
    Ok(settings)
}

/// What is read at both ends of the window.
struct Reading {
    at: Instant,
    replicas: [f64; 2],
    fleet: f64,
    process: f64,
    redis: Snapshot,
    lines: u64,
    batches: [u64; 2],
    machine: (f64, f64),
}

impl Reading {
    async fn take(
        redis: &BenchRedis,
        replicas: &[Replica; 2],
        tally: &runner::Tally,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            at: Instant::now(),
            replicas: [replicas[0].cpu_secs(), replicas[1].cpu_secs()],
            fleet: threads_cpu_secs(FLEET_THREAD),
            process: own_cpu_secs(),
            redis: redis.snapshot().await?,
            lines: tally.lines.load(Ordering::Relaxed),
            batches: [
                tally.batches[0].load(Ordering::Relaxed),
                tally.batches[1].load(Ordering::Relaxed),
            ],
            machine: machine_cpu_secs(),
        })
    }
}

/// One fleet size, from fresh replicas to a clean Redis.
pub async fn run(redis: &BenchRedis, cfg: &Config, runners: usize) -> anyhow::Result<Size> {
    check_fd_limit(runners + cfg.followers)?;
    let prefix = format!("{}{runners}:", cfg.prefix);
    eprintln!(
        "bench: fleet: {runners} runners printing {} lines/s each, {} followers, two replicas, {} s",
        cfg.lines_per_sec,
        cfg.followers,
        cfg.duration.as_secs()
    );
    let settings = settings(redis, &prefix, runners, cfg.followers)?;
    let heartbeat_secs = settings.queue.heartbeat_secs;
    let (spawned_tx, spawned_rx) = mpsc::unbounded_channel();
    let spawner = Arc::new(FleetSpawner::new(spawned_tx, Spawned::of));
    let replicas = [
        Replica::start(REPLICAS[0], cfg.workers, settings.clone(), spawner.clone()).await?,
        Replica::start(REPLICAS[1], cfg.workers, settings, spawner.clone()).await?,
    ];
    let fleet = NamedRuntime::new(FLEET_THREAD, cfg.workers)?;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let window = Arc::new(Window::default());
    let tally = Arc::new(runner::Tally::new(
        cfg.followers.min(runners),
        Arc::clone(&window),
    ));
    let jobs = Arc::new(Mutex::new(Vec::with_capacity(runners)));
    let launcher = Launcher {
        addrs: [replicas[0].addr, replicas[1].addr],
        lines_per_sec: cfg.lines_per_sec,
        tally: Arc::clone(&tally),
        stop: stop.clone(),
        jobs: Arc::clone(&jobs),
    };
    fleet.spawn(launcher.run(spawned_rx));

    let started = Instant::now();
    submit(&replicas[0].queue, runners).await?;
    let limit = Duration::from_secs(60) + Duration::from_millis(runners as u64 * 20);
    wait_until(limit, || {
        tally.started.load(Ordering::SeqCst) as usize >= runners
    })
    .await
    .with_context(|| {
        format!(
            "only {} of {runners} runners reported `started` within {limit:?}",
            tally.started.load(Ordering::SeqCst)
        )
    })?;
    let ramp_up = started.elapsed();

    let ids = jobs.lock().map(|ids| ids.clone()).unwrap_or_default();
    let follows = Arc::new(follower::Tally::default());
    for k in 0..cfg.followers {
        // Half the followers are on the replica their runner reports to, half on the other.
        fleet.spawn(
            Follower {
                addr: [replicas[0].addr, replicas[1].addr][(k / 2) % 2],
                job_id: ids[k % ids.len()].clone(),
                tally: Arc::clone(&follows),
                window: Arc::clone(&window),
                stop: stop.clone(),
            }
            .run(),
        );
    }
    wait_until(Duration::from_secs(60), || {
        follows.connected.load(Ordering::SeqCst) as usize >= cfg.followers
    })
    .await
    .with_context(|| {
        format!(
            "only {} of {} followers connected",
            follows.connected.load(Ordering::SeqCst),
            cfg.followers
        )
    })?;
    tokio::time::sleep(SETTLE).await;

    let mut size = measure(redis, cfg, &replicas, &tally, &window).await?;
    tokio::time::sleep(GRACE).await;
    size.runners = runners;
    size.ramp_up = ramp_up;
    size.heartbeat_secs = heartbeat_secs;
    size.latency = follows.latency.percentiles();
    size.followed = (
        followed_printed(&tally, cfg.followers, runners),
        follows.lines.load(Ordering::Relaxed),
    );
    size.lagged = follows.lagged.load(Ordering::Relaxed);
    size.follower_failures = follows.failures.load(Ordering::Relaxed);
    verify(redis, &replicas[0].queue, &ids, &mut size).await?;
    size.lease_expiries = spawner.status_calls.load(Ordering::Relaxed);
    size.retries = tally.retries.load(Ordering::Relaxed);
    size.gone = tally.gone.load(Ordering::Relaxed);

    stop.cancel();
    drop(fleet);
    for replica in replicas {
        if let Some(problem) = replica.stop().await {
            size.problems.push(problem);
        }
    }
    redis
        .clean(&prefix)
        .await
        .context("cleaning up after a fleet")?;
    Ok(size)
}

/// The window: readings at both ends, the process's RSS sampled every second.
async fn measure(
    redis: &BenchRedis,
    cfg: &Config,
    replicas: &[Replica; 2],
    tally: &runner::Tally,
    window: &Window,
) -> anyhow::Result<Size> {
    window.open();
    let before = Reading::take(redis, replicas, tally).await?;
    let mut rss_max = 0;
    let end = before.at + cfg.duration;
    while Instant::now() < end {
        rss_max = rss_max.max(rss_bytes(std::process::id()).unwrap_or(0));
        tokio::time::sleep(
            Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    window.close();
    let after = Reading::take(redis, replicas, tally).await?;
    let delta = before.redis.delta(&after.redis);
    Ok(Size {
        window: after.at - before.at,
        lines: after.lines - before.lines,
        post_latency: tally.post_latency.percentiles(),
        cpu: [
            after.replicas[0] - before.replicas[0],
            after.replicas[1] - before.replicas[1],
        ],
        redis_cpu: delta.cpu_secs,
        fleet_cpu: after.fleet - before.fleet,
        process_cpu: after.process - before.process,
        machine: (
            after.machine.0 - before.machine.0,
            after.machine.1 - before.machine.1,
        ),
        redis_commands: delta.commands,
        redis_top: {
            let mut top: Vec<(String, u64, u64)> = delta
                .usec
                .iter()
                .map(|(name, us)| (name.clone(), delta.calls_of(name), *us))
                .collect();
            top.sort_by_key(|(_, _, us)| std::cmp::Reverse(*us));
            top.truncate(6);
            top
        },
        rss_max,
        batches: [
            after.batches[0] - before.batches[0],
            after.batches[1] - before.batches[1],
        ],
        ..Size::default()
    })
}

/// Lines the followers should have got: each follower's runner's lines of the window.
fn followed_printed(tally: &runner::Tally, followers: usize, runners: usize) -> u64 {
    (0..followers)
        .map(|k| tally.followed_printed[k % runners.min(followers)].load(Ordering::Relaxed))
        .sum()
}

/// Reads the queue's counters and every job's record: no attempt may have ended, and every
/// job must still be running its first attempt.
async fn verify(
    redis: &BenchRedis,
    queue: &Queue,
    ids: &[String],
    size: &mut Size,
) -> anyhow::Result<()> {
    let stats = queue.stats().await.context("reading the queue stats")?;
    size.ended_attempts = ["retrying", "failed", "timed_out", "cancelled"]
        .iter()
        .map(|s| stats.entered.get(*s).copied().unwrap_or(0))
        .sum();
    let rows = redis.job_fields(queue, ids, ["state", "attempt"]).await?;
    size.not_running += rows
        .iter()
        .filter(|(state, attempt)| {
            state.as_deref() != Some("running") || attempt.as_deref() != Some("1")
        })
        .count();
    Ok(())
}

/// Starts a runner for every attempt the backend announces, reporting to the replicas in
/// turn (as a Service in front of them would spread them).
struct Launcher {
    addrs: [SocketAddr; 2],
    lines_per_sec: u32,
    tally: Arc<runner::Tally>,
    stop: CancellationToken,
    jobs: Arc<Mutex<Vec<String>>>,
}

impl Launcher {
    async fn run(self, mut spawned: mpsc::UnboundedReceiver<Spawned>) {
        let mut index = 0;
        while let Some(attempt) = spawned.recv().await {
            if let Ok(mut jobs) = self.jobs.lock() {
                jobs.push(attempt.job_id.clone());
            }
            let replica = index % 2;
            tokio::spawn(
                Runner {
                    index,
                    spawned: attempt,
                    replica,
                    addr: self.addrs[replica],
                    lines_per_sec: self.lines_per_sec,
                    tally: Arc::clone(&self.tally),
                    stop: self.stop.clone(),
                }
                .run(),
            );
            index += 1;
        }
    }
}

/// Submits `jobs` jobs, 64 at a time.
async fn submit(queue: &Queue, jobs: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut submitters = Vec::new();
    for _ in 0..64 {
        let queue = queue.clone();
        let next = Arc::clone(&next);
        submitters.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs {
                    return anyhow::Ok(());
                }
                let job = NewJob {
                    agent: "echo".into(),
                    task: format!("fleet runner {i}"),
                    timeout_secs: 3600,
                    ..Default::default()
                };
                match queue.submit(&job).await.context("submitting a job")? {
                    Submission::Created(_) => {}
                    other => bail!("submit answered with an existing job: {other:?}"),
                }
            }
        }));
    }
    for submitter in submitters {
        submitter.await.context("a submitter panicked")??;
    }
    Ok(())
}

/// Waits until `done` holds, looking every 50 ms; an error after `limit`.
async fn wait_until(limit: Duration, done: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
