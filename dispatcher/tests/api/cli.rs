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
