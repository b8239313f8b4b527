//! The agentsmith benchmark harness; see bench/README.md.
//!
//! `bench` measures, in one run: lifecycle throughput of the queue (in-process dispatcher,
//! no-op spawner, simulated runners), `POST /v1/jobs` throughput of the real
//! `agentsmith serve` binary against an axum hello-world, the server's memory, and signed
//! Slack slash commands against an in-process dispatcher beside an in-process hello-world
//! (one load generator for both), and BullMQ's add and process rates and Redis CPU per job
//! in a `redis-server` of its own, for the ratios against it. It starts its own
//! `redis-server`, and prints a table of measured figures against targets.
//! `bench hello --port N` is the hello-world server it compares with; `bench printer` is
//! the agent of `--only streams` (followers of one busy job's events). `--only lists`
//! measures filtered job lists with 100,000 jobs stored. `--only fleet` runs a fleet of
//! simulated runners against two dispatcher replicas (issue 17).

mod announcing_spawner;
mod api;
mod bullmq;
mod docker;
mod fleet;
mod histogram;
mod kubernetes;
mod lifecycle;
mod lists;
mod redis_info;
mod report;
mod runtime;
mod slack;
mod sse;
mod streams;
mod sys;
mod wrk;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};

use crate::redis_info::BenchRedis;
use crate::sys::TempDir;

/// Benchmarks of agentsmith: lifecycle throughput, API throughput, memory.
#[derive(Debug, Parser)]
#[command(name = "bench", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Serve an axum hello-world (`GET /` → "hello") on 127.0.0.1:PORT.
    Hello {
        /// The port.
        #[arg(long)]
        port: u16,
    },
    /// Print RATE lines a second for SECONDS seconds once GATE exists, each
    /// `<n> <microseconds since the epoch>` (the agent of `--only streams`).
    Printer {
        /// Lines a second.
        #[arg(long)]
        rate: u32,
        /// Seconds.
        #[arg(long)]
        seconds: u64,
        /// A file whose appearance starts the printing.
        #[arg(long)]
        gate: PathBuf,
    },
}

/// Which parts to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Only {
    /// Everything of the table: lifecycle, BullMQ, API, Slack.
    All,
    /// Lifecycle throughput.
    Lifecycle,
    /// BullMQ: its add rate (p50/p99), its process rate and its Redis CPU per job, in a
    /// redis-server of its own (installs BullMQ into the npm cache first when needed).
    Bullmq,
    /// API throughput and RSS.
    Api,
    /// Signed Slack slash commands per second and their ack latency, beside a hello-world.
    Slack,
    /// Docker spawner spawn latency beside `docker run` (needs a Docker engine; not part
    /// of `all`).
    Docker,
    /// Kubernetes spawner spawn latency beside `kubectl create` (needs a cluster whose
    /// nodes use this machine's Docker engine, e.g. scripts/k8s-testenv; not part of `all`).
    Kubernetes,
    /// Followers of one busy job's events: server RSS, Redis clients, line latency, lagged
    /// drops (not part of `all`).
    Streams,
    /// Filtered `GET /v1/jobs` latency with `--list-jobs` jobs stored (not part of `all`).
    Lists,
    /// A fleet of simulated runners against two dispatcher replicas on one Redis, with SSE
    /// followers: line latency, false lease expiries, CPU per 1,000 runners, then the
    /// largest fleet meeting the latency target (not part of `all`).
    Fleet,
}

