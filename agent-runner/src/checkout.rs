//! The repository checked out into the work directory before the agent starts, as the
//! dispatcher's [`Checkout`] says: the working branch from the remote when it has it (a
//! retry, a follow-up job), else a new one at the base branch.
//!
//! The credential reaches git only through the environment of each git command the runner
//! runs here, as an `http.<repo>.extraHeader` (`GIT_CONFIG_COUNT`), scoped to the
//! repository's URL: nothing of it is written to `.git/config`, the remote's URL, the
//! intent file or any line of output, and the agent, which starts after the last of these
//! commands has ended, finds none of it. An SSH key is the one exception to "no file": ssh
//! reads keys from files only, so it is written, with the host keys it must accept, to a
//! directory only the runner's user may enter, outside the work directory, and removed as
//! soon as the commands are done: before the agent starts, and after it (and everything
//! it left running) has ended.

use std::path::Path;
use std::time::Duration;

use contract::{Change, Checkout, OutputStream, Push, RunnerEvent};
use tokio::time::{Instant, MissedTickBehavior};

use crate::ca::ExtraCa;
use crate::conversation::Approver;
use crate::outbox::Outbox;

mod git;

use git::Git;

/// What the checkout leaves for the push: the repository's configuration as the runner
/// wrote it (the agent may rewrite the file; the push puts this back), and the commit the
/// agent started from.
#[derive(Debug, Clone)]
pub struct CheckedOut {
    config: Vec<u8>,
    start: String,
    /// The branch it started from (the remote's default, when none was configured).
    base: String,
}

/// Checks `checkout` out into `dir`, telling its progress as output lines and keeping the
/// attempt alive with a heartbeat every `heartbeat`. The error is the reason the attempt
/// failed to start, with git's own words.
pub async fn run(
    checkout: &Checkout,
    extra_ca: Option<&ExtraCa>,
    dir: &Path,
    outbox: &Outbox,
    heartbeat: Duration,
) -> Result<CheckedOut, String> {
    // Submodules on the repository's host (`../lib.git`) are read with its credential too;
    // without them, the credential goes to the repository's URL alone.
    let scope = if checkout.submodules {
        origin_of(&checkout.repo)
    } else {
        checkout.repo.clone()
    };
    let git = Git::new(&scope, checkout.credential.as_ref(), extra_ca, dir)?;
    let work = steps(checkout, git, outbox);
    with_heartbeats(work, outbox, heartbeat).await
}

/// `scheme://host[:port]/` of an http(s) URL; the URL itself for any other.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.starts_with("http") => {
            let authority = rest.split('/').next().unwrap_or(rest);
            format!("{scheme}://{authority}/")
        }
        _ => url.to_string(),
    }
}

/// `work`, with a heartbeat queued every `heartbeat` while it lasts.
async fn with_heartbeats<T>(
    work: impl std::future::Future<Output = T>,
    outbox: &Outbox,
    heartbeat: Duration,
) -> T {
    let mut ticks = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => outbox.push(RunnerEvent::Heartbeat),
        }
    }
}

async fn steps(checkout: &Checkout, git: Git<'_>, outbox: &Outbox) -> Result<CheckedOut, String> {
    let started = Instant::now();
    let dir = git.dir;
    let say = |line: String| tell(outbox, line);
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
    let start = git.run(&["rev-parse", "HEAD"]).await?.trim().to_string();
    say(format!(
        "checked out {} at {} in {:.1} s",
        checkout.branch,
        start.get(..7).unwrap_or(&start),
        started.elapsed().as_secs_f64()
    ));
    let config =
        std::fs::read(dir.join(".git/config")).map_err(|e| format!("reading .git/config: {e}"))?;
    Ok(CheckedOut {
        config,
        start,
        base,
    })
}

/// What a push says and asks on its way: its progress lines (and heartbeats, every
/// `heartbeat`, so the attempt's lease holds while git works) in `outbox`, and the approval
/// it waits for, when the profile asks for one.
#[derive(Debug, Clone, Copy)]
pub struct Pushing<'a> {
    /// Where progress lines and heartbeats go.
    pub outbox: &'a Outbox,
    /// How often a heartbeat goes.
    pub heartbeat: Duration,
    /// Who approves the push, if anyone must.
    pub approver: Option<&'a Approver>,
}

