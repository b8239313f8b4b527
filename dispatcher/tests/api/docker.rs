//! The docker spawner against a real Docker engine: jobs run as containers of the locally
//! built agent image (`scripts/build-agent-image`; `AGENTSMITH_TEST_DOCKER_IMAGE`, default
//! `agentsmith-agent:test`), whose runners call back to a dispatcher bound to the Docker
//! bridge's gateway address. Each test has its own installation name; every container it
//! creates carries it and the per-run label `agentsmith-test/run`, and is removed when the
//! test ends, pass or fail.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use agentsmith::settings::{AgentSettings, Settings};
use bollard::models::{ContainerCreateBody, ContainerStateStatusEnum};
use bollard::query_parameters::{CreateContainerOptions, ListContainersOptions};
use bollard::Docker;
use contract::labels;
use queue::{JobEvent, JobState};
use serde_json::json;
use spawner::{PullPolicy, SpawnerKind};
use tokio::sync::OnceCell;

use crate::helpers::{random_prefix, sh_agent, start, test_settings, wait_until, TestApp};

/// The label every container of this test run carries.
const RUN_LABEL: &str = "agentsmith-test/run";

struct Engine {
    /// The bridge gateway: an address of this machine that containers reach.
    gateway: String,
    image: String,
}

static ENGINE: OnceCell<Engine> = OnceCell::const_new();

fn image() -> String {
    std::env::var("AGENTSMITH_TEST_DOCKER_IMAGE").unwrap_or_else(|_| "agentsmith-agent:test".into())
}

fn run_id() -> String {
    std::env::var("AGENTSMITH_TEST_RUN").unwrap_or_else(|_| format!("pid{}", std::process::id()))
}

/// A client of the local engine. Each test has its own runtime, so each makes its own
/// client (a client's connections belong to the runtime that made them).
async fn docker() -> Docker {
    Docker::connect_with_local_defaults()
        .expect("a Docker client can be made")
        .negotiate_version()
        .await
        .expect("the Docker engine answers (scripts/test starts dockerd)")
}

/// Checks the engine and the image once, and finds the bridge's gateway address.
async fn engine() -> &'static Engine {
    ENGINE
        .get_or_init(|| async {
            let docker = docker().await;
            let image = image();
            docker.inspect_image(&image).await.unwrap_or_else(|e| {
                panic!("image {image} is missing ({e}): build it with scripts/build-agent-image --tag {image} (scripts/test does)")
            });
            let bridge = docker
                .inspect_network("bridge", None)
                .await
                .expect("the engine has its default bridge network");
            let config = bridge
                .ipam
                .and_then(|i| i.config)
                .and_then(|c| c.into_iter().next())
                .expect("the bridge network has an address range");
            // Without an explicit gateway the engine gives the bridge the subnet's first
            // address.
            let gateway = config.gateway.filter(|g| !g.is_empty()).unwrap_or_else(|| {
                let subnet = config.subnet.expect("the bridge network has a subnet");
                let network: std::net::Ipv4Addr = subnet
                    .split('/')
                    .next()
                    .and_then(|a| a.parse().ok())
                    .expect("the bridge subnet is IPv4");
                std::net::Ipv4Addr::from(u32::from(network) + 1).to_string()
            });
            Engine { gateway, image }
        })
        .await
}

/// An agent profile of the test image running `script` with its busybox `sh`.
fn container_agent(script: &str) -> AgentSettings {
    AgentSettings {
        image: image(),
        ..sh_agent(script)
    }
}

