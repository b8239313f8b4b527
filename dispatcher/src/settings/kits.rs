//! The agent kits (`kits/<name>/`, README "Agent kits") checked against the real settings:
//! each `profile.yml` loads through [`Settings::load_from`] and its validation, on the
//! process spawner and on the docker one (which also wants an image), defines the one
//! profile named after its kit, and runs the image its kit's Dockerfile builds, tagged as
//! `scripts/build-kit-image` tags it (`agentsmith-kit-<name>:<CLI_VERSION>`).

use std::path::{Path, PathBuf};

use super::Settings;

/// The kits' directory at the root of the repository.
fn kits_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kits")
        .canonicalize()
        .expect("kits/ is in the repository")
}

/// Every kit: a directory of `kits/` holding a Dockerfile (`bin/` and `ca-certificates/`
/// are the kits' shared build context, not kits).
fn kits() -> Vec<(String, PathBuf)> {
    let mut kits: Vec<(String, PathBuf)> = std::fs::read_dir(kits_dir())
        .expect("kits/ is in the repository")
        .map(|entry| entry.expect("kits/ can be listed").path())
        .filter(|path| path.join("Dockerfile").is_file())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, path)
        })
        .collect();
    kits.sort();
    kits
}

/// The `ARG CLI_VERSION=...` of a kit's Dockerfile: the pinned version of its CLI.
fn cli_version(dockerfile: &Path) -> String {
    let text = std::fs::read_to_string(dockerfile).unwrap();
    let versions: Vec<&str> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("ARG CLI_VERSION="))
        .collect();
    assert!(
        !versions.is_empty(),
        "{} pins no CLI_VERSION",
        dockerfile.display()
    );
    assert!(
        versions.iter().all(|v| *v == versions[0]),
        "{} pins CLI_VERSION twice, differently: {versions:?}",
        dockerfile.display()
    );
    versions[0].to_string()
}

#[test]
fn there_is_a_kit_for_each_coding_agent_cli_the_readme_names() {
    let names: Vec<String> = kits().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["aider", "claude", "codex", "gemini", "openhands"]);
}

#[test]
fn every_kit_profile_is_valid_configuration_for_the_image_its_dockerfile_builds() {
    let docker = [(
        "AGENTSMITH__SPAWNER__TYPE".to_string(),
        "docker".to_string(),
    )];
    for (name, dir) in kits() {
        let profile = dir.join("profile.yml");
        assert!(profile.is_file(), "kit {name} has no profile.yml");
        for env in [&[][..], &docker[..]] {
            let settings = Settings::load_from(Some(&profile), env)
                .unwrap_or_else(|e| panic!("{}: {e}", profile.display()));
            let agents: Vec<&String> = settings.agents.keys().collect();
            assert_eq!(
                agents,
                [&name],
                "{} defines one profile, {name}",
                profile.display()
            );
            let agent = &settings.agents[&name];
            let version = cli_version(&dir.join("Dockerfile"));
            assert_eq!(
                agent.image,
                format!("agentsmith-kit-{name}:{version}"),
                "{}: the image scripts/build-kit-image {name} tags",
                profile.display()
            );
            assert!(
                !agent.secret_env.is_empty(),
                "{}: the CLI's API key comes through secret_env",
                profile.display()
            );
            assert!(
                agent
                    .env
                    .keys()
                    .all(|var| !agent.secret_env.contains_key(var)),
                "{}: a secret is never plain env",
                profile.display()
            );
        }
    }
}

/// The prompt every kit gives its CLI (`kits/bin/agentsmith-prompt`), run by `sh` with
/// the environment the runner gives an agent.
fn prompt(vars: &[(&str, &str)]) -> String {
    let mut command = std::process::Command::new("sh");
    command
        .arg(kits_dir().join("bin/agentsmith-prompt"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    for (name, value) in vars {
        command.env(name, value);
    }
    let output = command.output().expect("sh runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("the prompt is text")
}

#[test]
fn the_prompt_carries_the_task_a_follow_ups_history_and_how_to_talk_to_people() {
    let plain = prompt(&[
        ("AGENTSMITH_TASK", "fix PAY-1"),
        ("AGENTSMITH_TICKET", "PAY-1"),
    ]);
    assert!(plain.starts_with("fix PAY-1\n"), "{plain}");
    assert!(plain.contains("Ticket: PAY-1"), "{plain}");
    assert!(!plain.contains("follows up"), "{plain}");
    let follow_up = prompt(&[
        ("AGENTSMITH_TASK", "also add a test"),
        ("AGENTSMITH_PREVIOUS_JOB", "j1"),
        ("AGENTSMITH_PREVIOUS_SUMMARY", "Fixed the rounding"),
        ("AGENTSMITH_INBOX", "/work/inbox"),
    ]);
    assert!(follow_up.contains("follows up on job j1"), "{follow_up}");
    assert!(
        follow_up.contains("It said:\nFixed the rounding\n"),
        "{follow_up}"
    );
    assert!(
        follow_up.contains("JSON file in /work/inbox"),
        "{follow_up}"
    );
    assert!(follow_up.contains("agent-runner ask"), "{follow_up}");
}
