//! An `https://` callback: the runner trusts a private CA named by `SSL_CERT_FILE` (the
//! system store's override), as a runner behind a TLS-inspecting proxy or a dispatcher with
//! a private certificate needs, also when it is built on its own (`cargo build -p
//! agent-runner`, as `Dockerfile.agent` documents), where no other crate of the workspace
//! lends reqwest a TLS backend; and one signed by the CA a spawner mounted
//! (`AGENTSMITH_EXTRA_CA_FILE`), which the agent's tools trust too.

use contract::{OutputStream, RunOutcome};
use testkit::stand_in::{Answer, Dispatcher, Script};
use testkit::tls::{TestCa, TlsFront};

use crate::harness::launch;

/// The runner at `binary` reports a whole run over HTTPS, through a TLS front whose
/// certificate only the test's CA signed.
async fn reports_over_https(binary: &str) {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let ca = TestCa::new("callback");
    let front = TlsFront::start(dispatcher.addr(), &ca).await;
    let launch = launch(&dispatcher, &["sh", "-c", "echo over https"]);
    let url = format!("{}/internal/jobs/{}/events", front.url(), launch.job_id);
    let mut runner = launch
        .binary(binary)
        .var(contract::env::CALLBACK_URL, url)
        .var("SSL_CERT_FILE", ca.ca_file().display())
        .start();
    runner.exits_with(0).await;
    assert_eq!(
        dispatcher.lines(OutputStream::Stdout),
        ["over https"],
        "{}",
        runner.diagnostics()
    );
    assert_eq!(
        dispatcher.finished().map(|(outcome, _)| outcome),
        Some(RunOutcome::Exited { code: 0 })
    );
    assert!(front.handshakes() >= 1, "nothing came over TLS");
}

#[tokio::test]
async fn an_https_callback_signed_by_a_private_ca_is_trusted_through_ssl_cert_file() {
    reports_over_https(env!("CARGO_BIN_EXE_agent-runner")).await;
}

#[tokio::test]
#[ignore = "needs the runner built on its own: cargo build -p agent-runner --target-dir target/runner-alone, and AGENTSMITH_TEST_RUNNER_ALONE=target/runner-alone/debug/agent-runner (scripts/test does both)"]
async fn a_runner_built_on_its_own_reports_over_https() {
    let binary = std::env::var("AGENTSMITH_TEST_RUNNER_ALONE").expect(
        "AGENTSMITH_TEST_RUNNER_ALONE names the runner built on its own: \
         cargo build -p agent-runner --target-dir target/runner-alone, \
         then AGENTSMITH_TEST_RUNNER_ALONE=target/runner-alone/debug/agent-runner",
    );
    // A relative path is the workspace's (tests run in the package's directory).
    let binary = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(binary);
    reports_over_https(&binary.display().to_string()).await;
}

/// `AGENTSMITH_EXTRA_CA_FILE`, as a spawner sets it: the runner reports through a front only
/// that CA signed, and the agent's tools trust it too, joined with the public roots.
#[tokio::test]
async fn an_extra_ca_file_is_trusted_by_the_runner_and_given_to_the_agent() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let ca = TestCa::new("private");
    let front = TlsFront::start(dispatcher.addr(), &ca).await;
    let git = testkit::git_server::GitServer::start("the-token").await;
    git.create_repo("shop", &[("README.md", "private\n")], "main");
    let authority = git
        .url("shop")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let git_front = TlsFront::start(authority.parse().unwrap(), &ca).await;
    let repo = git_front.url().replace("https://", "https://x:the-token@") + "/shop.git";
    let script = format!(
        "grep -c 'BEGIN CERTIFICATE' \"$SSL_CERT_FILE\" | awk '{{print ($1 > 1) ? \"public and private\" : \"private only\"}}'; \
         [ \"$GIT_SSL_CAINFO\" = \"$SSL_CERT_FILE\" ] && [ \"$CURL_CA_BUNDLE\" = \"$SSL_CERT_FILE\" ] && echo one bundle; \
         echo \"node: $NODE_EXTRA_CA_CERTS\"; \
         GIT_TERMINAL_PROMPT=0 git ls-remote {repo} refs/heads/main | cut -f2"
    );
    let launch = launch(&dispatcher, &["sh", "-c", &script]);
    let url = format!("{}/internal/jobs/{}/events", front.url(), launch.job_id);
    let mut runner = launch
        .var(contract::env::CALLBACK_URL, url)
        .var(contract::env::EXTRA_CA_FILE, ca.ca_file().display())
        .start();
    runner.exits_with(0).await;
    assert_eq!(
        dispatcher.lines(OutputStream::Stdout),
        [
            "public and private".to_string(),
            "one bundle".to_string(),
            format!("node: {}", ca.ca_file().display()),
            "refs/heads/main".to_string(),
        ],
        "{}",
        runner.diagnostics()
    );
    assert!(front.handshakes() >= 1, "nothing came over TLS");
    assert!(
        git_front.handshakes() >= 1,
        "the agent's git did not come over TLS"
    );
}

#[tokio::test]
async fn an_extra_ca_file_that_holds_no_certificate_fails_the_runner_naming_it() {
    let dispatcher = Dispatcher::start(Script::always(Answer::Ok)).await;
    let dir = testkit::temp::TempDir::new("extra-ca");
    let junk = dir.path().join("ca.crt");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let mut runner = launch(&dispatcher, &["true"])
        .var(contract::env::EXTRA_CA_FILE, junk.display())
        .start();
    runner.exits_with(2).await;
    assert!(
        runner.diagnostics().contains("AGENTSMITH_EXTRA_CA_FILE"),
        "{}",
        runner.diagnostics()
    );
}
