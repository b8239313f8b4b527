//! The process backend: runs `agent-runner` as a child process of the dispatcher.
//!
//! For development, the demo and tests. Each attempt gets a directory under `work_root`
//! (named after the workload) holding the runner's combined output (`output.log`) and the
//! agent's work directory (`work/`). The runner leads its own process group and starts the
//! agent in another. It reports that group's id on a pipe this backend hands it as its
//! standard input ([`env::PGID_FD`]), which the agent cannot reach, and the number stays
//! in this backend's memory: nothing the agent can write decides what is signalled. When
//! the runner ends, however it ends, this backend kills what is left of that group, so an
//! agent never outlives its runner; what left the group, the runner itself reaps
//! (`agent_runner::reaper`) unless it was killed first.
//!
//! This backend does not contain a hostile agent: it runs on the dispatcher's machine,
//! network and user (unless [`ProcessSettings::agent_user`] names another). Agents that
//! must be kept apart belong in the docker or kubernetes backend.
//!
//! Workloads live only as long as this process knows them: they cannot be found again
//! after the dispatcher restarts ([`JobSpawner::survives_restart`] is `false`).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
pub use contract::AgentUser;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::process::Child;
use tokio::sync::watch;

use contract::{env, OutputStream};
use serde::{Deserialize, Deserializer};

use crate::secrets::SecretSource;
use crate::{
    Error, Installation, JobHandle, JobSpawner, JobSpec, LogLine, LogStream, Result, WorkloadStatus,
};

const BACKEND: &str = "process";

/// Time the runner gets beyond the agent's grace period to report before it is killed.
const RUNNER_MARGIN: Duration = Duration::from_secs(5);

/// The most the runner's pipe is read: it writes a few short lines.
const REPORTS_LIMIT: u64 = 4096;

/// How long the last lines the runner wrote are waited for once it has exited.
const LAST_REPORTS: Duration = Duration::from_secs(1);

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
    /// The user agents run as, a numeric `uid:gid` (the dispatcher must run as root); the
    /// runner hands it the work directory. Empty (`None`): the dispatcher's own user.
    #[serde(default, deserialize_with = "agent_user")]
    pub agent_user: Option<AgentUser>,
    /// Extra CA certificates (a PEM file) the runner and the agent trust besides the
    /// public roots; empty: none.
    #[serde(default)]
    pub ca_bundle: PathBuf,
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

/// `agent_user` as the settings spell it: `uid:gid`, or empty for none.
fn agent_user<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<AgentUser>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

struct Workload {
    handle: JobHandle,
    /// The runner's pid, which is also its process group's id.
    pid: i32,
    /// The attempt's directory: `output.log` and the agent's `work/`.
    dir: PathBuf,
    status: watch::Receiver<WorkloadStatus>,
    /// The agent's process group, as the runner reported it; `None` before it started and
    /// once the runner said the group is gone.
    agent_pgid: Option<Pid>,
}

