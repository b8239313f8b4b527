//! The dispatcher with the kubernetes spawner, for what only a whole dispatcher does with
//! Jobs: an attempt whose Job was deleted by hand is noticed and retried. What the backend
//! itself promises (runs, exit codes, OOM kills, cancel, time to live, adoption, orphans
//! listed and removed, concurrent spawns, the Job and pod it creates, the reasons a pod
//! fails with) is the conformance suite's: `spawner/tests/conformance_kubernetes.rs`.
//!
//! Jobs run the locally built agent image (never pulled) in a namespace of the test's own
//! ([`KubernetesLab`], deleted when the test ends), and their runners call back to a
//! dispatcher bound to the address pods reach this machine at.

use std::collections::BTreeMap;
use std::time::Duration;

use agentsmith::settings::{AgentSettings, Settings};
use contract::labels;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use queue::JobState;
use spawner::conformance::lab::{agent_image, KubernetesLab};
use spawner::conformance::{Lab, KEEP_FINISHED};
use spawner::SpawnerKind;

use crate::helpers::{random_prefix, sh_agent, start, test_settings};

const LONG: Duration = Duration::from_secs(120);

/// Settings for a kubernetes test: bound where pods reach it, the lab's installation and
/// namespace, one agent whose first attempt runs until it is stopped.
fn k8s_settings(lab: &KubernetesLab) -> Settings {
    let mut s = test_settings(&random_prefix());
    s.server.bind = format!("{}:0", lab.callback_host());
    s.server.installation = lab.installation().to_string();
    s.queue.start_timeout_secs = 60;
    s.spawner.kind = SpawnerKind::Kubernetes;
    s.spawner.reconcile_secs = 1;
    s.spawner.kubernetes = lab.settings(KEEP_FINISHED);
    s.agents = BTreeMap::from([(
        // The first attempt runs until it is stopped; later ones end at once. Its time
        // limit is longer than the test waits, so only the Job's removal can end it.
        "lose".to_string(),
        AgentSettings {
            image: agent_image(),
            timeout_secs: 600,
            ..sh_agent(
                "echo attempt $AGENTSMITH_ATTEMPT; \
                 if [ \"$AGENTSMITH_ATTEMPT\" = 1 ]; then sleep 600; fi; echo done",
            )
        },
    )]);
    s
}

#[tokio::test]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG"]
async fn a_job_deleted_by_hand_is_retried_with_the_reason() {
    let lab = KubernetesLab::new().await;
    let app = start(k8s_settings(&lab), None).await;
    let client = lab.client().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), lab.namespace());
    let id = app.submit("lose", "lose my Job").await;
    let job = app
        .wait_for(&id, "running", LONG, |j| j.state == JobState::Running)
        .await;
    jobs.delete(&job.handle.unwrap().name, &DeleteParams::background())
        .await
        .unwrap();
    // Its pod too, as the garbage collector would: under load the test cluster's collector
    // has taken longer than the agent's time limit, which tests the collector, not us.
    let pods: Api<Pod> = Api::namespaced(client, lab.namespace());
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&format!("{}={id}", labels::JOB_ID)),
    )
    .await
    .unwrap();
    let job = app.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert!(job.attempt >= 2, "the lost attempt was retried");
    let reasons = app.state_reasons(&id).await;
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("workload not found") || r.contains("runner")),
        "{reasons:?}"
    );
    app.stop().await;
}
