//! Per-job runner tokens: an HMAC-SHA256 of the job id and attempt under the runner
//! secret, so a runner can write only to its own attempt of its own job.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Issues and verifies runner tokens.
#[derive(Clone)]
pub struct RunnerTokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for RunnerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunnerTokens([redacted])")
    }
}

impl RunnerTokens {
    /// Tokens under `secret`.
    pub fn new(secret: &str) -> Self {
        Self {
            key: secret.as_bytes().to_vec(),
        }
    }

    fn mac(&self, job_id: &str, attempt: u32) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(job_id.as_bytes());
        mac.update(b":");
        mac.update(attempt.to_string().as_bytes());
        mac
    }

    /// The token of one attempt of one job (hex).
    pub fn issue(&self, job_id: &str, attempt: u32) -> String {
        hex::encode(self.mac(job_id, attempt).finalize().into_bytes())
    }

    /// Whether `token` is the token of this attempt of this job (constant time).
    pub fn verify(&self, job_id: &str, attempt: u32, token: &str) -> bool {
        match hex::decode(token) {
            Ok(bytes) => self.mac(job_id, attempt).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_valid_only_for_its_own_job_and_attempt() {
        let tokens = RunnerTokens::new("0123456789abcdef0123");
        let token = tokens.issue("jobaaaa", 1);
        assert!(tokens.verify("jobaaaa", 1, &token));
        assert!(!tokens.verify("jobbbbb", 1, &token));
        assert!(!tokens.verify("jobaaaa", 2, &token));
        assert!(!tokens.verify("jobaaaa", 1, "zz"));
        assert!(!RunnerTokens::new("another-secret-000").verify("jobaaaa", 1, &token));
    }
}
