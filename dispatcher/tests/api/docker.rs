//! The dispatcher with the docker spawner, for what only a whole dispatcher does with
//! containers: secrets that reach the agent but no record, a vanished container retried,
//! a restarted dispatcher taking its running job back, the watchdog removing an orphan.
//! What the backend itself promises (runs, exit codes, OOM kills, cancel, time to live,
//! adoption, orphans listed and removed, concurrent spawns, the locked-down container, a
//! missing image) is the conformance suite's: `spawner/tests/conformance_docker.rs`.
//!
//! Jobs run as containers of the locally built agent image, whose runners call back to a
//! dispatcher bound to the Docker bridge's gateway. Each test has a lab of its own
//! ([`DockerLab`]): an installation name, and a label on every container it creates, by
//! which the containers are removed when the test ends, pass or fail.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use agentsmith::settings::{AgentSettings, Settings};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptions, ListContainersOptions};
use bollard::Docker;
use contract::labels;
use queue::JobState;
use spawner::conformance::lab::{agent_image, DockerLab};
use spawner::conformance::{Lab, KEEP_FINISHED};
use spawner::SpawnerKind;

use crate::helpers::{random_prefix, sh_agent, start, test_settings, wait_until, TestApp};

const LONG: Duration = Duration::from_secs(60);

/// A client of the local engine (one per test: each test has its own runtime).
async fn docker() -> Docker {
    Docker::connect_with_local_defaults()
        .expect("a Docker client can be made")
        .negotiate_version()
        .await
        .expect("the Docker engine answers (DockerLab::new checked it)")
}

/// An agent profile of the test image running `script` with its busybox `sh`.
fn container_agent(script: &str) -> AgentSettings {
    AgentSettings {
        image: agent_image(),
        ..sh_agent(script)
    }
}

/// Settings for a docker test: bound where containers reach it, the lab's installation
/// and container settings, a secret for the `ok` agent.
fn docker_settings(lab: &DockerLab) -> Settings {
    let mut s = test_settings(&random_prefix());
    s.server.bind = format!("{}:0", lab.callback_host());
    s.server.installation = lab.installation().to_string();
    s.spawner.kind = SpawnerKind::Docker;
    s.spawner.reconcile_secs = 1;
    s.spawner.docker = lab.settings(KEEP_FINISHED);
    let secrets = crate::helpers::temp_dir("secrets");
    std::fs::write(secrets.join("agent_secret"), "s3cret-value-42\n").unwrap();
    s.spawner.secrets_dir = secrets.display().to_string();
    s.agents = BTreeMap::from([
        (
            "ok".to_string(),
            AgentSettings {
                secret_env: BTreeMap::from([(
                    "AGENT_SECRET".to_string(),
                    "agent_secret".to_string(),
                )]),
                ..container_agent("[ \"$AGENT_SECRET\" = s3cret-value-42 ] && echo secret-ok")
            },
        ),
        (
            "sleep".to_string(),
            container_agent("echo sleeping; sleep 4; echo woke"),
        ),
        (
            "asker".to_string(),
            container_agent(
                "a=$(agent-runner ask 'Which one?' --choice x --choice y) || exit 9; echo \"got $a\"",
            ),
        ),
    ]);
    s
}

/// A dispatcher with the docker spawner, and the lab whose containers go with it.
struct DockerApp {
    // Declared first, so it stops before the lab removes its containers.
    app: Option<TestApp>,
    lab: DockerLab,
}

impl std::ops::Deref for DockerApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        self.app.as_ref().expect("the app runs")
    }
}

async fn docker_app() -> (DockerApp, Docker) {
    let lab = DockerLab::new().await;
    let app = start(docker_settings(&lab), None).await;
    let app = DockerApp {
        app: Some(app),
        lab,
    };
    (app, docker().await)
}

