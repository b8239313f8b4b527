//! Integration tests of the `agent-runner` binary: each test runs the real binary with a
//! real agent command against a stand-in dispatcher on 127.0.0.1, and checks what the
//! dispatcher received, what the agent saw and what is left of its processes.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod containment;
mod conversation;
mod delivery;
mod harness;
mod inbox;
mod lifecycle;
mod stopping;
mod tls;
