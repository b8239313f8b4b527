//! [`Intent`]: what the requester wants done, as the runner hands it to the agent.

use serde::{Deserialize, Serialize};

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
    /// The job this one continues (a follow-up in the same thread or on the same ticket):
    /// its work is on the branch checked out, and its summary says what it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousJob>,
}

/// The finished job a follow-up continues, as its record said when the follow-up was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PreviousJob {
    /// Its id.
    pub job_id: String,
    /// How it ended (`succeeded`, `failed`, ...).
    pub state: String,
    /// Its agent's summary, if it left one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Why it failed or was cancelled, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The task it was given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task: String,
}
