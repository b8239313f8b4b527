//! Answers to an agent's question, and messages steering it, from where its job came from:
//! a Slack button, `/agent answer <job> <text>` or `/agent say <job> <text>` (see `slack`),
//! and an `/agent answer <text>` or `/agent say <text>` comment on the job's GitHub or
//! GitLab issue or Jira ticket ([`on_ticket`]).
//!
//! Who may answer: whoever the job's project lets start jobs from there (the same rules as a
//! trigger, checked again at the answer), and on Slack the job's requester and the admins.
//! The first answer wins, exactly once (the queue's `answer` script); a later one is told
//! who answered what.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::info;

use super::access::{self, Ask, Verdict, Why};
use super::journal::{self, decided};
use super::{ignored, unchecked, IssueEvent};
use crate::api::error::ApiError;
use crate::context::AppState;
use queue::{AnswerOutcome, Decision, ReplyBody};

/// What the person who answered is told.
pub fn told(outcome: &AnswerOutcome, job_id: &str, question: Option<&str>) -> String {
    let quoted = |text: &str| format!("“{}”", super::truncate(text, 200));
    match outcome {
        AnswerOutcome::Answered(answer) => format!(
            "Thanks: the agent of `{job_id}` goes on with {}.",
            quoted(&answer.text)
        ),
        AnswerOutcome::Closed {
            last: Some(last), ..
        } if question.is_none_or(|q| q == last.question) => {
            if last.defaulted {
                format!(
                    "That question of `{job_id}` was already settled: nobody answered in time, so it took its default, {}.",
                    quoted(&last.text)
                )
            } else {
                format!(
                    "That question of `{job_id}` was already answered by {}: {}.",
                    last.by,
                    quoted(&last.text)
                )
            }
        }
        AnswerOutcome::Closed { state, .. } => {
            format!("`{job_id}` is not waiting for that answer (it is {state}).")
        }
        AnswerOutcome::NotFound => format!("There is no job `{job_id}`."),
    }
}

/// What a comment on an issue says to the issue's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Steer {
    /// `/agent answer <text>`: the answer to the question its agent waits on.
    Answer(String),
    /// `/agent say <text>`: a message for its running agent.
    Say(String),
}

/// A `/agent answer <text>` or `/agent say <text>` comment on an issue: answers the question
/// the issue's job waits on, or puts the message into the inbox of its running agent, if the
/// comment's author may, and says so on the issue. Always 200 (the sender does not retry),
/// but 503 when who may could not be checked.
pub async fn on_ticket(
    state: &AppState,
    event: &IssueEvent,
    steer: Steer,
    digest: &str,
) -> Result<Response, ApiError> {
    let source = event.source.as_str();
    // A redelivered comment must not act twice, nor be told twice that it came late.
    if !state
        .queue
        .first_delivery(&format!("{source}:steer:{digest}"))
        .await?
    {
        return Ok(ignored("this comment was taken before"));
    }
    let reply = |text: String| ReplyBody::Text {
        origin: event.origin.clone(),
        text,
        response_url: None,
    };
    let (verb, text) = match &steer {
        Steer::Answer(text) => ("answer", text.as_str()),
        Steer::Say(text) => ("say", text.as_str()),
    };
    if text.is_empty() {
        let usage = format!(
            "Write the {} after `{} {verb}`.",
            if verb == "say" { "message" } else { "answer" },
            state.settings.sources.command
        );
        state.queue.send_reply(&reply(usage)).await?;
        return Ok(ignored("a comment with no text"));
    }
    let job = match steer {
        Steer::Answer(_) => {
            state
                .queue
                .waiting_job_of_ticket(source, &event.ticket)
                .await?
        }
        Steer::Say(_) => state
            .queue
            .active_job_of_ticket(&event.ticket)
            .await?
            .filter(|job| job.origin.as_ref().is_some_and(|o| o.source() == source)),
    };
    let Some(job) = job else {
        let text = match steer {
            Steer::Answer(_) => "No agent working on this issue is waiting for an answer.",
            Steer::Say(_) => "No agent is working on this issue now.",
        };
        state.queue.send_reply(&reply(text.to_string())).await?;
        return Ok(ignored("no job of this issue to take it"));
    };
    let project = job.project.clone().unwrap_or_default();
    let ask = Ask {
        source: event.source,
        project: &project,
        scope: &event.scope,
        actor: event.actor.as_ref(),
        channel: None,
        comment: true,
    };
    match access::check(state, &ask).await {
        Ok(Verdict::Allowed) => {}
        Ok(Verdict::Refused(refusal)) => {
            access::record(state, &ask, &refusal);
            if refusal.why != Why::Bot {
                let doing = match steer {
                    Steer::Answer(_) => "answer the agent's question",
                    Steer::Say(_) => "send the agent a message",
                };
                let text = refusal.answer(ask.actor, doing);
                state.queue.send_reply(&reply(text)).await?;
            }
            return Ok(decided(
                Json(
                    json!({"status": "refused", "reason": format!("it needs {}", refusal.reason)}),
                )
                .into_response(),
                journal::refused(&refusal),
            ));
        }
        Err(error) => return Err(unchecked(event.source, &error)),
    }
    let by = event
        .actor
        .as_ref()
        .map(|a| a.name.clone())
        .or_else(|| event.requester.clone())
        .unwrap_or_else(|| source.to_string());
    let by = format!("{by} ({source})");
    let (status, said) = match steer {
        Steer::Answer(text) => {
            let outcome = state.queue.answer(&job.id, None, &text, &by).await?;
            let answered = matches!(outcome, AnswerOutcome::Answered(_));
            info!(job_id = %job.id, %by, answered, "an answer from an issue comment");
            let status = if answered {
                "answered"
            } else {
                "already_answered"
            };
            (status, told(&outcome, &job.id, None))
        }
        Steer::Say(text) => match state.send_message(&job.id, &text, &by).await {
            Ok(seq) => {
                info!(job_id = %job.id, %by, seq, "a message from an issue comment");
                ("sent", sent(&job.id, seq))
            }
            // Redis away: 503, and the sender tries again.
            Err(e) if e.status.is_server_error() => return Err(e),
            Err(e) => ("not_sent", e.message),
        },
    };
    state.queue.send_reply(&reply(said.clone())).await?;
    Ok(decided(
        Json(json!({"status": status, "job_id": job.id})).into_response(),
        Decision::Answered { reason: said },
    ))
}

/// What the sender of a message is told.
pub fn sent(job_id: &str, seq: u64) -> String {
    format!("Sent to the agent of `{job_id}` (message {seq}): it reads it at its next step.")
}
