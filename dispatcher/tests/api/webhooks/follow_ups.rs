//! A Slack thread where a job was started, after the question is answered (issue 19): a
//! plain reply while the job runs reaches its agent's inbox; once it has ended, mentioning
//! the app in the thread starts a follow-up that continues it — the same branch checked
//! out (on a real git server), the previous job's summary in the new intent, the two jobs
//! linked both ways — while a plain reply ("thanks!") starts nothing and someone the
//! project does not let start jobs is refused. Through the API, `follows` names the job.

use agentsmith::settings::CheckoutSettings;
use contract::Change;
use queue::JobState;
use testkit::git_server::GitServer;

use super::*;

const GIT_TOKEN: &str = "git-token-for-follow-ups";

/// An agent that adds a numbered step to `STEPS`, prints its intent on one line, and leaves
/// a summary naming its step.
fn stepping_agent() -> AgentSettings {
    sh_agent(
        "n=$(( $(cat STEPS 2>/dev/null | wc -l) + 1 )); echo \"step $n\" >> STEPS; \
         echo \"intent: $(tr -d '\\n' < \"$AGENTSMITH_INTENT_FILE\")\"; \
         printf '{\"summary\":\"did step %s\"}' \"$n\" > \"$AGENTSMITH_RESULT_FILE\"",
    )
}

/// The ids of every job, newest first.
async fn job_ids(app: &TestApp) -> Vec<String> {
    let jobs = listed_jobs(app).await;
    let ids = jobs.iter().map(|j| j["id"].as_str().unwrap().to_string());
    ids.collect()
}

