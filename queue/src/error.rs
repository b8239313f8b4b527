//! The queue error type.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis refused or failed a command, or the connection broke (the cause says which).
    #[error("redis command failed")]
    Redis(#[source] redis::RedisError),
    /// Redis refused the user name or password of `redis.url` (WRONGPASS, a failed AUTH).
    #[error(
        "Redis refused the credentials in redis.url (a wrong user name or password, \
         or a disabled user)"
    )]
    Credentials(#[source] redis::RedisError),
    /// Redis requires a password and `redis.url` has none (NOAUTH).
    #[error(
        "Redis requires a password: put it in redis.url (redis://:PASSWORD@HOST:PORT, \
         or redis://USER:PASSWORD@HOST:PORT for an ACL user)"
    )]
    PasswordRequired(#[source] redis::RedisError),
    /// The server's TLS certificate was not accepted: not signed by a trusted CA, or not
    /// for the host in the URL.
    #[error(
        "the Redis server's TLS certificate was not accepted: redis.tls.ca_file must name the \
         CA that signed it (empty: the system's roots), and the host in redis.url must be one \
         the certificate names"
    )]
    ServerCertificate(#[source] redis::RedisError),
    /// The server refused the TLS handshake over the client's certificate (none, or one it
    /// does not trust).
    #[error(
        "Redis refused the TLS handshake over the client certificate: a server that checks \
         clients needs redis.tls.cert_file and redis.tls.key_file, signed by a CA it trusts"
    )]
    ClientCertificate(#[source] redis::RedisError),
    /// `redis.url` names a node of a Redis Cluster, and `redis.cluster` is off: the node
    /// would answer most of the queue's commands with `MOVED`.
    #[error(
        "redis.url names a node of a Redis Cluster: set redis.cluster: true and give \
         redis.prefix a hash tag (\"{{agentsmith}}:\")"
    )]
    ClusterNode,
    /// A file named in `redis.tls` cannot be read.
    #[error("cannot read redis.tls.{key} ({})", path.display())]
    TlsFile {
        /// The key within `redis.tls`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The files named in `redis.tls` are not usable certificates or keys.
    #[error("the certificates or key in redis.tls cannot be used")]
    TlsCertificates(#[source] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The Redis URL cannot be used.
    #[error("invalid redis url")]
    Url(#[source] redis::RedisError),
    /// A script call that carried other calls too failed as a whole (the cause says why).
    #[error(transparent)]
    Shared(std::sync::Arc<QueueError>),
    /// A script refused or failed the call (a command it ran was refused, say); the
    /// other calls it carried are not affected.
    #[error("a redis script failed: {0}")]
    Script(String),
    /// The call was dropped before Redis answered (the process is shutting down).
    #[error("the call to redis was dropped before it was answered")]
    Interrupted,
    /// A record in Redis is not what agentsmith writes.
    #[error("unexpected data in redis: {0}")]
    Corrupt(String),
}

impl From<redis::RedisError> for QueueError {
    /// Sorts out the failures an operator fixes in the settings (credentials,
    /// certificates), so they are reported as such instead of as a failed command.
    fn from(e: redis::RedisError) -> Self {
        if e.kind() == redis::ErrorKind::AuthenticationFailed || e.code() == Some("WRONGPASS") {
            QueueError::Credentials(e)
        } else if e.code() == Some("NOAUTH") {
            QueueError::PasswordRequired(e)
        } else {
            match certificate_failure(&e) {
                Some(Side::Server) => QueueError::ServerCertificate(e),
                Some(Side::Client) => QueueError::ClientCertificate(e),
                None => QueueError::Redis(e),
            }
        }
    }
}

/// Whose certificate a TLS handshake failed over.
enum Side {
    Server,
    Client,
}

/// Whose certificate the TLS handshake of `e` failed over, if it is one that did.
fn certificate_failure(e: &redis::RedisError) -> Option<Side> {
    use rustls::AlertDescription as Alert;
    // tokio-rustls reports a rustls::Error inside an io::Error, which redis keeps in an Arc
    // (the io::Error's `source()` skips the error it wraps, so the chain cannot be walked).
    let io = std::error::Error::source(e).and_then(|source| {
        source
            .downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>()
            .and_then(|arc| arc.downcast_ref::<std::io::Error>())
            .or_else(|| source.downcast_ref::<std::io::Error>())
    });
    let tls = io
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())?;
    match tls {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            Some(Side::Server)
        }
        // The alerts a server sends about the client's certificate (TLS 1.2 servers say
        // handshake_failure when none came).
        rustls::Error::AlertReceived(
            Alert::CertificateRequired
            | Alert::BadCertificate
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::UnknownCA
            | Alert::HandshakeFailure,
        ) => Some(Side::Client),
        _ => None,
    }
}