/// Options of a run.
#[derive(Debug, Clone, clap::Args)]
struct Opts {
    /// Jobs pushed through the lifecycle.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent submitting tasks (lifecycle).
    #[arg(long, default_value_t = 64)]
    submitters: usize,
    /// Concurrent simulated runners reporting (lifecycle).
    #[arg(long, default_value_t = 64)]
    runners: usize,
    /// queue.claim_batch of the in-process dispatcher.
    #[arg(long, default_value_t = 256)]
    claim_batch: usize,
    /// wrk threads (and the slack phase's load-generator threads).
    #[arg(long, default_value_t = 2)]
    wrk_threads: usize,
    /// wrk connections (and the slack phase's).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Use this Redis instead of starting a private redis-server (keys get a random
    /// prefix and are deleted after; its CPU figures then include other clients).
    #[arg(long)]
    redis_url: Option<String>,
    /// Directory holding the agentsmith and agent-runner binaries (default: next to
    /// this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Do not run `cargo build` for agentsmith and agent-runner first.
    #[arg(long)]
    no_build: bool,
    /// RUST_LOG of the agentsmith server (its log goes to a file).
    #[arg(long, default_value = "info")]
    server_log: String,
    /// Jobs per series of the docker and kubernetes phases (sequential, concurrent).
    #[arg(long, default_value_t = 20)]
    docker_jobs: usize,
    /// Kubeconfig of the cluster for `--only kubernetes` (default: $KUBECONFIG).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// kubectl for `--only kubernetes` (default: $K8S_KUBECTL, else kubectl on PATH).
    #[arg(long, env = "K8S_KUBECTL", default_value = "kubectl")]
    kubectl: PathBuf,
    /// Address of this machine that pods reach (default: the Docker bridge's gateway).
    #[arg(long)]
    callback_host: Option<String>,
    /// Followers of the job (`--only streams`).
    #[arg(long, default_value_t = 2_000)]
    followers: usize,
    /// Share of the followers that read slowly (`--only streams`).
    #[arg(long, default_value_t = 0.25)]
    slow_share: f64,
    /// Bytes a second a slow follower reads (`--only streams`); 0: nothing until the job
    /// has ended, then everything (resuming after `lagged`).
    #[arg(long, default_value_t = 16 * 1024)]
    slow_rate: usize,
    /// Lines a second the followed job prints (`--only streams`).
    #[arg(long, default_value_t = 1_000)]
    rate: u32,
    /// Seconds the followed job prints (`--only streams`).
    #[arg(long, default_value_t = 20)]
    print_secs: u64,
    /// Jobs stored before the lists are measured (`--only lists`; at least 10,000).
    #[arg(long, default_value_t = 100_000)]
    list_jobs: usize,
    /// Measured requests per list query (`--only lists`).
    #[arg(long, default_value_t = 200)]
    list_requests: usize,
    /// Simulated runners of the first fleet (`--only fleet`).
    #[arg(long, default_value_t = 5_000)]
    fleet_runners: usize,
    /// Fleet sizes of the ramp after the first, comma-separated (`--only fleet`): those
    /// above `--fleet-runners` while they meet the target when it did, else those below.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500,1000,1500,2000,2500,3000,4000,6000,8000"
    )]
    fleet_sizes: Vec<usize>,
    /// SSE followers of the fleet's jobs (`--only fleet`).
    #[arg(long, default_value_t = 200)]
    fleet_followers: usize,
    /// Lines a second each simulated runner prints (`--only fleet`).
    #[arg(long, default_value_t = 2)]
    fleet_lines: u32,
    /// Measured seconds of each fleet size, after its ramp-up (`--only fleet`).
    #[arg(long, default_value_t = 20)]
    fleet_duration: u64,
    /// Worker threads of each dispatcher replica's runtime, and of the simulated fleet's
    /// (`--only fleet`).
    #[arg(long, default_value_t = 2)]
    fleet_workers: usize,
    /// Concurrency of BullMQ's worker (the BullMQ phase).
    #[arg(long, default_value_t = 100)]
    bullmq_concurrency: usize,
    /// BullMQ `Queue.add` calls in flight (the BullMQ phase).
    #[arg(long, default_value_t = 50)]
    bullmq_in_flight: usize,
    /// Run only these parts, comma-separated (e.g. `--only lifecycle,bullmq` for the
    /// ratio rows of the two); docker, kubernetes, streams and lists run alone.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    only: Vec<Only>,
}

