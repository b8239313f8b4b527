//! Spawn latency of the docker spawner, beside `docker run` of the same image in the same
//! run: the real `agentsmith serve` binary with `spawner.type: docker` runs N jobs one after
//! another and N at once (an agent that echoes one line), and the docker CLI runs the same
//! command in the same image N times one after another (plain, then with the options the
//! backend gives its containers: init, read-only root, dropped capabilities, limits, a
//! volume and a tmpfs) and N at once.
//!
//! agentsmith's figures come from the job record's own timestamps (submitted, runner
//! started, finished), so the harness's polling adds nothing to them. `docker run` is timed
//! from the command's start to its exit (create, start, wait, remove).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use queue::{Job, JobState};

use crate::redis_info::BenchRedis;
use crate::sys::{free_port, http_to, ChildGuard};

const TOKEN: &str = crate::api::TOKEN;
/// The image the bench builds from the runner it measures.
pub(crate) const IMAGE: &str = "agentsmith-agent:bench";
/// The agent both sides run.
pub(crate) const SCRIPT: &str = "echo hello from the agent";

/// Where the binaries are and how many jobs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// `target/release/agentsmith`.
    pub agentsmith: PathBuf,
    /// `target/release/agent-runner` (put in the image).
    pub runner: PathBuf,
    /// Jobs per series.
    pub jobs: usize,
    /// Key prefix and installation name.
    pub tag: String,
}

/// Latencies of one series, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// One value per job.
    pub ms: Vec<f64>,
}

impl Series {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median.
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// The 90th percentile (nearest rank).
    pub fn p90(&self) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((v.len() as f64) * 0.9).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    /// The largest.
    pub fn max(&self) -> f64 {
        self.ms.iter().copied().fold(f64::NAN, f64::max)
    }
}

/// What the docker phase measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Jobs per series.
    pub jobs: usize,
    /// Sequential: submitted → runner started.
    pub seq_running: Series,
    /// Sequential: submitted → succeeded.
    pub seq_succeeded: Series,
    /// Sequential `docker run`.
    pub seq_docker: Series,
    /// Sequential `docker run` with the options agentsmith's containers have.
    pub seq_docker_same: Series,
    /// Concurrent: submitted → runner started.
    pub conc_running: Series,
    /// Concurrent: submitted → succeeded.
    pub conc_succeeded: Series,
    /// Concurrent `docker run`.
    pub conc_docker: Series,
    /// Wall time of the concurrent agentsmith series.
    pub conc_wall_agentsmith: Duration,
    /// Wall time of the concurrent `docker run` series.
    pub conc_wall_docker: Duration,
}

/// The address containers reach this machine at: the default bridge's gateway.
pub(crate) fn bridge_gateway() -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args([
            "network",
            "inspect",
            "bridge",
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}}|{{.Subnet}}{{end}}",
        ])
        .output()
        .context("running docker network inspect (is docker installed?)")?;
    if !out.status.success() {
        bail!(
            "docker network inspect bridge failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (gateway, subnet) = text.split_once('|').unwrap_or((&text, ""));
    if !gateway.is_empty() {
        return Ok(gateway.to_string());
    }
    // Without an explicit gateway the engine gives the bridge the subnet's first address.
    let network: std::net::Ipv4Addr = subnet
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("the bridge network has no IPv4 subnet ({text:?})"))?;
    Ok(std::net::Ipv4Addr::from(u32::from(network) + 1).to_string())
}

