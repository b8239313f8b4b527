//! agentsmith, the dispatcher: receives job requests, keeps them durable in Redis, runs
//! them through a spawner and relays their progress.
//!
//! A tour:
//! - [`settings`]: the configuration (defaults in `config/agentsmith.example.yml`).
//! - [`queue`]: the Redis state: keys (`queue/keys.rs`), Lua transitions
//!   (`queue/scripts/`), job records and events.
//! - [`scheduler`]: claims ready jobs, admits and spawns them.
//! - [`watchdog`]: promotes due retries, checks expired leases, reclaims abandoned claims,
//!   sweeps the index.
//! - [`api`]: every HTTP route (one `router()`), the REST API, the runner callback, health
//!   and metrics.
//! - [`dashboard`]: the web dashboard at `/` (embedded HTML, CSS and JavaScript) and
//!   `GET /v1/overview`.
//! - [`webhooks`]: Slack, GitHub, GitLab and Jira: verification, parsing, triggers.
//! - [`fanout`]: the event streams' followers (SSE): one Redis reader per dispatcher,
//!   bounded buffers, caps per client.
//! - [`notify`]: the reply outbox and the providers' reply APIs; the pull requests of pushed branches.
//! - [`token`]: per-job runner tokens.
//! - [`context`]: what the scheduler, watchdog and handlers share.
//! - [`app`]: wires it together; [`app::Application`] is what `serve` and the tests run.
//! - [`cli`]: the `agentsmith` command line.

pub mod api;
pub mod app;
pub mod cli;
pub mod context;
pub mod dashboard;
pub mod fanout;
pub mod loops;
pub mod metrics;
pub mod notify;
pub mod scheduler;
pub mod settings;
pub mod telemetry;
pub mod token;
pub mod watchdog;
pub mod webhooks;
