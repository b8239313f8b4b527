//! Jira Cloud: `POST /webhooks/jira`. Verified by `X-Hub-Signature` (`sha256=`, the admin
//! webhook scheme), deduplicated by the digest of the signed body
//! (`X-Atlassian-Webhook-Identifier` names the delivery in logs); an issue created with or
//! updated to the trigger label or a trigger status, or a comment starting with the
//! command, starts a job when the project's access allows its author ([`super::access`]).
//! Replies are issue comments ([`crate::notify`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use secrecy::ExposeSecret;
use serde_json::Value;
use tracing::instrument;

use super::access::{Actor, ActorKind};
use super::journal::{self, Route, Verified};
use super::signature::verify_hub;
use super::{
    disabled, handle_issue_delivery, header, json_body, refused, required, text_at, IssueEvent,
    Parsed, PayloadError, Source,
};
use crate::api::error::ApiError;
use crate::context::AppState;
use queue::Origin;

/// The plain text of a description or comment body: a string (REST v2 and webhooks), or
/// Atlassian Document Format (v3), whose text nodes are joined.
fn plain_text(value: Option<&Value>) -> Option<String> {
    fn walk(node: &Value, out: &mut String, depth: usize) {
        if depth > 64 {
            return;
        }
        if let Some(text) = node.get("text").and_then(Value::as_str) {
            out.push_str(text);
        }
        if let Some(children) = node.get("content").and_then(Value::as_array) {
            for child in children {
                walk(child, out, depth + 1);
            }
            if node.get("type").and_then(Value::as_str) == Some("paragraph") {
                out.push('\n');
            }
        }
    }
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        node @ Value::Object(_) => {
            let mut out = String::new();
            walk(node, &mut out, 0);
            Some(out.trim().to_string()).filter(|s| !s.is_empty())
        }
        _ => None,
    }
}

/// The words of a changelog label value (`"bug agent"`).
fn words(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_str)
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The account at `pointer` (`/user`, `/comment/author`): its id, display name, and kind
/// (`accountType` `app` is a bot, `customer` a service desk customer).
fn account(value: &Value, pointer: &str) -> Option<Actor> {
    let id = text_at(value, &format!("{pointer}/accountId"))?;
    let name = text_at(value, &format!("{pointer}/displayName")).unwrap_or_else(|| id.clone());
    let kind = match text_at(value, &format!("{pointer}/accountType")).as_deref() {
        Some("app") => ActorKind::Bot,
        Some("customer") => ActorKind::Customer,
        _ => ActorKind::Person,
    };
    Some(Actor { id, name, kind })
}

/// Parses a delivery (its `webhookEvent` says what it is). `base_url` is the site, for the
/// link back. Never panics.
pub fn parse(body: &[u8], base_url: &str) -> Result<Parsed, PayloadError> {
    let value = json_body(body)?;
    let event = required(&value, "/webhookEvent")?;
    if !matches!(
        event.as_str(),
        "jira:issue_created" | "jira:issue_updated" | "comment_created"
    ) {
        return Ok(Parsed::Ignore(format!("{event} events are not triggers")));
    }
    let key = required(&value, "/issue/key")?;
    let project = text_at(&value, "/issue/fields/project/key")
        .or_else(|| key.split_once('-').map(|(p, _)| p.to_string()))
        .ok_or_else(|| PayloadError::MissingText("/issue/fields/project/key".into()))?;
    let mut issue = IssueEvent {
        source: Source::Jira,
        scope: project,
        ticket: key.clone(),
        origin: Origin::Jira { issue: key.clone() },
        title: text_at(&value, "/issue/fields/summary"),
        description: plain_text(value.pointer("/issue/fields/description")),
        url: Some(base_url)
            .filter(|b| !b.is_empty())
            .map(|b| format!("{}/browse/{key}", b.trim_end_matches('/'))),
        requester: text_at(&value, "/user/displayName")
            .or_else(|| text_at(&value, "/comment/author/displayName")),
        actor: account(&value, "/user"),
        labels_added: Vec::new(),
        status_entered: None,
        comment: None,
    };
    match event.as_str() {
        "jira:issue_created" => {
            issue.labels_added = value
                .pointer("/issue/fields/labels")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            issue.status_entered = text_at(&value, "/issue/fields/status/name");
        }
        "jira:issue_updated" => {
            let items = value
                .pointer("/changelog/items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for item in &items {
                match item.get("field").and_then(Value::as_str) {
                    Some("labels") => {
                        let before = words(item.get("fromString"));
                        issue.labels_added.extend(
                            words(item.get("toString"))
                                .into_iter()
                                .filter(|l| !before.contains(l)),
                        );
                    }
                    Some("status") => {
                        issue.status_entered = text_at(item, "/toString");
                    }
                    _ => {}
                }
            }
            if issue.labels_added.is_empty() && issue.status_entered.is_none() {
                return Ok(Parsed::Ignore(
                    "the update changed neither labels nor status".into(),
                ));
            }
        }
        _ => {
            let body = plain_text(value.pointer("/comment/body"))
                .ok_or_else(|| PayloadError::MissingText("/comment/body".into()))?;
            issue.comment = Some(body);
            issue.requester = text_at(&value, "/comment/author/displayName").or(issue.requester);
            issue.actor = account(&value, "/comment/author").or(issue.actor);
        }
    }
    Ok(Parsed::Issue(Box::new(issue)))
}

