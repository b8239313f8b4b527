//! The providers' reply APIs: Slack (`response_url`, `chat.postMessage`), GitHub and GitLab
//! issue comments, Jira issue comments. Each call says whether a failure is worth retrying.
//!
//! Every part of a URL that comes from a delivery (a repository, a project path, an issue
//! key) is one percent-encoded path segment ([`segment`]), and a `response_url` is called
//! only when its host is allowed ([`response_url_host`]).

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use tracing::warn;

use super::message::Message;
use crate::settings::SourcesSettings;

/// Slack shows at most this many characters in a section block.
const SLACK_SECTION_MAX: usize = 2900;

/// A reply the provider did not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// Whether trying again later may work (a timeout, a 5xx, a 429).
    pub retryable: bool,
    /// What happened (never a token).
    pub message: String,
}

impl SendError {
    /// A failure that will not go away by itself.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
        }
    }

    fn retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
        }
    }
}

/// Sends `request` and reads the reply's JSON (or `Null`), classifying failures.
pub(super) async fn send(what: &str, request: RequestBuilder) -> Result<Value, SendError> {
    let response = request
        .send()
        .await
        .map_err(|e| SendError::retryable(format!("{what}: {}", without_url(&e))))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
    }
    let message = format!("{what}: HTTP {status}");
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Err(SendError::retryable(message))
    } else {
        Err(SendError::permanent(message))
    }
}

/// One path segment of a provider URL: every byte but RFC 3986's unreserved characters
/// percent-encoded, so a `/`, `?` or `#` in a ticket key stays inside its segment. `None`
/// for an empty segment or one of dots alone, which a URL resolves as `.` or `..` however
/// it is encoded.
pub fn segment(part: &str) -> Option<String> {
    if part.is_empty() || part.chars().all(|c| c == '.') {
        return None;
    }
    let mut out = String::with_capacity(part.len());
    for byte in part.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    Some(out)
}

/// The segments of `path` (`owner/repo`), each encoded by [`segment`] and joined by `/`.
pub(super) fn segments(path: &str) -> Option<String> {
    path.split('/')
        .map(segment)
        .collect::<Option<Vec<_>>>()
        .map(|parts| parts.join("/"))
}

/// A permanent failure for a delivery value that cannot be a path segment.
pub(super) fn unusable(what: &str, value: &str) -> SendError {
    SendError::permanent(format!(
        "{what}: {:?} cannot be put in a URL",
        super::short(value, 80)
    ))
}

/// The host of `url` if `hosts` (`sources.slack.response_url_hosts`) allows it; else why not.
/// Hosts compare without case; a user part (`https://hooks.slack.com@evil.example/`) does
/// not fool it, since the host is read as a URL parser reads it.
pub fn response_url_host(url: &str, hosts: &[String]) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "not a URL".to_string())?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(format!("scheme {} is not http(s)", parsed.scheme()));
    }
    let host = parsed
        .host_str()
        .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        .ok_or_else(|| "no host".to_string())?;
    if hosts
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(&host))
    {
        Ok(host)
    } else {
        Err(format!(
            "host {host} is not in sources.slack.response_url_hosts"
        ))
    }
}

/// A reqwest error without its URL (a Slack `response_url` is a credential): what kind of
/// failure, and the innermost cause, which names no URL (`invalid peer certificate:
/// UnknownIssuer`, `Connection refused`).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(deeper) = cause.and_then(std::error::Error::source) {
        cause = Some(deeper);
    }
    match cause {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_string(),
    }
}

