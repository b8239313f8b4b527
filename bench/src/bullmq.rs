//! BullMQ beside agentsmith: the Node.js Redis job queue users compare against, measured in
//! the same run on the same machine.
//!
//! BullMQ is pinned in `bench/bullmq/package.json` and `package-lock.json` (compiled into
//! this binary) and installed with `npm ci --omit=dev` into a cache outside the clone,
//! `${XDG_CACHE_HOME:-$HOME/.cache}/agentsmith/bullmq-<version>/`, once. Then, against a
//! private `redis-server` of its own (the same flags as agentsmith's), `bench.mjs` runs
//! twice: `add` (`--jobs` jobs added with `Queue.add`, one per call, `--bullmq-in-flight`
//! calls in flight) and `process` (a `Worker` with a no-op processor and
//! `--bullmq-concurrency` takes them all). `INFO` is read before and after each run, as for
//! the agentsmith phases.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::redis_info::{BenchRedis, Delta};
use crate::sys::{machine_cpu_secs, own_cpu_secs, reaped_children_cpu_secs};

/// The npm package that pins BullMQ (one exact version).
const PACKAGE_JSON: &str = include_str!("../bullmq/package.json");
/// Its lock, so every installation gets the same dependency tree.
const PACKAGE_LOCK: &str = include_str!("../bullmq/package-lock.json");
/// The measuring script, written next to the installed `node_modules` (an ES module finds
/// `bullmq` from its own directory).
const SCRIPT: &str = include_str!("../bullmq/bench.mjs");
/// The file that says an installation finished: a copy of the lock it was made from.
const INSTALLED: &str = ".agentsmith-installed-lock.json";

/// How the phase is run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Jobs added, then processed.
    pub jobs: usize,
    /// The worker's `concurrency`.
    pub concurrency: usize,
    /// `Queue.add` calls in flight.
    pub in_flight: usize,
}

/// The BullMQ installation the phase runs.
#[derive(Debug, Clone)]
pub struct Install {
    /// The directory holding `node_modules` and `bench.mjs`.
    pub dir: PathBuf,
    /// BullMQ's version (from `package.json`).
    pub version: String,
    /// `node --version`.
    pub node: String,
}

/// What one run of `bench.mjs` measured.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Jobs added, or jobs completed.
    pub count: u64,
    /// The timed window (first add until the last returned; worker start until the last
    /// job completed).
    pub wall: Duration,
    /// Latency percentiles of the adds (zero for `process`).
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The slowest add.
    pub max: Duration,
    /// Jobs that failed (`process`).
    pub failed: u64,
    /// `Queue.getJobCounts()` after the timed window.
    pub counts: BTreeMap<String, u64>,
    /// What Redis did while node ran (its start-up and the count check included).
    pub redis: Delta,
    /// CPU seconds of the node process within the timed window.
    pub node_cpu_secs: f64,
    /// From starting node until it exited.
    pub lifetime: Duration,
    /// CPU seconds of node (its whole life) and of this process meanwhile.
    pub ours_cpu_secs: f64,
    /// CPU seconds the whole machine was busy while node ran.
    pub machine_busy_secs: f64,
    /// CPU seconds the hypervisor stole meanwhile.
    pub steal_secs: f64,
}

impl Run {
    /// Jobs per second within the timed window.
    pub fn rate(&self) -> f64 {
        self.count as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The share of the machine that neither Redis, node nor the bench used while node ran.
    pub fn other_share(&self, cpus: usize) -> f64 {
        let capacity = self.lifetime.as_secs_f64().max(1e-9) * cpus.max(1) as f64;
        (self.machine_busy_secs - self.redis.cpu_secs - self.ours_cpu_secs).max(0.0) / capacity
    }
}

/// What the phase measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// BullMQ and node versions.
    pub install: Install,
    /// Jobs.
    pub jobs: usize,
    /// The worker's concurrency.
    pub concurrency: usize,
    /// Adds in flight.
    pub in_flight: usize,
    /// `Queue.add`, one job per call.
    pub add: Run,
    /// The worker taking every job.
    pub process: Run,
    /// What BullMQ's own counts say is wrong (nothing when every job was added and then
    /// completed).
    pub problems: Vec<String>,
}

