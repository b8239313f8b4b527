//! The agent process: started in a process group of its own, signalled as a group, and
//! stopped with SIGTERM, a grace period, then SIGKILL.
//!
//! The group matters: an agent is usually a shell or a CLI with children of its own, and
//! all of them must stop together. The runner never signals the group after it has reaped
//! the agent and killed what was left, so a reused process id is never hit.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use contract::RunOutcome;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::time::Instant;

/// A running agent process group.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    pgid: Pid,
    /// When the group gets SIGKILL, once a stop has begun.
    kill_at: Option<Instant>,
    killed: bool,
    reaped: bool,
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
    /// `/dev/null`, stdout and stderr piped. `env` sets (`Some`) or removes (`None`)
    /// variables of the environment inherited from the runner.
    pub fn start(
        argv: &[String],
        workdir: &Path,
        env: &[(&'static str, Option<String>)],
    ) -> io::Result<(Self, Pipes)> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(workdir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
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
        let agent = Self {
            child,
            // With `process_group(0)` the group id is the leader's pid.
            pgid: Pid::from_raw(pid),
            kill_at: None,
            killed: false,
            reaped: false,
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
    /// killed, so nothing holds its output pipes open. Cancel safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            match self.kill_at {
                Some(at) if !self.killed => {
                    tokio::select! {
                        status = self.child.wait() => return self.reaped(status),
                        () = tokio::time::sleep_until(at) => {
                            tracing::info!(pgid = self.pgid.as_raw(), "grace period over; killing the agent");
                            self.signal(Signal::SIGKILL);
                            self.killed = true;
                        }
                    }
                }
                _ => {
                    let status = self.child.wait().await;
                    return self.reaped(status);
                }
            }
        }
    }

    fn reaped(&mut self, status: io::Result<ExitStatus>) -> io::Result<ExitStatus> {
        if status.is_ok() && !self.reaped {
            // Children the agent left behind in its group; the leader is gone, but the
            // group id stays reserved while any member lives.
            self.signal(Signal::SIGKILL);
            self.reaped = true;
        }
        status
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

    #[tokio::test]
    async fn an_agent_runs_in_its_own_process_group() {
        let (mut agent, _pipes) =
            Agent::start(&argv(&["sh", "-c", "exit 7"]), Path::new("/"), &[]).unwrap();
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
        let (mut agent, _pipes) = Agent::start(
            &argv(&["sh", "-c", "trap '' TERM; sleep 30"]),
            Path::new("/"),
            &[],
        )
        .unwrap();
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
        let err = Agent::start(&argv(&["/nonexistent/agent"]), Path::new("/"), &[]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
