//! The job contract: what a spawner is given, what it hands `agent-runner`, and the
//! wire types the runner sends back to the dispatcher.
//!
//! Everything that crosses a process boundary lives here, so the dispatcher and the
//! runner cannot disagree about a name or a shape.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The version of the runner wire protocol; sent in every [`RunnerBatch`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Names of the environment variables through which a spawner hands a job to `agent-runner`.
pub mod env {
    /// The job id.
    pub const JOB_ID: &str = "AGENTSMITH_JOB_ID";
    /// The attempt number, starting at 1.
    pub const ATTEMPT: &str = "AGENTSMITH_ATTEMPT";
    /// The [`Intent`](super::Intent) as JSON.
    pub const INTENT: &str = "AGENTSMITH_INTENT";
    /// The agent command as a JSON array of strings (argv).
    pub const COMMAND: &str = "AGENTSMITH_COMMAND";
    /// Where the runner posts its events (`.../internal/jobs/{id}/events`).
    pub const CALLBACK_URL: &str = "AGENTSMITH_CALLBACK_URL";
    /// The per-job token that authenticates the runner's events.
    pub const JOB_TOKEN: &str = "AGENTSMITH_JOB_TOKEN";
    /// The agent's time limit in seconds.
    pub const TIMEOUT_SECS: &str = "AGENTSMITH_TIMEOUT_SECS";
    /// Seconds between heartbeats.
    pub const HEARTBEAT_SECS: &str = "AGENTSMITH_HEARTBEAT_SECS";
    /// Seconds between SIGTERM and SIGKILL when the agent is stopped.
    pub const GRACE_SECS: &str = "AGENTSMITH_GRACE_SECS";
    /// The directory the agent runs in (the runner's current directory when unset).
    pub const WORKDIR: &str = "AGENTSMITH_WORKDIR";

    /// File in the work directory where the runner records the agent's process group, so
    /// the process backend can stop the agent even when the runner died without doing so.
    pub const AGENT_PGID_FILE: &str = ".agent-pgid";

    /// Set for the agent: the task text.
    pub const TASK: &str = "AGENTSMITH_TASK";
    /// Set for the agent: the project name, when the job has one.
    pub const PROJECT: &str = "AGENTSMITH_PROJECT";
    /// Set for the agent: the ticket key, when the job has one.
    pub const TICKET: &str = "AGENTSMITH_TICKET";
    /// Set for the agent: the repository, when the project names one.
    pub const REPO: &str = "AGENTSMITH_REPO";
    /// Set for the agent: the ticket's title, when a webhook brought one.
    pub const TITLE: &str = "AGENTSMITH_TITLE";
    /// Set for the agent: the ticket's description, when a webhook brought one.
    pub const DESCRIPTION: &str = "AGENTSMITH_DESCRIPTION";
    /// Set for the agent: who asked (a Slack user, a GitHub login, a Jira account).
    pub const REQUESTER: &str = "AGENTSMITH_REQUESTER";
    /// Set for the agent: a link back to where the request came from.
    pub const URL: &str = "AGENTSMITH_URL";
    /// Set for the agent: where the request came from (`slack`, `github`, `gitlab`, `jira`,
    /// or `api`).
    pub const SOURCE: &str = "AGENTSMITH_SOURCE";
    /// Set for the agent: path of a JSON file holding the whole intent.
    pub const INTENT_FILE: &str = "AGENTSMITH_INTENT_FILE";
    /// Set for the agent: where it may write its result (`{"summary", "links"}`).
    pub const RESULT_FILE: &str = "AGENTSMITH_RESULT_FILE";
}

/// Exit codes of `agent-runner` (the workload's main process), so backends can say what a
/// runner's exit means.
pub mod exit {
    /// The agent's run was reported (whatever its outcome).
    pub const OK: u8 = 0;
    /// The runner failed in a way not listed here.
    pub const FAILED: u8 = 1;
    /// The job environment was missing or invalid.
    pub const BAD_JOB: u8 = 2;
    /// The dispatcher refused the job token.
    pub const TOKEN_REFUSED: u8 = 3;
    /// The final event could not be delivered before the runner gave up.
    pub const UNDELIVERED: u8 = 4;
    /// This attempt had already run in this work directory (its container was started
    /// again): the agent was not run a second time and nothing was reported.
    pub const ALREADY_RAN: u8 = 5;

    /// What a runner exit code means, for people.
    pub fn meaning(code: i32) -> Option<&'static str> {
        match u8::try_from(code).ok()? {
            OK => Some("the run was reported"),
            FAILED => Some("the runner failed"),
            BAD_JOB => Some("the runner's job environment was missing or invalid"),
            TOKEN_REFUSED => Some("the dispatcher refused the runner's token"),
            UNDELIVERED => Some("the runner could not deliver its final report"),
            ALREADY_RAN => Some("this attempt had already run; it was not run again"),
            _ => None,
        }
    }
}

