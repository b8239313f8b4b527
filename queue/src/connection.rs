//! The Redis client the settings describe: the URL (with the user and password it may hold)
//! and, for `rediss://`, the CA and client certificate of `redis.tls`.
//!
//! TLS is rustls with the `ring` provider, as the Kubernetes client's is, so the workspace
//! builds one crypto library.

use std::path::Path;

use redis::{ClientTlsConfig, IntoConnectionInfo, TlsCertificates};
use secrecy::ExposeSecret;

use crate::error::{QueueError, Result};
use crate::settings::RedisSettings;

/// The client for `settings`; no connection is made. Fails on a URL that does not parse
/// and on TLS files that cannot be read or used.
pub(crate) fn client(settings: &RedisSettings) -> Result<redis::Client> {
    let info = settings
        .url
        .expose_secret()
        .into_connection_info()
        .map_err(QueueError::Url)?;
    let tls = &settings.tls;
    if !settings.url.expose_secret().starts_with("rediss://") {
        return redis::Client::open(info).map_err(QueueError::Url);
    }
    use_ring();
    if !tls.is_set() {
        // The server's certificate is checked against the system's roots.
        return redis::Client::open(info).map_err(QueueError::Url);
    }
    let root_cert = read("ca_file", &tls.ca_file)?;
    let client_tls = match (
        read("cert_file", &tls.cert_file)?,
        read("key_file", &tls.key_file)?,
    ) {
        (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig {
            client_cert,
            client_key,
        }),
        // One without the other is refused when the settings load (RedisSettings::problems).
        _ => None,
    };
    redis::Client::build_with_tls(
        info,
        TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(QueueError::TlsCertificates)
}

/// The contents of the file of `redis.tls.{key}`, if it is set.
fn read(key: &'static str, path: &Path) -> Result<Option<Vec<u8>>> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    std::fs::read(path)
        .map(Some)
        .map_err(|source| QueueError::TlsFile {
            key,
            path: path.to_path_buf(),
            source,
        })
}

/// Makes `ring` the process's rustls provider unless one is chosen already: redis builds
/// its TLS configuration with the process default, which rustls cannot pick by itself
/// when more than one provider is compiled in.
fn use_ring() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another thread installing one is fine: there is one either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The queue against real TLS and password-protected servers: each test starts its own
/// redis-server with certificates made in the test.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;
    use testkit::redis::{ClientCerts, RedisServer};
    use testkit::tls::TestCa;

    use crate::settings::RedisTlsSettings;
    use crate::{NewJob, Queue, QueueError, QueueSettings, RedisSettings};

    fn queue(url: &str, tls: RedisTlsSettings) -> crate::Result<Queue> {
        let redis = RedisSettings {
            url: SecretString::from(url.to_string()),
            prefix: format!("tls-{:016x}:", rand::random::<u64>()),
            timeout_secs: 5,
            tls,
        };
        let limits = QueueSettings::for_tests();
        Queue::new(&redis, &limits)
    }

    fn trusting(ca: &TestCa) -> RedisTlsSettings {
        RedisTlsSettings {
            ca_file: ca.ca_file(),
            ..Default::default()
        }
    }

    /// The error and every cause, as start-up logs them.
    fn chain(e: &QueueError) -> String {
        contract::ErrorChain(e).to_string()
    }

    /// Submits a job, claims it on a dedicated connection (the path blocking reads take)
    /// and reads it back on the shared one.
    async fn submit_and_claim(queue: &Queue) -> crate::Result<()> {
        queue.ensure_group().await?;
        let submitted = queue
            .submit(&NewJob {
                agent: "echo".into(),
                task: "over tls".into(),
                timeout_secs: 60,
                ..NewJob::default()
            })
            .await?;
        let id = submitted.job().expect("a new job").id.clone();
        let mut conn = queue.dedicated_connection().await?;
        let claims = queue
            .claim(&mut conn, "test", 10, Duration::from_millis(100))
            .await?;
        assert_eq!(claims.len(), 1, "{claims:?}");
        let job = queue.get(&id).await?.expect("the job is stored");
        assert_eq!(job.task, "over tls");
        Ok(())
    }

    #[tokio::test]
    async fn jobs_run_over_tls_to_a_server_signed_by_the_configured_ca() {
        let ca = TestCa::new("server");
        let server = RedisServer::new().tls(&ca, ClientCerts::NotAsked).started();
        assert!(server.url().starts_with("rediss://"), "{}", server.url());
        let queue = queue(&server.url(), trusting(&ca)).unwrap();
        submit_and_claim(&queue).await.unwrap();
    }

    #[tokio::test]
    async fn a_server_requiring_client_certificates_refuses_clients_without_one_of_its_own_and_accepts_one(
    ) {
        let ca = TestCa::new("mtls");
        let server = RedisServer::new().tls(&ca, ClientCerts::Required).started();

        let without = queue(&server.url(), trusting(&ca)).unwrap();
        let refused = without.ping().await.unwrap_err();
        let message = chain(&refused);
        assert!(
            matches!(refused, QueueError::ClientCertificate(_)),
            "{message}"
        );
        assert!(message.contains("redis.tls.cert_file"), "{message}");
        assert!(refused.is_misconfiguration() && refused.is_unavailable());

        let other = TestCa::new("other");
        let stranger = other.client_files("stranger");
        let untrusted = queue(
            &server.url(),
            RedisTlsSettings {
                ca_file: ca.ca_file(),
                cert_file: stranger.cert,
                key_file: stranger.key,
            },
        )
        .unwrap();
        let refused = untrusted.ping().await.unwrap_err();
        assert!(
            matches!(refused, QueueError::ClientCertificate(_)),
            "{}",
            chain(&refused)
        );

        let client = ca.client_files("dispatcher");
        let with = queue(
            &server.url(),
            RedisTlsSettings {
                ca_file: ca.ca_file(),
                cert_file: client.cert,
                key_file: client.key,
            },
        )
        .unwrap();
        submit_and_claim(&with).await.unwrap();
    }

    #[tokio::test]
    async fn a_server_certificate_from_another_ca_fails_saying_which_setting_to_fix() {
        let ca = TestCa::new("real");
        let other = TestCa::new("other");
        let server = RedisServer::new().tls(&ca, ClientCerts::NotAsked).started();
        let queue = queue(&server.url(), trusting(&other)).unwrap();
        let failed = queue.ping().await.unwrap_err();
        let message = chain(&failed);
        assert!(
            matches!(failed, QueueError::ServerCertificate(_)),
            "{message}"
        );
        assert!(message.contains("redis.tls.ca_file"), "{message}");
        // The cause rustls gave is kept for whoever digs further.
        assert!(message.contains("UnknownIssuer"), "{message}");
    }

    #[tokio::test]
    async fn the_system_roots_do_not_trust_a_private_ca() {
        let ca = TestCa::new("private");
        let server = RedisServer::new().tls(&ca, ClientCerts::NotAsked).started();
        let queue = queue(&server.url(), RedisTlsSettings::default()).unwrap();
        let failed = queue.ping().await.unwrap_err();
        assert!(
            matches!(failed, QueueError::ServerCertificate(_)),
            "{}",
            chain(&failed)
        );
    }

    #[tokio::test]
    async fn a_password_protected_server_wants_the_password_in_the_url_and_never_hears_it_echoed() {
        let password = "pw-3f9d2c7a1b";
        let server = RedisServer::new()
            .args(&["--requirepass", password])
            .started();
        let port = server.port();

        let without = queue(&server.url(), RedisTlsSettings::default()).unwrap();
        let refused = without.ping().await.unwrap_err();
        let message = chain(&refused);
        assert!(
            matches!(refused, QueueError::PasswordRequired(_)),
            "{message}"
        );
        assert!(
            message.starts_with("Redis requires a password: put it in redis.url"),
            "{message}"
        );
        assert!(refused.is_misconfiguration());

        let wrong = queue(
            &format!("redis://:not-{password}@127.0.0.1:{port}"),
            RedisTlsSettings::default(),
        )
        .unwrap();
        let refused = wrong.ping().await.unwrap_err();
        let message = chain(&refused);
        assert!(matches!(refused, QueueError::Credentials(_)), "{message}");
        assert!(
            message.starts_with("Redis refused the credentials"),
            "{message}"
        );
        assert!(!message.contains(password), "{message}");

        let right = queue(
            &format!("redis://:{password}@127.0.0.1:{port}"),
            RedisTlsSettings::default(),
        )
        .unwrap();
        submit_and_claim(&right).await.unwrap();
    }

    #[tokio::test]
    async fn an_acl_user_with_its_password_in_a_rediss_url_runs_jobs() {
        // What a managed Redis asks for: TLS, and a named user rather than the default one.
        let ca = TestCa::new("acl");
        let server = RedisServer::new()
            .tls(&ca, ClientCerts::NotAsked)
            .args(&[
                "--user",
                "default",
                "off",
                "--user",
                "agentsmith",
                "on",
                ">pw-5e1a",
                "~*",
                "&*",
                "+@all",
            ])
            .started();
        let port = server.port();
        let url = format!("rediss://agentsmith:pw-5e1a@127.0.0.1:{port}");
        submit_and_claim(&queue(&url, trusting(&ca)).unwrap())
            .await
            .unwrap();

        let wrong = format!("rediss://agentsmith:nope@127.0.0.1:{port}");
        let refused = queue(&wrong, trusting(&ca))
            .unwrap()
            .ping()
            .await
            .unwrap_err();
        assert!(
            matches!(refused, QueueError::Credentials(_)),
            "{}",
            chain(&refused)
        );
    }

    #[test]
    fn a_tls_file_that_cannot_be_read_fails_naming_its_key_and_path() {
        let missing = std::env::temp_dir().join("agentsmith-no-such-ca.pem");
        let Err(e) = queue(
            "rediss://127.0.0.1:6380",
            RedisTlsSettings {
                ca_file: missing,
                ..Default::default()
            },
        ) else {
            panic!("a missing CA file is an error");
        };
        let message = chain(&e);
        assert!(
            message.starts_with("cannot read redis.tls.ca_file"),
            "{message}"
        );
        assert!(message.contains("agentsmith-no-such-ca.pem"), "{message}");
    }

    #[test]
    fn a_file_that_is_not_a_certificate_fails_as_such() {
        let ca = TestCa::new("junk");
        let junk = ca.ca_file().with_file_name("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let Err(e) = queue(
            "rediss://127.0.0.1:6380",
            RedisTlsSettings {
                ca_file: junk,
                ..Default::default()
            },
        ) else {
            panic!("a broken CA file is an error");
        };
        assert!(matches!(e, QueueError::TlsCertificates(_)), "{}", chain(&e));
    }
}
