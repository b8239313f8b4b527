//! Bearer-token authentication of the REST API.
//!
//! A request passes with an accepted token; without one it passes only when no tokens are
//! configured (loopback-only development) or when it is a read (`GET`/`HEAD`) and
//! `dashboard.public_read` is on. A token that is sent is always checked, so the
//! dashboard's sign-in can tell a wrong token even when reads are public.
//!
//! [`Insider`] is the stricter question a few routes ask (who may see internals such as
//! backend errors): an accepted token, or the open API; public reads do not count. [`Admin`]
//! asks the same and refuses the others: the delivery journal's routes.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::Method;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;

/// Proof that the request carried an accepted API token (or that the API is open because
/// no tokens are configured, which settings allow only on a loopback address, or that it
/// is a read and `dashboard.public_read` is on).
pub struct ApiCaller;

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.settings.api.tokens.is_empty() {
            return Ok(ApiCaller);
        }
        let Some(presented) = bearer(parts) else {
            let read = parts.method == Method::GET || parts.method == Method::HEAD;
            return if read && state.settings.dashboard.public_read {
                Ok(ApiCaller)
            } else {
                Err(ApiError::unauthorized("missing bearer token"))
            };
        };
        if accepted(state, presented) {
            Ok(ApiCaller)
        } else {
            Err(ApiError::unauthorized("invalid bearer token"))
        }
    }
}

/// Whether the request comes from someone trusted with the dispatcher's internals (why
/// `/ready` fails, in backend errors that name hosts and addresses): a caller with an
/// accepted token, or anyone while no tokens are configured (the open local API already
/// gives them everything). Unlike [`ApiCaller`], `dashboard.public_read` does not count: it
/// opens the jobs to readers, not the internals. Never a rejection: anonymous callers get
/// the short answer.
pub struct Insider(pub bool);

impl FromRequestParts<AppState> for Insider {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let open = state.settings.api.tokens.is_empty();
        Ok(Insider(
            open || bearer(parts).is_some_and(|presented| accepted(state, presented)),
        ))
    }
}

/// Proof that the caller may see and replay webhook deliveries (the delivery journal):
/// who sent them and what they said, and doing again what they asked. The same trust as
/// [`Insider`], as a rejection: an accepted token, or the open local API (no tokens, a
/// loopback address only). Every API token is such an admin token: the API has no narrower
/// kind, and a token already lets its holder start, cancel and retry any job. Public reads
/// (`dashboard.public_read`) do not count: they open the jobs to watchers, not the
/// deliveries, which name people and carry what they wrote.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.settings.api.tokens.is_empty() {
            return Ok(Admin);
        }
        match bearer(parts) {
            Some(presented) if accepted(state, presented) => Ok(Admin),
            Some(_) => Err(ApiError::unauthorized("invalid bearer token")),
            None => Err(ApiError::unauthorized(
                "missing bearer token: the delivery journal needs an API token \
                 (dashboard.public_read opens the jobs, not the deliveries)",
            )),
        }
    }
}

/// Whether `presented` is one of the configured tokens (compared in constant time, and
/// against all of them, so the time taken says nothing about which came close).
fn accepted(state: &AppState, presented: &str) -> bool {
    state
        .settings
        .api
        .tokens
        .iter()
        .fold(false, |found, token| {
            found | bool::from(token.expose_secret().as_bytes().ct_eq(presented.as_bytes()))
        })
}

/// The bearer token of a request, if it has one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}
