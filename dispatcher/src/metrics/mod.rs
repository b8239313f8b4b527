//! Prometheus metrics. Counters and histograms this process observes live in a
//! `prometheus-client` registry; queue figures (jobs by state, queue depth, admitted jobs)
//! are read from Redis at scrape time, so every replica reports the same truth.
//!
//! - [`percentiles`]: percentiles estimated from a histogram's buckets.
//! - [`window`]: the last hour of a histogram in one-minute slots, for the dashboard; each
//!   stage's is observed beside `agentsmith_stage_seconds` ([`Metrics::observe_stage`]).

pub mod percentiles;
pub mod window;

use std::fmt::Write;

use axum::http::{Method, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use queue::{JobState, Stats};

pub use percentiles::Percentiles;
pub use window::{Clock, Window};

/// Labels of the HTTP request counter.
///
/// Every value comes from a fixed set, so no request can add series: the route is the
/// router's template (or `other`), the method one of the standard ones (or `other`). A
/// caller inventing methods or paths (anyone may, before authentication) would otherwise
/// grow `/metrics` and the memory behind it without limit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route (`/v1/jobs/{id}`), never the raw path; `other` when none matched.
    pub route: String,
    /// The method: `GET`, `HEAD`, `POST`, `PUT`, `DELETE`, `PATCH`, `OPTIONS` or `other`.
    pub method: &'static str,
    /// The status code.
    pub status: u16,
}

impl HttpLabels {
    /// The labels of a request that matched `route` (a template, `None` when no route
    /// matched) with `method`, answered with `status`.
    pub fn new(route: Option<&str>, method: &Method, status: StatusCode) -> Self {
        Self {
            route: route.unwrap_or(OTHER).to_string(),
            method: method_label(method),
            status: status.as_u16(),
        }
    }
}

/// The label value of everything outside a label's fixed set.
pub const OTHER: &str = "other";

/// The label of `method`: its name when it is a standard one, else [`OTHER`].
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or(OTHER)
}

/// Labels of the reply counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplyLabels {
    /// `done` (delivered, or nothing to say), `retried` or `given_up`.
    pub outcome: String,
}

/// A stage of a job's life, timed by `agentsmith_stage_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// A webhook delivery received → answered (the job durable, when it made one).
    Acknowledge,
    /// Queued → admitted: the first attempt's wait for a slot.
    Queue,
    /// Admitted → workload created (the spawner's call and its record).
    Spawn,
    /// Workload created → the agent running (its runner's first report).
    Start,
    /// Agent running → the attempt ended.
    Run,
    /// Job ended → its final reply delivered where the request came from.
    Reply,
}

impl Stage {
    /// Every stage, in the order a job goes through them.
    pub const ALL: [Stage; 6] = [
        Stage::Acknowledge,
        Stage::Queue,
        Stage::Spawn,
        Stage::Start,
        Stage::Run,
        Stage::Reply,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Acknowledge => "acknowledge",
            Stage::Queue => "queue",
            Stage::Spawn => "spawn",
            Stage::Start => "start",
            Stage::Run => "run",
            Stage::Reply => "reply",
        }
    }
}

/// Seconds from `from_ms` to `to_ms` (ms since the epoch).
pub fn seconds_between(from_ms: i64, to_ms: i64) -> f64 {
    (to_ms - from_ms) as f64 / 1000.0
}

/// Labels of the stage histogram. Every value comes from a fixed set: the stage, the
/// source (`api` or one of the four webhook sources), the backend and the target the job
/// ran on (both from the configuration), and the profile, one of the configured ones (`other` for a job whose profile has since
/// left the configuration, `none` for a delivery that is not yet a job).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// The stage ([`Stage::as_str`]).
    pub stage: &'static str,
    /// `api`, `slack`, `github`, `gitlab` or `jira`.
    pub source: &'static str,
    /// `process`, `docker` or `kubernetes`.
    pub backend: &'static str,
    /// The spawner target, one of the configured ones (`none` before a job has one).
    pub target: String,
    /// The agent profile.
    pub profile: String,
}

/// A spawner target as `/metrics`, `/ready` and the dashboard show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetState {
    /// Its name.
    pub name: String,
    /// Its backend.
    pub backend: &'static str,
    /// `up`, `down` or `unknown` (not probed yet).
    pub state: &'static str,
    /// Why its last probe failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Jobs holding one of its slots (none while Redis is down).
    pub jobs: Option<u64>,
    /// Its cap on concurrent jobs (0: none of its own).
    pub max_concurrent_jobs: u32,
}

