//! The test harness: [`spawn_app`] starts a dispatcher on port 0 against the test Redis,
//! isolated by a random key prefix, with the real process spawner running the real
//! `agent-runner`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentsmith::app::Application;
use agentsmith::context::Context;
use agentsmith::settings::{AgentSettings, Settings};
use queue::{Job, JobState};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use spawner::{Fleet, JobSpawner};
use tokio_util::sync::CancellationToken;

pub use testkit::wait_until;

/// The API token every test app accepts.
pub const TOKEN: &str = "test-token-0123456789";

/// The Redis the tests use (`AGENTSMITH_TEST_REDIS_URL`, default the local one), after
/// checking that it answers: a test that needs Redis fails at once, naming the command that
/// starts one, when none does.
pub fn redis_url() -> String {
    testkit::redis::test_url()
}

/// The `agent-runner` binary built next to the test binaries.
pub fn runner_path() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binaries live in target/<profile>/deps");
    let runner = dir.join("agent-runner");
    assert!(
        runner.exists(),
        "{} is missing: build it first with `cargo build -p agent-runner` (scripts/test does)",
        runner.display()
    );
    runner
}

/// A fresh temporary directory, left behind for a look after a failure (see
/// [`testkit::temp::TempDir`] for one removed when dropped).
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(testkit::temp::unique(&format!("agentsmith-test-{tag}")));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// An agent profile running `script` with `sh -c`.
pub fn sh_agent(script: &str) -> AgentSettings {
    AgentSettings {
        command: vec!["sh".into(), "-c".into(), script.into()],
        image: String::new(),
        env: BTreeMap::new(),
        secret_env: BTreeMap::new(),
        timeout_secs: 60,
        retry_on_failure: false,
        memory: None,
        cpus: None,
        pids_limit: 0,
        disk: None,
        writable_root: false,
        service_account_token: false,
        targets: Vec::new(),
        overflow: Default::default(),
        approval: Default::default(),
        approval_timeout_secs: 1800,
    }
}

/// Settings for a test: fast leases and ticks, a random prefix, the test agents.
pub fn test_settings(prefix: &str) -> Settings {
    let mut s = Settings::load_from(None, &[]).expect("built-in defaults load");
    s.server.bind = "127.0.0.1:0".into();
    s.server.shutdown_grace_secs = 5;
    s.server.runner_secret = SecretString::from("test-runner-secret-0123456789");
    s.redis.url = SecretString::from(redis_url());
    s.redis.prefix = prefix.to_string();
    s.redis.timeout_secs = 2;
    s.api.tokens = vec![SecretString::from(TOKEN)];
    s.queue.lease_secs = 3;
    s.queue.heartbeat_secs = 1;
    s.queue.tick_ms = 100;
    s.queue.backoff_base_secs = 1;
    s.queue.backoff_max_secs = 2;
    s.queue.reclaim_idle_secs = 2;
    s.queue.start_timeout_secs = 20;
    s.spawner.grace_secs = 2;
    s.spawner.process.runner_path = runner_path();
    s.spawner.process.work_root = temp_dir("work");
    s.agents = BTreeMap::from([
        ("ok".to_string(), sh_agent(
            "echo \"working on $AGENTSMITH_TASK\"; echo to-stderr >&2; \
             printf '{\"summary\":\"fixed %s\",\"links\":[{\"url\":\"http://example.invalid/pr/1\"}]}' \"$AGENTSMITH_TASK\" > \"$AGENTSMITH_RESULT_FILE\"",
        )),
        ("fail".to_string(), sh_agent("echo about to fail; exit 3")),
    ]);
    s
}

/// A running dispatcher.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// Its shared context.
    pub ctx: Arc<Context>,
    /// Cancel to stop it.
    pub shutdown: CancellationToken,
    /// The task running it.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// An HTTP client.
    pub http: reqwest::Client,
}

/// A random key prefix for one test.
pub fn random_prefix() -> String {
    format!("test-{:016x}:", rand::random::<u64>())
}

/// Starts a dispatcher with the test settings, changed by `customize`.
pub async fn spawn_app(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings(&random_prefix());
    customize(&mut settings);
    start(settings, None).await
}

/// Starts a dispatcher with these settings and, if given, this spawner (as its only target).
pub async fn start(settings: Settings, spawner: Option<Arc<dyn JobSpawner>>) -> TestApp {
    let cap = settings.spawner.max_concurrent_jobs;
    start_on(settings, spawner.map(|s| Fleet::single(s, cap))).await
}

