//! One follower: its history in pages bounded by entries and bytes, the hand-over to the
//! stream's hub, the live frames, the `lagged` end, keep-alives; and the HTTP response that
//! carries them.
//!
//! The hand-over: the follower replays up to the end of the stream, joins the hub (taking
//! the number of the next frame the hub will publish), then replays again from where it got
//! to. Every entry written before it joined is in that second replay; every entry written
//! after is published by the reader after it joined, so it is in the ring from the
//! follower's number on. Entries in both are sent once: a frame whose id is not after the
//! last id sent is skipped.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use futures::Stream;
use queue::JobState;
use tokio::sync::watch;
use tracing::warn;

use super::hub::{Frame, Hub, Kind, Lagged};
use super::{Follow, Inner, Slot, StreamId};
use crate::telemetry::chain;

/// The most entries one history read returns.
pub(super) const REPLAY_ENTRIES: usize = 200;
/// The most bytes one history read returns (past its first entry).
pub(super) const REPLAY_BYTES: usize = 64 * 1024;
/// About the most bytes of frames sent as one chunk of the response. Frames ready together
/// go out together (one chunk, one write for many events, where one each cost a chunk
/// header and, every few, a system call); small, because a client that stops reading
/// leaves up to 16 chunks in the server's write queue.
const CHUNK_BYTES: usize = 4 * 1024;

