//! What the providers say about someone, asked when a trigger needs it and remembered
//! briefly: a GitHub collaborator's role on a repository, a GitLab member's access level in
//! a project, a Slack user group's members, a Jira account's groups.
//!
//! An answer ("no access" too) is kept for [`CACHE_TTL`], at most [`CACHE_MAX`] of each kind,
//! so a burst of comments costs one request and a revoked permission lasts a minute at most;
//! a failure is never kept. Every question is bounded by [`LOOKUP_TIMEOUT`], since a Slack
//! command must be answered within three seconds. Keys carry the provider's base URL, so
//! dispatchers sharing a process (tests) never share answers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::{RequestBuilder, StatusCode};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::notify::providers::segment;
use crate::settings::agents::GithubPermission;
use crate::settings::{GithubSettings, GitlabSettings, JiraSettings, SlackSettings};

/// How long an answer is kept.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// How many answers of one kind are kept at most.
pub const CACHE_MAX: usize = 4096;
/// How long one question may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// A question a provider did not answer; the trigger can be neither allowed nor refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{provider}: {problem}")]
pub struct LookupError {
    /// Whom it was asked of (`github permission`).
    pub provider: &'static str,
    /// What went wrong (never a token or a URL).
    pub problem: String,
}

impl LookupError {
    fn new(provider: &'static str, problem: impl Into<String>) -> Self {
        Self {
            provider,
            problem: problem.into(),
        }
    }
}

/// Answers kept until they expire, at most [`CACHE_MAX`].
struct Cache<V> {
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Cache<V> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(expires, _)| *expires > Instant::now())
            .map(|(_, value)| value.clone())
    }

    /// Keeps `value`; when full, drops the expired answers, then the one closest to expiry.
    fn put(&self, key: String, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if entries.len() >= CACHE_MAX && !entries.contains_key(&key) {
            entries.retain(|_, (expires, _)| *expires > now);
            let oldest = entries
                .iter()
                .min_by_key(|(_, (expires, _))| *expires)
                .map(|(k, _)| k.clone());
            if let (true, Some(oldest)) = (entries.len() >= CACHE_MAX, oldest) {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (now + CACHE_TTL, value));
    }
}

/// The questions and their remembered answers.
pub struct Directory {
    http: reqwest::Client,
    github: Cache<GithubPermission>,
    gitlab: Cache<u32>,
    slack_groups: Cache<Vec<String>>,
    jira_groups: Cache<Vec<String>>,
}

impl Default for Directory {
    fn default() -> Self {
        Self::new()
    }
}

impl Directory {
    /// An empty directory with its HTTP client.
    pub fn new() -> Self {
        Self {
            http: crate::notify::providers::client(LOOKUP_TIMEOUT),
            github: Cache::new(),
            gitlab: Cache::new(),
            slack_groups: Cache::new(),
            jira_groups: Cache::new(),
        }
    }

    /// `login`'s role on `repo` (`owner/repo`): `none` when GitHub does not know them there.
    pub async fn github_permission(
        &self,
        github: &GithubSettings,
        repo: &str,
        login: &str,
    ) -> Result<GithubPermission, LookupError> {
        const WHAT: &str = "github permission";
        let base = github.api_base_url.trim_end_matches('/');
        let key = format!("{base}\n{repo}\n{login}").to_lowercase();
        if let Some(known) = self.github.get(&key) {
            return Ok(known);
        }
        let token = credential(WHAT, github.token.expose_secret(), "sources.github.token")?;
        let (owner, name) = repo
            .split_once('/')
            .ok_or_else(|| LookupError::new(WHAT, format!("{repo:?} is not owner/repo")))?;
        let url = format!(
            "{base}/repos/{}/{}/collaborators/{}/permission",
            part(WHAT, owner)?,
            part(WHAT, name)?,
            part(WHAT, login)?
        );
        let request = self
            .http
            .get(url)
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        let role = match fetch(WHAT, request).await? {
            Some(answer) => github_role(&answer),
            None => GithubPermission::None,
        };
        self.github.put(key, role);
        Ok(role)
    }

