//! The kubernetes spawner against a real cluster: `AGENTSMITH_TEST_KUBECONFIG` names its
//! kubeconfig (scripts/test starts a single-node v1.20.2 cluster with
//! scripts/k8s-testenv/start.sh; any cluster whose nodes have the image works). Jobs run
//! the locally built agent image (`AGENTSMITH_TEST_DOCKER_IMAGE`, default
//! `agentsmith-agent:test`) with `imagePullPolicy: Never`, and their runners call back to
//! a dispatcher bound to the Docker bridge address. Each test has a namespace and an
//! installation name of its own; the namespace is deleted when the test ends.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agentsmith::settings::{AgentSettings, Settings};
use contract::labels;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use queue::{JobEvent, JobState};
use serde_json::json;
use spawner::{PullPolicy, SpawnerKind};

use crate::helpers::{random_prefix, sh_agent, start, test_settings, wait_until, TestApp};

const LONG: Duration = Duration::from_secs(120);

fn kubeconfig() -> PathBuf {
    std::env::var("AGENTSMITH_TEST_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            panic!(
                "AGENTSMITH_TEST_KUBECONFIG is not set: run scripts/test (it starts a local cluster), \
                 or point it at a cluster's kubeconfig (see the README)"
            )
        })
}

fn image() -> String {
    std::env::var("AGENTSMITH_TEST_DOCKER_IMAGE").unwrap_or_else(|_| "agentsmith-agent:test".into())
}

/// A client of the test cluster (one per test: each test has its own runtime).
async fn client() -> Client {
    let path = kubeconfig();
    let config = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .expect("the kubeconfig is usable");
    Client::try_from(config).expect("a client can be made")
}

/// The address pods reach this machine at: the API server's host in the kubeconfig
/// (the test cluster serves on the Docker bridge), else `AGENTSMITH_TEST_CALLBACK_HOST`.
fn callback_host() -> String {
    if let Ok(host) = std::env::var("AGENTSMITH_TEST_CALLBACK_HOST") {
        return host;
    }
    let text = std::fs::read_to_string(kubeconfig()).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .expect("the kubeconfig names a server")
        .trim()
        .trim_matches('"')
        .to_string();
    let host = server
        .trim_start_matches("https://")
        .split(':')
        .next()
        .unwrap()
        .to_string();
    host
}

/// A namespace of one test, deleted when dropped.
struct TestNamespace {
    name: String,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await: delete from a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let namespaces: Api<Namespace> = Api::all(client().await);
                let _ = namespaces.delete(&name, &DeleteParams::background()).await;
            });
        })
        .join();
    }
}

async fn namespace() -> TestNamespace {
    let name = format!("agentsmith-test-{:010x}", rand::random::<u64>() >> 24);
    let client = client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(BTreeMap::from([(
                        "agentsmith-test/run".to_string(),
                        std::env::var("AGENTSMITH_TEST_RUN").unwrap_or_else(|_| "manual".into()),
                    )])),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("a test namespace can be created");
    let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
    assert!(
        wait_until(LONG, || async {
            accounts.get_opt("default").await.ok().flatten().is_some()
        })
        .await,
        "the namespace's default service account never appeared"
    );
    TestNamespace { name }
}

fn pod_agent(script: &str) -> AgentSettings {
    AgentSettings {
        image: image(),
        ..sh_agent(script)
    }
}

