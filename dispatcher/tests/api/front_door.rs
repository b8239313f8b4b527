//! The front door against hostile callers: what a web page, an invented method or an
//! anonymous probe can make the dispatcher do (issue 16).
//!
//! - The open local API (no `api.tokens`, loopback only) refuses what a browser sends on a
//!   foreign page's behalf: a `Host` that is not a loopback name (DNS rebinding), an
//!   `Origin` that is not the dispatcher's own (cross-site requests); every route that
//!   takes a body wants `Content-Type: application/json`, tokens or not.
//! - `/metrics` keeps a bounded set of label values whatever methods and paths arrive.
//! - An anonymous `/ready` says ready or not, never why.
//!
//! Most tests send what a browser would send with `reqwest` (a browser sets `Host` and
//! `Origin` itself; here they are written out). The last one drives a real Chromium: a
//! foreign page posts to the open API, a rebound name loads the dashboard, and the
//! dashboard, on its own origin, still cancels a job.

use std::time::Duration;

use agentsmith::cli::client::Client;
use agentsmith::settings::Settings;
use queue::{JobFilter, JobState};
use reqwest::header::{CONTENT_TYPE, HOST, ORIGIN};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{json, Value};
use testkit::redis::RedisServer;

use crate::helpers::{sh_agent, spawn_app, TestApp, TOKEN};

/// A dispatcher whose API is open (no tokens), as on a developer's machine.
async fn open_app() -> TestApp {
    spawn_app(|s| {
        s.api.tokens.clear();
        s.agents.insert("slow".into(), sh_agent("sleep 30"));
    })
    .await
}

/// `host:port` of the app, as a browser writes it in `Host`.
fn authority(app: &TestApp) -> &str {
    app.address.trim_start_matches("http://")
}

/// The port of the app.
fn port(app: &TestApp) -> &str {
    authority(app)
        .rsplit_once(':')
        .map(|(_, port)| port)
        .expect("the address has a port")
}

