//! A repeated spawn of an attempt adopts its workload, from the same spawner or from a new
//! one (a restarted dispatcher), and concurrent spawns never run an attempt twice.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use contract::{OutputStream, RunOutcome};
use tokio::sync::Semaphore;

use super::{cancel, listed, Lab, Trial, KEEP_FINISHED};
use crate::{JobHandle, JobSpawner, JobSpec, WorkloadStatus};

/// An agent whose first line no second run would repeat (a second run of the attempt would
/// send that sequence number again as a different event), and a pause long enough for
/// repeated spawns to find it running.
const ONCE: &str = "echo \"run $(cat /proc/sys/kernel/random/uuid)\"; sleep 4; echo woke";

/// Spawning the same attempt again returns the same workload (same name and id, one in
/// `list()`): from the same spawner, and from a new spawner instance where workloads
/// survive a restart (where they do not, the new instance does not know it). The attempt
/// still runs once, to its end.
pub async fn spawning_an_attempt_again_adopts_its_workload_which_runs_once(lab: &dyn Lab) {
    let trial = Trial::start(lab).await;
    let job = trial.job(ONCE);
    let first = trial.spawn(&job).await;
    assert_eq!(
        trial.spawn(&job).await,
        first,
        "a repeated spawn made another"
    );
    assert_eq!(
        listed(&*trial.spawner, &job.job_id).await,
        std::slice::from_ref(&first)
    );
    let fresh = lab.spawner(lab.installation(), KEEP_FINISHED);
    let watcher: &dyn JobSpawner = if trial.caps.survives_restart {
        let adopted = fresh
            .spawn(&job)
            .await
            .unwrap_or_else(|e| panic!("spawning {} from a new spawner: {e}", first.name));
        assert_eq!(adopted, first, "a new spawner started a second workload");
        assert_eq!(
            listed(&*fresh, &job.job_id).await,
            std::slice::from_ref(&first)
        );
        &*fresh
    } else {
        let status = fresh.status(&first).await.ok();
        assert_eq!(status, Some(WorkloadStatus::NotFound), "it survived");
        assert!(listed(&*fresh, &job.job_id).await.is_empty());
        &*trial.spawner
    };
    if !trial.caps.runs_agents {
        return trial.runs_nothing(&first).await;
    }
    let status = trial
        .status_until(watcher, &first, "over", WorkloadStatus::is_over)
        .await;
    assert_eq!(status, WorkloadStatus::Exited { code: 0 });
    let (outcome, _) = trial.finished(&job.job_id).await;
    assert_eq!(outcome, RunOutcome::Exited { code: 0 });
    trial.ran_once(&job);
    let lines = trial.dispatcher.lines_of(&job.job_id, OutputStream::Stdout);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("run ") && lines[1] == "woke",
        "{lines:?}"
    );
}

/// Twenty attempts, each spawned twice back to back (so repeats race), at most five spawn
/// calls in flight at once: every call succeeds, both calls of an attempt name one
/// workload, `list()` has one per attempt, and each attempt runs exactly once and ends.
/// Needs a multi-threaded runtime, so the calls really run at the same time.
pub async fn twenty_attempts_spawned_five_at_a_time_each_run_exactly_once(lab: &dyn Lab) {
    assert_eq!(
        tokio::runtime::Handle::current().runtime_flavor(),
        tokio::runtime::RuntimeFlavor::MultiThread,
        "run this scenario with #[tokio::test(flavor = \"multi_thread\")]"
    );
    let trial = Trial::start(lab).await;
    let jobs: Vec<JobSpec> = (0..20).map(|_| trial.job(ONCE)).collect();
    let (handles, most) = spawn_five_at_a_time(&trial.spawner, &jobs).await;
    assert!(most <= 5, "{most} spawn calls ran at once");
    if trial.caps.runs_agents {
        assert!(
            most >= 2,
            "the spawn calls never overlapped ({most} at once)"
        );
    }
    for job in &jobs {
        let names: BTreeSet<&str> = handles
            .iter()
            .filter(|h| h.job_id == job.job_id)
            .map(|h| h.name.as_str())
            .collect();
        assert_eq!(names, BTreeSet::from([job.workload_name().as_str()]));
        assert_eq!(listed(&*trial.spawner, &job.job_id).await.len(), 1);
    }
    for (job, handle) in jobs.iter().zip(handles.iter().step_by(2)) {
        if !trial.caps.runs_agents {
            assert_eq!(
                trial.spawner.status(handle).await.ok(),
                Some(WorkloadStatus::Running)
            );
            cancel(&*trial.spawner, handle).await;
            continue;
        }
        let (outcome, _) = trial.finished(&job.job_id).await;
        assert_eq!(outcome, RunOutcome::Exited { code: 0 }, "{}", job.job_id);
        trial.ran_once(job);
        assert_eq!(
            trial.ended(handle).await,
            WorkloadStatus::Exited { code: 0 }
        );
    }
}

/// Spawns each of `jobs` twice, through at most five calls at a time; the handles in the
/// order of `jobs` (each twice), and the most calls that were in flight at once.
async fn spawn_five_at_a_time(
    spawner: &Arc<dyn JobSpawner>,
    jobs: &[JobSpec],
) -> (Vec<JobHandle>, usize) {
    let slots = Arc::new(Semaphore::new(5));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = jobs
        .iter()
        .flat_map(|job| [job.clone(), job.clone()])
        .map(|job| {
            let (spawner, slots) = (Arc::clone(spawner), Arc::clone(&slots));
            let (in_flight, most) = (Arc::clone(&in_flight), Arc::clone(&most));
            tokio::spawn(async move {
                let _slot = slots
                    .acquire_owned()
                    .await
                    .expect("the semaphore stays open");
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let spawned = spawner.spawn(&job).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                spawned.unwrap_or_else(|e| panic!("spawning {}: {e}", job.workload_name()))
            })
        })
        .collect();
    let mut handles = Vec::with_capacity(calls.len());
    for call in calls {
        handles.push(call.await.expect("a spawn call panicked"));
    }
    (handles, most.load(Ordering::SeqCst))
}