impl Opts {
    /// Whether the table's part `part` runs.
    fn runs(&self, part: Only) -> bool {
        self.only
            .iter()
            .any(|only| *only == Only::All || *only == part)
    }

    /// The separate measurement asked for (it runs alone), if any.
    fn alone(&self) -> anyhow::Result<Option<Only>> {
        let separate = |only: &Only| {
            matches!(
                only,
                Only::Docker | Only::Kubernetes | Only::Streams | Only::Lists | Only::Fleet
            )
        };
        match self.only.as_slice() {
            [one] if separate(one) => Ok(Some(*one)),
            many if many.iter().any(separate) => {
                bail!("--only docker, kubernetes, streams, lists and fleet run alone")
            }
            _ => Ok(None),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Sub::Hello { port }) => {
            return match api::hello(port) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bench hello: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Sub::Printer {
            rate,
            seconds,
            gate,
        }) => {
            return match streams::printer(rate, seconds, &gate) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bench printer: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: cannot build the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(cli.opts) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Everything the run started (children, temp dirs) was dropped with its future.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(opts: Opts) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "bench: WARNING: this is a debug build; run `cargo run --release -p bench` for meaningful figures"
        );
    }
    if opts.jobs == 0 || opts.duration == 0 {
        bail!("--jobs and --duration must be greater than 0");
    }
    let bin_dir = match &opts.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .context("locating the bench binary")?
            .parent()
            .context("the bench binary has no directory")?
            .to_path_buf(),
    };
    let alone = opts.alone()?;
    // The API, docker, kubernetes and streams phases run the agentsmith binary; the others
    // build the dispatcher in-process.
    let runs_binary = match alone {
        Some(only) => only != Only::Lists && only != Only::Fleet,
        None => opts.runs(Only::Api),
    };
    if runs_binary && !opts.no_build && opts.bin_dir.is_none() {
        build_binaries()?;
    }

    let tag = queue::new_job_id();
    let dir = TempDir::new(&tag)?;
    let redis = match &opts.redis_url {
        Some(url) => BenchRedis::external(url).await?,
        None => BenchRedis::start_private(dir.path()).await?,
    };
    let machine = report::Machine::read(&redis).await;
    eprintln!(
        "bench: {} CPUs ({}), redis {} at {}{}",
        machine.cpus,
        machine.cpu_model,
        machine.redis_version,
        redis.url,
        if redis.private { " (private)" } else { "" }
    );

    if alone == Some(Only::Docker) {
        let cfg = docker::Config {
            agentsmith: bin_dir.join("agentsmith"),
            runner: bin_dir.join("agent-runner"),
            jobs: opts.docker_jobs.max(1),
            tag: tag.clone(),
        };
        let outcome = docker::run(&redis, &cfg, dir.path()).await;
        if !redis.private {
            let _ = redis.clean(&format!("bench-{tag}-docker:")).await;
        }
        println!("{}", docker::render(&outcome.context("docker phase")?));
        return Ok(());
    }
    if alone == Some(Only::Kubernetes) {
        let cfg = kubernetes::Config {
            agentsmith: bin_dir.join("agentsmith"),
            runner: bin_dir.join("agent-runner"),
            kubeconfig: opts
                .kubeconfig
                .clone()
                .context("--only kubernetes needs --kubeconfig or KUBECONFIG (scripts/k8s-testenv/start.sh writes one)")?,
            kubectl: opts.kubectl.clone(),
            callback_host: match &opts.callback_host {
                Some(host) => host.clone(),
                None => docker::bridge_gateway()?,
            },
            jobs: opts.docker_jobs.max(1),
            tag: tag.clone(),
        };
        let outcome = kubernetes::run(&redis, &cfg, dir.path()).await;
        println!(
            "{}",
            kubernetes::render(&outcome.context("kubernetes phase")?)
        );
        return Ok(());
    }
    if alone == Some(Only::Lists) {
        let outcome = lists_phase(&opts, &redis, &tag).await?;
        println!("{}", lists::render(&outcome));
        return Ok(());
    }
    if alone == Some(Only::Fleet) {
        let outcome = fleet_phase(&opts, &redis, &tag).await?;
        println!("{}", fleet::render(&outcome));
        return Ok(());
    }
    if alone == Some(Only::Streams) {
        let outcome = streams_phase(&opts, &redis, &tag, &bin_dir, dir.path()).await?;
        println!("{}", streams::render(&outcome));
        return Ok(());
    }
    let result = phases(&opts, &redis, &dir, &tag, &bin_dir).await;
    // Leave nothing in a shared Redis, whatever happened.
    if !redis.private {
        for prefix in [
            format!("bench-{tag}:"),
            format!("bench-{tag}-api:"),
            format!("bench-{tag}-slack:"),
        ] {
            if let Err(e) = redis.clean(&prefix).await {
                eprintln!("bench: cleaning {prefix}* failed: {e:#}");
            }
        }
    }
    let outcomes = result?;
    println!(
        "{}",
        report::render(
            &machine,
            &opts_summary(&opts),
            outcomes.lifecycle.as_ref(),
            outcomes.bullmq.as_ref(),
            outcomes.api.as_ref(),
            outcomes.slack.as_ref()
        )
    );
    Ok(())
}

