//! The command line: `chaos [FLAGS]` is the chaos run (the flags of [`RunArgs`]);
//! `chaos traffic` and `chaos judge` are the Helm chart live test's traffic and judge
//! ([`TrafficArgs`], [`JudgeArgs`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    about = "Chaos harness: faults while jobs flow, then a verdict",
    // `chaos --jobs 300 traffic` is a mistake, not a run with extra words.
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A subcommand; without one, the chaos run.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The chaos run's flags.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands beside the chaos run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// GET /ready and POST /v1/jobs against a dispatcher until SIGTERM, SIGINT or
    /// --max-secs; writes what happened as JSON to --out.
    Traffic(TrafficArgs),
    /// Polls every job a traffic report acknowledged until all have ended; prints what
    /// it found as JSON.
    Judge(JudgeArgs),
}

/// Where the agents of a run are spawned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SpawnerKind {
    /// `agent-runner` processes on this machine.
    Process,
    /// One container of `--image` per attempt on the local Docker engine.
    Docker,
}

/// The Redis of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedisKind {
    /// One private redis-server, SIGKILLed and restarted once.
    Single,
    /// A primary, a replica and three sentinels; the primary is SIGKILLed while jobs
    /// flow, the replicas follow the one the sentinels promote.
    Sentinel,
    /// A cluster of three primaries with a replica each; the primary serving the queue's
    /// slot is SIGKILLed while jobs flow, the replicas follow the one the cluster promotes.
    Cluster,
}

/// The chaos run's flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The dispatcher's spawner: agents as local processes, or in Docker containers.
    #[arg(long, value_enum, default_value_t = SpawnerKind::Process)]
    pub spawner: SpawnerKind,
    /// The Redis: one server, a primary and a replica behind three sentinels, or a
    /// cluster of three primaries with a replica each.
    #[arg(long, value_enum, default_value_t = RedisKind::Single)]
    pub redis: RedisKind,
    /// With `--redis sentinel|cluster`: `redis.min_replicas_acked` of the replicas. 1: a job is
    /// acknowledged once the replica has it, and none may be lost; 0: jobs acknowledged
    /// just before a primary dies may be lost (counted and reported, not a broken promise).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=1))]
    pub min_replicas_acked: u32,
    /// With `--redis sentinel|cluster`: how many times the primary of the moment is killed.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub failovers: u32,
    /// The agent image of `--spawner docker` (built by `scripts/build-agent-image`).
    #[arg(long, default_value = "agentsmith-agent:test")]
    pub image: String,
    /// Jobs to submit [default: 1000; 100 with `--spawner docker`; 200 with `--redis
    /// sentinel|cluster`].
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Seconds of load and faults [default: 300; 60 with `--spawner docker` or `--redis
    /// sentinel|cluster`].
    #[arg(long)]
    pub duration: Option<u64>,
    /// Upper bound of the drain, in seconds.
    #[arg(long, default_value_t = 120)]
    pub drain: u64,
    /// Directory holding `agentsmith` and `agent-runner` (default: next to this binary).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Keep the temp dir (logs, RUNS file, Redis AOF) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
    /// Redis's AOF fsync policy: `always` (nothing acknowledged may be lost) or `everysec`
    /// (jobs acknowledged in the last second before the Redis crash may be lost: they are
    /// counted and reported, not a broken promise).
    #[arg(long, default_value = "always", value_parser = ["always", "everysec"])]
    pub appendfsync: String,
}

impl RunArgs {
    /// Jobs to submit: as given, else the variant's default (containers are slower to
    /// start than processes on a 2-core machine; the sentinel and cluster variants are
    /// about their few failovers, not volume).
    pub fn jobs(&self) -> usize {
        self.jobs.unwrap_or(match (self.spawner, self.redis) {
            (SpawnerKind::Docker, _) => 100,
            (SpawnerKind::Process, RedisKind::Sentinel | RedisKind::Cluster) => 200,
            (SpawnerKind::Process, RedisKind::Single) => 1000,
        })
    }

    /// Seconds of load and faults: as given, else the variant's default.
    pub fn duration(&self) -> u64 {
        self.duration.unwrap_or(match (self.spawner, self.redis) {
            (SpawnerKind::Process, RedisKind::Single) => 300,
            _ => 60,
        })
    }
}

