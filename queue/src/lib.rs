//! The durable queue of agentsmith: job records, the ready stream, admission, leases,
//! retries, the reply outbox and event streams, all in Redis.
//!
//! Every state change is one Lua script, so a transition, its counters, its event and its
//! reply are written together or not at all. Nothing here is kept in memory between calls:
//! any number of dispatchers can share one Redis.
//!
//! | module | what |
//! |---|---|
//! | [`keys`] | every Redis key, in one place ([`Keys`]) |
//! | [`fields`] | every field name of a record, an outbox entry, a stream entry |
//! | `scripts` (and `scripts/*.lua`) | the Lua transitions, with a prelude generated from `keys` and `fields` |
//! | [`job`] | the job as stored and shown: [`Job`], [`JobState`], [`Origin`], [`JobEvent`], [`NewJob`] |
//! | `jobs` | submit, read, list (by the state and project indexes), cancel and retry jobs |
//! | `batch` | calls of the busiest scripts (submit, record a spawn, a runner's batch) made at once, combined into one script call |
//! | `claims` | claim ready entries, admit them, record spawns and failed attempts |
//! | `leases` | expired leases, extensions, due retries, the index sweep and backfill |
//! | `runner` | what a runner's batch of events does to its job |
//! | `outbox` | replies waiting to be sent, retried until delivered |
//! | `deliveries` (and `deliveries.lua`) | the delivery journal: verified webhook deliveries, their decisions and bodies, bounded |
//! | `streams` (and `stream_page.lua`) | a job's events and the dispatcher-wide feed: paged by entries and bytes, followed by one reader |
//! | `stats` | counters for metrics |
//! | [`settings`] | the `redis:` and `queue:` sections of the configuration |
//! | `connection` | the Redis client those settings describe: URL, credentials, TLS, the primary Sentinel names |
//! | [`error`] | [`QueueError`] |

mod batch;
mod claims;
#[cfg(test)]
mod cluster;
mod connection;
mod deliveries;
pub mod error;
#[cfg(test)]
mod failover;
pub mod fields;
#[cfg(test)]
mod follow_ups;
pub mod job;
mod jobs;
pub mod keys;
mod leases;
#[cfg(test)]
mod lists;
mod outbox;
mod questions;
mod runner;
mod scripts;
pub mod settings;
mod stats;
mod streams;
#[cfg(test)]
mod target_slots;
#[cfg(test)]
mod testing;
mod values;
#[cfg(test)]
mod waiting;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value};

pub use claims::{Admission, AttemptFailure, Claim, SpawnRecord, TargetChoice};
pub use deliveries::{
    new_delivery_id, Decision, Delivery, DeliveryFilter, DeliveryPage, MAX_DELIVERY_BODY,
};
pub use error::{QueueError, Result};
pub use job::{FeedEvent, Job, JobEvent, JobState, NewJob, Origin, Question};
pub use jobs::{CancelOutcome, JobFilter, Page, RetryOutcome, Submission};
pub use keys::Keys;
pub use outbox::{Reply, ReplyBody};
pub use questions::{AnswerOutcome, AnswerPoll, Expiry, InboxPoll, MessageOutcome};
pub use runner::{
    bounded_change, BatchOutcome, Exchange, MAX_LINKS, MAX_NOTES_BYTES, MAX_RECORDED_LINE_BYTES,
    MAX_SUMMARY_BYTES, MAX_URL_BYTES,
};
pub use settings::{QueueSettings, RedisSentinelSettings, RedisSettings, RedisTlsSettings};
pub use stats::Stats;
pub use streams::{RawEntry, StreamPage, StreamReader};

use scripts::Scripts;

/// The queue: a Redis connection, the keys and the scripts.
///
/// Every command that does not block shares one multiplexed connection
/// (`ConnectionManager`: pipelined by the driver, reconnecting by itself); blocking reads
/// get connections of their own ([`Queue::dedicated_connection`]). A pool would cost a
/// health-check round trip per checkout, which doubled the round trips per job.
#[derive(Clone)]
pub struct Queue {
    shared: Arc<connection::Shared>,
    /// The server, or the sentinels that name it.
    target: connection::Target,
    /// Replicas each script's writes must reach before the call succeeds (`WAIT`); 0: none.
    min_replicas_acked: u32,
    keys: Keys,
    /// The fixed keys, the first `KEYS` of every script, built once.
    fixed_keys: Arc<[String]>,
    scripts: Arc<Scripts>,
    /// The busiest scripts' calls, combined (see `batch`).
    batchers: Arc<batch::Batchers>,
    limits: QueueSettings,
    timeout: Duration,
    dedup_ttl: Duration,
}

