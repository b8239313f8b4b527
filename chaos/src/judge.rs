//! `chaos judge`: the judge of the Helm chart's live test. It reads the ids a `chaos
//! traffic` report acknowledged and polls `GET /v1/jobs/{id}` about once a second for every
//! job still pending, until each has ended (or is gone: a 404 is a lost job) or the limit
//! passes; then prints a [`Judgement`] as JSON. It judges nothing itself: the caller decides
//! which of the lists must be empty.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::{self, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::args::{JudgeArgs, Target};
use crate::traffic::{self, Report};
use crate::verdict::is_terminal;

/// How many jobs are looked at at once.
const LOOKS_AT_ONCE: usize = 8;

/// What `chaos judge` prints (JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// How many jobs the report acknowledged.
    pub acknowledged: usize,
    /// Jobs that answered 404: lost.
    pub missing: Vec<String>,
    /// Jobs not ended when the limit passed.
    pub unfinished: Vec<String>,
    /// Seconds from the start of the judging until the last job ended (or the limit).
    pub ended_after_secs: f64,
    /// Ended jobs that did not succeed: their state and reason.
    pub not_succeeded: BTreeMap<String, (String, Option<String>)>,
    /// Ended jobs whose attempt is not 1: their attempt.
    pub retried: BTreeMap<String, u64>,
}

/// The fields of a job's record the judge reads.
#[derive(Debug, Clone, Deserialize)]
struct Job {
    state: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    attempt: u64,
}

/// What one look at a job found.
enum Look {
    /// It has ended.
    Ended(Job),
    /// 404: the dispatcher does not know it.
    Gone,
    /// Not ended yet, or no clear answer (a connection error, a 5xx): look again.
    Pending,
}

/// The default limit: 120 s, and 1.5 s per job (jobs run a few at a time).
pub fn default_limit(jobs: usize) -> Duration {
    Duration::from_secs_f64(120.0 + 1.5 * jobs as f64)
}

