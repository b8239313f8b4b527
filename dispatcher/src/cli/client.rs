//! A small client of the dispatcher's REST API, used by `agentsmith jobs` and
//! `agentsmith deliveries`.

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::SubmitRequest;
use queue::{Delivery, Job, JobEvent};

/// How many times in a row [`Client::events`] reconnects after a `lagged` end that brought
/// no new event before it gives up: a follower that cannot get a single event further is
/// reading slower than the job writes, and another try would not change that.
pub const MAX_LAGGED_WITHOUT_PROGRESS: u32 = 3;

/// The most pages `jobs list` reads to fill its `--limit` (each page moves the cursor on,
/// so this only bounds a list whose pages keep coming back short).
const MAX_LIST_PAGES: usize = 100;

/// Talks to one dispatcher.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// The event id.
    pub id: String,
    /// The decoded job event.
    pub event: JobEvent,
}

impl Client {
    /// A client of the dispatcher at `base` using bearer `token`.
    pub fn new(base: &str, token: Option<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the dispatcher at {}: {e}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("no details");
            let code = body["error"]["code"].as_str().unwrap_or("error");
            anyhow::bail!("{status}: {message} ({code})");
        }
        Ok(serde_json::from_value(body)?)
    }

    /// `POST /v1/jobs`.
    pub async fn submit(&self, request: &SubmitRequest) -> anyhow::Result<Job> {
        self.send(
            self.request(reqwest::Method::POST, "/v1/jobs")
                .json(request),
        )
        .await
    }

    /// `GET /v1/jobs`: up to `limit` jobs, newest first, in `state` and of `project` when
    /// given. A page may come back short (a job changed state while it was read): the
    /// next one is asked for until `limit` jobs are in or there is no next page.
    pub async fn list(
        &self,
        state: Option<&str>,
        project: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<Job>> {
        let mut jobs: Vec<Job> = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let mut query = vec![("limit", (limit - jobs.len()).to_string())];
            let filters = [
                ("state", state),
                ("project", project),
                ("cursor", cursor.as_deref()),
            ];
            query.extend(
                filters
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v?.to_string()))),
            );
            let page: Value = self
                .send(self.request(reqwest::Method::GET, "/v1/jobs").query(&query))
                .await?;
            jobs.extend(serde_json::from_value::<Vec<Job>>(page["jobs"].clone())?);
            cursor = page["next_cursor"].as_str().map(str::to_string);
            if jobs.len() >= limit || cursor.is_none() {
                break;
            }
        }
        Ok(jobs)
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn show(&self, id: &str) -> anyhow::Result<Job> {
        self.send(self.request(reqwest::Method::GET, &format!("/v1/jobs/{id}")))
            .await
    }

    /// `POST /v1/jobs/{id}/cancel` or `/retry`, with an empty JSON object: every `POST`
    /// of the API wants `Content-Type: application/json`, even with nothing to say.
    pub async fn act(&self, id: &str, action: &str) -> anyhow::Result<Job> {
        self.post(&format!("/v1/jobs/{id}/{action}"), &serde_json::json!({}))
            .await
    }

    /// `POST` of `body` (JSON) to `path`, answered with any JSON.
    pub async fn send_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// `POST` of `body` (JSON) to `path`, answered with a job.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Job> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// `GET /v1/deliveries`: the newest entries of the delivery journal.
    pub async fn deliveries(
        &self,
        source: Option<&str>,
        decision: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<Delivery>> {
        let mut query = vec![("limit", limit.to_string())];
        for (key, value) in [("source", source), ("decision", decision)] {
            if let Some(value) = value {
                query.push((key, value.to_string()));
            }
        }
        let page: Value = self
            .send(
                self.request(reqwest::Method::GET, "/v1/deliveries")
                    .query(&query),
            )
            .await?;
        Ok(serde_json::from_value(page["deliveries"].clone())?)
    }

    /// `GET /v1/deliveries/{id}`.
    pub async fn delivery(&self, id: &str) -> anyhow::Result<Delivery> {
        self.send(self.request(reqwest::Method::GET, &format!("/v1/deliveries/{id}")))
            .await
    }

    /// `POST /v1/deliveries/{id}/replay`: the replay's own entry.
    pub async fn replay(&self, id: &str) -> anyhow::Result<Delivery> {
        let path = format!("/v1/deliveries/{id}/replay");
        self.send(
            self.request(reqwest::Method::POST, &path)
                .json(&serde_json::json!({})),
        )
        .await
    }

    /// Streams `GET /v1/jobs/{id}/events`, calling `on_event` for each, until the server
    /// ends the stream (the job ended) or `on_event` returns false.
    ///
    /// A follower that falls behind the dispatcher's bounded buffer is sent `lagged` and
    /// closed; this reconnects then with `Last-Event-ID` set to the last event it passed
    /// on, so `on_event` sees every event once, in order. After
    /// [`MAX_LAGGED_WITHOUT_PROGRESS`] such ends in a row that brought nothing new, it
    /// gives up with an error saying where it stopped.
    pub async fn events(
        &self,
        id: &str,
        mut on_event: impl FnMut(SseEvent) -> bool,
    ) -> anyhow::Result<()> {
        let mut last: Option<String> = None;
        let mut stalled = 0;
        loop {
            let from = last.clone();
            match self.follow_once(id, &mut last, &mut on_event).await? {
                End::Finished => return Ok(()),
                End::Lagged(resume_after) => {
                    if last == from {
                        stalled += 1;
                    } else {
                        stalled = 0;
                    }
                    if stalled >= MAX_LAGGED_WITHOUT_PROGRESS {
                        anyhow::bail!(
                            "following job {id}: the dispatcher dropped this follower {stalled} \
                             times in a row for falling behind, without it getting past event \
                             {}; the output is coming faster than it is read",
                            last.as_deref().unwrap_or("(none)")
                        );
                    }
                    // What was passed on is the resume point; the server's says the same
                    // unless nothing was received at all.
                    if last.is_none() {
                        last = resume_after;
                    }
                }
            }
        }
    }

    /// One connection of [`Client::events`], resuming after `last`, which it moves on as
    /// events are passed on.
    async fn follow_once(
        &self,
        id: &str,
        last: &mut Option<String>,
        on_event: &mut impl FnMut(SseEvent) -> bool,
    ) -> anyhow::Result<End> {
        let mut request = self.request(reqwest::Method::GET, &format!("/v1/jobs/{id}/events"));
        if let Some(last) = last.as_deref() {
            request = request.header("last-event-id", last);
        }
        let response = request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the dispatcher at {}: {e}", self.base))?;
        if !response.status().is_success() {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            anyhow::bail!(
                "{status}: {}",
                body["error"]["message"].as_str().unwrap_or("no details")
            );
        }
        let mut bytes = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(chunk) = bytes.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk?));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                if let Some(resume_after) = lagged(&block) {
                    return Ok(End::Lagged(resume_after));
                }
                if let Some(event) = parse_sse(&block) {
                    if !event.id.is_empty() {
                        *last = Some(event.id.clone());
                    }
                    if !on_event(event) {
                        return Ok(End::Finished);
                    }
                }
            }
        }
        Ok(End::Finished)
    }
}

