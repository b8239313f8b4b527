//! Lifecycle throughput: jobs through submit → admit → spawn → running → succeeded, with
//! the dispatcher built in-process around the no-op spawner and the bench playing every
//! runner's side directly through the queue.
//!
//! The runner side only reports a job once its spawn is recorded (as a real runner, which
//! starts after its workload exists, would): the spawner wrapper announces each spawn, and
//! a pipelined `HSTRLEN job:{id} handle_identity` shows when the record is in. Those
//! probes are the bench's, not the dispatcher's, and are subtracted from the command
//! counts.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentsmith::app::Application;
use agentsmith::settings::Settings;
use anyhow::{bail, Context as _};
use contract::{RunOutcome, RunnerBatch, RunnerEvent, PROTOCOL_VERSION};
use queue::{NewJob, Queue, Submission};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::announcing_spawner::AnnouncingSpawner;
use crate::redis_info::{BenchRedis, Delta};
use crate::sys::{machine_cpu_secs, own_cpu_secs};

/// How the phase is run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Jobs to push through.
    pub jobs: usize,
    /// Concurrent submitting tasks.
    pub submitters: usize,
    /// Concurrent runner-side reports.
    pub runners: usize,
    /// `queue.claim_batch`.
    pub claim_batch: usize,
    /// Key prefix.
    pub prefix: String,
}

/// What the phase measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Jobs submitted.
    pub jobs: usize,
    /// Jobs that reached `succeeded` within the time limit.
    pub succeeded: usize,
    /// From the first submit until the last job succeeded.
    pub wall: Duration,
    /// From the first submit until the last submit returned.
    pub submit_wall: Duration,
    /// Whether every job was verified succeeded, with its spawn recorded, and the counters
    /// agree; the problems otherwise.
    pub problems: Vec<String>,
    /// What Redis did meanwhile.
    pub redis: Delta,
    /// The bench's own probe commands (subtracted for per-job figures).
    pub probes: u64,
    /// CPU seconds of this process (dispatcher + simulated clients and runners).
    pub bench_cpu_secs: f64,
    /// Submits or reports retried after an error.
    pub retries: u64,
    /// CPU seconds the whole machine was busy during the phase.
    pub machine_busy_secs: f64,
    /// CPU seconds stolen by the hypervisor during the phase.
    pub steal_secs: f64,
}

impl Outcome {
    /// Jobs per second through the whole lifecycle.
    pub fn jobs_per_sec(&self) -> f64 {
        self.succeeded as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Redis commands per job, the bench's probes and INFO calls left out.
    pub fn commands_per_job(&self) -> f64 {
        let info = self.redis.calls_of("info");
        let own = self.probes.min(self.redis.commands) + info;
        self.redis.commands.saturating_sub(own) as f64 / self.jobs.max(1) as f64
    }

    /// Socket reads Redis served per job: one read carries every command pipelined on a
    /// connection at that moment, so with a multiplexed connection this is far below the
    /// calls per job.
    pub fn reads_per_job(&self) -> f64 {
        self.redis.reads as f64 / self.jobs.max(1) as f64
    }

    /// Calls of `name` per job.
    pub fn per_job(&self, name: &str) -> f64 {
        self.redis.calls_of(name) as f64 / self.jobs.max(1) as f64
    }

    /// Redis CPU microseconds per job.
    pub fn redis_cpu_us_per_job(&self) -> f64 {
        self.redis.cpu_secs * 1e6 / self.jobs.max(1) as f64
    }
}

/// Shared tallies of the simulated runners.
#[derive(Default)]
struct Tally {
    succeeded: AtomicUsize,
    reported: AtomicUsize,
    probes: AtomicU64,
    retries: AtomicU64,
    unexpected: Mutex<Vec<String>>,
    all_done: Notify,
}

impl Tally {
    fn problem(&self, text: String) {
        if let Ok(mut list) = self.unexpected.lock() {
            if list.len() < 20 {
                list.push(text);
            }
        }
    }