/// The dispatcher `traffic` and `judge` talk to.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The dispatcher's base URL (`http://host:port`).
    #[arg(long)]
    pub url: String,
    /// The API token, sent as `Authorization: Bearer TOKEN`.
    #[arg(long)]
    pub token: String,
}

/// `chaos traffic`.
#[derive(Debug, Clone, Args)]
pub struct TrafficArgs {
    /// Where to send it.
    #[command(flatten)]
    pub target: Target,
    /// The agent of the submitted jobs.
    #[arg(long, default_value = "echo")]
    pub agent: String,
    /// The submitted jobs' task is `<label> #<n>`.
    #[arg(long, default_value = "chaos traffic")]
    pub label: String,
    /// Each loop starts one request every this many milliseconds.
    #[arg(long, default_value_t = 250)]
    pub interval_ms: u64,
    /// Stop after this many seconds if no SIGTERM or SIGINT came first.
    #[arg(long, default_value_t = 240)]
    pub max_secs: u64,
    /// The report (JSON) written when the traffic stops.
    #[arg(long)]
    pub out: PathBuf,
}

impl TrafficArgs {
    /// The time between the starts of two requests of one loop.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

/// `chaos judge`.
#[derive(Debug, Clone, Args)]
pub struct JudgeArgs {
    /// Where the jobs are.
    #[command(flatten)]
    pub target: Target,
    /// The report `chaos traffic` wrote.
    #[arg(long)]
    pub report: PathBuf,
    /// Give up on jobs still unfinished after this many seconds [default: 120 + 1.5 s per
    /// acknowledged job].
    #[arg(long)]
    pub limit_secs: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("chaos").chain(args.iter().copied()))
    }

    #[test]
    fn flags_alone_are_the_chaos_run() {
        let cli = parse(&["--jobs", "300", "--duration", "100"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!((cli.run.jobs(), cli.run.duration()), (300, 100));

        let cli = parse(&["--spawner", "docker", "--image", "x:y"]).unwrap();
        assert_eq!(cli.run.spawner, SpawnerKind::Docker);
        assert_eq!(cli.run.image, "x:y");
        assert_eq!((cli.run.jobs(), cli.run.duration()), (100, 60));
        assert_eq!(cli.run.redis, RedisKind::Single);
    }

    #[test]
    fn the_failover_variants_wait_for_one_replica_and_fail_over_twice_by_default() {
        for (name, kind) in [
            ("sentinel", RedisKind::Sentinel),
            ("cluster", RedisKind::Cluster),
        ] {
            let cli = parse(&["--redis", name]).unwrap();
            assert_eq!(cli.run.redis, kind);
            assert_eq!((cli.run.min_replicas_acked, cli.run.failovers), (1, 2));
            assert_eq!((cli.run.jobs(), cli.run.duration()), (200, 60));
            // One replica: waiting for two would refuse every write.
            assert!(parse(&["--redis", name, "--min-replicas-acked", "2"]).is_err());
            let cli = parse(&["--redis", name, "--min-replicas-acked", "0"]).unwrap();
            assert_eq!(cli.run.min_replicas_acked, 0);
        }
    }

    #[test]
    fn traffic_takes_the_live_tests_flags_with_their_defaults() {
        let cli = parse(&[
            "traffic",
            "--url",
            "http://h:1",
            "--token",
            "t",
            "--out",
            "r.json",
        ])
        .unwrap();
        let Some(Command::Traffic(args)) = cli.command else {
            panic!("not traffic: {cli:?}");
        };
        assert_eq!(args.target.url, "http://h:1");
        assert_eq!(args.agent, "echo");
        assert_eq!(args.interval(), Duration::from_millis(250));
        assert_eq!(args.max_secs, 240);
    }

    #[test]
    fn judge_takes_a_report_and_an_optional_limit() {
        let cli = parse(&[
            "judge",
            "--url",
            "http://h:1",
            "--token",
            "t",
            "--report",
            "r.json",
            "--limit-secs",
            "30",
        ])
        .unwrap();
        let Some(Command::Judge(args)) = cli.command else {
            panic!("not judge: {cli:?}");
        };
        assert_eq!(args.limit_secs, Some(30.0));
    }

    #[test]
    fn run_flags_do_not_mix_with_a_subcommand() {
        assert!(
            parse(&["--jobs", "3", "judge", "--url", "u", "--token", "t", "--report", "r"])
                .is_err()
        );
    }
}
