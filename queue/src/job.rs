//! The job record, its states and its events, as stored in Redis and shown by the API.

use std::collections::HashMap;

use contract::{AgentResult, JobHandle, OutputStream};
use serde::{Deserialize, Serialize};

use crate::fields::job as F;

/// The states of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting to be admitted.
    Queued,
    /// Admitted; its workload is being created or has not reported yet.
    Starting,
    /// The runner reported that the agent started.
    Running,
    /// The agent asked a question and waits for its answer (it keeps its slot).
    WaitingForInput,
    /// The agent exited 0.
    Succeeded,
    /// The agent failed, or attempts ran out.
    Failed,
    /// Someone cancelled it.
    Cancelled,
    /// The agent ran past its time limit.
    TimedOut,
    /// An infrastructure failure; waiting out the backoff before the next attempt.
    Retrying,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::Starting,
        JobState::Running,
        JobState::WaitingForInput,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
    ];

    /// The name used in Redis, the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Starting => "starting",
            JobState::Running => "running",
            JobState::WaitingForInput => "waiting_for_input",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed_out",
            JobState::Retrying => "retrying",
        }
    }

    /// Whether the job's attempt is admitted and not over: it holds a slot and a lease, and
    /// its runner may report.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            JobState::Starting | JobState::Running | JobState::WaitingForInput
        )
    }

    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::TimedOut
        )
    }
}

impl std::str::FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown state {s:?} (one of {})", names.join(", "))
            })
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The id.
    pub id: String,
    /// The current state.
    pub state: JobState,
    /// The current attempt (1-based).
    pub attempt: u32,
    /// Attempts allowed for infrastructure failures.
    pub max_attempts: u32,
    /// The agent profile.
    pub agent: String,
    /// The task.
    pub task: String,
    /// The project, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The ticket, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// The repository, from the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The concurrency key, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// The idempotency key, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Creation time (ms since the epoch).
    pub created_at: i64,
    /// Last change (ms since the epoch).
    pub updated_at: i64,
    /// When the current attempt was admitted (ms), while it is starting or running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<i64>,
    /// When the current attempt's workload was recorded as created (ms), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawned_at: Option<i64>,
    /// When the agent started (ms), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// When the job ended (ms), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// The agent's exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the job is where it is (failure, retry or cancel reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The agent's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<AgentResult>,
    /// What the runner did with the agent's work: the branch it pushed, or no change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<contract::Change>,
    /// The workload of the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<JobHandle>,
    /// The spawner target the current attempt runs on (or ran on, once ended), from the
    /// moment it was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The ticket's title, when a webhook brought one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The ticket's description, when a webhook brought one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Who asked (a Slack user, a GitHub login, a Jira account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// A link back to where the request came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where replies go, for jobs from a webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// The agent's open question, while the job is `waiting_for_input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<Question>,
    /// The answer to the current attempt's last question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<contract::Answer>,
    /// The finished job this one continues (a follow-up), as it was when this one was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<contract::PreviousJob>,
    /// The first job of its chain of follow-ups (whose branch the chain works on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// The follow-up that continues this job, once one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followed_by: Option<String>,
    /// Slack's `response_url` of the command that made the job: a credential for posting
    /// into the conversation, so it is kept out of every view of the job.
    #[serde(skip)]
    pub response_url: Option<String>,
}

/// A question an agent asked, as recorded (the `question` event, and the job's open
/// question while it waits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    /// The attempt that asked.
    pub attempt: u32,
    /// Its id within the attempt.
    pub id: String,
    /// The question.
    pub text: String,
    /// The answers offered as buttons (any text is accepted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// The answer taken at the deadline when nobody answers; without one the job fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// How long it waits.
    pub timeout_secs: u64,
    /// When it stops waiting (ms).
    pub deadline: i64,
    /// When it was asked (ms).
    pub at: i64,
}

