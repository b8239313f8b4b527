//! Jobs from the outside: submit (with its idempotency key, webhook delivery and ticket),
//! read, list, cancel and retry.

use std::collections::HashMap;

use contract::JobHandle;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Value};

use crate::batch::Batched;
use crate::fields::job as f;
use crate::values::{flat_map, value_string};
use crate::{new_job_id, valid_id, Job, JobState, Keys, NewJob, Origin, Queue, QueueError, Result};

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

/// Index entries a page reads past its `limit` at most, skipping jobs that no longer pass
/// its filter or no longer exist (see [`Queue::list`]).
const MAX_SKIPPED: usize = 100;

impl JobFilter {
    /// The narrowest index holding every job that passes: a project's jobs in a state
    /// (`jobs:project:{project}:state:{state}`), a project's (`jobs:project:{project}`), a
    /// state's (`jobs:state:{state}`), or all (`jobs`); each scored by creation time.
    pub fn index(&self, keys: &Keys) -> String {
        match (&self.project, self.state) {
            (Some(project), Some(state)) => keys.project_state_jobs(project, state.as_str()),
            (Some(project), None) => keys.project_jobs(project),
            (None, Some(state)) => keys.state_jobs(state.as_str()),
            (None, None) => keys.jobs(),
        }
    }

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
        args.push(opt(&job.follows));
        // A job started in a Slack thread is the thread's latest: a reply there reaches it.
        let thread = match &job.origin {
            Some(Origin::Slack {
                channel,
                thread_ts: Some(ts),
                ..
            }) => Some(self.keys.thread(channel, ts)),
            _ => None,
        };
        args.push(if thread.is_some() { "1" } else { "" }.into());
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
        // An empty field is not stored: it reads as missing, which every reader takes for
        // empty (`Job::from_fields`, and the scripts' `f and f ~= ''`). A job that names no
        // project, ticket, origin, ... keeps a smaller record (each field of a record costs
        // Redis about 70 bytes and a share of every write and read of it).
        for (k, v) in fields.iter().filter(|(_, v)| !v.is_empty()) {
            args.push(k.to_string());
            args.push(v.clone());
        }
        let [record, events] = self.job_keys(&id);
        let keys = vec![
            record,
            events,
            self.keys.idempotency(&opt(&job.idempotency_key)),
            self.keys.dedup(&opt(&job.delivery)),
            self.keys.active(&opt(&job.exclusive)),
            self.keys.project_of(),
            thread.unwrap_or_else(|| self.keys.thread("", "")),
        ];
        let reply = self.batched(Batched::Submit, keys, args).await?;
        let reply: Vec<Value> = redis::from_redis_value(reply).map_err(redis::RedisError::from)?;
        let verdict = reply.first().map(value_string).unwrap_or_default();
        let answered_id = reply.get(1).map(value_string).unwrap_or_default();
        let mut record = reply.get(2).map(flat_map).unwrap_or_default();
        if verdict == "created" && answered_id == id {
            // The script answers with the fields it set; the others are those sent.
            for (k, v) in fields {
                record.entry(k.to_string()).or_insert(v);
            }
        }
        let id = answered_id;
        let stored = Job::from_fields(&id, &record);
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

    /// A page of the jobs that pass `filter`, newest first. `cursor` is the `next` of the
    /// previous page.
    ///
    /// Reads the narrowest index for the filter ([`JobFilter::index`]) from the cursor on,
    /// and the records of that page only: a page costs O(`limit`) however many jobs are
    /// stored. Each record is checked against the filter again, since a job may change state
    /// between the index read and the record read, or expire before the sweep drops it;
    /// such entries are skipped, at most 100 past `limit` (`MAX_SKIPPED`), so a page may come
    /// back short and still have a `next`.
    pub async fn list(
        &self,
        filter: &JobFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        let limit = limit.clamp(1, 500);
        let index = filter.index(&self.keys);
        self.bounded(async {
            let mut conn = self.conn().await?;
            let mut position = Position::parse(cursor);
            let mut jobs = Vec::with_capacity(limit);
            let mut unread = limit + MAX_SKIPPED;
            loop {
                let want = (limit - jobs.len()).min(unread);
                let entries = position.entries(&mut conn, &index, want).await?;
                unread -= entries.len();
                let ended = entries.len() < want;
                let records = self.records(&mut conn, &entries).await?;
                for ((id, score), fields) in entries.into_iter().zip(records) {
                    position.advance(score);
                    let job = Job::from_fields(&id, &fields).filter(|job| filter.matches(job));
                    jobs.extend(job);
                }
                if ended {
                    return Ok(Page { jobs, next: None });
                }
                if jobs.len() == limit || unread == 0 {
                    let next = Some(position.cursor());
                    return Ok(Page { jobs, next });
                }
            }
        })
        .await
    }

    /// The records of index entries, in one pipeline (empty for a job that is gone).
    async fn records(
        &self,
        conn: &mut ConnectionManager,
        entries: &[(String, f64)],
    ) -> Result<Vec<HashMap<String, String>>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, _) in entries {
            pipe.hgetall(self.keys.job(id));
        }
        Ok(pipe.query_async(conn).await?)
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

