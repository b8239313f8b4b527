//! The REST API of jobs: submit, list, show, events (SSE), cancel, retry.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, instrument};

use super::auth::ApiCaller;
use super::error::ApiError;
use super::{AppState, SSE_BLOCK};
use crate::fanout::{ClientId, Follow, StreamId};
use queue::{
    valid_id, AnswerOutcome, CancelOutcome, Job, JobFilter, JobState, NewJob, RetryOutcome,
    Submission,
};

/// The body of `POST /v1/jobs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The agent profile; may be left out when the project names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// What to do.
    pub task: String,
    /// The project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Jobs with the same key run one (or `queue.concurrency_key_limit`) at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// A repeated submit with the same key within the idempotency window returns the
    /// first job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// A finished job this one continues (a follow-up): linked both ways, its branch checked
    /// out, its summary in the new job's intent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
}

const MAX_TASK: usize = 16 * 1024;

fn check_key(field: &str, value: &Option<String>) -> Result<(), ApiError> {
    if let Some(v) = value {
        let ok = !v.is_empty()
            && v.len() <= 200
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:/@#+=-".contains(c));
        if !ok {
            return Err(ApiError::bad_request(format!(
                "{field}: must be 1-200 characters of letters, digits and ._:/@#+=-"
            )));
        }
    }
    Ok(())
}

/// Turns a request into a job, checking it against the configuration.
fn new_job(state: &AppState, req: SubmitRequest) -> Result<NewJob, ApiError> {
    if req.task.trim().is_empty() {
        return Err(ApiError::bad_request("task: must not be empty"));
    }
    if req.task.len() > MAX_TASK {
        return Err(ApiError::bad_request(format!(
            "task: longer than {MAX_TASK} bytes"
        )));
    }
    check_key("concurrency_key", &req.concurrency_key)?;
    check_key("idempotency_key", &req.idempotency_key)?;
    check_key("ticket", &req.ticket)?;
    let settings = &state.settings;
    let project = match &req.project {
        Some(name) => Some(settings.projects.get(name).ok_or_else(|| {
            ApiError::not_found("unknown_project", format!("no project named {name:?}"))
        })?),
        None => None,
    };
    let agent = match (&req.agent, project) {
        (Some(agent), _) => agent.clone(),
        (None, Some(project)) => project.agent.clone(),
        (None, None) => {
            return Err(ApiError::bad_request(
                "agent: required (or a project that names one)",
            ))
        }
    };
    let profile = settings.agents.get(&agent).ok_or_else(|| {
        ApiError::not_found("unknown_agent", format!("no agent profile named {agent:?}"))
    })?;
    Ok(NewJob {
        agent,
        task: req.task,
        project: req.project,
        repo: project.map(|p| p.repo.clone()).filter(|r| !r.is_empty()),
        ticket: req.ticket,
        concurrency_key: req.concurrency_key,
        idempotency_key: req.idempotency_key,
        timeout_secs: profile.timeout_secs,
        retry_on_failure: profile.retry_on_failure,
        ..NewJob::default()
    })
}

/// The id of the finished job `id` a new one may follow: 404 when there is none, 409 while
/// it has not ended (its agent takes messages instead).
async fn finished_job(state: &AppState, id: &str) -> Result<String, ApiError> {
    let unknown = || ApiError::not_found("unknown_job", format!("follows: no job {id:?}"));
    if !valid_id(id) {
        return Err(unknown());
    }
    let job = state.queue.get(id).await?.ok_or_else(unknown)?;
    if !job.state.is_terminal() {
        return Err(ApiError::conflict(
            "not_finished",
            format!(
                "follows: job {id} is still {}; send its agent a message instead",
                job.state
            ),
        ));
    }
    Ok(job.id)
}

/// `POST /v1/jobs`: 202 with the job once it is durable (200 with the first job for a
/// repeated idempotency key).
#[instrument(skip_all, fields(job_id))]
pub async fn submit(
    State(state): State<AppState>,
    _caller: ApiCaller,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let req: SubmitRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("invalid job body: {inner}"))
        } else {
            ApiError::bad_request(format!("{path}: {inner}"))
        }
    })?;
    let follows = req.follows.clone();
    let mut job = new_job(&state, req)?;
    if let Some(previous) = follows {
        job.follows = Some(finished_job(&state, &previous).await?);
    }
    let (job, created) = match state.queue.submit(&job).await? {
        Submission::Created(job) => (job, true),
        other => match other.job() {
            Some(job) => (job.clone(), false),
            None => return Err(ApiError::not_found("unknown_job", "the job has expired")),
        },
    };
    tracing::Span::current().record("job_id", &job.id);
    if created {
        info!(agent = %job.agent, "job queued");
    }
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(job)))
}

