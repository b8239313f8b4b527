//! Redis authenticates the dispatcher and speaks TLS when asked: start-up against servers
//! that want a password, a CA of their own or a client certificate, and the warning about a
//! Redis that agents could reach without a password. Each test starts its own redis-server.

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use agentsmith::app::Application;
use agentsmith::settings::Settings;
use secrecy::SecretString;
use spawner::recording::RecordingSpawner;
use testkit::redis::{ClientCerts, RedisServer};
use testkit::temp::TempDir;
use testkit::tls::TestCa;
use tokio_util::sync::CancellationToken;

fn settings(url: String) -> Settings {
    let mut s = Settings::load_from(None, &[]).unwrap();
    s.redis.url = SecretString::from(url);
    s.redis.prefix = format!("security-{:016x}:", rand::random::<u64>());
    s.redis.timeout_secs = 2;
    s.server.bind = "127.0.0.1:0".into();
    s
}

/// Builds the dispatcher; the error, as `serve` logs it, if that fails. The shutdown token
/// is cancelled first, so start-up gives up at Redis's first refusal instead of waiting a
/// minute for a Redis that may yet come up.
async fn start_up(settings: Settings) -> Result<(), String> {
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    Application::build_with_spawner(settings, Arc::new(RecordingSpawner::new()), shutdown)
        .await
        .map(drop)
        .map_err(|e| {
            let error: &(dyn std::error::Error + 'static) = e.as_ref();
            contract::ErrorChain(error).to_string()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_against_a_password_protected_redis_names_the_problem_and_never_the_password() {
    let password = "pw-8c41d7e2b9";
    let server = RedisServer::new()
        .args(&["--requirepass", password])
        .started();
    let port = server.port();

    let error = start_up(settings(server.url())).await.unwrap_err();
    assert!(
        error.contains(&format!("connecting to redis at redis://127.0.0.1:{port}: Redis requires a password: put it in redis.url")),
        "{error}"
    );

    let wrong = format!("redis://:{password}-old@127.0.0.1:{port}");
    let error = start_up(settings(wrong)).await.unwrap_err();
    assert!(
        error.contains(&format!(
            "connecting to redis at redis://***@127.0.0.1:{port}: Redis refused the credentials in redis.url"
        )),
        "{error}"
    );
    assert!(!error.contains(password), "{error}");

    let right = format!("redis://:{password}@127.0.0.1:{port}");
    start_up(settings(right)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_over_tls_needs_the_servers_ca_and_the_client_certificate_it_asks_for() {
    let ca = TestCa::new("dispatcher");
    let server = RedisServer::new()
        .tls(&ca, ClientCerts::Required)
        .args(&["--requirepass", "pw-tls-51e0"])
        .started();
    let url = format!("rediss://:pw-tls-51e0@127.0.0.1:{}", server.port());
    let client = ca.client_files("agentsmith");

    let error = start_up(settings(url.clone())).await.unwrap_err();
    assert!(
        error.contains("the Redis server's TLS certificate was not accepted"),
        "{error}"
    );

    let mut trusting = settings(url.clone());
    trusting.redis.tls.ca_file = ca.ca_file();
    let error = start_up(trusting.clone()).await.unwrap_err();
    assert!(
        error.contains("Redis refused the TLS handshake over the client certificate"),
        "{error}"
    );

    let mut complete = trusting;
    complete.redis.tls.cert_file = client.cert;
    complete.redis.tls.key_file = client.key;
    start_up(complete).await.unwrap();
}

/// Runs `agentsmith config check` on `yaml`: (success, stderr).
fn config_check(yaml: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = TempDir::new("agentsmith-config");
    let path = dir.path().join("agentsmith.yml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agentsmith"))
        .args(["config", "check", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_warns_about_a_redis_agents_could_reach_without_a_password() {
    let (ok, stderr) = config_check("redis:\n  url: \"redis://10.20.30.40:6379\"\n", &[]);
    assert!(ok, "a warning is not an error: {stderr}");
    assert!(
        stderr.contains("warning: redis.url: has no password"),
        "{stderr}"
    );
    assert!(stderr.contains("containers or pods"), "{stderr}");

    for quiet in [
        "redis://:s3cret-pw@10.20.30.40:6379",
        "redis://127.0.0.1:6379",
        "unix:///run/redis/redis.sock",
    ] {
        let (ok, stderr) = config_check(&format!("redis:\n  url: \"{quiet}\"\n"), &[]);
        assert!(ok && !stderr.contains("warning"), "{quiet}: {stderr}");
    }
}

#[test]
fn config_check_refuses_tls_files_that_cannot_work_naming_their_keys() {
    let (ok, stderr) = config_check(
        "redis:\n  url: \"rediss://redis.internal:6380\"\n  tls:\n    cert_file: /nonexistent/client.pem\n",
        &[],
    );
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("redis.tls.key_file: is needed with tls.cert_file"),
        "{stderr}"
    );
    assert!(
        stderr.contains("redis.tls.cert_file: cannot read /nonexistent/client.pem"),
        "{stderr}"
    );

    // The same keys from the environment, and TLS files with a plain URL.
    let (ok, stderr) = config_check(
        "redis:\n  url: \"redis://127.0.0.1:6379\"\n",
        &[("AGENTSMITH__REDIS__TLS__CA_FILE", "/nonexistent/ca.pem")],
    );
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("redis.tls: is only used with a rediss:// URL"),
        "{stderr}"
    );
    assert!(
        stderr.contains("redis.tls.ca_file: cannot read"),
        "{stderr}"
    );
}

#[test]
fn serve_warns_at_start_up_about_a_redis_agents_could_reach_without_a_password() {
    // 203.0.113.0/24 is reserved for documentation: nothing answers there, and the warning
    // comes before the first connection attempt anyway.
    let dir = TempDir::new("agentsmith-serve");
    let path = dir.path().join("agentsmith.yml");
    std::fs::write(
        &path,
        "server:\n  bind: \"127.0.0.1:0\"\nredis:\n  url: \"redis://203.0.113.10:6379\"\nlog:\n  format: json\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentsmith"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut log = Vec::new();
    let warning = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) if line.contains("has no password") => break Some(line),
            Ok(line) => log.push(line),
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let warning = warning.unwrap_or_else(|| panic!("no warning in: {}", log.join("\n")));
    let event: serde_json::Value = serde_json::from_str(&warning).unwrap();
    assert_eq!(event["level"], "WARN", "{event}");
    assert_eq!(event["key"], "redis.url", "{event}");
}
