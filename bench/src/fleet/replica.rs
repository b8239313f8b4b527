//! A dispatcher replica built in-process: `Application::build_with_spawner` on a tokio
//! runtime of its own whose threads carry the replica's name, so its CPU is read from
//! `/proc/self/task` apart from the other replica's and the simulated fleet's.
//!
//! Both replicas share one [`FleetSpawner`]: a no-op backend that every replica sees whole,
//! as every replica of a real installation sees the same cluster, so a replica asking about
//! a workload the other one spawned gets the truth.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agentsmith::app::Application;
use agentsmith::settings::Settings;
use anyhow::Context as _;
use queue::Queue;
use spawner::JobSpawner;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::runner::Spawned;
use crate::announcing_spawner::AnnouncingSpawner;
use crate::runtime::NamedRuntime;
use crate::sys::threads_cpu_secs;

/// The no-op backend of both replicas: announces every spawn to the simulated fleet and
/// counts the watchdogs' questions about workloads, which they ask only of a job whose
/// lease ran out.
pub type FleetSpawner = AnnouncingSpawner<Spawned>;

/// One running replica; stopped (and its runtime shut down) when dropped.
pub struct Replica {
    /// The name of its threads.
    pub thread: &'static str,
    /// Where it serves.
    pub addr: SocketAddr,
    /// Its queue (for setting up jobs and reading counters).
    pub queue: Queue,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Dropped last: the shutdown token is cancelled first.
    _threads: NamedRuntime,
}

impl Replica {
    /// Builds and runs a replica on a runtime of `workers` threads named `thread` (at most
    /// 15 bytes, as `/proc` keeps them).
    pub async fn start(
        thread: &'static str,
        workers: usize,
        settings: Settings,
        spawner: Arc<dyn JobSpawner>,
    ) -> anyhow::Result<Self> {
        // Shut down however this function ends.
        let threads = NamedRuntime::new(thread, workers)?;
        let shutdown = CancellationToken::new();
        let (built_tx, built_rx) = oneshot::channel();
        let stop = shutdown.clone();
        let task = threads.spawn(async move {
            match Application::build_with_spawner(settings, spawner, stop).await {
                Ok(app) => {
                    let _ = built_tx.send(Ok((app.port(), app.context().queue.clone())));
                    app.run().await
                }
                Err(e) => {
                    let _ = built_tx.send(Err(e));
                    Ok(())
                }
            }
        });
        let (port, queue) = built_rx
            .await
            .with_context(|| format!("{thread} stopped while being built"))?
            .with_context(|| format!("building {thread}"))?;
        Ok(Self {
            thread,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            queue,
            shutdown,
            task: Some(task),
            _threads: threads,
        })
    }

    /// CPU seconds its threads have used so far.
    pub fn cpu_secs(&self) -> f64 {
        threads_cpu_secs(self.thread)
    }

    /// Stops it and waits (15 s at most); what went wrong, if anything.
    pub async fn stop(mut self) -> Option<String> {
        self.shutdown.cancel();
        let task = self.task.take()?;
        match tokio::time::timeout(Duration::from_secs(15), task).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some(format!("{} stopped with an error: {e:#}", self.thread)),
            Ok(Err(e)) => Some(format!("{} failed: {e}", self.thread)),
            Err(_) => Some(format!("{} did not stop within 15 s", self.thread)),
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
