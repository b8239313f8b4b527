//! `server.*`, `api.*`, `dashboard.*` and `log.*`: how the dispatcher listens, who may use
//! its API, whether it serves the dashboard, and how it logs.

use secrecy::SecretString;
use serde::Deserialize;

/// `server.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address.
    pub bind: String,
    /// Base URL at which runners reach this dispatcher; empty derives it from `bind`.
    pub public_url: String,
    /// Largest request body in bytes.
    pub body_limit_bytes: usize,
    /// Drain time on shutdown.
    pub shutdown_grace_secs: u64,
    /// Key of the per-job runner tokens; empty keeps a generated one in Redis.
    pub runner_secret: SecretString,
    /// Installation name, put on every workload's labels.
    pub installation: String,
}

/// `api.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Accepted bearer tokens.
    pub tokens: Vec<SecretString>,
    /// Followers of the event streams (`GET /v1/jobs/{id}/events`, `GET /v1/events`) one
    /// dispatcher serves at once; more are refused with 429.
    pub max_followers: usize,
    /// Followers one client (an API token, else an address) may have at once.
    pub max_followers_per_client: usize,
}

/// `dashboard.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSettings {
    /// Serve the dashboard at `/` (its assets under `/assets/`).
    pub enabled: bool,
    /// Let `GET` requests to `/v1` in without a token (jobs, logs, the event streams, the
    /// overview); actions (`POST`) always need one.
    pub public_read: bool,
}

/// `log.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Output format.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, pretty when it is.
    Auto,
    /// One JSON object per line.
    Json,
    /// Readable lines.
    Pretty,
}
