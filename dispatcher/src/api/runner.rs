//! Where runners report: `POST /internal/jobs/{id}/token` exchanges an attempt's one-time
//! credential for its token, `POST /internal/jobs/{id}/events` takes the attempt's
//! events, and `POST /internal/jobs/{id}/answer` tells it the answer to its question, both
//! authenticated with that token.
//!
//! A runner shares its workload with an untrusted agent, so both routes bound what they
//! take: the body ([`RUNNER_BODY_LIMIT`](super::RUNNER_BODY_LIMIT)), the events of a batch
//! ([`MAX_BATCH_EVENTS`]), and (in the queue) each line, the result, the output of an
//! attempt, and the sequence numbers, which may not jump.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::time::Duration;

use contract::{
    AnswerReply, AnswerRequest, Change, InboxReply, InboxRequest, RunnerBatch, RunnerEvent,
    RunnerReply, TokenGrant, TokenRequest, PROTOCOL_VERSION,
};
use sha2::{Digest, Sha256};
use tracing::instrument;

use super::error::ApiError;
use super::AppState;
use crate::metrics::{seconds_between, Stage};
use crate::notify::{providers, pulls};
use queue::{now_ms, valid_id, AnswerPoll, BatchOutcome, Exchange, InboxPoll};

/// The most events one batch may carry (the runner sends at most 200).
pub const MAX_BATCH_EVENTS: usize = 1000;

/// The bearer value of the `Authorization` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Exchanges the attempt's one-time credential for its token: once, or again for the same
/// nonce (a retry after a lost answer). 401 for a wrong or spent credential, 409 when the
/// attempt is no longer wanted.
#[instrument(skip(state, headers, body), fields(attempt))]
pub async fn token(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let credential =
        bearer(&headers).ok_or_else(|| ApiError::unauthorized("missing job credential"))?;
    let request: TokenRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid token request: {e}")))?;
    tracing::Span::current().record("attempt", request.attempt);
    if !(16..=128).contains(&request.nonce.len()) {
        return Err(ApiError::bad_request(
            "the nonce must be 16 to 128 characters",
        ));
    }
    if !valid_id(&job_id)
        || !state
            .tokens
            .verify_credential(&job_id, request.attempt, credential)
    {
        return Err(ApiError::unauthorized(
            "job credential does not match this job and attempt",
        ));
    }
    let digest = hex::encode(Sha256::digest(request.nonce.as_bytes()));
    match state
        .queue
        .exchange_credential(&job_id, request.attempt, &digest)
        .await?
    {
        Exchange::Granted => {
            // The job's repository and its credential go to the runner here, not in the
            // workload: only the runner that spent the credential learns them.
            let job = state.queue.get(&job_id).await?;
            let checkout = job
                .as_ref()
                .and_then(|job| crate::context::checkout_for(&state.settings, job));
            Ok(Json(TokenGrant {
                token: state.tokens.issue(&job_id, request.attempt),
                checkout,
            })
            .into_response())
        }
        Exchange::Spent => {
            tracing::warn!(%job_id, attempt = request.attempt, "a spent credential was offered again");
            Err(ApiError::unauthorized(
                "this credential was already exchanged",
            ))
        }
        Exchange::Gone => Ok((
            StatusCode::CONFLICT,
            Json(RunnerReply {
                stop: true,
                inbox: 0,
            }),
        )
            .into_response()),
    }
}

/// A runner's request (`what`, for the error) read from `body`, once its token is the one of
/// `job_id` and of the attempt the request names (`attempt_of`): 400 for a body that is not
/// one, 401 for a missing or wrong token.
fn runner_request<T: serde::de::DeserializeOwned>(
    state: &AppState,
    job_id: &str,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
    attempt_of: impl Fn(&T) -> u32,
) -> Result<T, ApiError> {
    let token = bearer(headers).ok_or_else(|| ApiError::unauthorized("missing job token"))?;
    let request: T = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid {what}: {e}")))?;
    let attempt = attempt_of(&request);
    tracing::Span::current().record("attempt", attempt);
    if !valid_id(job_id) || !state.tokens.verify(job_id, attempt, token) {
        return Err(ApiError::unauthorized(
            "job token does not match this job and attempt",
        ));
    }
    Ok(request)
}

/// Tells a runner the answer to its question: `{"answer": null}` while nobody has answered,
/// 409 with `stop` when the attempt is no longer wanted.
#[instrument(skip(state, headers, body), fields(attempt))]
pub async fn answer(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: AnswerRequest = runner_request(
        &state,
        &job_id,
        &headers,
        &body,
        "answer request",
        |r: &AnswerRequest| r.attempt,
    )?;
    let reply = match state
        .queue
        .answer_for(&job_id, request.attempt, &request.question)
        .await?
    {
        AnswerPoll::Waiting => AnswerReply {
            answer: None,
            stop: false,
        },
        AnswerPoll::Answered(answer) => AnswerReply {
            answer: Some(answer),
            stop: false,
        },
        AnswerPoll::Gone => {
            let reply = AnswerReply {
                answer: None,
                stop: true,
            };
            return Ok((StatusCode::CONFLICT, Json(reply)).into_response());
        }
    };
    Ok(Json(reply).into_response())
}

