//! Installs the tracing subscriber: JSON lines in containers, readable lines on a
//! terminal, filtered by `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Installs the global subscriber; a second call does nothing. A `RUST_LOG` that is no
/// filter is logged (at warn, with the reason) and `info` is used.
pub fn init(format: LogFormat) {
    let (filter, refused) = filter_of(std::env::var("RUST_LOG").ok());
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
    if let Some(reason) = refused {
        tracing::warn!(%reason, "RUST_LOG is not a log filter; logging at info");
    }
}

/// The filter `RUST_LOG` names (`info` when it is unset or empty), and why it was refused
/// when it is no filter.
fn filter_of(var: Option<String>) -> (EnvFilter, Option<String>) {
    match var.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => (EnvFilter::new("info"), None),
        Some(value) => match EnvFilter::try_new(value) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new("info"), Some(format!("{value:?}: {e}"))),
        },
    }
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
    fn a_log_filter_is_taken_and_one_that_is_none_is_refused_with_its_reason() {
        for good in ["debug", "info,agentsmith::notify=debug", "warn,kube=error"] {
            let (filter, refused) = filter_of(Some(good.into()));
            assert_eq!(refused, None, "{good}");
            // The filter shows its directives, most specific first.
            let mut shown: Vec<String> = filter.to_string().split(',').map(String::from).collect();
            let mut given: Vec<&str> = good.split(',').collect();
            shown.sort();
            given.sort();
            assert_eq!(shown, given);
        }
        assert_eq!(filter_of(None).0.to_string(), "info");
        assert_eq!(filter_of(Some(" ".into())).0.to_string(), "info");
        let (filter, refused) = filter_of(Some("agentsmith=loud".into()));
        assert_eq!(filter.to_string(), "info");
        assert!(refused.is_some_and(|r| r.contains("agentsmith=loud")));
    }

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
