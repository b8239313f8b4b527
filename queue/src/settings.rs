//! The queue's sections of the configuration: `redis.*` ([`RedisSettings`]) and `queue.*`
//! ([`QueueSettings`]), declared here and read by the dispatcher's settings.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// `redis.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Connection URL (a secret: it may hold a password).
    pub url: SecretString,
    /// Key prefix; give it a hash tag (`{agentsmith}:`) on Redis Cluster.
    pub prefix: String,
    /// Connect and reply timeout.
    pub timeout_secs: u64,
}

/// `queue.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// Global limit of admitted jobs.
    pub max_concurrent_jobs: u32,
    /// Limit of admitted jobs per concurrency key.
    pub concurrency_key_limit: u32,
    /// Attempts for infrastructure failures.
    pub max_attempts: u32,
    /// First retry delay.
    pub backoff_base_secs: u64,
    /// Largest retry delay.
    pub backoff_max_secs: u64,
    /// Lease of a running job, renewed by heartbeats.
    pub lease_secs: u64,
    /// Seconds between runner heartbeats.
    pub heartbeat_secs: u64,
    /// Lease of a starting job.
    pub start_timeout_secs: u64,
    /// Idle time after which another dispatcher takes over an unrecorded claim.
    pub reclaim_idle_secs: u64,
    /// How long finished jobs are kept.
    pub retention_secs: u64,
    /// How long an idempotency key maps to its job.
    pub idempotency_ttl_secs: u64,
    /// Events kept per job.
    pub events_max_len: u64,
    /// Ready jobs claimed per read.
    pub claim_batch: usize,
    /// Housekeeping interval in milliseconds.
    pub tick_ms: u64,
}

impl RedisSettings {
    /// Every value that parses but cannot work, as (key within `redis`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let url = self.url.expose_secret();
        if !["redis://", "rediss://", "unix://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            problems.push((
                "url".into(),
                "must start with redis://, rediss:// or unix://".into(),
            ));
        }
        if self.timeout_secs == 0 {
            problems.push(("timeout_secs".into(), "must be at least 1".into()));
        }
        problems
    }
}

impl QueueSettings {
    /// Every value that parses but cannot work, as (key within `queue`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("max_concurrent_jobs", u64::from(self.max_concurrent_jobs)),
            (
                "concurrency_key_limit",
                u64::from(self.concurrency_key_limit),
            ),
            ("max_attempts", u64::from(self.max_attempts)),
            ("backoff_base_secs", self.backoff_base_secs),
            ("lease_secs", self.lease_secs),
            ("heartbeat_secs", self.heartbeat_secs),
            ("start_timeout_secs", self.start_timeout_secs),
            ("reclaim_idle_secs", self.reclaim_idle_secs),
            ("retention_secs", self.retention_secs),
            ("idempotency_ttl_secs", self.idempotency_ttl_secs),
            ("events_max_len", self.events_max_len),
            ("claim_batch", self.claim_batch as u64),
            ("tick_ms", self.tick_ms),
        ] {
            if value == 0 {
                problems.push((key.into(), "must be greater than 0".into()));
            }
        }
        if self.heartbeat_secs >= self.lease_secs && self.lease_secs > 0 {
            problems.push((
                "heartbeat_secs".into(),
                format!(
                    "must be shorter than queue.lease_secs ({})",
                    self.lease_secs
                ),
            ));
        }
        if self.backoff_max_secs < self.backoff_base_secs {
            problems.push((
                "backoff_max_secs".into(),
                "must not be below queue.backoff_base_secs".into(),
            ));
        }
        problems
    }
}
