//! Filtered job lists at scale (`--only lists`): issue 16 found `GET /v1/jobs?project=nope`
//! taking 4.8 s with 100,000 jobs, since every filtered list read every job's record.
//!
//! The phase fills the bench's Redis with `--list-jobs` jobs (100,000) across eight projects
//! and every state, through the queue's own scripts (submit, claim and admit, record the
//! spawn, runner reports, cancel, failed attempts), so the records and the list indexes are
//! what production writes. It then lets the sweep walk the whole `jobs` index once (the
//! backfill an installation from before the indexes gets), builds the dispatcher in-process
//! around the no-op spawner, and sends each query of [`queries`] `--list-requests` times, one
//! request at a time on a fresh connection, timing each from connect to the last byte. Each
//! answer is checked: status 200, the expected number of jobs, each passing the filter.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentsmith::app::Application;
use agentsmith::settings::Settings;
use anyhow::{bail, ensure, Context as _};
use contract::{JobHandle, RunOutcome, RunnerBatch, RunnerEvent, PROTOCOL_VERSION};
use queue::{Admission, Claim, JobState, NewJob, Queue, QueueSettings};
use redis::aio::MultiplexedConnection;
use serde_json::Value;
use spawner::backend::noop::NoopSpawner;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::redis_info::BenchRedis;
use crate::report::thousands;
use crate::sys::{http, machine_cpu_secs, own_cpu_secs};

/// The p99 bound of a list request, from the issue.
pub const TARGET_P99: Duration = Duration::from_millis(50);
/// Projects the jobs are spread over (`proj-0` … `proj-7`).
const PROJECTS: usize = 8;
/// Jobs per page (the API's default `limit`).
const PAGE: usize = 50;
/// The page of `proj-5` the deep-page query asks for (an earlier one if it has fewer).
const DEEP_PAGE: usize = 100;
/// The fewest jobs the phase runs with: every filtered query then fills its page.
pub const MIN_JOBS: usize = 10_000;
/// Requests sent before each query's measured ones.
const WARMUP: usize = 5;

/// How the phase is run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Jobs stored.
    pub jobs: usize,
    /// Measured requests per query.
    pub requests: usize,
    /// Concurrent tasks filling Redis.
    pub fillers: usize,
    /// Key prefix.
    pub prefix: String,
}

/// What became of one query.
#[derive(Debug, Clone)]
pub struct Measured {
    /// What it asks for.
    pub label: String,
    /// The request path.
    pub path: String,
    /// Jobs in each answer.
    pub jobs_per_page: usize,
    /// Every measured request's latency, sorted.
    pub latencies: Vec<Duration>,
    /// Job records read (`HGETALL`) per request.
    pub records_per_request: f64,
    /// Index reads (`ZREVRANGEBYSCORE`) per request.
    pub index_reads_per_request: f64,
    /// CPU microseconds of the bench process (the dispatcher and the client) per request.
    pub bench_cpu_us: f64,
    /// CPU microseconds of Redis per request.
    pub redis_cpu_us: f64,
    /// Share of the machine's CPU that other processes used meanwhile.
    pub others_share: f64,
}

