//! The delivery journal, webhook side: every verified delivery is run through its source's
//! path by [`handle`], which then records what was decided ([`queue::Delivery`], stored by
//! the queue), and [`replay`] runs a recorded one through the same path again.
//!
//! What is kept: the route (which says how the body reads), the headers that matter (the
//! event type of GitHub and GitLab, the source's delivery id), the digest of the body as it
//! came (what the delivery is deduplicated by), the actor, the HTTP status, the decision and
//! the job, and the body itself for replays: never a signature or a token (Slack's legacy
//! verification `token` is taken out of its bodies; a Slack body that cannot be read, so
//! cannot be cleaned, is not kept). A Slack `response_url` is kept, as the job keeps it:
//! replies need it, and it expires after 30 minutes. The API never shows a body.
//!
//! Only verified deliveries are recorded (a wrong signature or a disabled source never gets
//! here), on a best-effort basis: a journal that cannot be written is logged and the answer
//! stands, the job in it durable as before. A delivery answered 503 because Redis is away is
//! not recorded: the journal lives there too.
//!
//! A replay skips only the signature (and Slack's timestamp): the admin's token stands for
//! it. It parses, decides, asks who may, and is deduplicated by the original digest, so a
//! delivery that made a job is answered `duplicate` with that job. The journal remembers
//! longer than the dedup window (`sources.dedup_ttl_secs`): a delivery whose entry records a
//! job, or a replay of which made one, is answered `duplicate` with that job without running
//! again. What a replay is for is a delivery that could not go through: a provider that
//! could not say who someone is (503 `access_unchecked`; Slack's polite refusal), a project
//! missing from the configuration, access granted since. The replay is an entry of its own,
//! `replay_of` the first delivery.

use std::time::Instant;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use tracing::{info, warn};

use super::access::{Actor, ActorKind, Refusal, Why};
use super::slack::{self, SlackEvent};
use super::{body_digest, github, gitlab, jira, Parsed, PayloadError, Source};
use crate::api::error::ApiError;
use crate::context::AppState;
use crate::settings::Settings;
use crate::telemetry::chain;
use queue::{new_delivery_id, now_ms, Decision, Delivery, Submission, MAX_DELIVERY_BODY};

/// The webhook routes, each reading its body its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /webhooks/slack/commands`: a form.
    SlackCommands,
    /// `POST /webhooks/slack/events`: JSON.
    SlackEvents,
    /// `POST /webhooks/slack/interactions`: a form with a JSON `payload`.
    SlackInteractions,
    /// `POST /webhooks/github`: JSON, the event type in `X-GitHub-Event`.
    Github,
    /// `POST /webhooks/gitlab`: JSON.
    Gitlab,
    /// `POST /webhooks/jira`: JSON.
    Jira,
}

impl Route {
    /// Every route.
    pub const ALL: [Route; 6] = [
        Route::SlackCommands,
        Route::SlackEvents,
        Route::SlackInteractions,
        Route::Github,
        Route::Gitlab,
        Route::Jira,
    ];

    /// The route after `/webhooks/`, as entries name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::SlackCommands => "slack/commands",
            Route::SlackEvents => "slack/events",
            Route::SlackInteractions => "slack/interactions",
            Route::Github => "github",
            Route::Gitlab => "gitlab",
            Route::Jira => "jira",
        }
    }

    /// The route an entry names.
    pub fn parse(name: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Its source.
    pub fn source(self) -> Source {
        match self {
            Route::SlackCommands | Route::SlackEvents | Route::SlackInteractions => Source::Slack,
            Route::Github => Source::Github,
            Route::Gitlab => Source::Gitlab,
            Route::Jira => Source::Jira,
        }
    }
}

/// Whether `source` is enabled.
fn enabled(settings: &Settings, source: Source) -> bool {
    let sources = &settings.sources;
    match source {
        Source::Slack => sources.slack.enabled,
        Source::Github => sources.github.enabled,
        Source::Gitlab => sources.gitlab.enabled,
        Source::Jira => sources.jira.enabled,
    }
}

/// A verified delivery, as the sources' paths read it: live, or replayed from the journal.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Where it came.
    pub route: Route,
    /// The event type header, when the source sends one.
    pub event: Option<String>,
    /// The source's name for the delivery (a header, or Slack's ids in the body).
    pub delivery_id: Option<String>,
    /// `sha256:<hex>` of the body as it came ([`body_digest`]): what it is deduplicated by,
    /// kept as it was even when the body is replayed without Slack's token.
    pub digest: String,
    /// The body.
    pub body: Bytes,
    /// The first delivery, when this is a replay.
    pub replay_of: Option<String>,
}

