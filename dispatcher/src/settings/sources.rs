//! `sources.*`: the webhook sources (Slack, GitHub, GitLab, Jira), their secrets and reply
//! credentials, and the reply outbox.

use secrecy::SecretString;
use serde::Deserialize;

/// `sources.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesSettings {
    /// The command word of comments and app mentions (`/agent`); Slack's slash command is
    /// `sources.slack.command`.
    pub command: String,
    /// How long a delivery (the digest of its signed body) is remembered, so a redelivery
    /// or a replay creates no second job.
    pub dedup_ttl_secs: u64,
    /// One job per ticket at a time: a second trigger for a ticket whose job has not ended
    /// is answered with that job instead of starting another.
    pub one_job_per_ticket: bool,
    /// Slack.
    pub slack: SlackSettings,
    /// GitHub.
    pub github: GithubSettings,
    /// GitLab.
    pub gitlab: GitlabSettings,
    /// Jira Cloud.
    pub jira: JiraSettings,
    /// The reply outbox.
    pub replies: ReplySettings,
}

/// `sources.slack.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSettings {
    /// Accept Slack's requests; off: its routes answer 404.
    pub enabled: bool,
    /// The app's signing secret (requests are verified with it).
    pub signing_secret: SecretString,
    /// The bot token (`xoxb-...`) for chat.postMessage, when `response_url` cannot be used.
    pub bot_token: SecretString,
    /// The slash command's name.
    pub command: String,
    /// Slack's Web API base URL.
    pub api_base_url: String,
    /// User ids who may cancel and retry anyone's jobs (others: only their own).
    pub admins: Vec<String>,
    /// The project of commands that name none and come from a channel no project lists.
    pub default_project: String,
    /// Hosts a `response_url` may point at (Slack's is `hooks.slack.com`); one elsewhere is
    /// never called.
    pub response_url_hosts: Vec<String>,
}

/// `sources.github.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubSettings {
    /// Accept GitHub's webhooks; off: 404.
    pub enabled: bool,
    /// The webhook secret (`X-Hub-Signature-256`).
    pub webhook_secret: SecretString,
    /// A token that may comment on the repositories' issues.
    pub token: SecretString,
    /// The REST API base URL (GitHub Enterprise: `https://HOST/api/v3`).
    pub api_base_url: String,
    /// Adding this label to an issue starts a job.
    pub label: String,
}

/// `sources.gitlab.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabSettings {
    /// Accept GitLab's webhooks; off: 404.
    pub enabled: bool,
    /// The webhook's secret token (`X-Gitlab-Token`).
    pub webhook_token: SecretString,
    /// A token (`PRIVATE-TOKEN`) that may add notes to the projects' issues.
    pub token: SecretString,
    /// The REST API base URL.
    pub api_base_url: String,
    /// Adding this label to an issue starts a job.
    pub label: String,
}

/// `sources.jira.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraSettings {
    /// Accept Jira's webhooks; off: 404.
    pub enabled: bool,
    /// The webhook secret (`X-Hub-Signature`).
    pub webhook_secret: SecretString,
    /// The site (`https://your-site.atlassian.net`), for replies and links.
    pub base_url: String,
    /// The account that comments (basic auth with `api_token`).
    pub email: String,
    /// The account's API token.
    pub api_token: SecretString,
    /// Adding this label to an issue starts a job.
    pub label: String,
    /// Moving an issue into one of these statuses starts a job.
    pub statuses: Vec<String>,
}

/// `sources.replies.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplySettings {
    /// Attempts per reply before it is given up (and logged).
    pub max_attempts: u32,
    /// First retry delay, in milliseconds.
    pub backoff_base_ms: u64,
    /// Largest retry delay.
    pub backoff_max_secs: u64,
    /// Timeout of one request to a provider.
    pub timeout_secs: u64,
    /// Log lines quoted in a failure reply.
    pub log_lines: usize,
}
