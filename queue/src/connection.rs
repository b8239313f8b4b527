//! The Redis client the settings describe: the URL (with the user and password it may hold)
//! and, for `rediss://`, the CA and client certificate of `redis.tls`.
//!
//! TLS is rustls with the `ring` provider, as the Kubernetes client's is, so the workspace
//! builds one crypto library.
//!
//! With `redis.sentinel` the server is not fixed: [`Target`] asks the sentinels for the
//! primary each time a connection is made, and [`Shared`] (the queue's one multiplexed
//! connection) is dropped when the sentinels name another primary, so the next command
//! connects to the new one. A watch task asks the sentinels once a second, and at once when
//! a script call met a broken connection or `READONLY`: the `ConnectionManager` reconnects
//! by itself, but only to the address it was made for, which after a failover is dead or a
//! demoted replica answering writes with `READONLY`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates,
};
use secrecy::ExposeSecret;

use crate::error::{QueueError, Result};
use crate::settings::{RedisSentinelSettings, RedisSettings};

/// Where the queue's connections go: the one server of `redis.url`, or the primary the
/// sentinels of `redis.sentinel` name at the time.
#[derive(Clone)]
pub(crate) enum Target {
    /// `redis.url`.
    Direct(Box<redis::Client>),
    /// `redis.sentinel`.
    Sentinel(Arc<Sentinels>),
}

/// The sentinels of `redis.sentinel` and the name they know the primary by.
pub(crate) struct Sentinels {
    master_name: String,
    /// Finds the primary (and checks that it says it is one, `ROLE`).
    lookup: tokio::sync::Mutex<SentinelClient>,
    /// The sentinels, for the watch's `SENTINEL get-master-addr-by-name`.
    nodes: Vec<redis::Client>,
}

impl Target {
    /// The target `settings` describe; no connection is made.
    pub(crate) fn new(settings: &RedisSettings) -> Result<Self> {
        if !settings.sentinel.is_set() {
            return client(settings).map(|client| Target::Direct(Box::new(client)));
        }
        Sentinels::new(&settings.sentinel).map(|s| Target::Sentinel(Arc::new(s)))
    }

    /// A client for the server to use now: with Sentinel, the primary the sentinels name.
    pub(crate) async fn client(&self) -> Result<redis::Client> {
        match self {
            Target::Direct(client) => Ok(client.as_ref().clone()),
            Target::Sentinel(sentinels) => sentinels.primary().await,
        }
    }

    /// A connection of its own (for blocking reads), to the primary of the moment.
    pub(crate) async fn dedicated(&self, timeout: Duration) -> Result<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None);
        // Boxed, as in Shared::manager: a deep future in every blocking reader's layout.
        Box::pin(async {
            Ok(self
                .client()
                .await?
                .get_multiplexed_async_connection_with_config(&config)
                .await?)
        })
        .await
    }
}

impl Sentinels {
    fn new(settings: &RedisSentinelSettings) -> Result<Self> {
        let infos = settings
            .nodes
            .iter()
            .map(|node| node.as_str().into_connection_info())
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(QueueError::Url)?;
        let password = settings.password.expose_secret();
        let mut redis = RedisConnectionInfo::default();
        if !password.is_empty() {
            redis = redis.set_password(password);
        }
        if !settings.username.is_empty() {
            redis = redis.set_username(&settings.username);
        }
        let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(redis);
        let lookup = SentinelClient::build(
            infos.clone(),
            &settings.master_name,
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(QueueError::Url)?;
        let nodes = infos
            .into_iter()
            .map(redis::Client::open)
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(QueueError::Url)?;
        Ok(Self {
            master_name: settings.master_name.clone(),
            lookup: tokio::sync::Mutex::new(lookup),
            nodes,
        })
    }

    /// A client for the primary the sentinels name, checked to say it is one. Finding none
    /// (the sentinels away, a failover under way) counts as Redis being unavailable.
    async fn primary(&self) -> Result<redis::Client> {
        let found = self.lookup.lock().await.async_get_client().await;
        found.map_err(|e| {
            if e.is_io_error() {
                return QueueError::from(e);
            }
            QueueError::Redis(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!(
                    "the sentinels name no reachable primary for {:?} (redis.sentinel): {e}",
                    self.master_name
                ),
            )))
        })
    }

    /// The primary's address (`HOST:PORT`) as the first sentinel that answers names it, on
    /// `cached` (a connection to sentinel `index`, made again as needed).
    async fn primary_addr(
        &self,
        cached: &mut Option<(usize, MultiplexedConnection)>,
        timeout: Duration,
    ) -> Option<String> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let start = cached.as_ref().map_or(0, |(index, _)| *index);
        for offset in 0..self.nodes.len() {
            let index = (start + offset) % self.nodes.len();
            let mut conn = match cached.take() {
                Some((cached_index, conn)) if cached_index == index => conn,
                _ => match self.nodes[index]
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                {
                    Ok(conn) => conn,
                    Err(_) => continue,
                },
            };
            let answer: redis::RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.master_name)
                .query_async(&mut conn)
                .await;
            if let Ok(Some((host, port))) = answer {
                *cached = Some((index, conn));
                return Some(format!("{host}:{port}"));
            }
        }
        None
    }
}

/// `HOST:PORT` of a client's server, to compare with what the sentinels say.
fn addr(client: &redis::Client) -> String {
    match client.get_connection_info().addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        other => other.to_string(),
    }
}

