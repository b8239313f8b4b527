//! Questions and progress messages: `agent-runner ask` and `say` as the agent runs them,
//! against a thread playing the runner, then through a real runner to the stand-in
//! dispatcher and back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use contract::{env, Ask, AskReply, OutputStream, RunOutcome, RunnerEvent, Say};

use crate::harness::{launch, wait_until, Answer, Dispatcher, Script, TempDir, EXIT_LIMIT};

fn runner_binary() -> &'static str {
    env!("CARGO_BIN_EXE_agent-runner")
}

/// Runs `agent-runner <args>` as an agent would, with `var` naming `dir` (unless `None`).
fn client(args: &[&str], var: Option<(&str, &Path)>) -> std::thread::JoinHandle<Output> {
    let mut command = Command::new(runner_binary());
    command
        .args(args)
        .env_remove(env::ASK_DIR)
        .env_remove(env::SAY_DIR);
    if let Some((name, dir)) = var {
        command.env(name, dir);
    }
    std::thread::spawn(move || command.output().unwrap())
}

/// Plays the runner: waits for one question file in `dir`, answers it with `reply`, and
/// returns the question.
fn answer_one(dir: &Path, reply: &AskReply) -> (String, Ask) {
    let deadline = std::time::Instant::now() + EXIT_LIMIT;
    let question = loop {
        let found = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "json"));
        if let Some(path) = found {
            break path;
        }
        assert!(std::time::Instant::now() < deadline, "no question came");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stem = question.file_stem().unwrap().to_str().unwrap().to_string();
    let ask: Ask = serde_json::from_slice(&std::fs::read(&question).unwrap()).unwrap();
    std::fs::write(
        dir.join(format!("{stem}.answer.json")),
        serde_json::to_vec(reply).unwrap(),
    )
    .unwrap();
    (stem, ask)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn ask_leaves_its_question_and_prints_the_answer_alone() {
    let dir = TempDir::new();
    let asking = client(
        &[
            "ask",
            "which?",
            "--choice",
            "a",
            "--choice",
            "b",
            "--timeout",
            "90",
        ],
        Some((env::ASK_DIR, dir.path())),
    );
    let (name, ask) = answer_one(
        dir.path(),
        &AskReply {
            answer: Some("b, with a twist".into()),
            by: Some("ann".into()),
            defaulted: false,
            error: None,
        },
    );
    let output = asking.join().unwrap();

    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "b, with a twist\n");
    assert!(contract::conversation::valid_file_name(&name), "{name}");
    assert_eq!(
        ask,
        Ask {
            question: "which?".into(),
            choices: vec!["a".into(), "b".into()],
            default: None,
            timeout_secs: Some(90),
        }
    );
}

#[test]
fn ask_with_an_error_reply_says_it_and_exits_1() {
    let dir = TempDir::new();
    let asking = client(&["ask", "may I?"], Some((env::ASK_DIR, dir.path())));
    answer_one(
        dir.path(),
        &AskReply {
            answer: None,
            by: None,
            defaulted: false,
            error: Some("the job was stopped before the question was answered".into()),
        },
    );
    let output = asking.join().unwrap();

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stdout), "");
    assert_eq!(
        text(&output.stderr),
        "agent-runner ask: the job was stopped before the question was answered\n"
    );
}

#[test]
fn ask_outside_a_job_or_misused_exits_2_saying_why() {
    let outside = client(&["ask", "which?"], None).join().unwrap();
    assert_eq!(outside.status.code(), Some(2));
    assert!(
        text(&outside.stderr).contains(
            "agent-runner ask runs inside an agentsmith job: AGENTSMITH_ASK_DIR is not set"
        ),
        "{}",
        text(&outside.stderr)
    );

    let dir = TempDir::new();
    for args in [
        &["ask"][..],
        &["ask", "q", "--colour", "red"][..],
        &["ask", "q", "--timeout", "25h"][..],
    ] {
        let misused = client(args, Some((env::ASK_DIR, dir.path())))
            .join()
            .unwrap();
        assert_eq!(misused.status.code(), Some(2), "{args:?}");
        assert!(text(&misused.stderr).contains("usage: agent-runner ask"));
    }
    let nothing_left = std::fs::read_dir(dir.path()).unwrap().count() == 0;
    assert!(nothing_left, "a misused ask leaves no question");

    let help = client(&["ask", "--help"], None).join().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help.stdout).contains("--timeout DURATION"));
}

