//! Questions an agent asks and the answers people give. A question arrives in a runner
//! batch (`runner.rs`) and puts the job in `waiting_for_input`; the first answer (or the
//! question's default, at its deadline) puts it back to `running`, exactly once, and the
//! runner collects it with [`Queue::answer_for`]. A question nobody answers and that has
//! no default fails the job at its deadline.

use std::collections::HashMap;

use contract::{Answer, JobHandle};
use redis::AsyncCommands;

use crate::fields::job as F;
use crate::{valid_id, Job, JobEvent, JobState, Queue, QueueError, Result};

/// What became of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerOutcome {
    /// It was the first: the agent gets it.
    Answered(Answer),
    /// No such question is open: it was answered before (`last`, when it was the last one),
    /// or the job has moved on (`state`).
    Closed {
        /// The job's state.
        state: JobState,
        /// The attempt's last answer, if any.
        last: Option<Answer>,
    },
    /// No such job.
    NotFound,
}

/// What a question's deadline did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// It took its default.
    Defaulted(Answer),
    /// It had no default: the job failed; the workload to stop, if it has one.
    Failed(Option<JobHandle>),
    /// Its deadline has not come, or it was answered meanwhile.
    Open,
}

/// What became of a message to a job's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOutcome {
    /// In the inbox, with its number.
    Sent(u64),
    /// The job has ended: nobody reads it.
    Ended(JobState),
    /// The inbox holds as many messages as it takes.
    Full,
    /// No such job.
    NotFound,
}

/// What a runner learns when it asks for its inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxPoll {
    /// The messages after those it has (perhaps none).
    Messages(Vec<contract::InboxMessage>),
    /// The attempt is no longer wanted.
    Gone,
}

/// What a runner learns when it asks for its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerPoll {
    /// Not answered yet.
    Waiting,
    /// The answer.
    Answered(Answer),
    /// The attempt is no longer wanted.
    Gone,
}

impl Queue {
    /// Answers the open question of `job_id` (`question`, when the caller names the one it
    /// saw) with `text`, on behalf of `by`.
    pub async fn answer(
        &self,
        job_id: &str,
        question: Option<&str>,
        text: &str,
        by: &str,
    ) -> Result<AnswerOutcome> {
        if !valid_id(job_id) {
            return Ok(AnswerOutcome::NotFound);
        }
        let reply = self
            .run_answer(job_id, question, text, by, "answer")
            .await?;
        Ok(match reply.as_slice() {
            [verdict, answer] if verdict == "answered" => {
                AnswerOutcome::Answered(parse_answer(answer)?)
            }
            [verdict, state, last] if verdict == "closed" => AnswerOutcome::Closed {
                state: state
                    .parse()
                    .map_err(|e| QueueError::Corrupt(format!("a job's state: {e}")))?,
                last: (!last.is_empty()).then(|| parse_answer(last)).transpose()?,
            },
            _ => AnswerOutcome::NotFound,
        })
    }

    /// Lets the open question of `job_id` expire if its deadline has passed.
    pub async fn expire_question(&self, job_id: &str) -> Result<Expiry> {
        let reply = self.run_answer(job_id, None, "", "", "expire").await?;
        Ok(match reply.as_slice() {
            [verdict, answer] if verdict == "answered" => Expiry::Defaulted(parse_answer(answer)?),
            [verdict, handle] if verdict == "failed" => {
                Expiry::Failed(serde_json::from_str(handle).ok())
            }
            _ => Expiry::Open,
        })
    }

    async fn run_answer(
        &self,
        job_id: &str,
        question: Option<&str>,
        text: &str,
        by: &str,
        mode: &str,
    ) -> Result<Vec<String>> {
        self.eval(
            &self.scripts.answer,
            &self.job_keys(job_id),
            &[
                job_id.to_string(),
                question.unwrap_or_default().to_string(),
                text.to_string(),
                by.to_string(),
                mode.to_string(),
            ],
        )
        .await
    }

