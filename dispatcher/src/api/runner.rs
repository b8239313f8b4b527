//! `POST /internal/jobs/{id}/events`: where runners report. Authenticated with the per-job
//! token of the attempt the batch belongs to.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use contract::{RunnerBatch, RunnerReply, PROTOCOL_VERSION};
use tracing::instrument;

use super::error::ApiError;
use super::AppState;
use queue::{now_ms, valid_id, JobState};

/// Applies a batch of runner events; answers `{"stop": bool}`, or 409 when the attempt is
/// no longer wanted (the runner then stops its agent).
#[instrument(skip(state, headers, body), fields(attempt))]
pub async fn events(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("missing job token"))?;
    let batch: RunnerBatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid runner batch: {e}")))?;
    tracing::Span::current().record("attempt", batch.attempt);
    if !valid_id(&job_id) || !state.tokens.verify(&job_id, batch.attempt, token.trim()) {
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
    let outcome = state.queue.apply_runner_batch(&job_id, &batch).await?;
    if outcome.stop {
        let reply = RunnerReply { stop: true };
        return Ok((StatusCode::CONFLICT, Json(reply)).into_response());
    }
    if let Ok(job_state) = outcome.state.parse::<JobState>() {
        if job_state.is_terminal() {
            if let Ok(Some(job)) = state.queue.get(&job_id).await {
                let seconds = (now_ms() - job.created_at).max(0) as f64 / 1000.0;
                state.metrics.end_to_end_latency.observe(seconds);
            }
        }
    }
    Ok(Json(RunnerReply { stop: false }).into_response())
}
