//! `spawner.kubernetes.*`: the kubernetes backend's section of the configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Affinity, Toleration};
use serde::{Deserialize, Deserializer};

use super::shape::PodShape;
use crate::quantity::{self, Cpus, Memory};
use crate::settings::problems::{env_names, reserved_labels, Problems};
use crate::settings::pull_policy::PullPolicy;
use crate::Resources;

/// Settings of the kubernetes backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSettings {
    /// Kubeconfig file; empty: in-cluster config in a pod, else `KUBECONFIG` or
    /// `~/.kube/config`.
    pub kubeconfig: PathBuf,
    /// Kubeconfig context; empty: the current one.
    pub context: String,
    /// Namespace of agent Jobs; empty: the context's, or the pod's own in a cluster.
    pub namespace: String,
    /// Service account of agent pods; empty: the namespace's default.
    pub service_account: String,
    /// Seconds a finished Job (and its pod and logs) is kept.
    pub ttl_seconds_after_finished: u64,
    /// What the kubelet is told about pulling agent images.
    pub image_pull_policy: PullPolicy,
    /// Names of Secrets used to pull images.
    pub image_pull_secrets: Vec<String>,
    /// The Secret whose keys profiles' `secret_env` names (through `secretKeyRef`).
    pub secret_name: String,
    /// Memory limit (and request) for profiles that set none; empty: none.
    #[serde(default, deserialize_with = "quantity::optional")]
    pub memory: Option<Memory>,
    /// CPU limit for profiles that set none; empty: none.
    #[serde(default, deserialize_with = "quantity::optional")]
    pub cpus: Option<Cpus>,
    /// CPU request of every agent pod; empty: none.
    #[serde(default, deserialize_with = "quantity::optional")]
    pub cpu_request: Option<Cpus>,
    /// Node selector of agent pods.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of agent pods.
    pub tolerations: Vec<Toleration>,
    /// Affinity of agent pods; `{}`: none.
    #[serde(deserialize_with = "affinity")]
    pub affinity: Option<Affinity>,
    /// The user agent pods run as.
    pub run_as_user: i64,
    /// The group agent pods run as (also `fsGroup`).
    pub run_as_group: i64,
    /// Extra labels on Jobs and pods.
    pub labels: BTreeMap<String, String>,
    /// Annotations on Jobs and pods.
    pub annotations: BTreeMap<String, String>,
    /// Environment of every agent container (proxies, say); the profile's env wins over it.
    pub env: BTreeMap<String, String>,
    /// Seconds a pod may stay unscheduled or waiting before its attempt fails.
    pub pending_timeout_secs: u64,
    /// The agent's writable work directory (an `emptyDir`).
    pub work_dir: String,
    /// Client-side limit of API requests per second (bursts up to twice this).
    pub api_qps: u32,
    /// How this cluster shapes the pods of each agent profile (by the profile's name).
    #[serde(default)]
    pub profiles: BTreeMap<String, PodShape>,
    /// Extra CA certificates mounted in every agent pod, for the runner and the agent to
    /// trust besides the public roots.
    #[serde(default)]
    pub ca_bundle: CaBundle,
}

/// `spawner.kubernetes.ca_bundle`: a ConfigMap of the agents' namespace holding PEM
/// certificates (a private CA, a TLS-inspecting proxy's).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaBundle {
    /// The ConfigMap; empty: no extra certificates.
    pub config_map: String,
    /// Its key holding the certificates.
    pub key: String,
}

impl Default for CaBundle {
    fn default() -> Self {
        Self {
            config_map: String::new(),
            key: "ca.crt".into(),
        }
    }
}

/// An affinity, with `{}` and null read as none.
fn affinity<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Affinity>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Object(map) if map.is_empty() => Ok(None),
        other => serde_json::from_value(other)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("not an Affinity: {e}"))),
    }
}

impl KubernetesSettings {
    /// Limits for profiles that set none (Kubernetes has no per-pod process limit).
    pub fn default_resources(&self) -> Resources {
        Resources {
            memory_bytes: self.memory.map(|m| m.0),
            cpu_millis: self.cpus.map(|c| c.0),
            pids: None,
            disk_bytes: None,
        }
    }

    /// The service account of agent pods, when one is named.
    pub(crate) fn service_account(&self) -> Option<String> {
        Some(self.service_account.clone()).filter(|s| !s.is_empty())
    }

    pub(crate) fn problems(&self, problems: &mut Problems<'_>) {
        if self.run_as_user <= 0 || self.run_as_group <= 0 {
            problems.add(
                "run_as_user",
                "agent pods run as a non-root user and group (both above 0)",
            );
        }
        problems.positive("pending_timeout_secs", self.pending_timeout_secs);
        problems.positive("api_qps", u64::from(self.api_qps));
        let dir = &self.work_dir;
        if !dir.starts_with('/') || dir == "/" || dir == "/tmp" {
            problems.add("work_dir", "must be an absolute path other than / and /tmp");
        }
        if !matches!(self.ttl_seconds_after_finished, 1..=2_147_483_647) {
            problems.add(
                "ttl_seconds_after_finished",
                "must be between 1 and 2147483647",
            );
        }
        env_names(self.env.keys(), &mut problems.nested("env"));
        if !self.ca_bundle.config_map.is_empty() && self.ca_bundle.key.is_empty() {
            problems.add(
                "ca_bundle.key",
                "names the ConfigMap's key holding the certificates",
            );
        }
        reserved_labels(&self.labels, &mut problems.nested("labels"));
        for (profile, shape) in &self.profiles {
            shape.problems(
                &self.work_dir,
                &self.secret_name,
                &mut problems.nested("profiles").nested(profile),
            );
        }
    }
}
