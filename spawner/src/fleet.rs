//! [`Fleet`]: the named spawner targets of one dispatcher (`spawner:` as `default`, and
//! each of `spawners:`), their health, and the routing of a workload's calls to the target
//! its handle names.
//!
//! Which target an attempt goes to is the dispatcher's choice (it needs the queue to count
//! a target's jobs); the fleet runs the attempt there and stamps the handle with the
//! target, so every later call reaches the same backend.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;

use crate::{Error, JobHandle, JobSpawner, JobSpec, LogStream, Result, WorkloadStatus};

pub use contract::DEFAULT_TARGET;

/// One named target: a backend, its own cap on concurrent jobs, and what its last probe
/// said.
pub struct Target {
    name: String,
    spawner: Arc<dyn JobSpawner>,
    max_concurrent_jobs: u32,
    health: Mutex<Health>,
}

/// What a target's last probe said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Not probed yet: taken as usable.
    Unknown,
    /// The last probe passed.
    Up,
    /// The last probe failed, with its error.
    Down(String),
}

impl Health {
    /// Whether new attempts may go to the target.
    pub fn is_usable(&self) -> bool {
        !matches!(self, Health::Down(_))
    }
}

impl Target {
    /// A target named `name` running workloads on `spawner`, with at most
    /// `max_concurrent_jobs` of them at once (0: no cap of its own).
    pub fn new(name: &str, spawner: Arc<dyn JobSpawner>, max_concurrent_jobs: u32) -> Self {
        Self {
            name: name.to_string(),
            spawner,
            max_concurrent_jobs,
            health: Mutex::new(Health::Unknown),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its backend's name.
    pub fn backend(&self) -> &'static str {
        self.spawner.backend()
    }

    /// Its backend.
    pub fn spawner(&self) -> &Arc<dyn JobSpawner> {
        &self.spawner
    }

    /// Its cap on concurrent jobs (0: none of its own).
    pub fn max_concurrent_jobs(&self) -> u32 {
        self.max_concurrent_jobs
    }

    /// What its last probe said.
    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Probes the backend and remembers the answer.
    pub async fn probe(&self) -> Result<()> {
        let result = self.spawner.probe().await;
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = match &result {
            Ok(()) => Health::Up,
            Err(e) => Health::Down(e.to_string()),
        };
        result
    }
}

/// The targets of one dispatcher, by name.
pub struct Fleet {
    targets: BTreeMap<String, Target>,
}

impl Fleet {
    /// A fleet of `targets`; one of them should be [`DEFAULT_TARGET`].
    pub fn new(targets: impl IntoIterator<Item = Target>) -> Self {
        Self {
            targets: targets.into_iter().map(|t| (t.name.clone(), t)).collect(),
        }
    }

    /// A fleet of one target, the default, with at most `max_concurrent_jobs` jobs (0: no
    /// cap of its own).
    pub fn single(spawner: Arc<dyn JobSpawner>, max_concurrent_jobs: u32) -> Self {
        Self::new([Target::new(DEFAULT_TARGET, spawner, max_concurrent_jobs)])
    }

    /// The target named `name`.
    pub fn get(&self, name: &str) -> Option<&Target> {
        self.targets.get(name)
    }

    /// Every target, by name.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.values()
    }

    /// The default target (the first one when there is no default).
    pub fn default_target(&self) -> &Target {
        self.targets
            .get(DEFAULT_TARGET)
            .or_else(|| self.targets.values().next())
            .expect("a fleet has at least one target")
    }

