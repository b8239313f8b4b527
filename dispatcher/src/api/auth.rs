//! Bearer-token authentication of the REST API.
//!
//! A request passes with an accepted token; without one it passes only when no tokens are
//! configured (loopback-only development) or when it is a read (`GET`/`HEAD`) and
//! `dashboard.public_read` is on. A token that is sent is always checked, so the
//! dashboard's sign-in can tell a wrong token even when reads are public.

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
        let tokens = &state.settings.api.tokens;
        if tokens.is_empty() {
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
        let accepted = tokens.iter().fold(false, |found, token| {
            found | bool::from(token.expose_secret().as_bytes().ct_eq(presented.as_bytes()))
        });
        if accepted {
            Ok(ApiCaller)
        } else {
            Err(ApiError::unauthorized("invalid bearer token"))
        }
    }
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
