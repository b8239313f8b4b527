//! HTTP throughput and memory: the real `agentsmith serve` binary under `POST /v1/jobs`
//! load, an axum hello-world under `GET /` load for comparison, and the server's RSS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::redis_info::{BenchRedis, Delta};
use crate::sys::{
    cpu_secs, free_port, http, machine_cpu_secs, own_cpu_secs, reaped_children_cpu_secs, rss_bytes,
    wait_http_ok, ChildGuard,
};
use crate::wrk::{self, Load, Report};

/// The API token the bench configures and sends.
pub const TOKEN: &str = "bench-token-0123456789";
/// The body every POST sends.
pub const BODY: &str = r#"{"agent":"noop","task":"bench"}"#;

/// Where the binaries are and how to load the servers.
#[derive(Debug, Clone)]
pub struct Config {
    /// `target/release/agentsmith`.
    pub agentsmith: PathBuf,
    /// `target/release/agent-runner`.
    pub runner: PathBuf,
    /// The wrk load.
    pub load: Load,
    /// `RUST_LOG` of the server.
    pub server_log: String,
    /// Key prefix.
    pub prefix: String,
}

/// What the API phase measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `POST /v1/jobs` under wrk.
    pub post: Report,
    /// wrk's raw report of the POST run.
    pub post_text: String,
    /// The hello-world under wrk.
    pub hello: Report,
    /// wrk's raw report of the hello-world run.
    pub hello_text: String,
    /// RSS of `agentsmith serve` after start-up and a 2 s settle.
    pub rss_idle: u64,
    /// Largest RSS sampled every 100 ms during the POST run.
    pub rss_loaded: u64,
    /// Jobs the server stored during the POST run (from its counters in Redis).
    pub jobs_stored: i64,
    /// What Redis did during the POST run.
    pub redis: Delta,
    /// CPU seconds of the server during the POST run.
    pub server_cpu_secs: f64,
    /// CPU seconds the whole machine was busy during the POST run.
    pub machine_busy_secs: f64,
    /// CPU seconds of wrk and of the bench itself during the POST run.
    pub load_cpu_secs: f64,
    /// Share of the machine's CPU that other processes used during the hello-world run.
    pub hello_other_share: f64,
    /// CPU seconds of the hello-world server during its run.
    pub hello_cpu_secs: f64,
}

/// What the POST run measured.
struct PostRun {
    report: Report,
    text: String,
    rss_idle: u64,
    rss_loaded: u64,
    jobs_stored: i64,
    redis: Delta,
    server_cpu_secs: f64,
    machine_busy_secs: f64,
    load_cpu_secs: f64,
}

/// Runs the phase; `dir` holds the config, logs and work directories.
pub async fn run(redis: &BenchRedis, cfg: &Config, dir: &Path) -> anyhow::Result<Outcome> {
    for (what, path) in [
        ("agentsmith", &cfg.agentsmith),
        ("agent-runner", &cfg.runner),
    ] {
        if !path.is_file() {
            bail!(
                "{what} not found at {} (build it with cargo build --release -p agentsmith -p agent-runner)",
                path.display()
            );
        }
    }
    let post = post_phase(redis, cfg, dir).await?;
    let hello = hello_phase(cfg, dir).await?;
    Ok(Outcome {
        post: post.report,
        post_text: post.text,
        hello: hello.report,
        hello_text: hello.text,
        rss_idle: post.rss_idle,
        rss_loaded: post.rss_loaded,
        jobs_stored: post.jobs_stored,
        redis: post.redis,
        server_cpu_secs: post.server_cpu_secs,
        machine_busy_secs: post.machine_busy_secs,
        load_cpu_secs: post.load_cpu_secs,
        hello_other_share: hello.other_share,
        hello_cpu_secs: hello.server_cpu_secs,
    })
}

fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serialises")
}

