//! The types agentsmith's parts agree on, and nothing else: this crate depends on serde
//! alone, so `agent-runner` (which uses nothing more) stays small.
//!
//! | module | what |
//! |---|---|
//! | [`env`] | the environment variables through which a spawner hands a job to `agent-runner`, and those the runner sets for the agent |
//! | [`exit`] | `agent-runner`'s exit codes and what each means |
//! | [`labels`] | the labels every backend puts on every workload |
//! | [`intent`] | [`Intent`]: what the requester wants done |
//! | [`conversation`] | questions and progress messages: the agent's files, the runner's events, the answers |
//! | [`checkout`] | [`Checkout`]: the repository the runner checks out before the agent starts, and its credential |
//! | [`runner`] | the runner's wire types: [`RunnerBatch`] of [`RunnerEvent`]s, [`RunnerReply`], [`AgentResult`] |
//! | [`workload`] | [`JobHandle`] (one workload, as the queue records it) and [`workload_name`] |
//! | [`error_chain`] | [`ErrorChain`]: how every part writes an error and its causes in a log line |
//!
//! Everything that crosses a process boundary between the dispatcher, the spawners and
//! the runner is named here, so no two of them can disagree about a name or a shape.

pub mod agent_user;
pub mod checkout;
pub mod conversation;
pub mod env;
pub mod error_chain;
pub mod exit;
pub mod intent;
pub mod labels;
pub mod runner;
pub mod workload;

pub use agent_user::AgentUser;
pub use checkout::{Approval, Change, Checkout, GitCredential, PullRequest, Push};
pub use conversation::{
    Answer, AnswerReply, AnswerRequest, Ask, AskReply, InboxMessage, InboxReply, InboxRequest, Say,
};
pub use error_chain::ErrorChain;
pub use intent::{Intent, PreviousJob};
pub use runner::{
    AgentResult, Link, OutputStream, RunOutcome, RunnerBatch, RunnerEvent, RunnerReply, TokenGrant,
    TokenRequest, PROTOCOL_VERSION,
};
pub use workload::{workload_name, JobHandle, DEFAULT_TARGET};
