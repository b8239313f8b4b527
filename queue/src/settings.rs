//! The queue's sections of the configuration: `redis.*` ([`RedisSettings`]) and `queue.*`
//! ([`QueueSettings`]), declared here and read by the dispatcher's settings.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use redis::{ConnectionAddr, IntoConnectionInfo};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// `redis.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Connection URL (a secret: it may hold a password, `redis://USER:PASSWORD@HOST`).
    pub url: SecretString,
    /// Key prefix; give it a hash tag (`{agentsmith}:`) on Redis Cluster.
    pub prefix: String,
    /// Connect and reply timeout.
    pub timeout_secs: u64,
    /// The certificates of a `rediss://` connection.
    pub tls: RedisTlsSettings,
    /// Redis Sentinel: when set, the primary the sentinels name is used instead of `url`.
    #[serde(default)]
    pub sentinel: RedisSentinelSettings,
    /// Redis Cluster: `url` names a node of the cluster (any), and the queue uses the
    /// primary serving its keys' hash slot, following it through failovers.
    #[serde(default)]
    pub cluster: bool,
    /// Replicas that must acknowledge each write (Redis `WAIT`) before the queue reports
    /// it done; 0 waits for none.
    #[serde(default)]
    pub min_replicas_acked: u32,
}

/// `redis.sentinel.*`: a primary with replicas watched by Redis Sentinel. The queue asks
/// the sentinels for the primary, and asks again when it fails over.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSentinelSettings {
    /// The name the sentinels know the primary by (`sentinel monitor NAME ...`).
    pub master_name: String,
    /// The sentinels, as `redis://HOST:PORT` URLs (a sentinel that wants a password has
    /// it in its URL, `redis://:PASSWORD@HOST:26379`); empty: no Sentinel.
    pub nodes: Vec<String>,
    /// The password of the primary and its replicas (empty: none).
    pub password: SecretString,
    /// The ACL user of the primary and its replicas (empty: the default user).
    pub username: String,
}

impl RedisSentinelSettings {
    /// Whether Sentinel is configured.
    pub fn is_set(&self) -> bool {
        !self.nodes.is_empty()
    }

    /// Every value that cannot work, as (key within `redis`, message).
    fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.nodes.is_empty() {
            if !self.master_name.is_empty() {
                problems.push((
                    "sentinel.nodes".into(),
                    "is needed with sentinel.master_name: list the sentinels (redis://HOST:26379)"
                        .into(),
                ));
            }
            return problems;
        }
        if self.master_name.is_empty() {
            problems.push((
                "sentinel.master_name".into(),
                "is needed with sentinel.nodes: the name the sentinels monitor the primary by"
                    .into(),
            ));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.starts_with("redis://") {
                problems.push((
                    format!("sentinel.nodes[{i}]"),
                    "must start with redis:// (TLS to sentinels is not supported)".into(),
                ));
            } else if node.as_str().into_connection_info().is_err() {
                problems.push((
                    format!("sentinel.nodes[{i}]"),
                    "is not a Redis URL (redis://HOST:PORT)".into(),
                ));
            }
        }
        problems
    }
}

/// `redis.tls.*`: the certificates of a `rediss://` connection, as PEM files. Every one
/// is optional: without them the server is checked against the system's roots and no
/// client certificate is sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTlsSettings {
    /// The CA (or CAs) that signed the server's certificate, instead of the system's roots.
    pub ca_file: PathBuf,
    /// A client certificate (chain) for servers that ask for one; needs `key_file`.
    pub cert_file: PathBuf,
    /// The private key of `cert_file`.
    pub key_file: PathBuf,
}

impl RedisTlsSettings {
    /// Whether any file is set.
    pub fn is_set(&self) -> bool {
        [&self.ca_file, &self.cert_file, &self.key_file]
            .iter()
            .any(|path| !path.as_os_str().is_empty())
    }

