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

/// The project's `compare_url` with the branch and its base filled in (each percent-encoded
/// as a path segment keeps a `/` of a branch name), when it has one.
fn compare_link(project: &ProjectSettings, branch: &str, base: &str) -> Option<String> {
    let template = &project.checkout.pull_request.compare_url;
    if template.is_empty() {
        return None;
    }
    let part = |name: &str| {
        name.split('/')
            .map(|p| segment(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("/")
    };
    Some(
        template
            .replace("{branch}", &part(branch))
            .replace("{base}", &part(base)),
    )
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

fn text_of(
    settings: &Settings,
    job: &Job,
    summary: Option<&str>,
    notes: Option<&str>,
    fallback: &str,
) -> Text {
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
    if let Some(notes) = notes.map(str::trim).filter(|n| !n.is_empty()) {
        body.push_str(&format!(
            "\n\n### Notes from the agent\n\n{}",
            neutralise::markdown_text(notes)
        ));
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
        compare_url,
        notes,
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
        *compare_url = compare_link(project, branch, base_branch);
        return Ok(());
    };
    let text = text_of(settings, job, summary, notes.as_deref(), fallback_title);
    let opened = match host {
        Host::Github { repo } => {
            github(http, settings, project, repo, branch, base_branch, &text).await
        }
        Host::Gitlab { project: path } => {
            gitlab(http, settings, project, path, branch, base_branch, &text).await
        }
    };
    match opened {
        Ok(pr) => *pull_request = Some(Box::new(pr)),
        Err(e) if e.retryable => return Err(e),
        Err(e) => *pull_request_error = Some(e.message),
    }
    Ok(())
}

/// How one provider's API finds, updates and opens the request of a branch.
struct Api<'a> {
    /// `github` or `gitlab`, in the [`PullRequest`] and in error messages.
    provider: &'static str,
    /// The collection: listed with `open_query`, opened with a POST.
    collection: String,
    /// The query that lists the open requests of the branch.
    open_query: Vec<(&'static str, String)>,
    /// The field of a request's number, and of its page.
    number: &'static str,
    page: &'static str,
    /// How an open one is updated (`PATCH` on GitHub, `PUT` on GitLab), with what.
    update: (reqwest::Method, Value),
    /// What opens one.
    create: Value,
    /// Adds the provider's credentials to a request.
    auth: &'a (dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Sync),
}

impl Api<'_> {
    /// The open request of the branch updated, or a new one opened: the provider's answer,
    /// its number and whether it was opened now.
    async fn open_or_update(
        &self,
        http: &reqwest::Client,
    ) -> Result<(Value, u64, bool), SendError> {
        let provider = self.provider;
        let request = |method, url: String| (self.auth)(http.request(method, url));
        let listed = request(reqwest::Method::GET, self.collection.clone()).query(&self.open_query);
        let open = send(&format!("{provider} open requests"), listed).await?;
        let existing = open
            .as_array()
            .and_then(|all| all.first())
            .and_then(|found| found[self.number].as_u64());
        let (answer, opened) = match existing {
            Some(number) => {
                let (method, body) = &self.update;
                let url = format!("{}/{number}", self.collection);
                let updated = request(method.clone(), url).json(body);
                (
                    send(&format!("{provider} request update"), updated).await?,
                    false,
                )
            }
            None => {
                let created =
                    request(reqwest::Method::POST, self.collection.clone()).json(&self.create);
                (send(&format!("{provider} request"), created).await?, true)
            }
        };
        let number = answer[self.number].as_u64().ok_or_else(|| {
            SendError::permanent(format!("{provider}: no {} in the answer", self.number))
        })?;
        Ok((answer, number, opened))
    }

    fn pull_request(
        &self,
        answer: &Value,
        number: u64,
        opened: bool,
    ) -> Result<PullRequest, SendError> {
        Ok(PullRequest {
            provider: self.provider.into(),
            number,
            url: url_of(answer, self.page)?,
            opened,
        })
    }
}

/// The provider's token, or why there is none.
fn token_of<'a>(token: &'a secrecy::SecretString, key: &str) -> Result<&'a str, SendError> {
    let token = token.expose_secret();
    if token.is_empty() {
        return Err(SendError::permanent(format!(
            "no token ({key}) to open the request with"
        )));
    }
    Ok(token)
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
    let token = token_of(&github.token, "sources.github.token")?;
    let path = segments(repo)
        .filter(|_| repo.split('/').count() == 2)
        .ok_or_else(|| unusable("github pull request", repo))?;
    let owner = repo.split('/').next().unwrap_or_default();
    let repo_api = format!("{}/repos/{path}", github.api_base_url.trim_end_matches('/'));
    let pr = &project.checkout.pull_request;
    let auth = |request: reqwest::RequestBuilder| {
        request
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
    };
    let api = Api {
        provider: "github",
        collection: format!("{repo_api}/pulls"),
        open_query: vec![
            ("head", format!("{owner}:{branch}")),
            ("state", "open".into()),
        ],
        number: "number",
        page: "html_url",
        update: (
            reqwest::Method::PATCH,
            json!({"title": text.title, "body": text.body}),
        ),
        create: json!({
            "title": text.title,
            "body": text.body,
            "head": branch,
            "base": base,
            "draft": pr.draft,
        }),
        auth: &auth,
    };
    let (answer, number, opened) = api.open_or_update(http).await?;
    // Labels and reviewers are asked for once, when it is opened.
    let extras = [
        (
            "labels",
            format!("{repo_api}/issues/{number}/labels"),
            &pr.labels,
        ),
        (
            "reviewers",
            format!("{repo_api}/pulls/{number}/requested_reviewers"),
            &pr.reviewers,
        ),
    ];
    for (what, url, values) in extras {
        if opened && !values.is_empty() {
            let request = auth(http.post(url)).json(&json!({ what: values }));
            send(&format!("github {what}"), request).await?;
        }
    }
    api.pull_request(&answer, number, opened)
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
    let token = token_of(&gitlab.token, "sources.gitlab.token")?;
    let encoded = segment(path).ok_or_else(|| unusable("gitlab merge request", path))?;
    let pr = &project.checkout.pull_request;
    // GitLab marks a draft by its title.
    let title = if pr.draft {
        format!("Draft: {}", text.title)
    } else {
        text.title.clone()
    };
    let mut create = json!({
        "source_branch": branch,
        "target_branch": base,
        "title": title,
        "description": text.body,
    });
    if !pr.labels.is_empty() {
        create["labels"] = Value::from(pr.labels.join(","));
    }
    let auth = |request: reqwest::RequestBuilder| request.header("private-token", token);
    let api = Api {
        provider: "gitlab",
        collection: format!(
            "{}/projects/{encoded}/merge_requests",
            gitlab.api_base_url.trim_end_matches('/')
        ),
        open_query: vec![("source_branch", branch.into()), ("state", "opened".into())],
        number: "iid",
        page: "web_url",
        update: (
            reqwest::Method::PUT,
            json!({"title": text.title, "description": text.body}),
        ),
        create,
        auth: &auth,
    };
    let (answer, number, opened) = api.open_or_update(http).await?;
    api.pull_request(&answer, number, opened)
}

/// The request's page, which must be an absolute http(s) URL.
fn url_of(answer: &Value, field: &str) -> Result<String, SendError> {
    answer[field]
        .as_str()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .map(str::to_string)
        .ok_or_else(|| SendError::permanent(format!("no {field} in the provider's answer")))
}
