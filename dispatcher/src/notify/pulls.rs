//! The pull request (GitHub) or merge request (GitLab) of a job's pushed branch: opened as a
//! draft by default, or the one already open for the branch updated, never a second one.
//!
//! Called when a runner reports its push (`api/runner.rs`), before the final event is
//! recorded, so the job's `change` names the request. A failure worth retrying answers the
//! runner 503 (it sends its final batch again, and finding the request already open makes
//! that safe); any other is recorded on the change, and the branch stays pushed.

use contract::{Change, PullRequest};
use queue::Job;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::neutralise::{self, Link};
use super::providers::{segment, segments, send, unusable, SendError};
use crate::settings::{ProjectSettings, Settings};

/// Where a project's pull requests go.
enum Host<'a> {
    Github { repo: &'a str },
    Gitlab { project: &'a str },
}

/// The project's host for pull requests: the configured one, else its first GitHub
/// repository, else its first GitLab project; none when pull requests are off or it has
/// neither.
fn host_of(project: &ProjectSettings) -> Option<Host<'_>> {
    let pr = &project.checkout.pull_request;
    if !pr.enabled {
        return None;
    }
    if let Some(repo) = first(&pr.github_repo, &project.github_repos) {
        return Some(Host::Github { repo });
    }
    first(&pr.gitlab_project, &project.gitlab_projects).map(|project| Host::Gitlab { project })
}

/// `explicit` when set, else the first of `listed`.
fn first<'a>(explicit: &'a str, listed: &'a [String]) -> Option<&'a str> {
    Some(explicit)
        .filter(|e| !e.is_empty())
        .or_else(|| listed.first().map(String::as_str))
}

/// What the request says: its title and its markdown body.
struct Text {
    title: String,
    body: String,
}

fn text_of(settings: &Settings, job: &Job, summary: Option<&str>, fallback: &str) -> Text {
    let summary = summary.map(str::trim).filter(|s| !s.is_empty());
    let first_line = summary.and_then(|s| s.lines().next()).map(str::trim);
    let title = first_line
        .or(job.title.as_deref())
        .unwrap_or(fallback)
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect::<String>();
    let mut body = format!(
        "**agentsmith** opened this for job `{}`{}.",
        job.id,
        job.ticket
            .as_deref()
            .map(|t| format!(" ({})", neutralise::markdown_text(t)))
            .unwrap_or_default()
    );
    if let Some(summary) = summary {
        body.push_str(&format!(
            "\n\n{}",
            neutralise::markdown_text(&neutralise::summary(summary))
        ));
    }
    let mut links = Vec::new();
    if let Some(url) = job.url.as_deref() {
        links.extend(Link::new(
            Some(&format!("ticket {}", job.ticket.as_deref().unwrap_or(""))),
            url,
        ));
    }
    let base = settings.server.public_url.trim_end_matches('/');
    if !base.is_empty() {
        links.extend(Link::new(
            Some(&format!("job {}", job.id)),
            &format!("{base}/#/jobs/{}", job.id),
        ));
    }
    for link in &links {
        body.push_str(&format!("\n- {}", neutralise::markdown_link(link)));
    }
    Text { title, body }
}

/// Opens or updates the request for `change`'s branch, when the job's project has a host for
/// it; fills in `change`'s `pull_request` (or `pull_request_error`). `Err` only for a failure
/// worth retrying.
pub async fn open_for(
    http: &reqwest::Client,
    settings: &Settings,
    job: &Job,
    change: &mut Change,
    summary: Option<&str>,
    fallback_title: &str,
) -> Result<(), SendError> {
    let Change::Pushed {
        branch,
        base_branch,
        pull_request,
        pull_request_error,
        ..
    } = change
    else {
        return Ok(());
    };
    let Some(project) = job
        .project
        .as_deref()
        .and_then(|p| settings.projects.get(p))
    else {
        return Ok(());
    };
    let Some(host) = host_of(project) else {
        return Ok(());
    };
    let text = text_of(settings, job, summary, fallback_title);
    let opened = match host {
        Host::Github { repo } => {
            github(http, settings, project, repo, branch, base_branch, &text).await
        }
        Host::Gitlab { project: path } => {
            gitlab(http, settings, project, path, branch, base_branch, &text).await
        }
    };
    match opened {
        Ok(pr) => *pull_request = Some(pr),
        Err(e) if e.retryable => return Err(e),
        Err(e) => *pull_request_error = Some(e.message),
    }
    Ok(())
}

