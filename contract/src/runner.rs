//! The runner's wire types: what `agent-runner` posts to `/internal/jobs/{id}/events`
//! and what the dispatcher answers. Versioned by [`PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};

/// The version of the runner wire protocol; sent in every [`RunnerBatch`].
pub const PROTOCOL_VERSION: u32 = 3;

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// The agent's standard output.
    Stdout,
    /// The agent's standard error.
    Stderr,
}

/// A link the agent produced (a pull request, a report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// What the link is, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The URL.
    pub url: String,
}

/// What an agent may leave in its result file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgentResult {
    /// A short summary of what was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Links to what was produced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
}

/// How the agent's run ended, as the runner saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunOutcome {
    /// The agent exited by itself with this code.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// The agent was killed by a signal the runner did not send.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// The runner stopped the agent because its time limit passed.
    TimedOut,
    /// The runner itself was told to stop (SIGTERM: a node drain, a shutdown, a cancel).
    Terminated,
    /// The agent was killed by the kernel for going over its memory limit.
    OomKilled,
    /// The agent command could not be started at all.
    StartFailed {
        /// Why.
        reason: String,
    },
    /// The repository could not be checked out, so the agent was not started.
    CheckoutFailed {
        /// Why, in git's words.
        reason: String,
    },
    /// The agent exited 0, but its work could not be committed or pushed.
    PushFailed {
        /// Why, in the git host's words.
        reason: String,
    },
}

/// One event from the runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunnerEvent {
    /// The agent process started.
    Started,
    /// The runner is alive (renews the job's lease).
    Heartbeat,
    /// A line of the agent's output.
    Log {
        /// Which stream.
        stream: OutputStream,
        /// The line, without its newline.
        line: String,
    },
    /// Lines the runner had to drop because the dispatcher was unreachable for too long.
    Dropped {
        /// How many.
        lines: u64,
    },
    /// The agent asked a question and waits for its answer.
    Question {
        /// The question's id, unique within the attempt (the runner's name for it).
        id: String,
        /// The question.
        text: String,
        /// The answers offered as buttons.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        choices: Vec<String>,
        /// The answer taken when nobody answers in time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<String>,
        /// How long to wait for the answer.
        timeout_secs: u64,
    },
    /// A progress message from the agent, for people.
    Say {
        /// The message.
        text: String,
    },
    /// The agent's run is over; the last event of an attempt.
    Finished {
        /// How it ended.
        outcome: RunOutcome,
        /// What the agent left in its result file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<AgentResult>,
        /// What the runner did with the agent's work (a job with a checkout that pushes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        change: Option<Box<crate::Change>>,
    },
}

/// A batch of runner events, as posted to `/internal/jobs/{id}/events`.
///
/// The dispatcher answers 200 with a [`RunnerReply`]; 409 when the attempt is no longer
/// wanted (cancelled, superseded: the runner stops its agent and exits); 401 for a token
/// that does not match the job and attempt. Anything else is retried by the runner.
/// Sequence numbers run from 0 per attempt without gaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerBatch {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The attempt the events belong to.
    pub attempt: u32,
    /// The sequence number of the first event; events carry consecutive numbers, so a
    /// batch that is sent again after a lost answer is not recorded twice.
    pub first_seq: u64,
    /// The events, in order.
    pub events: Vec<RunnerEvent>,
}

/// What the runner posts to `/internal/jobs/{id}/token`, authenticated with the attempt's
/// one-time credential ([`crate::env::JOB_CREDENTIAL`]), to get the attempt's token.
///
/// The first exchange spends the credential; the dispatcher answers it again only to the
/// same `nonce` (a retry after a lost answer), and refuses every other with 401. The
/// nonce lives only in the runner's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The attempt the credential belongs to.
    pub attempt: u32,
    /// A random value the runner chose (16 to 128 characters).
    pub nonce: String,
}

/// The dispatcher's answer to a [`TokenRequest`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenGrant {
    /// The attempt's token, for the `Authorization` header of every [`RunnerBatch`].
    pub token: String,
    /// The repository to check out before the agent starts, when the job's project has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<crate::Checkout>,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenGrant([redacted])")
    }
}

/// The dispatcher's answer to a [`RunnerBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerReply {
    /// The attempt is no longer wanted (cancelled, superseded): stop the agent now.
    #[serde(default)]
    pub stop: bool,
    /// How many messages the job's inbox holds (people steering the agent); the runner
    /// fetches those it has not yet handed on ([`crate::InboxRequest`]).
    #[serde(default)]
    pub inbox: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_events_round_trip_with_their_tags() {
        let batch = RunnerBatch {
            version: PROTOCOL_VERSION,
            attempt: 1,
            first_seq: 7,
            events: vec![
                RunnerEvent::Started,
                RunnerEvent::Log {
                    stream: OutputStream::Stderr,
                    line: "hi".into(),
                },
                RunnerEvent::Finished {
                    outcome: RunOutcome::Exited { code: 3 },
                    result: Some(AgentResult {
                        summary: Some("done".into()),
                        links: vec![Link {
                            title: None,
                            url: "http://x".into(),
                        }],
                    }),
                    change: Some(Box::new(crate::Change::NoChanges)),
                },
            ],
        };
        let json = serde_json::to_string(&batch).unwrap();
        assert!(json.contains(r#""type":"log","stream":"stderr""#), "{json}");
        assert!(
            json.contains(r#""outcome":{"kind":"exited","code":3}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<RunnerBatch>(&json).unwrap(), batch);
    }
}