impl Verified {
    /// A delivery that has just been verified.
    pub fn new(route: Route, body: Bytes) -> Self {
        Self {
            route,
            event: None,
            delivery_id: None,
            digest: body_digest(&body),
            body,
            replay_of: None,
        }
    }

    /// With its event type header.
    pub fn event(mut self, event: Option<&str>) -> Self {
        self.event = event.map(str::to_string);
        self
    }

    /// With the source's delivery id header.
    pub fn delivery_id(mut self, delivery_id: Option<&str>) -> Self {
        self.delivery_id = delivery_id.map(str::to_string);
        self
    }
}

/// `response` with `decision` attached: the functions that build the answers to deliveries
/// say there what was decided, and the journal reads it.
pub fn decided(mut response: Response, decision: Decision) -> Response {
    response.extensions_mut().insert(decision);
    response
}

/// What a submit decided.
pub fn submitted(submission: &Submission) -> Decision {
    match submission {
        Submission::Created(job) => Decision::Queued {
            job_id: job.id.clone(),
        },
        Submission::Running(job) => Decision::AlreadyRunning {
            job_id: job.id.clone(),
        },
        Submission::Existing(job) => Decision::Duplicate {
            job_id: Some(job.id.clone()),
        },
        Submission::Duplicate { job_id, .. } => Decision::Duplicate {
            job_id: Some(job_id.clone()),
        },
    }
}

/// A refusal as a decision: the rule not met, or why the provider could not be asked.
pub fn refused(refusal: &Refusal) -> Decision {
    let reason = match refusal.why {
        Why::Unchecked => refusal.reason.clone(),
        Why::Bot | Why::NotAllowed => format!("it needs {}", refusal.reason),
    };
    Decision::Refused { reason }
}

/// Runs a verified delivery through its source's path and records what was decided. The
/// answer is the path's, whatever the journal does.
pub async fn handle(state: &AppState, delivery: Verified) -> Result<Response, ApiError> {
    let received = Instant::now();
    let answer = process(state, &delivery).await;
    if !matches!(&answer, Err(error) if redis_away(error)) {
        let (status, decision) = outcome(&answer);
        let entry = entry(&state.settings, &delivery, status, decision);
        record(state, entry, &delivery).await;
    }
    let source = delivery.route.source().as_str();
    state.observe_acknowledgement(source, received.elapsed().as_secs_f64());
    answer
}

/// Whether `error` is the 503 of a Redis that is away: the journal is there too, so such
/// an answer is not recorded.
fn redis_away(error: &ApiError) -> bool {
    error.code == "unavailable"
}

/// The path after verification, per route.
async fn process(state: &AppState, delivery: &Verified) -> Result<Response, ApiError> {
    match delivery.route {
        Route::SlackCommands => slack::command(state, delivery).await,
        Route::SlackEvents => slack::event(state, delivery).await,
        Route::SlackInteractions => slack::interaction(state, delivery).await,
        Route::Github => github::process(state, delivery).await,
        Route::Gitlab => gitlab::process(state, delivery).await,
        Route::Jira => jira::process(state, delivery).await,
    }
}

/// The status and decision of an answer.
fn outcome(answer: &Result<Response, ApiError>) -> (StatusCode, Decision) {
    match answer {
        Ok(response) => {
            let decision = response.extensions().get::<Decision>().cloned();
            debug_assert!(
                decision.is_some(),
                "every answer to a delivery says what was decided"
            );
            let decision = decision.unwrap_or_else(|| Decision::Answered {
                reason: String::new(),
            });
            (response.status(), decision)
        }
        Err(error) => (
            error.status,
            Decision::Error {
                code: error.code.to_string(),
                reason: error.message.clone(),
            },
        ),
    }
}

/// The journal entry of `delivery`, answered `status` with `decision`.
fn entry(
    settings: &Settings,
    delivery: &Verified,
    status: StatusCode,
    decision: Decision,
) -> Delivery {
    let read = read(settings, delivery);
    let actor = read.actor;
    Delivery {
        id: new_delivery_id(),
        at: now_ms(),
        source: delivery.route.source().as_str().to_string(),
        route: delivery.route.as_str().to_string(),
        event: delivery.event.clone(),
        delivery_id: delivery.delivery_id.clone().or(read.delivery_id),
        digest: delivery.digest.clone(),
        actor_name: actor
            .as_ref()
            .filter(|a| a.name != a.id && !a.name.is_empty())
            .map(|a| a.name.clone()),
        actor: actor.map(|a| a.id).filter(|id| !id.is_empty()),
        status: status.as_u16(),
        decision,
        replay_of: delivery.replay_of.clone(),
        replay_job: None,
        body_bytes: delivery.body.len() as u64,
        replayable: false,
    }
}

