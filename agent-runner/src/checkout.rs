//! The repository checked out into the work directory before the agent starts, as the
//! dispatcher's [`Checkout`] says: the working branch from the remote when it has it (a
//! retry, a follow-up job), else a new one at the base branch.
//!
//! The credential reaches git only through the environment of each git command the runner
//! runs here, as an `http.<repo>.extraHeader` (`GIT_CONFIG_COUNT`), scoped to the
//! repository's URL: nothing of it is written to `.git/config`, the remote's URL, the
//! intent file or any line of output, and the agent, which starts after the last of these
//! commands has ended, finds none of it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use contract::{Checkout, GitCredential, OutputStream, RunnerEvent};
use tokio::process::Command;
use tokio::time::{Instant, MissedTickBehavior};

use crate::outbox::Outbox;

/// Checks `checkout` out into `dir`, telling its progress as output lines and keeping the
/// attempt alive with a heartbeat every `heartbeat`. The error is the reason the attempt
/// failed to start, with git's own words.
pub async fn run(
    checkout: &Checkout,
    dir: &Path,
    outbox: &Outbox,
    heartbeat: Duration,
) -> Result<(), String> {
    let mut ticks = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let work = steps(checkout, Git::new(checkout, dir), outbox);
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => outbox.push(RunnerEvent::Heartbeat),
        }
    }
}

async fn steps(checkout: &Checkout, git: Git<'_>, outbox: &Outbox) -> Result<(), String> {
    let started = Instant::now();
    let dir = git.dir;
    let say =
        |line: String| outbox.push_line(OutputStream::Stderr, format!("agent-runner: {line}"));
    if dir.join(".git").exists() {
        return Err(format!(
            "the work directory {} holds a repository already",
            dir.display()
        ));
    }
    git.run(&["check-ref-format", "--branch", &checkout.branch])
        .await
        .map_err(|e| {
            format!(
                "the working branch {:?} is not a branch name: {e}",
                checkout.branch
            )
        })?;
    git.run(&["init", "--quiet"]).await?;
    git.run(&["remote", "add", "origin", &checkout.repo])
        .await?;
    // The runner's files are not the repository's.
    std::fs::create_dir_all(dir.join(".git/info"))
        .and_then(|()| std::fs::write(dir.join(".git/info/exclude"), "/.agentsmith/\n"))
        .map_err(|e| format!("writing .git/info/exclude: {e}"))?;

    let branch_ref = format!("refs/heads/{}", checkout.branch);
    let remote = git
        .run(&["ls-remote", "--symref", "origin", "HEAD", &branch_ref])
        .await?;
    let has_branch = remote
        .lines()
        .any(|line| line.split('\t').nth(1) == Some(branch_ref.as_str()));
    let base = if checkout.base_branch.is_empty() {
        remote
            .lines()
            .find_map(|line| {
                line.strip_prefix("ref: refs/heads/")?
                    .strip_suffix("\tHEAD")
            })
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "{} names no default branch (HEAD): set the project's base_branch",
                    checkout.repo
                )
            })?
    } else {
        checkout.base_branch.clone()
    };
    let from = if has_branch { &checkout.branch } else { &base };
    say(format!(
        "checking out {} ({}{}) as branch {}",
        checkout.repo,
        if has_branch {
            format!("continuing from its branch {from}")
        } else {
            format!("from {from}")
        },
        if checkout.depth > 0 {
            format!(", depth {}", checkout.depth)
        } else {
            String::new()
        },
        checkout.branch
    ));
    let tracking = format!("refs/remotes/origin/{from}");
    let refspec = format!("+refs/heads/{from}:{tracking}");
    let depth = format!("--depth={}", checkout.depth);
    let mut fetch = vec!["fetch", "--quiet", "--no-tags", "origin", refspec.as_str()];
    if checkout.depth > 0 {
        fetch.push(&depth);
    }
    git.run(&fetch).await.map_err(|e| {
        if has_branch {
            e
        } else {
            format!("fetching the base branch {base:?}: {e}")
        }
    })?;
    // No upstream: what the branch is pushed to is the runner's to say, never the base.
    git.run(&[
        "checkout",
        "--quiet",
        "--no-track",
        "-b",
        &checkout.branch,
        &tracking,
    ])
    .await?;
    if checkout.submodules {
        let mut update = vec!["submodule", "update", "--init", "--recursive"];
        if checkout.depth > 0 {
            update.push(&depth);
        }
        git.run(&update).await?;
    }
    if checkout.lfs {
        git.run(&["lfs", "pull"]).await?;
    }
    let head = git.run(&["rev-parse", "--short", "HEAD"]).await?;
    say(format!(
        "checked out {} at {} in {:.1} s",
        checkout.branch,
        head.trim(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Git commands in the work directory, with the checkout's credential in their environment.
struct Git<'a> {
    dir: &'a Path,
    /// `(key, value)` of the configuration given through the environment.
    config: Vec<(String, String)>,
    /// What must never appear in an error: the token and its encoded header.
    secrets: Vec<String>,
    /// Variables set for every command besides (a test's `HOME`).
    env: Vec<(String, String)>,
}

impl<'a> Git<'a> {
    fn new(checkout: &Checkout, dir: &'a Path) -> Self {
        let mut config = Vec::new();
        let mut secrets = Vec::new();
        if let Some(GitCredential { username, token }) = &checkout.credential {
            let basic = base64(format!("{username}:{token}").as_bytes());
            config.push((
                format!("http.{}.extraHeader", checkout.repo),
                format!("Authorization: Basic {basic}"),
            ));
            secrets.push(token.clone());
            secrets.push(basic);
        }
        Self {
            dir,
            config,
            secrets,
            env: Vec::new(),
        }
    }

    /// Runs `git args`, answering its standard output, or its error in its own words.
    async fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new("git");
        command
            .args(args)
            .current_dir(self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Never a prompt: a refused credential fails the command at once.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .env("SSH_ASKPASS", "true")
            // A transfer that stalls (under 1 KB/s for a minute) fails instead of hanging.
            .env("GIT_HTTP_LOW_SPEED_LIMIT", "1000")
            .env("GIT_HTTP_LOW_SPEED_TIME", "60")
            // The user's global configuration is writable by agents of earlier jobs (the
            // same user, on the process backend): an `url.<x>.insteadOf` there would send
            // the credential elsewhere. The system's (root's, the image's) is kept.
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_COUNT", self.config.len().to_string());
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        for (i, (key, value)) in self.config.iter().enumerate() {
            command
                .env(format!("GIT_CONFIG_KEY_{i}"), key)
                .env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        let output = command.output().await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "git is not installed where the runner runs (the agent image needs git for a checkout)".to_string()
            } else {
                format!("running git {}: {e}", args.first().unwrap_or(&""))
            }
        })?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = said[said.len().saturating_sub(4)..].join(" / ");
        Err(self.redact(format!(
            "git {} failed ({}): {}",
            args.first().unwrap_or(&""),
            output.status,
            if tail.is_empty() { "no message" } else { &tail }
        )))
    }

    fn redact(&self, mut text: String) -> String {
        for secret in &self.secrets {
            if !secret.is_empty() {
                text = text.replace(secret.as_str(), "[redacted]");
            }
        }
        text
    }
}