/// `--only lists`: filtered job lists with many jobs stored (see `lists.rs`).
async fn lists_phase(opts: &Opts, redis: &BenchRedis, tag: &str) -> anyhow::Result<lists::Outcome> {
    if opts.list_jobs < lists::MIN_JOBS || opts.list_requests == 0 {
        bail!(
            "--list-jobs must be at least {} and --list-requests greater than 0",
            lists::MIN_JOBS
        );
    }
    let cfg = lists::Config {
        jobs: opts.list_jobs,
        requests: opts.list_requests,
        fillers: opts.submitters.max(1),
        prefix: format!("bench-{tag}-lists:"),
    };
    eprintln!(
        "bench: lists: storing {} jobs ({} at a time), then {} requests per query",
        cfg.jobs, cfg.fillers, cfg.requests
    );
    let outcome = lists::run(redis, &cfg).await;
    if !redis.private {
        let _ = redis.clean(&cfg.prefix).await;
    }
    outcome.context("lists phase")
}

/// `--only fleet`: simulated runners against two replicas (see `fleet/mod.rs`).
async fn fleet_phase(opts: &Opts, redis: &BenchRedis, tag: &str) -> anyhow::Result<fleet::Outcome> {
    if opts.fleet_runners == 0 || opts.fleet_duration == 0 || opts.fleet_followers == 0 {
        bail!("--fleet-runners, --fleet-duration and --fleet-followers must be greater than 0");
    }
    let cfg = fleet::Config {
        runners: opts.fleet_runners,
        sizes: opts.fleet_sizes.clone(),
        followers: opts.fleet_followers,
        lines_per_sec: opts.fleet_lines,
        duration: std::time::Duration::from_secs(opts.fleet_duration),
        workers: opts.fleet_workers.max(1),
        prefix: format!("bench-{tag}-fleet-"),
    };
    let outcome = fleet::run(redis, &cfg).await;
    if !redis.private {
        let _ = redis.clean(&cfg.prefix).await;
    }
    outcome.context("fleet phase")
}

