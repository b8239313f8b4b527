//! Names of the environment variables through which a spawner hands a job to `agent-runner`,
//! and of those the runner sets for the agent.

/// The job id.
pub const JOB_ID: &str = "AGENTSMITH_JOB_ID";
/// The attempt number, starting at 1.
pub const ATTEMPT: &str = "AGENTSMITH_ATTEMPT";
/// The [`Intent`](crate::Intent) as JSON.
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