async fn github(
    http: &reqwest::Client,
    settings: &Settings,
    project: &ProjectSettings,
    repo: &str,
    branch: &str,
    base: &str,
    text: &Text,
) -> Result<PullRequest, SendError> {
    let github = &settings.sources.github;
    let token = github.token.expose_secret();
    if token.is_empty() {
        return Err(SendError::permanent(
            "github: no token (sources.github.token) to open the pull request with",
        ));
    }
    let path = segments(repo)
        .filter(|_| repo.split('/').count() == 2)
        .ok_or_else(|| unusable("github pull request", repo))?;
    let owner = repo.split('/').next().unwrap_or_default();
    let api = format!("{}/repos/{path}", github.api_base_url.trim_end_matches('/'));
    let request = |method: reqwest::Method, url: String| {
        http.request(method, url)
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
    };
    let open = send(
        "github pull requests",
        request(reqwest::Method::GET, format!("{api}/pulls")).query(&[
            ("head", format!("{owner}:{branch}").as_str()),
            ("state", "open"),
        ]),
    )
    .await?;
    let existing = open
        .as_array()
        .and_then(|prs| prs.first())
        .and_then(|pr| pr["number"].as_u64());
    let settings = &project.checkout.pull_request;
    let (pr, opened) = match existing {
        Some(number) => {
            let body = json!({"title": text.title, "body": text.body});
            let pr = send(
                "github pull request update",
                request(reqwest::Method::PATCH, format!("{api}/pulls/{number}")).json(&body),
            )
            .await?;
            (pr, false)
        }
        None => {
            let body = json!({
                "title": text.title,
                "body": text.body,
                "head": branch,
                "base": base,
                "draft": settings.draft,
            });
            let pr = send(
                "github pull request",
                request(reqwest::Method::POST, format!("{api}/pulls")).json(&body),
            )
            .await?;
            (pr, true)
        }
    };
    let number = pr["number"]
        .as_u64()
        .ok_or_else(|| SendError::permanent("github pull request: no number in the answer"))?;
    if opened && !settings.labels.is_empty() {
        send(
            "github labels",
            request(
                reqwest::Method::POST,
                format!("{api}/issues/{number}/labels"),
            )
            .json(&json!({"labels": settings.labels})),
        )
        .await?;
    }
    if opened && !settings.reviewers.is_empty() {
        send(
            "github reviewers",
            request(
                reqwest::Method::POST,
                format!("{api}/pulls/{number}/requested_reviewers"),
            )
            .json(&json!({"reviewers": settings.reviewers})),
        )
        .await?;
    }
    Ok(PullRequest {
        provider: "github".into(),
        number,
        url: url_of(&pr, "html_url")?,
        opened,
    })
}

async fn gitlab(
    http: &reqwest::Client,
    settings: &Settings,
    project: &ProjectSettings,
    path: &str,
    branch: &str,
    base: &str,
    text: &Text,
) -> Result<PullRequest, SendError> {
    let gitlab = &settings.sources.gitlab;
    let token = gitlab.token.expose_secret();
    if token.is_empty() {
        return Err(SendError::permanent(
            "gitlab: no token (sources.gitlab.token) to open the merge request with",
        ));
    }
    let encoded = segment(path).ok_or_else(|| unusable("gitlab merge request", path))?;
    let api = format!(
        "{}/projects/{encoded}/merge_requests",
        gitlab.api_base_url.trim_end_matches('/')
    );
    let request = |method: reqwest::Method, url: String| {
        http.request(method, url).header("private-token", token)
    };
    let open = send(
        "gitlab merge requests",
        request(reqwest::Method::GET, api.clone())
            .query(&[("source_branch", branch), ("state", "opened")]),
    )
    .await?;
    let existing = open
        .as_array()
        .and_then(|mrs| mrs.first())
        .and_then(|mr| mr["iid"].as_u64());
    let settings = &project.checkout.pull_request;
    let (mr, opened) = match existing {
        Some(iid) => {
            let body = json!({"title": text.title, "description": text.body});
            let mr = send(
                "gitlab merge request update",
                request(reqwest::Method::PUT, format!("{api}/{iid}")).json(&body),
            )
            .await?;
            (mr, false)
        }
        None => {
            let title = if settings.draft {
                format!("Draft: {}", text.title)
            } else {
                text.title.clone()
            };
            let mut body = json!({
                "source_branch": branch,
                "target_branch": base,
                "title": title,
                "description": text.body,
            });
            if !settings.labels.is_empty() {
                body["labels"] = Value::from(settings.labels.join(","));
            }
            let mr = send(
                "gitlab merge request",
                request(reqwest::Method::POST, api.clone()).json(&body),
            )
            .await?;
            (mr, true)
        }
    };
    let number = mr["iid"]
        .as_u64()
        .ok_or_else(|| SendError::permanent("gitlab merge request: no iid in the answer"))?;
    Ok(PullRequest {
        provider: "gitlab".into(),
        number,
        url: url_of(&mr, "web_url")?,
        opened,
    })
}

/// The request's page, which must be an absolute http(s) URL.
fn url_of(answer: &Value, field: &str) -> Result<String, SendError> {
    answer[field]
        .as_str()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .map(str::to_string)
        .ok_or_else(|| SendError::permanent(format!("no {field} in the provider's answer")))
}
