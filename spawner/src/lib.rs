//! The [`JobSpawner`] trait and its backends: what runs an agent workload, watches it,
//! stops it and says why it ended. A spawner never touches Redis or HTTP routing.
//!
//! | module | what |
//! |---|---|
//! | [`JobSpawner`], [`WorkloadStatus`], [`LogStream`] (`workload.rs`) | the trait every backend implements and what it answers |
//! | [`fleet`] | [`Fleet`]: the named targets of one dispatcher, their health, and each handle's calls routed to its target |
//! | [`spec`] | [`JobSpec`]: one attempt of one job, and the environment handed to `agent-runner` |
//! | [`settings`] | the `spawner:` section of the configuration, declared once; each backend's own section lives beside it |
//! | [`quantity`] | memory and CPU quantities as Kubernetes writes them |
//! | [`secrets`] | where the process and docker backends find secret values |
//! | [`backend`] | `noop` (always), `process`, `docker` and `kubernetes` (each behind the feature of its name) |
//! | `conformance`, `recording` (feature `test-util`) | the suite every backend passes (with a lab per backend: `spawner/tests/conformance_<backend>.rs` run it), and a fake that records what it is asked |
//!
//! Names and shapes shared with the queue and the runner (the [`JobHandle`] a job record
//! keeps, labels, the runner's environment names) are in the `contract` crate.

pub mod backend;
#[cfg(feature = "test-util")]
pub mod conformance;
mod error;
pub mod fleet;
pub mod quantity;
#[cfg(feature = "test-util")]
pub mod recording;
pub mod secrets;
pub mod settings;
pub mod spec;
mod workload;

use std::sync::Arc;
use std::time::Duration;

pub use contract::JobHandle;

/// Where the container backends mount the extra CA certificates of their `ca_bundle`
/// setting for `agent-runner` (named to it by `AGENTSMITH_EXTRA_CA_FILE`).
pub const CA_MOUNT_DIR: &str = "/etc/agentsmith/ca";
/// The file in [`CA_MOUNT_DIR`].
pub const CA_MOUNT_FILE: &str = "/etc/agentsmith/ca/extra.crt";
pub use error::{Error, Result};
pub use fleet::{Fleet, Health, Target, DEFAULT_TARGET};
pub use settings::pull_policy::PullPolicy;
pub use settings::{SpawnerKind, SpawnerSettings};
pub use spec::{AgentProfile, JobSpec, Resources};
pub use workload::{JobSpawner, LogLine, LogStream, WorkloadStatus};

/// What every backend is told besides its own section of the settings.
#[derive(Debug, Clone)]
pub struct Installation {
    /// The installation name, in every workload's labels (several may share a cluster or
    /// an engine).
    pub name: String,
    /// Where the values of profiles' secret environment variables come from (process and
    /// docker backends; kubernetes refers to a Secret instead).
    pub secrets: secrets::SecretSource,
    /// SIGTERM-to-SIGKILL grace of workloads.
    pub grace: Duration,
}

/// Whether `name` may be an agent's environment variable: not empty, no `=`, and not
/// `AGENTSMITH_*` (the runner's own).
pub fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && !name.starts_with("AGENTSMITH_")
}

/// The backend `settings` name, built for `installation`. Settings with problems (see
/// [`SpawnerSettings::problems`]) are refused with the first one, naming its key.
pub fn from_settings(
    settings: &SpawnerSettings,
    installation: &str,
) -> Result<Arc<dyn JobSpawner>> {
    build(settings, installation, "spawner")
}

/// The fleet of `default` (the `spawner:` section) and the `named` targets (`spawners:`),
/// each built for `installation`; the first problem of any is refused, naming its key.
pub fn fleet_from_settings(
    default: &SpawnerSettings,
    named: &std::collections::BTreeMap<String, SpawnerSettings>,
    installation: &str,
) -> Result<Fleet> {
    let mut targets = vec![Target::new(
        DEFAULT_TARGET,
        build(default, installation, "spawner")?,
        default.max_concurrent_jobs,
    )];
    for (name, settings) in named {
        let spawner = build(settings, installation, &format!("spawners.{name}"))?;
        targets.push(Target::new(name, spawner, settings.max_concurrent_jobs));
    }
    Ok(Fleet::new(targets))
}

fn build(
    settings: &SpawnerSettings,
    installation: &str,
    section: &str,
) -> Result<Arc<dyn JobSpawner>> {
    if let Some((key, message)) = settings.problems().into_iter().next() {
        return Err(Error::Settings {
            key: format!("{section}.{key}"),
            message,
        });
    }
    let installation = Installation {
        name: installation.to_string(),
        secrets: settings.secret_source(),
        grace: Duration::from_secs(settings.grace_secs),
    };
    let unbuilt = |kind: SpawnerKind| Error::Settings {
        key: format!("{section}.type"),
        message: format!("this build has no {} backend", kind.as_str()),
    };
    Ok(match settings.kind {
        #[cfg(feature = "process")]
        SpawnerKind::Process => Arc::new(backend::process::ProcessSpawner::new(
            &settings.process,
            &installation,
        )),
        #[cfg(feature = "docker")]
        SpawnerKind::Docker => Arc::new(backend::docker::DockerSpawner::new(
            settings.docker.clone(),
            &installation,
        )),
        #[cfg(feature = "kubernetes")]
        SpawnerKind::Kubernetes => Arc::new(backend::kubernetes::KubernetesSpawner::new(
            settings.kubernetes.clone(),
            &installation,
        )),
        #[allow(unreachable_patterns)]
        other => return Err(unbuilt(other)),
    })
}
