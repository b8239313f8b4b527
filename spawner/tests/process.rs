//! The process backend against real child processes, where a shell script stands in for
//! `agent-runner` to do what the real one never does (exit with a code of its own, ignore
//! SIGTERM). What every backend promises is the conformance suite's
//! (`conformance_process.rs`, with the real runner).
//!
//! With the feature `test-util`, the real runner (`cargo build -p agent-runner`) against the
//! stand-in dispatcher, for what only it does: an agent cannot make the backend signal a
//! process group that is not its own, nor outlive its job by leaving its group, nor by
//! killing its runner.

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
            agent_user: None,
            ca_bundle: Default::default(),
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
        credential: "t".into(),
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

/// The runner's output lines of a workload that has ended.
async fn output_of(backend: &ProcessSpawner, handle: &spawner::JobHandle) -> Vec<String> {
    futures::StreamExt::collect::<Vec<_>>(backend.logs(handle, false).await.unwrap())
        .await
        .into_iter()
        .map(|l| l.unwrap().line)
        .collect()
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
    let lines = output_of(&backend, &handle).await;
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
    let lines = output_of(&backend, &handle).await;
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
            agent_user: None,
            ca_bundle: Default::default(),
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

#[tokio::test]
async fn the_runner_gets_a_pipe_for_the_agents_process_group_and_agent_user_is_never_inherited() {
    let dir = temp_dir();
    let backend = backend(&dir);
    let mut job = spec(
        "pipe",
        "echo \"fd=$AGENTSMITH_PGID_FD user=${AGENTSMITH_AGENT_USER-unset} stdin=$(readlink /proc/self/fd/0 | cut -d: -f1)\"",
    );
    // A profile cannot make agents run as someone else behind the settings' back.
    job.profile
        .env
        .insert("AGENTSMITH_AGENT_USER".into(), "0:0".into());
    let handle = backend.spawn(&job).await.unwrap();
    wait_over(&backend, &handle).await;
    let lines = output_of(&backend, &handle).await;
    assert_eq!(lines, ["job pipe attempt 1", "fd=0 user=unset stdin=pipe"]);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The real runner against the stand-in dispatcher.
#[cfg(feature = "test-util")]
mod real_runner {
    use std::os::unix::process::CommandExt;
    use std::time::Duration;

    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use spawner::backend::process::{AgentUser, ProcessSettings, ProcessSpawner};
    use spawner::conformance::lab::ProcessLab;
    use spawner::conformance::{Lab, Trial, GRACE, KEEP_FINISHED};
    use spawner::secrets::SecretSource;
    use spawner::{Installation, JobSpawner, WorkloadStatus};
    use testkit::procs::{alive_with, marker};

    /// Waits until no live process holds `marker`; panics naming those that do.
    async fn none_alive_with(marker: &str, when: &str) {
        let gone = testkit::wait::wait_until_sync(Duration::from_secs(10), || {
            alive_with(marker).is_empty()
        })
        .await;
        let left = alive_with(marker);
        for pid in &left {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        assert!(
            gone,
            "{when}: processes with {marker} still alive: {left:?}"
        );
    }

    /// A process in a group of its own, which no job must be able to have signalled.
    struct Victim(std::process::Child);

    impl Victim {
        fn start() -> Self {
            let child = std::process::Command::new("sleep")
                .arg("1000")
                .process_group(0)
                .spawn()
                .unwrap();
            Self(child)
        }

        fn pgid(&self) -> u32 {
            self.0.id()
        }

        fn is_alive(&mut self) -> bool {
            self.0.try_wait().unwrap().is_none()
        }
    }

    impl Drop for Victim {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// The agent's part of the attack: the victim's group written to the file the
    /// process backend once trusted and into every pipe of its runner it can open.
    fn forge(victim: u32) -> String {
        format!(
            r#"echo {victim} > .agent-pgid
for fd in /proc/$PPID/fd/*; do
  case $(readlink "$fd") in pipe:*) (echo {victim} > "$fd") 2>/dev/null && echo "wrote to $fd";; esac
done
"#
        )
    }

    #[tokio::test]
    async fn an_agent_cannot_make_the_backend_signal_another_process_group() {
        let lab = ProcessLab::new();
        let trial = Trial::start(&lab).await;
        let mut victim = Victim::start();
        let own = marker();

        // Ending by itself: the runner cleans up and the backend kills what it recorded.
        let job = trial.job(&format!("{}echo forged", forge(victim.pgid())));
        let handle = trial.spawn(&job).await;
        assert_eq!(
            trial.ended(&handle).await,
            WorkloadStatus::Exited { code: 0 }
        );
        trial.printed(&job.job_id, "forged").await;
        assert!(victim.is_alive(), "the victim's group was signalled");

        // Killing its runner: the backend alone acts on the group it recorded, which is
        // the agent's own, whatever the agent wrote.
        let job = trial.job(&format!(
            "{}sleep {own} & echo forged; kill -9 $PPID; wait",
            forge(victim.pgid())
        ));
        let handle = trial.spawn(&job).await;
        assert_eq!(
            trial.ended(&handle).await,
            WorkloadStatus::Killed { signal: 9 }
        );
        none_alive_with(&own, "after the agent killed its runner").await;
        assert!(victim.is_alive(), "the victim's group was signalled");
    }

    #[tokio::test]
    async fn processes_that_leave_the_agents_group_end_with_the_job() {
        let lab = ProcessLab::new();
        let trial = Trial::start(&lab).await;
        let escape = |markers: &[String; 4]| {
            format!(
                "setsid sh -c 'sleep {}; true' & ( sleep {} & ) & ( setsid sleep {} & ) & setsid sh -c 'sleep {} & exit 0' &",
                markers[0], markers[1], markers[2], markers[3]
            )
        };

        // The agent exits by itself, leaving its escapees running.
        let markers = [marker(), marker(), marker(), marker()];
        let job = trial.job(&format!("{} sleep 1; echo left", escape(&markers)));
        let handle = trial.spawn(&job).await;
        trial.printed(&job.job_id, "left").await;
        assert_eq!(
            trial.ended(&handle).await,
            WorkloadStatus::Exited { code: 0 }
        );
        for marker in &markers {
            none_alive_with(marker, "after the agent exited").await;
        }

        // The job is stopped through the backend while the agent runs.
        let markers = [marker(), marker(), marker(), marker()];
        let own = marker();
        let job = trial.job(&format!(
            "{} sleep 1; echo escaped; exec sleep {own}",
            escape(&markers)
        ));
        let handle = trial.spawn(&job).await;
        trial.printed(&job.job_id, "escaped").await;
        trial.spawner.cancel(&handle, GRACE).await.unwrap();
        assert!(trial.ended(&handle).await.is_over());
        for marker in markers.iter().chain([&own]) {
            none_alive_with(marker, "after the job was stopped").await;
        }
    }

    #[tokio::test]
    async fn a_runner_killed_mid_run_takes_the_agents_group_along() {
        let lab = ProcessLab::new();
        let trial = Trial::start(&lab).await;
        let (agent, child) = (marker(), marker());
        let job = trial.job(&format!("sleep {child} & echo started; exec sleep {agent}"));
        let handle = trial.spawn(&job).await;
        trial.printed(&job.job_id, "started").await;
        assert_eq!(alive_with(&agent).len(), 1, "the agent is not running");

        let runner: i32 = handle.id.as_deref().unwrap().parse().unwrap();
        kill(Pid::from_raw(runner), Signal::SIGKILL).unwrap();

        assert_eq!(
            trial.ended(&handle).await,
            WorkloadStatus::Killed { signal: 9 }
        );
        none_alive_with(&agent, "after the runner was killed").await;
        none_alive_with(&child, "after the runner was killed").await;
    }

    /// The lab's installation, with no secrets.
    fn installation_of(lab: &ProcessLab) -> Installation {
        Installation {
            name: lab.installation().to_string(),
            secrets: SecretSource::default(),
            grace: GRACE,
        }
    }

    #[tokio::test]
    async fn agents_run_as_the_agent_user_who_cannot_reach_the_runner() {
        let lab = ProcessLab::new();
        let trial = Trial::start(&lab).await;
        let nobody = AgentUser {
            uid: 65534,
            gid: 65534,
        };
        let settings = ProcessSettings {
            agent_user: Some(nobody),
            ..lab.settings(KEEP_FINISHED)
        };
        let installation = installation_of(&lab);
        let spawner = ProcessSpawner::new(&settings, &installation);
        if !nix::unistd::geteuid().is_root() {
            let err = spawner.probe().await.unwrap_err();
            assert!(err.to_string().contains("root"), "{err}");
            return;
        }
        spawner.probe().await.unwrap();
        let mut victim = Victim::start();

        let job = trial.job(&format!(
            "echo \"uid=$(id -u) gid=$(id -g) groups=$(id -G)\"; touch mine && echo wrote; {}cat /proc/$PPID/environ > /dev/null 2>&1 || echo no-environ; echo done",
            forge(victim.pgid())
        ));
        let handle = spawner.spawn(&job).await.unwrap();
        for line in [
            "uid=65534 gid=65534 groups=65534",
            "wrote",
            "no-environ",
            "done",
        ] {
            trial.printed(&job.job_id, line).await;
        }
        assert!(
            trial
                .status_until(&spawner, &handle, "over", WorkloadStatus::is_over)
                .await
                == WorkloadStatus::Exited { code: 0 }
        );
        let lines = trial
            .dispatcher
            .lines_of(&job.job_id, contract::OutputStream::Stdout);
        assert!(
            !lines.iter().any(|l| l.starts_with("wrote to")),
            "the agent reached its runner's pipes: {lines:?}"
        );
        assert!(victim.is_alive());
    }

    #[tokio::test]
    async fn the_ca_bundle_reaches_the_agent_joined_with_the_public_roots() {
        let lab = ProcessLab::new();
        let trial = Trial::start(&lab).await;
        let ca = testkit::tls::TestCa::new("process-ca");
        let settings = ProcessSettings {
            ca_bundle: ca.ca_file(),
            ..lab.settings(KEEP_FINISHED)
        };
        let installation = installation_of(&lab);
        let spawner = ProcessSpawner::new(&settings, &installation);
        spawner.probe().await.unwrap();
        let job = trial.job(
            "echo \"node: $NODE_EXTRA_CA_CERTS\"; \
             tail -n +2 \"$SSL_CERT_FILE\" | grep -q . && echo joined; \
             grep -c 'BEGIN CERTIFICATE' \"$GIT_SSL_CAINFO\" | awk '{print ($1 > 1) ? \"public too\" : \"only one\"}'",
        );
        spawner.spawn(&job).await.unwrap();
        let (outcome, _) = trial.finished(&job.job_id).await;
        assert_eq!(outcome, contract::RunOutcome::Exited { code: 0 });
        assert_eq!(
            trial
                .dispatcher
                .lines_of(&job.job_id, contract::OutputStream::Stdout),
            [
                format!("node: {}", ca.ca_file().display()),
                "joined".to_string(),
                "public too".to_string()
            ]
        );

        // A bundle that cannot be read is refused before any job, naming its key.
        let missing = ProcessSettings {
            ca_bundle: "/nonexistent/agentsmith-ca.crt".into(),
            ..lab.settings(KEEP_FINISHED)
        };
        let err = ProcessSpawner::new(&missing, &installation)
            .probe()
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("spawner.process.ca_bundle"),
            "{err}"
        );
    }
}

#[cfg(not(feature = "test-util"))]
#[test]
#[ignore = "needs --features test-util: the real agent-runner against the stand-in dispatcher"]
fn the_real_runner_tests_need_the_test_util_feature() {}