/// The SSE response of a follower of `follow`.
pub(super) fn response(inner: Arc<Inner>, slot: Slot, follow: Follow) -> Response {
    let follower = Follower {
        inner,
        _slot: slot,
        kind: follow.kind,
        stream: follow.stream,
        sent: follow.after,
        read_to: follow.after,
        ended_at_start: follow.ended,
        keep_alive: follow.keep_alive,
        last_state: None,
        page: VecDeque::new(),
        more: true,
        phase: Phase::History,
    };
    let mut response = Response::new(Body::from_stream(frames(follower)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx (and ingresses built on it) would otherwise hold events back in its buffer.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The frames of `follower`, pulled by the server as the client's connection takes them:
/// nothing is read ahead for a client that does not read.
fn frames(follower: Follower) -> impl Stream<Item = Result<Bytes, Infallible>> {
    futures::stream::unfold(follower, |mut follower| async move {
        let bytes = follower.next().await?;
        Some((Ok(bytes), follower))
    })
}

enum Phase {
    /// Replaying what the client asked for.
    History,
    /// Joined the hub; replaying what was written before joining.
    CatchUp(Member),
    /// Sending the hub's frames.
    Live(Member),
    /// Finished.
    Done,
}

struct Follower {
    inner: Arc<Inner>,
    /// Held until the follower is dropped: its place under the caps.
    _slot: Slot,
    kind: Kind,
    stream: String,
    /// The id of the last entry sent (or the client's `Last-Event-ID`): where it resumes.
    sent: StreamId,
    /// The id of the last entry history reads returned.
    read_to: StreamId,
    ended_at_start: bool,
    keep_alive: Duration,
    last_state: Option<JobState>,
    /// Frames to send: of the last history page, or taken from the ring.
    page: VecDeque<Frame>,
    /// Whether the history may hold more after `read_to`.
    more: bool,
    phase: Phase,
}

impl Follower {
    /// The next bytes to send, or `None` when the stream is over.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if self.inner.shutdown.is_cancelled() {
                // The client resumes elsewhere with its last event id; the drain does not
                // wait for it.
                return None;
            }
            if !self.page.is_empty() {
                return Some(self.send_chunk());
            }
            if matches!(self.phase, Phase::History | Phase::CatchUp(_)) && self.more {
                if let Err(e) = self.read_history().await {
                    warn!(error = %chain(&e), stream = %self.stream, "reading events failed; ending the stream");
                    self.phase = Phase::Done;
                }
                continue;
            }
            // Past the history: anything a read returned but nothing could be sent of is
            // behind the client too.
            self.sent = self.sent.max(self.read_to);
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Done => return None,
                Phase::History | Phase::CatchUp(_) if self.ended() => return None,
                Phase::History => {
                    let hub = self.inner.join(&self.stream, self.kind, self.sent);
                    self.phase = Phase::CatchUp(Member::new(Arc::clone(&self.inner), hub));
                    self.more = true;
                }
                Phase::CatchUp(member) => {
                    // A history page's worth of room is not needed live: a follower lives
                    // long, and thousands may.
                    self.page = VecDeque::new();
                    self.phase = Phase::Live(member);
                }
                Phase::Live(mut member) => match member.take(self.sent) {
                    Err(Lagged) => return Some(Frame::lagged(self.sent)),
                    Ok(frames) if !frames.is_empty() => {
                        self.page.extend(frames);
                        self.phase = Phase::Live(member);
                    }
                    // Everything published is sent and the job has ended: done.
                    Ok(_) if self.ended() => return None,
                    Ok(_) => {
                        let waited = member.wait(self.keep_alive, &self.inner.shutdown).await;
                        self.phase = Phase::Live(member);
                        match waited {
                            Waited::Published => {}
                            Waited::Idle => return Some(Bytes::from_static(b":\n\n")),
                            Waited::ShuttingDown => self.phase = Phase::Done,
                        }
                    }
                },
            }
        }
    }

    /// Reads the next page of history into `page`.
    async fn read_history(&mut self) -> queue::Result<()> {
        let after = self.read_to.to_string();
        let page = self
            .inner
            .queue
            .stream_page(&self.stream, Some(&after), REPLAY_ENTRIES, REPLAY_BYTES)
            .await?;
        self.more = page.more;
        for entry in &page.entries {
            if let Some(frame) = Frame::decode(self.kind, entry) {
                self.page.push_back(frame);
            }
        }
        if let Some(last) = page.entries.last().and_then(|e| e.id.parse().ok()) {
            self.read_to = self.read_to.max(last);
        }
        Ok(())
    }

    /// The frames of `page` that fit in a chunk (at least one), as sent.
    fn send_chunk(&mut self) -> Bytes {
        let mut chunk = Vec::new();
        while let Some(frame) = self.page.front() {
            let size = frame.bytes.len();
            if !chunk.is_empty() && chunk.len() + size > CHUNK_BYTES {
                break;
            }
            let frame = self.page.pop_front().expect("a frame was there");
            self.sent = frame.id;
            if frame.state.is_some() {
                self.last_state = frame.state;
            }
            let alone = chunk.is_empty()
                && self
                    .page
                    .front()
                    .is_none_or(|next| size + next.bytes.len() > CHUNK_BYTES);
            if alone {
                // Sent as it is: one buffer shared by every follower.
                return frame.bytes;
            }
            chunk.extend_from_slice(&frame.bytes);
        }
        Bytes::from(chunk)
    }

    /// Whether a job's stream is over: its last state sent is final (or, before any, the
    /// job had ended when the client asked). A job retried after that starts a new stream.
    fn ended(&self) -> bool {
        self.kind == Kind::Job
            && self
                .last_state
                .map_or(self.ended_at_start, JobState::is_terminal)
    }
}

/// A follower's membership of a hub: its place in the ring; it leaves when dropped.
struct Member {
    inner: Arc<Inner>,
    hub: Arc<Hub>,
    seq: u64,
    published: watch::Receiver<u64>,
}

/// Why a live follower stopped waiting.
enum Waited {
    Published,
    Idle,
    ShuttingDown,
}

impl Member {
    fn new(inner: Arc<Inner>, hub: Arc<Hub>) -> Self {
        let (seq, published) = hub.subscribe();
        Self {
            inner,
            hub,
            seq,
            published,
        }
    }

    fn take(&mut self, sent: StreamId) -> Result<Vec<Frame>, Lagged> {
        // Seen before looking, so a frame published after the look wakes `wait`.
        self.published.borrow_and_update();
        self.hub.take(&mut self.seq, sent, CHUNK_BYTES)
    }

    async fn wait(
        &mut self,
        keep_alive: Duration,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Waited {
        tokio::select! {
            _ = self.published.changed() => Waited::Published,
            _ = tokio::time::sleep(keep_alive) => Waited::Idle,
            _ = shutdown.cancelled() => Waited::ShuttingDown,
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.inner.leave(&self.hub);
    }
}
