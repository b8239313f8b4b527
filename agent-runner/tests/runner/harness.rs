//! The test harness: a stand-in dispatcher that records what it is sent and answers as
//! scripted, a runner launcher, per-test directories, and `wait_until`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
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
    /// The one-time credential the runner is given.
    pub credential: String,
    /// The token the stand-in grants for it.
    pub token: String,
    vars: BTreeMap<String, String>,
    dir: TempDir,
    /// The runner binary: this workspace's build unless changed.
    binary: PathBuf,
}

/// The runner for an agent `command`, reporting to `dispatcher`: a time limit of 60 s,
/// heartbeats every 30 s, a grace period of 2 s, unless changed.
pub fn launch(dispatcher: &Dispatcher, command: &[&str]) -> Launch {
    let job_id = unique("job").replace('-', "");
    let credential = unique("secret-credential");
    let token = testkit::stand_in::token_for(&credential);
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
        (env::JOB_CREDENTIAL.to_string(), credential.clone()),
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
        credential,
        token,
        vars,
        dir,
        binary: PathBuf::from(env!("CARGO_BIN_EXE_agent-runner")),
    }
}

impl Launch {
    /// Sets a variable of the runner's environment.
    pub fn var(mut self, name: &str, value: impl ToString) -> Self {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }

    /// Runs the runner binary at `path` instead of this workspace's build.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
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

    /// Starts the runner, its stdout and stderr going to files and, like the process
    /// backend does, a pipe for the agent's process group as its stdin.
    pub fn start(self) -> Runner {
        let stdout = self.dir.path().join("runner.stdout");
        let stderr = self.dir.path().join("runner.stderr");
        let (reader, writer) = std::io::pipe().unwrap();
        let pgid_pipe =
            std::fs::File::from(std::os::fd::OwnedFd::from(writer.try_clone().unwrap()))
                .metadata()
                .unwrap()
                .ino();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&reports);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                record
                    .lock()
                    .unwrap()
                    .push(line.trim().parse::<i32>().unwrap());
            }
        });
        let child = tokio::process::Command::new(&self.binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env(env::PGID_FD, "0")
            .envs(&self.vars)
            .stdin(Stdio::from(writer))
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Runner {
            child,
            stdout,
            stderr,
            reports,
            pgid_pipe,
            launch: self,
        }
    }
}

/// A running `agent-runner`.
pub struct Runner {
    child: tokio::process::Child,
    stdout: PathBuf,
    stderr: PathBuf,
    /// What the runner reported on its pipe, in order.
    reports: Arc<Mutex<Vec<i32>>>,
    /// The inode of that pipe.
    pgid_pipe: u64,
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

    /// The process groups the runner reported on its pipe so far (`0`: gone).
    pub fn reports(&self) -> Vec<i32> {
        self.reports.lock().unwrap().clone()
    }

    /// The reports once there are at least `n` (or all there are after a while).
    pub async fn reports_when(&self, n: usize) -> Vec<i32> {
        wait_until(Duration::from_secs(10), || self.reports().len() >= n).await;
        self.reports()
    }

    /// The inode of the runner's pipe (as `/proc/<pid>/fd/<n>` links name it: `pipe:[ino]`).
    pub fn pgid_pipe(&self) -> u64 {
        self.pgid_pipe
    }

    /// The job's id.
    pub fn job_id(&self) -> &str {
        &self.launch.job_id
    }

    /// The attempt's token (granted for its credential).
    pub fn token(&self) -> &str {
        &self.launch.token
    }

    /// The attempt's one-time credential.
    pub fn credential(&self) -> &str {
        &self.launch.credential
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
        if let Some(&pgid) = self.reports().last().filter(|&&pgid| pgid != 0) {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}
