//! The durable queue: job records, the ready stream, admission, leases, retries and
//! event streams, all in Redis.
//!
//! Every state change is one Lua script (in `scripts/`, each prepended with
//! `scripts/lib.lua`), so a transition, its counters and its event are written together
//! or not at all. Nothing here is kept in memory between calls: any number of dispatchers
//! can share one Redis.

mod error;
pub mod job;
pub mod keys;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script, Value};
use secrecy::ExposeSecret;
use spawner::contract::{RunOutcome, RunnerBatch, RunnerEvent};
use spawner::JobHandle;
use tokio::sync::OnceCell;

pub use error::{QueueError, Result};
pub use job::{FeedEvent, Job, JobEvent, JobState, NewJob, Origin};
pub use keys::Keys;

use crate::settings::{QueueSettings, RedisSettings};

const LIB: &str = include_str!("scripts/lib.lua");

struct Scripts {
    submit: Script,
    claim: Script,
    record_spawn: Script,
    fail_attempt: Script,
    runner_events: Script,
    cancel: Script,
    retry: Script,
    promote: Script,
    extend_lease: Script,
    sweep: Script,
    notify_defer: Script,
    notify_promote: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

impl Scripts {
    fn load() -> Self {
        Self {
            submit: script(include_str!("scripts/submit.lua")),
            claim: script(include_str!("scripts/claim.lua")),
            record_spawn: script(include_str!("scripts/record_spawn.lua")),
            fail_attempt: script(include_str!("scripts/fail_attempt.lua")),
            runner_events: script(include_str!("scripts/runner_events.lua")),
            cancel: script(include_str!("scripts/cancel.lua")),
            retry: script(include_str!("scripts/retry.lua")),
            promote: script(include_str!("scripts/promote.lua")),
            extend_lease: script(include_str!("scripts/extend_lease.lua")),
            sweep: script(include_str!("scripts/sweep.lua")),
            notify_defer: script(include_str!("scripts/notify_defer.lua")),
            notify_promote: script(include_str!("scripts/notify_promote.lua")),
        }
    }
}

/// What a submit did.
#[derive(Debug, Clone, PartialEq)]
pub enum Submission {
    /// A new job, queued.
    Created(Job),
    /// The job the idempotency key already named; nothing new.
    Existing(Job),
    /// The delivery was seen before: the job it made (or was answered with), if it is
    /// still kept; nothing new.
    Duplicate {
        /// The job's id.
        job_id: String,
        /// The job, unless it has expired.
        job: Option<Job>,
    },
    /// The ticket already has an unfinished job; nothing new.
    Running(Job),
}

impl Submission {
    /// The job that answers the request, if it is still kept.
    pub fn job(&self) -> Option<&Job> {
        match self {
            Submission::Created(job) | Submission::Existing(job) | Submission::Running(job) => {
                Some(job)
            }
            Submission::Duplicate { job, .. } => job.as_ref(),
        }
    }
}

/// A reply waiting in the outbox (`notify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The stream entry.
    pub entry: String,
    /// What to say.
    pub body: ReplyBody,
    /// Deliveries tried before this one.
    pub tries: u32,
}

/// What a reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyBody {
    /// The job reached `state` (the reply reads the job when it is sent).
    State {
        /// The job.
        job_id: String,
        /// The state.
        state: JobState,
        /// The attempt.
        attempt: u32,
    },
    /// A trigger for a ticket whose job `job_id` has not ended: "already running".
    AlreadyRunning {
        /// The unfinished job.
        job_id: String,
        /// Where the trigger came from.
        origin: Origin,
    },
    /// A plain message (answers to Slack commands that could not be given in the response).
    Text {
        /// Where it goes.
        origin: Origin,
        /// The text.
        text: String,
        /// Slack's `response_url` to answer through, if there is one.
        response_url: Option<String>,
    },
    /// An entry this version cannot read; it is dropped.
    Unreadable(String),
}

impl ReplyBody {
    /// The entry's fields.
    fn fields(&self) -> Vec<(&'static str, String)> {
        match self {
            ReplyBody::State {
                job_id,
                state,
                attempt,
            } => vec![
                ("kind", "state".into()),
                ("job", job_id.clone()),
                ("state", state.as_str().into()),
                ("attempt", attempt.to_string()),
            ],
            ReplyBody::AlreadyRunning { job_id, origin } => vec![
                ("kind", "running".into()),
                ("job", job_id.clone()),
                (
                    "origin",
                    serde_json::to_string(origin).expect("an origin serializes"),
                ),
            ],
            ReplyBody::Text {
                origin,
                text,
                response_url,
            } => vec![
                ("kind", "text".into()),
                (
                    "origin",
                    serde_json::to_string(origin).expect("an origin serializes"),
                ),
                ("text", text.clone()),
                ("response_url", response_url.clone().unwrap_or_default()),
            ],
            ReplyBody::Unreadable(why) => vec![("kind", "unreadable".into()), ("why", why.clone())],
        }
    }

