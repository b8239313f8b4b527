//! A Redis outage: the dispatcher says so (503) and loses nothing; when Redis returns,
//! everything proceeds, an open question and a message to its agent included. Uses its own redis-server so other tests are not disturbed.

use std::time::Duration;

use queue::JobState;
use secrecy::SecretString;
use serde_json::json;
use testkit::redis::RedisServer;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_gives_503s_and_work_proceeds_when_redis_returns() {
    // Every write reaches the disk before it is answered, so a SIGKILL loses nothing the
    // dispatcher was told was stored.
    let mut redis = RedisServer::new()
        .args(&["--appendonly", "yes", "--appendfsync", "always"])
        .started();
    let url = redis.url();
    let app = spawn_app(|s| {
        s.redis.url = SecretString::from(url);
        s.redis.timeout_secs = 1;
    })
    .await;
    let before = app.submit("ok", "before").await;
    app.wait_for_end(&before, Duration::from_secs(60)).await;

    redis.kill();
    let ready = app
        .http
        .get(format!("{}/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let (status, body) = app.post_job(json!({"agent": "ok", "task": "during"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    let shown = app
        .http
        .get(format!("{}/v1/jobs/{before}", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 503);
    let health = app
        .http
        .get(format!("{}/health", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the process itself is fine");

    // The same port and directory: the data comes back from the append-only file.
    redis
        .start()
        .unwrap_or_else(|e| panic!("restarting redis-server: {e}"));
    let back = wait_until(Duration::from_secs(30), || async {
        let r = app.http.get(format!("{}/ready", app.address)).send().await;
        r.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(back, "/ready recovers");
    let after = app.submit("ok", "after").await;
    let job = app.wait_for_end(&after, Duration::from_secs(60)).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(
        app.job(&before).await.state,
        JobState::Succeeded,
        "nothing was lost"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_question_and_a_message_outlive_a_redis_restart_and_arrive_once() {
    let mut redis = RedisServer::new()
        .args(&["--appendonly", "yes", "--appendfsync", "always"])
        .started();
    let url = redis.url();
    let app = spawn_app(|s| {
        s.redis.url = SecretString::from(url);
        s.redis.timeout_secs = 1;
        s.agents.insert(
            "asker".into(),
            sh_agent(
                "x=$(agent-runner ask 'Which one?' --choice a --choice b) || exit 9; echo \"chose $x\"; \
                 i=0; while [ ! -e \"$AGENTSMITH_INBOX/000001.json\" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; \
                 printf 'inbox: %s\\n' \"$(cat \"$AGENTSMITH_INBOX/000001.json\")\"; echo \"files: $(ls \"$AGENTSMITH_INBOX\" | wc -l)\"",
            ),
        );
    })
    .await;
    let id = app.submit("asker", "ask, then listen").await;
    app.wait_for_state(&id, JobState::WaitingForInput, Duration::from_secs(60))
        .await;
    let path = format!("/v1/jobs/{id}/messages");
    let (status, body) = app.post(&path, json!({"text": "use the v2 client"})).await;
    assert_eq!(status, 202, "{body}");

    // Redis goes away while the question is open and comes back from its append-only file.
    redis.kill();
    let (status, _) = app
        .post(&format!("/v1/jobs/{id}/answer"), json!({"text": "a"}))
        .await;
    assert_eq!(status, 503, "no answer is taken while Redis is away");
    redis
        .start()
        .unwrap_or_else(|e| panic!("restarting redis-server: {e}"));
    let back = wait_until(Duration::from_secs(30), || async {
        let r = app.http.get(format!("{}/ready", app.address)).send().await;
        r.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(back, "/ready recovers");
    let job = app.job(&id).await;
    assert_eq!(job.state, JobState::WaitingForInput, "{job:#?}");
    assert_eq!(job.question.map(|q| q.text).as_deref(), Some("Which one?"));

    let (status, body) = app
        .post(&format!("/v1/jobs/{id}/answer"), json!({"text": "b"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let job = app.wait_for_end(&id, Duration::from_secs(60)).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let lines = app.log_lines(&id).await;
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("chose b"), 1, "{lines:#?}");
    assert_eq!(count("chose a"), 0, "{lines:#?}");
    // The runner hands the message over once, and the agent finds one file.
    assert_eq!(
        count("agent-runner: a message from api: use the v2 client"),
        1,
        "{lines:#?}"
    );
    assert_eq!(count("inbox: "), 1, "{lines:#?}");
    assert!(lines.contains(&"files: 1".to_string()), "{lines:#?}");
    app.stop().await;
}