/// Sends `method path` with these headers and body (no token unless a header carries one);
/// the status and the JSON body (`Null` if it is not JSON).
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(reqwest::header::HeaderName, &str)],
    body: &str,
) -> (u16, Value) {
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.address))
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let response = request.send().await.expect("the dispatcher answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// How many jobs the app has.
async fn job_count(app: &TestApp) -> usize {
    let page = app.ctx.queue.list(&JobFilter::default(), None, 100).await;
    page.expect("redis answers").jobs.len()
}

const JOB: &str = r#"{"agent": "ok", "task": "rm -rf ~"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_post_to_the_open_api_is_refused_and_queues_nothing() {
    let app = open_app().await;
    let host = authority(&app).to_string();
    // What `fetch(url, {method: "POST", mode: "no-cors", body})` and a `<form>` on
    // evil.example send: no preflight, so before this check they ran a task.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json",
    ] {
        let headers = [
            (HOST, host.as_str()),
            (ORIGIN, "http://evil.example"),
            (CONTENT_TYPE, content_type),
        ];
        let (status, body) = send(&app, Method::POST, "/v1/jobs", &headers, JOB).await;
        assert_eq!(status, 403, "{content_type}: {body}");
        assert_eq!(body["error"]["code"], "foreign_origin", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("evil.example") && message.contains("api.tokens"),
            "{message}"
        );
    }
    // A page of another local origin (another port) is another site too, and so is a
    // sandboxed frame's `null`.
    for origin in ["http://127.0.0.1:1", "null"] {
        let headers = [
            (HOST, host.as_str()),
            (ORIGIN, origin),
            (CONTENT_TYPE, "application/json"),
        ];
        let (status, body) = send(&app, Method::POST, "/v1/jobs", &headers, JOB).await;
        assert_eq!(status, 403, "{origin}: {body}");
    }
    // A browser too old to send `Origin` still cannot send JSON without a preflight.
    let headers = [(HOST, host.as_str()), (CONTENT_TYPE, "text/plain")];
    let (status, body) = send(&app, Method::POST, "/v1/jobs", &headers, JOB).await;
    assert_eq!(status, 415, "{body}");
    assert_eq!(job_count(&app).await, 0, "no job was queued");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_host_cannot_read_or_start_jobs_on_the_open_api() {
    let app = open_app().await;
    let id = app.submit("ok", "private work").await;
    // After DNS rebinding the page is same-origin with the dispatcher under its own name:
    // no `Origin` on reads, and one matching `Host` on writes.
    let rebound = format!("evil.example:{}", port(&app));
    let origin = format!("http://{rebound}");
    let job = format!("/v1/jobs/{id}");
    for path in [
        "/v1/jobs",
        job.as_str(),
        "/v1/overview",
        "/",
        "/ready",
        "/metrics",
    ] {
        let (status, body) = send(&app, Method::GET, path, &[(HOST, &rebound)], "").await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "foreign_host", "{path}: {body}");
        assert!(
            !body.to_string().contains(&id),
            "{path} leaked the job: {body}"
        );
    }
    let headers = [
        (HOST, rebound.as_str()),
        (ORIGIN, origin.as_str()),
        (CONTENT_TYPE, "application/json"),
    ];
    let (status, body) = send(&app, Method::POST, "/v1/jobs", &headers, JOB).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "foreign_host", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("localhost") && message.contains("DNS rebinding"),
        "{message}"
    );
    assert_eq!(job_count(&app).await, 1, "only the test's own job");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_names_and_the_dispatchers_own_origin_pass_the_open_api() {
    let app = open_app().await;
    let port = port(&app).to_string();
    for name in ["127.0.0.1", "localhost", "LocalHost", "[::1]"] {
        let host = format!("{name}:{port}");
        let origin = format!("http://{host}");
        // The dashboard's own requests: `Origin` on a POST, none on a GET.
        let headers = [
            (HOST, host.as_str()),
            (ORIGIN, origin.as_str()),
            (CONTENT_TYPE, "application/json; charset=utf-8"),
        ];
        let (status, body) = send(&app, Method::POST, "/v1/jobs", &headers, JOB).await;
        assert_eq!(status, 202, "{host}: {body}");
        let (status, body) = send(&app, Method::GET, "/v1/jobs", &[(HOST, &host)], "").await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    // Local programs (curl, the CLI) send no `Origin`.
    let cli = Client::new(&app.address, None);
    let job = cli
        .show(&app.submit("slow", "stop me").await)
        .await
        .unwrap();
    let cancelled = cli.act(&job.id, "cancel").await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_and_runner_routes_are_not_held_to_loopback_names() {
    let app = open_app().await;
    // Webhooks arrive through tunnels under foreign names and prove themselves with
    // signatures; runners with per-job tokens. Their refusals are their own (401, 404 for a
    // source that is not configured), never the open API's 403.
    let foreign = [
        (HOST, "abc123.tunnel.example"),
        (ORIGIN, "http://evil.example"),
        (CONTENT_TYPE, "application/json"),
    ];
    for path in ["/webhooks/github", "/internal/jobs/zzzzzzzzzzzz/events"] {
        let (status, body) = send(&app, Method::POST, path, &foreign, "{}").await;
        assert_ne!(status, 403, "{path}: {body}");
        assert!(
            !["foreign_host", "foreign_origin"]
                .contains(&body["error"]["code"].as_str().unwrap_or("")),
            "{path}: {body}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_carrying_route_wants_json_with_tokens_too() {
    let app = spawn_app(|s| {
        s.agents.insert("slow".into(), sh_agent("sleep 30"));
    })
    .await;
    let id = app.submit("slow", "stop me").await;
    let auth = format!("Bearer {TOKEN}");
    let authorization = reqwest::header::AUTHORIZATION;
    let cancel = format!("/v1/jobs/{id}/cancel");
    let retry = format!("/v1/jobs/{id}/retry");
    let events = format!("/internal/jobs/{id}/events");
    let token = format!("/internal/jobs/{id}/token");
    let routes = [
        ("/v1/jobs", JOB),
        (cancel.as_str(), ""),
        (retry.as_str(), ""),
        (events.as_str(), "{}"),
        (token.as_str(), "{}"),
    ];
    for (path, body) in routes {
        for content_type in [
            None,
            Some("text/plain"),
            Some("multipart/form-data; boundary=x"),
        ] {
            let mut headers = vec![(authorization.clone(), auth.as_str())];
            headers.extend(content_type.map(|t| (CONTENT_TYPE, t)));
            let (status, answer) = send(&app, Method::POST, path, &headers, body).await;
            assert_eq!(status, 415, "{path} with {content_type:?}: {answer}");
            assert_eq!(
                answer["error"]["code"], "unsupported_media_type",
                "{answer}"
            );
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("Content-Type: application/json"),
                "{message}"
            );
        }
    }
    assert_eq!(job_count(&app).await, 1, "no job was queued");
    assert_eq!(app.job(&id).await.attempt, 1, "nothing was retried");
    assert!(
        !app.job(&id).await.state.is_terminal(),
        "nothing was cancelled"
    );
    // Reads have no body and need no content type; a wrong method is still a 405.
    let (status, _) = send(
        &app,
        Method::GET,
        "/v1/jobs",
        &[(authorization.clone(), &auth)],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &app,
        Method::GET,
        &cancel,
        &[(authorization.clone(), &auth)],
        "",
    )
    .await;
    assert_eq!(status, 405);
    // The CLI says application/json, with an empty object for cancel and retry.
    let cli = Client::new(&app.address, Some(TOKEN.to_string()));
    assert_eq!(
        cli.act(&id, "cancel").await.unwrap().state,
        JobState::Cancelled
    );
    // (The scheduler may already have taken the retried job: its attempt says it was retried.)
    assert_eq!(cli.act(&id, "retry").await.unwrap().attempt, 2);
    cli.act(&id, "cancel").await.unwrap();
    app.stop().await;
}

/// The `agentsmith_http_requests_total` series of `/metrics`: (route, method, status).
fn http_series(metrics: &str) -> Vec<(String, String, String)> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("agentsmith_http_requests_total{"))
        .map(|rest| {
            let labels = rest.split_once('}').expect("a series has labels").0;
            let value = |name: &str| {
                let start = labels
                    .find(&format!("{name}=\""))
                    .expect("the label is there");
                let rest = &labels[start + name.len() + 2..];
                rest[..rest.find('"').expect("values are quoted")].to_string()
            };
            (value("route"), value("method"), value("status"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_and_unknown_paths_do_not_grow_metrics() {
    let app = spawn_app(|_| {}).await;
    const N: usize = 300;
    for i in 0..N {
        let invented = Method::from_bytes(format!("X-INVENTED-{i}").as_bytes()).unwrap();
        // Each kind of request, a fresh method or path every time.
        let requests = [
            (invented.clone(), "/v1/jobs".to_string()),
            (invented, format!("/nowhere/{i}")),
            (Method::GET, format!("/v1/jobs/{i}/nothing-here")),
        ];
        for (method, path) in requests {
            let (status, _) = send(&app, method, &path, &[], "").await;
            assert!(status == 404 || status == 405, "{path}: {status}");
        }
    }
    let metrics = app.metrics_text().await;
    let series = http_series(&metrics);
    let mut methods: Vec<&str> = series.iter().map(|(_, m, _)| m.as_str()).collect();
    methods.sort_unstable();
    methods.dedup();
    assert_eq!(methods, ["GET", "other"], "{metrics}");
    let mut routes: Vec<&str> = series.iter().map(|(r, _, _)| r.as_str()).collect();
    routes.sort_unstable();
    routes.dedup();
    assert_eq!(routes, ["/v1/jobs", "other"], "{metrics}");
    assert!(series.len() <= 4, "{} series: {series:?}", series.len());
    // Pooled, not dropped: every request is counted.
    let counted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("agentsmith_http_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, 3 * N as u64, "{metrics}");
    app.stop().await;
}

/// `GET /ready` with an optional token: the status and the JSON body.
async fn ready(app: &TestApp, token: Option<&str>) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<_> = auth
        .iter()
        .map(|a| (reqwest::header::AUTHORIZATION, a.as_str()))
        .collect();
    send(app, Method::GET, "/ready", &headers, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_ready_says_only_unavailable_while_redis_is_down() {
    let mut redis = RedisServer::new().started();
    let url = redis.url();
    let app = spawn_app(|s| {
        s.redis.url = SecretString::from(url);
        s.redis.timeout_secs = 1;
        // Public reads open the jobs, not the internals.
        s.dashboard.public_read = true;
    })
    .await;
    let (status, body) = ready(&app, None).await;
    assert_eq!((status, body), (200, json!({"status": "ready"})));
    redis.kill();
    let (status, body) = ready(&app, None).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"status": "unavailable"}),
        "no backend error text"
    );
    for token in [Some("wrong-token-0000000000"), None] {
        let (_, body) = ready(&app, token).await;
        assert_eq!(body, json!({"status": "unavailable"}), "{token:?}");
    }
    // A caller with a token is told why.
    let (status, body) = ready(&app, Some(TOKEN)).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unavailable", "{body}");
    let why = body["redis"].as_str().unwrap_or_default();
    assert!(!why.is_empty() && why != "ok", "{body}");
    assert_eq!(body["spawner"], "ok", "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_ready_does_not_say_why_the_dispatcher_failed() {
    let app = spawn_app(|_| {}).await;
    let secret = "the scheduler ended: connection refused by 10.0.3.7:6379";
    app.ctx.fail(secret);
    let (status, body) = ready(&app, None).await;
    assert_eq!((status, body), (503, json!({"status": "unavailable"})));
    let (status, body) = ready(&app, Some(TOKEN)).await;
    assert_eq!(status, 503);
    assert_eq!(
        (&body["status"], &body["failure"]),
        (&json!("failed"), &json!(secret))
    );
    // The open local API trusts whoever passes its checks with the details, as with jobs.
    let open = open_app().await;
    open.ctx.fail(secret);
    let (status, body) = ready(&open, None).await;
    assert_eq!((status, &body["failure"]), (503, &json!(secret)), "{body}");
    app.stop().await;
    open.stop().await;
}

#[test]
fn agents_running_as_another_user_with_an_open_api_are_warned_about() {
    let mut settings = Settings::load_from(None, &[]).expect("built-in defaults load");
    settings.api.tokens.clear();
    let open_api_warnings = |s: &Settings| {
        s.warnings()
            .into_iter()
            .filter(|w| w.key == "api.tokens")
            .map(|w| w.message)
            .collect::<Vec<_>>()
    };
    assert!(
        open_api_warnings(&settings).is_empty(),
        "agents as the same user read everything anyway"
    );
    settings.spawner.process.agent_user = Some(spawner::backend::process::AgentUser {
        uid: 65534,
        gid: 65534,
    });
    let warnings = open_api_warnings(&settings);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("65534:65534") && warnings[0].contains("open API"),
        "{warnings:?}"
    );
    settings.api.tokens = vec![SecretString::from(TOKEN)];
    assert!(open_api_warnings(&settings).is_empty());
}

/// Serves a harmless-looking page on another local origin; its address.
async fn foreign_site() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let page = axum::routing::get(|| async { axum::response::Html("<p>cat pictures</p>") });
    let router = axum::Router::new().route("/", page);
    tokio::spawn(async move { axum::serve(listener, router).await });
    // `localhost`, not 127.0.0.1: another origin than the dispatcher's even on one port.
    format!("http://localhost:{port}/")
}

/// Runs `script` (which calls `done(value)` when finished) in the page; its value.
async fn run_js(c: &fantoccini::Client, script: &str, args: Vec<Value>) -> Value {
    let script = format!("const done = arguments[arguments.length - 1];\n{script}");
    c.execute_async(&script, args).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: apt-get install -y chromium chromium-driver (scripts/test installs them)"]
async fn in_a_real_browser_other_sites_cannot_use_the_open_api_and_the_dashboard_still_can() {
    let driver = crate::dashboard::browser::start_driver().await;
    let app = open_app().await;
    let c = crate::dashboard::browser::connect(&driver).await;
    let outcome =
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(browser_scenario(&c, &app)))
            .await;
    let _ = c.close().await;
    app.stop().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn browser_scenario(c: &fantoccini::Client, app: &TestApp) {
    // 1. A page of another site posts jobs the ways that need no preflight.
    c.goto(&foreign_site().await).await.unwrap();
    let sent = run_js(
        c,
        r#"const [api] = arguments;
           const job = JSON.stringify({agent: "ok", task: "sent by a foreign page"});
           Promise.allSettled([
             fetch(api + "/v1/jobs", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: job}),
             fetch(api + "/v1/jobs", {method: "POST", mode: "no-cors", body: new URLSearchParams({task: "x"})}),
           ]).then((r) => done(r.map((x) => x.status)));"#,
        vec![json!(app.address)],
    )
    .await;
    assert_eq!(
        sent,
        json!(["fulfilled", "fulfilled"]),
        "the requests reached the dispatcher"
    );
    settle(app).await;
    assert_eq!(job_count(app).await, 0, "a foreign page queued a job");
    let refused = agentsmith::metrics::HttpLabels::new(
        Some("/v1/jobs"),
        &Method::POST,
        reqwest::StatusCode::FORBIDDEN,
    );
    let refused = app.ctx.metrics.http_requests.get_or_create(&refused).get();
    assert_eq!(refused, 2, "both requests arrived and were refused");

    // 2. A name that resolves to loopback but is not a loopback name (Chromium resolves
    //    *.localhost itself, as a rebound name would resolve): the dashboard is refused.
    let rebound = format!("http://rebound.localhost:{}/", port(app));
    c.goto(&rebound).await.unwrap();
    let page = c.source().await.unwrap();
    assert!(page.contains("foreign_host"), "{page}");
    let status = run_js(
        c,
        r#"fetch("/v1/jobs").then((r) => done(r.status), (e) => done(String(e)));"#,
        vec![],
    )
    .await;
    assert_eq!(status, json!(403));

    // 3. The dashboard on its own origin still reads and cancels (its POST carries an
    //    Origin, its own).
    let id = app.submit("slow", "stop me from the dashboard").await;
    app.wait_for_state(&id, JobState::Running, Duration::from_secs(30))
        .await;
    c.goto(&format!("{}/#/jobs/{id}", app.address))
        .await
        .unwrap();
    let cancel = fantoccini::Locator::Css("#cancel");
    let clicked = testkit::wait_until(Duration::from_secs(30), || async {
        match c.find(cancel).await {
            Ok(button) => button.click().await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(clicked, "the dashboard showed no cancel button");
    c.accept_alert().await.unwrap();
    let job = app.wait_for_end(&id, Duration::from_secs(30)).await;
    assert_eq!(job.state, JobState::Cancelled, "{job:#?}");
}

/// Waits a little for a job to show up or not; for the browser test's fire-and-forget
/// requests, whose answers a page cannot read.
async fn settle(app: &TestApp) {
    let _ = testkit::wait_until(Duration::from_secs(2), || async {
        job_count(app).await > 0
    })
    .await;
}
