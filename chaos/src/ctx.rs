//! What the run's phases share: [`Ctx`] (the processes, the API client, the counters) and
//! the clock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::config::TOKEN;
use crate::failover::Failover;
use crate::kind::Acked;
use crate::world::World;

/// Milliseconds since the epoch, as the API's timestamps are.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Counters shared by the tasks.
#[derive(Default)]
pub struct Stats {
    /// Faults injected, by kind.
    pub faults: Mutex<BTreeMap<&'static str, u64>>,
    /// Every acknowledged job.
    pub acked: Mutex<Vec<Acked>>,
    /// Submits that were never acknowledged.
    pub unacked: AtomicU64,
    /// Submits sent again after a connection error or a 5xx.
    pub submit_retries: AtomicU64,
    /// `GET /v1/overview` samples taken.
    pub samples: AtomicU64,
    /// The most jobs any sample showed admitted.
    pub admitted_max: AtomicU64,
    /// The samples that showed more than the limit admitted.
    pub over_limit: Mutex<Vec<String>>,
    /// Cancel requests by their answer.
    pub cancel_results: Mutex<BTreeMap<String, u64>>,
    /// Every submit request sent, in the order they were answered.
    pub tries: Mutex<Vec<Try>>,
    /// The primary kills of the sentinel and cluster variants and what followed each.
    pub failovers: Mutex<Vec<Failover>>,
}

/// One submit request and its answer.
#[derive(Debug, Clone, Copy)]
pub struct Try {
    /// When it was sent (ms since the epoch).
    pub sent_ms: i64,
    /// When its answer came (or it failed).
    pub answered_ms: i64,
    /// What came back.
    pub outcome: TryOutcome,
}

/// How a submit request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    /// 200/202 with an id.
    Acknowledged,
    /// 503: Redis unavailable (a failover under way); the answer that says "try again".
    Refused,
    /// Another 5xx (500: an internal error), which a client need not take as "try again";
    /// the load sends it again all the same.
    Failed,
    /// No answer: a connection error or a timeout (a replica killed or frozen).
    NoAnswer,
    /// Any other answer (a 4xx: a harness bug, reported as it happens).
    Other,
}

impl Stats {
    /// Counts one fault of `kind`.
    pub fn fault(&self, kind: &'static str) {
        *self.faults.lock().expect("lock").entry(kind).or_default() += 1;
    }
}

/// What the load, the faults and the verdict share.
pub struct Ctx {
    /// The processes of the run.
    pub world: Arc<World>,
    /// The API client (5 s per request).
    pub http: reqwest::Client,
    /// The counters.
    pub stats: Stats,
    /// Set when the fault loops are to stop.
    pub stop_faults: AtomicBool,
    /// Serialises replica faults (kills and the rolling restart).
    pub replica_ops: tokio::sync::Mutex<()>,
}

impl Ctx {
    /// The URL of `path` on replica `replica`.
    pub fn url(&self, replica: usize, path: &str) -> String {
        format!(
            "http://{}:{}{path}",
            self.world.host, self.world.ports[replica]
        )
    }

    /// Whether the replica answers `/health`.
    pub async fn health(&self, replica: usize) -> bool {
        let r = self.http.get(self.url(replica, "/health")).send().await;
        r.is_ok_and(|r| r.status().is_success())
    }

    /// Waits up to `limit` for the replica to answer `/health`; whether it did.
    pub async fn wait_health(&self, replica: usize, limit: Duration) -> bool {
        testkit::wait_until(limit, || self.health(replica)).await
    }

    /// GET with the token from either replica, trying `first` then the other.
    pub async fn get(&self, first: usize, path: &str) -> Option<(u16, Value)> {
        for replica in [first, 1 - first] {
            let r = self
                .http
                .get(self.url(replica, path))
                .bearer_auth(TOKEN)
                .send()
                .await;
            if let Ok(r) = r {
                let status = r.status().as_u16();
                if status < 500 {
                    return Some((status, r.json().await.unwrap_or(Value::Null)));
                }
            }
        }
        None
    }
}
