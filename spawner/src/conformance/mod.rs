//! The conformance suite: what every [`JobSpawner`] promises, written once and run against
//! each backend (the tests `spawner/tests/conformance_<backend>.rs`).
//!
//! Each scenario drives the trait directly (no dispatcher, no Redis). Its workloads run the
//! real `agent-runner` with an `sh -c` agent, reporting to testkit's stand-in dispatcher, so
//! a scenario checks both sides: what the backend says ([`WorkloadStatus`], `list()`,
//! `logs()`) and what the runner inside the workload reported (Started, the lines, the
//! Finished outcome and result).
//!
//! | module | what |
//! |---|---|
//! | [`lab`] | [`Lab`]: one backend under test (how to build its spawners, what it can do), and the lab of each backend |
//! | `mod.rs` | [`Trial`]: one scenario's stand-in dispatcher, spawner and waits |
//! | `outcome.rs` | a job runs, a failing agent, an agent over its memory limit |
//! | `stopping.rs` | cancel, the time to live of finished workloads, orphans |
//! | `adoption.rs` | a repeated spawn adopts; twenty attempts five at a time |
//!
//! Scenarios are functions named as sentences, taking the lab; a backend's test file calls
//! each from a `#[tokio::test]`. Where a scenario needs a real agent and the backend runs
//! none (`noop`), or needs a capability the backend lacks, the scenario asserts what the
//! backend does instead, so a capability declared wrongly fails either way.

mod adoption;
pub mod lab;
mod outcome;
mod stopping;

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use contract::{AgentResult, Intent, OutputStream, RunOutcome, RunnerEvent};
use futures::StreamExt;
use testkit::stand_in::{Answer, Dispatcher, Script};
use testkit::temp::unique;

use crate::{AgentProfile, Error, JobHandle, JobSpawner, JobSpec, WorkloadStatus};

pub use adoption::{
    spawning_an_attempt_again_adopts_its_workload_which_runs_once,
    twenty_attempts_spawned_five_at_a_time_each_run_exactly_once,
};
pub use lab::{Capabilities, Lab};
pub use outcome::{
    a_failing_agent_is_reported_with_its_exit_code_and_its_workload_ends,
    a_job_runs_to_its_end_and_reports_its_output_and_result,
    an_agent_over_its_memory_limit_is_oom_killed_where_limits_are_enforced,
};
pub use stopping::{
    a_finished_workload_is_removed_after_its_time_to_live,
    a_workload_no_dispatcher_owns_is_listed_and_removed,
    cancel_stops_a_running_agent_within_its_grace_period_and_is_idempotent,
};

/// How long finished workloads are kept in every scenario but the one about that time:
/// longer than any scenario, so what they check is still there.
pub const KEEP_FINISHED: Duration = Duration::from_secs(300);

/// The grace period of every attempt (`JobSpec::grace_secs`) and of the suite's cancels.
pub const GRACE: Duration = Duration::from_secs(2);

/// One scenario's set-up: a stand-in dispatcher the runners report to, and a spawner of
/// the lab's installation.
pub struct Trial<'l> {
    /// The backend under test.
    pub lab: &'l dyn Lab,
    /// What it declares it can do.
    pub caps: Capabilities,
    /// The stand-in for the dispatcher's runner callback, on the lab's callback host.
    pub dispatcher: Dispatcher,
    /// A spawner of the lab's installation.
    pub spawner: Arc<dyn JobSpawner>,
}

impl<'l> Trial<'l> {
    /// A trial whose stand-in answers every post with 200 and whose finished workloads are
    /// kept [`KEEP_FINISHED`].
    pub async fn start(lab: &'l dyn Lab) -> Self {
        Self::with(lab, Script::always(Answer::Ok), KEEP_FINISHED).await
    }

    /// A trial whose stand-in answers as `script` says and whose finished workloads are
    /// kept `time_to_live`.
    pub async fn with(lab: &'l dyn Lab, script: Script, time_to_live: Duration) -> Self {
        let caps = lab.capabilities();
        let spawner = lab.spawner(lab.installation(), time_to_live);
        assert_eq!(
            spawner.survives_restart(),
            caps.survives_restart,
            "the {} backend and its lab disagree about surviving a restart",
            spawner.backend()
        );
        if let Err(e) = spawner.probe().await {
            panic!("the {} backend is not usable: {e}", spawner.backend());
        }
        Self {
            lab,
            caps,
            dispatcher: Dispatcher::start_on(&lab.callback_host(), script).await,
            spawner,
        }
    }