/// After the agent exited 0: commits what it left uncommitted (subject: the first line of
/// its `summary`, else the push's own), and pushes the branch's commits to the working branch
/// of the remote named in the checkout, and to no other ref. The repository is the agent's
/// work, so nothing in it is run or trusted: `.git` must be a directory, its configuration is
/// the runner's again (the agent's `url.*.insteadOf`, `core.fsmonitor`, filters or includes
/// are gone), hooks are neither kept nor run, and the push names the remote's URL itself.
pub async fn push(
    checkout: &Checkout,
    extra_ca: Option<&ExtraCa>,
    checked_out: &CheckedOut,
    dir: &Path,
    summary: Option<&str>,
    pushing: Pushing<'_>,
) -> Result<Change, String> {
    let Pushing {
        outbox,
        heartbeat,
        approver,
    } = pushing;
    let Some(push) = &checkout.push else {
        return Ok(Change::NoChanges);
    };
    let work = async {
        restore(dir, checked_out)?;
        let mut git = Git::new(&checkout.repo, push.credential.as_ref(), extra_ca, dir)?;
        git.harden(dir, push);
        commit_and_push(checkout, push, checked_out, &git, summary, outbox, approver).await
    };
    with_heartbeats(work, outbox, heartbeat).await
}

/// Puts the runner's repository configuration back, and takes away what the agent could
/// have made git run or read elsewhere.
fn restore(dir: &Path, checked_out: &CheckedOut) -> Result<(), String> {
    let git_dir = dir.join(".git");
    let is_dir = std::fs::symlink_metadata(&git_dir).is_ok_and(|m| m.file_type().is_dir());
    if !is_dir {
        return Err("the agent removed or replaced .git: there is nothing to push".into());
    }
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    for file in ["config", "commondir"] {
        match std::fs::remove_file(git_dir.join(file)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(&format!("removing .git/{file}"), e))
            }
            _ => {}
        }
    }
    std::fs::write(git_dir.join("config"), &checked_out.config)
        .map_err(|e| io("restoring .git/config", e))?;
    let hooks = git_dir.join("hooks");
    let removed = match std::fs::symlink_metadata(&hooks) {
        Ok(m) if m.file_type().is_dir() => std::fs::remove_dir_all(&hooks),
        Ok(_) => std::fs::remove_file(&hooks),
        Err(_) => Ok(()),
    };
    removed.map_err(|e| io("removing .git/hooks", e))?;
    let info = git_dir.join("info");
    if std::fs::symlink_metadata(&info).is_ok_and(|m| !m.file_type().is_dir()) {
        std::fs::remove_file(&info).map_err(|e| io("removing .git/info", e))?;
    }
    std::fs::create_dir_all(&info)
        .and_then(|()| {
            let exclude = info.join("exclude");
            let _ = std::fs::remove_file(&exclude);
            std::fs::write(exclude, "/.agentsmith/\n")
        })
        .map_err(|e| io("restoring .git/info/exclude", e))
}

