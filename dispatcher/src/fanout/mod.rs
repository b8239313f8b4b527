//! The fan-out of event streams to their followers (`GET /v1/jobs/{id}/events`,
//! `GET /v1/events`): however many clients follow, a dispatcher reads each followed stream
//! once, on one Redis connection for all of them, and hands what it read to every follower
//! from a buffer bounded in entries and bytes.
//!
//! A follower first replays the history it asks for (after its `Last-Event-ID`), in pages
//! bounded by entries and by bytes, on the shared connection; then joins the stream's hub
//! and replays once more from where it got to, so that nothing written meanwhile is missed;
//! then takes the live entries from the hub's ring, skipping those it already sent (stream
//! ids only grow, so "already sent" is "not after the last id sent"). A follower that falls
//! so far behind that the ring dropped entries it has not sent gets a last `lagged` event
//! saying where to resume, and is closed: no follower is ever buffered without bound.
//!
//! Followers are counted: `api.max_followers` in all, `api.max_followers_per_client` per
//! API token (per address when no token is sent); past either, 429 with `Retry-After`.
//!
//! | module | what |
//! |---|---|
//! | this file | [`Fanout`]: the registry of followed streams, the caps ([`Slot`], [`ClientId`]) |
//! | `hub` | one followed stream: its ring of recent frames, the SSE frames |
//! | `reader` | the dispatcher's one Redis reader of every followed stream |
//! | `follower` | one follower: history, the hand-over to the ring, `lagged`, keep-alives |

mod follower;
mod hub;
mod reader;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use queue::{Job, Queue};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, AppState};
use crate::settings::ApiSettings;
use hub::{Hub, Kind};

/// Seconds a refused follower is told to wait (`Retry-After`).
const RETRY_AFTER_SECS: u64 = 5;

/// The follower caps (`api.max_followers`, `api.max_followers_per_client`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Followers in all.
    pub max_followers: usize,
    /// Followers per client.
    pub max_per_client: usize,
}

impl From<&ApiSettings> for Limits {
    fn from(api: &ApiSettings) -> Self {
        Self {
            max_followers: api.max_followers,
            max_per_client: api.max_followers_per_client,
        }
    }
}

/// The registry of followed streams of one dispatcher, and its followers' caps. Cheap to
/// clone; every clone is the same registry.
#[derive(Clone)]
pub struct Fanout {
    inner: Arc<Inner>,
}

/// What the registry, its reader task and its followers share.
struct Inner {
    queue: Queue,
    shutdown: CancellationToken,
    limits: Limits,
    /// The reader's connection name in `CLIENT LIST`.
    reader_name: String,
    registry: Mutex<Registry>,
    /// Told when a stream is added, so the reader stops waiting and reads it too.
    added: Notify,
}

#[derive(Default)]
struct Registry {
    /// Followed streams by key, with their number of followers in the live phase.
    hubs: HashMap<String, Joined>,
    /// Followers admitted (in any phase).
    followers: usize,
    per_client: HashMap<ClientId, usize>,
    /// Whether the reader task runs (it ends when no stream is followed).
    reader_running: bool,
}

struct Joined {
    hub: Arc<Hub>,
    followers: usize,
}