pub(crate) fn build_image(runner: &Path) -> anyhow::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the bench crate has no parent directory")?
        .join("scripts/build-agent-image");
    eprintln!("bench: docker: building {IMAGE} from {}", runner.display());
    let out = Command::new("bash")
        .arg(&script)
        .arg("--runner")
        .arg(runner)
        .args(["--tag", IMAGE])
        .output()
        .context("running scripts/build-agent-image")?;
    if !out.status.success() {
        bail!(
            "building {IMAGE} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Removes every container of the bench's installation.
fn remove_containers(installation: &str) {
    let filter = format!("label=agentsmith.io/installation={installation}");
    if let Ok(out) = Command::new("docker")
        .args(["ps", "-aq", "--filter", &filter])
        .output()
    {
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
    }
}

pub(crate) struct Server {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) child: ChildGuard,
}

impl Server {
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        let auth = format!("Bearer {TOKEN}");
        http_to(
            &self.host,
            self.port,
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        )
        .await
    }

    pub(crate) async fn submit(&self, task: &str) -> anyhow::Result<String> {
        let body = serde_json::json!({"agent": "hello", "task": task}).to_string();
        let (status, answer) = self.request("POST", "/v1/jobs", &body).await?;
        if status != 202 {
            bail!("POST /v1/jobs answered {status}: {answer:.300}");
        }
        let job: Job = serde_json::from_str(&answer).context("reading the new job")?;
        Ok(job.id)
    }

    async fn job(&self, id: &str) -> anyhow::Result<Job> {
        let (status, answer) = self.request("GET", &format!("/v1/jobs/{id}"), "").await?;
        if status != 200 {
            bail!("GET /v1/jobs/{id} answered {status}: {answer:.300}");
        }
        serde_json::from_str(&answer).context("reading a job")
    }

    /// Waits for every job to end; fails unless all succeeded. Returns them.
    pub(crate) async fn wait_all(&mut self, ids: &[String]) -> anyhow::Result<Vec<Job>> {
        let deadline = Instant::now() + Duration::from_secs(120 + 5 * ids.len() as u64);
        let mut done: Vec<Option<Job>> = vec![None; ids.len()];
        while done.iter().any(Option::is_none) {
            self.child.check_alive()?;
            if Instant::now() > deadline {
                bail!("jobs did not end within the deadline");
            }
            for (slot, id) in done.iter_mut().zip(ids) {
                if slot.is_none() {
                    let job = self.job(id).await?;
                    if job.state.is_terminal() {
                        if job.state != JobState::Succeeded {
                            bail!("job {id} ended {:?}: {:?}", job.state, job.reason);
                        }
                        *slot = Some(job);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(done.into_iter().flatten().collect())
    }
}

pub(crate) fn latencies(jobs: &[Job]) -> anyhow::Result<(Series, Series)> {
    let mut running = Series::default();
    let mut succeeded = Series::default();
    for job in jobs {
        let started = job
            .started_at
            .with_context(|| format!("job {} has no start time", job.id))?;
        let finished = job
            .finished_at
            .with_context(|| format!("job {} has no end time", job.id))?;
        running.ms.push((started - job.created_at) as f64);
        succeeded.ms.push((finished - job.created_at) as f64);
    }
    Ok((running, succeeded))
}

/// The options the docker backend creates its containers with (defaults of the bench's
/// configuration), for a like-for-like `docker run`.
const LOCKED_DOWN: [&str; 19] = [
    "--init",
    "--read-only",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--memory",
    "2g",
    "--memory-swap",
    "2g",
    "--cpus",
    "2",
    "--pids-limit",
    "1024",
    "-v",
    "/work",
    "--tmpfs",
    "/tmp",
    "--add-host=host.docker.internal:host-gateway",
];

fn docker_run_command(locked_down: bool) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("docker");
    command.args(["run", "--rm", "--user", "10001:10001"]);
    if locked_down {
        command.args(LOCKED_DOWN);
    }
    command
        .args(["--entrypoint", "sh", IMAGE, "-c", SCRIPT])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    command
}

async fn docker_run_once(locked_down: bool) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = docker_run_command(locked_down)
        .output()
        .await
        .context("running docker run")?;
    let took = started.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!(
            "docker run failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

/// Runs the phase.
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
    build_image(&cfg.runner)?;
    let installation = format!("bench-{}", cfg.tag);
    let result = measure(redis, cfg, dir, &installation).await;
    remove_containers(&installation);
    result
}

/// Starts `agentsmith serve` with `config` and waits until it is ready.
pub(crate) async fn start_server(
    agentsmith: &Path,
    config: &str,
    dir: &Path,
    host: &str,
    port: u16,
    name: &str,
) -> anyhow::Result<Server> {
    let config_path = dir.join(format!("agentsmith-{name}.yml"));
    std::fs::write(&config_path, config).context("writing the bench config")?;
    let mut command = Command::new(agentsmith);
    command
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "warn");
    let child = ChildGuard::spawn(
        "agentsmith serve",
        command,
        &dir.join(format!("{name}-serve.log")),
    )?;
    let server = Server {
        host: host.to_string(),
        port,
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut server = server;
    loop {
        server.child.check_alive()?;
        if matches!(server.request("GET", "/ready", "").await, Ok((200, _))) {
            return Ok(server);
        }
        if Instant::now() > deadline {
            bail!(
                "agentsmith serve did not become ready; log:\n{}",
                server.child.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn measure(
    redis: &BenchRedis,
    cfg: &Config,
    dir: &Path,
    installation: &str,
) -> anyhow::Result<Outcome> {
    let host = bridge_gateway()?;
    let port = free_port()?;
    let config = format!(
        "server:\n  bind: \"{host}:{port}\"\n  shutdown_grace_secs: 2\n  installation: \"{installation}\"\n\
redis:\n  url: {url}\n  prefix: \"bench-{tag}-docker:\"\n\
queue:\n  max_concurrent_jobs: {jobs}\n\
spawner:\n  type: docker\n  grace_secs: 2\n  reconcile_secs: 5\n  docker:\n    pull_policy: Never\n    ttl_after_finished_secs: 10\n\
agents:\n  hello:\n    image: \"{IMAGE}\"\n    command: [\"sh\", \"-c\", \"{SCRIPT}\"]\n    timeout_secs: 120\n\
api:\n  tokens: [\"{TOKEN}\"]\n\
log:\n  format: json\n",
        url = serde_json::to_string(&redis.url)?,
        tag = cfg.tag,
        jobs = cfg.jobs.max(1),
    );
    let mut server = start_server(&cfg.agentsmith, &config, dir, &host, port, "docker").await?;

    // One of each first, so neither side pays for a cold engine in its figures.
    eprintln!("bench: docker: warm-up (one job, one docker run; not counted)");
    let warm = server.submit("warm-up").await?;
    server.wait_all(&[warm]).await?;
    docker_run_once(false).await?;

    let n = cfg.jobs;
    let mut outcome = Outcome {
        jobs: n,
        ..Outcome::default()
    };
    eprintln!("bench: docker: {n} jobs one after another");
    let mut sequential = Vec::new();
    for i in 0..n {
        let id = server.submit(&format!("sequential {i}")).await?;
        sequential.extend(server.wait_all(&[id]).await?);
    }
    (outcome.seq_running, outcome.seq_succeeded) = latencies(&sequential)?;

    eprintln!("bench: docker: {n} docker runs one after another, then {n} with the same options as agentsmith's");
    for _ in 0..n {
        outcome.seq_docker.ms.push(docker_run_once(false).await?);
    }
    for _ in 0..n {
        outcome
            .seq_docker_same
            .ms
            .push(docker_run_once(true).await?);
    }

    eprintln!("bench: docker: {n} jobs at once");
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(server.submit(&format!("concurrent {i}")).await?);
    }
    let concurrent = server.wait_all(&ids).await?;
    outcome.conc_wall_agentsmith = started.elapsed();
    (outcome.conc_running, outcome.conc_succeeded) = latencies(&concurrent)?;

    eprintln!("bench: docker: {n} docker runs at once");
    let started = Instant::now();
    let runs: Vec<_> = (0..n)
        .map(|_| tokio::spawn(docker_run_once(false)))
        .collect();
    for run in runs {
        outcome
            .conc_docker
            .ms
            .push(run.await.context("a docker run task failed")??);
    }
    outcome.conc_wall_docker = started.elapsed();

    server.child.stop(Duration::from_secs(5)).await;
    Ok(outcome)
}

/// The phase's Markdown table.
pub fn render(outcome: &Outcome) -> String {
    let mut out = latency_table(
        "Docker spawner",
        outcome.jobs,
        &[
            ("sequential: submitted → running", &outcome.seq_running),
            ("sequential: submitted → succeeded", &outcome.seq_succeeded),
            ("sequential: `docker run --rm`", &outcome.seq_docker),
            (
                "sequential: `docker run --rm`, agentsmith's options",
                &outcome.seq_docker_same,
            ),
            ("concurrent: submitted → running", &outcome.conc_running),
            ("concurrent: submitted → succeeded", &outcome.conc_succeeded),
            ("concurrent: `docker run --rm`", &outcome.conc_docker),
        ],
    );
    out.push_str(&format!(
        "\nConcurrent wall time: agentsmith {:.2} s, docker run {:.2} s.\n\n",
        outcome.conc_wall_agentsmith.as_secs_f64(),
        outcome.conc_wall_docker.as_secs_f64()
    ));
    out.push_str(&verdicts(
        "`docker run`",
        "at or below",
        1.0,
        &[
            ("sequential", &outcome.seq_succeeded, &outcome.seq_docker),
            ("concurrent", &outcome.conc_succeeded, &outcome.conc_docker),
        ],
    ));
    out
}

/// A Markdown table of latency series (median, p90, max).
pub(crate) fn latency_table(title: &str, jobs: usize, rows: &[(&str, &Series)]) -> String {
    let mut out = format!(
        "\n## {title}: spawn latency ({jobs} jobs per series, agent `{SCRIPT}`)\n\n\
         | series | median | p90 | max |\n|---|---|---|---|\n"
    );
    for (label, series) in rows {
        out.push_str(&format!(
            "| {label} | {:.0} ms | {:.0} ms | {:.0} ms |\n",
            series.median(),
            series.p90(),
            series.max()
        ));
    }
    out
}

/// One PASS/MISS line per comparison: ours within `factor` of the baseline's median.
pub(crate) fn verdicts(
    baseline: &str,
    target: &str,
    factor: f64,
    rows: &[(&str, &Series, &Series)],
) -> String {
    let mut out = String::new();
    for (what, ours, theirs) in rows {
        let verdict = if ours.median() <= theirs.median() * factor {
            "PASS"
        } else {
            "MISS"
        };
        out.push_str(&format!(
            "- {what}: submitted → succeeded median {:.0} ms vs {baseline} median {:.0} ms (target: {target}): **{verdict}**\n",
            ours.median(),
            theirs.median()
        ));
    }
    out
}
