//! The verdict: every acknowledged job inspected (its record, its event stream, its lines
//! in the RUNS file), every idempotency key checked for a second job, the leftovers
//! counted, and the promises judged. The concurrency promise is sampled while the load
//! runs ([`sample_admitted`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::args::RedisKind;
use crate::config::{MAX_CONCURRENT, TOKEN};
use crate::ctx::{now_ms, Ctx};
use crate::docker;
use crate::kind::{Acked, Kind};
use crate::world::World;

/// Per job, per attempt: how many starts and ends the RUNS file shows.
type Runs = HashMap<String, BTreeMap<u64, (u64, u64)>>;

/// Whether a job in `state` has ended.
pub fn is_terminal(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled" | "timed_out")
}

/// Whether acknowledged jobs may be lost with this Redis set-up: with `appendfsync
/// everysec` a Redis crash may lose what was acknowledged in its last second; with
/// Sentinel or a cluster and `min_replicas_acked: 0` a failover may lose what the replica had not
/// received yet. Those are documented windows, measured and reported, not broken promises;
/// otherwise one lost job breaks the verdict.
pub fn loss_allowed(appendfsync: &str, redis: RedisKind, min_replicas_acked: u32) -> bool {
    appendfsync == "everysec" || (redis != RedisKind::Single && min_replicas_acked == 0)
}

