//! Several dispatchers on one Redis: reclaiming a dead one's claims, sharing work.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use queue::{JobEvent, JobState};
use spawner::{JobHandle, JobSpawner, JobSpec, LogStream, WorkloadStatus};

use crate::helpers::*;

/// A spawner whose spawn never returns: its dispatcher "dies" between claim and record.
struct StuckSpawner;

#[async_trait]
impl JobSpawner for StuckSpawner {
    fn backend(&self) -> &'static str {
        "stuck"
    }
    fn survives_restart(&self) -> bool {
        false
    }
    async fn probe(&self) -> spawner::Result<()> {
        Ok(())
    }
    async fn spawn(&self, _job: &JobSpec) -> spawner::Result<JobHandle> {
        std::future::pending().await
    }
    async fn status(&self, _h: &JobHandle) -> spawner::Result<WorkloadStatus> {
        Ok(WorkloadStatus::NotFound)
    }
    async fn logs(&self, _h: &JobHandle, _f: bool) -> spawner::Result<LogStream> {
        Ok(Box::pin(futures::stream::empty()))
    }
    async fn cancel(&self, _h: &JobHandle, _g: Duration) -> spawner::Result<()> {
        Ok(())
    }
    async fn list(&self) -> spawner::Result<Vec<JobHandle>> {
        Ok(Vec::new())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_left_unrecorded_by_a_dead_dispatcher_is_reclaimed_and_the_job_runs_exactly_once() {
    let dir = temp_dir("reclaim");
    let runs = dir.join("runs");
    let prefix = random_prefix();
    let mut settings = test_settings(&prefix);
    let mut agent = sh_agent("echo run >> \"$RUNS\"; echo ran");
    agent.env.insert("RUNS".into(), runs.display().to_string());
    settings.agents.insert("count".into(), agent);
    let first = start(settings.clone(), Some(Arc::new(StuckSpawner))).await;
    let id = first.submit("count", "once").await;
    // Claimed and admitted, never recorded.
    first
        .wait_for_state(&id, JobState::Starting, Duration::from_secs(30))
        .await;
    first.task.abort();
    first.shutdown.cancel();

    let second = start(settings, None).await;
    let job = second.wait_for_end(&id, Duration::from_secs(60)).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(job.attempt, 1, "a reclaim continues the same attempt");
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap().lines().count(),
        1,
        "the agent ran once"
    );
    let spawned = second
        .events(&id)
        .await
        .iter()
        .filter(|(_, e)| matches!(e, JobEvent::Spawned { .. }))
        .count();
    assert_eq!(spawned, 1);
    second.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_on_one_redis_run_each_of_fifty_jobs_once() {
    let dir = temp_dir("pair");
    let runs = dir.join("runs");
    let prefix = random_prefix();
    let mut settings = test_settings(&prefix);
    settings.queue.max_concurrent_jobs = 8;
    let mut agent = sh_agent("echo \"$AGENTSMITH_JOB_ID\" >> \"$RUNS\"");
    agent.env.insert("RUNS".into(), runs.display().to_string());
    settings.agents.insert("count".into(), agent);
    let a = start(settings.clone(), None).await;
    let b = start(settings, None).await;
    let mut ids = Vec::new();
    for n in 0..50 {
        let app = if n % 2 == 0 { &a } else { &b };
        ids.push(app.submit("count", &format!("job {n}")).await);
    }
    for id in &ids {
        let job = a.wait_for_end(id, Duration::from_secs(180)).await;
        assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
        assert_eq!(job.attempt, 1);
    }
    let text = std::fs::read_to_string(&runs).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let distinct: HashSet<&str> = lines.iter().copied().collect();
    assert_eq!(lines.len(), 50, "each job ran exactly once");
    assert_eq!(distinct.len(), 50);
    // Both dispatchers spawned some of them (the process spawner keeps finished workloads).
    let by_a = a.ctx.spawner.list().await.0.len();
    let by_b = b.ctx.spawner.list().await.0.len();
    assert_eq!(by_a + by_b, 50, "{by_a} + {by_b} spawns");
    assert!(
        by_a > 0 && by_b > 0,
        "{by_a} and {by_b}: both dispatchers took work"
    );
    a.stop().await;
    b.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_one_concurrency_key_start_in_submission_order_across_two_dispatchers() {
    let dir = temp_dir("keyorder");
    let log = dir.join("intervals");
    let mut settings = test_settings(&random_prefix());
    settings
        .agents
        .insert("interval".into(), crate::limits::interval_agent(&log));
    let a = start(settings.clone(), None).await;
    let b = start(settings, None).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let app = if n % 2 == 0 { &a } else { &b };
        let (status, body) = app
            .post_job(serde_json::json!({"agent": "interval", "task": format!("k{n}"), "concurrency_key": "shared"}))
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        assert_eq!(
            a.wait_for_end(id, Duration::from_secs(90)).await.state,
            JobState::Succeeded
        );
    }
    let (max, order) = crate::limits::overlap(&log);
    assert_eq!(max, 1, "jobs of one key overlapped");
    assert_eq!(order, ["k0", "k1", "k2", "k3"]);
    a.stop().await;
    b.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
