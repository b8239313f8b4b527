//! Jobs from the outside: submit (with its idempotency key, webhook delivery and ticket),
//! read, list, cancel and retry.

use std::collections::HashMap;

use contract::JobHandle;
use redis::{AsyncCommands, Value};

use crate::fields::job as f;
use crate::values::{flat_map, value_string};
use crate::{new_job_id, valid_id, Job, JobState, NewJob, Queue, QueueError, Result};

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

impl Queue {
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
        let fields: [(&str, String); 17] = [
            (f::AGENT, job.agent.clone()),
            (f::TASK, job.task.clone()),
            (f::PROJECT, opt(&job.project)),
            (f::REPO, opt(&job.repo)),
            (f::TICKET, opt(&job.ticket)),
            (f::CONCURRENCY_KEY, opt(&job.concurrency_key)),
            (f::IDEMPOTENCY_KEY, opt(&job.idempotency_key)),
            (f::TIMEOUT_SECS, job.timeout_secs.to_string()),
            (
                f::RETRY_ON_FAILURE,
                if job.retry_on_failure { "1" } else { "0" }.into(),
            ),
            (f::MAX_ATTEMPTS, self.limits.max_attempts.to_string()),
            (f::TITLE, opt(&job.title)),
            (f::DESCRIPTION, opt(&job.description)),
            (f::REQUESTER, opt(&job.requester)),
            (f::URL, opt(&job.url)),
            (f::ORIGIN, origin),
            (f::RESPONSE_URL, opt(&job.response_url)),
            (f::KEY_LIMIT, self.limits.concurrency_key_limit.to_string()),
        ];
        for (k, v) in fields {
            args.push(k.into());
            args.push(v);
        }
        let [record, events] = self.job_keys(&id);
        let keys = [
            record,
            events,
            self.keys.idempotency(&opt(&job.idempotency_key)),
            self.keys.dedup(&opt(&job.delivery)),
            self.keys.active(&opt(&job.exclusive)),
        ];
        let reply: Vec<Value> = self.eval(&self.scripts.submit, &keys, &args).await?;
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

    /// Cancels a job; the caller stops the returned workload.
    pub async fn cancel(&self, job_id: &str, reason: &str) -> Result<CancelOutcome> {
        if !valid_id(job_id) {
            return Ok(CancelOutcome::NotFound);
        }
        let reply: Vec<String> = self
            .eval(
                &self.scripts.cancel,
                &self.job_keys(job_id),
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
                &self.job_keys(job_id),
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
}

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

    #[test]
    fn cursors_round_trip_and_default_to_the_newest() {
        assert_eq!(parse_cursor(None), ("+inf".into(), 0));
        assert_eq!(parse_cursor(Some("123:4")), ("123".into(), 4));
        assert_eq!(parse_cursor(Some("junk")), ("+inf".into(), 0));
    }
}
