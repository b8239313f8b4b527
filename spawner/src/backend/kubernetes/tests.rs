//! Request shapes and error handling against a mock API server, for what a real
//! cluster cannot be made to do on demand (429 and 5xx answers).

use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Request, Response, StatusCode};
use kube::client::Body;

use super::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

use contract::Intent;
use k8s_openapi::api::core::v1::Container;

use crate::quantity::{Cpus, Memory};
use crate::secrets::SecretSource;
use crate::settings::pull_policy::PullPolicy;
use crate::AgentProfile;

fn settings() -> KubernetesSettings {
    KubernetesSettings {
        kubeconfig: PathBuf::new(),
        context: String::new(),
        namespace: "agents".into(),
        service_account: "agent-runner".into(),
        ttl_seconds_after_finished: 300,
        image_pull_policy: PullPolicy::IfNotPresent,
        image_pull_secrets: vec![],
        secret_name: "agent-secrets".into(),
        memory: Some(Memory(1 << 30)),
        cpus: Some(Cpus(2000)),
        cpu_request: Some(Cpus(100)),
        node_selector: BTreeMap::new(),
        tolerations: vec![],
        affinity: None,
        run_as_user: 10001,
        run_as_group: 10001,
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        env: BTreeMap::new(),
        pending_timeout_secs: 600,
        work_dir: "/work".into(),
        api_qps: 1000,
        profiles: BTreeMap::new(),
        ca_bundle: CaBundle::default(),
    }
}

fn installation() -> Installation {
    Installation {
        name: "test".into(),
        secrets: SecretSource::default(),
        grace: Duration::from_secs(10),
    }
}

fn backend(client: Client) -> KubernetesSpawner {
    KubernetesSpawner::with_client(settings(), &installation(), client, "agents")
}

/// 2 GiB of disk; the memory limit is the settings'.
fn spawner_resources() -> crate::Resources {
    crate::Resources {
        disk_bytes: Some(2 << 30),
        ..crate::Resources::default()
    }
}

fn spec() -> JobSpec {
    JobSpec {
        job_id: "abc123".into(),
        attempt: 2,
        intent: Intent {
            task: "fix PROJ-1".into(),
            ..Intent::default()
        },
        profile: AgentProfile {
            name: "claude".into(),
            image: Some("agent:1".into()),
            command: vec!["sh".into(), "-c".into(), "true".into()],
            secret_env: BTreeMap::from([("GITHUB_TOKEN".into(), "github_token".into())]),
            timeout_secs: 600,
            resources: spawner_resources(),
            ..AgentProfile::default()
        },
        callback_url: "http://dispatcher/internal/jobs/abc123/events".into(),
        credential: "one-time-credential-4242".into(),
        heartbeat_secs: 5,
        grace_secs: 10,
    }
}

fn status(code: u16, reason: &str) -> Response<Body> {
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure",
        "message": format!("mock says {reason}"), "reason": reason, "code": code
    });
    Response::builder()
        .status(code)
        .body(Body::from(body.to_string().into_bytes()))
        .unwrap()
}

/// The answer of the mock API server to a Job create with this status code.
fn create_answer(code: u16) -> Response<Body> {
    match code {
        201 => created(),
        409 => status(409, "AlreadyExists"),
        422 => status(422, "Invalid"),
        429 => status(429, "TooManyRequests"),
        503 => status(503, "ServiceUnavailable"),
        other => status(other, "InternalError"),
    }
}

type Bodies = Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// A mock API server: list and watch requests get empty answers; each Job create gets
/// the answer for the next of `creates` (the last one repeats).
fn mock(creates: Vec<u16>) -> (Client, Arc<AtomicUsize>, Bodies) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let posts = Arc::new(AtomicUsize::new(0));
    let bodies = Bodies::default();
    let (counter, seen) = (Arc::clone(&posts), Arc::clone(&bodies));
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let path = request.uri().path().to_string();
            let response = if path.contains("/secrets") {
                // The attempt's credential Secret: created (POST), then handed to its Job
                // (PATCH); both recorded with the Job bodies, marked by their path.
                let method = request.method().to_string();
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                seen.lock()
                    .unwrap()
                    .push(serde_json::json!({"secret": method, "path": path, "body": body}));
                let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "agentsmith-abc123-2-credential", "namespace": "agents"}});
                let code = if method == "POST" { 201 } else { 200 };
                Response::builder()
                    .status(code)
                    .body(Body::from(secret.to_string().into_bytes()))
                    .unwrap()
            } else if request.method() == http::Method::POST {
                assert_eq!(path, "/apis/batch/v1/namespaces/agents/jobs");
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let bytes = request.into_body().collect_bytes().await.unwrap();
                seen.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&bytes).unwrap());
                create_answer(creates[n.min(creates.len() - 1)])
            } else if request
                .uri()
                .query()
                .is_some_and(|q| q.contains("watch=true"))
            {
                Response::builder().status(200).body(Body::empty()).unwrap()
            } else if path.ends_with("/jobs/agentsmith-abc123-2") {
                let job = serde_json::json!({"apiVersion": "batch/v1", "kind": "Job",
                    "metadata": {"name": "agentsmith-abc123-2", "namespace": "agents", "uid": "uid-existing"}});
                Response::builder()
                    .status(200)
                    .body(Body::from(job.to_string().into_bytes()))
                    .unwrap()
            } else {
                let kind = if path.contains("/pods") {
                    "PodList"
                } else {
                    "JobList"
                };
                let list = serde_json::json!({"apiVersion": "v1", "kind": kind,
                    "metadata": {"resourceVersion": "1"}, "items": []});
                Response::builder()
                    .status(200)
                    .body(Body::from(list.to_string().into_bytes()))
                    .unwrap()
            };
            send.send_response(response);
        }
    });
    (Client::new(service, "agents"), posts, bodies)
}

