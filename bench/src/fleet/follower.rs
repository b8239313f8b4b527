//! A follower of one runner's job: `GET /v1/jobs/{id}/events` (SSE) on a dispatcher
//! replica, read as fast as it comes. For every `log` line printed within the window it
//! records now − the line's stamp: the runner's batching, the dispatcher that took the
//! batch, Redis, the fan-out of the replica followed, and the bench reading it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::latency::{epoch_us, Window};
use crate::histogram::Histogram;
use crate::sse::{self, Seen};

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

impl Follower {
    /// Follows until stopped, resuming after `lagged` or a failure as `EventSource` would.
    pub async fn run(self) {
        let mut after: Option<String> = None;
        let mut first = true;
        loop {
            let mut seen = Seen::after(after.clone());
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
        let request = sse::request(&self.job_id, self.addr, seen.last_id.as_deref());
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
                if !sse::take_head(&mut pending)? {
                    continue;
                }
                head = false;
                if std::mem::take(first) {
                    self.tally.connected.fetch_add(1, Ordering::SeqCst);
                }
            }
            sse::scan(&mut pending, seen, |data, _| self.time(data));
            if seen.ended || seen.lagged {
                return Ok(());
            }
        }
    }

    /// Records the latency of a log line printed within the window.
    fn time(&self, data: &[u8]) {
        let now = epoch_us(Instant::now());
        // The runner's line is "<n> <microseconds since the epoch>".
        if let Some(stamp) = sse::line_stamp(data).filter(|s| self.window.contains(*s)) {
            self.tally.lines.fetch_add(1, Ordering::Relaxed);
            self.tally.latency.record(now.saturating_sub(stamp) / 1000);
        }
    }
}
