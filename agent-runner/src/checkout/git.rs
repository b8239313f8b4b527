//! The git commands the checkout and the push run: each with the credential in its
//! environment only (an `http.<url>.extraHeader`, or an SSH key in files of a directory only
//! the runner's user may enter, removed when the commands are done), never a prompt, no
//! global configuration, and errors in git's words with the secrets taken out. Extra CA
//! certificates are written to that directory too, afresh for each step, so a bundle the agent
//! changed is never the one the push trusts.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use contract::{GitCredential, Push};
use tokio::process::Command;

use crate::ca::ExtraCa;

/// Git commands in the work directory, with the checkout's credential in their environment.
pub(super) struct Git<'a> {
    pub(super) dir: &'a Path,
    /// `(key, value)` of the configuration given through the environment.
    config: Vec<(String, String)>,
    /// What must never appear in an error: the token and its encoded header.
    secrets: Vec<String>,
    /// Variables set for every command besides (a test's `HOME`).
    pub(super) env: Vec<(String, String)>,
    /// The SSH key's files and the CA bundle, held (and removed on drop) for as long as the
    /// commands are.
    _files: Option<PrivateDir>,
}

impl<'a> Git<'a> {
    /// Git in `dir`, authenticating to `repo` (a URL, or a prefix of URLs: git matches
    /// `http.<url>.*` by prefix; nothing else) with `credential`, trusting `extra_ca` besides
    /// the system's roots; an error when an SSH key's or the bundle's file cannot be written.
    pub(super) fn new(
        repo: &str,
        credential: Option<&GitCredential>,
        extra_ca: Option<&ExtraCa>,
        dir: &'a Path,
    ) -> Result<Self, String> {
        // The work directory may belong to another user than the runner's (a Kubernetes
        // emptyDir is root's, its group the pod's fsGroup), which git otherwise refuses.
        let mut config = vec![("safe.directory".to_string(), dir.display().to_string())];
        let mut secrets = Vec::new();
        let mut env = Vec::new();
        let mut files = None;
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
                let private = PrivateDir::create("agentsmith-ssh-")?;
                let key = private.write("key", ssh_key, 0o600)?;
                let known_hosts = private.write("known_hosts", known_hosts, 0o600)?;
                // Read before `core.sshCommand` (which the repository's configuration could
                // set); no user or system ssh configuration, no agent, no other key, and
                // only the given host keys.
                env.push(("GIT_SSH_COMMAND".into(), ssh_command(&key, &known_hosts)));
                env.push(("GIT_SSH_VARIANT".into(), "ssh".into()));
                secrets.extend(ssh_key.lines().map(str::to_string).filter(|l| l.len() > 8));
                files = Some(private);
            }
            None => {}
        }
        if let Some(ca) = extra_ca {
            let private = match files.take() {
                Some(private) => private,
                None => PrivateDir::create("agentsmith-ca-")?,
            };
            let bundle = private.write("ca-certificates.crt", &ca.joined, 0o644)?;
            // The variable, not `http.sslCAInfo`: it wins over both, and an image may set it.
            env.push(("GIT_SSL_CAINFO".into(), bundle.display().to_string()));
            files = Some(private);
        }
        Ok(Self {
            dir,
            config,
            secrets,
            env,
            _files: files,
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
/// A directory only the runner's user may enter, removed on drop: the SSH key's files and the
/// CA bundle of one step's git commands.
pub(super) struct PrivateDir {
    dir: PathBuf,
}

impl PrivateDir {
    /// A new directory in the temporary directory, named `<prefix><pid>-…`.
    fn create(prefix: &str) -> Result<Self, String> {
        use std::os::unix::fs::DirBuilderExt;
        for attempt in 0..16u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let dir = std::env::temp_dir()
                .join(format!("{prefix}{}-{nanos}-{attempt}", std::process::id()));
            // `create` fails on anything already there, a planted link included.
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Self { dir }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("making a private directory for git: {e}")),
            }
        }
        Err("making a private directory for git: every name was taken".into())
    }

    /// Writes `text` (with one last newline, which ssh wants of a key) to a new file `name`
    /// with `mode`; its path.
    fn write(&self, name: &str, text: &str, mode: u32) -> Result<PathBuf, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut text = text.trim_end().to_string();
        text.push('\n');
        let path = self.dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
            .map_err(|e| format!("writing git's {name}: {e}"))?;
        Ok(path)
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `GIT_SSH_COMMAND` that uses the key and the known hosts at these paths.
fn ssh_command(key: &Path, known_hosts: &Path) -> String {
    let path = |p: &Path| shell_quote(&p.display().to_string());
    format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none \
         -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
         -o StrictHostKeyChecking=yes -o BatchMode=yes",
        path(key),
        path(known_hosts)
    )
}

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
