//! The router alone, without a server: [`agentsmith::api::router`] over a context whose
//! spawner records what it is asked ([`RecordingSpawner`]), called with
//! [`tower::ServiceExt::oneshot`]. No scheduler runs, so these tests see exactly what a
//! route does by itself: they need Redis and nothing else, and are fast.

use std::sync::Arc;

use agentsmith::app::Application;
use agentsmith::context::Context;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use contract::{OutputStream, RunnerBatch, RunnerEvent, PROTOCOL_VERSION};
use queue::{JobEvent, JobFilter, JobState};
use serde_json::{json, Value};
use spawner::recording::{Call, RecordingSpawner};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::helpers::{random_prefix, test_settings, TOKEN};

/// A router over a fresh context (its own key prefix), and the spawner it was given.
struct Routed {
    router: Router,
    ctx: Arc<Context>,
    spawner: Arc<RecordingSpawner>,
}

impl Routed {
    async fn new() -> Self {
        let spawner = Arc::new(RecordingSpawner::new());
        let app = Application::build_with_spawner(
            test_settings(&random_prefix()),
            spawner.clone(),
            CancellationToken::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("building the dispatcher: {e:#}"));
        // The application is never run: nothing serves, schedules or keeps house.
        let ctx = app.context();
        Self {
            router: agentsmith::api::router(ctx.clone()),
            ctx,
            spawner,
        }
    }

    /// Sends `method path` (with `token` as a bearer token and `body` as JSON, if given);
    /// the status and the JSON body (`Null` if it is not JSON).
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("the request is well formed");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router's error type is Infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("the body can be read");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Submits a job for the `ok` agent with the API token; its id.
    async fn submit(&self, task: &str) -> String {
        let job = json!({"agent": "ok", "task": task});
        let (status, body) = self
            .call(Method::POST, "/v1/jobs", Some(TOKEN), Some(job))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["id"].as_str().expect("a job has an id").to_string()
    }

    /// How many jobs there are in this context's Redis.
    async fn job_count(&self) -> usize {
        let page = self.ctx.queue.list(&JobFilter::default(), None, 100).await;
        page.expect("redis answers").jobs.len()
    }

    /// Whether the spawner was asked to spawn anything.
    fn spawned(&self) -> bool {
        self.spawner
            .calls()
            .iter()
            .any(|call| matches!(call, Call::Spawn(_)))
    }
}

#[tokio::test]
async fn a_job_posted_with_the_token_is_202_and_queued_in_redis_without_a_spawn() {
    let routed = Routed::new().await;
    let id = routed.submit("fix PROJ-1").await;
    let job = routed
        .ctx
        .queue
        .get(&id)
        .await
        .expect("redis answers")
        .expect("the job is stored");
    assert_eq!(job.state, JobState::Queued, "{job:#?}");
    assert_eq!(
        (job.agent.as_str(), job.task.as_str()),
        ("ok", "fix PROJ-1")
    );
    assert_eq!(routed.job_count().await, 1);
    assert!(
        !routed.spawned(),
        "the router only queues; the scheduler spawns: {:?}",
        routed.spawner.calls()
    );
}

#[tokio::test]
async fn a_job_posted_without_the_token_or_with_a_wrong_one_is_401_and_queues_nothing() {
    let routed = Routed::new().await;
    let job = json!({"agent": "ok", "task": "fix PROJ-1"});
    for token in [None, Some("wrong-token-0000000000")] {
        let (status, body) = routed
            .call(Method::POST, "/v1/jobs", token, Some(job.clone()))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
    assert_eq!(routed.job_count().await, 0);
}

#[tokio::test]
async fn an_unknown_job_is_404_and_an_unknown_route_too() {
    let routed = Routed::new().await;
    let path = format!("/v1/jobs/{}", queue::new_job_id());
    let (status, body) = routed.call(Method::GET, &path, Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "unknown_job", "{body}");
    let (status, body) = routed
        .call(Method::GET, "/v1/no-such-thing", Some(TOKEN), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
}

#[tokio::test]
async fn the_runner_route_refuses_a_missing_token_or_one_of_another_job_or_attempt() {
    let routed = Routed::new().await;
    let id = routed.submit("fix PROJ-1").await;
    let other = routed.submit("fix PROJ-2").await;
    let batch = RunnerBatch {
        version: PROTOCOL_VERSION,
        attempt: 1,
        first_seq: 0,
        events: vec![RunnerEvent::Log {
            stream: OutputStream::Stdout,
            line: "forged".into(),
        }],
    };
    let batch = serde_json::to_value(&batch).expect("a batch serializes");
    let path = format!("/internal/jobs/{id}/events");
    let tokens = [
        ("no token", None),
        ("another job's", Some(routed.ctx.tokens.issue(&other, 1))),
        ("another attempt's", Some(routed.ctx.tokens.issue(&id, 2))),
        ("the API token", Some(TOKEN.to_string())),
    ];
    for (which, token) in tokens {
        let (status, body) = routed
            .call(Method::POST, &path, token.as_deref(), Some(batch.clone()))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{which}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{which}: {body}");
    }
    let events = routed
        .ctx
        .queue
        .events_after(&id, None, 100)
        .await
        .expect("redis answers");
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, JobEvent::Log { line, .. } if line == "forged")),
        "a refused batch is not recorded: {events:?}"
    );
    assert_eq!(
        routed.ctx.queue.get(&id).await.unwrap().unwrap().state,
        JobState::Queued
    );
}

#[tokio::test]
async fn ready_is_200_until_the_context_fails_then_503_saying_failed_and_why() {
    let routed = Routed::new().await;
    let (status, body) = routed.call(Method::GET, "/ready", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["backend"], "recording", "{body}");
    routed.ctx.fail("the scheduler ended: test");
    let (status, body) = routed.call(Method::GET, "/ready", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["failure"], "the scheduler ended: test", "{body}");
    let (status, _) = routed.call(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK, "the process itself is alive");
}

#[tokio::test]
async fn ready_is_503_naming_the_spawner_while_its_backend_is_unreachable() {
    let routed = Routed::new().await;
    routed.spawner.set_unreachable(true);
    let (status, body) = routed.call(Method::GET, "/ready", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["redis"], "ok", "{body}");
    assert_ne!(body["spawner"], "ok", "{body}");
    routed.spawner.set_unreachable(false);
    let (status, body) = routed.call(Method::GET, "/ready", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
