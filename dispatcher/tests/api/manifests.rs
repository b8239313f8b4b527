//! The Jobs the kubernetes backend builds, validated strictly against the Kubernetes
//! OpenAPI schemas of 1.20 and 1.37 (`scripts/kube-validate`, PyPI kubernetes-validate):
//! with the default profile, and with every option set.

use std::collections::BTreeMap;
use std::path::Path;

use agentsmith::context::job_spec;
use agentsmith::settings::Settings;
use queue::Job;
use serde_json::json;
use spawner::{PullPolicy, SpawnerKind};

use crate::helpers::{sh_agent, temp_dir};

fn job(agent: &str) -> Job {
    let fields = std::collections::HashMap::from([
        ("state".to_string(), "queued".to_string()),
        ("created_at".to_string(), "0".to_string()),
        ("attempt".to_string(), "1".to_string()),
        ("agent".to_string(), agent.to_string()),
        ("task".to_string(), "fix PROJ-1".to_string()),
        ("ticket".to_string(), "PROJ-1".to_string()),
    ]);
    Job::from_fields("abc123def456", &fields).unwrap()
}

fn manifest(settings: &Settings, agent: &str) -> serde_json::Value {
    let spec = job_spec(
        settings,
        &job(agent),
        1,
        "http://172.17.0.1:8080",
        "token".into(),
    )
    .unwrap();
    let k8s = &settings.spawner.kubernetes;
    let namespace = Some(k8s.namespace.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let job = spawner::backend::kubernetes::job_manifest(
        k8s,
        &settings.server.installation,
        &namespace,
        &spec,
    )
    .unwrap();
    let mut value = serde_json::to_value(job).unwrap();
    value["apiVersion"] = json!("batch/v1");
    value["kind"] = json!("Job");
    value
}

#[test]
#[ignore = "needs kubernetes-validate: scripts/kube-validate --install (scripts/test installs it)"]
fn job_manifests_validate_against_kubernetes_1_20_and_1_37() {
    let mut settings = Settings::load_from(None, &[]).unwrap();
    settings.spawner.kind = SpawnerKind::Kubernetes;
    settings.agents = BTreeMap::from([(
        "plain".to_string(),
        agentsmith::settings::AgentSettings {
            image: "agentsmith-agent:1".into(),
            ..sh_agent("true")
        },
    )]);
    let plain = manifest(&settings, "plain");

    // Every option the backend knows.
    let k = &mut settings.spawner.kubernetes;
    k.namespace = "agents".into();
    k.service_account = "agent-runner".into();
    k.ttl_seconds_after_finished = 60;
    k.image_pull_policy = PullPolicy::Never;
    k.image_pull_secrets = vec!["regcred".into()];
    k.secret_name = "agent-secrets".into();
    k.memory = Some("1Gi".parse().unwrap());
    k.cpus = Some("1500m".parse().unwrap());
    k.cpu_request = Some("250m".parse().unwrap());
    k.node_selector = BTreeMap::from([("pool".into(), "agents".into())]);
    k.tolerations = vec![serde_json::from_value(
        json!({"key": "dedicated", "operator": "Equal", "value": "agents", "effect": "NoSchedule"}),
    )
    .unwrap()];
    k.affinity = Some(serde_json::from_value(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}})).unwrap());
    k.run_as_user = 2000;
    k.run_as_group = 3000;
    k.labels = BTreeMap::from([("team".into(), "platform".into())]);
    k.annotations = BTreeMap::from([("example.com/owner".into(), "platform".into())]);
    k.env = BTreeMap::from([("HTTPS_PROXY".into(), "http://proxy.example.com:3128".into())]);
    settings.agents.insert(
        "full".to_string(),
        agentsmith::settings::AgentSettings {
            image: "registry.example.com/agents/claude:1.2".into(),
            env: BTreeMap::from([("MODE".into(), "fix".into())]),
            secret_env: BTreeMap::from([("GITHUB_TOKEN".into(), "github_token".into())]),
            memory: Some("512Mi".parse().unwrap()),
            cpus: Some("2".parse().unwrap()),
            writable_root: true,
            service_account_token: true,
            timeout_secs: 900,
            ..sh_agent("true")
        },
    );
    // The full profile's pods shaped too: every key of spawner.kubernetes.profiles.
    settings.spawner.kubernetes.profiles = BTreeMap::from([(
        "full".to_string(),
        serde_json::from_value(json!({
            "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "npm-cache"}},
                        {"name": "seed", "configMap": {"name": "seed"}}],
            "volume_mounts": [{"name": "cache", "mountPath": "/cache", "readOnly": false}],
            "secret_files": {"/home/agent/.netrc": "netrc"},
            "init_containers": [{"name": "warm", "command": ["true"],
                                 "volumeMounts": [{"name": "seed", "mountPath": "/seed"}]}],
            "sidecars": [{"name": "proxy", "image": "registry.example.com/proxy:1",
                          "ports": [{"containerPort": 3128}]}],
            "runtime_class_name": "gvisor",
            "priority_class_name": "agents-low",
            "node_selector": {"pool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}]}},
            "labels": {"team": "ml"},
            "annotations": {"example.com/cost": "gpu"},
            "image_pull_secrets": ["gpu-registry"]
        }))
        .unwrap(),
    )]);
    assert!(settings.validate().is_empty(), "{:?}", settings.validate());
    let full = manifest(&settings, "full");
    assert_eq!(
        full["spec"]["template"]["spec"]["runtimeClassName"],
        "gvisor"
    );
    assert_eq!(
        full["spec"]["template"]["spec"]["containers"][1]["name"],
        "proxy"
    );
    assert_eq!(
        full["spec"]["template"]["spec"]["tolerations"][0]["key"],
        "nvidia.com/gpu"
    );
    assert_eq!(full["metadata"]["labels"]["team"], "ml");
    assert_eq!(
        full["spec"]["template"]["spec"]["nodeSelector"]["pool"],
        "gpu"
    );
    let env = full["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    assert!(env.iter().any(|e| e["name"] == "HTTPS_PROXY"));

    let dir = temp_dir("manifests");
    let mut files = Vec::new();
    for (name, value) in [("plain", plain), ("full", full)] {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
        files.push(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kube-validate");
    let out = std::process::Command::new("bash")
        .arg(script)
        .args(&files)
        .output()
        .expect("scripts/kube-validate runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    // Two files, two versions: four passes, and no skipped resource.
    assert_eq!(report.matches(" passed ").count(), 4, "{report}");
    std::fs::remove_dir_all(dir).unwrap();
}