async fn commit_and_push(
    checkout: &Checkout,
    push: &Push,
    checked_out: &CheckedOut,
    git: &Git<'_>,
    summary: Option<&str>,
    outbox: &Outbox,
    approver: Option<&Approver>,
) -> Result<Change, String> {
    let say = |line: String| tell(outbox, line);
    git.run(&["add", "--all"]).await?;
    let staged = !git.succeeds(&["diff", "--cached", "--quiet"]).await?;
    if staged {
        let (subject, body) = message_of(summary, &push.subject);
        let trailers = push.trailers.join("\n");
        let mut commit = vec!["commit", "--quiet", "--no-verify", "-m", subject.as_str()];
        if !body.is_empty() {
            commit.extend(["-m", body.as_str()]);
        }
        if !trailers.is_empty() {
            commit.extend(["-m", trailers.as_str()]);
        }
        git.run(&commit).await?;
    }
    let head = git.run(&["rev-parse", "HEAD"]).await?.trim().to_string();
    let range = format!("{}..HEAD", checked_out.start);
    let new_commits: u64 = git
        .run(&["rev-list", "--count", &range])
        .await?
        .trim()
        .parse()
        .unwrap_or(0);
    if head == checked_out.start || new_commits == 0 {
        say("the agent changed nothing: no commit, no push".into());
        return Ok(Change::NoChanges);
    }
    let stat = git
        .run(&["diff", "--shortstat", &checked_out.start, "HEAD"])
        .await?;
    let (files, insertions, deletions) = shortstat(&stat);
    // Nothing leaves the sandbox before someone approves it, when the profile says so.
    if let (Some(approver), Some(_)) = (approver, &push.approval) {
        let listing = git
            .run(&["diff", "--stat=100", &checked_out.start, "HEAD"])
            .await
            .unwrap_or_default();
        let what = format!(
            "Push the agent's work? {new_commits} commit(s) to {} ({files} files, +{insertions} -{deletions}).\n{}\n{}",
            checkout.branch,
            summary.map(str::trim).unwrap_or_default(),
            listing.trim_end()
        );
        say("waiting for someone to approve the push".into());
        let by = approver
            .approve(&what)
            .await
            .map_err(|why| format!("the push was not approved: {why}"))?;
        say(format!("{by} approved the push"));
    }
    let refspec = format!("HEAD:refs/heads/{}", checkout.branch);
    git.run(&["push", "--quiet", "--no-verify", &checkout.repo, &refspec])
        .await?;
    say(format!(
        "pushed {new_commits} commit(s) to {} ({files} files, +{insertions} -{deletions}) at {}",
        checkout.branch,
        head.get(..7).unwrap_or(&head)
    ));
    Ok(Change::Pushed {
        branch: checkout.branch.clone(),
        base_branch: checked_out.base.clone(),
        commit: head,
        files,
        insertions,
        deletions,
        pull_request: None,
        pull_request_error: None,
        compare_url: None,
        notes: None,
    })
}

/// The commit's subject and body: the summary's first line (72 characters at most) and the
/// rest of it, or `fallback` and nothing.
fn message_of(summary: Option<&str>, fallback: &str) -> (String, String) {
    let summary = summary.map(str::trim).filter(|s| !s.is_empty());
    let Some(summary) = summary else {
        return (fallback.to_string(), String::new());
    };
    let (first, rest) = summary.split_once('\n').unwrap_or((summary, ""));
    let first = first.trim();
    let subject = if first.chars().count() > 72 {
        format!("{}…", first.chars().take(71).collect::<String>())
    } else {
        first.to_string()
    };
    (subject, rest.trim().to_string())
}

/// Files, insertions and deletions of `git diff --shortstat`'s line.
fn shortstat(line: &str) -> (u64, u64, u64) {
    let mut counts = (0, 0, 0);
    for part in line.split(',') {
        let mut words = part.split_whitespace();
        let n = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        match words.next() {
            Some(w) if w.starts_with("file") => counts.0 = n,
            Some(w) if w.starts_with("insertion") => counts.1 = n,
            Some(w) if w.starts_with("deletion") => counts.2 = n,
            _ => {}
        }
    }
    counts
}

/// The author and committer an agent that commits on its own gets in its environment: those
/// of the commits the runner makes (none without a push).
pub fn identity(checkout: Option<&Checkout>) -> Vec<(&'static str, Option<String>)> {
    let Some(push) = checkout.and_then(|c| c.push.as_ref()) else {
        return Vec::new();
    };
    let (name, email) = (&push.author_name, &push.author_email);
    vec![
        ("GIT_AUTHOR_NAME", Some(name.clone())),
        ("GIT_AUTHOR_EMAIL", Some(email.clone())),
        ("GIT_COMMITTER_NAME", Some(name.clone())),
        ("GIT_COMMITTER_EMAIL", Some(email.clone())),
    ]
}

/// Says `line` in the job's output (after `agent-runner: `) and in the runner's log.
fn tell(outbox: &Outbox, line: String) {
    tracing::info!("{line}");
    outbox.push_line(OutputStream::Stderr, format!("agent-runner: {line}"));
}

