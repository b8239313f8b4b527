//! `spawner.docker.*`: the docker backend's section of the configuration.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

use crate::quantity::{self, Cpus, Memory};
use crate::settings::problems::{reserved_labels, Problems};
use crate::settings::pull_policy::PullPolicy;
use crate::Resources;

/// Settings of the docker backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSettings {
    /// The engine (`unix:///path`, `tcp://host:port`); empty: `DOCKER_HOST`, else the local
    /// socket.
    pub host: String,
    /// Client certificates, for an engine behind TLS.
    pub tls: DockerTlsSettings,
    /// The network containers join (`host`, a user network); empty: the dispatcher's own
    /// network when it runs in a container, else the engine's default.
    pub network: String,
    /// When to pull images.
    pub pull_policy: PullPolicy,
    /// Registry credentials for pulls.
    pub registry: RegistrySettings,
    /// Seconds a finished container (its logs and exit state) is kept.
    pub ttl_after_finished_secs: u64,
    /// The user the container runs as (`uid:gid`); never root.
    pub user: String,
    /// The work directory inside the container (writable even on a read-only root).
    pub work_dir: String,
    /// What the work directory is.
    pub work_medium: WorkMedium,
    /// `--add-host` entries (`host.docker.internal:host-gateway` lets a runner on a bridge
    /// network reach a dispatcher on the host).
    pub extra_hosts: Vec<String>,
    /// Labels added to every container, beside the standard ones.
    pub labels: BTreeMap<String, String>,
    /// Memory limit for profiles that set none; empty: none.
    #[serde(default, deserialize_with = "quantity::optional")]
    pub memory: Option<Memory>,
    /// CPU limit for profiles that set none; empty: none.
    #[serde(default, deserialize_with = "quantity::optional")]
    pub cpus: Option<Cpus>,
    /// Process limit for profiles that set none; 0: none.
    pub pids_limit: u32,
    /// Seconds one engine request may take (a stop waits out the grace period beyond it).
    pub request_timeout_secs: u64,
    /// Extra CA certificates (a PEM file on the engine's host), mounted read-only for the
    /// runner and the agent to trust besides the public roots; empty: none.
    #[serde(default)]
    pub ca_bundle: String,
}

/// `spawner.docker.work_medium`: what an agent's work directory is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkMedium {
    /// A tmpfs of the profile's `disk` size: a hard bound, paid for in memory.
    Tmpfs,
    /// A Docker volume, removed with the container: as large as the engine's disk.
    Volume,
}

/// `spawner.docker.tls.*`: client certificate files (PEM) for an engine that requires TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerTlsSettings {
    /// The CA that signed the engine's certificate.
    pub ca: String,
    /// This client's certificate.
    pub cert: String,
    /// This client's key.
    pub key: String,
}

/// `spawner.docker.registry.*`: credentials for pulling from a private registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// The registry (`registry.example.com`); empty for Docker Hub.
    pub server: String,
    /// The user name; empty: pull anonymously.
    pub username: String,
    /// The password or access token.
    pub password: SecretString,
}

impl DockerSettings {
    /// Limits for profiles that set none.
    pub fn default_resources(&self) -> Resources {
        Resources {
            memory_bytes: self.memory.map(|m| m.0),
            cpu_millis: self.cpus.map(|c| c.0),
            pids: Some(self.pids_limit).filter(|p| *p > 0),
            disk_bytes: None,
        }
    }

    /// The client certificates, when all three files are given.
    pub(crate) fn tls_files(&self) -> Option<&DockerTlsSettings> {
        let tls = &self.tls;
        (!tls.ca.is_empty() && !tls.cert.is_empty() && !tls.key.is_empty()).then_some(tls)
    }

    pub(crate) fn problems(&self, problems: &mut Problems<'_>) {
        problems.positive("request_timeout_secs", self.request_timeout_secs);
        if !self.ca_bundle.is_empty() && !self.ca_bundle.starts_with('/') {
            problems.add("ca_bundle", "must be an absolute path on the engine's host");
        }
        if !self.work_dir.starts_with('/') || self.work_dir == "/" {
            problems.add("work_dir", "must be an absolute path other than /");
        }
        let user = &self.user;
        if user.is_empty() || user == "0" || user.starts_with("0:") || user.starts_with("root") {
            problems.add(
                "user",
                "must name a non-root user (uid:gid), e.g. 10001:10001",
            );
        }
        let host = &self.host;
        if !(host.is_empty()
            || ["unix://", "tcp://", "http://", "https://"]
                .iter()
                .any(|scheme| host.starts_with(scheme)))
        {
            problems.add(
                "host",
                "must start with unix://, tcp://, http:// or https://",
            );
        }
        let tls = [&self.tls.ca, &self.tls.cert, &self.tls.key];
        if tls.iter().any(|f| !f.is_empty()) && tls.iter().any(|f| f.is_empty()) {
            problems.add("tls", "ca, cert and key are needed together");
        }
        reserved_labels(&self.labels, &mut problems.nested("labels"));
    }
}
