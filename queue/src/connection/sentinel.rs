//! Redis Sentinel: the primary the sentinels of `redis.sentinel` name.

use std::time::Duration;

use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{IntoConnectionInfo, RedisConnectionInfo};
use secrecy::ExposeSecret;

use super::Asked;
use crate::error::{QueueError, Result};
use crate::settings::RedisSentinelSettings;

/// The sentinels of `redis.sentinel` and the name they know the primary by.
pub(crate) struct Sentinels {
    master_name: String,
    /// Finds the primary (and checks that it says it is one, `ROLE`).
    lookup: tokio::sync::Mutex<SentinelClient>,
    /// The sentinels, for the watch's `SENTINEL get-master-addr-by-name`.
    nodes: Vec<redis::Client>,
}

impl Sentinels {
    pub(super) fn new(settings: &RedisSentinelSettings) -> Result<Self> {
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
    pub(super) async fn primary(&self) -> Result<redis::Client> {
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
    pub(super) async fn primary_addr(
        &self,
        cached: &mut Asked,
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