    /// Reads an entry's fields.
    fn from_fields(fields: &HashMap<String, String>) -> ReplyBody {
        let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
        let origin = || serde_json::from_str::<Origin>(&get("origin"));
        match get("kind").as_str() {
            "state" => match get("state").parse::<JobState>() {
                Ok(state) => ReplyBody::State {
                    job_id: get("job"),
                    state,
                    attempt: get("attempt").parse().unwrap_or(1),
                },
                Err(e) => ReplyBody::Unreadable(e),
            },
            "running" => match origin() {
                Ok(origin) => ReplyBody::AlreadyRunning {
                    job_id: get("job"),
                    origin,
                },
                Err(e) => ReplyBody::Unreadable(format!("origin: {e}")),
            },
            "text" => match origin() {
                Ok(origin) => ReplyBody::Text {
                    origin,
                    text: get("text"),
                    response_url: Some(get("response_url")).filter(|u| !u.is_empty()),
                },
                Err(e) => ReplyBody::Unreadable(format!("origin: {e}")),
            },
            other => ReplyBody::Unreadable(format!("unknown kind {other:?}")),
        }
    }
}

/// A claimed entry of the ready queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The stream entry id.
    pub entry: String,
    /// The job id.
    pub job_id: String,
}

/// What to do with a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Spawn this attempt, then [`Queue::record_spawn`].
    Spawn {
        /// The attempt to spawn.
        attempt: u32,
        /// The job as admitted.
        job: Box<Job>,
    },
    /// No slot: the job waits its turn.
    Wait,
    /// Nothing to do (cancelled, already spawned, gone).
    Skip,
}

/// The result of recording a spawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnRecord {
    /// Recorded.
    Recorded,
    /// Another workload was already recorded for this attempt: stop ours.
    Duplicate,
    /// The attempt ended meanwhile (cancelled, retried): stop ours.
    Stale,
}

/// The result of failing an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// Another attempt follows after a backoff.
    Retrying,
    /// The job failed for good.
    Failed,
    /// The attempt had already ended (or its lease was renewed): nothing changed.
    Stale,
}

/// What applying a runner batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The job's state afterwards.
    pub state: String,
    /// Whether the runner should stop its agent (the attempt is no longer wanted).
    pub stop: bool,
}

/// The result of a cancel request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Cancelled; the workload to stop, if one was running.
    Cancelled(Option<JobHandle>),
    /// The job had already ended in this state.
    AlreadyFinished(JobState),
    /// No such job.
    NotFound,
}

/// The result of a retry request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Queued again as this attempt.
    Queued(u32),
    /// The job has not ended.
    Active(JobState),
    /// No such job.
    NotFound,
}

/// Counters for metrics, read from Redis.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Jobs currently in each non-terminal state.
    pub current: HashMap<String, i64>,
    /// Jobs that ever entered each state.
    pub entered: HashMap<String, i64>,
    /// Entries in the ready stream not yet taken.
    pub ready: u64,
    /// Jobs waiting for a slot.
    pub waiting: u64,
    /// Retries waiting out their backoff.
    pub delayed: u64,
    /// Admitted jobs (starting or running).
    pub admitted: u64,
}

/// Which jobs a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this project.
    pub project: Option<String>,
}

impl JobFilter {
    /// Whether `job` passes the filter.
    pub fn matches(&self, job: &Job) -> bool {
        self.state.is_none_or(|s| s == job.state)
            && self
                .project
                .as_ref()
                .is_none_or(|p| job.project.as_ref() == Some(p))
    }
}

/// One page of the job index.
#[derive(Debug, Clone)]
pub struct Page {
    /// The jobs, newest first.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` to get the next page; `None` at the end.
    pub next: Option<String>,
}

/// The queue: a Redis connection, the keys and the scripts.
///
/// Every command that does not block shares one multiplexed connection
/// (`ConnectionManager`: pipelined by the driver, reconnecting by itself); blocking reads
/// get connections of their own ([`Queue::dedicated_connection`]). A pool would cost a
/// health-check round trip per checkout, which doubled the round trips per job.
#[derive(Clone)]
pub struct Queue {
    shared: std::sync::Arc<OnceCell<ConnectionManager>>,
    client: redis::Client,
    keys: Keys,
    scripts: std::sync::Arc<Scripts>,
    limits: QueueSettings,
    timeout: Duration,
    dedup_ttl: Duration,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Queue {
    /// Creates the queue; no connection is made until the first command.
    pub fn new(redis: &RedisSettings, limits: &QueueSettings) -> Result<Self> {
        let url = redis.url.expose_secret();
        let timeout = Duration::from_secs(redis.timeout_secs);
        let client = redis::Client::open(url).map_err(|e| QueueError::Config(e.to_string()))?;
        Ok(Self {
            shared: std::sync::Arc::default(),
            client,
            keys: Keys::new(&redis.prefix),
            scripts: std::sync::Arc::new(Scripts::load()),
            limits: limits.clone(),
            timeout,
            dedup_ttl: Duration::from_secs(86_400),
        })
    }

    /// How long webhook delivery ids are remembered (`sources.dedup_ttl_secs`).
    pub fn with_dedup_ttl(mut self, ttl: Duration) -> Self {
        self.dedup_ttl = ttl;
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

    async fn bounded<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| QueueError::Timeout(self.timeout))?
    }

    /// The shared connection, made on first use (and again after a failed first attempt).
    async fn conn(&self) -> Result<ConnectionManager> {
        let manager = self
            .shared
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await?;
        Ok(manager.clone())
    }

