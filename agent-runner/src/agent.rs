//! The agent process: started in a process group of its own, signalled as a group,
//! stopped with SIGTERM, a grace period, then SIGKILL, and followed by everything it left
//! behind.
//!
//! The group matters: an agent is usually a shell or a CLI with children of its own, and
//! all of them must stop together. The runner never signals the group after it has reaped
//! the agent and killed what was left, so a reused process id is never hit.
//!
//! The group is not a wall, though: a process can leave it (`setsid`, a double fork). So
//! the runner started with [`Launch::from_env`] is the agent's subreaper
//! ([`crate::reaper`]): once the agent has ended, whatever it left behind, in its group or
//! not, is killed and reaped before the runner reports how it ended. The runner is also
//! made non-dumpable before the agent starts, so an agent running as the same user cannot
//! read the runner's memory or open its descriptors through `/proc`; and, when the runner
//! runs as root, the agent may run as another user ([`AgentUser`]).

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

pub use contract::AgentUser;
use contract::{env, RunOutcome};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::error::{Error, Result};
use crate::pgid_pipe::PgidPipe;
use crate::{reaper, workspace};

/// How often the zombies of processes orphaned below the runner are reaped while the
/// agent runs.
const ORPHAN_REAPING: Duration = Duration::from_secs(5);

/// How the agent is started and contained, beyond its command and environment.
#[derive(Debug, Default)]
pub struct Launch {
    /// Run the agent as this user (the runner must be root), after handing it the work
    /// directory; `None`: the runner's own user.
    pub user: Option<AgentUser>,
    /// Where the agent's process group is reported (the process backend's pipe).
    pub pgid_pipe: Option<PgidPipe>,
    /// Make the runner the subreaper of the agent's processes, and kill all its children
    /// once the agent has ended. Only for a runner process that starts no other children
    /// while the agent runs (the `agent-runner` binary), never in a shared test process.
    pub reap_descendants: bool,
}

impl Launch {
    /// The launch of the `agent-runner` binary: the user and pipe its environment names,
    /// and descendants reaped. Takes the pipe off standard input; call it first.
    pub fn from_env() -> Result<Self> {
        let user = match std::env::var(env::AGENT_USER) {
            Ok(text) => Some(text.parse().map_err(|reason| Error::InvalidVar {
                name: env::AGENT_USER,
                reason,
            })?),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(Error::InvalidVar {
                    name: env::AGENT_USER,
                    reason: "not valid UTF-8".into(),
                })
            }
        };
        Ok(Self {
            user,
            pgid_pipe: PgidPipe::from_env()?,
            reap_descendants: true,
        })
    }
}

/// A running agent process group.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    pgid: Pid,
    /// When the group gets SIGKILL, once a stop has begun.
    kill_at: Option<Instant>,
    killed: bool,
    reaped: bool,
    /// Set once everything the agent left behind is gone (and the backend told so).
    cleared: bool,
    pgid_pipe: Option<PgidPipe>,
    reap_descendants: bool,
    orphans: Interval,
}

/// The agent's output pipes.
#[derive(Debug)]
pub struct Pipes {
    /// The agent's standard output.
    pub stdout: ChildStdout,
    /// The agent's standard error.
    pub stderr: ChildStderr,
}

impl Agent {
    /// Starts `argv` in `workdir` as the leader of a new process group, stdin from
    /// `/dev/null`, stdout and stderr piped, as `launch` says. `env` sets (`Some`) or
    /// removes (`None`) variables of the environment inherited from the runner.
    pub fn start(
        argv: &[String],
        workdir: &Path,
        env: &[(&'static str, Option<String>)],
        launch: Launch,
    ) -> io::Result<(Self, Pipes)> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        if launch.reap_descendants {
            reaper::become_subreaper()?;
        }
        // Before the agent exists: it must not read the runner's memory (its token) or
        // open its descriptors (the backend's pipe) through /proc. Root still can. (The
        // binary seals itself first thing already; this holds for any caller.)
        crate::credential::seal();
        close_on_exec_beyond_stdio();
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(workdir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(user) = launch.user {
            workspace::hand_over(workdir, user.uid, user.gid)?;
            // As root, std also drops the supplementary groups.
            command.uid(user.uid).gid(user.gid);
        }
        for (name, value) in env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let mut child = command.spawn()?;
        let pid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| io::Error::other("the started agent has no process id"))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(io::Error::other("the agent's output pipes are missing"));
        };
        let mut pgid_pipe = launch.pgid_pipe;
        if let Some(pipe) = &mut pgid_pipe {
            pipe.started(pid);
        }
        let mut orphans = tokio::time::interval_at(Instant::now() + ORPHAN_REAPING, ORPHAN_REAPING);
        orphans.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let agent = Self {
            child,
            // With `process_group(0)` the group id is the leader's pid.
            pgid: Pid::from_raw(pid),
            kill_at: None,
            killed: false,
            reaped: false,
            cleared: false,
            pgid_pipe,
            reap_descendants: launch.reap_descendants,
            orphans,
        };
        Ok((agent, Pipes { stdout, stderr }))
    }

