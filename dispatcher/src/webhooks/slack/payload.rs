//! What Slack sends, parsed: slash commands, Events API deliveries and button clicks.

use std::collections::HashMap;

use serde_json::Value;

use crate::webhooks::PayloadError;

/// A slash command's fields that agentsmith reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlashCommand {
    /// The command's name (`/agent`).
    pub command: String,
    /// What followed it.
    pub text: String,
    /// Who typed it (user id).
    pub user_id: String,
    /// Their name.
    pub user_name: String,
    /// Where (channel id).
    pub channel_id: String,
    /// Where answers go for the next 30 minutes.
    pub response_url: Option<String>,
    /// Unique per invocation: the delivery id.
    pub trigger_id: Option<String>,
}

/// Parses a slash command's form body. Never panics.
pub fn parse_command(body: &[u8]) -> Result<SlashCommand, PayloadError> {
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let field = |k: &'static str| {
        form.get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or(PayloadError::MissingField(k))
    };
    Ok(SlashCommand {
        command: field("command")?,
        text: form.get("text").cloned().unwrap_or_default(),
        user_id: field("user_id")?,
        user_name: form
            .get("user_name")
            .cloned()
            .unwrap_or_else(|| form.get("user_id").cloned().unwrap_or_default()),
        channel_id: field("channel_id")?,
        response_url: form
            .get("response_url")
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .cloned(),
        trigger_id: form.get("trigger_id").filter(|t| !t.is_empty()).cloned(),
    })
}

/// An Events API delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlackEvent {
    /// The endpoint check when the URL is saved: echo the challenge.
    UrlVerification(String),
    /// A bot or app mentioned the app (the event has a `bot_id`): ignored unless a project
    /// lists the bot.
    BotMention {
        /// The delivery id.
        event_id: String,
        /// The bot's id (`B…`).
        bot_id: String,
        /// Where.
        channel: String,
        /// The thread to answer in.
        thread_ts: String,
        /// The text without the leading mention.
        text: String,
    },
    /// Someone mentioned the app.
    Mention {
        /// The delivery id.
        event_id: String,
        /// Who.
        user: String,
        /// Where.
        channel: String,
        /// The thread to answer in (the mention's own ts when it is not in one).
        thread_ts: String,
        /// The message's own ts (equal to `thread_ts` when it is not in a thread).
        ts: String,
        /// The text without the leading mention.
        text: String,
    },
    /// Someone replied in a thread (a `message` event with a `thread_ts`, from a person):
    /// for the job started there, if one was (an answer, or a message to its agent).
    ThreadReply {
        /// The delivery id.
        event_id: String,
        /// Who.
        user: String,
        /// Where.
        channel: String,
        /// The thread.
        thread_ts: String,
        /// The reply's own ts: the same message mentioning the app also comes as a mention.
        ts: String,
        /// The reply without its leading mentions.
        text: String,
        /// Whether it began by mentioning someone (the app's mention comes as a mention too).
        addressed: bool,
    },
    /// Anything else.
    Other(String),
}

/// Parses an Events API body. Never panics.
pub fn parse_event(body: &[u8]) -> Result<SlackEvent, PayloadError> {
    let value = crate::webhooks::json_body(body)?;
    match value.get("type").and_then(Value::as_str) {
        Some("url_verification") => Ok(SlackEvent::UrlVerification(crate::webhooks::required(
            &value,
            "/challenge",
        )?)),
        Some("event_callback") => {
            let kind = crate::webhooks::required(&value, "/event/type")?;
            // A person's plain reply in a thread (no subtype: not an edit, a join, a bot).
            let plain = crate::webhooks::text_at(&value, "/event/subtype").is_none()
                && crate::webhooks::text_at(&value, "/event/bot_id").is_none();
            if kind == "message" && plain {
                if let Some(thread_ts) = crate::webhooks::text_at(&value, "/event/thread_ts") {
                    let text = crate::webhooks::required(&value, "/event/text")?;
                    return Ok(SlackEvent::ThreadReply {
                        event_id: crate::webhooks::required(&value, "/event_id")?,
                        user: crate::webhooks::required(&value, "/event/user")?,
                        channel: crate::webhooks::required(&value, "/event/channel")?,
                        thread_ts,
                        ts: crate::webhooks::required(&value, "/event/ts")?,
                        addressed: text.trim_start().starts_with("<@"),
                        text: strip_mentions(&text),
                    });
                }
            }
            if kind != "app_mention" {
                return Ok(SlackEvent::Other(format!("{kind} events are not triggers")));
            }
            let ts = crate::webhooks::required(&value, "/event/ts")?;
            let text = crate::webhooks::required(&value, "/event/text")?;
            if let Some(bot_id) = crate::webhooks::text_at(&value, "/event/bot_id") {
                return Ok(SlackEvent::BotMention {
                    event_id: crate::webhooks::required(&value, "/event_id")?,
                    bot_id,
                    channel: crate::webhooks::required(&value, "/event/channel")?,
                    thread_ts: crate::webhooks::text_at(&value, "/event/thread_ts").unwrap_or(ts),
                    text: strip_mentions(&text),
                });
            }
            Ok(SlackEvent::Mention {
                event_id: crate::webhooks::required(&value, "/event_id")?,
                user: crate::webhooks::required(&value, "/event/user")?,
                channel: crate::webhooks::required(&value, "/event/channel")?,
                thread_ts: crate::webhooks::text_at(&value, "/event/thread_ts")
                    .unwrap_or_else(|| ts.clone()),
                ts,
                text: strip_mentions(&text),
            })
        }
        Some(other) => Ok(SlackEvent::Other(format!("{other} is not handled"))),
        None => Err(PayloadError::MissingText("/type".into())),
    }
}

