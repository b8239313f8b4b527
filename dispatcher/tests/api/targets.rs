//! Many spawner targets in one dispatcher (`spawners:`), with real `agent-runner` processes
//! on process targets: routing by profile and by project, a full target overflowing to the
//! next or making its jobs wait, a target whose probe fails skipped until it passes again,
//! and each attempt's target in the record, the events, `/ready` and `/metrics`. The same
//! on Docker and on two Kubernetes namespaces is in `targets_lab.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentsmith::settings::agents::Overflow;
use agentsmith::settings::{AgentSettings, Settings};
use queue::{JobEvent, JobState};
use serde_json::json;

use std::sync::Arc;

use spawner::recording::RecordingSpawner;
use spawner::{Fleet, Target};

use crate::helpers::{random_prefix, runner_path, sh_agent, spawn_app, start_on, temp_dir};
use crate::helpers::{test_settings, wait_until, TestApp};

/// How long a process job may take to reach what the test waits for.
const WAIT: Duration = Duration::from_secs(20);

/// A profile whose agent runs until `release` exists.
fn held(release: &Path, targets: &[&str], overflow: Overflow) -> AgentSettings {
    AgentSettings {
        targets: targets.iter().map(|t| t.to_string()).collect(),
        overflow,
        ..sh_agent(&format!(
            "while [ ! -e {} ]; do sleep 0.1; done; echo released",
            release.display()
        ))
    }
}

/// A process target of its own work root, with at most `cap` jobs, running the runner at
/// `runner`.
fn process_target(s: &Settings, runner: PathBuf, cap: u32) -> spawner::SpawnerSettings {
    let mut target = s.spawner.clone();
    target.max_concurrent_jobs = cap;
    target.probe_secs = 1;
    target.process.runner_path = runner;
    target.process.work_root = temp_dir("target-work");
    target
}

/// The target the job's attempt ran on ("" before its spawn is recorded).
pub fn target_of(job: &queue::Job) -> String {
    job.handle
        .as_ref()
        .map(|h| h.target.clone())
        .unwrap_or_default()
}

/// The target the job runs on, once it runs (within `limit`).
pub async fn running_on(app: &TestApp, id: &str, limit: Duration) -> String {
    let job = app.wait_for_state(id, JobState::Running, limit).await;
    target_of(&job)
}

