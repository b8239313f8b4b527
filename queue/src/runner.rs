//! What a runner's batch of events does to its job: log lines appended, the state moved on
//! `started` and `finished`, the lease renewed; idempotent per sequence number.
//!
//! A runner is on the agent's side of the wall, so what it sends is bounded here, where it
//! is stored: each line is cut at [`MAX_RECORDED_LINE_BYTES`], a result at
//! [`MAX_SUMMARY_BYTES`], [`MAX_LINKS`] links of [`MAX_URL_BYTES`] each, the agent's notes
//! for a pull request at [`MAX_NOTES_BYTES`], and an attempt
//! records at most `queue.output_bytes_per_attempt` of output (then one event says the
//! rest was dropped). A batch may not leave a gap in the sequence numbers.

use contract::{
    conversation, AgentResult, Change, Link, OutputStream, RunOutcome, RunnerBatch, RunnerEvent,
};

use crate::batch::Batched;
use crate::{now_ms, JobEvent, JobState, Question, Queue, QueueError, Result};

/// The longest log line recorded, in bytes (the runner cuts at 16 KiB and notes the cut;
/// this bounds what any sender can store).
pub const MAX_RECORDED_LINE_BYTES: usize = 32 * 1024;
/// The longest result summary recorded, in bytes.
pub const MAX_SUMMARY_BYTES: usize = 16 * 1024;
/// The longest notes for a pull request recorded (and put in its description), in bytes.
pub const MAX_NOTES_BYTES: usize = 16 * 1024;
/// The most links a result keeps.
pub const MAX_LINKS: usize = 20;
/// The longest link URL or title recorded, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// What applying a runner batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The job's state afterwards (empty when the batch was refused for a gap).
    pub state: String,
    /// Whether the runner should stop its agent (the attempt is no longer wanted).
    pub stop: bool,
    /// Set when the batch was refused because it starts past the next sequence number
    /// expected, which it holds.
    pub gap: Option<u64>,
    /// Whether this batch started the agent (moved the attempt from starting on): a batch
    /// sent again does not.
    pub started: bool,
    /// Whether this batch ended the attempt, for good or to be retried (a batch sent again
    /// finds it ended: `stop`).
    pub ended: bool,
    /// How many messages the job's inbox holds (for the runner to fetch those it lacks).
    pub inbox: u64,
}

impl Queue {
    /// Applies a batch of runner events to the job (idempotent per sequence number).
    pub async fn apply_runner_batch(
        &self,
        job_id: &str,
        batch: &RunnerBatch,
    ) -> Result<BatchOutcome> {
        let now = now_ms();
        let mut args = vec![
            job_id.to_string(),
            batch.attempt.to_string(),
            batch.first_seq.to_string(),
            (self.limits.lease_secs * 1000).to_string(),
            self.backoff(batch.attempt).as_millis().to_string(),
            self.limits.output_bytes_per_attempt.to_string(),
            to_json(&JobEvent::Log {
                attempt: batch.attempt,
                stream: OutputStream::Stderr,
                line: format!(
                    "[agentsmith] output truncated: this attempt printed more than {} bytes; later lines are dropped",
                    self.limits.output_bytes_per_attempt
                ),
                at: now,
            }),
        ];
        for event in &batch.events {
            let (kind, payload, code, verdict) = encode_runner_event(batch.attempt, event, now);
            args.extend([kind.to_string(), payload, code, verdict]);
        }
        let reply = self
            .batched(Batched::RunnerEvents, self.job_keys(job_id).to_vec(), args)
            .await?;
        let answer: Vec<String> =
            redis::from_redis_value(reply).map_err(redis::RedisError::from)?;
        let [verdict, state, before @ ..] = answer.as_slice() else {
            return Err(QueueError::Corrupt(format!(
                "the runner events script answered {answer:?}"
            )));
        };
        if verdict == "gap" {
            return Ok(BatchOutcome {
                state: String::new(),
                stop: false,
                gap: state.parse().ok(),
                started: false,
                ended: false,
                inbox: 0,
            });
        }
        // Only an attempt starting or running gets its batch applied ('ok').
        let applied = verdict == "ok";
        let inbox = before.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
        let before = before.first().map(String::as_str);
        let live = |s: &str| s.parse::<JobState>().is_ok_and(JobState::is_live);
        Ok(BatchOutcome {
            stop: verdict == "stop",
            started: applied && before == Some(JobState::Starting.as_str()) && state != "starting",
            ended: applied && !live(state),
            state: state.clone(),
            gap: None,
            inbox,
        })
    }
}

/// What became of a runner's credential exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// The credential is the runner's: the first exchange, or a retry with the same nonce.
    Granted,
    /// The credential was spent before, with another nonce.
    Spent,
    /// No such job, another attempt is current, or the attempt is over.
    Gone,
}

impl Queue {
    /// Spends the one-time credential of `attempt` of `job_id` for the runner that chose
    /// `nonce_digest` (a digest of its nonce: the nonce itself never reaches Redis).
    pub async fn exchange_credential(
        &self,
        job_id: &str,
        attempt: u32,
        nonce_digest: &str,
    ) -> Result<Exchange> {
        let args = [attempt.to_string(), nonce_digest.to_string()];
        let verdict: String = self
            .eval(
                &self.scripts.exchange_credential,
                &self.job_keys(job_id),
                &args,
            )
            .await?;
        Ok(match verdict.as_str() {
            "granted" => Exchange::Granted,
            "spent" => Exchange::Spent,
            _ => Exchange::Gone,
        })
    }
}

