//! Slack: slash commands (`POST /webhooks/slack/commands`), the Events API
//! (`/webhooks/slack/events`: `url_verification`, `app_mention`) and buttons
//! (`/webhooks/slack/interactions`: Cancel, Retry). Every request is verified by its
//! `v0` signature and timestamp first.
//!
//! A command is answered within Slack's three seconds with an ephemeral message, after the
//! job is durable; progress and the result follow through the command's `response_url`
//! (or `chat.postMessage`), from the outbox. A `response_url` whose host is not in
//! `sources.slack.response_url_hosts` is never stored or called.
//!
//! Who may start a job in a project, cancel or retry one, or see one in `status` and `list`
//! is the project's `access.slack` ([`super::access`]). A slash command's delivery is known
//! by the digest of its signed body, an event by its `event_id`, a button click by the
//! digest of its body: a click replayed within Slack's five minutes does nothing twice.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tracing::{info, instrument, warn};

use super::access::{self, Actor, ActorKind, Ask, Refusal, Verdict};
use super::command::{self, truncate, Command};
use super::signature::verify_slack;
use super::{
    accept, body_digest, disabled, header, project_for, refused, unix_now, PayloadError, Request,
    Source,
};
use crate::api::error::ApiError;
use crate::context::AppState;
use crate::notify::message::Message;
use crate::notify::providers::{response_url_host, slack_payload};
use crate::settings::Settings;
use queue::{CancelOutcome, Job, JobFilter, Origin, ReplyBody, RetryOutcome, Submission};

/// A slash command's fields that agentsmith reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlashCommand {
    /// The command's name (`/agent`).
    pub command: String,
    /// What followed it.
    pub text: String,
    /// Who typed it (user id).
    pub user_id: String,
    /// Their name.
    pub user_name: String,
    /// Where (channel id).
    pub channel_id: String,
    /// Where answers go for the next 30 minutes.
    pub response_url: Option<String>,
    /// Unique per invocation: the delivery id.
    pub trigger_id: Option<String>,
}

/// Parses a slash command's form body. Never panics.
pub fn parse_command(body: &[u8]) -> Result<SlashCommand, PayloadError> {
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let field = |k: &'static str| {
        form.get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or(PayloadError::MissingField(k))
    };
    Ok(SlashCommand {
        command: field("command")?,
        text: form.get("text").cloned().unwrap_or_default(),
        user_id: field("user_id")?,
        user_name: form
            .get("user_name")
            .cloned()
            .unwrap_or_else(|| form.get("user_id").cloned().unwrap_or_default()),
        channel_id: field("channel_id")?,
        response_url: form
            .get("response_url")
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .cloned(),
        trigger_id: form.get("trigger_id").filter(|t| !t.is_empty()).cloned(),
    })
}

/// An Events API delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlackEvent {
    /// The endpoint check when the URL is saved: echo the challenge.
    UrlVerification(String),
    /// A bot or app mentioned the app (the event has a `bot_id`): ignored unless a project
    /// lists the bot.
    BotMention {
        /// The delivery id.
        event_id: String,
        /// The bot's id (`B…`).
        bot_id: String,
        /// Where.
        channel: String,
        /// The thread to answer in.
        thread_ts: String,
        /// The text without the leading mention.
        text: String,
    },
    /// Someone mentioned the app.
    Mention {
        /// The delivery id.
        event_id: String,
        /// Who.
        user: String,
        /// Where.
        channel: String,
        /// The thread to answer in (the mention's own ts when it is not in one).
        thread_ts: String,
        /// The text without the leading mention.
        text: String,
    },
    /// Anything else.
    Other(String),
}

