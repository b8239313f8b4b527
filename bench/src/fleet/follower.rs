//! A follower of one runner's job: `GET /v1/jobs/{id}/events` (SSE) on a dispatcher
//! replica, read as fast as it comes. For every `log` line printed within the window it
//! records now − the line's stamp: the runner's batching, the dispatcher that took the
//! batch, Redis, the fan-out of the replica followed, and the bench reading it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::connection::find;
use super::latency::{epoch_us, Histogram, Window};
use crate::api::TOKEN;

/// What every follower counts, together.
#[derive(Default)]
pub struct Tally {
    /// Line latency (ms) of lines printed within the window.
    pub latency: Histogram,
    /// Lines printed within the window that arrived.
    pub lines: AtomicU64,
    /// Followers with their response headers.
    pub connected: AtomicU64,
    /// Connections that failed (each is made again after a pause).
    pub failures: AtomicU64,
    /// `lagged` drops (each resumes).
    pub lagged: AtomicU64,
}

/// One follower.
pub struct Follower {
    /// The replica followed.
    pub addr: SocketAddr,
    /// The job followed.
    pub job_id: String,
    /// Counts.
    pub tally: Arc<Tally>,
    /// The measured window.
    pub window: Arc<Window>,
    /// Ends it.
    pub stop: CancellationToken,
}

/// What one response showed.
#[derive(Default)]
struct Seen {
    last_id: Option<String>,
    log_next: bool,
    lagged: bool,
    ended: bool,
}

impl Follower {
    /// Follows until stopped, resuming after `lagged` or a failure as `EventSource` would.
    pub async fn run(self) {
        let mut after: Option<String> = None;
        let mut first = true;
        loop {
            let mut seen = Seen {
                last_id: after.clone(),
                ..Seen::default()
            };
            let result = tokio::select! {
                r = self.follow_once(&mut seen, &mut first) => r,
                _ = self.stop.cancelled() => return,
            };
            match result {
                Ok(()) if seen.lagged => {
                    self.tally.lagged.fetch_add(1, Ordering::Relaxed);
                }
                Ok(()) if seen.ended => return,
                Ok(()) | Err(_) => {
                    self.tally.failures.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = self.stop.cancelled() => return,
                    }
                }
            }
            after = seen.last_id;
        }
    }

    async fn follow_once(&self, seen: &mut Seen, first: &mut bool) -> anyhow::Result<()> {
        let mut socket = tokio::net::TcpStream::connect(self.addr).await?;
        let query = seen
            .last_id
            .as_deref()
            .map(|a| format!("?after={a}"))
            .unwrap_or_default();
        let request = format!(
            "GET /v1/jobs/{}/events{query} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n",
            self.job_id, self.addr
        );
        socket.write_all(request.as_bytes()).await?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        let mut head = true;
        loop {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            pending.extend_from_slice(&buf[..n]);
            if head {
                let Some(end) = find(&pending, b"\r\n\r\n") else {
                    continue;
                };
                if !pending.starts_with(b"HTTP/1.1 200") {
                    bail!("{}", String::from_utf8_lossy(&pending[..end]));
                }
                pending.drain(..end + 4);
                head = false;
                if std::mem::take(first) {
                    self.tally.connected.fetch_add(1, Ordering::SeqCst);
                }
            }
            self.scan(&mut pending, seen);
            if seen.ended || seen.lagged {
                return Ok(());
            }
        }
    }

    /// Reads the complete lines of `pending` (and drops them).
    fn scan(&self, pending: &mut Vec<u8>, seen: &mut Seen) {
        let mut start = 0;
        while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = &pending[start..start + nl];
            start += nl + 1;
            if let Some(id) = line.strip_prefix(b"id: ") {
                seen.last_id = Some(String::from_utf8_lossy(id).into_owned());
            } else if line == b"event: log" {
                seen.log_next = true;
            } else if line == b"event: lagged" {
                seen.lagged = true;
            } else if line.starts_with(b"data: ") && seen.log_next {
                seen.log_next = false;
                self.time(line);
            } else if line == b"0\r" {
                // The last chunk of the response: the stream is over.
                seen.ended = true;
            }
        }
        pending.drain(..start);
    }

    /// Records the latency of a log line printed within the window.
    fn time(&self, data: &[u8]) {
        let now = epoch_us(Instant::now());
        // The runner's line is "<n> <microseconds since the epoch>".
        let stamp = find(data, b"\"line\":\"").and_then(|at| {
            let rest = &data[at + 8..];
            let text = std::str::from_utf8(&rest[..rest.iter().position(|b| *b == b'"')?]).ok()?;
            text.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
        if let Some(stamp) = stamp.filter(|s| self.window.contains(*s)) {
            self.tally.lines.fetch_add(1, Ordering::Relaxed);
            self.tally.latency.record(now.saturating_sub(stamp) / 1000);
        }
    }
}
