//! The conformance suite against the `kubernetes` backend on the test cluster (each test in
//! a namespace of its own, deleted when it ends), then what only this backend does: the
//! Job and pod as the API server has them, and the reasons a pod that cannot run fails
//! with (unschedulable, a missing image, the Job's deadline); and a profile's pod shape
//! (volumes, secret files, an init container, a sidecar, a priority class) on the cluster.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use contract::{labels, OutputStream, RunOutcome, RunnerEvent};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use spawner::backend::kubernetes::{CaBundle, KubernetesSpawner};
use spawner::conformance::lab::{KubernetesLab, LAB_LABEL};
use spawner::conformance::{self, Lab, Trial, KEEP_FINISHED};
use spawner::{JobHandle, JobSpawner, WorkloadStatus};
use testkit::stand_in::{Answer, Script};

#[tokio::test]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG"]
async fn a_job_runs_to_its_end_and_reports_its_output_and_result() {
    let lab = KubernetesLab::new().await;
    conformance::a_job_runs_to_its_end_and_reports_its_output_and_result(&lab).await;
}

#[tokio::test]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG"]
async fn a_failing_agent_is_reported_with_its_exit_code_and_its_workload_ends() {
    let lab = KubernetesLab::new().await;
    conformance::a_failing_agent_is_reported_with_its_exit_code_and_its_workload_ends(&lab).await;
}

#[tokio::test]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG"]
async fn an_agent_over_its_memory_limit_is_oom_killed_where_limits_are_enforced() {
    let lab = KubernetesLab::new().await;
    conformance::an_agent_over_its_memory_limit_is_oom_killed_where_limits_are_enforced(&lab).await;
}

#[tokio::test]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG"]
async fn cancel_stops_a_running_agent_within_its_grace_period_and_is_idempotent() {
    let lab = KubernetesLab::new().await;
    conformance::cancel_stops_a_running_agent_within_its_grace_period_and_is_idempotent(&lab).await;
}

#[tokio::test]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG"]
async fn a_finished_workload_is_removed_after_its_time_to_live() {
    let lab = KubernetesLab::new().await;
    conformance::a_finished_workload_is_removed_after_its_time_to_live(&lab).await;
}

#[tokio::test]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG"]
async fn spawning_an_attempt_again_adopts_its_workload_which_runs_once() {
    let lab = KubernetesLab::new().await;
    conformance::spawning_an_attempt_again_adopts_its_workload_which_runs_once(&lab).await;
}

