//! The list indexes against a real Redis: filtered lists follow every state change and page
//! stably; a filtered page reads the records of its own jobs only, however many jobs are
//! stored; the sweep takes expired jobs out of every index; the backfill indexes jobs stored
//! before the indexes existed.

use std::time::Duration;

use contract::{RunOutcome, RunnerBatch, RunnerEvent, PROTOCOL_VERSION};
use redis::aio::MultiplexedConnection;
use testkit::redis::RedisServer;
use testkit::wait_until;

use crate::{
    new_job_id, Admission, AttemptFailure, CancelOutcome, Job, JobFilter, JobState, NewJob, Queue,
    QueueSettings, RedisSettings, RetryOutcome,
};

/// The projects the tests use: a plain one, one whose name holds every character a key part
/// escapes, and one no job has.
const SHOP: &str = "shop";
const ODD: &str = "a:b{x}%";
const NOPE: &str = "nope";

/// A queue on `url` under a fresh prefix, admitting up to 1,000 jobs, keeping finished jobs
/// for `retention_secs`.
fn queue_at(url: &str, retention_secs: u64) -> Queue {
    let redis = RedisSettings::for_tests(url, format!("test-lists-{}:", new_job_id()));
    let mut limits = QueueSettings::for_tests();
    limits.max_concurrent_jobs = 1_000;
    limits.retention_secs = retention_secs;
    Queue::new(&redis, &limits).unwrap()
}

async fn conn(queue: &Queue) -> MultiplexedConnection {
    queue.dedicated_connection().await.unwrap()
}

async fn submit(queue: &Queue, project: Option<&str>) -> String {
    let job = NewJob {
        agent: "echo".into(),
        task: "list me".into(),
        project: project.map(String::from),
        timeout_secs: 60,
        ..NewJob::default()
    };
    queue.submit(&job).await.unwrap().job().unwrap().id.clone()
}

/// Claims every ready job and admits it: each becomes starting.
async fn start_ready(queue: &Queue) -> Vec<String> {
    queue.ensure_group().await.unwrap();
    let mut conn = conn(queue).await;
    let claims = queue
        .claim(&mut conn, "test", 1_000, Duration::from_millis(10))
        .await
        .unwrap();
    let admissions = queue.admit(&claims).await.unwrap();
    assert!(
        admissions
            .iter()
            .all(|a| matches!(a, Admission::Spawn { .. })),
        "{admissions:?}"
    );
    claims.into_iter().map(|claim| claim.job_id).collect()
}

/// The runner of the job's first attempt reports `events`, from sequence number `first_seq`.
async fn report(queue: &Queue, id: &str, first_seq: u64, events: Vec<RunnerEvent>) {
    let batch = RunnerBatch {
        version: PROTOCOL_VERSION,
        attempt: 1,
        first_seq,
        events,
    };
    let outcome = queue.apply_runner_batch(id, &batch).await.unwrap();
    assert!(!outcome.stop && outcome.gap.is_none(), "{outcome:?}");
}

fn finished(outcome: RunOutcome) -> RunnerEvent {
    RunnerEvent::Finished {
        outcome,
        result: None,
        change: None,
    }
}

/// Every filter the tests check: each state or none, by each project or none.
fn filters() -> Vec<JobFilter> {
    let states = JobState::ALL.into_iter().map(Some).chain([None]);
    states
        .flat_map(|state| {
            [Some(SHOP), Some(ODD), Some(NOPE), None].map(|project| JobFilter {
                state,
                project: project.map(String::from),
            })
        })
        .collect()
}

/// The jobs a filtered list gives, page after page of `limit`.
async fn listed_jobs(queue: &Queue, filter: &JobFilter, limit: usize) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = queue.list(filter, cursor.as_deref(), limit).await.unwrap();
        jobs.extend(page.jobs);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return jobs,
        }
    }
}

/// The ids of [`listed_jobs`].
async fn listed(queue: &Queue, filter: &JobFilter, limit: usize) -> Vec<String> {
    let jobs = listed_jobs(queue, filter, limit).await;
    jobs.into_iter().map(|job| job.id).collect()
}

