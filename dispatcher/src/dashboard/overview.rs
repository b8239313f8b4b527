//! `GET /v1/overview`: the facts of `/ready` and `/metrics` in one JSON object, for the
//! dashboard's overview page, and each stage's latency over the last hour.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use crate::api::auth::ApiCaller;
use crate::api::error::ApiError;
use crate::context::AppState;
use crate::metrics::{Percentiles, Stage, TargetState};
use queue::{JobFilter, JobState};

/// How far back "recent" jobs go.
const RECENT_MS: i64 = 60 * 60 * 1000;

/// At most this many jobs are read to count the recent ones.
const RECENT_CAP: usize = 2000;

/// The overview.
#[derive(Debug, Serialize)]
pub struct Overview {
    /// Where jobs are waiting and how many run.
    pub queue: QueueFigures,
    /// Jobs now in each non-terminal state.
    pub current: BTreeMap<String, i64>,
    /// Jobs that ever entered each state (the counters behind `/metrics`).
    pub entered: BTreeMap<String, i64>,
    /// Jobs created in the last hour, by their state now.
    pub last_hour: Recent,
    /// Latency percentiles observed by this dispatcher process since it started: each
    /// stage of a job's life (`acknowledge`, `queue`, `spawn`, `start`, `run`, `reply`)
    /// and `end_to_end`.
    pub latency: BTreeMap<&'static str, Percentiles>,
    /// Latency percentiles of each stage observed by this dispatcher process in the last
    /// hour (to the minute: sixty one-minute slots, the same buckets as `/metrics`).
    pub latency_last_hour: BTreeMap<&'static str, Percentiles>,
    /// Whether Redis answers.
    pub redis: Reachability,
    /// Whether the default target's backend answers.
    pub spawner: Reachability,
    /// The default target's backend.
    pub backend: &'static str,
    /// Every spawner target: its backend, state, jobs and cap.
    pub targets: Vec<TargetState>,
    /// Whether this process is shutting down.
    pub draining: bool,
    /// The configured project names (for the dashboard's filter).
    pub projects: Vec<String>,
    /// The configured agent profile names.
    pub agents: Vec<String>,
}

/// Queue depth and admissions.
#[derive(Debug, Default, Serialize)]
pub struct QueueFigures {
    /// Ready, not yet claimed.
    pub ready: u64,
    /// Claimed, waiting for a free slot.
    pub waiting: u64,
    /// Retries waiting out their backoff.
    pub delayed: u64,
    /// Admitted (starting or running).
    pub admitted: u64,
    /// The global limit of admitted jobs.
    pub max_concurrent_jobs: u32,
}

/// Jobs created recently, by state.
#[derive(Debug, Default, Serialize)]
pub struct Recent {
    /// Counts by state.
    pub by_state: BTreeMap<String, u64>,
    /// All of them.
    pub total: u64,
    /// True when more jobs than could be counted were created in the window.
    pub truncated: bool,
}