/// Where a job came from and where its replies go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Origin {
    /// A Slack slash command, app mention or button.
    Slack {
        /// The channel id.
        channel: String,
        /// The requester's user id.
        user: String,
        /// The thread to reply in (app mentions and bot messages).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_ts: Option<String>,
    },
    /// A GitHub issue.
    Github {
        /// `owner/repo`.
        repo: String,
        /// The issue number.
        issue: u64,
    },
    /// A GitLab issue.
    Gitlab {
        /// The project's path (`group/project`).
        project: String,
        /// The issue's iid within the project.
        issue: u64,
    },
    /// A Jira issue.
    Jira {
        /// The issue key (`PAY-12`).
        issue: String,
    },
}

impl Origin {
    /// The source's name: `slack`, `github`, `gitlab` or `jira`.
    pub fn source(&self) -> &'static str {
        match self {
            Origin::Slack { .. } => "slack",
            Origin::Github { .. } => "github",
            Origin::Gitlab { .. } => "gitlab",
            Origin::Jira { .. } => "jira",
        }
    }
}

impl Job {
    /// Builds the view from a record's fields; `None` if the record is incomplete.
    pub fn from_fields(id: &str, f: &HashMap<String, String>) -> Option<Job> {
        let text = |k: &str| f.get(k).filter(|v| !v.is_empty()).cloned();
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok());
        let (result, change) = text(F::RESULT)
            .and_then(|r| serde_json::from_str::<JobEvent>(&r).ok())
            .and_then(|event| match event {
                JobEvent::Result { result, change, .. } => Some((result, change)),
                _ => None,
            })
            .unzip();
        let change = change.flatten();
        let state: JobState = f.get(F::STATE)?.parse().ok()?;
        let question = text(F::QUESTION)
            .filter(|_| state == JobState::WaitingForInput)
            .and_then(|q| match serde_json::from_str::<JobEvent>(&q).ok()? {
                JobEvent::Question(question) => Some(question),
                _ => None,
            });
        let attempt = num(F::ATTEMPT)? as u32;
        // Only the current attempt's answer: a retry starts a conversation afresh.
        let answer = text(F::ANSWER)
            .and_then(|a| serde_json::from_str::<contract::Answer>(&a).ok())
            .filter(|_| {
                text(F::QUESTION)
                    .and_then(|q| serde_json::from_str::<JobEvent>(&q).ok())
                    .is_some_and(|q| matches!(q, JobEvent::Question(q) if q.attempt == attempt))
            });
        Some(Job {
            id: id.to_string(),
            state,
            attempt,
            max_attempts: num(F::MAX_ATTEMPTS).unwrap_or(1) as u32,
            agent: text(F::AGENT).unwrap_or_default(),
            task: text(F::TASK).unwrap_or_default(),
            project: text(F::PROJECT),
            ticket: text(F::TICKET),
            repo: text(F::REPO),
            concurrency_key: text(F::CONCURRENCY_KEY),
            idempotency_key: text(F::IDEMPOTENCY_KEY),
            created_at: num(F::CREATED_AT)?,
            updated_at: num(F::UPDATED_AT).unwrap_or_default(),
            admitted_at: num(F::ADMITTED_AT),
            spawned_at: num(F::SPAWNED_AT),
            started_at: num(F::STARTED_AT),
            finished_at: num(F::FINISHED_AT),
            exit_code: num(F::EXIT_CODE).map(|c| c as i32),
            reason: text(F::REASON),
            result,
            change,
            handle: text(F::HANDLE).and_then(|h| serde_json::from_str(&h).ok()),
            target: text(F::TARGET),
            title: text(F::TITLE),
            description: text(F::DESCRIPTION),
            requester: text(F::REQUESTER),
            url: text(F::URL),
            origin: text(F::ORIGIN).and_then(|o| serde_json::from_str(&o).ok()),
            question,
            answer,
            follows: text(F::FOLLOWS).and_then(|p| serde_json::from_str(&p).ok()),
            chain: text(F::CHAIN),
            followed_by: text(F::FOLLOWED_BY),
            response_url: text(F::RESPONSE_URL),
        })
    }
}

