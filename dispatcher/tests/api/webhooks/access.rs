//! Who may start an agent, per source, against the fake providers' answers: GitHub roles
//! (`read` refused, `write` and `admin` run), GitLab access levels, Jira accounts and
//! groups, Slack users and user groups (an unknown user refused), bots ignored unless
//! listed. A refusal queues nothing, is answered politely where it came from, counted and
//! logged; a provider that cannot be asked makes the delivery 503, so the sender retries.
//! And later actions (Cancel, `status`) check the same rules.

use queue::{JobState, NewJob, Origin, Submission};
use serde_json::json;

use super::*;

/// The refusal counter's line for `source` and `reason`, as `/metrics` shows it.
fn refused_count(app: &TestApp, source: &str, reason: &str) -> u64 {
    let text = app.ctx.metrics.render(None, &[]);
    let prefix =
        format!("agentsmith_triggers_refused_total{{source=\"{source}\",reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// `login` (a `User` or a `Bot`) labels issue `number` `agent`, a signed delivery: its answer.
async fn label(app: &TestApp, number: u64, login: &str, kind: &str) -> (u16, Value) {
    let body = labelled_by(number, login, kind);
    let delivery = format!("d-{number}-{login}");
    send(to_github(app, Sign::Right, "issues", &delivery, &body)).await
}

/// GitHub's `issues` event: `login` (a `User` or a `Bot`) labelled issue `number` `agent`.
fn labelled_by(number: u64, login: &str, kind: &str) -> Vec<u8> {
    let mut issue = github_labeled("acme/shop", number, "agent");
    issue["sender"] = json!({"login": login, "type": kind});
    issue.to_string().into_bytes()
}

/// GitHub's `issue_comment` event: `login` commented `body` on issue `number`.
pub(super) fn commented_by(number: u64, login: &str, body: &str) -> Vec<u8> {
    json!({
        "action": "created",
        "issue": {"number": number, "title": "Checkout fails", "body": "Steps."},
        "comment": {"id": rand::random::<u32>(), "body": body, "user": {"login": login}},
        "repository": {"full_name": "acme/shop"},
        "sender": {"login": login, "type": "User"}
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_triggers_run_for_write_and_admin_and_a_read_actor_is_refused_politely() {
    let fake = FakeApi::start().await;
    fake.grant_github("acme/shop", "rita", "read");
    fake.grant_github("acme/shop", "wade", "write");
    fake.grant_github("acme/shop", "adam", "admin");
    let app = webhook_app(&fake, |_| {}).await;
    let (status, refused) = label(&app, 7, "rita", "User").await;
    assert_eq!(status, 200, "{refused}");
    assert_eq!(refused["status"], "refused", "{refused}");
    assert!(
        listed_jobs(&app).await.is_empty(),
        "a refusal queues nothing"
    );
    let reply = fake
        .wait_for("the refusal", LIMIT, |r| r.text().contains("Sorry"))
        .await;
    assert_eq!(reply.path, "/repos/acme/shop/issues/7/comments");
    let text = reply.text();
    assert!(text.contains("rita"), "{text}");
    assert!(text.contains("write role on acme/shop"), "{text}");
    assert!(text.contains("you have read"), "{text}");
    let asked = fake.requests_to("/repos/acme/shop/collaborators/rita/permission");
    assert_eq!(asked.len(), 1, "{asked:#?}");
    assert!(
        has_header(
            &asked[0],
            "authorization",
            &format!("Bearer {GITHUB_TOKEN}")
        ),
        "the permission is asked with the token"
    );
    // A second try by the same person on the same issue: refused, not answered again, and
    // the permission is remembered rather than asked again.
    let (_, again) = send(to_github(
        &app,
        Sign::Right,
        "issue_comment",
        "d-2",
        &commented_by(7, "rita", "/agent fix please"),
    ))
    .await;
    assert_eq!(again["status"], "refused", "{again}");
    assert_eq!(refused_count(&app, "github", "not_allowed"), 2);
    for (number, login) in [(8, "wade"), (9, "adam")] {
        let (status, answer) = label(&app, number, login, "User").await;
        assert_eq!(status, 202, "{login}: {answer}");
        let job = app.job(answer["job_id"].as_str().unwrap()).await;
        assert_eq!(job.requester.as_deref(), Some(login));
    }
    assert_eq!(listed_jobs(&app).await.len(), 2);
    wait_for_outbox_drained(&app).await;
    let sorry = fake
        .delivered()
        .iter()
        .filter(|r| r.text().contains("Sorry"))
        .count();
    assert_eq!(sorry, 1, "one refusal per person and issue");
    assert_eq!(
        fake.requests_to("/repos/acme/shop/collaborators/rita/")
            .len(),
        1,
        "the answer is cached"
    );
    for job in listed_jobs(&app).await {
        app.wait_for_end(job["id"].as_str().unwrap(), LIMIT).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bots_label_is_ignored_unless_the_project_lists_the_bot() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |s| {
        s.projects.get_mut("payments").unwrap().access.github.bots = vec!["renovate[bot]".into()];
    })
    .await;
    let (status, ignored) = label(&app, 7, "spam[bot]", "Bot").await;
    assert_eq!(status, 200, "{ignored}");
    assert_eq!(ignored["status"], "ignored", "{ignored}");
    assert_eq!(refused_count(&app, "github", "bot"), 1);
    let (status, queued) = label(&app, 8, "renovate[bot]", "Bot").await;
    assert_eq!(status, 202, "{queued}");
    let id = queued["job_id"].as_str().unwrap().to_string();
    app.wait_for_end(&id, LIMIT).await;
    wait_for_outbox_drained(&app).await;
    assert!(
        fake.requests_to("/repos/acme/shop/issues/7/").is_empty(),
        "a bot is never answered: {:#?}",
        fake.requests()
    );
    assert!(
        fake.requests_to("/repos/acme/shop/collaborators/")
            .is_empty(),
        "bots are decided by the list alone"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_permission_that_cannot_be_asked_is_503_and_the_retry_runs() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    fake.fail_next(1, "/collaborators/");
    let body = github_labeled("acme/shop", 7, "agent").to_string();
    let (status, answer) = send(to_github(
        &app,
        Sign::Right,
        "issues",
        "d-1",
        body.as_bytes(),
    ))
    .await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "access_unchecked", "{answer}");
    assert!(listed_jobs(&app).await.is_empty());
    let (status, answer) = send(to_github(
        &app,
        Sign::Right,
        "issues",
        "d-1",
        body.as_bytes(),
    ))
    .await;
    assert_eq!(status, 202, "the failure is not remembered: {answer}");
    app.wait_for_end(answer["job_id"].as_str().unwrap(), LIMIT)
        .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_notes_run_for_developers_and_up_and_others_are_refused_politely() {
    let fake = FakeApi::start().await;
    fake.grant_gitlab("acme/shop", 2, 20);
    fake.grant_gitlab("acme/shop", 4, 40);
    let app = webhook_app(&fake, |_| {}).await;
    let note_by = |iid: u64, id: u64, username: &str| {
        let mut note = gitlab_note(iid, "/agent fix", "Issue");
        note["user"] = json!({"id": id, "name": username, "username": username});
        note.to_string().into_bytes()
    };
    let cases = [
        (4, 2, "rex", 200, "refused"),
        (5, 3, "stranger", 200, "refused"),
        (6, 4, "maya", 202, "queued"),
        (7, GITLAB_ANN, "ann", 202, "queued"),
        (8, 99, "project_5_bot_3f2a", 200, "ignored"),
    ];
    for (iid, id, username, expected, outcome) in cases {
        let key = format!("k-{iid}");
        let body = note_by(iid, id, username);
        let (status, answer) = send(to_gitlab(&app, Sign::Right, "Note Hook", &key, &body)).await;
        assert_eq!(status, expected, "{username}: {answer}");
        assert_eq!(answer["status"], outcome, "{username}: {answer}");
    }
    for (iid, said) in [(4, "you have Reporter"), (5, "you have no role")] {
        let path = format!("/projects/acme%2Fshop/issues/{iid}/notes");
        let reply = fake
            .wait_for("the refusal", LIMIT, |r| r.path == path)
            .await;
        let text = reply.text();
        assert!(text.contains("Developer role in acme/shop"), "{text}");
        assert!(text.contains(said), "{text}");
    }
    let asked = fake.requests_to("/projects/acme%2Fshop/members/all/2");
    assert!(
        has_header(&asked[0], "private-token", GITLAB_TOKEN),
        "the member is asked with the token"
    );
    assert_eq!(listed_jobs(&app).await.len(), 2);
    for job in listed_jobs(&app).await {
        app.wait_for_end(job["id"].as_str().unwrap(), LIMIT).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jira_triggers_follow_the_listed_accounts_and_groups_and_ignore_apps() {
    let fake = FakeApi::start().await;
    fake.jira_groups("acc-gus", &["agents"]);
    fake.jira_groups("acc-sam", &["sales"]);
    let app = webhook_app(&fake, |s| {
        let jira = &mut s.projects.get_mut("payments").unwrap().access.jira;
        jira.account_ids = vec!["acc-ann".into()];
        jira.groups = vec!["agents".into()];
    })
    .await;
    let labelled_by = |key: &str, account: &str, kind: &str| {
        let mut update = jira_labelled(key);
        update["user"] = json!({"accountId": account, "displayName": account, "accountType": kind});
        update.to_string().into_bytes()
    };
    let cases = [
        ("PAY-1", "acc-sam", "atlassian", 200, "refused"),
        ("PAY-2", "acc-ann", "atlassian", 202, "queued"),
        ("PAY-3", "acc-gus", "atlassian", 202, "queued"),
        ("PAY-4", "acc-automation", "app", 200, "ignored"),
    ];
    for (key, account, kind, expected, outcome) in cases {
        let body = labelled_by(key, account, kind);
        let (status, answer) = send(to_jira(&app, Sign::Right, key, &body)).await;
        assert_eq!(status, expected, "{account}: {answer}");
        assert_eq!(answer["status"], outcome, "{account}: {answer}");
    }
    let reply = fake
        .wait_for("the refusal", LIMIT, |r| {
            r.path == "/rest/api/2/issue/PAY-1/comment"
        })
        .await;
    assert!(reply.text().contains("Sorry, acc-sam"), "{reply:?}");
    assert!(has_header(&reply, "authorization", JIRA_BASIC));
    let asked = fake.requests_to("/rest/api/2/user/groups");
    assert!(
        asked.iter().any(|r| r.query == "accountId=acc-gus"),
        "{asked:#?}"
    );
    assert!(has_header(&asked[0], "authorization", JIRA_BASIC));
    assert_eq!(listed_jobs(&app).await.len(), 2);
    for job in listed_jobs(&app).await {
        app.wait_for_end(job["id"].as_str().unwrap(), LIMIT).await;
    }
    app.stop().await;
}

/// A Slack user in the `S0DEVS` user group.
const CAROL: &str = "U0CAROL";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_commands_run_for_listed_users_and_group_members_and_an_unknown_user_is_refused() {
    let fake = FakeApi::start().await;
    fake.slack_user_group("S0DEVS", &[CAROL]);
    let app = webhook_app(&fake, |s| {
        let slack = &mut s.projects.get_mut("payments").unwrap().access.slack;
        slack.users = vec![REQUESTER.into()];
        slack.user_groups = vec!["S0DEVS".into()];
    })
    .await;
    let command = |user: &str, ticket: &str| {
        let text = format!("fix {ticket}");
        let body = slash_command(
            &text,
            user,
            &format!("t.{ticket}"),
            &response_url(&fake, ticket),
        );
        to_slack(&app, "commands", &body, Sign::Right, unix_now())
    };
    // Slack's API down: nothing is queued, and the asker hears why and to try again.
    fake.fail_next(1, "usergroups");
    let (status, answer) = send(command(CAROL, "PAY-9")).await;
    assert_eq!(status, 200, "{answer}");
    let text = answer["text"].as_str().unwrap_or_default();
    assert!(text.contains("just now"), "{answer}");
    assert!(text.contains("try again"), "{answer}");
    assert_eq!(refused_count(&app, "slack", "unchecked"), 1);
    let (status, answer) = send(command(OTHER, "PAY-1")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["response_type"], "ephemeral");
    let text = answer["text"].as_str().unwrap_or_default();
    assert!(text.contains("Sorry, u0bob"), "{answer}");
    assert!(text.contains("projects.payments.access.slack"), "{answer}");
    assert!(
        listed_jobs(&app).await.is_empty(),
        "a refusal queues nothing"
    );
    assert_eq!(refused_count(&app, "slack", "not_allowed"), 1);
    for (user, ticket) in [(REQUESTER, "PAY-2"), (CAROL, "PAY-3")] {
        let (status, answer) = send(command(user, ticket)).await;
        assert_eq!(status, 200, "{answer}");
        let text = answer["text"].as_str().unwrap_or_default();
        assert!(text.contains("Queued as"), "{user}: {answer}");
    }
    let asked = fake.requests_to("/usergroups.users.list");
    assert!(!asked.is_empty());
    assert_eq!(asked[0].query, "usergroup=S0DEVS");
    assert!(has_header(
        &asked[0],
        "authorization",
        &format!("Bearer {SLACK_BOT_TOKEN}")
    ));
    assert_eq!(listed_jobs(&app).await.len(), 2);
    for job in listed_jobs(&app).await {
        app.wait_for_end(job["id"].as_str().unwrap(), LIMIT).await;
    }
    app.stop().await;
}

/// An `app_mention` by the bot `bot_id`.
fn bot_mention(event_id: &str, bot_id: &str, text: &str) -> String {
    let mut event = mention(event_id, text, "1700000000.000500");
    event["event"]["bot_id"] = json!(bot_id);
    event["event"]["user"] = json!("U0BOTUSER");
    event.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bots_mention_is_ignored_unless_a_project_lists_the_bot() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |s| {
        s.projects.get_mut("payments").unwrap().access.slack.bots = vec!["B0LISTED".into()];
    })
    .await;
    let unlisted = bot_mention("Ev1", "B0OTHER", "<@UBOT> fix PAY-12");
    let (status, body) = send(to_slack(&app, "events", &unlisted, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ignored", "{body}");
    assert!(listed_jobs(&app).await.is_empty());
    assert_eq!(refused_count(&app, "slack", "bot"), 1);
    let listed = bot_mention("Ev2", "B0LISTED", "<@UBOT> fix PAY-13");
    let (status, body) = send(to_slack(&app, "events", &listed, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{body}");
    let id = only_job_id(&app).await;
    assert_eq!(app.job(&id).await.ticket.as_deref(), Some("PAY-13"));
    app.wait_for_end(&id, LIMIT).await;
    wait_for_outbox_drained(&app).await;
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.text().contains("PAY-12") || r.text().contains("Sorry")),
        "the unlisted bot is never answered: {:#?}",
        fake.requests()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_the_project_no_longer_allows_can_neither_cancel_nor_see_their_job() {
    let fake = FakeApi::start().await;
    let gate = Gate::new();
    let path = gate.path();
    // The project now admits only the admin; the requester's job is from before.
    let app = webhook_app(&fake, |s| {
        s.agents.insert("gated".into(), gated_agent(&path));
        let payments = s.projects.get_mut("payments").unwrap();
        payments.agent = "gated".into();
        payments.access.slack.users = vec![ADMIN.into()];
    })
    .await;
    let submitted = app
        .ctx
        .queue
        .submit(&NewJob {
            agent: "gated".into(),
            task: "fix PAY-12".into(),
            project: Some("payments".into()),
            ticket: Some("PAY-12".into()),
            timeout_secs: 60,
            origin: Some(Origin::Slack {
                channel: CHANNEL.into(),
                user: REQUESTER.into(),
                thread_ts: None,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let Submission::Created(job) = submitted else {
        panic!("{submitted:?}")
    };
    let id = job.id;
    app.wait_for_state(&id, JobState::Running, LIMIT).await;
    click(&app, &fake, "cancel", &id, REQUESTER, "click").await;
    let answer = answer_at(&fake, "click").await;
    assert!(
        answer
            .text()
            .contains(&format!("I can't cancel `{id}` for you")),
        "{answer:?}"
    );
    let status_command = slash_command(
        &format!("status {id}"),
        REQUESTER,
        "t.s",
        &response_url(&fake, "s"),
    );
    let (_, shown) = send(to_slack(
        &app,
        "commands",
        &status_command,
        Sign::Right,
        unix_now(),
    ))
    .await;
    let text = shown["text"].as_str().unwrap_or_default();
    assert!(text.contains("There is no job"), "{shown}");
    assert_eq!(
        app.job(&id).await.state,
        JobState::Running,
        "the click changed nothing"
    );
    click(&app, &fake, "cancel", &id, ADMIN, "admin").await;
    app.wait_for_state(&id, JobState::Cancelled, LIMIT).await;
    app.stop().await;
}
