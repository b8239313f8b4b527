//! A backend that starts nothing: every spawn "succeeds" at once and the workload runs
//! until it is cancelled. For benchmarks of the queue and for tests that drive the runner's
//! side of a job themselves.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::{JobHandle, JobSpawner, JobSpec, LogStream, Result, WorkloadStatus};

/// The no-op backend.
#[derive(Debug, Default)]
pub struct NoopSpawner {
    workloads: Mutex<HashMap<String, (JobHandle, WorkloadStatus)>>,
}

impl NoopSpawner {
    /// A backend with no workloads.
    pub fn new() -> Self {
        Self::default()
    }

    fn workloads(&self) -> std::sync::MutexGuard<'_, HashMap<String, (JobHandle, WorkloadStatus)>> {
        self.workloads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks a workload as ended with `status` (as a real workload would end by itself).
    pub fn finish(&self, name: &str, status: WorkloadStatus) {
        if let Some(entry) = self.workloads().get_mut(name) {
            entry.1 = status;
        }
    }
}

#[async_trait]
impl JobSpawner for NoopSpawner {
    fn backend(&self) -> &'static str {
        "noop"
    }

    fn survives_restart(&self) -> bool {
        false
    }

    async fn probe(&self) -> Result<()> {
        Ok(())
    }

    async fn spawn(&self, job: &JobSpec) -> Result<JobHandle> {
        let name = job.workload_name();
        let mut workloads = self.workloads();
        let entry = workloads.entry(name.clone()).or_insert_with(|| {
            let handle = JobHandle {
                backend: "noop".into(),
                name,
                job_id: job.job_id.clone(),
                attempt: job.attempt,
                id: None,
                target: contract::DEFAULT_TARGET.into(),
            };
            (handle, WorkloadStatus::Running)
        });
        Ok(entry.0.clone())
    }

    async fn status(&self, handle: &JobHandle) -> Result<WorkloadStatus> {
        Ok(self
            .workloads()
            .get(&handle.name)
            .map(|(_, status)| status.clone())
            .unwrap_or(WorkloadStatus::NotFound))
    }

    async fn logs(&self, _handle: &JobHandle, _follow: bool) -> Result<LogStream> {
        Ok(Box::pin(futures::stream::empty()))
    }

    async fn cancel(&self, handle: &JobHandle, _grace: Duration) -> Result<()> {
        self.workloads().remove(&handle.name);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<JobHandle>> {
        Ok(self.workloads().values().map(|(h, _)| h.clone()).collect())
    }
}
