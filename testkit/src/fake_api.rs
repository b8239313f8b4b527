//! A fake of the providers' APIs for the webhook tests, all on one local port: the reply
//! APIs (Slack's `chat.postMessage` and `response_url`s under `/slack/response/`, GitHub
//! issue comments, GitLab issue notes, Jira issue comments) and the ones that say who
//! someone is (a GitHub collaborator's permission, a GitLab member's access level, a Slack
//! user group's members, a Jira user's groups), answering what the test set with
//! [`FakeApi::grant_github`], [`FakeApi::grant_gitlab`], [`FakeApi::slack_user_group`] and
//! [`FakeApi::jira_groups`]. It records every request and can refuse some with a 500, as a
//! provider having an outage would.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    outage: Outage,
    people: People,
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

/// A provider route: recorded, then answered as the provider does (or with a 500).
async fn known(State(inner): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let text = String::from_utf8_lossy(&body);
    let mut inner = inner.lock().unwrap();
    let refuse = inner
        .outage
        .refuses(&path, uri.query().unwrap_or_default(), &text);
    let (status, answer) = if refuse {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"message": "fake outage"}),
        )
    } else if path == "/chat.postMessage" {
        // The Web API's success; its failures are 200 with "ok": false.
        (
            StatusCode::OK,
            json!({"ok": true, "ts": "1700000000.000200"}),
        )
    } else if path.starts_with("/slack/response/") {
        (StatusCode::OK, json!({"ok": true}))
    } else {
        (StatusCode::CREATED, json!({"id": inner.requests.len() + 1}))
    };
    inner.requests.push(recorded(&uri, &headers, &body, status));
    (status, Json(answer)).into_response()
}

/// A question about someone: recorded, then answered by `answer` from what the test set
/// (or with a 500 during an outage).
fn lookup(
    inner: &Shared,
    uri: &Uri,
    headers: &HeaderMap,
    answer: impl FnOnce(&People) -> (StatusCode, Value),
) -> Response {
    let mut inner = inner.lock().unwrap();
    let refuse = inner
        .outage
        .refuses(uri.path(), uri.query().unwrap_or_default(), "");
    let (status, body) = if refuse {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"message": "fake outage"}),
        )
    } else {
        answer(&inner.people)
    };
    inner.requests.push(recorded(uri, headers, b"", status));
    (status, Json(body)).into_response()
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
