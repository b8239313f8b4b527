//! Waiting for a slot, against a real Redis: a job submitted while every slot is taken waits
//! from its submit on (no queue entry, no claim), one that found a slot free at its submit but
//! none at its claim is parked by the claim, and freed slots admit them oldest first.

use contract::RunOutcome;

use crate::testing::{claim, echo_job, handle, queue, start_and_end};
use crate::{Admission, Claim, JobEvent, JobState, Queue, SpawnRecord};

async fn submit(queue: &Queue, task: &str) -> String {
    let submitted = queue.submit(&echo_job(task)).await.unwrap();
    submitted.job().unwrap().id.clone()
}

/// Records the spawn of an admitted claim, then runs its attempt to success.
async fn run(queue: &Queue, claim: &Claim) {
    let recorded = queue
        .record_spawn(claim, 1, &handle(&claim.job_id, 1))
        .await
        .unwrap();
    assert_eq!(recorded, SpawnRecord::Recorded);
    let batch = start_and_end(1, RunOutcome::Exited { code: 0 });
    let outcome = queue
        .apply_runner_batch(&claim.job_id, &batch)
        .await
        .unwrap();
    assert_eq!(outcome.state, "succeeded");
}

async fn waits(queue: &Queue, id: &str) -> bool {
    let events = queue.events_after(id, None, 100).await.unwrap();
    events
        .iter()
        .any(|(_, e)| matches!(e, JobEvent::Waiting { attempt: 1, reason, .. } if reason == "waiting for a free slot"))
}

#[tokio::test]
async fn jobs_wait_for_a_slot_from_their_submit_or_their_claim_and_are_admitted_oldest_first() {
    let queue = queue("waiting", 1);
    queue.ensure_group().await.unwrap();
    // No job holds the slot yet: both go to the ready queue; the claim admits the first and
    // parks the second.
    let first = submit(&queue, "one").await;
    let second = submit(&queue, "two").await;
    let claimed = claim(&queue).await;
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    assert_eq!(claimed[0].0.job_id, first);
    assert!(matches!(claimed[0].1, Admission::Spawn { attempt: 1, .. }));
    assert_eq!(claimed[1].0.job_id, second);
    assert_eq!(claimed[1].1, Admission::Wait);
    assert!(waits(&queue, &second).await);
    // The slot is taken: the third waits from its submit on, and no claim sees it.
    let third = submit(&queue, "three").await;
    assert!(waits(&queue, &third).await);
    // (The ready queue keeps the first's entry until its spawn is recorded.)
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.ready, stats.waiting, stats.admitted), (1, 2, 1));
    assert!(claim(&queue).await.is_empty());
    assert_eq!(
        queue.get(&third).await.unwrap().unwrap().state,
        JobState::Queued
    );
    // Each end frees the slot for the oldest waiting job, which a claim then spawns.
    run(&queue, &claimed[0].0).await;
    let next = claim(&queue).await;
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0].0.job_id, second);
    assert!(matches!(next[0].1, Admission::Spawn { attempt: 1, .. }));
    run(&queue, &next[0].0).await;
    let last = claim(&queue).await;
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0].0.job_id, third);
    assert!(matches!(last[0].1, Admission::Spawn { attempt: 1, .. }));
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.ready, stats.waiting, stats.admitted), (1, 0, 1));
}