    /// The backend of the default target (what a dispatcher of one target runs on).
    pub fn backend(&self) -> &'static str {
        self.default_target().backend()
    }

    /// The backend of the target named `name`, or `unknown`.
    pub fn backend_of(&self, name: &str) -> &'static str {
        self.get(name).map_or("unknown", Target::backend)
    }

    /// Probes every target at once, remembering each answer; the errors by target.
    pub async fn probe_all(&self) -> Vec<(String, Result<()>)> {
        join_all(
            self.targets()
                .map(|t| async move { (t.name.clone(), t.probe().await) }),
        )
        .await
    }

    /// Runs the attempt on `target` (or adopts the workload already started there).
    pub async fn spawn_on(&self, target: &str, job: &JobSpec) -> Result<JobHandle> {
        let mut handle = self.target(target)?.spawner.spawn(job).await?;
        handle.target = target.to_string();
        Ok(handle)
    }

    /// What the workload is doing, asked of the target it runs on. A workload of a target
    /// no longer configured is reported failed (retryable): nothing can follow it.
    pub async fn status(&self, handle: &JobHandle) -> Result<WorkloadStatus> {
        match self.targets.get(&handle.target) {
            Some(t) => t.spawner.status(handle).await,
            None => Ok(WorkloadStatus::Failed {
                reason: format!("target {:?} is no longer configured", handle.target),
                retryable: true,
            }),
        }
    }

    /// The workload's output, from the target it runs on.
    pub async fn logs(&self, handle: &JobHandle, follow: bool) -> Result<LogStream> {
        self.target(&handle.target)?
            .spawner
            .logs(handle, follow)
            .await
    }

    /// Stops the workload on its target (nothing to do on a target no longer configured).
    pub async fn cancel(&self, handle: &JobHandle, grace: Duration) -> Result<()> {
        match self.targets.get(&handle.target) {
            Some(t) => t.spawner.cancel(handle, grace).await,
            None => Ok(()),
        }
    }

    /// Stops and removes the workload on its target.
    pub async fn remove(&self, handle: &JobHandle) -> Result<()> {
        match self.targets.get(&handle.target) {
            Some(t) => t.spawner.remove(handle).await,
            None => Ok(()),
        }
    }

    /// Every workload of this installation on every target that answers, each handle
    /// stamped with its target (a workload two targets see, on an engine or namespace they
    /// share, is listed once: same name, same backend id), with the error of each target that did not answer.
    pub async fn list(&self) -> (Vec<JobHandle>, Vec<(String, Error)>) {
        let listed = join_all(
            self.targets()
                .map(|t| async move { (t.name.clone(), t.spawner.list().await) }),
        )
        .await;
        let mut seen = std::collections::HashSet::new();
        let mut handles = Vec::new();
        let mut failures = Vec::new();
        for (target, result) in listed {
            match result {
                Ok(found) => {
                    for mut handle in found {
                        if seen.insert((handle.name.clone(), handle.id.clone())) {
                            handle.target = target.clone();
                            handles.push(handle);
                        }
                    }
                }
                Err(e) => failures.push((target, e)),
            }
        }
        (handles, failures)
    }

    /// Every target's upkeep, at once; the errors by target.
    pub async fn housekeeping(&self) -> Vec<(String, Error)> {
        join_all(
            self.targets()
                .map(|t| async move { (t.name.clone(), t.spawner.housekeeping().await) }),
        )
        .await
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| (name, e)))
        .collect()
    }

    fn target(&self, name: &str) -> Result<&Target> {
        self.targets.get(name).ok_or_else(|| Error::Rejected {
            backend: "fleet",
            message: format!("no spawner target named {name:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::noop::NoopSpawner;

    fn spec(id: &str) -> JobSpec {
        JobSpec {
            job_id: id.into(),
            attempt: 1,
            intent: Default::default(),
            profile: Default::default(),
            callback_url: "http://127.0.0.1:1".into(),
            credential: "c".into(),
            heartbeat_secs: 5,
            grace_secs: 1,
        }
    }

    #[tokio::test]
    async fn calls_reach_the_target_the_handle_names() {
        let (a, b) = (Arc::new(NoopSpawner::new()), Arc::new(NoopSpawner::new()));
        let fleet = Fleet::new([
            Target::new(DEFAULT_TARGET, a.clone(), 0),
            Target::new("b", b.clone(), 2),
        ]);
        let on_b = fleet.spawn_on("b", &spec("j1")).await.unwrap();
        assert_eq!(on_b.target, "b");
        assert_eq!(b.list().await.unwrap().len(), 1);
        assert!(a.list().await.unwrap().is_empty());
        b.finish(&on_b.name, WorkloadStatus::Exited { code: 0 });
        assert_eq!(
            fleet.status(&on_b).await.unwrap(),
            WorkloadStatus::Exited { code: 0 }
        );
        // The default target does not know it.
        let elsewhere = JobHandle {
            target: DEFAULT_TARGET.into(),
            ..on_b.clone()
        };
        assert_eq!(
            fleet.status(&elsewhere).await.unwrap(),
            WorkloadStatus::NotFound
        );
        let (listed, failures) = fleet.list().await;
        assert!(failures.is_empty());
        assert_eq!(listed, vec![on_b.clone()]);
        let gone = JobHandle {
            target: "removed".into(),
            ..on_b
        };
        assert!(matches!(
            fleet.status(&gone).await.unwrap(),
            WorkloadStatus::Failed {
                retryable: true,
                ..
            }
        ));
        assert!(fleet.cancel(&gone, Duration::ZERO).await.is_ok());
        assert!(matches!(
            fleet.spawn_on("removed", &spec("j2")).await,
            Err(Error::Rejected { .. })
        ));
    }
}
