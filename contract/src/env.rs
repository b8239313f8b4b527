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
/// The attempt's one-time credential: the runner exchanges it for the attempt's token
/// (`POST .../internal/jobs/{id}/token`) before the agent starts. Spent, it is worth
/// nothing, so it does not matter that the agent can read it too.
pub const JOB_CREDENTIAL: &str = "AGENTSMITH_JOB_CREDENTIAL";
/// The agent's time limit in seconds.
pub const TIMEOUT_SECS: &str = "AGENTSMITH_TIMEOUT_SECS";
/// Seconds between heartbeats.
pub const HEARTBEAT_SECS: &str = "AGENTSMITH_HEARTBEAT_SECS";
/// Seconds between SIGTERM and SIGKILL when the agent is stopped.
pub const GRACE_SECS: &str = "AGENTSMITH_GRACE_SECS";
/// The directory the agent runs in (the runner's current directory when unset).
pub const WORKDIR: &str = "AGENTSMITH_WORKDIR";

/// Set by the process backend to `0`: the runner's standard input is then a pipe back to
/// the backend, on which the runner writes the agent's process-group id as one decimal
/// line as soon as the agent has started, and a line `0` once that group is gone. The
/// backend keeps the number in memory and kills the group if the runner dies first. The
/// runner moves the pipe off its standard input before anything else and keeps it from
/// the agent: nothing the agent can write is trusted.
pub const PGID_FD: &str = "AGENTSMITH_PGID_FD";
/// Numeric `uid:gid` the agent runs as, when the runner runs as root (the process
/// backend's `agent_user`): the runner hands the work directory over to that user and
/// starts the agent as it, without supplementary groups. Unset: the runner's own user.
pub const AGENT_USER: &str = "AGENTSMITH_AGENT_USER";

/// Set by the kubernetes backend when the pod has sidecars: the runner creates this file as
/// it exits, whatever its outcome, and the sidecars exit when they see it (so the pod, and
/// with it the Job, ends with the agent).
pub const ENDED_FILE: &str = "AGENTSMITH_ENDED_FILE";

/// Set by a spawner configured with extra CA certificates: the PEM file it mounted for the
/// runner, which trusts them for its callbacks and git, and joins them with the image's
/// public roots for the agent (see `agent_runner::ca`).
pub const EXTRA_CA_FILE: &str = "AGENTSMITH_EXTRA_CA_FILE";

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
/// Set for the agent of a follow-up: the id of the finished job it continues.
pub const PREVIOUS_JOB: &str = "AGENTSMITH_PREVIOUS_JOB";
/// Set for the agent of a follow-up: the summary the job it continues left, if it left one.
pub const PREVIOUS_SUMMARY: &str = "AGENTSMITH_PREVIOUS_SUMMARY";
/// Set for the agent: where the request came from (`slack`, `github`, `gitlab`, `jira`,
/// or `api`).
pub const SOURCE: &str = "AGENTSMITH_SOURCE";
/// Set for the agent: path of a JSON file holding the whole intent.
pub const INTENT_FILE: &str = "AGENTSMITH_INTENT_FILE";
/// Set for the agent: where it may write its result (`{"summary", "links"}`).
pub const RESULT_FILE: &str = "AGENTSMITH_RESULT_FILE";
/// Set for the agent: where it may write notes for the pull request's description
/// (markdown), when its work is pushed.
pub const NOTES_FILE: &str = "AGENTSMITH_NOTES_FILE";
/// Set for the agent: the directory where it leaves questions (`<name>.json`, a
/// [`crate::Ask`]) and finds their answers (`<name>.answer.json`); `agent-runner ask` uses it.
pub const ASK_DIR: &str = "AGENTSMITH_ASK_DIR";
/// Set for the agent: the directory where it leaves progress messages (`<name>.json`, a
/// [`crate::Say`]); `agent-runner say` uses it.
pub const SAY_DIR: &str = "AGENTSMITH_SAY_DIR";
/// Set for the agent: the directory where the runner leaves the messages people send it
/// while it runs (`<seq>.json`, an [`crate::InboxMessage`], numbered from 000001), each
/// written whole (renamed into place) and never rewritten.
pub const INBOX_DIR: &str = "AGENTSMITH_INBOX";
