//! A Redis outage: the dispatcher says so (503) and loses nothing; when Redis returns,
//! everything proceeds. Uses its own redis-server so other tests are not disturbed.

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
