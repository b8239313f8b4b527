//! Integration tests of the dispatcher against a real Redis, running real `agent-runner`
//! processes and containers on a real Docker engine. One binary; each test gets its own
//! key prefix. The harness is in `helpers.rs` ([`helpers::spawn_app`]).
//!
//! A plain `cargo test` needs only Redis (`redis-server --daemonize yes`, or set
//! `AGENTSMITH_TEST_REDIS_URL`) and the built binaries (`cargo build -p agentsmith -p
//! agent-runner`). Tests that need more of the lab (Docker, a Kubernetes cluster, Chromium)
//! are `#[ignore]`d with the command that provides it; scripts/test provides everything and
//! runs them too (`--include-ignored`), where a missing piece fails them loudly.

// Test helpers live outside #[test] functions; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod audit;
mod checkout;
mod checkout_backends;
mod checkout_ssh;
mod cli;
mod conversation;
mod dashboard;
mod docker;
mod failover;
mod front_door;
mod helpers;
mod http;
mod kubernetes;
mod lifecycle;
mod limits;
mod manifests;
mod notify_neutralised;
mod outage;
mod private_ca;
mod router;
mod runner_wall;
mod sse;
mod stream_caps;
mod targets;
mod targets_lab;
mod webhooks;
