//! The git commands the checkout and the push run: each with the credential in its
//! environment only (an `http.<url>.extraHeader`, or an SSH key in files of a directory only
//! the runner's user may enter, removed when the commands are done), never a prompt, no
//! global configuration, and errors in git's words with the secrets taken out.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use contract::{GitCredential, Push};
use tokio::process::Command;

/// Git commands in the work directory, with the checkout's credential in their environment.
pub(super) struct Git<'a> {
    pub(super) dir: &'a Path,
    /// `(key, value)` of the configuration given through the environment.
    config: Vec<(String, String)>,
    /// What must never appear in an error: the token and its encoded header.
    secrets: Vec<String>,
    /// Variables set for every command besides (a test's `HOME`).
    pub(super) env: Vec<(String, String)>,
    /// The SSH key's files, held (and removed on drop) for as long as the commands are.
    _ssh: Option<SshFiles>,
}

impl<'a> Git<'a> {
    /// Git in `dir`, authenticating to `repo` (a URL, or a prefix of URLs: git matches
    /// `http.<url>.*` by prefix; nothing else) with `credential`; an error when an SSH key's
    /// files cannot be written.
    pub(super) fn new(
        repo: &str,
        credential: Option<&GitCredential>,
        dir: &'a Path,
    ) -> Result<Self, String> {
        // The work directory may belong to another user than the runner's (a Kubernetes
        // emptyDir is root's, its group the pod's fsGroup), which git otherwise refuses.
        let mut config = vec![("safe.directory".to_string(), dir.display().to_string())];
        let mut secrets = Vec::new();
        let mut env = Vec::new();
        let mut ssh = None;
        match credential {
            Some(GitCredential::Token { username, token }) => {
                let basic = base64(format!("{username}:{token}").as_bytes());
                config.push((
                    format!("http.{repo}.extraHeader"),
                    format!("Authorization: Basic {basic}"),
                ));
                secrets.push(token.clone());
                secrets.push(basic);
            }
            Some(GitCredential::SshKey {
                ssh_key,
                known_hosts,
            }) => {
                let files = SshFiles::write(ssh_key, known_hosts)?;
                // Read before `core.sshCommand` (which the repository's configuration could
                // set); no user or system ssh configuration, no agent, no other key, and
                // only the given host keys.
                env.push(("GIT_SSH_COMMAND".into(), files.command()));
                env.push(("GIT_SSH_VARIANT".into(), "ssh".into()));
                secrets.extend(ssh_key.lines().map(str::to_string).filter(|l| l.len() > 8));
                ssh = Some(files);
            }
            None => {}
        }
        Ok(Self {
            dir,
            config,
            secrets,
            env,
            _ssh: ssh,
        })
    }

    /// For the commands that follow the agent: the repository named outright (no discovery
    /// through a `.git` file the agent wrote), no hooks, no file-system monitor, and the
    /// push's author.
    pub(super) fn harden(&mut self, dir: &Path, push: &Push) {
        for (key, value) in [("core.hooksPath", "/dev/null"), ("core.fsmonitor", "false")] {
            self.config.push((key.into(), value.into()));
        }
        let git_dir = dir.join(".git").display().to_string();
        let work_tree = dir.display().to_string();
        for (name, value) in [
            ("GIT_DIR", git_dir.as_str()),
            ("GIT_WORK_TREE", work_tree.as_str()),
            ("GIT_AUTHOR_NAME", push.author_name.as_str()),
            ("GIT_AUTHOR_EMAIL", push.author_email.as_str()),
            ("GIT_COMMITTER_NAME", push.author_name.as_str()),
            ("GIT_COMMITTER_EMAIL", push.author_email.as_str()),
        ] {
            self.env.push((name.into(), value.into()));
        }
    }