    /// Runs `script` with the common arguments followed by `args`.
    async fn eval<T: redis::FromRedisValue>(&self, script: &Script, args: &[String]) -> Result<T> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let mut invocation = script.prepare_invoke();
            invocation
                .arg(self.keys.prefix())
                .arg(now_ms())
                .arg(self.limits.events_max_len)
                .arg(self.limits.retention_secs * 1000)
                .arg(self.limits.max_concurrent_jobs)
                .arg(self.limits.start_timeout_secs * 1000);
            for arg in args {
                invocation.arg(arg);
            }
            Ok(invocation.invoke_async(&mut conn).await?)
        })
        .await
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

    /// Creates the ready stream and its consumer group if they do not exist.
    pub async fn ensure_group(&self) -> Result<()> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let created: redis::RedisResult<String> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(self.keys.queue())
                .arg(keys::GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match created {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
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

    /// Stores a new job and queues it, or says which existing job answers the request
    /// instead (its idempotency key's, its delivery's, or its ticket's unfinished one).
    pub async fn submit(&self, job: &NewJob) -> Result<Submission> {
        let id = new_job_id();
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut args = vec![
            id.clone(),
            opt(&job.idempotency_key),
            (self.limits.idempotency_ttl_secs * 1000).to_string(),
            opt(&job.delivery),
            (self.dedup_ttl.as_millis() as u64).to_string(),
            opt(&job.exclusive),
        ];
        let origin: String = job
            .origin
            .as_ref()
            .map(|o| serde_json::to_string(o).expect("an origin serializes"))
            .unwrap_or_default();
        args.push(if job.reply_if_running {
            origin.clone()
        } else {
            String::new()
        });
        let fields: [(&str, String); 16] = [
            ("agent", job.agent.clone()),
            ("task", job.task.clone()),
            ("project", opt(&job.project)),
            ("repo", opt(&job.repo)),
            ("ticket", opt(&job.ticket)),
            ("concurrency_key", opt(&job.concurrency_key)),
            ("idempotency_key", opt(&job.idempotency_key)),
            ("timeout_secs", job.timeout_secs.to_string()),
            (
                "retry_on_failure",
                if job.retry_on_failure { "1" } else { "0" }.into(),
            ),
            ("max_attempts", self.limits.max_attempts.to_string()),
            ("title", opt(&job.title)),
            ("description", opt(&job.description)),
            ("requester", opt(&job.requester)),
            ("url", opt(&job.url)),
            ("origin", origin),
            ("response_url", opt(&job.response_url)),
        ];
        for (k, v) in fields {
            args.push(k.into());
            args.push(v);
        }
        args.push("key_limit".into());
        args.push(self.limits.concurrency_key_limit.to_string());
        let reply: Vec<Value> = self.eval(&self.scripts.submit, &args).await?;
        let verdict = reply.first().map(value_string).unwrap_or_default();
        let id = reply.get(1).map(value_string).unwrap_or_default();
        let stored = reply
            .get(2)
            .and_then(|record| Job::from_fields(&id, &flat_map(record)));
        let found = |stored: Option<Job>| {
            stored.ok_or_else(|| QueueError::Corrupt(format!("job {id} is incomplete")))
        };
        Ok(match verdict.as_str() {
            "created" => Submission::Created(found(stored)?),
            "existing" => Submission::Existing(found(stored)?),
            "running" => Submission::Running(found(stored)?),
            "duplicate" => Submission::Duplicate {
                job_id: id.clone(),
                job: stored,
            },
            other => return Err(QueueError::Corrupt(format!("submit answered {other:?}"))),
        })
    }

    /// The job with this id, if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<Job>> {
        if !valid_id(id) {
            return Ok(None);
        }
        self.bounded(async {
            let mut conn = self.conn().await?;
            let fields: HashMap<String, String> = conn.hgetall(self.keys.job(id)).await?;
            if fields.is_empty() {
                return Ok(None);
            }
            Ok(Job::from_fields(id, &fields))
        })
        .await
    }

    /// A page of jobs, newest first, optionally only those in `state`. `cursor` is the
    /// `next` of the previous page.
    pub async fn list(
        &self,
        filter: &JobFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        let limit = limit.clamp(1, 500);
        self.bounded(async {
            let mut conn = self.conn().await?;
            // The cursor is "<score>:<offset among equal scores>"; scanning by score keeps
            // pages stable while new jobs arrive.
            let (mut max, mut skip) = parse_cursor(cursor);
            let mut jobs = Vec::new();
            let batch = (limit * 2).max(50);
            loop {
                let ids: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                    .arg(self.keys.jobs())
                    .arg(&max)
                    .arg("-inf")
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(skip)
                    .arg(batch)
                    .query_async(&mut conn)
                    .await?;
                if ids.is_empty() {
                    return Ok(Page { jobs, next: None });
                }
                let mut pipe = redis::pipe();
                for (id, _) in &ids {
                    pipe.hgetall(self.keys.job(id));
                }
                let records: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
                let fetched = ids.len();
                for ((id, score), fields) in ids.into_iter().zip(records) {
                    let score = format!("{}", score as i64);
                    if score == max {
                        skip += 1;
                    } else {
                        max = score;
                        skip = 1;
                    }
                    let Some(job) = Job::from_fields(&id, &fields) else {
                        continue;
                    };
                    if filter.matches(&job) {
                        jobs.push(job);
                        if jobs.len() == limit {
                            return Ok(Page {
                                jobs,
                                next: Some(format!("{max}:{skip}")),
                            });
                        }
                    }
                }
                if fetched < batch {
                    return Ok(Page { jobs, next: None });
                }
            }
        })
        .await
    }

    /// Claims up to `count` new entries of the ready queue for `consumer`, waiting up to
    /// `block` for one to arrive. Uses its own connection, so a blocked read holds no
    /// pooled one.
    pub async fn claim(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Claim>> {
        let reply: redis::RedisResult<Value> = tokio::time::timeout(
            block + self.timeout,
            read_group(keys::GROUP, consumer, count, block, &self.keys.queue()).query_async(conn),
        )
        .await
        .map_err(|_| QueueError::Timeout(block + self.timeout))?;
        match reply {
            Ok(reply) => Ok(parse_stream_reply(&reply)),
            // Redis lost its data (restarted without persistence): recreate the group.
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::warn!("the ready queue's consumer group is gone; recreating it");
                self.ensure_group().await?;
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A connection for blocking reads ([`Queue::claim`], following events).
    pub async fn dedicated_connection(&self) -> Result<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(None);
        self.bounded(async {
            Ok(self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?)
        })
        .await
    }

    /// Takes over entries another dispatcher claimed more than `min_idle` ago and never
    /// recorded (it died between claim and spawn record).
    pub async fn reclaim(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Claim>> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let reply: Value =
                auto_claim(&self.keys.queue(), keys::GROUP, consumer, min_idle, count)
                    .query_async(&mut conn)
                    .await?;
            // [next-start, [[id, [field, value, ...]], ...], [deleted ids]]
            let entries = match &reply {
                Value::Array(parts) if parts.len() >= 2 => parse_entries(&parts[1]),
                _ => Vec::new(),
            };
            Ok(entries)
        })
        .await
    }

    /// Decides what each claim means, in order, and admits the jobs that get a slot: one
    /// script call for the whole batch, so admission follows the stream's order.
    pub async fn admit(&self, claims: &[Claim]) -> Result<Vec<Admission>> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let args: Vec<String> = claims
            .iter()
            .flat_map(|c| [c.job_id.clone(), c.entry.clone()])
            .collect();
        let replies: Vec<Vec<Value>> = self.eval(&self.scripts.claim, &args).await?;
        claims
            .iter()
            .zip(replies)
            .map(|(claim, reply)| {
                let verdict = reply.first().map(value_string).unwrap_or_default();
                Ok(match verdict.as_str() {
                    "spawn" => {
                        let job = reply
                            .get(2)
                            .and_then(|record| Job::from_fields(&claim.job_id, &flat_map(record)))
                            .ok_or_else(|| {
                                QueueError::Corrupt(format!("job {} is incomplete", claim.job_id))
                            })?;
                        Admission::Spawn {
                            attempt: job.attempt,
                            job: Box::new(job),
                        }
                    }
                    "wait" => Admission::Wait,
                    _ => Admission::Skip,
                })
            })
            .collect()
    }

    /// Records the workload of a spawned attempt and acknowledges its claim.
    pub async fn record_spawn(
        &self,
        claim: &Claim,
        attempt: u32,
        handle: &JobHandle,
    ) -> Result<SpawnRecord> {
        let event = JobEvent::Spawned {
            attempt,
            backend: handle.backend.clone(),
            workload: handle.name.clone(),
            at: now_ms(),
        };
        let identity = format!("{}/{}", handle.name, handle.id.clone().unwrap_or_default());
        let verdict: String = self
            .eval(
                &self.scripts.record_spawn,
                &[
                    claim.job_id.clone(),
                    attempt.to_string(),
                    to_json(handle),
                    identity,
                    claim.entry.clone(),
                    to_json(&event),
                    (self.limits.lease_secs * 1000).to_string(),
                ],
            )
            .await?;
        Ok(match verdict.as_str() {
            "ok" => SpawnRecord::Recorded,
            "duplicate" => SpawnRecord::Duplicate,
            _ => SpawnRecord::Stale,
        })
    }

    /// Fails an attempt for an infrastructure reason (or a non-retryable spawn rejection):
    /// retried with backoff while attempts remain. With `only_if_expired`, nothing happens
    /// unless the job's lease has run out (a heartbeat may have arrived meanwhile).
    pub async fn fail_attempt(
        &self,
        job_id: &str,
        attempt: u32,
        reason: &str,
        retryable: bool,
        entry: Option<&str>,
        only_if_expired: bool,
    ) -> Result<AttemptFailure> {
        let verdict: String = self
            .eval(
                &self.scripts.fail_attempt,
                &[
                    job_id.to_string(),
                    attempt.to_string(),
                    reason.to_string(),
                    flag(retryable),
                    self.backoff(attempt).as_millis().to_string(),
                    entry.unwrap_or_default().to_string(),
                    flag(only_if_expired),
                ],
            )
            .await?;
        Ok(match verdict.as_str() {
            "retrying" => AttemptFailure::Retrying,
            "failed" => AttemptFailure::Failed,
            _ => AttemptFailure::Stale,
        })
    }

    /// Applies a batch of runner events to the job (idempotent per sequence number).
    pub async fn apply_runner_batch(
        &self,
        job_id: &str,
        batch: &RunnerBatch,
    ) -> Result<BatchOutcome> {
        let now = now_ms();
        let mut args = vec![
            job_id.to_string(),
            batch.attempt.to_string(),
            batch.first_seq.to_string(),
            (self.limits.lease_secs * 1000).to_string(),
            self.backoff(batch.attempt).as_millis().to_string(),
        ];
        for event in &batch.events {
            let (kind, payload, code, verdict) = encode_runner_event(batch.attempt, event, now);
            args.extend([kind.to_string(), payload, code, verdict]);
        }
        let (verdict, state): (String, String) =
            self.eval(&self.scripts.runner_events, &args).await?;
        Ok(BatchOutcome {
            stop: verdict == "stop",
            state,
        })
    }

    /// Cancels a job; the caller stops the returned workload.
    pub async fn cancel(&self, job_id: &str, reason: &str) -> Result<CancelOutcome> {
        if !valid_id(job_id) {
            return Ok(CancelOutcome::NotFound);
        }
        let reply: Vec<String> = self
            .eval(
                &self.scripts.cancel,
                &[job_id.to_string(), reason.to_string()],
            )
            .await?;
        Ok(match reply.first().map(String::as_str) {
            Some("cancelled") => CancelOutcome::Cancelled(
                reply
                    .get(1)
                    .filter(|h| !h.is_empty())
                    .and_then(|h| serde_json::from_str(h).ok()),
            ),
            Some("finished") => CancelOutcome::AlreadyFinished(
                reply
                    .get(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(JobState::Failed),
            ),
            _ => CancelOutcome::NotFound,
        })
    }

    /// Queues a finished job again as a new attempt with a fresh retry budget.
    pub async fn retry(&self, job_id: &str) -> Result<RetryOutcome> {
        if !valid_id(job_id) {
            return Ok(RetryOutcome::NotFound);
        }
        let reply: Vec<String> = self
            .eval(
                &self.scripts.retry,
                &[job_id.to_string(), self.limits.max_attempts.to_string()],
            )
            .await?;
        Ok(match reply.first().map(String::as_str) {
            Some("queued") => {
                RetryOutcome::Queued(reply.get(1).and_then(|a| a.parse().ok()).unwrap_or(1))
            }
            Some("active") => RetryOutcome::Active(
                reply
                    .get(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(JobState::Running),
            ),
            _ => RetryOutcome::NotFound,
        })
    }

    /// Makes the outbox's consumer group, if it does not exist yet.
    pub async fn ensure_notify_group(&self) -> Result<()> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let made: redis::RedisResult<Value> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(self.keys.notify())
                .arg(keys::NOTIFY_GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match made {
                Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                other => other.map(|_| ()).map_err(QueueError::from),
            }
        })
        .await
    }

    /// Takes up to `count` replies from the outbox for `consumer`: first those another
    /// notifier took more than `stale` ago and never finished (it died), then new ones,
    /// waiting up to `block` for one. Needs its own connection, since it blocks.
    pub async fn claim_replies(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        consumer: &str,
        count: usize,
        stale: Duration,
        block: Duration,
    ) -> Result<Vec<Reply>> {
        let deadline = block + self.timeout;
        let work = async {
            let reclaimed: Value = auto_claim(
                &self.keys.notify(),
                keys::NOTIFY_GROUP,
                consumer,
                stale,
                count,
            )
            .query_async(conn)
            .await?;
            let replies = match &reclaimed {
                Value::Array(parts) if parts.len() >= 2 => stream_replies(&parts[1]),
                _ => Vec::new(),
            };
            if !replies.is_empty() {
                return Ok(replies);
            }
            let read: Value = read_group(
                keys::NOTIFY_GROUP,
                consumer,
                count,
                block,
                &self.keys.notify(),
            )
            .query_async(conn)
            .await?;
            Ok::<_, redis::RedisError>(
                read_stream_entries(&read)
                    .into_iter()
                    .flat_map(stream_replies)
                    .collect(),
            )
        };
        match tokio::time::timeout(deadline, work)
            .await
            .map_err(|_| QueueError::Timeout(deadline))?
        {
            Ok(replies) => Ok(replies),
            // Redis lost its data (restarted without persistence): recreate the group.
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_notify_group().await?;
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A reply was delivered (or given up): it leaves the outbox.
    pub async fn reply_done(&self, entry: &str) -> Result<()> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let _: Value = redis::pipe()
                .atomic()
                .cmd("XACK")
                .arg(self.keys.notify())
                .arg(keys::NOTIFY_GROUP)
                .arg(entry)
                .cmd("XDEL")
                .arg(self.keys.notify())
                .arg(entry)
                .query_async(&mut conn)
                .await?;
            Ok(())
        })
        .await
    }

    /// A reply could not be delivered: it is tried again after `delay`.
    pub async fn reply_later(&self, reply: &Reply, delay: Duration) -> Result<()> {
        let due = now_ms() + delay.as_millis() as i64;
        let mut args = vec![reply.entry.clone(), due.to_string()];
        for (k, v) in reply.body.fields() {
            args.push(k.into());
            args.push(v);
        }
        args.push("tries".into());
        args.push((reply.tries + 1).to_string());
        let _: i64 = self.eval(&self.scripts.notify_defer, &args).await?;
        Ok(())
    }

    /// Puts a plain reply in the outbox.
    pub async fn send_reply(&self, body: &ReplyBody) -> Result<()> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let mut fields = body.fields();
            fields.push(("tries", "0".into()));
            let _: String = conn.xadd(self.keys.notify(), "*", &fields).await?;
            Ok(())
        })
        .await
    }

    /// Puts replies whose retry is due back in the outbox; returns how many.
    pub async fn promote_replies(&self) -> Result<u64> {
        self.eval(&self.scripts.notify_promote, &["500".to_string()])
            .await
    }

    /// Replies waiting in the outbox and for a retry.
    pub async fn replies_pending(&self) -> Result<(u64, u64)> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let queued: u64 = conn.xlen(self.keys.notify()).await?;
            let delayed: u64 = conn.zcard(self.keys.notify_delayed()).await?;
            Ok((queued, delayed))
        })
        .await
    }

    /// Counts one more post through a Slack `response_url` for `job_id` and returns the
    /// count (Slack takes at most five per command).
    pub async fn count_response_post(&self, job_id: &str) -> Result<u64> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            Ok(conn
                .hincr(self.keys.job(job_id), "response_posts", 1)
                .await?)
        })
        .await
    }

    /// Moves due retries back to the ready queue; returns how many.
    pub async fn promote_due(&self) -> Result<u64> {
        self.eval(&self.scripts.promote, &["500".to_string()]).await
    }

    /// Jobs whose lease has run out (at most `limit`).
    pub async fn expired_leases(&self, limit: usize) -> Result<Vec<String>> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            Ok(redis::cmd("ZRANGEBYSCORE")
                .arg(self.keys.running())
                .arg("-inf")
                .arg(now_ms())
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut conn)
                .await?)
        })
        .await
    }

    /// Extends the lease of an attempt by `by`; false if the attempt is over.
    pub async fn extend_lease(&self, job_id: &str, attempt: u32, by: Duration) -> Result<bool> {
        let until = now_ms() + by.as_millis() as i64;
        let extended: i64 = self
            .eval(
                &self.scripts.extend_lease,
                &[job_id.to_string(), attempt.to_string(), until.to_string()],
            )
            .await?;
        Ok(extended == 1)
    }

    /// Drops index entries of expired jobs; returns how many.
    pub async fn sweep(&self) -> Result<u64> {
        self.eval(&self.scripts.sweep, &["1000".to_string()]).await
    }

    /// Events of a job after `after` (a stream id; `None` for the start), at most `count`.
    pub async fn events_after(
        &self,
        job_id: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<(String, JobEvent)>> {
        self.read_stream(&self.keys.events(job_id), after, count)
            .await
    }

    /// The last `count` output lines of a job (oldest first), for failure replies.
    pub async fn last_log_lines(&self, job_id: &str, count: usize) -> Result<Vec<String>> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let reply: Value = redis::cmd("XREVRANGE")
                .arg(self.keys.events(job_id))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(count.saturating_mul(4).max(50))
                .query_async(&mut conn)
                .await?;
            let mut lines: Vec<String> = decode_events::<JobEvent>(&reply)
                .into_iter()
                .filter_map(|(_, event)| match event {
                    JobEvent::Log { line, .. } => Some(line),
                    _ => None,
                })
                .take(count)
                .collect();
            lines.reverse();
            Ok(lines)
        })
        .await
    }

    /// Whether this is the first time `delivery` is seen (remembered for the dedup ttl).
    pub async fn first_delivery(&self, delivery: &str) -> Result<bool> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let set: Option<String> = redis::cmd("SET")
                .arg(self.keys.dedup(delivery))
                .arg("-")
                .arg("NX")
                .arg("PX")
                .arg(self.dedup_ttl.as_millis() as u64)
                .query_async(&mut conn)
                .await?;
            Ok(set.is_some())
        })
        .await
    }

    /// Waits up to `block` for events of a job after `after`, on a dedicated connection.
    pub async fn wait_events(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        job_id: &str,
        after: &str,
        block: Duration,
    ) -> Result<Vec<(String, JobEvent)>> {
        self.wait_stream(conn, &self.keys.events(job_id), after, block)
            .await
    }

    /// State changes of all jobs after `after` (the dispatcher-wide feed), at most `count`.
    pub async fn feed_after(
        &self,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<(String, FeedEvent)>> {
        self.read_stream(&self.keys.feed(), after, count).await
    }

    /// Waits up to `block` for state changes of any job after `after`.
    pub async fn wait_feed(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        after: &str,
        block: Duration,
    ) -> Result<Vec<(String, FeedEvent)>> {
        self.wait_stream(conn, &self.keys.feed(), after, block)
            .await
    }

    /// The id of the newest entry of the feed (`0-0` when it is empty): where a live-only
    /// reader starts.
    pub async fn feed_head(&self) -> Result<String> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let reply: Value = redis::cmd("XREVRANGE")
                .arg(self.keys.feed())
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await?;
            Ok(stream_fields(&reply)
                .into_iter()
                .next()
                .map(|(id, _)| id)
                .unwrap_or_else(|| "0-0".into()))
        })
        .await
    }

    async fn read_stream<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<(String, T)>> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let start = after.map(|a| format!("({a}")).unwrap_or_else(|| "-".into());
            let reply: Value = redis::cmd("XRANGE")
                .arg(key)
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(count)
                .query_async(&mut conn)
                .await?;
            Ok(decode_events(&reply))
        })
        .await
    }

    async fn wait_stream<T: serde::de::DeserializeOwned>(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        key: &str,
        after: &str,
        block: Duration,
    ) -> Result<Vec<(String, T)>> {
        let reply: Value = tokio::time::timeout(
            block + self.timeout,
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(500)
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(key)
                .arg(after)
                .query_async(conn),
        )
        .await
        .map_err(|_| QueueError::Timeout(block + self.timeout))??;
        // [[key, [[id, [field, value]], ...]]]
        let entries = match &reply {
            Value::Array(streams) => streams
                .iter()
                .filter_map(|s| match s {
                    Value::Array(kv) if kv.len() == 2 => Some(decode_events(&kv[1])),
                    _ => None,
                })
                .flatten()
                .collect(),
            Value::Map(streams) => streams
                .iter()
                .flat_map(|(_, entries)| decode_events(entries))
                .collect(),
            _ => Vec::new(),
        };
        Ok(entries)
    }

    /// Counters for metrics.
    pub async fn stats(&self) -> Result<Stats> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let (counters, ready, waiting, delayed, admitted): (
                HashMap<String, i64>,
                u64,
                u64,
                u64,
                u64,
            ) = redis::pipe()
                .hgetall(self.keys.stats())
                .xlen(self.keys.queue())
                .zcard(self.keys.waiting())
                .zcard(self.keys.delayed())
                .zcard(self.keys.running())
                .query_async(&mut conn)
                .await?;
            let mut stats = Stats {
                ready,
                waiting,
                delayed,
                admitted,
                ..Stats::default()
            };
            for (key, value) in counters {
                if let Some(state) = key.strip_prefix("current:") {
                    stats.current.insert(state.to_string(), value);
                } else if let Some(state) = key.strip_prefix("entered:") {
                    stats.entered.insert(state.to_string(), value);
                }
            }
            Ok(stats)
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

fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.to_string()
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("wire types always serialise")
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

fn parse_cursor(cursor: Option<&str>) -> (String, usize) {
    cursor
        .and_then(|c| c.split_once(':'))
        .and_then(|(score, skip)| {
            Some((score.parse::<i64>().ok()?.to_string(), skip.parse().ok()?))
        })
        .unwrap_or_else(|| ("+inf".to_string(), 0))
}

fn value_string(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

/// `XREADGROUP` of up to `count` new entries of `stream` for `consumer` of `group`,
/// blocking up to `block`.
fn read_group(
    group: &str,
    consumer: &str,
    count: usize,
    block: Duration,
    stream: &str,
) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("STREAMS")
        .arg(stream)
        .arg(">");
    cmd
}

/// `XAUTOCLAIM` of up to `count` entries of `stream` that `group`'s consumers took more
/// than `min_idle` ago, for `consumer`.
fn auto_claim(
    stream: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
    count: usize,
) -> redis::Cmd {
    let mut cmd = redis::cmd("XAUTOCLAIM");
    cmd.arg(stream)
        .arg(group)
        .arg(consumer)
        .arg(min_idle.as_millis() as u64)
        .arg("0-0")
        .arg("COUNT")
        .arg(count);
    cmd
}

/// The entry lists of an XREADGROUP reply, one per stream.
fn read_stream_entries(reply: &Value) -> Vec<&Value> {
    match reply {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(kv) if kv.len() == 2 => Some(&kv[1]),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.iter().map(|(_, entries)| entries).collect(),
        _ => Vec::new(),
    }
}

