//! The agent's conversation with people while it runs: its questions, asked one at a time
//! with their answers written back beside them; its progress messages, posted at a
//! bounded rate; and the messages people send it, written into its inbox. The agent leaves
//! questions and progress messages as files (`agent-runner ask` and `say` write them; see
//! [`contract::conversation`]) and finds the messages sent to it as files.
//!
//! Three tasks, started with the agent and ended with it ([`Conversation::end`]):
//!
//! - the watcher looks into the ask and say directories every [`POLL`] (through
//!   [`crate::mailbox`], which reads nothing the agent could turn against the runner). A
//!   question file is checked against the limits of [`contract::conversation`] and handed
//!   to the asker, or answered at once with an error saying what is wrong. A message file
//!   is posted as a [`RunnerEvent::Say`] and removed: [`SAY_BURST`] at once, then one every
//!   [`SAY_EVERY`]; the rest wait in the directory for their turn. A file that is not yet
//!   valid JSON is looked at again for [`PARSE_PATIENCE`] (the agent may still be writing
//!   it without the `.tmp` convention) before it is refused.
//! - the asker takes the questions oldest first, one at a time: it posts each as a
//!   [`RunnerEvent::Question`], asks the dispatcher for the answer every [`ANSWER_POLL`]
//!   ([`Callback::answer`]) and writes `<name>.answer.json`. When the dispatcher no longer
//!   wants the attempt, the agent is stopped as a `stop` in an events reply would.
//! - the postman ([`crate::inbox`]) fetches the messages people send the agent whenever the
//!   dispatcher's answers count more than it has handed on, and writes each, once, as
//!   `<seq:06>.json` into the inbox directory; it too stops the agent on a 409. Ended with
//!   the agent: a message that comes later is not written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use contract::conversation::{
    valid_file_name, DEFAULT_ASK_TIMEOUT_SECS, MAX_ANSWER_BYTES, MAX_ASK_TIMEOUT_SECS, MAX_CHOICES,
    MAX_CHOICE_BYTES, MAX_QUESTIONS_PER_ATTEMPT, MAX_QUESTION_BYTES, MAX_SAY_BYTES,
};
use contract::{
    AgentUser, AnswerRequest, Ask, AskReply, OutputStream, RunnerEvent, Say, PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

use crate::inbox::Postman;
use crate::mailbox::{Content, Identity, Mailbox, Opened};
use crate::outbox::Outbox;
use crate::sender::{AnswerPoll, Backoff, Callback, Directive};
use crate::workspace::{Workspace, ASK_DIR, INBOX_DIR, SAY_DIR};

/// How often the agent's directories are looked into.
pub const POLL: Duration = Duration::from_millis(250);
/// How often the dispatcher is asked for the answer to the open question.
pub const ANSWER_POLL: Duration = Duration::from_secs(1);
/// The longest wait between asks for an answer while the dispatcher fails to answer.
const ANSWER_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long past a question's own timeout the runner waits for the dispatcher to tell its
/// outcome (the default, or a stop) before it gives the agent an error instead.
const ANSWER_MARGIN: Duration = Duration::from_secs(60);
/// How long a file that is not valid JSON is looked at again before it is refused.
pub const PARSE_PATIENCE: Duration = Duration::from_secs(5);
/// How many progress messages are posted at once before the rate limit applies.
pub const SAY_BURST: u32 = 5;
/// Past the burst, at most one progress message this often.
pub const SAY_EVERY: Duration = Duration::from_secs(2);
/// Answers up to this many characters are logged; longer ones by their length only.
const LOGGED_ANSWER_CHARS: usize = 80;
/// The longest name (before `.json`) that still gets an error reply for not being valid:
/// anything longer is not taken for a question at all.
const PLAUSIBLE_NAME_BYTES: usize = 128;

/// The conversation's three tasks, while the agent runs.
#[derive(Debug)]
pub struct Conversation {
    end: oneshot::Sender<()>,
    watcher: JoinHandle<()>,
    asker: JoinHandle<()>,
    postman: JoinHandle<()>,
}

impl Conversation {
    /// Starts watching `workspace`'s ask and say directories (whose files must belong to
    /// `owner` when the agent runs as another user), posting to `outbox`, asking `callback`
    /// for answers to questions of `attempt` and for the messages sent to the agent whenever
    /// `inbox` (the count the sender publishes) grows, and telling the supervisor through
    /// `directives` when the dispatcher no longer wants the attempt.
    pub fn start(
        workspace: &Workspace,
        owner: Option<AgentUser>,
        attempt: u32,
        outbox: Arc<Outbox>,
        callback: Callback,
        directives: mpsc::UnboundedSender<Directive>,
        inbox: watch::Receiver<u64>,
    ) -> Self {
        let workdir = workspace.dir().to_path_buf();
        let ask = Mailbox::new(workdir.clone(), ASK_DIR, owner);
        let say = Mailbox::new(workdir.clone(), SAY_DIR, owner);
        let postman = Postman::new(
            Mailbox::new(workdir, INBOX_DIR, owner),
            attempt,
            Arc::clone(&outbox),
            callback.clone(),
            directives.clone(),
        );
        let (questions_tx, questions) = mpsc::unbounded_channel();
        let (end, ending) = oneshot::channel();
        let watcher = Watcher {
            ask: ask.clone(),
            say,
            outbox: Arc::clone(&outbox),
            questions: questions_tx,
            asked: HashMap::new(),
            refused: HashMap::new(),
            unparsed: HashMap::new(),
            says: SayLimit::new(Instant::now()),
            unreadable: [false; 2],
        };
        let asker = Asker {
            ask,
            attempt,
            outbox,
            callback,
            directives,
            stopping: false,
        };
        Self {
            end,
            watcher: tokio::spawn(watcher.run(ending).in_current_span()),
            asker: tokio::spawn(asker.run(questions).in_current_span()),
            postman: tokio::spawn(postman.run(inbox).in_current_span()),
        }
    }

    /// Ends the conversation once the agent has ended: the messages it left last are still
    /// posted; a question still open is abandoned (its asker is gone with the agent), and so
    /// are messages for it not yet written (the postman writes between its awaits, so no
    /// message is left half written).
    pub async fn end(self) {
        let _ = self.end.send(());
        self.asker.abort();
        self.postman.abort();
        let _ = self.watcher.await;
        let _ = self.asker.await;
        let _ = self.postman.await;
    }
}

/// Checks a question against the limits of [`contract::conversation`]; its timeout in
/// seconds when it passes, what is wrong when it does not.
pub fn check(ask: &Ask) -> Result<u64, String> {
    if ask.question.trim().is_empty() {
        return Err("the question is empty".into());
    }
    if ask.question.len() > MAX_QUESTION_BYTES {
        return Err(format!(
            "the question holds {} bytes, more than the {MAX_QUESTION_BYTES} allowed",
            ask.question.len()
        ));
    }
    if ask.choices.len() > MAX_CHOICES {
        return Err(format!(
            "{} choices, more than the {MAX_CHOICES} allowed",
            ask.choices.len()
        ));
    }
    for choice in &ask.choices {
        if choice.trim().is_empty() {
            return Err("a choice is empty".into());
        }
        if choice.len() > MAX_CHOICE_BYTES {
            return Err(format!(
                "a choice holds {} bytes, more than the {MAX_CHOICE_BYTES} allowed",
                choice.len()
            ));
        }
    }
    if let Some(default) = &ask.default {
        if default.trim().is_empty() {
            return Err("the default is empty".into());
        }
        if default.len() > MAX_ANSWER_BYTES {
            return Err(format!(
                "the default holds {} bytes, more than the {MAX_ANSWER_BYTES} allowed",
                default.len()
            ));
        }
    }
    match ask.timeout_secs.unwrap_or(DEFAULT_ASK_TIMEOUT_SECS) {
        0 => Err("the timeout must be at least 1 second".into()),
        secs if secs > MAX_ASK_TIMEOUT_SECS => Err(format!(
            "the timeout of {secs} seconds is more than the {MAX_ASK_TIMEOUT_SECS} allowed"
        )),
        secs => Ok(secs),
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub(crate) fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// A reply that says why there is no answer.
fn refusal(error: impl Into<String>) -> AskReply {
    AskReply {
        answer: None,
        by: None,
        defaulted: false,
        error: Some(error.into()),
    }
}

/// A question taken from the ask directory, checked, waiting for its turn.
#[derive(Debug)]
struct Question {
    /// The file's name without `.json`.
    id: String,
    ask: Ask,
    timeout_secs: u64,
}

/// Looks into the agent's directories.
struct Watcher {
    ask: Mailbox,
    say: Mailbox,
    outbox: Arc<Outbox>,
    questions: mpsc::UnboundedSender<Question>,
    /// The questions handed to the asker, by name, and the file each was read from.
    asked: HashMap<String, Identity>,
    /// Files answered with an error; a new file under the same name is looked at afresh.
    refused: HashMap<String, Identity>,
    /// Files that were not valid JSON yet, and since when.
    unparsed: HashMap<String, (Identity, Instant)>,
    says: SayLimit,
    /// Whether the ask or say directory could not be opened (said once).
    unreadable: [bool; 2],
}

impl Watcher {
    async fn run(mut self, mut ending: oneshot::Receiver<()>) {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut ending => break,
                _ = poll.tick() => {
                    self.look_at_questions();
                    self.look_at_messages();
                }
            }
        }
        // What the agent said just before it ended still reaches people.
        self.look_at_messages();
    }

    /// Opens `mailbox`, saying once when it cannot be (the agent may have removed it).
    fn open(&mut self, which: usize) -> Option<Opened> {
        let mailbox = if which == 0 { &self.ask } else { &self.say };
        match mailbox.open() {
            Ok(opened) => {
                self.unreadable[which] = false;
                Some(opened)
            }
            Err(e) => {
                if !self.unreadable[which] {
                    tracing::warn!(dir = mailbox.name(), error = %e, "cannot look into the agent's directory");
                    self.unreadable[which] = true;
                }
                None
            }
        }
    }

    fn look_at_questions(&mut self) {
        let Some(mut dir) = self.open(0) else {
            return;
        };
        for name in dir.names() {
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            if stem.ends_with(".answer") {
                continue;
            }
            let Some(identity) = dir.identity(&name) else {
                continue;
            };
            if let Some(seen) = self.asked.get_mut(stem) {
                if *seen != identity {
                    *seen = identity;
                    reply(
                        &dir,
                        stem,
                        &refusal(format!("a question named {stem} was already asked")),
                    );
                }
                continue;
            }
            if self.refused.get(stem) == Some(&identity) {
                continue;
            }
            if !valid_file_name(stem) {
                if plausible(stem) {
                    let error = format!(
                        "{name}: a question's name is 1 to 64 letters, digits, '-' and '_', then .json"
                    );
                    self.refuse(&dir, stem, identity, error);
                }
                continue;
            }
            if let Some(question) = self.take_question(&dir, &name, stem, identity) {
                self.asked.insert(question.id.clone(), identity);
                // The asker ends only with the conversation, and then nobody waits.
                let _ = self.questions.send(question);
            }
        }
    }

    /// Reads and checks the question in `name`, answering with an error when it is not one
    /// to ask; `None` too while it may still be being written.
    fn take_question(
        &mut self,
        dir: &Opened,
        name: &str,
        stem: &str,
        identity: Identity,
    ) -> Option<Question> {
        let ask = match dir.read(name) {
            Content::Gone => return None,
            Content::Refused(reason) => {
                self.refuse(dir, stem, identity, format!("{name}: {reason}"));
                return None;
            }
            Content::Bytes(bytes) => match serde_json::from_slice::<Ask>(&bytes) {
                Ok(ask) => ask,
                Err(e) => {
                    if !self.patient(format!("ask/{name}"), identity) {
                        self.refuse(
                            dir,
                            stem,
                            identity,
                            format!("{name} is not a question: {e}"),
                        );
                    }
                    return None;
                }
            },
        };
        self.unparsed.remove(&format!("ask/{name}"));
        let timeout_secs = match check(&ask) {
            Ok(secs) => secs,
            Err(reason) => {
                self.refuse(dir, stem, identity, format!("{name}: {reason}"));
                return None;
            }
        };
        if self.asked.len() >= MAX_QUESTIONS_PER_ATTEMPT as usize {
            let error = format!(
                "{name}: this attempt has asked the {MAX_QUESTIONS_PER_ATTEMPT} questions allowed"
            );
            self.refuse(dir, stem, identity, error);
            return None;
        }
        Some(Question {
            id: stem.to_string(),
            ask,
            timeout_secs,
        })
    }

    fn refuse(&mut self, dir: &Opened, stem: &str, identity: Identity, error: String) {
        tracing::warn!(question = stem, %error, "refusing the agent's question");
        self.refused.insert(stem.to_string(), identity);
        reply(dir, stem, &refusal(error));
    }

    /// Whether a file that does not parse yet may still be being written: for
    /// [`PARSE_PATIENCE`] after it was first seen as it is.
    fn patient(&mut self, key: String, identity: Identity) -> bool {
        let now = Instant::now();
        let seen = self.unparsed.entry(key).or_insert((identity, now));
        if seen.0 != identity {
            *seen = (identity, now);
        }
        now.duration_since(seen.1) < PARSE_PATIENCE
    }

    fn look_at_messages(&mut self) {
        let Some(mut dir) = self.open(1) else {
            return;
        };
        for name in dir.names() {
            if !name.strip_suffix(".json").is_some_and(valid_file_name) {
                continue;
            }
            if !self.says.ready(Instant::now()) {
                // The rest wait in the directory for their turn.
                return;
            }
            let text = match dir.read(&name) {
                Content::Gone => continue,
                Content::Refused(reason) => {
                    self.drop_message(&dir, &name, &reason);
                    continue;
                }
                Content::Bytes(bytes) => match serde_json::from_slice::<Say>(&bytes) {
                    Ok(say) => say.text,
                    Err(e) => {
                        let key = format!("say/{name}");
                        match dir.identity(&name) {
                            Some(identity) if self.patient(key, identity) => {}
                            _ => self.drop_message(&dir, &name, &format!("not a message: {e}")),
                        }
                        continue;
                    }
                },
            };
            self.unparsed.remove(&format!("say/{name}"));
            // Removed first: a message that cannot be removed is not posted again and again.
            if let Err(e) = dir.remove(&name) {
                tracing::warn!(file = name, error = %e, "cannot remove the agent's message");
                continue;
            }
            let text = cut(text, MAX_SAY_BYTES);
            if text.trim().is_empty() {
                continue;
            }
            self.says.take(Instant::now());
            self.outbox.push(RunnerEvent::Say { text });
        }
    }

    /// Removes a message file that cannot be posted, saying why in the job's log.
    fn drop_message(&mut self, dir: &Opened, name: &str, reason: &str) {
        tracing::warn!(file = name, %reason, "ignoring the agent's message");
        self.unparsed.remove(&format!("say/{name}"));
        if let Err(e) = dir.remove(name) {
            tracing::warn!(file = name, error = %e, "cannot remove the agent's message");
        }
        self.outbox.push_line(
            OutputStream::Stderr,
            format!("agent-runner: ignoring the message {name}: {reason}"),
        );
    }
}

/// Whether a badly named `<stem>.json` looks meant as a question (and so gets an error
/// reply) rather than being some other file.
fn plausible(stem: &str) -> bool {
    !stem.is_empty()
        && stem.len() <= PLAUSIBLE_NAME_BYTES
        && !stem.starts_with('.')
        && !stem.ends_with(".tmp")
        && !stem.chars().any(char::is_control)
}

/// Writes `reply` for the question `stem`, saying so when it cannot.
fn reply(dir: &Opened, stem: &str, reply: &AskReply) {
    if let Err(e) = dir.write_reply(stem, reply) {
        tracing::warn!(question = stem, error = %e, "cannot write the reply for the agent");
    }
}

/// The rate limit on progress messages: [`SAY_BURST`] at once, then one per [`SAY_EVERY`]
/// (a generic cell rate: `next` is when the limit would be back to empty).
#[derive(Debug)]
struct SayLimit {
    next: Instant,
}

impl SayLimit {
    fn new(now: Instant) -> Self {
        Self { next: now }
    }

    fn ready(&self, now: Instant) -> bool {
        self.next <= now + SAY_EVERY * (SAY_BURST - 1)
    }

    fn take(&mut self, now: Instant) {
        self.next = self.next.max(now) + SAY_EVERY;
    }
}

/// Asks the questions, one at a time.
struct Asker {
    ask: Mailbox,
    attempt: u32,
    outbox: Arc<Outbox>,
    callback: Callback,
    directives: mpsc::UnboundedSender<Directive>,
    /// Set once the dispatcher said to stop: later questions are not asked.
    stopping: bool,
}

impl Asker {
    async fn run(mut self, mut questions: mpsc::UnboundedReceiver<Question>) {
        while let Some(question) = questions.recv().await {
            let answer = if self.stopping {
                refusal("the job is stopping; the question was not asked")
            } else {
                self.ask(&question).await
            };
            match self.ask.open() {
                Ok(dir) => reply(&dir, &question.id, &answer),
                Err(e) => {
                    tracing::warn!(question = question.id, error = %e, "cannot write the answer for the agent")
                }
            }
        }
    }

    /// Posts `question` and waits for its answer (or for the reason there will be none).
    async fn ask(&mut self, question: &Question) -> AskReply {
        let id = question.id.as_str();
        tracing::info!(
            question = id,
            choices = question.ask.choices.len(),
            timeout_secs = question.timeout_secs,
            "the agent asks a question"
        );
        let asked = Asked {
            id: id.to_string(),
            text: question.ask.question.clone(),
            choices: question.ask.choices.clone(),
            default: question.ask.default.clone(),
            timeout_secs: question.timeout_secs,
        };
        match ask_and_wait(&self.outbox, &self.callback, self.attempt, asked).await {
            Ok(answer) => answered(id, answer),
            Err(Unanswered::GaveUp(secs)) => {
                refusal(format!("no answer came within {secs} seconds"))
            }
            Err(Unanswered::Stop) => {
                self.stop(Directive::Stop);
                refusal("the job was stopped before the question was answered")
            }
            Err(Unanswered::Unauthorized(status)) => {
                self.stop(Directive::Unauthorized { status });
                refusal("the job is ending; the question was not answered")
            }
        }
    }

    fn stop(&mut self, directive: Directive) {
        self.stopping = true;
        // The supervisor stops listening only once the agent is done; then it no longer
        // matters.
        let _ = self.directives.send(directive);
    }
}

/// A question the runner posts: the agent's, or its own (an approval).
#[derive(Debug, Clone)]
pub struct Asked {
    /// Its id within the attempt.
    pub id: String,
    /// The question.
    pub text: String,
    /// The answers offered as buttons.
    pub choices: Vec<String>,
    /// The answer taken at the deadline.
    pub default: Option<String>,
    /// How long it waits.
    pub timeout_secs: u64,
}

/// Why a question got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// The dispatcher told no outcome within the question's timeout and a margin (seconds).
    GaveUp(u64),
    /// The dispatcher no longer wants the attempt.
    Stop,
    /// The dispatcher refused the job's token (its status).
    Unauthorized(u16),
}

