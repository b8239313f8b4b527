//! A simulated runner: what `agent-runner` says to the dispatcher, without an agent.
//!
//! It exchanges its attempt's one-time credential for the attempt's token
//! (`POST /internal/jobs/{id}/token`), then posts event batches with that token
//! (`POST /internal/jobs/{id}/events`): `started` first, then the agent's output lines and a
//! heartbeat every `heartbeat_secs`, numbered from 0 without gaps. It batches as the real
//! runner's outbox does: a batch goes [`LINGER`] after its first event was queued, one batch
//! in flight at a time, a failed one sent again unchanged after a backoff. Each line is
//! `<n> <microseconds since the epoch when it was printed>`; "printed" is the moment the
//! line was due, so a runner that falls behind (a starved bench) shows as latency too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use contract::{
    OutputStream, RunnerBatch, RunnerEvent, RunnerReply, TokenGrant, TokenRequest, PROTOCOL_VERSION,
};
use spawner::JobSpec;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection::Connection;
use super::latency::{epoch_us, Window};
use crate::histogram::Histogram;

/// How long the runner's outbox waits after a batch's first event before sending it.
pub const LINGER: Duration = Duration::from_millis(200);
/// The first delay before a retry (doubling up to [`MAX_BACKOFF`]), as the runner's.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// An attempt the dispatchers spawned: what its workload would carry.
#[derive(Clone)]
pub struct Spawned {
    /// The job.
    pub job_id: String,
    /// The attempt.
    pub attempt: u32,
    /// The one-time credential.
    pub credential: String,
    /// Seconds between heartbeats.
    pub heartbeat_secs: u64,
}

impl Spawned {
    /// What the backend announces of `job`.
    pub fn of(job: &JobSpec) -> Self {
        Self {
            job_id: job.job_id.clone(),
            attempt: job.attempt,
            credential: job.credential.clone(),
            heartbeat_secs: job.heartbeat_secs,
        }
    }
}

/// What every runner counts, together.
#[derive(Default)]
pub struct Tally {
    /// Runners whose `started` was recorded.
    pub started: AtomicU64,
    /// Lines recorded by a dispatcher (200).
    pub lines: AtomicU64,
    /// Batches recorded, by replica.
    pub batches: [AtomicU64; 2],
    /// Posts that failed or were answered neither 200 nor "gone" (sent again).
    pub retries: AtomicU64,
    /// Runners told their attempt is no longer wanted (401, 409, 410, `stop`).
    pub gone: AtomicU64,
    /// Latency of the posts of event batches sent within the window.
    pub post_latency: Histogram,
    /// Lines printed within the window by the followed runners, by runner index.
    pub followed_printed: Vec<AtomicU64>,
    /// The measured window.
    pub window: Arc<Window>,
}

impl Tally {
    /// A tally whose first `followed` runners are followed.
    pub fn new(followed: usize, window: Arc<Window>) -> Self {
        Self {
            followed_printed: (0..followed).map(|_| AtomicU64::new(0)).collect(),
            window,
            ..Self::default()
        }
    }
}

/// One simulated runner.
pub struct Runner {
    /// Its place in the fleet (0 for the first spawned).
    pub index: usize,
    /// Its attempt.
    pub spawned: Spawned,
    /// Which replica it reports to (0 or 1) and that replica's address.
    pub replica: usize,
    /// The replica's address.
    pub addr: SocketAddr,
    /// Lines a second it prints.
    pub lines_per_sec: u32,
    /// Counts.
    pub tally: Arc<Tally>,
    /// Stops it between batches.
    pub stop: CancellationToken,
}

/// How a delivery ended.
enum Delivered {
    Recorded,
    Gone,
    Stopped,
}

