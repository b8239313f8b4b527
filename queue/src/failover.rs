//! The queue through a failover, against real servers: a Sentinel set (a primary, a
//! replica, three sentinels; `testkit::sentinel`) and a Redis Cluster of three primaries
//! with a replica each (`testkit::cluster`). In both, jobs submitted before the primary is
//! killed are on the replica promoted in its place, and submits succeed against it once the
//! failover is done, through the same `Queue`. `redis.min_replicas_acked` is checked on the
//! way: with the replica connected a write is acknowledged by it; once no replica is left
//! it fails, saying why.

use std::time::Duration;

use testkit::cluster::RedisCluster;
use testkit::sentinel::{SentinelSet, MASTER_NAME};

use crate::{
    NewJob, Queue, QueueError, QueueSettings, RedisSentinelSettings, RedisSettings, Result,
};

/// A queue following the sentinels of `set`, waiting for `min_replicas_acked` replicas.
fn following_sentinels(set: &SentinelSet, prefix: &str, min_replicas_acked: u32) -> Queue {
    let redis = RedisSettings {
        // Not used with Sentinel: a dead address, to show it.
        url: "redis://127.0.0.1:1".to_string().into(),
        prefix: prefix.to_string(),
        timeout_secs: 5,
        tls: Default::default(),
        sentinel: RedisSentinelSettings {
            master_name: MASTER_NAME.into(),
            nodes: set.urls(),
            ..Default::default()
        },
        cluster: false,
        min_replicas_acked,
    };
    assert!(redis.problems().is_empty(), "{:?}", redis.problems());
    Queue::new(&redis, &QueueSettings::for_tests()).expect("the settings are valid")
}

fn job(task: &str) -> NewJob {
    NewJob {
        agent: "echo".into(),
        task: task.into(),
        timeout_secs: 60,
        ..NewJob::default()
    }
}

async fn submit(queue: &Queue, task: &str) -> Result<String> {
    let submitted = queue.submit(&job(task)).await?;
    Ok(submitted.job().expect("a new job").id.clone())
}