async fn post_event(app: &TestApp, event: &str) -> Value {
    let (status, body) = send(to_slack(app, "events", event, Sign::Right, unix_now())).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_in_a_finished_jobs_thread_continues_it_on_its_branch_and_thanks_start_nothing() {
    let fake = FakeApi::start().await;
    let git = GitServer::start(GIT_TOKEN).await;
    git.create_repo("shop", &[("README.md", "the shop\n")], "main");
    let repo = git.url("shop");
    let app = webhook_app(&fake, move |s| {
        s.agents.insert("stepping".into(), stepping_agent());
        let project = s.projects.get_mut("payments").unwrap();
        project.agent = "stepping".into();
        project.repo = repo;
        project.checkout = CheckoutSettings {
            token: SecretString::from(GIT_TOKEN.to_string()),
            ..Default::default()
        };
        project.access.slack.users = vec![REQUESTER.to_string()];
    })
    .await;

    // A task of no ticket: its branch is named after the job.
    let thread = "1700000000.000100";
    let start = mention("Ev1START", "<@UBOT> run payments add a step", thread).to_string();
    post_event(&app, &start).await;
    let first = only_job_id(&app).await;
    let job = app.wait_for_end(&first, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let branch = format!("agentsmith/{first}");
    assert_eq!(
        git.file_at("shop", &branch, "STEPS").as_deref(),
        Some("step 1\n")
    );

    // Thanks in the thread are people talking: nothing starts.
    let thanks = thread_reply("Ev1THANKS", REQUESTER, thread, "thanks, looks good!");
    let body = post_event(&app, &thanks).await;
    assert_eq!(body["status"], "ignored", "{body}");
    // Someone the project does not let start jobs is told so, in the thread.
    let ts = fresh_ts();
    let bob = mention_in_thread("Ev1BOB", OTHER, "<@UBOT> delete everything", thread, &ts);
    post_event(&app, &bob.to_string()).await;
    fake.wait_for("the refusal in the thread", LIMIT, |r| {
        r.path == "/chat.postMessage"
            && r.body["thread_ts"] == thread
            && r.text().contains("projects.payments.access.slack")
    })
    .await;
    assert_eq!(job_ids(&app).await, vec![first.clone()]);

    // The requester's mention continues the job.
    let ts = fresh_ts();
    let more = mention_in_thread(
        "Ev1MORE",
        REQUESTER,
        "<@UBOT> also add a second step",
        thread,
        &ts,
    );
    post_event(&app, &more.to_string()).await;
    let ids = job_ids(&app).await;
    assert_eq!(ids.len(), 2, "{ids:?}");
    let second = ids.into_iter().find(|id| *id != first).unwrap();
    // Slack retries an event it got no quick answer to: no third job.
    post_event(&app, &more.to_string()).await;
    assert_eq!(job_ids(&app).await.len(), 2);

    let job = app.wait_for_end(&second, LIMIT).await;
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{job:#?}\n{:#?}",
        app.log_lines(&second).await
    );
    assert_eq!(job.task, "also add a second step");
    let previous = job
        .follows
        .clone()
        .expect("the follow-up names the job it continues");
    assert_eq!(
        (previous.job_id.as_str(), previous.state.as_str()),
        (first.as_str(), "succeeded")
    );
    assert_eq!(previous.summary.as_deref(), Some("did step 1"));
    assert_eq!(job.chain.as_deref(), Some(first.as_str()));
    // The agent found the first job's work on the same branch, and its summary in the intent.
    assert_eq!(
        git.file_at("shop", &branch, "STEPS").as_deref(),
        Some("step 1\nstep 2\n")
    );
    assert!(
        matches!(&job.change, Some(Change::Pushed { branch: b, .. }) if *b == branch),
        "{:?}",
        job.change
    );
    let lines = app.log_lines(&second).await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("intent: ") && l.contains("did step 1")),
        "the previous summary is in the intent: {lines:#?}"
    );
    assert_eq!(
        app.job(&first).await.followed_by.as_deref(),
        Some(second.as_str())
    );
    // Its replies are in the same thread.
    fake.wait_for("the follow-up's result in the thread", LIMIT, |r| {
        r.path == "/chat.postMessage"
            && r.body["thread_ts"] == thread
            && r.text().contains("did step 2")
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_reply_in_a_running_jobs_thread_reaches_its_agent_once() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |s| {
        s.agents.insert("listener".into(), listener_agent());
        s.projects.get_mut("payments").unwrap().agent = "listener".into();
    })
    .await;
    let thread = "1700000000.000200";
    let start = mention("Ev2START", "<@UBOT> run payments listen", thread).to_string();
    post_event(&app, &start).await;
    let id = only_job_id(&app).await;
    app.wait_for_state(&id, JobState::Running, LIMIT).await;

    let reply = thread_reply("Ev2STEER", REQUESTER, thread, "use the v2 client");
    post_event(&app, &reply).await;
    // Slack retries it: the agent still gets it once.
    let again = post_event(&app, &reply).await;
    assert_eq!(again["status"], "duplicate", "{again}");
    fake.wait_for("the message's receipt in the thread", LIMIT, |r| {
        r.path == "/chat.postMessage"
            && r.body["thread_ts"] == thread
            && r.text().contains("Sent to the agent")
    })
    .await;
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let lines = app.log_lines(&id).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("use the v2 client") && l.contains("(slack)")),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"inbox files: 1".to_string()),
        "one message, once: {lines:#?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_continues_a_finished_job_it_names_and_no_other() {
    let app = spawn_app(|s| {
        s.agents.insert("quick".into(), sh_agent(RESULT));
        s.agents.insert("slow".into(), sh_agent("sleep 30"));
    })
    .await;
    let first = app.submit("quick", "one").await;
    app.wait_for_end(&first, LIMIT).await;
    let slow = app.submit("slow", "still going").await;

    let (status, body) = app
        .post_job(json!({"agent": "quick", "task": "two", "follows": first}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["follows"]["job_id"], first.as_str(), "{body}");
    assert_eq!(body["follows"]["summary"], "done", "{body}");
    assert_eq!(body["chain"], first.as_str(), "{body}");

    let (status, body) = app
        .post_job(json!({"agent": "quick", "task": "three", "follows": slow}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "not_finished", "{body}");
    let (status, body) = app
        .post_job(json!({"agent": "quick", "task": "four", "follows": "nosuchjob123"}))
        .await;
    assert_eq!(status, 404, "{body}");
    // Neither refusal queued a job.
    assert_eq!(listed_jobs(&app).await.len(), 3);
    app.act(&slow, "cancel").await;
    app.stop().await;
}
