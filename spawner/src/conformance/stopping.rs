//! How workloads go: cancelled within their grace period, removed after their time to
//! live, removed when no dispatcher owns them.

use std::time::{Duration, Instant};

use contract::{exit, OutputStream, RunOutcome};
use testkit::stand_in::{Answer, Script};

use super::{cancel, listed, Lab, Trial, GRACE};
use crate::{JobHandle, JobSpawner, WorkloadStatus};

/// An agent that ends when told to, and says so.
const OBEDIENT: &str =
    "trap 'echo got TERM; exit 0' TERM; echo waiting; while true; do sleep 0.2; done";

/// A handle of a workload that never existed.
fn phantom(spawner: &dyn JobSpawner) -> JobHandle {
    JobHandle {
        backend: spawner.backend().into(),
        name: "agentsmith-neverexisted-1".into(),
        job_id: "neverexisted".into(),
        attempt: 1,
        id: None,
        target: contract::DEFAULT_TARGET.into(),
    }
}

/// `cancel(handle, grace)` of a running agent that traps SIGTERM: the agent gets it and
/// the runner reports Terminated within the grace period and the backend's margin; the
/// workload is then over (ended cleanly, not killed) or gone. Cancelling it again
/// succeeds, and so does cancelling a workload that never existed.
pub async fn cancel_stops_a_running_agent_within_its_grace_period_and_is_idempotent(lab: &dyn Lab) {
    let trial = Trial::start(lab).await;
    let job = trial.job(OBEDIENT);
    let handle = trial.spawn(&job).await;
    if trial.caps.runs_agents {
        trial.printed(&job.job_id, "waiting").await;
    }
    let cancelled = Instant::now();
    cancel(&*trial.spawner, &handle).await;
    let limit = GRACE + trial.caps.stop_margin;
    if trial.caps.runs_agents {
        let (outcome, _) = trial.finished(&job.job_id).await;
        let took = cancelled.elapsed();
        assert_eq!(outcome, RunOutcome::Terminated);
        assert!(
            took <= limit,
            "the agent was stopped after {took:?}, not within {limit:?}"
        );
        let lines = trial.dispatcher.lines_of(&job.job_id, OutputStream::Stdout);
        assert_eq!(lines, ["waiting", "got TERM"]);
        trial.ran_once(&job);
    }
    let status = trial.ended(&handle).await;
    let clean = WorkloadStatus::Exited {
        code: exit::OK.into(),
    };
    assert!(
        status == WorkloadStatus::NotFound || status == clean,
        "a cancelled workload ended as {status:?}: stopped by force, not by its runner"
    );
    cancel(&*trial.spawner, &handle).await;
    assert!(trial
        .spawner
        .status(&handle)
        .await
        .is_ok_and(|s| s.is_over()));
    cancel(&*trial.spawner, &phantom(&*trial.spawner)).await;
}

/// A finished workload stays (its status and output readable) through a `housekeeping()`
/// right after its end, then is gone after its time to live (the backend's knob for it,
/// with `housekeeping()` called as the dispatcher's watchdog does). A backend that runs
/// nothing has nothing finish: its workload stays running through housekeeping.
pub async fn a_finished_workload_is_removed_after_its_time_to_live(lab: &dyn Lab) {
    let time_to_live = Duration::from_secs(4);
    let trial = Trial::with(lab, Script::always(Answer::Ok), time_to_live).await;
    let job = trial.job("echo brief");
    let handle = trial.spawn(&job).await;
    let housekeeping = || async {
        if let Err(e) = trial.spawner.housekeeping().await {
            panic!("housekeeping of the {}: {e}", trial.spawner.backend());
        }
    };
    if !trial.caps.runs_agents {
        housekeeping().await;
        return trial.runs_nothing(&handle).await;
    }
    let status = trial.ended(&handle).await;
    let ended = Instant::now();
    assert_eq!(status, WorkloadStatus::Exited { code: 0 });
    housekeeping().await;
    assert_eq!(
        trial.spawner.status(&handle).await.ok(),
        Some(status),
        "removed before its time to live"
    );
    trial.logs_holding(&handle, false, &["brief"]).await;
    // Housekeeping runs between checks, as the dispatcher's watchdog runs it.
    let gone = testkit::wait_until(trial.caps.patience, || async {
        housekeeping().await;
        let status = trial.spawner.status(&handle).await;
        status.is_ok_and(|s| s == WorkloadStatus::NotFound)
    })
    .await;
    assert!(gone, "{} outlived its time to live", handle.name);
    let kept = ended.elapsed();
    // The backends count the time to live in whole seconds from an end this check saw
    // a little late: half of it is a bound that holds.
    assert!(kept >= time_to_live / 2, "removed {kept:?} after its end");
    assert!(listed(&*trial.spawner, &job.job_id).await.is_empty());
    trial.finished(&job.job_id).await;
    trial.ran_once(&job);
}

/// A workload started by a spawner that is gone (a dispatcher that died, its jobs
/// forgotten) is in `list()` of a new spawner of the same installation (of the same one,
/// for a backend whose workloads do not survive it), and `remove()` makes it go away; a
/// workload of another installation is neither listed nor touched; removing a workload
/// that does not exist succeeds.
pub async fn a_workload_no_dispatcher_owns_is_listed_and_removed(lab: &dyn Lab) {
    let trial = Trial::start(lab).await;
    let job = trial.job("echo orphaned; sleep 300");
    let first = trial.spawn(&job).await;
    let other = lab.spawner(&format!("{}x", lab.installation()), super::KEEP_FINISHED);
    let stranger = trial.job("echo a stranger; sleep 300");
    let stranger_handle = other.spawn(&stranger).await.expect("spawning a stranger");
    let owner = if trial.caps.survives_restart {
        lab.spawner(lab.installation(), super::KEEP_FINISHED)
    } else {
        trial.spawner.clone()
    };
    let mut found = listed(&*owner, &job.job_id).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let orphan = found.remove(0);
    assert_eq!(
        (&orphan.name, &orphan.backend),
        (&first.name, &first.backend)
    );
    assert!(listed(&*owner, &stranger.job_id).await.is_empty());

    let removed = Instant::now();
    if let Err(e) = owner.remove(&orphan).await {
        panic!("removing {}: {e}", orphan.name);
    }
    assert!(
        listed(&*owner, &job.job_id).await.is_empty(),
        "still listed"
    );
    trial
        .status_until(&*owner, &orphan, "gone", |s| *s == WorkloadStatus::NotFound)
        .await;
    assert!(removed.elapsed() <= GRACE + trial.caps.stop_margin);
    for handle in [&orphan, &phantom(&*owner)] {
        if let Err(e) = owner.remove(handle).await {
            panic!("removing {} again: {e}", handle.name);
        }
    }
    let untouched = other.status(&stranger_handle).await.expect("a status");
    assert!(!untouched.is_over(), "the stranger is {untouched:?}");
    other
        .remove(&stranger_handle)
        .await
        .expect("removing the stranger");
}