/// Parses an Events API body. Never panics.
pub fn parse_event(body: &[u8]) -> Result<SlackEvent, PayloadError> {
    let value = super::json_body(body)?;
    match value.get("type").and_then(Value::as_str) {
        Some("url_verification") => Ok(SlackEvent::UrlVerification(super::required(
            &value,
            "/challenge",
        )?)),
        Some("event_callback") => {
            let kind = super::required(&value, "/event/type")?;
            if kind != "app_mention" {
                return Ok(SlackEvent::Other(format!("{kind} events are not triggers")));
            }
            let ts = super::required(&value, "/event/ts")?;
            let text = super::required(&value, "/event/text")?;
            if let Some(bot_id) = super::text_at(&value, "/event/bot_id") {
                return Ok(SlackEvent::BotMention {
                    event_id: super::required(&value, "/event_id")?,
                    bot_id,
                    channel: super::required(&value, "/event/channel")?,
                    thread_ts: super::text_at(&value, "/event/thread_ts").unwrap_or(ts),
                    text: strip_mentions(&text),
                });
            }
            Ok(SlackEvent::Mention {
                event_id: super::required(&value, "/event_id")?,
                user: super::required(&value, "/event/user")?,
                channel: super::required(&value, "/event/channel")?,
                thread_ts: super::text_at(&value, "/event/thread_ts").unwrap_or(ts),
                text: strip_mentions(&text),
            })
        }
        Some(other) => Ok(SlackEvent::Other(format!("{other} is not handled"))),
        None => Err(PayloadError::MissingText("/type".into())),
    }
}

/// The text of a mention without the leading `<@U…>` mentions.
fn strip_mentions(text: &str) -> String {
    let mut rest = text.trim_start();
    while let Some(after) = rest.strip_prefix("<@") {
        match after.find('>') {
            Some(end) => rest = after[end + 1..].trim_start(),
            None => break,
        }
    }
    rest.trim().to_string()
}

/// A button click.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonClick {
    /// `cancel` or `retry`.
    pub action: String,
    /// The job (the button's value).
    pub job_id: String,
    /// Who clicked.
    pub user: String,
    /// Where.
    pub channel: String,
    /// Where to answer.
    pub response_url: Option<String>,
}

/// Parses an interaction's form body (`payload=<json>`); `Ok(None)` for interactions that
/// are not button clicks. Never panics.
pub fn parse_interaction(body: &[u8]) -> Result<Option<ButtonClick>, PayloadError> {
    let payload = form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or(PayloadError::MissingField("payload"))?;
    let value = super::json_body(payload.as_bytes()).map_err(|error| PayloadError::InField {
        field: "payload",
        error: Box::new(error),
    })?;
    if value.get("type").and_then(Value::as_str) != Some("block_actions") {
        return Ok(None);
    }
    let action = super::required(&value, "/actions/0/action_id")?;
    if action != "cancel" && action != "retry" {
        return Ok(None);
    }
    Ok(Some(ButtonClick {
        action,
        job_id: super::required(&value, "/actions/0/value")?,
        user: super::required(&value, "/user/id")?,
        channel: super::text_at(&value, "/channel/id")
            .or_else(|| super::text_at(&value, "/container/channel_id"))
            .unwrap_or_default(),
        response_url: super::text_at(&value, "/response_url"),
    }))
}

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

/// Whether `user` is the job's requester or an admin: the first condition for cancelling
/// or retrying it (the project's access is the second).
fn requester_or_admin(settings: &Settings, job: &Job, user: &str) -> bool {
    let requester = matches!(&job.origin, Some(Origin::Slack { user: u, .. }) if u == user);
    requester || settings.sources.slack.admins.iter().any(|a| a == user)
}

/// The project of `fix <ticket>` with no `in <project>`: the channel's, else the one whose
/// Jira project or repository the ticket names, else `sources.slack.default_project`.
fn project_of_ticket(settings: &Settings, channel: &str, ticket: &str) -> Option<String> {
    let by = |source, scope: &str| project_for(settings, source, scope).map(|(n, _)| n.to_string());
    by(Source::Slack, channel)
        .or_else(|| {
            ticket
                .rsplit_once('-')
                .filter(|(_, n)| n.chars().all(|c| c.is_ascii_digit()))
                .and_then(|(key, _)| by(Source::Jira, key))
        })
        .or_else(|| {
            ticket
                .split_once('#')
                .and_then(|(repo, _)| by(Source::Github, repo).or_else(|| by(Source::Gitlab, repo)))
        })
        .or_else(|| Some(settings.sources.slack.default_project.clone()).filter(|p| !p.is_empty()))
}

/// One line about a job.
fn job_line(job: &Job) -> String {
    let mut line = format!("`{}` {} — {}", job.id, job.state, truncate(&job.task, 80));
    if let Some(reason) = job.reason.as_deref().filter(|r| !r.is_empty()) {
        line.push_str(&format!(" ({})", truncate(reason, 120)));
    }
    line
}

