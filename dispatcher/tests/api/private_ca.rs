//! A provider behind a private CA (a GitHub Enterprise, a GitLab with its own certificate, a
//! TLS-inspecting proxy): the dispatcher's replies reach it over HTTPS when `SSL_CERT_FILE`
//! names a bundle holding that CA (what the chart's `extraCaBundle` sets), and are refused
//! without it. The dispatcher runs as its own process, so the variable is its alone.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use testkit::fake_api::FakeApi;
use testkit::tls::{TestCa, TlsFront};

use crate::audit::Dispatcher;
use crate::helpers::*;

const SECRET: &str = "private-ca-webhook-secret";

/// A dispatcher on `port` whose GitHub replies go to `api`; one project, `acme/shop`, open to
/// anyone, whose agent says hello.
fn write_config(dir: &Path, port: u16, api: &str) -> std::path::PathBuf {
    let config = format!(
        r#"server:
  bind: "127.0.0.1:{port}"
redis:
  url: "{redis}"
  prefix: "{prefix}"
spawner:
  process:
    runner_path: "{runner}"
    work_root: "{work}"
sources:
  github:
    enabled: true
    webhook_secret: "{SECRET}"
    token: "github-reply-token"
    api_base_url: "{api}"
  replies:
    backoff_base_ms: 50
    max_attempts: 2
projects:
  shop:
    agent: hello
    github_repos: ["acme/shop"]
    access:
      github:
        min_permission: none
agents:
  hello:
    command: ["sh", "-c", "echo hello"]
"#,
        redis = redis_url(),
        prefix = random_prefix(),
        runner = runner_path().display(),
        work = dir.join("work").display(),
    );
    let path = dir.join("agentsmith.yml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Labels issue 7 of acme/shop for the agent.
async fn label_issue(dispatcher: &Dispatcher) {
    let issue = json!({
        "action": "labeled",
        "issue": {"number": 7, "title": "Fix the cart", "body": ""},
        "label": {"name": "agent"},
        "repository": {"full_name": "acme/shop"},
        "sender": {"login": "ann", "type": "User"}
    })
    .to_string();
    let answer = dispatcher
        .http
        .post(dispatcher.url("/webhooks/github"))
        .header("x-github-event", "issues")
        .header("x-github-delivery", random_prefix())
        .header(
            "x-hub-signature-256",
            testkit::sign::hub(SECRET, issue.as_bytes()),
        )
        .body(issue)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_reach_a_provider_behind_a_private_ca_named_by_ssl_cert_file_and_no_other() {
    let fake = FakeApi::start().await;
    let plain: SocketAddr = fake.url.trim_start_matches("http://").parse().unwrap();
    let ca = TestCa::new("provider");
    let front = TlsFront::start(plain, &ca).await;

    // Without the bundle: the provider's certificate is not trusted (the reason is logged),
    // no handshake completes, and nothing arrives.
    let dir = temp_dir("private-ca-untrusted");
    let port = testkit::free_port();
    let log = dir.join("dispatcher.log");
    let config = write_config(&dir, port, &front.url());
    let dispatcher = Dispatcher::start_with(&config, port, &log, &[]).await;
    label_issue(&dispatcher).await;
    let refused = wait_until(Duration::from_secs(60), || async {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("UnknownIssuer"))
    })
    .await;
    dispatcher.stop();
    assert!(
        refused,
        "no certificate error logged: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(fake.requests().is_empty(), "{:#?}", fake.requests());
    assert_eq!(front.handshakes(), 0);

    // With it: the replies come over HTTPS.
    let dir = temp_dir("private-ca-trusted");
    let port = testkit::free_port();
    let log = dir.join("dispatcher.log");
    let config = write_config(&dir, port, &front.url());
    let bundle = [("SSL_CERT_FILE", ca.ca_file().display().to_string())];
    let dispatcher = Dispatcher::start_with(&config, port, &log, &bundle).await;
    label_issue(&dispatcher).await;
    let comment = fake
        .wait_for("a comment on issue 7", Duration::from_secs(60), |r| {
            r.path.contains("/repos/acme/shop/issues/7/comments")
        })
        .await;
    dispatcher.stop();
    assert_eq!(
        comment.header("authorization"),
        Some("Bearer github-reply-token")
    );
    assert!(front.handshakes() >= 1);
}