/// Standard base64 with padding (RFC 4648), for the Basic authorization header.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use contract::GitCredential;
    use testkit::git_server::GitServer;
    use testkit::temp::TempDir;

    use super::*;
    use crate::outbox::Limits;

    #[tokio::test]
    async fn a_global_git_configuration_left_by_an_earlier_agent_cannot_redirect_the_credential() {
        let server = GitServer::start("the-token").await;
        server.create_repo("shop", &[("README.md", "the real shop\n")], "main");
        // A decoy server that takes any password: what a thief would run.
        let thief = GitServer::start("the-token").await;
        thief.create_repo("shop", &[("README.md", "the thief's shop\n")], "main");
        let home = TempDir::new("runner-home");
        std::fs::write(
            home.path().join(".gitconfig"),
            format!(
                "[url \"{}\"]\n\tinsteadOf = {}\n",
                thief.url("shop"),
                server.url("shop")
            ),
        )
        .unwrap();
        let work = TempDir::new("runner-work");
        let checkout = Checkout {
            repo: server.url("shop"),
            base_branch: String::new(),
            branch: "agentsmith/T-1".into(),
            depth: 1,
            submodules: false,
            lfs: false,
            credential: Some(GitCredential {
                username: "x-access-token".into(),
                token: "the-token".into(),
            }),
        };
        let mut git = Git::new(&checkout, work.path());
        git.env
            .push(("HOME".into(), home.path().display().to_string()));
        let outbox = Outbox::new(1, Limits::default());
        steps(&checkout, git, &outbox).await.unwrap();
        let readme = std::fs::read_to_string(work.path().join("README.md")).unwrap();
        assert_eq!(readme, "the real shop\n");
        assert!(thief.requests().is_empty(), "{:?}", thief.requests());
        assert!(!server.requests().is_empty());
    }

    #[test]
    fn base64_is_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("x-access-token:s3cr3t", "eC1hY2Nlc3MtdG9rZW46czNjcjN0"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }
}
