//! Slack: slash commands (`POST /webhooks/slack/commands`), the Events API
//! (`/webhooks/slack/events`: `url_verification`, `app_mention`, and `message` for replies in
//! a job's thread, see [`thread`]) and buttons (`/webhooks/slack/interactions`: Cancel,
//! Retry, a question's choices). Every request is verified by its
//! `v0` signature and timestamp first.
//!
//! A command is answered within Slack's three seconds with an ephemeral message, after the
//! job is durable; progress and the result follow through the command's `response_url`
//! (or `chat.postMessage`), from the outbox. A `response_url` whose host is not in
//! `sources.slack.response_url_hosts` is never stored or called.
//!
//! Parsing is in [`payload`], what a person asks of the bot in [`conversation`].
//!
//! Who may start a job in a project, cancel or retry one, or see one in `status` and `list`
//! is the project's `access.slack` ([`super::access`]). A slash command's delivery is known
//! by the digest of its signed body, an event by its `event_id`, a button click by the
//! digest of its body: a click replayed within Slack's five minutes does nothing twice.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::ExposeSecret;
use serde_json::json;
use tracing::{info, instrument, warn};

use super::access::{self, Actor, ActorKind, Ask, Refusal};
use super::command::{self, Command};
use super::journal::{self, decided, Route, Verified};
use super::signature::verify_slack;
use super::{disabled, header, refused, unix_now, PayloadError, Source};
use crate::api::error::ApiError;
use crate::context::AppState;
use crate::notify::message::Message;
use crate::notify::providers::{response_url_host, slack_payload};
use crate::settings::Settings;
use queue::{AnswerOutcome, Decision, Origin, ReplyBody};

mod conversation;
mod payload;
mod thread;

use conversation::{act, run_command, Answer, Asker};
pub use payload::{
    parse_command, parse_event, parse_interaction, ButtonClick, SlackEvent, SlashCommand,
};
use thread::ThreadMessage;

/// Verifies a Slack request (or refuses it with 401).
fn verify(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let slack = &state.settings.sources.slack;
    if !slack.enabled {
        return Err(disabled(Source::Slack));
    }
    verify_slack(
        slack.signing_secret.expose_secret(),
        header(headers, "x-slack-request-timestamp"),
        header(headers, "x-slack-signature"),
        body,
        unix_now(),
    )
    .map_err(|e| refused(Source::Slack, e))
}

/// An ephemeral answer.
fn ephemeral(text: impl Into<String>) -> Response {
    Json(json!({"response_type": "ephemeral", "text": text.into()})).into_response()
}

/// An ephemeral answer with blocks (and buttons for a job).
fn ephemeral_message(message: &Message) -> Response {
    let mut payload = slack_payload(message);
    payload["response_type"] = json!("ephemeral");
    Json(payload).into_response()
}

/// A command's `response_url` if its host is allowed; one elsewhere is dropped (and
/// logged by its host, never the URL, which is a credential), so replies take
/// `chat.postMessage`.
fn allowed_response_url(settings: &Settings, url: Option<String>) -> Option<String> {
    let url = url?;
    match response_url_host(&url, &settings.sources.slack.response_url_hosts) {
        Ok(_) => Some(url),
        Err(why) => {
            warn!(reason = %why, "a command's response_url was dropped");
            None
        }
    }
}

/// `POST /webhooks/slack/commands`.
#[instrument(skip_all, fields(source = "slack", delivery_id))]
pub async fn commands(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    verify(&state, &headers, &body)?;
    journal::handle(&state, Verified::new(Route::SlackCommands, body)).await
}

/// A verified slash command, live or replayed: parse, run, answer.
pub(super) async fn command(state: &AppState, delivery: &Verified) -> Result<Response, ApiError> {
    let slash = parse_command(&delivery.body).map_err(PayloadError::bad_request)?;
    tracing::Span::current().record("delivery_id", slash.trigger_id.as_deref().unwrap_or(""));
    let name = &state.settings.sources.slack.command;
    let command = match command::parse(&slash.text, name) {
        Ok(command) => command,
        Err(unusable) => {
            let reason = unusable.to_string();
            return Ok(decided(
                ephemeral(reason.clone()),
                Decision::Ignored { reason },
            ));
        }
    };
    let response_url = allowed_response_url(&state.settings, slash.response_url.clone());
    let asker = Asker {
        actor: Actor::person(&slash.user_id, &slash.user_name),
        channel: &slash.channel_id,
        thread_ts: None,
        response_url: response_url.as_deref(),
        delivery: Some(delivery.digest.clone()),
        in_response: true,
    };
    let answer = run_command(state, &asker, command).await?;
    Ok(decided(ephemeral_message(&answer.message), answer.decision))
}

/// A mention, from a person or a bot.
struct Mention {
    event_id: String,
    actor: Actor,
    channel: String,
    thread_ts: String,
    /// The message's own ts: not `thread_ts` when the mention is a reply in a thread.
    ts: String,
    text: String,
}

