//! The queue against a real Redis in cluster mode: one node owning every slot, the scripts
//! checked strictly (`#!lua`, so Redis refuses any key outside the slot of a script's
//! KEYS). Through a lifecycle that runs every script, a prefix with a hash tag keeps every
//! key in one slot, which is what Redis Cluster needs; a plain prefix does not, which is why
//! the README asks for the tag there.

use std::time::Duration;

use contract::{OutputStream, RunOutcome, RunnerEvent};
use secrecy::SecretString;
use testkit::redis::RedisServer;

use crate::testing::{batch, handle};
use crate::{
    Admission, CancelOutcome, JobState, NewJob, Origin, Queue, QueueSettings, RedisSettings,
    ReplyBody, Result, RetryOutcome, SpawnRecord,
};

/// A redis-server in cluster mode whose one node serves every slot.
fn cluster_node() -> RedisServer {
    let server = RedisServer::new()
        .args(&[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        .started();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query(&mut conn)
        .unwrap();
    for _ in 0..100 {
        let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn).unwrap();
        if info.contains("cluster_state:ok") {
            return server;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the one-node cluster did not become ok");
}

/// A queue on the node of `url`, as a cluster node (`redis.cluster`) or as a plain server.
fn queue(url: &str, prefix: &str, cluster: bool) -> Queue {
    let redis = RedisSettings {
        url: SecretString::from(url.to_string()),
        prefix: prefix.to_string(),
        timeout_secs: 5,
        tls: Default::default(),
        sentinel: Default::default(),
        cluster,
        min_replicas_acked: 0,
    };
    let limits = QueueSettings::for_tests();
    Queue::new(&redis, &limits).unwrap().strict()
}

fn new_job(ticket: &str) -> NewJob {
    NewJob {
        agent: "echo".into(),
        task: format!("fix {ticket}"),
        ticket: Some(ticket.into()),
        concurrency_key: Some("shared-key".into()),
        idempotency_key: Some(format!("idem-{ticket}")),
        delivery: Some(format!("github:{ticket}")),
        exclusive: Some(ticket.into()),
        reply_if_running: true,
        origin: Some(Origin::Jira {
            issue: ticket.into(),
        }),
        timeout_secs: 60,
        ..NewJob::default()
    }
}

/// Submits two jobs of one concurrency key (the second waits from its submit on), runs the
/// first to success (which admits the second), fails the second for good, retries and cancels it, and works the outbox and the
/// leases: every script runs at least once. The first error is returned.
pub(crate) async fn lifecycle(queue: &Queue) -> Result<()> {
    queue.ensure_group().await?;
    queue.ensure_notify_group().await?;
    let first = queue
        .submit(&new_job("PAY-1"))
        .await?
        .job()
        .unwrap()
        .id
        .clone();
    let second = queue
        .submit(&new_job("PAY-2"))
        .await?
        .job()
        .unwrap()
        .id
        .clone();
    let mut conn = queue.dedicated_connection().await?;
    let claims = queue
        .claim(&mut conn, "test", 10, Duration::from_millis(100))
        .await?;
    let admissions = queue.admit(&claims).await?;
    // The second, behind the first in its key's queue, waits from its submit on: only the
    // first is on the ready queue.
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert!(matches!(admissions[0], Admission::Spawn { attempt: 1, .. }));
    assert_eq!(queue.stats().await?.waiting, 1);
    let record = queue
        .record_spawn(&claims[0], 1, &handle(&first, 1))
        .await?;
    assert_eq!(record, SpawnRecord::Recorded);
    assert!(
        queue
            .extend_lease(&first, 1, Duration::from_secs(30))
            .await?
    );
    let events = vec![
        RunnerEvent::Started,
        RunnerEvent::Log {
            stream: OutputStream::Stdout,
            line: "working".into(),
        },
        RunnerEvent::Finished {
            outcome: RunOutcome::Exited { code: 0 },
            result: None,
            change: None,
        },
    ];
    let outcome = queue
        .apply_runner_batch(&first, &batch(1, 0, events))
        .await?;
    assert_eq!(outcome.state, "succeeded");

    // The first job's end admitted the second (a pump): it is claimed from the ready queue.
    let claims = queue
        .claim(&mut conn, "test", 10, Duration::from_millis(100))
        .await?;
    let admissions = queue.admit(&claims).await?;
    assert!(
        matches!(admissions[0], Admission::Spawn { .. }),
        "{admissions:?}"
    );
    queue
        .fail_attempt(
            &second,
            1,
            "spawn failed",
            false,
            Some(&claims[0].entry),
            false,
        )
        .await?;
    assert_eq!(queue.get(&second).await?.unwrap().state, JobState::Failed);
    assert!(matches!(
        queue.retry(&second).await?,
        RetryOutcome::Queued(2)
    ));
    assert!(matches!(
        queue.cancel(&second, "test").await?,
        CancelOutcome::Cancelled(_)
    ));
    queue.promote_due().await?;
    queue.sweep().await?;
    queue.expired_leases(10).await?;

    let replies = queue
        .claim_replies(
            &mut conn,
            "test",
            10,
            Duration::from_secs(60),
            Duration::from_millis(100),
        )
        .await?;
    assert!(
        !replies.is_empty(),
        "state changes of a job with an origin are replied to"
    );
    queue.reply_later(&replies[0], Duration::ZERO).await?;
    queue.promote_replies().await?;
    for reply in &replies[1..] {
        queue.reply_done(&reply.entry).await?;
    }
    queue
        .send_reply(&ReplyBody::Text {
            origin: Origin::Jira {
                issue: "PAY-1".into(),
            },
            text: "hello".into(),
            response_url: None,
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn with_a_hash_tagged_prefix_every_script_keeps_to_one_cluster_slot() {
    let node = cluster_node();
    let queue = queue(&node.url(), "{agentsmith}:", true);
    lifecycle(&queue).await.unwrap();
}

#[tokio::test]
async fn with_a_plain_prefix_the_scripts_cross_cluster_slots() {
    let node = cluster_node();
    let queue = queue(&node.url(), "agentsmith:", true);
    let error = lifecycle(&queue).await.unwrap_err();
    let chain = format!(
        "{error}: {}",
        std::error::Error::source(&error)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(
        chain.contains("CROSSSLOT") || chain.contains("same slot"),
        "{chain}"
    );
}

#[tokio::test]
async fn a_cluster_node_taken_for_a_plain_server_is_refused_saying_to_set_redis_cluster() {
    let node = cluster_node();
    let queue = queue(&node.url(), "{agentsmith}:", false);
    let error = queue.submit(&new_job("PAY-3")).await.unwrap_err();
    assert!(matches!(error, crate::QueueError::ClusterNode), "{error:?}");
    assert!(
        error.to_string().contains("set redis.cluster: true"),
        "{error}"
    );
    assert!(
        error.is_unavailable(),
        "a sender retries while the operator fixes it"
    );
}
