//! The web dashboard: a small single-page app (plain HTML, CSS and JavaScript, embedded in
//! the binary) served at `/`, and the one endpoint it needs beyond the REST API,
//! `GET /v1/overview`.
//!
//! - [`assets`]: the embedded files, served with content-hashed names so they can be
//!   cached for a year while `/` itself is revalidated on every load.
//! - [`overview`](mod@overview): queue depth, admissions against the limit, jobs per
//!   state, latency percentiles (each stage's over the last hour) and whether Redis and
//!   the spawner are reachable.
//!
//! The app reads everything else from `/v1` with the token the user signs in with (kept in
//! `sessionStorage`), following the SSE streams with `fetch()` so the token travels in the
//! `Authorization` header, never in a URL.

pub mod assets;
pub mod overview;

pub use assets::{asset, index};
pub use overview::overview;
