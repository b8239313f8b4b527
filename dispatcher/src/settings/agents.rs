//! `agents.*` (profiles: what a job runs, within which limits) and `projects.*` (where a
//! ticket belongs, which profile runs it, what triggers it).

use std::collections::BTreeMap;

use serde::Deserialize;
use spawner::quantity::{self, Cpus, Memory};

/// `agents.<name>.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// The agent command (argv).
    pub command: Vec<String>,
    /// Container image for container backends.
    #[serde(default)]
    pub image: String,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secret environment: variable name to secret key.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    /// Time limit of one attempt.
    #[serde(default = "default_agent_timeout")]
    pub timeout_secs: u64,
    /// Whether a non-zero exit is retried.
    #[serde(default)]
    pub retry_on_failure: bool,
    /// Memory limit (container backends); empty: the backend's default.
    #[serde(default, deserialize_with = "quantity::optional")]
    pub memory: Option<Memory>,
    /// CPU limit (container backends); empty: the backend's default.
    #[serde(default, deserialize_with = "quantity::optional")]
    pub cpus: Option<Cpus>,
    /// Process limit (container backends); 0: the backend's default.
    #[serde(default)]
    pub pids_limit: u32,
    /// Disk the agent may fill (container backends: its work directory, /tmp and its
    /// writable layer); empty: no bound.
    #[serde(
        default = "default_agent_disk",
        deserialize_with = "quantity::optional"
    )]
    pub disk: Option<Memory>,
    /// Let the agent write outside its work directory and /tmp (container backends).
    #[serde(default)]
    pub writable_root: bool,
    /// Mount a service account token in the agent's pod (kubernetes).
    #[serde(default)]
    pub service_account_token: bool,
}

impl AgentSettings {
    /// The profile's limits; unset ones take the backend's defaults.
    pub fn resources(&self) -> spawner::Resources {
        spawner::Resources {
            memory_bytes: self.memory.map(|m| m.0),
            cpu_millis: self.cpus.map(|c| c.0),
            pids: Some(self.pids_limit).filter(|p| *p > 0),
            disk_bytes: self.disk.map(|d| d.0),
        }
    }
}

fn default_agent_timeout() -> u64 {
    1800
}

/// 10 GiB: room for a large checkout and its build, and a bound on what a runaway agent
/// can write to the node.
fn default_agent_disk() -> Option<Memory> {
    Some(Memory(10 << 30))
}

/// `projects.<name>.*`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    /// The repository.
    #[serde(default)]
    pub repo: String,
    /// Default agent profile.
    pub agent: String,
    /// Jira project keys whose issues belong to this project (`PAY`).
    #[serde(default)]
    pub jira_projects: Vec<String>,
    /// GitHub repositories (`owner/repo`) whose issues belong to this project.
    #[serde(default)]
    pub github_repos: Vec<String>,
    /// GitLab project paths (`group/project`) whose issues belong to this project.
    #[serde(default)]
    pub gitlab_projects: Vec<String>,
    /// Slack channel ids whose commands default to this project.
    #[serde(default)]
    pub slack_channels: Vec<String>,
    /// What starts a job from this project's tickets; empty values take the source's.
    #[serde(default)]
    pub triggers: TriggerSettings,
}

/// `projects.<name>.triggers.*`: overrides of the source-wide triggers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSettings {
    /// The label whose addition starts a job; empty: the source's `label`.
    #[serde(default)]
    pub label: String,
    /// Jira statuses an issue moving into starts a job; empty: `sources.jira.statuses`.
    #[serde(default)]
    pub jira_statuses: Vec<String>,
    /// Whether a comment starting with the command starts a job.
    #[serde(default = "yes")]
    pub comments: bool,
}

fn yes() -> bool {
    true
}

impl Default for TriggerSettings {
    fn default() -> Self {
        Self {
            label: String::new(),
            jira_statuses: Vec::new(),
            comments: true,
        }
    }
}
