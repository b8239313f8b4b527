//! A fake of the providers' APIs for the webhook tests, all on one local port: the reply
//! APIs (Slack's `chat.postMessage` and `response_url`s under `/slack/response/`, GitHub
//! issue comments, GitLab issue notes, Jira issue comments) and the ones that say who
//! someone is (a GitHub collaborator's permission, a GitLab member's access level, a Slack
//! user group's members, a Jira user's groups), answering what the test set with
//! [`FakeApi::grant_github`], [`FakeApi::grant_gitlab`], [`FakeApi::slack_user_group`] and
//! [`FakeApi::jira_groups`]. It also plays GitHub's pull request API (list by head, open,
//! update, label, request reviewers) and GitLab's merge request API (list by source
//! branch, open, update), keeping what was opened so a test can check that a job opens one
//! or updates the one already open for its branch ([`FakeApi::pull_requests`],
//! [`FakeApi::merge_requests`]). It records every request and can refuse some with a 500,
//! as a provider having an outage would.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::wait_until;

/// Headers that carry credentials: recorded, never shown in a failure message.
const CREDENTIALS: [&str; 2] = ["authorization", "private-token"];

/// One request the fake received.
#[derive(Clone)]
pub struct Recorded {
    /// The path as sent, still percent-encoded (`/projects/acme%2Fshop/issues/4/notes`).
    pub path: String,
    /// The query string as sent (`usergroup=S0DEVS`), empty when there is none.
    pub query: String,
    /// The headers, by lower-case name.
    headers: BTreeMap<String, String>,
    /// The JSON body (`Null` if it was not JSON).
    pub body: Value,
    /// The status the fake answered with.
    pub status: u16,
}

impl Recorded {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Whether the fake took it (a 2xx).
    pub fn delivered(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The reply's text as the provider would show it: a comment's or note's `body`, or a
    /// Slack message's section (which has the details) else its `text`.
    pub fn text(&self) -> String {
        let body = &self.body;
        body.get("body")
            .or_else(|| body.pointer("/blocks/0/text/text"))
            .or_else(|| body.get("text"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }
}

/// Shows credential headers by name only, so a failing test prints no token.
impl fmt::Debug for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let shown = if CREDENTIALS.contains(&k.as_str()) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("Recorded")
            .field("path", &self.path)
            .field("query", &self.query)
            .field("status", &self.status)
            .field("headers", &headers)
            .field("body", &self.body)
            .finish()
    }
}

/// The requests still to refuse.
#[derive(Default)]
struct Outage {
    /// Refuse requests whose path or body contains this ("" for all)...
    matching: String,
    /// ...this many more times.
    left: usize,
}

/// Who people are, as the providers' APIs would say.
#[derive(Default)]
struct People {
    /// GitHub: (`owner/repo`, login) to role (`read` … `admin`, or `none`).
    github: HashMap<(String, String), String>,
    /// GitLab: (project path, user id) to access level.
    gitlab: HashMap<(String, u64), u32>,
    /// Slack: user group id to its members' ids.
    slack_groups: HashMap<String, Vec<String>>,
    /// Jira: account id to its groups' names.
    jira_groups: HashMap<String, Vec<String>>,
}

/// A pull request opened on the fake GitHub; every one stays open.
struct PullRequest {
    number: u64,
    title: String,
    body: String,
    /// The head branch, without the `owner:` GitHub lets a client put before it.
    head: String,
    base: String,
    draft: bool,
    labels: Vec<String>,
    /// The requested reviewers' logins.
    reviewers: Vec<String>,
}

/// A merge request opened on the fake GitLab; every one stays open.
struct MergeRequest {
    iid: u64,
    /// A draft is a title starting with `Draft: `, so retitling one can make it ready.
    title: String,
    description: String,
    source_branch: String,
    target_branch: String,
    labels: Vec<String>,
    reviewer_ids: Vec<u64>,
}

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    outage: Outage,
    people: People,
    /// GitHub's pull requests by `owner/repo`, in the order they were opened.
    pulls: HashMap<String, Vec<PullRequest>>,
    /// GitLab's merge requests by project path, in the order they were opened.
    merges: HashMap<String, Vec<MergeRequest>>,
}

type Shared = Arc<Mutex<Inner>>;

