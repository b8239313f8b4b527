//! The runner routes hold against a hostile sender: the one-time credential is spent once,
//! and whatever a runner (or an agent that got hold of its token) sends is bounded where it
//! is stored. The test plays the runner of a job whose workload a [`RecordingSpawner`]
//! "starts" (nothing runs), so it owns the sequence numbers.

use std::sync::Arc;
use std::time::Duration;

use contract::{
    AgentResult, Link, OutputStream, RunOutcome, RunnerBatch, RunnerEvent, TokenRequest,
    PROTOCOL_VERSION,
};
use queue::{JobEvent, JobState};
use serde_json::Value;
use spawner::recording::RecordingSpawner;

use crate::helpers::*;

const LIMIT: Duration = Duration::from_secs(30);

/// A dispatcher whose workloads run nothing, with one job started (state `starting`).
async fn started_job(
    customize: impl FnOnce(&mut agentsmith::settings::Settings),
) -> (TestApp, String) {
    let mut settings = test_settings(&random_prefix());
    customize(&mut settings);
    let app = start(settings, Some(Arc::new(RecordingSpawner::new()))).await;
    let id = app.submit("ok", "wall").await;
    app.wait_for_state(&id, JobState::Starting, LIMIT).await;
    (app, id)
}

impl TestApp {
    async fn exchange(&self, id: &str, credential: &str, nonce: &str) -> (u16, Value) {
        let request = TokenRequest {
            version: PROTOCOL_VERSION,
            attempt: 1,
            nonce: nonce.to_string(),
        };
        let response = self
            .http
            .post(format!("{}/internal/jobs/{id}/token", self.address))
            .bearer_auth(credential)
            .json(&request)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post_batch(
        &self,
        id: &str,
        first_seq: u64,
        events: Vec<RunnerEvent>,
    ) -> (u16, String) {
        let batch = RunnerBatch {
            version: PROTOCOL_VERSION,
            attempt: 1,
            first_seq,
            events,
        };
        let response = self
            .http
            .post(format!("{}/internal/jobs/{id}/events", self.address))
            .bearer_auth(self.ctx.tokens.issue(id, 1))
            .json(&batch)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

impl TestApp {
    /// Sends only the head of a batch post announcing `length` bytes; the status line.
    async fn announce_body(&self, id: &str, length: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = self.address.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
        let token = self.ctx.tokens.issue(id, 1);
        let head = format!(
            "POST /internal/jobs/{id}/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut reply = vec![0u8; 512];
        // Without a limit the server would wait for the body: no answer is a failure.
        let n = tokio::time::timeout(LIMIT, stream.read(&mut reply))
            .await
            .expect("the server answers before the body is sent")
            .unwrap();
        let reply = String::from_utf8_lossy(&reply[..n]).into_owned();
        reply.lines().next().unwrap_or_default().to_string()
    }
}

fn line(text: String) -> RunnerEvent {
    RunnerEvent::Log {
        stream: OutputStream::Stdout,
        line: text,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credential_is_exchanged_once_and_only_the_same_nonce_may_ask_again() {
    let (app, id) = started_job(|_| {}).await;
    let credential = app.ctx.tokens.credential(&id, 1);
    let runner_nonce = "n".repeat(32);

    let (status, body) = app.exchange(&id, &credential, &runner_nonce).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token"], app.ctx.tokens.issue(&id, 1), "{body}");
    // The runner's retry after a lost answer: the same nonce gets the token again.
    let (status, _) = app.exchange(&id, &credential, &runner_nonce).await;
    assert_eq!(status, 200);
    // The agent, which can read the credential but not the runner's nonce, gets nothing.
    let (status, body) = app.exchange(&id, &credential, &"a".repeat(32)).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.to_string().contains("already exchanged"), "{body}");
    // Nor does a forged credential, or the token offered as one.
    let (status, _) = app.exchange(&id, &"ab".repeat(32), &"b".repeat(32)).await;
    assert_eq!(status, 401);
    let token = app.ctx.tokens.issue(&id, 1);
    let (status, _) = app.exchange(&id, &token, &"c".repeat(32)).await;
    assert_eq!(status, 401);
    // A nonce too short to be a secret is refused as malformed.
    let (status, _) = app.exchange(&id, &credential, "short").await;
    assert_eq!(status, 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_attempt_exchanges_nothing() {
    let (app, id) = started_job(|_| {}).await;
    assert!(app.act(&id, "cancel").await.status().is_success());
    app.wait_for_end(&id, LIMIT).await;
    let credential = app.ctx.tokens.credential(&id, 1);
    let (status, _) = app.exchange(&id, &credential, &"n".repeat(32)).await;
    assert_eq!(
        status, 409,
        "the runner of a cancelled attempt is told to stop"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_are_cut_and_an_attempt_records_a_bounded_amount_of_output() {
    let (app, id) = started_job(|s| s.queue.output_bytes_per_attempt = 200 * 1024).await;
    // One 1 MiB line: recorded cut, with a note of the cut.
    let (status, body) = app
        .post_batch(
            &id,
            0,
            vec![RunnerEvent::Started, line("x".repeat(1 << 20))],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let lines = app.log_lines(&id).await;
    let long = lines.iter().find(|l| l.starts_with("xxx")).unwrap();
    assert!(
        long.len() <= queue::MAX_RECORDED_LINE_BYTES + 64,
        "{}",
        long.len()
    );
    assert!(
        long.ends_with("more bytes cut]"),
        "{}",
        &long[long.len() - 60..]
    );

    // Then 400 KiB more in 10 KiB lines: recorded up to the limit, then one notice.
    let events = (0..40)
        .map(|n| line(format!("{n:03}{}", "y".repeat(10 * 1024))))
        .collect();
    let (status, body) = app.post_batch(&id, 2, events).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .post_batch(&id, 42, vec![line("after the limit".into())])
        .await;
    assert_eq!(status, 200, "{body}");
    let lines = app.log_lines(&id).await;
    let notices = lines
        .iter()
        .filter(|l| l.contains("output truncated"))
        .count();
    assert_eq!(
        notices,
        1,
        "one notice: {:?}",
        lines
            .iter()
            .map(|l| &l[..l.len().min(40)])
            .collect::<Vec<_>>()
    );
    assert!(!lines.iter().any(|l| l == "after the limit"));
    let recorded: usize = lines.iter().map(String::len).sum();
    assert!(
        recorded < 220 * 1024,
        "{recorded} bytes recorded past a 200 KiB limit"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_batches_and_bodies_are_refused_and_results_are_bounded() {
    let (app, id) = started_job(|_| {}).await;
    let many = (0..1001).map(|n| line(n.to_string())).collect();
    let (status, body) = app.post_batch(&id, 0, many).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at most 1000 events"), "{body}");
    // 5 MiB announced in one request: over the runner route's limit of 4 MiB, refused
    // before its body is read. (Sending the body too races the refusal: the server may
    // close the connection while the client still writes.)
    let status = app.announce_body(&id, 5 << 20).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");

    let result = AgentResult {
        summary: Some("s".repeat(100_000)),
        links: (0..50)
            .map(|n| Link {
                title: None,
                url: format!("https://example.invalid/{n}"),
            })
            .chain(std::iter::once(Link {
                title: None,
                url: format!("https://example.invalid/{}", "u".repeat(5000)),
            }))
            .collect(),
    };
    let finished = RunnerEvent::Finished {
        outcome: RunOutcome::Exited { code: 0 },
        result: Some(result),
        change: None,
    };
    let (status, body) = app
        .post_batch(&id, 0, vec![RunnerEvent::Started, finished])
        .await;
    assert_eq!(status, 200, "{body}");
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded);
    let result = app
        .events(&id)
        .await
        .into_iter()
        .find_map(|(_, e)| match e {
            JobEvent::Result { result, .. } => Some(result),
            _ => None,
        })
        .unwrap();
    let summary = result.summary.unwrap();
    assert!(
        summary.len() <= queue::MAX_SUMMARY_BYTES + 64,
        "{}",
        summary.len()
    );
    assert_eq!(result.links.len(), queue::MAX_LINKS);
    assert!(result
        .links
        .iter()
        .all(|l| l.url.len() <= queue::MAX_URL_BYTES));
    app.stop().await;
}

/// A batch sent again (the runner did not hear the answer) is not timed again: the agent
/// starts once and runs once in `agentsmith_stage_seconds`, however often it is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_again_is_timed_once() {
    let (app, id) = started_job(|_| {}).await;
    for _ in 0..2 {
        let (status, body) = app.post_batch(&id, 0, vec![RunnerEvent::Started]).await;
        assert_eq!(status, 200, "{body}");
    }
    let finished = || RunnerEvent::Finished {
        outcome: RunOutcome::Exited { code: 0 },
        result: None,
        change: None,
    };
    let (status, body) = app.post_batch(&id, 1, vec![finished()]).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.post_batch(&id, 1, vec![finished()]).await;
    assert_eq!(status, 409, "an ended attempt stops its runner: {body}");
    let metrics = app.metrics_text().await;
    for stage in ["start", "run"] {
        let count = format!("agentsmith_stage_seconds_count{{stage=\"{stage}\",");
        let line = metrics.lines().find(|l| l.starts_with(&count));
        assert!(
            line.is_some_and(|l| l.ends_with(" 1")),
            "{stage}: {line:?} in\n{metrics}"
        );
    }
    app.stop().await;
}