#[test]
fn say_leaves_its_message_and_returns_at_once() {
    let dir = TempDir::new();
    let said = client(&["say", "halfway there"], Some((env::SAY_DIR, dir.path())))
        .join()
        .unwrap();

    assert_eq!(said.status.code(), Some(0), "{}", text(&said.stderr));
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().unwrap(), "json");
    let say: Say = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(say.text, "halfway there");

    let outside = client(&["say", "hello"], None).join().unwrap();
    assert_eq!(outside.status.code(), Some(2));
    assert!(text(&outside.stderr).contains("AGENTSMITH_SAY_DIR is not set"));
}

/// The question the runner posted, once it has.
async fn question_posted(dispatcher: &Dispatcher) -> Option<RunnerEvent> {
    let asked = || {
        dispatcher
            .events()
            .into_iter()
            .find(|e| matches!(e, RunnerEvent::Question { .. }))
    };
    wait_until(EXIT_LIMIT, || asked().is_some()).await;
    asked()
}

#[tokio::test]
async fn an_agents_question_reaches_the_dispatcher_and_its_answer_the_agent() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let script = r#"agent-runner say "looking around"
answer=$(agent-runner ask "which?" --choice a --choice b) || exit 9
echo "got $answer""#;
    let mut runner = launch(&dispatcher, &["sh", "-c", script]).start();

    let question = question_posted(&dispatcher).await;
    let Some(RunnerEvent::Question {
        id,
        text,
        choices,
        default,
        timeout_secs,
    }) = question
    else {
        panic!("no question posted\n{}", runner.diagnostics());
    };
    assert_eq!(text, "which?");
    assert_eq!(choices, ["a", "b"]);
    assert_eq!(default, None);
    assert_eq!(
        timeout_secs,
        contract::conversation::DEFAULT_ASK_TIMEOUT_SECS
    );
    dispatcher.answer(&id, "b", "ann");

    runner.exits_with(0).await;

    assert_eq!(
        dispatcher.finished().map(|(outcome, _)| outcome),
        Some(RunOutcome::Exited { code: 0 }),
        "{}",
        runner.diagnostics()
    );
    assert_eq!(dispatcher.lines(OutputStream::Stdout), ["got b"]);
    let events = dispatcher.events();
    assert!(
        events.contains(&RunnerEvent::Say {
            text: "looking around".into()
        }),
        "{events:?}"
    );
    let requests = dispatcher.answer_requests();
    assert!(!requests.is_empty());
    for request in requests {
        assert_eq!(request.question, id);
        assert_eq!(request.attempt, 1);
        assert_eq!(request.version, contract::PROTOCOL_VERSION);
    }
    let reply = runner
        .workdir()
        .join(format!(".agentsmith/ask/{id}.answer.json"));
    let reply: AskReply = serde_json::from_slice(&std::fs::read(reply).unwrap()).unwrap();
    assert_eq!(reply.by.as_deref(), Some("ann"));
}

#[tokio::test]
async fn a_stop_in_answer_to_a_question_stops_the_agent() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    dispatcher.stop_answers();
    let script = r#"agent-runner ask "may I?"; echo "ask exited $?"; sleep 60"#;
    let mut runner = launch(&dispatcher, &["sh", "-c", script])
        .var(env::GRACE_SECS, 1)
        .start();

    runner.exits_with(0).await;

    assert_eq!(
        dispatcher.finished().map(|(outcome, _)| outcome),
        Some(RunOutcome::Terminated),
        "{}",
        runner.diagnostics()
    );
    assert!(question_posted(&dispatcher).await.is_some());
}

#[tokio::test]
async fn a_message_the_agent_leaves_just_before_it_exits_still_arrives() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let mut runner = launch(&dispatcher, &["sh", "-c", r#"agent-runner say "done""#]).start();

    runner.exits_with(0).await;

    let events = dispatcher.events();
    let said: Vec<&RunnerEvent> = events
        .iter()
        .filter(|e| matches!(e, RunnerEvent::Say { .. }))
        .collect();
    assert_eq!(
        said,
        [&RunnerEvent::Say {
            text: "done".into()
        }],
        "{}",
        runner.diagnostics()
    );
}
