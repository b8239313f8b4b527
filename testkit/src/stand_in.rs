//! A stand-in for the dispatcher's runner callback (`/internal/jobs/{id}/events`): it
//! records every batch a runner posts and answers as scripted, so the runner's tests and the
//! spawner's conformance suite can watch what a real `agent-runner` reports. Its
//! `/internal/jobs/{id}/token` exchanges a credential once, like the dispatcher's, for
//! [`token_for`] the credential; its `/internal/jobs/{id}/answer` tells the answers a test
//! gave ([`Dispatcher::answer`]), or 409 once told to stop ([`Dispatcher::stop_answers`]).
//! Its `/internal/jobs/{id}/inbox` gives the messages a test sent the job's agent
//! ([`Dispatcher::send_message`]), [`INBOX_PAGE`] at a time, or 409 once told to stop
//! ([`Dispatcher::stop_inbox`]); every events reply counts them.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use contract::{
    AgentResult, AnswerReply, AnswerRequest, InboxMessage, InboxReply, InboxRequest, OutputStream,
    RunOutcome, RunnerBatch, RunnerEvent, RunnerReply, TokenGrant, TokenRequest,
};

/// The most messages one inbox reply gives, like the dispatcher's.
pub const INBOX_PAGE: usize = 50;

/// How the stand-in dispatcher answers a post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 `{"stop": false}`.
    Ok,
    /// 200 `{"stop": true}`.
    Stop,
    /// This status, with a short text body.
    Status(u16),
}

/// The answers to give, in order, then `then` for every later post.
#[derive(Debug, Clone)]
pub struct Script {
    first: VecDeque<Answer>,
    then: Answer,
}

impl Script {
    /// `answer` to every post.
    pub fn always(answer: Answer) -> Self {
        Self {
            first: VecDeque::new(),
            then: answer,
        }
    }

    /// Before that, `answer` to the next `n` posts.
    pub fn first(mut self, n: usize, answer: Answer) -> Self {
        for _ in 0..n {
            self.first.push_back(answer);
        }
        self
    }

    fn next(&mut self) -> Answer {
        self.first.pop_front().unwrap_or(self.then)
    }
}

/// One post the stand-in dispatcher received. Every post is recorded, whatever it was
/// answered: a batch answered 500 may have been stored before the answer was lost.
#[derive(Debug, Clone)]
pub struct Post {
    /// The job id in the path it was posted to.
    pub job_id: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The body as sent.
    pub body: String,
    /// The body as a batch.
    pub batch: RunnerBatch,
    /// What it was answered.
    pub answer: Answer,
}

#[derive(Debug)]
struct Recorder {
    posts: Vec<Post>,
    script: Script,
    /// The nonce each credential was first exchanged with.
    spent: BTreeMap<String, String>,
    /// Exchanges refused (a spent credential with another nonce).
    refused: usize,
    /// The answers to give, by question id.
    answers: BTreeMap<String, contract::Answer>,
    /// Every answer request, in order.
    answer_requests: Vec<AnswerRequest>,
    /// Answer requests get 409 `{"stop": true}`.
    stop_answers: bool,
    /// The messages sent to each job's agent, numbered from 1.
    inbox: BTreeMap<String, Vec<InboxMessage>>,
    /// Every inbox request, with its job id, in order.
    inbox_requests: Vec<(String, InboxRequest)>,
    /// Inbox requests get 409 `{"stop": true}`.
    stop_inbox: bool,
}

impl Recorder {
    fn inbox_count(&self, job_id: &str) -> u64 {
        self.inbox
            .get(job_id)
            .map_or(0, |messages| messages.len() as u64)
    }
}

/// Whether `headers` carry a token the stand-in granted.
fn has_token(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.starts_with(&token_for("")))
}

/// The token the stand-in grants for `credential`.
pub fn token_for(credential: &str) -> String {
    format!("token-of-{credential}")
}

async fn exchange(
    State(state): State<Arc<Mutex<Recorder>>>,
    headers: HeaderMap,
    Json(request): Json<TokenRequest>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(credential) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return (StatusCode::UNAUTHORIZED, "no credential").into_response();
    };
    let mut state = state.lock().unwrap();
    let first = state
        .spent
        .entry(credential.to_string())
        .or_insert_with(|| request.nonce.clone());
    if *first != request.nonce {
        state.refused += 1;
        return (StatusCode::UNAUTHORIZED, "credential already spent").into_response();
    }
    Json(TokenGrant {
        token: token_for(credential),
        checkout: None,
    })
    .into_response()
}

