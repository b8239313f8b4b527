//! Delivery to the dispatcher: retries, deduplication by sequence number, buffering, and
//! what the dispatcher's answers make the runner do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_runner::outbox::{Limits, Outbox};
use agent_runner::sender::{Delivery, Sender, SenderSettings};
use contract::{env, OutputStream, RunOutcome, RunnerEvent};

use crate::harness::{is_alive, launch, wait_until, Answer, Dispatcher, Script, EXIT_LIMIT};

#[tokio::test]
async fn runner_retries_batches_after_server_errors_without_duplicating_events() {
    // The first three posts are stored but answered 500, as when an answer is lost.
    let dispatcher =
        Dispatcher::start(Script::always(Answer::Ok).first(3, Answer::Status(500))).await;
    // The pause makes the output span several batches: the first goes out 200 ms after
    // `Started` and is retried while the agent sleeps.
    let mut runner = launch(
        &dispatcher,
        &[
            "sh",
            "-c",
            "for i in $(seq 1 25); do echo line-$i; done; sleep 1; \
             for i in $(seq 26 50); do echo line-$i; done; echo done >&2",
        ],
    )
    .start();

    runner.exits_with(0).await;

    let posts = dispatcher.posts();
    assert!(posts.len() >= 5, "{} posts", posts.len());
    // The failed batch is re-sent unchanged, under the same first_seq.
    for retry in &posts[1..4] {
        assert_eq!(retry.batch, posts[0].batch);
    }
    // After that, each batch starts where the last recorded one ended.
    let mut next_seq = 0;
    for post in &posts[3..] {
        assert_eq!(post.batch.first_seq, next_seq, "{posts:#?}");
        next_seq += post.batch.events.len() as u64;
    }
    // `events()` also checks that the numbers are consecutive and repeats identical.
    let expected: Vec<String> = (1..=50).map(|i| format!("line-{i}")).collect();
    assert_eq!(dispatcher.lines(OutputStream::Stdout), expected);
    assert_eq!(dispatcher.lines(OutputStream::Stderr), ["done"]);
    assert_eq!(
        dispatcher.finished().map(|(outcome, _)| outcome),
        Some(RunOutcome::Exited { code: 0 })
    );
}

#[tokio::test]
async fn runner_drops_the_oldest_lines_while_the_dispatcher_is_down_and_says_how_many() {
    // Six failures keep the runner retrying for about six seconds, while the agent
    // prints more lines than the runner keeps.
    let dispatcher =
        Dispatcher::start(Script::always(Answer::Ok).first(6, Answer::Status(503))).await;
    let mut runner = launch(&dispatcher, &["seq", "1", "15000"]).start();

    runner.exits_with(0).await;

    let events = dispatcher.events();
    let dropped: u64 = events
        .iter()
        .map(|e| match e {
            RunnerEvent::Dropped { lines } => *lines,
            _ => 0,
        })
        .sum();
    let lines: Vec<u64> = dispatcher
        .lines(OutputStream::Stdout)
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(
        lines.len() as u64 + dropped,
        15_000,
        "every line is sent or counted"
    );
    assert!(dropped >= 15_000 - 10_000 - 200, "{dropped} dropped");
    assert!(
        lines.windows(2).all(|w| w[0] < w[1]),
        "lines kept their order"
    );
    assert_eq!(lines.last(), Some(&15_000), "the newest lines are kept");
    assert_eq!(events.first(), Some(&RunnerEvent::Started));
    assert_eq!(
        dispatcher.finished().map(|(outcome, _)| outcome),
        Some(RunOutcome::Exited { code: 0 })
    );
}

#[tokio::test]
async fn runner_stops_when_the_dispatcher_answers_409() {
    // The first batch is recorded; the next one (a heartbeat) is refused with 409.
    let dispatcher =
        Dispatcher::start(Script::always(Answer::Status(409)).first(1, Answer::Ok)).await;
    let mut runner = launch(
        &dispatcher,
        &["sh", "-c", "echo $$ > agent.pid; exec sleep 60"],
    )
    .var(env::HEARTBEAT_SECS, 1)
    .start();
    let agent = runner.pid_in("agent.pid").await;

    runner.exits_with(0).await;

    assert!(!is_alive(agent), "the agent outlived its runner");
    let posts = dispatcher.posts();
    assert_eq!(posts.len(), 2, "nothing is sent after a 409: {posts:#?}");
    assert_eq!(posts[1].answer, Answer::Status(409));
    assert_eq!(
        dispatcher.finished(),
        None,
        "no final event for an unwanted attempt"
    );
}

#[tokio::test]
async fn runner_stops_the_agent_when_the_dispatcher_replies_stop() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Stop).first(1, Answer::Ok)).await;
    let mut runner = launch(
        &dispatcher,
        &["sh", "-c", "echo $$ > agent.pid; exec sleep 60"],
    )
    .var(env::HEARTBEAT_SECS, 1)
    .start();
    let agent = runner.pid_in("agent.pid").await;

    runner.exits_with(0).await;

    assert!(!is_alive(agent), "the agent outlived its runner");
    assert_eq!(
        dispatcher.finished().map(|(outcome, _)| outcome),
        Some(RunOutcome::Terminated)
    );
}

#[tokio::test]
async fn runner_exits_3_and_stops_the_agent_when_the_token_is_refused() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Status(401))).await;
    let mut runner = launch(
        &dispatcher,
        &["sh", "-c", "echo $$ > agent.pid; exec sleep 60"],
    )
    .start();

    runner.exits_with(3).await;

    // The agent may have been stopped before it wrote its pid; if it did, it is gone.
    if let Ok(text) = std::fs::read_to_string(runner.workdir().join("agent.pid")) {
        let agent: i32 = text.trim().parse().unwrap();
        assert!(
            wait_until(EXIT_LIMIT, || !is_alive(agent)).await,
            "the agent outlived its runner"
        );
    }
    assert_eq!(dispatcher.posts().len(), 1, "nothing is sent after a 401");
    assert!(!runner.stderr().contains(runner.token()));
}

#[tokio::test]
async fn the_sender_gives_up_on_the_final_event_after_its_delivery_limit() {
    // Through the binary this takes ten minutes; the sender is driven directly instead,
    // against the same stand-in dispatcher, with a one-second limit.
    let dispatcher = Dispatcher::start(Script::always(Answer::Status(502))).await;
    let job = launch(&dispatcher, &["true"]).job();
    let outbox = Arc::new(Outbox::new(job.attempt, Limits::default()));
    let (directives, _) = tokio::sync::mpsc::unbounded_channel();
    let settings = SenderSettings {
        final_delivery: Duration::from_secs(1),
        ..SenderSettings::default()
    };
    let token = agent_runner::job::Token::new("a-token");
    let sender = Sender::new(&job, token, Arc::clone(&outbox), directives, settings).unwrap();
    outbox.finish(RunOutcome::Exited { code: 0 }, None);

    let started = Instant::now();
    let delivery = tokio::time::timeout(EXIT_LIMIT, sender.run())
        .await
        .unwrap();

    assert!(matches!(delivery, Delivery::GaveUp { .. }), "{delivery:?}");
    assert!(started.elapsed() < Duration::from_secs(1) + Duration::from_secs(20));
    let posts = dispatcher.posts();
    assert!(
        posts.len() >= 3,
        "retried before giving up: {} posts",
        posts.len()
    );
    assert!(posts.iter().all(|p| p.batch.first_seq == 0));
    let error = agent_runner::Error::Undelivered {
        waited: Duration::from_secs(1),
    };
    assert_eq!(error.exit_code(), 4);
}
