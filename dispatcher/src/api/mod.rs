//! The HTTP surface. Every route is in [`router`].

pub mod auth;
mod deliveries;
pub mod error;
mod feed;
pub mod guard;
mod health;
mod jobs;
mod runner;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;

pub use auth::ApiCaller;
pub use error::ApiError;
use guard::{json_post, LoopbackHosts};
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
///
/// Routes that take a JSON body are [`json_post`] (415 for any other content type); while
/// `api.tokens` is empty, everything but the webhooks and the runner's routes is behind
/// [`guard::same_origin`] (see [`guard`] for why).
pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.server.body_limit_bytes;
    // Runner batches carry up to ~1 MiB of output plus a result file: they get their own,
    // larger limit.
    // Both layers: `RequestBodyLimitLayer` bounds what is read, `DefaultBodyLimit` is
    // the limit axum's own extractors apply (2 MiB unless told).
    let runner_limit = RUNNER_BODY_LIMIT.max(body_limit);
    let internal = Router::new()
        .route("/internal/jobs/{id}/events", json_post(runner::events))
        .route("/internal/jobs/{id}/token", json_post(runner::token))
        .route("/internal/jobs/{id}/answer", json_post(runner::answer))
        .route("/internal/jobs/{id}/inbox", json_post(runner::inbox))
        .layer(DefaultBodyLimit::max(runner_limit))
        .layer(RequestBodyLimitLayer::new(runner_limit));
    let mut api = Router::new()
        .route("/v1/jobs", json_post(jobs::submit).get(jobs::list))
        .route("/v1/events", get(feed::feed))
        .route("/v1/jobs/{id}", get(jobs::show))
        .route("/v1/jobs/{id}/events", get(jobs::events))
        .route("/v1/jobs/{id}/cancel", json_post(jobs::cancel))
        .route("/v1/jobs/{id}/retry", json_post(jobs::retry))
        .route("/v1/jobs/{id}/answer", json_post(jobs::answer))
        .route("/v1/jobs/{id}/messages", json_post(jobs::message))
        .route("/v1/deliveries", get(deliveries::list))
        .route("/v1/deliveries/{id}", get(deliveries::show))
        .route("/v1/deliveries/{id}/replay", json_post(deliveries::replay))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/version", get(health::version))
        .route("/metrics", get(health::metrics))
        .route("/v1/overview", get(dashboard::overview));
    if state.settings.dashboard.enabled {
        api = api
            .route("/", get(dashboard::index))
            .route("/assets/{name}", get(dashboard::asset));
    }
    if state.settings.api.tokens.is_empty() {
        let hosts = Arc::new(LoopbackHosts::from_settings(&state.settings));
        api = api.route_layer(middleware::from_fn_with_state(hosts, guard::same_origin));
    }
    let webhooks = Router::new()
        .route("/webhooks/slack/commands", post(webhooks::slack::commands))
        .route("/webhooks/slack/events", post(webhooks::slack::events))
        .route(
            "/webhooks/slack/interactions",
            post(webhooks::slack::interactions),
        )
        .route("/webhooks/github", post(webhooks::github::webhook))
        .route("/webhooks/gitlab", post(webhooks::gitlab::webhook))
        .route("/webhooks/jira", post(webhooks::jira::webhook));
    let public = api
        .merge(webhooks)
        .layer(RequestBodyLimitLayer::new(body_limit));
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

/// Counts requests by matched route and method, each from a fixed set (see [`HttpLabels`]):
/// never the raw path or an invented method, which would explode the labels.
async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let response = next.run(request).await;
    let labels = HttpLabels::new(
        route.as_ref().map(MatchedPath::as_str),
        &method,
        response.status(),
    );
    state.metrics.http_requests.get_or_create(&labels).inc();
    response
}