impl Measured {
    /// The latency at `share` (0.5: the median), nearest rank.
    pub fn percentile(&self, share: f64) -> Duration {
        let rank = (share * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

/// What the phase measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Jobs stored.
    pub jobs: usize,
    /// Jobs in each state, from the state indexes.
    pub by_state: BTreeMap<String, usize>,
    /// Filling Redis through the queue's scripts.
    pub fill: Duration,
    /// The sweep's walk of every job (the backfill).
    pub backfill: Duration,
    /// Sweeps the walk took.
    pub sweeps: usize,
    /// Bytes of the state and project indexes and the `project_of` hash (`MEMORY USAGE`).
    pub index_bytes: u64,
    /// Bytes of the `jobs` index, for comparison.
    pub jobs_index_bytes: u64,
    /// Redis's `used_memory` with every job stored.
    pub used_memory: u64,
    /// Measured requests per query.
    pub requests: usize,
    /// The queries.
    pub queries: Vec<Measured>,
}

/// What the bench makes of the job `n`, out of every 20: 9 succeed, 2 fail, 1 times out, 1
/// is cancelled, 1 runs, 1 waits for an answer, 1 stays starting, 1 waits out a retry, 3
/// stay queued.
fn fate(n: usize) -> JobState {
    match n % 20 {
        0..=8 => JobState::Succeeded,
        9 | 10 => JobState::Failed,
        11 => JobState::TimedOut,
        12 => JobState::Cancelled,
        13 => JobState::Running,
        14 => JobState::WaitingForInput,
        15 => JobState::Starting,
        16 => JobState::Retrying,
        _ => JobState::Queued,
    }
}

/// The project of the job `n`: twenty jobs in a row share one, so every project has every
/// fate in the same shares.
fn project(n: usize) -> String {
    format!("proj-{}", (n / 20) % PROJECTS)
}

/// Runs the phase against `redis`.
pub async fn run(redis: &BenchRedis, cfg: &Config) -> anyhow::Result<Outcome> {
    let settings = settings(redis, cfg)?;
    let started = Instant::now();
    fill(&settings, cfg).await.context("filling redis")?;
    let fill_time = started.elapsed();
    eprintln!(
        "bench: lists: stored {} jobs in {:.1} s",
        cfg.jobs,
        fill_time.as_secs_f64()
    );
    let queue = Queue::new(&settings.redis, &settings.queue)?;
    let started = Instant::now();
    let sweeps = backfill(redis, &queue).await?;
    let backfill_time = started.elapsed();
    let (index_bytes, jobs_index_bytes, used_memory) = memory(redis, &queue).await?;
    let by_state = by_state(redis, &queue).await?;

    let shutdown = CancellationToken::new();
    let app =
        Application::build_with_spawner(settings, Arc::new(NoopSpawner::new()), shutdown.clone())
            .await
            .context("building the dispatcher")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], app.port()));
    let app_task = tokio::spawn(app.run());
    // Stop the dispatcher however this function ends.
    let _stop = shutdown.clone().drop_guard();
    let mut queries = Vec::new();
    // A project holds a little less than its eighth when the jobs do not split evenly.
    let deep_page = (cfg.jobs / PROJECTS / PAGE)
        .saturating_sub(1)
        .clamp(1, DEEP_PAGE);
    for (label, path, expected) in queries_of(addr.port(), deep_page).await? {
        let measured = measure(redis, addr.port(), cfg.requests, label, path, expected).await?;
        eprintln!(
            "bench: lists: {}: p50 {:.2} ms, p99 {:.2} ms",
            measured.label,
            measured.percentile(0.5).as_secs_f64() * 1e3,
            measured.percentile(0.99).as_secs_f64() * 1e3
        );
        queries.push(measured);
    }
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(15), app_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("bench: lists: the dispatcher stopped with an error: {e:#}"),
        Ok(Err(e)) => eprintln!("bench: lists: the dispatcher task failed: {e}"),
        Err(_) => eprintln!("bench: lists: the dispatcher did not stop within 15 s"),
    }
    Ok(Outcome {
        jobs: cfg.jobs,
        by_state,
        fill: fill_time,
        backfill: backfill_time,
        sweeps,
        index_bytes,
        jobs_index_bytes,
        used_memory,
        requests: cfg.requests,
        queries,
    })
}

/// The dispatcher's settings: the defaults, the bench's Redis and prefix, and leases long
/// enough that no job the bench left starting or running is touched while it measures.
fn settings(redis: &BenchRedis, cfg: &Config) -> anyhow::Result<Settings> {
    let mut settings = Settings::load_from(None, &[]).context("loading the default settings")?;
    settings.redis.url = redis.url.as_str().into();
    settings.redis.prefix = cfg.prefix.clone();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.shutdown_grace_secs = 5;
    settings.queue.lease_secs = 3_600;
    settings.queue.start_timeout_secs = 3_600;
    let problems = settings.validate();
    if !problems.is_empty() {
        bail!("bench settings are invalid: {problems:?}");
    }
    Ok(settings)
}

