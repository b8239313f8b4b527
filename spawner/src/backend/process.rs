//! The process backend: runs `agent-runner` as a child process of the dispatcher.
//!
//! For development, the demo and tests. Each attempt gets its own work directory under
//! `work_root` (named after the workload) holding the runner's combined output
//! (`output.log`). The runner leads its own process group and starts the agent in
//! another, whose id it records in the work directory; when the runner ends, this backend
//! kills what is left of that group, so an agent never outlives its runner.
//!
//! Workloads live only as long as this process knows them: they cannot be found again
//! after the dispatcher restarts ([`JobSpawner::survives_restart`] is `false`).

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

use contract::{env, OutputStream};
use serde::Deserialize;

use crate::secrets::SecretSource;
use crate::{
    Error, Installation, JobHandle, JobSpawner, JobSpec, LogLine, LogStream, Result, WorkloadStatus,
};

const BACKEND: &str = "process";

/// Time the runner gets beyond the agent's grace period to report before it is killed.
const RUNNER_MARGIN: Duration = Duration::from_secs(5);

/// `spawner.process.*`: settings of the process backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSettings {
    /// The `agent-runner` executable; empty: the one next to the running executable.
    pub runner_path: PathBuf,
    /// The directory under which each attempt gets its work directory; empty:
    /// `<temp dir>/agentsmith`.
    pub work_root: PathBuf,
    /// Seconds a finished workload (its status, output and work directory) is kept.
    pub keep_finished_secs: u64,
}

impl ProcessSettings {
    /// The runner executable these settings name.
    pub fn runner(&self) -> PathBuf {
        if !self.runner_path.as_os_str().is_empty() {
            return self.runner_path.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("agent-runner")))
            .unwrap_or_else(|| PathBuf::from("agent-runner"))
    }

    /// The root of the work directories these settings name.
    pub fn work_root(&self) -> PathBuf {
        if self.work_root.as_os_str().is_empty() {
            std::env::temp_dir().join("agentsmith")
        } else {
            self.work_root.clone()
        }
    }
}

struct Workload {
    handle: JobHandle,
    pid: i32,
    workdir: PathBuf,
    status: watch::Receiver<WorkloadStatus>,
}

/// The process backend.
pub struct ProcessSpawner {
    runner: PathBuf,
    work_root: PathBuf,
    keep_finished: Duration,
    secrets: SecretSource,
    workloads: Arc<Mutex<HashMap<String, Workload>>>,
}

impl ProcessSpawner {
    /// A backend with the given settings; nothing is checked until [`JobSpawner::probe`].
    pub fn new(settings: &ProcessSettings, installation: &Installation) -> Self {
        Self {
            runner: settings.runner(),
            work_root: settings.work_root(),
            keep_finished: Duration::from_secs(settings.keep_finished_secs),
            secrets: installation.secrets.clone(),
            workloads: Arc::default(),
        }
    }

