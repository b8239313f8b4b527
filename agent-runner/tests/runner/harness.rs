//! The test harness: a stand-in dispatcher that records what it is sent and answers as
//! scripted, a runner launcher, per-test directories, and `wait_until`.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use contract::env;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

pub use testkit::stand_in::{Answer, Dispatcher, Script};
pub use testkit::temp::unique;
pub use testkit::wait::wait_until_sync as wait_until;

/// Generous limits: the tests must pass on a slow, busy machine.
pub const EXIT_LIMIT: Duration = Duration::from_secs(60);

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
// Directories and the runner

/// A directory under the system's temporary directory, removed when dropped.
pub struct TempDir(testkit::temp::TempDir);

impl TempDir {
    /// A new, empty directory.
    pub fn new() -> Self {
        Self(testkit::temp::TempDir::new("agent-runner-test"))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.0.path()
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