/// `POST /webhooks/jira`.
#[instrument(skip_all, fields(source = "jira", delivery_id))]
pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let settings = &state.settings.sources.jira;
    if !settings.enabled {
        return Err(disabled(Source::Jira));
    }
    verify_hub(
        "X-Hub-Signature",
        settings.webhook_secret.expose_secret(),
        header(&headers, "x-hub-signature"),
        &body,
    )
    .map_err(|e| refused(Source::Jira, e))?;
    let delivery = header(&headers, "x-atlassian-webhook-identifier");
    tracing::Span::current().record("delivery_id", delivery.unwrap_or(""));
    let verified = Verified::new(Route::Jira, body).delivery_id(delivery);
    journal::handle(&state, verified).await
}

/// A verified delivery, live or replayed: the ticket sources' path.
pub(super) async fn process(state: &AppState, delivery: &Verified) -> Result<Response, ApiError> {
    let base_url = &state.settings.sources.jira.base_url;
    handle_issue_delivery(state, parse(&delivery.body, base_url), &delivery.digest).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_update_adding_the_label_and_moving_status_is_read_from_the_changelog() {
        let body = json!({
            "webhookEvent": "jira:issue_updated",
            "user": {"displayName": "Ann"},
            "issue": {"key": "PAY-12", "fields": {"summary": "Refunds fail",
                      "description": "Since Monday", "project": {"key": "PAY"}}},
            "changelog": {"items": [
                {"field": "labels", "fromString": "bug", "toString": "bug agent"},
                {"field": "status", "fromString": "To Do", "toString": "Ready for agent"}
            ]}
        });
        let Parsed::Issue(event) =
            parse(body.to_string().as_bytes(), "https://acme.atlassian.net/").unwrap()
        else {
            panic!("not an issue event")
        };
        assert_eq!(event.labels_added, vec!["agent".to_string()]);
        assert_eq!(event.status_entered.as_deref(), Some("Ready for agent"));
        assert_eq!(event.scope, "PAY");
        assert_eq!(
            event.url.as_deref(),
            Some("https://acme.atlassian.net/browse/PAY-12")
        );
        assert_eq!(event.description.as_deref(), Some("Since Monday"));
    }

    #[test]
    fn comments_in_document_format_become_text() {
        let body = json!({
            "webhookEvent": "comment_created",
            "issue": {"key": "PAY-3", "fields": {"project": {"key": "PAY"}}},
            "comment": {"author": {"displayName": "Bob"}, "body": {"type": "doc", "version": 1,
                "content": [{"type": "paragraph", "content": [{"type": "text", "text": "/agent fix"}]}]}}
        });
        let Parsed::Issue(event) = parse(body.to_string().as_bytes(), "").unwrap() else {
            panic!("not an issue event")
        };
        assert_eq!(event.comment.as_deref(), Some("/agent fix"));
        assert_eq!(event.requester.as_deref(), Some("Bob"));
    }

    #[test]
    fn other_events_and_unrelated_updates_are_not_triggers() {
        assert!(matches!(
            parse(br#"{"webhookEvent":"jira:issue_deleted"}"#, ""),
            Ok(Parsed::Ignore(_))
        ));
        let body = json!({
            "webhookEvent": "jira:issue_updated",
            "issue": {"key": "PAY-12", "fields": {}},
            "changelog": {"items": [{"field": "assignee", "toString": "Ann"}]}
        });
        assert!(matches!(
            parse(body.to_string().as_bytes(), ""),
            Ok(Parsed::Ignore(_))
        ));
        assert!(parse(br#"{"webhookEvent":"comment_created"}"#, "")
            .unwrap_err()
            .to_string()
            .contains("/issue/key"));
    }
}
