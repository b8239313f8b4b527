//! [`Lab`]: one backend under test, and the lab of each backend: how to build its
//! spawners (a fresh one stands for a restarted dispatcher), where its workloads reach this
//! machine, the agent profile of a shell script, and what it can do ([`Capabilities`]).
//!
//! | lab | needs | cleans up |
//! |---|---|---|
//! | [`NoopLab`] | nothing | nothing to clean |
//! | [`ProcessLab`] | the built runner (`cargo build -p agent-runner`) | its work root |
//! | [`DockerLab`] (feature `docker`) | a Docker engine and the agent image | its containers, by label |
//! | [`KubernetesLab`] (feature `kubernetes`) | the test cluster and the agent image on its node | its namespace |
//!
//! A lab whose service is missing panics with the command that starts it: nothing skips.

#[cfg(feature = "docker")]
mod docker;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod noop;
mod process;

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "docker")]
pub use docker::DockerLab;
#[cfg(feature = "kubernetes")]
pub use kubernetes::KubernetesLab;
pub use noop::NoopLab;
pub use process::ProcessLab;

use crate::{AgentProfile, JobSpawner};

/// The label every workload and namespace of a test run carries (`scripts/test` removes
/// what is left of its run by it).
pub const RUN_LABEL: &str = "agentsmith-test/run";

/// The label that marks what one lab created, so it cleans up after itself alone.
pub const LAB_LABEL: &str = "agentsmith-test/lab";

/// What a backend can do beyond the trait's promises. The suite checks each both ways:
/// a backend that does more (or less) than its lab declares fails.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// Whether a workload runs the agent (and its runner): `false` for `noop`, whose
    /// workloads run until cancelled.
    pub runs_agents: bool,
    /// Whether the profile's memory limit holds (an agent over it is OOM-killed).
    pub enforces_memory: bool,
    /// Whether a new spawner instance finds and adopts the workloads of an earlier one
    /// (must agree with [`JobSpawner::survives_restart`]).
    pub survives_restart: bool,
    /// How long beyond the grace period a cancelled agent may take to be reported stopped.
    pub stop_margin: Duration,
    /// How long anything the suite waits for may take on this backend (images, pods and
    /// a busy two-core machine included).
    pub patience: Duration,
}

/// One backend under test.
pub trait Lab: Send + Sync {
    /// What the backend can do.
    fn capabilities(&self) -> Capabilities;

    /// The installation name of the lab's spawners (unique to the lab).
    fn installation(&self) -> &str;

    /// An address of this machine the backend's workloads reach: where the stand-in
    /// dispatcher listens.
    fn callback_host(&self) -> String;

    /// A new spawner of `installation` (a fresh instance, as a restarted dispatcher builds
    /// it), keeping finished workloads `time_to_live` (the backend's knob for it).
    fn spawner(&self, installation: &str, time_to_live: Duration) -> Arc<dyn JobSpawner>;

    /// The agent profile running `script` with `sh -c` (in the agent image, for container
    /// backends), with a time limit of two minutes.
    fn profile(&self, script: &str) -> AgentProfile;
}

/// The profile of an `sh -c script` agent in `image`.
fn sh_profile(script: &str, image: Option<String>) -> AgentProfile {
    AgentProfile {
        name: "conformance".into(),
        image,
        command: vec!["sh".into(), "-c".into(), script.into()],
        timeout_secs: 120,
        ..AgentProfile::default()
    }
}

/// This test run's id (`AGENTSMITH_TEST_RUN`, set by `scripts/test`), for [`RUN_LABEL`].
#[cfg(any(feature = "docker", feature = "kubernetes"))]
fn run_id() -> String {
    std::env::var("AGENTSMITH_TEST_RUN").unwrap_or_else(|_| format!("pid{}", std::process::id()))
}

/// The agent image of the container backends (`AGENTSMITH_TEST_DOCKER_IMAGE`, default
/// `agentsmith-agent:test`).
#[cfg(any(feature = "docker", feature = "kubernetes"))]
pub fn agent_image() -> String {
    std::env::var("AGENTSMITH_TEST_DOCKER_IMAGE").unwrap_or_else(|_| "agentsmith-agent:test".into())
}

/// A unique installation name: a DNS label, as Kubernetes label values must be.
fn installation_name() -> String {
    testkit::temp::unique("t").replace('-', "")
}