/// Settings for a docker test: the bridge gateway as bind address, a fresh installation.
fn docker_settings(engine: &Engine) -> Settings {
    let mut s = test_settings(&random_prefix());
    s.server.bind = format!("{}:0", engine.gateway);
    s.server.installation = format!("t{:012x}", rand::random::<u64>() >> 16);
    s.spawner.kind = SpawnerKind::Docker;
    s.spawner.reconcile_secs = 1;
    s.spawner.docker.pull_policy = PullPolicy::Never;
    s.spawner.docker.labels = BTreeMap::from([(RUN_LABEL.to_string(), run_id())]);
    s.spawner.docker.memory = Some("256Mi".parse().unwrap());
    s.spawner.docker.cpus = Some("1".parse().unwrap());
    s.spawner.docker.pids_limit = 128;
    let secrets = crate::helpers::temp_dir("secrets");
    std::fs::write(secrets.join("agent_secret"), "s3cret-value-42\n").unwrap();
    s.spawner.secrets_dir = secrets.display().to_string();
    s.agents = BTreeMap::from([
        (
            "ok".to_string(),
            AgentSettings {
                secret_env: BTreeMap::from([("AGENT_SECRET".to_string(), "agent_secret".to_string())]),
                ..container_agent(
                "[ \"$AGENT_SECRET\" = s3cret-value-42 ] && echo secret-ok; \
                 echo \"working on $AGENTSMITH_TASK as $(id -u)\"; \
                 if touch /root-write-test 2>/dev/null; then echo root-writable; else echo root-read-only; fi; \
                 touch \"$PWD/work-write-test\" && echo workdir-writable; \
                 printf '{\"summary\":\"fixed %s\"}' \"$AGENTSMITH_TASK\" > \"$AGENTSMITH_RESULT_FILE\"",
                )
            },
        ),
        ("fail".to_string(), container_agent("echo about to fail; exit 3")),
        ("sleep".to_string(), container_agent("echo sleeping; sleep 4; echo woke")),
        (
            "short".to_string(),
            container_agent("sleep 1; echo short done"),
        ),
        (
            "hog".to_string(),
            AgentSettings {
                memory: Some("48Mi".parse().unwrap()),
                ..container_agent("echo hogging; exec dd if=/dev/zero of=/dev/null bs=160M count=1")
            },
        ),
        (
            "stubborn".to_string(),
            container_agent(
                "trap 'echo got TERM; exit 0' TERM; echo waiting; while true; do sleep 0.2; done",
            ),
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

/// A dispatcher with the docker spawner; its containers are removed when dropped.
struct DockerApp {
    app: Option<TestApp>,
    installation: String,
}

impl std::ops::Deref for DockerApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        self.app.as_ref().expect("the app runs")
    }
}

impl Drop for DockerApp {
    fn drop(&mut self) {
        remove_installation(&self.installation);
    }
}

/// Removes every container of an installation with the docker CLI (usable from `Drop`).
fn remove_installation(installation: &str) {
    let filter = format!("label={}={installation}", labels::INSTALLATION);
    let Ok(out) = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &filter])
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

async fn docker_app(customize: impl FnOnce(&mut Settings)) -> (DockerApp, Docker) {
    let engine = engine().await;
    let mut settings = docker_settings(engine);
    customize(&mut settings);
    let installation = settings.server.installation.clone();
    let app = start(settings, None).await;
    (
        DockerApp {
            app: Some(app),
            installation,
        },
        docker().await,
    )
}

/// The containers of an installation (all states), with their states.
async fn containers(docker: &Docker, installation: &str, only_running: bool) -> Vec<String> {
    let options = ListContainersOptions {
        all: !only_running,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("{}={installation}", labels::INSTALLATION)],
        )])),
        ..Default::default()
    };
    docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.names?.into_iter().next())
        .map(|n| n.trim_start_matches('/').to_string())
        .collect()
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_job_runs_in_a_locked_down_container_and_succeeds_with_its_logs() {
    let (app, docker) = docker_app(|_| {}).await;
    let id = app.submit("ok", "fix PROJ-1").await;
    let job = app.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(job.attempt, 1);
    let lines = app.log_lines(&id).await;
    for expected in [
        "secret-ok",
        "working on fix PROJ-1 as 10001",
        "root-read-only",
        "workdir-writable",
    ] {
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
    assert_eq!(handle.backend, "docker");
    assert_eq!(handle.name, format!("agentsmith-{id}-1"));

    // The finished container is kept (ttl_after_finished) and shows how it was run.
    let container = docker.inspect_container(&handle.name, None).await.unwrap();
    let config = container.config.unwrap();
    let host = container.host_config.unwrap();
    assert_eq!(config.user.as_deref(), Some("10001:10001"));
    let container_labels = config.labels.unwrap();
    assert_eq!(container_labels[labels::MANAGED_BY], "agentsmith");
    assert_eq!(container_labels[labels::JOB_ID], id);
    assert_eq!(container_labels[labels::ATTEMPT], "1");
    assert_eq!(container_labels[labels::INSTALLATION], app.installation);
    assert_eq!(container_labels[RUN_LABEL], run_id());
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges".to_string()])
    );
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.privileged, Some(false));
    assert_eq!(host.init, Some(true));
    assert_eq!(host.memory, Some(256 << 20));
    assert_eq!(host.memory_swap, Some(256 << 20));
    assert_eq!(host.nano_cpus, Some(1_000_000_000));
    assert_eq!(host.pids_limit, Some(128));
    let env = config.env.unwrap();
    assert!(env
        .iter()
        .any(|e| e.starts_with("AGENTSMITH_CALLBACK_URL=http://")));
    assert!(
        !env.iter().any(|e| e.contains("test-token")),
        "the API token must not reach a container"
    );
    // The secret reaches the container's environment, and nothing the dispatcher keeps.
    assert!(env.contains(&"AGENT_SECRET=s3cret-value-42".to_string()));
    let record = format!("{:?}{:?}", app.job(&id).await, app.events(&id).await);
    assert!(!record.contains("s3cret-value-42"));
    // The engine's logs hold the runner's output too, readable after the exit.
    let engine_lines: Vec<String> =
        futures::StreamExt::collect::<Vec<_>>(app.ctx.spawner.logs(&handle, false).await.unwrap())
            .await
            .into_iter()
            .map(|l| l.unwrap().line)
            .collect();
    assert!(
        engine_lines
            .iter()
            .any(|l| l.contains("working on fix PROJ-1")),
        "{engine_lines:?}"
    );
}

