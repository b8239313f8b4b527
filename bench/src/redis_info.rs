//! The bench's own Redis: a private `redis-server` child (or a given URL), and the
//! `INFO` figures that show what a phase cost Redis.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use queue::Queue;
use redis::aio::MultiplexedConnection;

use crate::sys::{free_port, ChildGuard};

/// The Redis the bench runs against.
pub struct BenchRedis {
    /// Its URL.
    pub url: String,
    /// Whether it is our own child (so we may flush it and its CPU is ours alone).
    pub private: bool,
    /// The server, when we started it.
    pub server: Option<ChildGuard>,
    client: redis::Client,
}

impl BenchRedis {
    /// Starts `redis-server` on a free port with persistence off, its files in `dir`, and
    /// the stream node size agentsmith's installations use (BullMQ's Redis gets the same).
    pub async fn start_private(dir: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            // As the chart's Redis and the demo's: a job's event stream starts in a node of
            // 1 KB, not Redis's 4 KB (README, "Redis's memory per job").
            .arg("--stream-node-max-bytes")
            .arg("1024")
            .arg("--daemonize")
            .arg("no")
            .arg("--dir")
            .arg(dir)
            .arg("--loglevel")
            .arg("warning");
        let server = ChildGuard::spawn("redis-server", command, &dir.join("redis.log"))?;
        let url = format!("redis://127.0.0.1:{port}");
        let mut redis = Self {
            client: redis::Client::open(url.as_str())?,
            url,
            private: true,
            server: Some(server),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(server) = redis.server.as_mut() {
                server.check_alive()?;
            }
            match redis.conn().await {
                Ok(mut conn) => {
                    let pong: redis::RedisResult<String> =
                        redis::cmd("PING").query_async(&mut conn).await;
                    if pong.is_ok() {
                        return Ok(redis);
                    }
                }
                Err(_) if Instant::now() < deadline => {}
                Err(e) => return Err(e).context("redis-server did not come up"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Uses a Redis that is already running (shared: keys are prefixed and deleted after).
    pub async fn external(url: &str) -> anyhow::Result<Self> {
        let redis = Self {
            client: redis::Client::open(url)?,
            url: url.to_string(),
            private: false,
            server: None,
        };
        let mut conn = redis.conn().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .with_context(|| format!("no answer from redis at {url}"))?;
        Ok(redis)
    }

    /// The port of its URL (`redis://host:PORT[/db]`), for clients given a host and a port.
    pub fn port(&self) -> Option<u16> {
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or_default();
        let host_port = authority.rsplit('@').next().unwrap_or_default();
        host_port.rsplit_once(':')?.1.parse().ok()
    }

    /// A new multiplexed connection.
    pub async fn conn(&self) -> anyhow::Result<MultiplexedConnection> {
        let connect = self.client.get_multiplexed_async_connection();
        Ok(tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .context("connecting to redis timed out")??)
    }

    /// Removes the keys of a phase: everything in a private Redis, else the prefix's keys.
    pub async fn clean(&self, prefix: &str) -> anyhow::Result<()> {
        let mut conn = self.conn().await?;
        if self.private {
            let _: () = redis::cmd("FLUSHALL")
                .arg("ASYNC")
                .query_async(&mut conn)
                .await?;
            return Ok(());
        }
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _: () = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Two fields of every job's record in `ids` (`HMGET`, pipelined 1,000 jobs at a time),
    /// in the order of `ids`.
    pub async fn job_fields(
        &self,
        queue: &Queue,
        ids: &[String],
        fields: [&str; 2],
    ) -> anyhow::Result<Vec<(Option<String>, Option<String>)>> {
        let mut conn = self.conn().await?;
        let mut rows = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("HMGET").arg(queue.keys().job(id)).arg(&fields[..]);
            }
            let chunk_rows: Vec<(Option<String>, Option<String>)> =
                pipe.query_async(&mut conn).await?;
            rows.extend(chunk_rows);
        }
        Ok(rows)
    }

    /// A snapshot of the counters.
    pub async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let mut conn = self.conn().await?;
        let text: String = redis::cmd("INFO")
            .arg("cpu")
            .arg("stats")
            .arg("commandstats")
            .arg("server")
            .query_async(&mut conn)
            .await
            .context("INFO")?;
        Snapshot::parse(&text)
    }
}

/// Counters of `INFO cpu stats commandstats server`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// used_cpu_user + used_cpu_sys (seconds).
    pub cpu_secs: f64,
    /// total_commands_processed (commands run inside scripts included).
    pub commands: u64,
    /// total_reads_processed: reads from client sockets (a pipeline, or everything a
    /// multiplexed connection sent meanwhile, arrives in one read).
    pub reads: u64,
    /// Calls per command name.
    pub calls: BTreeMap<String, u64>,
    /// Microseconds per command name.
    pub usec: BTreeMap<String, u64>,
    /// redis_version.
    pub version: String,
}

impl Snapshot {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut snap = Snapshot::default();
        let mut cpu_seen = 0;
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once(':') else {
                continue;
            };
            match key {
                "used_cpu_user" | "used_cpu_sys" => {
                    snap.cpu_secs += value.parse::<f64>().context("INFO cpu")?;
                    cpu_seen += 1;
                }
                "total_commands_processed" => {
                    snap.commands = value.parse().context("INFO stats")?;
                }
                "total_reads_processed" => {
                    snap.reads = value.parse().context("INFO stats")?;
                }
                "redis_version" => snap.version = value.to_string(),
                _ => {
                    if let Some(name) = key.strip_prefix("cmdstat_") {
                        for part in value.split(',') {
                            match part.split_once('=') {
                                Some(("calls", n)) => {
                                    snap.calls.insert(name.to_string(), n.parse().unwrap_or(0));
                                }
                                Some(("usec", n)) => {
                                    snap.usec.insert(name.to_string(), n.parse().unwrap_or(0));
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
        if cpu_seen != 2 {
            bail!("INFO cpu lacks used_cpu_user/used_cpu_sys");
        }
        Ok(snap)
    }

    /// What happened between `self` (earlier) and `after`.
    pub fn delta(&self, after: &Snapshot) -> Delta {
        let calls = after
            .calls
            .iter()
            .map(|(name, n)| {
                let before = self.calls.get(name).copied().unwrap_or(0);
                (name.clone(), n.saturating_sub(before))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let usec = after
            .usec
            .iter()
            .map(|(name, n)| {
                let before = self.usec.get(name).copied().unwrap_or(0);
                (name.clone(), n.saturating_sub(before))
            })
            .collect();
        Delta {
            cpu_secs: after.cpu_secs - self.cpu_secs,
            commands: after.commands.saturating_sub(self.commands),
            reads: after.reads.saturating_sub(self.reads),
            calls,
            usec,
        }
    }
}

/// The cost of a phase in Redis.
#[derive(Debug, Clone, Default)]
pub struct Delta {
    /// CPU seconds Redis used.
    pub cpu_secs: f64,
    /// Commands processed (including those run by scripts).
    pub commands: u64,
    /// Reads from client sockets.
    pub reads: u64,
    /// Calls per command.
    pub calls: BTreeMap<String, u64>,
    /// Microseconds per command (a script's time includes its commands').
    pub usec: BTreeMap<String, u64>,
}

impl Delta {
    /// Calls of `name` (lowercase).
    pub fn calls_of(&self, name: &str) -> u64 {
        self.calls.get(name).copied().unwrap_or(0)
    }

    /// The cost of two phases together (`self`, then `other`).
    pub fn plus(&self, other: &Delta) -> Delta {
        let sum = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
            let mut out = a.clone();
            for (name, n) in b {
                *out.entry(name.clone()).or_default() += n;
            }
            out
        };
        Delta {
            cpu_secs: self.cpu_secs + other.cpu_secs,
            commands: self.commands + other.commands,
            reads: self.reads + other.reads,
            calls: sum(&self.calls, &other.calls),
            usec: sum(&self.usec, &other.usec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_parses_and_subtracts() {
        let before = Snapshot::parse(
            "# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:2.0\r\n# Stats\r\ntotal_commands_processed:10\r\ntotal_reads_processed:5\r\n# Commandstats\r\ncmdstat_evalsha:calls=4,usec=40,usec_per_call=10.00\r\n",
        )
        .expect("parses");
        let after = Snapshot::parse(
            "used_cpu_sys:2.5\r\nused_cpu_user:3.0\r\ntotal_commands_processed:30\r\ntotal_reads_processed:9\r\ncmdstat_evalsha:calls=10,usec=100,usec_per_call=10.00\r\ncmdstat_hset:calls=3,usec=3\r\nredis_version:7.0.15\r\n",
        )
        .expect("parses");
        let d = before.delta(&after);
        assert!((d.cpu_secs - 2.0).abs() < 1e-9);
        assert_eq!(d.commands, 20);
        assert_eq!(d.reads, 4);
        assert_eq!(d.calls_of("evalsha"), 6);
        assert_eq!(d.calls_of("hset"), 3);
        assert_eq!(after.version, "7.0.15");
    }

    #[test]
    fn two_phases_add_up() {
        let mut add = Delta {
            cpu_secs: 1.5,
            commands: 10,
            reads: 2,
            ..Delta::default()
        };
        add.calls.insert("evalsha".into(), 4);
        let mut process = Delta {
            cpu_secs: 0.5,
            commands: 5,
            reads: 1,
            ..Delta::default()
        };
        process.calls.insert("evalsha".into(), 2);
        process.calls.insert("bzpopmin".into(), 1);
        let both = add.plus(&process);
        assert!((both.cpu_secs - 2.0).abs() < 1e-9);
        assert_eq!((both.commands, both.reads), (15, 3));
        assert_eq!(both.calls_of("evalsha"), 6);
        assert_eq!(both.calls_of("bzpopmin"), 1);
    }

    #[test]
    fn the_port_is_read_from_the_url() {
        for (url, port) in [
            ("redis://127.0.0.1:6390", Some(6390)),
            ("redis://:secret@127.0.0.1:6391/2", Some(6391)),
            ("redis://localhost", None),
        ] {
            let redis = BenchRedis {
                url: url.into(),
                private: false,
                server: None,
                client: redis::Client::open(url).expect("a valid url"),
            };
            assert_eq!(redis.port(), port, "{url}");
        }
    }
}
