//! Redis Cluster: the primary serving the hash slot of the queue's keys.
//!
//! The queue's keys share one hash slot (the prefix's hash tag, checked when the settings
//! load), because its scripts reach other jobs' keys through the data. So the queue needs
//! no cluster client: one node serves all of it, and [`SlotOwner`] finds that node by asking
//! the cluster (`CLUSTER SLOTS`, which Redis 6.2 has too) — first the node of `redis.url`,
//! then every node the last answer named, so a dead seed does not leave the queue blind.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, IntoConnectionInfo, Value};
use secrecy::ExposeSecret;

use super::{client_at, Asked};
use crate::error::{QueueError, Result};
use crate::settings::RedisSettings;

/// The number of hash slots of a Redis Cluster.
const SLOTS: u16 = 16_384;

/// Finds the primary serving the queue's slot.
pub(crate) struct SlotOwner {
    settings: RedisSettings,
    slot: u16,
    /// `HOST:PORT` of the nodes to ask: `redis.url`'s first, then those the cluster named.
    nodes: Mutex<Vec<(String, u16)>>,
}

impl SlotOwner {
    /// The owner of the slot of `settings.prefix`'s keys, to be asked of the node of
    /// `settings.url`; no connection is made.
    pub(super) fn new(settings: &RedisSettings) -> Result<Self> {
        let info = settings
            .url
            .expose_secret()
            .into_connection_info()
            .map_err(QueueError::Url)?;
        let seed = match info.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                (host.clone(), *port)
            }
            // Refused when the settings load (RedisSettings::problems).
            other => {
                return Err(QueueError::Url(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "redis.cluster needs a redis:// or rediss:// URL",
                    other.to_string(),
                ))))
            }
        };
        // Also a client with a bad TLS file fails here, at start-up, not at first use.
        client_at(settings, None)?;
        Ok(Self {
            settings: settings.clone(),
            slot: key_slot(settings.prefix.as_bytes()),
            nodes: Mutex::new(vec![seed]),
        })
    }

    fn nodes(&self) -> Vec<(String, u16)> {
        self.nodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// A client for the primary serving the queue's slot. Finding none (no node answers,
    /// the slot unserved during a failover) counts as Redis being unavailable.
    pub(super) async fn client(&self) -> Result<redis::Client> {
        let timeout = Duration::from_secs(self.settings.timeout_secs.max(1));
        let mut asked = None;
        match self.owner_addr(&mut asked, timeout).await {
            Some((host, port)) => client_at(&self.settings, Some((&host, port))),
            None => Err(QueueError::Redis(redis::RedisError::from(
                std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    format!(
                        "no node of the cluster (redis.url and the nodes it named) names a \
                         primary for hash slot {} of redis.prefix {:?}",
                        self.slot, self.settings.prefix
                    ),
                ),
            ))),
        }
    }

    /// The primary serving the queue's slot, as the first node that answers says, asked on
    /// `asked` (a connection to node `index`, made again as needed). Remembers the nodes
    /// the answer names, to ask them next time.
    pub(super) async fn owner_addr(
        &self,
        asked: &mut Asked,
        timeout: Duration,
    ) -> Option<(String, u16)> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let nodes = self.nodes();
        let start = asked.as_ref().map_or(0, |(index, _)| *index);
        for offset in 0..nodes.len() {
            let index = (start + offset) % nodes.len();
            let (host, port) = &nodes[index];
            let mut conn: MultiplexedConnection = match asked.take() {
                Some((asked_index, conn)) if asked_index == index => conn,
                _ => {
                    let Ok(client) = client_at(&self.settings, Some((host, *port))) else {
                        continue;
                    };
                    match client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                    {
                        Ok(conn) => conn,
                        Err(_) => continue,
                    }
                }
            };
            let Ok(slots) = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Value>(&mut conn)
                .await
            else {
                continue;
            };
            let ranges = slot_ranges(&slots, host);
            self.learn(&ranges);
            if let Some(owner) = owner_of(&ranges, self.slot) {
                *asked = Some((index, conn));
                return Some(owner);
            }
        }
        None
    }

    /// Adds the primaries and replicas the cluster named to the nodes to ask.
    fn learn(&self, ranges: &[SlotRange]) {
        let mut nodes = self
            .nodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for node in ranges.iter().flat_map(|range| &range.nodes) {
            if !nodes.contains(node) {
                nodes.push(node.clone());
            }
        }
    }
}