/// `POST /webhooks/slack/events`.
#[instrument(skip_all, fields(source = "slack", delivery_id))]
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    verify(&state, &headers, &body)?;
    journal::handle(&state, Verified::new(Route::SlackEvents, body)).await
}

/// A verified Events API delivery, live or replayed.
pub(super) async fn event(state: &AppState, delivery: &Verified) -> Result<Response, ApiError> {
    let mention = match parse_event(&delivery.body).map_err(PayloadError::bad_request)? {
        SlackEvent::UrlVerification(challenge) => {
            return Ok(decided(
                Json(json!({"challenge": challenge})).into_response(),
                Decision::Answered {
                    reason: "url_verification".into(),
                },
            ))
        }
        SlackEvent::Other(reason) => return Ok(super::ignored(&reason)),
        SlackEvent::ThreadReply {
            event_id,
            user,
            channel,
            thread_ts,
            ts,
            text,
            addressed,
        } => {
            tracing::Span::current().record("delivery_id", event_id.as_str());
            // A command to the app comes as its mention too, and is run from there.
            let name = &state.settings.sources.slack.command;
            if addressed && command::parse(&text, name).is_ok() {
                return Ok(super::ignored("a command to the app, run from its mention"));
            }
            let message = ThreadMessage {
                actor: Actor::person(&user, &user),
                channel,
                thread_ts,
                ts,
                text,
                mentioned: false,
            };
            return match thread::thread_message(state, &message).await? {
                Some(answer) => thread::respond(state, &message, answer).await,
                None => Ok(super::ignored("no job was started in this thread")),
            };
        }
        SlackEvent::Mention {
            event_id,
            user,
            channel,
            thread_ts,
            ts,
            text,
        } => Mention {
            event_id,
            actor: Actor::person(&user, &user),
            channel,
            thread_ts,
            ts,
            text,
        },
        SlackEvent::BotMention {
            event_id,
            bot_id,
            channel,
            thread_ts,
            text,
        } => Mention {
            event_id,
            actor: Actor {
                id: bot_id.clone(),
                name: bot_id,
                kind: ActorKind::Bot,
            },
            channel,
            // A bot's mention is only ever a command: never a reply to a job's thread.
            ts: thread_ts.clone(),
            thread_ts,
            text,
        },
    };
    tracing::Span::current().record("delivery_id", mention.event_id.as_str());
    if let Some(ignored) = unlisted_bot(state, &mention.actor) {
        return Ok(ignored);
    }
    answer_mention(state, mention).await
}

/// A bot's mention when no project lists the bot: counted, logged and ignored, never
/// answered (bots answering bots would not stop).
fn unlisted_bot(state: &AppState, actor: &Actor) -> Option<Response> {
    let settings = &state.settings;
    let listed = settings
        .projects
        .values()
        .any(|p| p.access.slack.bots.contains(&actor.id));
    if actor.kind != ActorKind::Bot || listed {
        return None;
    }
    let refusal = Refusal {
        why: access::Why::Bot,
        reason: "a person, or a bot listed in a project's access.slack.bots".into(),
    };
    let ask = Ask {
        source: Source::Slack,
        project: "",
        scope: "",
        actor: Some(actor),
        channel: None,
        comment: false,
    };
    access::record(state, &ask, &refusal);
    Some(super::ignored(&format!("it needs {}", refusal.reason)))
}

/// Runs a mention's command and answers in its thread.
async fn answer_mention(state: &AppState, mention: Mention) -> Result<Response, ApiError> {
    let name = &state.settings.sources.slack.command;
    let event_id = &mention.event_id;
    let command = command::parse(&mention.text, name);
    // Words that are no command, in a job's thread: for that job (an answer, a message to
    // its agent, a follow-up).
    if command.is_err() && mention.ts != mention.thread_ts {
        let message = ThreadMessage {
            actor: mention.actor.clone(),
            channel: mention.channel.clone(),
            thread_ts: mention.thread_ts.clone(),
            ts: mention.ts.clone(),
            text: mention.text.clone(),
            mentioned: true,
        };
        if let Some(answer) = thread::thread_message(state, &message).await? {
            return thread::respond(state, &message, answer).await;
        }
    }
    let creates_job = matches!(command, Ok(Command::Fix { .. } | Command::Run { .. }));
    // A job's delivery is deduplicated by the submit itself; any other answer here, so a
    // retried event (X-Slack-Retry-Num) does not cancel twice or answer twice.
    if !creates_job
        && !state
            .queue
            .first_delivery(&format!("slack:{event_id}"))
            .await?
    {
        return Ok(duplicate());
    }
    let answer = match command {
        Err(unusable) => {
            let reason = unusable.to_string();
            Answer::new(Message::text(reason.clone()), Decision::Ignored { reason })
        }
        Ok(command) => {
            let asker = Asker {
                actor: mention.actor.clone(),
                channel: &mention.channel,
                thread_ts: Some(&mention.thread_ts),
                response_url: None,
                delivery: Some(event_id.clone()),
                in_response: false,
            };
            run_command(state, &asker, command).await?
        }
    };
    // A new job's replies (queued, started, finished) come from the outbox; anything else
    // (a refusal too) is answered in the thread through it, since an event's response is
    // not shown; once, should Slack retry the event.
    let answered = format!("slack:answered:{event_id}");
    if !answer.told && (!creates_job || state.queue.first_delivery(&answered).await?) {
        let text = answer.message.mrkdwn();
        post_in_thread(
            state,
            &mention.channel,
            &mention.actor.id,
            &mention.thread_ts,
            text,
        )
        .await?;
    }
    Ok(decided(
        Json(json!({"status": "ok"})).into_response(),
        answer.decision,
    ))
}

