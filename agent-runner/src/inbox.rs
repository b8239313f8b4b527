//! The messages people send the agent while it runs (steering it: "use the v2 client
//! instead"), handed on as files in its inbox directory ([`contract::env::INBOX_DIR`]).
//!
//! The dispatcher keeps a job's messages, numbered from 1, and tells in every answer to an
//! events batch how many there are; the sender publishes that count
//! ([`crate::sender::Sender::inbox`]). Whenever it is more than the messages handed on, the
//! [`Postman`] asks for the rest ([`Callback::inbox`], `after` the last one handed on, and
//! again at once while a reply brings some and more are due: the dispatcher gives a page at
//! a time) and writes each as `<seq:06>.json` (the [`InboxMessage`] as JSON) through
//! [`crate::mailbox`]: created beside its name, given to the agent's user, renamed into
//! place, never over anything already there. Each one handed on is said in the job's output
//! (`agent-runner: a message from ann: …`).
//!
//! A message is handed on once per attempt: one numbered no later than the last handed on is
//! skipped, and so is one whose name the agent has already taken (a file or a link is left as
//! it is, and the job's output says so). A 409 stops the agent as a `stop` in an events reply
//! would; other failures are retried from [`RETRY_MIN`], doubling to [`RETRY_MAX`], and
//! logged the first time and every tenth. The postman starts and ends with the conversation
//! ([`crate::conversation::Conversation`]): messages that come after the agent has ended are
//! not written.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use contract::conversation::MAX_MESSAGE_BYTES;
use contract::{InboxMessage, InboxRequest, OutputStream, PROTOCOL_VERSION};
use tokio::sync::{mpsc, watch};

use crate::conversation::cut;
use crate::mailbox::Mailbox;
use crate::outbox::Outbox;
use crate::sender::{Backoff, Callback, Directive, InboxPoll};

/// The first wait before asking again after a failure; it doubles after each.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest wait between asks while they fail.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// How much of a message the job's output shows, in characters.
const PREVIEW_CHARS: usize = 80;

/// The file a message is written to: its number in six digits, then `.json`.
pub fn file_name(seq: u64) -> String {
    format!("{seq:06}.json")
}

/// Fetches the messages sent to the agent and writes them into its inbox directory.
#[derive(Debug)]
pub struct Postman {
    inbox: InboxDir,
    attempt: u32,
    callback: Callback,
    directives: mpsc::UnboundedSender<Directive>,
}

impl Postman {
    /// A postman for the inbox directory `inbox`, asking `callback` for the messages of
    /// `attempt`, saying each in `outbox`, and telling the supervisor through `directives`
    /// when the dispatcher no longer wants the attempt.
    pub fn new(
        inbox: Mailbox,
        attempt: u32,
        outbox: Arc<Outbox>,
        callback: Callback,
        directives: mpsc::UnboundedSender<Directive>,
    ) -> Self {
        Self {
            inbox: InboxDir::new(inbox, outbox),
            attempt,
            callback,
            directives,
        }
    }

