//! The spawner error type.

/// What went wrong in a spawner. [`Error::is_retryable`] alone decides whether the
/// dispatcher retries the attempt or fails the job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend (a Docker engine, an API server, the local system) could not be reached
    /// or refused for a reason that may pass.
    #[error("{backend} backend unavailable: {message}")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
        /// What happened.
        message: String,
        /// The underlying error (the engine's, the API server's, the system's).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The backend refused the job itself (a bad image name, an invalid spec): trying again
    /// will not help.
    #[error("{backend} backend rejected the job: {message}")]
    Rejected {
        /// Which backend.
        backend: &'static str,
        /// Why.
        message: String,
    },
    /// No workload exists for the handle.
    #[error("workload {name} not found")]
    NotFound {
        /// The workload name.
        name: String,
    },
    /// The settings cannot make a backend.
    #[error("{key}: {message}")]
    Settings {
        /// The key at fault (`spawner.docker.user`).
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl Error {
    /// Whether trying the same attempt again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// The spawner result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