/// One entry of a job's event stream (`job:{id}:events`), also what SSE clients receive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    /// The job changed state.
    State {
        /// The new state.
        state: JobState,
        /// The attempt.
        attempt: u32,
        /// Why, when there is a reason worth telling.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// When (ms).
        at: i64,
    },
    /// The job waits for a free slot (global or its concurrency key).
    Waiting {
        /// The attempt.
        attempt: u32,
        /// Which limit holds it.
        reason: String,
        /// When (ms).
        at: i64,
    },
    /// A workload was created for the attempt.
    Spawned {
        /// The attempt.
        attempt: u32,
        /// The backend.
        backend: String,
        /// The workload name.
        workload: String,
        /// The spawner target it runs on.
        #[serde(default = "default_target")]
        target: String,
        /// When (ms).
        at: i64,
    },
    /// A line of agent output.
    Log {
        /// The attempt.
        attempt: u32,
        /// Which stream.
        stream: OutputStream,
        /// The line.
        line: String,
        /// When the dispatcher received it (ms).
        at: i64,
    },
    /// The agent asked a question.
    Question(Question),
    /// A question was answered (by someone, or by its default at its deadline).
    Answer {
        /// The attempt that asked.
        attempt: u32,
        /// The answer.
        #[serde(flatten)]
        answer: contract::Answer,
    },
    /// A message people sent the agent (steering it), numbered from 1 per job.
    Message {
        /// The message.
        #[serde(flatten)]
        message: contract::InboxMessage,
    },
    /// A progress message from the agent.
    Say {
        /// The attempt.
        attempt: u32,
        /// The message.
        text: String,
        /// When the dispatcher received it (ms).
        at: i64,
    },
    /// The agent's run ended with this result.
    Result {
        /// The attempt.
        attempt: u32,
        /// The exit code, if the agent exited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// What the agent reported.
        #[serde(flatten)]
        result: AgentResult,
        /// What the runner did with the agent's work (pushed it, or found no change).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        change: Option<contract::Change>,
        /// When (ms).
        at: i64,
    },
}

impl JobEvent {
    /// The state this event moves the job to, if it is a state change.
    pub fn state(&self) -> Option<JobState> {
        match self {
            JobEvent::State { state, .. } => Some(*state),
            _ => None,
        }
    }
}

/// An entry of the dispatcher-wide feed: a job's event, with the job it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedEvent {
    /// The job.
    pub job_id: String,
    /// What happened to it.
    #[serde(flatten)]
    pub event: JobEvent,
}

/// What a caller asks for when submitting a job (validated before it gets here).
#[derive(Debug, Clone, Default)]
pub struct NewJob {
    /// The agent profile name.
    pub agent: String,
    /// The task.
    pub task: String,
    /// The project.
    pub project: Option<String>,
    /// The repository (from the project).
    pub repo: Option<String>,
    /// The ticket.
    pub ticket: Option<String>,
    /// The concurrency key.
    pub concurrency_key: Option<String>,
    /// The idempotency key.
    pub idempotency_key: Option<String>,
    /// Time limit of the agent (from its profile).
    pub timeout_secs: u64,
    /// Whether the profile retries non-zero exits.
    pub retry_on_failure: bool,
    /// The ticket's title.
    pub title: Option<String>,
    /// The ticket's description.
    pub description: Option<String>,
    /// Who asked.
    pub requester: Option<String>,
    /// A link back to the request.
    pub url: Option<String>,
    /// Where replies go.
    pub origin: Option<Origin>,
    /// Slack's `response_url`, for replies to a slash command.
    pub response_url: Option<String>,
    /// The webhook delivery (`source:delivery-id`): a second submit of it within
    /// `sources.dedup_ttl_secs` is answered with the first one's job.
    pub delivery: Option<String>,
    /// A key (the ticket) that may have only one unfinished job: a submit while one is
    /// unfinished is answered with it.
    pub exclusive: Option<String>,
    /// When answered with an unfinished job, also tell `origin` so through the outbox.
    pub reply_if_running: bool,
    /// The finished job this one continues. Without it, a job continues the finished one
    /// its ticket's `exclusive` key, or its Slack thread, last named.
    pub follows: Option<String>,
}