#[tokio::test]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG"]
async fn a_workload_no_dispatcher_owns_is_listed_and_removed() {
    let lab = KubernetesLab::new().await;
    conformance::a_workload_no_dispatcher_owns_is_listed_and_removed(&lab).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG"]
async fn twenty_attempts_spawned_five_at_a_time_each_run_exactly_once() {
    let lab = KubernetesLab::new().await;
    conformance::twenty_attempts_spawned_five_at_a_time_each_run_exactly_once(&lab).await;
}

// What only the kubernetes backend does.

#[tokio::test]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG"]
async fn a_job_runs_as_a_locked_down_kubernetes_job_with_its_limits_and_labels() {
    let lab = KubernetesLab::new().await;
    let trial = Trial::start(&lab).await;
    let job = trial.job(
        "echo \"working as $(id -u)\"; \
         if touch /root-write-test 2>/dev/null; then echo root-writable; else echo root-read-only; fi",
    );
    let handle = trial.spawn(&job).await;
    let (outcome, _) = trial.finished(&job.job_id).await;
    assert_eq!(outcome, RunOutcome::Exited { code: 0 });
    assert_eq!(
        trial.dispatcher.lines_of(&job.job_id, OutputStream::Stdout),
        ["working as 10001", "root-read-only"]
    );

    let client = lab.client().await;
    let k8s_job = Api::<Job>::namespaced(client.clone(), lab.namespace())
        .get(&handle.name)
        .await
        .unwrap();
    assert_eq!(k8s_job.metadata.uid, handle.id);
    let spec = k8s_job.spec.unwrap();
    assert_eq!(spec.backoff_limit, Some(0), "the dispatcher owns retries");
    assert_eq!(
        spec.ttl_seconds_after_finished,
        Some(KEEP_FINISHED.as_secs() as i32)
    );
    // The profile's time limit, the grace period and a minute's margin for the runner.
    assert_eq!(spec.active_deadline_seconds, Some(120 + 2 + 60));
    let job_labels = k8s_job.metadata.labels.unwrap();
    assert_eq!(job_labels[labels::MANAGED_BY], "agentsmith");
    assert_eq!(job_labels[labels::JOB_ID], job.job_id);
    assert_eq!(job_labels[labels::ATTEMPT], "1");
    assert_eq!(job_labels[labels::INSTALLATION], lab.installation());
    assert_eq!(job_labels[LAB_LABEL], lab.namespace());

    let pod = pod_of(client, lab.namespace(), &job.job_id).await;
    assert_eq!(
        pod.metadata.labels.unwrap()[labels::INSTALLATION],
        lab.installation()
    );
    let pod_spec = pod.spec.unwrap();
    assert_eq!(pod_spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod_spec.automount_service_account_token, Some(false));
    assert_eq!(pod_spec.enable_service_links, Some(false));
    // The grace period plus five seconds for the runner to report.
    assert_eq!(pod_spec.termination_grace_period_seconds, Some(2 + 5));
    let pod_security = pod_spec.security_context.unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(10001));
    assert_eq!(pod_security.fs_group, Some(10001));
    let container = &pod_spec.containers[0];
    assert_eq!(container.image_pull_policy.as_deref(), Some("Never"));
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.privileged, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(
        security.capabilities.unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(
        security.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("RuntimeDefault")
    );
    let resources = container.resources.clone().unwrap();
    let (limits, requests) = (resources.limits.unwrap(), resources.requests.unwrap());
    // The API server writes quantities in canonical form.
    assert_eq!(
        (limits["memory"].0.as_str(), limits["cpu"].0.as_str()),
        ("256Mi", "1")
    );
    assert_eq!(
        (requests["memory"].0.as_str(), requests["cpu"].0.as_str()),
        ("256Mi", "10m")
    );
}

/// The pod of `job_id`'s Job in `namespace` (kept with the Job until its TTL).
async fn pod_of(client: kube::Client, namespace: &str, job_id: &str) -> Pod {
    let selector = format!("{}={job_id}", labels::JOB_ID);
    Api::<Pod>::namespaced(client, namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .expect("the Job's pod is kept with it")
}

/// Waits until the workload has failed; its reason and whether it may be retried.
async fn failure(
    trial: &Trial<'_>,
    spawner: &dyn JobSpawner,
    handle: &JobHandle,
) -> (String, bool) {
    match trial
        .status_until(spawner, handle, "failed", |s| {
            matches!(s, WorkloadStatus::Failed { .. })
        })
        .await
    {
        WorkloadStatus::Failed { reason, retryable } => (reason, retryable),
        other => unreachable!("{other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG"]
async fn an_unschedulable_pod_fails_after_the_pending_timeout() {
    let lab = KubernetesLab::new().await;
    let trial = Trial::start(&lab).await;
    let mut settings = lab.settings(KEEP_FINISHED);
    settings.pending_timeout_secs = 4;
    settings.node_selector =
        BTreeMap::from([("agentsmith-test/no-such-node".to_string(), "x".to_string())]);
    let spawner = KubernetesSpawner::new(
        settings,
        &KubernetesLab::installation_of(lab.installation()),
    );
    let job = trial.job("echo never");
    let handle = spawner.spawn(&job).await.unwrap();
    let (reason, retryable) = failure(&trial, &spawner, &handle).await;
    assert!(
        reason.contains("unschedulable") && reason.contains("did not start within 4s"),
        "{reason}"
    );
    assert!(!retryable, "{reason}");
    assert!(trial.dispatcher.posts_of(&job.job_id).is_empty());
}

#[tokio::test]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG"]
async fn a_missing_image_with_pull_policy_never_fails_at_once_for_what_it_is() {
    let lab = KubernetesLab::new().await;
    let trial = Trial::start(&lab).await;
    let mut profile = lab.profile("true");
    profile.image = Some("agentsmith-test-no-such-image:1".into());
    let job = trial.job_with(profile);
    let handle = trial.spawn(&job).await;
    let asked = Instant::now();
    let (reason, retryable) = failure(&trial, &*trial.spawner, &handle).await;
    // Failed for what it is, not after the pending timeout (whose reason would say "did
    // not start within").
    assert!(reason.contains("ErrImageNeverPull"), "{reason}");
    assert!(!reason.contains("did not start within"), "{reason}");
    assert!(!retryable, "{reason}");
    let limit = Duration::from_secs(lab.settings(KEEP_FINISHED).pending_timeout_secs);
    assert!(
        asked.elapsed() < limit,
        "failed only after {:?}",
        asked.elapsed()
    );
}

#[tokio::test]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG"]
async fn a_runner_that_cannot_report_is_ended_by_the_jobs_deadline() {
    let lab = KubernetesLab::new().await;
    // Every post fails, so the runner keeps trying to deliver its events (for ten minutes)
    // after stopping its agent at the time limit: only the Job's deadline ends it.
    let trial = Trial::with(&lab, Script::always(Answer::Status(500)), KEEP_FINISHED).await;
    let mut profile = lab.profile("echo slow start; sleep 600");
    profile.timeout_secs = 1;
    let job = trial.job_with(profile);
    let handle = trial.spawn(&job).await;
    let (reason, retryable) = failure(&trial, &*trial.spawner, &handle).await;
    assert!(reason.contains("deadline exceeded"), "{reason}");
    assert!(!retryable, "{reason}");
    let events = trial.dispatcher.events_of(&job.job_id);
    assert_eq!(events.first(), Some(&RunnerEvent::Started), "it never ran");
}

/// Deletes a cluster-scoped PriorityClass when dropped, pass or fail, through a client of
/// its own (the test's runtime is not there to drive the test's client while it unwinds).
struct PriorityClassGuard(String);

impl Drop for PriorityClassGuard {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let path = std::env::var("AGENTSMITH_TEST_KUBECONFIG").ok()?;
                    let config = kube::config::Kubeconfig::read_from(path).ok()?;
                    let options = kube::config::KubeConfigOptions::default();
                    let config = kube::Config::from_custom_kubeconfig(config, &options)
                        .await
                        .ok()?;
                    let client = kube::Client::try_from(config).ok()?;
                    Api::<PriorityClass>::all(client)
                        .delete(&name, &DeleteParams::default())
                        .await
                        .ok()
                })
        })
        .join();
    }
}

