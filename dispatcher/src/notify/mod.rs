//! Replies to where a job came from: Slack, GitHub, GitLab, Jira.
//!
//! Every state change of a job from a webhook puts a reply in the outbox (`notify`, a Redis
//! stream with the consumer group `notifiers`) in the same Lua script as the change. Every
//! dispatcher runs [`run`]: it takes replies from the outbox, renders them
//! ([`message::Message`]) and posts them ([`providers`]). A reply the provider refuses for
//! a passing reason (a timeout, a 5xx, a 429) waits in `notify:delayed` with exponential
//! backoff and is tried again, up to `sources.replies.max_attempts`; one a dispatcher took
//! and never finished (it died) is taken over after [`STALE`]. So a Slack or Jira outage
//! delays replies and loses none.
//!
//! The agent's summary, links and output and the requester's task are untrusted text: a
//! reply carries them only through [`neutralise`], which escapes them for each provider's
//! markup, drops links that are not absolute http(s) URLs and caps lengths.
//!
//! [`pulls`] opens the pull (merge) request of a job's pushed branch, through the same
//! providers' APIs, when its runner reports the push.

pub mod message;
pub mod neutralise;
pub mod providers;
pub mod pulls;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::metrics::{seconds_between, Stage};
use crate::telemetry::chain;
use message::Message;
use providers::SendError;
use queue::{Job, JobState, Origin, Reply, ReplyBody};

/// A reply taken by a notifier that has not finished it after this long is taken over.
pub const STALE: Duration = Duration::from_secs(60);
/// Slack takes at most this many posts per `response_url`...
pub const RESPONSE_URL_POSTS: u64 = 5;
/// ...within this long of the command.
pub const RESPONSE_URL_LIFETIME_MS: i64 = 30 * 60 * 1000;

/// At most `max` characters of `text`, with `…` when cut.
pub fn short(text: &str, max: usize) -> String {
    crate::webhooks::command::truncate(text, max)
}

/// What became of one delivery.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The provider took it (or there was nothing to say).
    Done,
    /// Try again later.
    Retry(String),
}

/// The notifier of one dispatcher.
pub struct Notifier {
    ctx: Arc<Context>,
    http: reqwest::Client,
}

impl Notifier {
    /// A notifier with its HTTP client.
    pub fn new(ctx: Arc<Context>) -> Self {
        let timeout = Duration::from_secs(ctx.settings.sources.replies.timeout_secs);
        Self {
            http: providers::client(timeout),
            ctx,
        }
    }

    /// The dashboard's page of a job, when the dispatcher has a public URL.
    fn job_url(&self, job_id: &str) -> Option<String> {
        let base = self.ctx.settings.server.public_url.trim_end_matches('/');
        (!base.is_empty()).then(|| format!("{base}/#/jobs/{job_id}"))
    }

    /// The delay before try number `tries + 1`: exponential from the base, capped, with
    /// jitter so a provider coming back is not hit by every reply at once.
    pub fn backoff(&self, tries: u32) -> Duration {
        let replies = &self.ctx.settings.sources.replies;
        let base = replies.backoff_base_ms as f64;
        let max = (replies.backoff_max_secs * 1000) as f64;
        let delay = (base * 2f64.powi(tries.min(30) as i32)).min(max);
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        Duration::from_millis((delay * jitter) as u64)
    }

    /// The job a reply is about, with where its replies go; else the outcome of the reply
    /// (done: the job or its origin is gone; retry: Redis did not answer).
    async fn job_with_origin(&self, job_id: &str) -> Result<(Job, Origin), Outcome> {
        let job = match self.ctx.queue.get(job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => return Err(done("the job is gone")),
            Err(e) => return Err(Outcome::Retry(format!("reading the job: {e}"))),
        };
        match job.origin.clone() {
            Some(origin) => Ok((job, origin)),
            None => Err(done("the job has no origin")),
        }
    }