/// The metrics of one dispatcher process.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route, method and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Seconds from admission to a recorded spawn.
    pub spawn_latency: Histogram,
    /// Seconds from submission to a terminal state.
    pub end_to_end_latency: Histogram,
    /// Replies to webhook sources by outcome.
    pub replies: Family<ReplyLabels, Counter>,
    /// Triggers refused by the projects' access rules, by source and reason.
    pub refused_triggers: Family<crate::webhooks::access::RefusalLabels, Counter>,
    /// Seconds each stage of a job's life took, by stage, source, backend and profile;
    /// observed only through [`Metrics::observe_stage`], with `stages_last_hour`.
    stages: Family<StageLabels, Histogram>,
    /// The last hour of each stage (all its series together), indexed by [`Stage`].
    stages_last_hour: [Window; Stage::ALL.len()],
    /// What the windows tell time by.
    clock: Clock,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The buckets of `agentsmith_stage_seconds` and of the stages' windows: 5 ms to about
/// 12 h, from an acknowledgement to a long agent run.
fn stage_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.005, 2.0, 24)
}

impl Metrics {
    /// A fresh registry, its windows on the [`window::monotonic`] clock.
    pub fn new() -> Self {
        Self::with_clock(window::monotonic())
    }

    /// A fresh registry whose windows tell time by `clock` (a test moves it).
    pub fn with_clock(clock: Clock) -> Self {
        let mut registry = Registry::with_prefix("agentsmith");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        let spawn_latency = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "spawn_latency_seconds",
            "Time from admission to a recorded spawn",
            spawn_latency.clone(),
        );
        let end_to_end_latency = Histogram::new(exponential_buckets(0.05, 2.0, 18));
        registry.register(
            "job_end_to_end_seconds",
            "Time from submission to a terminal state",
            end_to_end_latency.clone(),
        );
        let replies = Family::<ReplyLabels, Counter>::default();
        registry.register(
            "replies",
            "Replies to webhook sources by outcome (done, retried, given_up)",
            replies.clone(),
        );
        let stages = Family::<StageLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(stage_buckets())) as fn() -> Histogram,
        );
        registry.register(
            "stage_seconds",
            "Time each stage of a job's life took: acknowledge, queue, spawn, start, run, reply",
            stages.clone(),
        );
        Self {
            stages,
            stages_last_hour: Stage::ALL.map(|_| Window::new(stage_buckets())),
            clock,
            refused_triggers: crate::webhooks::access::register(&mut registry),
            registry,
            http_requests,
            spawn_latency,
            end_to_end_latency,
            replies,
        }
    }

    /// Records that `stage` of a job from `source` on `backend` and `target` with `profile` took
    /// `seconds`: in `agentsmith_stage_seconds` and in the stage's last hour.
    pub fn observe_stage(
        &self,
        stage: Stage,
        source: &'static str,
        (backend, target): (&'static str, String),
        profile: String,
        seconds: f64,
    ) {
        let labels = StageLabels {
            stage: stage.as_str(),
            source,
            backend,
            target,
            profile,
        };
        self.stages.get_or_create(&labels).observe(seconds);
        self.stages_last_hour[stage as usize].observe((self.clock)(), seconds);
    }

    /// The percentiles of `stage` over the last hour (every source, backend and profile
    /// together), as this process observed it.
    pub fn stage_last_hour(&self, stage: Stage) -> Percentiles {
        self.stages_last_hour[stage as usize].percentiles((self.clock)())
    }

    /// The OpenMetrics text of this process's metrics plus the queue figures in `stats` and
    /// the state of each spawner target.
    pub fn render(&self, stats: Option<&Stats>, targets: &[TargetState]) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        let body = out.strip_suffix("# EOF\n").unwrap_or(&out).to_string();
        let mut out = body;
        render_targets(&mut out, targets);
        if let Some(stats) = stats {
            let _ = writeln!(
                out,
                "# HELP agentsmith_jobs Jobs currently in each non-terminal state."
            );
            let _ = writeln!(out, "# TYPE agentsmith_jobs gauge");
            for state in JobState::ALL.iter().filter(|s| !s.is_terminal()) {
                let n = stats
                    .current
                    .get(state.as_str())
                    .copied()
                    .unwrap_or(0)
                    .max(0);
                let _ = writeln!(out, "agentsmith_jobs{{state=\"{state}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "# HELP agentsmith_jobs_entered Jobs that entered each state."
            );
            let _ = writeln!(out, "# TYPE agentsmith_jobs_entered counter");
            for state in JobState::ALL {
                let n = stats
                    .entered
                    .get(state.as_str())
                    .copied()
                    .unwrap_or(0)
                    .max(0);
                let _ = writeln!(
                    out,
                    "agentsmith_jobs_entered_total{{state=\"{state}\"}} {n}"
                );
            }
            for (name, help, value) in [
                (
                    "queue_ready",
                    "Entries in the ready stream not yet taken.",
                    stats.ready,
                ),
                (
                    "queue_waiting",
                    "Jobs waiting for a free slot.",
                    stats.waiting,
                ),
                (
                    "queue_delayed",
                    "Retries waiting out their backoff.",
                    stats.delayed,
                ),
                (
                    "jobs_admitted",
                    "Jobs holding a slot (starting or running).",
                    stats.admitted,
                ),
            ] {
                let _ = writeln!(out, "# HELP agentsmith_{name} {help}");
                let _ = writeln!(out, "# TYPE agentsmith_{name} gauge");
                let _ = writeln!(out, "agentsmith_{name} {value}");
            }
        }
        out.push_str("# EOF\n");
        out
    }
}

