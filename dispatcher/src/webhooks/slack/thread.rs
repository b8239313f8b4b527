//! A message in a Slack thread where a job was started, from someone the job's project lets
//! start jobs there: the answer to the question its agent waits on; while it is queued or
//! runs, a message to its agent (steering it); once it has ended, when the message mentions
//! the app, a follow-up job that continues it (same project and ticket, its branch, its
//! summary in the new intent). A plain reply in an ended job's thread is people talking:
//! nothing is done.
//!
//! The same message can come twice, as a `message` event and, when it mentions the app, as
//! an `app_mention`: it is acted on once, known by its channel and ts.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::conversation::{self, Answer, Asker};
use super::duplicate;
use crate::api::error::ApiError;
use crate::context::AppState;
use crate::notify::message::Message;
use crate::webhooks::access::Actor;
use crate::webhooks::journal::{self, decided};
use queue::{Decision, JobState};

/// A message in a thread.
pub(super) struct ThreadMessage {
    pub(super) actor: Actor,
    pub(super) channel: String,
    pub(super) thread_ts: String,
    /// The message's own ts.
    pub(super) ts: String,
    /// Without its leading mentions.
    pub(super) text: String,
    /// Whether it mentions the app (an `app_mention`): only such a message follows up.
    pub(super) mentioned: bool,
}

/// What the message comes to, `None` when no job was started in its thread (or its record
/// has expired).
pub(super) async fn thread_message(
    state: &AppState,
    message: &ThreadMessage,
) -> Result<Option<Answer>, ApiError> {
    let (channel, thread) = (message.channel.as_str(), message.thread_ts.as_str());
    // A job that waits for an answer is found first, should a later one share its thread.
    let job = match state.queue.waiting_job_in_thread(channel, thread).await? {
        Some(job) => job,
        None => match state.queue.job_in_thread(channel, thread).await? {
            Some(job) => job,
            None => return Ok(None),
        },
    };
    let ended = job.state.is_terminal();
    let text = message.text.trim();
    if (ended && !message.mentioned) || text.is_empty() {
        let reason = if text.is_empty() {
            "an empty message".to_string()
        } else {
            format!(
                "`{}` has ended ({}); mention the app in the thread to follow up",
                job.id, job.state
            )
        };
        return Ok(Some(silent(Decision::Ignored { reason })));
    }
    let asker = Asker {
        actor: message.actor.clone(),
        channel,
        thread_ts: Some(thread),
        response_url: None,
        // A follow-up is known by its message: Slack's retry of it finds the job it made.
        delivery: Some(format!("message:{channel}:{}", message.ts)),
        in_response: false,
    };
    if ended {
        return follow_up(state, &asker, &job, text).await.map(Some);
    }
    if !state
        .queue
        .first_delivery(&format!("slack:message:{channel}:{}", message.ts))
        .await?
    {
        return Ok(Some(silent(Decision::Duplicate { job_id: None })));
    }
    let said = if job.state == JobState::WaitingForInput {
        let question = job.question.as_ref().map(|q| q.id.clone());
        conversation::answer(state, &asker, &job.id, question.as_deref(), text).await?
    } else {
        conversation::say(state, &asker, &job.id, text).await?
    };
    Ok(Some(Answer::new(
        Message::text(said.clone()),
        Decision::Answered { reason: said },
    )))
}

/// An answer with nothing to post.
fn silent(decision: Decision) -> Answer {
    Answer {
        message: Message::text(String::new()),
        told: true,
        decision,
    }
}

/// Starts the job that continues `previous` with `text` as its task, if the asker may start
/// jobs in its project. The submit links the two (the thread's key names `previous`).
async fn follow_up(
    state: &AppState,
    asker: &Asker<'_>,
    previous: &queue::Job,
    text: &str,
) -> Result<Answer, ApiError> {
    let Some(project) = previous.project.clone() else {
        let reason = format!(
            "`{}` belongs to no project, so it cannot be followed up from Slack",
            previous.id
        );
        return Ok(Answer::new(
            Message::text(format!("{reason}.")),
            Decision::Ignored { reason },
        ));
    };
    if let Some(refusal) = conversation::refusal(state, asker, &project).await {
        let text = refusal.answer(Some(&asker.actor), "follow up on this job");
        return Ok(Answer::new(Message::text(text), journal::refused(&refusal)));
    }
    conversation::start_job(
        state,
        asker,
        project,
        text.to_string(),
        previous.ticket.clone(),
    )
    .await
}

/// Posts `answer` in the thread (unless the outbox tells it, or there is nothing to tell)
/// and answers Slack.
pub(super) async fn respond(
    state: &AppState,
    message: &ThreadMessage,
    answer: Answer,
) -> Result<Response, ApiError> {
    if !answer.told {
        let (channel, user) = (&message.channel, &message.actor.id);
        let text = answer.message.mrkdwn();
        super::post_in_thread(state, channel, user, &message.thread_ts, text).await?;
    }
    match &answer.decision {
        Decision::Duplicate { .. } => return Ok(duplicate()),
        Decision::Ignored { reason } => return Ok(crate::webhooks::ignored(reason)),
        _ => {}
    }
    Ok(decided(
        Json(json!({"status": "ok"})).into_response(),
        answer.decision,
    ))
}
