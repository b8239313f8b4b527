//! `agent-runner` runs inside every agentsmith job. It starts the agent command in a
//! process group of its own, streams the agent's output and heartbeats to the
//! dispatcher's callback in numbered batches, stops the agent on SIGTERM, on its time
//! limit or when the dispatcher says so, and sends one final event saying how the agent
//! ended and what it left in its result file.
//!
//! The job arrives through the environment variables of [`contract::env`]; the
//! events are the wire types of [`contract`]. Layout:
//!
//! | module | what |
//! |---|---|
//! | [`job`] | the job read from the environment ([`Job::from_env`]); the agent's environment |
//! | [`workspace`] | the work directory: intent file, result file, the agent's pgid file |
//! | [`agent`] | the agent's process group: start, SIGTERM, grace, SIGKILL |
//! | [`output`] | the agent's output lines: bounded reading, echo on stdout, queueing |
//! | [`outbox`] | queued events: sequence numbers, batching, the cap on buffered lines |
//! | [`sender`] | delivery: retries with backoff, and what each dispatcher answer means |
//! | [`supervisor`] | one attempt from start to the final event ([`run`]) |
//! | [`error`] | the crate's [`Error`] and the exit code of each failure |

pub mod agent;
pub mod error;
pub mod job;
pub mod oom;
pub mod outbox;
pub mod output;
pub mod sender;
pub mod supervisor;
pub mod workspace;

pub use error::{Error, Result};
pub use job::Job;
pub use supervisor::{run, Settings};
