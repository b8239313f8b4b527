//! `GET /v1/events`: every job's state changes, live, as Server-Sent Events. Fed from
//! Redis, so a client of any replica sees every change.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use tracing::warn;

use super::auth::ApiCaller;
use super::error::ApiError;
use super::jobs::{channel_stream, last_event_id};
use super::{AppState, SSE_BLOCK};
use crate::telemetry::chain;

/// Query of the feed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Resume after this event id (as `Last-Event-ID` does); without it the feed starts now.
    after: Option<String>,
}

/// `GET /v1/events`: state changes of all jobs, from now (or after `Last-Event-ID`), until
/// the client leaves.
pub async fn feed(
    State(state): State<AppState>,
    _caller: ApiCaller,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let start = match last_event_id(&headers, query.after)? {
        Some(after) => after,
        None => state.queue.feed_head().await?,
    };
    let stream = channel_stream(move |tx| async move {
        let mut cursor = start;
        let mut conn = match state.queue.dedicated_connection().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %chain(&e), "no redis connection for the feed; ending it");
                return;
            }
        };
        loop {
            let read = tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tx.closed() => return,
                read = state.queue.wait_feed(&mut conn, &cursor, SSE_BLOCK) => read,
            };
            let batch = match read {
                Ok(batch) => batch,
                Err(e) => {
                    warn!(error = %chain(&e), "following the feed failed; ending it");
                    return;
                }
            };
            for (id, event) in batch {
                let data = serde_json::to_string(&event).expect("feed events always serialise");
                let sse = Event::default().id(&id).event("job").data(data);
                if tx.send(sse).await.is_err() {
                    return;
                }
                cursor = id;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