/// Stores the jobs and moves each to its [`fate`], through the queue's scripts.
///
/// Two queues on the same keys, differing in their limits: one admits every job claimed;
/// the other admits nothing once a job holds a slot (and backs a failed attempt off for an
/// hour), so the jobs meant to stay queued, claimed last, wait for a slot, and no job
/// ending meanwhile admits a waiting one.
async fn fill(settings: &Settings, cfg: &Config) -> anyhow::Result<()> {
    let with_limits = |change: fn(&mut QueueSettings)| {
        let mut limits = settings.queue.clone();
        change(&mut limits);
        Queue::new(&settings.redis, &limits)
    };
    let admitting = with_limits(|l| l.max_concurrent_jobs = u32::MAX)?;
    let full = with_limits(|l| {
        l.max_concurrent_jobs = 1;
        l.backoff_base_secs = 3_600;
        l.backoff_max_secs = 3_600;
    })?;
    admitting.ensure_group().await?;
    let ids = submit_all(&admitting, cfg).await?;
    let mut conn = admitting.dedicated_connection().await?;
    let (mut to_park, mut admitted) = (Vec::new(), Vec::new());
    loop {
        let claims = admitting
            .claim(&mut conn, "bench-lists", 1_000, Duration::from_millis(100))
            .await?;
        if claims.is_empty() {
            break;
        }
        let (queued, starting): (Vec<Claim>, Vec<Claim>) = claims
            .into_iter()
            .partition(|c| ids.get(&c.job_id) == Some(&JobState::Queued));
        for admission in admitting.admit(&starting).await? {
            ensure!(
                matches!(admission, Admission::Spawn { attempt: 1, .. }),
                "a job was not admitted: {admission:?}"
            );
        }
        to_park.extend(queued);
        admitted.extend(starting.into_iter().map(|c| {
            let fate = ids[&c.job_id];
            (c, fate)
        }));
    }
    ensure!(
        admitted.len() + to_park.len() == cfg.jobs,
        "not every job was claimed"
    );
    let finishing = full.clone();
    in_parallel(cfg.fillers, admitted, move |(claim, fate)| {
        let queue = finishing.clone();
        async move { take_to(&queue, &claim, fate).await }
    })
    .await?;
    for batch in to_park.chunks(1_000) {
        for admission in full.admit(batch).await? {
            ensure!(
                admission == Admission::Wait,
                "a job meant to wait was not parked: {admission:?}"
            );
        }
    }
    Ok(())
}

/// Submits every job, `cfg.fillers` at a time; returns each id's fate.
async fn submit_all(queue: &Queue, cfg: &Config) -> anyhow::Result<BTreeMap<String, JobState>> {
    let mut tasks = JoinSet::new();
    for first in 0..cfg.fillers {
        let (queue, jobs, step) = (queue.clone(), cfg.jobs, cfg.fillers);
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for n in (first..jobs).step_by(step) {
                let job = NewJob {
                    agent: "echo".into(),
                    task: format!("bench list job {n}"),
                    project: Some(project(n)),
                    timeout_secs: 3_600,
                    ..NewJob::default()
                };
                let submitted = queue.submit(&job).await?;
                let id = submitted.job().context("a submit kept no job")?.id.clone();
                ids.push((id, fate(n)));
            }
            anyhow::Ok(ids)
        });
    }
    let mut all = BTreeMap::new();
    while let Some(ids) = tasks.join_next().await {
        all.extend(ids??);
    }
    Ok(all)
}

