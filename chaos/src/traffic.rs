//! `chaos traffic`: the traffic of the Helm chart's live test. Two loops against a
//! dispatcher, one `GET /ready` and one `POST /v1/jobs`, each starting a request every
//! interval, each request on a new connection (a keep-alive pool would hide a pod that
//! stopped accepting). They run until SIGTERM, SIGINT or `--max-secs`; a request in flight
//! then is finished (at most 5 s), so a job acknowledged at the last moment is counted.
//! What happened is written as a [`Report`], which `chaos judge` reads.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use reqwest::header::{HeaderMap, HeaderValue, CONNECTION};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::args::{Target, TrafficArgs};

/// How long one request may take, connecting included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an error answer's body a failure keeps.
const BODY_SHOWN: usize = 1000;

/// What `chaos traffic` writes when it stops (JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
// A report with only `acknowledged` (say, written by hand) is read as well.
#[serde(default)]
pub struct Report {
    /// Requests sent, both loops.
    pub requests: usize,
    /// `GET /ready` requests sent.
    pub ready: usize,
    /// `POST /v1/jobs` requests sent.
    pub submits: usize,
    /// The longest any request took, in seconds.
    pub slowest_secs: f64,
    /// Every request that failed, in the order they were sent.
    pub failed: Vec<Failure>,
    /// The `id` of every job answered 202, in the order they were submitted.
    pub acknowledged: Vec<String>,
}

/// A request that failed: a non-2xx answer, a connection error or a timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// When it was sent (`HH:MM:SS`, UTC).
    pub at: String,
    /// Which loop sent it.
    pub kind: RequestKind,
    /// `HTTP <status>: <body>`, or what went wrong with the connection.
    pub error: String,
}

/// The two loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// `GET /ready`.
    Ready,
    /// `POST /v1/jobs`.
    Submit,
}

/// One request sent.
struct Outcome {
    kind: RequestKind,
    started: Instant,
    at: String,
    took: Duration,
    error: Option<String>,
    /// The job's id, when a submit was answered 202.
    acknowledged: Option<String>,
}

/// An HTTP client that opens a new connection for every request and gives each
/// [`REQUEST_TIMEOUT`].
pub fn client() -> anyhow::Result<reqwest::Client> {
    let mut headers = HeaderMap::new();
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .default_headers(headers)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")
}

/// The traffic's settings.
pub struct Traffic {
    client: reqwest::Client,
    target: Target,
    agent: String,
    label: String,
    interval: Duration,
}

impl Traffic {
    /// Traffic as the command line asks.
    pub fn new(args: &TrafficArgs) -> anyhow::Result<Traffic> {
        Ok(Traffic {
            client: client()?,
            target: Target {
                url: args.target.url.trim_end_matches('/').to_string(),
                token: args.target.token.clone(),
            },
            agent: args.agent.clone(),
            label: args.label.clone(),
            interval: args.interval(),
        })
    }

    /// Runs both loops until `stop` completes or `max` passes, then reports.
    pub async fn send(&self, max: Duration, stop: impl Future<Output = ()>) -> Report {
        let stopping = CancellationToken::new();
        let stopper = async {
            tokio::select! {
                () = stop => {}
                () = tokio::time::sleep(max) => {}
            }
            stopping.cancel();
        };
        let (ready, submits, ()) = tokio::join!(
            self.repeat(RequestKind::Ready, &stopping),
            self.repeat(RequestKind::Submit, &stopping),
            stopper,
        );
        report(ready, submits)
    }

    /// One loop: a request every interval (at once when the last took longer), until
    /// `stopping` is cancelled between two requests.
    async fn repeat(&self, kind: RequestKind, stopping: &CancellationToken) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        let mut n = 0u64;
        while !stopping.is_cancelled() {
            n += 1;
            let started = Instant::now();
            outcomes.push(self.request(kind, n).await);
            tokio::select! {
                () = stopping.cancelled() => break,
                () = tokio::time::sleep_until(started + self.interval) => {}
            }
        }
        outcomes
    }

    /// Sends the `n`th request of a loop and says how it went.
    async fn request(&self, kind: RequestKind, n: u64) -> Outcome {
        let started = Instant::now();
        let at = clock(SystemTime::now());
        let url = &self.target.url;
        let request = match kind {
            RequestKind::Ready => self.client.get(format!("{url}/ready")),
            RequestKind::Submit => self.client.post(format!("{url}/v1/jobs")).json(&json!({
                "agent": self.agent,
                "task": format!("{} #{n}", self.label),
            })),
        };
        let answer = async {
            let response = request.bearer_auth(&self.target.token).send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        };
        let (error, acknowledged) = match answer.await {
            Err(e) => (Some(describe(&e)), None),
            Ok((status, body)) if !status.is_success() => (
                Some(format!("HTTP {}: {}", status.as_u16(), shorten(&body))),
                None,
            ),
            Ok((status, body)) => {
                let id = (kind == RequestKind::Submit && status.as_u16() == 202)
                    .then(|| serde_json::from_str::<Value>(&body).ok())
                    .flatten()
                    .and_then(|v| v["id"].as_str().map(str::to_string));
                (None, id)
            }
        };
        Outcome {
            kind,
            started,
            at,
            took: started.elapsed(),
            error,
            acknowledged,
        }
    }
}

