//! Calls of the busiest scripts from many tasks at once, combined into one script call.
//!
//! Every script takes a list of items (see `scripts.rs`), each applied as if it were a call
//! of its own. A [`Batcher`] owns one script: the first call finds nothing in flight and goes
//! to Redis at once; calls made while a script call is in flight wait for it to return and
//! then go together, up to [`MAX_ITEMS`] in one call. So a lone call waits for nothing, and
//! under load Redis runs one script call (its setup, its argument tables, the counters it
//! moved) per batch instead of per call.
//!
//! The batch runs in a task of its own, so a caller that gives up (a client that hangs up)
//! takes no one else's call with it. The task ends after [`IDLE`] without calls, and the
//! next call starts another.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{Script, Value};
use tokio::sync::{mpsc, oneshot};

use crate::error::{QueueError, Result};
use crate::scripts::Scripts;
use crate::Queue;

/// The most items in one script call: enough to carry a busy dispatcher's load, few enough
/// that one call holds Redis for a few milliseconds at most.
pub(crate) const MAX_ITEMS: usize = 128;

/// How long a batcher's task waits for a call before it ends.
const IDLE: Duration = Duration::from_secs(5);

/// The scripts whose calls are combined.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Batched {
    Submit,
    RecordSpawn,
    RunnerEvents,
}

impl Batched {
    fn script(self, scripts: &Scripts) -> &Script {
        match self {
            Batched::Submit => &scripts.submit,
            Batched::RecordSpawn => &scripts.record_spawn,
            Batched::RunnerEvents => &scripts.runner_events,
        }
    }
}

/// One call waiting for its batch: its keys and arguments, and where its reply goes.
struct Item {
    keys: Vec<String>,
    args: Vec<String>,
    reply: oneshot::Sender<Result<Value>>,
}

/// The batchers of a queue, one per combined script.
#[derive(Default)]
pub(crate) struct Batchers {
    submit: Batcher,
    record_spawn: Batcher,
    runner_events: Batcher,
}

impl Batchers {
    fn of(&self, kind: Batched) -> &Batcher {
        match kind {
            Batched::Submit => &self.submit,
            Batched::RecordSpawn => &self.record_spawn,
            Batched::RunnerEvents => &self.runner_events,
        }
    }
}

/// The way into one script's batching task (none until the first call, or after the task
/// ended).
#[derive(Default)]
struct Batcher {
    task: Mutex<Option<mpsc::UnboundedSender<Item>>>,
}

impl Queue {
    /// Runs `kind`'s script for one item (`keys` after the fixed keys, `args` after the
    /// common arguments), in a script call with whatever other calls of it are waiting.
    pub(crate) async fn batched(
        &self,
        kind: Batched,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value> {
        let (reply, answer) = oneshot::channel();
        let item = Item { keys, args, reply };
        {
            let mut task = self
                .batchers
                .of(kind)
                .task
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // A task that ended (idle, or its runtime gone) refuses the item: start another.
            let refused = match task.as_ref() {
                Some(sender) => sender.send(item).err().map(|e| e.0),
                None => Some(item),
            };
            if let Some(item) = refused {
                let (sender, receiver) = mpsc::unbounded_channel();
                sender.send(item).map_err(|_| QueueError::Interrupted)?;
                *task = Some(sender);
                tokio::spawn(run(self.clone(), kind, receiver));
            }
        }
        self.bounded(async { answer.await.map_err(|_| QueueError::Interrupted)? })
            .await
    }
}

/// A batcher's task: takes every waiting item (up to [`MAX_ITEMS`]), runs them in one script
/// call, hands each its reply, and again, until [`IDLE`] passes without an item.
async fn run(queue: Queue, kind: Batched, mut receiver: mpsc::UnboundedReceiver<Item>) {
    loop {
        let mut items = match tokio::time::timeout(IDLE, receiver.recv()).await {
            Ok(Some(item)) => vec![item],
            Ok(None) => return,
            Err(_) => {
                // Refuse new items (their callers start another task), then finish the ones
                // that came meanwhile.
                receiver.close();
                let mut left = Vec::new();
                while let Some(item) = receiver.recv().await {
                    left.push(item);
                    if left.len() == MAX_ITEMS {
                        apply(&queue, kind, std::mem::take(&mut left)).await;
                    }
                }
                if !left.is_empty() {
                    apply(&queue, kind, left).await;
                }
                return;
            }
        };
        while items.len() < MAX_ITEMS {
            match receiver.try_recv() {
                Ok(item) => items.push(item),
                Err(_) => break,
            }
        }
        apply(&queue, kind, items).await;
    }
}

/// Runs one script call for `items` and hands each its reply (the call's error to each, when
/// the call as a whole failed).
async fn apply(queue: &Queue, kind: Batched, items: Vec<Item>) {
    let calls: Vec<(&[String], &[String])> = items
        .iter()
        .map(|item| (item.keys.as_slice(), item.args.as_slice()))
        .collect();
    let replies = queue.eval_items(kind.script(&queue.scripts), &calls).await;
    match replies {
        Ok(replies) => {
            for (item, reply) in items.into_iter().zip(replies) {
                let _ = item.reply.send(reply);
            }
        }
        Err(e) if items.len() == 1 => {
            let _ = items.into_iter().next().map(|item| item.reply.send(Err(e)));
        }
        Err(e) => {
            let shared = Arc::new(e);
            for item in items {
                let _ = item.reply.send(Err(QueueError::Shared(shared.clone())));
            }
        }
    }
}

/// Calls made at once share script calls, and each still gets its own answer; one that fails
/// fails alone; the retry a runner's batch causes leaves the next attempt counting afresh.
#[cfg(test)]
mod tests {
    use contract::RunOutcome;
    use redis::AsyncCommands;
    use testkit::redis::RedisServer;