/// Posts `asked` as a [`RunnerEvent::Question`] of `attempt` and asks the dispatcher for its
/// answer every [`ANSWER_POLL`] (backing off while it fails to answer) until it has one, or
/// the reason there will be none.
pub async fn ask_and_wait(
    outbox: &Outbox,
    callback: &Callback,
    attempt: u32,
    asked: Asked,
) -> Result<contract::Answer, Unanswered> {
    let id = asked.id.clone();
    let patience = Duration::from_secs(asked.timeout_secs) + ANSWER_MARGIN;
    outbox.push(RunnerEvent::Question {
        id: asked.id,
        text: asked.text,
        choices: asked.choices,
        default: asked.default,
        timeout_secs: asked.timeout_secs,
    });
    let request = AnswerRequest {
        version: PROTOCOL_VERSION,
        attempt,
        question: id.clone(),
    };
    let give_up = Instant::now() + patience;
    let mut backoff = Backoff::new(ANSWER_POLL, ANSWER_MAX_BACKOFF);
    let mut failures = 0u32;
    // The question's event goes out first; there is nothing to ask before it arrives.
    let mut delay = ANSWER_POLL;
    loop {
        if Instant::now() + delay > give_up {
            tracing::warn!(
                question = %id,
                waited_secs = patience.as_secs(),
                "no answer came; giving up the question"
            );
            return Err(Unanswered::GaveUp(patience.as_secs()));
        }
        tokio::time::sleep(delay).await;
        delay = match callback.answer(&request).await {
            AnswerPoll::Answered(answer) => return Ok(answer),
            AnswerPoll::Waiting => {
                backoff.reset();
                ANSWER_POLL
            }
            AnswerPoll::Stop => {
                tracing::info!(
                    question = %id,
                    "the dispatcher no longer wants this attempt; stopping the agent"
                );
                return Err(Unanswered::Stop);
            }
            AnswerPoll::Unauthorized(status) => {
                tracing::error!(question = %id, status, "the dispatcher refused the job token");
                return Err(Unanswered::Unauthorized(status));
            }
            AnswerPoll::Failed(reason) => {
                failures += 1;
                let delay = backoff.next_delay();
                // The first failure and then every tenth: the log is not flooded.
                if failures % 10 == 1 {
                    tracing::warn!(
                        question = %id,
                        failures,
                        %reason,
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "asking for the answer failed; will ask again"
                    );
                }
                delay
            }
        };
    }
}

