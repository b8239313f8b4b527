//! One followed stream: the frames its reader published lately, in a ring bounded in frames
//! and in bytes, shared by every live follower; and the SSE frames themselves, made once
//! per entry, not once per follower.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use axum::body::Bytes;
use queue::{FeedEvent, JobEvent, JobState, RawEntry};
use tokio::sync::watch;
use tracing::warn;

use super::StreamId;

/// The most frames a ring keeps: how far (in entries) a live follower may fall behind.
pub(super) const RING_FRAMES: usize = 1024;
/// The most bytes a ring keeps (the newest frame is kept whatever its size).
pub(super) const RING_BYTES: usize = 1 << 20;

/// Which kind of stream, which says how its entries read and when a follower is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `job:{id}:events`: a job's events, done when the job has ended.
    Job,
    /// `feed`: every job's state changes, never done.
    Feed,
}

/// One entry as followers receive it: its id, the SSE frame, and the state it announces.
#[derive(Debug, Clone)]
pub(super) struct Frame {
    pub id: StreamId,
    pub bytes: Bytes,
    pub state: Option<JobState>,
}

impl Frame {
    /// The frame of a stored entry; `None` (with a warning) for one that does not parse.
    pub fn decode(kind: Kind, entry: &RawEntry) -> Option<Frame> {
        let id = entry.id.parse::<StreamId>().ok()?;
        let decoded = match kind {
            Kind::Job => serde_json::from_str::<JobEvent>(&entry.event).map(|event| {
                let name = match event {
                    JobEvent::State { .. } => "state",
                    JobEvent::Waiting { .. } => "waiting",
                    JobEvent::Spawned { .. } => "spawned",
                    JobEvent::Log { .. } => "log",
                    JobEvent::Question(_) => "question",
                    JobEvent::Answer { .. } => "answer",
                    JobEvent::Say { .. } => "say",
                    JobEvent::Message { .. } => "message",
                    JobEvent::Result { .. } => "result",
                };
                let data = serde_json::to_string(&event).expect("job events always serialise");
                (name, data, event.state())
            }),
            Kind::Feed => serde_json::from_str::<FeedEvent>(&entry.event).map(|event| {
                let data = serde_json::to_string(&event).expect("feed events always serialise");
                ("job", data, None)
            }),
        };
        match decoded {
            // JSON has no raw newlines, so the data is one `data:` line.
            Ok((name, data, state)) => Some(Frame {
                id,
                bytes: Bytes::from(format!("id: {id}\nevent: {name}\ndata: {data}\n\n")),
                state,
            }),
            Err(e) => {
                warn!(entry = %entry.id, error = %e, "skipping an event that does not parse");
                None
            }
        }
    }

    /// The last frame of a follower that fell behind: where to resume, and why it ends.
    /// It carries no `id:`, so a client's last event id stays the last one it got.
    pub fn lagged(resume_after: StreamId) -> Bytes {
        let data = serde_json::json!({
            "message": format!(
                "this follower fell more than {RING_FRAMES} events or {} KiB behind the live \
                 stream and was dropped; reconnect with Last-Event-ID: {resume_after} \
                 (or ?after={resume_after}) to resume",
                RING_BYTES / 1024
            ),
            "resume_after": resume_after.to_string(),
        });
        Bytes::from(format!("event: lagged\ndata: {data}\n\n"))
    }
}

/// A live follower that fell behind: the ring dropped frames it had not sent.
#[derive(Debug)]
pub(super) struct Lagged;

/// A followed stream.
pub(super) struct Hub {
    stream: String,
    kind: Kind,
    ring: Mutex<Ring>,
    /// The sequence number after the newest frame, for followers waiting for one.
    published: watch::Sender<u64>,
    /// Where the reader reads on from.
    cursor: Mutex<StreamId>,
}

impl Hub {
    /// A hub of `stream` whose reader starts after `from`.
    pub fn new(stream: &str, kind: Kind, from: StreamId) -> Self {
        Self {
            stream: stream.to_string(),
            kind,
            ring: Mutex::new(Ring::default()),
            published: watch::Sender::new(0),
            cursor: Mutex::new(from),
        }
    }

    /// The stream's key.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The stream's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Where the reader reads on from.
    pub fn cursor(&self) -> StreamId {
        *lock(&self.cursor)
    }

    /// Adds what the reader read (the entries up to `last`, of which `frames` parsed) and
    /// wakes the followers.
    pub fn publish(&self, frames: Vec<Frame>, last: StreamId) {
        {
            let mut cursor = lock(&self.cursor);
            if last <= *cursor {
                return;
            }
            *cursor = last;
        }
        let end = {
            let mut ring = lock(&self.ring);
            for frame in frames {
                ring.push(frame);
            }
            ring.end()
        };
        self.published.send_replace(end);
    }

    /// A new live follower's place: the sequence number of the next frame, and the signal
    /// of new ones.
    pub fn subscribe(&self) -> (u64, watch::Receiver<u64>) {
        let receiver = self.published.subscribe();
        (lock(&self.ring).end(), receiver)
    }

