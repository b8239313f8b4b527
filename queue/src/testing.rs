//! What the queue's tests against a real Redis share: a queue of its own (a fresh prefix on
//! the test Redis), a job, claiming and admitting the ready ones, a workload handle and a
//! runner's batch that starts and ends an attempt.

use std::time::Duration;

use contract::{JobHandle, RunOutcome, RunnerBatch, RunnerEvent, PROTOCOL_VERSION};

use crate::{new_job_id, Admission, Claim, NewJob, Queue, QueueSettings, RedisSettings};

/// A queue on the test Redis under a prefix of its own (`test-<name>-<random>:`), with
/// `limits` changed by `change` from the tests' defaults.
pub(crate) fn queue_with(name: &str, change: impl FnOnce(&mut QueueSettings)) -> Queue {
    let redis = RedisSettings::for_tests(
        &testkit::redis::test_url(),
        format!("test-{name}-{}:", new_job_id()),
    );
    let mut limits = QueueSettings::for_tests();
    change(&mut limits);
    Queue::new(&redis, &limits).unwrap()
}

/// A queue as [`queue_with`] makes it, with `max_running` slots.
pub(crate) fn queue(name: &str, max_running: u32) -> Queue {
    queue_with(name, |limits| limits.max_concurrent_jobs = max_running)
}

/// A job for the `echo` agent.
pub(crate) fn echo_job(task: &str) -> NewJob {
    NewJob {
        agent: "echo".into(),
        task: task.into(),
        timeout_secs: 60,
        ..NewJob::default()
    }
}

/// The ready queue's new entries (at most 10), each with what admitting it decided.
pub(crate) async fn claim(queue: &Queue) -> Vec<(Claim, Admission)> {
    queue.ensure_group().await.unwrap();
    let mut conn = queue.dedicated_connection().await.unwrap();
    let claims = queue
        .claim(&mut conn, "test", 10, Duration::from_millis(10))
        .await
        .unwrap();
    let admissions = queue.admit(&claims).await.unwrap();
    claims.into_iter().zip(admissions).collect()
}

/// The handle of a workload of the test backend for an attempt.
pub(crate) fn handle(job_id: &str, attempt: u32) -> JobHandle {
    JobHandle {
        backend: "test".into(),
        name: contract::workload_name(job_id, attempt),
        job_id: job_id.into(),
        attempt,
        id: None,
        target: contract::DEFAULT_TARGET.into(),
    }
}

/// A runner's batch of `events` for `attempt`, the first numbered `first_seq`.
pub(crate) fn batch(attempt: u32, first_seq: u64, events: Vec<RunnerEvent>) -> RunnerBatch {
    RunnerBatch {
        version: PROTOCOL_VERSION,
        attempt,
        first_seq,
        events,
    }
}

/// A runner's first batch of `attempt`: the agent started, then ended as `outcome` said.
pub(crate) fn start_and_end(attempt: u32, outcome: RunOutcome) -> RunnerBatch {
    batch(
        attempt,
        0,
        vec![
            RunnerEvent::Started,
            RunnerEvent::Finished {
                outcome,
                result: None,
                change: None,
            },
        ],
    )
}