/// Asks people to approve a push (a profile with `approval: before_push`): the question
/// `approve-push`, Approve / Reject, no default (without an answer the job fails).
#[derive(Debug, Clone)]
pub struct Approver {
    /// Where the question is posted.
    pub outbox: Arc<Outbox>,
    /// Where its answer is asked for.
    pub callback: Callback,
    /// The attempt asking.
    pub attempt: u32,
    /// How long it waits.
    pub timeout_secs: u64,
}

/// The choice that approves a push (any other answer rejects it).
pub const APPROVE: &str = "Approve";

impl Approver {
    /// The approver of `checkout`'s push, when it asks for an approval.
    pub fn for_push(
        checkout: Option<&contract::Checkout>,
        outbox: &Arc<Outbox>,
        callback: &Callback,
        attempt: u32,
    ) -> Option<Self> {
        let approval = checkout?.push.as_ref()?.approval.as_ref()?;
        Some(Self {
            outbox: Arc::clone(outbox),
            callback: callback.clone(),
            attempt,
            timeout_secs: approval.timeout_secs,
        })
    }

    /// Asks whether to push what `what` describes; `Err` says why not (who rejected it, or
    /// why no answer came).
    pub async fn approve(&self, what: &str) -> Result<String, String> {
        let asked = Asked {
            id: "approve-push".into(),
            text: cut(what.to_string(), MAX_QUESTION_BYTES),
            choices: vec![APPROVE.into(), "Reject".into()],
            default: None,
            timeout_secs: self.timeout_secs,
        };
        match ask_and_wait(&self.outbox, &self.callback, self.attempt, asked).await {
            Ok(answer) if answer.text.trim().eq_ignore_ascii_case(APPROVE) => Ok(answer.by),
            Ok(answer) => Err(format!(
                "{} answered {:?}",
                if answer.by.is_empty() {
                    "nobody"
                } else {
                    &answer.by
                },
                cut(answer.text, 200)
            )),
            Err(Unanswered::GaveUp(secs)) => Err(format!("no answer came within {secs} seconds")),
            Err(Unanswered::Stop) => Err("the job was stopped while it waited".into()),
            Err(Unanswered::Unauthorized(status)) => {
                Err(format!("the dispatcher refused the job's token ({status})"))
            }
        }
    }
}