/// The report of both loops' outcomes.
fn report(ready: Vec<Outcome>, submits: Vec<Outcome>) -> Report {
    let (ready_count, submit_count) = (ready.len(), submits.len());
    let mut all: Vec<Outcome> = ready.into_iter().chain(submits).collect();
    all.sort_by_key(|o| o.started);
    let slowest = all.iter().map(|o| o.took).max().unwrap_or_default();
    Report {
        requests: all.len(),
        ready: ready_count,
        submits: submit_count,
        slowest_secs: (slowest.as_secs_f64() * 1000.0).round() / 1000.0,
        failed: all
            .iter()
            .filter_map(|o| {
                Some(Failure {
                    at: o.at.clone(),
                    kind: o.kind,
                    error: o.error.clone()?,
                })
            })
            .collect(),
        acknowledged: all.into_iter().filter_map(|o| o.acknowledged).collect(),
    }
}

/// What went wrong with a request that got no (whole) answer, with every cause.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        format!("timeout after {} s", REQUEST_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut causes = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    format!("{what}: {}", causes.join(": "))
}

/// An answer's body as shown in a failure: at most [`BODY_SHOWN`] characters.
fn shorten(body: &str) -> String {
    match body.char_indices().nth(BODY_SHOWN) {
        Some((cut, _)) => format!("{}…", &body[..cut]),
        None => body.to_string(),
    }
}

/// The time of day of `t`, `HH:MM:SS` in UTC.
fn clock(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3_600, secs / 60 % 60, secs % 60)
}

impl Report {
    /// Writes it as JSON to `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("a report always serialises");
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads one that `chaos traffic` wrote.
    pub fn read(path: &Path) -> anyhow::Result<Report> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the traffic report {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("parsing the traffic report {}", path.display()))
    }
}

/// A future that completes on the first SIGTERM or SIGINT; the handlers are installed
/// before it returns, so no signal is missed once the caller says it has started.
fn terminated() -> anyhow::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// `chaos traffic`: sends the traffic until SIGTERM, SIGINT or `--max-secs`, then writes
/// the report to `--out`.
pub async fn main(args: TrafficArgs) -> anyhow::Result<()> {
    let traffic = Traffic::new(&args)?;
    let stop = terminated()?;
    // The caller waits for this line before it counts on the traffic running.
    println!("traffic: started");
    let report = traffic.send(Duration::from_secs(args.max_secs), stop).await;
    report.write(&args.out)?;
    eprintln!(
        "traffic: {} requests ({} ready, {} submits), {} failed, {} acknowledged, slowest {:.2} s; report in {}",
        report.requests,
        report.ready,
        report.submits,
        report.failed.len(),
        report.acknowledged.len(),
        report.slowest_secs,
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(kind: RequestKind, ms: u64, error: Option<&str>, id: Option<&str>) -> Outcome {
        Outcome {
            kind,
            started: Instant::now(),
            at: "12:01:02".into(),
            took: Duration::from_millis(ms),
            error: error.map(str::to_string),
            acknowledged: id.map(str::to_string),
        }
    }

    #[test]
    fn the_report_has_the_shape_the_live_test_reads() {
        let report = report(
            vec![
                outcome(RequestKind::Ready, 10, None, None),
                outcome(RequestKind::Ready, 130, Some("HTTP 503: {}"), None),
            ],
            vec![outcome(RequestKind::Submit, 20, None, Some("job1"))],
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            json!({
                "requests": 3, "ready": 2, "submits": 1, "slowest_secs": 0.13,
                "failed": [{"at": "12:01:02", "kind": "ready", "error": "HTTP 503: {}"}],
                "acknowledged": ["job1"],
            })
        );
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn a_report_with_only_acknowledged_ids_is_read() {
        let dir = testkit::temp::TempDir::new("chaos-report");
        let path = dir.path().join("report.json");
        std::fs::write(&path, r#"{"acknowledged": ["a", "b"]}"#).unwrap();
        assert_eq!(Report::read(&path).unwrap().acknowledged, ["a", "b"]);
    }

    #[test]
    fn a_report_that_is_not_json_is_an_error_naming_the_file() {
        let dir = testkit::temp::TempDir::new("chaos-report");
        let path = dir.path().join("report.json");
        std::fs::write(&path, "traffic: started").unwrap();
        let error = format!("{:#}", Report::read(&path).unwrap_err());
        assert!(error.contains("report.json"), "{error}");
        assert!(Report::read(&dir.path().join("none.json")).is_err());
    }

    #[test]
    fn the_clock_shows_utc_time_of_day() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_120_798);
        assert_eq!(clock(t), "10:26:38");
    }

    #[test]
    fn long_error_bodies_are_shortened() {
        assert_eq!(shorten("short"), "short");
        let long = "é".repeat(BODY_SHOWN + 5);
        assert_eq!(shorten(&long).chars().count(), BODY_SHOWN + 1);
    }

    #[tokio::test]
    async fn requests_to_a_closed_port_fail_as_connection_errors() {
        let port = testkit::free_port();
        let traffic = Traffic {
            client: client().unwrap(),
            target: Target {
                url: format!("http://127.0.0.1:{port}"),
                token: "t".into(),
            },
            agent: "echo".into(),
            label: "test".into(),
            interval: Duration::from_millis(50),
        };
        let report = traffic
            .send(Duration::from_millis(200), std::future::pending())
            .await;
        assert!(report.requests >= 2, "{report:?}");
        assert_eq!(report.failed.len(), report.requests, "{report:?}");
        assert!(report.acknowledged.is_empty());
        assert!(
            report
                .failed
                .iter()
                .all(|f| f.error.starts_with("connection failed: ")),
            "{report:?}"
        );
    }
}
