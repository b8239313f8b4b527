//! Event streams that hold against many and slow followers (issue 16, "streams are
//! unbounded"): followers share one Redis reader, caps refuse the excess with 429, a
//! follower that does not keep up is told so and dropped, and a follower joining a stream
//! that others already follow gets its history and then the live events, each once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agentsmith::fanout::Fanout;
use agentsmith::settings::AgentSettings;
use futures::StreamExt;
use queue::JobState;
use secrecy::SecretString;
use serde_json::Value;
use testkit::redis::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// A second API token, another client for the per-client cap.
const OTHER: &str = "other-token-0123456789";

/// One SSE event as a client sees it.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<String>,
    event: String,
    data: Value,
}

/// The events in `text` (complete blocks only; comments skipped).
fn parse(text: &str) -> Vec<Sse> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut sse = Sse {
                id: None,
                event: "message".into(),
                data: Value::Null,
            };
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    sse.id = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    sse.event = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    sse.data = serde_json::from_str(v).ok()?;
                }
            }
            (!sse.data.is_null()).then_some(sse)
        })
        .collect()
}

/// Opens `path` as a follower with `token`; the response (its body not read yet).
async fn open(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.http
        .get(format!("{}{path}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .expect("the dispatcher answers")
}

/// Reads a follower's whole stream (it ends when its job does).
async fn read_all(response: reqwest::Response) -> Vec<Sse> {
    assert_eq!(response.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(90), response.text())
        .await
        .expect("the stream ends when the job ends")
        .expect("the stream reads");
    parse(&text)
}

/// Connected clients of a Redis, as `CLIENT LIST` counts them (this check's own included).
async fn redis_clients(url: &str) -> usize {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    list.lines().filter(|l| !l.trim().is_empty()).count()
}

/// An agent that runs until cancelled (or its minute is up).
fn lingering() -> AgentSettings {
    sh_agent("echo started; sleep 50")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_followers_add_a_constant_number_of_redis_clients_and_the_reader_leaves_with_them() {
    // A Redis of this test's own, so every client in CLIENT LIST is this dispatcher's.
    let server = RedisServer::new().started();
    let url = server.url();
    let app = spawn_app(|s| {
        s.redis.url = SecretString::from(url.clone());
        s.api.max_followers_per_client = s.api.max_followers;
        s.agents.insert("linger".into(), lingering());
    })
    .await;
    let id = app.submit("linger", "be followed").await;
    app.wait_for_state(&id, JobState::Running, Duration::from_secs(60))
        .await;
    let before = redis_clients(&url).await;

    const N: usize = 60;
    let mut followers = Vec::new();
    for _ in 0..N {
        followers.push(open(&app, &format!("/v1/jobs/{id}/events"), TOKEN).await);
        followers.push(open(&app, "/v1/events", TOKEN).await);
    }
    let statuses: Vec<u16> = followers.iter().map(|f| f.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let fanout = &app.ctx.fanout;
    let live = wait_until(Duration::from_secs(30), || async {
        fanout.live_followers() == 2 * N
    })
    .await;
    assert!(
        live,
        "{} of {} followers live",
        fanout.live_followers(),
        2 * N
    );
    assert_eq!(
        fanout.streams(),
        2,
        "one reader per stream: the job's and the feed"
    );
    let during = redis_clients(&url).await;
    eprintln!("redis clients: {before} before, {during} with followers");
    // The reader's connection, and nothing per follower (each used to open its own).
    assert!(
        during <= before + 1,
        "{} followers took Redis from {before} to {during} clients",
        2 * N
    );

    // The job ends: its followers' streams end; the feed's go on until their clients leave.
    assert_eq!(app.act(&id, "cancel").await.status(), 200);
    let ended = wait_until(Duration::from_secs(30), || async {
        fanout.followers() == N
    })
    .await;
    assert!(ended, "{} followers left", fanout.followers());
    drop(followers);
    // A client that left is noticed at the next keep-alive.
    let gone = wait_until(Duration::from_secs(30), || async {
        fanout.followers() == 0 && fanout.streams() == 0
    })
    .await;
    assert!(
        gone,
        "{} followers, {} streams",
        fanout.followers(),
        fanout.streams()
    );
    let reader_closed = wait_until(Duration::from_secs(30), || async {
        redis_clients(&url).await < before + 1
    })
    .await;
    assert!(reader_closed, "the reader outlived the last follower");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_past_a_cap_get_429_with_retry_after_naming_the_cap() {
    let app = spawn_app(|s| {
        s.api.tokens = vec![SecretString::from(TOKEN), SecretString::from(OTHER)];
        s.api.max_followers = 3;
        s.api.max_followers_per_client = 2;
        s.agents.insert("linger".into(), lingering());
    })
    .await;
    let id = app.submit("linger", "be followed").await;
    let events = format!("/v1/jobs/{id}/events");
    let first = open(&app, &events, TOKEN).await;
    let second = open(&app, "/v1/events", TOKEN).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );

    // A third for the same token, whichever stream: its client's cap.
    for path in [events.as_str(), "/v1/events"] {
        let refused = open(&app, path, TOKEN).await;
        assert_eq!(refused.status(), 429, "{path}");
        let retry_after = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(retry_after.parse::<u64>().unwrap() > 0, "{retry_after}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "too_many_followers", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("api.max_followers_per_client"),
            "{message}"
        );
        assert!(
            !message.contains(TOKEN),
            "the token is not echoed: {message}"
        );
    }

    // Another client may follow, up to the dispatcher's cap.
    let third = open(&app, &events, OTHER).await;
    assert_eq!(third.status(), 200);
    let refused = open(&app, &events, OTHER).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("(api.max_followers)"), "{message}");
    assert_eq!(app.ctx.fanout.followers(), 3, "refusals hold no place");

    // A follower that leaves gives its place back.
    drop(first);
    let freed = wait_until(Duration::from_secs(30), || async {
        app.ctx.fanout.followers() == 2
    })
    .await;
    assert!(freed, "{} followers", app.ctx.fanout.followers());
    assert_eq!(open(&app, &events, TOKEN).await.status(), 200);
    app.stop().await;
}

#[test]
fn follower_caps_that_cannot_work_are_refused_naming_the_key() {
    use agentsmith::settings::Settings;
    for (key, value) in [
        ("AGENTSMITH__API__MAX_FOLLOWERS", "0"),
        ("AGENTSMITH__API__MAX_FOLLOWERS_PER_CLIENT", "0"),
        ("AGENTSMITH__API__MAX_FOLLOWERS_PER_CLIENT", "5000"),
    ] {
        let env = [(key.to_string(), value.to_string())];
        let err = Settings::load_from(None, &env).unwrap_err();
        let named = key
            .trim_start_matches("AGENTSMITH__")
            .replace("__", ".")
            .to_lowercase();
        assert!(err.0.iter().any(|p| p.key == named), "{key}={value}: {err}");
    }
}

/// The most a TCP socket's send buffer grows to here (`net.ipv4.tcp_wmem`'s maximum).
fn socket_buffer_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

/// Reads the HTTP response on `socket` (chunked SSE) until its body ends; the body.
async fn read_chunked(socket: &mut tokio::net::TcpStream) -> String {
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = socket.read(&mut buf).await.expect("the socket reads");
        assert!(n > 0, "the connection closed before the body ended");
        raw.extend_from_slice(&buf[..n]);
        if raw.ends_with(b"\r\n0\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8(raw).expect("SSE is text");
    let (head, mut rest) = text.split_once("\r\n\r\n").expect("a header");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return body;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_reads_nothing_is_dropped_with_a_lagged_event_and_buffers_stay_bounded() {
    let gate = temp_dir("lag-gate").join("go");
    // Once the test says go, far more output than the ring, the server's socket buffer (at
    // most tcp_wmem's maximum) and a 4 KiB receive buffer can hold between them.
    let lines = (socket_buffer_max() + 4 * Fanout::RING_BYTES + (4 << 20)) / 15_000;
    let (app, id) = loud_job(&gate, lines).await;

    // A client that asks and then reads nothing, with a small receive buffer.
    let port = app.address.rsplit(':').next().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut socket = socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    let request = format!(
        "GET /v1/jobs/{id}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let fanout = &app.ctx.fanout;
    let live = wait_until(Duration::from_secs(30), || async {
        fanout.live_followers() == 1
    })
    .await;
    assert!(live, "the follower never went live");
    std::fs::write(&gate, b"go").unwrap();

    // While the job prints, what the dispatcher holds for its followers stays bounded.
    let most = AtomicUsize::new(0);
    let finished = wait_until(Duration::from_secs(120), || async {
        most.fetch_max(fanout.buffered_bytes(), Ordering::Relaxed);
        app.job(&id).await.state.is_terminal()
    })
    .await;
    assert!(finished, "the loud job did not finish");
    let most = most.into_inner();
    assert!(
        most <= Fanout::RING_BYTES,
        "{most} bytes buffered for one stream"
    );
    assert_eq!(app.job(&id).await.state, JobState::Succeeded);
    let stored: Vec<String> = app.event_ids(&id).await;
    assert!(stored.len() > lines, "{} events", stored.len());

    // Now it reads: what fitted in the buffers, then `lagged`, then the end.
    let body = tokio::time::timeout(Duration::from_secs(60), read_chunked(&mut socket))
        .await
        .expect("the dropped follower's stream ends");
    let events = parse(&body);
    let (last, got) = events.split_last().expect("some events");
    assert_eq!(last.event, "lagged", "{:?}", last);
    assert!(last.id.is_none(), "the lagged event moves no last event id");
    let ids: Vec<String> = got.iter().map(|e| e.id.clone().unwrap()).collect();
    assert!(
        !ids.is_empty() && ids.len() < stored.len(),
        "{} of {}",
        ids.len(),
        stored.len()
    );
    assert_eq!(
        ids,
        stored[..ids.len()],
        "what it got is the start, without gaps"
    );
    let resume = last.data["resume_after"].as_str().unwrap();
    assert_eq!(resume, ids.last().unwrap());
    assert!(
        last.data["message"].as_str().unwrap().contains(resume),
        "{}",
        last.data
    );
    let released = wait_until(Duration::from_secs(10), || async {
        fanout.followers() == 0
    })
    .await;
    assert!(released, "the dropped follower gave its place back");

    // Resuming where it says gives the rest.
    let rest =
        read_all(open(&app, &format!("/v1/jobs/{id}/events?after={resume}"), TOKEN).await).await;
    let rest: Vec<String> = rest.into_iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(rest, stored[ids.len()..]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiners_get_the_history_then_live_events_each_once() {
    let app = spawn_app(|s| {
        s.agents.insert(
            "count".into(),
            sh_agent(
                "i=1; while [ $i -le 400 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.01; done",
            ),
        );
    })
    .await;
    let id = app.submit("count", "count").await;
    let path = format!("/v1/jobs/{id}/events");
    // The first follower makes the stream live; the others join it at different points
    // while the job prints, from the start or after an event of the history.
    let mut followers = vec![(None, tokio::spawn(read_all(open(&app, &path, TOKEN).await)))];
    for lines in [20, 60, 120, 200, 300] {
        let enough = wait_until(Duration::from_secs(60), || async {
            app.log_lines(&id).await.len() >= lines
        })
        .await;
        assert!(enough, "the job did not print {lines} lines");
        let from_start = open(&app, &path, TOKEN).await;
        followers.push((None, tokio::spawn(read_all(from_start))));
        let stored = app.events(&id).await;
        let middle = stored[stored.len() / 2].0.clone();
        let resumed = app
            .http
            .get(format!("{}{path}", app.address))
            .bearer_auth(TOKEN)
            .header("last-event-id", &middle)
            .send()
            .await
            .unwrap();
        followers.push((Some(middle), tokio::spawn(read_all(resumed))));
    }
    let job = app.wait_for_end(&id, Duration::from_secs(90)).await;
    assert_eq!(job.state, JobState::Succeeded);
    let stored: Vec<String> = app.event_ids(&id).await;
    for (n, (after, follower)) in followers.into_iter().enumerate() {
        let got = follower.await.unwrap();
        let ids: Vec<String> = got.iter().map(|e| e.id.clone().unwrap()).collect();
        let from = after.map_or(0, |a| stored.iter().position(|s| *s == a).unwrap() + 1);
        assert_eq!(
            ids,
            stored[from..],
            "follower {n}: every event once, in order"
        );
        if from == 0 {
            let lines: Vec<String> = got
                .iter()
                .filter(|e| e.event == "log")
                .map(|e| e.data["line"].as_str().unwrap().to_string())
                .collect();
            let expected: Vec<String> = (1..=400).map(|i| format!("line {i}")).collect();
            assert_eq!(lines, expected, "follower {n}");
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_starts_now_and_resumes_after_an_id_through_the_shared_reader() {
    let app = spawn_app(|_| {}).await;
    let earlier = app.submit("ok", "before the feed").await;
    app.wait_for_end(&earlier, Duration::from_secs(60)).await;
    let response = open(&app, "/v1/events", TOKEN).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let id = app.submit("ok", "watch me").await;
    let mut bytes = response.bytes_stream();
    let mut text = String::new();
    let mut seen = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = bytes.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            seen = parse(&text);
            if seen
                .iter()
                .any(|e| e.data["job_id"] == id.as_str() && e.data["state"] == "succeeded")
            {
                return;
            }
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "the feed did not show the job ending: {seen:?}"
    );
    assert!(
        seen.iter().all(|e| e.data["job_id"] != earlier.as_str()),
        "the feed starts now: {seen:?}"
    );
    // From an id of the feed on, a new follower gets what came after it, once.
    let first = seen[0].id.clone().unwrap();
    let response = app
        .http
        .get(format!("{}/v1/events?after={first}", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let mut bytes = response.bytes_stream();
    let mut again = String::new();
    let expected: Vec<Option<String>> = seen[1..].iter().map(|e| e.id.clone()).collect();
    let resumed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = bytes.next().await {
            again.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if parse(&again).len() >= expected.len() {
                return parse(&again);
            }
        }
        parse(&again)
    })
    .await
    .expect("the resumed feed replays what came after");
    let ids: Vec<Option<String>> = resumed
        .iter()
        .take(expected.len())
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(ids, expected);
    app.stop().await;
}