    /// Every file that cannot work, as (key within `redis.tls`, message).
    fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let cert = !self.cert_file.as_os_str().is_empty();
        let key = !self.key_file.as_os_str().is_empty();
        if cert != key {
            let (missing, given) = if cert {
                ("key_file", "cert_file")
            } else {
                ("cert_file", "key_file")
            };
            problems.push((
                format!("tls.{missing}"),
                format!("is needed with tls.{given}: a client certificate needs its key"),
            ));
        }
        for (key, path) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(problem) = pem_problem(path) {
                problems.push((format!("tls.{key}"), problem));
            }
        }
        problems
    }
}

/// What is wrong with the PEM file at `path`, if it is set and anything is.
fn pem_problem(path: &Path) -> Option<String> {
    if path.as_os_str().is_empty() {
        return None;
    }
    match std::fs::read(path) {
        Err(e) => Some(format!("cannot read {}: {e}", path.display())),
        // A DER file is the usual mistake: say so rather than fail at the handshake.
        Ok(bytes) if !bytes.windows(11).any(|w| w == b"-----BEGIN ") => Some(format!(
            "{} is not a PEM file (no -----BEGIN line)",
            path.display()
        )),
        Ok(_) => None,
    }
}

/// `queue.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// Global limit of admitted jobs.
    pub max_concurrent_jobs: u32,
    /// Limit of admitted jobs per concurrency key.
    pub concurrency_key_limit: u32,
    /// Attempts for infrastructure failures.
    pub max_attempts: u32,
    /// First retry delay.
    pub backoff_base_secs: u64,
    /// Largest retry delay.
    pub backoff_max_secs: u64,
    /// Lease of a running job, renewed by heartbeats.
    pub lease_secs: u64,
    /// Seconds between runner heartbeats.
    pub heartbeat_secs: u64,
    /// Lease of a starting job.
    pub start_timeout_secs: u64,
    /// Idle time after which another dispatcher takes over an unrecorded claim.
    pub reclaim_idle_secs: u64,
    /// How long finished jobs are kept (and entries of the delivery journal).
    pub retention_secs: u64,
    /// Entries the delivery journal keeps at most (the newest); 0 keeps no journal.
    pub deliveries_max_len: u64,
    /// How long an idempotency key maps to its job.
    pub idempotency_ttl_secs: u64,
    /// Events kept per job.
    pub events_max_len: u64,
    /// Bytes of output one attempt may record; later lines are dropped, with one event
    /// saying so.
    pub output_bytes_per_attempt: u64,
    /// Ready jobs claimed per read.
    pub claim_batch: usize,
    /// Housekeeping interval in milliseconds.
    pub tick_ms: u64,
}