impl Fanout {
    /// A registry reading through `queue`, ending its streams when `shutdown` is
    /// cancelled; its Redis reader is named `reader_name` in `CLIENT LIST`.
    pub fn new(
        queue: Queue,
        limits: Limits,
        shutdown: CancellationToken,
        reader_name: String,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                queue,
                shutdown,
                limits,
                reader_name,
                registry: Mutex::default(),
                added: Notify::new(),
            }),
        }
    }

    /// Takes a follower's place for `client`, or says which cap refuses it.
    pub fn admit(&self, client: ClientId) -> Result<Slot, Refused> {
        let limits = self.inner.limits;
        let mut registry = self.inner.lock();
        if registry.followers >= limits.max_followers {
            return Err(Refused {
                cap: "api.max_followers",
                message: format!(
                    "this dispatcher already serves {} event stream followers, its limit \
                     (api.max_followers); try again later",
                    limits.max_followers
                ),
            });
        }
        let held = registry.per_client.get(&client).copied().unwrap_or(0);
        if held >= limits.max_per_client {
            return Err(Refused {
                cap: "api.max_followers_per_client",
                message: format!(
                    "this client ({client}) already follows {held} event streams, the most one \
                     client may (api.max_followers_per_client); close one or try again later"
                ),
            });
        }
        registry.followers += 1;
        *registry.per_client.entry(client.clone()).or_default() += 1;
        Ok(Slot {
            inner: Arc::clone(&self.inner),
            client,
        })
    }

    /// The Server-Sent Events response of a follower of `follow`, holding `slot` until the
    /// client leaves or the stream ends.
    pub fn follow(&self, slot: Slot, follow: Follow) -> Response {
        follower::response(Arc::clone(&self.inner), slot, follow)
    }

    /// Followers admitted now.
    pub fn followers(&self) -> usize {
        self.inner.lock().followers
    }

    /// Streams read live now (each by one reader however many follow it).
    pub fn streams(&self) -> usize {
        self.inner.lock().hubs.len()
    }

    /// Followers past their history, taking live frames from a stream's ring now.
    pub fn live_followers(&self) -> usize {
        self.inner.lock().hubs.values().map(|j| j.followers).sum()
    }

    /// Bytes of frames buffered for live followers now, over every stream: never more
    /// than the ring's bound per stream.
    pub fn buffered_bytes(&self) -> usize {
        let hubs: Vec<Arc<Hub>> = self
            .inner
            .lock()
            .hubs
            .values()
            .map(|j| Arc::clone(&j.hub))
            .collect();
        hubs.iter().map(|h| h.buffered_bytes()).sum()
    }

    /// The most bytes one stream buffers for its live followers.
    pub const RING_BYTES: usize = hub::RING_BYTES;
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // The registry holds counts only, each updated in one step: usable after a panic.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the live phase of `stream`: its hub (made, starting after `from`, if nobody
    /// follows it yet), and the reader task if it is not running.
    fn join(self: &Arc<Self>, stream: &str, kind: Kind, from: StreamId) -> Arc<Hub> {
        let mut registry = self.lock();
        let mut added = false;
        let joined = registry.hubs.entry(stream.to_string()).or_insert_with(|| {
            added = true;
            Joined {
                hub: Arc::new(Hub::new(stream, kind, from)),
                followers: 0,
            }
        });
        joined.followers += 1;
        let hub = Arc::clone(&joined.hub);
        let start_reader = !registry.reader_running;
        registry.reader_running = true;
        drop(registry);
        if start_reader {
            tokio::spawn(reader::run(Arc::clone(self)));
        } else if added {
            self.added.notify_one();
        }
        hub
    }

    /// Leaves `hub`; the last follower to leave removes it, and the reader stops reading it.
    fn leave(&self, hub: &Arc<Hub>) {
        let mut registry = self.lock();
        let Some(joined) = registry.hubs.get_mut(hub.stream()) else {
            return;
        };
        if Arc::ptr_eq(&joined.hub, hub) {
            joined.followers -= 1;
            if joined.followers == 0 {
                registry.hubs.remove(hub.stream());
            }
        }
    }

    /// The hubs to read, or `None` (and the reader marked stopped) when there are none or
    /// the dispatcher is shutting down.
    fn hubs_or_stop(&self) -> Option<Vec<Arc<Hub>>> {
        let mut registry = self.lock();
        if registry.hubs.is_empty() || self.shutdown.is_cancelled() {
            registry.reader_running = false;
            return None;
        }
        Some(registry.hubs.values().map(|j| Arc::clone(&j.hub)).collect())
    }
}

/// A follower's place under the caps, given back when it is dropped (when the client
/// leaves or its stream ends).
pub struct Slot {
    inner: Arc<Inner>,
    client: ClientId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut registry = self.inner.lock();
        registry.followers = registry.followers.saturating_sub(1);
        if let Some(held) = registry.per_client.get_mut(&self.client) {
            *held -= 1;
            if *held == 0 {
                registry.per_client.remove(&self.client);
            }
        }
    }
}

/// A follower refused by a cap: 429 with `Retry-After`, naming the cap.
#[derive(Debug)]
pub struct Refused {
    /// The setting whose limit was reached.
    pub cap: &'static str,
    message: String,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_followers",
            self.message,
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        response
    }
}

/// Who follows, for the per-client cap: the API token it sent (when the API has tokens,
/// so the token was checked), else its address. IPv6 addresses count by their /64, which
/// one host usually holds whole.
///
/// The address is the peer's: behind a proxy every anonymous client shares the proxy's,
/// and when the server was not started with connection info (a router called directly)
/// all anonymous clients share one place.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum ClientId {
    /// The SHA-256 of an accepted API token (the token itself is not kept).
    Token([u8; 32]),
    /// The peer address (its /64 for IPv6), when known.
    Address(Option<IpAddr>),
}

