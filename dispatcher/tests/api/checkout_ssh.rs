//! The checkout over SSH, on the process backend with a real `sshd` (testkit's SshServer)
//! serving the bare repositories of a real git server: the runner checks out and pushes with
//! the project's key, trusts only the configured host keys, and leaves the key nowhere the
//! agent or a record could show it.

use agentsmith::settings::{AgentSettings, CheckoutSettings};
use contract::Change;
use queue::JobState;
use secrecy::SecretString;
use testkit::git_server::GitServer;
use testkit::ssh_server::SshServer;

use crate::checkout::{project_app, run};
use crate::helpers::{sh_agent, TestApp};

/// A dispatcher with project `shop` at `repo` over SSH, read and pushed with `key` and
/// trusting `known_hosts`, run by `agent`; one attempt per job.
async fn ssh_app(repo: String, key: String, known_hosts: String, agent: AgentSettings) -> TestApp {
    let checkout = CheckoutSettings {
        ssh_key: SecretString::from(key),
        known_hosts,
        ..Default::default()
    };
    project_app(repo, "", checkout, agent).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_ssh_the_work_is_checked_out_and_pushed_and_the_key_is_nowhere() {
    let git = GitServer::start("unused-over-ssh").await;
    git.create_repo("shop", &[("README.md", "hello over ssh\n")], "main");
    let ssh = SshServer::start();
    let key = ssh.client_key();
    // The agent looks for the key where it could be: its environment, git's configuration,
    // the runner's key directories; then changes the README.
    let agent = sh_agent(
        "set -e; cat README.md; echo \"branch: $(git branch --show-current)\"; \
         env | sed 's/^/env: /'; git config --list | sed 's/^/config: /'; \
         echo \"key dirs: $(ls -d \"${TMPDIR:-/tmp}\"/agentsmith-ssh-* 2>/dev/null | wc -l)\"; \
         echo 'fixed over ssh' >> README.md",
    );
    let app = ssh_app(
        ssh.url(&git.repo_dir("shop")),
        key.clone(),
        ssh.known_hosts(),
        agent,
    )
    .await;
    let (id, job) = run(&app, "SHOP-21").await;
    let lines = app.log_lines(&id).await;
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{job:#?}\n{lines:#?}\n{}",
        ssh.log()
    );
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(
        has("hello over ssh") && has("branch: agentsmith/SHOP-21"),
        "{lines:#?}"
    );
    assert!(has("key dirs: 0"), "{lines:#?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("env: GIT_SSH") || l.contains("sshcommand")),
        "{lines:#?}"
    );
    assert_eq!(
        git.file_at("shop", "agentsmith/SHOP-21", "README.md")
            .as_deref(),
        Some("hello over ssh\nfixed over ssh\n")
    );
    assert!(
        matches!(&job.change, Some(Change::Pushed { branch, files: 1, .. }) if branch == "agentsmith/SHOP-21"),
        "{:?}",
        job.change
    );
    // sshd saw the key, and only it.
    assert!(ssh.log().contains("Accepted publickey"), "{}", ssh.log());

    let events = app.events_text(&id).await;
    let record = serde_json::to_string(&app.job(&id).await).unwrap();
    let body: Vec<&str> = key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 8)
        .collect();
    assert!(!body.is_empty());
    for (what, text) in [
        ("the output", &lines.join("\n")),
        ("the events", &events),
        ("the record", &record),
    ] {
        assert!(
            body.iter().all(|l| !text.contains(l)),
            "the key is in {what}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_ssh_a_host_key_that_is_not_trusted_or_a_key_that_is_refused_fails_the_checkout() {
    let git = GitServer::start("unused-over-ssh").await;
    git.create_repo("shop", &[("README.md", "hello over ssh\n")], "main");
    let ssh = SshServer::start();
    for (key, known_hosts, says) in [
        (
            ssh.client_key(),
            ssh.stranger_known_hosts(),
            "Host key verification failed",
        ),
        (ssh.stranger_key(), ssh.known_hosts(), "Permission denied"),
    ] {
        let agent = sh_agent("echo the agent ran");
        let app = ssh_app(ssh.url(&git.repo_dir("shop")), key, known_hosts, agent).await;
        let (id, job) = run(&app, "SHOP-22").await;
        let lines = app.log_lines(&id).await;
        assert_eq!(job.state, JobState::Failed, "{job:#?}\n{lines:#?}");
        let reason = job.reason.clone().unwrap_or_default();
        assert!(
            reason.contains("the checkout failed") && reason.contains(says),
            "{reason}"
        );
        assert!(!lines.iter().any(|l| l == "the agent ran"), "{lines:#?}");
        app.stop().await;
    }
}
