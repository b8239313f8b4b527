//! A job's event stream and the dispatcher-wide feed: read from a point, the last output
//! lines, and followed with blocking reads.

use std::time::Duration;

use redis::Value;

use crate::values::{decode_events, stream_fields};
use crate::{FeedEvent, JobEvent, Queue, QueueError, Result};

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

    /// Waits up to `block` for events of a job after `after`, on a dedicated connection.
    pub async fn wait_events(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        job_id: &str,
        after: &str,
        block: Duration,
    ) -> Result<Vec<(String, JobEvent)>> {
        self.wait_stream(conn, &self.keys.events(job_id), after, block)
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

    /// Waits up to `block` for state changes of any job after `after`.
    pub async fn wait_feed(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        after: &str,
        block: Duration,
    ) -> Result<Vec<(String, FeedEvent)>> {
        self.wait_stream(conn, &self.keys.feed(), after, block)
            .await
    }

    /// The id of the newest entry of the feed (`0-0` when it is empty): where a live-only
    /// reader starts.
    pub async fn feed_head(&self) -> Result<String> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let reply: Value = redis::cmd("XREVRANGE")
                .arg(self.keys.feed())
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

    async fn wait_stream<T: serde::de::DeserializeOwned>(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        key: &str,
        after: &str,
        block: Duration,
    ) -> Result<Vec<(String, T)>> {
        let reply: Value = tokio::time::timeout(
            block + self.timeout,
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(500)
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(key)
                .arg(after)
                .query_async(conn),
        )
        .await
        .map_err(|_| QueueError::Timeout(block + self.timeout))??;
        // [[key, [[id, [field, value]], ...]]]
        let entries = match &reply {
            Value::Array(streams) => streams
                .iter()
                .filter_map(|s| match s {
                    Value::Array(kv) if kv.len() == 2 => Some(decode_events(&kv[1])),
                    _ => None,
                })
                .flatten()
                .collect(),
            Value::Map(streams) => streams
                .iter()
                .flat_map(|(_, entries)| decode_events(entries))
                .collect(),
            _ => Vec::new(),
        };
        Ok(entries)
    }
}
