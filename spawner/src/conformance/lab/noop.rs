//! The lab of the `noop` backend: nothing to start, nothing runs.

use std::sync::Arc;
use std::time::Duration;

use super::{installation_name, sh_profile, Capabilities, Lab};
use crate::backend::noop::NoopSpawner;
use crate::{AgentProfile, JobSpawner};

/// The `noop` backend: every spawn "succeeds" and the workload runs until cancelled.
pub struct NoopLab {
    installation: String,
}

impl NoopLab {
    /// A lab of its own installation.
    pub fn new() -> Self {
        Self {
            installation: installation_name(),
        }
    }
}

impl Default for NoopLab {
    fn default() -> Self {
        Self::new()
    }
}

impl Lab for NoopLab {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            runs_agents: false,
            enforces_memory: false,
            survives_restart: false,
            stop_margin: Duration::from_secs(1),
            patience: Duration::from_secs(10),
        }
    }

    fn installation(&self) -> &str {
        &self.installation
    }

    fn callback_host(&self) -> String {
        "127.0.0.1".into()
    }

    fn spawner(&self, _installation: &str, _time_to_live: Duration) -> Arc<dyn JobSpawner> {
        // A new instance knows nothing of an earlier one's workloads, as after a restart.
        Arc::new(NoopSpawner::new())
    }

    fn profile(&self, script: &str) -> AgentProfile {
        sh_profile(script, None)
    }
}
