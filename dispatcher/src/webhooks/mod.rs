//! Webhook sources: Slack (slash commands, the Events API, buttons), GitHub, GitLab and
//! Jira. Every request is verified before anything else is read ([`signature`]), parsed
//! into a source-neutral [`IssueEvent`] or a Slack [`command::Command`], checked against
//! the projects' triggers ([`decide`]) and against who may trigger them ([`access`]), and
//! turned into a job that is durable in Redis before the answer goes out ([`accept`]).
//! Replies travel through the outbox ([`crate::notify`]). Every verified delivery, and what
//! was decided about it, is kept in the delivery journal, from which an admin may replay it
//! ([`journal`]).
//!
//! | file | what |
//! |---|---|
//! | `signature.rs` | Slack's `v0`, the `sha256=` HMAC of GitHub and Jira, GitLab's token |
//! | `command.rs` | the command grammar of Slack and of issue comments |
//! | `access.rs` | who may start, cancel and retry a project's jobs, per source |
//! | `membership.rs` | what the providers say about someone (roles, access levels, groups), cached briefly |
//! | `journal.rs` | the delivery journal: what each verified delivery came to, and replays |
//! | `slack/`, `github.rs`, `gitlab.rs`, `jira.rs` | one source each: parser and handler (Slack's in three: routes, `payload`, `conversation`) |
//!
//! Rules every source keeps: a disabled source is 404; a missing or wrong signature 401 with
//! nothing queued; a malformed body 400 naming the problem; an event that is not a trigger
//! 200 with nothing queued; a trigger by someone the project does not allow 200 with
//! nothing queued, answered politely where it came from; a duplicate delivery 200 with no
//! second job, a delivery being known by the SHA-256 of its verified body
//! ([`body_digest`]), so a replay with a fresh delivery-id header is a duplicate too; Redis,
//! or a provider that must say who someone is, down: 503. Raw bodies and secrets are never
//! logged.

pub mod access;
pub mod answer;
pub mod command;
pub mod github;
pub mod gitlab;
pub mod jira;
pub mod journal;
pub mod membership;
pub mod signature;
pub mod slack;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::api::error::ApiError;
use crate::context::AppState;
use crate::settings::{ProjectSettings, Settings};
use queue::{NewJob, Origin, ReplyBody, Submission};

use access::{Actor, Ask, Refusal, Verdict, Why};
use command::{parse_comment, truncate, CommentCommand};
use journal::{decided, submitted};
use membership::LookupError;
use signature::SignatureError;

/// Longest description kept from a ticket (the agent gets it in its intent).
pub const MAX_DESCRIPTION: usize = 16 * 1024;
/// Longest title kept from a ticket.
pub const MAX_TITLE: usize = 500;

/// The webhook sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Slack.
    Slack,
    /// GitHub.
    Github,
    /// GitLab.
    Gitlab,
    /// Jira.
    Jira,
}

impl Source {
    /// The source's name in keys, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Slack => "slack",
            Source::Github => "github",
            Source::Gitlab => "gitlab",
            Source::Jira => "jira",
        }
    }
}

/// Something that happened to an issue, as any ticket source reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueEvent {
    /// Where it happened.
    pub source: Source,
    /// What projects map from: the Jira project key, the GitHub `owner/repo`, the GitLab
    /// project path.
    pub scope: String,
    /// The ticket (`PAY-12`, `acme/shop#3`), which is also its concurrency key.
    pub ticket: String,
    /// Where replies go.
    pub origin: Origin,
    /// The issue's title.
    pub title: Option<String>,
    /// The issue's description.
    pub description: Option<String>,
    /// A link to the issue (or the comment).
    pub url: Option<String>,
    /// Who did it, as they are named (the job's requester).
    pub requester: Option<String>,
    /// Who did it, as the provider knows them (checked against the project's access).
    pub actor: Option<Actor>,
    /// Labels added by this event (all labels, for a new issue).
    pub labels_added: Vec<String>,
    /// The status the issue moved into (or was created in), Jira only.
    pub status_entered: Option<String>,
    /// The body of a new comment.
    pub comment: Option<String>,
}

/// What a delivery amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// An issue event, which may or may not be a trigger.
    Issue(Box<IssueEvent>),
    /// Not something agentsmith acts on (another event type, an action it ignores).
    Ignore(String),
    /// The source checking that the endpoint works (GitHub's `ping`).
    Ping,
}

/// A job to start, decided from an issue event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The project.
    pub project: String,
    /// The task.
    pub task: String,
}