/// Parses an XREADGROUP reply into claims.
fn parse_stream_reply(reply: &Value) -> Vec<Claim> {
    read_stream_entries(reply)
        .into_iter()
        .flat_map(parse_entries)
        .collect()
}

/// Parses outbox entries; unreadable ones are kept as [`ReplyBody::Unreadable`] so the
/// caller can drop them.
fn stream_replies(entries: &Value) -> Vec<Reply> {
    stream_fields(entries)
        .into_iter()
        .map(|(entry, fields)| Reply {
            body: ReplyBody::from_fields(&fields),
            tries: fields
                .get("tries")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
            entry,
        })
        .collect()
}

/// Parses `[[id, [field, value, ...]], ...]`, keeping entries that carry a `job` field.
fn parse_entries(entries: &Value) -> Vec<Claim> {
    stream_fields(entries)
        .into_iter()
        .filter_map(|(entry, fields)| {
            let job_id = fields.get("job")?.clone();
            Some(Claim { entry, job_id })
        })
        .collect()
}

/// A flat `[field, value, ...]` reply (HGETALL inside a script) as a map.
fn flat_map(value: &Value) -> HashMap<String, String> {
    match value {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|pair| match pair {
                [k, v] => Some((value_string(k), value_string(v))),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| (value_string(k), value_string(v)))
            .collect(),
        _ => HashMap::new(),
    }
}

