//! The events waiting to be sent: sequence numbers, batching, and the cap on what is kept
//! while the dispatcher is unreachable.
//!
//! Events are numbered when they are taken into a batch, not when they are queued, so the
//! numbers the dispatcher sees stay consecutive even when old log lines had to be dropped
//! (the loss is reported by a [`RunnerEvent::Dropped`] event where the lines were). A
//! batch, once taken, is the sender's to deliver unchanged: a retry carries the same
//! `first_seq` and the same events.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use contract::{AgentResult, OutputStream, RunOutcome, RunnerBatch, RunnerEvent, PROTOCOL_VERSION};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How events are batched and how many are kept.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A batch is sent once this many events wait.
    pub batch_events: usize,
    /// A batch holds roughly at most this many bytes of JSON (at least one event).
    pub batch_bytes: usize,
    /// A batch is sent this long after its first event was queued, however small.
    pub linger: Duration,
    /// At most this many log lines wait; beyond that the oldest are dropped.
    pub buffered_lines: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            batch_events: 200,
            batch_bytes: 1024 * 1024,
            linger: Duration::from_millis(200),
            buffered_lines: 10_000,
        }
    }
}

/// The queue of events between the runner and the sender.
#[derive(Debug)]
pub struct Outbox {
    attempt: u32,
    limits: Limits,
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    pending: VecDeque<RunnerEvent>,
    pending_logs: usize,
    pending_bytes: usize,
    /// Log lines dropped since the last batch was taken.
    dropped: u64,
    /// Log lines queued since the start (dropped ones included).
    lines_seen: u64,
    first_unsent_at: Option<Instant>,
    finished_at: Option<Instant>,
}

