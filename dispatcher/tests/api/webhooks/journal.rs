//! The delivery journal (issue 16): every verified delivery is kept with its source,
//! delivery id, actor, decision and job, and none that failed verification; it survives a
//! restart and holds to its cap; an admin replays a delivery through the same checks and
//! dedup: a delivery that made a job gets that job back, never a second one, and one the
//! provider could not be asked about is queued once the provider answers.

use queue::JobState;
use serde_json::{json, Value};

use super::*;

/// The journal's newest entries, as `GET /v1/deliveries` lists them (`query` appended).
async fn journal(app: &TestApp, query: &str) -> Vec<Value> {
    let response = app
        .http
        .get(format!("{}/v1/deliveries{query}", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["deliveries"].as_array().cloned().unwrap_or_default()
}

/// `POST /v1/deliveries/{id}/replay` with the test token: the status and the body.
async fn replay(app: &TestApp, id: &str) -> (u16, Value) {
    send(
        app.http
            .post(format!("{}/v1/deliveries/{id}/replay", app.address))
            .bearer_auth(TOKEN)
            .json(&json!({})),
    )
    .await
}

/// GitHub's `issues` event: `login` labelled issue `number` of `acme/shop` with `label`.
fn labelled(number: u64, login: &str, label: &str) -> Vec<u8> {
    let mut issue = github_labeled("acme/shop", number, label);
    issue["sender"] = json!({"login": login, "type": "User"});
    issue.to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verified_delivery_is_kept_with_its_decision_and_a_wrongly_signed_one_is_not() {
    let fake = FakeApi::start().await;
    fake.grant_github("acme/shop", "rita", "read");
    let app = webhook_app(&fake, |_| {}).await;
    let trigger = labelled(7, "ann", "agent");
    let (status, queued) = send(to_github(&app, Sign::Right, "issues", "d-1", &trigger)).await;
    assert_eq!(status, 202, "{queued}");
    let job = queued["job_id"].as_str().unwrap().to_string();
    let (_, duplicate) = send(to_github(&app, Sign::Right, "issues", "d-2", &trigger)).await;
    assert_eq!(duplicate["status"], "duplicate", "{duplicate}");
    let (_, ignored) = send(to_github(
        &app,
        Sign::Right,
        "issues",
        "d-3",
        &labelled(8, "ann", "bug"),
    ))
    .await;
    assert_eq!(ignored["status"], "ignored", "{ignored}");
    let (_, refused) = send(to_github(
        &app,
        Sign::Right,
        "issues",
        "d-4",
        &labelled(9, "rita", "agent"),
    ))
    .await;
    assert_eq!(refused["status"], "refused", "{refused}");
    let (status, _) = send(to_github(&app, Sign::Wrong, "issues", "d-5", &trigger)).await;
    assert_eq!(status, 401);
    let (status, _) = send(to_github(&app, Sign::Right, "issues", "d-6", b"{not json")).await;
    assert_eq!(status, 400);

    let entries = journal(&app, "").await;
    let ids: Vec<&str> = entries
        .iter()
        .map(|e| e["delivery_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["d-6", "d-4", "d-3", "d-2", "d-1"],
        "newest first, the wrongly signed one left out: {entries:#?}"
    );
    let [bad, refused, ignored, duplicate, queued] = &entries[..] else {
        unreachable!()
    };
    for entry in &entries {
        assert_eq!(entry["source"], "github", "{entry}");
        assert_eq!(entry["route"], "github", "{entry}");
        assert_eq!(entry["event"], "issues", "{entry}");
        assert!(
            entry.get("body").is_none(),
            "bodies are never shown: {entry}"
        );
    }
    assert_eq!(
        (&queued["decision"], &queued["job_id"], &queued["status"]),
        (&json!("queued"), &json!(job), &json!(202))
    );
    assert_eq!(queued["actor"], "ann", "{queued}");
    assert_eq!(queued["replayable"], true, "{queued}");
    assert_eq!(
        (&duplicate["decision"], &duplicate["job_id"]),
        (&json!("duplicate"), &json!(job))
    );
    assert_eq!(
        duplicate["digest"], queued["digest"],
        "one body, one digest"
    );
    assert_eq!(ignored["decision"], "ignored", "{ignored}");
    assert!(
        ignored["reason"]
            .as_str()
            .unwrap()
            .contains("not a trigger"),
        "{ignored}"
    );
    assert_eq!(
        (&refused["decision"], &refused["actor"]),
        (&json!("refused"), &json!("rita"))
    );
    let reason = refused["reason"].as_str().unwrap();
    assert!(reason.contains("write role on acme/shop"), "{reason}");
    assert_eq!(
        (&bad["decision"], &bad["code"], &bad["status"]),
        (&json!("error"), &json!("bad_request"), &json!(400))
    );
    // Filters, and one entry by its id.
    let only = journal(&app, "?decision=refused&source=github").await;
    assert_eq!(only.len(), 1, "{only:#?}");
    assert!(journal(&app, "?source=jira").await.is_empty());
    let id = queued["id"].as_str().unwrap();
    let (status, shown) = send(
        app.http
            .get(format!("{}/v1/deliveries/{id}", app.address))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!((status, &shown), (200, queued));
    let (status, body) = send(
        app.http
            .get(format!("{}/v1/deliveries?decision=maybe", app.address))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    app.wait_for_end(&job, LIMIT).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_command_is_kept_with_its_user_and_without_its_verification_token() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    // The command's form holds Slack's legacy verification token (see `slash_command`).
    command(&app, &fake, "fix PAY-12", REQUESTER, "t.77", "1").await;
    let job = only_job_id(&app).await;
    let entries = journal(&app, "?source=slack").await;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    let entry = &entries[0];
    assert_eq!(entry["route"], "slack/commands", "{entry}");
    assert_eq!(entry["delivery_id"], "t.77", "{entry}");
    assert_eq!(entry["actor"], REQUESTER, "{entry}");
    assert_eq!(entry["actor_name"], REQUESTER.to_lowercase(), "{entry}");
    assert_eq!(
        (&entry["decision"], &entry["job_id"]),
        (&json!("queued"), &json!(job))
    );
    let id = entry["id"].as_str().unwrap();
    let kept = app.ctx.queue.delivery_body(id).await.unwrap().unwrap();
    let kept = String::from_utf8(kept).unwrap();
    assert!(!kept.contains("gIkuvaNzQIHg97ATvDxqgjtO"), "{kept}");
    assert!(kept.contains("fix+PAY-12"), "{kept}");
    // Replayed, the command is the same delivery by its digest: the same job.
    let (status, replayed) = replay(&app, id).await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(
        (&replayed["decision"], &replayed["job_id"]),
        (&json!("duplicate"), &json!(job))
    );
    assert_eq!(listed_jobs(&app).await.len(), 1);
    app.wait_for_end(&job, LIMIT).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_survives_a_restart_and_a_replay_there_makes_no_second_job() {
    let fake = FakeApi::start().await;
    let mut settings = test_settings(&random_prefix());
    configure(&mut settings, &fake);
    let first = start(settings.clone(), None).await;
    let trigger = labelled(7, "ann", "agent");
    let (status, queued) = send(to_github(&first, Sign::Right, "issues", "d-1", &trigger)).await;
    assert_eq!(status, 202, "{queued}");
    let job = queued["job_id"].as_str().unwrap().to_string();
    first.wait_for_end(&job, LIMIT).await;
    let before = journal(&first, "").await;
    first.stop().await;

    let second = start(settings, None).await;
    let after = journal(&second, "").await;
    assert_eq!(
        after, before,
        "the journal is in Redis, not in the dispatcher"
    );
    let id = after[0]["id"].as_str().unwrap();
    let (status, replayed) = replay(&second, id).await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(
        (&replayed["decision"], &replayed["job_id"]),
        (&json!("duplicate"), &json!(job))
    );
    assert_eq!(replayed["replay_of"], id, "{replayed}");
    assert_ne!(replayed["id"], id, "a replay is an entry of its own");
    assert_eq!(listed_jobs(&second).await.len(), 1, "no second job");
    let entries = journal(&second, "").await;
    assert_eq!(entries.len(), 2, "{entries:#?}");
    assert_eq!(entries[0]["id"], replayed["id"]);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_the_provider_could_not_be_asked_about_is_queued_by_its_replay_once() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    fake.fail_next(1, "/collaborators/");
    let trigger = labelled(7, "ann", "agent");
    let (status, answer) = send(to_github(&app, Sign::Right, "issues", "d-1", &trigger)).await;
    assert_eq!(status, 503, "{answer}");
    let entries = journal(&app, "").await;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    let original = &entries[0];
    assert_eq!(
        (
            &original["decision"],
            &original["code"],
            &original["status"]
        ),
        (&json!("error"), &json!("access_unchecked"), &json!(503))
    );
    assert_eq!(original["actor"], "ann", "{original}");
    assert!(listed_jobs(&app).await.is_empty());
    let id = original["id"].as_str().unwrap();

    // The provider answers again: the replay goes through and queues the job.
    let (status, replayed) = replay(&app, id).await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["decision"], "queued", "{replayed}");
    assert_eq!(replayed["status"], 202, "{replayed}");
    assert_eq!(replayed["replay_of"], id, "{replayed}");
    let job = replayed["job_id"].as_str().unwrap().to_string();
    let queued = app.job(&job).await;
    assert_eq!(queued.requester.as_deref(), Some("ann"));
    assert_eq!(queued.ticket.as_deref(), Some("acme/shop#7"));
    // Again, from the first delivery or from the replay: the same job, not another.
    let replay_id = replayed["id"].as_str().unwrap().to_string();
    for again in [id, replay_id.as_str()] {
        let (status, answer) = replay(&app, again).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            (&answer["decision"], &answer["job_id"]),
            (&json!("duplicate"), &json!(job)),
            "replaying {again}"
        );
        assert_eq!(answer["replay_of"], id, "{answer}");
    }
    let (status, shown) = send(
        app.http
            .get(format!("{}/v1/deliveries/{id}", app.address))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(shown["replay_job"], job.as_str(), "{shown}");
    assert_eq!(listed_jobs(&app).await.len(), 1, "one job in all");
    let ended = app.wait_for_end(&job, LIMIT).await;
    assert_eq!(ended.state, JobState::Succeeded, "{ended:#?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_the_sender_redelivered_is_a_duplicate_by_the_digest() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    fake.fail_next(1, "/collaborators/");
    let trigger = labelled(7, "ann", "agent");
    let (status, _) = send(to_github(&app, Sign::Right, "issues", "d-1", &trigger)).await;
    assert_eq!(status, 503);
    let failed = journal(&app, "").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // GitHub retries on its own, with a new delivery id, before the admin replays.
    let (status, queued) = send(to_github(&app, Sign::Right, "issues", "d-2", &trigger)).await;
    assert_eq!(status, 202, "{queued}");
    let (status, replayed) = replay(&app, &failed).await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(
        (&replayed["decision"], &replayed["job_id"]),
        (&json!("duplicate"), &queued["job_id"])
    );
    assert_eq!(listed_jobs(&app).await.len(), 1);
    app.wait_for_end(queued["job_id"].as_str().unwrap(), LIMIT)
        .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_needs_an_admin_token_and_an_unknown_delivery_is_404() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |s| s.dashboard.public_read = true).await;
    let (status, _) = send(to_github(
        &app,
        Sign::Right,
        "issues",
        "d-1",
        &labelled(8, "ann", "bug"),
    ))
    .await;
    assert_eq!(status, 200);
    let id = journal(&app, "").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let base = &app.address;
    let anonymous = [
        app.http.get(format!("{base}/v1/deliveries")),
        app.http.get(format!("{base}/v1/deliveries/{id}")),
        app.http
            .post(format!("{base}/v1/deliveries/{id}/replay"))
            .json(&json!({})),
        app.http
            .post(format!("{base}/v1/deliveries/{id}/replay"))
            .bearer_auth("wrong-token-0123456789")
            .json(&json!({})),
    ];
    for request in anonymous {
        let (status, body) = send(request).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, jobs) = send(app.http.get(format!("{base}/v1/jobs"))).await;
    assert_eq!(status, 200, "public reads still open the jobs: {jobs}");
    let (status, body) = replay(&app, "nosuchdelivery").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_delivery");
    let (status, body) = send(
        app.http
            .post(format!("{base}/v1/deliveries/{id}/replay"))
            .bearer_auth(TOKEN)
            .json(&json!({"force": true})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = replay(&app, &id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "ignored", "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_keeps_only_its_newest_entries_up_to_its_cap() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |s| s.queue.deliveries_max_len = 3).await;
    for number in 1..=5 {
        let delivery = format!("d-{number}");
        let body = labelled(number, "ann", "bug");
        let (status, _) = send(to_github(&app, Sign::Right, "issues", &delivery, &body)).await;
        assert_eq!(status, 200);
    }
    let entries = journal(&app, "?limit=10").await;
    let ids: Vec<&str> = entries
        .iter()
        .map(|e| e["delivery_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["d-5", "d-4", "d-3"]);
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys = app.ctx.queue.keys();
    let records: Vec<String> = redis::cmd("KEYS")
        .arg(keys.delivery("*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        records.len(),
        3,
        "trimmed entries leave no record: {records:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_shows_and_replays_deliveries() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let (status, queued) = send(to_github(
        &app,
        Sign::Right,
        "issues",
        "d-1",
        &labelled(7, "ann", "agent"),
    ))
    .await;
    assert_eq!(status, 202, "{queued}");
    let job = queued["job_id"].as_str().unwrap().to_string();
    let id = journal(&app, "").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cli = |args: Vec<String>, token: Option<&str>| {
        let address = app.address.clone();
        let token = token.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agentsmith"));
            command
                .arg("deliveries")
                .args(args)
                .env("AGENTSMITH_URL", address)
                .env_remove("AGENTSMITH_API_TOKEN");
            if let Some(token) = token {
                command.env("AGENTSMITH_API_TOKEN", token);
            }
            command.output().unwrap()
        })
    };
    let out = cli(vec!["list".into()], Some(TOKEN)).await.unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| {
            panic!("no row for {id}:\n{table}");
        });
    for cell in ["github", "issues", "ann", "queued", job.as_str()] {
        assert!(row.contains(cell), "{cell} missing: {row}");
    }
    let out = cli(
        vec!["show".into(), id.clone(), "--json".into()],
        Some(TOKEN),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["job_id"], job.as_str(), "{shown}");
    let out = cli(vec!["replay".into(), id.clone()], Some(TOKEN))
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains(&format!("replayed {id} as ")), "{said}");
    assert!(said.contains(&format!("duplicate (job {job})")), "{said}");
    let out = cli(vec!["replay".into(), id.clone()], None).await.unwrap();
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("401"), "{error}");
    assert_eq!(listed_jobs(&app).await.len(), 1);
    app.wait_for_end(&job, LIMIT).await;
    app.stop().await;
}
