//! The test harness: a stand-in dispatcher that records what it is sent and answers as
//! scripted, a runner launcher, per-test directories, and `wait_until`.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use spawner::contract::{
    env, AgentResult, OutputStream, RunOutcome, RunnerBatch, RunnerEvent, RunnerReply,
};

/// Generous limits: the tests must pass on a slow, busy machine.
pub const EXIT_LIMIT: Duration = Duration::from_secs(60);

/// Polls `condition` every 50 ms until it holds (true) or `timeout` passes (false).
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A name no other test (or test run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos:08x}-{n}", std::process::id())
}

/// Whether a process exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => kill(Pid::from_raw(pid), None).is_ok(),
    }
}

// ---------------------------------------------------------------------------------------
// The stand-in dispatcher

/// How the stand-in dispatcher answers a post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 `{"stop": false}`.
    Ok,
    /// 200 `{"stop": true}`.
    Stop,
    /// This status, with a short text body.
    Status(u16),
}

/// The answers to give, in order, then `then` for every later post.
#[derive(Debug, Clone)]
pub struct Script {
    first: VecDeque<Answer>,
    then: Answer,
}

impl Script {
    /// `answer` to every post.
    pub fn always(answer: Answer) -> Self {
        Self {
            first: VecDeque::new(),
            then: answer,
        }
    }

    /// Before that, `answer` to the next `n` posts.
    pub fn first(mut self, n: usize, answer: Answer) -> Self {
        for _ in 0..n {
            self.first.push_back(answer);
        }
        self
    }

    fn next(&mut self) -> Answer {
        self.first.pop_front().unwrap_or(self.then)
    }
}

/// One post the stand-in dispatcher received. Every post is recorded, whatever it was
/// answered: a batch answered 500 may have been stored before the answer was lost.
#[derive(Debug, Clone)]
pub struct Post {
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The body as sent.
    pub body: String,
    /// The body as a batch.
    pub batch: RunnerBatch,
    /// What it was answered.
    pub answer: Answer,
}

#[derive(Debug)]
struct Recorder {
    posts: Vec<Post>,
    script: Script,
}

/// A dispatcher's `/internal/jobs/{id}/events` endpoint, recording the posts it gets.
pub struct Dispatcher {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<Recorder>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(
    State(state): State<Arc<Mutex<Recorder>>>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let batch: RunnerBatch = match serde_json::from_str(&body) {
        Ok(batch) => batch,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("not a batch: {e}"),
            )
                .into_response()
        }
    };
    let mut state = state.lock().unwrap();
    let answer = state.script.next();
    state.posts.push(Post {
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
        batch,
        answer,
    });
    match answer {
        Answer::Ok => Json(RunnerReply { stop: false }).into_response(),
        Answer::Stop => Json(RunnerReply { stop: true }).into_response(),
        Answer::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            format!("scripted {code}"),
        )
            .into_response(),
    }
}

