//! Followers of one busy job (`--only streams`): the real `agentsmith serve`, one job whose
//! agent prints `--rate` lines a second, `--followers` SSE clients of its events of which a
//! share reads slowly. Measured: the server's RSS, Redis's connected clients (which must not
//! grow with the followers), the latency of each line to the fast followers (from the agent's
//! clock, and from the moment Redis stored it), and who was dropped as `lagged`.
//!
//! The followers are raw HTTP/1.1 connections of this process that scan the SSE stream for
//! its `id:`, `event:` and `data:` lines, so the client side costs little next to what it
//! measures; latency histograms are shared atomics in 1 ms steps.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::api::TOKEN;
use crate::histogram::{Histogram, Percentiles};
use crate::redis_info::BenchRedis;
use crate::sse::{self, Seen};
use crate::sys::{
    cpu_secs, free_port, http, open_files_limit, rss_bytes, wait_http_ok, ChildGuard,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// `target/release/agentsmith`.
    pub agentsmith: PathBuf,
    /// `target/release/agent-runner`.
    pub runner: PathBuf,
    /// Followers of the job.
    pub followers: usize,
    /// Share of them that read slowly.
    pub slow_share: f64,
    /// Bytes a second a slow follower reads; 0: none until the job has ended, then as fast
    /// as it can (a stalled client).
    pub slow_rate: usize,
    /// Lines a second the agent prints.
    pub rate: u32,
    /// Seconds it prints.
    pub seconds: u64,
    /// Key prefix.
    pub prefix: String,
}

/// What the phase measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The configuration it ran with.
    pub config: Config,
    /// RSS of the server after start-up.
    pub rss_idle: u64,
    /// RSS once every follower was connected, before the agent printed.
    pub rss_followed: u64,
    /// Largest RSS sampled while the agent printed.
    pub rss_max: u64,
    /// Redis's connected clients before the followers, once they were connected, and the
    /// most while the agent printed (the bench's sampling connection included in each).
    pub clients: (u64, u64, u64),
    /// Line latency to fast followers, from the agent's clock.
    pub latency_agent: Percentiles,
    /// Line latency to fast followers, from the moment Redis stored the line (its id).
    pub latency_redis: Percentiles,
    /// Lines the fast followers received in all, and per second of printing.
    pub lines_received: u64,
    /// Fast followers that received every line.
    pub fast_complete: u64,
    /// Slow followers that received every line (resuming after `lagged`), by the end.
    pub slow_complete: u64,
    /// `lagged` drops of fast and of slow followers.
    pub lagged: (u64, u64),
    /// Connections refused or failed.
    pub failures: u64,
    /// Printing time (from the gate to the job's end).
    pub printing: Duration,
    /// CPU seconds of the server and of Redis while the agent printed.
    pub cpu: (f64, f64),
}

/// What the followers count, together.
struct Tally {
    latency_agent: Histogram,
    latency_redis: Histogram,
    lines: AtomicU64,
    fast_complete: AtomicU64,
    slow_complete: AtomicU64,
    lagged_fast: AtomicU64,
    lagged_slow: AtomicU64,
    connected: AtomicU64,
    failures: AtomicU64,
    /// Set once the agent prints: lines before it (none are expected) are not timed.
    printing: AtomicBool,
    /// Set once the job has ended: stalled followers start reading.
    done: AtomicBool,
}