    /// The access level of user `user_id` in `project` (its path): 0 when not a member.
    pub async fn gitlab_access_level(
        &self,
        gitlab: &GitlabSettings,
        project: &str,
        user_id: &str,
    ) -> Result<u32, LookupError> {
        const WHAT: &str = "gitlab member";
        let base = gitlab.api_base_url.trim_end_matches('/');
        let key = format!("{base}\n{project}\n{user_id}").to_lowercase();
        if let Some(known) = self.gitlab.get(&key) {
            return Ok(known);
        }
        let token = credential(WHAT, gitlab.token.expose_secret(), "sources.gitlab.token")?;
        if user_id.is_empty() || !user_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(LookupError::new(WHAT, "the delivery has no user id"));
        }
        let url = format!(
            "{base}/projects/{}/members/all/{user_id}",
            part(WHAT, project)?
        );
        let request = self.http.get(url).header("private-token", token);
        let level = match fetch(WHAT, request).await? {
            // A blocked member keeps their level on paper, and nothing else.
            Some(member) if member.get("state").and_then(Value::as_str) == Some("blocked") => 0,
            Some(member) => member
                .get("access_level")
                .and_then(Value::as_u64)
                .and_then(|level| u32::try_from(level).ok())
                .ok_or_else(|| LookupError::new(WHAT, "the answer has no access_level"))?,
            None => 0,
        };
        self.gitlab.put(key, level);
        Ok(level)
    }

    /// The ids of the members of Slack user group `group`.
    pub async fn slack_group_members(
        &self,
        slack: &SlackSettings,
        group: &str,
    ) -> Result<Vec<String>, LookupError> {
        const WHAT: &str = "slack usergroups.users.list";
        let base = slack.api_base_url.trim_end_matches('/');
        let key = format!("{base}\n{group}");
        if let Some(known) = self.slack_groups.get(&key) {
            return Ok(known);
        }
        let token = credential(
            WHAT,
            slack.bot_token.expose_secret(),
            "sources.slack.bot_token",
        )?;
        let request = self
            .http
            .get(format!("{base}/usergroups.users.list"))
            .query(&[("usergroup", group)])
            .bearer_auth(token);
        let answer = fetch(WHAT, request)
            .await?
            .ok_or_else(|| LookupError::new(WHAT, "HTTP 404"))?;
        // The Web API answers 200 with {"ok": false, "error": ...} for its failures.
        if answer.get("ok").and_then(Value::as_bool) != Some(true) {
            let error = answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no ok");
            return Err(LookupError::new(WHAT, error));
        }
        let members = strings(answer.get("users"));
        self.slack_groups.put(key, members.clone());
        Ok(members)
    }

    /// The names and ids of the groups Jira account `account_id` is in.
    pub async fn jira_groups(
        &self,
        jira: &JiraSettings,
        account_id: &str,
    ) -> Result<Vec<String>, LookupError> {
        const WHAT: &str = "jira user groups";
        let base = jira.base_url.trim_end_matches('/');
        let key = format!("{base}\n{account_id}");
        if let Some(known) = self.jira_groups.get(&key) {
            return Ok(known);
        }
        let token = credential(
            WHAT,
            jira.api_token.expose_secret(),
            "sources.jira.api_token",
        )?;
        let request = self
            .http
            .get(format!("{base}/rest/api/2/user/groups"))
            .query(&[("accountId", account_id)])
            .basic_auth(&jira.email, Some(token));
        let groups: Vec<String> = match fetch(WHAT, request).await? {
            Some(Value::Array(groups)) => groups
                .iter()
                .flat_map(|g| [g.get("name"), g.get("groupId")])
                .filter_map(|v| v.and_then(Value::as_str))
                .map(str::to_string)
                .collect(),
            Some(_) => return Err(LookupError::new(WHAT, "the answer is not a list")),
            None => Vec::new(),
        };
        self.jira_groups.put(key, groups.clone());
        Ok(groups)
    }
}

