//! Slack: slash commands, app mentions, the cancel and retry buttons (and who may press
//! them), url verification, and requests stamped too far from now.

use queue::{JobState, Origin};
use serde_json::json;

use super::*;

/// A gated app with one job from `/agent fix PAY-12` by the requester, running (its
/// replies go to the response_url named "command").
async fn running_slack_job(fake: &FakeApi, gate: &Gate) -> (TestApp, String) {
    let app = gated_app(fake, gate).await;
    let command = slash_command(
        "fix PAY-12",
        REQUESTER,
        "t.1",
        &response_url(fake, "command"),
    );
    let (status, answer) = send(to_slack(
        &app,
        "commands",
        &command,
        Sign::Right,
        unix_now(),
    ))
    .await;
    assert_eq!(status, 200, "{answer}");
    let id = only_job_id(&app).await;
    app.wait_for_state(&id, JobState::Running, LIMIT).await;
    (app, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_requests_signed_more_than_five_minutes_from_now_are_401_and_queue_nothing() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let command = slash_command("fix PAY-12", REQUESTER, "t.1", &response_url(&fake, "1"));
    // Correctly signed, but six minutes ago (a replay) or six minutes ahead.
    for at in [unix_now() - 360, unix_now() + 360] {
        let (status, body) = send(to_slack(&app, "commands", &command, Sign::Right, at)).await;
        assert_eq!(status, 401, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("X-Slack-Request-Timestamp"), "{message}");
    }
    assert!(listed_jobs(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_event_retried_by_slack_and_a_repeated_command_make_one_job_each() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let event = mention("Ev0A1B2C3", "<@UBOT> fix PAY-12", "1700000000.000100").to_string();
    let (status, body) = send(to_slack(&app, "events", &event, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{body}");
    // Slack retries an event it thinks went unanswered, with the same event_id.
    let retried = to_slack(&app, "events", &event, Sign::Right, unix_now())
        .header("x-slack-retry-num", "1")
        .header("x-slack-retry-reason", "http_timeout");
    let (status, body) = send(retried).await;
    assert_eq!(status, 200, "{body}");
    let mentioned = only_job_id(&app).await;

    command(&app, &fake, "fix PAY-13", REQUESTER, "t.42", "1").await;
    let again = command(&app, &fake, "fix PAY-13", REQUESTER, "t.42", "1").await;
    let jobs = listed_jobs(&app).await;
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
    let commanded = jobs
        .iter()
        .filter_map(|j| j["id"].as_str())
        .find(|id| *id != mentioned)
        .unwrap()
        .to_string();
    let text = again["text"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("Already queued as `{commanded}`")),
        "{again}"
    );
    for id in [&mentioned, &commanded] {
        app.wait_for_end(id, LIMIT).await;
    }
    wait_for_outbox_drained(&app).await;
    let queued = fake
        .delivered()
        .iter()
        .filter(|r| r.text().contains(&format!("Queued as {mentioned}")))
        .count();
    assert_eq!(queued, 1, "the retried event is not answered twice");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_fix_command_answers_queued_runs_the_job_and_replies_at_the_response_url() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let answer = command(
        &app,
        &fake,
        "fix PAY-12",
        REQUESTER,
        "13345224609.738474920.8088930838d88f008e0",
        "command-1",
    )
    .await;
    assert_eq!(answer["response_type"], "ephemeral");
    let id = only_job_id(&app).await;
    let text = answer["text"].as_str().unwrap_or_default();
    assert!(text.contains(&format!("Queued as {id}")), "{answer}");
    let shown = answer["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(shown.contains(&format!("Queued as {id}")), "{answer}");
    assert!(shown.contains("asked by u0ann"), "{shown}");
    assert!(!shown.contains("&lt;"), "no markup shows escaped: {shown}");
    let job = app.job(&id).await;
    assert_eq!(
        job.project.as_deref(),
        Some("payments"),
        "PAY-12 belongs to the project that lists the Jira key PAY"
    );
    assert_eq!(job.ticket.as_deref(), Some("PAY-12"));
    assert_eq!(job.requester.as_deref(), Some("u0ann"));
    assert_eq!(
        job.origin,
        Some(Origin::Slack {
            channel: CHANNEL.into(),
            user: REQUESTER.into(),
            thread_ts: None
        })
    );
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let finished = fake
        .wait_for("the Finished reply", LIMIT, |r| {
            r.text().contains(&format!("Finished {id}: fix PAY-12"))
        })
        .await;
    assert_eq!(finished.path, "/slack/response/command-1");
    assert!(
        finished.header("authorization").is_none(),
        "a response_url is its own credential"
    );
    let text = finished.text();
    assert!(text.contains("\ndone"), "{text}");
    assert!(text.contains("<https://example.invalid/pr/1|PR>"), "{text}");
    wait_for_outbox_drained(&app).await;
    for request in fake.requests() {
        assert_eq!(request.path, "/slack/response/command-1", "{request:?}");
        assert!(
            !request.text().contains("Queued as"),
            "the command's answer already said queued: {request:?}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requesters_cancel_button_cancels_the_running_job() {
    let fake = FakeApi::start().await;
    let gate = Gate::new();
    let (app, id) = running_slack_job(&fake, &gate).await;
    click(&app, &fake, "cancel", &id, REQUESTER, "click").await;
    let job = app.wait_for_state(&id, JobState::Cancelled, LIMIT).await;
    assert!(
        job.reason.as_deref().is_some_and(|r| r.contains(REQUESTER)),
        "{job:#?}"
    );
    let answer = answer_at(&fake, "click").await;
    assert!(
        answer.text().contains(&format!("Cancelled `{id}`.")),
        "{answer:?}"
    );
    assert_eq!(answer.body["response_type"], "ephemeral");
    fake.wait_for("the Cancelled reply to the command", LIMIT, |r| {
        r.path == "/slack/response/command" && r.text().contains(&format!("Cancelled {id}"))
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_button_runs_a_finished_job_again() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    command(&app, &fake, "fix PAY-12", REQUESTER, "t.1", "command").await;
    let id = only_job_id(&app).await;
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!((job.state, job.attempt), (JobState::Succeeded, 1));
    click(&app, &fake, "retry", &id, REQUESTER, "click").await;
    let answer = answer_at(&fake, "click").await;
    assert!(
        answer
            .text()
            .contains(&format!("Queued `{id}` again (attempt 2).")),
        "{answer:?}"
    );
    let job = app
        .wait_for(&id, "attempt 2 succeeded", LIMIT, |j| {
            j.attempt == 2 && j.state == JobState::Succeeded
        })
        .await;
    assert_eq!(job.result.and_then(|r| r.summary).as_deref(), Some("done"));
    let headline = format!("Finished {id}");
    let finished_twice = wait_until(LIMIT, || async {
        fake.delivered()
            .iter()
            .filter(|r| r.path == "/slack/response/command" && r.text().contains(&headline))
            .count()
            == 2
    })
    .await;
    assert!(
        finished_twice,
        "each attempt's end is told: {:#?}",
        fake.requests()
    );
    assert_eq!(listed_jobs(&app).await.len(), 1, "a retry is no new job");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_button_click_by_someone_neither_requester_nor_admin_is_refused_and_changes_nothing() {
    let fake = FakeApi::start().await;
    let gate = Gate::new();
    let (app, id) = running_slack_job(&fake, &gate).await;
    for action in ["cancel", "retry"] {
        click(&app, &fake, action, &id, OTHER, action).await;
        let refusal = fake
            .wait_for("the refusal", LIMIT, |r| {
                r.path == format!("/slack/response/{action}")
            })
            .await;
        let text = refusal.text();
        assert!(
            text.contains(&format!(
                "Only the job's requester or an admin (sources.slack.admins) may {action} `{id}`."
            )),
            "{text}"
        );
    }
    let job = app.job(&id).await;
    assert_eq!(
        (job.state, job.attempt),
        (JobState::Running, 1),
        "the refused clicks changed nothing"
    );
    click(&app, &fake, "cancel", &id, ADMIN, "admin").await;
    app.wait_for_state(&id, JobState::Cancelled, LIMIT).await;
    let answer = fake
        .wait_for("the answer to the admin", LIMIT, |r| {
            r.path == "/slack/response/admin"
        })
        .await;
    assert!(
        answer.text().contains(&format!("Cancelled `{id}`.")),
        "{answer:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_slack_fix_for_a_ticket_whose_job_runs_answers_already_running() {
    let fake = FakeApi::start().await;
    let gate = Gate::new();
    let app = gated_app(&fake, &gate).await;
    let first = slash_command("fix PAY-12", REQUESTER, "t.1", &response_url(&fake, "1"));
    let (status, answer) = send(to_slack(&app, "commands", &first, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{answer}");
    let id = only_job_id(&app).await;
    app.wait_for_state(&id, JobState::Running, LIMIT).await;
    let second = slash_command("fix PAY-12", OTHER, "t.2", &response_url(&fake, "2"));
    let (status, answer) = send(to_slack(&app, "commands", &second, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["response_type"], "ephemeral");
    let text = answer["text"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("PAY-12 is already running as {id}")),
        "{answer}"
    );
    assert_eq!(listed_jobs(&app).await.len(), 1);
    gate.open();
    app.wait_for_end(&id, LIMIT).await;
    // Once the job has ended, the ticket may have another.
    let third = slash_command("fix PAY-12", OTHER, "t.3", &response_url(&fake, "3"));
    let (status, answer) = send(to_slack(&app, "commands", &third, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{answer}");
    let jobs = listed_jobs(&app).await;
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
    let next = jobs
        .iter()
        .filter_map(|j| j["id"].as_str())
        .find(|j| *j != id)
        .unwrap()
        .to_string();
    let text = answer["text"].as_str().unwrap_or_default();
    assert!(text.contains(&format!("Queued as {next}")), "{answer}");
    app.wait_for_end(&next, LIMIT).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_url_verification_echoes_the_challenge_only_when_signed() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let check = json!({
        "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification"
    })
    .to_string();
    let (status, body) = send(to_slack(&app, "events", &check, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    let (status, _) = send(to_slack(&app, "events", &check, Sign::Missing, unix_now())).await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_mention_queues_a_job_and_replies_in_its_thread_with_chat_post_message() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let ts = "1700000000.000100";
    let event = mention("Ev0A1B2C3", "<@UBOT> fix PAY-12", ts).to_string();
    let (status, body) = send(to_slack(&app, "events", &event, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{body}");
    let id = only_job_id(&app).await;
    let job = app.job(&id).await;
    assert_eq!(job.ticket.as_deref(), Some("PAY-12"));
    assert_eq!(
        job.origin,
        Some(Origin::Slack {
            channel: CHANNEL.into(),
            user: REQUESTER.into(),
            thread_ts: Some(ts.into())
        })
    );
    for headline in [format!("Queued as {id}"), format!("Finished {id}")] {
        let reply = fake
            .wait_for(&headline, LIMIT, |r| r.text().contains(&headline))
            .await;
        assert_eq!(reply.path, "/chat.postMessage");
        assert!(
            has_header(
                &reply,
                "authorization",
                &format!("Bearer {SLACK_BOT_TOKEN}")
            ),
            "chat.postMessage is called with the bot token"
        );
        assert_eq!(reply.body["channel"], CHANNEL);
        assert_eq!(reply.body["thread_ts"], ts, "the reply is in the thread");
    }
    let finished = fake
        .wait_for("the Finished reply", LIMIT, |r| {
            r.text().contains(&format!("Finished {id}"))
        })
        .await;
    assert!(finished.text().contains("\ndone"), "{finished:?}");
    assert_eq!(app.job(&id).await.state, JobState::Succeeded);
    app.stop().await;
}
