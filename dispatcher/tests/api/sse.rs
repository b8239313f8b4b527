//! `GET /v1/jobs/{id}/events`: replay, live follow, resume with Last-Event-ID.

use std::time::Duration;

use agentsmith::cli::client::{Client, SseEvent};
use queue::{JobEvent, JobState};

use crate::helpers::*;

async fn collect(client: &Client, id: &str) -> Vec<SseEvent> {
    let mut events = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(60),
        client.events(id, |e| {
            events.push(e);
            true
        }),
    )
    .await
    .expect("the stream ends when the job ends")
    .expect("the stream opens");
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_replays_history_then_follows_live_until_the_job_ends() {
    let app = spawn_app(|s| {
        s.agents.insert(
            "steps".into(),
            sh_agent("for i in 1 2 3; do echo step $i; sleep 0.3; done"),
        );
    })
    .await;
    let client = Client::new(&app.address, Some(TOKEN.into()));
    let id = app.submit("steps", "stream me").await;
    // Opened while the job is young: part replay, part live.
    let events = collect(&client, &id).await;
    let states: Vec<JobState> = events.iter().filter_map(|e| e.event.state()).collect();
    assert_eq!(states.first(), Some(&JobState::Queued));
    assert_eq!(states.last(), Some(&JobState::Succeeded));
    let lines: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            JobEvent::Log { line, .. } => Some(line.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(lines, ["step 1", "step 2", "step 3"]);
    // The stream and Redis agree, in order.
    let stored: Vec<String> = app.event_ids(&id).await;
    let streamed: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(streamed, stored);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_after_that_event() {
    let app = spawn_app(|_| {}).await;
    let id = app.submit("ok", "resume").await;
    app.wait_for_end(&id, Duration::from_secs(60)).await;
    let all: Vec<String> = app.event_ids(&id).await;
    assert!(all.len() >= 5, "{all:?}");
    let response = app
        .http
        .get(format!("{}/v1/jobs/{id}/events", app.address))
        .bearer_auth(TOKEN)
        .header("last-event-id", &all[2])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .unwrap()
        .unwrap();
    let resumed: Vec<String> = body
        .split("\n\n")
        .filter_map(agentsmith::cli::client::parse_sse)
        .map(|e| e.id)
        .collect();
    assert_eq!(resumed, all[3..].to_vec());
    let bad = app
        .http
        .get(format!("{}/v1/jobs/{id}/events", app.address))
        .bearer_auth(TOKEN)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_wide_feed_streams_every_jobs_state_changes_live() {
    use futures::StreamExt;
    use queue::FeedEvent;

    let app = spawn_app(|_| {}).await;
    let response = app
        .http
        .get(format!("{}/v1/events", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let unauthorized = app
        .http
        .get(format!("{}/v1/events", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let id = app.submit("ok", "watch me").await;
    let mut bytes = response.bytes_stream();
    let mut buffer = String::new();
    let mut states = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = bytes.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue;
                };
                let event: FeedEvent = serde_json::from_str(data).unwrap();
                if event.job_id == id {
                    states.push(event.event.state().unwrap());
                    if states.last() == Some(&JobState::Succeeded) {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the feed did not show the job finishing: {states:?}"
    );
    assert_eq!(
        states,
        [
            JobState::Queued,
            JobState::Starting,
            JobState::Running,
            JobState::Succeeded
        ]
    );
    app.stop().await;
}
