//! The queue against real TLS and password-protected servers: each test starts its own
//! redis-server with certificates made in the test.

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
        sentinel: Default::default(),
        cluster: false,
        min_replicas_acked: 0,
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
fn a_demoted_primary_or_a_broken_connection_sends_the_queue_to_the_sentinels() {
    use redis::{ErrorKind, RedisError, ServerErrorKind};
    let demoted = RedisError::from((
        ErrorKind::Server(ServerErrorKind::ReadOnly),
        "You can't write against a read only replica.",
    ));
    let broken = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    let refused = RedisError::from((
        ErrorKind::Server(ServerErrorKind::ResponseError),
        "WRONGTYPE",
    ));
    assert!(super::moved(&demoted), "{demoted}");
    assert!(super::moved(&broken), "{broken}");
    assert!(!super::moved(&refused), "{refused}");
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
