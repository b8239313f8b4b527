//! The conformance suite against the `docker` backend on the local engine, then what only
//! this backend does: the locked-down container as the engine reports it, and a missing
//! image refused at once. Every container carries the lab's label and is removed when its
//! test ends, pass or fail.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bollard::Docker;
use contract::{labels, OutputStream, RunOutcome};
use spawner::backend::docker::DockerSpawner;
use spawner::conformance::lab::{DockerLab, LAB_LABEL, RUN_LABEL};
use spawner::conformance::{self, Lab, Trial, KEEP_FINISHED};
use spawner::secrets::SecretSource;
use spawner::{JobHandle, JobSpawner, Resources, WorkloadStatus};

#[tokio::test]
#[ignore = "needs a Docker engine and the agentsmith-agent:test image: scripts/build-agent-image --tag agentsmith-agent:test"]
async fn a_job_runs_to_its_end_and_reports_its_output_and_result() {
    let lab = DockerLab::new().await;
    conformance::a_job_runs_to_its_end_and_reports_its_output_and_result(&lab).await;
}

#[tokio::test]
#[ignore = "needs a Docker engine and the agentsmith-agent:test image: scripts/build-agent-image --tag agentsmith-agent:test"]
async fn a_failing_agent_is_reported_with_its_exit_code_and_its_workload_ends() {
    let lab = DockerLab::new().await;
    conformance::a_failing_agent_is_reported_with_its_exit_code_and_its_workload_ends(&lab).await;
}

#[tokio::test]
#[ignore = "needs a Docker engine and the agentsmith-agent:test image: scripts/build-agent-image --tag agentsmith-agent:test"]
async fn an_agent_over_its_memory_limit_is_oom_killed_where_limits_are_enforced() {
    let lab = DockerLab::new().await;
    conformance::an_agent_over_its_memory_limit_is_oom_killed_where_limits_are_enforced(&lab).await;
}

#[tokio::test]
#[ignore = "needs a Docker engine and the agentsmith-agent:test image: scripts/build-agent-image --tag agentsmith-agent:test"]
async fn cancel_stops_a_running_agent_within_its_grace_period_and_is_idempotent() {
    let lab = DockerLab::new().await;
    conformance::cancel_stops_a_running_agent_within_its_grace_period_and_is_idempotent(&lab).await;
}

#[tokio::test]
#[ignore = "needs a Docker engine and the agentsmith-agent:test image: scripts/build-agent-image --tag agentsmith-agent:test"]
async fn a_finished_workload_is_removed_after_its_time_to_live() {
    let lab = DockerLab::new().await;
    conformance::a_finished_workload_is_removed_after_its_time_to_live(&lab).await;
}

#[tokio::test]
#[ignore = "needs a Docker engine and the agentsmith-agent:test image: scripts/build-agent-image --tag agentsmith-agent:test"]
async fn spawning_an_attempt_again_adopts_its_workload_which_runs_once() {
    let lab = DockerLab::new().await;
    conformance::spawning_an_attempt_again_adopts_its_workload_which_runs_once(&lab).await;
}