impl Dispatcher {
    /// Starts a stand-in dispatcher on a free port of 127.0.0.1.
    pub async fn start(script: Script) -> Self {
        let state = Arc::new(Mutex::new(Recorder {
            posts: Vec::new(),
            script,
        }));
        let app = Router::new()
            .route("/internal/jobs/{id}/events", post(record))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            state,
            server,
        }
    }

    /// The callback URL for `job_id`.
    pub fn callback_url(&self, job_id: &str) -> String {
        format!("http://{}/internal/jobs/{job_id}/events", self.addr)
    }

    /// Every post so far.
    pub fn posts(&self) -> Vec<Post> {
        self.state.lock().unwrap().posts.clone()
    }

    /// The events received, deduplicated by sequence number, in order. Panics unless the
    /// numbers run from 0 without a gap and every repeat carries the same event.
    pub fn events(&self) -> Vec<RunnerEvent> {
        let mut by_seq: BTreeMap<u64, RunnerEvent> = BTreeMap::new();
        for post in self.posts() {
            for (offset, event) in post.batch.events.iter().enumerate() {
                let seq = post.batch.first_seq + offset as u64;
                if let Some(earlier) = by_seq.insert(seq, event.clone()) {
                    assert_eq!(
                        &earlier, event,
                        "seq {seq} was sent as two different events"
                    );
                }
            }
        }
        for (expected, seq) in by_seq.keys().enumerate() {
            assert_eq!(
                *seq, expected as u64,
                "sequence numbers have a gap: {by_seq:?}"
            );
        }
        by_seq.into_values().collect()
    }

    /// The log lines of `stream` received, deduplicated.
    pub fn lines(&self, stream: OutputStream) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                RunnerEvent::Log { stream: s, line } if s == stream => Some(line),
                _ => None,
            })
            .collect()
    }

    /// The final event's outcome and result, once received (it must be the last event).
    pub fn finished(&self) -> Option<(RunOutcome, Option<AgentResult>)> {
        let events = self.events();
        let position = events
            .iter()
            .position(|e| matches!(e, RunnerEvent::Finished { .. }))?;
        assert_eq!(
            position,
            events.len() - 1,
            "Finished is not last: {events:?}"
        );
        match events.into_iter().last() {
            Some(RunnerEvent::Finished { outcome, result }) => Some((outcome, result)),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Directories and the runner

/// A directory under the system's temporary directory, removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new, empty directory.
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(unique("agent-runner-test"));
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// How to run the runner: the job's environment, ready to be adjusted.
pub struct Launch {
    pub job_id: String,
    pub token: String,
    vars: BTreeMap<String, String>,
    dir: TempDir,
}

/// The runner for an agent `command`, reporting to `dispatcher`: a time limit of 60 s,
/// heartbeats every 30 s, a grace period of 2 s, unless changed.
pub fn launch(dispatcher: &Dispatcher, command: &[&str]) -> Launch {
    let job_id = unique("job").replace('-', "");
    let token = unique("secret-token");
    let dir = TempDir::new();
    let workdir = dir.path().join("work");
    std::fs::create_dir_all(&workdir).unwrap();
    let vars = BTreeMap::from([
        (env::JOB_ID.to_string(), job_id.clone()),
        (env::ATTEMPT.to_string(), "1".to_string()),
        (
            env::INTENT.to_string(),
            r#"{"task":"fix PROJ-7","project":"demo","ticket":"PROJ-7"}"#.to_string(),
        ),
        (
            env::COMMAND.to_string(),
            serde_json::to_string(command).unwrap(),
        ),
        (
            env::CALLBACK_URL.to_string(),
            dispatcher.callback_url(&job_id),
        ),
        (env::JOB_TOKEN.to_string(), token.clone()),
        (env::TIMEOUT_SECS.to_string(), "60".to_string()),
        (env::HEARTBEAT_SECS.to_string(), "30".to_string()),
        (env::GRACE_SECS.to_string(), "2".to_string()),
        (
            env::WORKDIR.to_string(),
            workdir.to_string_lossy().into_owned(),
        ),
    ]);
    Launch {
        job_id,
        token,
        vars,
        dir,
    }
}

impl Launch {
    /// Sets a variable of the runner's environment.
    pub fn var(mut self, name: &str, value: impl ToString) -> Self {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }

    /// Leaves a variable out of the runner's environment.
    pub fn without(mut self, name: &str) -> Self {
        self.vars.remove(name);
        self
    }

    /// The job as the runner would read it from this environment.
    pub fn job(&self) -> agent_runner::Job {
        agent_runner::Job::from_lookup(|name| self.vars.get(name).map(Into::into)).unwrap()
    }

    /// Starts the runner, its stdout and stderr going to files.
    pub fn start(self) -> Runner {
        let stdout = self.dir.path().join("runner.stdout");
        let stderr = self.dir.path().join("runner.stderr");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-runner"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(&self.vars)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Runner {
            child,
            stdout,
            stderr,
            launch: self,
        }
    }
}

/// A running `agent-runner`.
pub struct Runner {
    child: tokio::process::Child,
    stdout: PathBuf,
    stderr: PathBuf,
    launch: Launch,
}

impl Runner {
    /// The runner's pid.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id().unwrap() as i32)
    }

    /// Sends `signal` to the runner.
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    /// The job's id.
    pub fn job_id(&self) -> &str {
        &self.launch.job_id
    }

    /// The job's token.
    pub fn token(&self) -> &str {
        &self.launch.token
    }

    /// The agent's work directory.
    pub fn workdir(&self) -> PathBuf {
        self.launch.dir.path().join("work")
    }

    /// A pid the agent wrote to `file` in its work directory, once it has.
    pub async fn pid_in(&self, file: &str) -> i32 {
        let path = self.workdir().join(file);
        let written = wait_until(EXIT_LIMIT, || {
            std::fs::read_to_string(&path).is_ok_and(|t| t.ends_with('\n'))
        })
        .await;
        assert!(
            written,
            "the agent never wrote {file}\n{}",
            self.diagnostics()
        );
        std::fs::read_to_string(&path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Waits for the runner to exit; panics, showing its output, if it does not in time.
    pub async fn exit(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "the runner did not exit within {limit:?}\n{}",
                self.diagnostics()
            ),
        }
    }

    /// Waits for the runner to exit with `code`.
    pub async fn exits_with(&mut self, code: i32) {
        let status = self.exit(EXIT_LIMIT).await;
        assert_eq!(
            status.code(),
            Some(code),
            "runner ended with {status:?} (signal {:?})\n{}",
            status.signal(),
            self.diagnostics()
        );
    }

    /// What the runner wrote on stdout.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What the runner wrote on stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The runner's output, for failure messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- runner stdout ---\n{}\n--- runner stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // Like the process backend: whatever the runner left behind goes with it.
        let pgid_file = self.workdir().join(env::AGENT_PGID_FILE);
        if let Ok(text) = std::fs::read_to_string(pgid_file) {
            if let Ok(pgid) = text.trim().parse::<i32>() {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
        }
    }
}
