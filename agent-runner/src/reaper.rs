//! The runner as the agent's reaper: processes that leave the agent's process group
//! (`setsid`, a double fork) still end with the agent.
//!
//! Killing the agent's group is not enough: any process may start a session or group of
//! its own, and a daemonising double fork leaves its grandchild with init as parent. So
//! the runner makes itself a *child subreaper* before it starts the agent: every
//! descendant orphaned below it is reparented to the runner instead of to init. When the
//! agent has ended, every remaining child of the runner is therefore something the agent
//! left behind; [`kill_descendants`] kills and reaps them, level by level, until none is
//! left. The runner starts no other child processes of its own while the agent runs.
//!
//! Only direct children are signalled: their process ids cannot be reused until the runner
//! itself reaps them, whereas a grandchild's id could be, between reading `/proc` and the
//! signal, after its own parent reaped it.

use std::io;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{getpid, Pid};
use tokio::time::Instant;

/// How long [`kill_descendants`] keeps at it before giving up on a process tree that
/// keeps forking.
pub const KILL_LIMIT: Duration = Duration::from_secs(5);

/// Pause between rounds of [`kill_descendants`]: time for the kernel to reparent the
/// children of the processes just killed.
const ROUND_PAUSE: Duration = Duration::from_millis(10);

/// Makes the runner the reaper of every process orphaned below it.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// A child of the runner, as `/proc` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Child {
    pid: Pid,
    zombie: bool,
}

/// Kills and reaps every child of the runner, and the children they leave in turn, until
/// the runner has none left or `limit` has passed. Returns how many processes it killed
/// (zombies reaped are not counted).
///
/// Call it only once the agent itself has been waited for: the runner's other children
/// are then what the agent left behind.
pub async fn kill_descendants(limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut killed = 0;
    loop {
        let children = children_of(getpid());
        if children.is_empty() {
            return killed;
        }
        for child in &children {
            if !child.zombie {
                match kill(child.pid, Signal::SIGKILL) {
                    Ok(()) => killed += 1,
                    Err(Errno::ESRCH) => {}
                    Err(e) => {
                        tracing::warn!(pid = child.pid.as_raw(), error = %e, "cannot kill a process the agent left behind")
                    }
                }
            }
        }
        tokio::time::sleep(ROUND_PAUSE).await;
        for child in &children {
            reap(child.pid);
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                left = children_of(getpid()).len(),
                "processes the agent left behind are still forking; giving up on them"
            );
            return killed;
        }
    }
}

/// Reaps the children of the runner that have exited, but `spare` (the agent, whose
/// status its waiter collects): processes orphaned by the agent that the runner
/// inherited, so that they do not linger as zombies while the agent runs.
pub fn reap_orphans(spare: Pid) {
    for child in children_of(getpid()) {
        if child.zombie && child.pid != spare {
            reap(child.pid);
        }
    }
}

/// Collects `pid`'s exit status if it has exited.
fn reap(pid: Pid) {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        // ECHILD: reaped already (or not ours after all): nothing left to collect.
        Ok(_) | Err(Errno::ECHILD) => {}
        Err(e) => tracing::debug!(pid = pid.as_raw(), error = %e, "cannot reap a child"),
    }
}

/// The children of `parent`, from `/proc/<pid>/stat`.
fn children_of(parent: Pid) -> Vec<Child> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (state, ppid) = parse_stat(&stat)?;
            (ppid == parent.as_raw()).then_some(Child {
                pid: Pid::from_raw(pid),
                zombie: state == 'Z',
            })
        })
        .collect()
}

/// The state and parent pid of a `/proc/<pid>/stat` line. The command name, in
/// parentheses, may itself hold spaces and parentheses: the fields follow its last `)`.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (weird) name) S 17 4242 4242 0 -1 4194560 100 0 0 0";
        assert_eq!(parse_stat(stat), Some(('S', 17)));
        assert_eq!(parse_stat("1 (init) Z 0 1 1"), Some(('Z', 0)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
