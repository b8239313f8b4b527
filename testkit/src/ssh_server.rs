//! A real SSH server for git on a free port of 127.0.0.1: OpenSSH's `sshd` (Debian's
//! `openssh-server`), run in the foreground as the test's own user with a configuration of its
//! own, accepting one client key and nothing else (no password, no agent forwarding, no
//! terminal). Git over SSH runs `git-upload-pack` and `git-receive-pack` on the repository
//! path the URL names, so [`SshServer::url`] serves any bare repository on this machine, such
//! as a [`crate::git_server::GitServer`]'s, whose branches and log the test then reads there.
//!
//! The server's host key and the client's key are made fresh by `ssh-keygen` for each server;
//! [`SshServer::known_hosts`] is the line a client must trust, [`SshServer::stranger_known_hosts`]
//! a line naming another key for the same address (what a client sees when someone else
//! answers there).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::temp::TempDir;

/// Where Debian's `openssh-server` puts the daemon.
const SSHD: &str = "/usr/sbin/sshd";

/// A running `sshd`, stopped on drop.
pub struct SshServer {
    dir: TempDir,
    port: u16,
    user: String,
    child: Child,
}

impl SshServer {
    /// Makes the keys, starts `sshd` and waits until it accepts connections; panics, saying
    /// what to install, when it cannot.
    pub fn start() -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install Debian's openssh-server (scripts/test does)"
        );
        let dir = TempDir::new("ssh-server");
        for name in ["host_key", "client_key", "stranger_key"] {
            keygen(&dir.path().join(name));
        }
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        // As root, sshd wants its privilege separation directory.
        if is_root() {
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let port = crate::net::free_port();
        let config = format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {dir}/host_key\n\
             PidFile none\n\
             AuthorizedKeysFile {dir}/authorized_keys\n\
             AuthenticationMethods publickey\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             StrictModes no\n\
             UsePAM no\n\
             AllowAgentForwarding no\n\
             AllowTcpForwarding no\n\
             X11Forwarding no\n\
             PermitTTY no\n\
             PrintMotd no\n\
             LogLevel VERBOSE\n",
            dir = dir.path().display()
        );
        std::fs::write(dir.path().join("sshd_config"), config).unwrap();
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(dir.path().join("sshd_config"))
            .arg("-E")
            .arg(dir.path().join("sshd.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {SSHD}: {e}"));
        let user = String::from_utf8(
            Command::new("id")
                .arg("-un")
                .output()
                .expect("id -un")
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string();
        let mut server = Self {
            dir,
            port,
            user,
            child,
        };
        server.wait_until_listening();
        server
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on 127.0.0.1:{} within 10 s: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `ssh://` URL of the bare repository at `repo` (an absolute path).
    pub fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    /// The private key the server accepts (OpenSSH's format, no passphrase).
    pub fn client_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("client_key")).unwrap()
    }

    /// A private key the server does not accept.
    pub fn stranger_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stranger_key")).unwrap()
    }

    /// The `known_hosts` line of this server's host key.
    pub fn known_hosts(&self) -> String {
        self.known_hosts_line("host_key.pub")
    }

    /// A `known_hosts` line for this server's address with a key that is not its own.
    pub fn stranger_known_hosts(&self) -> String {
        self.known_hosts_line("stranger_key.pub")
    }

    fn known_hosts_line(&self, public: &str) -> String {
        let key = std::fs::read_to_string(self.dir.path().join(public)).unwrap();
        let mut fields = key.split_whitespace();
        let (kind, body) = (fields.next().unwrap(), fields.next().unwrap());
        format!("[127.0.0.1]:{} {kind} {body}", self.port)
    }

    /// What sshd logged (each connection, each key offered and accepted or refused).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An ed25519 key pair at `path` and `path.pub`, without a passphrase.
fn keygen(path: &Path) {
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "testkit", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("ssh-keygen (Debian's openssh-client): {e}"));
    assert!(
        output.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git_server::{git_command, GitServer};

    #[tokio::test]
    async fn git_clones_with_the_key_and_the_host_key_and_not_without_them() {
        let git = GitServer::start("unused").await;
        git.create_repo("shop", &[("README.md", "over ssh\n")], "main");
        let ssh = SshServer::start();
        let url = ssh.url(&git.repo_dir("shop"));
        let clone = |key: &str, known_hosts: &str| {
            let dir = TempDir::new("ssh-clone");
            std::fs::write(dir.path().join("key"), format!("{}\n", key.trim_end())).unwrap();
            std::fs::write(dir.path().join("known_hosts"), format!("{known_hosts}\n")).unwrap();
            let mode = std::os::unix::fs::PermissionsExt::from_mode(0o600);
            std::fs::set_permissions(dir.path().join("key"), mode).unwrap();
            let command = format!(
                "ssh -F /dev/null -i {0}/key -o IdentitiesOnly=yes -o UserKnownHostsFile={0}/known_hosts \
                 -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes",
                dir.path().display()
            );
            let output = git_command(dir.path())
                .env("GIT_SSH_COMMAND", command)
                .args(["clone", "--quiet", &url, "out"])
                .output()
                .unwrap();
            let readme = std::fs::read_to_string(dir.path().join("out/README.md")).ok();
            (readme, String::from_utf8_lossy(&output.stderr).into_owned())
        };
        let (readme, said) = clone(&ssh.client_key(), &ssh.known_hosts());
        assert_eq!(
            readme.as_deref(),
            Some("over ssh\n"),
            "{said}\n{}",
            ssh.log()
        );
        let (readme, said) = clone(&ssh.stranger_key(), &ssh.known_hosts());
        assert_eq!(readme, None);
        assert!(said.contains("Permission denied"), "{said}");
        let (readme, said) = clone(&ssh.client_key(), &ssh.stranger_known_hosts());
        assert_eq!(readme, None);
        assert!(said.contains("Host key verification failed"), "{said}");
    }
}
