//! One workload as the queue records it ([`JobHandle`]), and the deterministic name every
//! backend gives it ([`workload_name`]).

use serde::{Deserialize, Serialize};

/// Names one workload a backend created: enough to find it again after a restart. The
/// queue keeps it in the job's record; the spawner that made it reads it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobHandle {
    /// The backend that created it (`process`, `docker`, `kubernetes`, `noop`).
    pub backend: String,
    /// The deterministic workload name (see [`workload_name`]).
    pub name: String,
    /// The job id.
    pub job_id: String,
    /// The attempt.
    pub attempt: u32,
    /// The backend's own identifier: a pid, a container id, a Job uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The spawner target it runs on (`spawners.<name>`; [`DEFAULT_TARGET`] is the
    /// `spawner:` section). Handles recorded before targets existed read as the default.
    #[serde(default = "default_target", skip_serializing_if = "is_default_target")]
    pub target: String,
}

/// The target the `spawner:` section makes.
pub const DEFAULT_TARGET: &str = "default";

fn default_target() -> String {
    DEFAULT_TARGET.to_string()
}

fn is_default_target(target: &str) -> bool {
    target == DEFAULT_TARGET
}

/// The workload name of a job attempt: `agentsmith-<id>-<attempt>`, a DNS-1123 label of at
/// most 63 characters, so a repeated spawn of the same attempt finds the same workload.
pub fn workload_name(job_id: &str, attempt: u32) -> String {
    let suffix = format!("-{attempt}");
    let mut id: String = job_id
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let room = 63 - "agentsmith-".len() - suffix.len();
    id.truncate(room);
    format!("agentsmith-{}{suffix}", id.trim_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names_are_dns_labels_of_at_most_63_chars() {
        assert_eq!(workload_name("abc123", 2), "agentsmith-abc123-2");
        let long = workload_name(&"X_".repeat(60), 4_000_000_000);
        assert!(long.len() <= 63, "{long}");
        assert!(long
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert!(!long.contains("--"), "{long}");
    }

    #[test]
    fn a_handle_round_trips_and_omits_an_unknown_id() {
        let handle = JobHandle {
            backend: "docker".into(),
            name: workload_name("abc", 1),
            job_id: "abc".into(),
            attempt: 1,
            id: None,
            target: DEFAULT_TARGET.into(),
        };
        let json = serde_json::to_string(&handle).unwrap();
        assert!(!json.contains("\"id\""), "{json}");
        assert!(!json.contains("\"target\""), "{json}");
        assert_eq!(serde_json::from_str::<JobHandle>(&json).unwrap(), handle);
        let elsewhere = JobHandle {
            target: "gpu-eu".into(),
            ..handle
        };
        let json = serde_json::to_string(&elsewhere).unwrap();
        assert!(json.contains("\"target\":\"gpu-eu\""), "{json}");
        assert_eq!(serde_json::from_str::<JobHandle>(&json).unwrap(), elsewhere);
    }
}
