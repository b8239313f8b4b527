//! Answers to an agent's question from where its job came from: a Slack button or `/agent
//! answer <job> <text>` (see `slack`), and a `/agent answer <text>` comment on the job's
//! GitHub or GitLab issue or Jira ticket ([`on_ticket`]).
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

/// A `/agent answer <text>` comment on an issue: answers the question the issue's job waits
/// on, if its author may, and says so on the issue. Always 200 (the sender does not retry),
/// but 503 when who may answer could not be checked.
pub async fn on_ticket(
    state: &AppState,
    event: &IssueEvent,
    text: &str,
    digest: &str,
) -> Result<Response, ApiError> {
    let source = event.source.as_str();
    // A redelivered comment must not answer twice, nor be told twice that it came late.
    if !state
        .queue
        .first_delivery(&format!("{source}:answer:{digest}"))
        .await?
    {
        return Ok(ignored("this answer was taken before"));
    }
    let reply = |text: String| ReplyBody::Text {
        origin: event.origin.clone(),
        text,
        response_url: None,
    };
    if text.is_empty() {
        let usage = format!(
            "Write the answer after `{} answer`.",
            state.settings.sources.command
        );
        state.queue.send_reply(&reply(usage)).await?;
        return Ok(ignored("an answer with no text"));
    }
    let Some(job) = state
        .queue
        .waiting_job_of_ticket(source, &event.ticket)
        .await?
    else {
        let text = "No agent working on this issue is waiting for an answer.".to_string();
        state.queue.send_reply(&reply(text)).await?;
        return Ok(ignored("no job of this issue waits for an answer"));
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
                let text = refusal.answer(ask.actor, "answer the agent's question");
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
    let outcome = state.queue.answer(&job.id, None, text, &by).await?;
    let said = told(&outcome, &job.id, None);
    info!(job_id = %job.id, %by, answered = matches!(outcome, AnswerOutcome::Answered(_)), "an answer from an issue comment");
    state.queue.send_reply(&reply(said.clone())).await?;
    let status = if matches!(outcome, AnswerOutcome::Answered(_)) {
        "answered"
    } else {
        "already_answered"
    };
    Ok(decided(
        Json(json!({"status": status, "job_id": job.id})).into_response(),
        Decision::Answered { reason: said },
    ))
}