impl Outbox {
    /// An empty outbox for events of `attempt`.
    pub fn new(attempt: u32, limits: Limits) -> Self {
        Self {
            attempt,
            limits,
            state: Mutex::default(),
            wake: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements; a panic elsewhere cannot break it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an event. Ignored once [`Outbox::finish`] was called: `Finished` is last.
    /// A heartbeat is not queued when one is already waiting; it would say nothing more.
    pub fn push(&self, event: RunnerEvent) {
        let mut state = self.state();
        self.push_locked(&mut state, event);
    }

    /// Queues a line of the agent's output.
    pub fn push_line(&self, stream: OutputStream, line: String) {
        let mut state = self.state();
        state.lines_seen += 1;
        self.push_locked(&mut state, RunnerEvent::Log { stream, line });
    }

    /// How many output lines were queued so far: a measure of whether output still flows.
    pub fn lines_seen(&self) -> u64 {
        self.state().lines_seen
    }

    /// Queues the final event. Nothing is queued after it.
    pub fn finish(&self, outcome: RunOutcome, result: Option<AgentResult>) {
        self.finish_with(outcome, result, None);
    }

    /// Queues the final event, with what the runner did with the agent's work.
    pub fn finish_with(
        &self,
        outcome: RunOutcome,
        result: Option<AgentResult>,
        change: Option<contract::Change>,
    ) {
        let mut state = self.state();
        self.push_locked(
            &mut state,
            RunnerEvent::Finished {
                outcome,
                result,
                change: change.map(Box::new),
            },
        );
        state.finished_at.get_or_insert_with(Instant::now);
        drop(state);
        // The final batch goes out without waiting for the linger time.
        self.wake.notify_one();
    }

    fn push_locked(&self, state: &mut State, event: RunnerEvent) {
        if state.finished_at.is_some() {
            tracing::debug!(?event, "event after the final one ignored");
            return;
        }
        if matches!(event, RunnerEvent::Heartbeat)
            && state
                .pending
                .iter()
                .any(|e| matches!(e, RunnerEvent::Heartbeat))
        {
            return;
        }
        let is_log = matches!(event, RunnerEvent::Log { .. });
        state.pending_bytes += approximate_size(&event);
        state.pending.push_back(event);
        if is_log {
            state.pending_logs += 1;
            while state.pending_logs > self.limits.buffered_lines {
                drop_oldest_line(state);
            }
        }
        self.wake_if_ready(state);
    }

    /// When the final event was queued, if it was.
    pub fn finished_at(&self) -> Option<Instant> {
        self.state().finished_at
    }

    fn wake_if_ready(&self, state: &mut State) {
        if state.first_unsent_at.is_none() {
            state.first_unsent_at = Some(Instant::now());
            self.wake.notify_one();
        } else if state.pending.len() >= self.limits.batch_events
            || state.pending_bytes >= self.limits.batch_bytes
        {
            self.wake.notify_one();
        }
    }

    /// The next batch to send, once one is due: when enough events wait, when the first
    /// of them has waited [`Limits::linger`], or at once after the final event was
    /// queued. `None` when the final event has been taken and nothing is left.
    pub async fn next_batch(&self) -> Option<RunnerBatch> {
        loop {
            // Created before the state is looked at, so a wake-up in between is not lost.
            let woken = self.wake.notified();
            let due_at = {
                let mut state = self.state();
                let waiting = !state.pending.is_empty() || state.dropped > 0;
                if !waiting {
                    if state.finished_at.is_some() {
                        return None;
                    }
                    None
                } else {
                    let due = state
                        .first_unsent_at
                        .map_or(Instant::now(), |t| t + self.limits.linger);
                    if state.finished_at.is_some()
                        || state.pending.len() >= self.limits.batch_events
                        || state.pending_bytes >= self.limits.batch_bytes
                        || Instant::now() >= due
                    {
                        return Some(self.take_batch(&mut state));
                    }
                    Some(due)
                }
            };
            match due_at {
                Some(at) => {
                    tokio::select! {
                        () = woken => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => woken.await,
            }
        }
    }

    fn take_batch(&self, state: &mut State) -> RunnerBatch {
        let mut events = Vec::new();
        let mut bytes = 0;
        if state.dropped > 0 {
            // The dropped lines were the oldest waiting, so the marker goes first.
            events.push(RunnerEvent::Dropped {
                lines: state.dropped,
            });
            state.dropped = 0;
        }
        while events.len() < self.limits.batch_events {
            let Some(event) = state.pending.front() else {
                break;
            };
            let size = approximate_size(event);
            if !events.is_empty() && bytes + size > self.limits.batch_bytes {
                break;
            }
            let Some(event) = state.pending.pop_front() else {
                break;
            };
            bytes += size;
            state.pending_bytes -= size;
            if matches!(event, RunnerEvent::Log { .. }) {
                state.pending_logs -= 1;
            }
            events.push(event);
        }
        let first_seq = state.next_seq;
        state.next_seq += events.len() as u64;
        state.first_unsent_at = if state.pending.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        RunnerBatch {
            version: PROTOCOL_VERSION,
            attempt: self.attempt,
            first_seq,
            events,
        }
    }
}

fn drop_oldest_line(state: &mut State) {
    let Some(index) = state
        .pending
        .iter()
        .position(|e| matches!(e, RunnerEvent::Log { .. }))
    else {
        return;
    };
    if let Some(event) = state.pending.remove(index) {
        state.pending_bytes -= approximate_size(&event);
        state.pending_logs -= 1;
        if state.dropped == 0 {
            tracing::warn!("too many lines waiting for the dispatcher; dropping the oldest");
        }
        state.dropped += 1;
    }
}

/// A cheap upper-bound guess of an event's JSON size, to keep batches under a body limit.
fn approximate_size(event: &RunnerEvent) -> usize {
    const OVERHEAD: usize = 64;
    match event {
        // JSON escaping can grow a line up to six times (`\u0001`), but rarely does;
        // double is a fair bound for text.
        RunnerEvent::Log { line, .. } => OVERHEAD + line.len() * 2,
        RunnerEvent::Finished {
            result: Some(result),
            ..
        } => {
            let summary = result.summary.as_ref().map_or(0, String::len);
            let links: usize = result
                .links
                .iter()
                .map(|l| l.url.len() + l.title.as_ref().map_or(0, String::len) + OVERHEAD)
                .sum();
            OVERHEAD * 2 + (summary + links) * 2
        }
        RunnerEvent::Finished { outcome, .. } => match outcome {
            RunOutcome::StartFailed { reason }
            | RunOutcome::CheckoutFailed { reason }
            | RunOutcome::PushFailed { reason } => OVERHEAD * 2 + reason.len() * 2,
            _ => OVERHEAD * 2,
        },
        RunnerEvent::Question {
            id,
            text,
            choices,
            default,
            ..
        } => {
            let choices: usize = choices.iter().map(|c| c.len() * 2 + 8).sum();
            OVERHEAD * 2
                + (id.len() + text.len() + default.as_ref().map_or(0, String::len)) * 2
                + choices
        }
        RunnerEvent::Say { text } => OVERHEAD + text.len() * 2,
        RunnerEvent::Started | RunnerEvent::Heartbeat | RunnerEvent::Dropped { .. } => OVERHEAD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            batch_events: 3,
            batch_bytes: 1024 * 1024,
            linger: Duration::from_millis(50),
            buffered_lines: 4,
        }
    }

    fn line(n: u32) -> RunnerEvent {
        RunnerEvent::Log {
            stream: OutputStream::Stdout,
            line: format!("line {n}"),
        }
    }

    #[tokio::test]
    async fn batches_carry_consecutive_sequence_numbers() {
        let outbox = Outbox::new(2, limits());
        outbox.push(RunnerEvent::Started);
        for n in 0..4 {
            outbox.push(line(n));
        }
        let first = outbox.next_batch().await.unwrap();
        assert_eq!(
            (first.attempt, first.first_seq, first.events.len()),
            (2, 0, 3)
        );
        assert_eq!(first.version, PROTOCOL_VERSION);
        assert_eq!(first.events[0], RunnerEvent::Started);
        let second = outbox.next_batch().await.unwrap();
        assert_eq!((second.first_seq, second.events.len()), (3, 2));
        assert_eq!(second.events[1], line(3));
    }

    #[tokio::test]
    async fn a_small_batch_waits_for_the_linger_time() {
        let outbox = Outbox::new(1, limits());
        let start = Instant::now();
        outbox.push(RunnerEvent::Started);
        let batch = outbox.next_batch().await.unwrap();
        assert_eq!(batch.events, vec![RunnerEvent::Started]);
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn the_final_event_is_sent_at_once_and_ends_the_stream() {
        let outbox = Outbox::new(
            1,
            Limits {
                linger: Duration::from_secs(3600),
                ..limits()
            },
        );
        outbox.finish(RunOutcome::Exited { code: 0 }, None);
        outbox.push(line(9));
        let batch = tokio::time::timeout(Duration::from_secs(30), outbox.next_batch())
            .await
            .expect("the final batch does not wait for the linger time")
            .unwrap();
        assert_eq!(
            batch.events,
            vec![RunnerEvent::Finished {
                outcome: RunOutcome::Exited { code: 0 },
                result: None,
                change: None,
            }]
        );
        assert!(outbox.finished_at().is_some());
        assert_eq!(outbox.next_batch().await, None);
    }

    #[tokio::test]
    async fn the_oldest_lines_are_dropped_and_the_loss_reported_but_not_other_events() {
        let outbox = Outbox::new(1, limits());
        outbox.push(RunnerEvent::Started);
        for n in 0..7 {
            outbox.push(line(n));
        }
        outbox.finish(RunOutcome::Exited { code: 0 }, None);
        let mut events = Vec::new();
        let mut next_seq = 0;
        while let Some(batch) = outbox.next_batch().await {
            assert_eq!(batch.first_seq, next_seq);
            next_seq += batch.events.len() as u64;
            events.extend(batch.events);
        }
        assert_eq!(
            events,
            vec![
                RunnerEvent::Dropped { lines: 3 },
                RunnerEvent::Started,
                line(3),
                line(4),
                line(5),
                line(6),
                RunnerEvent::Finished {
                    outcome: RunOutcome::Exited { code: 0 },
                    result: None,
                    change: None,
                },
            ]
        );
    }

    #[tokio::test]
    async fn waiting_heartbeats_are_not_repeated() {
        let outbox = Outbox::new(1, limits());
        outbox.push(RunnerEvent::Heartbeat);
        outbox.push(RunnerEvent::Heartbeat);
        outbox.push(line(1));
        outbox.push(RunnerEvent::Heartbeat);
        outbox.finish(RunOutcome::TimedOut, None);
        let batch = outbox.next_batch().await.unwrap();
        assert_eq!(
            batch.events,
            vec![
                RunnerEvent::Heartbeat,
                line(1),
                RunnerEvent::Finished {
                    outcome: RunOutcome::TimedOut,
                    result: None,
                    change: None,
                }
            ]
        );
    }

    #[tokio::test]
    async fn batches_stay_under_the_byte_limit() {
        let outbox = Outbox::new(
            1,
            Limits {
                batch_events: 100,
                batch_bytes: 1000,
                ..limits()
            },
        );
        let long = |c: char| RunnerEvent::Log {
            stream: OutputStream::Stderr,
            line: c.to_string().repeat(300),
        };
        outbox.push(long('a'));
        outbox.push(long('b'));
        outbox.finish(RunOutcome::Terminated, None);
        let first = outbox.next_batch().await.unwrap();
        assert_eq!(first.events, vec![long('a')]);
        let second = outbox.next_batch().await.unwrap();
        assert_eq!(second.first_seq, 1);
        assert_eq!(second.events[0], long('b'));
    }
}
