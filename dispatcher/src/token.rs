//! Per-job runner tokens: an HMAC-SHA256 of the job id and attempt under the runner
//! secret, so a runner can write only to its own attempt of its own job.
//!
//! The workload never carries the token. It carries the attempt's one-time credential (a
//! second HMAC, under a label of its own), which the runner exchanges once for the token
//! before it starts the agent (`POST /internal/jobs/{id}/token`); the agent, which can read
//! everything its workload carries, finds only a spent credential.

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

    /// The credential's MAC: the label keeps it apart from every token (job ids hold no
    /// NUL).
    fn credential_mac(&self, job_id: &str, attempt: u32) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(b"one-time credential\0");
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

    /// The one-time credential of one attempt of one job (hex), which the workload
    /// carries.
    pub fn credential(&self, job_id: &str, attempt: u32) -> String {
        hex::encode(self.credential_mac(job_id, attempt).finalize().into_bytes())
    }

    /// Whether `credential` is the credential of this attempt of this job (constant
    /// time). Whether it was spent is the queue's to say.
    pub fn verify_credential(&self, job_id: &str, attempt: u32, credential: &str) -> bool {
        match hex::decode(credential) {
            Ok(bytes) => self
                .credential_mac(job_id, attempt)
                .verify_slice(&bytes)
                .is_ok(),
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

    #[test]
    fn a_credential_is_no_token_and_a_token_no_credential() {
        let tokens = RunnerTokens::new("0123456789abcdef0123");
        let credential = tokens.credential("jobaaaa", 1);
        let token = tokens.issue("jobaaaa", 1);
        assert_ne!(credential, token);
        assert!(tokens.verify_credential("jobaaaa", 1, &credential));
        assert!(!tokens.verify("jobaaaa", 1, &credential));
        assert!(!tokens.verify_credential("jobaaaa", 1, &token));
        assert!(!tokens.verify_credential("jobaaaa", 2, &credential));
    }
}
