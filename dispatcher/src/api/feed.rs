//! `GET /v1/events`: every job's state changes, live, as Server-Sent Events. Fed from
//! Redis, so a client of any replica sees every change; read once per dispatcher however
//! many clients follow it (see [`crate::fanout`]).

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::ApiCaller;
use super::error::ApiError;
use super::jobs::last_event_id;
use super::{AppState, SSE_BLOCK};
use crate::fanout::{ClientId, Follow};

/// Query of the feed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Resume after this event id (as `Last-Event-ID` does); without it the feed starts now.
    after: Option<String>,
}

/// `GET /v1/events`: state changes of all jobs, from now (or after `Last-Event-ID`), until
/// the client leaves. Counted against the follower caps like a job's events.
pub async fn feed(
    State(state): State<AppState>,
    _caller: ApiCaller,
    client: ClientId,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let after = last_event_id(&headers, query.after)?;
    let slot = match state.fanout.admit(client) {
        Ok(slot) => slot,
        Err(refused) => return Ok(refused.into_response()),
    };
    let follow = Follow::feed(&state.queue, after, SSE_BLOCK).await?;
    Ok(state.fanout.follow(slot, follow))
}