/// Every 500 ms until `until` is set: `GET /v1/overview` (alternating replicas), recording
/// how many jobs are admitted and every sample over the limit.
pub async fn sample_admitted(ctx: Arc<Ctx>, until: Arc<AtomicBool>) {
    let mut replica = 0;
    while !until.load(Ordering::SeqCst) {
        if let Some((200, v)) = ctx.get(replica, "/v1/overview").await {
            if let Some(admitted) = v["queue"]["admitted"].as_u64() {
                ctx.stats.samples.fetch_add(1, Ordering::Relaxed);
                ctx.stats
                    .admitted_max
                    .fetch_max(admitted, Ordering::Relaxed);
                if admitted > MAX_CONCURRENT {
                    ctx.stats
                        .over_limit
                        .lock()
                        .expect("lock")
                        .push(format!("admitted {admitted} at {}", now_ms()));
                }
            }
        }
        replica = 1 - replica;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the inspection found, job by job and in all, and which promises it broke.
#[derive(Debug, Default)]
pub struct Verdict {
    /// How many jobs were acknowledged.
    pub acknowledged: usize,
    /// `appendfsync everysec`, or a failover without `min_replicas_acked`: jobs lost
    /// across the Redis crash are counted, not broken.
    pub allowed_loss: bool,
    /// End states by kind (`unreadable` when the record could not be read, `404` lost).
    pub by_state: BTreeMap<(Kind, String), u64>,
    /// Acknowledged jobs that answer 404.
    pub lost: Vec<String>,
    /// Jobs not terminal after the drain.
    pub stuck: Vec<String>,
    /// Jobs whose end state is not their kind's expected one (allowed, listed).
    pub mismatch: Vec<String>,
    /// One attempt started more than once.
    pub dup_spawn: Vec<String>,
    /// Quick jobs that ran to completion in more than one attempt (allowed, listed).
    pub completed_twice: Vec<String>,
    /// Jobs `succeeded` with no run recorded.
    pub phantom: Vec<String>,
    /// Ended jobs whose event stream has no terminal `state` event.
    pub missing_terminal_event: Vec<String>,
    /// Ended jobs with more than one terminal event, or a last one that differs.
    pub multiple_terminal_events: Vec<String>,
    /// Jobs whose final attempt is over 1.
    pub retried: u64,
    /// Jobs by how many agent starts the RUNS file shows.
    pub runs_hist: BTreeMap<u64, u64>,
    /// Submit→end latencies of the ended jobs, in ms, sorted.
    pub latencies: Vec<i64>,
    /// Idempotency keys with more than one job.
    pub duplicates_by_key: Vec<String>,
    /// Runner/agent processes (or containers) left after every job ended.
    pub leftovers: Vec<String>,
    /// Overview samples that showed more than the limit admitted.
    pub over_limit: Vec<String>,
}

impl Verdict {
    /// Inspects every acknowledged job and what the run left behind.
    pub async fn reach(ctx: &Ctx, acked: &[Acked]) -> Verdict {
        let runs = read_runs(&ctx.world.runs_file());
        let mut verdict = Verdict {
            acknowledged: acked.len(),
            allowed_loss: loss_allowed(
                &ctx.world.appendfsync,
                ctx.world.redis_kind,
                ctx.world.min_replicas_acked,
            ),
            ..Verdict::default()
        };
        for job in acked {
            let found = inspect(ctx, job).await;
            verdict.judge(job, &found, runs.get(&job.id));
        }
        verdict.duplicates_by_key = match list_all(ctx).await {
            Some(map) => map
                .into_iter()
                .filter(|(_, ids)| ids.len() > 1)
                .map(|(key, ids)| format!("{key}: {ids:?}"))
                .collect(),
            None => vec!["(could not list jobs)".to_string()],
        };
        // Every job has ended: no runner or agent of this run should be left (finished
        // runners exit once their events are delivered; allow them a few seconds).
        verdict.leftovers = match &ctx.world.docker {
            None => leftover_processes(&ctx.world).await,
            Some(d) => leftover_containers(&d.installation).await,
        };
        verdict.latencies.sort_unstable();
        verdict.over_limit = ctx.stats.over_limit.lock().expect("lock").clone();
        verdict
    }

    /// Adds one job: what was found of it, and its runs.
    fn judge(&mut self, job: &Acked, found: &Found, runs: Option<&BTreeMap<u64, (u64, u64)>>) {
        let state = found.state.clone().unwrap_or_else(|| "unreadable".into());
        *self.by_state.entry((job.kind, state.clone())).or_default() += 1;
        let starts: u64 = runs.map_or(0, |r| r.values().map(|(s, _)| s).sum());
        let ends: u64 = runs.map_or(0, |r| r.values().map(|(_, e)| e).sum());
        *self.runs_hist.entry(starts).or_default() += 1;
        if found.attempt > 1 {
            self.retried += 1;
        }
        for (attempt, (s, _)) in runs.into_iter().flatten() {
            if *s > 1 {
                self.dup_spawn
                    .push(format!("{} attempt {attempt} started {s} times", job.id));
            }
        }
        if state == "404" {
            self.lost.push(job.id.clone());
            return;
        }
        if !is_terminal(&state) {
            self.stuck.push(format!(
                "{} {:?} {state} attempt {}",
                job.id, job.kind, found.attempt
            ));
            return;
        }
        if let Some(f) = found.finished_at {
            self.latencies.push(f - job.submitted_ms);
        }
        if state != job.kind.expected() {
            self.mismatch.push(format!(
                "{} {:?} → {state} (attempt {}, reason {:?})",
                job.id, job.kind, found.attempt, found.reason
            ));
        }
        if job.kind == Kind::Quick && ends > 1 {
            self.completed_twice
                .push(format!("{} completed {ends} times ({state})", job.id));
        }
        if state == "succeeded" && ends == 0 {
            self.phantom.push(job.id.clone());
        }
        match found.terminal_events.len() {
            0 => self
                .missing_terminal_event
                .push(format!("{} ({state})", job.id)),
            1 => {}
            _ => self.multiple_terminal_events.push(format!(
                "{}: {:?} (record: {state})",
                job.id, found.terminal_events
            )),
        }
        if found.terminal_events.last().is_some_and(|e| *e != state) {
            self.multiple_terminal_events.push(format!(
                "{}: last terminal event {:?} but record {state}",
                job.id, found.terminal_events
            ));
        }
    }

    /// The promises broken, each with its count; empty when every promise held.
    pub fn broken(&self) -> Vec<String> {
        let mut broken = Vec::new();
        for (what, n) in [
            (
                "lost jobs",
                if self.allowed_loss {
                    0
                } else {
                    self.lost.len()
                },
            ),
            ("stuck jobs", self.stuck.len()),
            ("duplicate spawns", self.dup_spawn.len()),
            (
                "duplicate jobs per idempotency key",
                self.duplicates_by_key.len(),
            ),
            ("successes without a run", self.phantom.len()),
            ("terminal events missing", self.missing_terminal_event.len()),
            (
                "terminal events inconsistent",
                self.multiple_terminal_events.len(),
            ),
            ("concurrency over limit", self.over_limit.len()),
        ] {
            if n > 0 {
                broken.push(format!("{what}: {n}"));
            }
        }
        if self.acknowledged == 0 {
            broken.push("no job was acknowledged".into());
        }
        broken
    }
}

/// What the end-of-run check found about one job.
#[derive(Debug, Default)]
struct Found {
    /// Its state (`404` when it is gone; `None` when no replica answered).
    state: Option<String>,
    attempt: u64,
    reason: Option<String>,
    finished_at: Option<i64>,
    /// The terminal states its event stream shows, in order.
    terminal_events: Vec<String>,
}

/// Reads a job's record and, once it has ended, its event stream (which must end by
/// itself; bounded at 10 s).
async fn inspect(ctx: &Ctx, job: &Acked) -> Found {
    let mut found = Found::default();
    if let Some((status, v)) = ctx
        .get(job.index % 2, &format!("/v1/jobs/{}", job.id))
        .await
    {
        if status == 200 {
            found.state = v["state"].as_str().map(str::to_string);
            found.attempt = v["attempt"].as_u64().unwrap_or(0);
            found.reason = v["reason"].as_str().map(str::to_string);
            found.finished_at = v["finished_at"].as_i64();
        } else if status == 404 {
            found.state = Some("404".into());
        }
    }
    if found.state.as_deref().is_some_and(is_terminal) {
        let url = ctx.url(job.index % 2, &format!("/v1/jobs/{}/events", job.id));
        let read = async {
            let r = ctx.http.get(url).bearer_auth(TOKEN).send().await.ok()?;
            r.text().await.ok()
        };
        if let Ok(Some(text)) = tokio::time::timeout(Duration::from_secs(10), read).await {
            found.terminal_events = state_events(&text)
                .iter()
                .filter_map(|s| s["state"].as_str())
                .filter(|s| is_terminal(s))
                .map(str::to_string)
                .collect();
        }
    }
    found
}

/// The data of every `state` event of an SSE stream.
fn state_events(text: &str) -> Vec<Value> {
    let mut states = Vec::new();
    let mut event = String::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("event:") {
            event = name.trim().to_string();
        } else if let Some(data) = line.strip_prefix("data:") {
            if event == "state" {
                if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
                    states.push(v);
                }
            }
        }
    }
    states
}

