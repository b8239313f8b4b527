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

#[cfg(feature = "docker")]
use crate::backend::docker::DockerSettings;
#[cfg(feature = "kubernetes")]
use crate::backend::kubernetes::KubernetesSettings;
#[cfg(feature = "process")]
use crate::backend::process::ProcessSettings;
use crate::secrets::SecretSource;

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

/// When images are pulled (docker) or what the kubelet is told (kubernetes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum PullPolicy {
    /// Pull only when the image is missing.
    #[default]
    IfNotPresent,
    /// Pull before every attempt.
    Always,
    /// Never pull: the image must be there already.
    Never,
}

impl PullPolicy {
    /// The name Kubernetes and the configuration use.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Always => "Always",
            PullPolicy::Never => "Never",
        }
    }
}

/// Collects problems under a key prefix: what every section's `problems` reports into.
pub(crate) struct Problems<'a> {
    prefix: String,
    report: &'a mut dyn FnMut(&str, String),
}

impl<'a> Problems<'a> {
    /// Reports `key` (relative to `prefix`, which ends without a dot) through `report`.
    pub(crate) fn new(prefix: &str, report: &'a mut dyn FnMut(&str, String)) -> Self {
        Self {
            prefix: prefix.to_string(),
            report,
        }
    }

    /// One problem with `key` (under the prefix).
    pub(crate) fn add(&mut self, key: &str, message: impl Into<String>) {
        let full = match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{key}", self.prefix),
        };
        (self.report)(&full, message.into());
    }

    /// The same collector one level deeper.
    pub(crate) fn nested(&mut self, key: &str) -> Problems<'_> {
        let prefix = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        };
        Problems {
            prefix,
            report: &mut *self.report,
        }
    }

    /// A problem unless `value` is above zero.
    pub(crate) fn positive(&mut self, key: &str, value: u64) {
        if value == 0 {
            self.add(key, "must be greater than 0");
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
        #[cfg(feature = "process")]
        self.process.problems(&mut problems.nested("process"));
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

/// Extra labels must not be the ones agentsmith sets itself.
pub(crate) fn reserved_labels(
    labels: &std::collections::BTreeMap<String, String>,
    problems: &mut Problems<'_>,
) {
    for (label, value) in labels {
        if label.starts_with("agentsmith.io/") || label == contract::labels::MANAGED_BY {
            problems.add(
                label,
                format!("{value:?}: this label is set by agentsmith itself"),
            );
        }
    }
}

/// Environment variable names: not empty, no `=`, not `AGENTSMITH_*` (the runner's own).
pub(crate) fn env_names<'n>(names: impl Iterator<Item = &'n String>, problems: &mut Problems<'_>) {
    for name in names {
        if !crate::valid_env_name(name) {
            problems.add(name, "invalid name (AGENTSMITH_* is reserved)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_keyed_under_their_section() {
        let mut seen = Vec::new();
        let mut report = |key: &str, message: String| seen.push(format!("{key}: {message}"));
        let mut problems = Problems::new("spawner", &mut report);
        problems.positive("reconcile_secs", 0);
        problems.nested("docker").add("user", "no root");
        problems.nested("docker").nested("tls").add("", "all three");
        assert_eq!(
            seen,
            [
                "spawner.reconcile_secs: must be greater than 0",
                "spawner.docker.user: no root",
                "spawner.docker.tls: all three",
            ]
        );
    }
}