/// Whether a dependency answers, and why not.
#[derive(Debug, Serialize)]
pub struct Reachability {
    /// It answered.
    pub ok: bool,
    /// What went wrong, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl<E: std::fmt::Display> From<Result<(), E>> for Reachability {
    fn from(r: Result<(), E>) -> Self {
        match r {
            Ok(()) => Reachability {
                ok: true,
                error: None,
            },
            Err(e) => Reachability {
                ok: false,
                error: Some(e.to_string()),
            },
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// `GET /v1/overview`.
pub async fn overview(
    State(state): State<AppState>,
    _caller: ApiCaller,
) -> Result<Json<Overview>, ApiError> {
    let (redis, probes) = tokio::join!(state.queue.ping(), state.spawner.probe_all());
    let redis = Reachability::from(redis);
    let spawner = probes
        .into_iter()
        .find(|(name, _)| name == spawner::DEFAULT_TARGET)
        .map_or(
            Reachability {
                ok: true,
                error: None,
            },
            |(_, r)| Reachability::from(r),
        );
    let targets = state.target_states().await;
    let stats = state.queue.stats().await?;
    let last_hour = recent(&state).await?;
    let text = state.metrics.render(None, &[]);
    // The stages (`spawn` among them), then the whole life of a job.
    let mut latency = BTreeMap::from([(
        "end_to_end",
        percentiles(&text, "agentsmith_job_end_to_end_seconds"),
    )]);
    latency.extend(Stage::ALL.map(|stage| {
        let label = format!("stage=\"{}\"", stage.as_str());
        let name = stage.as_str();
        (
            name,
            percentiles_of(&text, "agentsmith_stage_seconds", &label),
        )
    }));
    let latency_last_hour = Stage::ALL
        .map(|stage| (stage.as_str(), state.metrics.stage_last_hour(stage)))
        .into();
    let current = JobState::ALL
        .iter()
        .filter(|s| !s.is_terminal())
        .map(|s| {
            let n = stats.current.get(s.as_str()).copied().unwrap_or(0).max(0);
            (s.as_str().to_string(), n)
        })
        .collect();
    let entered = JobState::ALL
        .iter()
        .map(|s| {
            let n = stats.entered.get(s.as_str()).copied().unwrap_or(0).max(0);
            (s.as_str().to_string(), n)
        })
        .collect();
    Ok(Json(Overview {
        queue: QueueFigures {
            ready: stats.ready,
            waiting: stats.waiting,
            delayed: stats.delayed,
            admitted: stats.admitted,
            max_concurrent_jobs: state.settings.queue.max_concurrent_jobs,
        },
        current,
        entered,
        last_hour,
        latency,
        latency_last_hour,
        redis,
        spawner,
        backend: state.spawner.backend(),
        targets,
        draining: state.is_draining(),
        projects: state.settings.projects.keys().cloned().collect(),
        agents: state.settings.agents.keys().cloned().collect(),
    }))
}

/// Counts the jobs created in the last hour by state, reading the index newest first.
async fn recent(state: &AppState) -> Result<Recent, ApiError> {
    let cutoff = now_ms() - RECENT_MS;
    let mut recent = Recent::default();
    let mut cursor: Option<String> = None;
    let mut seen = 0;
    loop {
        let page = state
            .queue
            .list(&JobFilter::default(), cursor.as_deref(), 500)
            .await?;
        for job in &page.jobs {
            if job.created_at < cutoff {
                return Ok(recent);
            }
            if seen == RECENT_CAP {
                recent.truncated = true;
                return Ok(recent);
            }
            seen += 1;
            recent.total += 1;
            *recent
                .by_state
                .entry(job.state.as_str().to_string())
                .or_default() += 1;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(recent),
        }
    }
}

/// Percentiles of the histogram `name` in OpenMetrics `text` (cumulative `_bucket` lines).
pub fn percentiles(text: &str, name: &str) -> Percentiles {
    percentiles_of(text, name, "")
}

/// Percentiles of the series of histogram `name` whose labels hold `label` (such as
/// `stage="run"`; `""` for all), their buckets summed.
pub fn percentiles_of(text: &str, name: &str, label: &str) -> Percentiles {
    let prefix = format!("{name}_bucket{{");
    let mut summed: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
    for line in text.lines() {
        let Some((labels, count)) = line
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once("} "))
        else {
            continue;
        };
        let le = labels
            .split(',')
            .find_map(|l| l.strip_prefix("le=\""))
            .and_then(|v| v.strip_suffix('"'));
        let count = count
            .split_whitespace()
            .next()
            .and_then(|c| c.parse::<u64>().ok());
        let (Some(le), Some(count)) = (le, count) else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            let Ok(le) = le.parse::<f64>() else { continue };
            le
        };
        if labels.contains(label) {
            summed.entry(le.to_bits()).or_insert((le, 0)).1 += count;
        }
    }
    let mut buckets: Vec<(f64, u64)> = summed.into_values().collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Percentiles::from_cumulative(&buckets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_within_the_bucket_that_holds_the_rank() {
        let text = "\
# TYPE x histogram
x_bucket{le=\"1.0\"} 0
x_bucket{le=\"2.0\"} 10
x_bucket{le=\"4.0\"} 20
x_bucket{le=\"+Inf\"} 20
x_count 20
";
        let p = percentiles(text, "x");
        assert_eq!(p.count, 20);
        assert_eq!(p.p50, Some(2.0));
        assert!((p.p90.unwrap() - 3.6).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn percentiles_of_an_empty_or_missing_histogram_are_none() {
        assert_eq!(percentiles("", "x"), Percentiles::default());
        let text = "x_bucket{le=\"1.0\"} 0\nx_bucket{le=\"+Inf\"} 0\n";
        assert_eq!(percentiles(text, "x").p50, None);
    }

    #[test]
    fn the_real_metrics_text_yields_percentiles_once_something_is_observed() {
        let metrics = crate::metrics::Metrics::new();
        metrics.spawn_latency.observe(0.02);
        let p = percentiles(
            &metrics.render(None, &[]),
            "agentsmith_spawn_latency_seconds",
        );
        assert_eq!(p.count, 1);
        let p50 = p.p50.unwrap();
        assert!(p50 > 0.01 && p50 <= 0.02, "{p:?}");
    }

    #[test]
    fn a_stages_series_are_summed_and_other_stages_left_out() {
        let metrics = crate::metrics::Metrics::new();
        for (profile, seconds) in [("a", 0.02), ("b", 0.02), ("b", 0.02)] {
            metrics.observe_stage(
                Stage::Run,
                "api",
                ("process", "default".into()),
                profile.into(),
                seconds,
            );
        }
        metrics.observe_stage(
            Stage::Queue,
            "api",
            ("process", "default".into()),
            "a".into(),
            100.0,
        );
        let text = metrics.render(None, &[]);
        let run = percentiles_of(&text, "agentsmith_stage_seconds", "stage=\"run\"");
        assert_eq!(run.count, 3, "{text}");
        assert!(run.p99.unwrap() <= 0.02, "{run:?}");
        let queue = percentiles_of(&text, "agentsmith_stage_seconds", "stage=\"queue\"");
        assert_eq!(queue.count, 1);
        assert!(queue.p50.unwrap() > 50.0, "{queue:?}");
    }

    #[test]
    fn a_stages_last_hour_agrees_with_its_histogram_while_all_is_recent() {
        let metrics = crate::metrics::Metrics::new();
        let seconds = [0.004, 0.03, 0.03, 0.7, 1.5, 9.0, 9.0, 120.0, 4000.0, 1e6];
        for (i, s) in seconds.into_iter().enumerate() {
            let source = if i % 2 == 0 { "api" } else { "jira" };
            metrics.observe_stage(
                Stage::Spawn,
                source,
                ("docker", "default".into()),
                "ok".into(),
                s,
            );
        }
        let text = metrics.render(None, &[]);
        let cumulative = percentiles_of(&text, "agentsmith_stage_seconds", "stage=\"spawn\"");
        assert_eq!(cumulative.count, 10, "{text}");
        assert_eq!(metrics.stage_last_hour(Stage::Spawn), cumulative);
    }
}
