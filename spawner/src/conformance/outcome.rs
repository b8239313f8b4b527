//! How a workload's run ends: to its end with its output and result, with the agent's exit
//! code, or killed for going over its memory limit.

use contract::{exit, OutputStream, RunOutcome};

use super::{Lab, Trial};
use crate::{Resources, WorkloadStatus};

/// Output on both streams, a pause long enough to be seen running (a busy kubelet reports
/// a pod's phase seconds late), a result file.
const WORKER: &str = "echo \"working on $AGENTSMITH_TASK\"; echo to-stderr >&2; sleep 6; \
     printf '{\"summary\":\"fixed %s\"}' \"$AGENTSMITH_TASK\" > \"$AGENTSMITH_RESULT_FILE\"; \
     echo done";

/// A spawned attempt is named `agentsmith-<id>-<attempt>`, is seen running, then exits 0;
/// its runner reported Started, the agent's lines on their streams and Finished with exit
/// code 0 and the result file's summary; `logs()` holds the runner's output, followed to
/// the end while it runs and read whole after.
pub async fn a_job_runs_to_its_end_and_reports_its_output_and_result(lab: &dyn Lab) {
    let trial = Trial::start(lab).await;
    let job = trial.job(WORKER);
    let handle = trial.spawn(&job).await;
    if !trial.caps.runs_agents {
        return trial.runs_nothing(&handle).await;
    }
    let expected = ["working on fix PROJ-1", "done"];
    let (seen, followed) = tokio::join!(
        trial.statuses_to_the_end(&handle),
        trial.logs_holding(&handle, true, &expected)
    );
    let clean = WorkloadStatus::Exited {
        code: exit::OK.into(),
    };
    assert!(
        seen.contains(&WorkloadStatus::Running),
        "never seen running: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&clean), "{seen:?}");
    let unexpected = |s: &&WorkloadStatus| {
        !matches!(s, WorkloadStatus::Pending { .. } | WorkloadStatus::Running) && **s != clean
    };
    assert_eq!(seen.iter().find(unexpected), None, "{seen:?}");
    let (outcome, result) = trial.finished(&job.job_id).await;
    trial.ran_once(&job);
    assert_eq!(outcome, RunOutcome::Exited { code: 0 });
    let summary = result.and_then(|r| r.summary);
    assert_eq!(summary.as_deref(), Some("fixed fix PROJ-1"));
    let id = &job.job_id;
    assert_eq!(
        trial.dispatcher.lines_of(id, OutputStream::Stdout),
        ["working on fix PROJ-1", "done"]
    );
    assert_eq!(
        trial.dispatcher.lines_of(id, OutputStream::Stderr),
        ["to-stderr"]
    );
    let whole = trial.logs_holding(&handle, false, &expected).await;
    for lines in [&followed, &whole] {
        assert!(lines.iter().any(|l| l.contains("to-stderr")), "{lines:?}");
    }
}

/// An agent exiting 3 is reported as `Exited { code: 3 }` by its runner, and the
/// workload ends by itself: the runner's own exit is clean, for it reported the run.
pub async fn a_failing_agent_is_reported_with_its_exit_code_and_its_workload_ends(lab: &dyn Lab) {
    let trial = Trial::start(lab).await;
    let job = trial.job("echo about to fail; exit 3");
    let handle = trial.spawn(&job).await;
    if !trial.caps.runs_agents {
        return trial.runs_nothing(&handle).await;
    }
    let (outcome, _) = trial.finished(&job.job_id).await;
    assert_eq!(outcome, RunOutcome::Exited { code: 3 });
    assert_eq!(
        trial.ended(&handle).await,
        WorkloadStatus::Exited {
            code: exit::OK.into()
        }
    );
    trial.ran_once(&job);
    assert_eq!(
        trial.dispatcher.lines_of(&job.job_id, OutputStream::Stdout),
        ["about to fail"]
    );
}

/// An agent asking for 160 MiB under a 48 MiB limit: where the backend enforces memory
/// limits, the runner reports it OOM-killed or (when the runner went down with it) the
/// workload's status says so; where it does not, the agent gets its memory and exits 0.
pub async fn an_agent_over_its_memory_limit_is_oom_killed_where_limits_are_enforced(lab: &dyn Lab) {
    let trial = Trial::start(lab).await;
    let mut profile =
        lab.profile("echo hogging; exec dd if=/dev/zero of=/dev/null bs=160M count=1");
    profile.resources = Resources {
        memory_bytes: Some(48 << 20),
        ..Resources::default()
    };
    let job = trial.job_with(profile);
    let handle = trial.spawn(&job).await;
    if !trial.caps.runs_agents {
        return trial.runs_nothing(&handle).await;
    }
    let status = trial.ended(&handle).await;
    let reported = trial.dispatcher.finished_of(&job.job_id);
    if !trial.caps.enforces_memory {
        assert_eq!(status, WorkloadStatus::Exited { code: 0 });
        let (outcome, _) = trial.finished(&job.job_id).await;
        assert_eq!(
            outcome,
            RunOutcome::Exited { code: 0 },
            "an agent over a limit the backend does not enforce ended otherwise"
        );
        return;
    }
    let oom_status =
        matches!(&status, WorkloadStatus::Failed { reason, .. } if reason.contains("OOM-killed"));
    let oom_report = matches!(reported, Some((RunOutcome::OomKilled, _)));
    // The runner reports once its final event is delivered, which may come just after the
    // workload's own end.
    let oom_report =
        oom_report || (!oom_status && trial.finished(&job.job_id).await.0 == RunOutcome::OomKilled);
    assert!(
        oom_status || oom_report,
        "neither the status ({status:?}) nor the runner ({:?}) says OOM-killed",
        trial.dispatcher.finished_of(&job.job_id)
    );
    if let WorkloadStatus::Failed { retryable, .. } = status {
        assert!(!retryable, "an OOM kill is retried as if it could pass");
    }
}
