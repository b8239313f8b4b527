//! The delivery journal: every verified webhook delivery, what was decided about it and
//! the job it made, with what a replay needs (the body and the headers that matter).
//!
//! An entry is a hash, `delivery:{id}` ([`crate::fields::delivery`]), that expires after
//! `queue.retention_secs` like a finished job; the index, `deliveries`, is a sorted set
//! scored by when each delivery came (ms). Every record trims the index by age (the
//! retention) and by count (`queue.deliveries_max_len`, 0 to keep no journal), deleting the
//! records it drops, in one script (`deliveries.lua`): Redis holds at most that many
//! entries, each with a body of at most [`MAX_DELIVERY_BODY`] bytes.
//!
//! Entries are written once; the only later change is [`fields::delivery::REPLAY_JOB`] on
//! an entry a replay of which made a job, so a later replay of it is answered with that job
//! even after the dedup window has passed.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::Script;
use serde::{Deserialize, Serialize};

use crate::fields::delivery as d;
use crate::{valid_id, Queue, Result};

/// The recording script (`deliveries.lua`).
static RECORD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("deliveries.lua")));

/// The largest body an entry keeps. A larger one is recorded without it (and cannot be
/// replayed): with the entry cap, this bounds the journal's memory. Webhook bodies are
/// usually a few KiB; GitHub's issue events with a long description reach tens.
pub const MAX_DELIVERY_BODY: usize = 256 * 1024;

/// What was decided about a delivery: the `decision` of an entry, with what goes with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// A new job.
    Queued {
        /// The job.
        job_id: String,
    },
    /// Seen before: nothing new; the job it made or was answered with, when there is one
    /// (a Slack action seen before has none).
    Duplicate {
        /// The job.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_id: Option<String>,
    },
    /// The ticket's job has not ended: nothing new.
    AlreadyRunning {
        /// The ticket's unfinished job.
        job_id: String,
    },
    /// Not something agentsmith acts on (another event, not a trigger, a bot).
    Ignored {
        /// Why.
        reason: String,
    },
    /// A trigger by someone the project does not allow, or whom the provider could not be
    /// asked about (Slack; the other sources answer 503, an [`Decision::Error`]).
    Refused {
        /// Why: the rule not met.
        reason: String,
    },
    /// A Slack command or action that starts no job (`status`, Cancel, Retry), or a
    /// source's check of the endpoint (GitHub's `ping`, Slack's `url_verification`).
    Answered {
        /// What was answered.
        reason: String,
    },
    /// An error answer to a verified delivery: a malformed body (400), an unknown project
    /// (404), a provider that could not say who someone is (503 `access_unchecked`).
    Error {
        /// The error's code (`bad_request`, `access_unchecked`, ...).
        code: String,
        /// Its message.
        reason: String,
    },
}

impl Decision {
    /// Every decision's name, as `decision` says it.
    pub const NAMES: [&'static str; 7] = [
        "queued",
        "duplicate",
        "already_running",
        "ignored",
        "refused",
        "answered",
        "error",
    ];

    /// The decision's name.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Queued { .. } => "queued",
            Decision::Duplicate { .. } => "duplicate",
            Decision::AlreadyRunning { .. } => "already_running",
            Decision::Ignored { .. } => "ignored",
            Decision::Refused { .. } => "refused",
            Decision::Answered { .. } => "answered",
            Decision::Error { .. } => "error",
        }
    }

    /// The job the delivery made or was answered with, if any.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            Decision::Queued { job_id } | Decision::AlreadyRunning { job_id } => Some(job_id),
            Decision::Duplicate { job_id } => job_id.as_deref(),
            _ => None,
        }
    }

    /// Why, for the decisions that say.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Decision::Ignored { reason }
            | Decision::Refused { reason }
            | Decision::Answered { reason }
            | Decision::Error { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The decision of stored fields; `None` for a name this version does not know.
    fn from_fields(get: &dyn Fn(&str) -> Option<String>) -> Option<Decision> {
        let text = |field| get(field).unwrap_or_default();
        Some(match get(d::DECISION)?.as_str() {
            "queued" => Decision::Queued {
                job_id: get(d::JOB_ID)?,
            },
            "duplicate" => Decision::Duplicate {
                job_id: get(d::JOB_ID),
            },
            "already_running" => Decision::AlreadyRunning {
                job_id: get(d::JOB_ID)?,
            },
            "ignored" => Decision::Ignored {
                reason: text(d::REASON),
            },
            "refused" => Decision::Refused {
                reason: text(d::REASON),
            },
            "answered" => Decision::Answered {
                reason: text(d::REASON),
            },
            "error" => Decision::Error {
                code: text(d::CODE),
                reason: text(d::REASON),
            },
            _ => return None,
        })
    }
}