/// Submits `task` until it succeeds, for at most two minutes (a failover on a slow
/// machine: a second to count the primary down, an election, a promotion); the job's id
/// and the errors met on the way.
async fn submit_through_failover(queue: &Queue, task: &str) -> (String, Vec<String>) {
    let mut errors = Vec::new();
    for _ in 0..240 {
        match submit(queue, task).await {
            Ok(id) => return (id, errors),
            Err(e) => {
                assert!(
                    e.is_unavailable(),
                    "a failover looks like Redis being away, so senders retry: {}",
                    contract::ErrorChain(&e)
                );
                errors.push(contract::ErrorChain(&e).to_string());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    panic!("no submit succeeded within two minutes of the failover: {errors:#?}");
}

/// A queue on the cluster whose node `seed` is, waiting for `min_replicas_acked` replicas.
fn following_cluster(seed: &str, prefix: &str, min_replicas_acked: u32) -> Queue {
    let redis = RedisSettings {
        url: seed.to_string().into(),
        prefix: prefix.to_string(),
        timeout_secs: 5,
        tls: Default::default(),
        sentinel: Default::default(),
        cluster: true,
        min_replicas_acked,
    };
    assert!(redis.problems().is_empty(), "{:?}", redis.problems());
    Queue::new(&redis, &QueueSettings::for_tests()).expect("the settings are valid")
}

/// Jobs written before the kill: one acknowledged by the replica through `acked`'s
/// `redis.min_replicas_acked`, three through `queue` followed by a `WAIT` of the test's
/// own on the shared connection that wrote them.
async fn acknowledged_before_the_kill(queue: &Queue, acked: &Queue) -> Vec<String> {
    queue.ensure_group().await.unwrap();
    let mut before = vec![submit(acked, "acked by the replica").await.unwrap()];
    for n in 0..3 {
        before.push(
            submit(queue, &format!("before the kill {n}"))
                .await
                .unwrap(),
        );
    }
    let mut conn = queue.conn().await.unwrap();
    let replicas: u32 = redis::cmd("WAIT")
        .arg(1)
        .arg(10_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(replicas, 1, "the replica has the jobs before the kill");
    before
}

/// After the failover: every job of `before` and `after` is on the new primary, blocking
/// reads find it too, and `acked` (waiting for a replica the promoted one does not have)
/// refuses writes, saying why, as Redis being away.
async fn after_the_failover(queue: &Queue, acked: &Queue, before: &[String], after: &str) {
    for id in before.iter().map(String::as_str).chain([after]) {
        let stored = queue.get(id).await.unwrap();
        assert!(stored.is_some(), "job {id} is on the promoted replica");
    }
    // Blocking reads follow too: every job is claimed from the new primary.
    let mut claiming = queue.dedicated_connection().await.unwrap();
    let mut claimed = 0;
    for _ in 0..20 {
        claimed += queue
            .claim(&mut claiming, "test", 10, Duration::from_millis(100))
            .await
            .unwrap()
            .len();
        if claimed > before.len() {
            break;
        }
    }
    // At least: a submit that timed out during the failover may have been written all the same.
    assert!(claimed > before.len(), "{claimed} claimed");

    let mut refused = None;
    for _ in 0..60 {
        match submit(acked, "no replica left").await {
            Ok(id) => panic!("job {id} succeeded though no replica acknowledged it"),
            // The acked queue may still be on the dead primary's connection: wait for it
            // to follow, as the other one did.
            Err(e)
                if !contract::ErrorChain(&e)
                    .to_string()
                    .contains("min_replicas_acked") =>
            {
                assert!(e.is_unavailable(), "{}", contract::ErrorChain(&e));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("the acked queue followed the failover within 30 s");
    let message = contract::ErrorChain(&refused).to_string();
    assert!(
        matches!(refused, QueueError::Redis(_)) && refused.is_unavailable(),
        "{message}"
    );
    assert!(
        message.contains("0 of the 1 replicas redis.min_replicas_acked asks for"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_acknowledged_before_the_primary_dies_are_on_the_replica_the_sentinels_promote() {
    let mut set = tokio::task::spawn_blocking(SentinelSet::started)
        .await
        .expect("the sentinel set starts");
    let prefix = format!("sentinel-{:016x}:", rand::random::<u64>());
    let queue = following_sentinels(&set, &prefix, 0);
    let acked = following_sentinels(&set, &prefix, 1);
    let before = acknowledged_before_the_kill(&queue, &acked).await;

    let old = set.primary.port();
    set.primary.kill();
    let (after, errors) = submit_through_failover(&queue, "after the failover").await;
    assert_eq!(
        set.primary_port(),
        Some(set.replica.port()),
        "the sentinels promoted the replica (from {old}); errors on the way: {errors:#?}"
    );
    // The promoted replica has no replica of its own.
    after_the_failover(&queue, &acked, &before, &after).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_acknowledged_before_the_slot_owner_dies_are_on_the_replica_the_cluster_promotes() {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::started)
        .await
        .expect("the cluster starts");
    let prefix = format!("{{cluster-{:016x}}}:", rand::random::<u64>());
    let owner = cluster
        .owner_of(&prefix)
        .expect("a primary serves the prefix");
    let replica = cluster.replica_of(owner).expect("the owner has a replica");
    // The queue is told of another primary: it finds the owner by asking the cluster.
    let seed = cluster
        .primaries()
        .into_iter()
        .find(|port| *port != owner)
        .expect("three primaries");
    let queue = following_cluster(&cluster.url(seed), &prefix, 0);
    let acked = following_cluster(&cluster.url(seed), &prefix, 1);

    // Every script runs on the real cluster, strictly checked (no key outside the slot).
    let strict_prefix = format!("{{strict-{:016x}}}:", rand::random::<u64>());
    let strict = following_cluster(&cluster.url(seed), &strict_prefix, 0);
    crate::cluster::lifecycle(&strict.strict()).await.unwrap();

    let before = acknowledged_before_the_kill(&queue, &acked).await;
    for primary in cluster.primaries() {
        let keys = cluster.keys_on(primary).expect("every primary answers");
        let owns_a_queue = primary == owner || cluster.owner_of(&strict_prefix) == Some(primary);
        assert_eq!(
            keys > 0,
            owns_a_queue,
            "a queue's keys are on its slot's primary only ({primary}: {keys} keys)"
        );
    }

    cluster.kill(owner);
    let (after, errors) = submit_through_failover(&queue, "after the failover").await;
    assert_eq!(
        cluster.owner_of(&prefix),
        Some(replica),
        "the cluster promoted the owner's replica (from {owner}); errors on the way: {errors:#?}"
    );
    after_the_failover(&queue, &acked, &before, &after).await;
}