impl Runner {
    /// Runs until stopped or told the attempt is no longer wanted.
    pub async fn run(self) {
        let mut conn = Connection::new(self.addr);
        let Some(token) = self.exchange(&mut conn).await else {
            return;
        };
        let path = format!("/internal/jobs/{}/events", self.spawned.job_id);
        let start = Instant::now();
        let heartbeat = Duration::from_secs(self.spawned.heartbeat_secs.max(1));
        let period = (self.lines_per_sec > 0).then(|| Duration::from_secs(1) / self.lines_per_sec);
        // Spread the runners' lines evenly over a period (golden-ratio steps by index).
        let phase = (self.index as f64 * 0.618_033_988_75).fract();
        let mut next_line = period.map(|p| start + p.mul_f64(phase));
        let mut next_beat = start + heartbeat;
        let mut pending = vec![RunnerEvent::Started];
        let mut first_at = Some(start);
        let (mut seq, mut printed) = (0u64, 0u64);
        let mut started = false;
        loop {
            let first = first_at.unwrap_or_else(|| next_line.unwrap_or(next_beat).min(next_beat));
            tokio::select! {
                _ = tokio::time::sleep_until(first + LINGER) => {}
                _ = self.stop.cancelled() => return,
            }
            let now = Instant::now();
            if let (Some(period), Some(due)) = (period, next_line.as_mut()) {
                while *due <= now {
                    printed += 1;
                    let stamp = epoch_us(due.into_std());
                    if self.tally.window.contains(stamp) {
                        if let Some(count) = self.tally.followed_printed.get(self.index) {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    pending.push(RunnerEvent::Log {
                        stream: OutputStream::Stdout,
                        line: format!("{printed} {stamp}"),
                    });
                    first_at.get_or_insert(*due);
                    *due += period;
                }
            }
            while next_beat <= now {
                if !pending.iter().any(|e| matches!(e, RunnerEvent::Heartbeat)) {
                    pending.push(RunnerEvent::Heartbeat);
                }
                first_at.get_or_insert(next_beat);
                next_beat += heartbeat;
            }
            if pending.is_empty() {
                continue;
            }
            let batch = RunnerBatch {
                version: PROTOCOL_VERSION,
                attempt: self.spawned.attempt,
                first_seq: seq,
                events: std::mem::take(&mut pending),
            };
            match self.deliver(&mut conn, &path, &token, &batch).await {
                Delivered::Recorded => {}
                Delivered::Gone => {
                    self.tally.gone.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Delivered::Stopped => return,
            }
            seq += batch.events.len() as u64;
            first_at = None;
            let lines = batch
                .events
                .iter()
                .filter(|e| matches!(e, RunnerEvent::Log { .. }))
                .count();
            self.tally.lines.fetch_add(lines as u64, Ordering::Relaxed);
            self.tally.batches[self.replica].fetch_add(1, Ordering::Relaxed);
            if !started {
                started = true;
                self.tally.started.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Exchanges the credential for the attempt's token, retrying passing failures with
    /// the same nonce; `None` when the attempt is gone or the runner is stopped.
    async fn exchange(&self, conn: &mut Connection) -> Option<String> {
        let path = format!("/internal/jobs/{}/token", self.spawned.job_id);
        let request = TokenRequest {
            version: PROTOCOL_VERSION,
            attempt: self.spawned.attempt,
            nonce: format!("{}{}", queue::new_job_id(), queue::new_job_id()),
        };
        let body = serde_json::to_vec(&request).expect("a token request always serialises");
        let mut backoff = MIN_BACKOFF;
        loop {
            match conn.post(&path, &self.spawned.credential, &body).await {
                Ok((200, answer)) => match serde_json::from_slice::<TokenGrant>(&answer) {
                    Ok(grant) => return Some(grant.token),
                    Err(_) => self.tally.retries.fetch_add(1, Ordering::Relaxed),
                },
                Ok((401 | 403 | 409 | 410, _)) => {
                    self.tally.gone.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Ok(_) | Err(_) => self.tally.retries.fetch_add(1, Ordering::Relaxed),
            };
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stop.cancelled() => return None,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Posts `batch` until it is recorded (the same batch again after a failure).
    async fn deliver(
        &self,
        conn: &mut Connection,
        path: &str,
        token: &str,
        batch: &RunnerBatch,
    ) -> Delivered {
        let body = serde_json::to_vec(batch).expect("a runner batch always serialises");
        let mut backoff = MIN_BACKOFF;
        loop {
            let sent = Instant::now();
            let timed = self.tally.window.contains(epoch_us(sent.into_std()));
            let answer = conn.post(path, token, &body).await;
            if timed {
                self.tally
                    .post_latency
                    .record(sent.elapsed().as_millis() as u64);
            }
            match answer {
                Ok((200, reply)) => {
                    let stop = serde_json::from_slice::<RunnerReply>(&reply)
                        .map(|r| r.stop)
                        .unwrap_or(false);
                    return if stop {
                        Delivered::Gone
                    } else {
                        Delivered::Recorded
                    };
                }
                Ok((401 | 403 | 409 | 410, _)) => return Delivered::Gone,
                Ok(_) | Err(_) => {
                    self.tally.retries.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stop.cancelled() => return Delivered::Stopped,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