fn created() -> Response<Body> {
    let job = serde_json::json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "agentsmith-abc123-2", "namespace": "agents", "uid": "uid-new"}});
    Response::builder()
        .status(StatusCode::CREATED)
        .body(Body::from(job.to_string().into_bytes()))
        .unwrap()
}

#[tokio::test]
async fn throttled_and_failing_creates_are_retried_and_the_request_has_its_shape() {
    let (client, posts, bodies) = mock(vec![429, 500, 503, 201]);
    let spawner = backend(client);
    let handle = spawner.spawn(&spec()).await.unwrap();
    assert_eq!(handle.name, "agentsmith-abc123-2");
    assert_eq!(handle.id.as_deref(), Some("uid-new"));
    assert_eq!(posts.load(Ordering::SeqCst), 4);
    let bodies = bodies.lock().unwrap().clone();
    let (secrets, jobs): (Vec<_>, Vec<_>) =
        bodies.into_iter().partition(|b| b.get("secret").is_some());
    let body = jobs[0].clone();
    assert_eq!(body["spec"]["backoffLimit"], 0);
    assert_eq!(body["spec"]["ttlSecondsAfterFinished"], 300);
    assert_eq!(body["spec"]["template"]["spec"]["restartPolicy"], "Never");
    assert_eq!(
        body["spec"]["template"]["spec"]["serviceAccountName"],
        "agent-runner"
    );
    assert_eq!(
        body["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );
    let container = &body["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"]["limits"]["memory"], "1Gi");
    let secret = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "GITHUB_TOKEN")
        .unwrap();
    assert_eq!(secret["valueFrom"]["secretKeyRef"]["name"], "agent-secrets");
    assert_eq!(secret["valueFrom"]["secretKeyRef"]["key"], "github_token");
    assert!(secret.get("value").is_none());

    // The one-time credential: in a Secret of the attempt's own, created before the Job
    // and then owned by it; the Job refers to it and never holds it.
    let credential = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == contract::env::JOB_CREDENTIAL)
        .unwrap();
    assert!(credential.get("value").is_none(), "{credential}");
    let reference = &credential["valueFrom"]["secretKeyRef"];
    assert_eq!(reference["name"], "agentsmith-abc123-2-credential");
    assert!(
        !body.to_string().contains("one-time-credential-4242"),
        "the Job holds the credential"
    );
    assert_eq!(secrets[0]["secret"], "POST");
    assert_eq!(
        secrets[0]["body"]["stringData"][reference["key"].as_str().unwrap()],
        "one-time-credential-4242"
    );
    assert_eq!(
        secrets[0]["body"]["metadata"]["labels"]["agentsmith.io/job-id"],
        "abc123"
    );
    let last = secrets.last().unwrap();
    assert_eq!(last["secret"], "PATCH");
    let owner = &last["body"]["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Job");
    assert_eq!(owner["name"], "agentsmith-abc123-2");
    assert_eq!(owner["uid"], "uid-new");
    // Disk: the pod's ephemeral storage and each emptyDir are bounded.
    assert_eq!(container["resources"]["limits"]["ephemeral-storage"], "2Gi");
    for volume in body["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
    {
        assert_eq!(volume["emptyDir"]["sizeLimit"], "2Gi", "{volume}");
    }
}

#[tokio::test]
async fn an_api_server_that_keeps_failing_is_unavailable_and_retryable() {
    let (client, posts, _) = mock(vec![503]);
    let spawner = backend(client);
    let err = spawner.spawn(&spec()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(posts.load(Ordering::SeqCst), API_ATTEMPTS as usize);
}

#[tokio::test]
async fn an_existing_job_is_adopted_and_an_invalid_one_rejected() {
    let (client, posts, _) = mock(vec![409]);
    let spawner = backend(client);
    let handle = spawner.spawn(&spec()).await.unwrap();
    assert_eq!(handle.id.as_deref(), Some("uid-existing"));
    assert_eq!(posts.load(Ordering::SeqCst), 1, "a conflict is not retried");

    let (client, _, _) = mock(vec![422]);
    let spawner = backend(client);
    let err = spawner.spawn(&spec()).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("mock says Invalid"), "{err}");
}