    /// Delivers one reply.
    async fn deliver(&self, reply: &Reply) -> Outcome {
        let queue = &self.ctx.queue;
        let result = match &reply.body {
            ReplyBody::State {
                job_id,
                state,
                attempt,
            } => {
                let (job, origin) = match self.job_with_origin(job_id).await {
                    Ok(found) => found,
                    Err(outcome) => return outcome,
                };
                // A "started" reply that arrives after the end says nothing new.
                if *state == JobState::Running && job.state.is_terminal() {
                    return done("the job has ended since");
                }
                let lines = if matches!(state, JobState::Failed | JobState::TimedOut) {
                    queue
                        .last_log_lines(job_id, self.ctx.settings.sources.replies.log_lines)
                        .await
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                let message =
                    Message::for_state(&job, *state, *attempt, self.job_url(job_id), lines);
                let sent = self.send(&origin, &message, Some(&job)).await;
                if let (Ok(()), Some(ended)) = (&sent, job.finished_at) {
                    if state.is_terminal() {
                        let seconds = seconds_between(ended, queue::now_ms());
                        self.ctx.observe_stage(Stage::Reply, &job, seconds);
                    }
                }
                sent
            }
            ReplyBody::Question {
                job_id,
                attempt,
                question,
            } => {
                let (job, origin) = match self.job_with_origin(job_id).await {
                    Ok(found) => found,
                    Err(outcome) => return outcome,
                };
                // Answered (or ended) before the reply went out: nothing to ask any more.
                let Some(open) = job
                    .question
                    .as_ref()
                    .filter(|q| q.id == *question && q.attempt == *attempt)
                else {
                    return done("the question is no longer open");
                };
                let command = &self.ctx.settings.sources.command;
                let message = Message::question(&job, open, self.job_url(job_id), command);
                self.send(&origin, &message, Some(&job)).await
            }
            ReplyBody::Said { job_id, text } => {
                let (job, origin) = match self.job_with_origin(job_id).await {
                    Ok(found) => found,
                    Err(outcome) => return outcome,
                };
                if job.state.is_terminal() {
                    return done("the job has ended since");
                }
                let message = Message::said(&job, text);
                self.send(&origin, &message, Some(&job)).await
            }
            ReplyBody::AlreadyRunning { job_id, origin } => {
                let job = match queue.get(job_id).await {
                    Ok(Some(job)) => job,
                    Ok(None) => return done("the job is gone"),
                    Err(e) => return Outcome::Retry(format!("reading the job: {e}")),
                };
                let message = Message::already_running(&job, self.job_url(job_id));
                self.send(origin, &message, None).await
            }
            ReplyBody::Text {
                origin,
                text,
                response_url,
            } => {
                let mut message = Message::text(text.clone());
                message.ephemeral = response_url.is_some();
                match (origin, response_url) {
                    (_, Some(url)) => {
                        let sources = &self.ctx.settings.sources;
                        providers::slack_response_url(&self.http, sources, url, &message).await
                    }
                    (origin, None) => self.send(origin, &message, None).await,
                }
            }
            ReplyBody::Unreadable(why) => return done(&format!("unreadable entry: {why}")),
        };
        match result {
            Ok(()) => Outcome::Done,
            Err(e) if e.retryable => Outcome::Retry(e.message),
            Err(e) => {
                warn!(error = %e.message, "a reply was refused for good; dropping it");
                Outcome::Done
            }
        }
    }

    /// Posts `message` to `origin`. For Slack, through the job's `response_url` while Slack
    /// takes it (five posts in thirty minutes), else `chat.postMessage`.
    async fn send(
        &self,
        origin: &Origin,
        message: &Message,
        job: Option<&Job>,
    ) -> Result<(), SendError> {
        let sources = &self.ctx.settings.sources;
        match origin {
            Origin::Slack {
                channel, thread_ts, ..
            } => {
                if let Some(job) = job {
                    if let Some(url) = &job.response_url {
                        let young = queue::now_ms() - job.created_at < RESPONSE_URL_LIFETIME_MS;
                        let posts =
                            self.ctx
                                .queue
                                .count_response_post(&job.id)
                                .await
                                .map_err(|e| SendError {
                                    retryable: true,
                                    message: format!("counting posts: {e}"),
                                })?;
                        if young && posts <= RESPONSE_URL_POSTS {
                            match providers::slack_response_url(&self.http, sources, url, message)
                                .await
                            {
                                Err(e) if !e.retryable => {
                                    debug!(error = %chain(&e), "response_url refused; posting with the bot token")
                                }
                                other => return other,
                            }
                        }
                    }
                }
                providers::slack_post_message(
                    &self.http,
                    sources,
                    channel,
                    thread_ts.as_deref(),
                    message,
                )
                .await
            }
            Origin::Github { repo, issue } => {
                providers::github_comment(&self.http, sources, repo, *issue, message).await
            }
            Origin::Gitlab { project, issue } => {
                providers::gitlab_note(&self.http, sources, project, *issue, message).await
            }
            Origin::Jira { issue } => {
                providers::jira_comment(&self.http, sources, issue, message).await
            }
        }
    }

    /// Delivers a reply and records what became of it.
    async fn handle(&self, reply: Reply) {
        let queue = &self.ctx.queue;
        let max = self.ctx.settings.sources.replies.max_attempts;
        let outcome = self.deliver(&reply).await;
        let recorded = match &outcome {
            Outcome::Done => queue.reply_done(&reply.entry).await,
            Outcome::Retry(why) if reply.tries + 1 >= max => {
                warn!(error = %why, tries = reply.tries + 1, "giving up on a reply");
                self.ctx
                    .metrics
                    .replies
                    .get_or_create(&label("given_up"))
                    .inc();
                queue.reply_done(&reply.entry).await
            }
            Outcome::Retry(why) => {
                let delay = self.backoff(reply.tries);
                info!(error = %why, tries = reply.tries + 1, retry_in_ms = delay.as_millis() as u64, "a reply will be tried again");
                self.ctx
                    .metrics
                    .replies
                    .get_or_create(&label("retried"))
                    .inc();
                queue.reply_later(&reply, delay).await
            }
        };
        if outcome == Outcome::Done {
            self.ctx.metrics.replies.get_or_create(&label("done")).inc();
        }
        if let Err(e) = recorded {
            // The entry stays pending and is taken over after STALE: sent at least once.
            warn!(error = %chain(&e), "recording a reply failed");
        }
    }
}

fn done(why: &str) -> Outcome {
    debug!(why, "nothing to reply");
    Outcome::Done
}

fn label(outcome: &str) -> crate::metrics::ReplyLabels {
    crate::metrics::ReplyLabels {
        outcome: outcome.to_string(),
    }
}

/// Delivers replies until shutdown; every dispatcher runs one.
pub async fn run(ctx: Arc<Context>) {
    let notifier = Notifier::new(ctx.clone());
    let consumer = ctx.consumer.clone();
    let mut conn = None;
    let mut ready = false;
    while !ctx.shutdown.is_cancelled() {
        if !ready {
            match ctx.queue.ensure_notify_group().await {
                Ok(()) => ready = true,
                Err(e) => {
                    debug!(error = %chain(&e), "the outbox is not reachable yet");
                    pause(&ctx, Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        if conn.is_none() {
            match ctx.queue.dedicated_connection().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    debug!(error = %chain(&e), "no connection for the outbox yet");
                    pause(&ctx, Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        if let Err(e) = ctx.queue.promote_replies().await {
            debug!(error = %chain(&e), "promoting due replies failed");
        }
        let Some(c) = conn.as_mut() else { continue };
        let claimed = tokio::select! {
            claimed = ctx.queue.claim_replies(c, &consumer, 16, STALE, Duration::from_secs(1)) => claimed,
            _ = ctx.shutdown.cancelled() => break,
        };
        match claimed {
            Ok(replies) => {
                // Replies of one batch go out side by side: a slow provider does not hold up
                // the others. Shutdown waits for the batch (each call has a timeout).
                futures::future::join_all(replies.into_iter().map(|r| notifier.handle(r))).await;
            }
            Err(e) => {
                debug!(error = %chain(&e), "reading the outbox failed");
                conn = None;
                pause(&ctx, Duration::from_secs(1)).await;
            }
        }
    }
}

async fn pause(ctx: &Context, by: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(by) => {}
        _ = ctx.shutdown.cancelled() => {}
    }
}