impl QueueError {
    /// Whether the settings are wrong (credentials, certificates) rather than Redis being
    /// away: waiting does not help; an operator has to change `redis.*` or the server.
    pub fn is_misconfiguration(&self) -> bool {
        matches!(
            self,
            QueueError::Credentials(_)
                | QueueError::PasswordRequired(_)
                | QueueError::ServerCertificate(_)
                | QueueError::ClientCertificate(_)
                | QueueError::TlsFile { .. }
                | QueueError::TlsCertificates(_)
                | QueueError::Url(_)
        )
    }

    /// Whether Redis is unreachable or slow (as opposed to a bug or bad data): callers
    /// answer 503 so senders retry. A Redis that refuses the dispatcher's credentials or
    /// certificates counts: to a sender it is as away as a stopped one.
    pub fn is_unavailable(&self) -> bool {
        match self {
            QueueError::Timeout(_)
            | QueueError::Credentials(_)
            | QueueError::PasswordRequired(_)
            | QueueError::ServerCertificate(_)
            | QueueError::ClientCertificate(_)
            | QueueError::ClusterNode => true,
            QueueError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    // A failover under way, or a server still loading its data.
                    || e.code().is_some_and(|code| {
                        crate::connection::FAILOVER_CODES.contains(&code)
                            || code == "MASTERDOWN"
                            || code == "LOADING"
                    })
            }
            // One failure of a call that carried several: as unavailable as its cause.
            QueueError::Shared(cause) => cause.is_unavailable(),
            // Dropped before Redis answered (shutting down): the sender may retry elsewhere.
            QueueError::Interrupted => true,
            _ => false,
        }
    }
}

/// The queue result type.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_failure_shared_by_a_combined_call_is_unavailable_when_its_cause_is() {
        let refused = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        let shared = QueueError::Shared(std::sync::Arc::new(QueueError::from(refused)));
        assert!(shared.is_unavailable(), "{shared}");
        let script = QueueError::Shared(std::sync::Arc::new(QueueError::Script("bad".into())));
        assert!(!script.is_unavailable(), "{script}");
        for code in [
            "READONLY",
            "MOVED",
            "CLUSTERDOWN",
            "TRYAGAIN",
            "MASTERDOWN",
            "LOADING",
        ] {
            // The server's error line, parsed as the client parses it.
            let line = format!("-{code} the server says so\r\n");
            let error = redis::parse_redis_value(line.as_bytes())
                .and_then(|value| value.extract_error())
                .expect_err("an error line is an error");
            let error = QueueError::from(error);
            assert!(error.is_unavailable(), "{code}: {error:?}");
        }
    }

    #[test]
    fn a_redis_failure_says_its_cause_once() {
        let cause = redis::RedisError::from((redis::ErrorKind::Client, "WRONGTYPE"));
        let error = QueueError::from(cause);
        let top = error.to_string();
        let source = error.source().map(ToString::to_string).unwrap_or_default();
        assert_eq!(top, "redis command failed");
        assert!(source.contains("WRONGTYPE"), "{source}");
        assert!(
            !top.contains("WRONGTYPE"),
            "the cause is printed by the chain, not twice"
        );
    }
}
