//! Redis Cluster for the tests: three primaries with a replica each, all real processes
//! on 127.0.0.1 (free ports for clients and for the cluster bus, files in temporary
//! directories), joined by `redis-cli --cluster create`, killed when dropped.
//!
//! Nodes count a silent peer as failing after one second (`cluster-node-timeout 1000`),
//! so a test that kills a primary sees its replica promoted within seconds.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::redis::RedisServer;

/// How long the cluster may take to form: every node agreeing that every slot is served
/// and every replica in sync.
const SETTLE: Duration = Duration::from_secs(60);

/// Six nodes: three primaries, each with a replica.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits until it is ok everywhere with
    /// every replica in sync. Panics saying what did not happen.
    pub fn started() -> Self {
        let nodes = (0..6)
            .map(|_| {
                let bus = crate::free_port().to_string();
                RedisServer::new()
                    .args(&[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-port",
                        &bus,
                    ])
                    .started()
            })
            .collect::<Vec<_>>();
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
            .unwrap_or_else(|e| panic!("running redis-cli ({e}): apt-get install redis-tools"));
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        let cluster = Self { nodes };
        cluster.settle();
        cluster
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

    /// `ROLE`'s first word for the node on `port` (`master`, `slave`), if it answers.
    fn role(&self, port: u16) -> Option<String> {
        let role: Vec<::redis::Value> = query(port, &::redis::cmd("ROLE"))?;
        match role.first() {
            Some(::redis::Value::BulkString(word)) => Some(String::from_utf8_lossy(word).into()),
            _ => None,
        }
    }

    /// Whether every node says the cluster is ok and every replica's link is up.
    fn ready(&self) -> bool {
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

    fn settle(&self) {
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            if self.ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "the cluster did not settle within {SETTLE:?}: primaries {:?} of {:?}",
            self.primaries(),
            self.ports()
        );
    }
}

/// Runs `cmd` on the node on `port`; `None` when it does not answer.
fn query<T: ::redis::FromRedisValue>(port: u16, cmd: &::redis::Cmd) -> Option<T> {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    cmd.query(&mut conn).ok()
}