    /// The frames from `*seq` on whose ids are after `sent`, about `max_bytes` of them (at
    /// least one when there is one; none when nothing is new), advancing `*seq`.
    pub fn take(
        &self,
        seq: &mut u64,
        sent: StreamId,
        max_bytes: usize,
    ) -> Result<Vec<Frame>, Lagged> {
        let ring = lock(&self.ring);
        if *seq < ring.first {
            // Dropped before this follower took them: harmless only if it had sent them.
            if ring.evicted.is_some_and(|evicted| evicted > sent) {
                return Err(Lagged);
            }
            *seq = ring.first;
        }
        let mut frames = Vec::new();
        let mut bytes = 0;
        while *seq < ring.end() && (frames.is_empty() || bytes < max_bytes) {
            let frame = &ring.frames[(*seq - ring.first) as usize];
            *seq += 1;
            if frame.id > sent {
                bytes += frame.bytes.len();
                frames.push(frame.clone());
            }
        }
        Ok(frames)
    }

    /// Bytes in the ring now.
    pub fn buffered_bytes(&self) -> usize {
        lock(&self.ring).bytes
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each update is one step on plain data: usable after a panic elsewhere.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The recent frames of a stream, numbered from 0 in the order published.
#[derive(Default)]
struct Ring {
    frames: VecDeque<Frame>,
    /// The number of `frames[0]`.
    first: u64,
    bytes: usize,
    /// The id of the newest frame dropped.
    evicted: Option<StreamId>,
}

impl Ring {
    fn end(&self) -> u64 {
        self.first + self.frames.len() as u64
    }

    fn push(&mut self, frame: Frame) {
        self.bytes += frame.bytes.len();
        self.frames.push_back(frame);
        while self.frames.len() > RING_FRAMES || (self.bytes > RING_BYTES && self.frames.len() > 1)
        {
            if let Some(old) = self.frames.pop_front() {
                self.bytes -= old.bytes.len();
                self.first += 1;
                self.evicted = Some(old.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ms: u64, size: usize) -> Frame {
        Frame {
            id: StreamId { ms, seq: 0 },
            bytes: Bytes::from(vec![b'x'; size]),
            state: None,
        }
    }

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    #[test]
    fn the_ring_is_bounded_in_frames_and_in_bytes() {
        let hub = Hub::new("s", Kind::Job, StreamId::default());
        let frames = (1..=RING_FRAMES as u64 + 10)
            .map(|ms| frame(ms, 10))
            .collect();
        hub.publish(frames, id(RING_FRAMES as u64 + 10));
        assert_eq!(hub.buffered_bytes(), RING_FRAMES * 10);
        hub.publish(vec![frame(5000, RING_BYTES)], id(5000));
        // The newest frame is kept alone when it fills the ring by itself.
        assert_eq!(hub.buffered_bytes(), RING_BYTES);
        assert_eq!(hub.cursor(), id(5000));
    }

    #[test]
    fn a_follower_skips_what_it_sent_and_lags_only_when_it_misses_something() {
        let hub = Hub::new("s", Kind::Job, StreamId::default());
        let ids = |frames: Vec<Frame>| frames.iter().map(|f| f.id.ms).collect::<Vec<_>>();
        let (mut seq, _rx) = hub.subscribe();
        hub.publish(vec![frame(1, 10), frame(2, 10), frame(3, 10)], id(3));
        // It replayed up to 1 meanwhile: it gets 2 and 3, about 10 bytes at a time.
        assert_eq!(ids(hub.take(&mut seq, id(1), 10).unwrap()), [2]);
        assert_eq!(ids(hub.take(&mut seq, id(2), 10).unwrap()), [3]);
        assert!(hub.take(&mut seq, id(3), 10).unwrap().is_empty());

        // A slow follower at 3 while the ring turns over: lagged.
        let (slow, _rx) = hub.subscribe();
        let frames = (4..4 + RING_FRAMES as u64 + 1)
            .map(|ms| frame(ms, 10))
            .collect();
        hub.publish(frames, id(4 + RING_FRAMES as u64));
        assert!(hub.take(&mut slow.clone(), id(3), 1 << 20).is_err());
        // One that had replayed past what was dropped goes on, with all that is there.
        let all = hub.take(&mut slow.clone(), id(4), 1 << 20).unwrap();
        assert_eq!(all.len(), RING_FRAMES);
        assert_eq!(all[0].id, id(5));
    }

    #[test]
    fn frames_are_sse_events_and_a_bad_entry_is_skipped() {
        let entry = RawEntry {
            id: "7-1".into(),
            event: r#"{"type":"log","attempt":1,"stream":"stdout","line":"hi\nthere","at":3}"#
                .into(),
        };
        let frame = Frame::decode(Kind::Job, &entry).unwrap();
        let text = String::from_utf8(frame.bytes.to_vec()).unwrap();
        assert!(text.starts_with("id: 7-1\nevent: log\ndata: {"), "{text}");
        assert!(
            text.ends_with("}\n\n") && text.matches('\n').count() == 4,
            "{text}"
        );
        let bad = RawEntry {
            id: "7-2".into(),
            event: "not json".into(),
        };
        assert!(Frame::decode(Kind::Job, &bad).is_none());
        let lagged = String::from_utf8(Frame::lagged(id(9)).to_vec()).unwrap();
        assert!(lagged.starts_with("event: lagged\ndata: {"), "{lagged}");
        assert!(lagged.contains("\"resume_after\":\"9-0\""), "{lagged}");
        assert!(!lagged.contains("\nid:"), "{lagged}");
    }
}