/// `agentsmith_target_up`, `agentsmith_target_jobs` and `agentsmith_target_max_jobs`.
fn render_targets(out: &mut String, targets: &[TargetState]) {
    if targets.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP agentsmith_target_up Whether the spawner target's last probe passed (1), failed (0) or none ran yet (-1)."
    );
    let _ = writeln!(out, "# TYPE agentsmith_target_up gauge");
    for t in targets {
        let up = match t.state {
            "up" => 1,
            "down" => 0,
            _ => -1,
        };
        let _ = writeln!(
            out,
            "agentsmith_target_up{{target=\"{}\",backend=\"{}\"}} {up}",
            t.name, t.backend
        );
    }
    let _ = writeln!(
        out,
        "# HELP agentsmith_target_jobs Jobs holding a slot of the spawner target."
    );
    let _ = writeln!(out, "# TYPE agentsmith_target_jobs gauge");
    for t in targets {
        if let Some(jobs) = t.jobs {
            let _ = writeln!(
                out,
                "agentsmith_target_jobs{{target=\"{}\"}} {jobs}",
                t.name
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP agentsmith_target_max_jobs The spawner target's cap on concurrent jobs (0: none of its own)."
    );
    let _ = writeln!(out, "# TYPE agentsmith_target_max_jobs gauge");
    for t in targets {
        let _ = writeln!(
            out,
            "agentsmith_target_max_jobs{{target=\"{}\"}} {}",
            t.name, t.max_concurrent_jobs
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Metrics on a clock the test moves, and its hand.
    fn metrics_on_a_test_clock() -> (Metrics, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(0));
        let hand = now.clone();
        let metrics = Metrics::with_clock(Arc::new(move || hand.load(Ordering::SeqCst)));
        (metrics, now)
    }

    #[test]
    fn a_stage_leaves_its_last_hour_but_stays_in_the_cumulative_histogram() {
        let (metrics, now) = metrics_on_a_test_clock();
        metrics.observe_stage(
            Stage::Run,
            "api",
            ("process", "default".into()),
            "ok".into(),
            3.0,
        );
        metrics.observe_stage(
            Stage::Run,
            "slack",
            ("process", "default".into()),
            "other".into(),
            5.0,
        );
        let run = metrics.stage_last_hour(Stage::Run);
        assert_eq!(run.count, 2, "{run:?}");
        assert!(
            run.p50.unwrap() > 2.56 && run.p99.unwrap() <= 5.12,
            "{run:?}"
        );
        assert_eq!(metrics.stage_last_hour(Stage::Queue).count, 0);

        now.store(61 * 60_000, Ordering::SeqCst);
        metrics.observe_stage(
            Stage::Queue,
            "api",
            ("process", "default".into()),
            "ok".into(),
            0.1,
        );
        assert_eq!(metrics.stage_last_hour(Stage::Run), Percentiles::default());
        assert_eq!(metrics.stage_last_hour(Stage::Queue).count, 1);
        let text = metrics.render(None, &[]);
        let run_total: u64 = text
            .lines()
            .filter(|l| l.starts_with("agentsmith_stage_seconds_count{stage=\"run\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(run_total, 2, "Prometheus keeps counting: {text}");
    }

    #[test]
    fn invented_methods_and_unmatched_routes_share_one_label_value() {
        let metrics = Metrics::new();
        for i in 0..100 {
            let method = Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
            let labels = HttpLabels::new(None, &method, StatusCode::NOT_FOUND);
            metrics.http_requests.get_or_create(&labels).inc();
        }
        let get = HttpLabels::new(Some("/v1/jobs"), &Method::GET, StatusCode::OK);
        metrics.http_requests.get_or_create(&get).inc();
        let text = metrics.render(None, &[]);
        let mut series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("agentsmith_http_requests_total{"))
            .collect();
        series.sort_unstable();
        assert_eq!(
            series,
            [
                "agentsmith_http_requests_total{route=\"/v1/jobs\",method=\"GET\",status=\"200\"} 1",
                "agentsmith_http_requests_total{route=\"other\",method=\"other\",status=\"404\"} 100",
            ],
            "{text}"
        );
    }
}