/// `text` cut to at most `max` bytes at a character boundary, with a note of the cut.
pub fn truncated(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{} [agentsmith: {} more bytes cut]",
        &text[..end],
        text.len() - end
    )
}

/// A change as it is recorded (and as a pull request is opened from it): the agent's notes
/// cut at [`MAX_NOTES_BYTES`].
pub fn bounded_change(change: &Change) -> Change {
    let mut change = change.clone();
    if let Change::Pushed {
        notes: Some(notes), ..
    } = &mut change
    {
        *notes = truncated(notes, MAX_NOTES_BYTES);
    }
    change
}

/// A result as it is recorded: the summary cut, at most [`MAX_LINKS`] links, each URL and
/// title cut. (Whether a link is fit for a reply is decided where replies are written.)
fn bounded_result(result: &AgentResult) -> AgentResult {
    AgentResult {
        summary: result
            .summary
            .as_deref()
            .map(|s| truncated(s, MAX_SUMMARY_BYTES)),
        links: result
            .links
            .iter()
            .filter(|link| link.url.len() <= MAX_URL_BYTES)
            .take(MAX_LINKS)
            .map(|link| Link {
                title: link.title.as_deref().map(|t| truncated(t, MAX_URL_BYTES)),
                url: link.url.clone(),
            })
            .collect(),
    }
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("wire types always serialise")
}

/// Turns a runner event into the four script arguments: kind, JSON to append, exit code,
/// and (for `finished`) the verdict the script acts on.
fn encode_runner_event(
    attempt: u32,
    event: &RunnerEvent,
    now: i64,
) -> (&'static str, String, String, String) {
    match event {
        RunnerEvent::Started => ("started", String::new(), String::new(), String::new()),
        RunnerEvent::Heartbeat => ("heartbeat", String::new(), String::new(), String::new()),
        RunnerEvent::Log { stream, line } => {
            let event = JobEvent::Log {
                attempt,
                stream: *stream,
                line: truncated(line, MAX_RECORDED_LINE_BYTES),
                at: now,
            };
            ("log", to_json(&event), String::new(), String::new())
        }
        RunnerEvent::Dropped { lines } => {
            let event = JobEvent::Log {
                attempt,
                stream: OutputStream::Stderr,
                line: format!("[agentsmith] {lines} output lines were dropped while the dispatcher was unreachable"),
                at: now,
            };
            ("log", to_json(&event), String::new(), String::new())
        }
        RunnerEvent::Question {
            id,
            text,
            choices,
            default,
            timeout_secs,
        } => {
            let timeout_secs = (*timeout_secs).clamp(1, conversation::MAX_ASK_TIMEOUT_SECS);
            let event = JobEvent::Question(Question {
                attempt,
                id: truncated(id, 64),
                text: truncated(text, conversation::MAX_QUESTION_BYTES),
                choices: choices
                    .iter()
                    .take(conversation::MAX_CHOICES)
                    .map(|c| truncated(c, conversation::MAX_CHOICE_BYTES))
                    .collect(),
                default: default
                    .as_deref()
                    .map(|d| truncated(d, conversation::MAX_ANSWER_BYTES)),
                timeout_secs,
                deadline: now + (timeout_secs as i64) * 1000,
                at: now,
            });
            ("ask", to_json(&event), String::new(), String::new())
        }
        RunnerEvent::Say { text } => {
            let event = JobEvent::Say {
                attempt,
                text: truncated(text, conversation::MAX_SAY_BYTES),
                at: now,
            };
            ("say", to_json(&event), String::new(), String::new())
        }
        RunnerEvent::Finished {
            outcome,
            result,
            change,
        } => {
            let exit_code = match outcome {
                RunOutcome::Exited { code } => Some(*code),
                _ => None,
            };
            let verdict = match outcome {
                RunOutcome::Exited { code: 0 } => String::new(),
                RunOutcome::Exited { code } => format!("agent:agent exited with code {code}"),
                RunOutcome::Signaled { signal } => {
                    format!("agent:agent was killed by signal {signal}")
                }
                RunOutcome::StartFailed { reason } => {
                    format!("agent:agent command could not start: {reason}")
                }
                // The git host may be away for a moment: retried while attempts remain.
                RunOutcome::CheckoutFailed { reason } => {
                    format!("infra:the checkout failed: {reason}")
                }
                // Not retried (unless the profile says so): a retry would lose the work
                // that could not be pushed, and a refusal is the host's final word.
                RunOutcome::PushFailed { reason } => {
                    format!("agent:the push failed: {reason}")
                }
                RunOutcome::OomKilled => {
                    "agent:OOM-killed: the agent went over its memory limit".into()
                }
                RunOutcome::TimedOut => "timed_out".into(),
                RunOutcome::Terminated => {
                    "infra:runner was stopped before the agent finished".into()
                }
            };
            let event = JobEvent::Result {
                attempt,
                exit_code,
                result: result.as_ref().map(bounded_result).unwrap_or_default(),
                change: change.as_deref().map(bounded_change),
                at: now,
            };
            (
                "finished",
                to_json(&event),
                exit_code.map(|c| c.to_string()).unwrap_or_default(),
                verdict,
            )
        }
    }
}
