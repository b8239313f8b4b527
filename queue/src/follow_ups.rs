//! Follow-ups against a real Redis: a job made on a ticket, or in a Slack thread, whose last
//! job has finished continues it (linked both ways, the chain's first job kept, the previous
//! job's summary carried); one made while that job is unfinished does not; a thread's key
//! names its latest job.

use contract::{AgentResult, RunOutcome, RunnerEvent};

use crate::testing::{batch, claim};
use crate::{Admission, Job, JobState, NewJob, Origin, Queue, Submission};

fn queue() -> Queue {
    crate::testing::queue("follow-ups", 100)
}

fn in_thread(task: &str, ts: &str) -> NewJob {
    NewJob {
        agent: "echo".into(),
        task: task.into(),
        project: Some("shop".into()),
        timeout_secs: 60,
        origin: Some(Origin::Slack {
            channel: "C1".into(),
            user: "U1".into(),
            thread_ts: Some(ts.into()),
        }),
        ..NewJob::default()
    }
}

fn on_ticket(task: &str) -> NewJob {
    NewJob {
        agent: "echo".into(),
        task: task.into(),
        ticket: Some("SHOP-7".into()),
        exclusive: Some("SHOP-7".into()),
        timeout_secs: 60,
        ..NewJob::default()
    }
}

async fn submit(queue: &Queue, job: &NewJob) -> Submission {
    queue.submit(job).await.unwrap()
}

async fn created(queue: &Queue, job: &NewJob) -> Job {
    match submit(queue, job).await {
        Submission::Created(job) => job,
        other => panic!("expected a new job, got {other:?}"),
    }
}

/// The id of thread 1.5's latest job, if it has one.
async fn thread_job(queue: &Queue) -> Option<String> {
    let job = queue.job_in_thread("C1", "1.5").await.unwrap();
    job.map(|j| j.id)
}

async fn get(queue: &Queue, id: &str) -> Job {
    queue.get(id).await.unwrap().unwrap()
}

/// Runs the ready jobs `ids` to their end: each with `summary` its agent's, `outcome` how it
/// exited.
async fn run_to_end(queue: &Queue, ids: &[&str], outcome: RunOutcome, summary: Option<&str>) {
    let claimed = claim(queue).await;
    assert!(
        claimed
            .iter()
            .all(|(_, a)| matches!(a, Admission::Spawn { .. })),
        "{claimed:?}"
    );
    let mut claimed: Vec<&str> = claimed.iter().map(|(c, _)| c.job_id.as_str()).collect();
    claimed.sort_unstable();
    let mut wanted = ids.to_vec();
    wanted.sort_unstable();
    assert_eq!(claimed, wanted, "the ready jobs are the ones to run");
    for id in ids {
        let finished = RunnerEvent::Finished {
            outcome: outcome.clone(),
            result: summary.map(|s| AgentResult {
                summary: Some(s.into()),
                links: Vec::new(),
            }),
            change: None,
        };
        let batch = batch(1, 0, vec![RunnerEvent::Started, finished]);
        queue.apply_runner_batch(id, &batch).await.unwrap();
        assert!(get(queue, id).await.state.is_terminal());
    }
}