/// Query of `GET /v1/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    project: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/jobs?state=&project=&limit=&cursor=`: newest first.
pub async fn list(
    State(state): State<AppState>,
    _caller: ApiCaller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = match query.state.as_deref() {
        Some(s) => Some(
            s.parse::<JobState>()
                .map_err(|e| ApiError::bad_request(format!("state: {e}")))?,
        ),
        None => None,
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit: must be between 1 and 500"));
    }
    let filter = JobFilter {
        state: filter,
        project: query.project,
    };
    let page = state
        .queue
        .list(&filter, query.cursor.as_deref(), limit)
        .await?;
    Ok(Json(json!({"jobs": page.jobs, "next_cursor": page.next})))
}

async fn find(state: &AppState, id: &str) -> Result<Job, ApiError> {
    state
        .queue
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_job", format!("no job {id:?}")))
}

/// `GET /v1/jobs/{id}`.
pub async fn show(
    State(state): State<AppState>,
    _caller: ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(find(&state, &id).await?))
}

/// `POST /v1/jobs/{id}/cancel`: stops the job; 409 if it has already ended otherwise.
/// Cancelling a cancelled job answers as the first cancel did: a cancel refused with 503
/// may have been written all the same (`redis.min_replicas_acked`), and its sender's retry
/// must not read as a conflict.
#[instrument(skip(state, _caller))]
pub async fn cancel(
    State(state): State<AppState>,
    _caller: ApiCaller,
    Path(job_id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    match state
        .cancel_job(&job_id, "cancelled through the API")
        .await?
    {
        CancelOutcome::Cancelled(_) => {
            info!("job cancelled");
            Ok(Json(find(&state, &job_id).await?))
        }
        CancelOutcome::AlreadyFinished(JobState::Cancelled) => {
            Ok(Json(find(&state, &job_id).await?))
        }
        CancelOutcome::AlreadyFinished(s) => Err(ApiError::conflict(
            "already_finished",
            format!("job {job_id} has already ended ({s})"),
        )),
        CancelOutcome::NotFound => Err(ApiError::not_found(
            "unknown_job",
            format!("no job {job_id:?}"),
        )),
    }
}

/// The body of `POST /v1/jobs/{id}/answer`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    /// The answer: one of the question's choices, or any text.
    pub text: String,
    /// The question answered (its `id`), so an answer meant for one question never
    /// answers the next; any open question when absent.
    #[serde(default)]
    pub question: Option<String>,
    /// Who answers, as recorded and shown (`api` when absent).
    #[serde(default)]
    pub by: Option<String>,
}

/// `POST /v1/jobs/{id}/answer`: answers the agent's open question. The first answer wins;
/// a later one (or one for a question no longer open) is a 409 that says who answered.
#[instrument(skip(state, _caller, body))]
pub async fn answer(
    State(state): State<AppState>,
    _caller: ApiCaller,
    Path(job_id): Path<String>,
    body: Bytes,
) -> Result<Json<Job>, ApiError> {
    let body: AnswerBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid answer: {e}")))?;
    let text = body.text.trim();
    if text.is_empty() {
        return Err(ApiError::bad_request("the answer is empty"));
    }
    if text.len() > contract::conversation::MAX_ANSWER_BYTES {
        return Err(ApiError::bad_request(format!(
            "the answer holds {} bytes; at most {} are taken",
            text.len(),
            contract::conversation::MAX_ANSWER_BYTES
        )));
    }
    let by = body.by.as_deref().map(str::trim).unwrap_or("api");
    if by.is_empty() || by.len() > 100 {
        return Err(ApiError::bad_request("`by` must be 1 to 100 bytes"));
    }
    match state
        .queue
        .answer(&job_id, body.question.as_deref(), text, by)
        .await?
    {
        AnswerOutcome::Answered(answer) => {
            info!(question = %answer.question, by, "question answered");
            Ok(Json(find(&state, &job_id).await?))
        }
        AnswerOutcome::Closed {
            last: Some(last), ..
        } if body.question.as_deref().is_none_or(|q| q == last.question) => {
            let who = if last.defaulted {
                "nobody answered in time; it took its default".to_string()
            } else {
                format!("{} answered", last.by)
            };
            Err(ApiError::conflict(
                "already_answered",
                format!(
                    "question {} of job {job_id} was already answered: {who} {:?}",
                    last.question, last.text
                ),
            ))
        }
        AnswerOutcome::Closed { state: s, .. } => Err(ApiError::conflict(
            "no_open_question",
            match (&body.question, s) {
                (Some(q), JobState::WaitingForInput) => {
                    format!("job {job_id} is waiting for another question than {q}")
                }
                _ => format!("job {job_id} has no open question (it is {s})"),
            },
        )),
        AnswerOutcome::NotFound => Err(ApiError::not_found(
            "unknown_job",
            format!("no job {job_id:?}"),
        )),
    }
}

