//! What every source shares: a delivery wrongly signed or unsigned is 401, one to a disabled
//! source 404, a malformed one 400, an oversized one 413, all queueing nothing; events that
//! are not triggers are 200 and ignored; a redelivery makes no second job; and while Redis
//! is down every source answers 503, so the sender retries.

use serde_json::{json, Value};
use testkit::redis::RedisServer;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_with_a_wrong_or_missing_signature_are_401_and_queue_nothing() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let now = unix_now();
    let command = slash_command("fix PAY-12", REQUESTER, "t.1", &response_url(&fake, "1"));
    let event = mention("Ev01", "<@UBOT> fix PAY-12", "1700000000.000100").to_string();
    let click = button("cancel", "abc123", REQUESTER, &response_url(&fake, "2"));
    let issue = github_labeled("acme/shop", 7, "agent").to_string();
    let note = gitlab_note(4, "/agent fix", "Issue").to_string();
    let update = jira_labelled("PAY-12").to_string();
    for sign in [Sign::Wrong, Sign::Missing] {
        let deliveries = [
            (
                "X-Slack-Signature",
                to_slack(&app, "commands", &command, sign, now),
            ),
            (
                "X-Slack-Signature",
                to_slack(&app, "events", &event, sign, now),
            ),
            (
                "X-Slack-Signature",
                to_slack(&app, "interactions", &click, sign, now),
            ),
            (
                "X-Hub-Signature-256",
                to_github(&app, sign, "issues", "d-1", issue.as_bytes()),
            ),
            (
                "X-Gitlab-Token",
                to_gitlab(&app, sign, "Note Hook", "k-1", note.as_bytes()),
            ),
            (
                "X-Hub-Signature",
                to_jira(&app, sign, "j-1", update.as_bytes()),
            ),
        ];
        for (header, request) in deliveries {
            let (status, body) = send(request).await;
            assert_eq!(status, 401, "{header} {sign:?}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(header), "{sign:?}: {message}");
        }
    }
    assert!(listed_jobs(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_source_is_404_even_with_its_secret_configured_and_a_valid_signature() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |s| {
        s.sources.slack.enabled = false;
        s.sources.github.enabled = false;
        s.sources.gitlab.enabled = false;
        s.sources.jira.enabled = false;
    })
    .await;
    let now = unix_now();
    let command = slash_command("fix PAY-12", REQUESTER, "t.1", &response_url(&fake, "1"));
    let event = mention("Ev01", "<@UBOT> fix PAY-12", "1700000000.000100").to_string();
    let click = button("cancel", "abc123", REQUESTER, &response_url(&fake, "2"));
    let issue = github_labeled("acme/shop", 7, "agent").to_string();
    let note = gitlab_note(4, "/agent fix", "Issue").to_string();
    let update = jira_labelled("PAY-12").to_string();
    let deliveries = [
        (
            "slack",
            to_slack(&app, "commands", &command, Sign::Right, now),
        ),
        ("slack", to_slack(&app, "events", &event, Sign::Right, now)),
        (
            "slack",
            to_slack(&app, "interactions", &click, Sign::Right, now),
        ),
        (
            "github",
            to_github(&app, Sign::Right, "issues", "d-1", issue.as_bytes()),
        ),
        (
            "gitlab",
            to_gitlab(&app, Sign::Right, "Note Hook", "k-1", note.as_bytes()),
        ),
        ("jira", to_jira(&app, Sign::Right, "j-1", update.as_bytes())),
    ];
    for (source, request) in deliveries {
        let (status, body) = send(request).await;
        assert_eq!(status, 404, "{source}: {body}");
        assert_eq!(body["error"]["code"], "source_disabled");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("sources.{source}.enabled")),
            "{message}"
        );
    }
    assert!(listed_jobs(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_delivery_is_400_naming_the_problem_and_queues_nothing() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let now = unix_now();
    let no_number = json!({"action": "labeled", "label": {"name": "agent"},
        "repository": {"full_name": "acme/shop"}, "sender": {"login": "ann"}})
    .to_string();
    let no_key = json!({"webhookEvent": "comment_created",
        "comment": {"body": "/agent fix"}})
    .to_string();
    let no_user = form_urlencoded::Serializer::new(String::new())
        .append_pair("command", "/agent")
        .append_pair("text", "fix PAY-12")
        .append_pair("channel_id", CHANNEL)
        .finish();
    let deliveries = [
        (
            "not JSON",
            to_github(&app, Sign::Right, "issues", "d-1", b"{\"action\": "),
        ),
        (
            "/issue/number",
            to_github(&app, Sign::Right, "issues", "d-2", no_number.as_bytes()),
        ),
        (
            "X-GitHub-Event",
            app.http
                .post(format!("{}/webhooks/github", app.address))
                .header("x-github-delivery", "d-3")
                .header(
                    "x-hub-signature-256",
                    testkit::sign::hub(GITHUB_SECRET, no_number.as_bytes()),
                )
                .body(no_number.clone()),
        ),
        (
            "not a JSON object",
            to_gitlab(&app, Sign::Right, "Note Hook", "k-1", b"[]"),
        ),
        (
            "/issue/key",
            to_jira(&app, Sign::Right, "j-1", no_key.as_bytes()),
        ),
        (
            "user_id",
            to_slack(&app, "commands", &no_user, Sign::Right, now),
        ),
        ("/type", to_slack(&app, "events", "{}", Sign::Right, now)),
        (
            "payload",
            to_slack(&app, "interactions", "action=cancel", Sign::Right, now),
        ),
    ];
    for (named, request) in deliveries {
        let (status, body) = send(request).await;
        assert_eq!(status, 400, "{named}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{named}: {message}");
    }
    assert!(listed_jobs(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_larger_than_the_body_limit_is_413_and_queues_nothing() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |s| s.server.body_limit_bytes = 4096).await;
    let long = "Steps to reproduce. ".repeat(400);
    let mut issue = github_labeled("acme/shop", 7, "agent");
    issue["issue"]["body"] = json!(long);
    let issue = issue.to_string();
    let mut note = gitlab_note(4, "/agent fix", "Issue");
    note["issue"]["description"] = json!(long);
    let note = note.to_string();
    let mut update = jira_labelled("PAY-12");
    update["issue"]["fields"]["description"] = json!(long);
    let update = update.to_string();
    let command = slash_command(
        &format!("run payments {long}"),
        REQUESTER,
        "t.1",
        &response_url(&fake, "1"),
    );
    let deliveries = to_every_source(&app, &issue, &note, &update, &command);
    for (source, request) in deliveries {
        let (status, _) = send(request).await;
        assert_eq!(status, 413, "{source}");
    }
    assert!(listed_jobs(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_are_not_triggers_are_200_and_queue_nothing() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let deliveries: Vec<_> = github_non_triggers(&app)
        .into_iter()
        .chain(gitlab_non_triggers(&app))
        .chain(jira_non_triggers(&app))
        .chain(slack_non_triggers(&app, unix_now()))
        .collect();
    assert_eq!(deliveries.len(), 12, "every kind of non-trigger is sent");
    for (what, request) in deliveries {
        let (status, body) = send(request).await;
        assert_eq!(status, 200, "{what}: {body}");
        assert_eq!(body["status"], "ignored", "{what}: {body}");
        assert!(
            body["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{what}: {body}"
        );
    }
    let ping = json!({"zen": "Keep it logically awesome.", "hook_id": 292430182,
        "hook": {"type": "Repository", "events": ["issues", "issue_comment"]},
        "repository": {"full_name": "acme/shop"}});
    let (status, body) = send(to_github(&app, Sign::Right, "ping", "d-7", &bytes(&ping))).await;
    assert_eq!((status, &body["status"]), (200, &json!("pong")), "{body}");
    assert!(listed_jobs(&app).await.is_empty());
    app.stop().await;
}

fn bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// Signed GitHub deliveries that trigger nothing, each named.
fn github_non_triggers(app: &TestApp) -> Vec<(&'static str, RequestBuilder)> {
    let mut closed = github_labeled("acme/shop", 7, "agent");
    closed["action"] = json!("closed");
    let bot_comment = json!({
        "action": "created",
        "issue": {"number": 7, "title": "Checkout fails"},
        "comment": {"body": "/agent fix", "user": {"login": "agentsmith[bot]"}},
        "repository": {"full_name": "acme/shop"},
        "sender": {"login": "agentsmith[bot]", "type": "Bot"}
    });
    let chatter = json!({
        "action": "created",
        "issue": {"number": 7, "title": "Checkout fails"},
        "comment": {"body": "Looks like the agent should fix this.", "user": {"login": "bob"}},
        "repository": {"full_name": "acme/shop"},
        "sender": {"login": "bob", "type": "User"}
    });
    let labelled = |repo, label| bytes(&github_labeled(repo, 7, label));
    let delivery = |event, id, body: &[u8]| to_github(app, Sign::Right, event, id, body);
    vec![
        (
            "a GitHub issue closed",
            delivery("issues", "d-1", &bytes(&closed)),
        ),
        (
            "a GitHub issue labelled bug",
            delivery("issues", "d-2", &labelled("acme/shop", "bug")),
        ),
        (
            "an issue of a repository no project lists",
            delivery("issues", "d-3", &labelled("acme/other", "agent")),
        ),
        (
            "a push",
            delivery("push", "d-4", b"{\"ref\": \"refs/heads/main\"}"),
        ),
        (
            "a bot's comment",
            delivery("issue_comment", "d-5", &bytes(&bot_comment)),
        ),
        (
            "a comment without the command",
            delivery("issue_comment", "d-6", &bytes(&chatter)),
        ),
    ]
}

/// Signed GitLab deliveries that trigger nothing, each named.
fn gitlab_non_triggers(app: &TestApp) -> Vec<(&'static str, RequestBuilder)> {
    let label_removed = json!({
        "object_kind": "issue",
        "user": {"username": "ann"},
        "project": {"path_with_namespace": "acme/shop"},
        "object_attributes": {"iid": 4, "title": "Cart is empty", "action": "update"},
        "changes": {"labels": {"previous": [{"title": "agent"}], "current": []}}
    });
    let merge_request_note = gitlab_note(4, "/agent fix", "MergeRequest");
    vec![
        (
            "a GitLab label removed",
            to_gitlab(
                app,
                Sign::Right,
                "Issue Hook",
                "k-1",
                &bytes(&label_removed),
            ),
        ),
        (
            "a GitLab note on a merge request",
            to_gitlab(
                app,
                Sign::Right,
                "Note Hook",
                "k-2",
                &bytes(&merge_request_note),
            ),
        ),
    ]
}

/// Signed Jira deliveries that trigger nothing, each named.
fn jira_non_triggers(app: &TestApp) -> Vec<(&'static str, RequestBuilder)> {
    let assignee = jira_updated(
        "PAY-12",
        json!([{"field": "assignee", "fieldtype": "jira", "from": null, "fromString": null,
                "to": "5b10ac8d82e05b22cc7d4ef5", "toString": "Ann"}]),
    );
    let deleted = br#"{"webhookEvent": "jira:issue_deleted", "issue": {"key": "PAY-12"}}"#;
    vec![
        (
            "a Jira assignee change",
            to_jira(app, Sign::Right, "j-1", &bytes(&assignee)),
        ),
        (
            "a Jira issue deleted",
            to_jira(app, Sign::Right, "j-2", deleted),
        ),
    ]
}

/// Signed Slack requests, stamped `now`, that trigger nothing, each named.
fn slack_non_triggers(app: &TestApp, now: i64) -> Vec<(&'static str, RequestBuilder)> {
    let channel_message = json!({"type": "event_callback", "event_id": "Ev02",
        "event": {"type": "message", "user": REQUESTER, "text": "fix PAY-12",
                  "ts": "1700000000.000100", "channel": CHANNEL}})
    .to_string();
    let view = form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "payload",
            r#"{"type":"view_submission","user":{"id":"U0ANN"}}"#,
        )
        .finish();
    vec![
        (
            "a Slack channel message",
            to_slack(app, "events", &channel_message, Sign::Right, now),
        ),
        (
            "a Slack modal submission",
            to_slack(app, "interactions", &view, Sign::Right, now),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_ticket_webhook_is_200_and_makes_no_second_job() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let issue = github_labeled("acme/shop", 7, "agent").to_string();
    let note = gitlab_note(4, "/agent fix", "Issue").to_string();
    let update = jira_labelled("PAY-12").to_string();
    for source in ["github", "gitlab", "jira"] {
        let delivery = || match source {
            "github" => to_github(&app, Sign::Right, "issues", "d-1", issue.as_bytes()),
            "gitlab" => to_gitlab(&app, Sign::Right, "Note Hook", "k-1", note.as_bytes()),
            _ => to_jira(&app, Sign::Right, "j-1", update.as_bytes()),
        };
        let (status, first) = send(delivery()).await;
        assert_eq!(status, 202, "{source}: {first}");
        assert_eq!(first["status"], "queued");
        let (status, again) = send(delivery()).await;
        assert_eq!(status, 200, "{source}: {again}");
        assert_eq!(again["status"], "duplicate", "{source}: {again}");
        assert_eq!(again["job_id"], first["job_id"], "{source}");
    }
    let jobs = listed_jobs(&app).await;
    assert_eq!(jobs.len(), 3, "one job per source: {jobs:#?}");
    for job in &jobs {
        app.wait_for_end(job["id"].as_str().unwrap(), LIMIT).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_while_redis_is_down_is_503_so_the_sender_retries() {
    let fake = FakeApi::start().await;
    // A redis-server of this test's own, so stopping it disturbs no other test.
    let mut redis = RedisServer::new().started();
    let url = redis.url();
    let app = webhook_app(&fake, |s| {
        s.redis.url = SecretString::from(url);
        s.redis.timeout_secs = 1;
    })
    .await;
    redis.kill();
    let issue = github_labeled("acme/shop", 7, "agent").to_string();
    let note = gitlab_note(4, "/agent fix", "Issue").to_string();
    let update = jira_labelled("PAY-12").to_string();
    let command = slash_command("fix PAY-12", REQUESTER, "t.1", &response_url(&fake, "1"));
    let deliveries = to_every_source(&app, &issue, &note, &update, &command);
    for (source, request) in deliveries {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 503, "{source}");
        assert!(response.headers().contains_key("retry-after"), "{source}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unavailable", "{source}: {body}");
    }
    app.stop().await;
}
