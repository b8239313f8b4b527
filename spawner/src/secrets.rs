//! Where the process and Docker backends find the values of an agent profile's secret
//! environment variables.
//!
//! A profile names secrets by key (`secret_env: {GITHUB_TOKEN: github_token}`); the key's
//! value is read when the workload starts, from a file named after the key in the secrets
//! directory (a mounted Docker or Kubernetes secret, say), else from the dispatcher's
//! environment variable `AGENTSMITH_SECRET_<KEY>`. Values never pass through a job record,
//! a label or a log line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::{Error, Result};

/// Prefix of the dispatcher environment variables that hold secrets.
pub const ENV_PREFIX: &str = "AGENTSMITH_SECRET_";

/// Whether `key` can name a secret: letters, digits, `_`, `-` and `.`, not starting with `.`.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The dispatcher environment variable that may hold the secret `key`.
pub fn env_name(key: &str) -> String {
    let upper: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{ENV_PREFIX}{upper}")
}

/// Finds secret values by key.
#[derive(Clone, Default)]
pub struct SecretSource {
    dir: Option<PathBuf>,
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSource")
            .field("dir", &self.dir)
            .finish()
    }
}

impl SecretSource {
    /// Reads secrets from files in `dir` (when given), then from `AGENTSMITH_SECRET_*`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// The value of the secret `key`, without a trailing newline.
    pub fn resolve(&self, backend: &'static str, key: &str) -> Result<String> {
        if !valid_key(key) {
            return Err(Error::Rejected {
                backend,
                message: format!("{key:?} is not a valid secret key"),
            });
        }
        if let Some(dir) = &self.dir {
            let path = dir.join(key);
            match std::fs::read_to_string(&path) {
                Ok(value) => return Ok(value.trim_end_matches(['\r', '\n']).to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::Unavailable {
                        backend,
                        message: format!("cannot read secret file {}", path.display()),
                        source: Some(Box::new(e)),
                    })
                }
            }
        }
        let var = env_name(key);
        std::env::var(&var).map_err(|_| Error::Rejected {
            backend,
            message: match &self.dir {
                Some(dir) => format!(
                    "secret {key:?} not found: no file {} and no {var} in the dispatcher's environment",
                    dir.join(key).display()
                ),
                None => format!("secret {key:?} not found: no {var} in the dispatcher's environment"),
            },
        })
    }

    /// The values of a profile's `secret_env`, as (variable, value) pairs.
    pub fn resolve_env(
        &self,
        backend: &'static str,
        secret_env: &BTreeMap<String, String>,
    ) -> Result<Vec<(String, String)>> {
        secret_env
            .iter()
            .map(|(var, key)| Ok((var.clone(), self.resolve(backend, key)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_environment_names() {
        assert_eq!(
            env_name("github-token.v2"),
            "AGENTSMITH_SECRET_GITHUB_TOKEN_V2"
        );
        assert!(valid_key("github_token"));
        assert!(!valid_key("../etc/passwd"));
        assert!(!valid_key(".hidden"));
        assert!(!valid_key(""));
    }

    #[test]
    fn files_come_first_and_missing_secrets_are_named() {
        let dir = std::env::temp_dir().join(format!("agentsmith-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("api_key"), "s3cret\n").unwrap();
        let source = SecretSource::new(Some(dir.clone()));
        assert_eq!(source.resolve("test", "api_key").unwrap(), "s3cret");
        let missing = source.resolve("test", "nope").unwrap_err().to_string();
        assert!(missing.contains("AGENTSMITH_SECRET_NOPE"), "{missing}");
        assert!(!source.resolve("test", "../x").unwrap_err().is_retryable());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
