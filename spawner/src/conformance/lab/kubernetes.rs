//! The lab of the `kubernetes` backend: the test cluster (`AGENTSMITH_TEST_KUBECONFIG`), a
//! namespace of the lab's own, and the agent image on the node, never pulled.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::{agent_image, installation_name, run_id, sh_profile, Capabilities, Lab};
use super::{LAB_LABEL, RUN_LABEL};
use crate::backend::kubernetes::{KubernetesSettings, KubernetesSpawner};
use crate::secrets::SecretSource;
use crate::PullPolicy;
use crate::{AgentProfile, Installation, JobSpawner};

/// What a kubernetes test needs, and the command that makes it.
const NEEDS: &str =
    "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG";

/// The `kubernetes` backend in a namespace of its own, deleted (with everything in it)
/// when the lab is dropped, pass or fail.
pub struct KubernetesLab {
    kubeconfig: PathBuf,
    namespace: String,
    installation: String,
    callback_host: String,
    image: String,
}

impl KubernetesLab {
    /// Creates the lab's namespace and waits for its default service account; panics
    /// naming the command that starts the cluster when there is none.
    pub async fn new() -> Self {
        let kubeconfig = std::env::var("AGENTSMITH_TEST_KUBECONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|_| panic!("AGENTSMITH_TEST_KUBECONFIG is not set: {NEEDS}"));
        let callback_host = std::env::var("AGENTSMITH_TEST_CALLBACK_HOST")
            .unwrap_or_else(|_| api_server_host(&kubeconfig));
        let lab = Self {
            namespace: testkit::temp::unique("agentsmith-conformance"),
            kubeconfig,
            installation: installation_name(),
            callback_host,
            image: agent_image(),
        };
        let client = lab.client().await;
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(lab.namespace.clone()),
                labels: Some(BTreeMap::from([(RUN_LABEL.to_string(), run_id())])),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {}: {e}: {NEEDS}", lab.namespace));
        // Pods of a namespace cannot be created before its default service account is.
        let accounts: Api<ServiceAccount> = Api::namespaced(client, &lab.namespace);
        let ready = testkit::wait_until(Duration::from_secs(60), || async {
            matches!(accounts.get_opt("default").await, Ok(Some(_)))
        })
        .await;
        assert!(
            ready,
            "namespace {} never got its default service account",
            lab.namespace
        );
        lab
    }

    /// A client of the test cluster.
    pub async fn client(&self) -> Client {
        client_of(&self.kubeconfig).await
    }

    /// The lab's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The agent image.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The settings of the lab's spawners: its namespace, images never pulled, limits of
    /// 256Mi and one CPU for profiles that set none, finished Jobs kept `time_to_live`.
    pub fn settings(&self, time_to_live: Duration) -> KubernetesSettings {
        KubernetesSettings {
            kubeconfig: self.kubeconfig.clone(),
            context: String::new(),
            namespace: self.namespace.clone(),
            service_account: String::new(),
            ttl_seconds_after_finished: time_to_live.as_secs(),
            image_pull_policy: PullPolicy::Never,
            image_pull_secrets: Vec::new(),
            secret_name: String::new(),
            memory: Some("256Mi".parse().expect("a memory size")),
            cpus: Some("1".parse().expect("a CPU amount")),
            cpu_request: Some("10m".parse().expect("a CPU amount")),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            run_as_user: 10001,
            run_as_group: 10001,
            labels: BTreeMap::from([(LAB_LABEL.to_string(), self.namespace.clone())]),
            annotations: BTreeMap::new(),
            env: BTreeMap::new(),
            pending_timeout_secs: 60,
            work_dir: "/work".into(),
            api_qps: 50,
            profiles: BTreeMap::new(),
            ca_bundle: Default::default(),
        }
    }

    /// An installation named `name`.
    pub fn installation_of(name: &str) -> Installation {
        Installation {
            name: name.to_string(),
            secrets: SecretSource::default(),
            grace: crate::conformance::GRACE,
        }
    }
}

/// The API server's host in the kubeconfig: the test cluster serves on the Docker bridge,
/// which pods reach this machine at.
fn api_server_host(kubeconfig: &std::path::Path) -> String {
    let text = std::fs::read_to_string(kubeconfig)
        .unwrap_or_else(|e| panic!("cannot read {} ({e}): {NEEDS}", kubeconfig.display()));
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .unwrap_or_else(|| panic!("{} names no server: {NEEDS}", kubeconfig.display()))
        .trim()
        .trim_matches('"');
    let authority = server.split("://").nth(1).unwrap_or(server);
    authority.split(':').next().unwrap_or(authority).to_string()
}

/// A client of the cluster `kubeconfig` names.
async fn client_of(kubeconfig: &std::path::Path) -> Client {
    let path = kubeconfig.display();
    let config = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("cannot read {path} ({e}): {NEEDS}"));
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot use {path} ({e}): {NEEDS}"));
    Client::try_from(config).unwrap_or_else(|e| panic!("no Kubernetes client ({e}): {NEEDS}"))
}

impl Drop for KubernetesLab {
    fn drop(&mut self) {
        let kubeconfig = self.kubeconfig.clone();
        let namespace = self.namespace.clone();
        // Drop cannot await: delete from a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the namespace's deletion");
            runtime.block_on(async {
                let namespaces: Api<Namespace> = Api::all(client_of(&kubeconfig).await);
                let _ = namespaces
                    .delete(&namespace, &DeleteParams::background())
                    .await;
            });
        })
        .join();
    }
}

impl Lab for KubernetesLab {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            runs_agents: true,
            enforces_memory: true,
            survives_restart: true,
            // Deleting the Job leaves its pod to the garbage collector, then the kubelet:
            // 2 s on an idle test cluster, up to 90 s measured while other tests' Jobs and
            // namespaces were being deleted.
            stop_margin: Duration::from_secs(100),
            patience: Duration::from_secs(120),
        }
    }

    fn installation(&self) -> &str {
        &self.installation
    }

    fn callback_host(&self) -> String {
        self.callback_host.clone()
    }

    fn spawner(&self, installation: &str, time_to_live: Duration) -> Arc<dyn JobSpawner> {
        Arc::new(KubernetesSpawner::new(
            self.settings(time_to_live),
            &Self::installation_of(installation),
        ))
    }

    fn profile(&self, script: &str) -> AgentProfile {
        sh_profile(script, Some(self.image.clone()))
    }
}
