//! An agent asks, people answer (issue 19): real `agent-runner` processes whose agents call
//! `agent-runner ask` and `say`, answered through the API. The job waits in
//! `waiting_for_input` holding its slot, the first answer wins exactly once, and a question
//! nobody answers takes its default or fails the job at its deadline, with the reason. With
//! `approval: before_push` the runner asks before anything leaves the sandbox, against a
//! real git server: a rejection pushes nothing, an approval pushes.

use std::time::Duration;

use agentsmith::settings::agents::ApprovalMode;
use agentsmith::settings::CheckoutSettings;
use contract::Change;
use queue::{JobEvent, JobState};
use secrecy::SecretString;
use serde_json::{json, Value};
use testkit::git_server::GitServer;

use crate::checkout::project_app;
use crate::helpers::{sh_agent, spawn_app, TestApp, TOKEN};

const GIT_TOKEN: &str = "git-token-for-approvals-0123";

const WAIT: Duration = Duration::from_secs(30);

async fn answer(app: &TestApp, id: &str, body: Value) -> (u16, Value) {
    app.post(&format!("/v1/jobs/{id}/answer"), body).await
}

fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn an_agent_asks_waits_holding_its_slot_and_acts_on_the_first_answer() {
    let app = spawn_app(|s| {
        s.queue.max_concurrent_jobs = 1;
        s.agents.insert(
            "asker".into(),
            sh_agent(
                "agent-runner say 'reading the ticket'; \
                 choice=$(agent-runner ask 'Which service?' --choice billing --choice payments) || exit 9; \
                 echo \"chose $choice\"; \
                 printf '{\"summary\":\"worked on %s\"}' \"$choice\" > \"$AGENTSMITH_RESULT_FILE\"",
            ),
        );
    })
    .await;
    let id = app.submit("asker", "fix the flaky test").await;
    let other = app.submit("ok", "waits for the slot").await;
    let job = app
        .wait_for_state(&id, JobState::WaitingForInput, WAIT)
        .await;
    let question = job.question.expect("a waiting job shows its question");
    assert_eq!(question.text, "Which service?");
    assert_eq!(question.choices, ["billing", "payments"]);
    assert_eq!((question.default, question.attempt), (None, 1));

    // Longer than a lease (3 s): the runner's heartbeats hold it, and the slot stays taken.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(app.job(&id).await.state, JobState::WaitingForInput);
    assert_eq!(app.job(&other).await.state, JobState::Queued);

    // Bad answers are refused, naming the problem, and change nothing.
    let (status, body) = answer(&app, &id, json!({"text": "  "})).await;
    assert_eq!(
        (status, message(&body).as_str()),
        (400, "the answer is empty")
    );
    let (status, body) = answer(&app, &id, json!({"txt": "billing"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("unknown field `txt`"), "{body}");
    let (status, body) = answer(&app, &id, json!({"text": "x".repeat(5000)})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = answer(&app, &id, json!({"text": "billing", "question": "other"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("no_open_question"))
    );
    let (status, _) = answer(&app, "nosuchjob", json!({"text": "billing"})).await;
    assert_eq!(status, 404);

    let (status, body) = answer(
        &app,
        &id,
        json!({"text": "payments", "question": question.id, "by": "ann"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["answer"]["text"], "payments");
    assert_eq!(body["answer"]["by"], "ann");
    let (status, body) = answer(&app, &id, json!({"text": "billing", "by": "bob"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_answered"))
    );
    assert!(
        message(&body).contains("ann answered \"payments\""),
        "{body}"
    );

    let job = app.wait_for_end(&id, WAIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(
        job.result.and_then(|r| r.summary).as_deref(),
        Some("worked on payments")
    );
    let lines = app.log_lines(&id).await;
    assert!(lines.contains(&"chose payments".to_string()), "{lines:?}");
    let events = app.events(&id).await;
    let said: Vec<&str> = events
        .iter()
        .filter_map(|(_, e)| match e {
            JobEvent::Say { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(said, ["reading the ticket"]);
    let answers: Vec<(&str, &str)> = events
        .iter()
        .filter_map(|(_, e)| match e {
            JobEvent::Answer { answer, .. } => Some((answer.text.as_str(), answer.by.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(answers, [("payments", "ann")], "one answer, once");
    // The next job had to wait for the slot the asking job held.
    assert_eq!(
        app.wait_for_end(&other, WAIT).await.state,
        JobState::Succeeded
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unanswered_question_takes_its_default_or_fails_the_job_at_its_deadline() {
    let app = spawn_app(|s| {
        s.agents.insert(
            "patient".into(),
            sh_agent("a=$(agent-runner ask 'Go ahead?' --default yes --timeout 1) || exit 9; echo \"got $a\""),
        );
        s.agents.insert(
            "stuck".into(),
            sh_agent("agent-runner ask 'Go ahead?' --timeout 1; echo after-the-question"),
        );
    })
    .await;
    let patient = app.submit("patient", "defaults").await;
    let stuck = app.submit("stuck", "fails").await;

    let job = app.wait_for_end(&patient, WAIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert!(app
        .log_lines(&patient)
        .await
        .contains(&"got yes".to_string()));
    let answer = job.answer.expect("the default is recorded as the answer");
    assert!(answer.defaulted && answer.text == "yes", "{answer:?}");

    let job = app.wait_for_end(&stuck, WAIT).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let reason = job.reason.unwrap_or_default();
    assert!(
        reason.contains(
            "nobody answered the question \"Go ahead?\" within 1s, and it has no default"
        ),
        "{reason}"
    );
    assert!(
        !app.log_lines(&stuck)
            .await
            .contains(&"after-the-question".to_string()),
        "the agent is stopped, not handed an answer"
    );
    let (status, body) = answer_late(&app, &stuck).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("no_open_question"))
    );
    app.stop().await;
}

async fn answer_late(app: &TestApp, id: &str) -> (u16, Value) {
    answer(app, id, json!({"text": "yes"})).await
}

/// A job of project `shop` (at `repo`, approval before its push) whose agent changes the
/// README: the job, once it waits for the approval.
async fn waiting_for_approval(git: &GitServer, ticket: &str) -> (TestApp, String) {
    let mut agent = sh_agent(
        "echo 'now fixed' >> README.md; \
         printf '{\"summary\":\"Fix the greeting\"}' > \"$AGENTSMITH_RESULT_FILE\"",
    );
    agent.approval = ApprovalMode::BeforePush;
    agent.approval_timeout_secs = 600;
    let checkout = CheckoutSettings {
        token: SecretString::from(GIT_TOKEN.to_string()),
        ..Default::default()
    };
    let app = project_app(git.url("shop"), "", checkout, agent).await;
    let (status, body) = app
        .post_job(json!({"project": "shop", "task": "fix it", "ticket": ticket}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let job = app
        .wait_for_state(&id, JobState::WaitingForInput, WAIT)
        .await;
    let question = job.question.expect("the approval is a question");
    assert_eq!(question.id, "approve-push");
    assert_eq!(question.choices, ["Approve", "Reject"]);
    assert_eq!(
        question.default, None,
        "without an answer nothing is pushed"
    );
    assert!(
        question.text.contains("1 commit(s) to agentsmith/")
            && question.text.contains("Fix the greeting"),
        "{}",
        question.text
    );
    assert!(
        question.text.contains("README.md"),
        "the files are listed: {}",
        question.text
    );
    (app, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_before_push_pushes_only_what_someone_approves() {
    let git = GitServer::start(GIT_TOKEN).await;
    git.create_repo("shop", &[("README.md", "hello\n")], "main");

    // Rejected: nothing leaves the sandbox, and the job says who rejected it.
    let (app, id) = waiting_for_approval(&git, "SHOP-1").await;
    assert!(git.branches("shop").iter().all(|(b, _)| b == "main"));
    let (status, body) = answer(&app, &id, json!({"text": "Reject", "by": "rita"})).await;
    assert_eq!(status, 200, "{body}");
    let job = app.wait_for_end(&id, WAIT).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let reason = job.reason.unwrap_or_default();
    assert!(
        reason.contains("the push was not approved: rita answered \"Reject\""),
        "{reason}"
    );
    assert!(
        git.branches("shop").iter().all(|(b, _)| b == "main"),
        "a rejected push pushes nothing: {:?}",
        git.branches("shop")
    );
    app.stop().await;

    // Approved: pushed to the job's branch.
    let (app, id) = waiting_for_approval(&git, "SHOP-2").await;
    let (status, body) = answer(&app, &id, json!({"text": "approve", "by": "ann"})).await;
    assert_eq!(status, 200, "{body}");
    let job = app.wait_for_end(&id, WAIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert!(
        matches!(job.change, Some(Change::Pushed { .. })),
        "{job:#?}"
    );
    assert_eq!(
        git.file_at("shop", "agentsmith/SHOP-2", "README.md")
            .as_deref(),
        Some("hello\nnow fixed\n")
    );
    let lines = app.log_lines(&id).await;
    assert!(
        lines.iter().any(|l| l.contains("ann approved the push")),
        "{lines:#?}"
    );
    app.stop().await;
}

/// An agent that waits (up to a minute) for the first message of its inbox and prints it.
fn listener() -> agentsmith::settings::AgentSettings {
    sh_agent(
        "i=0; while [ ! -e \"$AGENTSMITH_INBOX/000001.json\" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; \
         printf 'inbox: %s\\n' \"$(cat \"$AGENTSMITH_INBOX/000001.json\")\"",
    )
}

#[tokio::test]
async fn a_message_reaches_the_running_agent_in_its_inbox_once() {
    let app = spawn_app(|s| {
        s.agents.insert("listener".into(), listener());
    })
    .await;
    let id = app.submit("listener", "wait for word").await;
    app.wait_for_state(&id, JobState::Running, WAIT).await;
    let send = |body: Value| {
        let http = app.http.clone();
        let url = format!("{}/v1/jobs/{id}/messages", app.address);
        async move {
            let response = http
                .post(url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = send(json!({"text": " "})).await;
    assert_eq!(
        (status, message(&body).as_str()),
        (400, "the message is empty")
    );
    let (status, body) = send(json!({"text": "use the v2 client", "by": "ann"})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["seq"], 1);
    let job = app.wait_for_end(&id, WAIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let lines = app.log_lines(&id).await;
    let heard: Vec<&String> = lines.iter().filter(|l| l.starts_with("inbox: ")).collect();
    assert_eq!(heard.len(), 1, "{lines:#?}");
    assert!(
        heard[0].contains("\"text\":\"use the v2 client\"") && heard[0].contains("\"by\":\"ann\""),
        "{lines:#?}"
    );
    let sent: Vec<u64> = app
        .events(&id)
        .await
        .iter()
        .filter_map(|(_, e)| match e {
            JobEvent::Message { message } => Some(message.seq),
            _ => None,
        })
        .collect();
    assert_eq!(sent, [1]);
    let (status, body) = send(json!({"text": "too late"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_finished"))
    );
    let unknown = app
        .http
        .post(format!("{}/v1/jobs/nosuchjob/messages", app.address))
        .bearer_auth(TOKEN)
        .json(&json!({"text": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    app.stop().await;
}