/// One entry of the journal, as the API shows it (the body is kept for replays, never shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The entry's id ([`new_delivery_id`]).
    pub id: String,
    /// When it came (ms since the epoch); for a replay, when it was replayed.
    pub at: i64,
    /// The source: `slack`, `github`, `gitlab`, `jira`.
    pub source: String,
    /// The webhook route after `/webhooks/`: `slack/commands`, `slack/events`,
    /// `slack/interactions`, `github`, `gitlab`, `jira`. It says how the body reads.
    pub route: String,
    /// The event type header (`X-GitHub-Event`, `X-Gitlab-Event`), when the source sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The source's name for the delivery (`X-GitHub-Delivery`, GitLab's `Idempotency-Key`,
    /// `X-Atlassian-Webhook-Identifier`, Slack's `trigger_id` or `event_id`), when it gives
    /// one. Not signed: it names the delivery, the digest deduplicates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// `sha256:<hex>` of the verified body as it came: what the delivery is deduplicated by.
    pub digest: String,
    /// Who acted, as the provider knows them (a Slack user id, a GitHub login, a GitLab
    /// user id, a Jira account id), when the body says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Their name (login, username, display name), when it differs from `actor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_name: Option<String>,
    /// The HTTP status the delivery was answered with.
    pub status: u16,
    /// What was decided.
    #[serde(flatten)]
    pub decision: Decision,
    /// The entry this one replays (always the first delivery, never a replay of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
    /// The job a replay of this delivery made, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_job: Option<String>,
    /// The size of the body as it came.
    pub body_bytes: u64,
    /// Whether the body is kept, so the delivery can be replayed.
    pub replayable: bool,
}

impl Delivery {
    /// The fields to store (the body apart).
    fn fields(&self) -> Vec<(&'static str, String)> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut fields = vec![
            (d::AT, self.at.to_string()),
            (d::SOURCE, self.source.clone()),
            (d::ROUTE, self.route.clone()),
            (d::EVENT, opt(&self.event)),
            (d::DELIVERY_ID, opt(&self.delivery_id)),
            (d::DIGEST, self.digest.clone()),
            (d::ACTOR, opt(&self.actor)),
            (d::ACTOR_NAME, opt(&self.actor_name)),
            (d::STATUS, self.status.to_string()),
            (d::DECISION, self.decision.name().to_string()),
            (d::REPLAY_OF, opt(&self.replay_of)),
            (d::BODY_BYTES, self.body_bytes.to_string()),
        ];
        if let Some(job) = self.decision.job_id() {
            fields.push((d::JOB_ID, job.to_string()));
        }
        if let Some(reason) = self.decision.reason() {
            fields.push((d::REASON, reason.to_string()));
        }
        if let Decision::Error { code, .. } = &self.decision {
            fields.push((d::CODE, code.clone()));
        }
        fields
    }

    /// Reads an entry from its stored fields ([`SHOWN`] of them at least); `None` when the
    /// record is gone or is not one this version can read.
    fn from_fields(id: &str, fields: &HashMap<String, String>) -> Option<Delivery> {
        let get = |k: &str| fields.get(k).filter(|v| !v.is_empty()).cloned();
        Some(Delivery {
            id: id.to_string(),
            at: get(d::AT)?.parse().ok()?,
            source: get(d::SOURCE)?,
            route: get(d::ROUTE)?,
            event: get(d::EVENT),
            delivery_id: get(d::DELIVERY_ID),
            digest: get(d::DIGEST).unwrap_or_default(),
            actor: get(d::ACTOR),
            actor_name: get(d::ACTOR_NAME),
            status: get(d::STATUS).and_then(|s| s.parse().ok()).unwrap_or(200),
            decision: Decision::from_fields(&get)?,
            replay_of: get(d::REPLAY_OF),
            replay_job: get(d::REPLAY_JOB),
            body_bytes: get(d::BODY_BYTES).and_then(|s| s.parse().ok()).unwrap_or(0),
            replayable: get(d::REPLAYABLE).as_deref() == Some("1"),
        })
    }
}

