//! `/health`, `/ready`, `/version` and `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::auth::Insider;
use super::AppState;

/// The process is alive.
pub async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready for traffic: no background loop has died, not draining, Redis answers, the
/// spawner's backend is reachable.
///
/// Anyone may ask (probes carry no token), but only an [`Insider`] is told why not: the
/// reasons are backend errors that name hosts, addresses and paths. Everyone else gets the
/// status code and `{"status": "ready"}` or `{"status": "unavailable"}`.
pub async fn ready(State(state): State<AppState>, Insider(insider): Insider) -> impl IntoResponse {
    let redis = state.queue.ping().await.map_err(|e| e.to_string());
    let spawner = state.spawner.probe().await.map_err(|e| e.to_string());
    let draining = state.is_draining();
    let failure = state.failure();
    let ok = redis.is_ok() && spawner.is_ok() && !draining && failure.is_none();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if !insider {
        let body = json!({"status": if ok { "ready" } else { "unavailable" }});
        return (status, Json(body));
    }
    let show = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.clone(),
    };
    let status_text = if ok {
        "ready"
    } else if failure.is_some() {
        "failed"
    } else if draining {
        "draining"
    } else {
        "unavailable"
    };
    let body = json!({
        "status": status_text,
        "failure": failure,
        "redis": show(&redis),
        "spawner": show(&spawner),
        "backend": state.spawner.backend(),
    });
    (status, Json(body))
}

/// The version of this build and of the runner protocol it speaks.
pub async fn version() -> impl IntoResponse {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "runner_protocol": contract::PROTOCOL_VERSION,
    }))
}

/// Prometheus metrics (OpenMetrics text). Queue figures are omitted while Redis is down.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let stats = state.queue.stats().await.ok();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(stats.as_ref()),
    )
}