/// The reply for an answer, logged (its text only when short).
fn answered(id: &str, answer: contract::Answer) -> AskReply {
    if answer.text.chars().count() <= LOGGED_ANSWER_CHARS {
        tracing::info!(question = id, by = %answer.by, defaulted = answer.defaulted, answer = %answer.text, "the question was answered");
    } else {
        tracing::info!(question = id, by = %answer.by, defaulted = answer.defaulted, answer_bytes = answer.text.len(), "the question was answered");
    }
    AskReply {
        answer: Some(answer.text),
        by: Some(answer.by).filter(|by| !by.is_empty()),
        defaulted: answer.defaulted,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use contract::conversation::MAX_FILE_BYTES;
    use testkit::temp::TempDir;

    use super::*;
    use crate::outbox::Limits;
    use crate::workspace::RUNNER_DIR;

    /// A watcher of a fresh work directory's ask and say directories, its questions and
    /// its outbox.
    struct Watched {
        tmp: TempDir,
        watcher: Watcher,
        questions: mpsc::UnboundedReceiver<Question>,
        outbox: Arc<Outbox>,
    }

    impl Watched {
        fn new() -> Self {
            let tmp = TempDir::new("conversation");
            for dir in [ASK_DIR, SAY_DIR] {
                std::fs::create_dir_all(tmp.path().join(RUNNER_DIR).join(dir)).unwrap();
            }
            let outbox = Arc::new(Outbox::new(1, Limits::default()));
            let (questions_tx, questions) = mpsc::unbounded_channel();
            let workdir = tmp.path().to_path_buf();
            let watcher = Watcher {
                ask: Mailbox::new(workdir.clone(), ASK_DIR, None),
                say: Mailbox::new(workdir, SAY_DIR, None),
                outbox: Arc::clone(&outbox),
                questions: questions_tx,
                asked: HashMap::new(),
                refused: HashMap::new(),
                unparsed: HashMap::new(),
                says: SayLimit::new(Instant::now()),
                unreadable: [false; 2],
            };
            Self {
                tmp,
                watcher,
                questions,
                outbox,
            }
        }

        fn ask_dir(&self) -> PathBuf {
            self.tmp.path().join(RUNNER_DIR).join(ASK_DIR)
        }

        fn say_dir(&self) -> PathBuf {
            self.tmp.path().join(RUNNER_DIR).join(SAY_DIR)
        }

        /// Writes `<stem>.json` in the ask directory as `agent-runner ask` does.
        fn leave_question(&self, stem: &str, json: &str) {
            let tmp = self.ask_dir().join(format!("{stem}.json.tmp"));
            std::fs::write(&tmp, json).unwrap();
            std::fs::rename(tmp, self.ask_dir().join(format!("{stem}.json"))).unwrap();
        }

        fn reply(&self, stem: &str) -> Option<AskReply> {
            let path = self.ask_dir().join(format!("{stem}.answer.json"));
            std::fs::read(path)
                .ok()
                .map(|bytes| serde_json::from_slice(&bytes).unwrap())
        }

        fn error_for(&self, stem: &str) -> String {
            let reply = self.reply(stem);
            match reply.and_then(|r| r.error) {
                Some(error) => error,
                None => panic!("no error reply for {stem}"),
            }
        }

        fn handed_on(&mut self) -> Vec<String> {
            std::iter::from_fn(|| self.questions.try_recv().ok())
                .map(|q| q.id)
                .collect()
        }

        async fn events(&self) -> Vec<RunnerEvent> {
            self.outbox
                .finish(contract::RunOutcome::Exited { code: 0 }, None);
            let mut events = Vec::new();
            while let Some(batch) = self.outbox.next_batch().await {
                events.extend(batch.events);
            }
            events.pop();
            events
        }
    }

    #[test]
    fn questions_are_handed_on_oldest_first_once_and_temporary_files_left_alone() {
        let mut watched = Watched::new();
        watched.leave_question("q-2", r#"{"question":"second?"}"#);
        watched.leave_question("q-1", r#"{"question":"first?","choices":["a","b"]}"#);
        std::fs::write(watched.ask_dir().join("q-3.json.tmp"), "{").unwrap();

        watched.watcher.look_at_questions();
        watched.watcher.look_at_questions();

        assert_eq!(watched.handed_on(), ["q-1", "q-2"]);
        assert_eq!(
            watched.reply("q-3"),
            None,
            "a .tmp file is still being written"
        );
        assert!(watched.ask_dir().join("q-3.json.tmp").exists());
    }

    #[test]
    fn a_question_asked_again_under_its_name_gets_an_error_reply() {
        let mut watched = Watched::new();
        watched.leave_question("q", r#"{"question":"once?"}"#);
        watched.watcher.look_at_questions();
        watched.leave_question("q", r#"{"question":"twice?"}"#);
        watched.watcher.look_at_questions();

        assert_eq!(watched.handed_on(), ["q"]);
        let error = watched.error_for("q");
        assert!(
            error.contains("a question named q was already asked"),
            "{error}"
        );
    }

    #[test]
    fn an_oversized_question_file_gets_an_error_reply() {
        let mut watched = Watched::new();
        let big = format!(
            r#"{{"question":"{}"}}"#,
            "x".repeat(MAX_FILE_BYTES as usize)
        );
        watched.leave_question("big", &big);
        watched.watcher.look_at_questions();

        assert!(watched.handed_on().is_empty());
        let error = watched.error_for("big");
        assert!(error.contains(&MAX_FILE_BYTES.to_string()), "{error}");
    }

    #[test]
    fn a_question_that_is_a_link_is_refused_and_not_followed() {
        let mut watched = Watched::new();
        let outside = TempDir::new("conversation-outside");
        let secret = outside.path().join("secret.json");
        std::fs::write(&secret, r#"{"question":"what is in the secret?"}"#).unwrap();
        std::os::unix::fs::symlink(&secret, watched.ask_dir().join("q.json")).unwrap();

        watched.watcher.look_at_questions();

        assert!(watched.handed_on().is_empty(), "a link was read");
        let error = watched.error_for("q");
        assert!(error.contains("symbolic link"), "{error}");
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            r#"{"question":"what is in the secret?"}"#
        );
    }

    #[tokio::test]
    async fn a_question_that_is_a_fifo_does_not_block_the_watcher() {
        let mut watched = Watched::new();
        let fifo = watched.ask_dir().join("q.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();

        let looked = tokio::task::spawn_blocking(move || {
            watched.watcher.look_at_questions();
            watched
        });
        let mut watched = tokio::time::timeout(Duration::from_secs(10), looked)
            .await
            .expect("a FIFO must not block the runner")
            .unwrap();

        assert!(watched.handed_on().is_empty());
        let error = watched.error_for("q");
        assert!(error.contains("pipe"), "{error}");
    }

    #[test]
    fn questions_over_a_limit_or_badly_named_get_error_replies_and_other_files_none() {
        let mut watched = Watched::new();
        watched.leave_question("zero", r#"{"question":"now?","timeout_secs":0}"#);
        watched.leave_question("typo", r#"{"question":"q","choises":["a"]}"#);
        watched.leave_question("my question", r#"{"question":"spaces?"}"#);
        std::fs::write(watched.ask_dir().join("notes.txt"), "not a question").unwrap();
        // A file that never becomes JSON is refused once the runner's patience is over.
        watched.leave_question("half", r#"{"question":"#);

        watched.watcher.look_at_questions();
        assert_eq!(watched.reply("half"), None, "it may still be being written");
        for seen in watched.watcher.unparsed.values_mut() {
            seen.1 = Instant::now() - PARSE_PATIENCE;
        }
        watched.watcher.look_at_questions();

        assert!(watched.handed_on().is_empty());
        assert!(watched.error_for("zero").contains("at least 1 second"));
        assert!(watched.error_for("typo").contains("choises"));
        assert!(watched.error_for("my question").contains("letters, digits"));
        assert!(watched.error_for("half").contains("not a question"));
        assert_eq!(watched.reply("notes"), None);
    }

    #[tokio::test]
    async fn messages_are_posted_cut_and_removed_a_burst_at_a_time() {
        let mut watched = Watched::new();
        let long = "é".repeat(MAX_SAY_BYTES);
        for n in 0..7 {
            let text = if n == 0 {
                long.clone()
            } else {
                format!("step {n}")
            };
            let json = serde_json::to_string(&Say { text }).unwrap();
            std::fs::write(watched.say_dir().join(format!("s-{n}.json")), json).unwrap();
        }
        std::fs::write(watched.say_dir().join("s-9.json.tmp"), "{").unwrap();

        watched.watcher.look_at_messages();

        let events = watched.events().await;
        let texts: Vec<String> = events
            .into_iter()
            .map(|event| match event {
                RunnerEvent::Say { text } => text,
                other => panic!("not a Say: {other:?}"),
            })
            .collect();
        assert_eq!(texts.len(), SAY_BURST as usize, "{texts:?}");
        assert_eq!(texts[0], "é".repeat(MAX_SAY_BYTES / 2));
        assert_eq!(texts[1..], ["step 1", "step 2", "step 3", "step 4"]);
        let mut left: Vec<String> = std::fs::read_dir(watched.say_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["s-5.json", "s-6.json", "s-9.json.tmp"]);
    }

    fn ask(question: &str) -> Ask {
        Ask {
            question: question.into(),
            choices: Vec::new(),
            default: None,
            timeout_secs: None,
        }
    }

    #[test]
    fn a_question_within_its_limits_passes_with_its_timeout() {
        assert_eq!(check(&ask("which?")), Ok(DEFAULT_ASK_TIMEOUT_SECS));
        let with_all = Ask {
            choices: vec!["a".into(), "b".into()],
            default: Some("free text".into()),
            timeout_secs: Some(90),
            ..ask("which?")
        };
        assert_eq!(check(&with_all), Ok(90));
    }

    #[test]
    fn a_question_over_a_limit_is_refused_naming_it() {
        let cases = [
            (ask(" "), "empty"),
            (ask(&"x".repeat(MAX_QUESTION_BYTES + 1)), "4096"),
            (
                Ask {
                    choices: (0..=MAX_CHOICES).map(|n| n.to_string()).collect(),
                    ..ask("q")
                },
                "choices",
            ),
            (
                Ask {
                    choices: vec!["x".repeat(MAX_CHOICE_BYTES + 1)],
                    ..ask("q")
                },
                "200",
            ),
            (
                Ask {
                    choices: vec![String::new()],
                    ..ask("q")
                },
                "choice is empty",
            ),
            (
                Ask {
                    timeout_secs: Some(0),
                    ..ask("q")
                },
                "at least 1",
            ),
            (
                Ask {
                    timeout_secs: Some(MAX_ASK_TIMEOUT_SECS + 1),
                    ..ask("q")
                },
                "86400",
            ),
        ];
        for (ask, says) in cases {
            let error = check(&ask).unwrap_err();
            assert!(error.contains(says), "{error} should say {says}");
        }
    }

    #[test]
    fn a_long_message_is_cut_at_a_character() {
        let text = format!("{}é", "a".repeat(MAX_SAY_BYTES - 1));
        assert_eq!(cut(text, MAX_SAY_BYTES), "a".repeat(MAX_SAY_BYTES - 1));
        assert_eq!(cut("short".into(), MAX_SAY_BYTES), "short");
    }

    #[test]
    fn messages_come_in_a_burst_then_one_every_two_seconds() {
        let start = Instant::now();
        let mut limit = SayLimit::new(start);
        for _ in 0..SAY_BURST {
            assert!(limit.ready(start));
            limit.take(start);
        }
        assert!(!limit.ready(start));
        assert!(!limit.ready(start + SAY_EVERY / 2));
        assert!(limit.ready(start + SAY_EVERY));
        limit.take(start + SAY_EVERY);
        assert!(!limit.ready(start + SAY_EVERY));
    }

    #[test]
    fn only_names_meant_as_questions_get_an_error_reply() {
        assert!(plausible("my question"));
        assert!(!plausible(".hidden"));
        assert!(!plausible(&"x".repeat(PLAUSIBLE_NAME_BYTES + 1)));
        assert!(!plausible(""));
    }
}
