//! The lab of the `docker` backend: the local engine, the agent image, and the default
//! bridge, whose gateway address containers reach this machine at.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use secrecy::SecretString;

use super::{agent_image, installation_name, run_id, sh_profile, Capabilities, Lab};
use super::{LAB_LABEL, RUN_LABEL};
use crate::backend::docker::{
    DockerSettings, DockerSpawner, DockerTlsSettings, RegistrySettings, WorkMedium,
};
use crate::secrets::SecretSource;
use crate::PullPolicy;
use crate::{AgentProfile, Installation, JobSpawner};

/// What a docker test needs, and the command that makes it.
const NEEDS: &str = "needs a Docker engine and the agentsmith-agent:test image: \
                     scripts/build-agent-image --tag agentsmith-agent:test";

/// The `docker` backend on the local engine. Every container the lab's spawners create
/// carries [`LAB_LABEL`] with the lab's mark and is removed when the lab is dropped,
/// pass or fail.
pub struct DockerLab {
    installation: String,
    gateway: String,
    image: String,
    mark: String,
}

impl DockerLab {
    /// Checks the engine and the image and finds the bridge's gateway; panics naming the
    /// command that provides what is missing.
    pub async fn new() -> Self {
        let docker = Docker::connect_with_local_defaults()
            .unwrap_or_else(|e| panic!("no Docker client ({e}): {NEEDS}"));
        let docker = docker
            .negotiate_version()
            .await
            .unwrap_or_else(|e| panic!("the Docker engine does not answer ({e}): {NEEDS}"));
        let image = agent_image();
        if let Err(e) = docker.inspect_image(&image).await {
            panic!("image {image} is missing ({e}): {NEEDS}");
        }
        let gateway = match std::env::var("AGENTSMITH_TEST_CALLBACK_HOST") {
            Ok(host) => host,
            Err(_) => bridge_gateway(&docker).await,
        };
        Self {
            installation: installation_name(),
            gateway,
            image,
            mark: testkit::temp::unique("docker"),
        }
    }

    /// The agent image.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The label filter (`key=value`) that finds every container of this lab.
    pub fn filter(&self) -> String {
        format!("{LAB_LABEL}={}", self.mark)
    }

    /// The settings of the lab's spawners: the default bridge, no pulls, limits of 256Mi,
    /// one CPU and 128 processes for profiles that set none, finished containers kept
    /// `time_to_live`.
    pub fn settings(&self, time_to_live: Duration) -> DockerSettings {
        DockerSettings {
            host: String::new(),
            tls: DockerTlsSettings {
                ca: String::new(),
                cert: String::new(),
                key: String::new(),
            },
            network: "bridge".into(),
            pull_policy: PullPolicy::Never,
            registry: RegistrySettings {
                server: String::new(),
                username: String::new(),
                password: SecretString::from(String::new()),
            },
            ttl_after_finished_secs: time_to_live.as_secs(),
            user: "10001:10001".into(),
            work_dir: "/work".into(),
            work_medium: WorkMedium::Tmpfs,
            extra_hosts: Vec::new(),
            labels: BTreeMap::from([
                (RUN_LABEL.to_string(), run_id()),
                (LAB_LABEL.to_string(), self.mark.clone()),
            ]),
            memory: Some("256Mi".parse().expect("a memory size")),
            cpus: Some("1".parse().expect("a CPU amount")),
            pids_limit: 128,
            request_timeout_secs: 120,
            ca_bundle: String::new(),
        }
    }

    /// An installation named `name` whose secrets come from `secrets`.
    pub fn installation_of(name: &str, secrets: SecretSource) -> Installation {
        Installation {
            name: name.to_string(),
            secrets,
            grace: crate::conformance::GRACE,
        }
    }
}

/// The default bridge's gateway: an address of this machine that containers reach.
async fn bridge_gateway(docker: &Docker) -> String {
    let bridge = docker
        .inspect_network("bridge", None)
        .await
        .unwrap_or_else(|e| panic!("the engine has no default bridge network ({e})"));
    let config = bridge
        .ipam
        .and_then(|i| i.config)
        .and_then(|c| c.into_iter().next())
        .expect("the bridge network has an address range");
    // Without an explicit gateway the engine gives the bridge the subnet's first address.
    config.gateway.filter(|g| !g.is_empty()).unwrap_or_else(|| {
        let subnet = config.subnet.expect("the bridge network has a subnet");
        let network: std::net::Ipv4Addr = subnet
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("the bridge subnet is IPv4");
        std::net::Ipv4Addr::from(u32::from(network) + 1).to_string()
    })
}

impl Drop for DockerLab {
    fn drop(&mut self) {
        // The CLI, not the engine client: Drop cannot await, and this runs on failures too.
        let Ok(out) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label={}", self.filter())])
            .output()
        else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
    }
}

impl Lab for DockerLab {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            runs_agents: true,
            enforces_memory: true,
            survives_restart: true,
            stop_margin: Duration::from_secs(10),
            patience: Duration::from_secs(60),
        }
    }

    fn installation(&self) -> &str {
        &self.installation
    }

    fn callback_host(&self) -> String {
        self.gateway.clone()
    }

    fn spawner(&self, installation: &str, time_to_live: Duration) -> Arc<dyn JobSpawner> {
        let installation = Self::installation_of(installation, SecretSource::default());
        Arc::new(DockerSpawner::new(
            self.settings(time_to_live),
            &installation,
        ))
    }

    fn profile(&self, script: &str) -> AgentProfile {
        sh_profile(script, Some(self.image.clone()))
    }
}
