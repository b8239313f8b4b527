//! A dispatcher whose watchdog dies: `agentsmith serve` on the built-in defaults, but with a
//! spawner whose periodic upkeep panics a moment after start. For the supervision test
//! (`tests/supervision.rs`), which checks that the process then ends with a non-zero status
//! and says why; not for use.
//!
//! Environment: `AGENTSMITH_TEST_REDIS_URL` (the Redis to use), `DEAD_LOOP_PORT` (where to
//! listen on 127.0.0.1).

use std::process::ExitCode;
use std::sync::Arc;

use secrecy::SecretString;
use spawner::recording::RecordingSpawner;

fn main() -> ExitCode {
    let mut settings =
        agentsmith::settings::Settings::load_from(None, &[]).expect("the built-in defaults load");
    let redis = std::env::var("AGENTSMITH_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let port = std::env::var("DEAD_LOOP_PORT").unwrap_or_else(|_| "0".into());
    settings.redis.url = SecretString::from(redis);
    settings.redis.prefix = format!("dead-loop-{}:", std::process::id());
    settings.server.bind = format!("127.0.0.1:{port}");
    settings.server.shutdown_grace_secs = 5;
    settings.spawner.reconcile_secs = 1;
    // The first upkeep runs at start; the second, a second later, panics.
    let spawner = RecordingSpawner::new();
    spawner.break_housekeeping_after(1);
    agentsmith::cli::serve_with(settings, Some(Arc::new(spawner)))
}