/// A running fake provider API; stops when dropped.
pub struct FakeApi {
    /// `http://127.0.0.1:PORT`: the base URL of every provider.
    pub url: String,
    inner: Shared,
    server: JoinHandle<()>,
}

impl FakeApi {
    /// Starts the fake on a free local port.
    pub async fn start() -> Self {
        let inner = Shared::default();
        let router = Router::new()
            .route("/chat.postMessage", post(known))
            .route("/slack/response/{n}", post(known))
            .route(
                "/repos/{owner}/{repo}/issues/{number}/comments",
                post(known),
            )
            .route("/projects/{id}/issues/{iid}/notes", post(known))
            .route("/rest/api/2/issue/{key}/comment", post(known))
            .route(
                "/repos/{owner}/{repo}/collaborators/{login}/permission",
                get(github_permission),
            )
            .route("/projects/{id}/members/all/{user}", get(gitlab_member))
            .route("/usergroups.users.list", get(slack_group_members))
            .route("/rest/api/2/user/groups", get(jira_user_groups))
            .route(
                "/repos/{owner}/{repo}/pulls",
                get(github_list_pulls).post(github_open_pull),
            )
            .route(
                "/repos/{owner}/{repo}/pulls/{number}",
                patch(github_update_pull),
            )
            .route(
                "/repos/{owner}/{repo}/issues/{number}/labels",
                post(github_add_labels),
            )
            .route(
                "/repos/{owner}/{repo}/pulls/{number}/requested_reviewers",
                post(github_request_reviewers),
            )
            .route(
                "/projects/{id}/merge_requests",
                get(gitlab_list_merges).post(gitlab_open_merge),
            )
            .route(
                "/projects/{id}/merge_requests/{iid}",
                put(gitlab_update_merge),
            )
            .fallback(unknown)
            .with_state(inner.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port is free");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("the fake API serves");
        });
        Self { url, inner, server }
    }

    /// Answers the next `times` requests whose path or body contains `matching` with a 500.
    pub fn fail_next(&self, times: usize, matching: &str) {
        self.inner.lock().unwrap().outage = Outage {
            matching: matching.to_string(),
            left: times,
        };
    }

    /// GitHub will say that `login` has `role` (`none`, `read`, `triage`, `write`,
    /// `maintain`, `admin`) on `repo` (`owner/repo`); anyone else is a 404, as GitHub
    /// answers for a login it does not know.
    pub fn grant_github(&self, repo: &str, login: &str, role: &str) {
        self.inner
            .lock()
            .unwrap()
            .people
            .github
            .insert((repo.to_string(), login.to_string()), role.to_string());
    }

    /// GitLab will say that user `user_id` is a member of `project` (its path) with
    /// `access_level`; anyone else is a 404 (not a member).
    pub fn grant_gitlab(&self, project: &str, user_id: u64, access_level: u32) {
        self.inner
            .lock()
            .unwrap()
            .people
            .gitlab
            .insert((project.to_string(), user_id), access_level);
    }

    /// Slack will say that user group `group` has these members; any other group is
    /// `no_such_subteam`.
    pub fn slack_user_group(&self, group: &str, members: &[&str]) {
        self.inner.lock().unwrap().people.slack_groups.insert(
            group.to_string(),
            members.iter().map(|m| m.to_string()).collect(),
        );
    }

    /// Jira will say that account `account_id` is in these groups; anyone else in none.
    pub fn jira_groups(&self, account_id: &str, groups: &[&str]) {
        self.inner.lock().unwrap().people.jira_groups.insert(
            account_id.to_string(),
            groups.iter().map(|g| g.to_string()).collect(),
        );
    }

    /// The pull requests opened on GitHub's `repo` (`owner/repo`), oldest first: each as
    /// the API shows it, plus its `labels` (names) and requested `reviewers` (logins).
    pub fn pull_requests(&self, repo: &str) -> Vec<Value> {
        let inner = self.inner.lock().unwrap();
        let pulls = inner.pulls.get(repo).into_iter().flatten();
        pulls
            .map(|pull| {
                let mut stored = pull.json(repo);
                stored["labels"] = json!(pull.labels);
                stored["reviewers"] = json!(pull.reviewers);
                stored
            })
            .collect()
    }

    /// The merge requests opened on GitLab's `project` (its path, `group/project`), oldest
    /// first: each as the API shows it (`labels` included), plus its `reviewers` (the
    /// `reviewer_ids` sent).
    pub fn merge_requests(&self, project: &str) -> Vec<Value> {
        let inner = self.inner.lock().unwrap();
        let merges = inner.merges.get(project).into_iter().flatten();
        merges
            .map(|merge| {
                let mut stored = merge.json(project);
                stored["reviewers"] = json!(merge.reviewer_ids);
                stored
            })
            .collect()
    }

    /// The requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// The requests the fake took (a 2xx).
    pub fn delivered(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::delivered)
            .collect()
    }

    /// How many requests the fake refused with a 500.
    pub fn failures(&self) -> usize {
        self.requests().iter().filter(|r| r.status == 500).count()
    }

    /// Waits until a request that `matches` is taken and returns it; panics with every
    /// request received if none is within `limit`.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        matches: impl Fn(&Recorded) -> bool,
    ) -> Recorded {
        let matches = &matches;
        // A taken request stays recorded, so looking once more finds it if it came in time.
        wait_until(
            limit,
            || async move { self.delivered().iter().any(matches) },
        )
        .await;
        self.delivered()
            .into_iter()
            .find(matches)
            .unwrap_or_else(|| {
                panic!(
                    "{what} did not arrive within {limit:?}; the fake API received {:#?}",
                    self.requests()
                )
            })
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Outage {
    /// Whether to refuse a request to `path` (with `query`) carrying `text`; counts it.
    fn refuses(&mut self, path: &str, query: &str, text: &str) -> bool {
        let matched = [path, query, text]
            .iter()
            .any(|s| s.contains(&self.matching));
        let refuse = self.left > 0 && matched;
        if refuse {
            self.left -= 1;
        }
        refuse
    }
}

/// What every provider route does around its answer: refuses with a 500 during an outage
/// (changing nothing), else answers with `answer`; records the request either way.
fn respond(
    inner: &Shared,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    answer: impl FnOnce(&mut Inner) -> (StatusCode, Value),
) -> Response {
    let mut inner = inner.lock().unwrap();
    let text = String::from_utf8_lossy(body);
    let refuse = inner
        .outage
        .refuses(uri.path(), uri.query().unwrap_or_default(), &text);
    let (status, reply) = if refuse {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"message": "fake outage"}),
        )
    } else {
        answer(&mut inner)
    };
    inner.requests.push(recorded(uri, headers, body, status));
    (status, Json(reply)).into_response()
}