impl Outcome {
    /// Redis's cost of both runs together.
    pub fn redis(&self) -> Delta {
        self.add.redis.plus(&self.process.redis)
    }

    /// Redis CPU microseconds per job, add and process together.
    pub fn redis_cpu_us_per_job(&self) -> f64 {
        self.redis().cpu_secs * 1e6 / self.jobs.max(1) as f64
    }

    /// Redis commands per job (those run by scripts included), add and process together,
    /// the bench's `INFO` calls and BullMQ's own at connect left out.
    pub fn commands_per_job(&self) -> f64 {
        let redis = self.redis();
        redis.commands.saturating_sub(redis.calls_of("info")) as f64 / self.jobs.max(1) as f64
    }
}

/// BullMQ's pinned version, from `bench/bullmq/package.json`.
pub fn version() -> anyhow::Result<String> {
    let package: Value = serde_json::from_str(PACKAGE_JSON).context("bench/bullmq/package.json")?;
    let version = package["dependencies"]["bullmq"]
        .as_str()
        .context("bench/bullmq/package.json has no dependencies.bullmq")?;
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        bail!("bench/bullmq/package.json must pin bullmq to one exact version, not {version:?}");
    }
    Ok(version.to_string())
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/agentsmith/bullmq-<version>`.
fn cache_dir(version: &str) -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?,
        )
        .join(".cache"),
    };
    Ok(base.join("agentsmith").join(format!("bullmq-{version}")))
}

/// Whether `dir` holds a finished installation of this lock.
fn installed(dir: &Path) -> bool {
    dir.join("node_modules/bullmq/package.json").is_file()
        && std::fs::read_to_string(dir.join(INSTALLED)).is_ok_and(|lock| lock == PACKAGE_LOCK)
}

/// Installs BullMQ into the cache unless it is there already, and writes `bench.mjs` next
/// to it. The installation is made in a directory of its own and renamed into place once
/// `npm ci` succeeded, so an interrupted one is never taken for finished.
pub async fn install() -> anyhow::Result<Install> {
    let version = version()?;
    let node = tool_version("node").await?;
    let dir = cache_dir(&version)?;
    if !installed(&dir) {
        let npm = tool_version("npm").await?;
        let parent = dir.parent().context("the cache directory has no parent")?;
        let guard = Partial::create(
            parent.join(format!("bullmq-{version}.partial-{}", std::process::id())),
        )?;
        let partial = guard.path();
        std::fs::write(partial.join("package.json"), PACKAGE_JSON)?;
        std::fs::write(partial.join("package-lock.json"), PACKAGE_LOCK)?;
        eprintln!(
            "bench: bullmq: npm ci --omit=dev (bullmq {version}, npm {npm}) into {}",
            dir.display()
        );
        let output = tokio::process::Command::new("npm")
            .args(["ci", "--omit=dev", "--no-audit", "--no-fund"])
            .current_dir(partial)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .context("running npm ci (bench/run.sh installs npm when it is missing)")?;
        if !output.status.success() {
            bail!(
                "npm ci failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::fs::write(partial.join(INSTALLED), PACKAGE_LOCK)?;
        // A stale installation (same version, another lock) makes way; if another bench
        // finished the same installation meanwhile, its copy is as good as ours.
        if dir.exists() && !installed(&dir) {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing the stale {}", dir.display()))?;
        }
        if let Err(e) = std::fs::rename(partial, &dir) {
            if !installed(&dir) {
                return Err(e)
                    .with_context(|| format!("moving the installation to {}", dir.display()));
            }
        }
    }
    let script = dir.join("bench.mjs");
    if std::fs::read_to_string(&script).ok().as_deref() != Some(SCRIPT) {
        std::fs::write(&script, SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    }
    Ok(Install { dir, version, node })
}

/// An installation under way: removed when dropped unless it was renamed into place
/// (an error, an interrupt, a failed `npm ci` leave nothing half-made in the cache).
struct Partial(PathBuf);

impl Partial {
    fn create(path: PathBuf) -> anyhow::Result<Self> {
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `<tool> --version`, failing with a hint when the tool is missing.
async fn tool_version(tool: &str) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(tool)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| {
            format!(
                "running {tool} --version (is it installed? bench/run.sh installs nodejs and npm)"
            )
        })?;
    if !output.status.success() {
        bail!("{tool} --version failed ({})", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Runs the phase: a private `redis-server` in `dir`, then `add` and `process`.
pub async fn run(install: &Install, cfg: &Config, dir: &Path) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let redis = BenchRedis::start_private(dir)
        .await
        .context("starting BullMQ's redis-server")?;
    let port = redis.port().context("BullMQ's redis-server has no port")?;
    let add = node_run(install, &redis, port, "add", cfg.jobs, cfg.in_flight.max(1))
        .await
        .context("bench.mjs --phase add")?;
    // Let Redis finish anything left behind (the add run's connection closing).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let process = node_run(
        install,
        &redis,
        port,
        "process",
        cfg.jobs,
        cfg.concurrency.max(1),
    )
    .await
    .context("bench.mjs --phase process")?;

    let jobs = cfg.jobs as u64;
    let count = |run: &Run, name: &str| run.counts.get(name).copied().unwrap_or(0);
    let mut problems = Vec::new();
    if add.count != jobs || count(&add, "waiting") != jobs {
        problems.push(format!(
            "add: {} adds returned, {} jobs waiting (expected {jobs})",
            add.count,
            count(&add, "waiting")
        ));
    }
    if process.count != jobs || process.failed != 0 || count(&process, "completed") != jobs {
        problems.push(format!(
            "process: {} completed, {} failed, {} kept as completed (expected {jobs})",
            process.count,
            process.failed,
            count(&process, "completed")
        ));
    }
    let left: u64 = ["waiting", "active", "delayed", "prioritized", "failed"]
        .iter()
        .map(|name| count(&process, name))
        .sum();
    if left != 0 {
        problems.push(format!(
            "process: {left} jobs not completed: {:?}",
            process.counts
        ));
    }
    Ok(Outcome {
        install: install.clone(),
        jobs: cfg.jobs,
        concurrency: cfg.concurrency.max(1),
        in_flight: cfg.in_flight.max(1),
        add,
        process,
        problems,
    })
}

/// One run of `bench.mjs`, with Redis's `INFO` and the machine's CPU read around it. Node
/// is killed if the run is dropped (an error elsewhere, an interrupt) or takes too long.
async fn node_run(
    install: &Install,
    redis: &BenchRedis,
    port: u16,
    phase: &str,
    jobs: usize,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let limit = Duration::from_secs(120).max(Duration::from_millis(jobs as u64 * 5));
    let mut command = tokio::process::Command::new("node");
    command
        .arg(install.dir.join("bench.mjs"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--jobs")
        .arg(jobs.to_string())
        .arg("--concurrency")
        .arg(concurrency.to_string())
        .arg("--phase")
        .arg(phase)
        .current_dir(&install.dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);

    let before = redis.snapshot().await?;
    let machine_before = machine_cpu_secs();
    let ours_before = own_cpu_secs() + reaped_children_cpu_secs();
    let started = Instant::now();
    let output = tokio::time::timeout(limit, command.output())
        .await
        .with_context(|| format!("node did not finish within {limit:?}"))?
        .context("running node")?;
    let lifetime = started.elapsed();
    let ours_cpu_secs = own_cpu_secs() + reaped_children_cpu_secs() - ours_before;
    let machine_after = machine_cpu_secs();
    let after = redis.snapshot().await?;

    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "node failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(line)
        .with_context(|| format!("reading bench.mjs's report: {line:?}"))?;
    let mut run = parse_report(&report, phase)?;
    run.redis = before.delta(&after);
    run.lifetime = lifetime;
    run.ours_cpu_secs = ours_cpu_secs;
    run.machine_busy_secs = machine_after.0 - machine_before.0;
    run.steal_secs = machine_after.1 - machine_before.1;
    Ok(run)
}

/// The figures of `bench.mjs`'s JSON line.
fn parse_report(report: &Value, phase: &str) -> anyhow::Result<Run> {
    if report["phase"].as_str() != Some(phase) {
        bail!("bench.mjs reported phase {} for {phase}", report["phase"]);
    }
    let number = |name: &str| {
        report[name]
            .as_f64()
            .with_context(|| format!("bench.mjs's report has no number {name}: {report}"))
    };
    let millis = |name: &str| -> anyhow::Result<Duration> {
        Ok(match report.get(name) {
            Some(value) => Duration::from_secs_f64(
                value
                    .as_f64()
                    .with_context(|| format!("{name} is not a number"))?
                    .max(0.0)
                    / 1e3,
            ),
            None => Duration::ZERO,
        })
    };
    let counts = report["counts"]
        .as_object()
        .context("bench.mjs's report has no counts")?
        .iter()
        .map(|(name, n)| (name.clone(), n.as_u64().unwrap_or(0)))
        .collect();
    Ok(Run {
        count: number("count")? as u64,
        wall: Duration::from_secs_f64(number("seconds")?.max(0.0)),
        p50: millis("p50_ms")?,
        p99: millis("p99_ms")?,
        max: millis("max_ms")?,
        failed: report["failed"].as_u64().unwrap_or(0),
        counts,
        node_cpu_secs: number("cpu_secs")?,
        ..Run::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bullmq_is_pinned_to_one_exact_version_and_locked_to_it() {
        let version = version().expect("an exact version");
        let lock: Value = serde_json::from_str(PACKAGE_LOCK).expect("the lock is JSON");
        assert_eq!(
            lock["packages"]["node_modules/bullmq"]["version"].as_str(),
            Some(version.as_str()),
            "package-lock.json is stale: run `npm install --package-lock-only` in bench/bullmq"
        );
        assert_eq!(
            lock["packages"][""]["dependencies"]["bullmq"].as_str(),
            Some(version.as_str())
        );
    }

    #[test]
    fn an_add_report_is_read() {
        let report: Value = serde_json::from_str(
            r#"{"phase":"add","bullmq":"5.81.5","count":20000,"seconds":2.5,"rate":8000,"p50_ms":5.25,"p99_ms":27.5,"max_ms":49.0,"cpu_secs":1.6,"counts":{"active":0,"completed":0,"waiting":20000}}"#,
        )
        .expect("JSON");
        let run = parse_report(&report, "add").expect("parses");
        assert_eq!(run.count, 20_000);
        assert!((run.rate() - 8_000.0).abs() < 1e-6);
        assert_eq!(run.p50, Duration::from_micros(5_250));
        assert_eq!(run.p99, Duration::from_micros(27_500));
        assert_eq!(run.counts.get("waiting"), Some(&20_000));
        assert!(parse_report(&report, "process").is_err());
    }

    #[test]
    fn a_process_report_has_no_latencies() {
        let report: Value = serde_json::from_str(
            r#"{"phase":"process","bullmq":"5.81.5","count":100,"seconds":0.5,"rate":200,"completed":100,"failed":0,"cpu_secs":0.4,"counts":{"completed":100}}"#,
        )
        .expect("JSON");
        let run = parse_report(&report, "process").expect("parses");
        assert_eq!((run.count, run.failed), (100, 0));
        assert_eq!(run.p99, Duration::ZERO);
    }
}