/// How one connection of an event stream ended.
enum End {
    /// The server ended it (the job ended) or the caller had enough.
    Finished,
    /// The server dropped the follower for falling behind; where it says to resume.
    Lagged(Option<String>),
}

/// Whether an SSE block is the `lagged` end, and where it says to resume.
fn lagged(block: &str) -> Option<Option<String>> {
    let mut is_lagged = false;
    let mut data = String::new();
    for line in block.lines() {
        if let Some(name) = line.strip_prefix("event:") {
            is_lagged = name.trim() == "lagged";
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    if !is_lagged {
        return None;
    }
    let resume_after = serde_json::from_str::<Value>(&data)
        .ok()
        .and_then(|v| v["resume_after"].as_str().map(str::to_string));
    Some(resume_after)
}

/// Parses one SSE block (`id:`, `event:`, `data:` lines); comments and keep-alives give `None`.
pub fn parse_sse(block: &str) -> Option<SseEvent> {
    let mut id = String::new();
    let mut data = String::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim_start().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    let event = serde_json::from_str(&data).ok()?;
    Some(SseEvent { id, event })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A stand-in for a dispatcher's event stream: it answers the n-th connection with the
    /// n-th of `bodies` (SSE text) and closes it; the request heads it got, lowercased.
    async fn scripted(bodies: Vec<String>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        tokio::spawn(async move {
            for body in bodies {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if socket.read(&mut byte).await.unwrap() == 0 {
                        break;
                    }
                    head.push(byte[0]);
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).to_lowercase());
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{body}"
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
                socket.shutdown().await.unwrap();
            }
        });
        (address, heads)
    }

    /// A log event's SSE block.
    fn log(id: &str) -> String {
        format!(
            "id: {id}\nevent: log\ndata: {{\"type\":\"log\",\"attempt\":1,\"stream\":\"stdout\",\"line\":\"{id}\",\"at\":3}}\n\n"
        )
    }

    /// The `lagged` end, as the dispatcher sends it (no `id:`).
    fn lagged_end(resume_after: &str) -> String {
        format!(
            "event: lagged\ndata: {{\"message\":\"this follower fell behind\",\"resume_after\":\"{resume_after}\"}}\n\n"
        )
    }

    #[tokio::test]
    async fn a_lagged_stream_is_resumed_after_the_last_event_without_gaps_or_repeats() {
        let (address, heads) = scripted(vec![
            format!("{}{}{}", log("1-0"), log("2-0"), lagged_end("2-0")),
            format!("{}{}", log("3-0"), log("4-0")),
        ])
        .await;
        let client = Client::new(&address, Some("t0ken".into()));
        let mut got = Vec::new();
        client
            .events("abc", |event| {
                got.push(event.id);
                true
            })
            .await
            .unwrap();
        assert_eq!(got, ["1-0", "2-0", "3-0", "4-0"]);
        let heads = heads.lock().unwrap();
        assert_eq!(heads.len(), 2, "{heads:?}");
        assert!(!heads[0].contains("last-event-id"), "{}", heads[0]);
        assert!(heads[1].contains("last-event-id: 2-0"), "{}", heads[1]);
        assert!(
            heads[1].contains("authorization: bearer t0ken"),
            "{}",
            heads[1]
        );
    }

    #[tokio::test]
    async fn a_stream_that_lags_without_getting_further_is_given_up_with_a_clear_error() {
        let mut bodies = vec![format!("{}{}", log("1-0"), lagged_end("1-0"))];
        bodies.extend((0..MAX_LAGGED_WITHOUT_PROGRESS).map(|_| lagged_end("1-0")));
        let (address, heads) = scripted(bodies).await;
        let client = Client::new(&address, None);
        let mut got = Vec::new();
        let error = client
            .events("abc", |event| {
                got.push(event.id);
                true
            })
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(got, ["1-0"]);
        assert!(error.contains("fall") && error.contains("1-0"), "{error}");
        let heads = heads.lock().unwrap();
        assert_eq!(heads.len(), 1 + MAX_LAGGED_WITHOUT_PROGRESS as usize);
        assert!(heads[1..].iter().all(|h| h.contains("last-event-id: 1-0")));
    }

    #[test]
    fn sse_blocks_parse_and_keepalives_are_skipped() {
        let block = "id: 1-0\nevent: log\ndata: {\"type\":\"log\",\"attempt\":1,\"stream\":\"stdout\",\"line\":\"hi\",\"at\":3}\n\n";
        let event = parse_sse(block).unwrap();
        assert_eq!(event.id, "1-0");
        assert!(matches!(event.event, JobEvent::Log { ref line, .. } if line == "hi"));
        assert!(parse_sse(":\n\n").is_none());
    }
}
