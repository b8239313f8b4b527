//! A log audit: the dispatcher (at debug level) and the runner write no secret, token or
//! credential, whatever passes through them.

use std::process::{Command, Stdio};
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

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_dispatcher_and_runner_hold_no_secret_or_token() {
    let dir = temp_dir("audit");
    let work = dir.join("work");
    let log_path = dir.join("dispatcher.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
agents:
  audit:
    command: ["sh", "-c", "echo working on $AGENTSMITH_TASK; test -n \"$SECRET_ENV\" && echo the secret is set"]
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
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentsmith"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let up = wait_until(Duration::from_secs(30), || async {
        http.get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(up, "the dispatcher did not get ready");

    let refused = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(WRONG_TOKEN)
        .json(&json!({"agent": "audit", "task": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let created: Value = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"agent": "audit", "task": "audit me"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let ended = wait_until(Duration::from_secs(60), || async {
        let job: Value = http
            .get(format!("{base}/v1/jobs/{id}"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        job["state"] == "succeeded"
    })
    .await;
    assert!(ended, "the audited job did not succeed");

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the dispatcher did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

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
    for secret in [
        API_TOKEN,
        RUNNER_SECRET,
        PROFILE_SECRET,
        WRONG_TOKEN,
        job_token.as_str(),
    ] {
        for (file, text) in &texts {
            assert!(!text.contains(secret), "{file} holds a secret ({secret})");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
