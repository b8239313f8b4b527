//! GitLab: `POST /webhooks/gitlab`. Verified by `X-Gitlab-Token`, deduplicated by the
//! digest of the body (`Idempotency-Key` and `X-Gitlab-Event-UUID` name the delivery in
//! logs); an Issue Hook that adds the trigger label, or a Note Hook on an issue starting
//! with the command, starts a job when the user's access level in the project allows it
//! ([`super::access`]). Replies are issue notes ([`crate::notify`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use secrecy::ExposeSecret;
use serde_json::Value;
use tracing::instrument;

use super::access::{Actor, ActorKind};
use super::journal::{self, Route, Verified};
use super::signature::verify_gitlab;
use super::{
    disabled, handle_issue_delivery, header, json_body, refused, required, required_number,
    text_at, IssueEvent, Parsed, PayloadError, Source,
};
use crate::api::error::ApiError;
use crate::context::AppState;
use queue::Origin;

/// The titles of a label list (`[{"title": ...}]`), if it is one.
fn titles(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|l| l.get("title").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Parses a delivery (the body's `object_kind` says what it is). Never panics.
pub fn parse(body: &[u8]) -> Result<Parsed, PayloadError> {
    let value = json_body(body)?;
    let kind = required(&value, "/object_kind")?;
    if kind != "issue" && kind != "note" {
        return Ok(Parsed::Ignore(format!("{kind} events are not triggers")));
    }
    let project = required(&value, "/project/path_with_namespace")?;
    // The issue's fields are under object_attributes in an Issue Hook, under issue in a
    // Note Hook (whose object_attributes are the note's).
    let (issue, iid) = if kind == "issue" {
        (
            "/object_attributes",
            required_number(&value, "/object_attributes/iid")?,
        )
    } else {
        let noteable = text_at(&value, "/object_attributes/noteable_type").unwrap_or_default();
        if noteable != "Issue" {
            return Ok(Parsed::Ignore(format!(
                "notes on {noteable:?} are not triggers"
            )));
        }
        ("/issue", required_number(&value, "/issue/iid")?)
    };
    let mut event = IssueEvent {
        source: Source::Gitlab,
        scope: project.clone(),
        ticket: format!("{project}#{iid}"),
        origin: Origin::Gitlab {
            project,
            issue: iid,
        },
        title: text_at(&value, &format!("{issue}/title")),
        description: text_at(&value, &format!("{issue}/description")),
        url: text_at(&value, "/object_attributes/url"),
        requester: text_at(&value, "/user/username"),
        actor: user(&value),
        labels_added: Vec::new(),
        status_entered: None,
        comment: None,
    };
    if kind == "note" {
        event.comment = Some(required(&value, "/object_attributes/note")?);
        return Ok(Parsed::Issue(Box::new(event)));
    }
    let (previous, current) = (
        titles(value.pointer("/changes/labels/previous")),
        titles(value.pointer("/changes/labels/current")),
    );
    // A new issue's labels all count as added.
    event.labels_added = if text_at(&value, "/object_attributes/action").as_deref() == Some("open")
        && current.is_empty()
    {
        titles(value.pointer("/labels"))
    } else {
        current
            .into_iter()
            .filter(|l| !previous.contains(l))
            .collect()
    };
    if event.labels_added.is_empty() {
        return Ok(Parsed::Ignore("no label was added".into()));
    }
    Ok(Parsed::Issue(Box::new(event)))
}

/// Whether a username is one of GitLab's bots: a project, group or service account token's
/// user (`project_5_bot_…`, `group_9_bot_…`, `service_account_…`) or one of GitLab's own
/// (`support-bot`, `alert-bot`, `ghost`, …). Webhooks carry no bot flag, so the name is all
/// there is to go by.
pub fn is_bot_username(username: &str) -> bool {
    let scoped = |kind: &str| {
        username
            .strip_prefix(kind)
            .and_then(|rest| rest.split_once("_bot"))
            .is_some_and(|(id, _)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    };
    const GITLAB_BOTS: [&str; 8] = [
        "ghost",
        "support-bot",
        "alert-bot",
        "visual-review-bot",
        "automation-bot",
        "security-bot",
        "gitlab-llm-bot",
        "duo-developer",
    ];
    scoped("project_")
        || scoped("group_")
        || username.starts_with("service_account_")
        || GITLAB_BOTS.contains(&username)
}

/// Who did it: their user id (what the members API takes), username, and whether the name
/// is a bot's.
fn user(value: &Value) -> Option<Actor> {
    let username = text_at(value, "/user/username")?;
    let id = value
        .pointer("/user/id")
        .and_then(Value::as_u64)
        .map(|id| id.to_string())
        .unwrap_or_default();
    let kind = if is_bot_username(&username) {
        ActorKind::Bot
    } else {
        ActorKind::Person
    };
    Some(Actor {
        id,
        name: username,
        kind,
    })
}

/// `POST /webhooks/gitlab`.
#[instrument(skip_all, fields(source = "gitlab", delivery_id))]
pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let settings = &state.settings.sources.gitlab;
    if !settings.enabled {
        return Err(disabled(Source::Gitlab));
    }
    verify_gitlab(
        settings.webhook_token.expose_secret(),
        header(&headers, "x-gitlab-token"),
    )
    .map_err(|e| refused(Source::Gitlab, e))?;
    let delivery =
        header(&headers, "idempotency-key").or_else(|| header(&headers, "x-gitlab-event-uuid"));
    tracing::Span::current().record("delivery_id", delivery.unwrap_or(""));
    let verified = Verified::new(Route::Gitlab, body)
        .event(header(&headers, "x-gitlab-event"))
        .delivery_id(delivery);
    journal::handle(&state, verified).await
}

/// A verified delivery, live or replayed: the ticket sources' path.
pub(super) async fn process(state: &AppState, delivery: &Verified) -> Result<Response, ApiError> {
    handle_issue_delivery(state, parse(&delivery.body), &delivery.digest).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_issue_hook_adding_a_label_is_an_issue_event() {
        let body = json!({
            "object_kind": "issue",
            "user": {"username": "ann"},
            "project": {"path_with_namespace": "acme/shop"},
            "object_attributes": {"iid": 4, "title": "Cart empty", "description": "d",
                                  "url": "https://gitlab.example/acme/shop/-/issues/4", "action": "update"},
            "changes": {"labels": {"previous": [{"title": "bug"}],
                                   "current": [{"title": "bug"}, {"title": "agent"}]}}
        });
        let Parsed::Issue(event) = parse(body.to_string().as_bytes()).unwrap() else {
            panic!("not an issue event")
        };
        assert_eq!(event.labels_added, vec!["agent".to_string()]);
        assert_eq!(event.ticket, "acme/shop#4");
        assert_eq!(event.requester.as_deref(), Some("ann"));
    }

    #[test]
    fn a_note_on_an_issue_carries_the_comment_and_others_are_ignored() {
        let note = |noteable: &str| {
            json!({
                "object_kind": "note",
                "user": {"username": "bob"},
                "project": {"path_with_namespace": "acme/shop"},
                "object_attributes": {"note": "/agent fix", "noteable_type": noteable,
                                      "url": "https://gitlab.example/n/1"},
                "issue": {"iid": 4, "title": "Cart empty"}
            })
            .to_string()
        };
        let Parsed::Issue(event) = parse(note("Issue").as_bytes()).unwrap() else {
            panic!("not an issue event")
        };
        assert_eq!(event.comment.as_deref(), Some("/agent fix"));
        assert!(matches!(
            parse(note("MergeRequest").as_bytes()),
            Ok(Parsed::Ignore(_))
        ));
    }

    #[test]
    fn bot_users_are_told_apart_by_their_names() {
        for bot in [
            "project_5_bot_3f2a",
            "project_12_bot",
            "group_9_bot_aa",
            "service_account_group_1_x",
            "support-bot",
            "ghost",
        ] {
            assert!(is_bot_username(bot), "{bot}");
        }
        for person in ["ann", "project_manager_bot", "robot", "group_bot"] {
            assert!(!is_bot_username(person), "{person}");
        }
    }

    #[test]
    fn label_removals_and_other_kinds_are_not_triggers() {
        let body = json!({
            "object_kind": "issue",
            "project": {"path_with_namespace": "acme/shop"},
            "object_attributes": {"iid": 4, "action": "update"},
            "changes": {"labels": {"previous": [{"title": "agent"}], "current": []}}
        });
        assert!(matches!(
            parse(body.to_string().as_bytes()),
            Ok(Parsed::Ignore(_))
        ));
        assert!(matches!(
            parse(br#"{"object_kind":"push"}"#),
            Ok(Parsed::Ignore(_))
        ));
        assert!(parse(b"[]")
            .unwrap_err()
            .to_string()
            .contains("not a JSON object"));
    }
}
