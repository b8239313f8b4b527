//! Integration tests of the dispatcher against a real Redis, running real `agent-runner`
//! processes and containers on a real Docker engine. One binary; each test gets its own
//! key prefix.

// Test helpers live outside #[test] functions; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod audit;
mod cli;
mod dashboard;
mod docker;
mod failover;
mod helpers;
mod http;
mod kubernetes;
mod lifecycle;
mod limits;
mod manifests;
mod outage;
mod sse;
mod webhooks;