/// `--only streams`: followers of one busy job (see `streams.rs`).
async fn streams_phase(
    opts: &Opts,
    redis: &BenchRedis,
    tag: &str,
    bin_dir: &std::path::Path,
    dir: &std::path::Path,
) -> anyhow::Result<streams::Outcome> {
    let cfg = streams::Config {
        agentsmith: bin_dir.join("agentsmith"),
        runner: bin_dir.join("agent-runner"),
        followers: opts.followers.max(1),
        slow_share: opts.slow_share.clamp(0.0, 1.0),
        slow_rate: opts.slow_rate,
        rate: opts.rate.max(1),
        seconds: opts.print_secs.max(1),
        prefix: format!("bench-{tag}-streams:"),
    };
    eprintln!(
        "bench: streams: {} followers ({:.0} % slow), a job printing {} lines/s for {} s",
        cfg.followers,
        cfg.slow_share * 100.0,
        cfg.rate,
        cfg.seconds
    );
    let outcome = streams::run(redis, &cfg, dir).await;
    if !redis.private {
        let _ = redis.clean(&cfg.prefix).await;
    }
    outcome.context("streams phase")
}

/// What the phases of a run measured (`None`: not run).
struct Outcomes {
    lifecycle: Option<lifecycle::Outcome>,
    bullmq: Option<bullmq::Outcome>,
    api: Option<api::Outcome>,
    slack: Option<slack::Outcome>,
}

/// The phases of the table, in an order that keeps BullMQ right beside the lifecycle
/// phase: lifecycle, BullMQ, API, Slack.
async fn phases(
    opts: &Opts,
    redis: &BenchRedis,
    dir: &TempDir,
    tag: &str,
    bin_dir: &std::path::Path,
) -> anyhow::Result<Outcomes> {
    // Installed (or found in the cache) first, so a missing node or npm fails the run
    // before anything is measured.
    let bullmq_install = if opts.runs(Only::Bullmq) {
        Some(bullmq::install().await.context("installing BullMQ")?)
    } else {
        None
    };
    let mut lifecycle_outcome = None;
    if opts.runs(Only::Lifecycle) {
        let cfg = lifecycle::Config {
            jobs: opts.jobs,
            submitters: opts.submitters,
            runners: opts.runners,
            claim_batch: opts.claim_batch,
            prefix: format!("bench-{tag}:"),
        };
        eprintln!(
            "bench: lifecycle: {} jobs, {} submitters, {} runners, claim_batch {}",
            cfg.jobs, cfg.submitters, cfg.runners, cfg.claim_batch
        );
        let outcome = lifecycle::run(redis, &cfg)
            .await
            .context("lifecycle phase")?;
        eprintln!(
            "bench: lifecycle: {} of {} succeeded in {:.2} s ({:.0} jobs/s)",
            outcome.succeeded,
            outcome.jobs,
            outcome.wall.as_secs_f64(),
            outcome.jobs_per_sec()
        );
        redis
            .clean(&cfg.prefix)
            .await
            .context("cleaning up after the lifecycle phase")?;
        lifecycle_outcome = Some(outcome);
    }
    let mut bullmq_outcome = None;
    if let Some(install) = &bullmq_install {
        let cfg = bullmq::Config {
            jobs: opts.jobs,
            concurrency: opts.bullmq_concurrency,
            in_flight: opts.bullmq_in_flight,
        };
        eprintln!(
            "bench: bullmq: adding {} jobs ({} adds in flight), then a worker of concurrency {} (bullmq {}, node {}, its own redis-server)",
            cfg.jobs,
            cfg.in_flight,
            cfg.concurrency,
            install.version,
            install.node
        );
        let outcome = bullmq::run(install, &cfg, &dir.path().join("bullmq"))
            .await
            .context("BullMQ phase")?;
        eprintln!(
            "bench: bullmq: {:.0} adds/s (p99 {:.2} ms), {:.0} jobs/s processed, {:.0} µs of Redis CPU per job",
            outcome.add.rate(),
            outcome.add.p99.as_secs_f64() * 1e3,
            outcome.process.rate(),
            outcome.redis_cpu_us_per_job()
        );
        bullmq_outcome = Some(outcome);
    }
    let mut api_outcome = None;
    if opts.runs(Only::Api) {
        let cfg = api::Config {
            agentsmith: bin_dir.join("agentsmith"),
            runner: bin_dir.join("agent-runner"),
            load: wrk::Load {
                threads: opts.wrk_threads,
                connections: opts.connections,
                duration: opts.duration,
            },
            server_log: opts.server_log.clone(),
            prefix: format!("bench-{tag}-api:"),
        };
        eprintln!(
            "bench: api: wrk -t{} -c{} -d{}s against agentsmith serve and a hello-world",
            opts.wrk_threads, opts.connections, opts.duration
        );
        let outcome = api::run(redis, &cfg, dir.path())
            .await
            .context("API phase")?;
        redis
            .clean(&cfg.prefix)
            .await
            .context("cleaning up after the API phase")?;
        api_outcome = Some(outcome);
    }
    let mut slack_outcome = None;
    if opts.runs(Only::Slack) {
        let cfg = slack::Config {
            connections: opts.connections,
            threads: opts.wrk_threads,
            duration: std::time::Duration::from_secs(opts.duration),
            prefix: format!("bench-{tag}-slack:"),
            tag: tag.to_string(),
        };
        eprintln!(
            "bench: slack: {} connections, {} load threads, {} s warm-up + {} s, against the Slack endpoint and a hello-world",
            cfg.connections,
            cfg.threads,
            slack::WARMUP.as_secs(),
            opts.duration
        );
        let outcome = slack::run(redis, &cfg).await.context("slack phase")?;
        redis
            .clean(&cfg.prefix)
            .await
            .context("cleaning up after the slack phase")?;
        slack_outcome = Some(outcome);
    }
    Ok(Outcomes {
        lifecycle: lifecycle_outcome,
        bullmq: bullmq_outcome,
        api: api_outcome,
        slack: slack_outcome,
    })
}

