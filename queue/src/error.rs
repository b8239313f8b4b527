//! The queue error type.

use std::time::Duration;

/// What went wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis refused or failed a command, or the connection broke (the cause says which).
    #[error("redis command failed")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The Redis URL cannot be used.
    #[error("invalid redis url")]
    Url(#[source] redis::RedisError),
    /// A record in Redis is not what agentsmith writes.
    #[error("unexpected data in redis: {0}")]
    Corrupt(String),
}

impl QueueError {
    /// Whether Redis is unreachable or slow (as opposed to a bug or bad data): callers
    /// answer 503 so senders retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            QueueError::Timeout(_) => true,
            QueueError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.is_timeout()
            }
            _ => false,
        }
    }
}

/// The queue result type.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_redis_failure_says_its_cause_once() {
        let cause = redis::RedisError::from((redis::ErrorKind::Client, "WRONGTYPE"));
        let error = QueueError::from(cause);
        let top = error.to_string();
        let source = error.source().map(ToString::to_string).unwrap_or_default();
        assert_eq!(top, "redis command failed");
        assert!(source.contains("WRONGTYPE"), "{source}");
        assert!(
            !top.contains("WRONGTYPE"),
            "the cause is printed by the chain, not twice"
        );
    }
}