/// Runs the phase; `dir` holds the config, the gate file, logs and work directories.
pub async fn run(redis: &BenchRedis, cfg: &Config, dir: &Path) -> anyhow::Result<Outcome> {
    for (what, path) in [
        ("agentsmith", &cfg.agentsmith),
        ("agent-runner", &cfg.runner),
    ] {
        if !path.is_file() {
            bail!(
                "{what} not found at {} (cargo build --release -p agentsmith -p agent-runner)",
                path.display()
            );
        }
    }
    check_fd_limit(cfg.followers)?;
    let port = free_port()?;
    let gate = dir.join("go");
    let config_path = write_config(redis, cfg, dir, port, &gate)?;
    let mut command = Command::new(&cfg.agentsmith);
    command
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("AGENTSMITH") {
            command.env_remove(key);
        }
    }
    let mut server = ChildGuard::spawn("agentsmith serve", command, &dir.join("agentsmith.log"))?;
    wait_http_ok(&mut server, port, "/health", Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = server.pid();
    let rss_idle = rss_bytes(pid).context("reading the server's RSS")?;

    let job = submit(port).await?;
    wait_state(port, &job, &["running"], Duration::from_secs(60)).await?;
    let mut sampler = redis.conn().await?;
    let clients_before = connected_clients(&mut sampler).await?;

    let tally = Arc::new(Tally {
        latency_agent: Histogram::default(),
        latency_redis: Histogram::default(),
        lines: AtomicU64::new(0),
        fast_complete: AtomicU64::new(0),
        slow_complete: AtomicU64::new(0),
        lagged_fast: AtomicU64::new(0),
        lagged_slow: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        printing: AtomicBool::new(false),
        done: AtomicBool::new(false),
    });
    let stop = CancellationToken::new();
    let expected = u64::from(cfg.rate) * cfg.seconds;
    let followers = connect_all(cfg, port, &job, expected, &tally, &stop).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.check_alive()?;
    let rss_followed = rss_bytes(pid).unwrap_or(0);
    let clients_followed = connected_clients(&mut sampler).await?;

    // Print, sampling RSS and Redis clients until the job has ended.
    let redis_before = redis.snapshot().await?;
    let cpu_before = cpu_secs(pid);
    tally.printing.store(true, Ordering::SeqCst);
    std::fs::write(&gate, b"go").context("opening the gate")?;
    let started = Instant::now();
    let (rss_max, clients_max) = sample_until_done(port, &job, pid, &mut sampler, cfg).await?;
    let printing = started.elapsed();
    let cpu = (
        cpu_secs(pid) - cpu_before,
        redis.snapshot().await?.cpu_secs - redis_before.cpu_secs,
    );
    // Fast followers end with the job. Stalled ones read now, and are given time to;
    // slow ones would read on at their pace: they are stopped.
    tally.done.store(true, Ordering::SeqCst);
    let grace = if cfg.slow_rate == 0 { 300 } else { 3 };
    let all = async {
        for follower in followers {
            let _ = follower.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(grace), all)
        .await
        .is_err()
    {
        stop.cancel();
    }
    server.check_alive()?;
    server.stop(Duration::from_secs(5)).await;
    Ok(Outcome {
        config: cfg.clone(),
        rss_idle,
        rss_followed,
        rss_max: rss_max.max(rss_followed),
        clients: (
            clients_before,
            clients_followed,
            clients_max.max(clients_followed),
        ),
        latency_agent: tally.latency_agent.percentiles(),
        latency_redis: tally.latency_redis.percentiles(),
        lines_received: tally.lines.load(Ordering::Relaxed),
        fast_complete: tally.fast_complete.load(Ordering::Relaxed),
        slow_complete: tally.slow_complete.load(Ordering::Relaxed),
        lagged: (
            tally.lagged_fast.load(Ordering::Relaxed),
            tally.lagged_slow.load(Ordering::Relaxed),
        ),
        failures: tally.failures.load(Ordering::Relaxed),
        printing,
        cpu,
    })
}

/// Fails early when this process could not hold a connection per follower.
fn check_fd_limit(followers: usize) -> anyhow::Result<()> {
    match open_files_limit() {
        Some(n) if n < followers + 200 => bail!(
            "{followers} followers need about {} open files and the limit is {n}: raise it (ulimit -n)",
            followers + 200
        ),
        _ => Ok(()),
    }
}

fn write_config(
    redis: &BenchRedis,
    cfg: &Config,
    dir: &Path,
    port: u16,
    gate: &Path,
) -> anyhow::Result<PathBuf> {
    let work = dir.join("work");
    std::fs::create_dir_all(&work)?;
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let json = |s: &str| serde_json::to_string(s).expect("a string always serialises");
    let command = serde_json::to_string(&[
        exe.display().to_string(),
        "printer".into(),
        "--rate".into(),
        cfg.rate.to_string(),
        "--seconds".into(),
        cfg.seconds.to_string(),
        "--gate".into(),
        gate.display().to_string(),
    ])?;
    let cap = cfg.followers + 100;
    let config = format!(
        "server:\n  bind: \"127.0.0.1:{port}\"\n  shutdown_grace_secs: 2\n\
redis:\n  url: {url}\n  prefix: {prefix}\n\
queue:\n  output_bytes_per_attempt: 1073741824\n  events_max_len: {events}\n\
spawner:\n  type: process\n  grace_secs: 1\n  process:\n    runner_path: {runner}\n    work_root: {work}\n\
agents:\n  printer:\n    command: {command}\n    timeout_secs: {timeout}\n\
api:\n  tokens: [\"{TOKEN}\"]\n  max_followers: {cap}\n  max_followers_per_client: {cap}\n\
log:\n  format: json\n",
        url = json(&redis.url),
        prefix = json(&cfg.prefix),
        runner = json(&cfg.runner.display().to_string()),
        work = json(&work.display().to_string()),
        timeout = cfg.seconds + 600,
        // Every line stays in the job's history, so a follower that resumes can get all.
        events = u64::from(cfg.rate) * cfg.seconds + 10_000,
    );
    let path = dir.join("agentsmith.yml");
    std::fs::write(&path, config)?;
    Ok(path)
}

async fn submit(port: u16) -> anyhow::Result<String> {
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = http(
        port,
        "POST",
        "/v1/jobs",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &auth),
        ],
        r#"{"agent":"printer","task":"print"}"#,
    )
    .await?;
    if status != 202 {
        bail!("POST /v1/jobs answered {status}: {body:.300}");
    }
    let job: serde_json::Value = serde_json::from_str(&body).context("the job's JSON")?;
    job["id"]
        .as_str()
        .map(str::to_string)
        .context("a job has an id")
}