    /// An attempt (1) of a new job running `script` with `sh -c`.
    pub fn job(&self, script: &str) -> JobSpec {
        self.job_with(self.lab.profile(script))
    }

    /// An attempt (1) of a new job running `profile`, reporting to the stand-in.
    pub fn job_with(&self, profile: AgentProfile) -> JobSpec {
        let job_id = unique("c").replace('-', "");
        JobSpec {
            callback_url: self.dispatcher.callback_url(&job_id),
            job_id,
            attempt: 1,
            intent: Intent {
                task: "fix PROJ-1".into(),
                ..Intent::default()
            },
            profile,
            credential: unique("credential"),
            heartbeat_secs: 5,
            grace_secs: GRACE.as_secs(),
        }
    }

    /// Spawns `job` with the trial's spawner, checking the handle names the attempt.
    pub async fn spawn(&self, job: &JobSpec) -> JobHandle {
        let handle = self
            .spawner
            .spawn(job)
            .await
            .unwrap_or_else(|e| panic!("spawning {}: {e}", job.workload_name()));
        assert_eq!(handle.name, format!("agentsmith-{}-1", job.job_id));
        assert_eq!(handle.name, job.workload_name());
        assert_eq!(handle.backend, self.spawner.backend());
        assert_eq!((handle.job_id.as_str(), handle.attempt), (&*job.job_id, 1));
        handle
    }

    /// Waits until the workload's status (as `spawner` sees it) satisfies `wanted`;
    /// panics with the last status after the lab's patience.
    pub async fn status_until(
        &self,
        spawner: &dyn JobSpawner,
        handle: &JobHandle,
        what: &str,
        wanted: impl Fn(&WorkloadStatus) -> bool,
    ) -> WorkloadStatus {
        let last = RefCell::new(None);
        let held = testkit::wait_until(self.caps.patience, || async {
            let status = spawner.status(handle).await.map_err(|e| e.to_string());
            let done = status.as_ref().is_ok_and(&wanted);
            *last.borrow_mut() = Some(status);
            done
        })
        .await;
        match last.into_inner() {
            Some(Ok(status)) if held => status,
            other => panic!(
                "{} was not {what} within {:?}; last: {other:?}",
                handle.name, self.caps.patience
            ),
        }
    }

    /// Every status the workload is seen in until it ends (repeats left out), polled
    /// from the trial's spawner; the last is how it ended.
    pub async fn statuses_to_the_end(&self, handle: &JobHandle) -> Vec<WorkloadStatus> {
        let seen = RefCell::new(Vec::<WorkloadStatus>::new());
        let ended = testkit::wait_until(self.caps.patience, || async {
            let Ok(status) = self.spawner.status(handle).await else {
                return false;
            };
            let over = status.is_over();
            let mut seen = seen.borrow_mut();
            if seen.last() != Some(&status) {
                seen.push(status);
            }
            over
        })
        .await;
        let seen = seen.into_inner();
        assert!(
            ended,
            "{} did not end within {:?}: {seen:?}",
            handle.name, self.caps.patience
        );
        seen
    }

    /// Waits until the workload has ended (or is gone), as the trial's spawner sees it.
    pub async fn ended(&self, handle: &JobHandle) -> WorkloadStatus {
        self.status_until(&*self.spawner, handle, "over", WorkloadStatus::is_over)
            .await
    }

    /// Waits until the runner of `job_id` has reported its end; its outcome and result.
    pub async fn finished(&self, job_id: &str) -> (RunOutcome, Option<AgentResult>) {
        let seen = self
            .eventually(|| self.dispatcher.finished_of(job_id))
            .await;
        seen.unwrap_or_else(|| {
            panic!(
                "job {job_id} reported no end within {:?}; events: {:?}",
                self.caps.patience,
                self.dispatcher.events_of(job_id)
            )
        })
    }

    /// Waits until the runner of `job_id` has reported `line` on stdout.
    pub async fn printed(&self, job_id: &str, line: &str) {
        let seen = self
            .eventually(|| {
                let lines = self.dispatcher.lines_of(job_id, OutputStream::Stdout);
                lines.iter().any(|l| l == line).then_some(())
            })
            .await;
        assert!(
            seen.is_some(),
            "job {job_id} never printed {line:?}; events: {:?}",
            self.dispatcher.events_of(job_id)
        );
    }

    /// Polls `probe` until it gives something or the lab's patience runs out.
    async fn eventually<T>(&self, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
        let mut found = None;
        testkit::wait::wait_until_sync(self.caps.patience, || {
            found = probe();
            found.is_some()
        })
        .await;
        found
    }