/// The text of a mention without the leading `<@U…>` mentions.
fn strip_mentions(text: &str) -> String {
    let mut rest = text.trim_start();
    while let Some(after) = rest.strip_prefix("<@") {
        match after.find('>') {
            Some(end) => rest = after[end + 1..].trim_start(),
            None => break,
        }
    }
    rest.trim().to_string()
}

/// A button click.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonClick {
    /// `cancel` or `retry`.
    pub action: String,
    /// The job (the button's value).
    pub job_id: String,
    /// Who clicked.
    pub user: String,
    /// Where.
    pub channel: String,
    /// Where to answer.
    pub response_url: Option<String>,
}

/// Parses an interaction's form body (`payload=<json>`); `Ok(None)` for interactions that
/// are not button clicks. Never panics.
pub fn parse_interaction(body: &[u8]) -> Result<Option<ButtonClick>, PayloadError> {
    let payload = form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or(PayloadError::MissingField("payload"))?;
    let value =
        crate::webhooks::json_body(payload.as_bytes()).map_err(|error| PayloadError::InField {
            field: "payload",
            error: Box::new(error),
        })?;
    if value.get("type").and_then(Value::as_str) != Some("block_actions") {
        return Ok(None);
    }
    let mut action = crate::webhooks::required(&value, "/actions/0/action_id")?;
    // A question's choices are `answer:<n>` (Slack wants each action id of a message unique).
    if action.starts_with("answer:") {
        action = "answer".into();
    }
    if action != "cancel" && action != "retry" && action != "answer" {
        return Ok(None);
    }
    Ok(Some(ButtonClick {
        action,
        job_id: crate::webhooks::required(&value, "/actions/0/value")?,
        user: crate::webhooks::required(&value, "/user/id")?,
        channel: crate::webhooks::text_at(&value, "/channel/id")
            .or_else(|| crate::webhooks::text_at(&value, "/container/channel_id"))
            .unwrap_or_default(),
        response_url: crate::webhooks::text_at(&value, "/response_url"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slash_commands_parse_from_the_form() {
        let body = b"command=%2Fagent&text=fix+PAY-12&user_id=U1&user_name=ann&channel_id=C1&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F1&trigger_id=t.1";
        let c = parse_command(body).unwrap();
        assert_eq!(c.text, "fix PAY-12");
        assert_eq!(
            c.response_url.as_deref(),
            Some("https://hooks.slack.com/commands/1")
        );
        assert_eq!(c.trigger_id.as_deref(), Some("t.1"));
        assert!(parse_command(b"text=fix")
            .unwrap_err()
            .to_string()
            .contains("command"));
    }

    #[test]
    fn mentions_lose_the_leading_mention_and_keep_the_thread() {
        let body = json!({"type": "event_callback", "event_id": "Ev1",
            "event": {"type": "app_mention", "user": "U1", "channel": "C1", "ts": "1.5",
                      "text": "<@UBOT> fix PAY-12"}});
        let SlackEvent::Mention {
            text,
            thread_ts,
            event_id,
            ..
        } = parse_event(body.to_string().as_bytes()).unwrap()
        else {
            panic!("not a mention")
        };
        assert_eq!(
            (text.as_str(), thread_ts.as_str(), event_id.as_str()),
            ("fix PAY-12", "1.5", "Ev1")
        );
        let check = json!({"type": "url_verification", "challenge": "abc"});
        assert_eq!(
            parse_event(check.to_string().as_bytes()).unwrap(),
            SlackEvent::UrlVerification("abc".into())
        );
    }

    #[test]
    fn button_clicks_parse_and_other_interactions_are_none() {
        let payload = json!({"type": "block_actions", "user": {"id": "U1"},
            "channel": {"id": "C1"}, "response_url": "https://hooks.slack.com/actions/1",
            "actions": [{"action_id": "cancel", "value": "abc123"}]});
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish();
        let click = parse_interaction(body.as_bytes()).unwrap().unwrap();
        assert_eq!(
            (click.action.as_str(), click.job_id.as_str()),
            ("cancel", "abc123")
        );
        let other = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", r#"{"type":"view_submission"}"#)
            .finish();
        assert!(matches!(parse_interaction(other.as_bytes()), Ok(None)));
        assert!(parse_interaction(b"x=1")
            .unwrap_err()
            .to_string()
            .contains("payload"));
    }
}
