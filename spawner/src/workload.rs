//! The [`JobSpawner`] trait and the types it speaks in.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use contract::{JobHandle, OutputStream};

use crate::{JobSpec, Result};

/// What a backend knows about a workload, including why it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WorkloadStatus {
    /// Created but not running yet (scheduling, pulling an image).
    Pending {
        /// Why it is waiting, when the backend says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Running.
    Running,
    /// Ended by itself with an exit code.
    Exited {
        /// The exit code of the runner (the container's main process).
        code: i32,
    },
    /// Killed by a signal.
    Killed {
        /// The signal number.
        signal: i32,
    },
    /// Could not run or was stopped by the platform (image missing, OOM-killed, evicted,
    /// deadline exceeded, unschedulable).
    Failed {
        /// A readable reason.
        reason: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
    /// No such workload.
    NotFound,
}

impl WorkloadStatus {
    /// Whether the workload has ended (or never existed).
    pub fn is_over(&self) -> bool {
        !matches!(
            self,
            WorkloadStatus::Pending { .. } | WorkloadStatus::Running
        )
    }

    /// A readable account of the status, for job records and replies.
    pub fn describe(&self) -> String {
        match self {
            WorkloadStatus::Pending { reason: Some(r) } => format!("pending: {r}"),
            WorkloadStatus::Pending { reason: None } => "pending".into(),
            WorkloadStatus::Running => "running".into(),
            WorkloadStatus::Exited { code } => match contract::exit::meaning(*code) {
                Some(meaning) => format!("exited with code {code} ({meaning})"),
                None => format!("exited with code {code}"),
            },
            WorkloadStatus::Killed { signal } => format!("killed by signal {signal}"),
            WorkloadStatus::Failed { reason, .. } => reason.clone(),
            WorkloadStatus::NotFound => "workload not found".into(),
        }
    }
}

/// One line of workload output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Which stream it came from.
    pub stream: OutputStream,
    /// The line, without its newline.
    pub line: String,
}

/// A stream of workload output lines.
pub type LogStream = BoxStream<'static, Result<LogLine>>;

/// Runs agent workloads on one platform.
///
/// Every backend names workloads deterministically from job id and attempt, so a
/// repeated [`spawn`](JobSpawner::spawn) of the same attempt adopts the workload it
/// already created instead of running the job twice, and labels everything it creates
/// so [`list`](JobSpawner::list) finds it after a restart.
#[async_trait]
pub trait JobSpawner: Send + Sync + 'static {
    /// The backend's name.
    fn backend(&self) -> &'static str;

    /// Whether workloads keep running, and can be found again, after the dispatcher restarts.
    fn survives_restart(&self) -> bool;

    /// Checks that the backend is reachable and allowed to do its work.
    async fn probe(&self) -> Result<()>;

    /// Starts the attempt, or adopts the workload a previous call started for it.
    async fn spawn(&self, job: &JobSpec) -> Result<JobHandle>;

    /// What the workload is doing, or why it ended.
    async fn status(&self, handle: &JobHandle) -> Result<WorkloadStatus>;

    /// The workload's output, from the start; with `follow`, until it ends.
    async fn logs(&self, handle: &JobHandle, follow: bool) -> Result<LogStream>;

    /// Stops the workload: SIGTERM, then a kill after `grace`. Stopping a workload that has
    /// ended or does not exist succeeds.
    async fn cancel(&self, handle: &JobHandle, grace: Duration) -> Result<()>;

    /// Every workload of this installation the backend can see, running or not yet removed.
    async fn list(&self) -> Result<Vec<JobHandle>>;

    /// Stops the workload at once and removes it with its output: for workloads no job
    /// owns. Removing a workload that does not exist succeeds.
    async fn remove(&self, handle: &JobHandle) -> Result<()> {
        self.cancel(handle, Duration::ZERO).await
    }

    /// Periodic upkeep the backend needs (removing finished workloads after their time to
    /// live, say). Called by the dispatcher's watchdog.
    async fn housekeeping(&self) -> Result<()> {
        Ok(())
    }
}