/// Polls every job of `ids` until all have ended or are gone, or `limit` passes.
pub async fn judge(
    client: &reqwest::Client,
    target: &Target,
    ids: &[String],
    limit: Duration,
) -> Judgement {
    let started = Instant::now();
    let deadline = started + limit;
    let mut judgement = Judgement {
        acknowledged: ids.len(),
        ..Judgement::default()
    };
    let mut pending = ids.to_vec();
    while !pending.is_empty() && Instant::now() < deadline {
        let round = Instant::now();
        let looks: Vec<(String, Look)> = stream::iter(pending)
            .map(|id| async move {
                let look = look(client, target, &id).await;
                (id, look)
            })
            .buffered(LOOKS_AT_ONCE)
            .collect()
            .await;
        pending = Vec::new();
        for (id, look) in looks {
            match look {
                Look::Gone => judgement.missing.push(id),
                Look::Pending => pending.push(id),
                Look::Ended(job) => {
                    if job.attempt != 1 {
                        judgement.retried.insert(id.clone(), job.attempt);
                    }
                    if job.state != "succeeded" {
                        judgement.not_succeeded.insert(id, (job.state, job.reason));
                    }
                }
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep_until(round + Duration::from_secs(1)).await;
        }
    }
    judgement.unfinished = pending;
    judgement.ended_after_secs = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    judgement
}

/// `GET /v1/jobs/{id}`, once.
async fn look(client: &reqwest::Client, target: &Target, id: &str) -> Look {
    let url = format!("{}/v1/jobs/{id}", target.url.trim_end_matches('/'));
    let Ok(response) = client.get(url).bearer_auth(&target.token).send().await else {
        return Look::Pending;
    };
    match response.status().as_u16() {
        404 => Look::Gone,
        200 => match response.json::<Job>().await {
            Ok(job) if is_terminal(&job.state) => Look::Ended(job),
            _ => Look::Pending,
        },
        _ => Look::Pending,
    }
}

/// `chaos judge`: judges the jobs of `--report` and prints the judgement on stdout.
pub async fn main(args: JudgeArgs) -> anyhow::Result<()> {
    let report = Report::read(&args.report)?;
    let ids = report.acknowledged;
    let limit = match args.limit_secs {
        Some(secs) => Duration::try_from_secs_f64(secs)
            .map_err(|e| anyhow::anyhow!("--limit-secs {secs}: {e}"))?,
        None => default_limit(ids.len()),
    };
    eprintln!(
        "judge: {} acknowledged job(s), waiting up to {:.0} s for them to end",
        ids.len(),
        limit.as_secs_f64()
    );
    let client = traffic::client()?;
    let judgement = judge(&client, &args.target, &ids, limit).await;
    println!(
        "{}",
        serde_json::to_string_pretty(&judgement).expect("a judgement always serialises")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::extract::{ConnectInfo, Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::{json, Value};

    use super::*;
    use crate::args::TrafficArgs;
    use crate::traffic::{RequestKind, Traffic};

    #[test]
    fn the_judgement_has_the_shape_the_live_test_reads() {
        let judgement = Judgement {
            acknowledged: 3,
            missing: vec!["a".into()],
            unfinished: vec![],
            ended_after_secs: 12.3,
            not_succeeded: BTreeMap::from([("b".into(), ("failed".into(), None))]),
            retried: BTreeMap::from([("c".into(), 2)]),
        };
        assert_eq!(
            serde_json::to_value(&judgement).unwrap(),
            json!({
                "acknowledged": 3, "missing": ["a"], "unfinished": [], "ended_after_secs": 12.3,
                "not_succeeded": {"b": ["failed", null]}, "retried": {"c": 2},
            })
        );
    }

    #[test]
    fn the_default_limit_grows_with_the_jobs() {
        assert_eq!(default_limit(0), Duration::from_secs(120));
        assert_eq!(default_limit(10), Duration::from_secs(135));
    }

    /// What the fake dispatcher saw.
    #[derive(Default)]
    struct Seen {
        /// Every request's peer address: a new one for every connection.
        peers: Vec<SocketAddr>,
        /// Requests without `Authorization: Bearer t`.
        unauthorised: usize,
        /// The submitted tasks.
        tasks: Vec<String>,
        /// Looks at each job.
        looks: HashMap<String, u32>,
    }

    type Shared = Arc<Mutex<Seen>>;

    fn saw(seen: &Shared, peer: SocketAddr, headers: &HeaderMap) {
        let mut seen = seen.lock().unwrap();
        seen.peers.push(peer);
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer t") {
            seen.unauthorised += 1;
        }
    }

    async fn ready(
        State(seen): State<Shared>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        headers: HeaderMap,
    ) -> Json<Value> {
        saw(&seen, peer, &headers);
        Json(json!({"status": "ready"}))
    }

    /// Every third submit is refused with a 503; the others get `job<n>`.
    async fn submit(
        State(seen): State<Shared>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        saw(&seen, peer, &headers);
        let mut seen = seen.lock().unwrap();
        seen.tasks
            .push(body["task"].as_str().unwrap_or_default().into());
        let n = seen.tasks.len();
        if n % 3 == 0 {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "busy"})),
            )
        } else {
            (StatusCode::ACCEPTED, Json(json!({"id": format!("job{n}")})))
        }
    }

    /// `done`, `failed` and `retried` have ended; `later` ends on the second look;
    /// `running` never ends; anything else is unknown.
    async fn show(State(seen): State<Shared>, Path(id): Path<String>) -> (StatusCode, Json<Value>) {
        let looks = {
            let mut seen = seen.lock().unwrap();
            let looks = seen.looks.entry(id.clone()).or_default();
            *looks += 1;
            *looks
        };
        let job = |state: &str, attempt: u64, reason: Option<&str>| {
            (
                StatusCode::OK,
                Json(json!({"id": id, "state": state, "attempt": attempt, "reason": reason})),
            )
        };
        match id.as_str() {
            "done" => job("succeeded", 1, None),
            "failed" => job("failed", 1, Some("exit 3")),
            "retried" => job("succeeded", 2, None),
            "later" if looks >= 2 => job("succeeded", 1, None),
            "later" | "running" => job("running", 1, None),
            _ => (StatusCode::NOT_FOUND, Json(json!({"error": "not found"}))),
        }
    }

    /// A dispatcher's API in miniature on a free local port.
    async fn fake_dispatcher() -> (Target, Shared) {
        let seen = Shared::default();
        let router = Router::new()
            .route("/ready", get(ready))
            .route("/v1/jobs", post(submit))
            .route("/v1/jobs/{id}", get(show))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        let target = Target {
            url,
            token: "t".into(),
        };
        (target, seen)
    }

    #[tokio::test]
    async fn traffic_sends_both_loops_on_new_connections_and_keeps_every_answer() {
        let (target, seen) = fake_dispatcher().await;
        let dir = testkit::temp::TempDir::new("chaos-traffic");
        let args = TrafficArgs {
            target,
            agent: "echo".into(),
            label: "upgrade".into(),
            interval_ms: 20,
            max_secs: 60,
            out: dir.path().join("report.json"),
        };
        let traffic = Traffic::new(&args).unwrap();
        let report = traffic
            .send(
                Duration::from_secs(60),
                tokio::time::sleep(Duration::from_millis(300)),
            )
            .await;

        assert!(report.ready >= 5 && report.submits >= 5, "{report:?}");
        assert_eq!(report.requests, report.ready + report.submits);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.peers.len(), report.requests, "every request answered");
        let connections: HashSet<_> = seen.peers.iter().collect();
        assert_eq!(connections.len(), seen.peers.len(), "one connection each");
        assert_eq!(seen.unauthorised, 0);
        assert_eq!(seen.tasks[..2], ["upgrade #1", "upgrade #2"]);

        let refused = report.submits / 3;
        assert_eq!(report.failed.len(), refused, "{report:?}");
        assert!(report
            .failed
            .iter()
            .all(|f| f.kind == RequestKind::Submit && f.error == r#"HTTP 503: {"error":"busy"}"#));
        assert_eq!(report.acknowledged.len(), report.submits - refused);
        assert_eq!(report.acknowledged[..2], ["job1", "job2"]);

        report.write(&args.out).unwrap();
        assert_eq!(Report::read(&args.out).unwrap(), report);
    }

    #[tokio::test]
    async fn judge_waits_for_every_job_and_lists_what_did_not_go_well() {
        let (target, seen) = fake_dispatcher().await;
        let ids: Vec<String> = ["done", "failed", "retried", "later", "gone", "running"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let client = traffic::client().unwrap();
        let judgement = judge(&client, &target, &ids, Duration::from_millis(2500)).await;

        assert_eq!(judgement.acknowledged, 6);
        assert_eq!(judgement.missing, ["gone"]);
        assert_eq!(judgement.unfinished, ["running"]);
        assert_eq!(
            judgement.not_succeeded,
            BTreeMap::from([("failed".into(), ("failed".into(), Some("exit 3".into())))])
        );
        assert_eq!(judgement.retried, BTreeMap::from([("retried".into(), 2)]));
        assert!(judgement.ended_after_secs >= 2.5, "{judgement:?}");
        let looks = &seen.lock().unwrap().looks;
        assert_eq!(
            (looks["done"], looks["later"]),
            (1, 2),
            "ended jobs are not looked at again"
        );
        assert!(looks["running"] >= 3, "about once a second: {looks:?}");
    }
}