/// One entry of `CLUSTER SLOTS`: a range of slots, its primary first, then its replicas.
#[derive(Debug, PartialEq)]
struct SlotRange {
    first: u16,
    last: u16,
    nodes: Vec<(String, u16)>,
}

/// The entries of a `CLUSTER SLOTS` answer; a node named by an empty or unknown (`?`)
/// host is on `asked_host`, the host of the node that answered (as Redis documents).
fn slot_ranges(answer: &Value, asked_host: &str) -> Vec<SlotRange> {
    let Value::Array(entries) = answer else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let Value::Array(parts) = entry else {
                return None;
            };
            let [Value::Int(first), Value::Int(last), nodes @ ..] = parts.as_slice() else {
                return None;
            };
            let nodes = nodes
                .iter()
                .filter_map(|node| node_addr(node, asked_host))
                .collect::<Vec<_>>();
            Some(SlotRange {
                first: u16::try_from(*first).ok()?,
                last: u16::try_from(*last).ok()?,
                nodes,
            })
        })
        .collect()
}

/// `[host, port, id, ...]` of one node in a `CLUSTER SLOTS` entry.
fn node_addr(node: &Value, asked_host: &str) -> Option<(String, u16)> {
    let Value::Array(parts) = node else {
        return None;
    };
    let (host, port) = match parts.as_slice() {
        [Value::BulkString(host), Value::Int(port), ..] => (host, port),
        _ => return None,
    };
    let host = String::from_utf8_lossy(host);
    let host = if host.is_empty() || host == "?" {
        asked_host.to_string()
    } else {
        host.into_owned()
    };
    Some((host, u16::try_from(*port).ok()?))
}

/// The primary of the range holding `slot`.
fn owner_of(ranges: &[SlotRange], slot: u16) -> Option<(String, u16)> {
    ranges
        .iter()
        .find(|range| range.first <= slot && slot <= range.last)
        .and_then(|range| range.nodes.first().cloned())
}

/// The hash tag of `key` as Redis Cluster finds it: what lies between the first `{` and
/// the first `}` after it, if that is not empty.
pub(crate) fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let close = key[open + 1..].iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

/// The hash slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key without
/// one, modulo 16,384.
fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key).unwrap_or(key)) % SLOTS
}

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), the checksum Redis Cluster uses.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &byte| {
        (0..8).fold(crc ^ (u16::from(byte) << 8), |crc, _| {
            if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_computed_as_redis_cluster_computes_them() {
        // The check value of CRC16/XMODEM, and slots Redis's own documentation gives.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12_182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn a_prefix_has_a_hash_tag_only_with_something_between_the_braces() {
        assert_eq!(hash_tag(b"{agentsmith}:"), Some(&b"agentsmith"[..]));
        assert_eq!(hash_tag(b"team-{a}:"), Some(&b"a"[..]));
        assert_eq!(hash_tag(b"agentsmith:"), None);
        assert_eq!(hash_tag(b"{}agentsmith:"), None);
        assert_eq!(hash_tag(b"{agentsmith:"), None);
    }

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"0123abcd".to_vec()),
        ])
    }

    #[test]
    fn the_owner_is_the_first_node_of_the_range_holding_the_slot() {
        let answer = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7003),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("", 7001)]),
        ]);
        let ranges = slot_ranges(&answer, "seed.example");
        assert_eq!(owner_of(&ranges, 12), Some(("10.0.0.1".into(), 7000)));
        assert_eq!(
            owner_of(&ranges, 5461),
            Some(("seed.example".into(), 7001)),
            "an empty host is the host that answered"
        );
        assert_eq!(ranges[0].nodes.len(), 2, "replicas are nodes to ask too");
        let unserved = slot_ranges(&Value::Array(vec![]), "seed.example");
        assert_eq!(owner_of(&unserved, 12), None);
    }
}