    /// Counts a job whose report is final (succeeded or not); wakes the main task after
    /// the last.
    fn reported(&self, total: usize) {
        if self.reported.fetch_add(1, Ordering::SeqCst) + 1 >= total {
            self.all_done.notify_waiters();
        }
    }
}

/// Runs the phase against `redis`.
pub async fn run(redis: &BenchRedis, cfg: &Config) -> anyhow::Result<Outcome> {
    let mut settings = Settings::load_from(None, &[]).context("loading the default settings")?;
    settings.redis.url = redis.url.as_str().into();
    settings.redis.prefix = cfg.prefix.clone();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.shutdown_grace_secs = 5;
    // The no-op workloads never end by themselves: no admission limit may hold them.
    settings.queue.max_concurrent_jobs = u32::try_from(cfg.jobs.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .max(100_000);
    settings.queue.claim_batch = cfg.claim_batch;
    let problems = settings.validate();
    if !problems.is_empty() {
        bail!("bench settings are invalid: {problems:?}");
    }

    let (spawned_tx, spawned_rx) = mpsc::unbounded_channel();
    let spawner = Arc::new(AnnouncingSpawner::new(spawned_tx, |job| {
        (job.job_id.clone(), job.attempt)
    }));
    let shutdown = CancellationToken::new();
    let app = Application::build_with_spawner(settings, spawner, shutdown.clone())
        .await
        .context("building the dispatcher")?;
    let ctx = app.context();
    let queue = ctx.queue.clone();
    let app_task = tokio::spawn(app.run());
    // Stop the dispatcher however this function ends.
    let _stop = shutdown.clone().drop_guard();

    // Let the scheduler reach its blocking read.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let tally = Arc::new(Tally::default());
    let probe_conn = redis.conn().await?;
    let runners = tokio::spawn(runner_side(
        queue.clone(),
        spawned_rx,
        probe_conn,
        cfg.runners,
        cfg.jobs,
        Arc::clone(&tally),
    ));

    let before = redis.snapshot().await?;
    let cpu_before = own_cpu_secs();
    let machine_before = machine_cpu_secs();
    let started = Instant::now();

    let ids = submit_all(&queue, cfg, &tally).await?;
    let submit_wall = started.elapsed();

    let limit = Duration::from_secs(120).max(Duration::from_millis(cfg.jobs as u64 * 5));
    let finished = tokio::time::timeout(limit, async {
        loop {
            let notified = tally.all_done.notified();
            if tally.reported.load(Ordering::SeqCst) >= cfg.jobs {
                break;
            }
            notified.await;
        }
    })
    .await;
    let wall = started.elapsed();
    let bench_cpu_secs = own_cpu_secs() - cpu_before;
    let machine_after = machine_cpu_secs();
    let after = redis.snapshot().await?;

    let mut problems = Vec::new();
    let succeeded = tally.succeeded.load(Ordering::SeqCst);
    if finished.is_err() || succeeded < cfg.jobs {
        problems.push(format!(
            "only {succeeded} of {} jobs succeeded (limit {limit:?})",
            cfg.jobs
        ));
    }
    if let Ok(list) = tally.unexpected.lock() {
        problems.extend(list.iter().cloned());
    }

    // Verify from Redis, outside the timed window.
    problems.extend(verify(&queue, redis, &ids, cfg.jobs).await?);

    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(15), app_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => problems.push(format!("the dispatcher stopped with an error: {e:#}")),
        Ok(Err(e)) => problems.push(format!("the dispatcher task failed: {e}")),
        Err(_) => problems.push("the dispatcher did not stop within 15 s".into()),
    }
    runners.abort();

    Ok(Outcome {
        jobs: cfg.jobs,
        succeeded,
        wall,
        submit_wall,
        problems,
        redis: before.delta(&after),
        probes: tally.probes.load(Ordering::SeqCst),
        bench_cpu_secs,
        retries: tally.retries.load(Ordering::SeqCst),
        machine_busy_secs: machine_after.0 - machine_before.0,
        steal_secs: machine_after.1 - machine_before.1,
    })
}

/// Submits `cfg.jobs` jobs from `cfg.submitters` tasks, so requests are pipelined on the
/// queue's connection; the ids, in no particular order.
async fn submit_all(
    queue: &Queue,
    cfg: &Config,
    tally: &Arc<Tally>,
) -> anyhow::Result<Vec<String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut submitters = Vec::new();
    for _ in 0..cfg.submitters.max(1) {
        let queue = queue.clone();
        let next = Arc::clone(&next);
        let tally = Arc::clone(tally);
        let total = cfg.jobs;
        submitters.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(ids);
                }
                let job = NewJob {
                    agent: "echo".into(),
                    task: format!("bench job {i}"),
                    timeout_secs: 60,
                    ..Default::default()
                };
                let mut tries = 0;
                let submission = loop {
                    match queue.submit(&job).await {
                        Ok(done) => break done,
                        Err(e) if tries < 5 => {
                            tries += 1;
                            tally.retries.fetch_add(1, Ordering::Relaxed);
                            warn(&format!("submit failed, retrying: {e}"));
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => return Err(e).context("submitting a job"),
                    }
                };
                match submission {
                    Submission::Created(stored) => ids.push(stored.id),
                    other => bail!("submit answered with an existing job: {other:?}"),
                }
            }
        }));
    }
    let mut ids = Vec::with_capacity(cfg.jobs);
    for submitter in submitters {
        ids.extend(submitter.await.context("a submitter panicked")??);
    }
    Ok(ids)
}

