//! The webhook sources end to end: requests signed and shaped as Slack, GitHub, GitLab and
//! Jira send them (signed by [`testkit::sign`], not by the code under test), jobs run by the
//! process spawner, and the replies arriving at a fake of each provider's API ([`FakeApi`])
//! at the right path with the right credentials.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the set-up: [`configure`], [`webhook_app`], the [`Gate`], the request builders (`to_slack`, `to_github`, `to_gitlab`, `to_jira`), the payloads |
//! | [`deliveries`] | what every source shares: 401, 404 when disabled, 400, 413, non-triggers, redelivery, 503 while Redis is down |
//! | [`slack`] | slash commands, mentions, buttons, url verification, timestamps |
//! | [`github`] | labelled issues, already-running comments, replies retried |
//! | [`gitlab`] | `/agent fix` notes |
//! | [`jira`] | issues labelled `agent` |
//! | [`access`] | who may trigger, per source: roles, access levels, accounts, groups, bots; the polite refusal |
//! | [`replay`] | captured deliveries and button clicks replayed: no second job, no second retry |
//! | [`reply_urls`] | `response_url` hosts allowed; provider URLs built from encoded segments |
//! | [`journal`] | the delivery journal: what is kept, its bounds, a restart, replays, its API and CLI |
//! | [`stages`] | a job from a signed delivery to its delivered reply, timed in every stage |
//! | [`intent`] | what the agent sees is what the allowed actor triggered on, whatever is edited later |

mod access;
mod conversation;
mod deliveries;
mod follow_ups;
mod github;
mod gitlab;
mod hostile;
mod intent;
mod jira;
mod journal;
mod pull_requests;
mod replay;
mod reply_urls;
mod slack;
mod stages;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agentsmith::settings::{AgentSettings, ProjectSettings, Settings};
use reqwest::RequestBuilder;
use secrecy::SecretString;
use serde_json::{json, Value};
use testkit::fake_api::{FakeApi, Recorded};
use testkit::sign::unix_now;
use testkit::temp::TempDir;

use crate::helpers::*;

const LIMIT: Duration = Duration::from_secs(60);

const SLACK_SECRET: &str = "slack-signing-secret-for-tests";
const GITHUB_SECRET: &str = "github-webhook-secret-for-tests";
pub(crate) const GITLAB_SECRET: &str = "gitlab-webhook-token-for-tests";
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
/// Ann's GitLab user id.
pub(crate) const GITLAB_ANN: u64 = 1;

/// What the agents leave as their result.
const RESULT: &str = r#"printf '{"summary":"done","links":[{"title":"PR","url":"https://example.invalid/pr/1"}]}' > "$AGENTSMITH_RESULT_FILE""#;

/// Every source enabled with its secret and pointed at `fake` (whose `response_url`s are
/// allowed); one project, `payments`, that Jira's `PAY`, GitHub's and GitLab's `acme/shop`
/// belong to, run by an agent that leaves a summary and a link; replies retried after
/// 50 ms. The fake says `ann` may write to `acme/shop` on GitHub and is a Developer there
/// on GitLab (user [`GITLAB_ANN`]), so her triggers pass the default access.
fn configure(s: &mut Settings, fake: &FakeApi) {
    fake.grant_github("acme/shop", "ann", "write");
    fake.grant_gitlab("acme/shop", GITLAB_ANN, 30);
    s.sources.slack.response_url_hosts = vec!["hooks.slack.com".into(), "127.0.0.1".into()];
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
    dir: TempDir,
}