async fn post_phase(redis: &BenchRedis, cfg: &Config, dir: &Path) -> anyhow::Result<PostRun> {
    let port = free_port()?;
    let work = dir.join("work");
    std::fs::create_dir_all(&work)?;
    // The jobs only need to queue: one slot, taken by a job that sleeps past the run, so
    // no agent processes come and go while wrk measures the submit path.
    let sleep_secs = cfg.load.duration * 3 + 60;
    let config = format!(
        "server:\n  bind: \"127.0.0.1:{port}\"\n  shutdown_grace_secs: 2\n\
redis:\n  url: {url}\n  prefix: {prefix}\n\
queue:\n  max_concurrent_jobs: 1\n\
spawner:\n  type: process\n  grace_secs: 1\n  process:\n    runner_path: {runner}\n    work_root: {work}\n\
agents:\n  noop:\n    command: [\"sleep\", \"{sleep_secs}\"]\n    timeout_secs: {timeout}\n\
api:\n  tokens: [\"{TOKEN}\"]\n\
log:\n  format: json\n",
        url = yaml_string(&redis.url),
        prefix = yaml_string(&cfg.prefix),
        runner = yaml_string(&cfg.runner.display().to_string()),
        work = yaml_string(&work.display().to_string()),
        timeout = sleep_secs + 60,
    );
    let config_path = dir.join("agentsmith.yml");
    std::fs::write(&config_path, config)?;
    std::fs::write(dir.join("post.lua"), wrk::post_script(TOKEN, BODY))?;

    let mut command = Command::new(&cfg.agentsmith);
    command
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", &cfg.server_log);
    for (key, _) in std::env::vars() {
        if key.starts_with("AGENTSMITH") {
            command.env_remove(key);
        }
    }
    let mut server = ChildGuard::spawn("agentsmith serve", command, &dir.join("agentsmith.log"))?;
    wait_http_ok(&mut server, port, "/health", Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.check_alive()?;
    let pid = server.pid();
    let rss_idle = rss_bytes(pid).context("reading the server's RSS")?;

    // One request by hand first: a wrong token or body shows here, not as wrk's counts.
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = http(
        port,
        "POST",
        "/v1/jobs",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &auth),
        ],
        BODY,
    )
    .await?;
    if status != 202 {
        bail!("POST /v1/jobs answered {status}: {body:.300}");
    }

    let queued_before = entered_queued(redis, &cfg.prefix).await?;
    let redis_before = redis.snapshot().await?;
    let cpu_before = cpu_secs(pid);
    let machine_before = machine_cpu_secs().0;
    let load_before = own_cpu_secs() + reaped_children_cpu_secs();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        tokio::spawn(async move {
            let mut max = 0;
            while sampling.load(Ordering::SeqCst) {
                if let Some(rss) = rss_bytes(pid) {
                    max = max.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            max
        })
    };
    let url = format!("http://127.0.0.1:{port}/v1/jobs");
    let result = wrk::run(&cfg.load, &url, Some(&dir.join("post.lua"))).await;
    sampling.store(false, Ordering::SeqCst);
    let server_cpu_secs = cpu_secs(pid) - cpu_before;
    let machine_busy_secs = machine_cpu_secs().0 - machine_before;
    let load_cpu_secs = own_cpu_secs() + reaped_children_cpu_secs() - load_before;
    let redis_after = redis.snapshot().await?;
    let rss_loaded = sampler.await.context("the RSS sampler panicked")?;
    let (report, text) = result?;
    server.check_alive()?;
    let jobs_stored = entered_queued(redis, &cfg.prefix).await? - queued_before;
    server.stop(Duration::from_secs(5)).await;
    Ok(PostRun {
        report,
        text,
        rss_idle,
        rss_loaded: rss_loaded.max(rss_idle),
        jobs_stored,
        redis: redis_before.delta(&redis_after),
        server_cpu_secs,
        machine_busy_secs,
        load_cpu_secs,
    })
}

async fn entered_queued(redis: &BenchRedis, prefix: &str) -> anyhow::Result<i64> {
    let mut conn = redis.conn().await?;
    let n: Option<i64> = redis::cmd("HGET")
        .arg(format!("{prefix}stats"))
        .arg("entered:queued")
        .query_async(&mut conn)
        .await?;
    Ok(n.unwrap_or(0))
}

/// What the hello-world run measured.
struct HelloRun {
    report: Report,
    text: String,
    other_share: f64,
    server_cpu_secs: f64,
}

async fn hello_phase(cfg: &Config, dir: &Path) -> anyhow::Result<HelloRun> {
    let port = free_port()?;
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let mut command = Command::new(exe);
    command.arg("hello").arg("--port").arg(port.to_string());
    let mut server = ChildGuard::spawn("hello-world", command, &dir.join("hello.log"))?;
    wait_http_ok(&mut server, port, "/", Duration::from_secs(10)).await?;
    let pid = server.pid();
    let machine_before = machine_cpu_secs().0;
    let server_before = cpu_secs(pid);
    let ours_before = own_cpu_secs() + reaped_children_cpu_secs() + server_before;
    let started = std::time::Instant::now();
    let result = wrk::run(&cfg.load, &format!("http://127.0.0.1:{port}/"), None).await;
    let server_cpu_secs = cpu_secs(pid) - server_before;
    let ours = own_cpu_secs() + reaped_children_cpu_secs() + cpu_secs(pid) - ours_before;
    let busy = machine_cpu_secs().0 - machine_before;
    let capacity = started.elapsed().as_secs_f64().max(1e-9)
        * std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    server.check_alive()?;
    server.stop(Duration::from_secs(2)).await;
    let (report, text) = result?;
    Ok(HelloRun {
        report,
        text,
        other_share: ((busy - ours) / capacity).max(0.0),
        server_cpu_secs,
    })
}

/// `bench hello`: an axum hello-world on the same tokio runtime `agentsmith serve` uses.
pub fn hello(port: u16) -> anyhow::Result<()> {
    use axum::routing::get;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    runtime.block_on(async move {
        let app = axum::Router::new().route("/", get(|| async { "hello" }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{port}"))?;
        axum::serve(listener, app).await.context("serving")
    })
}
