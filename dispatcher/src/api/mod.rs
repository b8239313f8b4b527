//! The HTTP surface. Every route is in [`router`].

pub mod auth;
pub mod error;
mod feed;
mod health;
mod jobs;
mod runner;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;

pub use auth::ApiCaller;
pub use error::ApiError;
pub use jobs::SubmitRequest;

pub use crate::context::AppState;
use crate::dashboard;
use crate::metrics::HttpLabels;
use crate::webhooks;

/// How long an SSE stream blocks on Redis between checks for shutdown.
const SSE_BLOCK: Duration = Duration::from_secs(5);

/// Body limit of runner batches.
pub(crate) const RUNNER_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Every route of the dispatcher.
pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.server.body_limit_bytes;
    // Runner batches carry up to ~1 MiB of output plus a result file: they get their own,
    // larger limit.
    // Both layers: `RequestBodyLimitLayer` bounds what is read, `DefaultBodyLimit` is
    // the limit axum's own extractors apply (2 MiB unless told).
    let runner_limit = RUNNER_BODY_LIMIT.max(body_limit);
    let internal = Router::new()
        .route("/internal/jobs/{id}/events", post(runner::events))
        .route("/internal/jobs/{id}/token", post(runner::token))
        .layer(DefaultBodyLimit::max(runner_limit))
        .layer(RequestBodyLimitLayer::new(runner_limit));
    let mut public = Router::new()
        .route("/v1/jobs", post(jobs::submit).get(jobs::list))
        .route("/v1/events", get(feed::feed))
        .route("/v1/jobs/{id}", get(jobs::show))
        .route("/v1/jobs/{id}/events", get(jobs::events))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/version", get(health::version))
        .route("/metrics", get(health::metrics))
        .route("/v1/overview", get(dashboard::overview))
        .route("/webhooks/slack/commands", post(webhooks::slack::commands))
        .route("/webhooks/slack/events", post(webhooks::slack::events))
        .route(
            "/webhooks/slack/interactions",
            post(webhooks::slack::interactions),
        )
        .route("/webhooks/github", post(webhooks::github::webhook))
        .route("/webhooks/gitlab", post(webhooks::gitlab::webhook))
        .route("/webhooks/jira", post(webhooks::jira::webhook));
    if state.settings.dashboard.enabled {
        public = public
            .route("/", get(dashboard::index))
            .route("/assets/{name}", get(dashboard::asset));
    }
    let public = public.layer(RequestBodyLimitLayer::new(body_limit));
    public
        .merge(internal)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

/// Counts requests by matched route (never the raw path, which would explode the labels).
async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let response = next.run(request).await;
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