/// Checks an issue event against the projects' triggers: which project it belongs to, and
/// whether a label, a status or a comment asks for a job. `Err` says why not.
pub fn decide(settings: &Settings, event: &IssueEvent) -> Result<Trigger, String> {
    let (name, project) = project_for(settings, event.source, &event.scope)
        .ok_or_else(|| format!("no project lists {}", event.scope))?;
    let sources = &settings.sources;
    let triggers = &project.triggers;
    let label = match event.source {
        _ if !triggers.label.is_empty() => triggers.label.as_str(),
        Source::Github => sources.github.label.as_str(),
        Source::Gitlab => sources.gitlab.label.as_str(),
        Source::Jira => sources.jira.label.as_str(),
        Source::Slack => "",
    };
    let fix = || Trigger {
        project: name.to_string(),
        task: format!("fix {}", event.ticket),
    };
    if !label.is_empty()
        && event
            .labels_added
            .iter()
            .any(|l| l.eq_ignore_ascii_case(label))
    {
        return Ok(fix());
    }
    if let Some(status) = &event.status_entered {
        let statuses = if triggers.jira_statuses.is_empty() {
            &sources.jira.statuses
        } else {
            &triggers.jira_statuses
        };
        if statuses.iter().any(|s| s.eq_ignore_ascii_case(status)) {
            return Ok(fix());
        }
    }
    if let Some(body) = &event.comment {
        if !triggers.comments {
            return Err(format!("comments do not start jobs in project {name}"));
        }
        return match parse_comment(body, &sources.command) {
            Some(CommentCommand::Fix(detail)) if detail.is_empty() => Ok(fix()),
            Some(CommentCommand::Fix(detail)) => Ok(Trigger {
                project: name.to_string(),
                task: format!("fix {}: {detail}", event.ticket),
            }),
            Some(CommentCommand::Run(task)) => Ok(Trigger {
                project: name.to_string(),
                task,
            }),
            Some(CommentCommand::Answer(_) | CommentCommand::Say(_)) => {
                Err("an answer or a message is not a trigger".into())
            }
            None => Err(format!(
                "the comment does not start with {}",
                sources.command
            )),
        };
    }
    Err("not a trigger (no trigger label, status or command)".into())
}

/// The project a source's scope belongs to (case-insensitive).
pub fn project_for<'a>(
    settings: &'a Settings,
    source: Source,
    scope: &str,
) -> Option<(&'a str, &'a ProjectSettings)> {
    settings.projects.iter().find_map(|(name, project)| {
        let list = match source {
            Source::Jira => &project.jira_projects,
            Source::Github => &project.github_repos,
            Source::Gitlab => &project.gitlab_projects,
            Source::Slack => &project.slack_channels,
        };
        list.iter()
            .any(|s| s.eq_ignore_ascii_case(scope))
            .then_some((name.as_str(), project))
    })
}

