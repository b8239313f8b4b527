//! The `agentsmith` binary's own commands.

use std::process::Command;

use crate::helpers::*;

#[test]
fn config_check_names_every_bad_key_and_exits_non_zero() {
    let dir = temp_dir("config");
    let path = dir.join("bad.yml");
    std::fs::write(
        &path,
        "queue:\n  max_attemps: 3\n  lease_secs: 0\nserver:\n  bind: \"0.0.0.0:8080\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agentsmith"))
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("queue.max_attemps: unknown key"),
        "{stderr}"
    );

    std::fs::write(
        &path,
        "queue:\n  lease_secs: 0\nserver:\n  bind: \"0.0.0.0:8080\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agentsmith"))
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("queue.lease_secs"), "{stderr}");
    assert!(stderr.contains("api.tokens"), "{stderr}");

    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/agentsmith.example.yml"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_agentsmith"))
        .args(["config", "check", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_refuses_an_unknown_key_at_start_up() {
    let dir = temp_dir("serve");
    let path = dir.join("bad.yml");
    std::fs::write(&path, "spawner:\n  kind: process\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agentsmith"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spawner.kind: unknown key"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_drains_and_exits_cleanly_on_sigterm() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::time::{Duration, Instant};

    let dir = temp_dir("sigterm");
    let port = testkit::free_port();
    let path = dir.join("agentsmith.yml");
    std::fs::write(
        &path,
        format!(
            "server:\n  bind: \"127.0.0.1:{port}\"\n  shutdown_grace_secs: 10\nredis:\n  url: \"{}\"\n  prefix: \"{}\"\nlog:\n  format: json\n",
            redis_url(),
            random_prefix()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentsmith"))
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let up = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "the dispatcher did not start listening");
    let started = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("SIGTERM received") && log.contains("\"stopped\""),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A SIGTERM while the dispatcher is still starting (here: waiting for a Redis that does not
/// answer) is heard and ends it in order, not by the signal's default action.
#[test]
fn a_sigterm_while_starting_up_is_heard() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::io::Read;
    use std::time::{Duration, Instant};

    let dir = temp_dir("sigterm-start");
    let path = dir.join("agentsmith.yml");
    // Nothing listens there: the dispatcher waits for Redis, saying so.
    let closed = testkit::free_port();
    std::fs::write(
        &path,
        format!(
            "server:\n  bind: \"127.0.0.1:{}\"\nredis:\n  url: \"redis://127.0.0.1:{closed}\"\nlog:\n  format: json\n",
            testkit::free_port()
        ),
    )
    .unwrap();
    let log_path = dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentsmith"))
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let read_log = || {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&log_path) {
            let _ = file.read_to_string(&mut text);
        }
        text
    };
    let waiting = (0..400).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        read_log().contains("waiting for redis")
    });
    assert!(waiting, "{}", read_log());
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = read_log();
    assert!(
        status.code().is_some(),
        "ended by the signal itself: {status:?}\n{log}"
    );
    assert!(log.contains("SIGTERM received"), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `jobs logs -f` whose output is not read for a while (its stdout a full pipe) falls
/// behind the dispatcher's buffer and is dropped with `lagged`; it reconnects after the last
/// event it printed and prints every line once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_logs_follow_resumes_after_a_lagged_drop_without_gaps_or_repeats() {
    use std::time::Duration;

    use agentsmith::fanout::Fanout;
    use tokio::io::AsyncReadExt;

    let gate = temp_dir("cli-lag-gate").join("go");
    // More output than the ring, both sockets' buffers (at their largest) and the pipe hold.
    let buffer_max = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .ok()
            .and_then(|t| t.split_whitespace().nth(2)?.parse::<usize>().ok())
            .unwrap_or(8 << 20)
    };
    let bytes = buffer_max("tcp_wmem") + buffer_max("tcp_rmem") + 4 * Fanout::RING_BYTES;
    let lines = bytes / 15_000 + 200;
    let (app, id) = loud_job(&gate, lines).await;
    let mut follower = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentsmith"))
        .args(["jobs", "logs", "--follow", &id])
        .env("AGENTSMITH_URL", &app.address)
        .env("AGENTSMITH_API_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let fanout = &app.ctx.fanout;
    let live = wait_until(Duration::from_secs(30), || async {
        fanout.live_followers() == 1
    })
    .await;
    assert!(live, "the follower never went live");
    std::fs::write(&gate, b"go").unwrap();
    // Nothing reads the follower's output until the job has printed everything.
    let finished = wait_until(Duration::from_secs(180), || async {
        app.job(&id).await.state.is_terminal()
    })
    .await;
    assert!(finished, "the loud job did not finish");
    let mut stdout = follower.stdout.take().unwrap();
    let mut printed = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), stdout.read_to_end(&mut printed))
        .await
        .expect("the follower prints everything and ends")
        .unwrap();
    let status = follower.wait().await.unwrap();
    let mut stderr = String::new();
    follower
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    let printed = String::from_utf8(printed).unwrap();
    let numbers: Vec<usize> = printed
        .lines()
        .filter_map(|line| line.trim_start().split_once(" xxx"))
        .map(|(n, _)| n.parse().unwrap())
        .collect();
    let expected: Vec<usize> = (1..=lines).collect();
    assert_eq!(numbers.len(), expected.len(), "every line once");
    assert_eq!(numbers, expected, "in order, without gaps");
    assert!(
        printed.contains("succeeded"),
        "the follower saw the end: {}",
        &printed[printed.len().saturating_sub(500)..]
    );
    let metrics = app.ctx.metrics.render(None, &[]);
    let streams = "agentsmith_http_requests_total{route=\"/v1/jobs/{id}/events\",method=\"GET\",status=\"200\"} ";
    let opened: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix(streams))
        .map_or(0, |n| n.trim().parse().unwrap());
    assert!(
        opened >= 2,
        "the follower was dropped and came back: {opened} streams"
    );
    app.stop().await;
}

/// `agentsmith jobs list --project p --limit n`: the newest n jobs of that project, read
/// page after page until n are in or there are no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_filters_by_project_and_fills_its_limit() {
    let app = spawn_app(|s| {
        for name in ["shop", "ops"] {
            let project = agentsmith::settings::ProjectSettings {
                agent: "ok".into(),
                ..Default::default()
            };
            s.projects.insert(name.into(), project);
        }
    })
    .await;
    let mut shop = Vec::new();
    for (project, n) in [
        ("shop", 1),
        ("ops", 1),
        ("shop", 2),
        ("shop", 3),
        ("ops", 2),
    ] {
        let (status, job) = app
            .post_job(serde_json::json!({"project": project, "task": format!("{project} {n}")}))
            .await;
        assert_eq!(status, 202, "{job}");
        if project == "shop" {
            shop.push(job["id"].as_str().unwrap().to_string());
        }
    }
    shop.reverse();
    let list = |limit: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_agentsmith"))
            .args([
                "jobs",
                "list",
                "--json",
                "--project",
                "shop",
                "--limit",
                limit,
            ])
            .env("AGENTSMITH_URL", &app.address)
            .env("AGENTSMITH_API_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let jobs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        jobs.iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(list("2"), shop[..2], "the newest two of shop");
    assert_eq!(list("10"), shop, "all of shop, and nothing of ops");
    app.stop().await;
}
