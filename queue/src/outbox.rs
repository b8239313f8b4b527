//! The outbox of replies (`notify`): what a reply says, taking replies to send (and those a
//! dead notifier held), and marking them delivered or due again later.

use std::collections::HashMap;
use std::time::Duration;

use redis::{AsyncCommands, Value};

use crate::fields::{job as f, outbox as o};
use crate::values::{auto_claim, read_group, read_stream_entries, stream_fields};
use crate::{keys, now_ms, JobState, Origin, Queue, QueueError, Result};

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
    /// The job's agent asked `question` in `attempt`: tell where the job came from, with how
    /// to answer (the reply reads the job when it is sent, and says nothing once the
    /// question has been answered).
    Question {
        /// The job.
        job_id: String,
        /// The attempt that asked.
        attempt: u32,
        /// The question's id.
        question: String,
    },
    /// The job's agent said `text` (a progress message), for where the job came from.
    Said {
        /// The job.
        job_id: String,
        /// The message.
        text: String,
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
        let json = |origin: &Origin| serde_json::to_string(origin).expect("an origin serializes");
        match self {
            ReplyBody::State {
                job_id,
                state,
                attempt,
            } => vec![
                (o::KIND, "state".into()),
                (o::JOB, job_id.clone()),
                (o::STATE, state.as_str().into()),
                (o::ATTEMPT, attempt.to_string()),
            ],
            ReplyBody::Question {
                job_id,
                attempt,
                question,
            } => vec![
                // (Not "question": the scripts spell no record field's name.)
                (o::KIND, "ask".into()),
                (o::JOB, job_id.clone()),
                (o::ATTEMPT, attempt.to_string()),
                (o::TEXT, question.clone()),
            ],
            ReplyBody::Said { job_id, text } => vec![
                (o::KIND, "say".into()),
                (o::JOB, job_id.clone()),
                (o::TEXT, text.clone()),
            ],
            ReplyBody::AlreadyRunning { job_id, origin } => vec![
                (o::KIND, "running".into()),
                (o::JOB, job_id.clone()),
                (o::ORIGIN, json(origin)),
            ],
            ReplyBody::Text {
                origin,
                text,
                response_url,
            } => vec![
                (o::KIND, "text".into()),
                (o::ORIGIN, json(origin)),
                (o::TEXT, text.clone()),
                (o::RESPONSE_URL, response_url.clone().unwrap_or_default()),
            ],
            ReplyBody::Unreadable(why) => {
                vec![(o::KIND, "unreadable".into()), (o::WHY, why.clone())]
            }
        }
    }

    /// Reads an entry's fields.
    fn from_fields(fields: &HashMap<String, String>) -> ReplyBody {
        let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
        let origin = || serde_json::from_str::<Origin>(&get(o::ORIGIN));
        match get(o::KIND).as_str() {
            "state" => match get(o::STATE).parse::<JobState>() {
                Ok(state) => ReplyBody::State {
                    job_id: get(o::JOB),
                    state,
                    attempt: get(o::ATTEMPT).parse().unwrap_or(1),
                },
                Err(e) => ReplyBody::Unreadable(e),
            },
            "ask" => ReplyBody::Question {
                job_id: get(o::JOB),
                attempt: get(o::ATTEMPT).parse().unwrap_or(1),
                question: get(o::TEXT),
            },
            "say" => ReplyBody::Said {
                job_id: get(o::JOB),
                text: get(o::TEXT),
            },
            "running" => match origin() {
                Ok(origin) => ReplyBody::AlreadyRunning {
                    job_id: get(o::JOB),
                    origin,
                },
                Err(e) => ReplyBody::Unreadable(format!("origin: {e}")),
            },
            "text" => match origin() {
                Ok(origin) => ReplyBody::Text {
                    origin,
                    text: get(o::TEXT),
                    response_url: Some(get(o::RESPONSE_URL)).filter(|u| !u.is_empty()),
                },
                Err(e) => ReplyBody::Unreadable(format!("origin: {e}")),
            },
            other => ReplyBody::Unreadable(format!("unknown kind {other:?}")),
        }
    }
}

impl Queue {
    /// Makes the outbox's consumer group, if it does not exist yet.
    pub async fn ensure_notify_group(&self) -> Result<()> {
        self.ensure_group_of(&self.keys.notify(), keys::NOTIFY_GROUP)
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
        args.push(o::TRIES.into());
        args.push((reply.tries + 1).to_string());
        let _: i64 = self.eval(&self.scripts.notify_defer, &[], &args).await?;
        Ok(())
    }

    /// Puts a plain reply in the outbox.
    pub async fn send_reply(&self, body: &ReplyBody) -> Result<()> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let mut fields = body.fields();
            fields.push((o::TRIES, "0".into()));
            let _: String = conn.xadd(self.keys.notify(), "*", &fields).await?;
            Ok(())
        })
        .await
    }

    /// Puts replies whose retry is due back in the outbox; returns how many.
    pub async fn promote_replies(&self) -> Result<u64> {
        self.eval(&self.scripts.notify_promote, &[], &["500".to_string()])
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
                .hincr(self.keys.job(job_id), f::RESPONSE_POSTS, 1)
                .await?)
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
}

/// Parses outbox entries; unreadable ones are kept as [`ReplyBody::Unreadable`] so the
/// caller can drop them.
fn stream_replies(entries: &Value) -> Vec<Reply> {
    stream_fields(entries)
        .into_iter()
        .map(|(entry, fields)| Reply {
            body: ReplyBody::from_fields(&fields),
            tries: fields
                .get(o::TRIES)
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
            entry,
        })
        .collect()
}
