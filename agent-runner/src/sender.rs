//! Delivery of event batches to the dispatcher, and what its answers mean.
//!
//! One batch is in flight at a time. The dispatcher's answer decides what happens next:
//!
//! | answer | meaning | the sender |
//! |---|---|---|
//! | 2xx `{"stop": false}` | recorded | sends the next batch |
//! | 2xx `{"stop": true}` | recorded; the attempt is cancelled | sends [`Directive::Stop`], goes on |
//! | 409, 410 | the attempt is no longer wanted | sends [`Directive::Gone`], stops sending |
//! | 401, 403 | the token is refused | sends [`Directive::Unauthorized`], stops sending |
//! | anything else, no answer | a passing failure | retries the same batch after a backoff |
//!
//! Retries go on for as long as the agent runs (the outbox caps what waits meanwhile),
//! and for [`SenderSettings::final_delivery`] after the final event was queued.
//!
//! Each recorded batch's answer also says how many messages people have sent the agent
//! (`inbox`); the sender publishes the largest count seen ([`Sender::inbox`]) for the
//! task that fetches them ([`crate::inbox`]).
//!
//! The sender's [`Callback`] (client, URLs, token) also serves the conversation's other
//! requests: [`Callback::answer`] (whether a question has been answered) and
//! [`Callback::inbox`] (the messages sent to the agent).

use std::sync::Arc;
use std::time::Duration;

use contract::{
    AnswerReply, AnswerRequest, InboxMessage, InboxReply, InboxRequest, RunnerBatch, RunnerReply,
};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::ca::ExtraCa;
use crate::error::{describe, Error, Result};
use crate::job::{Job, Token};
use crate::outbox::Outbox;

/// How the sender talks to the dispatcher.
#[derive(Debug, Clone)]
pub struct SenderSettings {
    /// The limit on one request, answer included.
    pub request_timeout: Duration,
    /// The first delay before a retry; it doubles after each failure.
    pub min_backoff: Duration,
    /// The longest delay between retries.
    pub max_backoff: Duration,
    /// How long delivery is tried once the final event is queued.
    pub final_delivery: Duration,
}

impl Default for SenderSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            final_delivery: Duration::from_secs(10 * 60),
        }
    }
}

/// What the dispatcher's answers ask of the runner while the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    /// Stop the agent and report it as terminated (the attempt was cancelled).
    Stop,
    /// Stop the agent and exit without a final event: the attempt is no longer wanted.
    Gone {
        /// The HTTP status (409 or 410).
        status: u16,
    },
    /// Stop the agent and exit with an error: the token was refused.
    Unauthorized {
        /// The HTTP status (401 or 403).
        status: u16,
    },
}

/// How delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Every event, the final one included, was recorded.
    Delivered,
    /// The dispatcher no longer wants the attempt (409 or 410).
    Gone {
        /// The HTTP status.
        status: u16,
    },
    /// The dispatcher refused the token (401 or 403).
    Unauthorized {
        /// The HTTP status.
        status: u16,
    },
    /// The final event could not be delivered within [`SenderSettings::final_delivery`].
    GaveUp {
        /// How long it was tried after the final event was queued.
        waited: Duration,
    },
}

/// What one post came to.
enum Answer {
    /// Recorded; `inbox` is `None` when the reply could not be read.
    Recorded {
        stop: bool,
        inbox: Option<u64>,
    },
    Gone(u16),
    Unauthorized(u16),
    Failed(String),
}

/// The dispatcher's routes for this attempt, with the client and the token to call them:
/// shared by the [`Sender`] and the conversation ([`crate::conversation`]).
#[derive(Debug, Clone)]
pub struct Callback {
    client: reqwest::Client,
    events: Url,
    answer: Url,
    inbox: Url,
    token: Token,
}

/// What asking the dispatcher for a question's answer came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerPoll {
    /// Somebody answered (or the question's default was taken).
    Answered(contract::Answer),
    /// Nobody has answered yet.
    Waiting,
    /// The attempt is no longer wanted (409, or `stop`): stop the agent.
    Stop,
    /// The token is refused (401, 403).
    Unauthorized(u16),
    /// A passing failure: ask again later.
    Failed(String),
}

/// What asking the dispatcher for the messages sent to the agent came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxPoll {
    /// The messages after those asked past, in order (none: nothing new yet).
    Messages(Vec<InboxMessage>),
    /// The attempt is no longer wanted (409, or `stop`): stop the agent.
    Stop,
    /// The token is refused (401, 403).
    Unauthorized(u16),
    /// A passing failure: ask again later.
    Failed(String),
}