/// A reply route: recorded, then answered as the provider does (or with a 500).
async fn known(State(inner): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    respond(&inner, &uri, &headers, &body, |inner| {
        let path = uri.path();
        if path == "/chat.postMessage" {
            // The Web API's success; its failures are 200 with "ok": false.
            (
                StatusCode::OK,
                json!({"ok": true, "ts": "1700000000.000200"}),
            )
        } else if path.starts_with("/slack/response/") {
            (StatusCode::OK, json!({"ok": true}))
        } else {
            (StatusCode::CREATED, json!({"id": inner.requests.len() + 1}))
        }
    })
}

/// A question about someone: recorded, then answered by `answer` from what the test set
/// (or with a 500 during an outage).
fn lookup(
    inner: &Shared,
    uri: &Uri,
    headers: &HeaderMap,
    answer: impl FnOnce(&People) -> (StatusCode, Value),
) -> Response {
    respond(inner, uri, headers, b"", |inner| answer(&inner.people))
}

/// `GET /repos/{owner}/{repo}/collaborators/{login}/permission`, shaped as GitHub answers:
/// the legacy `permission` (admin, write, read, none), the `role_name`, and the user's
/// `permissions` flags.
async fn github_permission(
    State(inner): State<Shared>,
    Path((owner, repo, login)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    lookup(&inner, &uri, &headers, |people| {
        let Some(role) = people
            .github
            .get(&(format!("{owner}/{repo}"), login.clone()))
        else {
            return (
                StatusCode::NOT_FOUND,
                json!({"message": "Not Found", "status": "404"}),
            );
        };
        let rank = ["none", "read", "triage", "write", "maintain", "admin"]
            .iter()
            .position(|r| r == role)
            .unwrap_or(0);
        let legacy = match rank {
            0 => "none",
            1 | 2 => "read",
            3 | 4 => "write",
            _ => "admin",
        };
        let flags = json!({"pull": rank >= 1, "triage": rank >= 2, "push": rank >= 3,
                           "maintain": rank >= 4, "admin": rank >= 5});
        (
            StatusCode::OK,
            json!({"permission": legacy, "role_name": role,
                   "user": {"login": login, "type": "User", "permissions": flags}}),
        )
    })
}

/// `GET /projects/{id}/members/all/{user}`: the member with their `access_level`, or 404.
async fn gitlab_member(
    State(inner): State<Shared>,
    Path((project, user)): Path<(String, u64)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    lookup(&inner, &uri, &headers, |people| {
        match people.gitlab.get(&(project.clone(), user)) {
            Some(level) => (
                StatusCode::OK,
                json!({"id": user, "username": format!("user{user}"), "state": "active",
                       "access_level": level}),
            ),
            None => (StatusCode::NOT_FOUND, json!({"message": "404 Not found"})),
        }
    })
}

/// `GET /usergroups.users.list?usergroup=S…`: the Web API's answer, `ok` or not.
async fn slack_group_members(
    State(inner): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    lookup(&inner, &uri, &headers, |people| {
        let group = query.get("usergroup").cloned().unwrap_or_default();
        match people.slack_groups.get(&group) {
            Some(members) => (StatusCode::OK, json!({"ok": true, "users": members})),
            None => (
                StatusCode::OK,
                json!({"ok": false, "error": "no_such_subteam"}),
            ),
        }
    })
}

/// `GET /rest/api/2/user/groups?accountId=…`: the account's groups.
async fn jira_user_groups(
    State(inner): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    lookup(&inner, &uri, &headers, |people| {
        let account = query.get("accountId").cloned().unwrap_or_default();
        let groups: Vec<Value> = people
            .jira_groups
            .get(&account)
            .into_iter()
            .flatten()
            .map(|name| json!({"name": name, "groupId": format!("id-{name}")}))
            .collect();
        (StatusCode::OK, Value::Array(groups))
    })
}

impl PullRequest {
    /// The pull request as GitHub's API shows it (the fields a client reads).
    fn json(&self, repo: &str) -> Value {
        json!({
            "number": self.number,
            "html_url": format!("https://github.example/{repo}/pull/{}", self.number),
            "state": "open",
            "draft": self.draft,
            "title": self.title,
            "body": self.body,
            "head": {"ref": self.head},
            "base": {"ref": self.base},
        })
    }
}

impl MergeRequest {
    /// The merge request as GitLab's API shows it (the fields a client reads).
    fn json(&self, project: &str) -> Value {
        json!({
            "iid": self.iid,
            "web_url": format!("https://gitlab.example/{project}/-/merge_requests/{}", self.iid),
            "state": "opened",
            "draft": self.title.starts_with("Draft: "),
            "title": self.title,
            "description": self.description,
            "source_branch": self.source_branch,
            "target_branch": self.target_branch,
            "labels": self.labels,
        })
    }
}

/// A request's JSON body, `Null` if it is not JSON.
fn json_body(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

/// A string field of a request's body.
fn text_field(body: &Value, key: &str) -> Option<String> {
    body.get(key).and_then(Value::as_str).map(str::to_string)
}

/// A list of strings from a request's body: a JSON array, or (as GitLab takes labels) one
/// comma-separated string.
fn list_field(body: &Value, key: &str) -> Vec<String> {
    match body.get(key) {
        Some(Value::String(list)) => list
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Adds `new` to `list`, keeping each item once, as labels and reviewers are sets.
fn add_each(list: &mut Vec<String>, new: Vec<String>) {
    for item in new {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// Whether a list asked for with `state` (none, or `wanted`, or `all`) shows open ones,
/// the only kind the fake has.
fn shows_open(query: &HashMap<String, String>, wanted: &str) -> bool {
    query
        .get("state")
        .is_none_or(|state| state == wanted || state == "all")
}

/// The branch of a GitHub head, which may be `owner:branch` or just `branch`; the fake's
/// pull requests all come from branches of their own repo, so the owner is not checked.
fn branch_of(head: &str) -> &str {
    head.split_once(':').map_or(head, |(_, branch)| branch)
}

/// GitHub's answer for a path naming no pull request it has.
fn github_not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"message": "Not Found", "status": "404"}),
    )
}

/// GitHub's 422, with the one error it found.
fn github_invalid(message: String) -> (StatusCode, Value) {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"message": "Validation Failed", "status": "422",
               "errors": [{"resource": "PullRequest", "code": "custom", "message": message}]}),
    )
}