    /// The workload's output (`logs()`, following it to its end when `follow`), once it
    /// holds every line of `expected`. Errors that may pass (a pod whose container the
    /// kubelet has not reported yet) are retried; the last answer is shown on failure.
    pub async fn logs_holding(
        &self,
        handle: &JobHandle,
        follow: bool,
        expected: &[&str],
    ) -> Vec<String> {
        let last = RefCell::new(Ok(Vec::new()));
        let complete = |lines: &Vec<String>| {
            expected
                .iter()
                .all(|wanted| lines.iter().any(|l| l.contains(wanted)))
        };
        let held = testkit::wait_until(self.caps.patience, || async {
            let lines = self.read_logs(handle, follow).await;
            let done = lines.as_ref().is_ok_and(complete);
            *last.borrow_mut() = lines;
            done
        })
        .await;
        match last.into_inner() {
            Ok(lines) if held => lines,
            other => panic!(
                "the logs of {} never held {expected:?}: {other:?}",
                handle.name
            ),
        }
    }

    async fn read_logs(&self, handle: &JobHandle, follow: bool) -> Result<Vec<String>, String> {
        let stream = match self.spawner.logs(handle, follow).await {
            Ok(stream) => stream,
            Err(e @ Error::NotFound { .. }) => return Err(e.to_string()),
            Err(e) if e.is_retryable() => return Err(e.to_string()),
            Err(e) => panic!("the logs of {} cannot be read: {e}", handle.name),
        };
        let lines = within(
            self.caps.patience,
            "a followed log to end with its workload",
            stream.collect::<Vec<_>>(),
        )
        .await;
        lines
            .into_iter()
            .map(|line| line.map(|l| l.line).map_err(|e| e.to_string()))
            .collect()
    }

    /// Checks that the runner of `job_id` ran once and the stand-in got what it sent with
    /// the job's token: one Started first, each event once (a second run of the attempt
    /// would send a sequence number again as a different event, which the stand-in
    /// refuses), and every post authorised by the token.
    pub fn ran_once(&self, job: &JobSpec) {
        let events = self.dispatcher.events_of(&job.job_id);
        let started = events
            .iter()
            .filter(|e| matches!(e, RunnerEvent::Started))
            .count();
        assert_eq!(
            started, 1,
            "{} started {started} times: {events:?}",
            job.job_id
        );
        assert_eq!(events.first(), Some(&RunnerEvent::Started), "{events:?}");
        let bearer = format!("Bearer {}", testkit::stand_in::token_for(&job.credential));
        for post in self.dispatcher.posts_of(&job.job_id) {
            assert_eq!(post.authorization.as_deref(), Some(bearer.as_str()));
            assert_eq!(post.batch.attempt, job.attempt);
        }
    }

    /// For a backend that runs no agent: the workload stays running, with no output and no
    /// report, until it is cancelled, and is then gone.
    pub async fn runs_nothing(&self, handle: &JobHandle) {
        let ended = testkit::wait_until(Duration::from_secs(1), || async {
            self.spawner
                .status(handle)
                .await
                .map_or(true, |s| s.is_over())
        })
        .await;
        assert!(!ended, "{} ended though it runs nothing", handle.name);
        assert_eq!(
            self.spawner.status(handle).await.ok(),
            Some(WorkloadStatus::Running)
        );
        assert!(self.dispatcher.posts_of(&handle.job_id).is_empty());
        let lines = self.read_logs(handle, true).await;
        assert_eq!(
            lines,
            Ok(Vec::new()),
            "a workload that runs nothing has output"
        );
        cancel(&*self.spawner, handle).await;
        assert_eq!(
            self.spawner.status(handle).await.ok(),
            Some(WorkloadStatus::NotFound)
        );
    }
}

/// `cancel(handle, GRACE)`, which must succeed.
async fn cancel(spawner: &dyn JobSpawner, handle: &JobHandle) {
    if let Err(e) = spawner.cancel(handle, GRACE).await {
        panic!("cancelling {}: {e}", handle.name);
    }
}

/// The handles `spawner.list()` gives for `job_id`.
async fn listed(spawner: &dyn JobSpawner, job_id: &str) -> Vec<JobHandle> {
    spawner
        .list()
        .await
        .unwrap_or_else(|e| panic!("listing the workloads of the {}: {e}", spawner.backend()))
        .into_iter()
        .filter(|h| h.job_id == job_id)
        .collect()
}

/// `future`'s output, or a panic saying what did not happen within `limit`.
async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("waited {limit:?} for {what}"))
}
