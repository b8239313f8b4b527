//! An agent's question answered where its job came from (issue 19): in Slack with a button
//! per choice (or `/agent answer <job> <text>`), on a GitHub issue with an `/agent answer`
//! comment. Someone the project does not let start jobs is refused politely and changes
//! nothing; the first answer wins and a later one is told who answered what.

use queue::JobState;
use serde_json::json;

use super::*;

/// An agent that asks which service, then says which it chose and leaves its result.
fn asker() -> AgentSettings {
    sh_agent(&format!(
        "choice=$(agent-runner ask 'Which service?' --choice billing --choice payments) || exit 9; \
         echo \"chose $choice\"; {RESULT}"
    ))
}

/// A dispatcher whose project `payments` runs [`asker`]; in Slack only `slack_users` may
/// start its jobs (anyone, when empty).
async fn asker_app(fake: &FakeApi, slack_users: &[&str]) -> TestApp {
    let users: Vec<String> = slack_users.iter().map(|u| u.to_string()).collect();
    webhook_app(fake, |s| {
        s.agents.insert("asker".into(), asker());
        let payments = s.projects.get_mut("payments").unwrap();
        payments.agent = "asker".into();
        payments.access.slack.users = users;
    })
    .await
}

/// A Slack click on the `n`th choice of `question` of `job_id`.
async fn choose(
    app: &TestApp,
    fake: &FakeApi,
    job_id: &str,
    question: &str,
    n: usize,
    user: &str,
    name: &str,
) {
    let value = format!("{job_id}:{question}:{n}");
    let click = button(
        &format!("answer:{n}"),
        &value,
        user,
        &response_url(fake, name),
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_question_has_a_button_per_choice_and_the_first_allowed_click_answers_it() {
    let fake = FakeApi::start().await;
    let app = asker_app(&fake, &[REQUESTER, ADMIN]).await;
    command(&app, &fake, "fix PAY-12", REQUESTER, "t.1", "command").await;
    let id = only_job_id(&app).await;
    let job = app
        .wait_for_state(&id, JobState::WaitingForInput, LIMIT)
        .await;
    let question = job.question.expect("the open question").id;

    // The question reaches the thread, with its choices as buttons.
    let asked = fake
        .wait_for("the question in Slack", LIMIT, |r| {
            r.path == "/slack/response/command" && r.text().contains("Which service?")
        })
        .await;
    let buttons = asked.body["blocks"][1]["elements"].clone();
    assert_eq!(buttons[0]["action_id"], "answer:0", "{buttons}");
    assert_eq!(buttons[1]["text"]["text"], "payments", "{buttons}");
    assert_eq!(buttons[1]["value"], json!(format!("{id}:{question}:1")));
    assert!(
        asked
            .text()
            .contains("Without an answer within 30 min the job fails."),
        "{}",
        asked.text()
    );

    // Someone the project does not let start jobs: refused politely, nothing changes.
    choose(&app, &fake, &id, &question, 0, OTHER, "other").await;
    let refusal = answer_at(&fake, "other").await.text();
    assert!(
        refusal.contains("projects.payments.access.slack"),
        "{refusal}"
    );
    assert_eq!(app.job(&id).await.state, JobState::WaitingForInput);

    // A forged choice answers nothing; the requester's click answers; the admin's comes late.
    choose(&app, &fake, &id, &question, 7, REQUESTER, "forged").await;
    let forged = answer_at(&fake, "forged").await.text();
    assert!(
        forged.contains("not one of the question's choices"),
        "{forged}"
    );
    choose(&app, &fake, &id, &question, 1, REQUESTER, "ann").await;
    let thanks = answer_at(&fake, "ann").await.text();
    assert!(thanks.contains("goes on with “payments”"), "{thanks}");
    choose(&app, &fake, &id, &question, 0, ADMIN, "late").await;
    let late = answer_at(&fake, "late").await.text();
    assert!(
        late.contains(&format!(
            "already answered by {REQUESTER} (slack): “payments”"
        )),
        "{late}"
    );

    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert!(app
        .log_lines(&id)
        .await
        .contains(&"chose payments".to_string()));
    let answer = job.answer.expect("the answer is recorded");
    assert_eq!(
        (answer.text.as_str(), answer.by.as_str()),
        ("payments", "U0ANN (slack)")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_command_answers_with_any_text() {
    let fake = FakeApi::start().await;
    let app = asker_app(&fake, &[]).await;
    command(&app, &fake, "fix PAY-12", REQUESTER, "t.1", "command").await;
    let id = only_job_id(&app).await;
    app.wait_for_state(&id, JobState::WaitingForInput, LIMIT)
        .await;
    let answer = command(
        &app,
        &fake,
        &format!("answer {id} the ledger one"),
        REQUESTER,
        "t.2",
        "answer",
    )
    .await;
    assert!(
        answer.to_string().contains("goes on with “the ledger one”"),
        "{answer}"
    );
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert!(app
        .log_lines(&id)
        .await
        .contains(&"chose the ledger one".to_string()));
    app.stop().await;
}

/// GitHub's `issue_comment` event: `login` commented `body` on issue 7 of `acme/shop`.
fn comment(login: &str, body: &str) -> Vec<u8> {
    super::access::commented_by(7, login, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_comment_answers_the_issues_question_and_a_reader_is_refused() {
    let fake = FakeApi::start().await;
    fake.grant_github("acme/shop", "rita", "read");
    let app = asker_app(&fake, &[]).await;
    let id = github_issue_queued(&app, "d-1").await;
    app.wait_for_state(&id, JobState::WaitingForInput, LIMIT)
        .await;
    let comments = "/repos/acme/shop/issues/7/comments";
    let asked = fake
        .wait_for("the question on the issue", LIMIT, |r| {
            r.path == comments && r.text().contains("Which service?")
        })
        .await
        .text();
    assert!(asked.contains("/agent answer"), "{asked}");
    assert!(asked.contains("billing | payments"), "{asked}");

    let github = |delivery: &str, login: &str, body: &str| {
        to_github(
            &app,
            Sign::Right,
            "issue_comment",
            delivery,
            &comment(login, body),
        )
    };
    let (status, refused) = send(github("d-2", "rita", "/agent answer billing")).await;
    assert_eq!(
        (status, refused["status"].as_str()),
        (200, Some("refused")),
        "{refused}"
    );
    fake.wait_for("the refusal", LIMIT, |r| {
        r.path == comments && r.text().contains("Sorry") && r.text().contains("rita")
    })
    .await;
    assert_eq!(app.job(&id).await.state, JobState::WaitingForInput);

    let answer = comment("ann", "/agent answer payments");
    let (status, answered) = send(to_github(
        &app,
        Sign::Right,
        "issue_comment",
        "d-3",
        &answer,
    ))
    .await;
    assert_eq!(
        (status, answered["status"].as_str()),
        (200, Some("answered")),
        "{answered}"
    );
    // The same delivery again (GitHub redelivers) is not a second answer, nor told twice.
    let (status, again) = send(to_github(
        &app,
        Sign::Right,
        "issue_comment",
        "d-3",
        &answer,
    ))
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["reason"], "this comment was taken before", "{again}");
    fake.wait_for("the thanks", LIMIT, |r| {
        r.path == comments && r.text().contains("goes on with “payments”")
    })
    .await;
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert!(app
        .log_lines(&id)
        .await
        .contains(&"chose payments".to_string()));
    assert_eq!(job.answer.map(|a| a.by).as_deref(), Some("ann (github)"));

    let (_, late) = send(github("d-4", "ann", "/agent answer billing")).await;
    assert_eq!(late["status"], "ignored", "{late}");
    fake.wait_for("the late answer told", LIMIT, |r| {
        r.path == comments
            && r.text()
                .contains("No agent working on this issue is waiting")
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_comment_steers_the_issues_running_agent() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |s| {
        s.agents.insert("listener".into(), listener_agent());
        s.projects.get_mut("payments").unwrap().agent = "listener".into();
    })
    .await;
    let id = github_issue_queued(&app, "d-1").await;
    app.wait_for_state(&id, JobState::Running, LIMIT).await;
    let body = comment("ann", "/agent say use the v2 client\nnot v1");
    let (status, sent) = send(to_github(&app, Sign::Right, "issue_comment", "d-2", &body)).await;
    assert_eq!(
        (status, sent["status"].as_str()),
        (200, Some("sent")),
        "{sent}"
    );
    fake.wait_for("the message acknowledged", LIMIT, |r| {
        r.path == "/repos/acme/shop/issues/7/comments" && r.text().contains("message 1")
    })
    .await;
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let lines = app.log_lines(&id).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("use the v2 client\\nnot v1") && l.contains("ann (github)")),
        "{lines:#?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_in_the_jobs_thread_answers_its_question_and_other_chatter_is_left_alone() {
    let fake = FakeApi::start().await;
    let app = asker_app(&fake, &[REQUESTER]).await;
    let ts = "1700000000.000100";
    let event = mention("Ev0MENTION", "<@UBOT> fix PAY-12", ts).to_string();
    let (status, body) = send(to_slack(&app, "events", &event, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{body}");
    let id = only_job_id(&app).await;
    app.wait_for_state(&id, JobState::WaitingForInput, LIMIT)
        .await;
    let asked = fake
        .wait_for("the question in the thread", LIMIT, |r| {
            r.path == "/chat.postMessage" && r.text().contains("Which service?")
        })
        .await;
    assert_eq!(asked.body["thread_ts"], ts, "{:?}", asked.body);
    assert!(
        asked.text().contains("a reply in this thread"),
        "{}",
        asked.text()
    );

    // Chatter elsewhere, and a reply by someone the project does not let start jobs.
    let elsewhere = thread_reply("Ev0CHAT", REQUESTER, "1700000000.000555", "lunch?");
    let (_, body) = send(to_slack(
        &app,
        "events",
        &elsewhere,
        Sign::Right,
        unix_now(),
    ))
    .await;
    assert_eq!(body["status"], "ignored", "{body}");
    let other = thread_reply("Ev0OTHER", OTHER, ts, "billing");
    send(to_slack(&app, "events", &other, Sign::Right, unix_now())).await;
    fake.wait_for("the refusal in the thread", LIMIT, |r| {
        r.path == "/chat.postMessage" && r.text().contains("projects.payments.access.slack")
    })
    .await;
    assert_eq!(app.job(&id).await.state, JobState::WaitingForInput);

    let reply = thread_reply("Ev0ANN", REQUESTER, ts, "the ledger service");
    let (status, body) = send(to_slack(&app, "events", &reply, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{body}");
    // Slack retries an event it thinks was lost: answered once.
    let (_, again) = send(to_slack(&app, "events", &reply, Sign::Right, unix_now())).await;
    assert!(
        again["status"] == "duplicate" || again["status"] == "ignored",
        "{again}"
    );
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert!(app
        .log_lines(&id)
        .await
        .contains(&"chose the ledger service".to_string()));
    fake.wait_for("the thanks in the thread", LIMIT, |r| {
        r.path == "/chat.postMessage" && r.text().contains("goes on with “the ledger service”")
    })
    .await;
    let answers = app
        .events(&id)
        .await
        .into_iter()
        .filter(|(_, e)| matches!(e, queue::JobEvent::Answer { .. }))
        .count();
    assert_eq!(answers, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_progress_reaches_the_issue_at_a_bounded_rate() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |s| {
        s.agents.insert(
            "chatty".into(),
            sh_agent(&format!(
                "agent-runner say 'reading the ticket'; agent-runner say 'still reading'; \
                 agent-runner say 'and still'; sleep 1; {RESULT}"
            )),
        );
        s.projects.get_mut("payments").unwrap().agent = "chatty".into();
    })
    .await;
    let id = github_issue_queued(&app, "d-1").await;
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let said: Vec<String> = app
        .events(&id)
        .await
        .into_iter()
        .filter_map(|(_, e)| match e {
            queue::JobEvent::Say { text, .. } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(said, ["reading the ticket", "still reading", "and still"]);
    wait_for_outbox_drained(&app).await;
    let posted: Vec<String> = fake
        .delivered()
        .iter()
        .filter(|r| r.path == "/repos/acme/shop/issues/7/comments" && r.text().contains("says"))
        .map(|r| r.text())
        .collect();
    assert_eq!(posted.len(), 1, "one post per 30 s: {posted:#?}");
    assert!(posted[0].contains("reading the ticket"), "{posted:#?}");
    app.stop().await;
}
