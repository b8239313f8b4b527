//! A log audit: the dispatcher (at debug level) and the runner write no secret, token,
//! credential or raw webhook body, whatever passes through them (API calls, signed and
//! wrongly signed webhooks, replies that fail, a repository checked out and pushed to with a
//! token).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentsmith::token::RunnerTokens;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::helpers::*;

const API_TOKEN: &str = "audit-api-token-7d1c0e55aa";
const RUNNER_SECRET: &str = "audit-runner-secret-94be02";
const PROFILE_SECRET: &str = "audit-profile-secret-3f61";
const WRONG_TOKEN: &str = "audit-wrong-token-c0ffee11";
const GITHUB_SECRET: &str = "audit-github-webhook-secret-51a0";
const GITHUB_TOKEN: &str = "audit-github-reply-token-aa93";
const SLACK_SECRET: &str = "audit-slack-signing-secret-77e2";
const SLACK_BOT_TOKEN: &str = "xoxb-audit-slack-bot-token-0d4e";
const GIT_TOKEN: &str = "audit-git-token-5e7b19";
/// A marker in the webhook bodies: a raw body must never reach a log line.
const BODY_MARKER: &str = "audit-raw-body-marker-6c1f";
/// A marker in a Slack response_url, which is a credential for the conversation.
const RESPONSE_URL_MARKER: &str = "audit-response-url-marker-e5b2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_dispatcher_and_runner_hold_no_secret_or_token() {
    let dir = temp_dir("audit");
    let work = dir.join("work");
    let log_path = dir.join("dispatcher.log");
    let port = testkit::free_port();
    let git = testkit::git_server::GitServer::start(GIT_TOKEN).await;
    git.create_repo("audited", &[("README.md", "audited\n")], "main");
    let config_path = write_config(&dir, port, &work, &git.url("audited"));
    let dispatcher = Dispatcher::start(&config_path, port, &log_path).await;
    let id = call_the_api(&dispatcher).await;
    send_webhooks(&dispatcher).await;
    wait_for_the_work(&dispatcher, &id, &log_path).await;
    dispatcher.stop();

    let job_token = RunnerTokens::new(RUNNER_SECRET).issue(&id, 1);
    let mut files = vec![log_path.clone()];
    files_under(&work, &mut files);
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            (
                f.display().to_string(),
                std::fs::read_to_string(f).unwrap_or_default(),
            )
        })
        .collect();
    let all: String = texts.iter().map(|(_, t)| t.as_str()).collect();
    // The scan is not vacuous: the logs saw the job, the agent's output and the refusal.
    assert!(all.contains(&id), "the logs mention the job");
    assert!(
        all.contains("the secret is set"),
        "the runner's output was captured"
    );
    assert!(
        texts.len() >= 2,
        "dispatcher log and runner output: {files:?}"
    );
    assert!(
        all.contains("webhook refused"),
        "the refused delivery was logged"
    );
    // The webhook jobs checked the repository out with the token, and pushed with it.
    assert!(
        all.contains("checked out agentsmith/"),
        "the checkouts were logged"
    );
    let pushed: Vec<_> = git
        .branches("audited")
        .into_iter()
        .filter(|(name, _)| name.starts_with("agentsmith/"))
        .collect();
    assert_eq!(pushed.len(), 2, "both webhook jobs pushed: {pushed:?}");
    assert_no_secret_in(&texts, &job_token);
    let _ = std::fs::remove_dir_all(dir);
}

