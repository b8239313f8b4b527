//! Messages people send a running agent: sent to the stand-in dispatcher while a real
//! runner runs, counted in its events replies, fetched by the runner and found by the agent
//! as files in `$AGENTSMITH_INBOX`.

use contract::{env, InboxMessage, OutputStream, RunOutcome};

use crate::harness::{launch, wait_until, Answer, Dispatcher, Runner, Script, TempDir, EXIT_LIMIT};

/// Waits until the agent has said `line` on its standard output (as the dispatcher got it).
async fn agent_said(dispatcher: &Dispatcher, runner: &Runner, line: &str) {
    let said = wait_until(EXIT_LIMIT, || {
        dispatcher
            .lines_of(runner.job_id(), OutputStream::Stdout)
            .iter()
            .any(|l| l == line)
    })
    .await;
    assert!(
        said,
        "the agent never said {line:?}\n{}",
        runner.diagnostics()
    );
}

/// The `after` of each inbox request of `runner`'s job, checked to be of its attempt.
fn afters(dispatcher: &Dispatcher, runner: &Runner) -> Vec<u64> {
    dispatcher
        .inbox_requests(runner.job_id())
        .into_iter()
        .map(|request| {
            assert_eq!(request.attempt, 1);
            assert_eq!(request.version, contract::PROTOCOL_VERSION);
            request.after
        })
        .collect()
}

fn parsed(line: &str) -> InboxMessage {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not a message: {e}"))
}

#[tokio::test]
async fn messages_sent_while_the_agent_runs_reach_its_inbox_in_order_once_each() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let script = r#"echo ready
until [ -f "$AGENTSMITH_INBOX/000001.json" ]; do sleep 0.05; done
cat "$AGENTSMITH_INBOX/000001.json"; echo
until [ -f "$AGENTSMITH_INBOX/000002.json" ]; do sleep 0.05; done
cat "$AGENTSMITH_INBOX/000002.json"; echo
ls -A "$AGENTSMITH_INBOX""#;
    // Heartbeats every second: the runner learns of a message from the next events reply.
    let mut runner = launch(&dispatcher, &["sh", "-c", script])
        .var(env::HEARTBEAT_SECS, 1)
        .start();
    let job_id = runner.job_id().to_string();

    agent_said(&dispatcher, &runner, "ready").await;
    dispatcher.send_message(&job_id, "use the v2 client instead", "ann");
    let first_read = wait_until(EXIT_LIMIT, || {
        dispatcher.lines_of(&job_id, OutputStream::Stdout).len() >= 2
    })
    .await;
    assert!(
        first_read,
        "no message reached the agent\n{}",
        runner.diagnostics()
    );
    dispatcher.send_message(&job_id, "and keep\nthe tests green", "bob");

    runner.exits_with(0).await;

    assert_eq!(
        dispatcher.finished_of(&job_id).map(|(outcome, _)| outcome),
        Some(RunOutcome::Exited { code: 0 }),
        "{}",
        runner.diagnostics()
    );
    let stdout = dispatcher.lines_of(&job_id, OutputStream::Stdout);
    assert_eq!(stdout.len(), 5, "{stdout:?}");
    let expected = |seq: u64, text: &str, by: &str| InboxMessage {
        seq,
        text: text.into(),
        by: by.into(),
        at: 0,
    };
    assert_eq!(
        parsed(&stdout[1]),
        expected(1, "use the v2 client instead", "ann")
    );
    assert_eq!(
        parsed(&stdout[2]),
        expected(2, "and keep\nthe tests green", "bob")
    );
    assert_eq!(
        stdout[3..],
        ["000001.json", "000002.json"],
        "nothing else is left there"
    );

    let stderr = dispatcher.lines_of(&job_id, OutputStream::Stderr);
    for said in [
        "agent-runner: a message from ann: use the v2 client instead",
        "agent-runner: a message from bob: and keep the tests green",
    ] {
        let times = stderr.iter().filter(|line| *line == said).count();
        assert_eq!(times, 1, "{said:?} in {stderr:?}");
    }
    // Each message fetched from past the last one written: none is fetched (or written) again.
    let mut afters = afters(&dispatcher, &runner);
    assert!(afters.is_sorted(), "{afters:?}");
    afters.dedup();
    assert_eq!(afters, [0, 1]);
}

