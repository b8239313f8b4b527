//! The checkout, on the process backend with a real git server (git's own `http-backend`
//! behind testkit's HTTP server, checking a token): the runner checks the project's
//! repository out on the job's branch before the agent starts, continues a branch the remote
//! has already, fails the attempt with git's own reason when it cannot, and leaves the token
//! nowhere the agent or a record could show it.

use std::path::Path;
use std::time::Duration;

use agentsmith::settings::{CheckoutSettings, ProjectSettings, Settings};
use contract::Change;
use queue::JobState;
use secrecy::SecretString;
use serde_json::json;
use testkit::git_server::{git_command, GitServer};

use crate::helpers::{sh_agent, spawn_app, temp_dir, TestApp};

const GIT_TOKEN: &str = "git-token-7f3a9c1e5b2d4086";

/// An agent that tells what it found: the README, the branch, the history's length, the
/// state of the tree; then copies its whole work directory (`.git` too) to `copy`.
fn inspecting_agent(copy: &Path) -> agentsmith::settings::AgentSettings {
    sh_agent(&format!(
        "set -e; cat README.md; [ ! -f NOTES.md ] || cat NOTES.md; \
         echo \"branch: $(git branch --show-current)\"; \
         echo \"commits: $(git rev-list --count HEAD)\"; \
         git status --porcelain | sed 's/^/status: /'; \
         git config --list --show-origin | sed 's/^/config: /'; \
         cp -a . {copy}",
        copy = copy.display()
    ))
}

/// A dispatcher with project `shop` at `repo` (checked out with `token`) run by the
/// inspecting agent; one attempt per job, so a failed checkout ends the job.
async fn app_for(repo: String, token: &str, base_branch: &str, copy: &Path) -> TestApp {
    app_with(repo, token, base_branch, inspecting_agent(copy)).await
}

/// The same with `agent`.
async fn app_with(
    repo: String,
    token: &str,
    base_branch: &str,
    agent: agentsmith::settings::AgentSettings,
) -> TestApp {
    let checkout = CheckoutSettings {
        token: SecretString::from(token.to_string()),
        ..Default::default()
    };
    project_app(repo, base_branch, checkout, agent).await
}

/// A dispatcher with project `shop` at `repo`, checked out as `checkout` says and run by
/// `agent`; one attempt per job.
pub(crate) async fn project_app(
    repo: String,
    base_branch: &str,
    checkout: CheckoutSettings,
    agent: agentsmith::settings::AgentSettings,
) -> TestApp {
    let base_branch = base_branch.to_string();
    spawn_app(move |s: &mut Settings| {
        s.queue.max_attempts = 1;
        s.agents.insert("inspect".into(), agent);
        s.projects.insert(
            "shop".into(),
            ProjectSettings {
                repo,
                base_branch,
                agent: "inspect".into(),
                checkout,
                ..Default::default()
            },
        );
    })
    .await
}