/// Posts `text` in the thread `thread_ts` of `channel`, through the outbox, for `user`.
async fn post_in_thread(
    state: &AppState,
    channel: &str,
    user: &str,
    thread_ts: &str,
    text: String,
) -> Result<(), ApiError> {
    let origin = Origin::Slack {
        channel: channel.to_string(),
        user: user.to_string(),
        thread_ts: Some(thread_ts.to_string()),
    };
    let reply = ReplyBody::Text {
        origin,
        text,
        response_url: None,
    };
    Ok(state.queue.send_reply(&reply).await?)
}

/// The answer to a Slack delivery seen before: nothing done again.
fn duplicate() -> Response {
    decided(
        Json(json!({"status": "duplicate"})).into_response(),
        Decision::Duplicate { job_id: None },
    )
}

/// `POST /webhooks/slack/interactions`: Cancel and Retry buttons. The answer goes to the
/// clicker through the interaction's `response_url`, from the outbox. A click is done once:
/// the same signed body again (a replay within Slack's five minutes) does nothing.
#[instrument(skip_all, fields(source = "slack", job_id))]
pub async fn interactions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    verify(&state, &headers, &body)?;
    journal::handle(&state, Verified::new(Route::SlackInteractions, body)).await
}

/// A verified interaction, live or replayed: a click is done once per digest.
pub(super) async fn interaction(
    state: &AppState,
    delivery: &Verified,
) -> Result<Response, ApiError> {
    let Some(click) = parse_interaction(&delivery.body).map_err(PayloadError::bad_request)? else {
        return Ok(super::ignored("not a Cancel, Retry or answer button"));
    };
    tracing::Span::current().record("job_id", click.job_id.as_str());
    let seen = format!("slack:{}", delivery.digest);
    if !state.queue.first_delivery(&seen).await? {
        info!(action = %click.action, "a button click seen before; nothing done");
        return Ok(duplicate());
    }
    let asker = Asker {
        actor: Actor::person(&click.user, &click.user),
        channel: &click.channel,
        thread_ts: None,
        response_url: click.response_url.as_deref(),
        delivery: None,
        in_response: false,
    };
    let outcome = if click.action == "answer" {
        answer_click(state, &asker, &click.job_id).await?
    } else {
        act(state, &asker, &click.action, &click.job_id).await?
    };
    state
        .queue
        .send_reply(&ReplyBody::Text {
            origin: Origin::Slack {
                channel: click.channel,
                user: click.user,
                thread_ts: None,
            },
            text: outcome.clone(),
            response_url: click.response_url,
        })
        .await?;
    Ok(decided(
        Json(json!({})).into_response(),
        Decision::Answered { reason: outcome },
    ))
}

/// A choice's button: its value is `<job>:<question>:<n>`, and the answer is the open
/// question's own choice `n` (what the button shows), so a forged value can name no other
/// text, and a button of an earlier question answers no later one.
async fn answer_click(
    state: &AppState,
    asker: &Asker<'_>,
    value: &str,
) -> Result<String, ApiError> {
    let mut parts = value.rsplitn(3, ':');
    let (Some(n), Some(question), Some(job_id)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok("That button does not name a question.".into());
    };
    let job = match state.queue.get(job_id).await? {
        Some(job) => job,
        None => return Ok(format!("There is no job `{job_id}`.")),
    };
    let Some(open) = job.question.as_ref().filter(|q| q.id == question) else {
        // Answered, or ended, since the button was posted: say by whom (nothing is written).
        let outcome = AnswerOutcome::Closed {
            state: job.state,
            last: job.answer.clone(),
        };
        return Ok(crate::webhooks::answer::told(
            &outcome,
            job_id,
            Some(question),
        ));
    };
    let Some(choice) = n
        .parse::<usize>()
        .ok()
        .and_then(|n| open.choices.get(n))
        .cloned()
    else {
        return Ok("That button is not one of the question's choices.".into());
    };
    conversation::answer(state, asker, job_id, Some(question), &choice).await
}
