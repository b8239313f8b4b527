//! The slots of spawner targets against a real Redis: an admitted attempt takes a slot of
//! the first target with room, keeps it when its spawn is taken over, gives it back when it
//! ends or is retried, and an attempt no target can take goes back to the queue without
//! using itself up.

use std::time::Duration;

use crate::{Admission, AttemptFailure, Claim, JobState, NewJob, Queue, TargetChoice};

fn queue() -> Queue {
    crate::testing::queue("targets", 100)
}

/// Submits `n` jobs, claims and admits them: each is starting, with its claim.
async fn admitted(queue: &Queue, n: usize) -> Vec<Claim> {
    queue.ensure_group().await.unwrap();
    for _ in 0..n {
        let job = NewJob {
            agent: "echo".into(),
            task: "somewhere".into(),
            timeout_secs: 60,
            ..NewJob::default()
        };
        queue.submit(&job).await.unwrap();
    }
    let mut conn = queue.dedicated_connection().await.unwrap();
    let claims = queue
        .claim(&mut conn, "test", n, Duration::from_millis(10))
        .await
        .unwrap();
    let admissions = queue.admit(&claims).await.unwrap();
    assert!(admissions
        .iter()
        .all(|a| matches!(a, Admission::Spawn { .. })));
    claims
}

fn chosen(name: &str) -> TargetChoice {
    TargetChoice::Target(name.to_string())
}

#[tokio::test]
async fn an_attempt_takes_the_first_target_with_room_keeps_it_and_gives_it_back() {
    let queue = queue();
    let claims = admitted(&queue, 3).await;
    let [a, b, c] = [0, 1, 2].map(|i| claims[i].job_id.clone());
    let routes = [("eu", 1), ("us", 0)];
    assert_eq!(
        queue.reserve_target(&a, 1, &routes).await.unwrap(),
        chosen("eu")
    );
    assert_eq!(
        queue.reserve_target(&b, 1, &routes).await.unwrap(),
        chosen("us")
    );
    // Asked again (its spawn taken over), an attempt keeps the target it holds, even one
    // that is no longer a candidate.
    assert_eq!(
        queue.reserve_target(&a, 1, &[("us", 0)]).await.unwrap(),
        chosen("eu")
    );
    assert_eq!(
        queue.reserve_target(&a, 2, &routes).await.unwrap(),
        TargetChoice::Stale
    );
    assert_eq!(
        queue.reserve_target(&c, 1, &[("eu", 1)]).await.unwrap(),
        TargetChoice::Full
    );
    assert_eq!(queue.target_load(&["eu", "us"]).await.unwrap(), [1, 1]);
    let job = queue.get(&a).await.unwrap().unwrap();
    assert_eq!(job.target.as_deref(), Some("eu"));

    // A retried attempt gives its slot back and forgets the target; the next attempt
    // chooses again.
    let retried = queue
        .fail_attempt(&a, 1, "lost", true, None, false)
        .await
        .unwrap();
    assert_eq!(retried, AttemptFailure::Retrying);
    assert_eq!(queue.target_load(&["eu"]).await.unwrap(), [0]);
    assert_eq!(queue.get(&a).await.unwrap().unwrap().target, None);
    // An attempt that fails for good gives it back and keeps the name, where it ran.
    let failed = queue
        .fail_attempt(&b, 1, "bad", false, None, false)
        .await
        .unwrap();
    assert_eq!(failed, AttemptFailure::Failed);
    assert_eq!(queue.target_load(&["us"]).await.unwrap(), [0]);
    assert_eq!(
        queue.get(&b).await.unwrap().unwrap().target.as_deref(),
        Some("us")
    );
    assert_eq!(
        queue.reserve_target(&c, 1, &[("eu", 1)]).await.unwrap(),
        chosen("eu")
    );
}

#[tokio::test]
async fn an_attempt_no_target_can_take_waits_in_the_queue_and_keeps_its_number() {
    let queue = queue();
    let claims = admitted(&queue, 1).await;
    let id = claims[0].job_id.clone();
    assert_eq!(
        queue.reserve_target(&id, 1, &[]).await.unwrap(),
        TargetChoice::Full
    );
    let why = "waiting for a target: eu is full (1 of 1)";
    let deferred = queue
        .defer_start(
            &id,
            1,
            why,
            Duration::from_millis(200),
            Some(&claims[0].entry),
        )
        .await
        .unwrap();
    assert!(deferred);
    let job = queue.get(&id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.reason.as_deref(), Some(why));
    assert_eq!(job.attempt, 1);
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.admitted, stats.delayed), (0, 1), "{stats:?}");
    // Deferring twice changes nothing.
    let again = queue.defer_start(&id, 1, why, Duration::ZERO, None).await;
    assert!(!again.unwrap());

    // Once due, it is ready again, and admitted as the same attempt.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(queue.promote_due().await.unwrap(), 1);
    let claimed = crate::testing::claim(&queue).await;
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert!(
        matches!(claimed[0].1, Admission::Spawn { attempt: 1, .. }),
        "{claimed:?}"
    );
}