impl ClientId {
    /// The client of a request with these parts.
    pub fn of(parts: &Parts, state: &AppState) -> Self {
        let token =
            crate::api::auth::bearer(parts).filter(|_| !state.settings.api.tokens.is_empty());
        if let Some(token) = token {
            return ClientId::Token(Sha256::digest(token.as_bytes()).into());
        }
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>();
        ClientId::address(peer.map(|ConnectInfo(peer)| peer.ip()))
    }

    /// The client at `ip` (`None`: not known): an IPv4 address, or an IPv6 one's /64.
    pub fn address(ip: Option<IpAddr>) -> Self {
        ClientId::Address(ip.map(|ip| match ip.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            v4 => v4,
        }))
    }
}

impl fmt::Display for ClientId {
    /// How a refusal names the client: a token by a short digest, never itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientId::Token(digest) => write!(f, "API token {}…", hex::encode(&digest[..4])),
            ClientId::Address(Some(ip)) => write!(f, "address {ip}"),
            ClientId::Address(None) => write!(f, "anonymous"),
        }
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromRequestParts<AppState> for ClientId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientId::of(parts, state))
    }
}

/// The id of a stream entry, `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    ms: u64,
    seq: u64,
}

impl FromStr for StreamId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (ms, seq) = s.split_once('-').ok_or(())?;
        Ok(Self {
            ms: ms.parse().map_err(|_| ())?,
            seq: seq.parse().map_err(|_| ())?,
        })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// What a follower follows, and from where.
pub struct Follow {
    kind: Kind,
    stream: String,
    /// The client has everything up to here.
    after: StreamId,
    /// For a job: whether it had ended when the request came.
    ended: bool,
    /// How long a follower with nothing to send waits before it sends a comment: proxies
    /// keep the connection, and a client that left is noticed then (and its place freed).
    keep_alive: Duration,
}

impl Follow {
    /// A job's events after `after` (from the start without it), until the job ends; a
    /// comment every `keep_alive` while there is nothing to send.
    pub fn job(queue: &Queue, job: &Job, after: Option<StreamId>, keep_alive: Duration) -> Self {
        Self {
            kind: Kind::Job,
            stream: queue.keys().events(&job.id),
            after: after.unwrap_or_default(),
            ended: job.state.is_terminal(),
            keep_alive,
        }
    }

    /// Every job's state changes after `after` (from now without it); a comment every
    /// `keep_alive` while there is nothing to send.
    pub async fn feed(
        queue: &Queue,
        after: Option<StreamId>,
        keep_alive: Duration,
    ) -> queue::Result<Self> {
        let after = match after {
            Some(after) => after,
            None => queue.feed_head().await?.parse().unwrap_or_default(),
        };
        Ok(Self {
            kind: Kind::Feed,
            stream: queue.keys().feed(),
            after,
            ended: false,
            keep_alive,
        })
    }
}

/// How long the reader waits in one blocking read before it looks again at which streams
/// are followed (it is woken at once when one is added, where Redis allows `CLIENT
/// UNBLOCK`).
const READ_BLOCK: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_order_as_numbers_not_as_text() {
        let a: StreamId = "9-5".parse().unwrap();
        let b: StreamId = "10-0".parse().unwrap();
        let c: StreamId = "10-1".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(c.to_string(), "10-1");
        assert!("yesterday".parse::<StreamId>().is_err());
        assert!("1-".parse::<StreamId>().is_err());
        assert_eq!(StreamId::default().to_string(), "0-0");
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_one_as_ipv4() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            ClientId::address(ip("2001:db8:1:2:aaaa::1")),
            ClientId::address(ip("2001:db8:1:2:bbbb::7"))
        );
        assert_ne!(
            ClientId::address(ip("2001:db8:1:2::1")),
            ClientId::address(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            ClientId::address(ip("::ffff:10.0.0.1")),
            ClientId::address(ip("10.0.0.1"))
        );
        assert_ne!(
            ClientId::address(ip("10.0.0.1")),
            ClientId::address(ip("10.0.0.2"))
        );
    }

    #[test]
    fn a_client_named_in_a_refusal_shows_no_token() {
        let token = ClientId::Token(Sha256::digest(b"secret-token-0123456789").into());
        let shown = token.to_string();
        assert!(
            shown.starts_with("API token ") && !shown.contains("secret"),
            "{shown}"
        );
    }
}