/// Whether an item's reply says it failed (`{ITEM_FAILED, why}`, see `scripts.rs`).
fn is_failure(parts: &[Value]) -> bool {
    matches!(parts, [Value::BulkString(first), _] if first == scripts::ITEM_FAILED.as_bytes())
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Queue {
    /// Creates the queue; no connection is made until the first command. Fails on a URL
    /// that does not parse and on `redis.tls` files that cannot be read or used.
    pub fn new(redis: &RedisSettings, limits: &QueueSettings) -> Result<Self> {
        let target = connection::Target::new(redis)?;
        Ok(Self {
            shared: Arc::default(),
            target,
            min_replicas_acked: redis.min_replicas_acked,
            keys: Keys::new(&redis.prefix),
            fixed_keys: Keys::new(&redis.prefix).fixed_keys().into(),
            scripts: Arc::new(Scripts::load()),
            batchers: Arc::default(),
            limits: limits.clone(),
            timeout: Duration::from_secs(redis.timeout_secs),
            dedup_ttl: Duration::from_secs(86_400),
        })
    }

    /// How long webhook delivery ids are remembered (`sources.dedup_ttl_secs`).
    pub fn with_dedup_ttl(mut self, ttl: Duration) -> Self {
        self.dedup_ttl = ttl;
        self
    }

    /// The same queue with its scripts checked strictly (see `Scripts::strict`).
    #[cfg(test)]
    fn strict(mut self) -> Self {
        self.scripts = Arc::new(Scripts::strict());
        self
    }

    /// The keys this queue uses.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The queue settings.
    pub fn limits(&self) -> &QueueSettings {
        &self.limits
    }

    /// Runs `work`, failing with [`QueueError::Timeout`] if Redis takes too long.
    async fn bounded<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| QueueError::Timeout(self.timeout))?
    }

    /// The shared connection, made on first use (and again after a failed attempt, or
    /// after the sentinels named another primary).
    async fn conn(&self) -> Result<ConnectionManager> {
        self.shared.manager(&self.target, self.timeout).await
    }

    /// Runs `script` for one item: the fixed keys followed by `keys`, and the common
    /// arguments followed by `args` (see `scripts.rs`).
    async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<T> {
        let reply = self
            .eval_items(script, &[(keys, args)])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| QueueError::Corrupt("a script answered no item".into()))??;
        Ok(redis::from_redis_value(reply).map_err(redis::RedisError::from)?)
    }

    /// Runs `script` once for all `items` (each its keys and its arguments); one reply per
    /// item, in order: its value, or the error it met.
    async fn eval_items(
        &self,
        script: &Script,
        items: &[(&[String], &[String])],
    ) -> Result<Vec<Result<Value>>> {
        let replies: Vec<Value> = self
            .bounded(async {
                let mut conn = self.conn().await?;
                let mut invocation = script.prepare_invoke();
                for key in self.fixed_keys.iter() {
                    invocation.key(key);
                }
                for (keys, _) in items {
                    for key in keys.iter() {
                        invocation.key(key);
                    }
                }
                invocation
                    .arg(self.keys.prefix())
                    .arg(now_ms())
                    .arg(self.limits.events_max_len)
                    .arg(self.limits.retention_secs * 1000)
                    .arg(self.limits.max_concurrent_jobs)
                    .arg(self.limits.start_timeout_secs * 1000)
                    .arg(items.len());
                for (keys, args) in items {
                    invocation.arg(keys.len()).arg(args.len());
                    for arg in args.iter() {
                        invocation.arg(arg);
                    }
                }
                let replies = invocation.invoke_async(&mut conn).await;
                self.shared
                    .written(replies, &mut conn, self.min_replicas_acked, self.timeout)
                    .await
            })
            .await?;
        if replies.len() != items.len() {
            return Err(QueueError::Corrupt(format!(
                "a script answered {} items of {}",
                replies.len(),
                items.len()
            )));
        }
        Ok(replies
            .into_iter()
            .map(|reply| match reply {
                Value::Array(ref parts) if is_failure(parts) => Err(QueueError::Script(
                    parts.get(1).map(values::value_string).unwrap_or_default(),
                )),
                reply => Ok(reply),
            })
            .collect())
    }

    /// The record and event keys of a job: what scripts about one job declare after the
    /// fixed keys.
    fn job_keys(&self, id: &str) -> [String; 2] {
        [self.keys.job(id), self.keys.events(id)]
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<()> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok(())
        })
        .await
    }

    /// Redis's `stream-node-max-bytes`: the size at which every job's new event stream is
    /// allocated (README, "Redis's memory per job"). `None` when Redis does not let us read
    /// its configuration (a managed Redis may refuse `CONFIG`).
    pub async fn stream_node_max_bytes(&self) -> Result<Option<u64>> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("stream-node-max-bytes")
                .query_async(&mut conn)
                .await;
            Ok(reply
                .ok()
                .and_then(|r| r.get(1).and_then(|v| v.parse().ok())))
        })
        .await
    }

    /// Creates the consumer group `group` of `stream` (and the stream) unless it exists.
    async fn ensure_group_of(&self, stream: &str, group: &str) -> Result<()> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match created {
                Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                other => other.map(|_| ()).map_err(QueueError::from),
            }
        })
        .await
    }

    /// Creates the ready stream and its consumer group if they do not exist.
    pub async fn ensure_group(&self) -> Result<()> {
        self.ensure_group_of(&self.keys.queue(), keys::GROUP).await
    }

    /// A connection for blocking reads (claims, following events); with Sentinel, to the
    /// primary the sentinels name when it is made.
    pub async fn dedicated_connection(&self) -> Result<redis::aio::MultiplexedConnection> {
        self.bounded(self.target.dedicated(self.timeout)).await
    }

    /// The key of runner tokens: `configured` if set, else one generated once and kept in
    /// Redis so every replica uses the same.
    pub async fn runner_secret(&self, configured: &str) -> Result<String> {
        if !configured.is_empty() {
            return Ok(configured.to_string());
        }
        self.bounded(async {
            let mut conn = self.conn().await?;
            let candidate = hex::encode(rand::random::<[u8; 32]>());
            let key = self.keys.runner_secret();
            let _: Value = redis::cmd("SET")
                .arg(&key)
                .arg(&candidate)
                .arg("NX")
                .query_async(&mut conn)
                .await?;
            Ok(conn.get(&key).await?)
        })
        .await
    }

    /// The retry delay after `attempt` failed: base * 2^(attempt-1), capped, +-20% jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.limits.backoff_base_secs as f64;
        let cap = self.limits.backoff_max_secs as f64;
        let raw = (base * 2f64.powi(attempt.saturating_sub(1).min(30) as i32)).min(cap);
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        Duration::from_secs_f64(raw * jitter)
    }
}

