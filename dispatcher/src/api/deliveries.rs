//! The REST API of the delivery journal: list, show, replay. Every route asks for an
//! [`Admin`]: entries name who sent a delivery and say what it asked for, and a replay does
//! it again. Bodies are kept for replays and never shown.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::instrument;

use super::auth::Admin;
use super::error::ApiError;
use super::AppState;
use crate::webhooks::journal;
use crate::webhooks::Source;
use queue::{Decision, Delivery, DeliveryFilter};

/// Query of `GET /v1/deliveries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    source: Option<String>,
    decision: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// The sources a filter may name.
const SOURCES: [Source; 4] = [Source::Slack, Source::Github, Source::Gitlab, Source::Jira];

/// `GET /v1/deliveries?source=&decision=&limit=&cursor=`: newest first.
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(source) = &query.source {
        if !SOURCES.iter().any(|s| s.as_str() == source) {
            let names: Vec<&str> = SOURCES.iter().map(|s| s.as_str()).collect();
            return Err(ApiError::bad_request(format!(
                "source: unknown source {source:?} (one of {})",
                names.join(", ")
            )));
        }
    }
    if let Some(decision) = &query.decision {
        if !Decision::NAMES.contains(&decision.as_str()) {
            return Err(ApiError::bad_request(format!(
                "decision: unknown decision {decision:?} (one of {})",
                Decision::NAMES.join(", ")
            )));
        }
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit: must be between 1 and 500"));
    }
    let filter = DeliveryFilter {
        source: query.source,
        decision: query.decision,
    };
    let page = state
        .queue
        .deliveries(&filter, query.cursor.as_deref(), limit)
        .await?;
    Ok(Json(
        json!({"deliveries": page.deliveries, "next_cursor": page.next}),
    ))
}

/// `GET /v1/deliveries/{id}`.
pub async fn show(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Delivery>, ApiError> {
    let entry = state.queue.delivery(&id).await?.ok_or_else(|| {
        ApiError::not_found(
            "unknown_delivery",
            format!("no delivery {id:?} in the journal"),
        )
    })?;
    Ok(Json(entry))
}

/// The body of `POST /v1/deliveries/{id}/replay`: an empty object (nothing to choose yet).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {}

/// `POST /v1/deliveries/{id}/replay`: runs the delivery through its source's path again
/// (see [`journal::replay`]); 200 with the replay's own entry, whose `decision` says what
/// it came to (`duplicate` with the job for a delivery that made one).
#[instrument(skip(state, _admin, body))]
pub async fn replay(
    State(state): State<AppState>,
    _admin: Admin,
    Path(delivery_id): Path<String>,
    body: Bytes,
) -> Result<Json<Delivery>, ApiError> {
    if !body.is_empty() {
        serde_json::from_slice::<ReplayRequest>(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid replay body: {e}")))?;
    }
    Ok(Json(journal::replay(&state, &delivery_id).await?))
}