/// The queue's one multiplexed connection, made on first use and made again after the
/// sentinels name another primary.
#[derive(Default)]
pub(crate) struct Shared {
    current: Mutex<Option<Current>>,
    /// Held while a connection is made, so concurrent first calls make one.
    connecting: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    watching: AtomicBool,
    /// Wakes the watch early: a command failed in a way a failover explains.
    recheck: Arc<tokio::sync::Notify>,
}

/// The connection in use and the server it goes to.
#[derive(Clone)]
struct Current {
    manager: ConnectionManager,
    addr: String,
    generation: u64,
}

impl Shared {
    fn current(&self) -> Option<Current> {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Drops the connection of `generation` (not a newer one another call made since), so
    /// the next command asks the sentinels again.
    fn forget(&self, generation: u64) {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.as_ref().is_some_and(|c| c.generation == generation) {
            *current = None;
        }
    }

    /// Passes on what a script call on the shared connection answered, after waiting
    /// for `replicas` replicas to have it ([`replicated`]). A broken connection or a
    /// `READONLY` answer (a primary demoted to replica) wakes the watch, so the sentinels
    /// are asked at once rather than at the next second.
    pub(crate) async fn written<T>(
        &self,
        answer: redis::RedisResult<T>,
        conn: &mut ConnectionManager,
        replicas: u32,
        timeout: Duration,
    ) -> Result<T> {
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                if moved(&e) {
                    self.recheck.notify_one();
                }
                return Err(e.into());
            }
        };
        replicated(conn, replicas, timeout).await?;
        Ok(answer)
    }

    /// The shared connection to `target`, made if there is none.
    pub(crate) async fn manager(
        self: &Arc<Self>,
        target: &Target,
        timeout: Duration,
    ) -> Result<ConnectionManager> {
        if let Some(current) = self.current() {
            return Ok(current.manager);
        }
        // Boxed: the rare path's future is large and deep (a sentinel lookup, a connect),
        // and would otherwise be part of the layout of every command's future.
        Box::pin(self.connect(target, timeout)).await
    }

    /// [`Shared::manager`] when there is no connection: makes one (one call at a time).
    async fn connect(
        self: &Arc<Self>,
        target: &Target,
        timeout: Duration,
    ) -> Result<ConnectionManager> {
        let _connecting = self.connecting.lock().await;
        if let Some(current) = self.current() {
            return Ok(current.manager);
        }
        let client = target.client().await?;
        let addr = addr(&client);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_with_config(client, config).await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Current {
            manager: manager.clone(),
            addr,
            generation,
        });
        if let Target::Sentinel(sentinels) = target {
            if !self.watching.swap(true, Ordering::Relaxed) {
                let recheck = self.recheck.clone();
                tokio::spawn(watch(
                    Arc::downgrade(self),
                    recheck,
                    sentinels.clone(),
                    timeout,
                ));
            }
        }
        Ok(manager)
    }
}

/// Whether `e` is what a command meets when the primary moved: the connection broke, or
/// the server is now a replica (`READONLY`).
fn moved(e: &redis::RedisError) -> bool {
    e.code() == Some("READONLY")
        || e.to_string().contains("READONLY")
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
}

/// Asks the sentinels once a second (and when `recheck` is notified) where the primary is,
/// and drops the shared connection when it is elsewhere. Ends with the last clone of the
/// queue.
async fn watch(
    shared: Weak<Shared>,
    recheck: Arc<tokio::sync::Notify>,
    sentinels: Arc<Sentinels>,
    timeout: Duration,
) {
    let mut cached = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = recheck.notified() => {}
        }
        if shared.strong_count() == 0 {
            return;
        }
        let Some(primary) = sentinels.primary_addr(&mut cached, timeout).await else {
            continue;
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Some(current) = shared.current() {
            if current.addr != primary {
                tracing::warn!(
                    from = %current.addr,
                    to = %primary,
                    "the sentinels name another redis primary: reconnecting"
                );
                shared.forget(current.generation);
            }
        }
    }
}

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

/// Waits until `replicas` replicas have every write made so far on `conn` (`WAIT`), for
/// at most a quarter of `timeout`; fails, as Redis being unavailable, when fewer did.
/// Nothing is sent when `replicas` is 0.
///
/// `WAIT` counts the writes of the connection it is sent on, so it goes on the shared
/// connection that ran the script: it then also covers other callers' earlier writes, which
/// is harmless. The cost is that Redis answers a connection's commands in order: while a
/// `WAIT` waits, the commands other callers sent after it on the shared connection wait
/// too. With healthy replicas that is one replication round trip; with fewer than
/// `replicas` reachable, each write holds the connection for the `WAIT` timeout, which is
/// why it is a quarter of `redis.timeout_secs`: callers behind it still get an answer (or
/// their own timeout) within the timeout they were promised. A write whose `WAIT` fails is
/// on the primary, not acknowledged: its sender retries (with an idempotency key, safely).
async fn replicated(conn: &mut ConnectionManager, replicas: u32, timeout: Duration) -> Result<()> {
    if replicas == 0 {
        return Ok(());
    }
    let wait = (timeout / 4).max(Duration::from_millis(10));
    let acked: u32 = redis::cmd("WAIT")
        .arg(replicas)
        .arg(wait.as_millis() as u64)
        .query_async(conn)
        .await?;
    if acked >= replicas {
        return Ok(());
    }
    Err(QueueError::Redis(redis::RedisError::from(
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "{acked} of the {replicas} replicas redis.min_replicas_acked asks for \
                 acknowledged the write within {wait:?}: it is on the primary but not \
                 acknowledged"
            ),
        ),
    )))
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
            sentinel: Default::default(),
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
}
