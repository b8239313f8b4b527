//! `chaos`: drives a private Redis and two `agentsmith serve` replicas with real agent
//! processes, injects faults (replica SIGKILLs, a SIGTERM rolling restart, runner SIGKILLs,
//! a Redis SIGKILL and restart) while jobs flow, then checks that every acknowledged job
//! reached exactly one end state. With `--spawner docker` the agents run in containers of
//! the local agent image instead; with `--redis sentinel` Redis is a primary, a replica and
//! three sentinels, with `--redis cluster` a cluster of three primaries with a replica each,
//! and the queue's primary is SIGKILLed while jobs flow (failovers) instead of the one
//! server's crash; everything else, the verdict included, is the same.
//! `chaos traffic` and `chaos judge` are the Helm chart live test's traffic and judge,
//! pointed at a dispatcher someone else runs. See chaos/README.md.
//!
//! | module | what |
//! |---|---|
//! | [`args`] | the command line: the run's flags, `traffic`, `judge` |
//! | [`run`] | the run phase by phase (start, load and faults, drain, verdict) |
//! | [`ctx`] | [`ctx::Ctx`]: what the phases share (the processes, the API client, the counters) |
//! | [`world`] | the processes the run owns: Redis, the replicas, runners and agents; the cleanup |
//! | [`config`] | each replica's settings file: the queue, the spawner, the four agent profiles |
//! | [`kind`] | the four kinds of job, the end each should reach, an acknowledged job |
//! | [`load`] | the jobs: submitting (retrying on the other replica), cancelling the sleepers |
//! | [`faults`] | replica SIGKILL/SIGSTOP/SIGTERM, runner (or container) kills, the Redis crash |
//! | [`failover`] | the sentinel and cluster variants: the primary SIGKILLed, the new one awaited, the old one back as replica |
//! | [`topology`] | what the failover needs of a Sentinel set or a cluster, and how the replicas reach each |
//! | [`verdict`] | inspecting every job, the concurrency samples, judging the promises |
//! | [`report`] | the summary table, the lists and the `VERDICT:` line |
//! | [`docker`] | the docker variant's engine: checks, the bridge gateway, this run's containers |
//! | [`recorder`] | the docker variant's RUNS file over HTTP, for agents in containers |
//! | [`traffic`] | `chaos traffic`: `/ready` and submits against a dispatcher, a JSON report |
//! | [`judge`] | `chaos judge`: polls a traffic report's jobs until they end, a JSON judgement |

mod args;
mod config;
mod ctx;
mod docker;
mod failover;
mod faults;
mod judge;
mod kind;
mod load;
mod recorder;
mod report;
mod run;
mod topology;
mod traffic;
mod verdict;
mod world;

use std::process::ExitCode;

use clap::Parser as _;

use args::{Cli, Command};

/// Exit code 0: every promise held (or the subcommand did its work); 1: a promise broke;
/// 2: the harness itself failed.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        None => run::run(cli.run).map(|held| if held { 0 } else { 1 }),
        Some(Command::Traffic(args)) => on_runtime(traffic::main(args)).map(|()| 0),
        Some(Command::Judge(args)) => on_runtime(judge::main(args)).map(|()| 0),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs a subcommand on a runtime of its own.
fn on_runtime(
    command: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(command)
}
