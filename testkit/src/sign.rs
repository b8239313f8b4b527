//! Webhook signatures as the providers make them, written from their documentation and
//! independent of the dispatcher's verification, so a test signs as the sender would.

use hmac::{Hmac, Mac};
use sha2::Sha256;

fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// Slack's `X-Slack-Signature`: `v0=` and the HMAC-SHA256 of `v0:{timestamp}:{body}`.
pub fn slack(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let base = format!("v0:{timestamp}:");
    format!("v0={}", hmac_hex(secret, &[base.as_bytes(), body]))
}

/// GitHub's `X-Hub-Signature-256` (and Jira's `X-Hub-Signature`): `sha256=` and the
/// HMAC-SHA256 of the body.
pub fn hub(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(secret, &[body]))
}

/// Seconds since the epoch, as Slack stamps its requests.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slacks_published_example_signs_as_slack_says() {
        // From Slack's "Verifying requests from Slack".
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            slack(
                "8f742231b10e8888abcd99yyyzzz85a5",
                1531420618,
                body.as_bytes()
            ),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }

    #[test]
    fn githubs_published_example_signs_as_github_says() {
        // From GitHub's "Validating webhook deliveries".
        assert_eq!(
            hub("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
