//! Waiting for a condition, never a bare sleep.

use std::future::Future;
use std::time::Duration;

/// Polls `condition` every 50 ms until it holds or `limit` passes; whether it held.
pub async fn wait_until<F, Fut>(limit: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`wait_until`] for a condition that needs no waiting of its own.
pub async fn wait_until_sync(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    wait_until(limit, || std::future::ready(condition())).await
}
