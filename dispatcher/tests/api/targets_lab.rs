//! One dispatcher, five spawner targets on the real lab: two Kubernetes namespaces reached
//! through two kubeconfigs of two ServiceAccounts bound to the README's Role, a third
//! kubeconfig whose API server address is a relay this test opens and closes, the Docker
//! engine, and local processes. Routing by profile and by project, a full target overflowing
//! to the next, a target that cannot be reached marked down and skipped until it answers
//! again, and a restarted dispatcher adopting what runs on every target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentsmith::settings::{AgentSettings, ProjectSettings, Settings};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::Client;
use queue::JobState;
use spawner::conformance::lab::{agent_image, DockerLab, KubernetesLab};
use spawner::conformance::{Lab, KEEP_FINISHED};
use spawner::{Health, SpawnerKind, SpawnerSettings};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{random_prefix, runner_path, sh_agent, start, temp_dir, test_settings};
use crate::helpers::{wait_until, TestApp};
use crate::targets::{running_on, target_of};

const LONG: Duration = Duration::from_secs(180);

/// The Role the README's "RBAC" block gives the dispatcher, read from the README itself.
fn readme_rules() -> Vec<PolicyRule> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let block = text
        .split_once("**RBAC.**")
        .and_then(|(_, rest)| rest.split_once("```yaml\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(yaml, _)| yaml)
        .expect("the README has an RBAC block");
    #[derive(serde::Deserialize)]
    struct Rules {
        rules: Vec<PolicyRule>,
    }
    serde_yaml::from_str::<Rules>(block).unwrap().rules
}

/// A ServiceAccount in `namespace` bound to the README's Role there, and a kubeconfig of it:
/// the admin kubeconfig's cluster (its server replaced by `server`, when given) with the
/// account's token. Written under `dir`.
async fn service_account_kubeconfig(
    admin: &Client,
    admin_kubeconfig: &Path,
    namespace: &str,
    server: Option<&str>,
    dir: &Path,
) -> PathBuf {
    let name = "agentsmith-dispatcher";
    let meta = |n: &str| ObjectMeta {
        name: Some(n.to_string()),
        namespace: Some(namespace.to_string()),
        ..Default::default()
    };
    let post = PostParams::default();
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    if accounts.get_opt(name).await.unwrap().is_none() {
        let account = ServiceAccount {
            metadata: meta(name),
            ..Default::default()
        };
        accounts.create(&post, &account).await.unwrap();
        let role = Role {
            metadata: meta(name),
            rules: Some(readme_rules()),
        };
        Api::<Role>::namespaced(admin.clone(), namespace)
            .create(&post, &role)
            .await
            .unwrap();
        let binding = RoleBinding {
            metadata: meta(name),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: name.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: name.into(),
                namespace: Some(namespace.into()),
                ..Default::default()
            }]),
        };
        Api::<RoleBinding>::namespaced(admin.clone(), namespace)
            .create(&post, &binding)
            .await
            .unwrap();
    }
    // Kubernetes 1.20 makes each account a token Secret of its own.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), namespace);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let token = loop {
        let secret = accounts
            .get(name)
            .await
            .ok()
            .and_then(|a| a.secrets?.into_iter().next()?.name);
        if let Some(secret) = secret {
            let data = secrets.get(&secret).await.ok().and_then(|s| s.data);
            if let Some(token) = data.and_then(|mut d| d.remove("token")) {
                break String::from_utf8(token.0).unwrap();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ServiceAccount {namespace}/{name} got no token"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(admin_kubeconfig).unwrap()).unwrap();
    config["users"][0]["user"] = serde_yaml::to_value(BTreeMap::from([("token", token)])).unwrap();
    if let Some(server) = server {
        config["clusters"][0]["cluster"]["server"] = server.into();
    }
    let path = dir.join(format!(
        "{namespace}{}.kubeconfig",
        if server.is_some() { "-relayed" } else { "" }
    ));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

/// The API server's address (`host:port`) in a kubeconfig.
fn api_server(kubeconfig: &Path) -> String {
    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(kubeconfig).unwrap()).unwrap();
    let server = config["clusters"][0]["cluster"]["server"].as_str().unwrap();
    server.trim_start_matches("https://").to_string()
}

/// Relays connections on `listener` to `to` until aborted: then the port closes and the
/// connections it relays are cut (a client would otherwise go on using one it holds).
fn relay(listener: TcpListener, to: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = to.clone();
            connections.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
            while connections.try_join_next().is_some() {}
        }
    })
}

