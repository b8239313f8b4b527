//! Where replies may go: a `response_url` whose host is not in
//! `sources.slack.response_url_hosts` (by default only Slack's `hooks.slack.com`) is never
//! called, and a value from a delivery (a Jira issue key) is one encoded segment of the
//! provider's URL, whatever characters it holds.

use serde_json::json;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_url_outside_the_allowed_hosts_is_never_called() {
    let fake = FakeApi::start().await;
    // The built-in list: Slack's host only, so the fake's response_urls are foreign.
    let app = webhook_app(&fake, |s| {
        s.sources.slack.response_url_hosts = vec!["hooks.slack.com".into()];
    })
    .await;
    command(&app, &fake, "fix PAY-12", REQUESTER, "t.1", "cmd").await;
    let id = only_job_id(&app).await;
    assert_eq!(app.job(&id).await.response_url, None, "not even stored");
    app.wait_for_end(&id, LIMIT).await;
    let finished = fake
        .wait_for("the Finished reply", LIMIT, |r| {
            r.text().contains(&format!("Finished {id}"))
        })
        .await;
    assert_eq!(
        finished.path, "/chat.postMessage",
        "the bot token takes over"
    );
    click(&app, &fake, "retry", &id, REQUESTER, "click").await;
    app.wait_for(&id, "attempt 2 ended", LIMIT, |j| {
        j.attempt == 2 && j.state.is_terminal()
    })
    .await;
    wait_for_outbox_drained(&app).await;
    let called = fake.requests_to("/slack/response/");
    assert!(called.is_empty(), "{called:#?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jira_key_with_url_characters_stays_one_segment_of_the_reply_url() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let key = "PAY-7/../../../../../x?y=1#z";
    let mut update = jira_labelled("PAY-7");
    update["issue"]["key"] = json!(key);
    let body = update.to_string();
    let (status, answer) = send(to_jira(&app, Sign::Right, "j-1", body.as_bytes())).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["job_id"].as_str().unwrap().to_string();
    app.wait_for_end(&id, LIMIT).await;
    let finished = fake
        .wait_for("the Finished comment", LIMIT, |r| {
            r.text().contains(&format!("Finished {id}"))
        })
        .await;
    assert_eq!(
        finished.path,
        "/rest/api/2/issue/PAY-7%2F..%2F..%2F..%2F..%2F..%2Fx%3Fy%3D1%23z/comment"
    );
    assert_eq!(finished.query, "");
    app.stop().await;
}