#[tokio::test]
async fn a_second_job_on_a_finished_ticket_continues_the_first_and_a_third_keeps_the_chain() {
    let queue = queue();
    let first = created(&queue, &on_ticket("fix SHOP-7")).await;
    assert_eq!((first.follows.as_ref(), first.chain.as_ref()), (None, None));
    // While the first is unfinished, the ticket answers with it: nothing new, nothing linked.
    assert!(
        matches!(submit(&queue, &on_ticket("again")).await, Submission::Running(j) if j.id == first.id)
    );
    run_to_end(
        &queue,
        &[&first.id],
        RunOutcome::Exited { code: 0 },
        Some("Fixed the rounding."),
    )
    .await;

    let second = created(&queue, &on_ticket("also add a test")).await;
    let previous = second
        .follows
        .clone()
        .expect("the second job follows the first");
    assert_eq!(previous.job_id, first.id);
    assert_eq!(previous.state, "succeeded");
    assert_eq!(previous.summary.as_deref(), Some("Fixed the rounding."));
    assert_eq!(previous.task, "fix SHOP-7");
    assert_eq!(second.chain.as_deref(), Some(first.id.as_str()));
    // The record says the same as the submit's answer, and the first links forward.
    assert_eq!(get(&queue, &second.id).await.follows, Some(previous));
    assert_eq!(
        get(&queue, &first.id).await.followed_by.as_deref(),
        Some(second.id.as_str())
    );

    run_to_end(&queue, &[&second.id], RunOutcome::Exited { code: 3 }, None).await;
    let third = created(&queue, &on_ticket("try again")).await;
    let previous = third.follows.expect("the third follows the second");
    assert_eq!(
        (previous.job_id.as_str(), previous.state.as_str()),
        (second.id.as_str(), "failed")
    );
    assert_eq!(previous.summary, None);
    assert!(previous.reason.is_some(), "a failed job says why");
    assert_eq!(
        third.chain.as_deref(),
        Some(first.id.as_str()),
        "the chain's first job is kept"
    );
}

#[tokio::test]
async fn a_job_in_a_slack_thread_continues_the_threads_finished_job_and_the_thread_names_the_latest(
) {
    let queue = queue();
    assert_eq!(thread_job(&queue).await, None);
    let first = created(&queue, &in_thread("run the tests", "1.5")).await;
    assert_eq!(thread_job(&queue).await, Some(first.id.clone()));
    // Another thread, and a job of no thread, neither follow nor move the thread's key.
    let elsewhere = created(&queue, &in_thread("other", "2.5")).await;
    let plain = created(
        &queue,
        &NewJob {
            origin: None,
            ..in_thread("plain", "1.5")
        },
    )
    .await;
    assert_eq!((elsewhere.follows, plain.follows), (None, None));
    assert_eq!(thread_job(&queue).await, Some(first.id.clone()));

    // A second job while the first is unfinished is allowed in a thread, and follows nothing.
    let second = created(&queue, &in_thread("and lint", "1.5")).await;
    assert_eq!(second.follows, None);
    assert_eq!(thread_job(&queue).await, Some(second.id.clone()));

    // Once the thread's latest has finished, the next continues it.
    let all = [&*first.id, &elsewhere.id, &plain.id, &second.id];
    run_to_end(&queue, &all, RunOutcome::Exited { code: 0 }, Some("done")).await;
    let third = created(&queue, &in_thread("now fix what failed", "1.5")).await;
    assert_eq!(third.follows.map(|p| p.job_id), Some(second.id.clone()));
    assert_eq!(third.chain.as_deref(), Some(second.id.as_str()));
    assert_eq!(get(&queue, &third.id).await.state, JobState::Queued);
}

#[tokio::test]
async fn a_job_can_name_the_job_it_follows_and_a_missing_one_links_nothing() {
    let queue = queue();
    let first = created(
        &queue,
        &NewJob {
            origin: None,
            ..in_thread("one", "1")
        },
    )
    .await;
    run_to_end(
        &queue,
        &[&first.id],
        RunOutcome::Exited { code: 0 },
        Some("one done"),
    )
    .await;
    let named = NewJob {
        follows: Some(first.id.clone()),
        origin: None,
        ..in_thread("two", "1")
    };
    let second = created(&queue, &named).await;
    assert_eq!(
        second.follows.map(|p| p.summary),
        Some(Some("one done".into()))
    );
    let gone = NewJob {
        follows: Some("no-such-job".into()),
        origin: None,
        ..in_thread("three", "1")
    };
    let third = created(&queue, &gone).await;
    assert_eq!((third.follows, third.chain), (None, None));
}