/// Records the spawn of an admitted job's first attempt, then takes it to `fate` as its
/// runner, a user or the watchdog would.
async fn take_to(queue: &Queue, claim: &Claim, fate: JobState) -> anyhow::Result<()> {
    let id = claim.job_id.as_str();
    let handle = JobHandle {
        backend: "noop".into(),
        name: contract::workload_name(id, 1),
        job_id: id.into(),
        attempt: 1,
        id: None,
        target: contract::DEFAULT_TARGET.into(),
    };
    queue.record_spawn(claim, 1, &handle).await?;
    let outcome = match fate {
        JobState::Starting => return Ok(()),
        JobState::Cancelled => {
            queue.cancel(id, "bench").await?;
            return Ok(());
        }
        JobState::Retrying => {
            queue
                .fail_attempt(id, 1, "bench: node lost", true, None, false)
                .await?;
            return Ok(());
        }
        JobState::Succeeded => Some(RunOutcome::Exited { code: 0 }),
        JobState::Failed => Some(RunOutcome::Exited { code: 1 }),
        JobState::TimedOut => Some(RunOutcome::TimedOut),
        _ => None,
    };
    let mut events = vec![RunnerEvent::Started];
    if fate == JobState::WaitingForInput {
        events.push(RunnerEvent::Question {
            id: "q-1".into(),
            text: "bench: which one?".into(),
            choices: vec!["a".into(), "b".into()],
            default: None,
            timeout_secs: 3600,
        });
    }
    events.extend(outcome.map(|outcome| RunnerEvent::Finished {
        outcome,
        result: None,
        change: None,
    }));
    let batch = RunnerBatch {
        version: PROTOCOL_VERSION,
        attempt: 1,
        first_seq: 0,
        events,
    };
    let applied = queue.apply_runner_batch(id, &batch).await?;
    ensure!(
        applied.state == fate.as_str(),
        "job {id} became {} instead of {fate}",
        applied.state
    );
    Ok(())
}