fn opts_summary(opts: &Opts) -> String {
    format!(
        "--jobs {} --duration {} (submitters {}, runners {}, claim_batch {}, wrk -t{} -c{}; BullMQ worker concurrency {}, {} adds in flight)",
        opts.jobs,
        opts.duration,
        opts.submitters,
        opts.runners,
        opts.claim_batch,
        opts.wrk_threads,
        opts.connections,
        opts.bullmq_concurrency,
        opts.bullmq_in_flight
    )
}

/// Builds agentsmith and agent-runner with this binary's profile, so the API phase never
/// measures stale binaries.
fn build_binaries() -> anyhow::Result<()> {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the bench crate has no parent directory")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.current_dir(workspace).args([
        "build",
        "-p",
        "agentsmith",
        "-p",
        "agent-runner",
        "--bins",
    ]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    eprintln!("bench: building agentsmith and agent-runner ({command:?})");
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Opts {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .expect("valid arguments");
        cli.opts
    }

    #[test]
    fn the_default_run_includes_bullmq_beside_every_table_phase() {
        let all = opts(&[]);
        for part in [Only::Lifecycle, Only::Bullmq, Only::Api, Only::Slack] {
            assert!(all.runs(part), "{part:?}");
        }
        assert_eq!(all.alone().expect("no conflict"), None);
    }

    #[test]
    fn only_takes_several_table_phases_but_separate_measurements_alone() {
        let two = opts(&["--only", "lifecycle,bullmq"]);
        assert!(two.runs(Only::Lifecycle) && two.runs(Only::Bullmq));
        assert!(!two.runs(Only::Api) && !two.runs(Only::Slack));
        assert!(!opts(&["--only", "bullmq"]).runs(Only::Lifecycle));
        assert_eq!(
            opts(&["--only", "lists"]).alone().expect("alone"),
            Some(Only::Lists)
        );
        assert!(opts(&["--only", "lists,bullmq"]).alone().is_err());
        assert_eq!(
            opts(&["--only", "fleet"]).alone().expect("alone"),
            Some(Only::Fleet)
        );
    }
}