async fn answer(
    State(state): State<Arc<Mutex<Recorder>>>,
    headers: HeaderMap,
    Json(request): Json<AnswerRequest>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| t.starts_with(&token_for(""))) {
        return (StatusCode::UNAUTHORIZED, "no token").into_response();
    }
    let mut state = state.lock().unwrap();
    let answer = state.answers.get(&request.question).cloned();
    state.answer_requests.push(request);
    if state.stop_answers {
        let reply = AnswerReply {
            answer: None,
            stop: true,
        };
        return (StatusCode::CONFLICT, Json(reply)).into_response();
    }
    Json(AnswerReply {
        answer,
        stop: false,
    })
    .into_response()
}

async fn inbox(
    State(state): State<Arc<Mutex<Recorder>>>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    Json(request): Json<InboxRequest>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !has_token(&headers) {
        return (StatusCode::UNAUTHORIZED, "no token").into_response();
    }
    let mut state = state.lock().unwrap();
    let messages: Vec<InboxMessage> = state
        .inbox
        .get(&job_id)
        .into_iter()
        .flatten()
        .filter(|m| m.seq > request.after)
        .take(INBOX_PAGE)
        .cloned()
        .collect();
    state.inbox_requests.push((job_id, request));
    if state.stop_inbox {
        let reply = InboxReply {
            messages: Vec::new(),
            stop: true,
        };
        return (StatusCode::CONFLICT, Json(reply)).into_response();
    }
    Json(InboxReply {
        messages,
        stop: false,
    })
    .into_response()
}

/// A dispatcher's `/internal/jobs/{id}/events` endpoint, recording the posts it gets.
pub struct Dispatcher {
    addr: SocketAddr,
    state: Arc<Mutex<Recorder>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(
    State(state): State<Arc<Mutex<Recorder>>>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let batch: RunnerBatch = match serde_json::from_str(&body) {
        Ok(batch) => batch,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("not a batch: {e}"),
            )
                .into_response()
        }
    };
    let mut state = state.lock().unwrap();
    let answer = state.script.next();
    let inbox = state.inbox_count(&job_id);
    state.posts.push(Post {
        job_id,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
        batch,
        answer,
    });
    match answer {
        Answer::Ok => Json(RunnerReply { stop: false, inbox }).into_response(),
        Answer::Stop => Json(RunnerReply { stop: true, inbox }).into_response(),
        Answer::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            format!("scripted {code}"),
        )
            .into_response(),
    }
}

impl Dispatcher {
    /// Starts a stand-in dispatcher on a free port of 127.0.0.1.
    pub async fn start(script: Script) -> Self {
        Self::start_on("127.0.0.1", script).await
    }

