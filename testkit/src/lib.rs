//! What agentsmith's tests share, written once: nothing here is part of a release.
//!
//! | module | what |
//! |---|---|
//! | [`redis`] | the tests' Redis ([`redis::test_url`], failing loudly with the command that starts it) and private servers a test may stop ([`redis::RedisServer`]) |
//! | [`net`] | free ports |
//! | [`wait`] | [`wait_until`]: poll a condition until it holds or time runs out |
//! | [`temp`] | unique names and temporary directories |
//! | [`git_server`] | a real git server over HTTP ([`git_server::GitServer`]: `git http-backend` behind a token check), recording what clients send and push |
//! | [`ssh_server`] | a real SSH server for git ([`ssh_server::SshServer`]: OpenSSH's `sshd` on a free port, one client key, fresh host key) |
//! | [`fake_api`] | Slack, GitHub, GitLab and Jira reply APIs, and GitHub's pull and GitLab's merge request APIs, on one local port, recording what arrives |
//! | [`cluster`] | three primaries with a replica each as real processes ([`cluster::RedisCluster`]), for Redis Cluster failover tests |
//! | [`sentinel`] | a primary, a replica and three sentinels as real processes ([`sentinel::SentinelSet`]), for failover tests |
//! | [`sign`] | webhook signatures as Slack, GitHub and Jira make them (an implementation of their own, not the dispatcher's) |
//! | [`procs`] | processes found again by a marker in their argv |
//! | [`stand_in`] | a stand-in for the dispatcher's runner callback, recording what a runner posts |
//! | `bin/demo-forge` | a git host for `scripts/demo --pr`: a repository on the [`git_server`], pull requests on the [`fake_api`] |
//! | [`tls`] | a certificate authority made in the test, and the server and client certificates it signs |

// Test tooling: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

pub mod cluster;
pub mod fake_api;
pub mod git_server;
pub mod net;
pub mod procs;
pub mod redis;
pub mod sentinel;
pub mod sign;
pub mod ssh_server;
pub mod stand_in;
pub mod temp;
pub mod tls;
pub mod wait;

pub use net::free_port;
pub use wait::wait_until;