/// The RUNS file: per job, per attempt, how many starts and ends.
fn read_runs(path: &Path) -> Runs {
    let mut runs = Runs::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [id, attempt, what] = parts[..] else {
            continue;
        };
        let Ok(attempt) = attempt.parse::<u64>() else {
            continue;
        };
        let entry = runs
            .entry(id.to_string())
            .or_default()
            .entry(attempt)
            .or_default();
        if what == "start" {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    runs
}

/// Every job in Redis with our idempotency keys, grouped: a key with two ids is a duplicate.
async fn list_all(ctx: &Ctx) -> Option<HashMap<String, Vec<String>>> {
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    let mut cursor: Option<String> = None;
    for _ in 0..200 {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?limit=500&cursor={c}"),
            None => "/v1/jobs?limit=500".to_string(),
        };
        let (status, v) = ctx.get(0, &path).await?;
        if status != 200 {
            return None;
        }
        for job in v["jobs"].as_array().cloned().unwrap_or_default() {
            if let (Some(key), Some(id)) = (job["idempotency_key"].as_str(), job["id"].as_str()) {
                by_key
                    .entry(key.to_string())
                    .or_default()
                    .push(id.to_string());
            }
        }
        match v["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
            _ => return Some(by_key),
        }
    }
    Some(by_key)
}

/// Runner and agent processes of this run still alive 10 s after every job ended.
async fn leftover_processes(world: &World) -> Vec<String> {
    let mut leftovers = Vec::new();
    for _ in 0..20 {
        leftovers = world.our_processes();
        if leftovers.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    leftovers
        .iter()
        .map(|(pid, _)| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let job = String::from_utf8_lossy(&env)
                .split('\0')
                .filter(|v| {
                    v.starts_with("AGENTSMITH_JOB_ID=") || v.starts_with("AGENTSMITH_ATTEMPT=")
                })
                .collect::<Vec<_>>()
                .join(" ");
            format!("pid {pid}: {cmd} [{job}]")
        })
        .collect()
}