async fn job_state(port: u16, job: &str) -> anyhow::Result<String> {
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = http(
        port,
        "GET",
        &format!("/v1/jobs/{job}"),
        &[("Authorization", &auth)],
        "",
    )
    .await?;
    if status != 200 {
        bail!("GET /v1/jobs/{job} answered {status}: {body:.300}");
    }
    let job: serde_json::Value = serde_json::from_str(&body).context("the job's JSON")?;
    Ok(job["state"].as_str().unwrap_or("?").to_string())
}

async fn wait_state(
    port: u16,
    job: &str,
    states: &[&str],
    within: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    loop {
        let state = job_state(port, job).await?;
        if states.contains(&state.as_str()) {
            return Ok(state);
        }
        if Instant::now() > deadline {
            bail!("job {job} is {state}, not {states:?}, after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connected_clients(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("clients").query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .context("INFO clients has no connected_clients")
}

/// Samples the server's RSS and Redis's clients every 100 ms until the job has ended;
/// the largest of each.
async fn sample_until_done(
    port: u16,
    job: &str,
    pid: u32,
    sampler: &mut redis::aio::MultiplexedConnection,
    cfg: &Config,
) -> anyhow::Result<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(cfg.seconds * 4 + 120);
    let (mut rss, mut clients) = (0, 0);
    let mut last_check = Instant::now();
    loop {
        rss = rss.max(rss_bytes(pid).unwrap_or(0));
        // A sample or a look that times out on a busy machine is skipped, not fatal.
        if let Ok(now) = connected_clients(sampler).await {
            clients = clients.max(now);
        }
        if last_check.elapsed() > Duration::from_millis(500) {
            last_check = Instant::now();
            let state = job_state(port, job).await.unwrap_or_default();
            if ["succeeded", "failed", "cancelled", "timed_out"].contains(&state.as_str()) {
                if state != "succeeded" {
                    bail!("the printing job ended {state}");
                }
                return Ok((rss, clients));
            }
        }
        if Instant::now() > deadline {
            bail!("the printing job did not end in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connects every follower (at most 64 connecting at once) and waits until each has its
/// response headers.
async fn connect_all(
    cfg: &Config,
    port: u16,
    job: &str,
    expected: u64,
    tally: &Arc<Tally>,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let slow = ((cfg.followers as f64) * cfg.slow_share).round() as usize;
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut followers = Vec::with_capacity(cfg.followers);
    for n in 0..cfg.followers {
        let follower = Follower {
            port,
            job: job.to_string(),
            slow_rate: (n < slow).then_some(cfg.slow_rate),
            expected,
            tally: Arc::clone(tally),
            stop: stop.clone(),
        };
        let permit = Arc::clone(&gate).acquire_owned().await?;
        followers.push(tokio::spawn(follower.run(permit)));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let total = cfg.followers as u64;
    while tally.connected.load(Ordering::SeqCst) + tally.failures.load(Ordering::SeqCst) < total {
        if Instant::now() > deadline {
            bail!(
                "only {} of {total} followers connected",
                tally.connected.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if tally.failures.load(Ordering::SeqCst) > 0 {
        bail!(
            "{} followers could not connect",
            tally.failures.load(Ordering::SeqCst)
        );
    }
    Ok(followers)
}

/// One follower of the job's events.
struct Follower {
    port: u16,
    job: String,
    /// Bytes a second, for a slow one.
    slow_rate: Option<usize>,
    expected: u64,
    tally: Arc<Tally>,
    stop: CancellationToken,
}

impl Follower {
    async fn run(self, permit: tokio::sync::OwnedSemaphorePermit) {
        let mut permit = Some(permit);
        let mut after: Option<String> = None;
        let mut lines = 0;
        let mut first = true;
        loop {
            let seen = tokio::select! {
                seen = self.follow_once(after.as_deref(), &mut permit, first) => seen,
                _ = self.stop.cancelled() => return,
            };
            first = false;
            let Ok(seen) = seen else {
                self.tally.failures.fetch_add(1, Ordering::SeqCst);
                return;
            };
            lines += seen.lines;
            if seen.lagged {
                let lagged = if self.slow_rate.is_some() {
                    &self.tally.lagged_slow
                } else {
                    &self.tally.lagged_fast
                };
                lagged.fetch_add(1, Ordering::Relaxed);
                // As a browser's EventSource would: resume after the last event it got.
                after = seen.last_id;
                continue;
            }
            if seen.ended && lines == self.expected {
                let complete = if self.slow_rate.is_some() {
                    &self.tally.slow_complete
                } else {
                    &self.tally.fast_complete
                };
                complete.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
    }

    /// One request and its response, until the stream ends (or says `lagged`).
    async fn follow_once(
        &self,
        after: Option<&str>,
        permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
        first: bool,
    ) -> anyhow::Result<Seen> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        if self.slow_rate.is_some() {
            // A remote client's receive buffer is not this machine's memory: keep the slow
            // ones' small, so the kernel memory measured is the server side's.
            socket.set_recv_buffer_size(16 * 1024)?;
        }
        let mut socket = socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], self.port)))
            .await?;
        let request = sse::request(&self.job, format!("127.0.0.1:{}", self.port), after);
        socket.write_all(request.as_bytes()).await?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        let mut seen = Seen::default();
        let mut head = true;
        loop {
            let stalled = self.slow_rate == Some(0) && !self.tally.done.load(Ordering::Relaxed);
            if stalled && !head {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let want = match self.slow_rate {
                // A tenth of a second's worth, then a pause.
                Some(rate) if rate > 0 => (rate / 10).clamp(1, buf.len()),
                _ => buf.len(),
            };
            let n = socket.read(&mut buf[..want]).await?;
            if n == 0 {
                return Ok(seen);
            }
            pending.extend_from_slice(&buf[..n]);
            if head {
                if !sse::take_head(&mut pending)? {
                    continue;
                }
                head = false;
                if first {
                    self.tally.connected.fetch_add(1, Ordering::SeqCst);
                }
                permit.take();
            }
            sse::scan(&mut pending, &mut seen, |data, id| self.time(data, id));
            if seen.ended || seen.lagged {
                return Ok(seen);
            }
            if self.slow_rate.is_some_and(|rate| rate > 0) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Records the latency of a log line to a fast follower.
    fn time(&self, data: &[u8], id: Option<&str>) {
        if self.slow_rate.is_some() || !self.tally.printing.load(Ordering::Relaxed) {
            return;
        }
        self.tally.lines.fetch_add(1, Ordering::Relaxed);
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        // The printer's line is "<n> <microseconds since the epoch>".
        if let Some(printed) = sse::line_stamp(data) {
            self.tally
                .latency_agent
                .record(now_us.saturating_sub(printed) / 1000);
        }
        let stored = id.and_then(|id| id.split_once('-')?.0.parse::<u64>().ok());
        if let Some(stored) = stored {
            self.tally
                .latency_redis
                .record((now_us / 1000).saturating_sub(stored));
        }
    }
}

/// `bench printer`: waits for `gate` to exist, then prints `rate` lines a second for
/// `seconds` seconds, each `<n> <microseconds since the epoch>`, flushed one by one.
pub fn printer(rate: u32, seconds: u64, gate: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    while !gate.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = u64::from(rate.max(1)) * seconds;
    let step = Duration::from_secs(1) / rate.max(1);
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    for n in 1..=total {
        let due = start + step * (n as u32 - 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros();
        writeln!(out, "{n} {now}")?;
        out.flush()?;
    }
    Ok(())
}

/// The phase's table.
pub fn render(o: &Outcome) -> String {
    let c = &o.config;
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    let slow = ((c.followers as f64) * c.slow_share).round() as u64;
    let fast = c.followers as u64 - slow;
    let expected = u64::from(c.rate) * c.seconds;
    let per_sec = o.lines_received as f64 / o.printing.as_secs_f64().max(1e-9);
    let p = |l: &Percentiles| {
        format!(
            "p50 {} ms, p99 {} ms, max {} ms ({} lines)",
            l.p50, l.p99, l.max, l.count
        )
    };
    let rows = [
        (
            "followers (fast + slow)",
            if c.slow_rate == 0 {
                format!(
                    "{} ({fast} + {slow}, slow ones read nothing until the job ends)",
                    c.followers
                )
            } else {
                format!(
                    "{} ({fast} + {slow}, slow ones read {} B/s)",
                    c.followers, c.slow_rate
                )
            },
        ),
        (
            "agent output",
            format!("{} lines/s for {} s ({expected} lines)", c.rate, c.seconds),
        ),
        (
            "RSS of agentsmith serve: idle / followed / max while printing",
            format!(
                "{} / {} / {}",
                mb(o.rss_idle),
                mb(o.rss_followed),
                mb(o.rss_max)
            ),
        ),
        (
            "Redis connected clients: before / with followers / max while printing",
            format!("{} / {} / {}", o.clients.0, o.clients.1, o.clients.2),
        ),
        (
            "line latency to fast followers, from the agent",
            p(&o.latency_agent),
        ),
        (
            "line latency to fast followers, from Redis",
            p(&o.latency_redis),
        ),
        (
            "lines delivered to fast followers",
            format!(
                "{} ({per_sec:.0}/s over {:.1} s of printing)",
                o.lines_received,
                o.printing.as_secs_f64()
            ),
        ),
        (
            "fast followers that got every line",
            format!("{} of {fast}", o.fast_complete),
        ),
        (
            "slow followers that got every line, resuming after `lagged`",
            format!("{} of {slow}", o.slow_complete),
        ),
        (
            "dropped as `lagged`: fast / slow (slow ones resume)",
            format!("{} / {}", o.lagged.0, o.lagged.1),
        ),
        ("failed connections", o.failures.to_string()),
        (
            "CPU while printing: agentsmith / Redis",
            format!("{:.1} s / {:.1} s", o.cpu.0, o.cpu.1),
        ),
    ];
    let mut out = String::from(
        "## Followers of one busy job (`--only streams`)\n\n| Figure | Measured |\n|---|---:|\n",
    );
    for (figure, value) in rows {
        out.push_str(&format!("| {figure} | {value} |\n"));
    }
    out
}