/// Records `entry` with the body a replay needs, and returns it as recorded; a failure is
/// logged, never answered.
async fn record(state: &AppState, entry: Delivery, delivery: &Verified) -> Delivery {
    let kept = kept_body(delivery.route, &delivery.body);
    let entry = Delivery {
        replayable: kept
            .as_ref()
            .is_some_and(|body| body.len() <= MAX_DELIVERY_BODY),
        ..entry
    };
    let body = kept.unwrap_or_default();
    if let Err(e) = state.queue.record_delivery(&entry, &body).await {
        warn!(
            error = %chain(&e),
            source = %entry.source,
            decision = entry.decision.name(),
            "the delivery could not be recorded in the journal; its answer stands"
        );
    }
    entry
}

/// What the journal reads from a body itself: who acted, and Slack's names of deliveries.
#[derive(Debug, Default)]
struct Read {
    actor: Option<Actor>,
    delivery_id: Option<String>,
}

/// Reads the actor (and Slack's delivery id) the way the source's path does: the parsers
/// are pure and cheap, so the paths need not carry them back.
fn read(settings: &Settings, delivery: &Verified) -> Read {
    let body = &delivery.body;
    let issue = |parsed: Result<Parsed, PayloadError>| Read {
        actor: match parsed {
            Ok(Parsed::Issue(event)) => event.actor,
            _ => None,
        },
        delivery_id: None,
    };
    match delivery.route {
        Route::SlackCommands => slack::parse_command(body)
            .map(|c| Read {
                actor: Some(Actor::person(&c.user_id, &c.user_name)),
                delivery_id: c.trigger_id,
            })
            .unwrap_or_default(),
        Route::SlackEvents => match slack::parse_event(body) {
            Ok(
                SlackEvent::Mention { event_id, user, .. }
                | SlackEvent::ThreadReply { event_id, user, .. },
            ) => Read {
                actor: Some(Actor::person(&user, &user)),
                delivery_id: Some(event_id),
            },
            Ok(SlackEvent::BotMention {
                event_id, bot_id, ..
            }) => Read {
                actor: Some(Actor {
                    id: bot_id.clone(),
                    name: bot_id,
                    kind: ActorKind::Bot,
                }),
                delivery_id: Some(event_id),
            },
            _ => Read::default(),
        },
        Route::SlackInteractions => Read {
            actor: slack::parse_interaction(body)
                .ok()
                .flatten()
                .map(|click| Actor::person(&click.user, &click.user)),
            delivery_id: None,
        },
        Route::Github => issue(github::parse(
            delivery.event.as_deref().unwrap_or_default(),
            body,
        )),
        Route::Gitlab => issue(gitlab::parse(body)),
        Route::Jira => issue(jira::parse(body, &settings.sources.jira.base_url)),
    }
}

/// The body as the journal keeps it: a Slack body without its legacy verification `token`
/// (a credential agentsmith does not use); `None` for a Slack body that cannot be read, and
/// so cannot be cleaned. The other sources' bodies carry no credential.
fn kept_body(route: Route, body: &[u8]) -> Option<Vec<u8>> {
    let without_token = |json: &[u8]| -> Option<String> {
        let mut value: serde_json::Value = serde_json::from_slice(json).ok()?;
        value.as_object_mut()?.remove("token");
        Some(value.to_string())
    };
    let form = |pairs: Vec<(String, String)>| {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.extend_pairs(pairs);
        form.finish().into_bytes()
    };
    let pairs = || -> Vec<(String, String)> {
        form_urlencoded::parse(body)
            .into_owned()
            .filter(|(key, _)| key != "token")
            .collect()
    };
    match route {
        Route::SlackCommands => Some(form(pairs())),
        Route::SlackEvents => without_token(body).map(String::into_bytes),
        Route::SlackInteractions => {
            let pairs = pairs()
                .into_iter()
                .map(|(key, value)| match key.as_str() {
                    "payload" => without_token(value.as_bytes()).map(|clean| (key, clean)),
                    _ => Some((key, value)),
                })
                .collect::<Option<Vec<_>>>()?;
            Some(form(pairs))
        }
        Route::Github | Route::Gitlab | Route::Jira => Some(body.to_vec()),
    }
}