/// The pull request `number` (as it stands in the path) of `repo`, if the fake has it.
fn pull_mut<'a>(inner: &'a mut Inner, repo: &str, number: &str) -> Option<&'a mut PullRequest> {
    let number: u64 = number.parse().ok()?;
    inner
        .pulls
        .get_mut(repo)?
        .iter_mut()
        .find(|pull| pull.number == number)
}

/// `GET /repos/{owner}/{repo}/pulls?head={owner}:{branch}&state=open`: the open pull
/// requests, only those from that head branch if one is given.
async fn github_list_pulls(
    State(inner): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    respond(&inner, &uri, &headers, b"", |inner| {
        if !shows_open(&query, "open") {
            return (StatusCode::OK, json!([]));
        }
        let repo = format!("{owner}/{repo}");
        let head = query.get("head").map(|head| branch_of(head));
        let pulls: Vec<Value> = inner
            .pulls
            .get(&repo)
            .into_iter()
            .flatten()
            .filter(|pull| head.is_none_or(|head| pull.head == head))
            .map(|pull| pull.json(&repo))
            .collect();
        (StatusCode::OK, Value::Array(pulls))
    })
}

/// `POST /repos/{owner}/{repo}/pulls`: opens a pull request, numbered from 1 in its repo,
/// unless one is already open for its head (a 422, as GitHub answers).
async fn github_open_pull(
    State(inner): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(&inner, &uri, &headers, &body, |inner| {
        let sent = json_body(&body);
        let (Some(title), Some(head), Some(base)) = (
            text_field(&sent, "title"),
            text_field(&sent, "head"),
            text_field(&sent, "base"),
        ) else {
            return github_invalid("title, head and base are required.".to_string());
        };
        let head = branch_of(&head).to_string();
        let repo = format!("{owner}/{repo}");
        let pulls = inner.pulls.entry(repo.clone()).or_default();
        if pulls.iter().any(|pull| pull.head == head) {
            return github_invalid(format!("A pull request already exists for {owner}:{head}."));
        }
        let pull = PullRequest {
            number: pulls.len() as u64 + 1,
            title,
            body: text_field(&sent, "body").unwrap_or_default(),
            head,
            base,
            draft: sent.get("draft").and_then(Value::as_bool).unwrap_or(false),
            labels: Vec::new(),
            reviewers: Vec::new(),
        };
        let shown = pull.json(&repo);
        pulls.push(pull);
        (StatusCode::CREATED, shown)
    })
}

