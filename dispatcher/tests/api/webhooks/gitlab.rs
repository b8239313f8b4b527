//! GitLab: an `/agent fix` note on an issue runs a job whose result is noted with the
//! private token.

use queue::{JobState, Origin};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_agent_fix_note_runs_a_job_and_notes_the_result_with_the_private_token() {
    let fake = FakeApi::start().await;
    let app = webhook_app(&fake, |_| {}).await;
    let note = gitlab_note(4, "/agent fix", "Issue").to_string();
    let (status, answer) = send(to_gitlab(
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