    /// Whether `git args` exits 0 (1 is an answer, not a failure: `diff --quiet`).
    pub(super) async fn succeeds(&self, args: &[&str]) -> Result<bool, String> {
        let output = self.output(args).await?;
        match output.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(self.failure(args, &output)),
        }
    }

    /// Runs `git args`, answering its standard output, or its error in its own words.
    pub(super) async fn run(&self, args: &[&str]) -> Result<String, String> {
        let output = self.output(args).await?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        Err(self.failure(args, &output))
    }

    /// How `git args` ended, whatever its exit status; an error only when it did not run.
    pub(super) async fn output(&self, args: &[&str]) -> Result<std::process::Output, String> {
        let mut command = Command::new("git");
        command
            .args(args)
            .current_dir(self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Never a prompt: a refused credential fails the command at once.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .env("SSH_ASKPASS", "true")
            // A transfer that stalls (under 1 KB/s for a minute) fails instead of hanging.
            .env("GIT_HTTP_LOW_SPEED_LIMIT", "1000")
            .env("GIT_HTTP_LOW_SPEED_TIME", "60")
            // The user's global configuration is writable by agents of earlier jobs (the
            // same user, on the process backend): an `url.<x>.insteadOf` there would send
            // the credential elsewhere. The system's (root's, the image's) is kept.
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_COUNT", self.config.len().to_string());
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        for (i, (key, value)) in self.config.iter().enumerate() {
            command
                .env(format!("GIT_CONFIG_KEY_{i}"), key)
                .env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        command.output().await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "git is not installed where the runner runs (the agent image needs git for a checkout)".to_string()
            } else {
                format!("running git {}: {e}", args.first().unwrap_or(&""))
            }
        })
    }

    /// A failed command's error: its last lines of standard error, the secrets taken out.
    fn failure(&self, args: &[&str], output: &std::process::Output) -> String {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = said[said.len().saturating_sub(4)..].join(" / ");
        self.redact(format!(
            "git {} failed ({}): {}",
            args.first().unwrap_or(&""),
            output.status,
            if tail.is_empty() { "no message" } else { &tail }
        ))
    }

    fn redact(&self, mut text: String) -> String {
        for secret in &self.secrets {
            if !secret.is_empty() {
                text = text.replace(secret.as_str(), "[redacted]");
            }
        }
        text
    }
}

/// An SSH key and the host keys to accept, in files of a directory only the runner's user
/// may enter (`0700`, made new: never one that was there before), removed on drop.
pub(super) struct SshFiles {
    dir: PathBuf,
}

impl SshFiles {
    fn write(key: &str, known_hosts: &str) -> Result<Self, String> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let fail = |what: &str, e: std::io::Error| format!("writing the SSH key's {what}: {e}");
        let mut made = None;
        for attempt in 0..16u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let dir = std::env::temp_dir().join(format!(
                "agentsmith-ssh-{}-{nanos}-{attempt}",
                std::process::id()
            ));
            // `create` fails on anything already there, a planted link included.
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    made = Some(dir);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(fail("directory", e)),
            }
        }
        let files = Self {
            dir: made.ok_or("writing the SSH key's directory: every name was taken")?,
        };
        for (name, text) in [("key", key), ("known_hosts", known_hosts)] {
            let mut text = text.trim_end().to_string();
            // ssh refuses a key file without its last newline.
            text.push('\n');
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(files.dir.join(name))
                .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
                .map_err(|e| fail(name, e))?;
        }
        Ok(files)
    }

    /// The `GIT_SSH_COMMAND` that uses them.
    fn command(&self) -> String {
        let path = |name: &str| shell_quote(&self.dir.join(name).display().to_string());
        format!(
            "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none \
             -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
             -o StrictHostKeyChecking=yes -o BatchMode=yes",
            path("key"),
            path("known_hosts")
        )
    }
}

impl Drop for SshFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `text` as one word for `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Standard base64 with padding (RFC 4648), for the Basic authorization header.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("x-access-token:s3cr3t", "eC1hY2Nlc3MtdG9rZW46czNjcjN0"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }
}
