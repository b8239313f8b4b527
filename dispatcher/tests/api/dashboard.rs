//! The dashboard over HTTP: its page and assets (content types, caching), the overview
//! endpoint, and who may read what. The browser tests are in `dashboard/browser.rs`.

pub(crate) mod browser;

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, wait_until, TOKEN};

/// The `/assets/...` paths `index.html` refers to.
fn asset_paths(html: &str) -> Vec<String> {
    let mut paths: Vec<String> = html
        .match_indices("\"/assets/")
        .map(|(i, _)| {
            let rest = &html[i + 1..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> &str {
    response
        .headers()
        .get(&name)
        .unwrap_or_else(|| panic!("{} has no {name} header", response.url()))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_content_types_and_cache_headers() {
    let app = spawn_app(|_| {}).await;
    let page = app
        .http
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(header(&page, CACHE_CONTROL), "no-cache");
    let csp = header(&page, reqwest::header::CONTENT_SECURITY_POLICY).to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    let paths = asset_paths(&html);
    let expected = [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ];
    assert_eq!(paths.len(), expected.len(), "{paths:?}");
    for (name, content_type) in expected {
        let (stem, ext) = name.rsplit_once('.').unwrap();
        let path = paths
            .iter()
            .find(|p| p.starts_with(&format!("/assets/{stem}.")) && p.ends_with(&format!(".{ext}")))
            .unwrap_or_else(|| panic!("index.html does not load {name}: {paths:?}"));
        assert_ne!(
            path,
            &format!("/assets/{name}"),
            "{name} has no content hash in its name"
        );

        // Content-hashed name: cached for a year, never revalidated.
        let hashed = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(hashed.status(), 200, "{path}");
        assert_eq!(header(&hashed, CONTENT_TYPE), content_type, "{path}");
        assert_eq!(
            header(&hashed, CACHE_CONTROL),
            "public, max-age=31536000, immutable",
            "{path}"
        );
        assert_eq!(
            header(&hashed, reqwest::header::X_CONTENT_TYPE_OPTIONS),
            "nosniff"
        );
        let etag = header(&hashed, ETAG).to_string();
        assert!(!hashed.bytes().await.unwrap().is_empty());

        // The plain name answers too, revalidated by its ETag.
        let plain = app
            .http
            .get(format!("{}/assets/{name}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(plain.status(), 200);
        assert_eq!(header(&plain, CONTENT_TYPE), content_type);
        assert_eq!(header(&plain, CACHE_CONTROL), "no-cache");
        let again = app
            .http
            .get(format!("{}/assets/{name}", app.address))
            .header(IF_NONE_MATCH, &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{name} with If-None-Match {etag}");
    }

    // The page itself revalidates by ETag as well.
    let page = app
        .http
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    let etag = header(&page, ETAG).to_string();
    let again = app
        .http
        .get(format!("{}/", app.address))
        .header(IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let missing = app
        .http
        .get(format!("{}/assets/nope.js", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(header(&missing, CONTENT_TYPE), "application/json");
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_asset", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn the_overview_and_other_api_calls_without_a_token_are_refused() {
    let app = spawn_app(|_| {}).await;
    let id = app.submit("ok", "look at me").await;
    for path in [
        "/v1/overview".to_string(),
        "/v1/jobs".to_string(),
        format!("/v1/jobs/{id}"),
        format!("/v1/jobs/{id}/events"),
        "/v1/events".to_string(),
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "GET {path} without a token");
        let wrong = app
            .http
            .get(format!("{}{path}", app.address))
            .bearer_auth("not-the-token-0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "GET {path} with a wrong token");
    }
    for action in ["cancel", "retry"] {
        let response = app
            .http
            .post(format!("{}/v1/jobs/{id}/{action}", app.address))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "POST {action} without a token");
    }
    // The page itself holds no data: it loads, then asks for a token.
    let page = app
        .http
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);

    app.wait_for_end(&id, std::time::Duration::from_secs(30))
        .await;
    let overview: Value = app.get_json("/v1/overview").await;
    assert_eq!(overview["queue"]["max_concurrent_jobs"], 10, "{overview}");
    assert_eq!(overview["redis"]["ok"], true, "{overview}");
    assert_eq!(overview["spawner"]["ok"], true, "{overview}");
    assert_eq!(overview["backend"], "process", "{overview}");
    assert_eq!(overview["last_hour"]["total"], 1, "{overview}");
    assert_eq!(
        overview["last_hour"]["by_state"]["succeeded"], 1,
        "{overview}"
    );
    assert_eq!(overview["entered"]["succeeded"], 1, "{overview}");
    assert_eq!(overview["current"]["running"], 0, "{overview}");
    assert!(
        overview["latency"]["spawn"]["count"].as_u64().unwrap() >= 1,
        "{overview}"
    );
    assert!(
        overview["latency"]["spawn"]["p50"].as_f64().is_some(),
        "{overview}"
    );
    assert!(overview["agents"]
        .as_array()
        .unwrap()
        .contains(&json!("ok")));
    app.stop().await;
}

#[tokio::test]
async fn the_overview_reports_each_stage_of_a_finished_job_over_the_last_hour() {
    let app = spawn_app(|_| {}).await;
    let id = app.submit("ok", "time every stage").await;
    app.wait_for_end(&id, std::time::Duration::from_secs(30))
        .await;
    // The run is timed when the runner's last batch is handled, just after the job ends.
    let timed = wait_until(std::time::Duration::from_secs(10), || async {
        app.get_json("/v1/overview").await["latency_last_hour"]["run"]["count"] == 1
    })
    .await;
    let overview: Value = app.get_json("/v1/overview").await;
    assert!(timed, "the run never reached the last hour: {overview}");
    let last_hour = &overview["latency_last_hour"];
    for stage in ["queue", "spawn", "start", "run"] {
        let p = &last_hour[stage];
        assert_eq!(p["count"], 1, "{stage}: {overview}");
        let (p50, p99) = (p["p50"].as_f64(), p["p99"].as_f64());
        assert!(
            p50.is_some_and(|p50| p50 >= 0.0 && p99.is_some_and(|p99| p50 <= p99)),
            "{stage}: {overview}"
        );
        // Everything this process observed is recent: the window agrees with the histogram.
        assert_eq!(p, &overview["latency"][stage], "{stage}: {overview}");
    }
    // A job from the API is not a webhook delivery, and has no reply to deliver.
    for stage in ["acknowledge", "reply"] {
        let nothing = json!({"count": 0, "p50": null, "p90": null, "p99": null});
        assert_eq!(last_hour[stage], nothing, "{stage}: {overview}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_dashboard_is_not_served() {
    let app = spawn_app(|s| s.dashboard.enabled = false).await;
    for path in ["/", "/assets/app.js"] {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{body}");
    }
    // The API, the overview included, stays.
    let overview = app
        .http
        .get(format!("{}/v1/overview", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn public_read_opens_reads_without_a_token_but_never_actions() {
    let app = spawn_app(|s| s.dashboard.public_read = true).await;
    let id = app.submit("ok", "public").await;
    for path in [
        "/v1/jobs".to_string(),
        format!("/v1/jobs/{id}"),
        "/v1/overview".to_string(),
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path} without a token");
    }
    let listed: Value = app
        .http
        .get(format!("{}/v1/jobs", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["jobs"][0]["id"], id.as_str(), "{listed}");

    // A token that is sent is still checked (the sign-in relies on it).
    let wrong = app
        .http
        .get(format!("{}/v1/jobs", app.address))
        .bearer_auth("not-the-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // Actions always need a token.
    let submit = app
        .http
        .post(format!("{}/v1/jobs", app.address))
        .json(&json!({"agent": "ok", "task": "sneaky"}))
        .send()
        .await
        .unwrap();
    assert_eq!(submit.status(), 401);
    for action in ["cancel", "retry"] {
        let response = app
            .http
            .post(format!("{}/v1/jobs/{id}/{action}", app.address))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "POST {action} without a token");
    }
    app.stop().await;
}
