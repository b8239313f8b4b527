//! [`JobSpec`]: everything a spawner needs to start one attempt of one job, and the
//! environment it hands `agent-runner` (whose names are in [`contract::env`]).

use std::collections::BTreeMap;
use std::fmt;

use contract::{env, labels, workload_name, Intent};
use serde::{Deserialize, Serialize};

/// An agent profile as a spawner needs it: what to run and within which bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgentProfile {
    /// The profile's name in the configuration.
    pub name: String,
    /// The container image (container backends only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The agent command (argv). Run by `agent-runner`, not by the shell.
    pub command: Vec<String>,
    /// Extra environment for the agent.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are secrets: variable name to secret key. The
    /// values never pass through the job record; each backend resolves the keys where the
    /// workload runs (see [`crate::secrets`]).
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    /// The agent's time limit.
    pub timeout_secs: u64,
    /// Limits of the workload (container backends).
    #[serde(default)]
    pub resources: Resources,
    /// Let the agent write outside its work directory and `/tmp` (container backends
    /// otherwise give it a read-only root filesystem).
    #[serde(default)]
    pub writable_root: bool,
    /// Mount a service account token in the agent's pod (kubernetes).
    #[serde(default)]
    pub service_account_token: bool,
}

/// Resource limits of one workload; `None` leaves the backend's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Resources {
    /// Memory limit in bytes (no swap beyond it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU limit in thousandths of a CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    /// Largest number of processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    /// Disk the workload may fill, in bytes: its work directory, `/tmp` and its writable
    /// layer (kubernetes: `ephemeral-storage` and each `emptyDir`'s `sizeLimit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
}

impl Resources {
    /// These limits, with `defaults` for the ones left unset.
    pub fn or(self, defaults: Resources) -> Resources {
        Resources {
            memory_bytes: self.memory_bytes.or(defaults.memory_bytes),
            cpu_millis: self.cpu_millis.or(defaults.cpu_millis),
            pids: self.pids.or(defaults.pids),
            disk_bytes: self.disk_bytes.or(defaults.disk_bytes),
        }
    }
}

/// Everything a spawner needs to start one attempt of one job.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job id (lowercase letters and digits).
    pub job_id: String,
    /// The attempt, starting at 1.
    pub attempt: u32,
    /// What to do.
    pub intent: Intent,
    /// How to do it.
    pub profile: AgentProfile,
    /// Where the runner posts its events.
    pub callback_url: String,
    /// The attempt's one-time credential, which the runner exchanges for the attempt's
    /// token before the agent starts.
    pub credential: String,
    /// Seconds between runner heartbeats.
    pub heartbeat_secs: u64,
    /// Seconds between SIGTERM and SIGKILL.
    pub grace_secs: u64,
}

impl fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the credential.
        f.debug_struct("JobSpec")
            .field("job_id", &self.job_id)
            .field("attempt", &self.attempt)
            .field("intent", &self.intent)
            .field("profile", &self.profile.name)
            .field("callback_url", &self.callback_url)
            .field("credential", &"[redacted]")
            .finish()
    }
}

impl JobSpec {
    /// The deterministic workload name of this attempt; see [`workload_name`].
    pub fn workload_name(&self) -> String {
        workload_name(&self.job_id, self.attempt)
    }

    /// The environment `agent-runner` reads its job from.
    pub fn runner_env(&self) -> Vec<(&'static str, String)> {
        let intent = serde_json::to_string(&self.intent).expect("an intent always serialises");
        let command =
            serde_json::to_string(&self.profile.command).expect("a string list always serialises");
        vec![
            (env::JOB_ID, self.job_id.clone()),
            (env::ATTEMPT, self.attempt.to_string()),
            (env::INTENT, intent),
            (env::COMMAND, command),
            (env::CALLBACK_URL, self.callback_url.clone()),
            (env::JOB_CREDENTIAL, self.credential.clone()),
            (env::TIMEOUT_SECS, self.profile.timeout_secs.to_string()),
            (env::HEARTBEAT_SECS, self.heartbeat_secs.to_string()),
            (env::GRACE_SECS, self.grace_secs.to_string()),
        ]
    }

    /// The labels every workload of this attempt carries.
    pub fn labels(&self, installation: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::MANAGED_BY.to_string(), "agentsmith".to_string()),
            (labels::JOB_ID.to_string(), self.job_id.clone()),
            (labels::ATTEMPT.to_string(), self.attempt.to_string()),
            (labels::INSTALLATION.to_string(), installation.to_string()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_spec_debug_never_shows_the_token() {
        let spec = JobSpec {
            job_id: "a".into(),
            attempt: 1,
            intent: Intent::default(),
            profile: AgentProfile::default(),
            callback_url: "http://x".into(),
            credential: "sekrit-token".into(),
            heartbeat_secs: 5,
            grace_secs: 5,
        };
        assert!(!format!("{spec:?}").contains("sekrit"));
    }
}