    /// The agent's process group id (its pid).
    pub fn pgid(&self) -> i32 {
        self.pgid.as_raw()
    }

    /// Whether a stop has begun.
    pub fn is_stopping(&self) -> bool {
        self.kill_at.is_some()
    }

    /// Begins stopping the agent: SIGTERM to the group now, SIGKILL once `grace` has
    /// passed (done by [`Agent::wait`]). Returns `false`, doing nothing, when a stop has
    /// already begun: a repeated request neither restarts nor shortens the grace period.
    pub fn stop(&mut self, grace: Duration) -> bool {
        if self.kill_at.is_some() || self.reaped {
            return false;
        }
        self.signal(Signal::SIGTERM);
        self.kill_at = Some(Instant::now() + grace);
        true
    }

    /// Waits for the agent to exit, sending SIGKILL to the group when a stop's grace
    /// period runs out. Once the agent has exited, whatever is left of its group is
    /// killed, and with [`Launch::reap_descendants`] every other process it left behind,
    /// so nothing holds its output pipes open or outlives the attempt. Cancel safe: the
    /// next call picks up where a cancelled one stopped.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = loop {
            let kill_at = self.kill_at.filter(|_| !self.killed);
            tokio::select! {
                status = self.child.wait() => break status?,
                () = tokio::time::sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                    tracing::info!(pgid = self.pgid.as_raw(), "grace period over; killing the agent");
                    self.signal(Signal::SIGKILL);
                    self.killed = true;
                }
                _ = self.orphans.tick(), if self.reap_descendants => reaper::reap_orphans(self.pgid),
            }
        };
        if !self.reaped {
            // Children the agent left behind in its group; the leader is gone, but the
            // group id stays reserved while any member lives.
            self.signal(Signal::SIGKILL);
            self.reaped = true;
        }
        if !self.cleared {
            if self.reap_descendants {
                let killed = reaper::kill_descendants(reaper::KILL_LIMIT).await;
                if killed > 0 {
                    tracing::info!(killed, "killed processes the agent left behind");
                }
            }
            if let Some(pipe) = &mut self.pgid_pipe {
                pipe.gone();
            }
            self.cleared = true;
        }
        Ok(status)
    }

    fn signal(&self, signal: Signal) {
        match killpg(self.pgid, signal) {
            // The group is already gone, which is what a stop wants.
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                tracing::warn!(pgid = self.pgid.as_raw(), %signal, error = %e, "cannot signal the agent")
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // The runner is unwinding without having waited for the agent: take it along.
        if !self.reaped {
            self.signal(Signal::SIGKILL);
        }
    }
}

/// Marks every descriptor of the runner but its standard streams close-on-exec, so that
/// the agent inherits none: the runner's own are already, but those the runner itself
/// inherited (from the dispatcher, from whatever started that) are not.
fn close_on_exec_beyond_stdio() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // EBADF: the directory's own descriptor, closed by now.
        let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
}

/// The outcome of an agent that exited by itself with `status`.
pub fn outcome_of(status: ExitStatus) -> RunOutcome {
    match (status.code(), status.signal()) {
        (Some(code), _) => RunOutcome::Exited { code },
        (None, Some(signal)) => RunOutcome::Signaled { signal },
        // Neither an exit code nor a signal: not a state a waited-for process can be in.
        (None, None) => RunOutcome::Exited { code: -1 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn start(args: &[&str]) -> io::Result<(Agent, Pipes)> {
        Agent::start(&argv(args), Path::new("/"), &[], Launch::default())
    }

    #[tokio::test]
    async fn an_agent_runs_in_its_own_process_group() {
        let (mut agent, _pipes) = start(&["sh", "-c", "exit 7"]).unwrap();
        assert_ne!(
            nix::unistd::getpgrp().as_raw(),
            agent.pgid(),
            "the agent must not share the runner's group"
        );
        let status = agent.wait().await.unwrap();
        assert_eq!(outcome_of(status), RunOutcome::Exited { code: 7 });
    }

    #[tokio::test]
    async fn a_stop_kills_an_agent_that_ignores_sigterm_after_the_grace_period() {
        let (mut agent, _pipes) = start(&["sh", "-c", "trap '' TERM; sleep 30"]).unwrap();
        // Give the shell time to install its trap.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        assert!(agent.stop(Duration::from_millis(500)));
        assert!(
            !agent.stop(Duration::from_secs(60)),
            "a second stop is a no-op"
        );
        let status = tokio::time::timeout(Duration::from_secs(20), agent.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
        assert!(started.elapsed() >= Duration::from_millis(500));
    }

    #[tokio::test]
    async fn a_command_that_does_not_exist_fails_to_start() {
        let err = start(&["/nonexistent/agent"]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
