//! Questions and progress messages: what an agent hands the runner (files in its work
//! directory, written by `agent-runner ask` and `say` or by the agent itself), and what the
//! runner and the dispatcher say to each other about them.
//!
//! The agent writes `<name>.json` (an [`Ask`]) into [`crate::env::ASK_DIR`]; the runner
//! posts it as a [`crate::RunnerEvent::Question`], asks the dispatcher for its answer
//! ([`AnswerRequest`], [`AnswerReply`]) and writes `<name>.answer.json` (an [`AskReply`])
//! beside it. A progress message is `<name>.json` (a [`Say`]) in [`crate::env::SAY_DIR`],
//! which the runner posts and removes. Names are what [`valid_file_name`] allows; files
//! ending in `.tmp` are still being written and are left alone.

use serde::{Deserialize, Serialize};

/// The longest question the dispatcher records, in bytes.
pub const MAX_QUESTION_BYTES: usize = 4096;
/// The most choices a question may offer.
pub const MAX_CHOICES: usize = 10;
/// The longest choice, in bytes.
pub const MAX_CHOICE_BYTES: usize = 200;
/// The longest answer, in bytes.
pub const MAX_ANSWER_BYTES: usize = 4096;
/// The longest progress message, in bytes.
pub const MAX_SAY_BYTES: usize = 2048;
/// How long a question waits for its answer when the agent does not say.
pub const DEFAULT_ASK_TIMEOUT_SECS: u64 = 30 * 60;
/// The longest a question may wait (the job's own time limit still applies).
pub const MAX_ASK_TIMEOUT_SECS: u64 = 24 * 60 * 60;
/// The most questions one attempt may ask.
pub const MAX_QUESTIONS_PER_ATTEMPT: u32 = 50;
/// The longest question file (or message file) the runner reads, in bytes.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// A question, as the agent writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    /// The question, for people.
    pub question: String,
    /// The answers offered as buttons (free text is accepted too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// The answer taken when nobody answers in time; without one the job fails then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// How long to wait for an answer ([`DEFAULT_ASK_TIMEOUT_SECS`] when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// A progress message, as the agent writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Say {
    /// The message.
    pub text: String,
}

/// What the runner writes beside a question once it has its answer (or cannot ask it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AskReply {
    /// The answer, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Who answered (`api`, a Slack user, …); absent for a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Whether nobody answered in time and this is the question's default.
    #[serde(default)]
    pub defaulted: bool,
    /// Why there is no answer (the question was refused, or the job is ending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to a question, as the dispatcher records and tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The question's id (the runner's name for it).
    pub question: String,
    /// The answer.
    pub text: String,
    /// Who answered; empty for a default.
    #[serde(default)]
    pub by: String,
    /// Whether nobody answered in time and this is the question's default.
    #[serde(default)]
    pub defaulted: bool,
    /// When (ms since the epoch).
    #[serde(default)]
    pub at: u64,
}

/// What the runner posts to `/internal/jobs/{id}/answer` (with the attempt's token) to learn
/// whether its question has been answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerRequest {
    /// [`crate::PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The attempt that asked.
    pub attempt: u32,
    /// The question's id.
    pub question: String,
}

/// The dispatcher's answer to an [`AnswerRequest`] (409 with `stop` when the attempt is no
/// longer wanted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerReply {
    /// The answer, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    /// The attempt is no longer wanted: stop the agent.
    #[serde(default)]
    pub stop: bool,
}

/// The longest message to a running agent, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// The most messages a job's inbox takes.
pub const MAX_INBOX_MESSAGES: u64 = 200;

/// A message people sent a running agent (steering it), numbered from 1 per job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxMessage {
    /// Its number in the job's inbox, from 1.
    pub seq: u64,
    /// The message.
    pub text: String,
    /// Who sent it.
    #[serde(default)]
    pub by: String,
    /// When (ms since the epoch).
    #[serde(default)]
    pub at: u64,
}

/// What the runner posts to `/internal/jobs/{id}/inbox` (with the attempt's token) for the
/// messages after those it has handed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxRequest {
    /// [`crate::PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The attempt asking.
    pub attempt: u32,
    /// The number of the last message it has (0 for none).
    pub after: u64,
}

/// The dispatcher's answer to an [`InboxRequest`] (409 with `stop` when the attempt is no
/// longer wanted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxReply {
    /// The messages after `after`, in order (at most 50; ask again for more).
    #[serde(default)]
    pub messages: Vec<InboxMessage>,
    /// The attempt is no longer wanted: stop the agent.
    #[serde(default)]
    pub stop: bool,
}

/// Whether `name` may name a question or message file: 1 to 64 ASCII letters, digits, '-'
/// and '_' (the part before `.json`).
pub fn valid_file_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ask_file_names_its_unknown_keys_and_takes_the_optional_ones_as_absent() {
        let ask: Ask = serde_json::from_str(r#"{"question":"which?"}"#).unwrap();
        assert_eq!(ask.choices, Vec::<String>::new());
        assert_eq!(ask.timeout_secs, None);
        let e = serde_json::from_str::<Ask>(r#"{"question":"q","choises":["a"]}"#).unwrap_err();
        assert!(e.to_string().contains("choises"), "{e}");
    }

    #[test]
    fn file_names_are_short_plain_words() {
        assert!(valid_file_name("q-1_a"));
        for bad in ["", "../x", "a.b", "a b", &"x".repeat(65)] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
    }
}
