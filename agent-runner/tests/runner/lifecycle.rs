//! An attempt from start to end: output, environment, result, heartbeats, bad jobs.

use contract::{env, exit, OutputStream, RunOutcome, RunnerEvent};

use crate::harness::{launch, Answer, Dispatcher, Script};

#[tokio::test]
async fn runner_streams_lines_and_reports_exit_code_and_result() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let mut runner = launch(
        &dispatcher,
        &[
            "sh",
            "-c",
            r#"echo out; echo err >&2; printf '{"summary":"ok","links":[{"url":"http://example.invalid/pr/1"}]}' > "$AGENTSMITH_RESULT_FILE"; exit 3"#,
        ],
    )
    .start();

    runner.exits_with(0).await;

    let events = dispatcher.events();
    assert_eq!(events.first(), Some(&RunnerEvent::Started), "{events:?}");
    assert_eq!(dispatcher.lines(OutputStream::Stdout), ["out"]);
    assert_eq!(dispatcher.lines(OutputStream::Stderr), ["err"]);
    let (outcome, result) = dispatcher.finished().expect("a final event");
    assert_eq!(outcome, RunOutcome::Exited { code: 3 });
    let result = result.expect("the agent's result");
    assert_eq!(result.summary.as_deref(), Some("ok"));
    assert_eq!(result.links[0].url, "http://example.invalid/pr/1");

    // The agent's output is echoed, as is, on the runner's stdout.
    let stdout = runner.stdout();
    assert!(stdout.lines().any(|l| l == "out"), "{stdout}");
    assert!(stdout.lines().any(|l| l == "err"), "{stdout}");
    // Every post is authenticated and versioned.
    for post in dispatcher.posts() {
        assert_eq!(
            post.authorization.as_deref(),
            Some(format!("Bearer {}", runner.token()).as_str())
        );
        assert_eq!(post.batch.version, contract::PROTOCOL_VERSION);
        assert_eq!(post.batch.attempt, 1);
    }
    let reports = runner.reports_when(2).await;
    assert!(
        matches!(reports[..], [pgid, 0] if pgid > 1),
        "the runner reports the agent's group, then that it is gone: {reports:?}"
    );
}

#[tokio::test]
async fn runner_reports_start_failure_for_a_missing_command() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let mut runner = launch(&dispatcher, &["/nonexistent/agent-binary", "--flag"]).start();

    runner.exits_with(0).await;

    let events = dispatcher.events();
    assert_eq!(events.len(), 1, "only the final event: {events:?}");
    match dispatcher.finished() {
        Some((RunOutcome::StartFailed { reason }, None)) => {
            assert!(reason.contains("/nonexistent/agent-binary"), "{reason}");
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn agent_environment_holds_intent_but_not_the_token() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let mut runner = launch(
        &dispatcher,
        &[
            "sh",
            "-c",
            r#"env; echo "intent: $(cat "$AGENTSMITH_INTENT_FILE")""#,
        ],
    )
    .start();

    runner.exits_with(0).await;

    let lines = dispatcher.lines(OutputStream::Stdout);
    let has = |wanted: &str| lines.iter().any(|l| l == wanted);
    assert!(has("AGENTSMITH_TASK=fix PROJ-7"), "{lines:#?}");
    assert!(has("AGENTSMITH_PROJECT=demo"), "{lines:#?}");
    assert!(has("AGENTSMITH_TICKET=PROJ-7"), "{lines:#?}");
    assert!(has(&format!("AGENTSMITH_JOB_ID={}", runner.job_id())));
    assert!(has("AGENTSMITH_ATTEMPT=1"), "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("AGENTSMITH_REPO=")),
        "no repo in this intent: {lines:#?}"
    );
    let result_file = runner.workdir().join(".agentsmith/result.json");
    assert!(has(&format!(
        "AGENTSMITH_RESULT_FILE={}",
        result_file.display()
    )));
    // The intent file holds the intent as JSON (pretty-printed, so several lines).
    assert!(has("intent: {"), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.trim() == r#""task": "fix PROJ-7","#),
        "{lines:#?}"
    );

    let token = runner.token().to_string();
    let credential = runner.credential().to_string();
    for line in &lines {
        assert!(!line.contains(&token), "the agent saw the token: {line}");
        assert!(
            !line.contains(&credential),
            "the agent saw the credential: {line}"
        );
        assert!(!line.starts_with(env::JOB_CREDENTIAL), "{line}");
        assert!(!line.starts_with(env::CALLBACK_URL), "{line}");
    }
    for post in dispatcher.posts() {
        assert!(!post.body.contains(&token), "an event carries the token");
    }
    assert!(
        !runner.stdout().contains(&token),
        "the runner echoed the token"
    );
    assert!(
        !runner.stderr().contains(&token),
        "the runner logged the token"
    );
}

#[tokio::test]
async fn an_invalid_result_file_is_reported_in_a_log_line_and_left_out() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let mut runner = launch(
        &dispatcher,
        &[
            "sh",
            "-c",
            r#"echo '{"summary":' > "$AGENTSMITH_RESULT_FILE""#,
        ],
    )
    .start();

    runner.exits_with(0).await;

    assert_eq!(
        dispatcher.finished(),
        Some((RunOutcome::Exited { code: 0 }, None))
    );
    let stderr = dispatcher.lines(OutputStream::Stderr);
    assert!(
        stderr
            .iter()
            .any(|l| l.starts_with("agent-runner:") && l.contains("result")),
        "{stderr:?}"
    );
}

