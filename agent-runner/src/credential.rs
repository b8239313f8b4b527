//! The attempt's token, got once before the agent starts: the runner exchanges the
//! one-time credential its workload carries (which the agent can read too) for the token
//! (which then lives only in the runner's memory; the runner is non-dumpable, so no other
//! process of its user can read that memory through `/proc` or ptrace).
//!
//! The exchange is retried while the dispatcher is unreachable, with the same nonce: the
//! dispatcher answers a second exchange only to the nonce that spent the credential, and
//! the nonce never leaves this process except in that request.

use contract::{Checkout, TokenGrant, TokenRequest, PROTOCOL_VERSION};
use reqwest::{StatusCode, Url};
use tokio::time::Instant;

use crate::error::{describe, Error, Result};
use crate::job::{Job, Token};
use crate::sender::{http_client, Backoff, SenderSettings};

/// What the exchange came to.
#[derive(Debug)]
pub enum Exchanged {
    /// The attempt's token, and the repository to check out (if any).
    Token(Token, Option<Box<Checkout>>),
    /// The dispatcher no longer wants the attempt (409 or 410): nothing is to run.
    Gone {
        /// The HTTP status.
        status: u16,
    },
}

/// Makes this process non-dumpable: its memory, environment and descriptors are no
/// longer readable through `/proc` by other processes of its user, nor can they ptrace it.
/// (Root with `CAP_SYS_PTRACE` still can.) Called first thing, before the token exists.
pub fn seal() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot make the runner non-dumpable");
    }
}

/// The exchange URL next to the events URL: `.../internal/jobs/{id}/token`.
pub fn token_url(callback: &Url) -> Url {
    callback
        .join("token")
        .expect("a relative path joins any http URL")
}

/// A nonce of 32 random bytes in hex, from the kernel's generator.
fn nonce() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| Error::Nonce { source })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Exchanges `job`'s credential for its token, retrying passing failures with backoff for
/// up to `settings.final_delivery`.
pub async fn exchange(job: &Job, settings: &SenderSettings) -> Result<Exchanged> {
    let client = http_client(settings, job.extra_ca.as_ref())?;
    let url = token_url(&job.callback_url);
    let request = TokenRequest {
        version: PROTOCOL_VERSION,
        attempt: job.attempt,
        nonce: nonce()?,
    };
    let started = Instant::now();
    let mut backoff = Backoff::new(settings.min_backoff, settings.max_backoff);
    loop {
        let response = client
            .post(url.clone())
            .bearer_auth(job.credential.expose())
            .json(&request)
            .send()
            .await;
        let failure = match response {
            Ok(response) => match response.status() {
                StatusCode::CONFLICT | StatusCode::GONE => {
                    let status = response.status().as_u16();
                    return Ok(Exchanged::Gone { status });
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(Error::Unauthorized {
                        status: response.status().as_u16(),
                    })
                }
                status if status.is_success() => match response.json::<TokenGrant>().await {
                    Ok(grant) => {
                        return Ok(Exchanged::Token(
                            Token::new(grant.token),
                            grant.checkout.map(Box::new),
                        ))
                    }
                    Err(e) => format!("reading the token: {}", describe(&e)),
                },
                status => format!("HTTP {status}"),
            },
            Err(e) => describe(&e),
        };
        let delay = backoff.next_delay();
        if started.elapsed() + delay > settings.final_delivery {
            return Err(Error::NoToken {
                waited: started.elapsed(),
                reason: failure,
            });
        }
        tracing::warn!(reason = %failure, "exchanging the credential failed; will retry");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_url_sits_beside_the_events_url() {
        let events = Url::parse("http://d:8080/internal/jobs/abc/events").unwrap();
        assert_eq!(
            token_url(&events).as_str(),
            "http://d:8080/internal/jobs/abc/token"
        );
    }

    #[test]
    fn nonces_are_long_and_differ() {
        let (a, b) = (nonce().unwrap(), nonce().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
