//! Installs the tracing subscriber: JSON lines in containers, readable lines on a
//! terminal, filtered by `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Installs the global subscriber; a second call does nothing.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// An error and every cause under it, as one line (`top: cause: deeper cause`): log errors
/// through it (`error = %chain(&e)`), so the engine's or the API server's own words reach
/// the log once, with what the dispatcher was doing.
pub fn chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> contract::ErrorChain<'a> {
    contract::ErrorChain(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawner_and_queue_errors_are_logged_with_their_causes() {
        let io = std::io::Error::other("connection refused");
        let spawner = spawner::Error::Unavailable {
            backend: "docker",
            message: "creating container agentsmith-x-1".into(),
            source: Some(Box::new(io)),
        };
        assert_eq!(
            chain(&spawner).to_string(),
            "docker backend unavailable: creating container agentsmith-x-1: connection refused"
        );
        let queue = queue::QueueError::Timeout(std::time::Duration::from_secs(2));
        assert_eq!(chain(&queue).to_string(), "redis did not answer within 2s");
    }
}
