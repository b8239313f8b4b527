//! Request verification of every source, in constant time: Slack's `v0` signature over the
//! timestamp and body, the `sha256=` HMAC of GitHub and Jira, GitLab's shared token.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Slack refuses requests whose timestamp is further than this from now (seconds).
pub const SLACK_MAX_SKEW_SECS: i64 = 300;

/// Why a request was refused. The messages name what was wrong, never the secret or the
/// expected value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header that carries the signature or token is missing.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// The header is there but not in the expected form.
    #[error("malformed {0} header")]
    Malformed(&'static str),
    /// The signature or token does not match.
    #[error("{0} does not match")]
    Mismatch(&'static str),
    /// Slack's timestamp is too far from now (a replay, or a wrong clock).
    #[error("X-Slack-Request-Timestamp is more than {SLACK_MAX_SKEW_SECS} s from now")]
    Stale,
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Compares a hex signature from a header with the expected bytes in constant time.
fn hex_matches(expected: &[u8; 32], given_hex: &str) -> bool {
    match hex::decode(given_hex.trim()) {
        Ok(given) => given.len() == expected.len() && bool::from(given.ct_eq(expected)),
        Err(_) => false,
    }
}

/// Verifies a Slack request: `signature` (`X-Slack-Signature`) must be `v0=` and the hex
/// HMAC-SHA256 of `v0:{timestamp}:{body}` under the signing secret, and `timestamp`
/// (`X-Slack-Request-Timestamp`) within [`SLACK_MAX_SKEW_SECS`] of `now` (Unix seconds).
pub fn verify_slack(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    const SIG: &str = "X-Slack-Signature";
    const TS: &str = "X-Slack-Request-Timestamp";
    let signature = signature.ok_or(SignatureError::Missing(SIG))?;
    let timestamp = timestamp.ok_or(SignatureError::Missing(TS))?;
    let seconds: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed(TS))?;
    let hex = signature
        .strip_prefix("v0=")
        .ok_or(SignatureError::Malformed(SIG))?;
    let expected = hmac_sha256(
        secret.as_bytes(),
        &[b"v0:", timestamp.trim().as_bytes(), b":", body],
    );
    if !hex_matches(&expected, hex) {
        return Err(SignatureError::Mismatch(SIG));
    }
    // Checked after the signature, so an unsigned request learns nothing about the clock.
    // checked_sub: a signed timestamp near i64::MIN must not overflow.
    let skew = now.checked_sub(seconds).map(i64::unsigned_abs);
    if skew.is_none_or(|skew| skew > SLACK_MAX_SKEW_SECS as u64) {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// Verifies a `sha256=<hex HMAC-SHA256 of the body>` header: GitHub's
/// `X-Hub-Signature-256` and Jira Cloud's `X-Hub-Signature`. `header` names it in errors.
pub fn verify_hub(
    header: &'static str,
    secret: &str,
    signature: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing(header))?;
    let hex = signature
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed(header))?;
    let expected = hmac_sha256(secret.as_bytes(), &[body]);
    if hex_matches(&expected, hex) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch(header))
    }
}

/// Verifies GitLab's `X-Gitlab-Token`, which is the configured secret itself. Both sides
/// are hashed first so the comparison takes the same time whatever their lengths.
pub fn verify_gitlab(secret: &str, token: Option<&str>) -> Result<(), SignatureError> {
    const HEADER: &str = "X-Gitlab-Token";
    let token = token.ok_or(SignatureError::Missing(HEADER))?;
    let expected = hmac_sha256(b"agentsmith-gitlab", &[secret.as_bytes()]);
    let given = hmac_sha256(b"agentsmith-gitlab", &[token.as_bytes()]);
    if bool::from(expected.ct_eq(&given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch(HEADER))
    }
}

#[cfg(test)]
mod tests {
    use testkit::sign::{hub as hub_signature, slack as slack_signature};

    use super::*;

    /// The worked example of Slack's "Verifying requests from Slack" page.
    const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TS: &str = "1531420618";
    const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slacks_worked_example_verifies() {
        let at = 1_531_420_618 + 10;
        let ok = verify_slack(
            SLACK_SECRET,
            Some(SLACK_TS),
            Some(SLACK_SIG),
            SLACK_BODY.as_bytes(),
            at,
        );
        assert_eq!(ok, Ok(()));
        assert_eq!(
            slack_signature(SLACK_SECRET, 1_531_420_618, SLACK_BODY.as_bytes()),
            SLACK_SIG
        );
    }

