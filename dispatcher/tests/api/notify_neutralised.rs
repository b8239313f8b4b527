//! Replies neutralise the agent's text: a job from each source (GitHub, GitLab, Jira,
//! Slack) finishes with a hostile result, and the fake provider API receives its summary
//! and links escaped for the provider's markup, with no live mention and no link to a
//! `javascript:` URL or out of its markup.
//!
//! The deliveries are signed as each provider signs them ([`testkit::sign`]); the webhook
//! tests (`webhooks/`) cover the sources themselves, so these payloads carry only what the
//! parsers read.

use std::time::Duration;

use agentsmith::settings::{ProjectSettings, Settings};
use reqwest::RequestBuilder;
use secrecy::SecretString;
use serde_json::{json, Value};
use testkit::fake_api::{FakeApi, Recorded};
use testkit::sign::unix_now;

use crate::helpers::*;

const LIMIT: Duration = Duration::from_secs(60);

const SLACK_SECRET: &str = "slack-signing-secret-for-tests";
const GITHUB_SECRET: &str = "github-webhook-secret-for-tests";
const GITLAB_SECRET: &str = "gitlab-webhook-token-for-tests";
const JIRA_SECRET: &str = "jira-webhook-secret-for-tests";

/// The summary of issue 15: a Slack mass mention, markdown mass mentions, a fake
/// `javascript:` link, a Jira macro.
const SUMMARY: &str = "<!channel> @here @all [x](javascript:alert(1)) {code}";

/// What the agent leaves: [`SUMMARY`], a link whose URL would close Slack's link markup and
/// open a `<!channel>`, a `javascript:` link, and a good link with a hostile title.
fn hostile_result() -> String {
    json!({
        "summary": SUMMARY,
        "links": [
            {"title": "Click", "url": "https://ok.example|Click here> <!channel> <https://ok.example"},
            {"title": "Run me", "url": "javascript:alert(1)"},
            {"title": "PR <!here> [y](z) @ann", "url": "https://ok.example/pr/1"},
        ]
    })
    .to_string()
}

