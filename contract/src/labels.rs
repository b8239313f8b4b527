//! Labels every backend puts on every workload it creates.

/// `app.kubernetes.io/managed-by`, always `agentsmith`.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The job id.
pub const JOB_ID: &str = "agentsmith.io/job-id";
/// The attempt number.
pub const ATTEMPT: &str = "agentsmith.io/attempt";
/// The installation that owns the workload (several may share a cluster).
pub const INSTALLATION: &str = "agentsmith.io/installation";
