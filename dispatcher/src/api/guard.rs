//! The front door against browsers: what keeps a web page the developer happens to visit
//! from using a dispatcher that listens on loopback with no API tokens.
//!
//! Such a page cannot read the dispatcher's answers (no CORS headers are ever sent), but it
//! can still *send*: a `text/plain` or form `POST` needs no preflight, and DNS rebinding
//! (`evil.example` resolving to 127.0.0.1 after the page loaded) makes the page
//! same-origin with the dispatcher, so it reads every answer too. Three checks close that:
//!
//! - [`same_origin`] (only while `api.tokens` is empty): the `Host` must be a loopback name
//!   (`localhost`, `127.0.0.1`, `[::1]`, the host of `server.bind` or `server.public_url`,
//!   any port), which a rebound name is not; an `Origin`, when sent, must be the
//!   dispatcher's own (same host and port as `Host`), which a foreign page's is not. The
//!   dashboard is served from the dispatcher itself, so its requests pass.
//! - [`json_post`] (always): every route that takes a body wants `Content-Type:
//!   application/json`, which a page can only send cross-site after a CORS preflight, and
//!   preflights are never answered.
//!
//! Webhooks and the runner's `/internal` routes are not behind [`same_origin`]: each of their
//! requests carries a signature or a per-job token no page has, and webhooks arrive through
//! tunnels under foreign names. With tokens configured every API request needs a bearer
//! token, which a page cannot add without a preflight either, so [`same_origin`] is off
//! (reads that `dashboard.public_read` opens are public by the operator's choice).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};

use super::error::ApiError;
use super::AppState;
use crate::settings::Settings;

/// The names a loopback dispatcher answers to whatever its settings say.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// The hosts an open (token-less) dispatcher answers to.
#[derive(Debug, Clone)]
pub struct LoopbackHosts {
    /// Lowercase host names without ports; IPv6 addresses in brackets.
    names: Vec<String>,
}

impl LoopbackHosts {
    /// The loopback names plus the hosts of `server.bind` and `server.public_url`.
    pub fn from_settings(settings: &Settings) -> Self {
        let mut names: Vec<String> = LOOPBACK_NAMES.iter().map(|n| n.to_string()).collect();
        if let Ok(addr) = settings.server.bind.parse::<SocketAddr>() {
            names.push(match addr {
                SocketAddr::V4(v4) => v4.ip().to_string(),
                SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
            });
        }
        let public = reqwest::Url::parse(&settings.server.public_url).ok();
        if let Some(host) = public.as_ref().and_then(|url| url.host_str()) {
            names.push(host.to_ascii_lowercase());
        }
        names.sort();
        names.dedup();
        Self { names }
    }

    /// Whether `authority` (a `Host` value: `name[:port]`) names one of these hosts.
    pub fn allows(&self, authority: &str) -> bool {
        let host = host_of(authority).to_ascii_lowercase();
        self.names.contains(&host)
    }

    /// The names, for messages.
    fn list(&self) -> String {
        self.names.join(", ")
    }
}

/// The host part of an authority (`[::1]:8080` → `[::1]`, `localhost:80` → `localhost`).
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    authority
        .split_once(':')
        .map_or(authority, |(host, _port)| host)
}

/// Refuses (403) requests a browser sends on a foreign page's behalf: a `Host` that is not a
/// loopback name (DNS rebinding), or an `Origin` that is not the dispatcher's own
/// (cross-site requests). Only layered while the API has no tokens.
pub async fn same_origin(
    State(hosts): State<Arc<LoopbackHosts>>,
    request: Request,
    next: Next,
) -> Response {
    match check_same_origin(&hosts, request.headers(), request.uri().authority()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::warn!(
                method = %request.method(),
                path = %request.uri().path(),
                code = refusal.code,
                "refused a request to the open API: {}",
                refusal.message
            );
            refusal.into_response()
        }
    }
}

