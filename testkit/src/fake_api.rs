//! A fake of the providers' reply APIs for the webhook tests: Slack (`chat.postMessage` and
//! `response_url`s under `/slack/response/`), GitHub issue comments, GitLab issue notes and
//! Jira issue comments, all on one local port. It records every request and can refuse some
//! with a 500, as a provider having an outage would.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
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

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    outage: Outage,
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

/// A provider route: recorded, then answered as the provider does (or with a 500).
async fn known(State(inner): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let text = String::from_utf8_lossy(&body);
    let mut inner = inner.lock().unwrap();
    let outage = &mut inner.outage;
    let refuse =
        outage.left > 0 && (path.contains(&outage.matching) || text.contains(&outage.matching));
    if refuse {
        outage.left -= 1;
    }
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
    inner.requests.push(recorded(path, &headers, &body, status));
    (status, Json(answer)).into_response()
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
        .push(recorded(uri.path().to_string(), &headers, &body, status));
    (status, Json(json!({"message": "Not Found"}))).into_response()
}

fn recorded(path: String, headers: &HeaderMap, body: &[u8], status: StatusCode) -> Recorded {
    Recorded {
        path,
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