/// Runs `work` on every item, `width` at a time; the first error wins.
async fn in_parallel<T, F, Fut>(width: usize, items: Vec<T>, work: F) -> anyhow::Result<()>
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let width = width.max(1);
    let mut lanes: Vec<Vec<T>> = (0..width).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        lanes[i % width].push(item);
    }
    let mut tasks = JoinSet::new();
    for lane in lanes {
        let work = work.clone();
        tasks.spawn(async move {
            for item in lane {
                work(item).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Sweeps until the backfill has walked every job; returns how many sweeps that took.
async fn backfill(redis: &BenchRedis, queue: &Queue) -> anyhow::Result<usize> {
    let mut conn = redis.conn().await?;
    for sweeps in 1..=1_000 {
        queue.sweep().await?;
        let position: Option<String> = redis::cmd("GET")
            .arg(queue.keys().index_backfill())
            .query_async(&mut conn)
            .await?;
        if position.as_deref() == Some("done") {
            return Ok(sweeps);
        }
    }
    bail!("the backfill did not end within 1,000 sweeps")
}

/// Bytes of the state and project indexes with `project_of`, of `jobs`, and Redis's total.
async fn memory(redis: &BenchRedis, queue: &Queue) -> anyhow::Result<(u64, u64, u64)> {
    let mut conn = redis.conn().await?;
    let keys = queue.keys();
    let mut indexes = vec![keys.project_of()];
    for state in JobState::ALL {
        indexes.push(keys.state_jobs(state.as_str()));
        for n in 0..PROJECTS {
            indexes.push(keys.project_state_jobs(&project(n), state.as_str()));
        }
    }
    indexes.extend((0..PROJECTS).map(|n| keys.project_jobs(&project(n))));
    let mut index_bytes = 0;
    for key in indexes {
        index_bytes += memory_usage(&mut conn, &key).await?;
    }
    let jobs_bytes = memory_usage(&mut conn, &keys.jobs()).await?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok((index_bytes, jobs_bytes, used))
}

/// `MEMORY USAGE key` (every element counted), 0 for a key that does not exist.
async fn memory_usage(conn: &mut MultiplexedConnection, key: &str) -> anyhow::Result<u64> {
    let bytes: Option<u64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(conn)
        .await?;
    Ok(bytes.unwrap_or(0))
}

/// Jobs in each state, from the state indexes.
async fn by_state(redis: &BenchRedis, queue: &Queue) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut conn = redis.conn().await?;
    let mut counts = BTreeMap::new();
    for state in JobState::ALL {
        let n: usize = redis::cmd("ZCARD")
            .arg(queue.keys().state_jobs(state.as_str()))
            .query_async(&mut conn)
            .await?;
        counts.insert(state.as_str().to_string(), n);
    }
    Ok(counts)
}

/// The queries: (label, path, jobs expected in the answer). The cursor of `proj-5`'s page
/// `deep_page` is found by paging there first.
async fn queries_of(port: u16, deep_page: usize) -> anyhow::Result<Vec<(String, String, usize)>> {
    let mut cursor = String::new();
    for _ in 1..deep_page {
        let page = get(port, &format!("/v1/jobs?project=proj-5{cursor}")).await?;
        let next = page["next_cursor"]
            .as_str()
            .context("proj-5 has fewer pages than the deep-page query needs")?;
        cursor = format!("&cursor={next}");
    }
    Ok(vec![
        ("no filter".into(), "/v1/jobs".into(), PAGE),
        (
            "a project (1/8 of the jobs)".into(),
            "/v1/jobs?project=proj-3".into(),
            PAGE,
        ),
        (
            "a state (running, 1/10)".into(),
            "/v1/jobs?state=running".into(),
            PAGE,
        ),
        (
            "a project and a state (1/80)".into(),
            "/v1/jobs?project=proj-3&state=failed".into(),
            PAGE,
        ),
        (
            "a project no job has".into(),
            "/v1/jobs?project=nope".into(),
            0,
        ),
        (
            format!("a project, page {deep_page} (by cursor)"),
            format!("/v1/jobs?project=proj-5{cursor}"),
            PAGE,
        ),
    ])
}

/// `GET path`, which must answer 200 with JSON.
async fn get(port: u16, path: &str) -> anyhow::Result<Value> {
    let (status, body) = http(port, "GET", path, &[], "").await?;
    ensure!(status == 200, "GET {path} answered {status}: {body:.300}");
    serde_json::from_str(&body).with_context(|| format!("GET {path} answered {body:.300}"))
}

/// Sends `GET path` `WARMUP + requests` times, one after the other, and checks every answer.
async fn measure(
    redis: &BenchRedis,
    port: u16,
    requests: usize,
    label: String,
    path: String,
    expected: usize,
) -> anyhow::Result<Measured> {
    for _ in 0..WARMUP {
        check(&get(port, &path).await?, &path, expected)?;
    }
    let before = redis.snapshot().await?;
    let (bench_before, machine_before) = (own_cpu_secs(), machine_cpu_secs().0);
    let window = Instant::now();
    let mut latencies = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let page = get(port, &path).await?;
        latencies.push(started.elapsed());
        check(&page, &path, expected)?;
    }
    let capacity = window.elapsed().as_secs_f64()
        * std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let bench_cpu = own_cpu_secs() - bench_before;
    let machine_busy = machine_cpu_secs().0 - machine_before;
    let delta = before.delta(&redis.snapshot().await?);
    latencies.sort();
    let per_request = |n: f64| n / requests.max(1) as f64;
    Ok(Measured {
        label,
        path,
        jobs_per_page: expected,
        records_per_request: per_request(delta.calls_of("hgetall") as f64),
        index_reads_per_request: per_request(delta.calls_of("zrevrangebyscore") as f64),
        bench_cpu_us: per_request(bench_cpu * 1e6),
        redis_cpu_us: per_request(delta.cpu_secs * 1e6),
        others_share: ((machine_busy - bench_cpu - delta.cpu_secs) / capacity.max(1e-9)).max(0.0),
        latencies,
    })
}

/// Whether an answer holds `expected` jobs, each passing the path's filter.
fn check(page: &Value, path: &str, expected: usize) -> anyhow::Result<()> {
    let jobs = page["jobs"].as_array().context("no jobs array")?;
    ensure!(
        jobs.len() == expected,
        "GET {path} gave {} jobs, not {expected}",
        jobs.len()
    );
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or_default();
    for pair in query.split('&') {
        let Some((field, value)) = pair.split_once('=') else {
            continue;
        };
        if field == "project" || field == "state" {
            for job in jobs {
                ensure!(
                    job[field] == value,
                    "GET {path} gave a job with {field} {}",
                    job[field]
                );
            }
        }
    }
    Ok(())
}

/// The phase's report, as Markdown.
pub fn render(outcome: &Outcome) -> String {
    let states: Vec<String> = outcome
        .by_state
        .iter()
        .map(|(state, n)| format!("{state} {}", thousands(*n as f64)))
        .collect();
    let mut out = format!(
        "\n## Filtered job lists: `GET /v1/jobs` with {} jobs\n\n\
         Jobs by state: {}. Eight projects (`proj-0` … `proj-7`), one request at a time, {} \
         measured per query after {WARMUP}.\n\n\
         | Query | Jobs | p50 | p99 | max | records read | index reads | CPU: bench / Redis | \
         others' CPU | Target p99 | Verdict |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        thousands(outcome.jobs as f64),
        states.join(", "),
        outcome.requests
    );
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    for q in &outcome.queries {
        let p99 = q.percentile(0.99);
        out.push_str(&format!(
            "| {} (`{}`) | {} | {} | {} | {} | {:.1} | {:.1} | {:.0} / {:.0} µs | {:.0} % | < {} | {} |\n",
            q.label,
            shorten(&q.path),
            q.jobs_per_page,
            ms(q.percentile(0.5)),
            ms(p99),
            ms(*q.latencies.last().unwrap_or(&Duration::ZERO)),
            q.records_per_request,
            q.index_reads_per_request,
            q.bench_cpu_us,
            q.redis_cpu_us,
            q.others_share * 100.0,
            ms(TARGET_P99),
            if p99 < TARGET_P99 { "PASS" } else { "MISS" }
        ));
    }
    out.push_str(&format!(
        "\nFilling Redis through the queue's scripts took {:.1} s; the sweep's walk of every \
         job (the backfill) {:.2} s in {} sweeps. Memory: the state and project indexes with \
         `project_of` {:.1} MB, the `jobs` index {:.1} MB, Redis in all {:.1} MB.\n",
        outcome.fill.as_secs_f64(),
        outcome.backfill.as_secs_f64(),
        outcome.sweeps,
        outcome.index_bytes as f64 / 1e6,
        outcome.jobs_index_bytes as f64 / 1e6,
        outcome.used_memory as f64 / 1e6
    ));
    out
}

/// A path with its cursor cut short, for the table.
fn shorten(path: &str) -> String {
    match path.split_once("&cursor=") {
        Some((head, _)) => format!("{head}&cursor=…"),
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fates_cover_every_state_in_the_stated_shares() {
        let mut counts = std::collections::HashMap::new();
        for n in 0..20 {
            *counts.entry(fate(n)).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), JobState::ALL.len());
        assert_eq!(counts[&JobState::Succeeded], 9);
        assert_eq!(counts[&JobState::Queued], 3);
    }

    #[test]
    fn every_project_gets_every_fate() {
        let pairs: std::collections::HashSet<_> =
            (0..20 * PROJECTS).map(|n| (project(n), fate(n))).collect();
        assert_eq!(pairs.len(), PROJECTS * JobState::ALL.len());
    }

    #[test]
    fn answers_are_checked_against_their_filter() {
        let page = serde_json::json!({"jobs": [{"project": "proj-3", "state": "failed"}]});
        assert!(check(&page, "/v1/jobs?project=proj-3&state=failed", 1).is_ok());
        assert!(check(&page, "/v1/jobs?project=proj-4", 1).is_err());
        assert!(check(&page, "/v1/jobs?state=failed", 2).is_err());
    }
}