/// Writes into `dir` the configuration of a dispatcher on `port` (every secret a marked
/// value, replies pointed at a port where nothing listens); its path.
fn write_config(dir: &Path, port: u16, work: &Path, repo: &str) -> PathBuf {
    let config = format!(
        r#"server:
  bind: "127.0.0.1:{port}"
  runner_secret: "{RUNNER_SECRET}"
redis:
  url: "{redis}"
  prefix: "{prefix}"
api:
  tokens: ["{API_TOKEN}"]
log:
  format: json
spawner:
  process:
    runner_path: "{runner}"
    work_root: "{work}"
sources:
  github:
    enabled: true
    webhook_secret: "{GITHUB_SECRET}"
    token: "{GITHUB_TOKEN}"
    # Nothing listens there: the reply fails, and its failure is logged.
    api_base_url: "http://127.0.0.1:9"
  slack:
    enabled: true
    signing_secret: "{SLACK_SECRET}"
    bot_token: "{SLACK_BOT_TOKEN}"
    api_base_url: "http://127.0.0.1:9"
  replies:
    backoff_base_ms: 50
    max_attempts: 3
projects:
  audited:
    agent: audit
    repo: "{repo}"
    checkout:
      token: "{GIT_TOKEN}"
      pull_request:
        enabled: false
    github_repos: ["acme/audited"]
    jira_projects: ["AUD"]
    access:
      github:
        min_permission: none
agents:
  audit:
    command: ["sh", "-c", "echo working on $AGENTSMITH_TASK; echo audited >> README.md; test -n \"$SECRET_ENV\" && echo the secret is set"]
    env:
      SECRET_ENV: "{PROFILE_SECRET}"
"#,
        redis = redis_url(),
        prefix = random_prefix(),
        runner = runner_path().display(),
        work = work.display(),
    );
    let config_path = dir.join("agentsmith.yml");
    std::fs::write(&config_path, config).unwrap();
    config_path
}

/// The `agentsmith serve` binary, logging at debug level; killed when dropped unless it was
/// stopped.
pub(crate) struct Dispatcher {
    child: Child,
    base: String,
    pub(crate) http: reqwest::Client,
}

impl Dispatcher {
    /// Serves `config`, which binds `port`, with its log (stderr) in `log`; waits until it
    /// is ready.
    async fn start(config: &Path, port: u16, log: &Path) -> Self {
        Self::start_with(config, port, log, &[]).await
    }

