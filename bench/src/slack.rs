//! Signed Slack slash commands per second and the p99 of their acknowledgement, beside an
//! axum hello-world loaded the same way in the same run.
//!
//! The dispatcher is built in-process, as in the lifecycle phase, around the no-op
//! spawner: the default settings plus the bench's Redis and a prefix of its own,
//! `sources.slack.enabled` with a signing secret, and a project `bench` (agent `echo`)
//! that the Jira key `BENCH` maps to. The hello-world is axum answering `GET /` with
//! "hello". Both serve on the bench's runtime, one after the other; the load generator runs
//! on a runtime of its own threads (named [`LOAD_THREAD`]), so the CPU of each side is
//! known.
//!
//! The generator keeps `connections` HTTP/1.1 keep-alive connections busy, each sending its
//! next request as soon as the previous answer is read (a closed loop, as wrk's). After
//! [`WARMUP`] it counts, for `duration`, every answer that arrives and its latency, from
//! just before the request is written until the whole answer is read. Each Slack request
//! is a distinct form body `command=/agent&text=fix BENCH-<n>&…&trigger_id=<tag>.<n>`
//! signed with the current timestamp, so each creates a job: distinct tickets, so "one job
//! per ticket" never answers "already running", and distinct trigger ids, so none is a
//! duplicate delivery.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentsmith::app::Application;
use agentsmith::settings::{ProjectSettings, Settings};
use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use spawner::backend::noop::NoopSpawner;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::redis_info::{BenchRedis, Delta};
use crate::runtime::NamedRuntime;
use crate::sys::{machine_cpu_secs, own_cpu_secs, threads_cpu_secs};

/// The signing secret the bench configures and signs with.
pub const SIGNING_SECRET: &str = "bench-slack-signing-secret";
/// How long each server is loaded before the measured window opens.
pub const WARMUP: Duration = Duration::from_secs(2);
/// The name of the load generator's threads.
pub const LOAD_THREAD: &str = "bench-load";
/// What a slash command's answer says when it queued a job.
const QUEUED: &[u8] = b"Queued as";

/// How the phase is run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Open connections.
    pub connections: usize,
    /// Worker threads of the load generator.
    pub threads: usize,
    /// The measured window, after [`WARMUP`].
    pub duration: Duration,
    /// Key prefix of the dispatcher.
    pub prefix: String,
    /// Unique to this run (in trigger ids).
    pub tag: String,
}

/// What one load run measured.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Answers that arrived within the measured window.
    pub requests: u64,
    /// The measured window.
    pub window: Duration,
    /// Latency percentiles of those answers.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The slowest.
    pub max: Duration,
    /// Answers that were not 2xx (warm-up included).
    pub non_2xx: u64,
    /// Failed connections and requests (warm-up included).
    pub errors: u64,
    /// 2xx answers without the expected text (warm-up included).
    pub unexpected: u64,
    /// Answers with the expected text (warm-up included).
    pub expected: u64,
    /// CPU seconds of the load generator's threads within the window.
    pub load_cpu_secs: f64,
    /// CPU seconds of the rest of the bench process (the server under test) within it.
    pub server_cpu_secs: f64,
    /// CPU seconds the whole machine was busy within it.
    pub machine_busy_secs: f64,
}

impl Run {
    /// Answers per second within the window.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Server CPU microseconds per answer.
    pub fn server_us_per_request(&self) -> f64 {
        self.server_cpu_secs * 1e6 / self.requests.max(1) as f64
    }
}

/// What the phase measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `POST /webhooks/slack/commands`.
    pub slack: Run,
    /// `GET /` of the hello-world.
    pub hello: Run,
    /// Jobs the dispatcher stored during the Slack run, warm-up included (its counters).
    pub jobs_stored: i64,
    /// What Redis did within the Slack run's window.
    pub redis: Delta,
    /// Open connections.
    pub connections: usize,
}

/// Runs the phase against `redis`.
pub async fn run(redis: &BenchRedis, cfg: &Config) -> anyhow::Result<Outcome> {
    let load = NamedRuntime::new(LOAD_THREAD, cfg.threads)?;
    let (slack, jobs_stored, redis_delta) = slack_run(redis, cfg, &load).await?;
    let hello = hello_run(cfg, &load).await?;
    Ok(Outcome {
        slack,
        hello,
        jobs_stored,
        redis: redis_delta,
        connections: cfg.connections,
    })
}

