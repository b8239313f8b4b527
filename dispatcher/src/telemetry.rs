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

/// An error and every cause under it, as one line: `top: cause: deeper cause`. Log errors
/// through it (`error = %chain(&e)`), so the engine's or the API server's own words reach
/// the log once, with what the dispatcher was doing.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        // Some errors repeat their cause in their own message: say each thing once.
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_names_every_cause_once() {
        let io = std::io::Error::other("connection refused");
        let spawner = spawner::Error::Unavailable {
            backend: "docker",
            message: "creating container agentsmith-x-1".into(),
            source: Some(Box::new(io)),
        };
        assert_eq!(
            chain(&spawner),
            "docker backend unavailable: creating container agentsmith-x-1: connection refused"
        );
        let queue = queue::QueueError::Timeout(std::time::Duration::from_secs(2));
        assert_eq!(chain(&queue), "redis did not answer within 2s");
    }
}
