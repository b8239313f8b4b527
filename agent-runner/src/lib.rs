//! `agent-runner` runs inside every agentsmith job. It starts the agent command in a
//! process group of its own, streams the agent's output and heartbeats to the
//! dispatcher's callback in numbered batches, relays the agent's questions (and their
//! answers) and progress messages, hands it the messages people send it while it runs,
//! stops the agent on SIGTERM, on its time limit or when the dispatcher says so, and sends
//! one final event saying how the agent ended and what it left in its result file. Inside
//! the job, the same binary is the agent's client for questions and messages
//! (`agent-runner ask`, `agent-runner say`: [`ask`]).
//!
//! The job arrives through the environment variables of [`contract::env`]; the
//! events are the wire types of [`contract`]. Layout:
//!
//! | module | what |
//! |---|---|
//! | [`job`] | the job read from the environment ([`Job::from_env`]); the agent's environment |
//! | [`credential`] | the one-time credential exchanged for the attempt's token; the runner sealed |
//! | [`checkout`] | the repository checked out before the agent starts, its credential only in git's environment |
//! | [`ca`] | extra CA certificates the spawner mounted: trusted by the runner, joined with the public roots for the agent |
//! | [`workspace`] | the work directory: intent file, result file, ask, say and inbox directories, handing it to the agent's user |
//! | [`agent`] | the agent's process group: start (as whom), SIGTERM, grace, SIGKILL, what it left behind |
//! | [`reaper`] | the runner as subreaper: processes that left the agent's group end with it |
//! | [`pgid_pipe`] | the pipe on which the process backend learns the agent's process group |
//! | [`output`] | the agent's output lines: bounded reading, echo on stdout, queueing |
//! | [`outbox`] | queued events: sequence numbers, batching, the cap on buffered lines |
//! | [`sender`] | delivery: retries with backoff, and what each dispatcher answer means (the inbox count published); the [`sender::Callback`] routes |
//! | [`conversation`] | the agent's questions, asked one at a time and answered in its ask directory; its progress messages, rate-limited |
//! | [`inbox`] | the messages people send the agent: fetched when the count grows, written once each as `<seq>.json` in its inbox directory |
//! | [`mailbox`] | the ask, say and inbox directories read and written safely: no links followed, no FIFO blocking, bounded, nothing overwritten that must not be |
//! | [`ask`] | `agent-runner ask` and `say`: the agent's client, which leaves a file and waits for the answer |
//! | [`supervisor`] | one attempt from start to the final event ([`run`]) |
//! | [`error`] | the crate's [`Error`] and the exit code of each failure |

pub mod agent;
pub mod ask;
pub mod ca;
pub mod checkout;
pub mod conversation;
pub mod credential;
pub mod error;
pub mod inbox;
pub mod job;
pub mod mailbox;
pub mod oom;
pub mod outbox;
pub mod output;
pub mod pgid_pipe;
pub mod reaper;
pub mod sender;
pub mod supervisor;
pub mod workspace;

pub use error::{Error, Result};
pub use job::Job;
pub use supervisor::{run, Settings};
