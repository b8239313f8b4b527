//! A job's life through the process spawner: success, failure, retries, cancel, timeout.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use queue::{JobEvent, JobState};

use crate::helpers::*;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_job_runs_through_the_process_spawner_and_succeeds_with_its_result_and_logs() {
    let app = spawn_app(|_| {}).await;
    let id = app.submit("ok", "PROJ-1").await;
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(job.attempt, 1);
    assert_eq!(job.exit_code, Some(0));
    let result = job.result.expect("the agent left a result");
    assert_eq!(result.summary.as_deref(), Some("fixed PROJ-1"));
    assert_eq!(result.links[0].url, "http://example.invalid/pr/1");
    let lines = app.log_lines(&id).await;
    assert!(
        lines.contains(&"working on PROJ-1".to_string()),
        "{lines:?}"
    );
    assert!(lines.contains(&"to-stderr".to_string()), "{lines:?}");
    let states: Vec<JobState> = app
        .events(&id)
        .await
        .iter()
        .filter_map(|(_, e)| e.state())
        .collect();
    assert_eq!(
        states,
        [
            JobState::Queued,
            JobState::Starting,
            JobState::Running,
            JobState::Succeeded
        ]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_exiting_non_zero_fails_the_job_with_its_exit_code_and_is_not_retried() {
    let app = spawn_app(|_| {}).await;
    let id = app.submit("fail", "break it").await;
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.exit_code, Some(3));
    assert_eq!(job.attempt, 1, "an agent failure is not retried");
    assert_eq!(job.reason.as_deref(), Some("agent exited with code 3"));
    assert!(app
        .log_lines(&id)
        .await
        .contains(&"about to fail".to_string()));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_killed_with_sigkill_is_retried_after_its_lease_expires_and_succeeds_on_attempt_2() {
    let app = spawn_app(|s| {
        s.agents.insert(
            "flaky".into(),
            sh_agent(
                "if [ \"$AGENTSMITH_ATTEMPT\" = 1 ]; then echo first; sleep 60; fi; echo second",
            ),
        );
    })
    .await;
    let id = app.submit("flaky", "survive").await;
    let job = app.wait_for_state(&id, JobState::Running, LIMIT).await;
    let pid: i32 = job
        .handle
        .and_then(|h| h.id)
        .and_then(|p| p.parse().ok())
        .expect("a process handle has a pid");
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("the runner can be killed");
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(job.attempt, 2);
    let retried = app.events(&id).await.into_iter().any(|(_, e)| {
        matches!(e, JobEvent::State { state: JobState::Retrying, reason: Some(ref r), .. } if r.contains("runner lost"))
    });
    assert!(retried, "the retry names the lost runner");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_attempts_fail_the_job_with_the_reason_and_keep_it_inspectable() {
    let app = spawn_app(|s| {
        s.queue.max_attempts = 2;
        s.spawner.process.runner_path = "/nonexistent/agent-runner".into();
    })
    .await;
    let id = app.submit("ok", "never starts").await;
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempt, 2);
    let reason = job.reason.expect("a failed job says why");
    assert!(
        reason.contains("spawn failed") && reason.contains("gave up after 2 attempts"),
        "{reason}"
    );
    let retrying = app
        .events(&id)
        .await
        .iter()
        .filter(|(_, e)| e.state() == Some(JobState::Retrying))
        .count();
    assert_eq!(retrying, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_cancels_it_and_stops_the_agent_within_the_grace_period() {
    let dir = temp_dir("cancel");
    let pidfile = dir.join("agent.pid");
    let app = spawn_app(|s| {
        let mut agent = sh_agent("echo $$ > \"$PIDFILE\"; echo started; exec sleep 60");
        agent
            .env
            .insert("PIDFILE".into(), pidfile.display().to_string());
        s.agents.insert("sleepy".into(), agent);
    })
    .await;
    let id = app.submit("sleepy", "wait").await;
    app.wait_for_state(&id, JobState::Running, LIMIT).await;
    assert!(
        wait_until(LIMIT, || async {
            std::fs::read_to_string(&pidfile).is_ok_and(|p| !p.trim().is_empty())
        })
        .await
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let response = app.act(&id, "cancel").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["state"], "cancelled");
    // Grace is 2 s; allow scheduling slack on a busy machine.
    assert!(
        wait_until(Duration::from_secs(8), || async { process_gone(pid) }).await,
        "agent {pid} still running after cancel"
    );
    let job = app.job(&id).await;
    assert_eq!(
        job.state,
        JobState::Cancelled,
        "late runner events do not change a cancelled job"
    );
    // Sent again (a retry after a 503 whose write had landed, say), the cancel is done.
    let again = app.act(&id, "cancel").await;
    assert_eq!(again.status(), 200);
    let body: serde_json::Value = again.json().await.unwrap();
    assert_eq!(body["state"], "cancelled");
    app.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_running_past_its_time_limit_is_timed_out() {
    let app = spawn_app(|s| {
        let mut agent = sh_agent("echo slow; exec sleep 60");
        agent.timeout_secs = 1;
        s.agents.insert("slow".into(), agent);
    })
    .await;
    let id = app.submit("slow", "take forever").await;
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::TimedOut, "{job:#?}");
    let cancel = app.act(&id, "cancel").await;
    assert_eq!(
        cancel.status(),
        409,
        "a job that ended otherwise cannot be cancelled"
    );
    assert_eq!(job.attempt, 1);
    assert!(job.reason.unwrap().contains("time limit of 1s"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_failed_job_runs_it_again_as_a_new_attempt() {
    let app = spawn_app(|_| {}).await;
    let id = app.submit("fail", "again").await;
    app.wait_for_end(&id, LIMIT).await;
    let response = app.act(&id, "retry").await;
    assert_eq!(response.status(), 202);
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempt, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_dying_before_it_reports_is_noticed_within_a_lease_not_the_start_timeout() {
    let app = spawn_app(|s| {
        s.queue.max_attempts = 2;
        s.queue.start_timeout_secs = 120;
        // A "runner" that exits at once without a word.
        s.spawner.process.runner_path = "/bin/false".into();
    })
    .await;
    let id = app.submit("ok", "silent").await;
    // Two leases of 3 s and a backoff of ~1 s: far less than one start timeout.
    let job = app.wait_for_end(&id, Duration::from_secs(40)).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempt, 2);
    let reason = job.reason.unwrap();
    assert!(
        reason.contains("runner lost: exited with code 1"),
        "{reason}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_expire_after_the_retention_and_leave_the_index() {
    let app = spawn_app(|s| s.queue.retention_secs = 1).await;
    let id = app.submit("ok", "short-lived").await;
    app.wait_for_end(&id, LIMIT).await;
    let gone = wait_until(Duration::from_secs(10), || async {
        app.ctx.queue.get(&id).await.unwrap().is_none()
    })
    .await;
    assert!(gone, "the record expired");
    assert!(
        app.events(&id).await.is_empty(),
        "the events expired with it"
    );
    app.ctx.queue.sweep().await.unwrap();
    assert!(app
        .ctx
        .queue
        .list(&queue::JobFilter::default(), None, 10)
        .await
        .unwrap()
        .jobs
        .is_empty());
    let response = app
        .http
        .get(format!("{}/v1/jobs/{id}", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    app.stop().await;
}
