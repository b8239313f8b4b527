//! The conformance suite against the `process` backend: each workload is the real
//! `agent-runner` (built next to the tests: `cargo build -p agent-runner`) as a child
//! process. It applies no memory limits and its workloads do not survive a restart: the
//! suite checks that too.

use spawner::conformance::{self, lab::ProcessLab};

#[tokio::test]
async fn a_job_runs_to_its_end_and_reports_its_output_and_result() {
    conformance::a_job_runs_to_its_end_and_reports_its_output_and_result(&ProcessLab::new()).await;
}

#[tokio::test]
async fn a_failing_agent_is_reported_with_its_exit_code_and_its_workload_ends() {
    conformance::a_failing_agent_is_reported_with_its_exit_code_and_its_workload_ends(
        &ProcessLab::new(),
    )
    .await;
}

#[tokio::test]
async fn an_agent_over_its_memory_limit_is_oom_killed_where_limits_are_enforced() {
    conformance::an_agent_over_its_memory_limit_is_oom_killed_where_limits_are_enforced(
        &ProcessLab::new(),
    )
    .await;
}

#[tokio::test]
async fn cancel_stops_a_running_agent_within_its_grace_period_and_is_idempotent() {
    conformance::cancel_stops_a_running_agent_within_its_grace_period_and_is_idempotent(
        &ProcessLab::new(),
    )
    .await;
}

#[tokio::test]
async fn a_finished_workload_is_removed_after_its_time_to_live() {
    conformance::a_finished_workload_is_removed_after_its_time_to_live(&ProcessLab::new()).await;
}

#[tokio::test]
async fn spawning_an_attempt_again_adopts_its_workload_which_runs_once() {
    conformance::spawning_an_attempt_again_adopts_its_workload_which_runs_once(&ProcessLab::new())
        .await;
}

#[tokio::test]
async fn a_workload_no_dispatcher_owns_is_listed_and_removed() {
    conformance::a_workload_no_dispatcher_owns_is_listed_and_removed(&ProcessLab::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_attempts_spawned_five_at_a_time_each_run_exactly_once() {
    conformance::twenty_attempts_spawned_five_at_a_time_each_run_exactly_once(&ProcessLab::new())
        .await;
}
