//! The webhook sources end to end: requests signed and shaped as Slack, GitHub, GitLab and
//! Jira send them, jobs run by the process spawner, and the replies arriving at a fake of
//! each provider's API ([`FakeApi`]) at the right path with the right credentials.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentsmith::settings::{AgentSettings, ProjectSettings, Settings};
use agentsmith::webhooks::signature::{hub_signature, slack_signature};
use queue::{JobState, Origin};
use reqwest::RequestBuilder;
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::helpers::*;
use testkit::fake_api::{FakeApi, Recorded};

const LIMIT: Duration = Duration::from_secs(60);

const SLACK_SECRET: &str = "slack-signing-secret-for-tests";
const GITHUB_SECRET: &str = "github-webhook-secret-for-tests";
const GITLAB_SECRET: &str = "gitlab-webhook-token-for-tests";
const JIRA_SECRET: &str = "jira-webhook-secret-for-tests";
const SLACK_BOT_TOKEN: &str = "xoxb-test-bot-token";
const GITHUB_TOKEN: &str = "ghp-test-token";
const GITLAB_TOKEN: &str = "glpat-test-token";
const JIRA_EMAIL: &str = "agentsmith@example.invalid";
const JIRA_API_TOKEN: &str = "jira-test-api-token";
/// `Basic` and the base64 of `JIRA_EMAIL:JIRA_API_TOKEN`.
const JIRA_BASIC: &str = "Basic YWdlbnRzbWl0aEBleGFtcGxlLmludmFsaWQ6amlyYS10ZXN0LWFwaS10b2tlbg==";

/// The Slack channel commands come from (no project lists it).
const CHANNEL: &str = "C0PAYMENTS";
/// Who asks in Slack.
const REQUESTER: &str = "U0ANN";
/// Someone else, neither the requester nor an admin.
const OTHER: &str = "U0BOB";
/// A Slack admin (`sources.slack.admins`).
const ADMIN: &str = "U0ADMIN";

/// What the agents leave as their result.
const RESULT: &str = r#"printf '{"summary":"done","links":[{"title":"PR","url":"https://example.invalid/pr/1"}]}' > "$AGENTSMITH_RESULT_FILE""#;

/// Every source enabled with its secret and pointed at `fake`; one project, `payments`, that
/// Jira's `PAY`, GitHub's and GitLab's `acme/shop` belong to, run by an agent that leaves a
/// summary and a link; replies retried after 50 ms.
fn configure(s: &mut Settings, fake: &FakeApi) {
    let sources = &mut s.sources;
    sources.slack.enabled = true;
    sources.slack.signing_secret = SecretString::from(SLACK_SECRET);
    sources.slack.bot_token = SecretString::from(SLACK_BOT_TOKEN);
    sources.slack.api_base_url = fake.url.clone();
    sources.slack.admins = vec![ADMIN.into()];
    sources.github.enabled = true;
    sources.github.webhook_secret = SecretString::from(GITHUB_SECRET);
    sources.github.token = SecretString::from(GITHUB_TOKEN);
    sources.github.api_base_url = fake.url.clone();
    sources.gitlab.enabled = true;
    sources.gitlab.webhook_token = SecretString::from(GITLAB_SECRET);
    sources.gitlab.token = SecretString::from(GITLAB_TOKEN);
    sources.gitlab.api_base_url = fake.url.clone();
    sources.jira.enabled = true;
    sources.jira.webhook_secret = SecretString::from(JIRA_SECRET);
    sources.jira.base_url = fake.url.clone();
    sources.jira.email = JIRA_EMAIL.into();
    sources.jira.api_token = SecretString::from(JIRA_API_TOKEN);
    sources.replies.backoff_base_ms = 50;
    sources.replies.backoff_max_secs = 1;
    s.agents.insert("done".into(), sh_agent(RESULT));
    s.projects.insert(
        "payments".into(),
        ProjectSettings {
            agent: "done".into(),
            jira_projects: vec!["PAY".into()],
            github_repos: vec!["acme/shop".into()],
            gitlab_projects: vec!["acme/shop".into()],
            ..Default::default()
        },
    );
}

/// A dispatcher with [`configure`]'s settings, changed by `customize` and then validated as
/// a configuration file would be.
async fn webhook_app(fake: &FakeApi, customize: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app(|s| {
        configure(s, fake);
        customize(s);
        let problems = s.validate();
        assert!(
            problems.is_empty(),
            "the test settings are valid: {problems:?}"
        );
    })
    .await
}