    /// Hands on messages whenever `count` (how many the job's inbox holds) is more than
    /// those handed on; until the dispatcher no longer wants the attempt, or the count's
    /// sender is gone (delivery is over). Cancelled with the conversation otherwise.
    pub async fn run(mut self, mut count: watch::Receiver<u64>) {
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        let mut failures = 0u32;
        loop {
            let due = *count.borrow_and_update();
            if due <= self.inbox.handed_on {
                backoff.reset();
                failures = 0;
                if count.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let before = self.inbox.handed_on;
            let failure = match self.callback.inbox(&self.request()).await {
                InboxPoll::Messages(messages) => match self.inbox.hand_on(messages) {
                    Ok(()) if self.inbox.handed_on > before => {
                        // Perhaps one page of several: ask again at once while more are due.
                        backoff.reset();
                        failures = 0;
                        continue;
                    }
                    Ok(()) => {
                        // The dispatcher counts messages it does not give yet: not a failure,
                        // but no reason to ask again at once either.
                        tracing::debug!(due, handed_on = before, "the inbox gave nothing new");
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                    Err(e) => format!("writing into the agent's inbox: {e}"),
                },
                InboxPoll::Stop => {
                    tracing::info!(
                        "the dispatcher no longer wants this attempt; stopping the agent"
                    );
                    self.direct(Directive::Stop);
                    return;
                }
                InboxPoll::Unauthorized(status) => {
                    tracing::error!(status, "the dispatcher refused the job token");
                    self.direct(Directive::Unauthorized { status });
                    return;
                }
                InboxPoll::Failed(reason) => reason,
            };
            failures += 1;
            let delay = backoff.next_delay();
            // The first failure and then every tenth: the log is not flooded.
            if failures % 10 == 1 {
                tracing::warn!(
                    failures,
                    reason = %failure,
                    after = before,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "handing on the messages sent to the agent failed; will try again"
                );
            }
            tokio::time::sleep(delay).await;
        }
    }

    fn request(&self) -> InboxRequest {
        InboxRequest {
            version: PROTOCOL_VERSION,
            attempt: self.attempt,
            after: self.inbox.handed_on,
        }
    }

    fn direct(&self, directive: Directive) {
        // The supervisor stops listening only once the agent is done; then it no longer
        // matters.
        let _ = self.directives.send(directive);
    }
}

/// The agent's inbox directory and how far it has been filled.
#[derive(Debug)]
struct InboxDir {
    mailbox: Mailbox,
    outbox: Arc<Outbox>,
    /// The number of the last message handed on (0 for none).
    handed_on: u64,
}

impl InboxDir {
    fn new(mailbox: Mailbox, outbox: Arc<Outbox>) -> Self {
        Self {
            mailbox,
            outbox,
            handed_on: 0,
        }
    }

    /// Writes `messages` that come after those handed on, in order. An error leaves the
    /// message it stopped at, and those after it, to be fetched and written again.
    fn hand_on(&mut self, messages: Vec<InboxMessage>) -> io::Result<()> {
        if messages.iter().all(|m| m.seq <= self.handed_on) {
            return Ok(());
        }
        let dir = self.mailbox.open()?;
        for mut message in messages {
            if message.seq <= self.handed_on {
                continue;
            }
            let seq = message.seq;
            let name = file_name(seq);
            message.text = cut(message.text, MAX_MESSAGE_BYTES);
            match dir.write_new_json(&name, &message) {
                Ok(()) => {
                    tracing::info!(seq, by = %message.by, bytes = message.text.len(), "a message for the agent is in its inbox");
                    self.tell(announcement(&message));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Never written over: it may be a link the agent planted, or its own file.
                    tracing::warn!(seq, file = name, "the agent's inbox has a file under a message's name; not writing the message");
                    self.tell(format!(
                        "not handing on message {seq}: something is at {name} already"
                    ));
                }
                Err(e) => return Err(e),
            }
            self.handed_on = seq;
        }
        Ok(())
    }

    /// Says `line` in the job's output (after `agent-runner: `).
    fn tell(&self, line: String) {
        self.outbox
            .push_line(OutputStream::Stderr, format!("agent-runner: {line}"));
    }
}

/// What the job's output says of a message handed on: who sent it and how it begins, on one
/// line.
fn announcement(message: &InboxMessage) -> String {
    let mut preview: String = message
        .text
        .chars()
        .take(PREVIEW_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if message.text.chars().nth(PREVIEW_CHARS).is_some() {
        preview.push('…');
    }
    if message.by.is_empty() {
        format!("a message: {preview}")
    } else {
        format!("a message from {}: {preview}", message.by)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use contract::RunnerEvent;
    use testkit::temp::TempDir;

    use super::*;
    use crate::outbox::Limits;
    use crate::workspace::{INBOX_DIR, RUNNER_DIR};

    fn message(seq: u64, text: &str) -> InboxMessage {
        InboxMessage {
            seq,
            text: text.into(),
            by: "ann".into(),
            at: 1_700_000_000_000,
        }
    }

    /// An inbox directory in a fresh work directory, and its outbox.
    struct Filled {
        tmp: TempDir,
        inbox: InboxDir,
        outbox: Arc<Outbox>,
    }

    impl Filled {
        fn new() -> Self {
            let tmp = TempDir::new("inbox");
            std::fs::create_dir_all(tmp.path().join(RUNNER_DIR).join(INBOX_DIR)).unwrap();
            let outbox = Arc::new(Outbox::new(1, Limits::default()));
            let mailbox = Mailbox::new(tmp.path().to_path_buf(), INBOX_DIR, None);
            let inbox = InboxDir::new(mailbox, Arc::clone(&outbox));
            Self { tmp, inbox, outbox }
        }

        fn dir(&self) -> PathBuf {
            self.tmp.path().join(RUNNER_DIR).join(INBOX_DIR)
        }

        fn files(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(self.dir())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }

        fn read(&self, seq: u64) -> InboxMessage {
            let bytes = std::fs::read(self.dir().join(file_name(seq))).unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }

        async fn lines(&self) -> Vec<String> {
            self.outbox
                .finish(contract::RunOutcome::Exited { code: 0 }, None);
            let mut lines = Vec::new();
            while let Some(batch) = self.outbox.next_batch().await {
                for event in batch.events {
                    if let RunnerEvent::Log { line, .. } = event {
                        lines.push(line);
                    }
                }
            }
            lines
        }
    }

    #[tokio::test]
    async fn messages_are_written_in_order_once_each_and_said_in_the_jobs_output() {
        let mut filled = Filled::new();
        filled
            .inbox
            .hand_on(vec![message(1, "use the v2 client"), message(2, "and v3")])
            .unwrap();
        // A reply that repeats a message handed on does not write it again.
        filled
            .inbox
            .hand_on(vec![message(2, "changed"), message(3, "done?")])
            .unwrap();

        assert_eq!(filled.inbox.handed_on, 3);
        assert_eq!(
            filled.files(),
            ["000001.json", "000002.json", "000003.json"]
        );
        assert_eq!(filled.read(1), message(1, "use the v2 client"));
        assert_eq!(filled.read(2).text, "and v3");
        assert_eq!(
            filled.lines().await,
            [
                "agent-runner: a message from ann: use the v2 client",
                "agent-runner: a message from ann: and v3",
                "agent-runner: a message from ann: done?",
            ]
        );
    }

    #[tokio::test]
    async fn a_link_under_a_messages_name_is_neither_followed_nor_replaced() {
        let mut filled = Filled::new();
        let outside = TempDir::new("inbox-outside");
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "someone else's").unwrap();
        std::os::unix::fs::symlink(&secret, filled.dir().join("000001.json")).unwrap();
        std::os::unix::fs::symlink(&secret, filled.dir().join("000002.json.tmp")).unwrap();

        filled
            .inbox
            .hand_on(vec![message(1, "first"), message(2, "second")])
            .unwrap();

        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "someone else's");
        let link = std::fs::symlink_metadata(filled.dir().join("000001.json")).unwrap();
        assert!(
            link.file_type().is_symlink(),
            "the agent's link was replaced"
        );
        assert_eq!(filled.read(2).text, "second");
        assert_eq!(filled.files(), ["000001.json", "000002.json"]);
        assert_eq!(filled.inbox.handed_on, 2, "a taken name is not tried again");
        let lines = filled.lines().await;
        assert_eq!(
            lines[0],
            "agent-runner: not handing on message 1: something is at 000001.json already"
        );
        assert_eq!(lines[1], "agent-runner: a message from ann: second");
    }

    #[test]
    fn a_missing_inbox_is_an_error_and_nothing_counts_as_handed_on() {
        let mut filled = Filled::new();
        std::fs::remove_dir(filled.dir()).unwrap();
        assert!(filled.inbox.hand_on(vec![message(1, "lost?")]).is_err());
        assert_eq!(filled.inbox.handed_on, 0, "it is fetched and written again");
    }

    #[test]
    fn the_jobs_output_shows_the_start_of_a_message_on_one_line() {
        let long = format!("line one\nline two {}", "é".repeat(100));
        let said = announcement(&InboxMessage {
            by: String::new(),
            ..message(1, &long)
        });
        assert!(
            said.starts_with("a message: line one line two éé"),
            "{said}"
        );
        assert!(said.ends_with("é…"), "{said}");
        assert_eq!(
            said.chars().count(),
            "a message: ".len() + PREVIEW_CHARS + 1
        );
        assert_eq!(
            announcement(&message(1, "short")),
            "a message from ann: short"
        );
    }

    #[test]
    fn message_files_are_named_by_their_number_in_six_digits() {
        assert_eq!(file_name(1), "000001.json");
        assert_eq!(file_name(200), "000200.json");
    }
}
