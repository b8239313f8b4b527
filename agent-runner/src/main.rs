//! The `agent-runner` binary: reads its job from the environment and runs it; see the
//! `agent_runner` library for what that means. Run by the agent as `agent-runner ask` or
//! `agent-runner say`, it is the agent's client for questions and progress messages
//! instead, and reads no job (`agent_runner::ask`).
//!
//! Exit codes: 0 once the final event is delivered (whatever the agent's own exit code,
//! which the event carries), 2 for a missing or invalid environment variable, 3 when the
//! dispatcher refuses the job's credential or token, 4 when the final event could not be
//! delivered (or the credential not exchanged), 1 for any other failure of the runner.
//!
//! As `ask`: 0 with the answer alone on stdout, 1 when there is no answer (refused, the job
//! is ending, nobody answered), 2 for bad usage or outside a job. As `say`: 0 once the
//! message is left, 1 when it cannot be written, 2 for bad usage or outside a job.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use agent_runner::{Job, Settings};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match args.first().and_then(|command| command.to_str()) {
        Some("ask") => agent_runner::ask::ask(&args[1..]),
        Some("say") => agent_runner::ask::say(&args[1..]),
        _ => run_job(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn run_job() -> ExitCode {
    // Before anything else: no other process of this user may read this one's memory.
    agent_runner::credential::seal();
    install_tracing();
    let code = match Job::from_env() {
        Ok(job) => match agent_runner::run(job, Settings::default()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed(&e),
        },
        Err(e) => failed(&e),
    };
    mark_ended();
    code
}

/// Tells the pod's sidecars, if it has any, that the work is over (see
/// [`contract::env::ENDED_FILE`]).
fn mark_ended() {
    if let Some(path) = std::env::var_os(contract::env::ENDED_FILE) {
        if let Err(e) = std::fs::write(&path, b"") {
            tracing::warn!(error = %e, path = ?path, "could not tell the sidecars the work is over");
        }
    }
}

fn failed(error: &agent_runner::Error) -> ExitCode {
    tracing::error!(error = %error.chain(), "agent-runner failed");
    ExitCode::from(error.exit_code())
}

/// Diagnostics go to stderr, readable, filtered by `RUST_LOG` (default `info`); stdout
/// belongs to the agent's output.
fn install_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
