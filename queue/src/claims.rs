//! Claims on the ready queue: reading entries (and taking over those a dead dispatcher left),
//! deciding what each means in one admission call, recording the spawn, or failing the
//! attempt.

use std::time::Duration;

use contract::JobHandle;
use redis::Value;

use crate::batch::Batched;
use crate::runner::to_json;
use crate::values::{
    auto_claim, flat_map, read_group, read_stream_entries, stream_fields, value_string,
};
use crate::{keys, now_ms, Job, JobEvent, Queue, QueueError, Result};

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

impl Queue {
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
        let keys: Vec<String> = claims
            .iter()
            .flat_map(|c| self.job_keys(&c.job_id))
            .collect();
        let replies: Vec<Vec<Value>> = self.eval(&self.scripts.claim, &keys, &args).await?;
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
            target: handle.target.clone(),
            at: now_ms(),
        };
        let identity = format!("{}/{}", handle.name, handle.id.clone().unwrap_or_default());
        let reply = self
            .batched(
                Batched::RecordSpawn,
                self.job_keys(&claim.job_id).to_vec(),
                vec![
                    claim.job_id.clone(),
                    attempt.to_string(),
                    to_json(handle),
                    identity,
                    claim.entry.clone(),
                    to_json(&event),
                    (self.limits.lease_secs * 1000).to_string(),
                    handle.target.clone(),
                ],
            )
            .await?;
        let verdict: String = redis::from_redis_value(reply).map_err(redis::RedisError::from)?;
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
                &self.job_keys(job_id),
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

    /// Chooses the spawner target of an admitted attempt from `candidates` (name and cap,
    /// 0 for none, in order of preference) and takes one of its slots; the slot is freed
    /// when the attempt ends. An attempt that already holds a target (its spawn is being
    /// taken over) keeps it.
    pub async fn reserve_target(
        &self,
        job_id: &str,
        attempt: u32,
        candidates: &[(&str, u32)],
    ) -> Result<TargetChoice> {
        let mut args = vec![job_id.to_string(), attempt.to_string()];
        for (name, cap) in candidates {
            args.push(name.to_string());
            args.push(cap.to_string());
        }
        let reply: Vec<String> = self
            .eval(
                &self.scripts.reserve_target,
                &[self.keys.job(job_id)],
                &args,
            )
            .await?;
        Ok(match reply.as_slice() {
            [verdict, name] if verdict == "chosen" => TargetChoice::Target(name.clone()),
            [verdict] if verdict == "full" => TargetChoice::Full,
            _ => TargetChoice::Stale,
        })
    }

    /// Puts an admitted attempt whose targets cannot take it now back in the queue, to be
    /// admitted again after `delay`, with `reason` as its state's reason; the attempt is not
    /// used up. Acks `entry`. False when the attempt had moved on.
    pub async fn defer_start(
        &self,
        job_id: &str,
        attempt: u32,
        reason: &str,
        delay: Duration,
        entry: Option<&str>,
    ) -> Result<bool> {
        let verdict: String = self
            .eval(
                &self.scripts.defer_start,
                &self.job_keys(job_id),
                &[
                    job_id.to_string(),
                    attempt.to_string(),
                    reason.to_string(),
                    delay.as_millis().to_string(),
                    entry.unwrap_or_default().to_string(),
                ],
            )
            .await?;
        Ok(verdict == "deferred")
    }

    /// Acknowledges a claim that needs nothing more (its attempt has moved on).
    pub async fn ack_claim(&self, claim: &Claim) -> Result<()> {
        let queue = self.keys.queue();
        self.bounded(async {
            let mut conn = self.conn().await?;
            let _: () = redis::pipe()
                .xack(&queue, keys::GROUP, &[&claim.entry])
                .ignore()
                .xdel(&queue, &[&claim.entry])
                .ignore()
                .query_async(&mut conn)
                .await?;
            Ok(())
        })
        .await
    }

    /// How many jobs hold a slot of each target named.
    pub async fn target_load(&self, targets: &[&str]) -> Result<Vec<u64>> {
        let mut pipe = redis::pipe();
        for target in targets {
            pipe.scard(self.keys.target(target));
        }
        self.bounded(async {
            let mut conn = self.conn().await?;
            Ok(pipe.query_async(&mut conn).await?)
        })
        .await
    }
}

/// Where an admitted attempt goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetChoice {
    /// This target, whose slot it now holds.
    Target(String),
    /// None of the candidates has room.
    Full,
    /// The attempt is no longer starting.
    Stale,
}

/// Parses an XREADGROUP reply into claims.
fn parse_stream_reply(reply: &Value) -> Vec<Claim> {
    read_stream_entries(reply)
        .into_iter()
        .flat_map(parse_entries)
        .collect()
}

/// Parses `[[id, [field, value, ...]], ...]`, keeping entries that carry a `job` field.
fn parse_entries(entries: &Value) -> Vec<Claim> {
    stream_fields(entries)
        .into_iter()
        .filter_map(|(entry, fields)| {
            let job_id = fields.get(crate::fields::stream::JOB)?.clone();
            Some(Claim { entry, job_id })
        })
        .collect()
}

fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.to_string()
}
