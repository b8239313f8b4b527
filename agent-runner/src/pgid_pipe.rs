//! The pipe on which the runner tells the process backend the agent's process group
//! ([`contract::env::PGID_FD`]), so the backend can kill the group if the runner dies
//! without doing so.
//!
//! The backend hands the pipe over as the runner's standard input. The runner moves it to
//! a close-on-exec descriptor and puts `/dev/null` in its place before it does anything
//! else, so no process it starts inherits it; and it makes itself non-dumpable before it
//! starts the agent ([`crate::agent`]), so an agent running as the same user cannot reach
//! it through `/proc/<runner>/fd` either. Nothing the agent can write is trusted: the
//! number lives in the backend's memory, not in a file of the work directory.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileTypeExt;

use contract::env;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::error::{Error, Result};

/// The write end of the process backend's pipe.
#[derive(Debug)]
pub struct PgidPipe {
    pipe: File,
}

impl PgidPipe {
    /// The pipe [`env::PGID_FD`] names, taken off the runner's standard input; `None`
    /// when the variable is unset (every backend but `process`).
    pub fn from_env() -> Result<Option<Self>> {
        let Some(value) = std::env::var_os(env::PGID_FD) else {
            return Ok(None);
        };
        if value != "0" {
            return Err(invalid(
                "only 0 (standard input) is supported: the one descriptor a spawner can hand over without unsafe code",
            ));
        }
        // A duplicate at 3 or above, close-on-exec: no child process inherits it.
        let pipe = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .map_err(|e| invalid(format!("standard input: {e}")))?;
        let is_pipe = pipe.metadata().is_ok_and(|meta| meta.file_type().is_fifo());
        if !is_pipe {
            return Err(invalid("standard input is not a pipe"));
        }
        let null = File::open("/dev/null").map_err(|e| invalid(format!("/dev/null: {e}")))?;
        nix::unistd::dup2(null.as_raw_fd(), 0)
            .map_err(|e| invalid(format!("replacing standard input: {e}")))?;
        // A backend that stopped reading must never block the runner: a report that does
        // not fit is dropped (the pipe holds 64 KiB; the runner writes two short lines).
        fcntl(pipe.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(|e| invalid(format!("making the pipe non-blocking: {e}")))?;
        Ok(Some(Self { pipe }))
    }

    /// Tells the backend that the agent's group is `pgid`.
    pub fn started(&mut self, pgid: i32) {
        self.report(pgid);
    }

    /// Tells the backend that the agent's group is gone, so it never signals the number
    /// once the system may have given it to another process.
    pub fn gone(&mut self) {
        self.report(0);
    }

    fn report(&mut self, pgid: i32) {
        if let Err(e) = self.pipe.write_all(format!("{pgid}\n").as_bytes()) {
            // The backend is gone or not reading: nobody is left to act on the number.
            tracing::warn!(pgid, error = %e, "cannot tell the process backend the agent's process group");
        }
    }
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidVar {
        name: env::PGID_FD,
        reason: reason.into(),
    }
}
