//! Jira: an issue updated with the `agent` label runs a job whose result is commented with
//! basic auth.

use queue::JobState;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jira_issue_updated_with_the_label_runs_a_job_and_comments_with_basic_auth() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let update = jira_labelled("PAY-12").to_string();
    let (status, answer) = send(to_jira(
        &app,
        Sign::Right,
        "f1e2d3c4-b5a6-4978-8695-a4b3c2d1e0f9",
        update.as_bytes(),
    ))
    .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["job_id"].as_str().unwrap().to_string();
    let job = app.job(&id).await;
    assert_eq!(job.ticket.as_deref(), Some("PAY-12"));
    assert_eq!(
        job.title.as_deref(),
        Some("Refunds fail for partial captures")
    );
    assert_eq!(
        job.url.as_deref(),
        Some(format!("{}/browse/PAY-12", fake.url).as_str())
    );
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let finished = fake
        .wait_for("the Finished comment", LIMIT, |r| {
            r.text().contains(&format!("Finished {id}: fix PAY-12"))
        })
        .await;
    assert_eq!(finished.path, "/rest/api/2/issue/PAY-12/comment");
    assert!(
        has_header(&finished, "authorization", JIRA_BASIC),
        "the comment is posted with basic auth of the email and API token"
    );
    let text = finished.text();
    assert!(text.contains("\n\ndone"), "{text}");
    assert!(text.contains("[PR|https://example.invalid/pr/1]"), "{text}");
    app.stop().await;
}