    #[test]
    fn slack_command_with_stale_timestamp_is_rejected() {
        let late = 1_531_420_618 + SLACK_MAX_SKEW_SECS + 1;
        let err = verify_slack(
            SLACK_SECRET,
            Some(SLACK_TS),
            Some(SLACK_SIG),
            SLACK_BODY.as_bytes(),
            late,
        );
        assert_eq!(err, Err(SignatureError::Stale));
        let early = 1_531_420_618 - SLACK_MAX_SKEW_SECS - 1;
        let err = verify_slack(
            SLACK_SECRET,
            Some(SLACK_TS),
            Some(SLACK_SIG),
            SLACK_BODY.as_bytes(),
            early,
        );
        assert_eq!(err, Err(SignatureError::Stale));
    }

    #[test]
    fn a_signed_slack_timestamp_at_the_ends_of_i64_is_stale_not_a_panic() {
        for (stamp, now) in [
            (i64::MIN, 1_700_000_000),
            (i64::MAX, -1),
            (i64::MIN + 1, i64::MAX),
        ] {
            let sig = slack_signature("s", stamp, b"");
            assert_eq!(
                verify_slack("s", Some(&stamp.to_string()), Some(&sig), b"", now),
                Err(SignatureError::Stale)
            );
        }
    }

    #[test]
    fn slack_signatures_over_another_body_timestamp_or_secret_are_rejected() {
        let at = 1_531_420_618;
        let mismatch = Err(SignatureError::Mismatch("X-Slack-Signature"));
        let tampered = SLACK_BODY.replace("roadrunner", "coyote");
        let cases = [
            (SLACK_SECRET, SLACK_TS, SLACK_SIG, tampered.as_str()),
            (SLACK_SECRET, "1531420619", SLACK_SIG, SLACK_BODY),
            ("another-secret", SLACK_TS, SLACK_SIG, SLACK_BODY),
        ];
        for (secret, ts, sig, body) in cases {
            assert_eq!(
                verify_slack(secret, Some(ts), Some(sig), body.as_bytes(), at),
                mismatch
            );
        }
        let missing = verify_slack(SLACK_SECRET, Some(SLACK_TS), None, b"", at);
        assert_eq!(missing, Err(SignatureError::Missing("X-Slack-Signature")));
        let no_ts = verify_slack(SLACK_SECRET, None, Some(SLACK_SIG), b"", at);
        assert_eq!(
            no_ts,
            Err(SignatureError::Missing("X-Slack-Request-Timestamp"))
        );
        let v1 = SLACK_SIG.replace("v0=", "v1=");
        let wrong_version = verify_slack(SLACK_SECRET, Some(SLACK_TS), Some(&v1), b"", at);
        assert_eq!(
            wrong_version,
            Err(SignatureError::Malformed("X-Slack-Signature"))
        );
        let not_hex = verify_slack(SLACK_SECRET, Some(SLACK_TS), Some("v0=zz"), b"", at);
        assert_eq!(not_hex, mismatch);
    }

    #[test]
    fn githubs_worked_example_verifies() {
        // "Validating webhook deliveries", GitHub Docs: the test values.
        let secret = "It's a Secret to Everybody";
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            verify_hub("X-Hub-Signature-256", secret, Some(sig), b"Hello, World!"),
            Ok(())
        );
        assert_eq!(hub_signature(secret, b"Hello, World!"), sig);
        assert_eq!(
            verify_hub("X-Hub-Signature-256", secret, Some(sig), b"Hello, World?"),
            Err(SignatureError::Mismatch("X-Hub-Signature-256"))
        );
        let sha1 = sig.replace("sha256=", "sha1=");
        assert_eq!(
            verify_hub("X-Hub-Signature-256", secret, Some(&sha1), b"Hello, World!"),
            Err(SignatureError::Malformed("X-Hub-Signature-256"))
        );
        assert_eq!(
            verify_hub("X-Hub-Signature", secret, None, b"Hello, World!"),
            Err(SignatureError::Missing("X-Hub-Signature"))
        );
    }

    #[test]
    fn gitlab_tokens_must_match_exactly() {
        assert_eq!(verify_gitlab("s3cret-token", Some("s3cret-token")), Ok(()));
        for wrong in ["s3cret-toke", "s3cret-token ", "", "S3CRET-TOKEN"] {
            assert_eq!(
                verify_gitlab("s3cret-token", Some(wrong)),
                Err(SignatureError::Mismatch("X-Gitlab-Token")),
                "{wrong:?}"
            );
        }
        assert_eq!(
            verify_gitlab("s3cret-token", None),
            Err(SignatureError::Missing("X-Gitlab-Token"))
        );
    }
}
