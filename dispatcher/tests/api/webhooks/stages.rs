//! Every stage of a job's life is timed: a job from a signed GitHub delivery to its
//! delivered final comment leaves one observation in each of the six stages of
//! `agentsmith_stage_seconds`, labelled with its source, backend, target and profile.

use queue::JobState;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_from_a_signed_webhook_to_its_delivered_reply_is_timed_in_every_stage() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let id = github_issue_queued(&app, "stages-1").await;
    let job = app.wait_for_end(&id, LIMIT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    fake.wait_for("the Finished comment", LIMIT, |r| {
        r.text().contains(&format!("Finished {id}"))
    })
    .await;
    wait_for_outbox_drained(&app).await;
    let metrics = app.metrics_text().await;
    let profile = job.agent.as_str();
    // An acknowledgement comes before the job has a target.
    let ran = ("process", "default", profile);
    for (stage, (backend, target, profile)) in [
        ("acknowledge", ("none", "none", "none")),
        ("queue", ran),
        ("spawn", ran),
        ("start", ran),
        ("run", ran),
        ("reply", ran),
    ] {
        let series = format!(
            "agentsmith_stage_seconds_count{{stage=\"{stage}\",source=\"github\",backend=\"{backend}\",target=\"{target}\",profile=\"{profile}\"}} 1\n"
        );
        assert!(metrics.contains(&series), "no {series} in\n{metrics}");
    }
    let observed = metrics
        .lines()
        .filter(|l| l.starts_with("agentsmith_stage_seconds_count"))
        .count();
    assert_eq!(
        observed, 6,
        "one series per stage, nothing else:\n{metrics}"
    );
    let overview: Value = app.get_json("/v1/overview").await;
    for stage in ["acknowledge", "queue", "spawn", "start", "run", "reply"] {
        let count = &overview["latency"][stage]["count"];
        assert_eq!(count, 1, "the overview's {stage}: {overview}");
        let last_hour = &overview["latency_last_hour"][stage];
        assert_eq!(last_hour["count"], 1, "the last hour's {stage}: {overview}");
        assert!(
            last_hour["p99"].is_f64(),
            "the last hour's {stage}: {overview}"
        );
    }
    app.stop().await;
}