impl RedisSettings {
    /// Every value that parses but cannot work, as (key within `redis`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = self.sentinel.problems();
        if self.cluster {
            problems.extend(self.cluster_problems());
        }
        if self.sentinel.is_set() {
            if self.tls.is_set() {
                problems.push((
                    "tls".into(),
                    "is not used with redis.sentinel (TLS to a Sentinel-managed primary is not supported)"
                        .into(),
                ));
            }
            if self.timeout_secs == 0 {
                problems.push(("timeout_secs".into(), "must be at least 1".into()));
            }
            // redis.url is not used: the sentinels name the primary.
            return problems;
        }
        let url = self.url.expose_secret();
        if !["redis://", "rediss://", "unix://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            problems.push((
                "url".into(),
                "must start with redis://, rediss:// or unix://".into(),
            ));
        }
        if self.timeout_secs == 0 {
            problems.push(("timeout_secs".into(), "must be at least 1".into()));
        }
        if self.tls.is_set() && !url.starts_with("rediss://") {
            problems.push((
                "tls".into(),
                "is only used with a rediss:// URL: make redis.url rediss://, or leave the tls files empty"
                    .into(),
            ));
        }
        problems.extend(self.tls.problems());
        problems
    }

    /// What cannot work on Redis Cluster, as (key within `redis`, message).
    fn cluster_problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.sentinel.is_set() {
            problems.push((
                "cluster".into(),
                "cannot be used with redis.sentinel: a cluster fails over by itself".into(),
            ));
        }
        if self.url.expose_secret().starts_with("unix://") {
            problems.push((
                "url".into(),
                "must be redis:// or rediss:// with redis.cluster (a node of the cluster)".into(),
            ));
        }
        if crate::connection::hash_tag(self.prefix.as_bytes()).is_none() {
            problems.push((
                "prefix".into(),
                format!(
                    "needs a hash tag with redis.cluster, e.g. \"{{agentsmith}}:\": the queue's \
                     scripts reach many of its keys at once, so they must share one hash slot \
                     ({:?} has no non-empty {{...}})",
                    self.prefix
                ),
            ));
        }
        problems
    }

    /// What works but is risky, as (key within `redis`, message): a Redis without a
    /// password on an address other programs (agents in containers or pods) may reach.
    pub fn warnings(&self) -> Vec<(String, String)> {
        if self.sentinel.is_set() {
            return Vec::new();
        }
        let Ok(info) = self.url.expose_secret().into_connection_info() else {
            return Vec::new();
        };
        let host = match info.addr() {
            ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host,
            _ => return Vec::new(),
        };
        let has_password = info
            .redis_settings()
            .password()
            .is_some_and(|password| !password.is_empty());
        if has_password || is_loopback(host) {
            return Vec::new();
        }
        vec![(
            "url".into(),
            format!(
                "has no password, and Redis at {host} is not on a loopback address: whatever reaches it \
                 (agents in containers or pods included) can read and change every job. Require a password \
                 on the server (requirepass, or an ACL user) and put it in the URL: redis://:PASSWORD@{host}:PORT \
                 or redis://USER:PASSWORD@{host}:PORT"
            ),
        )]
    }
}

/// Whether `host` names this machine only (`localhost`, 127.0.0.0/8, ::1).
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
impl RedisSettings {
    /// A plain Redis at `url` under `prefix`, for the queue's own tests.
    pub(crate) fn for_tests(url: &str, prefix: String) -> Self {
        Self {
            url: secrecy::SecretString::from(url.to_string()),
            prefix,
            timeout_secs: 5,
            tls: Default::default(),
            sentinel: Default::default(),
            cluster: false,
            min_replicas_acked: 0,
        }
    }
}

#[cfg(test)]
impl QueueSettings {
    /// Small limits for the queue's own tests.
    pub(crate) fn for_tests() -> Self {
        Self {
            max_concurrent_jobs: 4,
            concurrency_key_limit: 1,
            max_attempts: 3,
            backoff_base_secs: 1,
            backoff_max_secs: 1,
            lease_secs: 30,
            heartbeat_secs: 5,
            start_timeout_secs: 30,
            reclaim_idle_secs: 30,
            retention_secs: 3600,
            deliveries_max_len: 1000,
            idempotency_ttl_secs: 3600,
            events_max_len: 1000,
            output_bytes_per_attempt: 1 << 20,
            claim_batch: 10,
            tick_ms: 100,
        }
    }
}