/// A new job id: 12 characters of lowercase base32 (60 random bits), usable in workload
/// names, URLs and chat messages.
pub fn new_job_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut bits: u64 = rand::random();
    (0..12)
        .map(|_| {
            let c = ALPHABET[(bits & 31) as usize] as char;
            bits >>= 5;
            c
        })
        .collect()
}

/// Whether `id` could be a job id (guards keys against arbitrary input).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_valid_and_distinct() {
        let a = new_job_id();
        let b = new_job_id();
        assert!(valid_id(&a) && valid_id(&b));
        assert_eq!(a.len(), 12);
        assert_ne!(a, b);
        assert!(!valid_id("../x") && !valid_id("A") && !valid_id(""));
    }

    /// What the start-up hint and the README say: the queue reads Redis's stream node size,
    /// and a new job's event stream takes at least that much with 4096 (Redis's default) and
    /// well under half of that with 1024. (On a Redis of its own: it changes the setting.)
    #[tokio::test]
    async fn a_jobs_event_stream_is_allocated_at_the_stream_node_size_the_queue_reads() {
        let server = testkit::redis::RedisServer::new().started();
        let redis = RedisSettings::for_tests(&server.url(), "test-nodes:".to_string());
        let queue = Queue::new(&redis, &QueueSettings::for_tests()).unwrap();
        let mut conn = ::redis::Client::open(server.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let mut sizes = Vec::new();
        for bytes in [4096, 1024] {
            let _: () = ::redis::cmd("CONFIG")
                .arg("SET")
                .arg("stream-node-max-bytes")
                .arg(bytes)
                .query(&mut conn)
                .unwrap();
            assert_eq!(queue.stream_node_max_bytes().await.unwrap(), Some(bytes));
            let job = NewJob {
                agent: "echo".into(),
                task: "t".into(),
                timeout_secs: 60,
                ..NewJob::default()
            };
            let id = queue.submit(&job).await.unwrap().job().unwrap().id.clone();
            let used: u64 = ::redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(queue.keys().events(&id))
                .query(&mut conn)
                .unwrap();
            sizes.push(used);
        }
        assert!(sizes[0] >= 4096, "{sizes:?}");
        assert!(sizes[1] < 2048, "{sizes:?}");
    }
}
