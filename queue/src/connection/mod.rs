//! The Redis client the settings describe: the URL (with the user and password it may hold)
//! and, for `rediss://`, the CA and client certificate of `redis.tls`.
//!
//! TLS is rustls with the `ring` provider, as the Kubernetes client's is, so the workspace
//! builds one crypto library.
//!
//! With `redis.sentinel` or `redis.cluster` the server is not fixed: [`Target`] asks, each
//! time a connection is made, for the primary the sentinels name ([`sentinel`]) or for the
//! primary serving the hash slot of the queue's keys ([`cluster`]), and [`Shared`] (the
//! queue's one multiplexed connection) is dropped when the answer changes, so the next
//! command connects to the new one. A watch task asks once a second, and at once when a
//! script call met a broken connection or an answer a failover explains (`READONLY`,
//! `MOVED`, `CLUSTERDOWN`): the `ConnectionManager` reconnects by itself, but only to the
//! address it was made for, which after a failover is dead or a demoted replica.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, TlsCertificates};
use secrecy::ExposeSecret;

use crate::error::{QueueError, Result};
use crate::settings::RedisSettings;

mod cluster;
mod sentinel;

pub(crate) use cluster::hash_tag;
use cluster::SlotOwner;
use sentinel::Sentinels;

/// Where the queue's connections go: the one server of `redis.url`, the primary the
/// sentinels of `redis.sentinel` name at the time, or the primary of the Redis Cluster
/// node serving the queue's hash slot at the time.
#[derive(Clone)]
pub(crate) enum Target {
    /// `redis.url`.
    Direct(Box<redis::Client>),
    /// `redis.sentinel`.
    Sentinel(Arc<Sentinels>),
    /// `redis.cluster`.
    Cluster(Arc<SlotOwner>),
}

/// A connection a watch keeps to whoever it asks (a sentinel, a cluster node), by the
/// index of that node in its list.
type Asked = Option<(usize, MultiplexedConnection)>;

impl Target {
    /// The target `settings` describe; no connection is made.
    pub(crate) fn new(settings: &RedisSettings) -> Result<Self> {
        if settings.sentinel.is_set() {
            return Sentinels::new(&settings.sentinel).map(|s| Target::Sentinel(Arc::new(s)));
        }
        if settings.cluster {
            return SlotOwner::new(settings).map(|c| Target::Cluster(Arc::new(c)));
        }
        client(settings).map(|client| Target::Direct(Box::new(client)))
    }

    /// A client for the server to use now: with Sentinel, the primary the sentinels name;
    /// with Cluster, the primary serving the queue's slot.
    pub(crate) async fn client(&self) -> Result<redis::Client> {
        match self {
            Target::Direct(client) => Ok(client.as_ref().clone()),
            Target::Sentinel(sentinels) => sentinels.primary().await,
            Target::Cluster(owner) => owner.client().await,
        }
    }

    /// `HOST:PORT` of the server to use now, as the sentinels or the cluster say, asked on
    /// `asked` (made again as needed); `None` for a fixed server or when nobody answers.
    async fn current(&self, asked: &mut Asked, timeout: Duration) -> Option<String> {
        match self {
            Target::Direct(_) => None,
            Target::Sentinel(sentinels) => sentinels.primary_addr(asked, timeout).await,
            Target::Cluster(owner) => owner
                .owner_addr(asked, timeout)
                .await
                .map(|(host, port)| format!("{host}:{port}")),
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
        let mut manager = ConnectionManager::new_with_config(client, config).await?;
        if matches!(target, Target::Direct(_)) && cluster_node(&mut manager).await {
            return Err(QueueError::ClusterNode);
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Current {
            manager: manager.clone(),
            addr,
            generation,
        });
        if !matches!(target, Target::Direct(_)) && !self.watching.swap(true, Ordering::Relaxed) {
            let recheck = self.recheck.clone();
            tokio::spawn(watch(
                Arc::downgrade(self),
                recheck,
                target.clone(),
                timeout,
            ));
        }
        Ok(manager)
    }
}

/// Whether the server is a node of a Redis Cluster (`INFO cluster`). A server that does
/// not answer (a proxy, an ACL user without `INFO`) is taken for a plain one: its commands
/// say what is wrong, if anything is.
async fn cluster_node(conn: &mut ConnectionManager) -> bool {
    let info: redis::RedisResult<String> =
        redis::cmd("INFO").arg("cluster").query_async(conn).await;
    info.is_ok_and(|info| info.contains("cluster_enabled:1"))
}

/// Whether `e` is what a command meets when the primary moved: the connection broke, the
/// server is now a replica (`READONLY`), or the slot is served elsewhere or by nobody yet
/// (`MOVED`, `CLUSTERDOWN`, `TRYAGAIN`).
fn moved(e: &redis::RedisError) -> bool {
    e.code().is_some_and(|code| FAILOVER_CODES.contains(&code))
        || e.to_string().contains("READONLY")
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
}

/// The error codes a failover explains: the server is no longer the primary, or the slot
/// is served elsewhere or by nobody yet.
pub(crate) const FAILOVER_CODES: [&str; 5] =
    ["READONLY", "MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN"];

/// Asks the sentinels or the cluster once a second (and when `recheck` is notified) where
/// the primary is, and drops the shared connection when it is elsewhere. Ends with the last
/// clone of the queue.
async fn watch(
    shared: Weak<Shared>,
    recheck: Arc<tokio::sync::Notify>,
    target: Target,
    timeout: Duration,
) {
    let mut asked = None;
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
        let Some(primary) = target.current(&mut asked, timeout).await else {
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
                    "redis names another primary for the queue: reconnecting"
                );
                shared.forget(current.generation);
            }
        }
    }
}

/// The client for `settings`; no connection is made. Fails on a URL that does not parse
/// and on TLS files that cannot be read or used.
pub(crate) fn client(settings: &RedisSettings) -> Result<redis::Client> {
    client_at(settings, None)
}

/// The client for `settings`, or for the server at `at` (`HOST`, `PORT`) with the user,
/// password, database and TLS of `redis.url` (a node of the same cluster).
pub(crate) fn client_at(
    settings: &RedisSettings,
    at: Option<(&str, u16)>,
) -> Result<redis::Client> {
    let mut info = settings
        .url
        .expose_secret()
        .into_connection_info()
        .map_err(QueueError::Url)?;
    if let Some((host, port)) = at {
        let addr = match info.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_string(), port),
        };
        info = info.set_addr(addr);
    }
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

#[cfg(test)]
mod tests;