#[tokio::test]
async fn runner_sends_heartbeats_while_the_agent_runs() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let mut runner = launch(&dispatcher, &["sleep", "4"])
        .var(env::HEARTBEAT_SECS, 1)
        .start();

    runner.exits_with(0).await;

    let heartbeats = dispatcher
        .events()
        .iter()
        .filter(|e| matches!(e, RunnerEvent::Heartbeat))
        .count();
    assert!(heartbeats >= 2, "{heartbeats} heartbeats in 4 s");
}

#[tokio::test]
async fn long_lines_are_cut_at_16_kib() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let mut runner = launch(
        &dispatcher,
        &[
            "sh",
            "-c",
            "head -c 40000 /dev/zero | tr '\\0' x; echo; echo next",
        ],
    )
    .start();

    runner.exits_with(0).await;

    let lines = dispatcher.lines(OutputStream::Stdout);
    assert_eq!(
        lines.len(),
        2,
        "{:?}",
        lines.iter().map(String::len).collect::<Vec<_>>()
    );
    assert!(lines[0].starts_with(&"x".repeat(16 * 1024)));
    assert!(lines[0].ends_with(&format!(" [{} more bytes cut]", 40000 - 16 * 1024)));
    assert_eq!(lines[1], "next");
}

#[tokio::test]
async fn a_missing_variable_is_named_and_the_runner_exits_2() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let mut runner = launch(&dispatcher, &["true"])
        .without(env::JOB_CREDENTIAL)
        .start();

    runner.exits_with(2).await;

    assert!(
        runner.stderr().contains(env::JOB_CREDENTIAL),
        "{}",
        runner.stderr()
    );
    assert!(dispatcher.posts().is_empty());
}

#[tokio::test]
async fn an_invalid_variable_is_named_and_the_runner_exits_2() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let mut runner = launch(&dispatcher, &["true"])
        .var(env::COMMAND, "sh -c true")
        .start();

    runner.exits_with(2).await;

    assert!(
        runner.stderr().contains(env::COMMAND),
        "{}",
        runner.stderr()
    );
    assert!(dispatcher.posts().is_empty());
}

#[tokio::test]
async fn an_attempt_started_again_in_its_work_directory_does_not_run_the_agent_twice() {
    // Docker starts an exited container again in place, with its /work volume: the second
    // start must neither run the agent nor report anything for the attempt.
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let mut runner = launch(&dispatcher, &["sh", "-c", "echo ran >> runs.txt"]).start();
    runner.exits_with(0).await;
    let workdir = runner.workdir();
    let posts = dispatcher.posts().len();
    let command = ["sh", "-c", "echo ran >> runs.txt"];
    let mut again = launch(&dispatcher, &command)
        .var(env::JOB_ID, runner.job_id())
        .var(env::JOB_CREDENTIAL, runner.credential())
        .var(env::WORKDIR, workdir.display())
        .start();
    again.exits_with(i32::from(exit::ALREADY_RAN)).await;
    assert_eq!(
        std::fs::read_to_string(workdir.join("runs.txt")).unwrap(),
        "ran\n"
    );
    assert_eq!(
        dispatcher.posts().len(),
        posts,
        "the second start sent nothing"
    );
}