/// The fields a listing reads: all but the body.
const SHOWN: [&str; 17] = [
    d::AT,
    d::SOURCE,
    d::ROUTE,
    d::EVENT,
    d::DELIVERY_ID,
    d::DIGEST,
    d::ACTOR,
    d::ACTOR_NAME,
    d::STATUS,
    d::DECISION,
    d::JOB_ID,
    d::REASON,
    d::CODE,
    d::REPLAY_OF,
    d::REPLAY_JOB,
    d::BODY_BYTES,
    d::REPLAYABLE,
];

/// A new entry id: the shape of a job id (12 characters of lowercase base32), so it is
/// safe in keys, URLs and command lines.
pub fn new_delivery_id() -> String {
    crate::new_job_id()
}

/// Which entries a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// Only this source's.
    pub source: Option<String>,
    /// Only entries with this decision (one of [`Decision::NAMES`]).
    pub decision: Option<String>,
}

impl DeliveryFilter {
    /// Whether `entry` passes the filter.
    pub fn matches(&self, entry: &Delivery) -> bool {
        self.source.as_ref().is_none_or(|s| *s == entry.source)
            && self
                .decision
                .as_ref()
                .is_none_or(|name| name == entry.decision.name())
    }
}

/// One page of the journal.
#[derive(Debug, Clone)]
pub struct DeliveryPage {
    /// The entries, newest first.
    pub deliveries: Vec<Delivery>,
    /// Pass as `cursor` to get the next page; `None` at the end.
    pub next: Option<String>,
}

impl Queue {
    /// Records `entry`, with `body` when it is kept (at most [`MAX_DELIVERY_BODY`] bytes:
    /// a larger one is left out and the entry is not replayable), and trims the journal.
    /// When `entry` is a replay that made a job, its original is marked with that job.
    /// Does nothing while `queue.deliveries_max_len` is 0.
    pub async fn record_delivery(&self, entry: &Delivery, body: &[u8]) -> Result<()> {
        if self.limits.deliveries_max_len == 0 || !valid_id(&entry.id) {
            return Ok(());
        }
        let kept = entry.replayable && body.len() <= MAX_DELIVERY_BODY;
        let record = self.keys.delivery(&entry.id);
        let (original, replay_job) = match (&entry.replay_of, &entry.decision) {
            (Some(original), Decision::Queued { job_id }) if valid_id(original) => {
                (self.keys.delivery(original), job_id.clone())
            }
            _ => (record.clone(), String::new()),
        };
        self.bounded(async {
            let mut conn = self.conn().await?;
            let mut invocation = RECORD.prepare_invoke();
            invocation
                .key(self.keys.deliveries())
                .key(&record)
                .key(&original)
                .arg(&entry.id)
                .arg(entry.at)
                .arg(self.limits.retention_secs * 1000)
                .arg(self.limits.deliveries_max_len)
                .arg(self.keys.delivery(""))
                .arg(d::REPLAY_JOB)
                .arg(replay_job);
            for (field, value) in entry.fields() {
                invocation.arg(field).arg(value);
            }
            invocation
                .arg(d::REPLAYABLE)
                .arg(if kept { "1" } else { "0" });
            if kept {
                invocation.arg(d::BODY).arg(body);
            }
            let _kept: i64 = invocation.invoke_async(&mut conn).await?;
            Ok(())
        })
        .await
    }

