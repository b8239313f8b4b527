//! The dispatcher's one reader of every followed stream, on one Redis connection of its own
//! however many streams and followers there are.
//!
//! A round: one blocking `XREAD COUNT 1` over every followed stream, which returns as soon
//! as any has news (with its first new entry); then the rest of each stream that had news,
//! in pages bounded by entries and bytes on the shared connection. So what a round holds in
//! memory is bounded by the streams followed, not by how much a job printed, and the
//! blocking connection serves every stream. A stream followed for the first time wakes the
//! reader at once (`CLIENT UNBLOCK`) so its live entries do not wait for the read to time
//! out. The task ends when no stream is followed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use queue::{Queue, RawEntry, StreamReader};
use tracing::{debug, warn};

use super::follower::{REPLAY_BYTES, REPLAY_ENTRIES};
use super::hub::{Frame, Hub};
use super::{Inner, READ_BLOCK};
use crate::telemetry::chain;

/// Pages of one stream read in one round, so one busy stream does not hold up the others.
const PAGES_PER_ROUND: usize = 4;
/// How often, and how far apart, the reader is told to stop waiting before giving up (the
/// read may not have reached Redis yet when a stream is added).
const UNBLOCK_TRIES: usize = 20;
const UNBLOCK_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause after a failed read before trying again.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a blocking read returned: the streams with news and their first new entries.
type Woken = Vec<(String, Vec<RawEntry>)>;

/// Reads every followed stream until none is followed or the dispatcher shuts down.
pub(super) async fn run(inner: Arc<Inner>) {
    let mut reader: Option<StreamReader> = None;
    let mut backoff = Duration::from_millis(200);
    while let Some(hubs) = inner.hubs_or_stop() {
        let result = match reader.as_mut() {
            Some(reader) => round(&inner, reader, &hubs).await,
            None => match inner.queue.stream_reader(&inner.reader_name).await {
                Ok(opened) => {
                    reader = Some(opened);
                    continue;
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => {
                // Followers wait (with keep-alives) and miss nothing: the streams are read
                // on from the same ids once Redis answers again.
                warn!(error = %chain(&e), retry_in = ?backoff, "reading followed event streams failed");
                reader = None;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = inner.shutdown.cancelled() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Waits for news on any of `hubs`, then publishes it.
async fn round(inner: &Inner, reader: &mut StreamReader, hubs: &[Arc<Hub>]) -> queue::Result<()> {
    let cursors: Vec<(String, String)> = hubs
        .iter()
        .map(|hub| (hub.stream().to_string(), hub.cursor().to_string()))
        .collect();
    let Some(woken) = wait(inner, reader, &cursors).await? else {
        return Ok(());
    };
    let mut active = Vec::new();
    for (stream, entries) in woken {
        if let Some(hub) = hubs.iter().find(|hub| hub.stream() == stream) {
            publish(hub, &entries);
            active.push(hub);
        }
    }
    futures::future::try_join_all(active.into_iter().map(|hub| drain(&inner.queue, hub))).await?;
    Ok(())
}

/// The blocking read, ended early when a stream is added; `None` on shutdown.
async fn wait(
    inner: &Inner,
    reader: &mut StreamReader,
    cursors: &[(String, String)],
) -> queue::Result<Option<Woken>> {
    let client_id = reader.client_id();
    let read = reader.read(cursors, 1, READ_BLOCK);
    tokio::pin!(read);
    let mut nudged = false;
    loop {
        tokio::select! {
            read = &mut read => return read.map(Some),
            _ = inner.shutdown.cancelled() => return Ok(None),
            _ = inner.added.notified(), if !nudged && client_id.is_some() => {
                nudged = true;
                let id = client_id.expect("checked by the branch's condition");
                if let Some(read) = unblock(&inner.queue, id, read.as_mut()).await {
                    return read.map(Some);
                }
            }
        }
    }
}

/// Tells Redis to end the reader's blocking read, trying again while the read has not
/// reached Redis yet; the read's result if it finished meanwhile.
async fn unblock<F: Future>(
    queue: &Queue,
    client_id: i64,
    mut read: Pin<&mut F>,
) -> Option<F::Output> {
    for _ in 0..UNBLOCK_TRIES {
        match queue.unblock(client_id).await {
            Ok(true) => return None,
            Ok(false) => {}
            Err(e) => {
                // Allowed to fail (an ACL without CLIENT): the read then ends by itself.
                debug!(error = %chain(&e), "cannot wake the stream reader early");
                return None;
            }
        }
        if let Some(done) = read.as_mut().now_or_never() {
            return Some(done);
        }
        tokio::time::sleep(UNBLOCK_PAUSE).await;
    }
    None
}

/// Reads on in `hub`'s stream after what the wake-up returned, a few bounded pages.
async fn drain(queue: &Queue, hub: &Hub) -> queue::Result<()> {
    for _ in 0..PAGES_PER_ROUND {
        let after = hub.cursor().to_string();
        let page = queue
            .stream_page(hub.stream(), Some(&after), REPLAY_ENTRIES, REPLAY_BYTES)
            .await?;
        publish(hub, &page.entries);
        if !page.more {
            break;
        }
    }
    Ok(())
}

/// Hands `entries` (in order, after the hub's cursor) to the hub's followers.
fn publish(hub: &Hub, entries: &[RawEntry]) {
    let Some(last) = entries.last().and_then(|e| e.id.parse().ok()) else {
        return;
    };
    let frames = entries
        .iter()
        .filter_map(|entry| Frame::decode(hub.kind(), entry))
        .collect();
    hub.publish(frames, last);
}
