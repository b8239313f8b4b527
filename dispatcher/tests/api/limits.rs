//! Admission limits: the global limit and concurrency keys.

use std::path::Path;
use std::time::Duration;

use queue::JobState;
use serde_json::json;

use crate::helpers::*;

const LIMIT: Duration = Duration::from_secs(90);

/// An agent that records its start and end (ns) in `log`, holding its slot ~1 s.
pub fn interval_agent(log: &Path) -> agentsmith::settings::AgentSettings {
    let mut agent = sh_agent(
        "echo \"start $(date +%s%N) $AGENTSMITH_TASK\" >> \"$LOG\"; sleep 1; echo \"end $(date +%s%N) $AGENTSMITH_TASK\" >> \"$LOG\"",
    );
    agent.env.insert("LOG".into(), log.display().to_string());
    agent
}

/// The most agents that ran at once, and the order they started in.
pub fn overlap(log: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(log).unwrap();
    let mut marks: Vec<(u128, i32, String)> = text
        .lines()
        .map(|l| {
            let mut parts = l.split_whitespace();
            let kind = parts.next().unwrap();
            let at: u128 = parts.next().unwrap().parse().unwrap();
            let task = parts.next().unwrap().to_string();
            (at, if kind == "start" { 1 } else { -1 }, task)
        })
        .collect();
    // Ends sort before starts at the same instant.
    marks.sort_by_key(|(at, delta, _)| (*at, *delta));
    let order = marks
        .iter()
        .filter(|m| m.1 == 1)
        .map(|m| m.2.clone())
        .collect();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, delta, _) in &marks {
        now += delta;
        max = max.max(now);
    }
    (max as usize, order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_of_two_never_runs_more_than_two_of_five_jobs() {
    let dir = temp_dir("limit");
    let log = dir.join("intervals");
    let app = spawn_app(|s| {
        s.queue.max_concurrent_jobs = 2;
        s.agents.insert("interval".into(), interval_agent(&log));
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(app.submit("interval", &format!("job{n}")).await);
    }
    for id in &ids {
        assert_eq!(app.wait_for_end(id, LIMIT).await.state, JobState::Succeeded);
    }
    let (max, _) = overlap(&log);
    assert!(max <= 2, "{max} agents ran at once");
    assert_eq!(max, 2, "the two slots were used");
    app.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_sharing_a_concurrency_key_run_one_at_a_time_in_submission_order() {
    let dir = temp_dir("ckey");
    let log = dir.join("intervals");
    let app = spawn_app(|s| {
        s.agents.insert("interval".into(), interval_agent(&log));
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, body) = app
            .post_job(
                json!({"agent": "interval", "task": format!("k{n}"), "concurrency_key": "repo-a"}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    // A job with another key is not held up by them.
    let (status, other) = app
        .post_job(json!({"agent": "interval", "task": "other", "concurrency_key": "repo-b"}))
        .await;
    assert_eq!(status, 202);
    for id in &ids {
        assert_eq!(app.wait_for_end(id, LIMIT).await.state, JobState::Succeeded);
    }
    app.wait_for_end(other["id"].as_str().unwrap(), LIMIT).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let keyed: String = text
        .lines()
        .filter(|l| l.ends_with(" k0") || l.ends_with(" k1") || l.ends_with(" k2"))
        .map(|l| format!("{l}\n"))
        .collect();
    let keyed_log = dir.join("keyed");
    std::fs::write(&keyed_log, keyed).unwrap();
    let (max, order) = overlap(&keyed_log);
    assert_eq!(max, 1, "jobs with one key overlapped");
    assert_eq!(order, ["k0", "k1", "k2"]);
    let (max_all, _) = overlap(&log);
    assert_eq!(max_all, 2, "the other key ran beside them");
    app.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A concurrency key may be any name the API accepts, `:` included: `d:queue` is its own
/// key and never key `d`'s queue (they once shared a Redis name, and every admission after
/// them failed with WRONGTYPE, stopping the queue for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_key_named_like_another_keys_queue_is_a_key_of_its_own() {
    let dir = temp_dir("ckey-names");
    let log = dir.join("intervals");
    let app = spawn_app(|s| {
        s.queue.max_concurrent_jobs = 1;
        s.agents.insert("interval".into(), interval_agent(&log));
    })
    .await;
    let mut ids = Vec::new();
    for (n, key) in ["d:queue", "d", "d:queue", "d", "d:queue:queue"]
        .iter()
        .enumerate()
    {
        let (status, body) = app
            .post_job(json!({"agent": "interval", "task": format!("k{n}"), "concurrency_key": key}))
            .await;
        assert_eq!(status, 202, "{key}: {body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        assert_eq!(app.wait_for_end(id, LIMIT).await.state, JobState::Succeeded);
    }
    let (max, order) = overlap(&log);
    assert_eq!(max, 1, "the global limit held");
    assert_eq!(
        order,
        ["k0", "k1", "k2", "k3", "k4"],
        "jobs started in order"
    );
    app.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
