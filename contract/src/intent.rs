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
}
