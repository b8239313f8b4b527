//! The dashboard in a real browser: headless Chromium driven through `chromedriver`
//! (Debian's `chromium` and `chromium-driver`), against a dispatcher with a real Redis and
//! the process spawner. Screenshots land in `target/test-output/dashboard/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agentsmith::settings::{CheckoutSettings, ProjectSettings};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use queue::JobState;
use secrecy::SecretString;
use serde_json::{json, Value};
use testkit::fake_api::FakeApi;
use testkit::git_server::GitServer;

use crate::helpers::{sh_agent, spawn_app, temp_dir, wait_until, TestApp, TOKEN};

const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL: &str = "apt-get install -y chromium chromium-driver (scripts/test installs them)";

/// The webshop repository's token on the test git server.
const GIT_TOKEN: &str = "dashboard-git-token";

/// Generous: the machine is small and shared.
const LIMIT: Duration = Duration::from_secs(30);

/// A `chromedriver` child process, killed when dropped.
pub(crate) struct Driver {
    child: Child,
    url: String,
    profile: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn chromedriver_path() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("chromedriver"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("chromedriver is not installed: {INSTALL}"))
}

/// Starts `chromedriver` on a free port and waits until it is ready.
pub(crate) async fn start_driver() -> Driver {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is not installed: {INSTALL}"
    );
    let binary = chromedriver_path();
    let port = testkit::free_port();
    let child = Command::new(&binary)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        profile: temp_dir("chromium-profile"),
    };
    let http = reqwest::Client::new();
    let status = format!("{}/status", driver.url);
    let ready = wait_until(LIMIT, || async {
        match http.get(&status).send().await {
            Ok(r) => r
                .json::<Value>()
                .await
                .is_ok_and(|v| v["value"]["ready"] == true),
            Err(_) => false,
        }
    })
    .await;
    assert!(ready, "chromedriver did not become ready on {}", driver.url);
    driver
}

pub(crate) async fn connect(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1360,900", "--hide-scrollbars",
                format!("--user-data-dir={}", driver.profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("no browser session from chromedriver: {e}"))
}

/// Where screenshots go: `target/test-output/dashboard/`.
fn output_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .find(|d| d.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| exe.parent().unwrap().join("..").join(".."));
    let dir = target.join("test-output").join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let path = output_dir().join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// The text of the first element matching `css`, if there is one.
