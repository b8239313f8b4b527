//! A small client of the dispatcher's REST API, used by `agentsmith jobs`.

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::SubmitRequest;
use queue::{Job, JobEvent};

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

    /// `GET /v1/jobs`.
    pub async fn list(&self, state: Option<&str>, limit: usize) -> anyhow::Result<Vec<Job>> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(state) = state {
            query.push(("state", state.to_string()));
        }
        let page: Value = self
            .send(self.request(reqwest::Method::GET, "/v1/jobs").query(&query))
            .await?;
        Ok(serde_json::from_value(page["jobs"].clone())?)
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn show(&self, id: &str) -> anyhow::Result<Job> {
        self.send(self.request(reqwest::Method::GET, &format!("/v1/jobs/{id}")))
            .await
    }

    /// `POST /v1/jobs/{id}/cancel` or `/retry`, with an empty JSON object: every `POST`
    /// of the API wants `Content-Type: application/json`, even with nothing to say.
    pub async fn act(&self, id: &str, action: &str) -> anyhow::Result<Job> {
        let path = format!("/v1/jobs/{id}/{action}");
        self.send(
            self.request(reqwest::Method::POST, &path)
                .json(&serde_json::json!({})),
        )
        .await
    }

    /// Streams `GET /v1/jobs/{id}/events`, calling `on_event` for each, until the server
    /// ends the stream (the job ended) or `on_event` returns false.
    pub async fn events(
        &self,
        id: &str,
        mut on_event: impl FnMut(SseEvent) -> bool,
    ) -> anyhow::Result<()> {
        let response = self
            .request(reqwest::Method::GET, &format!("/v1/jobs/{id}/events"))
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
                if let Some(event) = parse_sse(&block) {
                    if !on_event(event) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
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
    use super::*;

    #[test]
    fn sse_blocks_parse_and_keepalives_are_skipped() {
        let block = "id: 1-0\nevent: log\ndata: {\"type\":\"log\",\"attempt\":1,\"stream\":\"stdout\",\"line\":\"hi\",\"at\":3}\n\n";
        let event = parse_sse(block).unwrap();
        assert_eq!(event.id, "1-0");
        assert!(matches!(event.event, JobEvent::Log { ref line, .. } if line == "hi"));
        assert!(parse_sse(":\n\n").is_none());
    }
}