#[tokio::test]
async fn many_messages_are_fetched_a_page_at_a_time() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let script = r#"until [ -f "$AGENTSMITH_INBOX/000060.json" ]; do sleep 0.05; done
ls "$AGENTSMITH_INBOX" | wc -l"#;
    let launched = launch(&dispatcher, &["sh", "-c", script]).var(env::HEARTBEAT_SECS, 1);
    let job_id = launched.job_id.clone();
    for n in 1..=60 {
        dispatcher.send_message(&job_id, &format!("step {n}"), "ann");
    }
    let mut runner = launched.start();

    runner.exits_with(0).await;

    let stdout = dispatcher.lines_of(&job_id, OutputStream::Stdout);
    assert_eq!(
        stdout.iter().map(|l| l.trim()).collect::<Vec<_>>(),
        ["60"],
        "{}",
        runner.diagnostics()
    );
    let path = runner.workdir().join(".agentsmith/inbox/000051.json");
    assert_eq!(
        parsed(&std::fs::read_to_string(path).unwrap()).text,
        "step 51"
    );
    let mut afters = afters(&dispatcher, &runner);
    assert!(afters.is_sorted(), "{afters:?}");
    afters.dedup();
    assert_eq!(afters, [0, testkit::stand_in::INBOX_PAGE as u64]);
}

#[tokio::test]
async fn a_link_the_agent_planted_under_a_messages_name_is_not_written_through() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let outside = TempDir::new();
    let target = outside.path().join("target");
    std::fs::write(&target, "not the runner's to write").unwrap();
    let script = format!(
        r#"ln -s '{}' "$AGENTSMITH_INBOX/000001.json" && echo planted
until [ -f "$AGENTSMITH_INBOX/000002.json" ]; do sleep 0.05; done
cat "$AGENTSMITH_INBOX/000002.json"; echo"#,
        target.display()
    );
    let mut runner = launch(&dispatcher, &["sh", "-c", &script])
        .var(env::HEARTBEAT_SECS, 1)
        .start();
    let job_id = runner.job_id().to_string();

    agent_said(&dispatcher, &runner, "planted").await;
    dispatcher.send_message(&job_id, "first", "ann");
    dispatcher.send_message(&job_id, "second", "ann");

    runner.exits_with(0).await;

    assert_eq!(
        dispatcher.finished_of(&job_id).map(|(outcome, _)| outcome),
        Some(RunOutcome::Exited { code: 0 }),
        "{}",
        runner.diagnostics()
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "not the runner's to write"
    );
    let link = runner.workdir().join(".agentsmith/inbox/000001.json");
    assert!(std::fs::symlink_metadata(link)
        .unwrap()
        .file_type()
        .is_symlink());
    let stdout = dispatcher.lines_of(&job_id, OutputStream::Stdout);
    assert_eq!(parsed(&stdout[1]).text, "second", "{stdout:?}");
    let stderr = dispatcher.lines_of(&job_id, OutputStream::Stderr);
    let refused = "agent-runner: not handing on message 1: something is at 000001.json already";
    assert!(stderr.iter().any(|l| l == refused), "{stderr:?}");
}

#[tokio::test]
async fn a_stop_in_answer_to_an_inbox_request_stops_the_agent() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    dispatcher.stop_inbox();
    let mut runner = launch(&dispatcher, &["sh", "-c", "echo ready; sleep 60"])
        .var(env::HEARTBEAT_SECS, 1)
        .var(env::GRACE_SECS, 1)
        .start();
    let job_id = runner.job_id().to_string();

    agent_said(&dispatcher, &runner, "ready").await;
    dispatcher.send_message(&job_id, "stop that", "ann");

    runner.exits_with(0).await;

    assert_eq!(
        dispatcher.finished_of(&job_id).map(|(outcome, _)| outcome),
        Some(RunOutcome::Terminated),
        "{}",
        runner.diagnostics()
    );
    assert!(!dispatcher.inbox_requests(&job_id).is_empty());
    let inbox = runner.workdir().join(".agentsmith/inbox");
    assert_eq!(std::fs::read_dir(inbox).unwrap().count(), 0);
}
