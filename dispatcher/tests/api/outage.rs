//! A Redis outage: the dispatcher says so (503) and loses nothing; when Redis returns,
//! everything proceeds. Uses its own redis-server so other tests are not disturbed.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use queue::JobState;
use secrecy::SecretString;
use serde_json::json;

use crate::helpers::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_redis(port: u16, dir: &Path) -> Child {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect(
            "redis-server is installed (scripts/test installs it: apt-get install redis-server)",
        );
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "redis-server did not start on port {port}");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_gives_503s_and_work_proceeds_when_redis_returns() {
    let dir = temp_dir("redis");
    let port = free_port();
    let mut redis = start_redis(port, &dir);
    let app = spawn_app(|s| {
        s.redis.url = SecretString::from(format!("redis://127.0.0.1:{port}"));
        s.redis.timeout_secs = 1;
    })
    .await;
    let before = app.submit("ok", "before").await;
    app.wait_for_end(&before, Duration::from_secs(60)).await;

    redis.kill().unwrap();
    redis.wait().unwrap();
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

    let mut redis = start_redis(port, &dir);
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
    redis.kill().unwrap();
    let _ = redis.wait();
    let _ = std::fs::remove_dir_all(dir);
}