    /// Starts a stand-in dispatcher on a free port of `host` (an address containers or pods
    /// reach, for runners that run there).
    pub async fn start_on(host: &str, script: Script) -> Self {
        let state = Arc::new(Mutex::new(Recorder {
            posts: Vec::new(),
            script,
            spent: BTreeMap::new(),
            refused: 0,
            answers: BTreeMap::new(),
            answer_requests: Vec::new(),
            stop_answers: false,
            inbox: BTreeMap::new(),
            inbox_requests: Vec::new(),
            stop_inbox: false,
        }));
        let app = Router::new()
            .route("/internal/jobs/{id}/events", post(record))
            .route("/internal/jobs/{id}/token", post(exchange))
            .route("/internal/jobs/{id}/answer", post(answer))
            .route("/internal/jobs/{id}/inbox", post(inbox))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind((host, 0))
            .await
            .unwrap_or_else(|e| panic!("binding the stand-in dispatcher on {host}: {e}"));
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            state,
            server,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The callback URL for `job_id`.
    pub fn callback_url(&self, job_id: &str) -> String {
        format!("http://{}/internal/jobs/{job_id}/events", self.addr)
    }

    /// Credential exchanges refused because the credential was spent.
    pub fn refused_exchanges(&self) -> usize {
        self.state.lock().unwrap().refused
    }

    /// Answers the question `id` with `text`, by `by`, from now on.
    pub fn answer(&self, id: &str, text: &str, by: &str) {
        let answer = contract::Answer {
            question: id.to_string(),
            text: text.to_string(),
            by: by.to_string(),
            defaulted: false,
            at: 0,
        };
        self.state
            .lock()
            .unwrap()
            .answers
            .insert(id.to_string(), answer);
    }

    /// Answers every answer request from now on with 409 `{"stop": true}`.
    pub fn stop_answers(&self) {
        self.state.lock().unwrap().stop_answers = true;
    }

    /// Sends `text`, by `by`, to the agent of `job_id`: the events replies count it from now
    /// on and the inbox route gives it. Its number in the job's inbox (from 1).
    pub fn send_message(&self, job_id: &str, text: &str, by: &str) -> u64 {
        let mut state = self.state.lock().unwrap();
        let messages = state.inbox.entry(job_id.to_string()).or_default();
        let seq = messages.len() as u64 + 1;
        messages.push(InboxMessage {
            seq,
            text: text.to_string(),
            by: by.to_string(),
            at: 0,
        });
        seq
    }

    /// Answers every inbox request from now on with 409 `{"stop": true}`.
    pub fn stop_inbox(&self) {
        self.state.lock().unwrap().stop_inbox = true;
    }

    /// Every inbox request of `job_id` so far.
    pub fn inbox_requests(&self, job_id: &str) -> Vec<InboxRequest> {
        let state = self.state.lock().unwrap();
        state
            .inbox_requests
            .iter()
            .filter(|(id, _)| id == job_id)
            .map(|(_, request)| request.clone())
            .collect()
    }

    /// Every answer request so far.
    pub fn answer_requests(&self) -> Vec<AnswerRequest> {
        self.state.lock().unwrap().answer_requests.clone()
    }

    /// Every post so far.
    pub fn posts(&self) -> Vec<Post> {
        self.state.lock().unwrap().posts.clone()
    }

    /// The posts for `job_id` so far (a stand-in may serve several jobs at once).
    pub fn posts_of(&self, job_id: &str) -> Vec<Post> {
        self.posts()
            .into_iter()
            .filter(|post| post.job_id == job_id)
            .collect()
    }

    /// The events received, deduplicated by sequence number, in order. Panics unless the
    /// numbers run from 0 without a gap and every repeat carries the same event.
    pub fn events(&self) -> Vec<RunnerEvent> {
        events_in(self.posts())
    }

    /// [`Dispatcher::events`] of one job: a second run of an attempt shows as a sequence
    /// number sent as two different events.
    pub fn events_of(&self, job_id: &str) -> Vec<RunnerEvent> {
        events_in(self.posts_of(job_id))
    }

    /// The log lines of `stream` received, deduplicated.
    pub fn lines(&self, stream: OutputStream) -> Vec<String> {
        lines_in(self.events(), stream)
    }

    /// [`Dispatcher::lines`] of one job.
    pub fn lines_of(&self, job_id: &str, stream: OutputStream) -> Vec<String> {
        lines_in(self.events_of(job_id), stream)
    }

    /// The final event's outcome and result, once received (it must be the last event).
    pub fn finished(&self) -> Option<(RunOutcome, Option<AgentResult>)> {
        finished_in(self.events())
    }

    /// [`Dispatcher::finished`] of one job.
    pub fn finished_of(&self, job_id: &str) -> Option<(RunOutcome, Option<AgentResult>)> {
        finished_in(self.events_of(job_id))
    }
}

/// The events of `posts`, deduplicated by sequence number, checked for gaps and conflicts.
fn events_in(posts: Vec<Post>) -> Vec<RunnerEvent> {
    let mut by_seq: BTreeMap<u64, RunnerEvent> = BTreeMap::new();
    for post in posts {
        for (offset, event) in post.batch.events.iter().enumerate() {
            let seq = post.batch.first_seq + offset as u64;
            if let Some(earlier) = by_seq.insert(seq, event.clone()) {
                assert_eq!(
                    &earlier, event,
                    "seq {seq} was sent as two different events"
                );
            }
        }
    }
    for (expected, seq) in by_seq.keys().enumerate() {
        assert_eq!(
            *seq, expected as u64,
            "sequence numbers have a gap: {by_seq:?}"
        );
    }
    by_seq.into_values().collect()
}

fn lines_in(events: Vec<RunnerEvent>, stream: OutputStream) -> Vec<String> {
    events
        .into_iter()
        .filter_map(|event| match event {
            RunnerEvent::Log { stream: s, line } if s == stream => Some(line),
            _ => None,
        })
        .collect()
}

fn finished_in(events: Vec<RunnerEvent>) -> Option<(RunOutcome, Option<AgentResult>)> {
    let position = events
        .iter()
        .position(|e| matches!(e, RunnerEvent::Finished { .. }))?;
    assert_eq!(
        position,
        events.len() - 1,
        "Finished is not last: {events:?}"
    );
    match events.into_iter().last() {
        Some(RunnerEvent::Finished {
            outcome, result, ..
        }) => Some((outcome, result)),
        _ => None,
    }
}
