//! The agentsmith job contract, the [`JobSpawner`] trait, and its backends.
//!
//! Layout:
//! - [`contract`]: the wire between the dispatcher and `agent-runner` (environment
//!   variable names, [`JobSpec`], runner events). Always built; `agent-runner` depends
//!   on this crate with `default-features = false` and uses nothing else.
//! - [`JobSpawner`], [`JobHandle`], [`WorkloadStatus`], [`Error`]: what every backend
//!   implements and returns.
//! - [`backend`]: the backends. `noop` (always; for benchmarks and queue tests) and
//!   `process` (feature `process`: runs `agent-runner` as a child process), `docker`
//!   (feature `docker`: one container per attempt on a Docker engine).
//! - [`secrets`]: where the process and Docker backends find secret values.
//!
//! A spawner never touches Redis or HTTP routing: it starts, watches, stops and lists
//! workloads, and says why a workload ended.

pub mod backend;
pub mod contract;
mod error;
pub mod secrets;
mod workload;

pub use contract::{workload_name, AgentProfile, Intent, JobSpec, Resources};
pub use error::{Error, Result};
pub use workload::{JobHandle, JobSpawner, LogLine, LogStream, WorkloadStatus};