async fn cardinality(conn: &mut MultiplexedConnection, key: &str) -> usize {
    redis::cmd("ZCARD")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

/// Checks every filter against what the unfiltered list says, filtered record by record (as
/// listing worked before the indexes): the same jobs in the same order, in pages of `page`,
/// and an index holding exactly those jobs (no entry left behind by a transition).
async fn check_every_filter(queue: &Queue, when: &str, page: usize) {
    let everything = listed_jobs(queue, &JobFilter::default(), 500).await;
    let mut conn = conn(queue).await;
    for filter in filters() {
        let expected: Vec<String> = everything
            .iter()
            .filter(|job| filter.matches(job))
            .map(|job| job.id.clone())
            .collect();
        let got = listed(queue, &filter, page).await;
        assert_eq!(got, expected, "{when}: {filter:?}");
        let indexed = cardinality(&mut conn, &filter.index(queue.keys())).await;
        assert_eq!(indexed, expected.len(), "{when}: the index of {filter:?}");
    }
}

/// `INFO commandstats`: how often Redis ran `command` since its stats were last reset
/// (inside scripts too).
async fn calls(conn: &mut MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn filtered_lists_follow_every_state_change_and_page_stably() {
    let queue = queue_at(&testkit::redis::test_url(), 3600);
    // Eight jobs in each project (and without one), one for each fate below.
    let mut fates = Vec::new();
    for project in [Some(SHOP), Some(ODD), None] {
        let mut ids = Vec::new();
        for _ in 0..8 {
            ids.push(submit(&queue, project).await);
        }
        fates.push(ids);
    }
    check_every_filter(&queue, "after submitting", 2).await;

    let started = start_ready(&queue).await;
    assert_eq!(started.len(), 24);
    check_every_filter(&queue, "after admitting", 2).await;

    for ids in &fates {
        let [_starting, running, succeeded, failed, timed_out, cancelled, retrying, retried] =
            ids.as_slice()
        else {
            unreachable!("eight jobs per project");
        };
        for id in [running, succeeded, failed, timed_out, cancelled] {
            report(&queue, id, 0, vec![RunnerEvent::Started]).await;
        }
        report(
            &queue,
            succeeded,
            1,
            vec![finished(RunOutcome::Exited { code: 0 })],
        )
        .await;
        report(
            &queue,
            failed,
            1,
            vec![finished(RunOutcome::Exited { code: 1 })],
        )
        .await;
        report(&queue, timed_out, 1, vec![finished(RunOutcome::TimedOut)]).await;
        let cancel = queue.cancel(cancelled, "test").await.unwrap();
        assert!(matches!(cancel, CancelOutcome::Cancelled(_)), "{cancel:?}");
        let failure = queue
            .fail_attempt(retrying, 1, "node lost", true, None, false)
            .await
            .unwrap();
        assert_eq!(failure, AttemptFailure::Retrying);
        let failure = queue
            .fail_attempt(retried, 1, "bad image", false, None, false)
            .await
            .unwrap();
        assert_eq!(failure, AttemptFailure::Failed);
    }
    check_every_filter(&queue, "after running, ending and failing", 2).await;

    for ids in &fates {
        let retry = queue.retry(&ids[7]).await.unwrap();
        assert_eq!(retry, RetryOutcome::Queued(2));
    }
    // Three more, still queued: the newest of all.
    for project in [Some(SHOP), Some(ODD), None] {
        submit(&queue, project).await;
    }
    check_every_filter(&queue, "after retrying and submitting more", 2).await;
}

#[tokio::test]
async fn a_filtered_page_reads_only_its_own_records_however_many_jobs_are_stored() {
    // A Redis of the test's own, so its command counts are this test's alone.
    let server = RedisServer::new().started();
    let queue = queue_at(&server.url(), 3600);
    for _ in 0..3_000 {
        submit(&queue, Some(SHOP)).await;
    }
    let lone = submit(&queue, Some(ODD)).await;
    let cancelled = submit(&queue, Some(SHOP)).await;
    queue.cancel(&cancelled, "test").await.unwrap();
    let mut conn = conn(&queue).await;
    let limit = 50;
    let cases = [
        (Some(ODD), None, vec![lone.clone()]),
        (Some(NOPE), None, vec![]),
        (None, Some(JobState::Cancelled), vec![cancelled.clone()]),
        (
            Some(SHOP),
            Some(JobState::Cancelled),
            vec![cancelled.clone()],
        ),
        (Some(ODD), Some(JobState::Queued), vec![lone.clone()]),
    ];
    for (project, state, expected) in cases {
        let filter = JobFilter {
            state,
            project: project.map(String::from),
        };
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await
            .unwrap();
        let page = queue.list(&filter, None, limit).await.unwrap();
        let ids: Vec<String> = page.jobs.into_iter().map(|job| job.id).collect();
        assert_eq!(ids, expected, "{filter:?}");
        assert_eq!(page.next, None, "{filter:?}");
        // Scanning the 3,002 jobs record by record read every one of them.
        let read = calls(&mut conn, "hgetall").await;
        assert_eq!(read, expected.len() as u64, "records read for {filter:?}");
    }

    // A full page of a big project reads that page's records, and one index range.
    let filter = JobFilter {
        state: Some(JobState::Queued),
        project: Some(SHOP.into()),
    };
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    let page = queue.list(&filter, None, limit).await.unwrap();
    assert_eq!(page.jobs.len(), limit);
    assert!(page.next.is_some());
    assert_eq!(calls(&mut conn, "hgetall").await, limit as u64);
    assert_eq!(calls(&mut conn, "zrevrangebyscore").await, 1);
}

#[tokio::test]
async fn expired_jobs_leave_every_index_when_swept() {
    let queue = queue_at(&testkit::redis::test_url(), 1);
    // More than two sweep calls' worth (200 each), in every ending state.
    let mut ids = Vec::new();
    for n in 0..450 {
        ids.push(submit(&queue, [Some(SHOP), Some(ODD), None][n % 3]).await);
    }
    start_ready(&queue).await;
    for (n, id) in ids.iter().enumerate() {
        match n % 4 {
            0 => queue.cancel(id, "test").await.map(|_| ()).unwrap(),
            1 => {
                let failure = queue.fail_attempt(id, 1, "bad image", false, None, false);
                assert_eq!(failure.await.unwrap(), AttemptFailure::Failed);
            }
            code => {
                let outcome = if code == 2 {
                    RunOutcome::Exited { code: 0 }
                } else {
                    RunOutcome::TimedOut
                };
                report(&queue, id, 0, vec![RunnerEvent::Started, finished(outcome)]).await;
            }
        }
    }
    let records: Vec<String> = ids.iter().map(|id| queue.keys().job(id)).collect();
    let gone = wait_until(Duration::from_secs(10), || async {
        let mut conn = conn(&queue).await;
        let left: usize = redis::cmd("EXISTS")
            .arg(&records)
            .query_async(&mut conn)
            .await
            .unwrap();
        left == 0
    })
    .await;
    assert!(gone, "the records expired after the retention");
    assert_eq!(queue.sweep().await.unwrap(), 450);

    let mut conn = conn(&queue).await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}jobs*", queue.keys().prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        left,
        [queue.keys().index_backfill()],
        "no index entry of an expired job is left"
    );
}

