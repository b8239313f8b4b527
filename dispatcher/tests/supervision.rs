//! The background loops are supervised: one that dies turns `/ready` to 503, says why, and
//! ends the dispatcher with a failure (the process with a non-zero status), so an
//! orchestrator restarts it instead of leaving a replica that looks healthy and claims
//! nothing.

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use agentsmith::app::Application;
use agentsmith::settings::Settings;
use axum::body::Body;
use axum::http::Request;
use secrecy::SecretString;
use spawner::recording::RecordingSpawner;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

fn settings() -> Settings {
    let mut s = Settings::load_from(None, &[]).unwrap();
    s.redis.url = SecretString::from(testkit::redis::test_url());
    s.redis.prefix = format!("supervision-{:016x}:", rand::random::<u64>());
    s.server.bind = "127.0.0.1:0".into();
    s.server.shutdown_grace_secs = 5;
    s.spawner.reconcile_secs = 1;
    s
}

async fn ready(router: axum::Router) -> (u16, serde_json::Value) {
    let request = Request::get("/ready").body(Body::empty()).unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_that_dies_turns_ready_503_and_fails_the_dispatcher_with_its_cause() {
    // A backend bug: its upkeep panics once the test arms it, killing the watchdog.
    let trap = Arc::new(RecordingSpawner::new());
    let shutdown = CancellationToken::new();
    let app = Application::build_with_spawner(settings(), trap.clone(), shutdown.clone())
        .await
        .unwrap();
    let ctx = app.context();
    let address = format!("http://127.0.0.1:{}", app.port());
    let running = tokio::spawn(app.run());
    let http = reqwest::Client::new();
    let healthy = testkit::wait_until(Duration::from_secs(30), || async {
        let answer = http.get(format!("{address}/ready")).send().await;
        answer.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(healthy, "the dispatcher never became ready");

    trap.break_housekeeping_after(0);
    let ended = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the dispatcher ends once its watchdog dies, without being told to stop")
        .unwrap();
    let error = format!("{:#}", ended.unwrap_err());
    assert!(error.contains("watchdog"), "{error}");
    assert!(error.contains("housekeeping broke"), "{error}");
    assert!(shutdown.is_cancelled(), "the failure shuts everything down");

    let (status, body) = ready(agentsmith::api::router(ctx)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["failure"]
            .as_str()
            .unwrap_or_default()
            .contains("watchdog"),
        "{body}"
    );
}

#[test]
fn a_dead_loop_ends_the_process_with_a_non_zero_status_and_says_why() {
    // The example `dead_loop` is `agentsmith serve` with a spawner whose upkeep panics a
    // moment after start; cargo builds it with the tests.
    let exe = std::env::current_exe().unwrap();
    let examples = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples");
    let binary = examples.join("dead_loop");
    assert!(
        binary.exists(),
        "{} is missing: `cargo test -p agentsmith` builds it (or `cargo build -p agentsmith --examples`)",
        binary.display()
    );
    let port = testkit::free_port();
    let mut child = Command::new(&binary)
        .env("AGENTSMITH_TEST_REDIS_URL", testkit::redis::test_url())
        .env("DEAD_LOOP_PORT", port.to_string())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        text
    });
    // It must end by itself; the limit only stops a test that would otherwise hang.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the dispatcher was still running 120 s after its watchdog died");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: reader.join().unwrap().into_bytes(),
    };
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the process ended with success:\n{log}"
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "not killed, but failed:\n{log}"
    );
    assert!(log.contains("the watchdog loop ended"), "{log}");
    assert!(log.contains("housekeeping broke"), "{log}");
}
