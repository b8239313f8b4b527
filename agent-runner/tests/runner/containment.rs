//! What the agent leaves behind and what it can reach: processes that leave its group,
//! the pipe on which the runner reports the group, the user it runs as.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use contract::{env, RunOutcome};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::{launch, wait_until, Answer, Dispatcher, Script};
use testkit::procs::{alive_with, marker};

/// Checks that no process holds any of `markers` (within a few seconds: a SIGKILL takes
/// effect asynchronously), killing those that do so that a failure leaves nothing behind.
async fn none_alive(markers: &[String], when: &str) {
    let gone = wait_until(Duration::from_secs(5), || {
        markers.iter().all(|m| alive_with(m).is_empty())
    })
    .await;
    let left: Vec<(String, Vec<i32>)> = markers
        .iter()
        .map(|m| (m.clone(), alive_with(m)))
        .filter(|(_, pids)| !pids.is_empty())
        .collect();
    for (_, pids) in &left {
        for pid in pids {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
    assert!(gone, "{when}: still alive: {left:?}");
}

/// An agent script that starts a `sleep` for each of four markers outside the agent's
/// process group or parentage: `setsid`, a double fork, both, and a new session whose
/// leader exits at once.
fn escapes(markers: &[String; 4]) -> String {
    format!(
        "setsid sh -c 'sleep {}; true' & ( sleep {} & ) & ( setsid sleep {} & ) & setsid sh -c 'sleep {} & exit 0' &",
        markers[0], markers[1], markers[2], markers[3]
    )
}

#[tokio::test]
async fn processes_that_leave_the_agents_group_end_when_the_agent_exits() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let markers = [marker(), marker(), marker(), marker()];
    let script = format!("{} sleep 1; echo left; exit 3", escapes(&markers));
    let mut runner = launch(&dispatcher, &["sh", "-c", &script]).start();

    runner.exits_with(0).await;

    assert_eq!(
        dispatcher.finished().map(|(outcome, _)| outcome),
        Some(RunOutcome::Exited { code: 3 }),
        "{}",
        runner.diagnostics()
    );
    none_alive(&markers, "after the agent exited").await;
    assert!(
        runner
            .stderr()
            .contains("killed processes the agent left behind"),
        "{}",
        runner.diagnostics()
    );
}

#[tokio::test]
async fn processes_that_leave_the_agents_group_end_when_the_agent_is_stopped_or_times_out() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    for stop in ["SIGTERM", "time limit"] {
        let markers = [marker(), marker(), marker(), marker()];
        let script = format!("{} echo $$ > agent.pid; exec sleep 60", escapes(&markers));
        let mut runner = launch(&dispatcher, &["sh", "-c", &script])
            .var(env::GRACE_SECS, 1)
            .var(env::TIMEOUT_SECS, if stop == "SIGTERM" { 60 } else { 2 })
            .start();
        runner.pid_in("agent.pid").await;
        if stop == "SIGTERM" {
            runner.signal(Signal::SIGTERM);
        }

        runner.exits_with(0).await;

        none_alive(&markers, &format!("after the agent was stopped ({stop})")).await;
    }
}

#[tokio::test]
async fn the_agent_inherits_nothing_but_its_standard_streams() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let mut runner = launch(
        &dispatcher,
        &["sh", "-c", "echo $$ > agent.pid; exec sleep 60"],
    )
    .var(env::GRACE_SECS, 0)
    .start();
    let agent = runner.pid_in("agent.pid").await;
    let fd = |pid: i32, fd: &str| {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .map(|target| target.display().to_string())
            .unwrap_or_default()
    };
    // `exec` keeps what the shell inherited: the runner's pipe would be here.
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{agent}/fd"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    assert_eq!(fds, ["0", "1", "2"], "{}", runner.diagnostics());
    assert_eq!(fd(agent, "0"), "/dev/null");

    // The runner holds the pipe elsewhere than on its standard input.
    let pipe = format!("pipe:[{}]", runner.pgid_pipe());
    let runner_pid = runner.pid().as_raw();
    assert_eq!(fd(runner_pid, "0"), "/dev/null");
    let held = std::fs::read_dir(format!("/proc/{runner_pid}/fd"))
        .unwrap()
        .flatten()
        .any(|e| fd(runner_pid, &e.file_name().to_string_lossy()) == pipe);
    assert!(held, "the runner does not hold its pipe");

    runner.signal(Signal::SIGTERM);
    runner.exits_with(0).await;
}

#[tokio::test]
async fn the_agent_runs_as_the_agent_user_in_a_directory_handed_over_to_it() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let victim = 1;
    let mut runner = launch(
        &dispatcher,
        &[
            "sh",
            "-c",
            &format!(
                r#"echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
for fd in /proc/$PPID/fd/*; do (echo {victim} > "$fd") 2>/dev/null && echo "reached $fd"; done
cat /proc/$PPID/environ > /dev/null 2>&1 || echo "no environ"
printf '{{"summary":"as nobody"}}' > "$AGENTSMITH_RESULT_FILE""#
            ),
        ],
    )
    .var(env::AGENT_USER, "65534:65534")
    .start();

    runner.exits_with(0).await;

    let finished = dispatcher.finished();
    if !nix::unistd::geteuid().is_root() {
        // Only root may start a process as someone else: the start fails, saying so.
        assert!(
            matches!(finished, Some((RunOutcome::StartFailed { .. }, None))),
            "{finished:?}"
        );
        return;
    }
    let lines = dispatcher.lines(contract::OutputStream::Stdout);
    assert_eq!(
        lines,
        ["uid=65534 gid=65534 groups=65534", "no environ"],
        "{}",
        runner.diagnostics()
    );
    let (outcome, result) = finished.unwrap();
    assert_eq!(outcome, RunOutcome::Exited { code: 0 });
    assert_eq!(result.unwrap().summary.as_deref(), Some("as nobody"));
    let workdir = std::fs::metadata(runner.workdir()).unwrap();
    assert_eq!((workdir.uid(), workdir.gid()), (65534, 65534));
    let reports = runner.reports_when(2).await;
    assert!(
        matches!(reports[..], [pgid, 0] if pgid > 1),
        "only the runner wrote to its pipe: {reports:?}"
    );
}

#[tokio::test]
async fn invalid_containment_variables_are_named_and_the_runner_exits_2() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    for (name, value) in [
        (env::AGENT_USER, "nobody"),
        (env::AGENT_USER, "65534"),
        (env::PGID_FD, "3"),
    ] {
        let mut runner = launch(&dispatcher, &["true"]).var(name, value).start();
        runner.exits_with(2).await;
        assert!(runner.stderr().contains(name), "{}", runner.diagnostics());
    }
    assert!(dispatcher.posts().is_empty());
}
