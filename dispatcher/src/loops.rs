//! The background loops of a running dispatcher (scheduler, watchdog, notifier), started
//! together and watched: each runs until shutdown, so one that ends before shutdown was
//! asked for (a panic, an early return) means the dispatcher no longer does its work. Then
//! [`Loops::first_failure`] says which loop ended and why, and the caller turns `/ready` to
//! 503 and ends the process with a non-zero status, so an orchestrator restarts it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::task::{Id, JoinError, JoinSet};

use crate::context::Context;

/// The loops, each a task of its own.
pub struct Loops {
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
}

/// A loop that ended before shutdown, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopFailure {
    /// The loop (`scheduler`, `watchdog`, `notifier`).
    pub name: &'static str,
    /// What ended it: the panic's message, or that it returned.
    pub cause: String,
}

impl std::fmt::Display for LoopFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} loop ended: {}", self.name, self.cause)
    }
}

impl Loops {
    /// Starts the scheduler, the watchdog and the notifier.
    pub fn start(ctx: &Arc<Context>) -> Self {
        let mut loops = Self {
            tasks: JoinSet::new(),
            names: HashMap::new(),
        };
        loops.spawn("scheduler", crate::scheduler::run(Arc::clone(ctx)));
        loops.spawn("watchdog", crate::watchdog::run(Arc::clone(ctx)));
        loops.spawn("notifier", crate::notify::run(Arc::clone(ctx)));
        loops
    }

    fn spawn(&mut self, name: &'static str, work: impl Future<Output = ()> + Send + 'static) {
        let handle = self.tasks.spawn(work);
        self.names.insert(handle.id(), name);
    }

    /// Waits for the first loop to end and says which and why. Meant to be raced against
    /// shutdown: a loop that ends before it is a failure. Never returns while every loop
    /// runs.
    pub async fn first_failure(&mut self) -> LoopFailure {
        match self.tasks.join_next_with_id().await {
            Some(Ok((id, ()))) => LoopFailure {
                name: self.name(id),
                cause: "it returned while the dispatcher was not shutting down".into(),
            },
            Some(Err(e)) => LoopFailure {
                name: self.name(e.id()),
                cause: panic_message(e),
            },
            None => std::future::pending().await,
        }
    }

    fn name(&self, id: Id) -> &'static str {
        self.names.get(&id).copied().unwrap_or("background")
    }

    /// Waits for every loop to stop (after shutdown was asked for).
    pub async fn stopped(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// What a failed task says about its end.
fn panic_message(e: JoinError) -> String {
    if e.is_cancelled() {
        return "it was cancelled".into();
    }
    let payload = e.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    format!("it panicked: {message}")
}