async fn slack_run(
    redis: &BenchRedis,
    cfg: &Config,
    load: &NamedRuntime,
) -> anyhow::Result<(Run, i64, Delta)> {
    let mut settings = Settings::load_from(None, &[]).context("loading the default settings")?;
    settings.redis.url = redis.url.as_str().into();
    settings.redis.prefix = cfg.prefix.clone();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.shutdown_grace_secs = 5;
    settings.sources.slack.enabled = true;
    settings.sources.slack.signing_secret = SIGNING_SECRET.into();
    settings.projects.insert(
        "bench".into(),
        ProjectSettings {
            agent: "echo".into(),
            jira_projects: vec!["BENCH".into()],
            ..ProjectSettings::default()
        },
    );
    let problems = settings.validate();
    if !problems.is_empty() {
        bail!("bench settings are invalid: {problems:?}");
    }
    let shutdown = CancellationToken::new();
    let app =
        Application::build_with_spawner(settings, Arc::new(NoopSpawner::new()), shutdown.clone())
            .await
            .context("building the dispatcher")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], app.port()));
    let queue = app.context().queue.clone();
    let app_task = tokio::spawn(app.run());
    // Stop the dispatcher however this function ends.
    let _stop = shutdown.clone().drop_guard();

    let target = Arc::new(Target::slack(addr, &cfg.tag));
    // One command by hand first: a wrong secret or project shows here, not as counts.
    let (status, body) = send_once(&target).await?;
    if status != 200 || !contains(&body, QUEUED) {
        bail!(
            "the check command answered {status}: {:.300}",
            String::from_utf8_lossy(&body)
        );
    }
    let queued = |stats: queue::Stats| stats.entered.get("queued").copied();
    let before = queued(queue.stats().await?).unwrap_or(0);
    let (run, redis_delta) = drive(load, target, cfg, Some(redis)).await?;
    let jobs_stored = queued(queue.stats().await?).unwrap_or(0) - before;
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(15), app_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("bench: slack: the dispatcher stopped with an error: {e:#}"),
        Ok(Err(e)) => eprintln!("bench: slack: the dispatcher task failed: {e}"),
        Err(_) => eprintln!("bench: slack: the dispatcher did not stop within 15 s"),
    }
    Ok((run, jobs_stored, redis_delta.unwrap_or_default()))
}

async fn hello_run(cfg: &Config, load: &NamedRuntime) -> anyhow::Result<Run> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("binding the hello-world")?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
    let serve = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
    let server = tokio::spawn(async move { serve.await });
    let _stop = stop.clone().drop_guard();
    let target = Arc::new(Target::hello(addr));
    let (status, body) = send_once(&target).await?;
    if status != 200 || body.as_ref() != b"hello" {
        bail!("the hello-world answered {status}");
    }
    let (run, _) = drive(load, target, cfg, None).await?;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(run)
}

/// What to send to one server, and what its answer must say.
struct Target {
    addr: SocketAddr,
    /// Builds request number `n`.
    make: Box<dyn Fn(u64) -> anyhow::Result<Request<Full<Bytes>>> + Send + Sync>,
    /// The next request number.
    next: AtomicU64,
    /// Text every good answer holds.
    expect: &'static [u8],
}

impl Target {
    /// Distinct signed slash commands `fix BENCH-<n>`.
    fn slack(addr: SocketAddr, tag: &str) -> Self {
        let (host, tag) = (addr.to_string(), tag.to_string());
        Self {
            addr,
            make: Box::new(move |n| {
                let body = format!(
                    "command=%2Fagent&text=fix+BENCH-{n}&user_id=U1&user_name=bench&channel_id=C1\
                     &response_url=http%3A%2F%2F127.0.0.1%3A9%2Fnone&trigger_id={tag}.{n}"
                );
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .context("the clock is before 1970")?
                    .as_secs() as i64;
                let signature = testkit::sign::slack(SIGNING_SECRET, now, body.as_bytes());
                Ok(Request::post("/webhooks/slack/commands")
                    .header(HOST, &host)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header("x-slack-request-timestamp", now.to_string())
                    .header("x-slack-signature", signature)
                    .body(Full::new(Bytes::from(body)))?)
            }),
            next: AtomicU64::new(0),
            expect: QUEUED,
        }
    }

    /// `GET /`.
    fn hello(addr: SocketAddr) -> Self {
        let host = addr.to_string();
        Self {
            addr,
            make: Box::new(move |_| {
                Ok(Request::get("/")
                    .header(HOST, &host)
                    .body(Full::new(Bytes::new()))?)
            }),
            next: AtomicU64::new(0),
            expect: b"hello",
        }
    }

    fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        (self.make)(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(u16, Bytes)> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// One request on a connection of its own.
async fn send_once(target: &Target) -> anyhow::Result<(u16, Bytes)> {
    let work = async {
        let mut sender = connect(target.addr).await?;
        send(&mut sender, target.request()?).await
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .with_context(|| format!("no answer from {} within 10 s", target.addr))?
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What one connection counted.
#[derive(Default)]
struct Tally {
    /// Latencies of the answers within the window, in microseconds.
    latencies: Vec<u32>,
    non_2xx: u64,
    errors: u64,
    unexpected: u64,
    expected: u64,
}

/// One connection's closed loop until `until`; reconnects after an error.
async fn connection(target: Arc<Target>, from: Instant, until: Instant) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut sender = None;
    while Instant::now() < until {
        let conn = match &mut sender {
            Some(conn) => conn,
            None => match connect(target.addr).await {
                Ok(conn) => sender.insert(conn),
                Err(_) => {
                    tally.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let request = target.request()?;
        let sent = Instant::now();
        let answer = send(conn, request).await;
        let done = Instant::now();
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(_) => {
                tally.errors += 1;
                sender = None;
                continue;
            }
        };
        if !(200..300).contains(&status) {
            tally.non_2xx += 1;
        } else if contains(&body, target.expect) {
            tally.expected += 1;
        } else {
            tally.unexpected += 1;
        }
        if done >= from && done <= until {
            let micros = (done - sent).as_micros();
            tally
                .latencies
                .push(u32::try_from(micros).unwrap_or(u32::MAX));
        }
    }
    Ok(tally)
}

/// Loads `target` with `cfg.connections` connections for [`WARMUP`] and then
/// `cfg.duration`; with `redis`, also what Redis did within the window.
async fn drive(
    load: &NamedRuntime,
    target: Arc<Target>,
    cfg: &Config,
    redis: Option<&BenchRedis>,
) -> anyhow::Result<(Run, Option<Delta>)> {
    let from = Instant::now() + WARMUP;
    let until = from + cfg.duration;
    let tasks: Vec<_> = (0..cfg.connections.max(1))
        .map(|_| load.spawn(connection(Arc::clone(&target), from, until)))
        .collect();

    tokio::time::sleep_until(from.into()).await;
    let redis_before = match redis {
        Some(redis) => Some(redis.snapshot().await?),
        None => None,
    };
    let load_before = threads_cpu_secs(LOAD_THREAD);
    let own_before = own_cpu_secs();
    let machine_before = machine_cpu_secs().0;
    tokio::time::sleep_until(until.into()).await;
    let load_cpu_secs = threads_cpu_secs(LOAD_THREAD) - load_before;
    let own_cpu = own_cpu_secs() - own_before;
    let machine_busy_secs = machine_cpu_secs().0 - machine_before;
    let redis_delta = match (redis, redis_before) {
        (Some(redis), Some(before)) => Some(before.delta(&redis.snapshot().await?)),
        _ => None,
    };

    let mut all = Tally::default();
    for task in tasks {
        let tally = task.await.context("a load connection panicked")??;
        all.latencies.extend(tally.latencies);
        all.non_2xx += tally.non_2xx;
        all.errors += tally.errors;
        all.unexpected += tally.unexpected;
        all.expected += tally.expected;
    }
    all.latencies.sort_unstable();
    let percentile = |p: f64| {
        let n = all.latencies.len();
        if n == 0 {
            return Duration::ZERO;
        }
        // Nearest rank.
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        Duration::from_micros(u64::from(all.latencies[rank - 1]))
    };
    let run = Run {
        requests: all.latencies.len() as u64,
        window: until - from,
        p50: percentile(0.50),
        p99: percentile(0.99),
        max: percentile(1.0),
        non_2xx: all.non_2xx,
        errors: all.errors,
        unexpected: all.unexpected,
        expected: all.expected,
        load_cpu_secs,
        server_cpu_secs: (own_cpu - load_cpu_secs).max(0.0),
        machine_busy_secs,
    };
    Ok((run, redis_delta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_requests_are_distinct_signed_commands() {
        let target = Target::slack(SocketAddr::from(([127, 0, 0, 1], 9)), "t");
        let first = target.request().expect("builds");
        let second = target.request().expect("builds");
        let header = |r: &Request<Full<Bytes>>, name: &str| {
            r.headers()[name].to_str().expect("ascii").to_string()
        };
        assert_eq!(first.uri(), "/webhooks/slack/commands");
        assert!(header(&first, "x-slack-signature").starts_with("v0="));
        assert_ne!(
            header(&first, "x-slack-signature"),
            header(&second, "x-slack-signature")
        );
    }

    #[test]
    fn needles_are_found_anywhere() {
        assert!(contains(b"{\"text\":\"Queued as abc\"}", QUEUED));
        assert!(!contains(b"Queued a", QUEUED));
    }
}
