//! A job's event stream and the dispatcher-wide feed: read from a point (in pages bounded by
//! entries and by bytes), the last output lines, and followed — many streams at once — by one
//! blocking reader on a connection of its own ([`StreamReader`]).

use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};

use crate::values::{decode_events, stream_fields, value_string};
use crate::{FeedEvent, JobEvent, Queue, QueueError, Result};

/// The paging script: XRANGE bounded by bytes as well as entries (`stream_page.lua`).
static PAGE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("stream_page.lua")));

/// An entry of an event stream as stored: its id and its event, JSON (empty when the entry
/// has none, which agentsmith never writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// The stream id (`<ms>-<seq>`).
    pub id: String,
    /// The event's JSON.
    pub event: String,
}

/// A page of a stream read from a point ([`Queue::stream_page`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamPage {
    /// The entries, oldest first.
    pub entries: Vec<RawEntry>,
    /// Whether the stream held entries after these when it was read.
    pub more: bool,
}

/// A connection of its own for following event streams: one blocking `XREAD` at a time over
/// every stream a dispatcher follows, so the number of Redis clients does not grow with the
/// number of followers. Named in `CLIENT LIST`; [`Queue::unblock`] ends its wait early.
pub struct StreamReader {
    conn: redis::aio::MultiplexedConnection,
    client_id: Option<i64>,
    timeout: Duration,
}

impl Queue {
    /// Events of a job after `after` (a stream id; `None` for the start), at most `count`.
    pub async fn events_after(
        &self,
        job_id: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<(String, JobEvent)>> {
        self.read_stream(&self.keys.events(job_id), after, count)
            .await
    }

    /// The last `count` output lines of a job (oldest first), for failure replies.
    pub async fn last_log_lines(&self, job_id: &str, count: usize) -> Result<Vec<String>> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let reply: Value = redis::cmd("XREVRANGE")
                .arg(self.keys.events(job_id))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(count.saturating_mul(4).max(50))
                .query_async(&mut conn)
                .await?;
            let mut lines: Vec<String> = decode_events::<JobEvent>(&reply)
                .into_iter()
                .filter_map(|(_, event)| match event {
                    JobEvent::Log { line, .. } => Some(line),
                    _ => None,
                })
                .take(count)
                .collect();
            lines.reverse();
            Ok(lines)
        })
        .await
    }

    /// State changes of all jobs after `after` (the dispatcher-wide feed), at most `count`.
    pub async fn feed_after(
        &self,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<(String, FeedEvent)>> {
        self.read_stream(&self.keys.feed(), after, count).await
    }

    /// The id of the newest entry of the feed (`0-0` when it is empty): where a live-only
    /// reader starts.
    pub async fn feed_head(&self) -> Result<String> {
        self.stream_head(&self.keys.feed()).await
    }

    async fn read_stream<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<(String, T)>> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let start = after.map(|a| format!("({a}")).unwrap_or_else(|| "-".into());
            let reply: Value = redis::cmd("XRANGE")
                .arg(key)
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(count)
                .query_async(&mut conn)
                .await?;
            Ok(decode_events(&reply))
        })
        .await
    }

    /// A page of the stream `stream` after the entry `after` (`None`: from the start): at
    /// most `max_entries` entries and `max_bytes` bytes, though always at least one entry
    /// when there is one, so a reader moves on whatever the sizes.
    pub async fn stream_page(
        &self,
        stream: &str,
        after: Option<&str>,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<StreamPage> {
        let start = after.map(|a| format!("({a}")).unwrap_or_else(|| "-".into());
        let reply: Value = self
            .bounded(async {
                let mut conn = self.conn().await?;
                Ok(PAGE
                    .key(stream)
                    .arg(start)
                    .arg(max_entries.max(1))
                    .arg(max_bytes)
                    .invoke_async(&mut conn)
                    .await?)
            })
            .await?;
        match &reply {
            Value::Array(parts) if parts.len() == 2 => Ok(StreamPage {
                entries: raw_entries(&parts[1]),
                more: matches!(parts[0], Value::Int(1)),
            }),
            other => Err(QueueError::Corrupt(format!(
                "the stream page script answered {other:?}"
            ))),
        }
    }

    /// The id of the newest entry of `stream` (`0-0` when it is empty or missing).
    pub async fn stream_head(&self, stream: &str) -> Result<String> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let reply: Value = redis::cmd("XREVRANGE")
                .arg(stream)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await?;
            Ok(stream_fields(&reply)
                .into_iter()
                .next()
                .map(|(id, _)| id)
                .unwrap_or_else(|| "0-0".into()))
        })
        .await
    }

    /// Opens a [`StreamReader`] named `name` in `CLIENT LIST` (a Redis that refuses
    /// `CLIENT SETNAME` or `CLIENT ID` to this user still gets a reader, unnamed and without
    /// early wake-ups).
    pub async fn stream_reader(&self, name: &str) -> Result<StreamReader> {
        let mut conn = self.dedicated_connection().await?;
        let client_id = self
            .bounded(async {
                let named: redis::RedisResult<()> = redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(name)
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = named {
                    tracing::debug!(error = %e, "the stream reader's connection stays unnamed");
                }
                let id: redis::RedisResult<i64> =
                    redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await;
                Ok(id.ok())
            })
            .await?;
        Ok(StreamReader {
            conn,
            client_id,
            timeout: self.timeout,
        })
    }

    /// Ends the blocking read the reader `client_id` waits in (`CLIENT UNBLOCK`), so it can
    /// start again with a changed set of streams; false when it was not waiting (its read
    /// had not reached Redis yet, or had already returned).
    pub async fn unblock(&self, client_id: i64) -> Result<bool> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let unblocked: i64 = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(client_id)
                .query_async(&mut conn)
                .await?;
            Ok(unblocked == 1)
        })
        .await
    }
}