/// Why a request of the conversation got no usable reply.
enum Refused {
    /// 409 or 410: the attempt is no longer wanted.
    Stop,
    /// 401 or 403.
    Unauthorized(u16),
    /// A passing failure.
    Failed(String),
}

impl Callback {
    /// The routes next to `job`'s callback URL, called with the attempt's `token`.
    pub fn new(job: &Job, token: Token, settings: &SenderSettings) -> Result<Self> {
        let client = http_client(settings, job.extra_ca.as_ref())?;
        let route = |name: &str| {
            job.callback_url
                .join(name)
                .expect("a relative path joins any http URL")
        };
        Ok(Self {
            client,
            events: job.callback_url.clone(),
            answer: route("answer"),
            inbox: route("inbox"),
            token,
        })
    }

    /// Asks whether the question of `request` has been answered
    /// (`POST .../internal/jobs/{id}/answer`).
    pub async fn answer(&self, request: &AnswerRequest) -> AnswerPoll {
        match self
            .call::<AnswerReply>(&self.answer, request, "an AnswerReply")
            .await
        {
            Ok(AnswerReply { stop: true, .. }) | Err(Refused::Stop) => AnswerPoll::Stop,
            Ok(AnswerReply {
                answer: Some(answer),
                ..
            }) => AnswerPoll::Answered(answer),
            Ok(AnswerReply { answer: None, .. }) => AnswerPoll::Waiting,
            Err(Refused::Unauthorized(status)) => AnswerPoll::Unauthorized(status),
            Err(Refused::Failed(reason)) => AnswerPoll::Failed(reason),
        }
    }

    /// Asks for the messages sent to the agent after those `request` has
    /// (`POST .../internal/jobs/{id}/inbox`); the dispatcher gives a limited number at a time.
    pub async fn inbox(&self, request: &InboxRequest) -> InboxPoll {
        match self
            .call::<InboxReply>(&self.inbox, request, "an InboxReply")
            .await
        {
            Ok(InboxReply { stop: true, .. }) | Err(Refused::Stop) => InboxPoll::Stop,
            Ok(InboxReply { messages, .. }) => InboxPoll::Messages(messages),
            Err(Refused::Unauthorized(status)) => InboxPoll::Unauthorized(status),
            Err(Refused::Failed(reason)) => InboxPoll::Failed(reason),
        }
    }

    /// Posts `request` to `url` with the token and reads the reply as an `R` (`what`, for
    /// the reason it is not one).
    async fn call<R: DeserializeOwned>(
        &self,
        url: &Url,
        request: &impl Serialize,
        what: &str,
    ) -> Result<R, Refused> {
        let response = self
            .client
            .post(url.clone())
            .bearer_auth(self.token.expose())
            .json(request)
            .send()
            .await
            .map_err(|e| Refused::Failed(describe(&e)))?;
        let status = response.status();
        match status {
            StatusCode::CONFLICT | StatusCode::GONE => return Err(Refused::Stop),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(Refused::Unauthorized(status.as_u16()))
            }
            _ if !status.is_success() => return Err(Refused::Failed(format!("HTTP {status}"))),
            _ => {}
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| Refused::Failed(format!("reading the reply: {}", describe(&e))))?;
        serde_json::from_slice(&body)
            .map_err(|e| Refused::Failed(format!("the reply is not {what}: {e}")))
    }
}

/// Posts the outbox's batches to the callback URL until the final one is recorded.
#[derive(Debug)]
pub struct Sender {
    callback: Callback,
    outbox: Arc<Outbox>,
    directives: mpsc::UnboundedSender<Directive>,
    /// The largest inbox count the dispatcher has told.
    inbox: watch::Sender<u64>,
    settings: SenderSettings,
}

impl Sender {
    /// A sender for `job`'s callback with the attempt's `token`, taking batches from `outbox` and telling the
    /// runner what the dispatcher wants through `directives`.
    pub fn new(
        job: &Job,
        token: Token,
        outbox: Arc<Outbox>,
        directives: mpsc::UnboundedSender<Directive>,
        settings: SenderSettings,
    ) -> Result<Self> {
        Ok(Self {
            callback: Callback::new(job, token, &settings)?,
            outbox,
            directives,
            inbox: watch::Sender::new(0),
            settings,
        })
    }

    /// How many messages the job's inbox holds, as the dispatcher's latest answers tell it
    /// (it only grows; it changes only when it grows). The sender drops its side when
    /// delivery ends.
    pub fn inbox(&self) -> watch::Receiver<u64> {
        self.inbox.subscribe()
    }