/// `PATCH /repos/{owner}/{repo}/pulls/{number}`: takes a new `title` or `body` (either or
/// both).
async fn github_update_pull(
    State(inner): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(&inner, &uri, &headers, &body, |inner| {
        let sent = json_body(&body);
        let repo = format!("{owner}/{repo}");
        let Some(pull) = pull_mut(inner, &repo, &number) else {
            return github_not_found();
        };
        if let Some(title) = text_field(&sent, "title") {
            pull.title = title;
        }
        if let Some(text) = text_field(&sent, "body") {
            pull.body = text;
        }
        (StatusCode::OK, pull.json(&repo))
    })
}

/// `POST /repos/{owner}/{repo}/issues/{number}/labels`: adds `labels` to the pull request
/// and answers with all of its labels.
async fn github_add_labels(
    State(inner): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(&inner, &uri, &headers, &body, |inner| {
        let sent = json_body(&body);
        let Some(pull) = pull_mut(inner, &format!("{owner}/{repo}"), &number) else {
            return github_not_found();
        };
        add_each(&mut pull.labels, list_field(&sent, "labels"));
        let labels: Vec<Value> = pull
            .labels
            .iter()
            .map(|name| json!({"name": name}))
            .collect();
        (StatusCode::OK, Value::Array(labels))
    })
}