#[test]
fn secret_env_without_a_secret_name_is_rejected() {
    let mut s = settings();
    s.secret_name = String::new();
    let err = job_manifest(&s, "test", "agents", &spec()).unwrap_err();
    assert!(err.to_string().contains("secret_name"), "{err}");
}

#[test]
fn a_profiles_shape_adds_to_its_pods_and_its_placement_replaces_the_spawners() {
    let mut s = settings();
    s.node_selector = BTreeMap::from([("pool".into(), "general".into())]);
    s.image_pull_secrets = vec!["regcred".into()];
    s.labels = BTreeMap::from([("team".into(), "platform".into())]);
    let shape: PodShape = serde_json::from_value(serde_json::json!({
        "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "npm-cache"}}],
        "volume_mounts": [{"name": "cache", "mountPath": "/cache"}],
        "secret_files": {"/home/agent/.netrc": "netrc"},
        "init_containers": [{"name": "warm", "command": ["true"]}],
        "sidecars": [{"name": "proxy", "image": "proxy:1",
                      "securityContext": {"runAsUser": 20000}}],
        "runtime_class_name": "gvisor",
        "priority_class_name": "agents-low",
        "node_selector": {"pool": "gpu"},
        "labels": {"team": "ml"},
        "annotations": {"example.com/cost": "gpu"},
        "image_pull_secrets": ["gpu-registry"]
    }))
    .unwrap();
    s.profiles = BTreeMap::from([("claude".to_string(), shape)]);
    let job = job_manifest(&s, "test", "agents", &spec()).unwrap();
    let meta = job.metadata;
    assert_eq!(meta.labels.as_ref().unwrap()["team"], "ml");
    assert_eq!(meta.annotations.unwrap()["example.com/cost"], "gpu");
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.runtime_class_name.as_deref(), Some("gvisor"));
    assert_eq!(pod.priority_class_name.as_deref(), Some("agents-low"));
    assert_eq!(pod.node_selector.unwrap()["pool"], "gpu");
    let pulls: Vec<_> = pod
        .image_pull_secrets
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(pulls, ["regcred", "gpu-registry"]);

    let volumes: Vec<_> = pod.volumes.unwrap();
    let names: Vec<_> = volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "work",
            "tmp",
            "cache",
            "agentsmith-secret-files",
            "agentsmith-lifecycle"
        ]
    );
    let files = volumes[3].secret.as_ref().unwrap();
    assert_eq!(files.secret_name.as_deref(), Some("agent-secrets"));
    assert_eq!(files.items.as_ref().unwrap()[0].key, "netrc");
    assert_eq!(files.default_mode, Some(0o400));

    // The init container runs the agent's image, locked down like the agent; the sidecar
    // keeps what it set and sees the lifecycle directory the runner marks.
    let init = &pod.init_containers.unwrap()[0];
    assert_eq!(init.image.as_deref(), Some("agent:1"));
    let locked = init.security_context.as_ref().unwrap();
    assert_eq!(locked.allow_privilege_escalation, Some(false));
    assert_eq!(locked.read_only_root_filesystem, Some(true));
    let (agent, sidecar) = (&pod.containers[0], &pod.containers[1]);
    assert_eq!(sidecar.name, "proxy");
    assert_eq!(
        sidecar.security_context.as_ref().unwrap().run_as_user,
        Some(20000)
    );
    let mounted = |c: &Container| -> Vec<String> {
        c.volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.clone())
            .collect()
    };
    assert_eq!(mounted(sidecar), [LIFECYCLE_DIR]);
    assert_eq!(
        mounted(agent),
        [
            "/work",
            "/tmp",
            "/cache",
            "/home/agent/.netrc",
            LIFECYCLE_DIR
        ]
    );
    let ended = agent
        .env
        .iter()
        .flatten()
        .find(|e| e.name == contract::env::ENDED_FILE);
    assert_eq!(ended.and_then(|e| e.value.as_deref()), Some(ENDED_FILE));

    // A profile without a shape keeps the spawner's placement and has no sidecar marker.
    let mut plain = spec();
    plain.profile.name = "other".into();
    let pod = job_manifest(&s, "test", "agents", &plain)
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert_eq!(pod.node_selector.unwrap()["pool"], "general");
    assert_eq!(pod.containers.len(), 1);
    assert!(pod.init_containers.is_none());
    assert!(!pod.containers[0]
        .env
        .iter()
        .flatten()
        .any(|e| e.name == contract::env::ENDED_FILE));
}
