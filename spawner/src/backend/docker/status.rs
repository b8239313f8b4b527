//! How a container's state reads as a [`WorkloadStatus`], and the engine's clock.

use std::time::{SystemTime, UNIX_EPOCH};

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};

use crate::quantity::binary_size;
use crate::WorkloadStatus;

/// Seconds since the epoch of an RFC 3339 UTC time as the engine writes it
/// (`2026-11-23T23:40:01.123456789Z`); `None` for the zero time or anything else.
pub(super) fn parse_engine_time(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (t.next()??, t.next()??, t.next()??);
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Seconds since the epoch, now.
pub(super) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// How a container's state reads as a workload status.
pub(super) fn status_of(container: &ContainerInspectResponse) -> WorkloadStatus {
    let Some(state) = &container.state else {
        return WorkloadStatus::Pending { reason: None };
    };
    let error = state.error.clone().filter(|e| !e.is_empty());
    let memory = container
        .host_config
        .as_ref()
        .and_then(|h| h.memory)
        .filter(|m| *m > 0);
    match state.status {
        Some(ContainerStateStatusEnum::RUNNING)
        | Some(ContainerStateStatusEnum::RESTARTING)
        | Some(ContainerStateStatusEnum::PAUSED)
        | Some(ContainerStateStatusEnum::STOPPING) => WorkloadStatus::Running,
        Some(ContainerStateStatusEnum::CREATED) | None => match error {
            Some(error) => WorkloadStatus::Failed {
                reason: format!("container could not start: {error}"),
                retryable: false,
            },
            None => WorkloadStatus::Pending {
                reason: Some("container created".into()),
            },
        },
        Some(ContainerStateStatusEnum::REMOVING) => WorkloadStatus::Failed {
            reason: "container is being removed".into(),
            retryable: true,
        },
        Some(ContainerStateStatusEnum::EXITED)
        | Some(ContainerStateStatusEnum::DEAD)
        | Some(ContainerStateStatusEnum::EMPTY) => {
            if state.oom_killed == Some(true) {
                let limit = memory
                    .map(|m| format!(" of {}", binary_size(m as u64)))
                    .unwrap_or_default();
                return WorkloadStatus::Failed {
                    reason: format!("OOM-killed: the container went over its memory limit{limit}"),
                    retryable: false,
                };
            }
            if let Some(error) = error {
                return WorkloadStatus::Failed {
                    reason: format!("container failed: {error}"),
                    retryable: false,
                };
            }
            match state.exit_code.unwrap_or(-1) {
                // 128 + n: the main process was killed by signal n.
                code @ 129..=159 => WorkloadStatus::Killed {
                    signal: (code - 128) as i32,
                },
                code => WorkloadStatus::Exited {
                    code: i32::try_from(code).unwrap_or(-1),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{ContainerState, HostConfig};

    use super::*;

    #[test]
    fn engine_times_parse_to_epoch_seconds() {
        assert_eq!(parse_engine_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_engine_time("2026-11-23T23:40:01.123456789Z"),
            Some(1_795_477_201)
        );
        assert_eq!(parse_engine_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_engine_time("yesterday"), None);
    }

    fn container(state: ContainerState, memory: Option<i64>) -> ContainerInspectResponse {
        ContainerInspectResponse {
            state: Some(state),
            host_config: Some(HostConfig {
                memory,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn container_states_say_why_the_workload_ended() {
        let exited = |code, oom| ContainerState {
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(code),
            oom_killed: Some(oom),
            ..Default::default()
        };
        assert_eq!(
            status_of(&container(exited(3, false), None)),
            WorkloadStatus::Exited { code: 3 }
        );
        assert_eq!(
            status_of(&container(exited(137, false), None)),
            WorkloadStatus::Killed { signal: 9 }
        );
        assert_eq!(
            status_of(&container(exited(137, true), Some(64 << 20))),
            WorkloadStatus::Failed {
                reason: "OOM-killed: the container went over its memory limit of 64Mi".into(),
                retryable: false
            }
        );
        let never_started = ContainerState {
            status: Some(ContainerStateStatusEnum::CREATED),
            error: Some("exec: \"agent-runner\": executable file not found in $PATH".into()),
            ..Default::default()
        };
        let status = status_of(&container(never_started, None));
        assert!(
            matches!(&status, WorkloadStatus::Failed { reason, retryable: false } if reason.contains("could not start")),
            "{status:?}"
        );
    }
}