impl StreamReader {
    /// The reader's `CLIENT ID`, for [`Queue::unblock`] (`None` when Redis would not say).
    pub fn client_id(&self) -> Option<i64> {
        self.client_id
    }

    /// Waits up to `block` for entries of any of `streams` (stream, the id after which to
    /// read), at most `count` per stream; returns the streams that had any, with their new
    /// entries. An empty answer means the time ran out or [`Queue::unblock`] was called.
    pub async fn read(
        &mut self,
        streams: &[(String, String)],
        count: usize,
        block: Duration,
    ) -> Result<Vec<(String, Vec<RawEntry>)>> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(count.max(1))
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS");
        for (stream, _) in streams {
            cmd.arg(stream);
        }
        for (_, after) in streams {
            cmd.arg(after);
        }
        let reply: Value =
            tokio::time::timeout(block + self.timeout, cmd.query_async(&mut self.conn))
                .await
                .map_err(|_| QueueError::Timeout(block + self.timeout))??;
        // RESP2: [[stream, entries], ...]; RESP3: {stream: entries}.
        Ok(match &reply {
            Value::Array(streams) => streams
                .iter()
                .filter_map(|s| match s {
                    Value::Array(kv) if kv.len() == 2 => {
                        Some((value_string(&kv[0]), raw_entries(&kv[1])))
                    }
                    _ => None,
                })
                .collect(),
            Value::Map(streams) => streams
                .iter()
                .map(|(stream, entries)| (value_string(stream), raw_entries(entries)))
                .collect(),
            _ => Vec::new(),
        })
    }
}

/// `[[id, [field, value, ...]], ...]` as entries with their event's JSON.
fn raw_entries(entries: &Value) -> Vec<RawEntry> {
    stream_fields(entries)
        .into_iter()
        .map(|(id, mut fields)| RawEntry {
            id,
            event: fields
                .remove(crate::fields::stream::EVENT)
                .unwrap_or_default(),
        })
        .collect()
}