    /// The answer to `question` of `attempt` of `job_id`, for its runner.
    pub async fn answer_for(
        &self,
        job_id: &str,
        attempt: u32,
        question: &str,
    ) -> Result<AnswerPoll> {
        if !valid_id(job_id) {
            return Ok(AnswerPoll::Gone);
        }
        let (state, current, answer): (Option<String>, Option<u32>, Option<String>) = self
            .bounded(async {
                let mut conn = self.conn().await?;
                Ok(redis::cmd("HMGET")
                    .arg(self.keys.job(job_id))
                    .arg(&[F::STATE, F::ATTEMPT, F::ANSWER])
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
        let live = state
            .as_deref()
            .and_then(|s| s.parse::<JobState>().ok())
            .is_some_and(JobState::is_live);
        if !live || current != Some(attempt) {
            return Ok(AnswerPoll::Gone);
        }
        Ok(match answer.filter(|a| !a.is_empty()) {
            Some(answer) => {
                let answer = parse_answer(&answer)?;
                if answer.question == question {
                    AnswerPoll::Answered(answer)
                } else {
                    AnswerPoll::Waiting
                }
            }
            None => AnswerPoll::Waiting,
        })
    }

    /// Puts `text` from `by` into the inbox of `job_id`'s agent (at most `max` messages).
    pub async fn send_message(
        &self,
        job_id: &str,
        text: &str,
        by: &str,
        max: u64,
    ) -> Result<MessageOutcome> {
        if !valid_id(job_id) {
            return Ok(MessageOutcome::NotFound);
        }
        let keys = [
            self.keys.job(job_id),
            self.keys.events(job_id),
            self.keys.inbox(job_id),
        ];
        let args = [
            job_id.to_string(),
            text.to_string(),
            by.to_string(),
            max.to_string(),
        ];
        let reply: Vec<String> = self.eval(&self.scripts.send_message, &keys, &args).await?;
        Ok(match reply.as_slice() {
            [verdict, seq] if verdict == "sent" => MessageOutcome::Sent(seq.parse().unwrap_or(0)),
            [verdict, state] if verdict == "ended" => MessageOutcome::Ended(
                state
                    .parse()
                    .map_err(|e| QueueError::Corrupt(format!("a job's state: {e}")))?,
            ),
            [verdict] if verdict == "full" => MessageOutcome::Full,
            _ => MessageOutcome::NotFound,
        })
    }

    /// The messages of `job_id`'s inbox after number `after`, at most `limit`, for the runner
    /// of `attempt`.
    pub async fn inbox_after(
        &self,
        job_id: &str,
        attempt: u32,
        after: u64,
        limit: usize,
    ) -> Result<InboxPoll> {
        if !valid_id(job_id) {
            return Ok(InboxPoll::Gone);
        }
        let limit = limit.clamp(1, 500) as isize;
        let (head, messages): ((Option<String>, Option<u32>), Vec<String>) = self
            .bounded(async {
                let mut conn = self.conn().await?;
                let start = after.min(isize::MAX as u64) as isize;
                Ok(redis::pipe()
                    .cmd("HMGET")
                    .arg(self.keys.job(job_id))
                    .arg(&[F::STATE, F::ATTEMPT])
                    .lrange(self.keys.inbox(job_id), start, start + limit - 1)
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
        let (state, current) = head;
        let live = state
            .as_deref()
            .and_then(|s| s.parse::<JobState>().ok())
            .is_some_and(JobState::is_live);
        if !live || current != Some(attempt) {
            return Ok(InboxPoll::Gone);
        }
        Ok(InboxPoll::Messages(
            messages
                .iter()
                .filter_map(|m| serde_json::from_str(m).ok())
                .collect(),
        ))
    }

    /// The live job of `ticket` (the latest one, with `sources.one_job_per_ticket`), where a
    /// `/agent say` comment on its issue goes.
    pub async fn active_job_of_ticket(&self, ticket: &str) -> Result<Option<Job>> {
        let id: Option<String> = self
            .bounded(async {
                let mut conn = self.conn().await?;
                Ok(conn.get(self.keys.active(ticket)).await?)
            })
            .await?;
        match id {
            Some(id) => Ok(self.get(&id).await?.filter(|job| !job.state.is_terminal())),
            None => Ok(None),
        }
    }

    /// The job of `ticket` (from `source`) that waits for an answer, if one does: where a
    /// `/agent answer` comment on an issue goes.
    pub async fn waiting_job_of_ticket(&self, source: &str, ticket: &str) -> Result<Option<Job>> {
        self.waiting_job_where(|job| {
            job.origin.as_ref().is_some_and(|o| o.source() == source)
                && job.ticket.as_deref() == Some(ticket)
        })
        .await
    }

    /// The job started in Slack thread `thread_ts` of `channel` that waits for an answer, if
    /// one does: where a reply in the thread goes.
    pub async fn waiting_job_in_thread(
        &self,
        channel: &str,
        thread_ts: &str,
    ) -> Result<Option<Job>> {
        self.waiting_job_where(|job| {
            matches!(&job.origin, Some(crate::Origin::Slack { channel: c, thread_ts: Some(t), .. })
                if c == channel && t == thread_ts)
        })
        .await
    }

    /// The latest job started in Slack thread `thread_ts` of `channel`, in whatever state,
    /// while its record is kept: where a reply in the thread goes (an answer, a message to
    /// its agent, or a follow-up).
    pub async fn job_in_thread(&self, channel: &str, thread_ts: &str) -> Result<Option<Job>> {
        let id: Option<String> = self
            .bounded(async {
                let mut conn = self.conn().await?;
                Ok(conn.get(self.keys.thread(channel, thread_ts)).await?)
            })
            .await?;
        match id {
            Some(id) => self.get(&id).await,
            None => Ok(None),
        }
    }

    /// The first job waiting for input that `wanted` picks (the waiting jobs are few: each
    /// holds a slot).
    async fn waiting_job_where(&self, wanted: impl Fn(&Job) -> bool) -> Result<Option<Job>> {
        let index = self.keys.state_jobs(JobState::WaitingForInput.as_str());
        self.bounded(async {
            let mut conn = self.conn().await?;
            let ids: Vec<String> = conn.zrange(&index, 0, -1).await?;
            for id in ids {
                let fields: HashMap<String, String> = conn.hgetall(self.keys.job(&id)).await?;
                let Some(job) = Job::from_fields(&id, &fields) else {
                    continue;
                };
                if job.state == JobState::WaitingForInput && wanted(&job) {
                    return Ok(Some(job));
                }
            }
            Ok(None)
        })
        .await
    }

    /// The jobs waiting for input whose question's deadline has passed at `now` (ms).
    pub async fn due_questions(&self, now: i64) -> Result<Vec<String>> {
        let index = self.keys.state_jobs(JobState::WaitingForInput.as_str());
        self.bounded(async {
            let mut conn = self.conn().await?;
            let ids: Vec<String> = conn.zrange(&index, 0, -1).await?;
            if ids.is_empty() {
                return Ok(ids);
            }
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.hget(self.keys.job(id), F::QUESTION);
            }
            let questions: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
            Ok(ids
                .into_iter()
                .zip(questions)
                .filter(|(_, q)| {
                    q.as_deref()
                        .and_then(|q| serde_json::from_str::<JobEvent>(q).ok())
                        .is_some_and(|q| matches!(q, JobEvent::Question(q) if q.deadline <= now))
                })
                .map(|(id, _)| id)
                .collect())
        })
        .await
    }
}

fn parse_answer(json: &str) -> Result<Answer> {
    // cjson writes whole numbers of milliseconds as they are, but may write an empty table
    // for a field it had no value for: read leniently through a map first.
    let value: HashMap<String, serde_json::Value> = serde_json::from_str(json)
        .map_err(|e| QueueError::Corrupt(format!("an answer {json:?}: {e}")))?;
    let text = |k: &str| {
        value
            .get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Ok(Answer {
        question: text("question"),
        text: text("text"),
        by: text("by"),
        defaulted: value
            .get("defaulted")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        at: value
            .get("at")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_default() as u64,
    })
}

#[cfg(test)]
mod tests {
    //! Against a real Redis: a question moves its job to `waiting_for_input` and back, the
    //! first answer wins exactly once, a deadline takes the default or fails the job, and a
    //! runner only ever collects its own attempt's answer.

    use std::time::Duration;

    use contract::RunnerEvent;

    use super::*;
    use crate::now_ms;
    use crate::testing::{batch, claim, echo_job};

    fn queue() -> Queue {
        crate::testing::queue_with("questions", |_| {})
    }

    /// A job whose agent runs (attempt 1, its runner's next sequence number 1).
    async fn running(queue: &Queue) -> String {
        queue.submit(&echo_job("ask me")).await.unwrap();
        let claimed = claim(queue).await;
        assert!(matches!(claimed[0].1, crate::Admission::Spawn { .. }));
        let id = claimed[0].0.job_id.clone();
        send(queue, &id, 0, vec![RunnerEvent::Started]).await;
        id
    }

    async fn send(queue: &Queue, id: &str, first_seq: u64, events: Vec<RunnerEvent>) -> String {
        let batch = batch(1, first_seq, events);
        queue.apply_runner_batch(id, &batch).await.unwrap().state
    }

    fn question(id: &str, default: Option<&str>, timeout_secs: u64) -> RunnerEvent {
        RunnerEvent::Question {
            id: id.into(),
            text: "Which service?".into(),
            choices: vec!["billing".into(), "payments".into()],
            default: default.map(str::to_string),
            timeout_secs,
        }
    }

    async fn state(queue: &Queue, id: &str) -> JobState {
        queue.get(id).await.unwrap().unwrap().state
    }

    #[tokio::test]
    async fn the_first_answer_wins_once_and_only_its_runner_collects_it() {
        let queue = queue();
        let id = running(&queue).await;
        assert_eq!(
            send(&queue, &id, 1, vec![question("q1", None, 60)]).await,
            "waiting_for_input"
        );
        let job = queue.get(&id).await.unwrap().unwrap();
        let open = job.question.expect("the open question is shown");
        assert_eq!((open.id.as_str(), open.choices.len()), ("q1", 2));
        assert_eq!(
            queue.answer_for(&id, 1, "q1").await.unwrap(),
            AnswerPoll::Waiting
        );
        // An answer naming another question is refused; then two race: one wins.
        assert!(matches!(
            queue
                .answer(&id, Some("q0"), "billing", "ann")
                .await
                .unwrap(),
            AnswerOutcome::Closed {
                state: JobState::WaitingForInput,
                last: None
            }
        ));
        let (first, second) = tokio::join!(
            queue.answer(&id, Some("q1"), "billing", "ann"),
            queue.answer(&id, None, "payments", "bob"),
        );
        let outcomes = [first.unwrap(), second.unwrap()];
        let won: Vec<&Answer> = outcomes
            .iter()
            .filter_map(|o| match o {
                AnswerOutcome::Answered(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(won.len(), 1, "{outcomes:?}");
        let winner = won[0].clone();
        assert!(outcomes.iter().any(|o| matches!(
            o,
            AnswerOutcome::Closed { state: JobState::Running, last: Some(last) } if *last == winner
        )));
        assert_eq!(state(&queue, &id).await, JobState::Running);
        assert_eq!(
            queue.answer_for(&id, 1, "q1").await.unwrap(),
            AnswerPoll::Answered(winner.clone())
        );
        assert_eq!(
            queue.answer_for(&id, 2, "q1").await.unwrap(),
            AnswerPoll::Gone
        );
        let job = queue.get(&id).await.unwrap().unwrap();
        assert_eq!((job.question, job.answer), (None, Some(winner.clone())));
        // The stream tells the story: the question, the answer, the states.
        let kinds: Vec<String> = queue
            .events_after(&id, None, 100)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|(_, e)| match e {
                JobEvent::Question(q) => Some(format!("question {}", q.id)),
                JobEvent::Answer { answer, .. } => Some(format!("answer {}", answer.text)),
                JobEvent::State { state, .. } => Some(state.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            kinds[kinds.len() - 4..],
            [
                "question q1".to_string(),
                "waiting_for_input".into(),
                format!("answer {}", winner.text),
                "running".into()
            ],
            "{kinds:?}"
        );
    }

    #[tokio::test]
    async fn a_deadline_takes_the_default_or_fails_the_job_with_the_reason() {
        let queue = queue();
        let with_default = running(&queue).await;
        let without = running(&queue).await;
        send(
            &queue,
            &with_default,
            1,
            vec![question("q1", Some("billing"), 1)],
        )
        .await;
        send(&queue, &without, 1, vec![question("q1", None, 1)]).await;
        assert_eq!(
            queue.expire_question(&with_default).await.unwrap(),
            Expiry::Open
        );
        assert_eq!(
            queue.due_questions(now_ms()).await.unwrap(),
            Vec::<String>::new()
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut due = queue.due_questions(now_ms()).await.unwrap();
        due.sort();
        let mut both = vec![with_default.clone(), without.clone()];
        both.sort();
        assert_eq!(due, both);
        let Expiry::Defaulted(answer) = queue.expire_question(&with_default).await.unwrap() else {
            panic!("the default is taken");
        };
        assert_eq!((answer.text.as_str(), answer.defaulted), ("billing", true));
        assert_eq!(state(&queue, &with_default).await, JobState::Running);
        assert!(matches!(
            queue.expire_question(&without).await.unwrap(),
            Expiry::Failed(_)
        ));
        let failed = queue.get(&without).await.unwrap().unwrap();
        assert_eq!(failed.state, JobState::Failed);
        let reason = failed.reason.unwrap();
        assert!(
            reason.contains("nobody answered the question \"Which service?\" within 1s"),
            "{reason}"
        );
        // The runner is told to stop; a late answer is told the job has ended.
        assert_eq!(
            queue.answer_for(&without, 1, "q1").await.unwrap(),
            AnswerPoll::Gone
        );
        assert!(matches!(
            queue
                .answer(&without, None, "billing", "ann")
                .await
                .unwrap(),
            AnswerOutcome::Closed {
                state: JobState::Failed,
                ..
            }
        ));
        assert_eq!(
            queue.due_questions(now_ms()).await.unwrap(),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn messages_wait_in_order_in_the_inbox_and_its_runner_learns_how_many() {
        let queue = queue();
        let id = running(&queue).await;
        for (n, text) in [(1, "use the v2 client"), (2, "and keep v1 working")] {
            assert_eq!(
                queue.send_message(&id, text, "ann", 3).await.unwrap(),
                MessageOutcome::Sent(n)
            );
        }
        let batch = batch(1, 1, vec![RunnerEvent::Heartbeat]);
        assert_eq!(
            queue.apply_runner_batch(&id, &batch).await.unwrap().inbox,
            2
        );
        let InboxPoll::Messages(all) = queue.inbox_after(&id, 1, 0, 50).await.unwrap() else {
            panic!("the runner of attempt 1 reads its inbox");
        };
        let texts: Vec<(u64, &str, &str)> = all
            .iter()
            .map(|m| (m.seq, m.text.as_str(), m.by.as_str()))
            .collect();
        assert_eq!(
            texts,
            [
                (1, "use the v2 client", "ann"),
                (2, "and keep v1 working", "ann")
            ]
        );
        let InboxPoll::Messages(rest) = queue.inbox_after(&id, 1, 1, 50).await.unwrap() else {
            panic!("still live");
        };
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].seq, 2);
        assert_eq!(
            queue.inbox_after(&id, 2, 0, 50).await.unwrap(),
            InboxPoll::Gone
        );
        assert_eq!(
            queue.send_message(&id, "a third", "ann", 3).await.unwrap(),
            MessageOutcome::Sent(3)
        );
        assert_eq!(
            queue.send_message(&id, "a fourth", "ann", 3).await.unwrap(),
            MessageOutcome::Full
        );
        queue.cancel(&id, "done").await.unwrap();
        assert_eq!(
            queue.send_message(&id, "too late", "ann", 3).await.unwrap(),
            MessageOutcome::Ended(JobState::Cancelled)
        );
        assert_eq!(
            queue
                .send_message("nosuchjob", "hello", "ann", 3)
                .await
                .unwrap(),
            MessageOutcome::NotFound
        );
    }
}