#[tokio::test]
async fn a_failing_agent_fails_the_job_with_its_exit_code() {
    let (app, _) = docker_app(|_| {}).await;
    let id = app.submit("fail", "break").await;
    let job = app.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert_eq!(job.exit_code, Some(3));
    assert_eq!(
        job.attempt,
        1,
        "an agent failure is not retried: {:#?}",
        app.events(&id).await
    );
    assert!(app
        .log_lines(&id)
        .await
        .contains(&"about to fail".to_string()));
}

#[tokio::test]
async fn an_agent_over_its_memory_limit_fails_as_oom_killed() {
    let (app, docker) = docker_app(|_| {}).await;
    let id = app.submit("hog", "eat memory").await;
    let job = app.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let reason = job.reason.clone().unwrap_or_default();
    assert!(reason.contains("OOM-killed"), "{reason}");
    assert!(app.log_lines(&id).await.contains(&"hogging".to_string()));
    let handle = job.handle.unwrap();
    let container = docker.inspect_container(&handle.name, None).await.unwrap();
    // (The engine's own OOMKilled flag is not asserted: on cgroup v1 it is set from an
    // event that can arrive after the container's exit, so it is unreliable.)
    assert_eq!(container.host_config.unwrap().memory, Some(48 << 20));
}

#[tokio::test]
async fn cancel_stops_the_container_within_the_grace_period() {
    let (app, docker) = docker_app(|_| {}).await;
    let id = app.submit("stubborn", "wait forever").await;
    app.wait_for(&id, "its first line", LONG, |j| {
        j.state == JobState::Running
    })
    .await;
    assert!(
        wait_until(LONG, || async {
            app.log_lines(&id).await.contains(&"waiting".to_string())
        })
        .await
    );
    let cancelled_at = Instant::now();
    assert_eq!(app.act(&id, "cancel").await.status(), 200);
    let job = app.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Cancelled);
    let name = job.handle.unwrap().name;
    let stopped = wait_until(LONG, || async {
        let state = docker
            .inspect_container(&name, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.status);
        state != Some(ContainerStateStatusEnum::RUNNING)
    })
    .await;
    let took = cancelled_at.elapsed();
    assert!(stopped, "the container still runs after {took:?}");
    // Stopped within the grace period, not killed at its end: the agent got SIGTERM and
    // ended, then the runner did, so the container exited 0. A kill after the grace
    // (2 s + 5 s for the runner) would show as 137.
    let exit = docker
        .inspect_container(&name, None)
        .await
        .unwrap()
        .state
        .and_then(|s| s.exit_code);
    assert_eq!(
        exit,
        Some(0),
        "the container was killed, not stopped (after {took:?})"
    );
    // Cancelling again is fine.
    assert_eq!(app.act(&id, "cancel").await.status(), 409);
    assert_eq!(containers(&docker, &app.installation, true).await.len(), 0);
}

#[tokio::test]
async fn a_restarted_dispatcher_adopts_the_running_container() {
    let (mut first, docker) = docker_app(|_| {}).await;
    let id = first.submit("sleep", "outlive the dispatcher").await;
    first
        .wait_for(&id, "running", LONG, |j| j.state == JobState::Running)
        .await;
    let address = first.address.clone();
    let mut settings = first.ctx.settings.clone();
    first.app.take().unwrap().stop().await;
    // The container keeps running without a dispatcher.
    let running = containers(&docker, &first.installation, true).await;
    assert_eq!(running, [format!("agentsmith-{id}-1")]);

    // The new dispatcher takes the same address, so the runner's callbacks reach it.
    settings.server.bind = address.trim_start_matches("http://").to_string();
    let second = start(settings, None).await;
    let job = second.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(job.attempt, 1, "the container was adopted, not run again");
    let lines = second.log_lines(&id).await;
    assert!(lines.contains(&"woke".to_string()), "{lines:?}");
    second.stop().await;
}

