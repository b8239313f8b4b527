//! Redis Cluster for the tests: three primaries with a replica each, all real processes
//! on 127.0.0.1 (free ports for clients and for the cluster bus, files in temporary
//! directories, or one the caller owns: [`SetOptions::dir`]), joined by `redis-cli
//! --cluster create`, killed when dropped.
//!
//! Nodes count a silent peer as failing after one second (`cluster-node-timeout 1000`),
//! so a test that kills a primary sees its replica promoted within seconds. A killed node
//! started again ([`RedisCluster::restart`], same port, files and `nodes.conf`) learns from
//! the others that its slots have a new owner and becomes that owner's replica, so the
//! cluster can fail over once more ([`RedisCluster::ready`]).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::redis::{RedisServer, SetOptions};

/// How long the cluster may take to form: every node agreeing that every slot is served
/// and every replica in sync.
const SETTLE: Duration = Duration::from_secs(60);

/// Six nodes: three primaries, each with a replica.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes in temporary directories, creates the cluster and waits until it
    /// is ok everywhere with every replica in sync. Panics saying what did not happen.
    pub fn started() -> Self {
        Self::start(&SetOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the nodes as `options` say, creates the cluster and waits until it is ok
    /// everywhere with every replica in sync ([`RedisCluster::ready`]); the error says
    /// what did not happen.
    pub fn start(options: &SetOptions) -> Result<Self, String> {
        let mut nodes = Vec::new();
        for n in 0..6 {
            nodes.push(node(n, options)?);
        }
        let addrs = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect::<Vec<_>>();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .map_err(|e| format!("running redis-cli ({e}): apt-get install redis-tools"))?;
        if !created.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&created.stdout),
                String::from_utf8_lossy(&created.stderr)
            ));
        }
        let cluster = Self { nodes };
        cluster.settle()?;
        Ok(cluster)
    }

    /// The URL of the node on `port`.
    pub fn url(&self, port: u16) -> String {
        format!("redis://127.0.0.1:{port}")
    }

    /// The ports of the nodes that are primaries now (as each live node says of itself).
    pub fn primaries(&self) -> Vec<u16> {
        self.ports()
            .into_iter()
            .filter(|port| self.role(*port).as_deref() == Some("master"))
            .collect()
    }

    /// The ports of every node, dead or alive.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// The port of the primary serving the slot of `key`, as the first live node that
    /// answers says (`CLUSTER KEYSLOT`, `CLUSTER SLOTS`).
    pub fn owner_of(&self, key: &str) -> Option<u16> {
        self.ports().into_iter().find_map(|port| {
            let slot: i64 = query(port, ::redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))?;
            let ranges: Vec<::redis::Value> = query(port, ::redis::cmd("CLUSTER").arg("SLOTS"))?;
            ranges.iter().find_map(|range| match range {
                ::redis::Value::Array(parts) => match parts.as_slice() {
                    [::redis::Value::Int(first), ::redis::Value::Int(last), ::redis::Value::Array(primary), ..]
                        if *first <= slot && slot <= *last =>
                    {
                        match primary.get(1) {
                            Some(::redis::Value::Int(port)) => u16::try_from(*port).ok(),
                            _ => None,
                        }
                    }
                    _ => None,
                },
                _ => None,
            })
        })
    }

    /// The port of the replica of the primary on `port`, as the replicas say.
    pub fn replica_of(&self, primary: u16) -> Option<u16> {
        self.ports().into_iter().find(|port| {
            query::<String>(*port, ::redis::cmd("INFO").arg("replication")).is_some_and(|info| {
                info.contains("role:slave") && info.contains(&format!("master_port:{primary}\r"))
            })
        })
    }

    /// The number of keys on the node on `port`.
    pub fn keys_on(&self, port: u16) -> Option<u64> {
        query(port, &::redis::cmd("DBSIZE"))
    }

    /// SIGKILLs the node on `port`, as a crash would.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|node| node.port() == port) {
            node.kill();
        }
    }

    /// Starts the node on `port` again after a kill: same port, cluster bus, files and
    /// `nodes.conf`, so it rejoins as the node it was (a replica of its slots' new owner,
    /// once the others tell it of the failover).
    pub fn restart(&mut self, port: u16) -> Result<(), String> {
        self.nodes
            .iter_mut()
            .find(|node| node.port() == port)
            .ok_or_else(|| format!("no node of the cluster on port {port}"))?
            .start()
    }

    /// The process id of the node on `port`, while it runs (to freeze it with SIGSTOP,
    /// say, so it falls behind its primary).
    pub fn pid(&self, port: u16) -> Option<u32> {
        self.nodes
            .iter()
            .find(|node| node.port() == port)
            .and_then(RedisServer::pid)
    }

    /// Whether the node on `port` is a replica whose link to its primary is up (it has
    /// loaded the primary's data and follows its writes).
    pub fn in_sync(&self, port: u16) -> bool {
        query::<String>(port, ::redis::cmd("INFO").arg("replication")).is_some_and(|info| {
            info.contains("role:slave") && info.contains("master_link_status:up")
        })
    }

    /// Makes the node on `primary` close its connections to its replicas (`CLIENT KILL
    /// TYPE replica`): what it writes after that reaches no replica until one connects
    /// again (within a second, unless it is frozen). How many it closed, `None` when it did
    /// not answer.
    pub fn cut_replication(&self, primary: u16) -> Option<u64> {
        query(
            primary,
            ::redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("replica"),
        )
    }

    /// `ROLE`'s first word for the node on `port` (`master`, `slave`), if it answers.
    fn role(&self, port: u16) -> Option<String> {
        let role: Vec<::redis::Value> = query(port, &::redis::cmd("ROLE"))?;
        match role.first() {
            Some(::redis::Value::BulkString(word)) => Some(String::from_utf8_lossy(word).into()),
            _ => None,
        }
    }

    /// Whether every node answers and says the cluster is ok, every replica's link is up
    /// and three nodes are primaries: any primary may fail now and have its replica
    /// promoted.
    pub fn ready(&self) -> bool {
        self.ports().into_iter().all(|port| {
            let ok = query::<String>(port, ::redis::cmd("CLUSTER").arg("INFO"))
                .is_some_and(|info| info.contains("cluster_state:ok"));
            let synced = query::<String>(port, ::redis::cmd("INFO").arg("replication"))
                .is_some_and(|info| {
                    info.contains("role:master") || info.contains("master_link_status:up")
                });
            ok && synced
        }) && self.primaries().len() == 3
    }

    fn settle(&self) -> Result<(), String> {
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            if self.ready() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "the cluster did not settle within {SETTLE:?}: primaries {:?} of {:?}",
            self.primaries(),
            self.ports()
        ))
    }
}

/// Node `n`, started: cluster mode, its own cluster bus port, files in a temporary
/// directory or in `node-<n>/` of the options' directory, logging beside it.
fn node(n: usize, options: &SetOptions) -> Result<RedisServer, String> {
    let server = match &options.dir {
        None => RedisServer::new(),
        Some(dir) => {
            let data = dir.join(format!("node-{n}"));
            std::fs::create_dir_all(&data)
                .map_err(|e| format!("creating {}: {e}", data.display()))?;
            RedisServer::at(crate::free_port(), &data).log(&dir.join(format!("node-{n}.log")))
        }
    };
    let bus = crate::free_port().to_string();
    let args: Vec<&str> = options.server_args.iter().map(String::as_str).collect();
    let mut server = server.args(&args).args(&[
        "--cluster-enabled",
        "yes",
        // Relative to the node's directory, so a restart finds it again.
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "1000",
        "--cluster-port",
        &bus,
    ]);
    server.start()?;
    Ok(server)
}

/// Runs `cmd` on the node on `port`; `None` when it does not answer.
fn query<T: ::redis::FromRedisValue>(port: u16, cmd: &::redis::Cmd) -> Option<T> {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    cmd.query(&mut conn).ok()
}