/// Labels every backend puts on every workload it creates.
pub mod labels {
    /// `app.kubernetes.io/managed-by`, always `agentsmith`.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The job id.
    pub const JOB_ID: &str = "agentsmith.io/job-id";
    /// The attempt number.
    pub const ATTEMPT: &str = "agentsmith.io/attempt";
    /// The installation that owns the workload (several may share a cluster).
    pub const INSTALLATION: &str = "agentsmith.io/installation";
}

/// What the requester wants done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Intent {
    /// The task, in the requester's words (`fix PROJ-123`, a prompt, ...).
    pub task: String,
    /// The configured project the job belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The ticket the job is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// The repository the project points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The ticket's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The ticket's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// A link back to the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where the request came from (`slack`, `github`, `gitlab`, `jira`; none for the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// An agent profile as a spawner needs it: what to run and within which bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgentProfile {
    /// The profile's name in the configuration.
    pub name: String,
    /// The container image (container backends only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The agent command (argv). Run by `agent-runner`, not by the shell.
    pub command: Vec<String>,
    /// Extra environment for the agent.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are secrets: variable name to secret key. The
    /// values never pass through the job record; each backend resolves the keys where the
    /// workload runs (see [`crate::secrets`]).
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    /// The agent's time limit.
    pub timeout_secs: u64,
    /// Limits of the workload (container backends).
    #[serde(default)]
    pub resources: Resources,
    /// Let the agent write outside its work directory and `/tmp` (container backends
    /// otherwise give it a read-only root filesystem).
    #[serde(default)]
    pub writable_root: bool,
    /// Mount a service account token in the agent's pod (kubernetes).
    #[serde(default)]
    pub service_account_token: bool,
}

/// A size in bytes as Kubernetes writes quantities: `1Gi`, `64Mi`, or plain bytes when it
/// is not a whole binary unit.
pub fn binary_size(bytes: u64) -> String {
    for (unit, size) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// Resource limits of one workload; `None` leaves the backend's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Resources {
    /// Memory limit in bytes (no swap beyond it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU limit in thousandths of a CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    /// Largest number of processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

impl Resources {
    /// These limits, with `defaults` for the ones left unset.
    pub fn or(self, defaults: Resources) -> Resources {
        Resources {
            memory_bytes: self.memory_bytes.or(defaults.memory_bytes),
            cpu_millis: self.cpu_millis.or(defaults.cpu_millis),
            pids: self.pids.or(defaults.pids),
        }
    }
}

/// Everything a spawner needs to start one attempt of one job.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job id (lowercase letters and digits).
    pub job_id: String,
    /// The attempt, starting at 1.
    pub attempt: u32,
    /// What to do.
    pub intent: Intent,
    /// How to do it.
    pub profile: AgentProfile,
    /// Where the runner posts its events.
    pub callback_url: String,
    /// The per-job token for those events.
    pub token: String,
    /// Seconds between runner heartbeats.
    pub heartbeat_secs: u64,
    /// Seconds between SIGTERM and SIGKILL.
    pub grace_secs: u64,
}

impl fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a credential: never print it.
        f.debug_struct("JobSpec")
            .field("job_id", &self.job_id)
            .field("attempt", &self.attempt)
            .field("intent", &self.intent)
            .field("profile", &self.profile.name)
            .field("callback_url", &self.callback_url)
            .field("token", &"[redacted]")
            .finish()
    }
}

impl JobSpec {
    /// The deterministic workload name of this attempt; see [`workload_name`].
    pub fn workload_name(&self) -> String {
        workload_name(&self.job_id, self.attempt)
    }

    /// The environment `agent-runner` reads its job from.
    pub fn runner_env(&self) -> Vec<(&'static str, String)> {
        let intent = serde_json::to_string(&self.intent).expect("an intent always serialises");
        let command =
            serde_json::to_string(&self.profile.command).expect("a string list always serialises");
        vec![
            (env::JOB_ID, self.job_id.clone()),
            (env::ATTEMPT, self.attempt.to_string()),
            (env::INTENT, intent),
            (env::COMMAND, command),
            (env::CALLBACK_URL, self.callback_url.clone()),
            (env::JOB_TOKEN, self.token.clone()),
            (env::TIMEOUT_SECS, self.profile.timeout_secs.to_string()),
            (env::HEARTBEAT_SECS, self.heartbeat_secs.to_string()),
            (env::GRACE_SECS, self.grace_secs.to_string()),
        ]
    }