#[tokio::test]
async fn a_record_whose_container_vanished_is_retried_with_the_reason() {
    let (app, docker) = docker_app(|_| {}).await;
    let id = app.submit("sleep", "lose my container").await;
    let job = app
        .wait_for(&id, "running", LONG, |j| j.state == JobState::Running)
        .await;
    let name = job.handle.unwrap().name;
    std::process::Command::new("docker")
        .args(["rm", "-f", &name])
        .output()
        .unwrap();
    let job = app
        .wait_for(&id, "a second attempt", LONG, |j| j.attempt >= 2)
        .await;
    assert!(job.attempt >= 2);
    let job = app.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
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
        reasons.iter().any(|r| r.contains("workload not found")),
        "{reasons:?}"
    );
    assert!(docker.inspect_container(&name, None).await.is_err());
}

/// Creates a container that sleeps, labelled like a workload of `installation` whose job
/// does not exist.
async fn sleeper(docker: &Docker, image: &str, name: &str, installation: &str) {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec!["sleep".into(), "300".into()]),
        labels: Some(HashMap::from([
            (labels::MANAGED_BY.to_string(), "agentsmith".to_string()),
            (labels::JOB_ID.to_string(), "nosuchjob".to_string()),
            (labels::ATTEMPT.to_string(), "1".to_string()),
            (labels::INSTALLATION.to_string(), installation.to_string()),
            (RUN_LABEL.to_string(), run_id()),
        ])),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.to_string()),
        ..Default::default()
    };
    docker.create_container(Some(options), body).await.unwrap();
}

#[tokio::test]
async fn an_orphan_container_with_our_labels_is_removed() {
    let engine = engine().await;
    let docker = docker().await;
    let installation = format!("t{:012x}", rand::random::<u64>() >> 16);
    let orphan = format!("agentsmith-orphan{}-1", &installation[1..]);
    sleeper(&docker, &engine.image, &orphan, &installation).await;
    docker.start_container(&orphan, None).await.unwrap();
    let bystander = format!("agentsmith-bystander{}-1", &installation[1..]);
    sleeper(
        &docker,
        &engine.image,
        &bystander,
        &format!("{installation}-other"),
    )
    .await;

    let (app, _) = docker_app(|s| s.server.installation = installation.clone()).await;
    let gone = wait_until(LONG, || async {
        docker.inspect_container(&orphan, None).await.is_err()
    })
    .await;
    assert!(gone, "the orphan container was not removed");
    assert!(
        docker.inspect_container(&bystander, None).await.is_ok(),
        "another installation's container must be left alone"
    );
    remove_installation(&format!("{installation}-other"));
    drop(app);
}

#[tokio::test]
async fn a_finished_container_is_removed_after_its_ttl() {
    let (app, docker) = docker_app(|s| s.spawner.docker.ttl_after_finished_secs = 3).await;
    let id = app.submit("short", "be brief").await;
    let running = app
        .wait_for(&id, "a workload", LONG, |j| j.handle.is_some())
        .await;
    // Following the engine's logs ends when the container does.
    let follow = app
        .ctx
        .spawner
        .logs(&running.handle.unwrap(), true)
        .await
        .unwrap();
    let followed: Vec<String> =
        tokio::time::timeout(LONG, futures::StreamExt::collect::<Vec<_>>(follow))
            .await
            .expect("a followed log ends with its container")
            .into_iter()
            .map(|l| l.unwrap().line)
            .collect();
    assert!(
        followed.iter().any(|l| l.contains("short done")),
        "{followed:?}"
    );
    let job = app.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let name = job.handle.unwrap().name;
    let ended = Instant::now();
    let gone = wait_until(LONG, || async {
        docker.inspect_container(&name, None).await.is_err()
    })
    .await;
    assert!(gone, "the finished container was kept past its TTL");
    assert!(
        ended.elapsed() >= Duration::from_secs(2),
        "removed after {:?}, before its TTL",
        ended.elapsed()
    );
}

#[tokio::test]
async fn a_missing_image_with_pull_policy_never_fails_at_once_with_the_reason() {
    let (app, _) = docker_app(|_| {}).await;
    let id = app.submit("ghost", "run nothing").await;
    let job = app.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert_eq!(job.attempt, 1, "a missing image is not retried");
    let reason = job.reason.unwrap_or_default();
    assert!(
        reason.contains("agentsmith-test-no-such-image:1")
            && reason.contains("pull_policy is Never"),
        "{reason}"
    );
}

#[tokio::test]
async fn twenty_jobs_never_run_more_than_five_containers_at_once() {
    let (app, docker) = docker_app(|s| s.queue.max_concurrent_jobs = 5).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let (status, body) = app
            .post_job(json!({"agent": "short", "task": format!("job {i}")}))
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        most = most.max(containers(&docker, &app.installation, true).await.len());
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &ids {
        assert_eq!(app.job(id).await.state, JobState::Succeeded);
    }
    assert!(most <= 5, "{most} containers ran at once");
    assert!(
        most >= 2,
        "the jobs never overlapped ({most} at once), so the limit was not tested"
    );
}
