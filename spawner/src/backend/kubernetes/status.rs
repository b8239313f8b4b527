//! What a Job and its newest pod say about a workload: running, pending (and whether
//! waiting longer can help), or ended, and why.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::CONTAINER;
use crate::WorkloadStatus;

/// Waiting reasons of a container that will not resolve by waiting longer.
const HOPELESS_WAITING: [&str; 6] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "InvalidImageName",
    "CreateContainerError",
];

/// The status of an attempt's Job and its newest pod; a pod that has not started within
/// `pending_timeout` seconds fails the attempt.
pub(super) fn workload_status(
    job: &Job,
    pod: Option<&Pod>,
    pending_timeout: u64,
) -> WorkloadStatus {
    if let Some((kind, reason, message)) = job_condition(job) {
        if kind == "Complete" {
            return WorkloadStatus::Exited { code: 0 };
        }
        if reason.as_deref() == Some("DeadlineExceeded") {
            return WorkloadStatus::Failed {
                reason: format!(
                    "deadline exceeded: the Job ran past its activeDeadlineSeconds{}",
                    message.map(|m| format!(" ({m})")).unwrap_or_default()
                ),
                retryable: false,
            };
        }
        if let Some(status) = pod.and_then(terminated_status) {
            return status;
        }
        return WorkloadStatus::Failed {
            reason: format!(
                "Job failed: {}",
                reason.unwrap_or_else(|| "no reason given".into())
            ),
            retryable: true,
        };
    }
    if let Some(status) = pod.and_then(terminated_status) {
        return status;
    }
    let running = pod
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.phase.as_deref())
        == Some("Running");
    if running {
        return WorkloadStatus::Running;
    }
    pending_status(job, pod, pending_timeout)
}

/// Whether a waiting message names a kubelet hiccup that it retries by itself: its
/// Secret and ConfigMap caches fail to sync under load ("failed to sync secret cache: timed
/// out waiting for the condition"), which is a `CreateContainerConfigError` like a missing
/// Secret but, unlike it, passes. Such a pod stays pending until `pending_timeout`.
fn kubelet_will_retry(message: &str) -> bool {
    message.contains("failed to sync") && message.contains("cache")
}

fn overdue(since: Option<&Time>, pending_timeout: u64) -> bool {
    since.is_some_and(|t| {
        let age = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
        age.as_secs() >= pending_timeout as i64
    })
}

/// Why a pod that has not started is waiting, and whether that is hopeless.
fn pending_status(job: &Job, pod: Option<&Pod>, pending_timeout: u64) -> WorkloadStatus {
    let created = job.metadata.creation_timestamp.as_ref();
    let Some(pod) = pod else {
        return if overdue(created, pending_timeout) {
            WorkloadStatus::Failed {
                reason: format!("no pod was created within {}s", pending_timeout),
                retryable: true,
            }
        } else {
            WorkloadStatus::Pending {
                reason: Some("waiting for a pod".into()),
            }
        };
    };
    let status = pod.status.as_ref();
    if let Some(waiting) = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find_map(|c| c.state.as_ref()?.waiting.clone()))
    {
        let reason = waiting.reason.unwrap_or_default();
        let message = waiting.message.unwrap_or_default();
        if HOPELESS_WAITING.contains(&reason.as_str()) && !kubelet_will_retry(&message) {
            return WorkloadStatus::Failed {
                reason: format!("{reason}: {message}")
                    .trim_end_matches(": ")
                    .to_string(),
                retryable: false,
            };
        }
    }
    let unschedulable = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter().find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
        })
        .map(|c| format!("unschedulable: {}", c.message.clone().unwrap_or_default()));
    let reason = unschedulable.unwrap_or_else(|| "pod pending".into());
    if overdue(
        pod.metadata.creation_timestamp.as_ref().or(created),
        pending_timeout,
    ) {
        WorkloadStatus::Failed {
            reason: format!("{reason} (did not start within {}s)", pending_timeout),
            retryable: false,
        }
    } else {
        WorkloadStatus::Pending {
            reason: Some(reason),
        }
    }
}

/// How a finished agent container ended.
fn terminated_status(pod: &Pod) -> Option<WorkloadStatus> {
    let status = pod.status.as_ref()?;
    if status.reason.as_deref() == Some("Evicted") {
        return Some(WorkloadStatus::Failed {
            reason: format!("evicted: {}", status.message.clone().unwrap_or_default()),
            retryable: true,
        });
    }
    let terminated = status
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .clone()?;
    Some(match terminated.reason.as_deref() {
        Some("OOMKilled") => WorkloadStatus::Failed {
            reason: "OOM-killed: the pod went over its memory limit".into(),
            retryable: false,
        },
        _ => match terminated.exit_code {
            code @ 129..=159 => WorkloadStatus::Killed { signal: code - 128 },
            code => WorkloadStatus::Exited { code },
        },
    })
}

/// Whether the attempt is over by itself: the Job has its final condition, or its newest
/// pod has succeeded or failed (evicted included; with `backoffLimit: 0` no other pod
/// follows). Such a workload needs no stopping: its TTL removes it, logs and all.
pub(super) fn has_ended(job: &Job, pod: Option<&Pod>) -> bool {
    let pod_over = pod
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
    job_condition(job).is_some() || pod_over
}

/// The Job's final condition, if it has one: (type, reason, message).
fn job_condition(job: &Job) -> Option<(String, Option<String>, Option<String>)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| (c.type_.clone(), c.reason.clone(), c.message.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn job() -> Job {
        Job {
            metadata: ObjectMeta {
                creation_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                ..ObjectMeta::default()
            },
            ..Job::default()
        }
    }

    fn waiting_pod(reason: &str, message: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                creation_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER.into(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.into()),
                            message: Some(message.into()),
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn an_evicted_or_finished_attempt_has_ended_and_a_stuck_one_has_not() {
        let stuck = waiting_pod("ImagePullBackOff", "Back-off pulling image");
        assert!(matches!(
            workload_status(&job(), Some(&stuck), 600),
            WorkloadStatus::Failed { .. }
        ));
        assert!(
            !has_ended(&job(), Some(&stuck)),
            "a stuck pod must be stopped"
        );
        assert!(!has_ended(&job(), None));
        let evicted = Pod {
            status: Some(PodStatus {
                phase: Some("Failed".into()),
                reason: Some("Evicted".into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert!(has_ended(&job(), Some(&evicted)));
        let mut failed = job();
        failed.status = Some(k8s_openapi::api::batch::v1::JobStatus {
            conditions: Some(vec![k8s_openapi::api::batch::v1::JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(has_ended(&failed, None));
    }

    #[test]
    fn a_secret_cache_that_failed_to_sync_is_waited_for_and_a_missing_secret_is_not() {
        let hiccup = waiting_pod(
            "CreateContainerConfigError",
            "failed to sync secret cache: timed out waiting for the condition",
        );
        assert!(matches!(
            workload_status(&job(), Some(&hiccup), 300),
            WorkloadStatus::Pending { .. }
        ));
        let missing = waiting_pod(
            "CreateContainerConfigError",
            "secret \"agent-keys\" not found",
        );
        assert_eq!(
            workload_status(&job(), Some(&missing), 300),
            WorkloadStatus::Failed {
                reason: "CreateContainerConfigError: secret \"agent-keys\" not found".into(),
                retryable: false,
            }
        );
    }
}