    /// The labels every workload of this attempt carries.
    pub fn labels(&self, installation: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::MANAGED_BY.to_string(), "agentsmith".to_string()),
            (labels::JOB_ID.to_string(), self.job_id.clone()),
            (labels::ATTEMPT.to_string(), self.attempt.to_string()),
            (labels::INSTALLATION.to_string(), installation.to_string()),
        ])
    }
}

/// The workload name of a job attempt: `agentsmith-<id>-<attempt>`, a DNS-1123 label of at
/// most 63 characters, so a repeated spawn of the same attempt finds the same workload.
pub fn workload_name(job_id: &str, attempt: u32) -> String {
    let suffix = format!("-{attempt}");
    let mut id: String = job_id
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let room = 63 - "agentsmith-".len() - suffix.len();
    id.truncate(room);
    format!("agentsmith-{}{suffix}", id.trim_matches('-'))
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// The agent's standard output.
    Stdout,
    /// The agent's standard error.
    Stderr,
}

/// A link the agent produced (a pull request, a report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// What the link is, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The URL.
    pub url: String,
}

/// What an agent may leave in its result file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgentResult {
    /// A short summary of what was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Links to what was produced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
}

/// How the agent's run ended, as the runner saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunOutcome {
    /// The agent exited by itself with this code.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// The agent was killed by a signal the runner did not send.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// The runner stopped the agent because its time limit passed.
    TimedOut,
    /// The runner itself was told to stop (SIGTERM: a node drain, a shutdown, a cancel).
    Terminated,
    /// The agent was killed by the kernel for going over its memory limit.
    OomKilled,
    /// The agent command could not be started at all.
    StartFailed {
        /// Why.
        reason: String,
    },
}

/// One event from the runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunnerEvent {
    /// The agent process started.
    Started,
    /// The runner is alive (renews the job's lease).
    Heartbeat,
    /// A line of the agent's output.
    Log {
        /// Which stream.
        stream: OutputStream,
        /// The line, without its newline.
        line: String,
    },
    /// Lines the runner had to drop because the dispatcher was unreachable for too long.
    Dropped {
        /// How many.
        lines: u64,
    },
    /// The agent's run is over; the last event of an attempt.
    Finished {
        /// How it ended.
        outcome: RunOutcome,
        /// What the agent left in its result file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<AgentResult>,
    },
}

/// A batch of runner events, as posted to `/internal/jobs/{id}/events`.
///
/// The dispatcher answers 200 with a [`RunnerReply`]; 409 when the attempt is no longer
/// wanted (cancelled, superseded: the runner stops its agent and exits); 401 for a token
/// that does not match the job and attempt. Anything else is retried by the runner.
/// Sequence numbers run from 0 per attempt without gaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerBatch {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The attempt the events belong to.
    pub attempt: u32,
    /// The sequence number of the first event; events carry consecutive numbers, so a
    /// batch that is sent again after a lost answer is not recorded twice.
    pub first_seq: u64,
    /// The events, in order.
    pub events: Vec<RunnerEvent>,
}

/// The dispatcher's answer to a [`RunnerBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerReply {
    /// The attempt is no longer wanted (cancelled, superseded): stop the agent now.
    #[serde(default)]
    pub stop: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names_are_dns_labels_of_at_most_63_chars() {
        assert_eq!(workload_name("abc123", 2), "agentsmith-abc123-2");
        let long = workload_name(&"X_".repeat(60), 4_000_000_000);
        assert!(long.len() <= 63, "{long}");
        assert!(long
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert!(!long.contains("--"), "{long}");
    }

    #[test]
    fn runner_events_round_trip_with_their_tags() {
        let batch = RunnerBatch {
            version: PROTOCOL_VERSION,
            attempt: 1,
            first_seq: 7,
            events: vec![
                RunnerEvent::Started,
                RunnerEvent::Log {
                    stream: OutputStream::Stderr,
                    line: "hi".into(),
                },
                RunnerEvent::Finished {
                    outcome: RunOutcome::Exited { code: 3 },
                    result: Some(AgentResult {
                        summary: Some("done".into()),
                        links: vec![Link {
                            title: None,
                            url: "http://x".into(),
                        }],
                    }),
                },
            ],
        };
        let json = serde_json::to_string(&batch).unwrap();
        assert!(json.contains(r#""type":"log","stream":"stderr""#), "{json}");
        assert!(
            json.contains(r#""outcome":{"kind":"exited","code":3}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<RunnerBatch>(&json).unwrap(), batch);
    }

    #[test]
    fn job_spec_debug_never_shows_the_token() {
        let spec = JobSpec {
            job_id: "a".into(),
            attempt: 1,
            intent: Intent::default(),
            profile: AgentProfile::default(),
            callback_url: "http://x".into(),
            token: "sekrit-token".into(),
            heartbeat_secs: 5,
            grace_secs: 5,
        };
        assert!(!format!("{spec:?}").contains("sekrit"));
    }
}
