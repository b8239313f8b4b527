//! Tokio runtimes of named threads, so a phase reads the CPU of each side (load generator,
//! dispatcher replica, simulated fleet) apart from `/proc/self/task`.

use anyhow::Context as _;
use tokio::runtime::Runtime;

/// A tokio runtime of named threads, shut down without waiting when dropped (a runtime may
/// not be dropped inside another's task).
pub struct NamedRuntime(Option<Runtime>);

impl NamedRuntime {
    /// A runtime of `workers` threads named `name` (at most 15 bytes, as `/proc` keeps them).
    pub fn new(name: &'static str, workers: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name(name)
            .enable_all()
            .build()
            .with_context(|| format!("building the runtime of {name}"))?;
        Ok(Self(Some(runtime)))
    }

    /// Spawns `future` on the runtime.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0
            .as_ref()
            .expect("the runtime is only taken on drop")
            .spawn(future)
    }
}

impl Drop for NamedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