/// A file whose creation lets the gated agent finish.
struct Gate {
    dir: PathBuf,
}

impl Gate {
    fn new() -> Self {
        Self {
            dir: temp_dir("gate"),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("open")
    }

    fn open(&self) {
        std::fs::write(self.path(), b"").unwrap();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An agent that works until `gate` exists, then leaves the result (it gives up waiting
/// after a minute, so a failed test leaves nothing behind).
fn gated_agent(gate: &Path) -> AgentSettings {
    let mut agent = sh_agent(&format!(
        "i=0; while [ ! -e \"$GATE\" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; {RESULT}"
    ));
    agent.env.insert("GATE".into(), gate.display().to_string());
    agent
}

/// A dispatcher whose project runs the gated agent.
async fn gated_app(fake: &FakeApi, gate: &Gate) -> TestApp {
    let path = gate.path();
    webhook_app(fake, |s| {
        s.agents.insert("gated".into(), gated_agent(&path));
        s.projects.get_mut("payments").unwrap().agent = "gated".into();
    })
    .await
}

/// How a test signs a delivery.
#[derive(Debug, Clone, Copy)]
enum Sign {
    /// With the configured secret.
    Right,
    /// With another secret.
    Wrong,
    /// Not at all (no signature header).
    Missing,
}

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
    let (status, answer) = send(slack(&app, "commands", &command, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{answer}");
    let id = only_job_id(&app).await;
    app.wait_for_state(&id, JobState::Running, LIMIT).await;
    (app, id)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A Slack request to `/webhooks/slack/{route}`, timestamped `at`.
fn slack(app: &TestApp, route: &str, body: &str, sign: Sign, at: i64) -> RequestBuilder {
    let content_type = if route == "events" {
        "application/json"
    } else {
        "application/x-www-form-urlencoded"
    };
    let request = app
        .http
        .post(format!("{}/webhooks/slack/{route}", app.address))
        .header("content-type", content_type)
        .header("user-agent", "Slackbot 1.0 (+https://api.slack.com/robots)")
        .header("x-slack-request-timestamp", at.to_string())
        .body(body.to_string());
    match sign {
        Sign::Right => request.header(
            "x-slack-signature",
            slack_signature(SLACK_SECRET, at, body.as_bytes()),
        ),
        Sign::Wrong => request.header(
            "x-slack-signature",
            slack_signature("another-signing-secret", at, body.as_bytes()),
        ),
        Sign::Missing => request,
    }
}

/// A GitHub delivery of `event` with the delivery id `delivery`.
fn github(app: &TestApp, sign: Sign, event: &str, delivery: &str, body: &[u8]) -> RequestBuilder {
    let request = app
        .http
        .post(format!("{}/webhooks/github", app.address))
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/044aadd")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-github-hook-id", "292430182")
        .body(body.to_vec());
    match sign {
        Sign::Right => request.header("x-hub-signature-256", hub_signature(GITHUB_SECRET, body)),
        Sign::Wrong => request.header(
            "x-hub-signature-256",
            hub_signature("another-webhook-secret", body),
        ),
        Sign::Missing => request,
    }
}

/// A GitLab delivery of `event` (`Note Hook`) whose retries share `idempotency_key`; its
/// event UUID differs on every delivery, as GitLab's does.
fn gitlab(
    app: &TestApp,
    sign: Sign,
    event: &str,
    idempotency_key: &str,
    body: &[u8],
) -> RequestBuilder {
    let request = app
        .http
        .post(format!("{}/webhooks/gitlab", app.address))
        .header("content-type", "application/json")
        .header("user-agent", "GitLab/17.0.0")
        .header("x-gitlab-event", event)
        .header("x-gitlab-instance", "https://gitlab.example")
        .header(
            "x-gitlab-event-uuid",
            format!("{:032x}", rand::random::<u128>()),
        )
        .header("idempotency-key", idempotency_key)
        .body(body.to_vec());
    match sign {
        Sign::Right => request.header("x-gitlab-token", GITLAB_SECRET),
        Sign::Wrong => request.header("x-gitlab-token", "another-webhook-token"),
        Sign::Missing => request,
    }
}

/// A Jira Cloud delivery with the webhook identifier `identifier`.
fn jira(app: &TestApp, sign: Sign, identifier: &str, body: &[u8]) -> RequestBuilder {
    let request = app
        .http
        .post(format!("{}/webhooks/jira", app.address))
        .header("content-type", "application/json; charset=utf-8")
        .header("user-agent", "Atlassian Webhook HTTP Client")
        .header("x-atlassian-webhook-identifier", identifier)
        .body(body.to_vec());
    match sign {
        Sign::Right => request.header("x-hub-signature", hub_signature(JIRA_SECRET, body)),
        Sign::Wrong => request.header(
            "x-hub-signature",
            hub_signature("another-webhook-secret", body),
        ),
        Sign::Missing => request,
    }
}

/// A signed delivery to each ticket source and a slash command, named by source.
fn to_every_source(
    app: &TestApp,
    issue: &str,
    note: &str,
    update: &str,
    command: &str,
) -> [(&'static str, RequestBuilder); 4] {
    [
        (
            "github",
            github(app, Sign::Right, "issues", "d-1", issue.as_bytes()),
        ),
        (
            "gitlab",
            gitlab(app, Sign::Right, "Note Hook", "k-1", note.as_bytes()),
        ),
        ("jira", jira(app, Sign::Right, "j-1", update.as_bytes())),
        (
            "slack",
            slack(app, "commands", command, Sign::Right, unix_now()),
        ),
    ]
}

/// Sends a request; its status and JSON body (`Null` if it has none).
async fn send(request: RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("the dispatcher answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A slash command as Slack posts it (form-encoded), typed by `user`.
fn slash_command(text: &str, user: &str, trigger_id: &str, response_url: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("token", "gIkuvaNzQIHg97ATvDxqgjtO")
        .append_pair("team_id", "T0001")
        .append_pair("team_domain", "acme")
        .append_pair("channel_id", CHANNEL)
        .append_pair("channel_name", "payments")
        .append_pair("user_id", user)
        .append_pair("user_name", &user.to_lowercase())
        .append_pair("command", "/agent")
        .append_pair("text", text)
        .append_pair("api_app_id", "A0001")
        .append_pair("is_enterprise_install", "false")
        .append_pair("response_url", response_url)
        .append_pair("trigger_id", trigger_id)
        .finish()
}

/// An Events API `app_mention` by the requester, at `ts` in the channel.
fn mention(event_id: &str, text: &str, ts: &str) -> Value {
    json!({
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "team_id": "T0001",
        "api_app_id": "A0001",
        "event": {
            "type": "app_mention",
            "user": REQUESTER,
            "text": text,
            "ts": ts,
            "channel": CHANNEL,
            "event_ts": ts
        },
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1_700_000_000,
        "authorizations": [{"team_id": "T0001", "user_id": "UBOT", "is_bot": true}]
    })
}

/// A `block_actions` interaction: `user` clicked the `action` button of `job_id`.
fn button(action: &str, job_id: &str, user: &str, response_url: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase(), "team_id": "T0001"},
        "api_app_id": "A0001",
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "container": {"type": "message", "message_ts": "1700000000.000300",
                      "channel_id": CHANNEL, "is_ephemeral": true},
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "team": {"id": "T0001", "domain": "acme"},
        "channel": {"id": CHANNEL, "name": "payments"},
        "response_url": response_url,
        "actions": [{
            "action_id": action,
            "block_id": "job",
            "text": {"type": "plain_text", "text": action},
            "value": job_id,
            "type": "button",
            "action_ts": "1700000000.000400"
        }]
    });
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
}

/// GitHub's `issues` event: issue `number` of `repo` got `label`.
fn github_labeled(repo: &str, number: u64, label: &str) -> Value {
    json!({
        "action": "labeled",
        "issue": {
            "number": number,
            "title": "Checkout fails for EUR carts",
            "body": "Steps to reproduce: add a EUR item, check out.",
            "html_url": format!("https://github.com/{repo}/issues/{number}"),
            "state": "open",
            "user": {"login": "ann", "type": "User"},
            "labels": [{"name": "bug"}, {"name": label}]
        },
        "label": {"name": label, "color": "ededed"},
        "repository": {"id": 1296269, "name": "shop", "full_name": repo, "private": true},
        "sender": {"login": "ann", "type": "User"}
    })
}

/// GitLab's Note Hook: a comment on issue `iid` of `acme/shop`.
fn gitlab_note(iid: u64, note: &str, noteable_type: &str) -> Value {
    json!({
        "object_kind": "note",
        "event_type": "note",
        "user": {"id": 1, "name": "Ann", "username": "ann"},
        "project_id": 5,
        "project": {"id": 5, "name": "shop", "path_with_namespace": "acme/shop",
                    "web_url": "https://gitlab.example/acme/shop"},
        "object_attributes": {
            "id": 1244,
            "note": note,
            "noteable_type": noteable_type,
            "author_id": 1,
            "url": format!("https://gitlab.example/acme/shop/-/issues/{iid}#note_1244")
        },
        "issue": {"id": 92, "iid": iid, "title": "Cart is empty after login",
                  "description": "Log in with items in the cart.", "state": "opened"}
    })
}

/// Jira's `jira:issue_updated` with these changelog items.
fn jira_updated(key: &str, items: Value) -> Value {
    json!({
        "timestamp": 1_700_000_000_000_i64,
        "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": "issue_updated",
        "user": {"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "Ann"},
        "issue": {
            "id": "10012",
            "key": key,
            "fields": {
                "summary": "Refunds fail for partial captures",
                "description": "Since Monday's deploy.",
                "project": {"key": key.split('-').next().unwrap_or_default()},
                "labels": ["bug", "agent"],
                "status": {"name": "To Do"}
            }
        },
        "changelog": {"id": "10400", "items": items}
    })
}

/// Jira: `key` got the `agent` label.
fn jira_labelled(key: &str) -> Value {
    jira_updated(
        key,
        json!([{"field": "labels", "fieldtype": "jira", "from": null, "fromString": "bug",
                "to": null, "toString": "bug agent"}]),
    )
}

/// A `response_url` on the fake.
fn response_url(fake: &FakeApi, name: &str) -> String {
    format!("{}/slack/response/{name}", fake.url)
}

/// The jobs, as `GET /v1/jobs` lists them.
async fn listed_jobs(app: &TestApp) -> Vec<Value> {
    let response = app
        .http
        .get(format!("{}/v1/jobs", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["jobs"].as_array().cloned().unwrap_or_default()
}

/// The id of the one job there is.
async fn only_job_id(app: &TestApp) -> String {
    let jobs = listed_jobs(app).await;
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    jobs[0]["id"].as_str().unwrap().to_string()
}

/// Waits until every reply has left the outbox (sent or given up).
async fn wait_for_outbox_drained(app: &TestApp) {
    let drained = wait_until(LIMIT, || async {
        app.ctx.queue.replies_pending().await.unwrap() == (0, 0)
    })
    .await;
    assert!(drained, "the outbox drains");
}

/// Whether a request carried exactly this header (compared, never printed).
fn has_header(request: &Recorded, name: &str, expected: &str) -> bool {
    request.header(name) == Some(expected)
}

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
                slack(&app, "commands", &command, sign, now),
            ),
            (
                "X-Slack-Signature",
                slack(&app, "events", &event, sign, now),
            ),
            (
                "X-Slack-Signature",
                slack(&app, "interactions", &click, sign, now),
            ),
            (
                "X-Hub-Signature-256",
                github(&app, sign, "issues", "d-1", issue.as_bytes()),
            ),
            (
                "X-Gitlab-Token",
                gitlab(&app, sign, "Note Hook", "k-1", note.as_bytes()),
            ),
            (
                "X-Hub-Signature",
                jira(&app, sign, "j-1", update.as_bytes()),
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
async fn slack_requests_signed_more_than_five_minutes_from_now_are_401_and_queue_nothing() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let command = slash_command("fix PAY-12", REQUESTER, "t.1", &response_url(&fake, "1"));
    // Correctly signed, but six minutes ago (a replay) or six minutes ahead.
    for at in [unix_now() - 360, unix_now() + 360] {
        let (status, body) = send(slack(&app, "commands", &command, Sign::Right, at)).await;
        assert_eq!(status, 401, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("X-Slack-Request-Timestamp"), "{message}");
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
        ("slack", slack(&app, "commands", &command, Sign::Right, now)),
        ("slack", slack(&app, "events", &event, Sign::Right, now)),
        (
            "slack",
            slack(&app, "interactions", &click, Sign::Right, now),
        ),
        (
            "github",
            github(&app, Sign::Right, "issues", "d-1", issue.as_bytes()),
        ),
        (
            "gitlab",
            gitlab(&app, Sign::Right, "Note Hook", "k-1", note.as_bytes()),
        ),
        ("jira", jira(&app, Sign::Right, "j-1", update.as_bytes())),
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
            github(&app, Sign::Right, "issues", "d-1", b"{\"action\": "),
        ),
        (
            "/issue/number",
            github(&app, Sign::Right, "issues", "d-2", no_number.as_bytes()),
        ),
        (
            "X-GitHub-Event",
            app.http
                .post(format!("{}/webhooks/github", app.address))
                .header("x-github-delivery", "d-3")
                .header(
                    "x-hub-signature-256",
                    hub_signature(GITHUB_SECRET, no_number.as_bytes()),
                )
                .body(no_number.clone()),
        ),
        (
            "not a JSON object",
            gitlab(&app, Sign::Right, "Note Hook", "k-1", b"[]"),
        ),
        (
            "/issue/key",
            jira(&app, Sign::Right, "j-1", no_key.as_bytes()),
        ),
        (
            "user_id",
            slack(&app, "commands", &no_user, Sign::Right, now),
        ),
        ("/type", slack(&app, "events", "{}", Sign::Right, now)),
        (
            "payload",
            slack(&app, "interactions", "action=cancel", Sign::Right, now),
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
    let now = unix_now();
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
    let label_removed = json!({
        "object_kind": "issue",
        "user": {"username": "ann"},
        "project": {"path_with_namespace": "acme/shop"},
        "object_attributes": {"iid": 4, "title": "Cart is empty", "action": "update"},
        "changes": {"labels": {"previous": [{"title": "agent"}], "current": []}}
    });
    let assignee = jira_updated(
        "PAY-12",
        json!([{"field": "assignee", "fieldtype": "jira", "from": null, "fromString": null,
                "to": "5b10ac8d82e05b22cc7d4ef5", "toString": "Ann"}]),
    );
    let channel_message = json!({"type": "event_callback", "event_id": "Ev02",
        "event": {"type": "message", "user": REQUESTER, "text": "fix PAY-12",
                  "ts": "1700000000.000100", "channel": CHANNEL}});
    let view = form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "payload",
            r#"{"type":"view_submission","user":{"id":"U0ANN"}}"#,
        )
        .finish();
    let bytes = |v: &Value| v.to_string().into_bytes();
    let deliveries = [
        (
            "a GitHub issue closed",
            github(&app, Sign::Right, "issues", "d-1", &bytes(&closed)),
        ),
        (
            "a GitHub issue labelled bug",
            github(
                &app,
                Sign::Right,
                "issues",
                "d-2",
                &bytes(&github_labeled("acme/shop", 7, "bug")),
            ),
        ),
        (
            "an issue of a repository no project lists",
            github(
                &app,
                Sign::Right,
                "issues",
                "d-3",
                &bytes(&github_labeled("acme/other", 7, "agent")),
            ),
        ),
        (
            "a push",
            github(
                &app,
                Sign::Right,
                "push",
                "d-4",
                b"{\"ref\": \"refs/heads/main\"}",
            ),
        ),
        (
            "a bot's comment",
            github(
                &app,
                Sign::Right,
                "issue_comment",
                "d-5",
                &bytes(&bot_comment),
            ),
        ),
        (
            "a comment without the command",
            github(&app, Sign::Right, "issue_comment", "d-6", &bytes(&chatter)),
        ),
        (
            "a GitLab label removed",
            gitlab(
                &app,
                Sign::Right,
                "Issue Hook",
                "k-1",
                &bytes(&label_removed),
            ),
        ),
        (
            "a GitLab note on a merge request",
            gitlab(
                &app,
                Sign::Right,
                "Note Hook",
                "k-2",
                &bytes(&gitlab_note(4, "/agent fix", "MergeRequest")),
            ),
        ),
        (
            "a Jira assignee change",
            jira(&app, Sign::Right, "j-1", &bytes(&assignee)),
        ),
        (
            "a Jira issue deleted",
            jira(
                &app,
                Sign::Right,
                "j-2",
                br#"{"webhookEvent": "jira:issue_deleted", "issue": {"key": "PAY-12"}}"#,
            ),
        ),
        (
            "a Slack channel message",
            slack(
                &app,
                "events",
                &channel_message.to_string(),
                Sign::Right,
                now,
            ),
        ),
        (
            "a Slack modal submission",
            slack(&app, "interactions", &view, Sign::Right, now),
        ),
    ];
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
    let (status, body) = send(github(&app, Sign::Right, "ping", "d-7", &bytes(&ping))).await;
    assert_eq!((status, &body["status"]), (200, &json!("pong")), "{body}");
    assert!(listed_jobs(&app).await.is_empty());
    app.stop().await;
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
            "github" => github(&app, Sign::Right, "issues", "d-1", issue.as_bytes()),
            "gitlab" => gitlab(&app, Sign::Right, "Note Hook", "k-1", note.as_bytes()),
            _ => jira(&app, Sign::Right, "j-1", update.as_bytes()),
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
async fn a_slack_event_retried_by_slack_and_a_repeated_command_make_one_job_each() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let event = mention("Ev0A1B2C3", "<@UBOT> fix PAY-12", "1700000000.000100").to_string();
    let (status, body) = send(slack(&app, "events", &event, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{body}");
    // Slack retries an event it thinks went unanswered, with the same event_id.
    let retried = slack(&app, "events", &event, Sign::Right, unix_now())
        .header("x-slack-retry-num", "1")
        .header("x-slack-retry-reason", "http_timeout");
    let (status, body) = send(retried).await;
    assert_eq!(status, 200, "{body}");
    let mentioned = only_job_id(&app).await;

    let command = slash_command("fix PAY-13", REQUESTER, "t.42", &response_url(&fake, "1"));
    let (status, first) = send(slack(&app, "commands", &command, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = send(slack(&app, "commands", &command, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{again}");
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
    let command = slash_command(
        "fix PAY-12",
        REQUESTER,
        "13345224609.738474920.8088930838d88f008e0",
        &response_url(&fake, "command-1"),
    );
    let (status, answer) = send(slack(&app, "commands", &command, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{answer}");
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
async fn a_github_issue_labelled_agent_runs_a_job_and_comments_the_result_with_the_token() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let issue = github_labeled("acme/shop", 7, "agent").to_string();
    let (status, answer) = send(github(
        &app,
        Sign::Right,
        "issues",
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        issue.as_bytes(),
    ))
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "queued");
    let id = answer["job_id"].as_str().unwrap().to_string();
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
async fn a_gitlab_agent_fix_note_runs_a_job_and_notes_the_result_with_the_private_token() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let note = gitlab_note(4, "/agent fix", "Issue").to_string();
    let (status, answer) = send(gitlab(
        &app,
        Sign::Right,
        "Note Hook",
        "a3b9c5d1-1f0e-4c6b-9e0c-2f1d7b5e8a90",
        note.as_bytes(),
    ))
    .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["job_id"].as_str().unwrap().to_string();
    let job = app.job(&id).await;
    assert_eq!(job.ticket.as_deref(), Some("acme/shop#4"));
    assert_eq!(job.requester.as_deref(), Some("ann"));
    assert_eq!(
        job.origin,
        Some(Origin::Gitlab {
            project: "acme/shop".into(),
            issue: 4
        })
    );
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let finished = fake
        .wait_for("the Finished note", LIMIT, |r| {
            r.text()
                .contains(&format!("Finished {id}: fix acme/shop#4"))
        })
        .await;
    assert_eq!(
        finished.path, "/projects/acme%2Fshop/issues/4/notes",
        "the project's path is url-encoded"
    );
    assert!(
        has_header(&finished, "private-token", GITLAB_TOKEN),
        "the note is posted with the PRIVATE-TOKEN"
    );
    let text = finished.text();
    assert!(text.contains("\n\ndone"), "{text}");
    assert!(
        text.contains("[PR](https://example.invalid/pr/1)"),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jira_issue_updated_with_the_label_runs_a_job_and_comments_with_basic_auth() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let update = jira_labelled("PAY-12").to_string();
    let (status, answer) = send(jira(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_the_provider_refuses_three_times_arrives_exactly_once_afterwards() {
    let fake = FakeApi::start().await;
    fake.fail_next(3, "Finished");
    let app = webhook_app(&fake, |_| {}).await;
    let issue = github_labeled("acme/shop", 7, "agent").to_string();
    let (status, answer) = send(github(&app, Sign::Right, "issues", "d-1", issue.as_bytes())).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["job_id"].as_str().unwrap().to_string();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requesters_cancel_button_cancels_the_running_job() {
    let fake = FakeApi::start().await;
    let gate = Gate::new();
    let (app, id) = running_slack_job(&fake, &gate).await;
    let click = button("cancel", &id, REQUESTER, &response_url(&fake, "click"));
    let (status, body) = send(slack(&app, "interactions", &click, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{body}");
    let job = app.wait_for_state(&id, JobState::Cancelled, LIMIT).await;
    assert!(
        job.reason.as_deref().is_some_and(|r| r.contains(REQUESTER)),
        "{job:#?}"
    );
    let answer = fake
        .wait_for("the answer to the click", LIMIT, |r| {
            r.path == "/slack/response/click"
        })
        .await;
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
    let command = slash_command(
        "fix PAY-12",
        REQUESTER,
        "t.1",
        &response_url(&fake, "command"),
    );
    let (status, answer) = send(slack(&app, "commands", &command, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{answer}");
    let id = only_job_id(&app).await;
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!((job.state, job.attempt), (JobState::Succeeded, 1));
    let click = button("retry", &id, REQUESTER, &response_url(&fake, "click"));
    let (status, body) = send(slack(&app, "interactions", &click, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{body}");
    let answer = fake
        .wait_for("the answer to the click", LIMIT, |r| {
            r.path == "/slack/response/click"
        })
        .await;
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
        let click = button(action, &id, OTHER, &response_url(&fake, action));
        let (status, body) =
            send(slack(&app, "interactions", &click, Sign::Right, unix_now())).await;
        assert_eq!(status, 200, "{body}");
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
    let click = button("cancel", &id, ADMIN, &response_url(&fake, "admin"));
    let (status, body) = send(slack(&app, "interactions", &click, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{body}");
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
    let (status, answer) = send(slack(&app, "commands", &first, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{answer}");
    let id = only_job_id(&app).await;
    app.wait_for_state(&id, JobState::Running, LIMIT).await;
    let second = slash_command("fix PAY-12", OTHER, "t.2", &response_url(&fake, "2"));
    let (status, answer) = send(slack(&app, "commands", &second, Sign::Right, unix_now())).await;
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
    let (status, answer) = send(slack(&app, "commands", &third, Sign::Right, unix_now())).await;
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
async fn a_second_github_trigger_for_an_issue_whose_job_runs_comments_already_running() {
    let fake = FakeApi::start().await;
    let gate = Gate::new();
    let app = gated_app(&fake, &gate).await;
    let issue = github_labeled("acme/shop", 7, "agent").to_string();
    let (status, first) = send(github(&app, Sign::Right, "issues", "d-1", issue.as_bytes())).await;
    assert_eq!(status, 202, "{first}");
    let id = first["job_id"].as_str().unwrap().to_string();
    app.wait_for_state(&id, JobState::Running, LIMIT).await;
    // The label removed and added again: a new delivery for the same issue.
    let (status, second) = send(github(&app, Sign::Right, "issues", "d-2", issue.as_bytes())).await;
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
async fn slack_url_verification_echoes_the_challenge_only_when_signed() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let check = json!({
        "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification"
    })
    .to_string();
    let (status, body) = send(slack(&app, "events", &check, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    let (status, _) = send(slack(&app, "events", &check, Sign::Missing, unix_now())).await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_mention_queues_a_job_and_replies_in_its_thread_with_chat_post_message() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let ts = "1700000000.000100";
    let event = mention("Ev0A1B2C3", "<@UBOT> fix PAY-12", ts).to_string();
    let (status, body) = send(slack(&app, "events", &event, Sign::Right, unix_now())).await;
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of this test's own, so stopping it disturbs no other test.
async fn start_redis(port: u16) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect(
            "redis-server is installed (scripts/test installs it: apt-get install redis-server)",
        );
    let up = wait_until(Duration::from_secs(5), || async {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    assert!(up, "redis-server did not start on port {port}");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_while_redis_is_down_is_503_so_the_sender_retries() {
    let fake = FakeApi::start().await;
    let port = free_port();
    let mut redis = start_redis(port).await;
    let app = webhook_app(&fake, |s| {
        s.redis.url = SecretString::from(format!("redis://127.0.0.1:{port}"));
        s.redis.timeout_secs = 1;
    })
    .await;
    redis.kill().unwrap();
    redis.wait().unwrap();
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