/// The key a delivery is deduplicated by: `sha256:<hex>` of its verified body. A delivery-id
/// header is not signed, so a captured body replayed with a fresh one would be new by its
/// id; by its digest it is the same delivery.
pub fn body_digest(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

/// A job request from a webhook, before it is stored.
#[derive(Debug, Clone)]
pub struct Request {
    /// The source.
    pub source: Source,
    /// What the delivery is deduplicated by ([`body_digest`], or Slack's `event_id`).
    pub delivery: Option<String>,
    /// The project (configured).
    pub project: String,
    /// The task.
    pub task: String,
    /// The ticket, if any: the concurrency key, and with `one_job_per_ticket` the key of
    /// "already running".
    pub ticket: Option<String>,
    /// Ticket details.
    pub title: Option<String>,
    /// Ticket details.
    pub description: Option<String>,
    /// A link back.
    pub url: Option<String>,
    /// Who asked.
    pub requester: Option<String>,
    /// Where replies go.
    pub origin: Origin,
    /// Slack's `response_url`.
    pub response_url: Option<String>,
    /// Whether an "already running" answer also goes to the origin as a reply (sources
    /// that cannot answer in the HTTP response).
    pub reply_if_running: bool,
}

/// Stores the job a webhook asked for (or finds the one that answers it). Only returns
/// once it is durable; a Redis failure is 503.
pub async fn accept(state: &AppState, request: Request) -> Result<Submission, ApiError> {
    let settings = &state.settings;
    let project = settings.projects.get(&request.project).ok_or_else(|| {
        ApiError::not_found(
            "unknown_project",
            format!("no project named {:?}", request.project),
        )
    })?;
    let profile = settings.agents.get(&project.agent).ok_or_else(|| {
        ApiError::not_found(
            "unknown_agent",
            format!("no agent profile named {:?}", project.agent),
        )
    })?;
    let exclusive = request
        .ticket
        .clone()
        .filter(|_| settings.sources.one_job_per_ticket);
    let job = NewJob {
        agent: project.agent.clone(),
        task: request.task,
        project: Some(request.project.clone()),
        repo: Some(project.repo.clone()).filter(|r| !r.is_empty()),
        concurrency_key: request.ticket.clone(),
        ticket: request.ticket,
        timeout_secs: profile.timeout_secs,
        retry_on_failure: profile.retry_on_failure,
        title: request.title.map(|t| truncate(&t, MAX_TITLE)),
        description: request.description.map(|d| truncate(&d, MAX_DESCRIPTION)),
        requester: request.requester,
        url: request.url,
        origin: Some(request.origin),
        response_url: request.response_url,
        delivery: request
            .delivery
            .map(|d| format!("{}:{d}", request.source.as_str())),
        exclusive,
        reply_if_running: request.reply_if_running,
        ..NewJob::default()
    };
    let submission = state.queue.submit(&job).await?;
    match &submission {
        Submission::Created(job) => {
            info!(job_id = %job.id, source = request.source.as_str(), "job queued from a webhook")
        }
        Submission::Running(job) => {
            info!(job_id = %job.id, source = request.source.as_str(), "the ticket's job is still running")
        }
        Submission::Duplicate { job_id, .. } => {
            info!(job_id = %job_id, source = request.source.as_str(), "duplicate delivery")
        }
        Submission::Existing(_) => {}
    }
    Ok(submission)
}

/// The answer to a ticket source's delivery: 202 with the new job, else 200 saying what
/// happened.
pub fn answer(submission: &Submission) -> Response {
    let response = match submission {
        Submission::Created(job) => (
            StatusCode::ACCEPTED,
            Json(json!({"status": "queued", "job_id": job.id})),
        )
            .into_response(),
        Submission::Running(job) => {
            Json(json!({"status": "already_running", "job_id": job.id})).into_response()
        }
        Submission::Existing(job) => {
            Json(json!({"status": "duplicate", "job_id": job.id})).into_response()
        }
        Submission::Duplicate { job_id, .. } => {
            Json(json!({"status": "duplicate", "job_id": job_id})).into_response()
        }
    };
    decided(response, submitted(submission))
}

/// 200 with nothing queued, saying why (senders do not retry a 2xx).
pub fn ignored(reason: &str) -> Response {
    decided(
        Json(json!({"status": "ignored", "reason": reason})).into_response(),
        queue::Decision::Ignored {
            reason: reason.to_string(),
        },
    )
}

/// 404 for a source that is not enabled: it is off, never open.
pub fn disabled(source: Source) -> ApiError {
    ApiError::not_found(
        "source_disabled",
        format!(
            "the {} source is not enabled (sources.{}.enabled)",
            source.as_str(),
            source.as_str()
        ),
    )
}

/// 401 for a failed verification; logged with the source and reason, never the body.
pub fn refused(source: Source, error: SignatureError) -> ApiError {
    warn!(source = source.as_str(), reason = %error, "webhook refused");
    ApiError::unauthorized(format!("{error}"))
}

/// A header as text, if present and printable.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The current time in Unix seconds.
pub fn unix_now() -> i64 {
    queue::now_ms() / 1000
}

/// A ticket request from an issue event that [`decide`] made a trigger.
pub fn issue_request(event: IssueEvent, trigger: Trigger, delivery: Option<String>) -> Request {
    Request {
        source: event.source,
        delivery,
        project: trigger.project,
        task: trigger.task,
        ticket: Some(event.ticket),
        title: event.title,
        description: event.description,
        url: event.url,
        requester: event.requester,
        origin: event.origin,
        response_url: None,
        reply_if_running: true,
    }
}

/// The whole path of a ticket source after verification: parse, decide, check who asked,
/// accept, answer. `digest` is the verified body's ([`body_digest`]), which deduplicates
/// the delivery.
pub async fn handle_issue_delivery(
    state: &AppState,
    parsed: Result<Parsed, PayloadError>,
    digest: &str,
) -> Result<Response, ApiError> {
    let event = match parsed.map_err(PayloadError::bad_request)? {
        Parsed::Ping => {
            return Ok(decided(
                Json(json!({"status": "pong"})).into_response(),
                queue::Decision::Answered {
                    reason: "ping".into(),
                },
            ))
        }
        Parsed::Ignore(reason) => return Ok(ignored(&reason)),
        Parsed::Issue(event) => *event,
    };
    let command = &state.settings.sources.command;
    match event
        .comment
        .as_deref()
        .and_then(|body| parse_comment(body, command))
    {
        Some(CommentCommand::Answer(text)) => {
            return answer::on_ticket(state, &event, answer::Steer::Answer(text), digest).await
        }
        Some(CommentCommand::Say(text)) => {
            return answer::on_ticket(state, &event, answer::Steer::Say(text), digest).await
        }
        _ => {}
    }
    let trigger = match decide(&state.settings, &event) {
        Ok(trigger) => trigger,
        Err(reason) => return Ok(ignored(&reason)),
    };
    let ask = Ask {
        source: event.source,
        project: &trigger.project,
        scope: &event.scope,
        actor: event.actor.as_ref(),
        channel: None,
        comment: event.comment.is_some(),
    };
    match access::check(state, &ask).await {
        Ok(Verdict::Allowed) => {}
        Ok(Verdict::Refused(refusal)) => return refuse_issue(state, &event, &ask, refusal).await,
        Err(error) => return Err(unchecked(event.source, &error)),
    }
    let request = issue_request(event, trigger, Some(digest.to_string()));
    Ok(answer(&accept(state, request).await?))
}

/// A refused trigger on a ticket: counted and logged; a person is told why on the ticket
/// (once per ticket and person within the dedup window, so a stranger's burst of comments
/// is not answered comment by comment); a bot is ignored. 200 either way, so the sender
/// does not retry.
async fn refuse_issue(
    state: &AppState,
    event: &IssueEvent,
    ask: &Ask<'_>,
    refusal: Refusal,
) -> Result<Response, ApiError> {
    access::record(state, ask, &refusal);
    if refusal.why == Why::Bot {
        return Ok(ignored(&format!("it needs {}", refusal.reason)));
    }
    let actor = ask.actor.map_or("", |a| a.id.as_str());
    let once = format!("{}:refused:{}:{actor}", event.source.as_str(), event.ticket);
    if state.queue.first_delivery(&once).await? {
        let text = refusal.answer(ask.actor, "start an agent here");
        state
            .queue
            .send_reply(&ReplyBody::Text {
                origin: event.origin.clone(),
                text,
                response_url: None,
            })
            .await?;
    }
    Ok(decided(
        Json(json!({"status": "refused", "reason": format!("it needs {}", refusal.reason)}))
            .into_response(),
        journal::refused(&refusal),
    ))
}

/// 503 when a provider could not say who someone is: nothing is queued, and a sender that
/// retries will try again.
fn unchecked(source: Source, error: &LookupError) -> ApiError {
    warn!(source = source.as_str(), error = %error, "who may trigger could not be checked");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "access_unchecked",
        format!("who may start jobs could not be checked ({error}); nothing was queued, try again"),
    )
}