/// Slack's message payload: the text as a fallback, a section in mrkdwn and, for a job,
/// Cancel and Retry buttons as they fit, or a button per choice of the question it asks.
pub fn slack_payload(message: &Message) -> Value {
    let text = super::short(&message.mrkdwn(), SLACK_SECTION_MAX);
    let mut blocks = vec![json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})];
    if let Some(id) = &message.job_id {
        let mut buttons = Vec::new();
        if message.can_cancel {
            buttons.push(json!({"type": "button", "action_id": "cancel", "value": id,
                "style": "danger", "text": {"type": "plain_text", "text": "Cancel"}}));
        }
        if message.can_retry {
            buttons.push(json!({"type": "button", "action_id": "retry", "value": id,
                "text": {"type": "plain_text", "text": "Retry"}}));
        }
        // A choice's button carries its place, not its text: the click answers with the
        // open question's own choice, and names the question, so it never answers a later one.
        if let Some(question) = &message.question {
            for (i, choice) in question.choices.iter().enumerate() {
                buttons.push(json!({"type": "button", "action_id": format!("answer:{i}"),
                    "value": format!("{id}:{}:{i}", question.id),
                    "text": {"type": "plain_text", "text": super::short(choice, 75)}}));
            }
        }
        if !buttons.is_empty() {
            blocks.push(json!({"type": "actions", "elements": buttons}));
        }
    }
    // The fallback text (notifications, old clients) is mrkdwn too, so it is escaped as well.
    let fallback = super::neutralise::slack_text(&super::short(&message.headline, 300));
    json!({"text": fallback, "blocks": blocks})
}

/// Posts through a slash command's or button's `response_url`, if its host is one of
/// `sources.slack.response_url_hosts`; one elsewhere is not called (a permanent failure,
/// logged with the host, never the URL, which is a credential).
pub async fn slack_response_url(
    http: &reqwest::Client,
    sources: &SourcesSettings,
    response_url: &str,
    message: &Message,
) -> Result<(), SendError> {
    if let Err(why) = response_url_host(response_url, &sources.slack.response_url_hosts) {
        warn!(reason = %why, "a response_url was not called");
        return Err(SendError::permanent(format!("slack response_url: {why}")));
    }
    let mut payload = slack_payload(message);
    payload["response_type"] = json!(if message.ephemeral {
        "ephemeral"
    } else {
        "in_channel"
    });
    payload["replace_original"] = json!(false);
    send("slack response_url", http.post(response_url).json(&payload))
        .await
        .map(|_| ())
}

/// Posts with `chat.postMessage` (in the thread, when there is one).
pub async fn slack_post_message(
    http: &reqwest::Client,
    sources: &SourcesSettings,
    channel: &str,
    thread_ts: Option<&str>,
    message: &Message,
) -> Result<(), SendError> {
    let token = sources.slack.bot_token.expose_secret();
    if token.is_empty() {
        return Err(SendError::permanent(
            "slack: no bot token (sources.slack.bot_token) to post with",
        ));
    }
    let mut payload = slack_payload(message);
    payload["channel"] = json!(channel);
    if let Some(ts) = thread_ts {
        payload["thread_ts"] = json!(ts);
    }
    let url = format!(
        "{}/chat.postMessage",
        sources.slack.api_base_url.trim_end_matches('/')
    );
    let reply = send(
        "slack chat.postMessage",
        http.post(url).bearer_auth(token).json(&payload),
    )
    .await?;
    // The Web API answers 200 with {"ok": false, "error": ...} for most failures.
    if reply.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(());
    }
    let error = reply
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("no ok in the reply");
    let message = format!("slack chat.postMessage: {error}");
    if matches!(
        error,
        "ratelimited"
            | "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout"
    ) {
        Err(SendError::retryable(message))
    } else {
        Err(SendError::permanent(message))
    }
}

/// Comments on a GitHub issue.
pub async fn github_comment(
    http: &reqwest::Client,
    sources: &SourcesSettings,
    repo: &str,
    issue: u64,
    message: &Message,
) -> Result<(), SendError> {
    let token = sources.github.token.expose_secret();
    if token.is_empty() {
        return Err(SendError::permanent(
            "github: no token (sources.github.token) to comment with",
        ));
    }
    let path = segments(repo)
        .filter(|_| repo.split('/').count() == 2)
        .ok_or_else(|| unusable("github comment", repo))?;
    let url = format!(
        "{}/repos/{path}/issues/{issue}/comments",
        sources.github.api_base_url.trim_end_matches('/')
    );
    let request = http
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
        .json(&json!({"body": message.markdown()}));
    send("github comment", request).await.map(|_| ())
}