/// `POST /repos/{owner}/{repo}/pulls/{number}/requested_reviewers`: asks `reviewers` (logins)
/// to review, answering with the pull request.
async fn github_request_reviewers(
    State(inner): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(&inner, &uri, &headers, &body, |inner| {
        let sent = json_body(&body);
        let repo = format!("{owner}/{repo}");
        let Some(pull) = pull_mut(inner, &repo, &number) else {
            return github_not_found();
        };
        add_each(&mut pull.reviewers, list_field(&sent, "reviewers"));
        (StatusCode::CREATED, pull.json(&repo))
    })
}

/// `GET /projects/{id}/merge_requests?source_branch={branch}&state=opened`: the open merge
/// requests, only those from that branch if one is given.
async fn gitlab_list_merges(
    State(inner): State<Shared>,
    Path(project): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    respond(&inner, &uri, &headers, b"", |inner| {
        if !shows_open(&query, "opened") {
            return (StatusCode::OK, json!([]));
        }
        let source = query.get("source_branch");
        let merges: Vec<Value> = inner
            .merges
            .get(&project)
            .into_iter()
            .flatten()
            .filter(|merge| source.is_none_or(|branch| &merge.source_branch == branch))
            .map(|merge| merge.json(&project))
            .collect();
        (StatusCode::OK, Value::Array(merges))
    })
}

/// `POST /projects/{id}/merge_requests`: opens a merge request, numbered from 1 in its
/// project, unless one is already open for its source branch (a 409, as GitLab answers).
async fn gitlab_open_merge(
    State(inner): State<Shared>,
    Path(project): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(&inner, &uri, &headers, &body, |inner| {
        let sent = json_body(&body);
        let (Some(source_branch), Some(target_branch), Some(title)) = (
            text_field(&sent, "source_branch"),
            text_field(&sent, "target_branch"),
            text_field(&sent, "title"),
        ) else {
            return (
                StatusCode::BAD_REQUEST,
                json!({"error": "source_branch, target_branch, title are missing"}),
            );
        };
        let merges = inner.merges.entry(project.clone()).or_default();
        if let Some(open) = merges.iter().find(|m| m.source_branch == source_branch) {
            let message = format!(
                "Another open merge request already exists for this source branch: !{}",
                open.iid
            );
            return (StatusCode::CONFLICT, json!({"message": [message]}));
        }
        let reviewer_ids = sent
            .get("reviewer_ids")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect();
        let merge = MergeRequest {
            iid: merges.len() as u64 + 1,
            title,
            description: text_field(&sent, "description").unwrap_or_default(),
            source_branch,
            target_branch,
            labels: list_field(&sent, "labels"),
            reviewer_ids,
        };
        let shown = merge.json(&project);
        merges.push(merge);
        (StatusCode::CREATED, shown)
    })
}