async fn text(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

/// Waits until the element matching `css` shows text containing `needle`; that text.
/// (Pages re-render parts of themselves, so the text that matched is kept rather than
/// read again from an element that may have been replaced.)
async fn wait_text(c: &Client, css: &str, needle: &str) -> String {
    let seen = std::sync::Mutex::new(None::<String>);
    let held = wait_until(LIMIT, || async {
        let now = text(c, css).await;
        let found = now.as_deref().is_some_and(|t| t.contains(needle));
        *seen.lock().unwrap() = now;
        found
    })
    .await;
    let seen = seen.into_inner().unwrap();
    assert!(held, "{css} never showed {needle:?}; it shows {seen:?}");
    seen.unwrap()
}

/// Waits until an element matching `css` exists.
async fn wait_for(c: &Client, css: &str) {
    let held = wait_until(LIMIT, || async { c.find(Locator::Css(css)).await.is_ok() }).await;
    assert!(held, "{css} never appeared");
}

/// Clicks the element matching `css`, finding it again if the page re-rendered it
/// between finding and clicking.
async fn click(c: &Client, css: &str) {
    let clicked = wait_until(LIMIT, || async {
        match c.find(Locator::Css(css)).await {
            Ok(e) => e.click().await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(clicked, "{css} could not be clicked");
}

async fn displayed(c: &Client, css: &str) -> bool {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

#[tokio::test]
#[ignore = "needs chromium and chromedriver: apt-get install -y chromium chromium-driver (scripts/test installs them)"]
async fn the_dashboard_shows_jobs_live_follows_a_log_and_cancels_in_a_real_browser() {
    let driver = start_driver().await;
    // The webshop's repository, checked out for its jobs; its pull requests go to the fake.
    let git = GitServer::start(GIT_TOKEN).await;
    git.create_repo("webshop", &[("README.md", "the webshop\n")], "main");
    let fake = FakeApi::start().await;
    let repo = git.url("webshop");
    let github = fake.url.clone();
    let app = spawn_app(move |s| {
        s.agents.insert(
            "slow".into(),
            sh_agent("for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; sleep 0.5; done"),
        );
        s.agents.insert(
            "asker".into(),
            sh_agent(
                "agent-runner say 'reading the ticket'; \
                 choice=$(agent-runner ask 'The ticket names two services. Which one?' --choice billing --choice payments) || exit 9; \
                 echo \"chose $choice\"",
            ),
        );
        s.agents.insert(
            "fixer".into(),
            sh_agent(
                "echo fixed >> README.md; \
                 printf '{\"summary\":\"fixed %s\",\"links\":[{\"url\":\"http://example.invalid/pr/1\"}]}' \"$AGENTSMITH_TASK\" > \"$AGENTSMITH_RESULT_FILE\"",
            ),
        );
        s.sources.github.token = SecretString::from("ghp-dashboard-test".to_string());
        s.sources.github.api_base_url = github;
        s.projects.insert(
            "webshop".into(),
            ProjectSettings {
                repo,
                agent: "fixer".into(),
                github_repos: vec!["acme/webshop".into()],
                checkout: CheckoutSettings {
                    token: SecretString::from(GIT_TOKEN.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
    })
    .await;
    let client = connect(&driver).await;
    let outcome = std::panic::AssertUnwindSafe(scenario(&client, &app))
        .catch_unwind()
        .await;
    // End the browser with its session whatever happened; the driver goes with `driver`.
    let _ = client.close().await;
    app.stop().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The jobs the scenario submits through the API.
struct Jobs {
    /// Failed (agent `fail`).
    failed: String,
    /// Succeeded (project `webshop`, ticket SHOP-42).
    ok: String,
    /// Cancelled while it prints its ten lines (agent `slow`).
    slow: String,
}

/// The jobs table's row of `id`.
fn row(id: &str) -> String {
    format!("tr[data-job=\"{id}\"]")
}

/// What a user does and sees, in order; each step starts where the last one left off.
async fn scenario(c: &Client, app: &TestApp) {
    sign_in(c, app).await;
    let jobs = jobs_appear_and_change_live(c, app).await;
    filters_keep_only_their_jobs(c, app, &jobs).await;
    the_job_page_follows_the_log_and_cancels(c, app, &jobs.slow).await;
    ended_jobs_show_why_and_what(c, app, &jobs).await;
    let busy = the_jobs_page_and_the_overview(c, app, &jobs).await;
    a_narrow_screen_stacks_the_table(c, app, &jobs, &busy).await;
    a_question_is_answered_by_a_click(c, app).await;
    a_follow_up_shows_its_chain(c, app, &jobs).await;
    signing_out_forgets_the_token(c).await;
}

/// Signing in: a wrong token is refused, the right one lets the user in.
async fn sign_in(c: &Client, app: &TestApp) {
    c.goto(&format!("{}/", app.address)).await.unwrap();
    wait_for(c, "#signin:not([hidden])").await;
    let token = c.find(Locator::Css("#token")).await.unwrap();
    token.send_keys("not-the-token-0123456789").await.unwrap();
    click(c, "#signin-submit").await;
    wait_text(c, "#signin-error", "not accepted").await;
    token.clear().await.unwrap();
    token.send_keys(TOKEN).await.unwrap();
    click(c, "#signin-submit").await;
    wait_for(c, "#jobs-body").await;
    assert!(
        !displayed(c, "#signin").await,
        "the sign-in form is still shown"
    );
    let stored = c
        .execute("return sessionStorage.getItem('agentsmith.token')", vec![])
        .await
        .unwrap();
    assert_eq!(stored, json!(TOKEN), "the token is kept in sessionStorage");
    let local = c
        .execute("return localStorage.length", vec![])
        .await
        .unwrap();
    assert_eq!(local, json!(0), "nothing is kept in localStorage");
    wait_text(c, "#live", "live").await;
}

/// Jobs submitted through the API appear without a reload, and change state live.
async fn jobs_appear_and_change_live(c: &Client, app: &TestApp) -> Jobs {
    let failed = app.submit("fail", "break the build").await;
    let (status, body) = app
        .post_job(json!({"project": "webshop", "ticket": "SHOP-42", "task": "fix the flaky test"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let ok = body["id"].as_str().unwrap().to_string();
    wait_text(c, &row(&failed), "failed").await;
    wait_text(c, &row(&ok), "succeeded").await;
    let (status, body) = app
        .post_job(json!({"agent": "slow", "project": "webshop", "ticket": "SHOP-7", "task": "print ten lines, slowly"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let slow = body["id"].as_str().unwrap().to_string();
    let shown = wait_text(c, &row(&slow), "running").await;
    for word in ["slow", "webshop", "SHOP-7", "api", "1 / 3"] {
        assert!(shown.contains(word), "the row lacks {word:?}: {shown}");
    }
    // Newest first (read in one script: rows are replaced as they change).
    let first = c
        .execute(
            "return document.querySelector('#jobs-body tr').dataset.job",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(first, json!(slow));
    Jobs { failed, ok, slow }
}

/// Filtering by state keeps only those jobs; so does filtering by project.
async fn filters_keep_only_their_jobs(c: &Client, app: &TestApp, jobs: &Jobs) {
    c.goto(&format!("{}/#/jobs?state=failed", app.address))
        .await
        .unwrap();
    wait_text(c, &row(&jobs.failed), "failed").await;
    assert!(
        c.find(Locator::Css(&row(&jobs.ok))).await.is_err(),
        "the state filter shows a succeeded job"
    );
    c.goto(&format!("{}/#/jobs?project=webshop", app.address))
        .await
        .unwrap();
    wait_text(c, &row(&jobs.ok), "webshop").await;
    assert!(
        c.find(Locator::Css(&row(&jobs.failed))).await.is_err(),
        "the project filter shows a job of no project"
    );
}

/// The job page follows the log as the agent prints it; cancelling, confirmed, stops it.
async fn the_job_page_follows_the_log_and_cancels(c: &Client, app: &TestApp, slow: &str) {
    c.goto(&format!("{}/#/jobs/{slow}", app.address))
        .await
        .unwrap();
    wait_text(c, "#log", "line 2").await;
    let early = text(c, "#log").await.unwrap();
    assert!(
        !early.contains("line 10"),
        "the whole log was there at once: {early}"
    );
    wait_text(c, "#log", "line 4").await;
    wait_text(c, "#job-state", "running").await;
    wait_text(c, "#attempts", "agentsmith-").await;
    wait_text(c, "#facts", "print ten lines, slowly").await;
    wait_text(c, "#facts", "/webshop.git").await;
    c.set_window_size(1360, 1100).await.unwrap();
    screenshot(c, "job.png").await;
    c.set_window_size(1360, 900).await.unwrap();

    click(c, "#cancel").await;
    let dialog = c.get_alert_text().await.unwrap();
    assert!(dialog.contains("Cancel job"), "{dialog}");
    c.accept_alert().await.unwrap();
    wait_text(c, "#job-state", "cancelled").await;
    wait_text(c, "#timeline", "cancelled").await;
    assert_eq!(app.job(slow).await.state, JobState::Cancelled);
    let log = text(c, "#log").await.unwrap();
    assert!(!log.contains("line 10"), "the agent was not stopped: {log}");
}

/// A job whose agent asks shows the question with a button per choice; a click answers it,
/// the agent goes on with the answer, and the timeline tells who answered what.
async fn a_question_is_answered_by_a_click(c: &Client, app: &TestApp) {
    let id = app.submit("asker", "fix the flaky test").await;
    c.goto(&format!("{}/#/jobs/{id}", app.address))
        .await
        .unwrap();
    wait_text(c, "#question-text", "Which one?").await;
    wait_text(c, "#job-state", "waiting for input").await;
    wait_text(c, "#timeline", "reading the ticket").await;
    c.set_window_size(1360, 1000).await.unwrap();
    screenshot(c, "question.png").await;
    c.set_window_size(1360, 900).await.unwrap();
    click(c, "#question button[data-choice=\"payments\"]").await;
    wait_text(c, "#job-state", "succeeded").await;
    wait_text(c, "#log", "chose payments").await;
    wait_text(c, "#timeline", "dashboard answered: payments").await;
    assert!(
        !displayed(c, "#question").await,
        "the answered question is still shown"
    );
    let answer = app.job(&id).await.answer.expect("the answer is recorded");
    assert_eq!(
        (answer.text.as_str(), answer.by.as_str()),
        ("payments", "dashboard")
    );
}

/// A follow-up's page names the job it continues, how that ended and what it said; the link
/// leads there, and that page names the follow-up.
async fn a_follow_up_shows_its_chain(c: &Client, app: &TestApp, jobs: &Jobs) {
    let (status, body) = app
        .post_job(json!({"project": "webshop", "ticket": "SHOP-42",
                         "task": "also add a test", "follows": jobs.ok}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    c.goto(&format!("{}/#/jobs/{id}", app.address))
        .await
        .unwrap();
    wait_text(c, "#chain-previous", &jobs.ok).await;
    wait_text(c, "#chain-previous", "fixed fix the flaky test").await;
    wait_text(c, "#job-state", "succeeded").await;
    screenshot(c, "follow-up.png").await;
    click(c, "#chain-previous a[data-chain=\"previous\"]").await;
    wait_text(c, "#chain-next", &id).await;
    wait_text(c, "#job-state", "succeeded").await;
}

/// A failed job shows why; a finished one shows its result with its links.
async fn ended_jobs_show_why_and_what(c: &Client, app: &TestApp, jobs: &Jobs) {
    let failed = &jobs.failed;
    let reason = app
        .job(failed)
        .await
        .reason
        .expect("a failed job has a reason");
    c.goto(&format!("{}/#/jobs/{failed}", app.address))
        .await
        .unwrap();
    wait_text(c, "#job-state", "failed").await;
    wait_text(c, "#reason", &reason).await;
    wait_text(c, "#log", "about to fail").await;
    wait_text(c, "#exit-code", "3").await;

    c.goto(&format!("{}/#/jobs/{}", app.address, jobs.ok))
        .await
        .unwrap();
    wait_text(c, "#result", "fixed fix the flaky test").await;
    let href = |css: &str| {
        let script = format!("return document.querySelector('{css}').getAttribute('href')");
        async move { c.execute(&script, vec![]).await }
    };
    assert_eq!(
        href("#result ul.links a").await.unwrap(),
        json!("http://example.invalid/pr/1")
    );
    // The agent's change went to its branch, and the pull request opened from it is shown.
    wait_text(c, "#change", "Pull request #1 opened").await;
    wait_text(c, "#change", "to agentsmith/SHOP-42 (1 files, +1").await;
    assert_eq!(
        href("#change a").await.unwrap(),
        json!("https://github.example/acme/webshop/pull/1")
    );
}

/// The jobs page once more, for its picture (one job running beside the ended ones), and
/// the overview; the running job's id.
async fn the_jobs_page_and_the_overview(c: &Client, app: &TestApp, jobs: &Jobs) -> String {
    let (status, body) = app
        .post_job(json!({"agent": "slow", "project": "webshop", "ticket": "SHOP-9", "task": "update the changelog"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let busy = body["id"].as_str().unwrap().to_string();
    c.goto(&format!("{}/#/jobs", app.address)).await.unwrap();
    wait_text(c, &row(&busy), "running").await;
    wait_text(c, &row(&jobs.slow), "cancelled").await;
    let settled = wait_until(LIMIT, || async {
        c.execute(
            "return document.getAnimations().filter(a => a.animationName === 'flash').length",
            vec![],
        )
        .await
        .is_ok_and(|n| n == json!(0))
    })
    .await;
    assert!(settled, "the rows' highlight never faded");
    screenshot(c, "jobs.png").await;

    c.goto(&format!("{}/#/overview", app.address))
        .await
        .unwrap();
    wait_text(c, "#health", "Redis: reachable").await;
    wait_text(c, "#health", "Spawner: reachable").await;
    // The targets: the only one, up, with the busy job.
    wait_text(c, "#targets tr[data-target=default]", "process").await;
    wait_text(
        c,
        "#targets tr[data-target=default] td:nth-of-type(2)",
        "up",
    )
    .await;
    wait_text(c, "#targets tr[data-target=default] td:nth-of-type(3)", "1").await;
    wait_text(c, "#admitted", "/ 10").await;
    wait_text(c, "#last-hour", "4").await;
    wait_text(c, "#admitted", "1 / 10").await;
    // The stages are figures of the last hour (captions are set in capitals): the four
    // jobs each waited in the queue.
    wait_text(c, "#stages caption", "LAST HOUR").await;
    wait_text(c, "#stages tbody tr:nth-child(2) th", "Queue").await;
    wait_text(c, "#stages tbody tr:nth-child(2) td", "4").await;
    wait_text(c, "#end-to-end caption", "SINCE THIS DISPATCHER STARTED").await;
    screenshot(c, "overview.png").await;
    busy
}

/// On a narrow screen the jobs table stacks; then the running job is cancelled.
async fn a_narrow_screen_stacks_the_table(c: &Client, app: &TestApp, jobs: &Jobs, busy: &str) {
    c.set_window_size(420, 900).await.unwrap();
    c.goto(&format!("{}/#/jobs", app.address)).await.unwrap();
    wait_text(c, &row(&jobs.slow), "cancelled").await;
    let head_shown = displayed(c, "table.jobs thead th").await;
    assert!(!head_shown, "the table header is shown on a narrow screen");
    screenshot(c, "jobs-narrow.png").await;
    assert_eq!(app.act(busy, "cancel").await.status(), 200);
}

/// Signing out forgets the token.
async fn signing_out_forgets_the_token(c: &Client) {
    click(c, "#signout").await;
    wait_for(c, "#signin:not([hidden])").await;
    let stored = c
        .execute("return sessionStorage.getItem('agentsmith.token')", vec![])
        .await
        .unwrap();
    assert_eq!(stored, Value::Null);
}