    use crate::fields::job as f;
    use crate::{new_job_id, Admission, NewJob, Queue, QueueSettings, RedisSettings, Submission};

    fn queue_at(url: &str) -> Queue {
        let redis = RedisSettings::for_tests(url, format!("test-batch-{}:", new_job_id()));
        Queue::new(&redis, &QueueSettings::for_tests()).unwrap()
    }

    fn job(task: String, delivery: Option<String>) -> NewJob {
        NewJob {
            agent: "echo".into(),
            task,
            delivery,
            timeout_secs: 60,
            ..NewJob::default()
        }
    }

    /// `EVALSHA` calls the server has run.
    async fn script_calls(queue: &Queue) -> u64 {
        let mut conn = queue.dedicated_connection().await.unwrap();
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|l| l.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    #[tokio::test]
    async fn submits_made_at_once_share_script_calls_and_each_gets_its_own_job() {
        let server = RedisServer::new().started();
        let queue = queue_at(&server.url());
        let before = script_calls(&queue).await;
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.submit(&job(format!("task {i}"), None)).await })
            })
            .collect();
        let mut ids = std::collections::HashSet::new();
        for (i, task) in tasks.into_iter().enumerate() {
            let Submission::Created(created) = task.await.unwrap().unwrap() else {
                panic!("submit {i} made no job");
            };
            assert_eq!(created.task, format!("task {i}"));
            assert_eq!(created.attempt, 1);
            let stored = queue.get(&created.id).await.unwrap().unwrap();
            assert_eq!(stored.task, created.task);
            assert_eq!(stored.created_at, created.created_at);
            ids.insert(created.id);
        }
        assert_eq!(ids.len(), 300, "every submit made a job of its own");
        let calls = script_calls(&queue).await - before;
        assert!(calls < 300, "300 submits at once took {calls} script calls");
        assert_eq!(queue.stats().await.unwrap().entered["queued"], 300);
    }

    #[tokio::test]
    async fn a_call_that_fails_in_a_shared_script_call_fails_alone() {
        let server = RedisServer::new().started();
        let queue = queue_at(&server.url());
        // The delivery's dedup key holds a hash: reading it fails with WRONGTYPE.
        let mut conn = queue.dedicated_connection().await.unwrap();
        let _: () = conn
            .hset(queue.keys().dedup("test:broken"), "x", "1")
            .await
            .unwrap();
        let tasks: Vec<_> = (0..41)
            .map(|i| {
                let queue = queue.clone();
                let delivery = (i == 20).then(|| "test:broken".to_string());
                tokio::spawn(async move { queue.submit(&job(format!("task {i}"), delivery)).await })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let submitted = task.await.unwrap();
            if i == 20 {
                let e = submitted.expect_err("the broken delivery's submit fails");
                assert!(format!("{:?}", e).contains("WRONGTYPE"), "{e:?}");
            } else {
                assert!(
                    matches!(submitted, Ok(Submission::Created(_))),
                    "submit {i}: {submitted:?}"
                );
            }
        }
        assert_eq!(queue.stats().await.unwrap().entered["queued"], 40);
    }

    #[tokio::test]
    async fn a_retry_caused_by_a_runners_batch_leaves_the_next_attempt_counting_from_zero() {
        let server = RedisServer::new().started();
        let queue = queue_at(&server.url());
        queue.ensure_group().await.unwrap();
        let id = queue
            .submit(&job("retry me".into(), None))
            .await
            .unwrap()
            .job()
            .unwrap()
            .id
            .clone();
        let claimed = crate::testing::claim(&queue).await;
        assert!(matches!(claimed[..], [(_, Admission::Spawn { .. })]));
        let batch = crate::testing::start_and_end(1, RunOutcome::Terminated);
        let mut conn = queue.dedicated_connection().await.unwrap();
        let outcome = queue.apply_runner_batch(&id, &batch).await.unwrap();
        assert_eq!(outcome.state, "retrying");
        let counters: (u64, u64, u32) = redis::cmd("HMGET")
            .arg(queue.keys().job(&id))
            .arg(f::RUNNER_SEQ)
            .arg(f::OUTPUT_BYTES)
            .arg(f::ATTEMPT)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(counters, (0, 0, 2), "runner_seq, output_bytes, attempt");
    }
}
