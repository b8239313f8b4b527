//! From a ticket to a pull request, end to end on the process backend: a signed trigger, the
//! project's repository checked out from a real git server, the agent's change committed and
//! pushed to its branch, the pull request (GitHub) or merge request (GitLab) opened on the
//! fake provider API, and the reply carrying its link. Asked again, the same ticket updates the
//! open request instead of opening a second (a follow-up, linked to the first); a provider
//! outage delays the request, never loses it.

use agentsmith::settings::CheckoutSettings;
use contract::{Change, PullRequest};
use queue::JobState;
use testkit::git_server::GitServer;

use super::*;

const GIT_TOKEN: &str = "git-token-for-pull-requests";

/// An agent that changes the README and leaves a summary and notes (which try to ping a
/// team).
fn fixing_agent() -> AgentSettings {
    sh_agent(
        "echo \"fixed by $AGENTSMITH_TICKET\" >> README.md; \
         printf '{\"summary\":\"Fix the empty cart\\\\n\\\\nThe cart kept its items.\"}' > \"$AGENTSMITH_RESULT_FILE\"; \
         printf '## Why\\n\\nThe total was rounded twice. cc @payments-team\\n' > \"$AGENTSMITH_NOTES_FILE\"",
    )
}

/// The webhook app, its project `payments` checking out `git`'s `shop` and run by the fixing
/// agent; `customize` changes the rest.
async fn pr_app(fake: &FakeApi, git: &GitServer, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let repo = git.url("shop");
    webhook_app(fake, move |s| {
        s.agents.insert("fixing".into(), fixing_agent());
        let project = s.projects.get_mut("payments").unwrap();
        project.agent = "fixing".into();
        project.repo = repo;
        project.checkout = CheckoutSettings {
            token: SecretString::from(GIT_TOKEN.to_string()),
            ..Default::default()
        };
        customize(s);
    })
    .await
}