#[tokio::test]
async fn jobs_run_where_their_profile_or_project_routes_them_and_overflow_when_a_target_is_full() {
    let release = temp_dir("release").join("go");
    let app = spawn_app(|s| {
        s.spawners = BTreeMap::from([
            ("small".to_string(), process_target(s, runner_path(), 1)),
            ("big".to_string(), process_target(s, runner_path(), 0)),
        ]);
        s.agents.insert(
            "spill".into(),
            held(&release, &["small", "big"], Overflow::Next),
        );
        s.agents
            .insert("patient".into(), held(&release, &["small"], Overflow::Wait));
        s.agents
            .insert("solo".into(), held(&release, &[], Overflow::Next));
        let mut project = agentsmith::settings::ProjectSettings {
            agent: "ok".into(),
            targets: vec!["big".into()],
            ..Default::default()
        };
        project.checkout.enabled = false;
        s.projects.insert("routed".into(), project);
    })
    .await;

    // The first takes the small target's one slot; the second spills over to the next.
    // A job whose only route has no cap takes no slot to start, yet is counted once it runs.
    let solo = app.submit("solo", "counted on the default target").await;
    assert_eq!(running_on(&app, &solo, WAIT).await, "default");
    let first = app.submit("spill", "first").await;
    assert_eq!(running_on(&app, &first, WAIT).await, "small");
    let second = app.submit("spill", "second").await;
    assert_eq!(running_on(&app, &second, WAIT).await, "big");

    // A profile that waits for its one target: queued, saying why, while the target is full.
    let patient = app.submit("patient", "waits").await;
    let waiting = app
        .wait_for(&patient, "a reason to wait", WAIT, |j| {
            j.state == JobState::Queued
                && j.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("small is full (1 of 1)"))
        })
        .await;
    assert_eq!(waiting.attempt, 1, "waiting uses up no attempt");

    // The project's own targets win over its profile's; no route at all is the default.
    let (status, body) = app
        .post_job(json!({"project": "routed", "task": "by project"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let by_project = body["id"].as_str().unwrap().to_string();
    let plain = app.submit("ok", "by default").await;
    for (id, target) in [(&by_project, "big"), (&plain, "default")] {
        let job = app.wait_for_state(id, JobState::Succeeded, WAIT).await;
        assert_eq!(target_of(&job), target, "{job:#?}");
        let spawned: Vec<String> = app
            .events(id)
            .await
            .into_iter()
            .filter_map(|(_, e)| match e {
                JobEvent::Spawned { target, .. } => Some(target),
                _ => None,
            })
            .collect();
        assert_eq!(spawned, [target], "the spawned event names the target");
    }

    // The API shows the target of the attempt, /ready and /metrics each target's jobs.
    let shown = app.get_json(&format!("/v1/jobs/{first}")).await;
    assert_eq!(shown["handle"]["target"], "small", "{shown}");
    assert_eq!(shown["target"], "small", "{shown}");
    let ready = app.get_json("/ready").await;
    let targets = ready["targets"].as_array().expect("targets in /ready");
    let small = targets.iter().find(|t| t["name"] == "small").unwrap();
    assert_eq!(small["jobs"], 1, "{ready}");
    assert_eq!(small["max_concurrent_jobs"], 1, "{ready}");
    assert_eq!(small["state"], "up", "{ready}");
    let default = targets.iter().find(|t| t["name"] == "default").unwrap();
    assert_eq!(default["jobs"], 1, "the solo job: {ready}");
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("agentsmith_target_jobs{target=\"small\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agentsmith_target_up{target=\"big\",backend=\"process\"} 1"),
        "{metrics}"
    );

    // Once the first ends, the patient one gets the small target's slot.
    std::fs::write(&release, "").unwrap();
    for id in [&first, &second] {
        let job = app.wait_for_state(id, JobState::Succeeded, WAIT).await;
        assert_eq!(job.attempt, 1);
    }
    let patient = app
        .wait_for_state(&patient, JobState::Succeeded, Duration::from_secs(30))
        .await;
    assert_eq!(target_of(&patient), "small", "{patient:#?}");
    assert_eq!(patient.attempt, 1);
    let solo = app.wait_for_state(&solo, JobState::Succeeded, WAIT).await;
    assert_eq!(solo.target.as_deref(), Some("default"), "{solo:#?}");
    let slots = app
        .ctx
        .queue
        .target_load(&["small", "big", "default"])
        .await;
    assert_eq!(slots.unwrap(), [0, 0, 0], "every slot is given back");
}

#[tokio::test]
async fn a_target_that_fails_its_probe_gets_no_new_jobs_until_it_passes_again() {
    // The flaky target's runner is a link that does not exist yet: its probe fails.
    let link = temp_dir("flaky").join("agent-runner");
    let app = spawn_app(|s| {
        s.spawners = BTreeMap::from([
            ("flaky".to_string(), process_target(s, link.clone(), 0)),
            ("steady".to_string(), process_target(s, runner_path(), 0)),
        ]);
        let mut either = sh_agent("echo ran");
        either.targets = vec!["flaky".into(), "steady".into()];
        s.agents.insert("either".into(), either);
    })
    .await;

    let ready = app.get_json("/ready").await;
    assert_eq!(ready["status"], "ready", "one bad target of three: {ready}");
    let flaky = ready["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "flaky")
        .unwrap()
        .clone();
    assert_eq!(flaky["state"], "down", "{ready}");
    assert!(
        flaky["error"]
            .as_str()
            .unwrap()
            .contains("agent-runner not found"),
        "{ready}"
    );
    let overview = app.get_json("/v1/overview").await;
    assert!(
        overview["targets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "flaky" && t["state"] == "down"),
        "{overview}"
    );

    let id = app.submit("either", "skips the flaky target").await;
    let job = app.wait_for_state(&id, JobState::Succeeded, WAIT).await;
    assert_eq!(target_of(&job), "steady", "{job:#?}");
    assert_eq!(
        job.attempt, 1,
        "no attempt was spent on the target that is down"
    );

    // The runner appears; within a probe period the target is back in service.
    std::os::unix::fs::symlink(runner_path(), &link).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            app.ctx
                .spawner
                .get("flaky")
                .is_some_and(|t| t.health() == spawner::Health::Up)
        })
        .await,
        "the flaky target did not come back"
    );
    let id = app.submit("either", "back on the first").await;
    let job = app.wait_for_state(&id, JobState::Succeeded, WAIT).await;
    assert_eq!(target_of(&job), "flaky", "{job:#?}");
}

#[tokio::test]
async fn a_job_whose_target_goes_down_while_its_runner_is_silent_is_retried_on_the_next() {
    // "lost" records the spawn and runs nothing: no runner will ever report.
    let lost = Arc::new(RecordingSpawner::new());
    let mut s = test_settings(&random_prefix());
    s.spawner.probe_secs = 1;
    let mut either = sh_agent("echo ran");
    either.targets = vec!["lost".into(), spawner::DEFAULT_TARGET.into()];
    s.agents.insert("either".into(), either);
    let local = spawner::from_settings(&s.spawner, &s.server.installation).unwrap();
    let fleet = Fleet::new([
        Target::new("lost", lost.clone(), 0),
        Target::new(spawner::DEFAULT_TARGET, local, 0),
    ]);
    let app = start_on(s, Some(fleet)).await;
    let id = app.submit("either", "goes to lost first").await;
    let job = app
        .wait_for(&id, "its spawn on lost", WAIT, |j| j.handle.is_some())
        .await;
    assert_eq!(target_of(&job), "lost", "{job:#?}");

    // Its API stops answering: the silent attempt is given up at its lease's end and the
    // next runs where a runner reports.
    lost.set_unreachable(true);
    let job = app
        .wait_for_state(&id, JobState::Succeeded, Duration::from_secs(40))
        .await;
    assert_eq!(job.attempt, 2, "{job:#?}");
    assert_eq!(target_of(&job), spawner::DEFAULT_TARGET, "{job:#?}");
    let reasons = app.state_reasons(&id).await;
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("target lost is unreachable")),
        "{reasons:?}"
    );
    app.stop().await;
}