/// Every source enabled and replying to `fake` (whose `response_url`s are allowed); one
/// project, `payments` (Jira's `PAY`, GitHub's and GitLab's `acme/shop`), whose agent
/// leaves [`hostile_result`]; `ann` may start jobs there (GitHub write, GitLab Developer).
fn configure(s: &mut Settings, fake: &FakeApi) {
    fake.grant_github("acme/shop", "ann", "write");
    fake.grant_gitlab("acme/shop", 1, 30);
    let sources = &mut s.sources;
    sources.slack.response_url_hosts = vec!["127.0.0.1".into()];
    sources.slack.enabled = true;
    sources.slack.signing_secret = SecretString::from(SLACK_SECRET);
    sources.slack.bot_token = SecretString::from("xoxb-test-bot-token");
    sources.slack.api_base_url = fake.url.clone();
    sources.github.enabled = true;
    sources.github.webhook_secret = SecretString::from(GITHUB_SECRET);
    sources.github.token = SecretString::from("ghp-test-token");
    sources.github.api_base_url = fake.url.clone();
    sources.gitlab.enabled = true;
    sources.gitlab.webhook_token = SecretString::from(GITLAB_SECRET);
    sources.gitlab.token = SecretString::from("glpat-test-token");
    sources.gitlab.api_base_url = fake.url.clone();
    sources.jira.enabled = true;
    sources.jira.webhook_secret = SecretString::from(JIRA_SECRET);
    sources.jira.base_url = fake.url.clone();
    sources.jira.email = "agentsmith@example.invalid".into();
    sources.jira.api_token = SecretString::from("jira-test-api-token");
    let mut agent = sh_agent(r#"printf '%s' "$RESULT" > "$AGENTSMITH_RESULT_FILE""#);
    agent.env.insert("RESULT".into(), hostile_result());
    s.agents.insert("hostile".into(), agent);
    s.projects.insert(
        "payments".into(),
        ProjectSettings {
            agent: "hostile".into(),
            jira_projects: vec!["PAY".into()],
            github_repos: vec!["acme/shop".into()],
            gitlab_projects: vec!["acme/shop".into()],
            ..Default::default()
        },
    );
    let problems = s.validate();
    assert!(
        problems.is_empty(),
        "the test settings are valid: {problems:?}"
    );
}

/// GitHub: issue 7 of `acme/shop` labelled `agent`.
fn from_github(app: &TestApp) -> RequestBuilder {
    let body = json!({
        "action": "labeled",
        "issue": {"number": 7, "title": "Checkout fails", "body": "",
                  "html_url": "https://github.com/acme/shop/issues/7"},
        "label": {"name": "agent"},
        "repository": {"full_name": "acme/shop"},
        "sender": {"login": "ann", "type": "User"}
    })
    .to_string();
    app.http
        .post(format!("{}/webhooks/github", app.address))
        .header("content-type", "application/json")
        .header("x-github-event", "issues")
        .header("x-github-delivery", "neutralised-github")
        .header(
            "x-hub-signature-256",
            testkit::sign::hub(GITHUB_SECRET, body.as_bytes()),
        )
        .body(body)
}

/// GitLab: `/agent fix` noted on issue 4 of `acme/shop`.
fn from_gitlab(app: &TestApp) -> RequestBuilder {
    let body = json!({
        "object_kind": "note",
        "user": {"id": 1, "username": "ann"},
        "project": {"path_with_namespace": "acme/shop"},
        "object_attributes": {"note": "/agent fix", "noteable_type": "Issue",
                              "url": "https://gitlab.example/acme/shop/-/issues/4#note_1"},
        "issue": {"iid": 4, "title": "Cart is empty", "description": ""}
    })
    .to_string();
    app.http
        .post(format!("{}/webhooks/gitlab", app.address))
        .header("content-type", "application/json")
        .header("x-gitlab-event", "Note Hook")
        .header("idempotency-key", "neutralised-gitlab")
        .header("x-gitlab-token", GITLAB_SECRET)
        .body(body)
}

/// Jira: PAY-12 labelled `agent`.
fn from_jira(app: &TestApp) -> RequestBuilder {
    let body = json!({
        "webhookEvent": "jira:issue_updated",
        "user": {"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "Ann"},
        "issue": {"key": "PAY-12", "fields": {
            "summary": "Refunds fail", "description": "",
            "project": {"key": "PAY"}, "labels": ["agent"], "status": {"name": "To Do"}}},
        "changelog": {"items": [{"field": "labels", "fromString": "", "toString": "agent"}]}
    })
    .to_string();
    app.http
        .post(format!("{}/webhooks/jira", app.address))
        .header("content-type", "application/json")
        .header("x-atlassian-webhook-identifier", "neutralised-jira")
        .header(
            "x-hub-signature",
            testkit::sign::hub(JIRA_SECRET, body.as_bytes()),
        )
        .body(body)
}

/// Slack: `/agent fix PAY-13`, answered at the fake's `response_url`.
fn from_slack(app: &TestApp, fake: &FakeApi) -> RequestBuilder {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("team_id", "T0001")
        .append_pair("channel_id", "C0PAYMENTS")
        .append_pair("user_id", "U0ANN")
        .append_pair("user_name", "ann")
        .append_pair("command", "/agent")
        .append_pair("text", "fix PAY-13")
        .append_pair(
            "response_url",
            &format!("{}/slack/response/neutralised", fake.url),
        )
        .append_pair("trigger_id", "t.neutralised")
        .finish();
    let at = unix_now();
    app.http
        .post(format!("{}/webhooks/slack/commands", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", at.to_string())
        .header(
            "x-slack-signature",
            testkit::sign::slack(SLACK_SECRET, at, body.as_bytes()),
        )
        .body(body)
}

/// The Finished reply that arrived at `path`.
async fn finished(fake: &FakeApi, what: &str, path: &str) -> Recorded {
    fake.wait_for(what, LIMIT, |r| {
        r.path == path && r.text().contains("Finished ")
    })
    .await
}

/// What every reply says of the two links left out.
const LEFT_OUT: &str = "2 of the agent's links were left out";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_result_reaches_every_provider_escaped_for_its_markup() {
    let fake = FakeApi::start().await;
    let app = spawn_app(|s| configure(s, &fake)).await;
    for (source, request) in [
        ("github", from_github(&app)),
        ("gitlab", from_gitlab(&app)),
        ("jira", from_jira(&app)),
        ("slack", from_slack(&app, &fake)),
    ] {
        let response = request.send().await.expect("the dispatcher answers");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status == 200 || status == 202, "{source}: {status} {body}");
    }

    // Slack mrkdwn: `&`, `<`, `>` as entities; the link's `|` percent-encoded.
    let slack = finished(&fake, "the Slack reply", "/slack/response/neutralised")
        .await
        .text();
    assert!(
        slack.contains("\n&lt;!channel&gt; @here @all [x](javascript:alert(1)) {code}\n"),
        "{slack}"
    );
    assert!(
        slack.contains("\n• <https://ok.example/pr/1|PR &lt;!here&gt; [y](z) @ann>\n"),
        "{slack}"
    );
    assert!(slack.contains(LEFT_OUT), "{slack}");
    for live in ["<!channel>", "<!here>", "<javascript", "Click here>"] {
        assert!(!slack.contains(live), "{live} in {slack}");
    }

    // GitHub and GitLab markdown: backslash escapes, a joiner after every `@`.
    for (what, path) in [
        ("the GitHub comment", "/repos/acme/shop/issues/7/comments"),
        ("the GitLab note", "/projects/acme%2Fshop/issues/4/notes"),
    ] {
        let md = finished(&fake, what, path).await.text();
        assert!(
            md.contains(
                "\n\n\\<!channel\\> @\u{200D}here @\u{200D}all \\[x\\]\\(javascript:alert\\(1\\)\\) {code}\n"
            ),
            "{what}: {md}"
        );
        assert!(
            md.contains(
                "\n- [PR \\<!here\\> \\[y\\]\\(z\\) @\u{200D}ann](https://ok.example/pr/1)\n"
            ),
            "{what}: {md}"
        );
        assert!(md.contains(LEFT_OUT), "{what}: {md}");
        for live in [
            "@here",
            "@all",
            "@ann",
            "[x](",
            "](javascript",
            "<!channel>",
            "ok.example|",
        ] {
            assert!(!md.contains(live), "{what}: {live} in {md}");
        }
    }

    // Jira wiki markup: backslash escapes; a link's title loses its brackets and bars.
    let wiki = finished(
        &fake,
        "the Jira comment",
        "/rest/api/2/issue/PAY-12/comment",
    )
    .await
    .text();
    assert!(
        wiki.contains("\n\n<\\!channel> @here @all \\[x\\](javascript:alert(1)) \\{code\\}\n"),
        "{wiki}"
    );
    assert!(
        wiki.contains("\n* [PR <\\!here> (y)(z) @ann|https://ok.example/pr/1]\n"),
        "{wiki}"
    );
    assert!(wiki.contains(LEFT_OUT), "{wiki}");
    for live in ["{code}", "[x](", "|javascript", "ok.example|"] {
        assert!(!wiki.contains(live), "{live} in {wiki}");
    }
    app.stop().await;
}