/// Where a command's answer goes and who asked.
struct Asker<'a> {
    actor: Actor,
    channel: &'a str,
    thread_ts: Option<&'a str>,
    response_url: Option<&'a str>,
    delivery: Option<String>,
    /// Whether answers can go in the HTTP response (slash commands) or must be posted
    /// (app mentions).
    in_response: bool,
}

/// What a command comes to.
struct Answer {
    /// What to tell the asker.
    message: Message,
    /// Whether the outbox tells it already (a queued job's replies) or there is nothing
    /// new to tell (a duplicate delivery); a mention's other answers are posted.
    told: bool,
}

impl From<Message> for Answer {
    fn from(message: Message) -> Self {
        Self {
            message,
            told: false,
        }
    }
}

/// An ephemeral text answer.
fn private_text(text: String) -> Message {
    let mut message = Message::text(text);
    message.ephemeral = true;
    message
}

/// The configured projects' names, for answers.
fn project_names(settings: &Settings) -> String {
    settings
        .projects
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs a command and says what to answer.
async fn run_command(
    state: &AppState,
    asker: &Asker<'_>,
    command: Command,
) -> Result<Answer, ApiError> {
    let settings = &state.settings;
    let (project, task, ticket) = match command {
        Command::Help => {
            return Ok(private_text(command::usage(&settings.sources.slack.command)).into())
        }
        Command::Fix { ticket, project } => match fix_project(settings, asker, &ticket, project) {
            Ok(project) => (project, format!("fix {ticket}"), Some(ticket)),
            Err(answer) => return Ok(private_text(answer).into()),
        },
        Command::Run { project, task } => {
            if !settings.projects.contains_key(&project) {
                return Ok(private_text(format!(
                    "There is no project `{project}`. Projects: {}.",
                    project_names(settings)
                ))
                .into());
            }
            (project, task, None)
        }
        Command::Status(Some(id)) => return Ok(job_status(state, asker, &id).await?.into()),
        Command::Status(None) => return Ok(list_jobs(state, asker, true).await?.into()),
        Command::List => return Ok(list_jobs(state, asker, false).await?.into()),
        Command::Cancel(id) => {
            return Ok(private_text(act(state, asker, "cancel", &id).await?).into())
        }
        Command::Retry(id) => {
            return Ok(private_text(act(state, asker, "retry", &id).await?).into())
        }
    };
    if let Some(refusal) = refusal(state, asker, &project).await {
        return Ok(private_text(refusal.answer(Some(&asker.actor), "start an agent here")).into());
    }
    start_job(state, asker, project, task, ticket).await
}

/// The project a `fix` runs in: the one named, else the ticket's; `Err` is the answer
/// when there is none.
fn fix_project(
    settings: &Settings,
    asker: &Asker<'_>,
    ticket: &str,
    named: Option<String>,
) -> Result<String, String> {
    match named {
        Some(p) if settings.projects.contains_key(&p) => Ok(p),
        Some(p) => Err(format!(
            "There is no project `{p}`. Projects: {}.",
            project_names(settings)
        )),
        None => project_of_ticket(settings, asker.channel, ticket).ok_or_else(|| {
            let name = &settings.sources.slack.command;
            format!(
                "Which project is {ticket} in? Say `{name} fix {ticket} in <project>` (projects: {}).",
                project_names(settings)
            )
        }),
    }
}

/// Why the asker may not act in `project` (counted and logged), or `None` when they may.
/// A provider that cannot be asked refuses too: a command is answered at once, and asking
/// again is one command away.
async fn refusal(state: &AppState, asker: &Asker<'_>, project: &str) -> Option<Refusal> {
    let ask = Ask {
        source: Source::Slack,
        project,
        scope: "",
        actor: Some(&asker.actor),
        channel: Some(asker.channel),
        comment: false,
    };
    let refusal = match access::check(state, &ask).await {
        Ok(Verdict::Allowed) => return None,
        Ok(Verdict::Refused(refusal)) => refusal,
        Err(error) => Refusal::unchecked(&error),
    };
    access::record(state, &ask, &refusal);
    Some(refusal)
}

/// Whether the asker may see `job` in `status` and `list`: its project's access admits
/// them (and a job of no project, from the API, only an admin). `seen` remembers the
/// verdict per project within one answer.
async fn may_see(
    state: &AppState,
    asker: &Asker<'_>,
    job: &Job,
    seen: &mut HashMap<String, bool>,
) -> bool {
    let settings = &state.settings;
    let Some(project) = job.project.as_deref() else {
        return settings.sources.slack.admins.contains(&asker.actor.id);
    };
    if let Some(known) = seen.get(project) {
        return *known;
    }
    let ask = Ask {
        source: Source::Slack,
        project,
        scope: "",
        actor: Some(&asker.actor),
        channel: Some(asker.channel),
        comment: false,
    };
    let may = matches!(access::check(state, &ask).await, Ok(Verdict::Allowed));
    seen.insert(project.to_string(), may);
    may
}

/// One job's line, if the asker may see it.
async fn job_status(state: &AppState, asker: &Asker<'_>, id: &str) -> Result<Message, ApiError> {
    let job = state.queue.get(id).await?;
    Ok(match job {
        Some(job) if may_see(state, asker, &job, &mut HashMap::new()).await => {
            private_text(job_line(&job))
        }
        _ => private_text(format!("There is no job `{id}` you may see.")),
    })
}

/// The latest jobs the asker may see (their own with `mine`), ten at most.
async fn list_jobs(state: &AppState, asker: &Asker<'_>, mine: bool) -> Result<Message, ApiError> {
    let page = state.queue.list(&JobFilter::default(), None, 200).await?;
    let mut seen = HashMap::new();
    let mut jobs = Vec::new();
    for job in &page.jobs {
        let own =
            matches!(&job.origin, Some(Origin::Slack { user, .. }) if *user == asker.actor.id);
        if (own || !mine) && may_see(state, asker, job, &mut seen).await {
            jobs.push(job_line(job));
        }
        if jobs.len() == 10 {
            break;
        }
    }
    let title = if mine {
        "Your latest jobs"
    } else {
        "Latest jobs"
    };
    Ok(private_text(if jobs.is_empty() {
        format!("{title}: none.")
    } else {
        format!("{title}:\n{}", jobs.join("\n"))
    }))
}

/// Queues a job for a `fix` or `run` and says so.
async fn start_job(
    state: &AppState,
    asker: &Asker<'_>,
    project: String,
    task: String,
    ticket: Option<String>,
) -> Result<Answer, ApiError> {
    let request = Request {
        source: Source::Slack,
        delivery: asker.delivery.clone(),
        project: project.clone(),
        task: task.clone(),
        ticket,
        title: None,
        description: None,
        url: None,
        requester: Some(asker.actor.name.clone()),
        origin: Origin::Slack {
            channel: asker.channel.to_string(),
            user: asker.actor.id.clone(),
            thread_ts: asker.thread_ts.map(str::to_string),
        },
        response_url: asker.response_url.map(str::to_string),
        reply_if_running: !asker.in_response,
    };
    let submission = accept(state, request).await?;
    let message = match &submission {
        Submission::Created(job) => {
            let mut m = Message::for_state(job, job.state, 1, None, Vec::new());
            m.headline = format!(
                "Queued as {}: {} (project {project}, asked by {}).",
                job.id,
                truncate(&task, 200),
                // A name, not a `<@U…>` mention: the answer's text is escaped as mrkdwn,
                // which would show a mention as literal markup.
                asker.actor.name
            );
            m
        }
        Submission::Running(job) => Message::already_running(job, None),
        Submission::Existing(job) => private_text(format!("Already queued as `{}`.", job.id)),
        Submission::Duplicate { job_id, .. } => {
            private_text(format!("Already queued as `{job_id}`."))
        }
    };
    Ok(Answer {
        message: Message {
            ephemeral: true,
            ..message
        },
        // The outbox tells a mention's thread of its job (queued, already running); a
        // duplicate was answered the first time.
        told: true,
    })
}

/// Cancels or retries a job for the asker, if they may; says what happened.
async fn act(
    state: &AppState,
    asker: &Asker<'_>,
    action: &str,
    job_id: &str,
) -> Result<String, ApiError> {
    let user = asker.actor.id.as_str();
    let Some(job) = state.queue.get(job_id).await? else {
        return Ok(format!("There is no job `{job_id}`."));
    };
    if !requester_or_admin(&state.settings, &job, user) {
        info!(
            job_id,
            user, action, "refused: not the requester or an admin"
        );
        return Ok(format!(
            "Only the job's requester or an admin (sources.slack.admins) may {action} `{job_id}`."
        ));
    }
    // The requester must still pass the project's rules: access taken away since the job
    // started takes its buttons away too.
    if let Some(project) = job.project.as_deref() {
        if let Some(refusal) = refusal(state, asker, project).await {
            return Ok(refusal.answer(Some(&asker.actor), &format!("{action} `{job_id}`")));
        }
    }
    Ok(if action == "cancel" {
        match state
            .cancel_job(job_id, &format!("cancelled from Slack by {user}"))
            .await?
        {
            CancelOutcome::Cancelled(_) => format!("Cancelled `{job_id}`."),
            CancelOutcome::AlreadyFinished(s) => format!("`{job_id}` has already ended ({s})."),
            CancelOutcome::NotFound => format!("There is no job `{job_id}`."),
        }
    } else {
        match state.queue.retry(job_id).await? {
            RetryOutcome::Queued(attempt) => {
                format!("Queued `{job_id}` again (attempt {attempt}).")
            }
            RetryOutcome::Active(s) => format!("`{job_id}` is still {s}."),
            RetryOutcome::NotFound => format!("There is no job `{job_id}`."),
        }
    })
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
    let slash = parse_command(&body).map_err(PayloadError::bad_request)?;
    tracing::Span::current().record("delivery_id", slash.trigger_id.as_deref().unwrap_or(""));
    let name = &state.settings.sources.slack.command;
    let command = match command::parse(&slash.text, name) {
        Ok(command) => command,
        Err(unusable) => return Ok(ephemeral(unusable.to_string())),
    };
    let response_url = allowed_response_url(&state.settings, slash.response_url.clone());
    let asker = Asker {
        actor: Actor::person(&slash.user_id, &slash.user_name),
        channel: &slash.channel_id,
        thread_ts: None,
        response_url: response_url.as_deref(),
        delivery: Some(body_digest(&body)),
        in_response: true,
    };
    let answer = run_command(&state, &asker, command).await?;
    Ok(ephemeral_message(&answer.message))
}

/// A mention, from a person or a bot.
struct Mention {
    event_id: String,
    actor: Actor,
    channel: String,
    thread_ts: String,
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
    let mention = match parse_event(&body).map_err(PayloadError::bad_request)? {
        SlackEvent::UrlVerification(challenge) => {
            return Ok(Json(json!({"challenge": challenge})).into_response())
        }
        SlackEvent::Other(reason) => return Ok(super::ignored(&reason)),
        SlackEvent::Mention {
            event_id,
            user,
            channel,
            thread_ts,
            text,
        } => Mention {
            event_id,
            actor: Actor::person(&user, &user),
            channel,
            thread_ts,
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
            thread_ts,
            text,
        },
    };
    tracing::Span::current().record("delivery_id", mention.event_id.as_str());
    if let Some(ignored) = unlisted_bot(&state, &mention.actor) {
        return Ok(ignored);
    }
    answer_mention(&state, mention).await
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
    let creates_job = matches!(command, Ok(Command::Fix { .. } | Command::Run { .. }));
    // A job's delivery is deduplicated by the submit itself; any other answer here, so a
    // retried event (X-Slack-Retry-Num) does not cancel twice or answer twice.
    if !creates_job
        && !state
            .queue
            .first_delivery(&format!("slack:{event_id}"))
            .await?
    {
        return Ok(Json(json!({"status": "duplicate"})).into_response());
    }
    let answer = match command {
        Err(unusable) => Message::text(unusable.to_string()).into(),
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
        state
            .queue
            .send_reply(&ReplyBody::Text {
                origin: Origin::Slack {
                    channel: mention.channel.clone(),
                    user: mention.actor.id.clone(),
                    thread_ts: Some(mention.thread_ts.clone()),
                },
                text: answer.message.mrkdwn(),
                response_url: None,
            })
            .await?;
    }
    Ok(Json(json!({"status": "ok"})).into_response())
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
    let Some(click) = parse_interaction(&body).map_err(PayloadError::bad_request)? else {
        return Ok(super::ignored("not a Cancel or Retry button"));
    };
    tracing::Span::current().record("job_id", click.job_id.as_str());
    let delivery = format!("slack:{}", body_digest(&body));
    if !state.queue.first_delivery(&delivery).await? {
        info!(action = %click.action, "a button click seen before; nothing done");
        return Ok(Json(json!({"status": "duplicate"})).into_response());
    }
    let asker = Asker {
        actor: Actor::person(&click.user, &click.user),
        channel: &click.channel,
        thread_ts: None,
        response_url: click.response_url.as_deref(),
        delivery: None,
        in_response: false,
    };
    let outcome = act(&state, &asker, &click.action, &click.job_id).await?;
    state
        .queue
        .send_reply(&ReplyBody::Text {
            origin: Origin::Slack {
                channel: click.channel,
                user: click.user,
                thread_ts: None,
            },
            text: outcome,
            response_url: click.response_url,
        })
        .await?;
    Ok(Json(json!({})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_commands_parse_from_the_form() {
        let body = b"command=%2Fagent&text=fix+PAY-12&user_id=U1&user_name=ann&channel_id=C1&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F1&trigger_id=t.1";
        let c = parse_command(body).unwrap();
        assert_eq!(c.text, "fix PAY-12");
        assert_eq!(
            c.response_url.as_deref(),
            Some("https://hooks.slack.com/commands/1")
        );
        assert_eq!(c.trigger_id.as_deref(), Some("t.1"));
        assert!(parse_command(b"text=fix")
            .unwrap_err()
            .to_string()
            .contains("command"));
    }

    #[test]
    fn mentions_lose_the_leading_mention_and_keep_the_thread() {
        let body = json!({"type": "event_callback", "event_id": "Ev1",
            "event": {"type": "app_mention", "user": "U1", "channel": "C1", "ts": "1.5",
                      "text": "<@UBOT> fix PAY-12"}});
        let SlackEvent::Mention {
            text,
            thread_ts,
            event_id,
            ..
        } = parse_event(body.to_string().as_bytes()).unwrap()
        else {
            panic!("not a mention")
        };
        assert_eq!(
            (text.as_str(), thread_ts.as_str(), event_id.as_str()),
            ("fix PAY-12", "1.5", "Ev1")
        );
        let check = json!({"type": "url_verification", "challenge": "abc"});
        assert_eq!(
            parse_event(check.to_string().as_bytes()).unwrap(),
            SlackEvent::UrlVerification("abc".into())
        );
    }

    #[test]
    fn button_clicks_parse_and_other_interactions_are_none() {
        let payload = json!({"type": "block_actions", "user": {"id": "U1"},
            "channel": {"id": "C1"}, "response_url": "https://hooks.slack.com/actions/1",
            "actions": [{"action_id": "cancel", "value": "abc123"}]});
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish();
        let click = parse_interaction(body.as_bytes()).unwrap().unwrap();
        assert_eq!(
            (click.action.as_str(), click.job_id.as_str()),
            ("cancel", "abc123")
        );
        let other = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", r#"{"type":"view_submission"}"#)
            .finish();
        assert!(matches!(parse_interaction(other.as_bytes()), Ok(None)));
        assert!(parse_interaction(b"x=1")
            .unwrap_err()
            .to_string()
            .contains("payload"));
    }

    #[test]
    fn a_ticket_finds_its_project_by_channel_jira_key_repository_or_default() {
        let mut settings = Settings::load_from(None, &[]).unwrap();
        let project = |f: &dyn Fn(&mut crate::settings::ProjectSettings)| {
            let mut p = crate::settings::ProjectSettings {
                agent: "echo".into(),
                ..Default::default()
            };
            f(&mut p);
            p
        };
        settings.projects.insert(
            "pay".into(),
            project(&|p| p.jira_projects = vec!["PAY".into()]),
        );
        settings.projects.insert(
            "shop".into(),
            project(&|p| p.github_repos = vec!["acme/shop".into()]),
        );
        settings.projects.insert(
            "ops".into(),
            project(&|p| p.slack_channels = vec!["C9".into()]),
        );
        assert_eq!(
            project_of_ticket(&settings, "C1", "PAY-12").as_deref(),
            Some("pay")
        );
        assert_eq!(
            project_of_ticket(&settings, "C1", "acme/shop#3").as_deref(),
            Some("shop")
        );
        assert_eq!(
            project_of_ticket(&settings, "C9", "PAY-12").as_deref(),
            Some("ops")
        );
        assert_eq!(project_of_ticket(&settings, "C1", "OTHER-1"), None);
        settings.sources.slack.default_project = "ops".into();
        assert_eq!(
            project_of_ticket(&settings, "C1", "OTHER-1").as_deref(),
            Some("ops")
        );
    }
}
