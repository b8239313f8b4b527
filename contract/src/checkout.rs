//! What the runner checks out into the work directory before the agent starts, as the
//! dispatcher tells it in the [`crate::TokenGrant`]: the repository, the base branch, the
//! working branch, and the credential git uses to read it. The credential lives only in the
//! runner's memory and the environment of the git commands it runs before the agent starts;
//! nothing of it is written to the work directory, the remote's URL or any record.

use serde::{Deserialize, Serialize};

/// The repository to check out, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    /// The repository's URL (`https://…`, `http://…`), never holding a credential.
    pub repo: String,
    /// The branch to start from; empty: the repository's default branch.
    #[serde(default)]
    pub base_branch: String,
    /// The branch the agent works on. When the remote has it already (a retry, a follow-up
    /// job), the checkout continues from it; else it starts at the base branch.
    pub branch: String,
    /// How many commits to fetch; 0: the whole history.
    #[serde(default)]
    pub depth: u32,
    /// Whether submodules are checked out too.
    #[serde(default)]
    pub submodules: bool,
    /// Whether Git LFS files are fetched too.
    #[serde(default)]
    pub lfs: bool,
    /// The credential to read the repository with; none for a public repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<GitCredential>,
    /// What is done with the agent's work once it exits 0; none: nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<Push>,
}

/// How the agent's work is committed and pushed to [`Checkout::branch`] (and to no other
/// ref) after it exits 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// The credential to push with (it may differ from the one that reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<GitCredential>,
    /// The author and committer of the commit of what the agent left uncommitted.
    pub author_name: String,
    /// Their e-mail address.
    pub author_email: String,
    /// The commit's subject when the agent's result has no summary.
    pub subject: String,
    /// Lines closing the message (`Agentsmith-Job: <id>`), for provenance.
    #[serde(default)]
    pub trailers: Vec<String>,
    /// Ask people before pushing (the profile's `approval: before_push`): the runner asks a
    /// question with the commits' summary, and pushes only when someone answers `Approve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

/// How a push waits for its approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// How long the question waits; without an answer the job fails.
    pub timeout_secs: u64,
}

/// A pull request on GitHub, or a merge request on GitLab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// `github` (a pull request) or `gitlab` (a merge request).
    pub provider: String,
    /// Its number (GitLab: the project's `iid`).
    pub number: u64,
    /// Its page.
    pub url: String,
    /// Whether this job opened it (else it was open already, and was updated).
    pub opened: bool,
}

/// What the runner did with the agent's work: the final event carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// The work is on the remote's working branch.
    Pushed {
        /// The branch pushed to.
        branch: String,
        /// The branch it started from.
        base_branch: String,
        /// The commit the branch now names.
        commit: String,
        /// Files changed since the checkout.
        files: u64,
        /// Lines added.
        insertions: u64,
        /// Lines removed.
        deletions: u64,
        /// The pull (merge) request the dispatcher opened or updated for the branch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pull_request: Option<Box<PullRequest>>,
        /// Why none was opened, when the host refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pull_request_error: Option<String>,
        /// Where the branch compares with its base, on a host that is neither GitHub nor
        /// GitLab (the project's `compare_url`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compare_url: Option<String>,
        /// The agent's notes for the pull request's description (its notes file), if it
        /// wrote any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notes: Option<String>,
    },
    /// The agent changed nothing: nothing was pushed.
    NoChanges,
}

/// How git authenticates to the repository: a token over HTTPS, or a key over SSH.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GitCredential {
    /// A user name and a token, given to git as HTTP Basic authentication (how GitHub's and
    /// GitLab's tokens are used over HTTPS).
    Token {
        /// The user name (`x-access-token` for GitHub, `oauth2` for GitLab; any for most
        /// hosts).
        username: String,
        /// The token.
        token: String,
    },
    /// A private key for SSH, and the host keys the server must show (`known_hosts` lines):
    /// any other host key fails the command.
    SshKey {
        /// The private key (OpenSSH's format, without a passphrase).
        ssh_key: String,
        /// The server's host keys, as lines of a `known_hosts` file.
        known_hosts: String,
    },
}

impl std::fmt::Debug for GitCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token { username, .. } => write!(f, "GitCredential({username}:[redacted])"),
            Self::SshKey { .. } => write!(f, "GitCredential(ssh key [redacted])"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_is_never_printed() {
        let checkout = Checkout {
            repo: "https://git.example/acme/shop.git".into(),
            base_branch: String::new(),
            branch: "agentsmith/SHOP-1".into(),
            depth: 1,
            submodules: false,
            lfs: false,
            credential: Some(GitCredential::Token {
                username: "x-access-token".into(),
                token: "secret-token-value".into(),
            }),
            push: None,
        };
        let printed = format!("{checkout:?}");
        assert!(!printed.contains("secret-token-value"), "{printed}");
        assert!(printed.contains("x-access-token:[redacted]"), "{printed}");
        let key = GitCredential::SshKey {
            ssh_key: "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-key-body".into(),
            known_hosts: "git.example ssh-ed25519 AAAA".into(),
        };
        let printed = format!("{key:?}");
        assert!(!printed.contains("secret-key-body"), "{printed}");
    }

    #[test]
    fn both_credentials_read_back_as_written() {
        for credential in [
            GitCredential::Token {
                username: "oauth2".into(),
                token: "t".into(),
            },
            GitCredential::SshKey {
                ssh_key: "k".into(),
                known_hosts: "h".into(),
            },
        ] {
            let json = serde_json::to_string(&credential).unwrap();
            assert_eq!(
                serde_json::from_str::<GitCredential>(&json).unwrap(),
                credential,
                "{json}"
            );
        }
        // The form runners and dispatchers before SSH wrote.
        let old: GitCredential = serde_json::from_str(r#"{"username":"u","token":"t"}"#).unwrap();
        assert!(matches!(old, GitCredential::Token { .. }));
    }
}
