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

/// Ready for traffic: no background loop has died, not draining, Redis answers, and at
/// least one spawner target is reachable (one bad target of several does not take the
/// dispatcher out of service: its jobs go to their other targets).
///
/// Anyone may ask (probes carry no token), but only an [`Insider`] is told why not: the
/// reasons are backend errors that name hosts, addresses and paths. Everyone else gets the
/// status code and `{"status": "ready"}` or `{"status": "unavailable"}`.
pub async fn ready(State(state): State<AppState>, Insider(insider): Insider) -> impl IntoResponse {
    let (redis, probes) = tokio::join!(state.queue.ping(), state.spawner.probe_all());
    let redis = redis.map_err(|e| e.to_string());
    let any_target = probes.iter().any(|(_, r)| r.is_ok());
    let draining = state.is_draining();
    let failure = state.failure();
    let ok = redis.is_ok() && any_target && !draining && failure.is_none();
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
    let default = probes
        .iter()
        .find(|(name, _)| name == spawner::DEFAULT_TARGET)
        .map(|(_, r)| r.as_ref().map(|_| ()).map_err(|e| e.to_string()))
        .unwrap_or(Ok(()));
    let body = json!({
        "status": status_text,
        "failure": failure,
        "redis": show(&redis),
        "spawner": show(&default),
        "backend": state.spawner.backend(),
        "targets": state.target_states().await,
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
    let targets = state.target_states().await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(stats.as_ref(), &targets),
    )
}