    /// The entry with this id, if it is still kept.
    pub async fn delivery(&self, id: &str) -> Result<Option<Delivery>> {
        if !valid_id(id) {
            return Ok(None);
        }
        self.bounded(async {
            let mut conn = self.conn().await?;
            let values: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(self.keys.delivery(id))
                .arg(&SHOWN[..])
                .query_async(&mut conn)
                .await?;
            Ok(Delivery::from_fields(id, &shown(values)))
        })
        .await
    }

    /// The kept body of the entry with this id, if it has one.
    pub async fn delivery_body(&self, id: &str) -> Result<Option<Vec<u8>>> {
        if !valid_id(id) {
            return Ok(None);
        }
        self.bounded(async {
            let mut conn = self.conn().await?;
            let body: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(self.keys.delivery(id))
                .arg(d::BODY)
                .query_async(&mut conn)
                .await?;
            Ok(body)
        })
        .await
    }

    /// A page of the journal, newest first. `cursor` is the `next` of the previous page
    /// (`<score>:<offset among equal scores>`, as the job list's).
    pub async fn deliveries(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DeliveryPage> {
        let limit = limit.clamp(1, 500);
        self.bounded(async {
            let mut conn = self.conn().await?;
            let (mut max, mut skip) = parse_cursor(cursor);
            let mut deliveries = Vec::new();
            let batch = (limit * 2).max(50);
            loop {
                let ids: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                    .arg(self.keys.deliveries())
                    .arg(&max)
                    .arg("-inf")
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(skip)
                    .arg(batch)
                    .query_async(&mut conn)
                    .await?;
                if ids.is_empty() {
                    return Ok(DeliveryPage {
                        deliveries,
                        next: None,
                    });
                }
                let mut pipe = redis::pipe();
                for (id, _) in &ids {
                    pipe.cmd("HMGET")
                        .arg(self.keys.delivery(id))
                        .arg(&SHOWN[..]);
                }
                let records: Vec<Vec<Option<String>>> = pipe.query_async(&mut conn).await?;
                let fetched = ids.len();
                for ((id, score), values) in ids.into_iter().zip(records) {
                    let score = format!("{}", score as i64);
                    if score == max {
                        skip += 1;
                    } else {
                        max = score;
                        skip = 1;
                    }
                    // An entry whose record expired before the index was trimmed is skipped.
                    let Some(entry) = Delivery::from_fields(&id, &shown(values)) else {
                        continue;
                    };
                    if filter.matches(&entry) {
                        deliveries.push(entry);
                        if deliveries.len() == limit {
                            return Ok(DeliveryPage {
                                deliveries,
                                next: Some(format!("{max}:{skip}")),
                            });
                        }
                    }
                }
                if fetched < batch {
                    return Ok(DeliveryPage {
                        deliveries,
                        next: None,
                    });
                }
            }
        })
        .await
    }
}

/// The [`SHOWN`] fields of an `HMGET` reply, by name.
fn shown(values: Vec<Option<String>>) -> HashMap<String, String> {
    SHOWN
        .iter()
        .zip(values)
        .filter_map(|(field, value)| Some((field.to_string(), value?)))
        .collect()
}

/// The (highest score, offset) a page starts from; the newest for no cursor or a bad one.
fn parse_cursor(cursor: Option<&str>) -> (String, usize) {
    cursor
        .and_then(|c| c.split_once(':'))
        .and_then(|(score, skip)| {
            Some((score.parse::<i64>().ok()?.to_string(), skip.parse().ok()?))
        })
        .unwrap_or_else(|| ("+inf".to_string(), 0))
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::now_ms;

    fn queue(max_len: u64) -> Queue {
        crate::testing::queue_with("deliveries", |limits| limits.deliveries_max_len = max_len)
    }

    fn entry(decision: Decision) -> Delivery {
        Delivery {
            id: new_delivery_id(),
            at: now_ms(),
            source: "github".into(),
            route: "github".into(),
            event: Some("issues".into()),
            delivery_id: Some("d-1".into()),
            digest: "sha256:00".into(),
            actor: Some("ann".into()),
            actor_name: None,
            status: 200,
            decision,
            replay_of: None,
            replay_job: None,
            body_bytes: 2,
            replayable: true,
        }
    }

    #[test]
    fn entries_round_trip_through_json_with_the_decision_flattened() {
        for decision in [
            Decision::Queued {
                job_id: "abc".into(),
            },
            Decision::Duplicate { job_id: None },
            Decision::Error {
                code: "access_unchecked".into(),
                reason: "try again".into(),
            },
        ] {
            let entry = entry(decision);
            let json = serde_json::to_value(&entry).unwrap();
            assert_eq!(json["decision"], entry.decision.name(), "{json}");
            let back: Delivery = serde_json::from_value(json).unwrap();
            assert_eq!(back, entry);
        }
        assert_eq!(Decision::NAMES.len(), 7);
    }

    #[tokio::test]
    async fn an_entry_reads_back_with_its_body_and_a_replay_marks_its_original() {
        let queue = queue(10);
        let first = entry(Decision::Error {
            code: "access_unchecked".into(),
            reason: "GitHub did not answer".into(),
        });
        queue.record_delivery(&first, b"{}").await.unwrap();
        let read = queue.delivery(&first.id).await.unwrap().unwrap();
        assert_eq!(read, first);
        assert_eq!(
            queue.delivery_body(&first.id).await.unwrap().as_deref(),
            Some(&b"{}"[..])
        );
        let mut replay = entry(Decision::Queued {
            job_id: "job000000001".into(),
        });
        replay.replay_of = Some(first.id.clone());
        queue.record_delivery(&replay, b"{}").await.unwrap();
        let marked = queue.delivery(&first.id).await.unwrap().unwrap();
        assert_eq!(marked.replay_job.as_deref(), Some("job000000001"));
        let mut conn = queue.conn().await.unwrap();
        let ttl: i64 = redis::cmd("PTTL")
            .arg(queue.keys.delivery(&first.id))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 3_600_000, "{ttl}");
        assert!(queue.delivery("nope!").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_journal_keeps_the_newest_entries_up_to_its_cap_and_pages_newest_first() {
        let queue = queue(3);
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut e = entry(Decision::Ignored {
                reason: format!("not a trigger {i}"),
            });
            e.at = now_ms() + i;
            if i == 4 {
                e.source = "jira".into();
            }
            queue.record_delivery(&e, b"x").await.unwrap();
            ids.push(e.id);
        }
        let all = queue
            .deliveries(&DeliveryFilter::default(), None, 10)
            .await
            .unwrap();
        let got: Vec<&str> = all.deliveries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(got, [&ids[4], &ids[3], &ids[2]].map(String::as_str));
        assert!(
            queue.delivery(&ids[0]).await.unwrap().is_none(),
            "a trimmed entry's record is gone"
        );
        let first = queue
            .deliveries(&DeliveryFilter::default(), None, 2)
            .await
            .unwrap();
        let rest = queue
            .deliveries(&DeliveryFilter::default(), first.next.as_deref(), 2)
            .await
            .unwrap();
        assert_eq!(rest.deliveries.len(), 1);
        assert_eq!(rest.deliveries[0].id, ids[2]);
        assert!(rest.next.is_none());
        let jira = DeliveryFilter {
            source: Some("jira".into()),
            decision: Some("ignored".into()),
        };
        let only = queue.deliveries(&jira, None, 10).await.unwrap();
        assert_eq!(only.deliveries.len(), 1);
        assert_eq!(only.deliveries[0].id, ids[4]);
    }

    #[tokio::test]
    async fn a_body_over_the_bound_is_left_out_and_the_entry_is_not_replayable() {
        let queue = queue(10);
        let big = vec![b'x'; MAX_DELIVERY_BODY + 1];
        let e = entry(Decision::Ignored {
            reason: "big".into(),
        });
        queue.record_delivery(&e, &big).await.unwrap();
        let read = queue.delivery(&e.id).await.unwrap().unwrap();
        assert!(!read.replayable);
        assert!(queue.delivery_body(&e.id).await.unwrap().is_none());
    }
}