fn k8s_settings(ns: &str) -> Settings {
    let mut s = test_settings(&random_prefix());
    s.server.bind = format!("{}:0", callback_host());
    s.server.installation = format!("t{:012x}", rand::random::<u64>() >> 16);
    s.queue.start_timeout_secs = 60;
    s.spawner.kind = SpawnerKind::Kubernetes;
    s.spawner.reconcile_secs = 1;
    let k = &mut s.spawner.kubernetes;
    k.kubeconfig = kubeconfig();
    k.namespace = ns.to_string();
    k.image_pull_policy = PullPolicy::Never;
    k.memory = Some("256Mi".parse().unwrap());
    k.cpus = Some("1".parse().unwrap());
    k.cpu_request = Some("10m".parse().unwrap());
    k.pending_timeout_secs = 20;
    s.agents = BTreeMap::from([
        (
            "ok".to_string(),
            pod_agent(
                "echo \"working on $AGENTSMITH_TASK as $(id -u)\"; \
                 if touch /root-write-test 2>/dev/null; then echo root-writable; else echo root-read-only; fi; \
                 printf '{\"summary\":\"fixed %s\"}' \"$AGENTSMITH_TASK\" > \"$AGENTSMITH_RESULT_FILE\"",
            ),
        ),
        ("fail".to_string(), pod_agent("echo about to fail; exit 3")),
        ("sleep".to_string(), pod_agent("echo sleeping; sleep 5; echo woke")),
        (
            // The first attempt runs until it is stopped; later ones end at once. Its time
            // limit is longer than the test waits, so only the Job's removal can end it.
            "lose".to_string(),
            AgentSettings {
                timeout_secs: 600,
                ..pod_agent("echo attempt $AGENTSMITH_ATTEMPT; if [ \"$AGENTSMITH_ATTEMPT\" = 1 ]; then sleep 600; fi; echo done")
            },
        ),
        ("short".to_string(), pod_agent("echo short start; sleep 2; echo short done")),
        (
            "hog".to_string(),
            AgentSettings {
                memory: Some("48Mi".parse().unwrap()),
                ..pod_agent("echo hogging; exec dd if=/dev/zero of=/dev/null bs=160M count=1")
            },
        ),
        (
            "slow".to_string(),
            AgentSettings {
                timeout_secs: 3,
                ..pod_agent("echo slow start; sleep 60")
            },
        ),
        (
            "stubborn".to_string(),
            pod_agent("trap 'echo got TERM; exit 0' TERM; echo waiting; while true; do sleep 0.2; done"),
        ),
        (
            "ghost".to_string(),
            AgentSettings {
                image: "agentsmith-test-no-such-image:1".into(),
                ..sh_agent("true")
            },
        ),
    ]);
    s
}

async fn k8s_app(customize: impl FnOnce(&mut Settings)) -> (TestApp, TestNamespace, Client) {
    let ns = namespace().await;
    let mut settings = k8s_settings(&ns.name);
    customize(&mut settings);
    let app = start(settings, None).await;
    (app, ns, client().await)
}