/// Paging and the shared reader against the test Redis, each test under its own prefix.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;
    use crate::{QueueSettings, RedisSettings};

    fn queue() -> Queue {
        let redis = RedisSettings {
            url: SecretString::from(testkit::redis::test_url()),
            prefix: format!("streams-{:016x}:", rand::random::<u64>()),
            timeout_secs: 5,
            tls: Default::default(),
            sentinel: Default::default(),
            cluster: false,
            min_replicas_acked: 0,
        };
        Queue::new(&redis, &QueueSettings::for_tests()).unwrap()
    }

    /// Appends an entry whose event is `event`; its id.
    async fn add(queue: &Queue, stream: &str, event: &str) -> String {
        let mut conn = queue.conn().await.unwrap();
        redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(crate::fields::stream::EVENT)
            .arg(event)
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_page_stops_at_its_byte_budget_but_always_holds_one_entry() {
        let queue = queue();
        let stream = queue.keys().events("paged");
        let big = "x".repeat(10_000);
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(add(&queue, &stream, &big).await);
        }
        // 25 KB of budget holds two 10 KB entries, not three.
        let page = queue.stream_page(&stream, None, 100, 25_000).await.unwrap();
        let got: Vec<&str> = page.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(got, [ids[0].as_str(), ids[1].as_str()]);
        assert!(page.more);
        assert_eq!(page.entries[0].event, big);
        // A budget smaller than one entry still moves the reader on by one.
        let page = queue
            .stream_page(&stream, Some(&ids[1]), 100, 10)
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 1);
        assert_eq!(page.entries[0].id, ids[2]);
        assert!(page.more);
        // The entry count bounds a page too; the last page says there is no more.
        let page = queue
            .stream_page(&stream, Some(&ids[2]), 1, 1 << 20)
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 1);
        assert!(page.more);
        let page = queue
            .stream_page(&stream, Some(&ids[3]), 100, 1 << 20)
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 1);
        assert!(!page.more);
        let empty = queue
            .stream_page(&queue.keys().events("missing"), None, 100, 1 << 20)
            .await
            .unwrap();
        assert_eq!(empty, StreamPage::default());
        assert_eq!(queue.stream_head(&stream).await.unwrap(), ids[4]);
    }

    #[tokio::test]
    async fn one_reader_follows_several_streams_and_unblock_ends_its_wait() {
        let queue = queue();
        let (a, b) = (queue.keys().events("a"), queue.keys().events("b"));
        let a1 = add(&queue, &a, "{\"n\":1}").await;
        let b1 = add(&queue, &b, "{\"n\":2}").await;
        let b2 = add(&queue, &b, "{\"n\":3}").await;
        let mut reader = queue.stream_reader("agentsmith-test-reader").await.unwrap();
        let streams = [(a.clone(), "0-0".to_string()), (b.clone(), b1.clone())];
        let mut got = reader
            .read(&streams, 10, Duration::from_secs(1))
            .await
            .unwrap();
        got.sort_by(|x, y| x.0.cmp(&y.0));
        let ids: Vec<(String, Vec<String>)> = got
            .into_iter()
            .map(|(s, entries)| (s, entries.into_iter().map(|e| e.id).collect()))
            .collect();
        assert_eq!(
            ids,
            [(a.clone(), vec![a1.clone()]), (b.clone(), vec![b2.clone()])]
        );

        // Nothing new: the read blocks until it is unblocked.
        let id = reader
            .client_id()
            .expect("the test Redis tells the client id");
        let streams = [(a.clone(), a1), (b.clone(), b2)];
        let waiting = tokio::spawn(async move {
            reader
                .read(&streams, 10, Duration::from_secs(120))
                .await
                .map(|got| got.len())
        });
        let unblocked = testkit::wait_until(Duration::from_secs(30), || {
            let queue = queue.clone();
            async move { queue.unblock(id).await.unwrap() }
        })
        .await;
        assert!(unblocked, "the reader never waited in a blocking read");
        let read = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("an unblocked read returns")
            .unwrap()
            .unwrap();
        assert_eq!(read, 0);
    }
}
