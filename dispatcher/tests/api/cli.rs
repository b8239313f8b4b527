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