/// Replays entry `id`: through its source's path again, its signature taken as checked
/// (the caller is an admin), deduplicated by its digest; recorded as an entry of its own,
/// which is returned. 404 for an entry that is not kept, 409 for one without its body or of
/// a source that is now disabled.
pub async fn replay(state: &AppState, id: &str) -> Result<Delivery, ApiError> {
    let found = state.queue.delivery(id).await?.ok_or_else(|| {
        ApiError::not_found(
            "unknown_delivery",
            format!("no delivery {id:?} in the journal (entries are kept for queue.retention_secs, the newest queue.deliveries_max_len)"),
        )
    })?;
    let route =
        Route::parse(&found.route).ok_or_else(|| not_replayable(id, "its route is unknown"))?;
    let source = route.source();
    if !enabled(&state.settings, source) {
        return Err(ApiError::conflict(
            "source_disabled",
            format!(
                "the {0} source is not enabled (sources.{0}.enabled), so its deliveries are not replayed",
                source.as_str()
            ),
        ));
    }
    let body = if found.replayable {
        state.queue.delivery_body(id).await?
    } else {
        None
    };
    let body = body.ok_or_else(|| {
        not_replayable(
            id,
            &format!(
                "its body is not kept (larger than {} KiB, or a Slack body that could not be read)",
                MAX_DELIVERY_BODY / 1024
            ),
        )
    })?;
    let first = found.replay_of.clone().unwrap_or_else(|| found.id.clone());
    let delivery = Verified {
        route,
        event: found.event.clone(),
        delivery_id: found.delivery_id.clone(),
        digest: found.digest.clone(),
        body: Bytes::from(body),
        replay_of: Some(first.clone()),
    };
    let (status, decision) = match known_job(state, &found, &first).await? {
        Some(job_id) => (
            StatusCode::OK,
            Decision::Duplicate {
                job_id: Some(job_id),
            },
        ),
        None => match process(state, &delivery).await {
            Err(error) if redis_away(&error) => return Err(error),
            answer => outcome(&answer),
        },
    };
    let replayed = record(
        state,
        entry(&state.settings, &delivery, status, decision),
        &delivery,
    )
    .await;
    info!(
        delivery = %first,
        replay = %replayed.id,
        decision = replayed.decision.name(),
        job_id = replayed.decision.job_id().unwrap_or(""),
        "delivery replayed"
    );
    Ok(replayed)
}

/// The job the delivery already made or was answered with, as the journal remembers it:
/// the entry's, the first delivery's, or one a replay of it made.
async fn known_job(
    state: &AppState,
    entry: &Delivery,
    first: &str,
) -> Result<Option<String>, ApiError> {
    let made = |e: &Delivery| {
        match &e.decision {
            Decision::Queued { job_id } => Some(job_id.clone()),
            Decision::Duplicate { job_id } => job_id.clone(),
            _ => None,
        }
        .or_else(|| e.replay_job.clone())
    };
    if let Some(job) = made(entry) {
        return Ok(Some(job));
    }
    if first == entry.id {
        return Ok(None);
    }
    Ok(state.queue.delivery(first).await?.as_ref().and_then(made))
}

/// 409: the entry cannot be replayed, and why.
fn not_replayable(id: &str, why: &str) -> ApiError {
    ApiError::conflict(
        "not_replayable",
        format!("delivery {id} cannot be replayed: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_bodies_are_kept_without_their_verification_token() {
        let command = b"token=gIkuvaNzQIHg97ATvDxqgjtO&command=%2Fagent&text=fix+PAY-1&user_id=U1";
        let kept = String::from_utf8(kept_body(Route::SlackCommands, command).unwrap()).unwrap();
        assert!(!kept.contains("gIkuva"), "{kept}");
        assert!(kept.contains("text=fix+PAY-1"), "{kept}");
        let event =
            br#"{"token":"gIkuvaNzQIHg97ATvDxqgjtO","type":"event_callback","event_id":"Ev1"}"#;
        let kept = String::from_utf8(kept_body(Route::SlackEvents, event).unwrap()).unwrap();
        assert!(!kept.contains("gIkuva") && kept.contains("Ev1"), "{kept}");
        let payload = r#"{"token":"gIkuvaNzQIHg97ATvDxqgjtO","type":"block_actions"}"#;
        let click: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", payload)
            .finish();
        let kept = kept_body(Route::SlackInteractions, click.as_bytes()).unwrap();
        let kept = String::from_utf8(kept).unwrap();
        assert!(
            !kept.contains("gIkuva") && kept.contains("block_actions"),
            "{kept}"
        );
        assert!(kept_body(Route::SlackEvents, b"not json").is_none());
        assert_eq!(
            kept_body(Route::Github, b"{\"token\":1}").unwrap(),
            b"{\"token\":1}"
        );
    }

    #[test]
    fn routes_round_trip_through_their_names() {
        for route in Route::ALL {
            assert_eq!(Route::parse(route.as_str()), Some(route));
        }
        assert_eq!(Route::parse("slack"), None);
    }
}