/// Adds a note to a GitLab issue.
pub async fn gitlab_note(
    http: &reqwest::Client,
    sources: &SourcesSettings,
    project: &str,
    issue: u64,
    message: &Message,
) -> Result<(), SendError> {
    let token = sources.gitlab.token.expose_secret();
    if token.is_empty() {
        return Err(SendError::permanent(
            "gitlab: no token (sources.gitlab.token) to comment with",
        ));
    }
    // The project's path is one segment (`acme%2Fshop`), as GitLab takes it in place of the id.
    let encoded = segment(project).ok_or_else(|| unusable("gitlab note", project))?;
    let url = format!(
        "{}/projects/{encoded}/issues/{issue}/notes",
        sources.gitlab.api_base_url.trim_end_matches('/')
    );
    let request = http
        .post(url)
        .header("private-token", token)
        .json(&json!({"body": message.markdown()}));
    send("gitlab note", request).await.map(|_| ())
}

/// Comments on a Jira issue (REST v2, wiki markup, basic auth with the API token).
pub async fn jira_comment(
    http: &reqwest::Client,
    sources: &SourcesSettings,
    issue: &str,
    message: &Message,
) -> Result<(), SendError> {
    let jira = &sources.jira;
    let token = jira.api_token.expose_secret();
    if jira.email.is_empty() || token.is_empty() || jira.base_url.is_empty() {
        return Err(SendError::permanent(
            "jira: no base_url, email and api_token to comment with",
        ));
    }
    let key = segment(issue).ok_or_else(|| unusable("jira comment", issue))?;
    let url = format!(
        "{}/rest/api/2/issue/{key}/comment",
        jira.base_url.trim_end_matches('/')
    );
    let request = http
        .post(url)
        .basic_auth(&jira.email, Some(token))
        .json(&json!({"body": message.jira_wiki()}));
    send("jira comment", request).await.map(|_| ())
}

/// The HTTP client of the notifier.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("agentsmith/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client's settings are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_keep_separators_and_queries_inside() {
        assert_eq!(segment("PAY-12").as_deref(), Some("PAY-12"));
        assert_eq!(
            segment("PAY-1/../x?y=1#z").as_deref(),
            Some("PAY-1%2F..%2Fx%3Fy%3D1%23z")
        );
        assert_eq!(segment("acme/shop").as_deref(), Some("acme%2Fshop"));
        assert_eq!(segment("é").as_deref(), Some("%C3%A9"));
        for unusable in ["", ".", "..", "..."] {
            assert_eq!(segment(unusable), None, "{unusable:?}");
        }
        assert_eq!(segments("acme/shop").as_deref(), Some("acme/shop"));
        assert_eq!(segments("acme/../x"), None);
    }

    #[test]
    fn response_urls_are_allowed_by_host_only() {
        let hosts = vec!["hooks.slack.com".to_string()];
        let allowed = |url: &str| response_url_host(url, &hosts);
        assert_eq!(
            allowed("https://hooks.slack.com/commands/T1/2/x").as_deref(),
            Ok("hooks.slack.com")
        );
        assert!(allowed("https://HOOKS.slack.com./actions/1").is_ok());
        for refused in [
            "https://hooks.slack.com@evil.example/commands/1",
            "https://hooks.slack.com.evil.example/commands/1",
            "http://169.254.169.254/latest/meta-data",
            "ftp://hooks.slack.com/x",
            "not a url",
        ] {
            assert!(allowed(refused).is_err(), "{refused}");
        }
    }
}