impl QueueSettings {
    /// Every value that parses but cannot work, as (key within `queue`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("max_concurrent_jobs", u64::from(self.max_concurrent_jobs)),
            (
                "concurrency_key_limit",
                u64::from(self.concurrency_key_limit),
            ),
            ("max_attempts", u64::from(self.max_attempts)),
            ("backoff_base_secs", self.backoff_base_secs),
            ("lease_secs", self.lease_secs),
            ("heartbeat_secs", self.heartbeat_secs),
            ("start_timeout_secs", self.start_timeout_secs),
            ("reclaim_idle_secs", self.reclaim_idle_secs),
            ("retention_secs", self.retention_secs),
            ("idempotency_ttl_secs", self.idempotency_ttl_secs),
            ("events_max_len", self.events_max_len),
            ("output_bytes_per_attempt", self.output_bytes_per_attempt),
            ("claim_batch", self.claim_batch as u64),
            ("tick_ms", self.tick_ms),
        ] {
            if value == 0 {
                problems.push((key.into(), "must be greater than 0".into()));
            }
        }
        if self.heartbeat_secs >= self.lease_secs && self.lease_secs > 0 {
            problems.push((
                "heartbeat_secs".into(),
                format!(
                    "must be shorter than queue.lease_secs ({})",
                    self.lease_secs
                ),
            ));
        }
        if self.backoff_max_secs < self.backoff_base_secs {
            problems.push((
                "backoff_max_secs".into(),
                "must not be below queue.backoff_base_secs".into(),
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(url: &str, tls: RedisTlsSettings) -> RedisSettings {
        RedisSettings {
            url: SecretString::from(url.to_string()),
            prefix: "agentsmith:".into(),
            timeout_secs: 5,
            tls,
            sentinel: RedisSentinelSettings::default(),
            cluster: false,
            min_replicas_acked: 0,
        }
    }

    fn sentinel(master_name: &str, nodes: &[&str]) -> RedisSettings {
        RedisSettings {
            sentinel: RedisSentinelSettings {
                master_name: master_name.into(),
                nodes: nodes.iter().map(|n| n.to_string()).collect(),
                ..Default::default()
            },
            ..redis("redis://127.0.0.1:6379", RedisTlsSettings::default())
        }
    }

    fn cluster(url: &str, prefix: &str) -> RedisSettings {
        RedisSettings {
            cluster: true,
            prefix: prefix.into(),
            ..redis(url, RedisTlsSettings::default())
        }
    }

    #[test]
    fn a_cluster_wants_a_hash_tagged_prefix_and_a_tcp_node() {
        assert!(cluster("redis://10.0.0.1:7000", "{agentsmith}:")
            .problems()
            .is_empty());
        assert!(cluster("rediss://:pw@10.0.0.1:7000", "team-{a}:")
            .problems()
            .is_empty());
        for prefix in ["agentsmith:", "{}agentsmith:", "{agentsmith:"] {
            let problems = cluster("redis://10.0.0.1:7000", prefix).problems();
            assert_eq!(keys(&problems), ["prefix"], "{problems:?}");
            assert!(problems[0].1.contains("hash tag"), "{problems:?}");
        }
        let problems = cluster("unix:///run/redis.sock", "{a}:").problems();
        assert_eq!(keys(&problems), ["url"], "{problems:?}");
        let both = RedisSettings {
            cluster: true,
            prefix: "{a}:".into(),
            ..sentinel("mymaster", &["redis://10.0.0.1:26379"])
        };
        assert_eq!(keys(&both.problems()), ["cluster"], "{:?}", both.problems());
    }

    #[test]
    fn sentinel_nodes_without_a_master_name_are_a_problem_naming_the_key() {
        let problems = sentinel("", &["redis://10.0.0.1:26379"]).problems();
        assert_eq!(keys(&problems), ["sentinel.master_name"], "{problems:?}");
        let problems = sentinel("mymaster", &[]).problems();
        assert_eq!(keys(&problems), ["sentinel.nodes"], "{problems:?}");
        let problems = sentinel("mymaster", &["rediss://10.0.0.1:26379", "nope"]).problems();
        assert_eq!(
            keys(&problems),
            ["sentinel.nodes[0]", "sentinel.nodes[1]"],
            "{problems:?}"
        );
        let fine = sentinel("mymaster", &["redis://10.0.0.1:26379", "redis://h:26379"]);
        assert!(fine.problems().is_empty(), "{:?}", fine.problems());
        assert!(
            fine.warnings().is_empty(),
            "redis.url is not used with sentinel"
        );
    }

    #[test]
    fn an_unknown_sentinel_key_does_not_parse() {
        let parsed = serde_json::from_value::<RedisSentinelSettings>(serde_json::json!({
            "master_name": "mymaster",
            "nodes": ["redis://127.0.0.1:26379"],
            "master": "typo",
        }));
        let message = parsed.unwrap_err().to_string();
        assert!(message.contains("unknown field `master`"), "{message}");
    }

    fn keys(found: &[(String, String)]) -> Vec<&str> {
        found.iter().map(|(key, _)| key.as_str()).collect()
    }

    /// A PEM-looking file in a directory of its own, and the directory (removed by the caller).
    fn pem_file(name: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("queue-settings-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        (dir, path)
    }

    #[test]
    fn a_client_certificate_without_its_key_is_a_problem() {
        let (dir, cert) = pem_file("client.pem");
        let settings = redis(
            "rediss://redis.internal:6380",
            RedisTlsSettings {
                cert_file: cert,
                ..Default::default()
            },
        );
        let problems = settings.problems();
        std::fs::remove_dir_all(dir).unwrap();
        assert_eq!(keys(&problems), ["tls.key_file"], "{problems:?}");
        assert!(problems[0].1.contains("tls.cert_file"), "{problems:?}");
    }

    #[test]
    fn unreadable_and_non_pem_tls_files_are_problems_that_name_the_file() {
        let dir = std::env::temp_dir().join(format!("queue-settings-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let der = dir.join("ca.der");
        std::fs::write(&der, [0x30, 0x82, 0x01, 0x0a]).unwrap();
        let settings = redis(
            "rediss://redis.internal:6380",
            RedisTlsSettings {
                ca_file: der.clone(),
                cert_file: dir.join("missing.pem"),
                key_file: dir.join("missing.key"),
            },
        );
        let problems = settings.problems();
        std::fs::remove_dir_all(dir).unwrap();
        assert_eq!(
            keys(&problems),
            ["tls.ca_file", "tls.cert_file", "tls.key_file"],
            "{problems:?}"
        );
        assert!(problems[0].1.contains("not a PEM file"), "{problems:?}");
        assert!(problems[1].1.contains("cannot read"), "{problems:?}");
        assert!(problems[1].1.contains("missing.pem"), "{problems:?}");
    }

    #[test]
    fn tls_files_with_a_plain_url_are_a_problem() {
        let (dir, ca) = pem_file("ca.pem");
        let settings = redis(
            "redis://redis.internal:6379",
            RedisTlsSettings {
                ca_file: ca.clone(),
                ..Default::default()
            },
        );
        let plain = settings.problems();
        let secure = redis(
            "rediss://redis.internal:6380",
            RedisTlsSettings {
                ca_file: ca,
                ..Default::default()
            },
        )
        .problems();
        std::fs::remove_dir_all(dir).unwrap();
        assert_eq!(keys(&plain), ["tls"], "{plain:?}");
        assert!(plain[0].1.contains("rediss://"), "{plain:?}");
        assert!(secure.is_empty(), "{secure:?}");
    }

    #[test]
    fn a_remote_redis_without_a_password_is_warned_about_and_a_local_one_is_not() {
        for url in [
            "redis://10.0.0.5:6379",
            "redis://redis.agentsmith.svc:6379/0",
            "rediss://user@cache.example.com:6380",
            "redis://172.17.0.1:6379",
        ] {
            let warnings = redis(url, RedisTlsSettings::default()).warnings();
            assert_eq!(keys(&warnings), ["url"], "{url}: {warnings:?}");
            assert!(warnings[0].1.contains("containers or pods"), "{warnings:?}");
        }
        for url in [
            "redis://127.0.0.1:6379",
            "redis://127.0.0.2:6379",
            "redis://localhost:6379",
            "redis://[::1]:6379",
            "unix:///run/redis.sock",
            "redis://:s3cret@10.0.0.5:6379",
            "rediss://agentsmith:s3cret@cache.example.com:6380",
        ] {
            let warnings = redis(url, RedisTlsSettings::default()).warnings();
            assert!(warnings.is_empty(), "{url}: {warnings:?}");
        }
    }

    #[test]
    fn a_url_with_a_bad_scheme_is_a_problem_that_does_not_repeat_the_url() {
        let settings = redis("ftp://user:hunter2@10.0.0.5", RedisTlsSettings::default());
        let problems = settings.problems();
        assert_eq!(keys(&problems), ["url"], "{problems:?}");
        assert!(
            problems.iter().all(|(_, m)| !m.contains("hunter2")),
            "{problems:?}"
        );
    }
}
