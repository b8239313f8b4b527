//! What a runner's batch of events does to its job: log lines appended, the state moved on
//! `started` and `finished`, the lease renewed; idempotent per sequence number.

use contract::{OutputStream, RunOutcome, RunnerBatch, RunnerEvent};

use crate::{now_ms, JobEvent, Queue, Result};

/// What applying a runner batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The job's state afterwards.
    pub state: String,
    /// Whether the runner should stop its agent (the attempt is no longer wanted).
    pub stop: bool,
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
        ];
        for event in &batch.events {
            let (kind, payload, code, verdict) = encode_runner_event(batch.attempt, event, now);
            args.extend([kind.to_string(), payload, code, verdict]);
        }
        let (verdict, state): (String, String) = self
            .eval(&self.scripts.runner_events, &self.job_keys(job_id), &args)
            .await?;
        Ok(BatchOutcome {
            stop: verdict == "stop",
            state,
        })
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
                line: line.clone(),
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
        RunnerEvent::Finished { outcome, result } => {
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
                result: result.clone().unwrap_or_default(),
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