/// Starts a dispatcher with these settings and, if given, these spawner targets (else the
/// ones the settings make).
pub async fn start_on(settings: Settings, fleet: Option<Fleet>) -> TestApp {
    let shutdown = CancellationToken::new();
    let url = agentsmith::app::redacted_url(settings.redis.url.expose_secret());
    let app = match fleet {
        Some(fleet) => Application::build_with_fleet(settings, fleet, shutdown.clone()).await,
        None => Application::build(settings, shutdown.clone()).await,
    }
    .unwrap_or_else(|e| {
        panic!(
            "the dispatcher did not start ({e:#}); is Redis running at {url}? {}",
            testkit::redis::START
        )
    });
    let address = match app.local_addr() {
        Some(addr) if !addr.ip().is_unspecified() => format!("http://{addr}"),
        _ => format!("http://127.0.0.1:{}", app.port()),
    };
    let ctx = app.context();
    let task = tokio::spawn(app.run());
    TestApp {
        address,
        ctx,
        shutdown,
        task,
        http: reqwest::Client::new(),
    }
}

impl TestApp {
    /// `POST /v1/jobs` with the test token; the status and the body.
    pub async fn post_job(&self, body: Value) -> (u16, Value) {
        self.post("/v1/jobs", body).await
    }

    /// `POST` `body` (JSON) to `path` with the test token; the status and the body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.address))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("the dispatcher answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST /v1/jobs/{id}/{action}` (cancel, retry) with the test token.
    pub async fn act(&self, id: &str, action: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/jobs/{id}/{action}", self.address))
            .bearer_auth(TOKEN)
            .json(&json!({}))
            .send()
            .await
            .expect("the dispatcher answers")
    }

    /// Submits a job for `agent` and returns its id.
    pub async fn submit(&self, agent: &str, task: &str) -> String {
        let (status, body) = self.post_job(json!({"agent": agent, "task": task})).await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().expect("a job has an id").to_string()
    }

    /// The job, read straight from Redis.
    pub async fn job(&self, id: &str) -> Job {
        self.ctx
            .queue
            .get(id)
            .await
            .expect("redis answers")
            .expect("the job exists")
    }

    /// Waits until `done` holds for the job; panics with the job if it does not in time.
    pub async fn wait_for(
        &self,
        id: &str,
        what: &str,
        limit: Duration,
        done: impl Fn(&Job) -> bool,
    ) -> Job {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} did not reach {what} within {limit:?}: {job:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the job reaches `state`.
    pub async fn wait_for_state(&self, id: &str, state: JobState, limit: Duration) -> Job {
        self.wait_for(id, state.as_str(), limit, |j| j.state == state)
            .await
    }

    /// Waits until the job has ended and returns it.
    pub async fn wait_for_end(&self, id: &str, limit: Duration) -> Job {
        self.wait_for(id, "an end", limit, |j| j.state.is_terminal())
            .await
    }

    /// All events of a job, from Redis.
    pub async fn events(&self, id: &str) -> Vec<(String, queue::JobEvent)> {
        self.ctx
            .queue
            .events_after(id, None, 10_000)
            .await
            .expect("redis answers")
    }

    /// The text of `/metrics` (asked without a token, as a scraper may).
    pub async fn metrics_text(&self) -> String {
        let response = self
            .http
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// The JSON answer to `GET path` with the API token: 200.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.address))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// The ids of a job's stored events, oldest first.
    pub async fn event_ids(&self, id: &str) -> Vec<String> {
        self.events(id)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// The log lines of a job.
    pub async fn log_lines(&self, id: &str) -> Vec<String> {
        self.events(id)
            .await
            .into_iter()
            .filter_map(|(_, e)| match e {
                queue::JobEvent::Log { line, .. } => Some(line),
                _ => None,
            })
            .collect()
    }

    /// The job's events as one JSON text, for what must never appear in them.
    pub async fn events_text(&self, id: &str) -> String {
        let events: Vec<queue::JobEvent> =
            self.events(id).await.into_iter().map(|(_, e)| e).collect();
        serde_json::to_string(&events).expect("events serialise")
    }

    /// The reasons the job's state changes gave, in order.
    pub async fn state_reasons(&self, id: &str) -> Vec<String> {
        self.events(id)
            .await
            .into_iter()
            .filter_map(|(_, e)| match e {
                queue::JobEvent::State { reason, .. } => reason,
                _ => None,
            })
            .collect()
    }

    /// Stops the dispatcher and waits for it to drain.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

/// A dispatcher with one job whose agent waits for the file `gate`, then prints `lines`
/// numbered lines of 15,000 bytes each (its output limit leaves room for all of them): the
/// app and the job's id.
pub async fn loud_job(gate: &std::path::Path, lines: usize) -> (TestApp, String) {
    let script = format!(
        "while [ ! -e '{gate}' ]; do sleep 0.05; done; \
         l=$(head -c 15000 /dev/zero | tr '\\0' x); i=1; \
         while [ $i -le {lines} ]; do echo \"$i $l\"; i=$((i+1)); done",
        gate = gate.display()
    );
    let app = spawn_app(|s| {
        s.queue.output_bytes_per_attempt = (2 * lines * 15_100) as u64;
        s.agents.insert("loud".into(), sh_agent(&script));
    })
    .await;
    let id = app.submit("loud", "print a lot").await;
    (app, id)
}

/// Whether a process is gone (or a zombie, which has stopped running).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}
