//! The no-op backend of the in-process dispatchers (the lifecycle and fleet phases): it
//! spawns nothing, tells the simulated runners what it was asked to spawn, and counts the
//! questions asked about workloads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use spawner::backend::noop::NoopSpawner;
use spawner::{JobHandle, JobSpawner, JobSpec, LogStream, WorkloadStatus};
use tokio::sync::mpsc;

/// A no-op spawner that announces every spawn, as `T`, to the simulated runners.
pub struct AnnouncingSpawner<T> {
    inner: NoopSpawner,
    spawned: mpsc::UnboundedSender<T>,
    announce: fn(&JobSpec) -> T,
    /// `status` calls: lease checks of a watchdog, which it makes only of a job whose lease
    /// ran out (and reconciliations of unwanted workloads, of which the bench has none).
    pub status_calls: AtomicU64,
}

impl<T> AnnouncingSpawner<T> {
    /// A backend that sends `announce(job)` of each spawned attempt to `spawned`.
    pub fn new(spawned: mpsc::UnboundedSender<T>, announce: fn(&JobSpec) -> T) -> Self {
        Self {
            inner: NoopSpawner::new(),
            spawned,
            announce,
            status_calls: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl<T: Send + 'static> JobSpawner for AnnouncingSpawner<T> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn survives_restart(&self) -> bool {
        self.inner.survives_restart()
    }

    async fn probe(&self) -> spawner::Result<()> {
        self.inner.probe().await
    }

    async fn spawn(&self, job: &JobSpec) -> spawner::Result<JobHandle> {
        let handle = self.inner.spawn(job).await?;
        let _ = self.spawned.send((self.announce)(job));
        Ok(handle)
    }

    async fn status(&self, handle: &JobHandle) -> spawner::Result<WorkloadStatus> {
        self.status_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.status(handle).await
    }

    async fn logs(&self, handle: &JobHandle, follow: bool) -> spawner::Result<LogStream> {
        self.inner.logs(handle, follow).await
    }

    async fn cancel(&self, handle: &JobHandle, grace: Duration) -> spawner::Result<()> {
        self.inner.cancel(handle, grace).await
    }

    async fn list(&self) -> spawner::Result<Vec<JobHandle>> {
        self.inner.list().await
    }
}