#[cfg(test)]
mod tests {
    use contract::GitCredential;
    use testkit::git_server::GitServer;
    use testkit::temp::TempDir;

    use super::*;
    use crate::outbox::Limits;

    /// A checkout of `repo`'s default branch onto `agentsmith/T-1` with the token `the-token`,
    /// no push.
    fn token_checkout(repo: String) -> Checkout {
        Checkout {
            repo,
            base_branch: String::new(),
            branch: "agentsmith/T-1".into(),
            depth: 1,
            submodules: false,
            lfs: false,
            credential: Some(GitCredential::Token {
                username: "x-access-token".into(),
                token: "the-token".into(),
            }),
            push: None,
        }
    }

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
        let checkout = token_checkout(server.url("shop"));
        let mut git = Git::new(
            &checkout.repo,
            checkout.credential.as_ref(),
            None,
            work.path(),
        )
        .unwrap();
        git.env
            .push(("HOME".into(), home.path().display().to_string()));
        let outbox = Outbox::new(1, Limits::default());
        steps(&checkout, git, &outbox).await.unwrap();
        let readme = std::fs::read_to_string(work.path().join("README.md")).unwrap();
        assert_eq!(readme, "the real shop\n");
        assert!(thief.requests().is_empty(), "{:?}", thief.requests());
        assert!(!server.requests().is_empty());
    }

    /// The runner's SSH key directories left in the temporary directory (by this process).
    fn key_dirs() -> Vec<std::path::PathBuf> {
        let prefix = format!("agentsmith-ssh-{}-", std::process::id());
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect()
    }

    #[tokio::test]
    async fn over_ssh_the_key_checks_out_and_pushes_and_is_gone_after_each_step() {
        let server = GitServer::start("unused").await;
        server.create_repo("shop", &[("README.md", "over ssh\n")], "main");
        let ssh = testkit::ssh_server::SshServer::start();
        let key = ssh.client_key();
        let credential = GitCredential::SshKey {
            ssh_key: key.clone(),
            known_hosts: ssh.known_hosts(),
        };
        let work = TempDir::new("runner-ssh-work");
        let checkout = Checkout {
            repo: ssh.url(&server.repo_dir("shop")),
            base_branch: String::new(),
            branch: "agentsmith/T-2".into(),
            depth: 1,
            submodules: false,
            lfs: false,
            credential: Some(credential.clone()),
            push: Some(Push {
                credential: Some(credential),
                author_name: "agentsmith".into(),
                author_email: "agentsmith@localhost".into(),
                subject: "T-2: over ssh".into(),
                trailers: vec!["Agentsmith-Job: j-2".into()],
                approval: None,
            }),
        };
        let outbox = Outbox::new(1, Limits::default());
        let heartbeat = Duration::from_secs(30);
        let checked_out = run(&checkout, None, work.path(), &outbox, heartbeat)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", ssh.log()));
        assert_eq!(key_dirs(), Vec::<std::path::PathBuf>::new());
        let config = std::fs::read_to_string(work.path().join(".git/config")).unwrap();
        assert!(
            !config.contains("PRIVATE KEY") && !config.contains("sshCommand"),
            "{config}"
        );

        std::fs::write(work.path().join("README.md"), "changed over ssh\n").unwrap();
        let change = push(
            &checkout,
            None,
            &checked_out,
            work.path(),
            None,
            Pushing {
                outbox: &outbox,
                heartbeat,
                approver: None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", ssh.log()));
        assert!(
            matches!(change, Change::Pushed { files: 1, .. }),
            "{change:?}"
        );
        assert_eq!(
            server
                .file_at("shop", "agentsmith/T-2", "README.md")
                .as_deref(),
            Some("changed over ssh\n")
        );
        assert_eq!(key_dirs(), Vec::<std::path::PathBuf>::new());

        // Someone else answering at the address: refused, in ssh's words, the key unsaid.
        let stranger = Checkout {
            credential: Some(GitCredential::SshKey {
                ssh_key: key.clone(),
                known_hosts: ssh.stranger_known_hosts(),
            }),
            ..checkout
        };
        let other = TempDir::new("runner-ssh-stranger");
        let err = run(&stranger, None, other.path(), &outbox, heartbeat)
            .await
            .unwrap_err();
        assert!(err.contains("Host key verification failed"), "{err}");
        assert!(
            key.lines()
                .filter(|l| l.len() > 8)
                .all(|l| !err.contains(l)),
            "{err}"
        );
        assert_eq!(key_dirs(), Vec::<std::path::PathBuf>::new());
    }

    #[tokio::test]
    async fn a_submodule_on_the_same_host_is_checked_out_with_the_credential() {
        let server = GitServer::start("the-token").await;
        server.create_repo("lib", &[("lib.rs", "pub fn help() {}\n")], "main");
        server.create_repo("shop", &[("README.md", "the shop\n")], "main");
        // The superproject names its submodule relative to itself, as most do; the commit is
        // made and pushed through the file system, not the server.
        let scratch = TempDir::new("runner-submodule-scratch");
        let git = |args: &[&str]| {
            let output = testkit::git_server::git_command(scratch.path())
                .args(["-c", "protocol.file.allow=always"])
                .args(args)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let shop = server.repo_dir("shop").display().to_string();
        let lib = server.repo_dir("lib").display().to_string();
        git(&["clone", "--quiet", &shop, "."]);
        git(&["submodule", "add", "--quiet", &lib, "lib"]);
        git(&[
            "config",
            "-f",
            ".gitmodules",
            "submodule.lib.url",
            "../lib.git",
        ]);
        git(&["add", ".gitmodules"]);
        git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "--quiet",
            "-m",
            "lib",
        ]);
        git(&["push", "--quiet", "origin", "HEAD:main"]);

        let work = TempDir::new("runner-submodule-work");
        let checkout = Checkout {
            repo: server.url("shop"),
            base_branch: String::new(),
            branch: "agentsmith/T-3".into(),
            depth: 1,
            submodules: true,
            lfs: false,
            credential: Some(GitCredential::Token {
                username: "x-access-token".into(),
                token: "the-token".into(),
            }),
            push: None,
        };
        let outbox = Outbox::new(1, Limits::default());
        run(
            &checkout,
            None,
            work.path(),
            &outbox,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(work.path().join("lib/lib.rs")).unwrap(),
            "pub fn help() {}\n"
        );
        let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
        assert!(
            paths.iter().any(|p| p.starts_with("/lib.git/")),
            "{paths:?}"
        );
        assert!(server.requests().iter().all(|r| r.accepted), "{paths:?}");
    }

    #[tokio::test]
    async fn over_https_a_private_ca_is_trusted_when_given_and_its_bundle_is_gone_after() {
        let server = GitServer::start("the-token").await;
        server.create_repo("shop", &[("README.md", "behind a private CA\n")], "main");
        let ca = testkit::tls::TestCa::new("git");
        let plain = server.url("shop");
        let authority = plain
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap();
        let front = testkit::tls::TlsFront::start(authority.parse().unwrap(), &ca).await;
        let checkout = token_checkout(format!("{}/shop.git", front.url()));
        let outbox = Outbox::new(1, Limits::default());
        let heartbeat = Duration::from_secs(30);
        // Without the CA, git refuses the server's certificate.
        let work = TempDir::new("runner-work");
        let err = run(&checkout, None, work.path(), &outbox, heartbeat)
            .await
            .unwrap_err();
        assert!(err.contains("certificate"), "{err}");
        assert!(server.requests().is_empty(), "{:?}", server.requests());
        // With it, the checkout comes over TLS.
        let extra = ExtraCa::read(&ca.ca_file(), None).unwrap();
        let work = TempDir::new("runner-work");
        run(&checkout, Some(&extra), work.path(), &outbox, heartbeat)
            .await
            .unwrap();
        let readme = std::fs::read_to_string(work.path().join("README.md")).unwrap();
        assert_eq!(readme, "behind a private CA\n");
        assert!(front.handshakes() >= 1);
        let prefix = format!("agentsmith-ca-{}-", std::process::id());
        let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
