//! GitHub: an issue labelled `agent` runs a job whose result is commented with the token;
//! a second trigger while it runs is answered "already running"; a refused comment is tried
//! again until it arrives, once.

use queue::JobState;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_issue_labelled_agent_runs_a_job_and_comments_the_result_with_the_token() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let id = github_issue_queued(&app, "72d3162e-cc78-11e3-81ab-4c9367dc0958").await;
    assert_eq!(only_job_id(&app).await, id);
    let job = app.job(&id).await;
    assert_eq!(job.ticket.as_deref(), Some("acme/shop#7"));
    assert_eq!(job.task, "fix acme/shop#7");
    assert_eq!(job.title.as_deref(), Some("Checkout fails for EUR carts"));
    assert_eq!(
        job.url.as_deref(),
        Some("https://github.com/acme/shop/issues/7")
    );
    assert_eq!(job.requester.as_deref(), Some("ann"));
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let finished = fake
        .wait_for("the Finished comment", LIMIT, |r| {
            r.text()
                .contains(&format!("Finished {id}: fix acme/shop#7"))
        })
        .await;
    assert_eq!(finished.path, "/repos/acme/shop/issues/7/comments");
    assert!(
        has_header(
            &finished,
            "authorization",
            &format!("Bearer {GITHUB_TOKEN}")
        ),
        "the comment is posted with the bearer token"
    );
    let text = finished.text();
    assert!(text.contains("\n\ndone"), "{text}");
    assert!(
        text.contains("[PR](https://example.invalid/pr/1)"),
        "{text}"
    );
    let queued = fake
        .wait_for("the Queued comment", LIMIT, |r| {
            r.text().contains(&format!("Queued as {id}"))
        })
        .await;
    assert_eq!(queued.path, finished.path);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_github_trigger_for_an_issue_whose_job_runs_comments_already_running() {
    let fake = FakeApi::start().await;
    let gate = Gate::new();
    let app = gated_app(&fake, &gate).await;
    let id = github_issue_queued(&app, "d-1").await;
    app.wait_for_state(&id, JobState::Running, LIMIT).await;
    // The label removed and added again: a new delivery for the same issue (a new body:
    // the issue was updated since).
    let mut again = github_labeled("acme/shop", 7, "agent");
    again["issue"]["updated_at"] = serde_json::json!("2026-01-05T10:00:00Z");
    let (status, second) = send(to_github(
        &app,
        Sign::Right,
        "issues",
        "d-2",
        again.to_string().as_bytes(),
    ))
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["status"], "already_running");
    assert_eq!(second["job_id"], id.as_str());
    let comment = fake
        .wait_for("the already-running comment", LIMIT, |r| {
            r.text().contains("is already running")
        })
        .await;
    assert_eq!(comment.path, "/repos/acme/shop/issues/7/comments");
    assert!(
        comment
            .text()
            .contains(&format!("acme/shop#7 is already running as {id}")),
        "{comment:?}"
    );
    assert_eq!(listed_jobs(&app).await.len(), 1);
    gate.open();
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_the_provider_refuses_three_times_arrives_exactly_once_afterwards() {
    let fake = FakeApi::start().await;
    fake.fail_next(3, "Finished");
    let app = webhook_app(&fake, |_| {}).await;
    let id = github_issue_queued(&app, "d-1").await;
    app.wait_for_end(&id, LIMIT).await;
    let headline = format!("Finished {id}");
    let finished = fake
        .wait_for("the Finished comment", LIMIT, |r| {
            r.text().contains(&headline)
        })
        .await;
    wait_for_outbox_drained(&app).await;
    let tries: Vec<Recorded> = fake
        .requests()
        .into_iter()
        .filter(|r| r.text().contains(&headline))
        .collect();
    let statuses: Vec<u16> = tries.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [500, 500, 500, 201],
        "refused three times, then taken once: {tries:#?}"
    );
    assert!(
        tries.iter().all(|r| r.body == finished.body),
        "every try carries the same reply"
    );
    assert_eq!(fake.failures(), 3);
    app.stop().await;
}
