//! GitHub: `POST /webhooks/github`. Verified by `X-Hub-Signature-256`, deduplicated by the
//! digest of the signed body (`X-GitHub-Delivery` is not signed, so it only names the
//! delivery in logs); `ping` is answered; an `issues` event labelling an issue with the
//! trigger label, or an `issue_comment` starting with the command, starts a job when the
//! sender's role on the repository allows it ([`super::access`]). Replies are issue
//! comments ([`crate::notify`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use secrecy::ExposeSecret;
use tracing::instrument;

use super::access::{Actor, ActorKind};
use super::journal::{self, Route, Verified};
use super::signature::verify_hub;
use super::{
    disabled, handle_issue_delivery, header, json_body, refused, required, required_number,
    text_at, IssueEvent, Parsed, PayloadError, Source,
};
use crate::api::error::ApiError;
use crate::context::AppState;
use queue::Origin;

/// Parses a delivery of event `event` (`X-GitHub-Event`). Never panics, whatever the body.
pub fn parse(event: &str, body: &[u8]) -> Result<Parsed, PayloadError> {
    if event == "ping" {
        return Ok(Parsed::Ping);
    }
    if event != "issues" && event != "issue_comment" {
        return Ok(Parsed::Ignore(format!("{event} events are not triggers")));
    }
    let value = json_body(body)?;
    let action = required(&value, "/action")?;
    let repo = required(&value, "/repository/full_name")?;
    let number = required_number(&value, "/issue/number")?;
    let mut issue = IssueEvent {
        source: Source::Github,
        scope: repo.clone(),
        ticket: format!("{repo}#{number}"),
        origin: Origin::Github {
            repo: repo.clone(),
            issue: number,
        },
        title: text_at(&value, "/issue/title"),
        description: text_at(&value, "/issue/body"),
        url: text_at(&value, "/issue/html_url"),
        requester: text_at(&value, "/sender/login"),
        actor: sender(&value),
        labels_added: Vec::new(),
        status_entered: None,
        comment: None,
    };
    match (event, action.as_str()) {
        ("issues", "labeled") => {
            issue.labels_added = vec![required(&value, "/label/name")?];
        }
        ("issue_comment", "created") => {
            // Bots (agentsmith's own replies among them) do not start jobs.
            if text_at(&value, "/sender/type").as_deref() == Some("Bot") {
                return Ok(Parsed::Ignore("comments by bots are not triggers".into()));
            }
            issue.comment = Some(required(&value, "/comment/body")?);
            issue.url = text_at(&value, "/comment/html_url").or(issue.url);
        }
        (_, action) => {
            return Ok(Parsed::Ignore(format!(
                "{event} with action {action} is not a trigger"
            )))
        }
    }
    Ok(Parsed::Issue(Box::new(issue)))
}

/// Who sent the event: their login, and whether GitHub says they are a bot (an app).
fn sender(value: &serde_json::Value) -> Option<Actor> {
    let login = text_at(value, "/sender/login")?;
    let kind = match text_at(value, "/sender/type").as_deref() {
        Some("Bot") => ActorKind::Bot,
        _ => ActorKind::Person,
    };
    Some(Actor {
        id: login.clone(),
        name: login,
        kind,
    })
}

/// `POST /webhooks/github`.
#[instrument(skip_all, fields(source = "github", delivery_id))]
pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let settings = &state.settings.sources.github;
    if !settings.enabled {
        return Err(disabled(Source::Github));
    }
    verify_hub(
        "X-Hub-Signature-256",
        settings.webhook_secret.expose_secret(),
        header(&headers, "x-hub-signature-256"),
        &body,
    )
    .map_err(|e| refused(Source::Github, e))?;
    let delivery = header(&headers, "x-github-delivery");
    tracing::Span::current().record("delivery_id", delivery.unwrap_or(""));
    let verified = Verified::new(Route::Github, body)
        .event(header(&headers, "x-github-event"))
        .delivery_id(delivery);
    journal::handle(&state, verified).await
}

/// A verified delivery, live or replayed: its event type, then the ticket sources' path.
pub(super) async fn process(state: &AppState, delivery: &Verified) -> Result<Response, ApiError> {
    let event = delivery
        .event
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("missing X-GitHub-Event header"))?;
    handle_issue_delivery(state, parse(event, &delivery.body), &delivery.digest).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labeled(label: &str) -> Vec<u8> {
        json!({
            "action": "labeled",
            "issue": {"number": 7, "title": "Checkout fails", "body": "Steps...",
                      "html_url": "https://github.com/acme/shop/issues/7", "user": {"login": "ann"}},
            "label": {"name": label},
            "repository": {"full_name": "acme/shop"},
            "sender": {"login": "ann", "type": "User"}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_labelled_issue_becomes_an_issue_event() {
        let Parsed::Issue(event) = parse("issues", &labeled("agent")).unwrap() else {
            panic!("not an issue event")
        };
        assert_eq!(event.ticket, "acme/shop#7");
        assert_eq!(event.scope, "acme/shop");
        assert_eq!(event.labels_added, vec!["agent".to_string()]);
        assert_eq!(event.title.as_deref(), Some("Checkout fails"));
        assert_eq!(
            event.origin,
            Origin::Github {
                repo: "acme/shop".into(),
                issue: 7
            }
        );
    }

    #[test]
    fn pings_other_events_and_other_actions_are_not_triggers() {
        assert_eq!(parse("ping", b"{}").unwrap(), Parsed::Ping);
        assert!(matches!(parse("push", b"{}"), Ok(Parsed::Ignore(_))));
        let closed = String::from_utf8(labeled("agent"))
            .unwrap()
            .replace("labeled", "closed");
        assert!(matches!(
            parse("issues", closed.as_bytes()),
            Ok(Parsed::Ignore(_))
        ));
    }

    #[test]
    fn bot_comments_are_not_triggers() {
        let body = json!({
            "action": "created",
            "issue": {"number": 7},
            "comment": {"body": "/agent fix"},
            "repository": {"full_name": "acme/shop"},
            "sender": {"login": "agentsmith[bot]", "type": "Bot"}
        });
        assert!(matches!(
            parse("issue_comment", body.to_string().as_bytes()),
            Ok(Parsed::Ignore(_))
        ));
    }

    #[test]
    fn malformed_bodies_name_the_problem() {
        assert!(parse("issues", b"not json")
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
        let err = parse(
            "issues",
            br#"{"action":"labeled","repository":{"full_name":"a/b"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/issue/number"), "{err}");
    }
}