/// Containers of this run still running 10 s after every job ended (named
/// `agentsmith-<job id>-<attempt>`).
async fn leftover_containers(installation: &str) -> Vec<String> {
    let mut leftovers = Vec::new();
    for _ in 0..20 {
        let installation = installation.to_string();
        leftovers = match tokio::task::spawn_blocking(move || {
            docker::containers(&installation, true)
        })
        .await
        {
            Ok(Ok(found)) => found
                .into_iter()
                .map(|c| format!("container {} ({})", c.name, c.state))
                .collect(),
            Ok(Err(e)) => vec![format!("(could not list containers: {e:#})")],
            Err(e) => vec![format!("(could not list containers: {e})")],
        };
        if leftovers.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    leftovers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(kind: Kind) -> Acked {
        Acked {
            index: 0,
            kind,
            id: "j1".into(),
            submitted_ms: 1_000,
            acked_ms: 1_050,
        }
    }

    fn ended(state: &str, attempt: u64, events: &[&str]) -> Found {
        Found {
            state: Some(state.into()),
            attempt,
            reason: None,
            finished_at: Some(1_500),
            terminal_events: events.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn the_runs_file_counts_starts_and_ends_per_attempt() {
        let dir = testkit::temp::TempDir::new("chaos-runs");
        let path = dir.path().join("runs.txt");
        std::fs::write(
            &path,
            "a 1 start\na 1 end\na 2 start\na 2 start\nbad line\n",
        )
        .unwrap();
        let runs = read_runs(&path);
        assert_eq!(runs["a"][&1], (1, 1));
        assert_eq!(runs["a"][&2], (2, 0));
        assert_eq!(runs.len(), 1);
    }

    #[test]
    fn only_state_events_are_read_from_the_stream() {
        let text = "event: state\ndata: {\"state\":\"running\"}\n\nevent: log\ndata: {\"state\":\"succeeded\"}\n\nevent: state\ndata: {\"state\":\"succeeded\"}\n\n";
        let states: Vec<_> = state_events(text)
            .iter()
            .map(|v| v["state"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(states, ["running", "succeeded"]);
    }

    #[test]
    fn a_quick_job_that_succeeded_once_breaks_no_promise() {
        let mut verdict = Verdict {
            acknowledged: 1,
            ..Verdict::default()
        };
        let runs = BTreeMap::from([(1, (1, 1))]);
        verdict.judge(
            &job(Kind::Quick),
            &ended("succeeded", 1, &["succeeded"]),
            Some(&runs),
        );
        assert_eq!(verdict.broken(), Vec::<String>::new());
        assert_eq!(verdict.latencies, [500]);
        assert_eq!(verdict.runs_hist, BTreeMap::from([(1, 1)]));
    }

    #[test]
    fn a_success_without_a_run_and_an_attempt_started_twice_are_broken_promises() {
        let mut verdict = Verdict {
            acknowledged: 1,
            ..Verdict::default()
        };
        let runs = BTreeMap::from([(1, (2, 0))]);
        verdict.judge(
            &job(Kind::Quick),
            &ended("succeeded", 1, &["succeeded"]),
            Some(&runs),
        );
        assert_eq!(
            verdict.broken(),
            ["duplicate spawns: 1", "successes without a run: 1"]
        );
    }

    #[test]
    fn a_lost_job_is_broken_unless_the_loss_window_is_allowed() {
        let mut verdict = Verdict {
            acknowledged: 1,
            ..Verdict::default()
        };
        verdict.judge(&job(Kind::Fail), &ended("404", 0, &[]), None);
        assert_eq!(verdict.broken(), ["lost jobs: 1"]);
        verdict.allowed_loss = true;
        assert_eq!(verdict.broken(), Vec::<String>::new());
    }

    #[test]
    fn only_everysec_or_a_failover_without_replica_acknowledgement_may_lose_jobs() {
        assert!(!loss_allowed("always", RedisKind::Single, 0));
        assert!(loss_allowed("everysec", RedisKind::Single, 0));
        assert!(!loss_allowed("always", RedisKind::Sentinel, 1));
        assert!(loss_allowed("always", RedisKind::Sentinel, 0));
        assert!(!loss_allowed("always", RedisKind::Cluster, 1));
        assert!(loss_allowed("always", RedisKind::Cluster, 0));
    }

    #[test]
    fn a_run_without_acknowledged_jobs_is_broken() {
        assert_eq!(Verdict::default().broken(), ["no job was acknowledged"]);
    }
}