    /// The same with `env` added to its environment.
    pub(crate) async fn start_with(
        config: &Path,
        port: u16,
        log: &Path,
        env: &[(&str, String)],
    ) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_agentsmith"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "debug")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let dispatcher = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let up = wait_until(Duration::from_secs(30), || async {
            dispatcher
                .http
                .get(dispatcher.url("/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(up, "the dispatcher did not get ready");
        dispatcher
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` with the API token, as JSON.
    async fn get(&self, path: &str) -> Value {
        let request = self.http.get(self.url(path)).bearer_auth(API_TOKEN);
        request.send().await.unwrap().json::<Value>().await.unwrap()
    }

    /// Stops it with SIGTERM, as a cluster would, and waits until it has exited.
    pub(crate) fn stop(mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the dispatcher did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A job refused with a wrong token and one submitted with the right one; the latter's id.
async fn call_the_api(dispatcher: &Dispatcher) -> String {
    let http = &dispatcher.http;
    let refused = http
        .post(dispatcher.url("/v1/jobs"))
        .bearer_auth(WRONG_TOKEN)
        .json(&json!({"agent": "audit", "task": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let created: Value = http
        .post(dispatcher.url("/v1/jobs"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"agent": "audit", "task": "audit me"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["id"].as_str().unwrap().to_string()
}

/// A wrongly signed and a signed GitHub delivery, and two signed Slack commands (one
/// malformed), all carrying markers that must not reach a log line; signed as the senders
/// sign, by [`testkit::sign`].
async fn send_webhooks(dispatcher: &Dispatcher) {
    let http = &dispatcher.http;
    let issue = json!({
        "action": "labeled",
        "issue": {"number": 5, "title": "audit", "body": BODY_MARKER},
        "label": {"name": "agent"},
        "repository": {"full_name": "acme/audited"},
        "sender": {"login": "auditor", "type": "User"}
    })
    .to_string();
    for (secret, expected) in [("wrong-secret", 401), (GITHUB_SECRET, 202)] {
        let answer = http
            .post(dispatcher.url("/webhooks/github"))
            .header("x-github-event", "issues")
            .header("x-github-delivery", format!("audit-{expected}"))
            .header(
                "x-hub-signature-256",
                testkit::sign::hub(secret, issue.as_bytes()),
            )
            .body(issue.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), expected);
    }
    let form = format!(
        "command=%2Fagent&text=fix+AUD-1+{BODY_MARKER}&user_id=U1&user_name=auditor&channel_id=C1&trigger_id=t1&response_url=http%3A%2F%2F127.0.0.1%3A9%2F{RESPONSE_URL_MARKER}"
    );
    let now = testkit::sign::unix_now();
    let command = |form: String| {
        http.post(dispatcher.url("/webhooks/slack/commands"))
            .header("x-slack-request-timestamp", now.to_string())
            .header(
                "x-slack-signature",
                testkit::sign::slack(SLACK_SECRET, now, form.as_bytes()),
            )
            .body(form)
    };
    let answer = command(form.clone()).send().await.unwrap();
    assert_eq!(
        answer.status(),
        200,
        "the malformed Slack command gets the usage"
    );
    let form = form.replace(&format!("+{BODY_MARKER}"), "");
    let answer = command(form).send().await.unwrap();
    let text = answer.text().await.unwrap();
    assert!(text.contains("Queued as"), "{text}");
}

/// Waits until the API's job and the two webhook jobs have succeeded and the webhook jobs'
/// replies have been tried (and failed: nothing listens).
async fn wait_for_the_work(dispatcher: &Dispatcher, id: &str, log_path: &Path) {
    let ended = wait_until(Duration::from_secs(60), || async {
        dispatcher.get(&format!("/v1/jobs/{id}")).await["state"] == "succeeded"
    })
    .await;
    assert!(ended, "the audited job did not succeed");
    let webhook_jobs_ended = wait_until(Duration::from_secs(60), || async {
        let page = dispatcher.get("/v1/jobs?project=audited").await;
        let jobs = page["jobs"].as_array().cloned().unwrap_or_default();
        jobs.len() == 2 && jobs.iter().all(|j| j["state"] == "succeeded")
    })
    .await;
    assert!(webhook_jobs_ended, "the webhook jobs did not succeed");
    let replies_tried = wait_until(Duration::from_secs(30), || async {
        std::fs::read_to_string(log_path)
            .unwrap_or_default()
            .contains("a reply will be tried again")
    })
    .await;
    assert!(replies_tried, "the failing replies were not logged");
}

/// Asserts that no file holds a secret, a token or a marker; the issue's description (the
/// marked body) only in the GitHub job's intent file, where it is by design.
fn assert_no_secret_in(texts: &[(String, String)], job_token: &str) {
    // The credential as git sends it, too.
    let git_basic = crate::checkout::basic("x-access-token", GIT_TOKEN);
    for secret in [
        API_TOKEN,
        RUNNER_SECRET,
        PROFILE_SECRET,
        WRONG_TOKEN,
        job_token,
        GITHUB_SECRET,
        GITHUB_TOKEN,
        SLACK_SECRET,
        SLACK_BOT_TOKEN,
        GIT_TOKEN,
        &git_basic,
        BODY_MARKER,
        RESPONSE_URL_MARKER,
    ] {
        for (file, text) in texts {
            // The ticket's description is the agent's input: it is in the intent file by
            // design, and in no log.
            if secret == BODY_MARKER && file.ends_with("intent.json") {
                continue;
            }
            assert!(!text.contains(secret), "{file} holds a secret ({secret})");
        }
    }
    assert!(
        texts
            .iter()
            .any(|(file, text)| file.ends_with("intent.json") && text.contains(BODY_MARKER)),
        "the GitHub job's intent carries the issue's description"
    );
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}
