//! The HTTP API's answers to good and bad requests.

use std::time::Duration;

use contract::{RunnerBatch, RunnerEvent, PROTOCOL_VERSION};
use queue::JobState;
use serde_json::{json, Value};

use crate::helpers::*;

async fn job_count(app: &TestApp) -> usize {
    app.ctx
        .queue
        .list(&queue::JobFilter::default(), None, 500)
        .await
        .unwrap()
        .jobs
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_is_401_and_queues_nothing() {
    let app = spawn_app(|_| {}).await;
    for auth in [
        None,
        Some("Bearer wrong-token-0000000000"),
        Some("Basic abc"),
    ] {
        let mut request = app
            .http
            .post(format!("{}/v1/jobs", app.address))
            .json(&json!({"agent": "ok", "task": "x"}));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let listed = app
        .http
        .get(format!("{}/v1/jobs", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 401);
    assert_eq!(job_count(&app).await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400_naming_the_problem_and_queue_nothing() {
    let app = spawn_app(|_| {}).await;
    for (body, expected) in [
        ("{\"agent\": \"ok\"}", "task"),
        ("{\"agent\": \"ok\", \"task\": 5}", "task"),
        (
            "{\"agent\": \"ok\", \"task\": \"x\", \"colour\": \"red\"}",
            "colour",
        ),
        ("{\"task\": \"x\"}", "agent"),
        ("{\"agent\": \"ok\", \"task\": \"  \"}", "task"),
        (
            "{\"agent\": \"ok\", \"task\": \"x\", \"concurrency_key\": \"has space\"}",
            "concurrency_key",
        ),
        ("not json", "invalid job body"),
    ] {
        let response = app
            .http
            .post(format!("{}/v1/jobs", app.address))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body} -> {message}");
    }
    // A body over the limit is refused from its declared length, before it is read. (The
    // request is written by hand: a client still sending the body when the refusal comes
    // would see its write fail instead of the answer.)
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        2 * 1024 * 1024
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncReadExt::read(&mut stream, &mut answer),
    )
    .await
    .expect("the refusal comes without the body being sent")
    .unwrap();
    let status_line = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(
        status_line.starts_with("HTTP/1.1 413"),
        "bodies are size-limited: {status_line}"
    );
    assert_eq!(job_count(&app).await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_profile_project_or_job_is_404() {
    let app = spawn_app(|_| {}).await;
    let (status, body) = app.post_job(json!({"agent": "nope", "task": "x"})).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_agent");
    let (status, body) = app.post_job(json!({"project": "nope", "task": "x"})).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_project");
    for path in [
        "/v1/jobs/zzzzzzzzzzzz",
        "/v1/jobs/zzzzzzzzzzzz/events",
        "/v1/jobs/..%2f..%2fetc",
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let response = app
        .http
        .post(format!("{}/v1/jobs/zzzzzzzzzzzz/cancel", app.address))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(job_count(&app).await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_idempotency_key_returns_the_first_job() {
    let app = spawn_app(|_| {}).await;
    let body = json!({"agent": "ok", "task": "once", "idempotency_key": "delivery-42"});
    let (first_status, first) = app.post_job(body.clone()).await;
    let (second_status, second) = app.post_job(body).await;
    assert_eq!(first_status, 202);
    assert_eq!(second_status, 200);
    assert_eq!(first["id"], second["id"]);
    let (_, other) = app
        .post_job(json!({"agent": "ok", "task": "once", "idempotency_key": "delivery-43"}))
        .await;
    assert_ne!(first["id"], other["id"]);
    assert_eq!(job_count(&app).await, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_token_of_one_job_is_refused_for_another() {
    let app = spawn_app(|s| {
        s.agents.insert("sleepy".into(), sh_agent("exec sleep 20"));
    })
    .await;
    let a = app.submit("sleepy", "a").await;
    let b = app.submit("sleepy", "b").await;
    app.wait_for_state(&b, JobState::Running, Duration::from_secs(60))
        .await;
    let batch = RunnerBatch {
        version: PROTOCOL_VERSION,
        attempt: 1,
        first_seq: 1000,
        events: vec![RunnerEvent::Log {
            stream: contract::OutputStream::Stdout,
            line: "forged".into(),
        }],
    };
    let token_a = app.ctx.tokens.issue(&a, 1);
    let forged = app
        .http
        .post(format!("{}/internal/jobs/{b}/events", app.address))
        .bearer_auth(&token_a)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert!(!app.log_lines(&b).await.contains(&"forged".to_string()));
    // Even with B's own token, a batch that jumps past B's sequence is refused: a second
    // writer cannot make the runner's later events look like repeats.
    let token_b = app.ctx.tokens.issue(&b, 1);
    let jumped = app
        .http
        .post(format!("{}/internal/jobs/{b}/events", app.address))
        .bearer_auth(&token_b)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(jumped.status(), 400);
    let body = jumped.text().await.unwrap();
    assert!(body.contains("sequence gap"), "{body}");
    assert!(!app.log_lines(&b).await.contains(&"forged".to_string()));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_filters_by_state_and_pages() {
    let app = spawn_app(|_| {}).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(app.submit("fail", &format!("t{n}")).await);
    }
    for id in &ids {
        app.wait_for_end(id, Duration::from_secs(60)).await;
    }
    let ok = app.submit("ok", "fine").await;
    app.wait_for_end(&ok, Duration::from_secs(60)).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/jobs?state=failed&limit=2", app.address);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app
            .http
            .get(url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for job in page["jobs"].as_array().unwrap() {
            assert_eq!(job["state"], "failed");
            seen.push(job["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected, "newest first, each once");
    let bad = app
        .http
        .get(format!("{}/v1/jobs?state=done", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_version_and_metrics_answer() {
    let app = spawn_app(|_| {}).await;
    let id = app.submit("ok", "measure").await;
    app.wait_for_end(&id, Duration::from_secs(60)).await;
    for path in ["/health", "/ready", "/version"] {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let metrics = app.metrics_text().await;
    for needle in [
        "agentsmith_jobs_entered_total{state=\"succeeded\"} 1",
        "agentsmith_jobs{state=\"running\"} 0",
        "agentsmith_queue_waiting 0",
        "agentsmith_jobs_admitted 0",
        "agentsmith_spawn_latency_seconds_count 1",
        "agentsmith_job_end_to_end_seconds_count 1",
        "agentsmith_http_requests_total{route=\"/v1/jobs\",method=\"POST\",status=\"202\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_filters_by_project() {
    let app = spawn_app(|s| {
        s.projects.insert(
            "shop".into(),
            agentsmith::settings::ProjectSettings {
                repo: "git@example.invalid:shop.git".into(),
                agent: "ok".into(),
                // Only named, never checked out: the repository does not exist.
                checkout: agentsmith::settings::CheckoutSettings {
                    enabled: false,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
    })
    .await;
    let (status, in_project) = app
        .post_job(json!({"project": "shop", "task": "in shop"}))
        .await;
    assert_eq!(status, 202, "{in_project}");
    assert_eq!(
        in_project["agent"], "ok",
        "the project's agent is the default"
    );
    assert_eq!(in_project["repo"], "git@example.invalid:shop.git");
    app.submit("ok", "elsewhere").await;
    let page: Value = app
        .http
        .get(format!("{}/v1/jobs?project=shop", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [in_project["id"].as_str().unwrap()]);
    app.stop().await;
}
