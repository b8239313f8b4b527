//! The runner's one error type, and the exit code each failure maps to.

use std::path::PathBuf;
use std::time::Duration;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the runner itself (as opposed to the agent, whose failures are
/// reported to the dispatcher as an outcome, not as a runner error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required environment variable is not set.
    #[error("{name} is not set")]
    MissingVar {
        /// The variable.
        name: &'static str,
    },
    /// An environment variable is set to something the runner cannot use.
    #[error("{name} is invalid: {reason}")]
    InvalidVar {
        /// The variable.
        name: &'static str,
        /// What is wrong with it (never its value when the value is a secret).
        reason: String,
    },
    /// The work directory could not be prepared for the agent.
    #[error("preparing {path}")]
    Workspace {
        /// The file or directory that could not be written.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The agent's result (or notes) file exists but cannot be used.
    #[error("the agent's file {path} is not usable: {reason}")]
    ResultFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The HTTP client for the callback could not be built.
    #[error("building the HTTP client for the callback")]
    HttpClient(#[source] reqwest::Error),
    /// A signal handler could not be installed.
    #[error("installing the {signal} handler")]
    SignalHandler {
        /// The signal's name.
        signal: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The dispatcher refused the job's credential or token.
    #[error("the dispatcher refused the job's credential or token (HTTP {status})")]
    Unauthorized {
        /// The HTTP status it answered.
        status: u16,
    },
    /// The credential could not be exchanged for the attempt's token in time.
    #[error("no token: exchanging the credential failed for {}s ({reason})", .waited.as_secs())]
    NoToken {
        /// How long the exchange was tried.
        waited: Duration,
        /// The last failure.
        reason: String,
    },
    /// No random nonce could be read.
    #[error("cannot read a random nonce from /dev/urandom")]
    Nonce {
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The final event could not be delivered in time.
    #[error("the final event was not delivered within {}s", .waited.as_secs())]
    Undelivered {
        /// How long delivery was tried after the agent ended.
        waited: Duration,
    },
    /// This attempt already ran in this work directory (a container started again).
    #[error("attempt {attempt} already ran in this work directory; not running the agent again")]
    AlreadyRan {
        /// The attempt.
        attempt: u32,
    },
    /// The task delivering events ended without saying how.
    #[error("the event sender stopped unexpectedly")]
    SenderStopped(#[source] tokio::task::JoinError),
}

impl Error {
    /// The runner's exit code for this failure: 2 for a bad job environment, 3 when the
    /// dispatcher refuses the token, 4 when the final event could not be delivered, 5 when
    /// the attempt already ran here, and 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        use contract::exit;
        match self {
            Error::MissingVar { .. } | Error::InvalidVar { .. } => exit::BAD_JOB,
            Error::Unauthorized { .. } => exit::TOKEN_REFUSED,
            Error::Undelivered { .. } | Error::NoToken { .. } => exit::UNDELIVERED,
            Error::AlreadyRan { .. } => exit::ALREADY_RAN,
            Error::Workspace { .. }
            | Error::ResultFile { .. }
            | Error::HttpClient(_)
            | Error::SignalHandler { .. }
            | Error::SenderStopped(_)
            | Error::Nonce { .. } => exit::FAILED,
        }
    }

    /// This error and its sources, joined with `: `, for a one-line message.
    pub fn chain(&self) -> String {
        describe(self)
    }
}

/// An error and its sources, joined with `: ` on one line (HTTP client errors keep the
/// useful part in their sources).
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    contract::ErrorChain(error).to_string()
}