#[tokio::test]
#[ignore = "needs a Docker engine and the agentsmith-agent:test image: scripts/build-agent-image --tag agentsmith-agent:test"]
async fn a_workload_no_dispatcher_owns_is_listed_and_removed() {
    let lab = DockerLab::new().await;
    conformance::a_workload_no_dispatcher_owns_is_listed_and_removed(&lab).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a Docker engine and the agentsmith-agent:test image: scripts/build-agent-image --tag agentsmith-agent:test"]
async fn twenty_attempts_spawned_five_at_a_time_each_run_exactly_once() {
    let lab = DockerLab::new().await;
    conformance::twenty_attempts_spawned_five_at_a_time_each_run_exactly_once(&lab).await;
}

// What only the docker backend does.

/// The agent of the locked-down check: what it can see and do, as lines.
const PROBE: &str = "[ \"$AGENT_SECRET\" = s3cret-value-42 ] && echo secret-ok; \
     echo \"working as $(id -u)\"; \
     if touch /root-write-test 2>/dev/null; then echo root-writable; else echo root-read-only; fi; \
     touch \"$PWD/work-write-test\" && echo workdir-writable";

#[tokio::test]
#[ignore = "needs a Docker engine and the agentsmith-agent:test image: scripts/build-agent-image --tag agentsmith-agent:test"]
async fn a_container_runs_locked_down_with_its_limits_labels_and_secrets() {
    let lab = DockerLab::new().await;
    let secrets = testkit::temp::TempDir::new("conformance-secrets");
    std::fs::write(secrets.path().join("agent_secret"), "s3cret-value-42\n").unwrap();
    let trial = Trial::start(&lab).await;
    let installation = DockerLab::installation_of(
        lab.installation(),
        SecretSource::new(Some(secrets.path().to_path_buf())),
    );
    let spawner = DockerSpawner::new(lab.settings(KEEP_FINISHED), &installation);
    let mut profile = lab.profile(PROBE);
    profile.secret_env = [("AGENT_SECRET".to_string(), "agent_secret".to_string())].into();
    // The profile's memory limit wins over the settings' 256Mi; CPUs and processes are
    // the settings'.
    profile.resources = Resources {
        memory_bytes: Some(96 << 20),
        ..Resources::default()
    };
    let job = trial.job_with(profile);
    let handle = spawner.spawn(&job).await.unwrap();
    let (outcome, _) = trial.finished(&job.job_id).await;
    assert_eq!(outcome, RunOutcome::Exited { code: 0 });
    assert_eq!(
        trial.dispatcher.lines_of(&job.job_id, OutputStream::Stdout),
        [
            "secret-ok",
            "working as 10001",
            "root-read-only",
            "workdir-writable"
        ]
    );

    let docker = Docker::connect_with_local_defaults().unwrap();
    let container = docker.inspect_container(&handle.name, None).await.unwrap();
    let config = container.config.unwrap();
    let host = container.host_config.unwrap();
    assert_eq!(config.user.as_deref(), Some("10001:10001"));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges".to_string()])
    );
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.privileged, Some(false));
    assert_eq!(host.init, Some(true));
    assert_eq!(host.memory, Some(96 << 20));
    assert_eq!(host.memory_swap, Some(96 << 20), "no swap beyond the limit");
    assert_eq!(host.nano_cpus, Some(1_000_000_000));
    assert_eq!(host.pids_limit, Some(128));
    let container_labels = config.labels.unwrap();
    assert_eq!(container_labels[labels::MANAGED_BY], "agentsmith");
    assert_eq!(container_labels[labels::JOB_ID], job.job_id);
    assert_eq!(container_labels[labels::ATTEMPT], "1");
    assert_eq!(container_labels[labels::INSTALLATION], installation.name);
    assert!(container_labels.contains_key(RUN_LABEL));
    assert!(container_labels.contains_key(LAB_LABEL));
    // The secret reaches the container's environment; nothing of this process's own
    // environment does (cargo gives a test process CARGO_* variables).
    let env = config.env.unwrap();
    assert!(env.contains(&"AGENT_SECRET=s3cret-value-42".to_string()));
    assert!(env.contains(&format!("AGENTSMITH_CALLBACK_URL={}", job.callback_url)));
    assert!(!env.iter().any(|e| e.starts_with("CARGO_")), "{env:?}");
}

#[tokio::test]
#[ignore = "needs a Docker engine and the agentsmith-agent:test image: scripts/build-agent-image --tag agentsmith-agent:test"]
async fn a_missing_image_with_pull_policy_never_is_refused_at_once_with_the_reason() {
    let lab = DockerLab::new().await;
    let trial = Trial::start(&lab).await;
    let mut profile = lab.profile("true");
    profile.image = Some("agentsmith-test-no-such-image:1".into());
    let job = trial.job_with(profile);
    let asked = Instant::now();
    let err = trial.spawner.spawn(&job).await.unwrap_err();
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        !err.is_retryable(),
        "a missing image is not worth retrying: {err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("agentsmith-test-no-such-image:1")
            && message.contains("pull_policy is Never"),
        "{message}"
    );
    let never = JobHandle {
        backend: "docker".into(),
        name: job.workload_name(),
        job_id: job.job_id.clone(),
        attempt: 1,
        id: None,
        target: contract::DEFAULT_TARGET.into(),
    };
    let status = trial.spawner.status(&never).await.unwrap();
    assert_eq!(
        status,
        WorkloadStatus::NotFound,
        "a refused spawn left a container"
    );
}

#[tokio::test]
#[ignore = "needs a Docker engine and the agentsmith-agent:test image: scripts/build-agent-image --tag agentsmith-agent:test"]
async fn the_ca_bundle_is_mounted_read_only_and_joined_for_the_agent() {
    let lab = DockerLab::new().await;
    let trial = Trial::start(&lab).await;
    let ca = testkit::tls::TestCa::new("docker-ca");
    let mut settings = lab.settings(KEEP_FINISHED);
    settings.ca_bundle = ca.ca_file().display().to_string();
    let installation = DockerLab::installation_of(lab.installation(), SecretSource::default());
    let spawner = DockerSpawner::new(settings, &installation);
    let job = trial.job(
        "echo \"node: $NODE_EXTRA_CA_CERTS\"; \
         [ \"$(tail -n 2 \"$SSL_CERT_FILE\")\" = \"$(tail -n 2 \"$NODE_EXTRA_CA_CERTS\")\" ] && echo the bundle ends with the extra CA; \
         echo x >> \"$NODE_EXTRA_CA_CERTS\" 2>/dev/null || echo read-only",
    );
    spawner.spawn(&job).await.unwrap();
    let (outcome, _) = trial.finished(&job.job_id).await;
    assert_eq!(outcome, RunOutcome::Exited { code: 0 });
    assert_eq!(
        trial.dispatcher.lines_of(&job.job_id, OutputStream::Stdout),
        [
            "node: /etc/agentsmith/ca/extra.crt",
            "the bundle ends with the extra CA",
            "read-only"
        ]
    );
}