#[tokio::test]
async fn jobs_from_before_the_indexes_are_listed_filtered_once_the_sweep_backfills_them() {
    let queue = queue_at(&testkit::redis::test_url(), 3600);
    // More than two backfill batches of 1,000, many sharing a creation millisecond.
    let mut ids = Vec::new();
    for n in 0..2_100 {
        let project = [Some(SHOP), Some(ODD), None][n % 3];
        ids.push(submit(&queue, project).await);
    }
    for id in ids.iter().step_by(7) {
        queue.cancel(id, "test").await.unwrap();
    }
    // What an installation from before the indexes has: the records and `jobs` only.
    let keys = queue.keys();
    let mut conn = conn(&queue).await;
    let mut indexes: Vec<String> = filters()
        .iter()
        .filter(|filter| filter.state.is_some() || filter.project.is_some())
        .map(|filter| filter.index(keys))
        .collect();
    indexes.extend([keys.project_of(), keys.index_backfill()]);
    let _: () = redis::cmd("DEL")
        .arg(&indexes)
        .query_async(&mut conn)
        .await
        .unwrap();
    let queued = JobFilter {
        state: Some(JobState::Queued),
        project: None,
    };
    assert!(listed(&queue, &queued, 50).await.is_empty());
    assert_eq!(
        listed(&queue, &JobFilter::default(), 500).await.len(),
        2_100
    );
    // A job from before that changes state is indexed by its new state at once.
    let now_cancelled = &ids[1];
    queue.cancel(now_cancelled, "test").await.unwrap();
    let cancelled_in_odd = JobFilter {
        state: Some(JobState::Cancelled),
        project: Some(ODD.into()),
    };
    let listed_now = listed(&queue, &cancelled_in_odd, 50).await;
    assert_eq!(listed_now, std::slice::from_ref(now_cancelled));

    assert_eq!(queue.sweep().await.unwrap(), 0);
    let position: String = redis::cmd("GET")
        .arg(keys.index_backfill())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(position, "done");
    check_every_filter(&queue, "after the backfill", 100).await;
}