    fn lookup(&self, name: &str) -> Option<(i32, PathBuf, watch::Receiver<WorkloadStatus>)> {
        let workloads = lock(&self.workloads);
        workloads
            .get(name)
            .map(|w| (w.pid, w.workdir.clone(), w.status.clone()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unavailable(message: String, source: std::io::Error) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        message,
        source: Some(Box::new(source)),
    }
}

/// Sends `signal` to the process group the runner recorded for its agent, if any.
fn signal_agent_group(workdir: &Path, signal: Signal) {
    let Ok(text) = std::fs::read_to_string(workdir.join(env::AGENT_PGID_FILE)) else {
        return;
    };
    if let Ok(pgid) = text.trim().parse::<i32>() {
        if pgid > 1 {
            // ESRCH means the group is already gone, which is what we want.
            let _ = killpg(Pid::from_raw(pgid), signal);
        }
    }
}

async fn wait_until_over(status: &mut watch::Receiver<WorkloadStatus>, limit: Duration) -> bool {
    tokio::time::timeout(limit, status.wait_for(|s| s.is_over()))
        .await
        .is_ok()
}

#[async_trait]
impl JobSpawner for ProcessSpawner {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn survives_restart(&self) -> bool {
        false
    }

    async fn probe(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let runner = &self.runner;
        let meta = std::fs::metadata(runner).map_err(|e| {
            unavailable(format!("agent-runner not found at {}", runner.display()), e)
        })?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(Error::Unavailable {
                backend: BACKEND,
                message: format!("{} is not an executable file", runner.display()),
                source: None,
            });
        }
        std::fs::create_dir_all(&self.work_root).map_err(|e| {
            let root = self.work_root.display();
            unavailable(format!("cannot create work root {root}"), e)
        })
    }

    async fn spawn(&self, job: &JobSpec) -> Result<JobHandle> {
        let name = job.workload_name();
        let secret_env = self.secrets.resolve_env(BACKEND, &job.profile.secret_env)?;
        // The lock is held from the lookup to the insert so two concurrent spawns of one
        // attempt start one process; fork+exec is quick enough to do under it.
        let mut workloads = lock(&self.workloads);
        if let Some(existing) = workloads.get(&name) {
            return Ok(existing.handle.clone());
        }
        let workdir = self.work_root.join(&name);
        std::fs::create_dir_all(&workdir)
            .map_err(|e| unavailable(format!("creating {}", workdir.display()), e))?;
        let output = std::fs::File::create(workdir.join("output.log"))
            .map_err(|e| unavailable(format!("creating output.log in {}", workdir.display()), e))?;
        let output_err = output
            .try_clone()
            .map_err(|e| unavailable("duplicating the output file".into(), e))?;
        let mut command = tokio::process::Command::new(&self.runner);
        // The runner gets a clean environment: never the dispatcher's own (which may hold
        // Redis credentials and API tokens), only what an agent needs to find its tools.
        command.env_clear();
        for name in ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "RUST_LOG"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
            .envs(&job.profile.env)
            .envs(secret_env)
            .envs(job.runner_env())
            .env(env::WORKDIR, &workdir)
            .current_dir(&workdir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(output_err);
        let mut child = command.spawn().map_err(|e| {
            let runner = self.runner.display();
            unavailable(format!("starting {runner}"), e)
        })?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .expect("a child that was just spawned has a pid");
        let handle = JobHandle {
            backend: BACKEND.into(),
            name: name.clone(),
            job_id: job.job_id.clone(),
            attempt: job.attempt,
            id: Some(pid.to_string()),
        };
        let (tx, rx) = watch::channel(WorkloadStatus::Running);
        workloads.insert(
            name.clone(),
            Workload {
                handle: handle.clone(),
                pid,
                workdir: workdir.clone(),
                status: rx,
            },
        );
        drop(workloads);

        let registry = Arc::clone(&self.workloads);
        let keep = self.keep_finished;
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(exit) => match (exit.code(), exit.signal()) {
                    (Some(code), _) => WorkloadStatus::Exited { code },
                    (None, Some(signal)) => WorkloadStatus::Killed { signal },
                    (None, None) => WorkloadStatus::Failed {
                        reason: "runner ended without an exit status".into(),
                        retryable: true,
                    },
                },
                Err(e) => WorkloadStatus::Failed {
                    reason: format!("waiting for the runner failed: {e}"),
                    retryable: true,
                },
            };
            // Whatever the runner left behind goes with it.
            signal_agent_group(&workdir, Signal::SIGKILL);
            tracing::debug!(workload = %name, status = %status.describe(), "runner ended");
            let _ = tx.send(status);
            tokio::time::sleep(keep).await;
            lock(&registry).remove(&name);
            let _ = tokio::fs::remove_dir_all(&workdir).await;
        });
        Ok(handle)
    }

    async fn status(&self, handle: &JobHandle) -> Result<WorkloadStatus> {
        Ok(self
            .lookup(&handle.name)
            .map(|(_, _, status)| status.borrow().clone())
            .unwrap_or(WorkloadStatus::NotFound))
    }

    async fn logs(&self, handle: &JobHandle, follow: bool) -> Result<LogStream> {
        let Some((_, workdir, status)) = self.lookup(&handle.name) else {
            return Err(Error::NotFound {
                name: handle.name.clone(),
            });
        };
        let path = workdir.join("output.log");
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| unavailable(format!("opening {}", path.display()), e))?;
        let lines = BufReader::new(file).lines();
        let stream =
            futures::stream::unfold((lines, status), move |(mut lines, status)| async move {
                loop {
                    match lines.next_line().await {
                        Ok(Some(line)) => {
                            let item = LogLine {
                                stream: OutputStream::Stdout,
                                line,
                            };
                            return Some((Ok(item), (lines, status)));
                        }
                        Ok(None) if follow && !status.borrow().is_over() => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Ok(None) => return None,
                        Err(e) => {
                            let err = unavailable("reading output.log".into(), e);
                            return Some((Err(err), (lines, status)));
                        }
                    }
                }
            });
        Ok(Box::pin(stream))
    }

    async fn cancel(&self, handle: &JobHandle, grace: Duration) -> Result<()> {
        let Some((pid, workdir, mut status)) = self.lookup(&handle.name) else {
            return Ok(());
        };
        if status.borrow().is_over() {
            return Ok(());
        }
        // The runner forwards SIGTERM to the agent's group, waits `grace` itself, then
        // reports how it ended: give it that long plus a margin before killing it.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        if wait_until_over(&mut status, grace + RUNNER_MARGIN).await {
            return Ok(());
        }
        tracing::info!(workload = %handle.name, "runner still alive after the grace period; killing it");
        signal_agent_group(&workdir, Signal::SIGKILL);
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        wait_until_over(&mut status, Duration::from_secs(5)).await;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<JobHandle>> {
        Ok(lock(&self.workloads)
            .values()
            .map(|w| w.handle.clone())
            .collect())
    }

    async fn remove(&self, handle: &JobHandle) -> Result<()> {
        self.cancel(handle, Duration::ZERO).await?;
        let removed = lock(&self.workloads).remove(&handle.name);
        if let Some(workload) = removed {
            let _ = tokio::fs::remove_dir_all(&workload.workdir).await;
        }
        Ok(())
    }
}
