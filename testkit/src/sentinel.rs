//! Redis Sentinel for the tests: a primary, a replica and three sentinels, all real
//! processes on 127.0.0.1, each on a free port with its files in a temporary directory
//! (or one the caller owns, [`SetOptions::dir`]), killed when the set is dropped.
//!
//! The sentinels count the primary down after one second and may fail over again after a
//! few, so a test that kills the primary sees the replica promoted within seconds. A
//! killed server started again ([`SentinelSet::restart`]) is made a replica of the new
//! primary by the sentinels, so the set can fail over once more
//! ([`SentinelSet::ready`]).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::redis::SetOptions;
use crate::redis::{output_to, RedisServer};
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
    _temp: Option<TempDir>,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SentinelSet {
    /// Starts the set in temporary directories and waits until it can fail over; panics
    /// saying what did not happen.
    pub fn started() -> Self {
        Self::start(&SetOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the set as `options` say and waits until it can fail over
    /// ([`SentinelSet::ready`]); the error says what did not happen.
    pub fn start(options: &SetOptions) -> Result<Self, String> {
        let server = |name: &str, more: &[&str]| -> Result<RedisServer, String> {
            let server = match &options.dir {
                None => RedisServer::new(),
                Some(dir) => {
                    let data = dir.join(name);
                    std::fs::create_dir_all(&data)
                        .map_err(|e| format!("creating {}: {e}", data.display()))?;
                    RedisServer::at(crate::free_port(), &data).log(&dir.join(format!("{name}.log")))
                }
            };
            let args: Vec<&str> = options.server_args.iter().map(String::as_str).collect();
            let mut server = server.args(&args).args(more);
            server.start()?;
            Ok(server)
        };
        let primary = server("redis-a", &[])?;
        let port = primary.port().to_string();
        let replica = server("redis-b", &["--replicaof", "127.0.0.1", &port])?;
        let sentinels = (0..3)
            .map(|n| Sentinel::start(n, primary.port(), options))
            .collect::<Result<_, _>>()?;
        let set = Self {
            primary,
            replica,
            sentinels,
        };
        set.settle()?;
        Ok(set)
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

    /// The ports of both servers: the primary at start, then the replica.
    pub fn server_ports(&self) -> [u16; 2] {
        [self.primary.port(), self.replica.port()]
    }

    /// The process id of the server on `port`, while it runs (to freeze it with SIGSTOP,
    /// say, so it falls behind its primary).
    pub fn pid(&self, port: u16) -> Option<u32> {
        [&self.primary, &self.replica]
            .into_iter()
            .find(|s| s.port() == port)
            .and_then(RedisServer::pid)
    }

    /// Makes the primary the sentinels name close its connections to its replicas
    /// (`CLIENT KILL TYPE replica`): what it writes after that reaches no replica until one
    /// connects again (within a second, unless it is frozen). How many it closed, `None`
    /// when the primary did not answer.
    pub fn cut_replication(&self) -> Option<u64> {
        query(
            self.primary_port()?,
            ::redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("replica"),
        )
    }

    /// The server on `port`, if it is one of the set's two.
    fn server_mut(&mut self, port: u16) -> Option<&mut RedisServer> {
        [&mut self.primary, &mut self.replica]
            .into_iter()
            .find(|s| s.port() == port)
    }

    /// SIGKILLs the server the sentinels name as primary, as a crash would; its port, or
    /// `None` when no sentinel names one of the set's servers.
    pub fn kill_primary(&mut self) -> Option<u16> {
        let port = self.primary_port()?;
        self.server_mut(port)?.kill();
        Some(port)
    }

    /// Starts the server on `port` again (same port, same files) after a kill; the
    /// sentinels then make it a replica of the primary they name.
    pub fn restart(&mut self, port: u16) -> Result<(), String> {
        self.server_mut(port)
            .ok_or_else(|| format!("no server of the set on port {port}"))?
            .start()
    }

    /// Whether the server on `port` is a replica whose link to its primary is up (it has
    /// loaded the primary's data and follows its writes).
    pub fn in_sync(&self, port: u16) -> bool {
        query::<String>(port, ::redis::cmd("INFO").arg("replication")).is_some_and(|info| {
            info.contains("role:slave") && info.contains("master_link_status:up")
        })
    }

    /// Whether the set can fail over now: the sentinels name one of its servers as
    /// primary, the other is that primary's replica and in sync, and every sentinel knows
    /// that replica as up and knows the two other sentinels.
    pub fn ready(&self) -> bool {
        let Some(primary) = self.primary_port() else {
            return false;
        };
        let ports = self.server_ports();
        let Some(&replica) = ports.iter().find(|p| **p != primary) else {
            return false;
        };
        ports.contains(&primary)
            && self.in_sync(replica)
            && self.sentinels.iter().all(|s| s.knows(replica))
    }

    fn settle(&self) -> Result<(), String> {
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            if self.ready() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let replica = self.replica.port();
        Err(format!(
            "the sentinel set did not settle within {SETTLE:?} (replica in sync: {}; \
             sentinels aware of the replica and of each other: {:?})",
            self.in_sync(replica),
            self.sentinels
                .iter()
                .map(|s| s.knows(replica))
                .collect::<Vec<_>>()
        ))
    }
}

impl Sentinel {
    /// Sentinel `n` watching the primary on `primary_port`; fails if it does not listen.
    fn start(n: usize, primary_port: u16, options: &SetOptions) -> Result<Self, String> {
        let (dir, temp, log) = match &options.dir {
            None => {
                let temp = TempDir::new("agentsmith-sentinel");
                (temp.path().to_path_buf(), Some(temp), None)
            }
            Some(dir) => {
                let own = dir.join(format!("sentinel-{n}"));
                std::fs::create_dir_all(&own)
                    .map_err(|e| format!("creating {}: {e}", own.display()))?;
                (own, None, Some(dir.join(format!("sentinel-{n}.log"))))
            }
        };
        let port = crate::free_port();
        let conf = dir.join("sentinel.conf");
        // Sentinel rewrites its file as it learns the set, so it lives in its directory.
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 3000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = dir.display()
            ),
        )
        .map_err(|e| format!("writing {}: {e}", conf.display()))?;
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(output_to(log.as_deref())?)
            .stderr(output_to(log.as_deref())?)
            .spawn()
            .map_err(|e| {
                format!("starting redis-server --sentinel ({e}): apt-get install redis-server")
            })?;
        let sentinel = Self {
            port,
            child,
            _temp: temp,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(sentinel);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "redis-server --sentinel did not listen on port {port} within 10 s"
        ))
    }

    /// Whether this sentinel knows the replica on `replica_port` and sees it up, and knows
    /// the two other sentinels.
    fn knows(&self, replica_port: u16) -> bool {
        let replicas: Option<Vec<Vec<String>>> = query(
            self.port,
            ::redis::cmd("SENTINEL").arg("replicas").arg(MASTER_NAME),
        );
        let others: Option<Vec<::redis::Value>> = query(
            self.port,
            ::redis::cmd("SENTINEL").arg("sentinels").arg(MASTER_NAME),
        );
        let up = |fields: &Vec<String>| {
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|pair| pair[0] == name)
                    .and_then(|pair| pair.get(1))
            };
            field("port").is_some_and(|p| *p == replica_port.to_string())
                && field("flags").is_some_and(|f| {
                    !f.split(',')
                        .any(|flag| matches!(flag, "s_down" | "o_down" | "disconnected"))
                })
        };
        replicas.is_some_and(|r| r.iter().any(up)) && others.is_some_and(|o| o.len() == 2)
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