fn kubernetes_target(lab: &KubernetesLab, kubeconfig: PathBuf, cap: u32) -> SpawnerSettings {
    let mut target = test_settings("unused").spawner;
    target.kind = SpawnerKind::Kubernetes;
    target.max_concurrent_jobs = cap;
    target.probe_secs = 1;
    target.reconcile_secs = 2;
    target.kubernetes = lab.settings(KEEP_FINISHED);
    target.kubernetes.kubeconfig = kubeconfig;
    target
}

/// A profile of the agent image sleeping `secs`, then naming where it ran.
fn sleeper(secs: u32, targets: &[&str]) -> AgentSettings {
    AgentSettings {
        image: agent_image(),
        timeout_secs: 300,
        targets: targets.iter().map(|t| t.to_string()).collect(),
        ..sh_agent(&format!("sleep {secs}; echo ran on $(hostname)"))
    }
}

async fn health_of(app: &TestApp, target: &str) -> Health {
    app.ctx.spawner.get(target).unwrap().health()
}

#[tokio::test]
#[ignore = "needs the test cluster and the Docker engine: scripts/k8s-testenv/start.sh, AGENTSMITH_TEST_KUBECONFIG and scripts/build-agent-image --tag agentsmith-agent:test"]
async fn one_dispatcher_runs_jobs_on_two_clusters_a_docker_engine_and_processes() {
    let east = KubernetesLab::new().await;
    let west = KubernetesLab::new().await;
    let docker = DockerLab::new().await;
    let admin_kubeconfig = PathBuf::from(std::env::var("AGENTSMITH_TEST_KUBECONFIG").unwrap());
    let admin = east.client().await;
    let dir = temp_dir("kubeconfigs");
    let east_config =
        service_account_kubeconfig(&admin, &admin_kubeconfig, east.namespace(), None, &dir).await;
    let west_config =
        service_account_kubeconfig(&admin, &admin_kubeconfig, west.namespace(), None, &dir).await;
    // "far" is the west namespace again, through a port where nothing listens yet.
    let host = east.callback_host();
    let relay_port = testkit::net::free_port_on(&host);
    let relay_at = format!("{host}:{relay_port}");
    let far_config = service_account_kubeconfig(
        &admin,
        &admin_kubeconfig,
        west.namespace(),
        Some(&format!("https://{relay_at}")),
        &dir,
    )
    .await;

    let kubeconfigs = [east_config, west_config, far_config];
    let s = lab_settings(&east, &west, &docker, kubeconfigs);
    let settings = s.clone();
    let first = start(s, None).await;
    let address = first.address.clone();
    assert!(
        matches!(health_of(&first, "far").await, Health::Down(_)),
        "nothing listens where far's kubeconfig points"
    );
    let ready = first.get_json("/ready").await;
    assert_eq!(ready["status"], "ready", "{ready}");

    // By profile, by project (over its profile's), a full target overflowing, a target
    // that is down skipped, and no route at all.
    let on_east = first.submit("east", "profile routes east").await;
    let (status, body) = first
        .post_job(serde_json::json!({"project": "westward", "task": "project routes west"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let on_west = body["id"].as_str().unwrap().to_string();
    assert_eq!(running_on(&first, &on_west, LONG).await, "west");
    let spilled = first.submit("spill", "west is full").await;
    let roamed = first.submit("roam", "far is down").await;
    let local = first.submit("local", "no route").await;
    for (id, target) in [
        (&on_east, "east"),
        (&spilled, "engine"),
        (&local, "default"),
    ] {
        assert_eq!(running_on(&first, id, LONG).await, target, "job {id}");
    }
    let job = first
        .wait_for_state(&roamed, JobState::Succeeded, LONG)
        .await;
    assert_eq!(target_of(&job), "east", "{job:#?}");
    let ready = first.get_json("/ready").await;
    let targets = ready["targets"].as_array().unwrap();
    let west_state = targets.iter().find(|t| t["name"] == "west").unwrap();
    assert_eq!(west_state["jobs"], 1, "{ready}");
    let far_state = targets.iter().find(|t| t["name"] == "far").unwrap();
    assert_eq!(far_state["state"], "down", "{ready}");

    // A new dispatcher at the same address adopts what runs on every target that outlives
    // it (the process target's runners are this test's children and live on too, so its job
    // ends either by its runner or by another attempt: only its end is checked).
    first.stop().await;
    let mut settings = settings;
    settings.server.bind = address.trim_start_matches("http://").to_string();
    let second = start(settings, None).await;
    for id in [&on_east, &on_west, &spilled] {
        let job = second.wait_for_end(id, LONG).await;
        assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
        assert_eq!(job.attempt, 1, "adopted, not run again: {job:#?}");
    }
    let job = second.wait_for_end(&local, LONG).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(target_of(&job), "default");

    far_comes_back_and_goes_again(&second, &relay_at, &admin_kubeconfig).await;
    second.stop().await;
    drop(docker);
}

/// The test's dispatcher: bound where pods and containers reach it, the processes as
/// `default`, east, west (one job at a time) and far (west again, through the relay) on the
/// cluster, engine on Docker, and the profiles and project that route to them.
fn lab_settings(
    east: &KubernetesLab,
    west: &KubernetesLab,
    docker: &DockerLab,
    [east_config, west_config, far_config]: [PathBuf; 3],
) -> Settings {
    let host = east.callback_host();
    let mut s: Settings = test_settings(&random_prefix());
    s.server.bind = format!("{host}:0");
    s.server.installation = east.installation().to_string();
    s.queue.start_timeout_secs = 120;
    s.queue.lease_secs = 10;
    s.spawner.probe_secs = 1;
    s.spawner.process.runner_path = runner_path();
    let mut engine = s.spawner.clone();
    engine.kind = SpawnerKind::Docker;
    engine.docker = docker.settings(KEEP_FINISHED);
    s.spawners = BTreeMap::from([
        ("east".into(), kubernetes_target(east, east_config, 0)),
        ("west".into(), kubernetes_target(west, west_config, 1)),
        ("far".into(), kubernetes_target(west, far_config, 0)),
        ("engine".into(), engine),
    ]);
    s.agents = BTreeMap::from([
        ("east".into(), sleeper(45, &["east"])),
        ("spill".into(), sleeper(45, &["west", "engine"])),
        ("roam".into(), sleeper(0, &["far", "east"])),
        ("local".into(), sh_agent("sleep 45; echo ran here")),
    ]);
    s.projects.insert(
        "westward".into(),
        ProjectSettings {
            agent: "east".into(),
            targets: vec!["west".into()],
            ..Default::default()
        },
    );
    s
}

/// Far answers once the relay opens (within a probe period) and gets the next job, then is
/// down again once it closes, its jobs going to the next target.
async fn far_comes_back_and_goes_again(second: &TestApp, relay_at: &str, admin_kubeconfig: &Path) {
    // The relay opens: within a probe period far is back in service and gets the next one.
    let listener = TcpListener::bind(&relay_at).await.unwrap();
    let relaying = relay(listener, api_server(admin_kubeconfig));
    assert!(
        wait_until(Duration::from_secs(30), || async {
            health_of(second, "far").await == Health::Up
        })
        .await,
        "far did not come back: {:?}",
        health_of(second, "far").await
    );
    let back = second.submit("roam", "far answers again").await;
    let job = second
        .wait_for_state(&back, JobState::Succeeded, LONG)
        .await;
    assert_eq!(target_of(&job), "far", "{job:#?}");
    let lines = second.log_lines(&back).await;
    assert!(lines.iter().any(|l| l.starts_with("ran on ")), "{lines:?}");

    // And closes again: far is down, its jobs go to the next.
    relaying.abort();
    let _ = relaying.await;
    assert!(
        wait_until(Duration::from_secs(30), || async {
            matches!(health_of(second, "far").await, Health::Down(_))
        })
        .await,
        "far is still up with its port closed"
    );
    let away = second.submit("roam", "far is gone again").await;
    let job = second
        .wait_for_state(&away, JobState::Succeeded, LONG)
        .await;
    assert_eq!(target_of(&job), "east", "{job:#?}");
}
