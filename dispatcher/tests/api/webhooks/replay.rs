//! Captured deliveries replayed: a signed ticket delivery sent again with a fresh
//! delivery-id header (which no signature covers) is a duplicate by the digest of its
//! body, even after its job has ended; a Slack button click sent again does nothing twice.

use queue::JobState;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_ticket_delivery_replayed_with_a_fresh_delivery_id_makes_no_second_job() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let issue = github_labeled("acme/shop", 7, "agent").to_string();
    let note = gitlab_note(4, "/agent fix", "Issue").to_string();
    let update = jira_labelled("PAY-12").to_string();
    for source in ["github", "gitlab", "jira"] {
        let delivery = |id: &str| match source {
            "github" => to_github(&app, Sign::Right, "issues", id, issue.as_bytes()),
            "gitlab" => to_gitlab(&app, Sign::Right, "Note Hook", id, note.as_bytes()),
            _ => to_jira(&app, Sign::Right, id, update.as_bytes()),
        };
        let (status, first) = send(delivery("captured-1")).await;
        assert_eq!(status, 202, "{source}: {first}");
        let id = first["job_id"].as_str().unwrap().to_string();
        // Once the job has ended, "one job per ticket" no longer stands in the way.
        app.wait_for_end(&id, LIMIT).await;
        let (status, replay) = send(delivery("forged-2")).await;
        assert_eq!(status, 200, "{source}: {replay}");
        assert_eq!(replay["status"], "duplicate", "{source}: {replay}");
        assert_eq!(replay["job_id"], id.as_str(), "{source}");
    }
    assert_eq!(listed_jobs(&app).await.len(), 3, "one job per source");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_click_sent_twice_runs_the_job_again_once() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    command(&app, &fake, "fix PAY-12", REQUESTER, "t.1", "c").await;
    let id = only_job_id(&app).await;
    app.wait_for_end(&id, LIMIT).await;
    let click = button("retry", &id, REQUESTER, &response_url(&fake, "click"));
    let at = unix_now();
    let (status, body) = send(to_slack(&app, "interactions", &click, Sign::Right, at)).await;
    assert_eq!(status, 200, "{body}");
    let job = app
        .wait_for(&id, "attempt 2 ended", LIMIT, |j| {
            j.attempt == 2 && j.state.is_terminal()
        })
        .await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    // The same signed click again, within Slack's five minutes.
    let (status, body) = send(to_slack(&app, "interactions", &click, Sign::Right, at)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "duplicate", "{body}");
    let job = app.job(&id).await;
    assert_eq!(
        (job.attempt, job.state),
        (2, JobState::Succeeded),
        "the replayed click did nothing"
    );
    app.stop().await;
}