fn stream_fields(entries: &Value) -> Vec<(String, HashMap<String, String>)> {
    let Value::Array(entries) = entries else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| match entry {
            Value::Array(parts) if parts.len() == 2 => {
                let id = value_string(&parts[0]);
                let mut fields = HashMap::new();
                if let Value::Array(kv) = &parts[1] {
                    for pair in kv.chunks(2) {
                        if let [k, v] = pair {
                            fields.insert(value_string(k), value_string(v));
                        }
                    }
                }
                Some((id, fields))
            }
            _ => None,
        })
        .collect()
}

fn decode_events<T: serde::de::DeserializeOwned>(entries: &Value) -> Vec<(String, T)> {
    stream_fields(entries)
        .into_iter()
        .filter_map(|(id, fields)| {
            let event = fields.get("e").and_then(|e| serde_json::from_str(e).ok());
            if event.is_none() {
                tracing::warn!(entry = %id, "skipping an event that does not parse");
            }
            Some((id, event?))
        })
        .collect()
}

/// Turns a runner event into the four script arguments: kind, JSON to append, exit code,
/// and (for `finished`) the verdict the script acts on.
fn encode_runner_event(
    attempt: u32,
    event: &RunnerEvent,
    now: i64,
) -> (&'static str, String, String, String) {
    match event {
        RunnerEvent::Started => ("started", String::new(), String::new(), String::new()),
        RunnerEvent::Heartbeat => ("heartbeat", String::new(), String::new(), String::new()),
        RunnerEvent::Log { stream, line } => {
            let event = JobEvent::Log {
                attempt,
                stream: *stream,
                line: line.clone(),
                at: now,
            };
            ("log", to_json(&event), String::new(), String::new())
        }
        RunnerEvent::Dropped { lines } => {
            let event = JobEvent::Log {
                attempt,
                stream: spawner::contract::OutputStream::Stderr,
                line: format!("[agentsmith] {lines} output lines were dropped while the dispatcher was unreachable"),
                at: now,
            };
            ("log", to_json(&event), String::new(), String::new())
        }
        RunnerEvent::Finished { outcome, result } => {
            let exit_code = match outcome {
                RunOutcome::Exited { code } => Some(*code),
                _ => None,
            };
            let verdict = match outcome {
                RunOutcome::Exited { code: 0 } => String::new(),
                RunOutcome::Exited { code } => format!("agent:agent exited with code {code}"),
                RunOutcome::Signaled { signal } => {
                    format!("agent:agent was killed by signal {signal}")
                }
                RunOutcome::StartFailed { reason } => {
                    format!("agent:agent command could not start: {reason}")
                }
                RunOutcome::OomKilled => {
                    "agent:OOM-killed: the agent went over its memory limit".into()
                }
                RunOutcome::TimedOut => "timed_out".into(),
                RunOutcome::Terminated => {
                    "infra:runner was stopped before the agent finished".into()
                }
            };
            let event = JobEvent::Result {
                attempt,
                exit_code,
                result: result.clone().unwrap_or_default(),
                at: now,
            };
            (
                "finished",
                to_json(&event),
                exit_code.map(|c| c.to_string()).unwrap_or_default(),
                verdict,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_prelude_builds_the_same_keys_as_keys_rs() {
        let keys = Keys::new("P:");
        for (lua, rust) in [
            (
                "prefix .. 'queue'",
                keys.queue().replace("P:", "prefix .. '") + "'",
            ),
            (
                "prefix .. 'delayed'",
                keys.delayed().replace("P:", "prefix .. '") + "'",
            ),
            (
                "prefix .. 'running'",
                keys.running().replace("P:", "prefix .. '") + "'",
            ),
            (
                "prefix .. 'waiting'",
                keys.waiting().replace("P:", "prefix .. '") + "'",
            ),
            (
                "prefix .. 'jobs'",
                keys.jobs().replace("P:", "prefix .. '") + "'",
            ),
            (
                "prefix .. 'stats'",
                keys.stats().replace("P:", "prefix .. '") + "'",
            ),
            (
                "prefix .. 'seq'",
                keys.seq().replace("P:", "prefix .. '") + "'",
            ),
        ] {
            assert_eq!(lua, rust);
            assert!(LIB.contains(lua), "lib.lua lacks {lua}");
        }
        assert_eq!(keys.job("x"), "P:job:x");
        assert!(LIB.contains("prefix .. 'job:' .. id end"));
        assert_eq!(keys.events("x"), "P:job:x:events");
        assert!(LIB.contains("prefix .. 'job:' .. id .. ':events'"));
        assert_eq!(keys.concurrency("k"), "P:concurrency:k");
        assert!(LIB.contains("prefix .. 'concurrency:' .. k end"));
        assert_eq!(keys.concurrency_queue("k"), "P:concurrency:k:queue");
        assert!(LIB.contains("prefix .. 'concurrency:' .. k .. ':queue'"));
        assert_eq!(keys.idempotency("k"), "P:idem:k");
        assert!(include_str!("scripts/submit.lua").contains("prefix .. 'idem:' .. idem"));
        assert!(LIB.contains(&format!("GROUP = '{}'", keys::GROUP)));
        assert!(LIB.contains(&format!("NOTIFY_GROUP = '{}'", keys::NOTIFY_GROUP)));
        assert_eq!(keys.notify(), "P:notify");
        assert!(LIB.contains("K_NOTIFY = prefix .. 'notify'"));
        assert_eq!(keys.notify_delayed(), "P:notify:delayed");
        assert!(include_str!("scripts/notify_defer.lua").contains("K_NOTIFY .. ':delayed'"));
        assert_eq!(keys.dedup("slack:1"), "P:dedup:slack:1");
        assert!(include_str!("scripts/submit.lua").contains("prefix .. 'dedup:' .. delivery"));
        assert_eq!(keys.active("PAY-1"), "P:active:PAY-1");
        assert!(include_str!("scripts/submit.lua").contains("prefix .. 'active:' .. exclusive"));
    }

    #[test]
    fn job_ids_are_valid_and_distinct() {
        let a = new_job_id();
        let b = new_job_id();
        assert!(valid_id(&a) && valid_id(&b));
        assert_eq!(a.len(), 12);
        assert_ne!(a, b);
        assert!(!valid_id("../x") && !valid_id("A") && !valid_id(""));
    }

    #[test]
    fn cursors_round_trip_and_default_to_the_newest() {
        assert_eq!(parse_cursor(None), ("+inf".into(), 0));
        assert_eq!(parse_cursor(Some("123:4")), ("123".into(), 4));
        assert_eq!(parse_cursor(Some("junk")), ("+inf".into(), 0));
    }
}