    /// The routes, client and token this sender posts with, for the conversation's requests.
    pub fn callback(&self) -> Callback {
        self.callback.clone()
    }

    /// Delivers batches until the final event is recorded or delivery must end.
    pub async fn run(self) -> Delivery {
        let mut backoff = Backoff::new(self.settings.min_backoff, self.settings.max_backoff);
        while let Some(batch) = self.outbox.next_batch().await {
            let mut tries = 0u32;
            loop {
                tries += 1;
                match self.post(&batch).await {
                    Answer::Recorded { stop, inbox } => {
                        if tries > 1 {
                            tracing::info!(
                                first_seq = batch.first_seq,
                                tries,
                                "events delivered again"
                            );
                        }
                        backoff.reset();
                        if let Some(count) = inbox {
                            self.publish_inbox(count);
                        }
                        if stop {
                            tracing::info!("the dispatcher asks to stop the agent");
                            self.direct(Directive::Stop);
                        }
                        break;
                    }
                    Answer::Gone(status) => {
                        tracing::warn!(status, "the dispatcher no longer wants this attempt");
                        self.direct(Directive::Gone { status });
                        return Delivery::Gone { status };
                    }
                    Answer::Unauthorized(status) => {
                        tracing::error!(status, "the dispatcher refused the job token");
                        self.direct(Directive::Unauthorized { status });
                        return Delivery::Unauthorized { status };
                    }
                    Answer::Failed(reason) => {
                        let delay = backoff.next_delay();
                        if let Some(finished_at) = self.outbox.finished_at() {
                            let waited = finished_at.elapsed();
                            if waited + delay > self.settings.final_delivery {
                                tracing::error!(first_seq = batch.first_seq, tries, %reason, "giving up delivering the final events");
                                return Delivery::GaveUp { waited };
                            }
                        }
                        tracing::warn!(
                            first_seq = batch.first_seq,
                            tries,
                            %reason,
                            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                            "delivering events failed; will retry"
                        );
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
        Delivery::Delivered
    }

    /// Publishes `count` when it is more than was known: messages are never taken back, and
    /// an answer that arrives late must not make the count go back.
    fn publish_inbox(&self, count: u64) {
        self.inbox.send_if_modified(|known| {
            let grown = count > *known;
            if grown {
                *known = count;
            }
            grown
        });
    }

    fn direct(&self, directive: Directive) {
        // The runner has stopped listening only once the agent is done; then it no
        // longer matters.
        let _ = self.directives.send(directive);
    }

    async fn post(&self, batch: &RunnerBatch) -> Answer {
        let callback = &self.callback;
        let response = callback
            .client
            .post(callback.events.clone())
            .bearer_auth(callback.token.expose())
            .json(batch)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => return Answer::Failed(describe(&e)),
        };
        let status = response.status();
        match status {
            StatusCode::CONFLICT | StatusCode::GONE => return Answer::Gone(status.as_u16()),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Answer::Unauthorized(status.as_u16())
            }
            _ => {}
        }
        let body = response.bytes().await;
        if !status.is_success() {
            let detail = body
                .ok()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned())
                .unwrap_or_default();
            return Answer::Failed(format!("HTTP {status}: {detail}"));
        }
        match body {
            Ok(body) => match serde_json::from_slice::<RunnerReply>(&body) {
                Ok(reply) => Answer::Recorded {
                    stop: reply.stop,
                    inbox: Some(reply.inbox),
                },
                Err(e) => {
                    // The events were recorded; only the advice is unreadable.
                    tracing::warn!(error = %e, "the dispatcher's reply is not a RunnerReply");
                    Answer::Recorded {
                        stop: false,
                        inbox: None,
                    }
                }
            },
            Err(e) => Answer::Failed(format!("reading the reply: {}", describe(&e))),
        }
    }
}

/// The runner's HTTP client: each request bounded by the settings' timeout; trusting the
/// system's roots (`SSL_CERT_FILE` overrides them) and `extra_ca`.
pub fn http_client(
    settings: &SenderSettings,
    extra_ca: Option<&ExtraCa>,
) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(settings.request_timeout)
        .connect_timeout(settings.request_timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("agent-runner/", env!("CARGO_PKG_VERSION")));
    for certificate in extra_ca.map(ExtraCa::certificates).unwrap_or_default() {
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().map_err(Error::HttpClient)
}

/// Exponential backoff: `min`, doubling after each failure, never above `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to `min`, after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_maximum_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let delays: Vec<u128> = (0..9).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