/// The checks of [`same_origin`], on a request's headers.
fn check_same_origin(
    hosts: &LoopbackHosts,
    headers: &HeaderMap,
    uri_authority: Option<&axum::http::uri::Authority>,
) -> Result<(), ApiError> {
    // A browser always sends `Host`; a request without one (nor an absolute URI) is not a
    // browser's, and local programs are what the open API is for.
    let host = match headers.get(header::HOST) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| foreign_host("(not text)", hosts))?,
        ),
        None => uri_authority.map(|a| a.as_str()),
    };
    if let Some(host) = host {
        if !hosts.allows(host) {
            return Err(foreign_host(host, hosts));
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("(not text)");
    let own = host.is_some_and(|host| {
        ["http://", "https://"].iter().any(|scheme| {
            origin
                .strip_prefix(scheme)
                .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
        })
    });
    if own {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "foreign_origin",
            format!(
                "this dispatcher has no API tokens, so it refuses requests sent from other sites' \
                 pages: the Origin {origin:?} is not this dispatcher's own \
                 (http://{}); configure api.tokens to use the API from another origin",
                host.unwrap_or("its Host")
            ),
        ))
    }
}

fn foreign_host(host: &str, hosts: &LoopbackHosts) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "foreign_host",
        format!(
            "this dispatcher has no API tokens, so it answers only requests addressed to it by \
             a loopback name ({}); the Host {host:?} is not one (a web page reaching the API \
             through DNS rebinding looks like this). Use one of those names, or configure \
             api.tokens",
            hosts.list()
        ),
    )
}

/// A `POST` route whose body must be JSON (see [`require_json`]).
pub fn json_post<H, T>(handler: H) -> MethodRouter<AppState>
where
    H: Handler<T, AppState>,
    T: 'static,
{
    post(handler).route_layer(middleware::from_fn(require_json))
}

/// Refuses (415) a body-carrying request whose `Content-Type` is not `application/json`,
/// an empty body included: every content type a page may send cross-site without a
/// preflight (`text/plain`, forms) is refused before the handler looks at the body.
pub async fn require_json(request: Request, next: Next) -> Response {
    let carries_body = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !carries_body || content_type.is_some_and(is_json) {
        return next.run(request).await;
    }
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "this route takes a JSON body (`{{}}` when there is nothing to say): send \
             Content-Type: application/json (this request's is {})",
            content_type.map_or("missing".to_string(), |t| format!("{t:?}"))
        ),
    )
    .into_response()
}

/// Whether a `Content-Type` value is `application/json` (parameters such as `charset`
/// allowed).
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn hosts() -> LoopbackHosts {
        LoopbackHosts {
            names: ["localhost", "127.0.0.1", "[::1]", "127.0.0.2"]
                .map(String::from)
                .to_vec(),
        }
    }

    fn headers(host: Option<&str>, origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    fn code(host: Option<&str>, origin: Option<&str>) -> Option<&'static str> {
        check_same_origin(&hosts(), &headers(host, origin), None)
            .err()
            .map(|e| e.code)
    }

    #[test]
    fn loopback_names_pass_with_any_port_and_others_do_not() {
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1:1",
            "[::1]:8080",
            "[::1]",
            "127.0.0.2:9",
        ] {
            assert_eq!(code(Some(host), None), None, "{host}");
        }
        for host in [
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io:8080",
            "[::2]:8080",
            "0.0.0.0:8080",
            "",
        ] {
            assert_eq!(code(Some(host), None), Some("foreign_host"), "{host}");
        }
    }

    #[test]
    fn only_the_dispatchers_own_origin_passes() {
        let host = Some("127.0.0.1:8080");
        assert_eq!(code(host, Some("http://127.0.0.1:8080")), None);
        assert_eq!(code(host, Some("https://127.0.0.1:8080")), None);
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:8081",
            "http://localhost:8080",
            "null",
            "http://127.0.0.1:8080.evil.example",
        ] {
            assert_eq!(code(host, Some(origin)), Some("foreign_origin"), "{origin}");
        }
        assert_eq!(
            code(None, Some("http://127.0.0.1:8080")),
            Some("foreign_origin")
        );
    }

    #[test]
    fn json_content_types_are_recognised_with_parameters() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json("application/jsonp"));
        assert!(!is_json(""));
    }
}