#[tokio::test]
async fn a_job_runs_as_a_locked_down_kubernetes_job_and_succeeds_with_its_logs() {
    let (app, ns, client) = k8s_app(|_| {}).await;
    let id = app.submit("ok", "fix PROJ-1").await;
    let job = app.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(job.attempt, 1);
    let lines = app.log_lines(&id).await;
    for expected in ["working on fix PROJ-1 as 10001", "root-read-only"] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected:?} not in {lines:?}"
        );
    }
    assert_eq!(
        job.result.and_then(|r| r.summary).as_deref(),
        Some("fixed fix PROJ-1")
    );
    let handle = job.handle.expect("the job records its workload");
    assert_eq!(handle.backend, "kubernetes");

    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let k8s_job = jobs.get(&handle.name).await.unwrap();
    let spec = k8s_job.spec.unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.ttl_seconds_after_finished, Some(300));
    assert!(spec.active_deadline_seconds.unwrap() > 60);
    let job_labels = k8s_job.metadata.labels.unwrap();
    assert_eq!(job_labels[labels::MANAGED_BY], "agentsmith");
    assert_eq!(job_labels[labels::JOB_ID], id);
    assert_eq!(job_labels[labels::ATTEMPT], "1");

    // The security context, as the pod that ran has it.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let pod = pods
        .list(&ListParams::default().labels(&format!("{}={id}", labels::JOB_ID)))
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .expect("the Job's pod is kept until its TTL");
    let pod_spec = pod.spec.unwrap();
    assert_eq!(pod_spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod_spec.automount_service_account_token, Some(false));
    let pod_security = pod_spec.security_context.unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(10001));
    let container = &pod_spec.containers[0];
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(
        security.capabilities.unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(
        security.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("RuntimeDefault")
    );
    let limits = container.resources.clone().unwrap().limits.unwrap();
    assert_eq!(limits["memory"].0, "256Mi");
    // The API server writes quantities in canonical form.
    assert_eq!(limits["cpu"].0, "1");
    assert_eq!(
        pod.metadata.labels.unwrap()[labels::INSTALLATION],
        app.ctx.settings.server.installation
    );

    // The Pod log API has the output too while the pod exists (once the kubelet has
    // reported the container: until then the API server refuses, and that is retried).
    let mut lines: Vec<String> = Vec::new();
    let deadline = Instant::now() + LONG;
    let mut found = false;
    while !found && Instant::now() < deadline {
        match app.ctx.spawner.logs(&handle, false).await {
            Ok(stream) => {
                lines = futures::StreamExt::collect::<Vec<_>>(stream)
                    .await
                    .into_iter()
                    .filter_map(|l| l.ok().map(|l| l.line))
                    .collect();
                found = lines.iter().any(|l| l.contains("working on fix PROJ-1"));
            }
            Err(e) => assert!(e.is_retryable(), "{e}"),
        }
        if !found {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        found,
        "the pod's log never showed the agent's line: {lines:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_failing_agent_or_a_memory_hog_fails_the_job_with_the_reason() {
    let (app, _ns, _client) = k8s_app(|_| {}).await;
    let fail = app.submit("fail", "break").await;
    let hog = app.submit("hog", "eat memory").await;
    let job = app.wait_for_end(&fail, LONG).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert_eq!(job.exit_code, Some(3));
    assert_eq!(job.attempt, 1);
    let job = app.wait_for_end(&hog, LONG).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let reason = job.reason.unwrap_or_default();
    assert!(reason.contains("OOM-killed"), "{reason}");
    app.stop().await;
}

#[tokio::test]
async fn a_missing_image_fails_fast_and_the_timeout_ends_timed_out() {
    let (app, _ns, _client) = k8s_app(|_| {}).await;
    let ghost = app.submit("ghost", "run nothing").await;
    let slow = app.submit("slow", "take too long").await;
    let job = app.wait_for_end(&ghost, LONG).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert_eq!(job.attempt, 1, "a missing image is not retried");
    let reason = job.reason.unwrap_or_default();
    assert!(reason.contains("ErrImageNeverPull"), "{reason}");
    // Failed at once for what it is, not after the pending timeout (whose reason would say
    // "did not start within").
    assert!(!reason.contains("did not start within"), "{reason}");
    let job = app.wait_for_end(&slow, LONG).await;
    assert_eq!(job.state, JobState::TimedOut, "{job:#?}");
    app.stop().await;
}

#[tokio::test]
async fn an_unschedulable_pod_fails_after_the_pending_timeout() {
    let (app, _ns, _client) = k8s_app(|s| {
        s.spawner.kubernetes.pending_timeout_secs = 4;
        s.spawner.kubernetes.node_selector =
            BTreeMap::from([("agentsmith-test/no-such-node".to_string(), "x".to_string())]);
    })
    .await;
    let id = app.submit("ok", "go nowhere").await;
    let job = app.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let reason = job.reason.unwrap_or_default();
    assert!(reason.contains("unschedulable"), "{reason}");
    app.stop().await;
}

#[tokio::test]
async fn cancel_removes_the_job_and_its_pod() {
    let (app, ns, client) = k8s_app(|_| {}).await;
    let id = app.submit("stubborn", "wait forever").await;
    app.wait_for(&id, "running", LONG, |j| j.state == JobState::Running)
        .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    // The pod's grace is the job's (2 s) plus 5 s for the runner to report: deleting the Job
    // gives the agent SIGTERM, then SIGKILL after that.
    let pod = pods
        .list(&ListParams::default().labels(&format!("{}={id}", labels::JOB_ID)))
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .expect("the running job has a pod");
    assert_eq!(pod.spec.unwrap().termination_grace_period_seconds, Some(7));
    let cancelled = Instant::now();
    assert_eq!(app.act(&id, "cancel").await.status(), 200);
    let job = app.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Cancelled);
    let name = job.handle.unwrap().name;
    let gone = wait_until(LONG, || async {
        jobs.get_opt(&name).await.unwrap().is_none()
            && pods
                .list(&ListParams::default().labels(&format!("{}={id}", labels::JOB_ID)))
                .await
                .unwrap()
                .items
                .is_empty()
    })
    .await;
    // (How long the pod takes to go is the kubelet's business: 1.20 confirms a deleted
    // pod's end 10-30 s later on this machine, so no wall-clock bound is asserted.)
    let took = cancelled.elapsed();
    assert!(gone, "the Job or its pod is still there after {took:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_finished_job_is_removed_by_its_ttl() {
    let (app, ns, client) = k8s_app(|s| s.spawner.kubernetes.ttl_seconds_after_finished = 3).await;
    let id = app.submit("short", "be brief").await;
    let job = app.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let name = job.handle.unwrap().name;
    assert!(
        wait_until(LONG, || async {
            jobs.get_opt(&name).await.unwrap().is_none()
        })
        .await,
        "the finished Job outlived its TTL"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_restarted_dispatcher_adopts_the_running_job() {
    let (first, _ns, _client) = k8s_app(|_| {}).await;
    let id = first.submit("sleep", "outlive the dispatcher").await;
    first
        .wait_for(&id, "running", LONG, |j| j.state == JobState::Running)
        .await;
    let mut settings = first.ctx.settings.clone();
    settings.server.bind = first.address.trim_start_matches("http://").to_string();
    first.stop().await;
    let second = start(settings, None).await;
    let job = second.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(job.attempt, 1, "the Job was adopted, not run again");
    assert!(second.log_lines(&id).await.contains(&"woke".to_string()));
    second.stop().await;
}

#[tokio::test]
async fn orphans_are_deleted_and_a_job_deleted_by_hand_is_retried() {
    let (app, ns, client) = k8s_app(|_| {}).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    // An orphan: our labels, no job record.
    let installation = app.ctx.settings.server.installation.clone();
    let orphan: Job = serde_json::from_value(json!({
        "metadata": {"name": "agentsmith-orphan-1", "labels": {
            labels::MANAGED_BY: "agentsmith", labels::JOB_ID: "orphan",
            labels::ATTEMPT: "1", labels::INSTALLATION: installation}},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "agent", "image": image(), "imagePullPolicy": "Never",
                "command": ["sleep", "300"]}]}}}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &orphan).await.unwrap();
    assert!(
        wait_until(LONG, || async {
            jobs.get_opt("agentsmith-orphan-1").await.unwrap().is_none()
        })
        .await,
        "the orphan Job was not deleted"
    );

    let id = app.submit("lose", "lose my Job").await;
    let job = app
        .wait_for(&id, "running", LONG, |j| j.state == JobState::Running)
        .await;
    jobs.delete(&job.handle.unwrap().name, &DeleteParams::background())
        .await
        .unwrap();
    // Its pod too, as the garbage collector would: under load the test cluster's collector
    // has taken longer than the agent's time limit, which tests the collector, not us.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&format!("{}={id}", labels::JOB_ID)),
    )
    .await
    .unwrap();
    let job = app.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert!(job.attempt >= 2, "the lost attempt was retried");
    let reasons: Vec<String> = app
        .events(&id)
        .await
        .into_iter()
        .filter_map(|(_, e)| match e {
            JobEvent::State { reason, .. } => reason,
            _ => None,
        })
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("workload not found") || r.contains("runner")),
        "{reasons:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn twenty_jobs_never_run_more_than_five_kubernetes_jobs_at_once() {
    let (app, ns, client) = k8s_app(|s| s.queue.max_concurrent_jobs = 5).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let (status, body) = app
            .post_job(json!({"agent": "short", "task": format!("job {i}")}))
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut created = 0;
    loop {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
        created = created.max(jobs.list(&ListParams::default()).await.unwrap().items.len());
        let mut done = 0;
        for id in &ids {
            if app.job(id).await.state.is_terminal() {
                done += 1;
            }
        }
        if done == ids.len() {
            break;
        }
        assert!(Instant::now() < deadline, "only {done} of 20 jobs ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // When each agent ran, from its own first and last lines (the Jobs' status conditions
    // lag the pods by seconds, so counting unfinished Jobs would count finished agents).
    let mut edges = Vec::new();
    let mut attempts = Vec::new();
    for id in &ids {
        let job = app.job(id).await;
        assert_eq!(job.state, JobState::Succeeded);
        attempts.push(job.attempt);
        let lines: Vec<(String, i64)> = app
            .events(id)
            .await
            .into_iter()
            .filter_map(|(_, e)| match e {
                JobEvent::Log {
                    line, at, attempt, ..
                } if attempt == job.attempt => Some((line, at)),
                _ => None,
            })
            .collect();
        let at = |text: &str| {
            lines
                .iter()
                .find(|(l, _)| l == text)
                .map(|(_, at)| *at)
                .unwrap_or_else(|| panic!("{text:?} missing from {lines:?}"))
        };
        edges.push((at("short start"), 1));
        edges.push((at("short done"), -1));
    }
    edges.sort();
    let timeline = format!("{edges:?}, attempts {attempts:?}");
    let (mut now, mut most) = (0, 0);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    assert_eq!(created, 20, "every job ran as a Job of its own");
    assert!(most <= 5, "{most} agents ran at once: {timeline}");
    assert!(most >= 2, "the agents never overlapped ({most} at once)");
    app.stop().await;
}
