//! Redis Sentinel for the tests: a primary, a replica and three sentinels, all real
//! processes on 127.0.0.1, each on a free port with its files in a temporary directory,
//! killed when the set is dropped.
//!
//! The sentinels count the primary down after one second and may fail over again after a
//! few, so a test that kills the primary sees the replica promoted within seconds.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis::RedisServer;
use crate::temp::TempDir;

/// The name the sentinels monitor the primary by.
pub const MASTER_NAME: &str = "agentsmith-test";

/// How long the set may take to settle (replication up, sentinels aware of each other
/// and of the replica): sentinels learn of replicas from the primary's `INFO`, every
/// ten seconds, so this is generous for a slow machine.
const SETTLE: Duration = Duration::from_secs(60);

/// A primary, its replica and three sentinels watching them.
pub struct SentinelSet {
    /// The primary at start; a test may [`RedisServer::kill`] it.
    pub primary: RedisServer,
    /// The replica, promoted when the primary dies.
    pub replica: RedisServer,
    sentinels: Vec<Sentinel>,
}

/// One `redis-server --sentinel` process.
struct Sentinel {
    port: u16,
    child: Child,
    _dir: TempDir,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SentinelSet {
    /// Starts the set and waits until it can fail over: the replica in sync, every
    /// sentinel knowing the replica and the two other sentinels. Panics saying what did
    /// not happen.
    pub fn started() -> Self {
        let primary = RedisServer::new().started();
        let port = primary.port().to_string();
        let replica = RedisServer::new()
            .args(&["--replicaof", "127.0.0.1", &port])
            .started();
        let sentinels = (0..3).map(|_| Sentinel::start(primary.port())).collect();
        let set = Self {
            primary,
            replica,
            sentinels,
        };
        set.settle();
        set
    }

    /// The sentinels' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}", s.port))
            .collect()
    }

    /// The primary's port as the first sentinel that answers names it.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let (_, port): (String, u16) = query(
                s.port,
                ::redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(MASTER_NAME),
            )?;
            Some(port)
        })
    }

    fn settle(&self) {
        let deadline = Instant::now() + SETTLE;
        let replica = self.replica.port();
        let synced = || {
            query::<String>(replica, ::redis::cmd("INFO").arg("replication"))
                .is_some_and(|info| info.contains("master_link_status:up"))
        };
        let aware = |s: &Sentinel| {
            let replicas: Option<Vec<::redis::Value>> = query(
                s.port,
                ::redis::cmd("SENTINEL").arg("replicas").arg(MASTER_NAME),
            );
            let others: Option<Vec<::redis::Value>> = query(
                s.port,
                ::redis::cmd("SENTINEL").arg("sentinels").arg(MASTER_NAME),
            );
            replicas.is_some_and(|r| r.len() == 1) && others.is_some_and(|o| o.len() == 2)
        };
        while Instant::now() < deadline {
            if synced() && self.sentinels.iter().all(aware) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "the sentinel set did not settle within {SETTLE:?} (replica in sync: {}; \
             sentinels aware of the replica and of each other: {:?})",
            synced(),
            self.sentinels.iter().map(aware).collect::<Vec<_>>()
        );
    }
}

impl Sentinel {
    /// A sentinel watching the primary on `primary_port`; panics if it does not listen.
    fn start(primary_port: u16) -> Self {
        let dir = TempDir::new("agentsmith-sentinel");
        let port = crate::free_port();
        let conf = dir.path().join("sentinel.conf");
        // Sentinel rewrites its file as it learns the set, so it lives in its directory.
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 3000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = dir.path().display()
            ),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", conf.display()));
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting redis-server --sentinel ({e}): apt-get install redis-server")
            });
        let sentinel = Self {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return sentinel;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server --sentinel did not listen on port {port} within 10 s");
    }
}

/// `cmd`'s answer from the server on `port`, or `None` if it does not answer.
fn query<T: ::redis::FromRedisValue>(port: u16, cmd: &mut ::redis::Cmd) -> Option<T> {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    cmd.query(&mut conn).ok()
}