/// The process backend.
pub struct ProcessSpawner {
    runner: PathBuf,
    work_root: PathBuf,
    keep_finished: Duration,
    agent_user: Option<AgentUser>,
    ca_bundle: Option<PathBuf>,
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
            agent_user: settings.agent_user,
            ca_bundle: Some(settings.ca_bundle.clone()).filter(|p| !p.as_os_str().is_empty()),
            secrets: installation.secrets.clone(),
            workloads: Arc::default(),
        }
    }

    fn lookup(&self, name: &str) -> Option<(i32, PathBuf, watch::Receiver<WorkloadStatus>)> {
        let workloads = lock(&self.workloads);
        workloads
            .get(name)
            .map(|w| (w.pid, w.dir.clone(), w.status.clone()))
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

type Registry = Arc<Mutex<HashMap<String, Workload>>>;

/// Kills the agent's process group recorded for workload `name`, and forgets it: the
/// number is never signalled twice, as the system may give it to another process.
fn kill_agent_group(registry: &Registry, name: &str) {
    let pgid = lock(registry)
        .get_mut(name)
        .and_then(|w| w.agent_pgid.take());
    if let Some(pgid) = pgid {
        // ESRCH means the group is already gone, which is what we want.
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}

/// Waits for the runner to exit, recording meanwhile the process groups it reports on its
/// pipe; what it wrote just before it ended is read too.
async fn runner_ended(
    child: &mut Child,
    reports: pipe::Receiver,
    registry: &Registry,
    name: &str,
    runner: i32,
) -> std::io::Result<ExitStatus> {
    let mut lines = BufReader::new(reports.take(REPORTS_LIMIT)).lines();
    let mut open = true;
    let exit = loop {
        tokio::select! {
            exit = child.wait() => break exit,
            line = lines.next_line(), if open => match line {
                Ok(Some(line)) => record_report(registry, name, runner, &line),
                Ok(None) | Err(_) => open = false,
            },
        }
    };
    if open {
        // The runner held the pipe's only write end: what is left is there now.
        let rest = async {
            while let Ok(Some(line)) = lines.next_line().await {
                record_report(registry, name, runner, &line);
            }
        };
        let _ = tokio::time::timeout(LAST_REPORTS, rest).await;
    }
    exit
}

/// Records one line of the runner's pipe: the agent's process group, or `0` once it is
/// gone. A number is taken only when it names a group led by a child of the runner (the
/// agent it just started): whoever wrote anything else, it is not the agent's group.
fn record_report(registry: &Registry, name: &str, runner: i32, line: &str) {
    let pgid = match line.trim().parse::<i32>() {
        Ok(0) => None,
        Ok(pgid) if pgid > 1 => match group_leader_parent(pgid) {
            Some(parent) if parent == runner => Some(Pid::from_raw(pgid)),
            Some(_) => {
                tracing::warn!(workload = %name, pgid, "ignoring a process group the runner's agent does not lead");
                return;
            }
            None => {
                // Gone already (an agent that exited at once): the runner deals with it.
                tracing::debug!(workload = %name, pgid, "the agent's process group is gone already");
                return;
            }
        },
        _ => {
            tracing::warn!(workload = %name, line, "ignoring a line of the runner's pipe that is not a process group");
            return;
        }
    };
    if let Some(workload) = lock(registry).get_mut(name) {
        workload.agent_pgid = pgid;
    }
}

/// The parent of the process `pgid` when that process leads the group `pgid`.
fn group_leader_parent(pgid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pgid}/stat")).ok()?;
    // The fields follow the command name's last `)`: state, ppid, pgrp.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(1);
    let ppid: i32 = fields.next()?.parse().ok()?;
    let pgrp: i32 = fields.next()?.parse().ok()?;
    (pgrp == pgid).then_some(ppid)
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
        if let Some(user) = self.agent_user {
            if !nix::unistd::geteuid().is_root() {
                return Err(Error::Settings {
                    key: "spawner.process.agent_user".into(),
                    message: format!(
                        "{user}: running agents as another user needs the dispatcher to run as root"
                    ),
                });
            }
        }
        if let Some(bundle) = &self.ca_bundle {
            std::fs::File::open(bundle).map_err(|e| Error::Settings {
                key: "spawner.process.ca_bundle".into(),
                message: format!("cannot read {}: {e}", bundle.display()),
            })?;
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
        let dir = self.work_root.join(&name);
        let workdir = dir.join("work");
        std::fs::create_dir_all(&workdir)
            .map_err(|e| unavailable(format!("creating {}", workdir.display()), e))?;
        let output = std::fs::File::create(dir.join("output.log"))
            .map_err(|e| unavailable(format!("creating output.log in {}", dir.display()), e))?;
        let output_err = output
            .try_clone()
            .map_err(|e| unavailable("duplicating the output file".into(), e))?;
        // The runner's standard input is the pipe on which it reports the agent's process
        // group; both ends are close-on-exec here, so no other child inherits them.
        let (reports, report_end) =
            std::io::pipe().map_err(|e| unavailable("creating the runner's pipe".into(), e))?;
        let reports = pipe::Receiver::from_owned_fd(OwnedFd::from(reports))
            .map_err(|e| unavailable("reading the runner's pipe".into(), e))?;
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
            .env(env::PGID_FD, "0");
        match self.agent_user {
            Some(user) => command.env(env::AGENT_USER, user.to_string()),
            None => command.env_remove(env::AGENT_USER),
        };
        if let Some(bundle) = &self.ca_bundle {
            command.env(env::EXTRA_CA_FILE, bundle);
        }
        command
            .current_dir(&dir)
            .process_group(0)
            .stdin(Stdio::from(report_end))
            .stdout(output)
            .stderr(output_err);
        let spawned = command.spawn();
        // Our copy of the pipe's write end goes with the command: the pipe ends with the
        // runner.
        drop(command);
        let mut child = spawned.map_err(|e| {
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
            target: contract::DEFAULT_TARGET.into(),
        };
        let (tx, rx) = watch::channel(WorkloadStatus::Running);
        workloads.insert(
            name.clone(),
            Workload {
                handle: handle.clone(),
                pid,
                dir: dir.clone(),
                status: rx,
                agent_pgid: None,
            },
        );
        drop(workloads);

        let registry = Arc::clone(&self.workloads);
        let keep = self.keep_finished;
        tokio::spawn(async move {
            let status = match runner_ended(&mut child, reports, &registry, &name, pid).await {
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
            kill_agent_group(&registry, &name);
            tracing::debug!(workload = %name, status = %status.describe(), "runner ended");
            let _ = tx.send(status);
            tokio::time::sleep(keep).await;
            lock(&registry).remove(&name);
            let _ = tokio::fs::remove_dir_all(&dir).await;
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
        let Some((_, dir, status)) = self.lookup(&handle.name) else {
            return Err(Error::NotFound {
                name: handle.name.clone(),
            });
        };
        let path = dir.join("output.log");
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
        let Some((pid, _, mut status)) = self.lookup(&handle.name) else {
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
        kill_agent_group(&self.workloads, &handle.name);
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
            let _ = tokio::fs::remove_dir_all(&workload.dir).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    #[test]
    fn agent_user_is_a_numeric_uid_and_gid_or_empty() {
        let settings = |user: &str| {
            serde_json::from_value::<ProcessSettings>(serde_json::json!({
                "runner_path": "",
                "work_root": "",
                "keep_finished_secs": 1,
                "agent_user": user,
            }))
        };
        assert_eq!(settings("").unwrap().agent_user, None);
        let nobody = AgentUser {
            uid: 65534,
            gid: 65533,
        };
        assert_eq!(settings("65534:65533").unwrap().agent_user, Some(nobody));
        assert_eq!(nobody.to_string(), "65534:65533");
        for bad in ["nobody", "1000", "1000:", ":1000", "a:b", "-1:0"] {
            let err = settings(bad).unwrap_err().to_string();
            assert!(err.contains("numeric uid:gid"), "{bad}: {err}");
        }
    }

    #[test]
    fn only_a_group_led_by_a_child_of_the_runner_is_recorded() {
        // This test process stands in for the runner.
        let runner = i32::try_from(std::process::id()).unwrap();
        let sleeper = |own_group: bool| {
            let mut command = std::process::Command::new("sleep");
            command.arg("30");
            if own_group {
                command.process_group(0);
            }
            command.spawn().unwrap()
        };
        let (mut agent, mut not_leader) = (sleeper(true), sleeper(false));
        let agent_pgid = i32::try_from(agent.id()).unwrap();
        let registry: Registry = Arc::default();
        let (_tx, status) = watch::channel(WorkloadStatus::Running);
        let handle = JobHandle {
            backend: BACKEND.into(),
            name: "w".into(),
            job_id: "j".into(),
            attempt: 1,
            id: None,
            target: contract::DEFAULT_TARGET.into(),
        };
        lock(&registry).insert(
            "w".into(),
            Workload {
                handle,
                pid: runner,
                dir: PathBuf::new(),
                status,
                agent_pgid: None,
            },
        );
        let recorded = || lock(&registry)["w"].agent_pgid.map(Pid::as_raw);

        record_report(&registry, "w", runner, &format!("{agent_pgid}\n"));
        assert_eq!(recorded(), Some(agent_pgid));
        // Not the agent's group, whoever wrote it: kept as it was.
        let others = [
            "1".to_string(),
            not_leader.id().to_string(),
            std::process::id().to_string(),
            "-5".into(),
            "a group".into(),
        ];
        for line in &others {
            record_report(&registry, "w", runner, line);
            assert_eq!(recorded(), Some(agent_pgid), "{line}");
        }
        // A group that does not lead back to this runner.
        record_report(&registry, "w", runner + 1, &agent_pgid.to_string());
        assert_eq!(recorded(), Some(agent_pgid));

        record_report(&registry, "w", runner, "0");
        assert_eq!(recorded(), None, "the runner said the group is gone");
        kill_agent_group(&registry, "w");
        assert!(
            agent.try_wait().unwrap().is_none(),
            "a forgotten group was killed"
        );

        record_report(&registry, "w", runner, &agent_pgid.to_string());
        kill_agent_group(&registry, "w");
        assert_eq!(agent.wait().unwrap().signal(), Some(Signal::SIGKILL as i32));
        assert_eq!(recorded(), None, "a killed group is forgotten");
        not_leader.kill().unwrap();
        not_leader.wait().unwrap();
    }
}
