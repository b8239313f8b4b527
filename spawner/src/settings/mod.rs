//! The `spawner:` section of the configuration, declared once here and read by the
//! dispatcher's settings: which backend runs workloads, what all backends share, and each
//! backend's own section ([`ProcessSettings`](crate::backend::process::ProcessSettings),
//! `DockerSettings`, `KubernetesSettings`, beside the backend that uses them).
//!
//! Values that must parse (quantities, tolerations, pull policies) are parsed when the
//! settings are read, so a bad one is an error naming its key; [`SpawnerSettings::problems`]
//! reports the values that parse but cannot work. [`crate::from_settings`] builds the
//! backend and refuses settings with problems.

use std::path::PathBuf;

use serde::Deserialize;

pub use pull_policy::PullPolicy;

#[cfg(feature = "docker")]
use crate::backend::docker::DockerSettings;
#[cfg(feature = "kubernetes")]
use crate::backend::kubernetes::KubernetesSettings;
#[cfg(feature = "process")]
use crate::backend::process::ProcessSettings;
use crate::secrets::SecretSource;

pub(crate) mod problems;
pub mod pull_policy;

use problems::Problems;

/// `spawner.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnerSettings {
    /// Which backend.
    #[serde(rename = "type")]
    pub kind: SpawnerKind,
    /// SIGTERM-to-SIGKILL grace.
    pub grace_secs: u64,
    /// Seconds between reconciliations of workloads with job records.
    pub reconcile_secs: u64,
    /// Directory of secret files (one file per key); empty: `AGENTSMITH_SECRET_<KEY>` only.
    pub secrets_dir: String,
    /// The most jobs this target runs at once; 0: no cap besides the queue's
    /// `max_concurrent_jobs`.
    pub max_concurrent_jobs: u32,
    /// The base URL this target's runners post their events to (a dispatcher address its
    /// agents reach: a cluster of its own needs one); empty: `server.public_url`.
    pub callback_url: String,
    /// Seconds between probes of the target's backend (a target whose probe fails gets no
    /// new attempts until one passes).
    pub probe_secs: u64,
    /// Settings of the process backend.
    #[cfg(feature = "process")]
    pub process: ProcessSettings,
    /// Settings of the docker backend.
    #[cfg(feature = "docker")]
    pub docker: DockerSettings,
    /// Settings of the kubernetes backend.
    #[cfg(feature = "kubernetes")]
    pub kubernetes: KubernetesSettings,
}

/// The backends a configuration can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpawnerKind {
    /// Child processes of the dispatcher.
    Process,
    /// Containers on a Docker engine.
    Docker,
    /// Jobs in a Kubernetes cluster.
    Kubernetes,
}

impl SpawnerKind {
    /// The name the configuration and the backend use.
    pub fn as_str(self) -> &'static str {
        match self {
            SpawnerKind::Process => "process",
            SpawnerKind::Docker => "docker",
            SpawnerKind::Kubernetes => "kubernetes",
        }
    }
}

impl SpawnerSettings {
    /// Every value of the section that parses but cannot work, as (key, message) with keys
    /// relative to the section (`docker.user`).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut report = |key: &str, message: String| found.push((key.to_string(), message));
        self.report(&mut Problems::new("", &mut report));
        found
    }

    fn report(&self, problems: &mut Problems<'_>) {
        problems.positive("reconcile_secs", self.reconcile_secs);
        problems.positive("probe_secs", self.probe_secs);
        let url = &self.callback_url;
        let http = url.starts_with("http://") || url.starts_with("https://");
        if !url.is_empty() && !http {
            problems.add("callback_url", "must be an http:// or https:// URL");
        }
        // The process section has nothing that parses yet cannot work: a missing runner is
        // what the backend's probe says.
        #[cfg(feature = "docker")]
        self.docker.problems(&mut problems.nested("docker"));
        #[cfg(feature = "kubernetes")]
        self.kubernetes.problems(&mut problems.nested("kubernetes"));
    }

    /// Where the process and docker backends find secret values.
    pub fn secret_source(&self) -> SecretSource {
        SecretSource::new(
            Some(&self.secrets_dir)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
        )
    }
}
