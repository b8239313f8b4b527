//! The queue error type.

use std::time::Duration;

/// What went wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis refused or failed a command, or the connection broke.
    #[error("redis command failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The Redis settings cannot work.
    #[error("invalid redis settings: {0}")]
    Config(String),
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