/// The names of the running containers of an installation.
async fn running(docker: &Docker, installation: &str) -> Vec<String> {
    let options = ListContainersOptions {
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

#[tokio::test]
#[ignore = "needs a Docker engine and the agentsmith-agent:test image: scripts/build-agent-image --tag agentsmith-agent:test"]
async fn a_secret_reaches_the_container_but_neither_the_job_record_nor_the_api_token_does() {
    let (app, docker) = docker_app().await;
    let id = app.submit("ok", "fix PROJ-1").await;
    let job = app.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert!(app.log_lines(&id).await.contains(&"secret-ok".to_string()));
    let handle = job.handle.expect("the job records its workload");
    let container = docker.inspect_container(&handle.name, None).await.unwrap();
    let env = container.config.unwrap().env.unwrap();
    assert!(env.contains(&"AGENT_SECRET=s3cret-value-42".to_string()));
    assert!(
        !env.iter().any(|e| e.contains("test-token")),
        "the API token must not reach a container"
    );
    let record = format!("{:?}{:?}", app.job(&id).await, app.events(&id).await);
    assert!(!record.contains("s3cret-value-42"));
}

#[tokio::test]
#[ignore = "needs a Docker engine and the agentsmith-agent:test image: scripts/build-agent-image --tag agentsmith-agent:test"]
async fn a_restarted_dispatcher_adopts_the_running_container() {
    let (mut first, docker) = docker_app().await;
    let id = first.submit("sleep", "outlive the dispatcher").await;
    first
        .wait_for(&id, "running", LONG, |j| j.state == JobState::Running)
        .await;
    let address = first.address.clone();
    let mut settings = first.ctx.settings.clone();
    first.app.take().unwrap().stop().await;
    // The container keeps running without a dispatcher.
    let installation = first.lab.installation().to_string();
    assert_eq!(
        running(&docker, &installation).await,
        [format!("agentsmith-{id}-1")]
    );

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
#[ignore = "needs a Docker engine and the agentsmith-agent:test image: scripts/build-agent-image --tag agentsmith-agent:test"]
async fn an_open_question_outlives_its_dispatcher_and_the_answer_arrives_once() {
    // The agent runs as the image's own user, apart from the runner: its question and
    // answer files cross that line.
    let (mut first, _docker) = docker_app().await;
    let id = first.submit("asker", "ask across a restart").await;
    first
        .wait_for(&id, "waiting for input", LONG, |j| {
            j.state == JobState::WaitingForInput
        })
        .await;
    let address = first.address.clone();
    let mut settings = first.ctx.settings.clone();
    first.app.take().unwrap().stop().await;

    settings.server.bind = address.trim_start_matches("http://").to_string();
    let second = start(settings, None).await;
    let job = second.job(&id).await;
    assert_eq!(job.state, JobState::WaitingForInput, "{job:#?}");
    let answered = second
        .http
        .post(format!("{}/v1/jobs/{id}/answer", second.address))
        .bearer_auth(crate::helpers::TOKEN)
        .json(&serde_json::json!({"text": "y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    let job = second.wait_for_end(&id, LONG).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(job.attempt, 1, "the container was adopted, not run again");
    let lines = second.log_lines(&id).await;
    let got: Vec<&String> = lines.iter().filter(|l| l.starts_with("got ")).collect();
    assert_eq!(
        got,
        ["got y"],
        "the answer reached the agent once: {lines:?}"
    );
    second.stop().await;
}

#[tokio::test]
#[ignore = "needs a Docker engine and the agentsmith-agent:test image: scripts/build-agent-image --tag agentsmith-agent:test"]
async fn a_record_whose_container_vanished_is_retried_with_the_reason() {
    let (app, docker) = docker_app().await;
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
    let reasons = app.state_reasons(&id).await;
    assert!(
        reasons.iter().any(|r| r.contains("workload not found")),
        "{reasons:?}"
    );
    assert!(docker.inspect_container(&name, None).await.is_err());
}

/// Creates a running container that sleeps, labelled like a workload of `installation`
/// whose job does not exist (and like the lab's, so the lab removes it).
async fn sleeper(docker: &Docker, lab: &DockerLab, name: &str, installation: &str) {
    let mut container_labels: HashMap<String, String> =
        lab.settings(KEEP_FINISHED).labels.into_iter().collect();
    container_labels.extend([
        (labels::MANAGED_BY.to_string(), "agentsmith".to_string()),
        (labels::JOB_ID.to_string(), "nosuchjob".to_string()),
        (labels::ATTEMPT.to_string(), "1".to_string()),
        (labels::INSTALLATION.to_string(), installation.to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some(agent_image()),
        entrypoint: Some(vec!["sleep".into(), "300".into()]),
        labels: Some(container_labels),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.to_string()),
        ..Default::default()
    };
    docker.create_container(Some(options), body).await.unwrap();
    docker.start_container(name, None).await.unwrap();
}

/// The watchdog's side of orphans (the backend's `list()` and `remove()` are the suite's):
/// a workload of this installation without a job record goes, another installation's
/// stays.
#[tokio::test]
#[ignore = "needs a Docker engine and the agentsmith-agent:test image: scripts/build-agent-image --tag agentsmith-agent:test"]
async fn the_watchdog_removes_an_orphan_container_and_leaves_other_installations_alone() {
    let (app, docker) = docker_app().await;
    let installation = app.lab.installation().to_string();
    let orphan = format!("agentsmith-orphan{}-1", &installation[1..]);
    sleeper(&docker, &app.lab, &orphan, &installation).await;
    let bystander = format!("agentsmith-bystander{}-1", &installation[1..]);
    sleeper(
        &docker,
        &app.lab,
        &bystander,
        &format!("{installation}-other"),
    )
    .await;
    let gone = wait_until(LONG, || async {
        docker.inspect_container(&orphan, None).await.is_err()
    })
    .await;
    assert!(gone, "the orphan container was not removed");
    assert!(
        docker.inspect_container(&bystander, None).await.is_ok(),
        "another installation's container must be left alone"
    );
}
