//! The Redis topologies that fail over: a Sentinel set (`testkit::sentinel`) and a Redis
//! Cluster (`testkit::cluster`). [`Topology`] is what the failover fault, the replicas'
//! settings and the report need of either, so `--redis sentinel` and `--redis cluster`
//! share one fault ([`crate::failover`]) and differ only here.

use serde_json::json;
use testkit::cluster::RedisCluster;
use testkit::sentinel::{SentinelSet, MASTER_NAME};

use crate::config::{yaml, PREFIX};

/// A primary serving the queue with a replica that is promoted when it dies. Every call
/// talks to the servers synchronously: call it off the runtime's threads.
pub trait Topology: Send {
    /// Who names the new primary, for the log and the report (`the sentinels`).
    fn who(&self) -> &'static str;

    /// One line on the servers, for the start of the run.
    fn describe(&self) -> String;

    /// The lines of the replicas' `redis` section that say how to reach the primary
    /// (indented by two spaces, one per line).
    fn settings(&self) -> String;

    /// The port of the primary serving the queue, as the topology names it now.
    fn primary(&self) -> Option<u16>;

    /// The port of the replica of the primary on `primary`.
    fn replica_of(&self, primary: u16) -> Option<u16>;

    /// The process id of the server on `port`, while it runs.
    fn pid(&self, port: u16) -> Option<u32>;

    /// Makes the primary on `primary` close its replica links; how many it closed.
    fn cut_replication(&self, primary: u16) -> Option<u64>;

    /// SIGKILLs the server on `port`, as a crash would.
    fn kill(&mut self, port: u16);

    /// Starts the server on `port` again, same port and files, after a kill.
    fn restart(&mut self, port: u16) -> Result<(), String>;

    /// Whether the server on `port` is a replica in sync with its primary.
    fn in_sync(&self, port: u16) -> bool;

    /// Whether a kill of the primary now would be followed by a promotion.
    fn ready(&self) -> bool;
}

impl Topology for SentinelSet {
    fn who(&self) -> &'static str {
        "the sentinels"
    }

    fn describe(&self) -> String {
        format!(
            "redis servers on {:?} (primary {:?}), sentinels {:?}",
            self.server_ports(),
            self.primary_port(),
            self.urls()
        )
    }

    fn settings(&self) -> String {
        format!(
            "  sentinel:\n    master_name: {name}\n    nodes: {nodes}\n",
            name = yaml(MASTER_NAME),
            nodes = json!(self.urls()),
        )
    }

    fn primary(&self) -> Option<u16> {
        self.primary_port()
    }

    fn replica_of(&self, primary: u16) -> Option<u16> {
        self.server_ports().into_iter().find(|p| *p != primary)
    }

    fn pid(&self, port: u16) -> Option<u32> {
        SentinelSet::pid(self, port)
    }

    fn cut_replication(&self, primary: u16) -> Option<u64> {
        // The set cuts the links of the primary its sentinels name: the one asked for,
        // unless a failover came in between, which the caller's kill then finds out.
        let _ = primary;
        SentinelSet::cut_replication(self)
    }

    fn kill(&mut self, port: u16) {
        if let Some(server) = [&mut self.primary, &mut self.replica]
            .into_iter()
            .find(|s| s.port() == port)
        {
            server.kill();
        }
    }

    fn restart(&mut self, port: u16) -> Result<(), String> {
        SentinelSet::restart(self, port)
    }

    fn in_sync(&self, port: u16) -> bool {
        SentinelSet::in_sync(self, port)
    }

    fn ready(&self) -> bool {
        SentinelSet::ready(self)
    }
}

impl Topology for RedisCluster {
    fn who(&self) -> &'static str {
        "the cluster"
    }

    fn describe(&self) -> String {
        format!(
            "redis cluster nodes {:?} (primaries {:?}; the queue's slot on {:?}, the replicas told of {})",
            self.ports(),
            self.primaries(),
            self.primary(),
            seed(self)
        )
    }

    fn settings(&self) -> String {
        format!("  url: \"{}\"\n  cluster: true\n", self.url(seed(self)))
    }

    fn primary(&self) -> Option<u16> {
        self.owner_of(PREFIX)
    }

    fn replica_of(&self, primary: u16) -> Option<u16> {
        RedisCluster::replica_of(self, primary)
    }

    fn pid(&self, port: u16) -> Option<u32> {
        RedisCluster::pid(self, port)
    }

    fn cut_replication(&self, primary: u16) -> Option<u64> {
        RedisCluster::cut_replication(self, primary)
    }

    fn kill(&mut self, port: u16) {
        RedisCluster::kill(self, port);
    }

    fn restart(&mut self, port: u16) -> Result<(), String> {
        RedisCluster::restart(self, port)
    }

    fn in_sync(&self, port: u16) -> bool {
        RedisCluster::in_sync(self, port)
    }

    fn ready(&self) -> bool {
        RedisCluster::ready(self)
    }
}

/// The node the replicas are told of (`redis.url`): a primary that does not serve the
/// queue's slot, so the queue must ask the cluster for the owner, and no fault kills it.
fn seed(cluster: &RedisCluster) -> u16 {
    let owner = cluster.owner_of(PREFIX);
    let owners_replica = owner.and_then(|owner| cluster.replica_of(owner));
    cluster
        .primaries()
        .into_iter()
        .find(|port| Some(*port) != owner && Some(*port) != owners_replica)
        .unwrap_or_default()
}