/// The text of a JSON value at `pointer`, if it is a non-empty string.
pub(crate) fn text_at(value: &serde_json::Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Why a verified delivery's body cannot be read: answered 400, naming the problem.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The body is not JSON at all.
    #[error("the body is not JSON")]
    NotJson(#[source] serde_json::Error),
    /// The body is JSON but not an object.
    #[error("the body is not a JSON object")]
    NotObject,
    /// A required string field is missing (a JSON pointer).
    #[error("{0}: missing or not a string")]
    MissingText(String),
    /// A required number field is missing (a JSON pointer).
    #[error("{0}: missing or not a number")]
    MissingNumber(String),
    /// A required form field is missing.
    #[error("{0}: missing")]
    MissingField(&'static str),
    /// The form field holding a JSON payload does not hold one.
    #[error("{field}")]
    InField {
        /// The form field (`payload`).
        field: &'static str,
        /// What is wrong with its value.
        #[source]
        error: Box<PayloadError>,
    },
}

impl PayloadError {
    /// The 400 answer: the problem and its cause, in one message.
    pub fn bad_request(self) -> ApiError {
        ApiError::bad_request(crate::telemetry::chain(&self).to_string())
    }
}

/// A required string field, or the error naming it.
pub(crate) fn required(value: &serde_json::Value, pointer: &str) -> Result<String, PayloadError> {
    text_at(value, pointer).ok_or_else(|| PayloadError::MissingText(pointer.into()))
}

/// A required positive number field, or the error naming it.
pub(crate) fn required_number(
    value: &serde_json::Value,
    pointer: &str,
) -> Result<u64, PayloadError> {
    value
        .pointer(pointer)
        .and_then(|v| v.as_u64())
        .ok_or_else(|| PayloadError::MissingNumber(pointer.into()))
}

/// Parses a JSON object body.
pub(crate) fn json_body(body: &[u8]) -> Result<serde_json::Value, PayloadError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(PayloadError::NotJson)?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(PayloadError::NotObject)
    }
}