/// Where a listing stands in its index: below the score `max` (`+inf` at the start), past
/// `skip` entries of score `max`. Paging by score keeps pages stable while new jobs arrive.
#[derive(Debug)]
struct Position {
    max: String,
    skip: usize,
}

impl Position {
    /// The position a cursor (`<score>:<offset among equal scores>`) names; the newest end
    /// without one, or with one that does not parse.
    fn parse(cursor: Option<&str>) -> Self {
        cursor
            .and_then(|c| c.split_once(':'))
            .and_then(|(score, skip)| {
                Some(Self {
                    max: score.parse::<i64>().ok()?.to_string(),
                    skip: skip.parse().ok()?,
                })
            })
            .unwrap_or_else(|| Self {
                max: "+inf".into(),
                skip: 0,
            })
    }

    /// The cursor of this position.
    fn cursor(&self) -> String {
        format!("{}:{}", self.max, self.skip)
    }

    /// Moves past an entry of `score`, the next one read.
    fn advance(&mut self, score: f64) {
        let score = format!("{}", score as i64);
        if score == self.max {
            self.skip += 1;
        } else {
            self.max = score;
            self.skip = 1;
        }
    }

    /// The next `count` entries of `index` (id and score), newest first.
    async fn entries(
        &self,
        conn: &mut ConnectionManager,
        index: &str,
        count: usize,
    ) -> Result<Vec<(String, f64)>> {
        Ok(redis::cmd("ZREVRANGEBYSCORE")
            .arg(index)
            .arg(&self.max)
            .arg("-inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(self.skip)
            .arg(count)
            .query_async(conn)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job that names no project, ticket, origin, ... stores none of those fields, and
    /// reads back as one that named them empty; one that names them stores and reads them.
    #[tokio::test]
    async fn a_jobs_empty_fields_are_not_stored_and_read_back_as_empty() {
        let queue = crate::testing::queue("fields", 1);
        let bare = queue
            .submit(&crate::testing::echo_job("bare"))
            .await
            .unwrap()
            .job()
            .unwrap()
            .clone();
        let mut conn = queue.dedicated_connection().await.unwrap();
        let stored: Vec<String> = conn.hkeys(queue.keys().job(&bare.id)).await.unwrap();
        let optional = [
            f::PROJECT,
            f::REPO,
            f::TICKET,
            f::CONCURRENCY_KEY,
            f::IDEMPOTENCY_KEY,
            f::TITLE,
            f::DESCRIPTION,
            f::REQUESTER,
            f::URL,
            f::ORIGIN,
            f::RESPONSE_URL,
        ];
        for field in optional {
            assert!(!stored.iter().any(|s| s == field), "{field} stored empty");
        }
        assert!(stored.iter().any(|s| s == f::TASK), "{stored:?}");
        let read = queue.get(&bare.id).await.unwrap().unwrap();
        assert_eq!(read, bare, "read back as submitted");
        assert_eq!((read.project, read.title, read.origin), (None, None, None));

        let named = NewJob {
            project: Some("shop".into()),
            title: Some("Fix it".into()),
            ..crate::testing::echo_job("named")
        };
        let named = queue.submit(&named).await.unwrap().job().unwrap().clone();
        let read = queue.get(&named.id).await.unwrap().unwrap();
        assert_eq!(read.project.as_deref(), Some("shop"));
        assert_eq!(read.title.as_deref(), Some("Fix it"));
        let stored: Vec<String> = conn.hkeys(queue.keys().job(&named.id)).await.unwrap();
        assert!(stored.iter().any(|s| s == f::PROJECT), "{stored:?}");
    }

    #[test]
    fn cursors_round_trip_and_default_to_the_newest() {
        assert_eq!(Position::parse(None).cursor(), "+inf:0");
        assert_eq!(Position::parse(Some("123:4")).cursor(), "123:4");
        assert_eq!(Position::parse(Some("junk")).cursor(), "+inf:0");
        let mut position = Position::parse(None);
        for score in [9.0, 7.0, 7.0] {
            position.advance(score);
        }
        assert_eq!(position.cursor(), "7:2", "past two entries of score 7");
    }

    #[test]
    fn each_filter_reads_the_narrowest_index() {
        let keys = Keys::new("P:");
        let filter = |state: Option<JobState>, project: Option<&str>| JobFilter {
            state,
            project: project.map(String::from),
        };
        let failed = Some(JobState::Failed);
        assert_eq!(filter(None, None).index(&keys), "P:jobs");
        assert_eq!(filter(failed, None).index(&keys), "P:jobs:state:failed");
        assert_eq!(
            filter(None, Some("a:b")).index(&keys),
            "P:jobs:project:a%3Ab"
        );
        assert_eq!(
            filter(failed, Some("shop")).index(&keys),
            "P:jobs:project:shop:state:failed"
        );
    }
}