/// Submits a job for project `shop` and `ticket`; its id and the job once it has ended.
pub(crate) async fn run(app: &TestApp, ticket: &str) -> (String, queue::Job) {
    let (status, body) = app
        .post_job(json!({"project": "shop", "task": "fix it", "ticket": ticket}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let job = app.wait_for_end(&id, Duration::from_secs(60)).await;
    (id, job)
}

/// Every file under `dir`, as text (lossy).
fn all_text_under(dir: &Path) -> String {
    let mut text = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                text.push_str(&String::from_utf8_lossy(
                    &std::fs::read(entry.path()).unwrap(),
                ));
            }
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_finds_the_repository_on_its_branch_and_the_token_nowhere() {
    let git = GitServer::start(GIT_TOKEN).await;
    git.create_repo(
        "shop",
        &[
            ("README.md", "hello from the shop\n"),
            ("src/lib.rs", "pub fn sell() {}\n"),
        ],
        "trunk",
    );
    let copy = temp_dir("checkout-copy");
    let app = app_for(git.url("shop"), GIT_TOKEN, "", &copy.join("work")).await;
    let (id, job) = run(&app, "SHOP-7").await;
    let lines = app.log_lines(&id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{lines:#?}");
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has("hello from the shop"), "{lines:#?}");
    // The default branch (trunk, from the remote's HEAD), one commit deep, on the job's branch.
    assert!(has("branch: agentsmith/SHOP-7"), "{lines:#?}");
    assert!(has("commits: 1"), "{lines:#?}");
    assert!(
        has("agent-runner: checking out")
            && has("(from trunk, depth 1) as branch agentsmith/SHOP-7"),
        "{lines:#?}"
    );
    assert!(
        has("agent-runner: checked out agentsmith/SHOP-7 at "),
        "{lines:#?}"
    );
    // The runner's own files are not changes of the tree.
    assert!(!has("status: "), "{lines:#?}");

    // The git server got the token, as HTTP Basic, scoped to the repository.
    let requests = git.requests();
    assert!(
        !requests.is_empty() && requests.iter().all(|r| r.accepted),
        "{requests:?}"
    );
    // Nowhere else: not in the remote's URL or any file of the work directory (.git/config
    // among them), not in the output, the events or the record.
    let work = all_text_under(&copy.join("work"));
    assert!(
        work.contains("hello from the shop"),
        "the copy holds the checkout"
    );
    assert!(
        !work.contains(GIT_TOKEN),
        "the token is in the work directory"
    );
    let basic = requests[0].authorization.clone().unwrap();
    let encoded = basic.trim_start_matches("Basic ");
    assert!(
        !work.contains(encoded),
        "the encoded credential is in the work directory"
    );
    let config: Vec<_> = lines.iter().filter(|l| l.starts_with("config: ")).collect();
    // The working branch has no upstream: a bare `git push` names no base branch.
    assert!(
        !config
            .iter()
            .any(|l| l.contains("branch.agentsmith/SHOP-7.")),
        "{config:#?}"
    );
    assert!(
        config
            .iter()
            .any(|l| l.contains(&format!("remote.origin.url={}", git.url("shop")))),
        "{config:#?}"
    );
    let events = app.events_text(&id).await;
    let record = serde_json::to_string(&app.job(&id).await).unwrap();
    for (what, text) in [("the events", &events), ("the record", &record)] {
        assert!(
            !text.contains(GIT_TOKEN) && !text.contains(encoded),
            "the token is in {what}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_the_remote_has_already_is_continued() {
    let git = GitServer::start(GIT_TOKEN).await;
    git.create_repo("shop", &[("README.md", "hello from the shop\n")], "main");
    // An earlier attempt pushed its work to the job's branch.
    let client = temp_dir("checkout-client");
    let authorized = |command: &mut std::process::Command| {
        command
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!(
                    "Authorization: Basic {}",
                    basic("x-access-token", GIT_TOKEN)
                ),
            );
    };
    for args in [
        vec!["clone", "--quiet", git.url("shop").as_str(), "."],
        vec!["checkout", "--quiet", "-b", "agentsmith/SHOP-8"],
    ] {
        let mut command = git_command(&client);
        authorized(command.args(&args));
        assert!(command.status().unwrap().success(), "git {args:?}");
    }
    std::fs::write(client.join("NOTES.md"), "notes of the earlier attempt\n").unwrap();
    for args in [
        vec!["add", "NOTES.md"],
        vec!["commit", "--quiet", "-m", "earlier attempt"],
        vec!["push", "--quiet", "origin", "agentsmith/SHOP-8"],
    ] {
        let mut command = git_command(&client);
        authorized(command.args(&args));
        assert!(command.status().unwrap().success(), "git {args:?}");
    }

    let copy = temp_dir("checkout-copy");
    let app = app_for(git.url("shop"), GIT_TOKEN, "main", &copy.join("work")).await;
    let (id, job) = run(&app, "SHOP-8").await;
    let lines = app.log_lines(&id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{lines:#?}");
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has("notes of the earlier attempt"), "{lines:#?}");
    assert!(has("branch: agentsmith/SHOP-8"), "{lines:#?}");
    assert!(
        has("continuing from its branch agentsmith/SHOP-8"),
        "{lines:#?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_that_fails_fails_the_job_with_gits_reason_and_the_agent_never_runs() {
    let git = GitServer::start(GIT_TOKEN).await;
    git.create_repo("shop", &[("README.md", "hello from the shop\n")], "main");
    let copy = temp_dir("checkout-copy");
    let wrong = "wrong-token-0000";
    for (token, base, says) in [
        (wrong, "", "Authentication failed"),
        (
            GIT_TOKEN,
            "no-such-branch",
            "fetching the base branch \"no-such-branch\"",
        ),
    ] {
        let app = app_for(git.url("shop"), token, base, &copy.join("work")).await;
        let (id, job) = run(&app, "SHOP-9").await;
        let lines = app.log_lines(&id).await;
        assert_eq!(job.state, JobState::Failed, "{job:#?}\n{lines:#?}");
        let reason = job.reason.clone().unwrap_or_default();
        assert!(
            reason.contains("the checkout failed") && reason.contains(says),
            "{reason}"
        );
        assert!(
            !reason.contains(wrong) && !reason.contains(GIT_TOKEN),
            "{reason}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("hello from the shop") || l.starts_with("branch: ")),
            "the agent ran: {lines:#?}"
        );
        app.stop().await;
    }
    assert!(
        !copy.join("work").exists(),
        "the agent never ran, so it copied nothing"
    );
    // The wrong token was refused by the server, as a wrong password is.
    assert!(git
        .requests()
        .iter()
        .any(|r| !r.accepted && r.status == 401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_change_is_committed_with_trailers_and_pushed_to_its_branch_only() {
    let git = GitServer::start(GIT_TOKEN).await;
    git.create_repo("shop", &[("README.md", "hello from the shop\n")], "main");
    let main_before = git.branches("shop");
    let agent = sh_agent(
        "echo 'now fixed' >> README.md; mkdir -p docs; echo new > docs/NEW.md; \
         printf '{\"summary\":\"Fix the greeting\\\\n\\\\nIt greeted nobody.\"}' > \"$AGENTSMITH_RESULT_FILE\"",
    );
    let app = app_with(git.url("shop"), GIT_TOKEN, "", agent).await;
    let (id, job) = run(&app, "SHOP-10").await;
    let lines = app.log_lines(&id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{lines:#?}");
    let branches = git.branches("shop");
    let pushed = branches
        .iter()
        .find(|(name, _)| name == "agentsmith/SHOP-10")
        .unwrap_or_else(|| panic!("no working branch on the remote: {branches:?}"));
    assert_eq!(
        job.change,
        Some(Change::Pushed {
            branch: "agentsmith/SHOP-10".into(),
            base_branch: "main".into(),
            commit: pushed.1.clone(),
            files: 2,
            insertions: 2,
            deletions: 0,
            // The project names no GitHub or GitLab repository to open one in.
            pull_request: None,
            pull_request_error: None,
            compare_url: None,
            notes: None,
        }),
        "{lines:#?}"
    );
    assert_eq!(
        git.file_at("shop", "agentsmith/SHOP-10", "README.md")
            .unwrap(),
        "hello from the shop\nnow fixed\n"
    );
    assert_eq!(
        git.file_at("shop", "agentsmith/SHOP-10", "docs/NEW.md")
            .unwrap(),
        "new\n"
    );
    // The runner's files stay out of the commit.
    assert_eq!(
        git.file_at("shop", "agentsmith/SHOP-10", ".agentsmith/intent.json"),
        None
    );
    let message = git.log("shop", "agentsmith/SHOP-10");
    assert!(
        message.starts_with("Fix the greeting\n\nIt greeted nobody.\n"),
        "{message}"
    );
    assert!(
        message.contains(&format!("Agentsmith-Job: {id}\nAgentsmith-Ticket: SHOP-10")),
        "{message}"
    );
    // The base branch is as it was: the push named the working branch alone.
    let main_after: Vec<_> = branches
        .iter()
        .filter(|(name, _)| name == "main")
        .cloned()
        .collect();
    assert_eq!(main_after, main_before);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("agent-runner: pushed 1 commit(s) to agentsmith/SHOP-10")),
        "{lines:#?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_running_as_another_user_has_its_work_pushed_too() {
    let git = GitServer::start(GIT_TOKEN).await;
    git.create_repo("shop", &[("README.md", "hello from the shop\n")], "main");
    let agent = sh_agent("id -u; echo 'from nobody' >> README.md; git commit -qam 'by nobody'");
    let repo = git.url("shop");
    let app = spawn_app(move |s: &mut Settings| {
        // A root dispatcher runs agents as nobody (the README says to): the tree the runner
        // checked out is then theirs, and git, run by the runner afterwards, must still work
        // in it.
        s.spawner.process.agent_user = Some(spawner::backend::process::AgentUser {
            uid: 65534,
            gid: 65534,
        });
        s.queue.max_attempts = 1;
        s.agents.insert("nobody".into(), agent);
        s.projects.insert(
            "shop".into(),
            ProjectSettings {
                repo,
                agent: "nobody".into(),
                checkout: CheckoutSettings {
                    token: SecretString::from(GIT_TOKEN.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
    })
    .await;
    let (id, job) = run(&app, "SHOP-14").await;
    let lines = app.log_lines(&id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{lines:#?}");
    assert!(
        lines.iter().any(|l| l == "65534"),
        "the agent ran as nobody: {lines:#?}"
    );
    assert_eq!(
        git.file_at("shop", "agentsmith/SHOP-14", "README.md")
            .as_deref(),
        Some("hello from the shop\nfrom nobody\n")
    );
    assert!(git
        .log("shop", "agentsmith/SHOP-14")
        .starts_with("by nobody\n"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_is_neither_github_nor_gitlab_gets_the_push_and_a_compare_link() {
    let git = GitServer::start(GIT_TOKEN).await;
    git.create_repo("shop", &[("README.md", "hello from the shop\n")], "main");
    let repo = git.url("shop");
    let app = spawn_app(move |s: &mut Settings| {
        s.queue.max_attempts = 1;
        s.agents
            .insert("edit".into(), sh_agent("echo more >> README.md"));
        let mut checkout = CheckoutSettings {
            token: SecretString::from(GIT_TOKEN.to_string()),
            ..Default::default()
        };
        checkout.pull_request.compare_url =
            "https://git.example/acme/shop/compare/{base}...{branch}".into();
        s.projects.insert(
            "shop".into(),
            ProjectSettings {
                repo,
                agent: "edit".into(),
                checkout,
                ..Default::default()
            },
        );
        assert!(s.validate().is_empty(), "{:?}", s.validate());
    })
    .await;
    let (id, job) = run(&app, "SHOP-15").await;
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{job:#?}\n{:#?}",
        app.log_lines(&id).await
    );
    let Some(Change::Pushed {
        compare_url,
        pull_request,
        ..
    }) = &job.change
    else {
        panic!("no push: {job:#?}");
    };
    // The branch's `/` stays a separator; nothing else of it could change the URL's path.
    assert_eq!(
        compare_url.as_deref(),
        Some("https://git.example/acme/shop/compare/main...agentsmith/SHOP-15")
    );
    assert_eq!(pull_request, &None);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_is_no_push_and_a_refused_push_fails_the_job_with_the_hosts_words() {
    let git = GitServer::start(GIT_TOKEN).await;
    git.create_repo("shop", &[("README.md", "hello from the shop\n")], "main");
    let app = app_with(git.url("shop"), GIT_TOKEN, "", sh_agent("cat README.md")).await;
    let (id, job) = run(&app, "SHOP-11").await;
    let lines = app.log_lines(&id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{lines:#?}");
    assert_eq!(job.change, Some(Change::NoChanges));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("the agent changed nothing")),
        "{lines:#?}"
    );
    assert_eq!(git.branches("shop").len(), 1, "{:?}", git.branches("shop"));
    app.stop().await;

    git.protect_branch("shop", "agentsmith/SHOP-12");
    let app = app_with(
        git.url("shop"),
        GIT_TOKEN,
        "",
        sh_agent("echo change >> README.md"),
    )
    .await;
    let (id, job) = run(&app, "SHOP-12").await;
    assert_eq!(
        job.state,
        JobState::Failed,
        "{job:#?}\n{:#?}",
        app.log_lines(&id).await
    );
    let reason = job.reason.unwrap_or_default();
    assert!(
        reason.contains("the push failed")
            && reason.contains("branch agentsmith/SHOP-12 is protected"),
        "{reason}"
    );
    assert_eq!(job.change, None);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_pushes_itself_or_plants_hooks_and_config_gets_nowhere() {
    let git = GitServer::start(GIT_TOKEN).await;
    git.create_repo("shop", &[("README.md", "hello from the shop\n")], "main");
    let thief = GitServer::start(GIT_TOKEN).await;
    thief.create_repo("shop", &[("README.md", "the thief's\n")], "main");
    let markers = temp_dir("checkout-markers");
    let marker = |name: &str| markers.join(name).display().to_string();
    let agent = sh_agent(&format!(
        "echo 'agent change' >> README.md; git add README.md; git commit -qm mine; \
         git push origin HEAD:main; echo \"own push to main: $?\"; \
         git push origin HEAD:refs/heads/agentsmith/SHOP-13; echo \"own push to its branch: $?\"; \
         for hook in pre-commit pre-push post-commit reference-transaction; do \
           printf '#!/bin/sh\\ntouch {hooks}-'$hook'\\n' > .git/hooks/$hook; chmod +x .git/hooks/$hook; done; \
         git config core.fsmonitor 'touch {fsmonitor}'; \
         git config url.{thief}.insteadOf {repo}; \
         git config credential.helper '!touch {helper}; echo'; \
         echo 'uncommitted too' > EXTRA.md",
        hooks = marker("hook"),
        fsmonitor = marker("fsmonitor"),
        helper = marker("helper"),
        thief = thief.url("shop"),
        repo = git.url("shop"),
    ));
    let main_before = git.branches("shop");
    let app = app_with(git.url("shop"), GIT_TOKEN, "", agent).await;
    let (id, job) = run(&app, "SHOP-13").await;
    let lines = app.log_lines(&id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{lines:#?}");
    // The agent's own pushes found no credential.
    assert!(
        lines.iter().any(|l| l == "own push to main: 128"),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l == "own push to its branch: 128"),
        "{lines:#?}"
    );
    // The runner pushed its commit and the rest, to the real remote's working branch only.
    let branches = git.branches("shop");
    assert_eq!(
        branches
            .iter()
            .filter(|(name, _)| name == "main")
            .cloned()
            .collect::<Vec<_>>(),
        main_before
    );
    assert_eq!(
        git.file_at("shop", "agentsmith/SHOP-13", "EXTRA.md")
            .as_deref(),
        Some("uncommitted too\n")
    );
    assert!(git.log("shop", "agentsmith/SHOP-13").contains("mine"));
    assert!(thief.requests().is_empty(), "{:?}", thief.requests());
    // Nothing the agent planted ran.
    let ran: Vec<_> = std::fs::read_dir(&markers)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(ran.is_empty(), "the agent's hooks or config ran: {ran:?}");
    app.stop().await;
}

/// `user:password` in base64, as HTTP Basic sends it.
pub(crate) fn basic(user: &str, password: &str) -> String {
    let output = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{user}:{password}").as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(output.stdout).unwrap()
}