impl Gate {
    fn new() -> Self {
        Self {
            dir: TempDir::new("agentsmith-gate"),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("open")
    }

    fn open(&self) {
        std::fs::write(self.path(), b"").unwrap();
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
pub(crate) enum Sign {
    /// With the configured secret.
    Right,
    /// With another secret.
    Wrong,
    /// Not at all (no signature header).
    Missing,
}

/// A Slack request to `/webhooks/slack/{route}`, timestamped `at`.
fn to_slack(app: &TestApp, route: &str, body: &str, sign: Sign, at: i64) -> RequestBuilder {
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
            testkit::sign::slack(SLACK_SECRET, at, body.as_bytes()),
        ),
        Sign::Wrong => request.header(
            "x-slack-signature",
            testkit::sign::slack("another-signing-secret", at, body.as_bytes()),
        ),
        Sign::Missing => request,
    }
}

/// A GitHub delivery of `event` with the delivery id `delivery`.
fn to_github(
    app: &TestApp,
    sign: Sign,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> RequestBuilder {
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
        Sign::Right => request.header(
            "x-hub-signature-256",
            testkit::sign::hub(GITHUB_SECRET, body),
        ),
        Sign::Wrong => request.header(
            "x-hub-signature-256",
            testkit::sign::hub("another-webhook-secret", body),
        ),
        Sign::Missing => request,
    }
}

/// A GitLab delivery of `event` (`Note Hook`) whose retries share `idempotency_key`; its
/// event UUID differs on every delivery, as GitLab's does.
pub(crate) fn to_gitlab(
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
fn to_jira(app: &TestApp, sign: Sign, identifier: &str, body: &[u8]) -> RequestBuilder {
    let request = app
        .http
        .post(format!("{}/webhooks/jira", app.address))
        .header("content-type", "application/json; charset=utf-8")
        .header("user-agent", "Atlassian Webhook HTTP Client")
        .header("x-atlassian-webhook-identifier", identifier)
        .body(body.to_vec());
    match sign {
        Sign::Right => request.header("x-hub-signature", testkit::sign::hub(JIRA_SECRET, body)),
        Sign::Wrong => request.header(
            "x-hub-signature",
            testkit::sign::hub("another-webhook-secret", body),
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
            to_github(app, Sign::Right, "issues", "d-1", issue.as_bytes()),
        ),
        (
            "gitlab",
            to_gitlab(app, Sign::Right, "Note Hook", "k-1", note.as_bytes()),
        ),
        ("jira", to_jira(app, Sign::Right, "j-1", update.as_bytes())),
        (
            "slack",
            to_slack(app, "commands", command, Sign::Right, unix_now()),
        ),
    ]
}

/// Sends a request; its status and JSON body (`Null` if it has none).
pub(crate) async fn send(request: RequestBuilder) -> (u16, Value) {
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

/// An agent that waits (up to a minute) for the first message in its inbox, prints it, then,
/// a second later, how many files its inbox holds, and leaves its result.
fn listener_agent() -> AgentSettings {
    sh_agent(&format!(
        "i=0; while [ ! -e \"$AGENTSMITH_INBOX/000001.json\" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; \
         printf 'inbox: %s\\n' \"$(cat \"$AGENTSMITH_INBOX/000001.json\")\"; \
         sleep 1; echo \"inbox files: $(ls \"$AGENTSMITH_INBOX\" | wc -l)\"; {RESULT}"
    ))
}

/// A message ts no other test message has: each message in a thread has its own.
fn fresh_ts() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("1700000001.{n:06}")
}

/// A person's reply `text` in the thread `thread_ts`, an Events API `message` event.
fn thread_reply(event_id: &str, user: &str, thread_ts: &str, text: &str) -> String {
    let ts = fresh_ts();
    json!({
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "team_id": "T0001",
        "api_app_id": "A0001",
        "event": {
            "type": "message",
            "user": user,
            "text": text,
            "ts": ts,
            "thread_ts": thread_ts,
            "channel": CHANNEL,
            "channel_type": "channel",
            "event_ts": ts
        },
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1_700_000_000
    })
    .to_string()
}

/// `user`'s mention of the app, `text`, as a reply in the thread `thread_ts` (its own ts
/// `ts`): an `app_mention` event.
fn mention_in_thread(event_id: &str, user: &str, text: &str, thread_ts: &str, ts: &str) -> Value {
    let mut event = mention(event_id, text, ts);
    event["event"]["user"] = json!(user);
    event["event"]["thread_ts"] = json!(thread_ts);
    event
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

/// Issue 7 of `acme/shop` labelled `agent`, a signed delivery with the id `delivery`:
/// queued (202); the job's id.
async fn github_issue_queued(app: &TestApp, delivery: &str) -> String {
    let issue = github_labeled("acme/shop", 7, "agent").to_string();
    let (status, answer) = send(to_github(
        app,
        Sign::Right,
        "issues",
        delivery,
        issue.as_bytes(),
    ))
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "queued", "{answer}");
    answer["job_id"].as_str().unwrap().to_string()
}

/// `user` clicks the `action` button of `job_id`, signed and now, with a response URL named
/// `name` on the fake: answered 200.
async fn click(app: &TestApp, fake: &FakeApi, action: &str, job_id: &str, user: &str, name: &str) {
    let click = button(action, job_id, user, &response_url(fake, name));
    let (status, body) = send(to_slack(
        app,
        "interactions",
        &click,
        Sign::Right,
        unix_now(),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
}

/// `user` sends the slash command `text` (trigger `trigger_id`), signed and now, with a
/// response URL named `name` on the fake: answered 200, with this answer.
async fn command(
    app: &TestApp,
    fake: &FakeApi,
    text: &str,
    user: &str,
    trigger_id: &str,
    name: &str,
) -> Value {
    let command = slash_command(text, user, trigger_id, &response_url(fake, name));
    let (status, answer) = send(to_slack(app, "commands", &command, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// What Slack got at the response URL named `name` (see [`response_url`]).
async fn answer_at(fake: &FakeApi, name: &str) -> Recorded {
    let path = format!("/slack/response/{name}");
    fake.wait_for("the answer at a response URL", LIMIT, |r| r.path == path)
        .await
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