/// The most messages one inbox request gets (the runner asks again for more).
pub const INBOX_PAGE: usize = 50;

/// Hands a runner the messages of its job's inbox after those it has; 409 with `stop` when
/// the attempt is no longer wanted.
#[instrument(skip(state, headers, body), fields(attempt))]
pub async fn inbox(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: InboxRequest = runner_request(
        &state,
        &job_id,
        &headers,
        &body,
        "inbox request",
        |r: &InboxRequest| r.attempt,
    )?;
    match state
        .queue
        .inbox_after(&job_id, request.attempt, request.after, INBOX_PAGE)
        .await?
    {
        InboxPoll::Messages(messages) => Ok(Json(InboxReply {
            messages,
            stop: false,
        })
        .into_response()),
        InboxPoll::Gone => {
            let reply = InboxReply {
                messages: Vec::new(),
                stop: true,
            };
            Ok((StatusCode::CONFLICT, Json(reply)).into_response())
        }
    }
}

/// Applies a batch of runner events; answers `{"stop": bool}`, or 409 when the attempt is
/// no longer wanted (the runner then stops its agent).
#[instrument(skip(state, headers, body), fields(attempt))]
pub async fn events(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = bearer(&headers).ok_or_else(|| ApiError::unauthorized("missing job token"))?;
    let batch: RunnerBatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid runner batch: {e}")))?;
    tracing::Span::current().record("attempt", batch.attempt);
    if !valid_id(&job_id) || !state.tokens.verify(&job_id, batch.attempt, token) {
        return Err(ApiError::unauthorized(
            "job token does not match this job and attempt",
        ));
    }
    if batch.version > PROTOCOL_VERSION {
        return Err(ApiError::bad_request(format!(
            "runner protocol {} is newer than this dispatcher's ({PROTOCOL_VERSION})",
            batch.version
        )));
    }
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::bad_request(format!(
            "a batch holds at most {MAX_BATCH_EVENTS} events; this one has {}",
            batch.events.len()
        )));
    }
    let mut batch = batch;
    open_pull_request(&state, &job_id, &mut batch).await?;
    let outcome = state.queue.apply_runner_batch(&job_id, &batch).await?;
    if let Some(expected) = outcome.gap {
        return Err(ApiError::bad_request(format!(
            "sequence gap: the next event expected is {expected}, this batch starts at {}",
            batch.first_seq
        )));
    }
    if outcome.stop {
        let reply = RunnerReply {
            stop: true,
            inbox: 0,
        };
        return Ok((StatusCode::CONFLICT, Json(reply)).into_response());
    }
    if outcome.started || outcome.ended {
        observe_stages(&state, &job_id, &outcome).await;
    }
    Ok(Json(RunnerReply {
        stop: false,
        inbox: outcome.inbox,
    })
    .into_response())
}

/// When `batch` ends the current attempt of a job whose work the runner pushed: the pull
/// request opened (or the open one updated) before the batch is recorded, so the recorded
/// change names it. A provider failure worth retrying answers 503: the runner sends the
/// batch again, and finding the request open then makes that safe.
async fn open_pull_request(
    state: &AppState,
    job_id: &str,
    batch: &mut RunnerBatch,
) -> Result<(), ApiError> {
    let attempt = batch.attempt;
    let Some(RunnerEvent::Finished {
        result,
        change: Some(change),
        ..
    }) = batch.events.last_mut()
    else {
        return Ok(());
    };
    if !matches!(**change, Change::Pushed { .. }) {
        return Ok(());
    }
    let Some(job) = state.queue.get(job_id).await? else {
        return Ok(());
    };
    if job.attempt != attempt || job.state.is_terminal() {
        return Ok(());
    }
    let summary = result.as_ref().and_then(|r| r.summary.clone());
    // Bounded as the queue will record it, so the description says what the record does.
    **change = queue::bounded_change(change);
    let timeout = Duration::from_secs(state.settings.sources.replies.timeout_secs);
    let http = providers::client(timeout);
    let fallback = crate::context::commit_subject(&job);
    pulls::open_for(&http, &state.settings, &job, change, summary.as_deref(), &fallback)
        .await
        .map_err(|e| {
            tracing::warn!(%job_id, error = %e, "opening the pull request failed; the runner will send its result again");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the pull request could not be opened yet: {e}"),
            )
        })
}

/// The stages a batch closed: the agent's start (from its workload's record), its run and
/// the job's whole life when it ended. An attempt that ended to be retried times its run
/// too. Best effort: a job that cannot be read is not timed.
async fn observe_stages(state: &AppState, job_id: &str, outcome: &BatchOutcome) {
    let Ok(Some(job)) = state.queue.get(job_id).await else {
        return;
    };
    let now = now_ms();
    if outcome.started {
        if let (Some(spawned), Some(started)) = (job.spawned_at, job.started_at) {
            state.observe_stage(Stage::Start, &job, seconds_between(spawned, started));
        }
    }
    if outcome.ended {
        if let Some(started) = job.started_at {
            let ended = job.finished_at.unwrap_or(now);
            state.observe_stage(Stage::Run, &job, seconds_between(started, ended));
        }
        if job.state.is_terminal() {
            let seconds = seconds_between(job.created_at, now).max(0.0);
            state.metrics.end_to_end_latency.observe(seconds);
        }
    }
}