/// What the queue's counters and the job records say is wrong after the run (nothing, when
/// every job succeeded with a recorded spawn).
async fn verify(
    queue: &Queue,
    redis: &BenchRedis,
    ids: &[String],
    jobs: usize,
) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let stats = queue.stats().await.context("reading the queue stats")?;
    let entered = |s: &str| stats.entered.get(s).copied().unwrap_or(0);
    let current = |s: &str| stats.current.get(s).copied().unwrap_or(0);
    for state in ["queued", "starting", "running", "succeeded"] {
        if entered(state) != jobs as i64 {
            problems.push(format!(
                "stats: entered[{state}] = {} (expected {})",
                entered(state),
                jobs
            ));
        }
    }
    for state in ["failed", "retrying", "cancelled", "timed_out"] {
        if entered(state) != 0 {
            problems.push(format!("stats: entered[{state}] = {}", entered(state)));
        }
    }
    for state in ["queued", "starting", "running"] {
        if current(state) != 0 {
            problems.push(format!("stats: current[{state}] = {}", current(state)));
        }
    }
    let (mut ok, mut not_succeeded, mut no_handle) = (0usize, 0usize, 0usize);
    let rows = redis
        .job_fields(queue, ids, ["state", "handle_identity"])
        .await?;
    for (state, handle) in rows {
        if state.as_deref() != Some("succeeded") {
            not_succeeded += 1;
        } else if handle.unwrap_or_default().is_empty() {
            no_handle += 1;
        } else {
            ok += 1;
        }
    }
    if ok != jobs {
        problems.push(format!(
            "records: {ok} of {} succeeded with a recorded spawn ({not_succeeded} not succeeded, {no_handle} without a recorded spawn)",
            jobs
        ));
    }

    Ok(problems)
}

/// Errors inside tasks are rare and not fatal (they are retried); say so on stderr.
fn warn(text: &str) {
    eprintln!("bench: {text}");
}

/// The runners' side: for each announced spawn, waits until the spawn is recorded, then
/// reports `started` and `finished` (exit 0) in one batch, as a runner of a quick agent
/// would.
async fn runner_side(
    queue: Queue,
    mut spawned: mpsc::UnboundedReceiver<(String, u32)>,
    mut conn: redis::aio::MultiplexedConnection,
    concurrency: usize,
    total: usize,
    tally: Arc<Tally>,
) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut pending: Vec<(String, u32)> = Vec::new();
    let mut arrived = Vec::new();
    loop {
        if pending.is_empty() {
            if spawned.recv_many(&mut arrived, 4096).await == 0 {
                return;
            }
        } else {
            while arrived.len() < 4096 {
                match spawned.try_recv() {
                    Ok(item) => arrived.push(item),
                    Err(_) => break,
                }
            }
        }
        pending.append(&mut arrived);
        let mut pipe = redis::pipe();
        for (id, _) in &pending {
            pipe.cmd("HSTRLEN")
                .arg(queue.keys().job(id))
                .arg("handle_identity");
        }
        let lengths: Vec<i64> = match pipe.query_async(&mut conn).await {
            Ok(l) => l,
            Err(e) => {
                warn(&format!("probing spawns failed, retrying: {e}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tally
            .probes
            .fetch_add(pending.len() as u64, Ordering::Relaxed);
        let mut unrecorded = Vec::new();
        for ((id, attempt), len) in pending.drain(..).zip(lengths) {
            if len == 0 {
                unrecorded.push((id, attempt));
                continue;
            }
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let queue = queue.clone();
            let tally = Arc::clone(&tally);
            tokio::spawn(async move {
                report(&queue, &id, attempt, &tally, total).await;
                drop(permit);
            });
        }
        pending = unrecorded;
        if !pending.is_empty() {
            // Give the scheduler a moment to record those spawns.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

async fn report(queue: &Queue, id: &str, attempt: u32, tally: &Tally, total: usize) {
    let batch = RunnerBatch {
        version: PROTOCOL_VERSION,
        attempt,
        first_seq: 0,
        events: vec![
            RunnerEvent::Started,
            RunnerEvent::Finished {
                outcome: RunOutcome::Exited { code: 0 },
                result: None,
                change: None,
            },
        ],
    };
    for tries in 0.. {
        match queue.apply_runner_batch(id, &batch).await {
            Ok(outcome) if outcome.state == "succeeded" && !outcome.stop => {
                tally.succeeded.fetch_add(1, Ordering::SeqCst);
                tally.reported(total);
                return;
            }
            Ok(outcome) => {
                tally.problem(format!("job {id}: runner batch answered {outcome:?}"));
                tally.reported(total);
                return;
            }
            Err(e) if tries < 5 => {
                tally.retries.fetch_add(1, Ordering::Relaxed);
                warn(&format!("runner batch for {id} failed, retrying: {e}"));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                tally.problem(format!("job {id}: runner batch failed: {e}"));
                tally.reported(total);
                return;
            }
        }
    }
}