/// The body of `POST /v1/jobs/{id}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    /// The message.
    pub text: String,
    /// Who sends it, as recorded and shown (`api` when absent).
    #[serde(default)]
    pub by: Option<String>,
}

/// `POST /v1/jobs/{id}/messages`: a message for the job's agent, handed to it while it runs
/// (in `$AGENTSMITH_INBOX`). 202 with its number; 409 once the job has ended or its inbox is
/// full.
#[instrument(skip(state, _caller, body))]
pub async fn message(
    State(state): State<AppState>,
    _caller: ApiCaller,
    Path(job_id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let body: MessageBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid message: {e}")))?;
    let by = body.by.as_deref().map(str::trim).unwrap_or("api");
    if by.is_empty() || by.len() > 100 {
        return Err(ApiError::bad_request("`by` must be 1 to 100 bytes"));
    }
    let seq = state.send_message(&job_id, &body.text, by).await?;
    info!(seq, by, "message for the agent");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"job_id": job_id, "seq": seq})),
    ))
}

/// `POST /v1/jobs/{id}/retry`: runs an ended job again; 409 while it is active.
#[instrument(skip(state, _caller))]
pub async fn retry(
    State(state): State<AppState>,
    _caller: ApiCaller,
    Path(job_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    match state.queue.retry(&job_id).await? {
        RetryOutcome::Queued(attempt) => {
            info!(attempt, "job queued again");
            Ok((StatusCode::ACCEPTED, Json(find(&state, &job_id).await?)))
        }
        RetryOutcome::Active(s) => Err(ApiError::conflict(
            "still_active",
            format!("job {job_id} is still {s}"),
        )),
        RetryOutcome::NotFound => Err(ApiError::not_found(
            "unknown_job",
            format!("no job {job_id:?}"),
        )),
    }
}

/// Query of the events stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Resume after this event id (as `Last-Event-ID` does).
    after: Option<String>,
}

/// The resume point of an SSE request: `Last-Event-ID`, else `?after=`, checked.
pub(super) fn last_event_id(
    headers: &HeaderMap,
    after: Option<String>,
) -> Result<Option<StreamId>, ApiError> {
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(after);
    after
        .map(|a| {
            a.parse::<StreamId>().map_err(|()| {
                ApiError::bad_request("Last-Event-ID: not an event id of this stream")
            })
        })
        .transpose()
}

/// `GET /v1/jobs/{id}/events`: Server-Sent Events. Replays the job's history (after
/// `Last-Event-ID` or `?after=` when given), then follows it live; ends once the job has
/// ended and everything is sent. A follower past `api.max_followers` (or the per-client
/// cap) is refused with 429; one that falls too far behind gets a `lagged` event and is
/// closed (see [`crate::fanout`]).
pub async fn events(
    State(state): State<AppState>,
    _caller: ApiCaller,
    client: ClientId,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if !valid_id(&id) {
        return Err(ApiError::not_found("unknown_job", format!("no job {id:?}")));
    }
    let after = last_event_id(&headers, query.after)?;
    // Counted before Redis is asked anything, so a refused follower costs nothing.
    let slot = match state.fanout.admit(client) {
        Ok(slot) => slot,
        Err(refused) => return Ok(refused.into_response()),
    };
    let job = find(&state, &id).await?;
    let follow = Follow::job(&state.queue, &job, after, SSE_BLOCK);
    Ok(state.fanout.follow(slot, follow))
}
