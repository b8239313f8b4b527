//! The process backend against real child processes, where a shell script stands in for
//! `agent-runner` to do what the real one never does (exit with a code of its own, ignore
//! SIGTERM). What every backend promises is the conformance suite's
//! (`conformance_process.rs`, with the real runner).

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use contract::Intent;
use spawner::backend::process::{ProcessSettings, ProcessSpawner};
use spawner::secrets::SecretSource;
use spawner::{AgentProfile, Installation, JobSpawner, JobSpec, WorkloadStatus};

fn installation(secrets: SecretSource) -> Installation {
    Installation {
        name: "test".into(),
        secrets,
        grace: Duration::from_secs(1),
    }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spawner-test-{:016x}", rand_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// A fake runner: runs `$FAKE` from the profile env with sh.
fn backend(dir: &std::path::Path) -> ProcessSpawner {
    let runner = dir.join("fake-runner");
    std::fs::write(&runner, "#!/bin/sh\necho \"job $AGENTSMITH_JOB_ID attempt $AGENTSMITH_ATTEMPT\"\nexec sh -c \"$FAKE\"\n").unwrap();
    std::fs::set_permissions(&runner, std::fs::Permissions::from_mode(0o755)).unwrap();
    ProcessSpawner::new(
        &ProcessSettings {
            runner_path: runner,
            work_root: dir.join("work"),
            keep_finished_secs: 60,
        },
        &installation(SecretSource::new(Some(dir.join("secrets")))),
    )
}

fn spec(id: &str, script: &str) -> JobSpec {
    JobSpec {
        job_id: id.into(),
        attempt: 1,
        intent: Intent {
            task: "t".into(),
            ..Intent::default()
        },
        profile: AgentProfile {
            name: "p".into(),
            command: vec!["true".into()],
            env: [("FAKE".to_string(), script.to_string())].into(),
            timeout_secs: 60,
            ..AgentProfile::default()
        },
        callback_url: "http://127.0.0.1:9/none".into(),
        token: "t".into(),
        heartbeat_secs: 1,
        grace_secs: 1,
    }
}

async fn wait_over(backend: &ProcessSpawner, handle: &spawner::JobHandle) -> WorkloadStatus {
    for _ in 0..200 {
        let status = backend.status(handle).await.unwrap();
        if status.is_over() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("workload {} did not end", handle.name);
}

#[tokio::test]
async fn a_workload_reports_its_exit_code_and_output() {
    let dir = temp_dir();
    let backend = backend(&dir);
    backend.probe().await.unwrap();
    let handle = backend
        .spawn(&spec("abc", "echo hello; exit 7"))
        .await
        .unwrap();
    assert_eq!(handle.name, "agentsmith-abc-1");
    assert_eq!(
        wait_over(&backend, &handle).await,
        WorkloadStatus::Exited { code: 7 }
    );
    let lines: Vec<String> =
        futures::StreamExt::collect::<Vec<_>>(backend.logs(&handle, false).await.unwrap())
            .await
            .into_iter()
            .map(|l| l.unwrap().line)
            .collect();
    assert_eq!(lines, ["job abc attempt 1", "hello"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn secret_env_values_come_from_the_secrets_dir_and_a_missing_one_is_named() {
    let dir = temp_dir();
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/gh_token"), "tok-123\n").unwrap();
    let backend = backend(&dir);
    let mut job = spec("sec", "echo \"token=$GITHUB_TOKEN\"");
    job.profile.secret_env = [("GITHUB_TOKEN".to_string(), "gh_token".to_string())].into();
    let handle = backend.spawn(&job).await.unwrap();
    wait_over(&backend, &handle).await;
    let lines: Vec<String> =
        futures::StreamExt::collect::<Vec<_>>(backend.logs(&handle, false).await.unwrap())
            .await
            .into_iter()
            .map(|l| l.unwrap().line)
            .collect();
    assert_eq!(lines, ["job sec attempt 1", "token=tok-123"]);

    let mut missing = spec("nosec", "true");
    missing.profile.secret_env = [("X".to_string(), "absent".to_string())].into();
    let err = backend.spawn(&missing).await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("AGENTSMITH_SECRET_ABSENT"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn cancel_stops_a_workload_that_ignores_sigterm_and_is_idempotent() {
    let dir = temp_dir();
    let backend = backend(&dir);
    let handle = backend
        .spawn(&spec("stubborn", "trap '' TERM; sleep 30"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    backend
        .cancel(&handle, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(matches!(
        backend.status(&handle).await.unwrap(),
        WorkloadStatus::Killed { signal: 9 }
    ));
    assert!(started.elapsed() < Duration::from_secs(20));
    backend
        .cancel(&handle, Duration::from_millis(200))
        .await
        .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn probe_names_a_missing_runner() {
    let backend = ProcessSpawner::new(
        &ProcessSettings {
            runner_path: "/nonexistent/agent-runner".into(),
            work_root: std::env::temp_dir(),
            keep_finished_secs: 1,
        },
        &installation(SecretSource::default()),
    );
    let err = backend.probe().await.unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/agent-runner"),
        "{err}"
    );
    assert!(err.is_retryable());
}