/// The credential, or the error naming the setting that should hold it.
fn credential<'a>(
    what: &'static str,
    secret: &'a str,
    setting: &str,
) -> Result<&'a str, LookupError> {
    if secret.is_empty() {
        Err(LookupError::new(what, format!("no {setting} to ask with")))
    } else {
        Ok(secret)
    }
}

/// A path segment, or the error saying it cannot be one.
fn part(what: &'static str, value: &str) -> Result<String, LookupError> {
    segment(value)
        .ok_or_else(|| LookupError::new(what, format!("{value:?} cannot be put in a URL")))
}

/// Sends a question: the JSON answer, `None` for a 404 (no such member), an error for
/// anything else.
async fn fetch(what: &'static str, request: RequestBuilder) -> Result<Option<Value>, LookupError> {
    let response = request
        .send()
        .await
        .map_err(|e| LookupError::new(what, crate::notify::providers::without_url(&e)))?;
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(LookupError::new(what, format!("HTTP {status}")));
    }
    let text = response
        .text()
        .await
        .map_err(|_| LookupError::new(what, "the answer could not be read"))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|_| LookupError::new(what, "the answer is not JSON"))
}

/// The strings of a JSON array.
fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A collaborator's role from GitHub's answer: its `role_name` when it is one of the five
/// built-in roles, else the highest of the user's `permissions` flags (a custom role's
/// base), else the legacy `permission` (admin, write, read, none).
pub fn github_role(answer: &Value) -> GithubPermission {
    let named = |name: Option<&str>| match name? {
        "admin" => Some(GithubPermission::Admin),
        "maintain" => Some(GithubPermission::Maintain),
        "write" => Some(GithubPermission::Write),
        "triage" => Some(GithubPermission::Triage),
        "read" => Some(GithubPermission::Read),
        "none" => Some(GithubPermission::None),
        _ => None,
    };
    let flags = answer
        .pointer("/user/permissions")
        .and_then(Value::as_object)
        .map(|flags| {
            let on = |k: &str| flags.get(k).and_then(Value::as_bool) == Some(true);
            [
                ("admin", GithubPermission::Admin),
                ("maintain", GithubPermission::Maintain),
                ("push", GithubPermission::Write),
                ("triage", GithubPermission::Triage),
                ("pull", GithubPermission::Read),
            ]
            .into_iter()
            .find(|(flag, _)| on(flag))
            .map_or(GithubPermission::None, |(_, role)| role)
        });
    named(answer.get("role_name").and_then(Value::as_str))
        .or(flags)
        .or_else(|| named(answer.get("permission").and_then(Value::as_str)))
        .unwrap_or(GithubPermission::None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_github_role_is_read_from_the_role_name_then_the_flags_then_the_legacy_field() {
        assert_eq!(
            github_role(&json!({"permission": "read", "role_name": "triage"})),
            GithubPermission::Triage
        );
        let custom = json!({"permission": "write", "role_name": "security-manager",
            "user": {"permissions": {"pull": true, "triage": true, "push": true,
                                     "maintain": true, "admin": false}}});
        assert_eq!(github_role(&custom), GithubPermission::Maintain);
        assert_eq!(
            github_role(&json!({"permission": "admin"})),
            GithubPermission::Admin
        );
        assert_eq!(github_role(&json!({})), GithubPermission::None);
    }

    #[test]
    fn the_cache_forgets_at_its_bound_and_keeps_the_newest() {
        let cache = Cache::new();
        for i in 0..CACHE_MAX + 10 {
            cache.put(format!("k{i}"), i);
        }
        let kept = cache.entries.lock().unwrap().len();
        assert_eq!(kept, CACHE_MAX);
        assert_eq!(
            cache.get(&format!("k{}", CACHE_MAX + 9)),
            Some(CACHE_MAX + 9)
        );
    }
}
