//! [`RecordingSpawner`]: a fake backend that runs nothing and records every call, for tests
//! of what the dispatcher asks of a spawner (router tests with `oneshot`, the supervision
//! tests), with statuses and failures set by the test.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::{Error, JobHandle, JobSpawner, JobSpec, LogStream, Result, WorkloadStatus};

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `probe()`.
    Probe,
    /// `spawn()` of this workload.
    Spawn(String),
    /// `status()` of this workload.
    Status(String),
    /// `logs()` of this workload.
    Logs(String),
    /// `cancel()` of this workload, with this grace.
    Cancel(String, Duration),
    /// `list()`.
    List,
    /// `remove()` of this workload.
    Remove(String),
    /// `housekeeping()`.
    Housekeeping,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    workloads: BTreeMap<String, (JobHandle, WorkloadStatus)>,
    unreachable: bool,
    /// Housekeeping calls that still succeed before one panics, when set.
    housekeeping_breaks_after: Option<u32>,
}

/// A backend that starts nothing: a spawn records the spec and a workload that runs until
/// the test ends it ([`RecordingSpawner::finish`]) or cancels it.
#[derive(Default)]
pub struct RecordingSpawner {
    state: Mutex<State>,
}

impl RecordingSpawner {
    /// A fake with no workloads.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The workloads that exist now.
    pub fn workloads(&self) -> Vec<(JobHandle, WorkloadStatus)> {
        self.state().workloads.values().cloned().collect()
    }

    /// Ends a workload with `status`, as a real one would end by itself.
    pub fn finish(&self, name: &str, status: WorkloadStatus) {
        if let Some(entry) = self.state().workloads.get_mut(name) {
            entry.1 = status;
        }
    }

    /// Makes housekeeping panic after `calls` more calls that succeed: a backend bug, which
    /// kills the dispatcher loop that called it (for the supervision tests).
    pub fn break_housekeeping_after(&self, calls: u32) {
        self.state().housekeeping_breaks_after = Some(calls);
    }

    /// From now on the backend cannot be reached (probe, spawn, status, list fail) or can.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.state().unreachable = unreachable;
    }

    fn record(&self, call: Call) -> Result<()> {
        let mut state = self.state();
        state.calls.push(call);
        if state.unreachable {
            return Err(Error::Unavailable {
                backend: "recording",
                message: "the test made the backend unreachable".into(),
                source: None,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl JobSpawner for RecordingSpawner {
    fn backend(&self) -> &'static str {
        "recording"
    }

    fn survives_restart(&self) -> bool {
        true
    }

    async fn probe(&self) -> Result<()> {
        self.record(Call::Probe)
    }

    async fn spawn(&self, job: &JobSpec) -> Result<JobHandle> {
        let name = job.workload_name();
        self.record(Call::Spawn(name.clone()))?;
        let mut state = self.state();
        let entry = state.workloads.entry(name.clone()).or_insert_with(|| {
            let handle = JobHandle {
                backend: "recording".into(),
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
        self.record(Call::Status(handle.name.clone()))?;
        Ok(self
            .state()
            .workloads
            .get(&handle.name)
            .map(|(_, status)| status.clone())
            .unwrap_or(WorkloadStatus::NotFound))
    }

    async fn logs(&self, handle: &JobHandle, _follow: bool) -> Result<LogStream> {
        self.record(Call::Logs(handle.name.clone()))?;
        Ok(Box::pin(futures::stream::empty()))
    }

    async fn cancel(&self, handle: &JobHandle, grace: Duration) -> Result<()> {
        self.record(Call::Cancel(handle.name.clone(), grace))?;
        if let Some(entry) = self.state().workloads.get_mut(&handle.name) {
            if !entry.1.is_over() {
                entry.1 = WorkloadStatus::Killed { signal: 15 };
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<JobHandle>> {
        self.record(Call::List)?;
        Ok(self
            .state()
            .workloads
            .values()
            .map(|(h, _)| h.clone())
            .collect())
    }

    async fn remove(&self, handle: &JobHandle) -> Result<()> {
        self.record(Call::Remove(handle.name.clone()))?;
        self.state().workloads.remove(&handle.name);
        Ok(())
    }

    async fn housekeeping(&self) -> Result<()> {
        self.record(Call::Housekeeping)?;
        let mut state = self.state();
        match state.housekeeping_breaks_after {
            Some(0) => {
                drop(state);
                panic!("the recording spawner's housekeeping broke, as the test asked");
            }
            Some(left) => state.housekeeping_breaks_after = Some(left - 1),
            None => {}
        }
        Ok(())
    }
}