/// What the shaped profile's pods name, made in the lab's namespace: the Secret `agent-files`
/// (`netrc`, `seed`), the ConfigMap `agent-ca` (`ca`'s certificate) and a PriorityClass of
/// the lab's name, deleted when the guard is dropped.
async fn shaped_profiles_objects(
    lab: &KubernetesLab,
    client: &kube::Client,
    ca: &testkit::tls::TestCa,
) -> (String, PriorityClassGuard) {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "agent-files"},
        "stringData": {"netrc": "machine git.example.com login agent password s3cret",
                       "seed": "seeded by the init container"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), lab.namespace())
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let config_map: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "agent-ca"},
        "data": {"ca.crt": ca.ca_pem()}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), lab.namespace())
        .create(&PostParams::default(), &config_map)
        .await
        .unwrap();
    let priority = lab.namespace().to_string();
    let class: PriorityClass = serde_json::from_value(serde_json::json!({
        "metadata": {"name": priority, "labels": {LAB_LABEL: lab.namespace()}},
        "value": 4242,
        "description": "agentsmith conformance test"
    }))
    .unwrap();
    Api::<PriorityClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    (priority.clone(), PriorityClassGuard(priority))
}

#[tokio::test]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG"]
async fn a_profiles_shape_runs_with_its_secret_volume_init_container_sidecar_priority_and_ca() {
    let lab = KubernetesLab::new().await;
    let trial = Trial::start(&lab).await;
    let client = lab.client().await;
    let ca = testkit::tls::TestCa::new("cluster-ca");
    let (priority, _class) = shaped_profiles_objects(&lab, &client, &ca).await;

    let mut settings = lab.settings(KEEP_FINISHED);
    settings.secret_name = "agent-files".into();
    settings.ca_bundle = CaBundle {
        config_map: "agent-ca".into(),
        key: "ca.crt".into(),
    };
    let shape = serde_json::json!({
        "volumes": [{"name": "seed", "secret": {"secretName": "agent-files", "items": [{"key": "seed", "path": "seed"}]}},
                    {"name": "shared", "emptyDir": {}}],
        "volume_mounts": [{"name": "shared", "mountPath": "/shared"}],
        "secret_files": {"/secrets/netrc": "netrc"},
        "init_containers": [{"name": "prepare", "command": ["sh", "-c", "cp /seed/seed /shared/from-init"],
                             "volumeMounts": [{"name": "seed", "mountPath": "/seed"},
                                              {"name": "shared", "mountPath": "/shared"}]}],
        // It exits only when the runner marks the end: the Job completes with the agent.
        "sidecars": [{"name": "helper", "command": ["sh", "-c",
            "echo sidecar-up > /shared/sidecar; while [ ! -e /var/run/agentsmith/ended ]; do sleep 0.2; done"],
            "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}],
        "priority_class_name": priority,
        "labels": {"agentsmith-test/shape": "yes"}
    });
    let profile = lab.profile(
        "cat /shared/from-init; echo; cat /secrets/netrc; echo; stat -c %a /secrets/netrc; \
         for i in $(seq 50); do [ -e /shared/sidecar ] && break; sleep 0.2; done; cat /shared/sidecar; \
         echo \"node: $NODE_EXTRA_CA_CERTS\"; \
         [ \"$(tail -n 2 \"$SSL_CERT_FILE\")\" = \"$(tail -n 2 \"$NODE_EXTRA_CA_CERTS\")\" ] && echo the bundle ends with the extra CA",
    );
    settings.profiles =
        BTreeMap::from([(profile.name.clone(), serde_json::from_value(shape).unwrap())]);
    let spawner = KubernetesSpawner::new(
        settings,
        &KubernetesLab::installation_of(lab.installation()),
    );
    let job = trial.job_with(profile);
    let handle = spawner.spawn(&job).await.unwrap();
    let (outcome, _) = trial.finished(&job.job_id).await;
    assert_eq!(outcome, RunOutcome::Exited { code: 0 });
    assert_eq!(
        trial.dispatcher.lines_of(&job.job_id, OutputStream::Stdout),
        [
            "seeded by the init container",
            "machine git.example.com login agent password s3cret",
            // 0400, with the group read fsGroup adds.
            "440",
            "sidecar-up",
            "node: /etc/agentsmith/ca/extra.crt",
            "the bundle ends with the extra CA"
        ]
    );

    // The sidecar exits once the runner has marked the end, so the Job completes (without
    // the mark it would run to its deadline, three minutes on).
    let jobs = Api::<Job>::namespaced(client.clone(), lab.namespace());
    let complete = testkit::wait_until(Duration::from_secs(60), || async {
        let job = jobs.get(&handle.name).await.unwrap();
        job.status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
    })
    .await;
    assert!(complete, "the Job did not complete after its agent ended");

    let pod = pod_of(client, lab.namespace(), &job.job_id).await;
    assert_eq!(pod.metadata.labels.unwrap()["agentsmith-test/shape"], "yes");
    let spec = pod.spec.unwrap();
    assert_eq!(spec.priority_class_name.as_deref(), Some(priority.as_str()));
    assert_eq!(spec.priority, Some(4242));
    let init = &spec.init_containers.unwrap()[0];
    assert_eq!(
        init.image.as_deref(),
        Some(lab.image()),
        "the agent's image"
    );
    let security = init.security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let status = pod.status.unwrap();
    let exit_of = |statuses: Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>,
                   name: &str| {
        statuses
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.name == name)
            .and_then(|c| c.state?.terminated)
            .map(|t| t.exit_code)
    };
    assert_eq!(exit_of(status.init_container_statuses, "prepare"), Some(0));
    assert_eq!(
        exit_of(status.container_statuses.clone(), "helper"),
        Some(0)
    );
    assert_eq!(exit_of(status.container_statuses, "agent"), Some(0));
}
