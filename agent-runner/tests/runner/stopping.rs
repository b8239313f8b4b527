//! Stopping the agent: SIGTERM to the runner, the time limit, the grace period.

use std::time::{Duration, Instant};

use contract::{env, RunOutcome};
use nix::sys::signal::Signal;

use crate::harness::{is_alive, launch, wait_until, Answer, Dispatcher, Script};

#[tokio::test]
async fn runner_stops_agent_on_sigterm_and_reports_terminated() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let mut runner = launch(
        &dispatcher,
        &[
            "sh",
            "-c",
            "sleep 60 & echo $! > child.pid; echo $$ > agent.pid; wait",
        ],
    )
    .var(env::GRACE_SECS, 2)
    .start();
    let agent = runner.pid_in("agent.pid").await;
    let child = runner.pid_in("child.pid").await;
    assert_eq!(
        runner.reports_when(1).await,
        [agent],
        "the runner reports the agent's process group on its pipe"
    );

    runner.signal(Signal::SIGTERM);

    // The whole group goes, within the grace period (plus a second for scheduling).
    let gone = wait_until(Duration::from_secs(3), || {
        !is_alive(agent) && !is_alive(child)
    })
    .await;
    assert!(
        gone,
        "agent or its child still alive\n{}",
        runner.diagnostics()
    );
    runner.exits_with(0).await;
    assert_eq!(
        dispatcher.finished().map(|(outcome, _)| outcome),
        Some(RunOutcome::Terminated)
    );
    assert_eq!(
        runner.reports_when(2).await,
        [agent, 0],
        "the group is reported gone"
    );
}

#[tokio::test]
async fn runner_kills_an_agent_that_ignores_sigterm_once_the_grace_period_is_over() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let mut runner = launch(
        &dispatcher,
        &["sh", "-c", "trap '' TERM; echo $$ > agent.pid; sleep 60"],
    )
    .var(env::GRACE_SECS, 3)
    .start();
    let agent = runner.pid_in("agent.pid").await;

    let signalled = Instant::now();
    // Repeated SIGTERMs neither crash the runner nor cut the grace period short.
    for _ in 0..3 {
        runner.signal(Signal::SIGTERM);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    runner.signal(Signal::SIGINT);
    tokio::time::sleep(Duration::from_millis(500)).await;
    if signalled.elapsed() < Duration::from_millis(2500) {
        assert!(
            is_alive(agent),
            "the agent was killed before its grace period ended"
        );
    }

    let gone = wait_until(Duration::from_secs(30), || !is_alive(agent)).await;
    assert!(gone, "the agent survived SIGKILL\n{}", runner.diagnostics());
    assert!(signalled.elapsed() >= Duration::from_secs(3));
    runner.exits_with(0).await;
    assert_eq!(
        dispatcher.finished().map(|(outcome, _)| outcome),
        Some(RunOutcome::Terminated)
    );
}

#[tokio::test]
async fn runner_times_out_the_agent() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let mut runner = launch(
        &dispatcher,
        &["sh", "-c", "echo $$ > agent.pid; exec sleep 60"],
    )
    .var(env::TIMEOUT_SECS, 1)
    .var(env::GRACE_SECS, 1)
    .start();
    let agent = runner.pid_in("agent.pid").await;

    runner.exits_with(0).await;

    assert!(!is_alive(agent), "the agent outlived its time limit");
    assert_eq!(
        dispatcher.finished().map(|(outcome, _)| outcome),
        Some(RunOutcome::TimedOut)
    );
}

#[tokio::test]
async fn an_agent_killed_by_someone_else_is_reported_as_signaled() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let mut runner = launch(
        &dispatcher,
        &["sh", "-c", "echo $$ > agent.pid; exec sleep 60"],
    )
    .start();
    let agent = runner.pid_in("agent.pid").await;

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent), Signal::SIGKILL).unwrap();

    runner.exits_with(0).await;
    assert_eq!(
        dispatcher.finished().map(|(outcome, _)| outcome),
        Some(RunOutcome::Signaled {
            signal: Signal::SIGKILL as i32
        })
    );
}