fn default_target() -> String {
    contract::DEFAULT_TARGET.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::Link;

    #[test]
    fn job_events_round_trip_with_snake_case_tags() {
        let events = vec![
            JobEvent::State {
                state: JobState::TimedOut,
                attempt: 2,
                reason: Some("late".into()),
                at: 5,
            },
            JobEvent::Log {
                attempt: 1,
                stream: OutputStream::Stdout,
                line: "x".into(),
                at: 1,
            },
            JobEvent::Result {
                attempt: 1,
                exit_code: Some(0),
                result: AgentResult {
                    summary: Some("ok".into()),
                    links: vec![Link {
                        title: None,
                        url: "http://x".into(),
                    }],
                },
                change: Some(contract::Change::Pushed {
                    branch: "agentsmith/T-1".into(),
                    base_branch: "main".into(),
                    commit: "0123abc".into(),
                    files: 1,
                    insertions: 2,
                    deletions: 3,
                    pull_request: Some(Box::new(contract::PullRequest {
                        provider: "github".into(),
                        number: 42,
                        url: "https://github.example/acme/shop/pull/42".into(),
                        opened: true,
                    })),
                    pull_request_error: None,
                    compare_url: None,
                    notes: None,
                }),
                at: 2,
            },
        ];
        for event in events {
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(
                serde_json::from_str::<JobEvent>(&json).unwrap(),
                event,
                "{json}"
            );
        }
        let json = r#"{"type":"state","state":"timed_out","attempt":1,"at":1.7e12}"#;
        assert!(
            serde_json::from_str::<JobEvent>(json).is_err(),
            "floats are not times"
        );
    }

    #[test]
    fn feed_events_round_trip_with_the_job_id_beside_the_event() {
        let json = r#"{"type":"state","state":"running","attempt":2,"at":7,"job_id":"abc"}"#;
        let event: FeedEvent = serde_json::from_str(json).unwrap();
        assert_eq!(event.job_id, "abc");
        assert_eq!(event.event.state(), Some(JobState::Running));
        let again: FeedEvent =
            serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
        assert_eq!(again, event);
    }

    #[test]
    fn origins_round_trip_tagged_by_source() {
        let origins = [
            Origin::Slack {
                channel: "C1".into(),
                user: "U1".into(),
                thread_ts: Some("1.2".into()),
            },
            Origin::Github {
                repo: "o/r".into(),
                issue: 7,
            },
            Origin::Gitlab {
                project: "g/p".into(),
                issue: 3,
            },
            Origin::Jira {
                issue: "PAY-1".into(),
            },
        ];
        for origin in origins {
            let json = serde_json::to_string(&origin).unwrap();
            assert!(json.contains(&format!("\"source\":\"{}\"", origin.source())));
            assert_eq!(serde_json::from_str::<Origin>(&json).unwrap(), origin);
        }
    }

    #[test]
    fn the_response_url_never_leaves_in_a_job_view() {
        let mut fields: HashMap<String, String> = [
            ("state", "queued"),
            ("attempt", "1"),
            ("created_at", "1"),
            (
                "response_url",
                "https://hooks.slack.com/commands/T/1/secret",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        fields.insert(
            "origin".into(),
            r#"{"source":"slack","channel":"C1","user":"U1"}"#.into(),
        );
        let job = Job::from_fields("abc", &fields).unwrap();
        assert!(job.response_url.is_some() && job.origin.is_some());
        let json = serde_json::to_string(&job).unwrap();
        assert!(!json.contains("hooks.slack.com"), "{json}");
        assert!(json.contains("\"channel\":\"C1\""), "{json}");
    }

    #[test]
    fn states_parse_from_their_names() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
        }
        assert!("done".parse::<JobState>().unwrap_err().contains("queued"));
    }
}