fn pull_request_of(job: &queue::Job) -> PullRequest {
    match &job.change {
        Some(Change::Pushed {
            pull_request: Some(pr),
            ..
        }) => (**pr).clone(),
        other => panic!("no pull request on the job: {other:?}\n{job:#?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_fix_ends_in_a_draft_pull_request_linked_in_the_reply_and_a_second_updates_it() {
    let fake = FakeApi::start().await;
    let git = GitServer::start(GIT_TOKEN).await;
    git.create_repo("shop", &[("README.md", "the shop\n")], "main");
    let app = pr_app(&fake, &git, |s| {
        let pr = &mut s
            .projects
            .get_mut("payments")
            .unwrap()
            .checkout
            .pull_request;
        pr.labels = vec!["agent".into()];
        pr.reviewers = vec!["ann".into()];
    })
    .await;

    command(&app, &fake, "fix PAY-20", REQUESTER, "t.pr.1", "pr-1").await;
    let id = only_job_id(&app).await;
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{job:#?}\n{:#?}",
        app.log_lines(&id).await
    );
    let pr = pull_request_of(&job);
    assert_eq!(
        pr,
        PullRequest {
            provider: "github".into(),
            number: 1,
            url: "https://github.example/acme/shop/pull/1".into(),
            opened: true,
        }
    );
    // The branch on the git server, and the pull request on GitHub made from it.
    let pushed = git
        .file_at("shop", "agentsmith/PAY-20", "README.md")
        .unwrap();
    assert_eq!(pushed, "the shop\nfixed by PAY-20\n");
    let prs = fake.pull_requests("acme/shop");
    assert_eq!(prs.len(), 1, "{prs:#?}");
    let opened = &prs[0];
    assert_eq!(opened["head"]["ref"], "agentsmith/PAY-20");
    assert_eq!(opened["base"]["ref"], "main");
    assert_eq!(opened["draft"], true);
    assert_eq!(opened["title"], "Fix the empty cart");
    assert_eq!(opened["labels"], json!(["agent"]));
    assert_eq!(opened["reviewers"], json!(["ann"]));
    let body = opened["body"].as_str().unwrap();
    assert!(body.contains(&format!("job `{id}`")), "{body}");
    assert!(body.contains("The cart kept its items."), "{body}");
    // The agent's notes close the description, their mention broken.
    assert!(
        body.ends_with(
            "### Notes from the agent\n\n## Why\n\nThe total was rounded twice. cc @\u{200d}payments-team"
        ),
        "{body}"
    );
    assert_eq!(
        git.file_at("shop", "agentsmith/PAY-20", ".agentsmith/notes.md"),
        None,
        "the notes are not committed"
    );
    let create = fake
        .requests_to("/repos/acme/shop/pulls")
        .into_iter()
        .find(|r| r.body["head"] == "agentsmith/PAY-20")
        .unwrap();
    assert!(has_header(
        &create,
        "authorization",
        &format!("Bearer {GITHUB_TOKEN}")
    ));
    // The reply says so, with the link.
    wait_for_outbox_drained(&app).await;
    let finished = fake
        .wait_for("the Finished reply", LIMIT, |r| {
            r.text().contains(&format!("Finished {id}"))
        })
        .await;
    let text = finished.text();
    assert!(text.contains("Pull request #1 opened"), "{text}");
    assert!(
        text.contains("https://github.example/acme/shop/pull/1"),
        "{text}"
    );
    // The API (and the dashboard, which reads it) carries it too.
    let shown = app.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(shown["change"]["pull_request"]["number"], 1, "{shown}");

    // The same ticket again: its branch is continued and the open pull request updated.
    command(&app, &fake, "fix PAY-20", REQUESTER, "t.pr.2", "pr-2").await;
    let jobs = listed_jobs(&app).await;
    let again = jobs
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .find(|j| *j != id)
        .expect("a second job");
    let job = app.wait_for_end(&again, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    // A follow-up of the first: linked, with what the first said.
    let previous = job
        .follows
        .clone()
        .expect("the second job follows the first");
    assert_eq!(previous.job_id, id);
    assert!(
        previous
            .summary
            .is_some_and(|s| s.starts_with("Fix the empty cart")),
        "{job:#?}"
    );
    let pr = pull_request_of(&job);
    assert_eq!((pr.number, pr.opened), (1, false));
    assert_eq!(fake.pull_requests("acme/shop").len(), 1);
    assert_eq!(
        git.file_at("shop", "agentsmith/PAY-20", "README.md")
            .unwrap(),
        "the shop\nfixed by PAY-20\nfixed by PAY-20\n"
    );
    fake.wait_for("the second Finished reply", LIMIT, |r| {
        r.text().contains(&format!("Finished {again}"))
            && r.text().contains("Pull request #1 updated")
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_fix_opens_a_draft_merge_request_and_an_outage_only_delays_it() {
    let fake = FakeApi::start().await;
    let git = GitServer::start(GIT_TOKEN).await;
    git.create_repo("shop", &[("README.md", "the shop\n")], "trunk");
    let app = pr_app(&fake, &git, |s| {
        let project = s.projects.get_mut("payments").unwrap();
        project.checkout.pull_request.gitlab_project = "acme/shop".into();
        project.checkout.pull_request.labels = vec!["agent".into()];
        project.github_repos.clear();
    })
    .await;
    // GitLab is away for the first two tries of opening it.
    fake.fail_next(2, "/merge_requests");
    let note = gitlab_note(4, "/agent fix", "Issue").to_string();
    let (status, answer) = send(to_gitlab(
        &app,
        Sign::Right,
        "Note Hook",
        "d1e2f3a4-0000-4c6b-9e0c-2f1d7b5e8a90",
        note.as_bytes(),
    ))
    .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["job_id"].as_str().unwrap().to_string();
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{job:#?}\n{:#?}",
        app.log_lines(&id).await
    );
    assert!(fake.failures() >= 1, "the outage was met");
    let pr = pull_request_of(&job);
    assert_eq!(
        pr,
        PullRequest {
            provider: "gitlab".into(),
            number: 1,
            url: "https://gitlab.example/acme/shop/-/merge_requests/1".into(),
            opened: true,
        }
    );
    let mrs = fake.merge_requests("acme/shop");
    assert_eq!(mrs.len(), 1, "{mrs:#?}");
    assert_eq!(mrs[0]["source_branch"], "agentsmith/acme-shop-4");
    assert_eq!(mrs[0]["target_branch"], "trunk");
    assert_eq!(mrs[0]["draft"], true);
    assert_eq!(mrs[0]["title"], "Draft: Fix the empty cart");
    assert_eq!(mrs[0]["labels"], json!(["agent"]));
    let note = fake
        .wait_for("the Finished note", LIMIT, |r| {
            r.text().contains(&format!("Finished {id}"))
        })
        .await;
    assert!(
        note.text().contains("Merge request !1 opened"),
        "{}",
        note.text()
    );
    // The merge request links the ticket it came from.
    let description = mrs[0]["description"].as_str().unwrap();
    assert!(
        description.contains("(https://gitlab.example/acme/shop/-/issues/4#note_1244)"),
        "{description}"
    );
    app.stop().await;
}