/// `PUT /projects/{id}/merge_requests/{iid}`: takes a new `title` or `description` (either
/// or both).
async fn gitlab_update_merge(
    State(inner): State<Shared>,
    Path((project, iid)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(&inner, &uri, &headers, &body, |inner| {
        let sent = json_body(&body);
        let merge = iid.parse::<u64>().ok().and_then(|iid| {
            inner
                .merges
                .get_mut(&project)?
                .iter_mut()
                .find(|merge| merge.iid == iid)
        });
        let Some(merge) = merge else {
            return (StatusCode::NOT_FOUND, json!({"message": "404 Not found"}));
        };
        if let Some(title) = text_field(&sent, "title") {
            merge.title = title;
        }
        if let Some(description) = text_field(&sent, "description") {
            merge.description = description;
        }
        (StatusCode::OK, merge.json(&project))
    })
}

/// Any other path: recorded, and 404 as a provider would answer.
async fn unknown(
    State(inner): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let status = StatusCode::NOT_FOUND;
    inner
        .lock()
        .unwrap()
        .requests
        .push(recorded(&uri, &headers, &body, status));
    (status, Json(json!({"message": "Not Found"}))).into_response()
}

fn recorded(uri: &Uri, headers: &HeaderMap, body: &[u8], status: StatusCode) -> Recorded {
    Recorded {
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
        status: status.as_u16(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `method` to the fake's `path` with a JSON `body` (if any) and returns the
    /// status and the JSON answer.
    async fn send(
        api: &FakeApi,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", api.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the fake API answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("the answer is JSON"))
    }

    /// Opens a pull request from `head` on `acme/shop`, as an agent would.
    async fn open_pull(api: &FakeApi, head: &str, title: &str) -> (u16, Value) {
        let body = json!({"title": title, "body": "Fixes #4", "head": head,
                          "base": "main", "draft": true});
        send(
            api,
            reqwest::Method::POST,
            "/repos/acme/shop/pulls",
            Some(body),
        )
        .await
    }

    /// Opens a merge request from `source` on `acme/shop`, as an agent would.
    async fn open_merge(api: &FakeApi, source: &str, title: &str) -> (u16, Value) {
        let body = json!({"source_branch": source, "target_branch": "main", "title": title,
                          "description": "Closes #4", "labels": "agent, bot",
                          "reviewer_ids": [7]});
        let path = "/projects/acme%2Fshop/merge_requests";
        send(api, reqwest::Method::POST, path, Some(body)).await
    }

    #[tokio::test]
    async fn opened_pull_request_is_numbered_from_one_and_listed_by_its_head() {
        let api = FakeApi::start().await;

        let (status, opened) = open_pull(&api, "agent/fix-4", "Fix the cart").await;
        let (_, other) = open_pull(&api, "acme:agent/fix-5", "Fix the till").await;

        assert_eq!(status, 201, "{opened}");
        assert_eq!(
            opened,
            json!({"number": 1, "html_url": "https://github.example/acme/shop/pull/1",
                   "state": "open", "draft": true, "title": "Fix the cart",
                   "body": "Fixes #4", "head": {"ref": "agent/fix-4"},
                   "base": {"ref": "main"}})
        );
        assert_eq!(other["number"], 2);
        let path = "/repos/acme/shop/pulls?head=acme:agent/fix-4&state=open";
        let (status, listed) = send(&api, reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200);
        assert_eq!(listed, json!([opened]));
        let path = "/repos/acme/shop/pulls?head=acme:agent/none&state=open";
        let (_, none) = send(&api, reqwest::Method::GET, path, None).await;
        assert_eq!(none, json!([]));
        let (_, elsewhere) = send(&api, reqwest::Method::GET, "/repos/acme/till/pulls", None).await;
        assert_eq!(elsewhere, json!([]));
    }

    #[tokio::test]
    async fn second_pull_request_for_an_open_head_is_refused_with_a_422() {
        let api = FakeApi::start().await;
        open_pull(&api, "agent/fix-4", "Fix the cart").await;

        let (status, refused) = open_pull(&api, "acme:agent/fix-4", "Fix the cart again").await;

        assert_eq!(status, 422);
        assert_eq!(refused["message"], "Validation Failed");
        assert_eq!(
            refused["errors"][0]["message"],
            "A pull request already exists for acme:agent/fix-4."
        );
        assert_eq!(api.pull_requests("acme/shop").len(), 1);
    }

    #[tokio::test]
    async fn patched_pull_request_takes_the_new_title_and_keeps_its_body() {
        let api = FakeApi::start().await;
        open_pull(&api, "agent/fix-4", "Fix the cart").await;

        let title = json!({"title": "Fix the cart, take two"});
        let patch = reqwest::Method::PATCH;
        let (status, updated) =
            send(&api, patch.clone(), "/repos/acme/shop/pulls/1", Some(title)).await;
        let (missing, _) = send(&api, patch, "/repos/acme/shop/pulls/9", Some(json!({}))).await;

        assert_eq!(status, 200, "{updated}");
        assert_eq!(updated["title"], "Fix the cart, take two");
        assert_eq!(updated["body"], "Fixes #4");
        assert_eq!(missing, 404);
        assert_eq!(
            api.pull_requests("acme/shop")[0]["title"],
            "Fix the cart, take two"
        );
    }

    #[tokio::test]
    async fn labels_and_requested_reviewers_are_kept_on_the_pull_request() {
        let api = FakeApi::start().await;
        open_pull(&api, "agent/fix-4", "Fix the cart").await;

        let post = reqwest::Method::POST;
        let labels = json!({"labels": ["agent", "bot"]});
        let (labelled, names) = send(
            &api,
            post.clone(),
            "/repos/acme/shop/issues/1/labels",
            Some(labels),
        )
        .await;
        let reviewers = json!({"reviewers": ["octocat"]});
        let path = "/repos/acme/shop/pulls/1/requested_reviewers";
        let (requested, _) = send(&api, post, path, Some(reviewers)).await;

        assert_eq!(labelled, 200);
        assert_eq!(names, json!([{"name": "agent"}, {"name": "bot"}]));
        assert_eq!(requested, 201);
        let stored = &api.pull_requests("acme/shop")[0];
        assert_eq!(stored["labels"], json!(["agent", "bot"]));
        assert_eq!(stored["reviewers"], json!(["octocat"]));
        assert_eq!(api.requests_to("/repos/acme/shop/").len(), 3);
    }

    #[tokio::test]
    async fn pull_request_refused_during_an_outage_is_recorded_and_not_opened() {
        let api = FakeApi::start().await;
        api.fail_next(1, "/pulls");

        let (refused, _) = open_pull(&api, "agent/fix-4", "Fix the cart").await;
        let (retried, _) = open_pull(&api, "agent/fix-4", "Fix the cart").await;

        assert_eq!(refused, 500);
        assert_eq!(retried, 201);
        assert_eq!(api.failures(), 1);
        assert_eq!(api.pull_requests("acme/shop")[0]["number"], 1);
        let taken = api
            .wait_for("the pull request", Duration::from_secs(1), |r| {
                r.path == "/repos/acme/shop/pulls"
            })
            .await;
        assert_eq!(taken.body["head"], "agent/fix-4");
    }

    #[tokio::test]
    async fn opened_merge_request_is_listed_by_its_source_branch() {
        let api = FakeApi::start().await;

        let (status, opened) = open_merge(&api, "agent/fix-4", "Draft: Fix the cart").await;

        assert_eq!(status, 201, "{opened}");
        assert_eq!(
            opened,
            json!({"iid": 1,
                   "web_url": "https://gitlab.example/acme/shop/-/merge_requests/1",
                   "state": "opened", "draft": true, "title": "Draft: Fix the cart",
                   "description": "Closes #4", "source_branch": "agent/fix-4",
                   "target_branch": "main", "labels": ["agent", "bot"]})
        );
        let path = "/projects/acme%2Fshop/merge_requests?source_branch=agent/fix-4&state=opened";
        let (status, listed) = send(&api, reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200);
        assert_eq!(listed, json!([opened]));
        let path = "/projects/acme%2Fshop/merge_requests?source_branch=agent/none&state=opened";
        let (_, none) = send(&api, reqwest::Method::GET, path, None).await;
        assert_eq!(none, json!([]));
        assert_eq!(api.merge_requests("acme/shop")[0]["reviewers"], json!([7]));
    }

    #[tokio::test]
    async fn second_merge_request_for_an_open_source_branch_is_refused_with_a_409() {
        let api = FakeApi::start().await;
        open_merge(&api, "agent/fix-4", "Fix the cart").await;

        let (status, refused) = open_merge(&api, "agent/fix-4", "Fix the cart again").await;
        let (other, second) = open_merge(&api, "agent/fix-5", "Fix the till").await;

        assert_eq!(status, 409);
        assert_eq!(
            refused,
            json!({"message": ["Another open merge request already exists for this source branch: !1"]})
        );
        assert_eq!(other, 201);
        assert_eq!(second["iid"], 2);
        assert_eq!(api.merge_requests("acme/shop").len(), 2);
    }

    #[tokio::test]
    async fn put_merge_request_takes_the_new_title_and_its_draft_follows() {
        let api = FakeApi::start().await;
        open_merge(&api, "agent/fix-4", "Draft: Fix the cart").await;

        let put = reqwest::Method::PUT;
        let title = json!({"title": "Fix the cart"});
        let path = "/projects/acme%2Fshop/merge_requests/1";
        let (status, updated) = send(&api, put.clone(), path, Some(title)).await;
        let path = "/projects/acme%2Fshop/merge_requests/9";
        let (missing, _) = send(&api, put, path, Some(json!({"title": "x"}))).await;

        assert_eq!(status, 200, "{updated}");
        assert_eq!(updated["title"], "Fix the cart");
        assert_eq!(updated["draft"], false);
        assert_eq!(updated["description"], "Closes #4");
        assert_eq!(missing, 404);
        assert_eq!(api.merge_requests("acme/shop")[0]["title"], "Fix the cart");
    }
}
