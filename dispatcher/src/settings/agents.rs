//! `agents.*` (profiles: what a job runs, within which limits) and `projects.*` (where a
//! ticket belongs, which profile runs it, what triggers it, and who may trigger it).

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;
use spawner::quantity::{self, Cpus, Memory};

/// `agents.<name>.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// The agent command (argv).
    pub command: Vec<String>,
    /// Container image for container backends.
    #[serde(default)]
    pub image: String,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secret environment: variable name to secret key.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    /// Time limit of one attempt.
    #[serde(default = "default_agent_timeout")]
    pub timeout_secs: u64,
    /// Whether a non-zero exit is retried.
    #[serde(default)]
    pub retry_on_failure: bool,
    /// Memory limit (container backends); empty: the backend's default.
    #[serde(default, deserialize_with = "quantity::optional")]
    pub memory: Option<Memory>,
    /// CPU limit (container backends); empty: the backend's default.
    #[serde(default, deserialize_with = "quantity::optional")]
    pub cpus: Option<Cpus>,
    /// Process limit (container backends); 0: the backend's default.
    #[serde(default)]
    pub pids_limit: u32,
    /// Disk the agent may fill (container backends: its work directory, /tmp and its
    /// writable layer); empty: no bound.
    #[serde(
        default = "default_agent_disk",
        deserialize_with = "quantity::optional"
    )]
    pub disk: Option<Memory>,
    /// Let the agent write outside its work directory and /tmp (container backends).
    #[serde(default)]
    pub writable_root: bool,
    /// Mount a service account token in the agent's pod (kubernetes).
    #[serde(default)]
    pub service_account_token: bool,
    /// The spawner targets this profile's jobs run on, in order of preference; empty: the
    /// default target (the `spawner:` section). A project's own list wins.
    #[serde(default)]
    pub targets: Vec<String>,
    /// What a job does when its first target is full or unhealthy.
    #[serde(default)]
    pub overflow: Overflow,
    /// Whether people approve the agent's work before it leaves the sandbox.
    #[serde(default)]
    pub approval: ApprovalMode,
    /// How long an approval waits for its answer; without one the job fails.
    #[serde(default = "default_approval_timeout")]
    pub approval_timeout_secs: u64,
}

/// `agents.<name>.approval`: when people approve the agent's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    /// Never: a job that pushes pushes when its agent exits 0.
    #[default]
    None,
    /// Before its work is pushed: the runner asks (Approve / Reject) with what it would push,
    /// and pushes and opens the pull request only on Approve.
    BeforePush,
}

fn default_approval_timeout() -> u64 {
    contract::conversation::DEFAULT_ASK_TIMEOUT_SECS
}

/// `agents.<name>.overflow`: where a job goes when its first target is full or unhealthy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// The next of its targets that has room and is healthy; it waits when none has.
    #[default]
    Next,
    /// It waits for its first target.
    Wait,
}

impl AgentSettings {
    /// The profile's limits; unset ones take the backend's defaults.
    pub fn resources(&self) -> spawner::Resources {
        spawner::Resources {
            memory_bytes: self.memory.map(|m| m.0),
            cpu_millis: self.cpus.map(|c| c.0),
            pids: Some(self.pids_limit).filter(|p| *p > 0),
            disk_bytes: self.disk.map(|d| d.0),
        }
    }
}

fn default_agent_timeout() -> u64 {
    1800
}

/// 10 GiB: room for a large checkout and its build, and a bound on what a runaway agent
/// can write to the node.
fn default_agent_disk() -> Option<Memory> {
    Some(Memory(10 << 30))
}

/// `projects.<name>.*`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    /// The repository (`https://…`), checked out for the agent when `checkout.enabled`.
    #[serde(default)]
    pub repo: String,
    /// The branch jobs start from; empty: the repository's default branch.
    #[serde(default)]
    pub base_branch: String,
    /// How the repository is checked out before the agent starts.
    #[serde(default)]
    pub checkout: CheckoutSettings,
    /// Default agent profile.
    pub agent: String,
    /// Jira project keys whose issues belong to this project (`PAY`).
    #[serde(default)]
    pub jira_projects: Vec<String>,
    /// GitHub repositories (`owner/repo`) whose issues belong to this project.
    #[serde(default)]
    pub github_repos: Vec<String>,
    /// GitLab project paths (`group/project`) whose issues belong to this project.
    #[serde(default)]
    pub gitlab_projects: Vec<String>,
    /// Slack channel ids whose commands default to this project.
    #[serde(default)]
    pub slack_channels: Vec<String>,
    /// What starts a job from this project's tickets; empty values take the source's.
    #[serde(default)]
    pub triggers: TriggerSettings,
    /// Who may start, cancel and retry this project's jobs, per source.
    #[serde(default)]
    pub access: AccessSettings,
    /// The spawner targets this project's jobs run on, in order of preference; empty: its
    /// profile's.
    #[serde(default)]
    pub targets: Vec<String>,
}

/// `projects.<name>.checkout.*`: the runner checks the project's `repo` out into the work
/// directory before the agent starts, with the credential given here (which the agent never
/// sees).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckoutSettings {
    /// Whether the repository is checked out (when the project has a `repo`).
    pub enabled: bool,
    /// Commits fetched; 0: the whole history.
    pub depth: u32,
    /// Whether submodules are checked out too.
    pub submodules: bool,
    /// Whether Git LFS files are fetched too.
    pub lfs: bool,
    /// The working branch: `{ticket}` becomes the ticket's key (the job's id when it has
    /// none), `{job}` the job's id.
    pub branch: String,
    /// The user name the token is given with (HTTP Basic).
    pub username: String,
    /// The token that reads the repository; empty for a public one.
    pub token: SecretString,
    /// Whether the agent's work is committed and pushed to the working branch when it
    /// exits 0.
    pub push: bool,
    /// The token that pushes; empty: `token`.
    pub push_token: SecretString,
    /// For an SSH `repo`: the private key that reads it (OpenSSH's format, no passphrase).
    pub ssh_key: SecretString,
    /// For an SSH `repo`: the key that pushes; empty: `ssh_key`.
    pub push_ssh_key: SecretString,
    /// For an SSH `repo`: the server's host keys, as `known_hosts` lines (`ssh-keyscan
    /// <host>`, checked against what the host publishes). No other host key is accepted.
    pub known_hosts: String,
    /// The author (and committer) of the commit of the agent's uncommitted work.
    pub author_name: String,
    /// Their e-mail address.
    pub author_email: String,
    /// The pull request opened from the pushed branch.
    pub pull_request: PullRequestSettings,
}

/// `projects.<name>.checkout.pull_request.*`: GitHub through `sources.github.token`, GitLab
/// through `sources.gitlab.token`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PullRequestSettings {
    /// Whether one is opened (or the open one updated) for a pushed branch.
    pub enabled: bool,
    /// `owner/repo` on GitHub; empty: the project's first `github_repos` entry.
    pub github_repo: String,
    /// `group/project` on GitLab; empty: the project's first `gitlab_projects` entry.
    pub gitlab_project: String,
    /// Opened as a draft.
    pub draft: bool,
    /// Labels put on it.
    pub labels: Vec<String>,
    /// GitHub logins asked to review it.
    pub reviewers: Vec<String>,
    /// For a host that is neither GitHub nor GitLab: where a branch compares with its base,
    /// `{branch}` and `{base}` filled in (`https://git.example.com/acme/shop/compare/{base}...{branch}`).
    pub compare_url: String,
}

impl Default for PullRequestSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            github_repo: String::new(),
            gitlab_project: String::new(),
            draft: true,
            labels: Vec::new(),
            reviewers: Vec::new(),
            compare_url: String::new(),
        }
    }
}

impl Default for CheckoutSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            depth: 1,
            submodules: false,
            lfs: false,
            branch: DEFAULT_BRANCH.into(),
            username: "x-access-token".into(),
            token: SecretString::from(String::new()),
            push: true,
            push_token: SecretString::from(String::new()),
            ssh_key: SecretString::from(String::new()),
            push_ssh_key: SecretString::from(String::new()),
            known_hosts: String::new(),
            author_name: "agentsmith".into(),
            author_email: "agentsmith@localhost".into(),
            pull_request: PullRequestSettings::default(),
        }
    }
}

/// `part` with every character but letters, digits, `-`, `_` and a lone `.` made `-`.
fn ref_part(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        let keep = c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
        if c == '.' && (out.is_empty() || out.ends_with('.')) {
            out.push('-');
        } else {
            out.push(if keep { c } else { '-' });
        }
    }
    if out.ends_with('.') || out.ends_with(".lock") {
        out.push('-');
    }
    out
}

/// The working branch's pattern when none is configured.
pub const DEFAULT_BRANCH: &str = "agentsmith/{ticket}";

impl CheckoutSettings {
    /// The working branch of a job with `id` and `ticket`: the pattern with the ticket's key
    /// and the job's id, each made a valid part of a branch name (what git refuses in one,
    /// such as spaces, `:` or `..`, becomes `-`).
    pub fn branch_for(&self, id: &str, ticket: Option<&str>) -> String {
        let ticket = ticket.filter(|t| !t.is_empty()).unwrap_or(id);
        self.branch
            .replace("{ticket}", &ref_part(ticket))
            .replace("{job}", &ref_part(id))
    }
}

/// `projects.<name>.triggers.*`: overrides of the source-wide triggers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSettings {
    /// The label whose addition starts a job; empty: the source's `label`.
    #[serde(default)]
    pub label: String,
    /// Jira statuses an issue moving into starts a job; empty: `sources.jira.statuses`.
    #[serde(default)]
    pub jira_statuses: Vec<String>,
    /// Whether a comment starting with the command starts a job.
    #[serde(default = "yes")]
    pub comments: bool,
}

fn yes() -> bool {
    true
}

impl Default for TriggerSettings {
    fn default() -> Self {
        Self {
            label: String::new(),
            jira_statuses: Vec::new(),
            comments: true,
        }
    }
}

/// `projects.<name>.access.*`: who may start, cancel and retry the project's jobs from each
/// source. Bots and apps never may unless a source's `bots` lists them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSettings {
    /// Slack.
    #[serde(default)]
    pub slack: SlackAccess,
    /// GitHub.
    #[serde(default)]
    pub github: GithubAccess,
    /// GitLab.
    #[serde(default)]
    pub gitlab: GitlabAccess,
    /// Jira.
    #[serde(default)]
    pub jira: JiraAccess,
}

/// `projects.<name>.access.slack.*`: a user passes if any list admits them; with all three
/// lists empty, everyone in the workspace does (Slack's own membership is the gate).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackAccess {
    /// User ids (`U…`, `W…`).
    #[serde(default)]
    pub users: Vec<String>,
    /// User group ids (`S…`), whose members are asked of Slack (`usergroups.users.list`).
    #[serde(default)]
    pub user_groups: Vec<String>,
    /// Channel ids (`C…`): anyone typing there passes.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Bot ids (`B…`) whose mentions may start jobs; other bots are ignored.
    #[serde(default)]
    pub bots: Vec<String>,
}

impl SlackAccess {
    /// Whether no list restricts who may act (the default: the whole workspace).
    pub fn is_open(&self) -> bool {
        self.users.is_empty() && self.user_groups.is_empty() && self.channels.is_empty()
    }
}

/// A GitHub repository role, weakest first; `none` as a minimum turns the check off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GithubPermission {
    /// No access.
    None,
    /// Read (pull).
    Read,
    /// Triage: manage issues and pull requests without write access.
    Triage,
    /// Write (push).
    #[default]
    Write,
    /// Maintain.
    Maintain,
    /// Admin.
    Admin,
}

impl GithubPermission {
    /// The role's name, as GitHub spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            GithubPermission::None => "none",
            GithubPermission::Read => "read",
            GithubPermission::Triage => "triage",
            GithubPermission::Write => "write",
            GithubPermission::Maintain => "maintain",
            GithubPermission::Admin => "admin",
        }
    }
}

/// `projects.<name>.access.github.*`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubAccess {
    /// The least role on the repository an actor needs (`read`, `triage`, `write`,
    /// `maintain`, `admin`; `none`: anyone who can label or comment).
    #[serde(default)]
    pub min_permission: GithubPermission,
    /// Bot logins (`renovate[bot]`) whose labels may start jobs; other bots are ignored.
    #[serde(default)]
    pub bots: Vec<String>,
}

/// The Developer role: pushes code, the peers' default for running agents.
pub const GITLAB_DEVELOPER: u32 = 30;

/// GitLab's access levels: none, minimal, guest, planner, reporter, developer, maintainer,
/// owner.
pub const GITLAB_LEVELS: [u32; 8] = [0, 5, 10, 15, 20, 30, 40, 50];

/// `projects.<name>.access.gitlab.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabAccess {
    /// The least access level in the project an actor needs (10 guest, 20 reporter, 30
    /// developer, 40 maintainer, 50 owner; 0: anyone who can label or comment).
    #[serde(default = "gitlab_developer")]
    pub min_access_level: u32,
    /// Bot usernames (`project_5_bot_…`) whose labels may start jobs; other bots are ignored.
    #[serde(default)]
    pub bots: Vec<String>,
}

fn gitlab_developer() -> u32 {
    GITLAB_DEVELOPER
}

impl Default for GitlabAccess {
    fn default() -> Self {
        Self {
            min_access_level: GITLAB_DEVELOPER,
            bots: Vec::new(),
        }
    }
}

/// `projects.<name>.access.jira.*`: with both lists empty, every licensed user of the site
/// passes (Jira's project permissions decide who can label, transition or comment).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraAccess {
    /// Account ids that may act (service desk customers too, when listed here).
    #[serde(default)]
    pub account_ids: Vec<String>,
    /// Group names or ids whose members may act (asked of Jira per account).
    #[serde(default)]
    pub groups: Vec<String>,
    /// App account ids (Automation for Jira, other apps) whose changes may start jobs.
    #[serde(default)]
    pub bots: Vec<String>,
}

impl JiraAccess {
    /// Whether no list restricts who may act.
    pub fn is_open(&self) -> bool {
        self.account_ids.is_empty() && self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{ConfigError, Settings};

    fn load(yaml: &str) -> Result<Settings, ConfigError> {
        let dir = std::env::temp_dir().join(format!("agentsmith-access-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agentsmith.yml");
        std::fs::write(&path, yaml).unwrap();
        let settings = Settings::load_from(Some(&path), &[]);
        std::fs::remove_dir_all(&dir).unwrap();
        settings
    }

    #[test]
    fn access_is_strict_for_github_and_gitlab_and_open_for_slack_and_jira_by_default() {
        let settings = load("projects:\n  p:\n    agent: echo\n").unwrap();
        let access = &settings.projects["p"].access;
        assert_eq!(access.github.min_permission, GithubPermission::Write);
        assert_eq!(access.gitlab.min_access_level, GITLAB_DEVELOPER);
        assert!(access.slack.is_open() && access.jira.is_open());
        assert!(access.slack.bots.is_empty() && access.github.bots.is_empty());
        assert_eq!(
            settings.sources.slack.response_url_hosts,
            vec!["hooks.slack.com".to_string()]
        );
    }

    #[test]
    fn access_values_and_missing_credentials_are_refused_by_key() {
        let yaml = r#"
projects:
  p:
    agent: echo
    github_repos: ["acme/shop"]
    gitlab_projects: ["acme/shop"]
    access:
      github: { min_permission: write }
      gitlab: { min_access_level: 25 }
      slack: { user_groups: ["S1"], users: [""] }
sources:
  github: { enabled: true, webhook_secret: "s3cret-s3cret" }
  gitlab: { enabled: true, webhook_token: "s3cret-s3cret" }
  slack:
    enabled: true
    signing_secret: "s3cret-s3cret"
    response_url_hosts: ["https://hooks.slack.com/"]
"#;
        let problems = load(yaml).unwrap_err().0;
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "projects.p.access.gitlab.min_access_level",
            "projects.p.access.slack.users",
            "sources.github.token",
            "sources.slack.bot_token",
            "sources.slack.response_url_hosts",
        ] {
            assert!(keys.contains(&key), "{key} missing from {problems:?}");
        }
        let wrong = load("projects:\n  p:\n    agent: echo\n    access:\n      github:\n        min_permission: owner\n");
        let problems = wrong.unwrap_err().0;
        assert!(
            problems
                .iter()
                .any(|p| p.key.starts_with("projects.p.access.github")),
            "{problems:?}"
        );
        // Turning the check off needs no token.
        let off = yaml
            .replace("min_permission: write", "min_permission: none")
            .replace("min_access_level: 25", "min_access_level: 0");
        let keys: Vec<String> = load(&off)
            .unwrap_err()
            .0
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert!(
            !keys.iter().any(|k| k.starts_with("sources.git")),
            "{keys:?}"
        );
    }

    #[test]
    fn a_project_with_a_repo_is_checked_out_on_its_own_branch_by_default() {
        let settings =
            load("projects:\n  p:\n    agent: echo\n    repo: https://git.example/acme/p.git\n")
                .unwrap();
        let checkout = &settings.projects["p"].checkout;
        assert!(checkout.enabled);
        assert_eq!(checkout.depth, 1);
        assert_eq!(
            checkout.branch_for("j1", Some("PAY-12")),
            "agentsmith/PAY-12"
        );
        assert_eq!(checkout.branch_for("j1", None), "agentsmith/j1");
        assert_eq!(
            checkout.branch_for("j1", Some("acme/shop#4: two..dots ")),
            "agentsmith/acme-shop-4--two.-dots-"
        );
    }

    #[test]
    fn the_checkout_token_comes_from_the_environment_and_is_never_printed() {
        let dir =
            std::env::temp_dir().join(format!("agentsmith-checkout-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agentsmith.yml");
        std::fs::write(
            &path,
            "projects:\n  shop:\n    agent: echo\n    repo: https://git.example/acme/shop.git\n",
        )
        .unwrap();
        let env = [(
            "AGENTSMITH__PROJECTS__SHOP__CHECKOUT__TOKEN".to_string(),
            "ghp_from_the_environment".to_string(),
        )];
        let settings = Settings::load_from(Some(&path), &env).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let checkout = &settings.projects["shop"].checkout;
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&checkout.token),
            "ghp_from_the_environment"
        );
        assert!(!format!("{settings:?}").contains("ghp_from_the_environment"));
    }

    #[test]
    fn a_checkout_that_cannot_work_is_refused_naming_the_key() {
        for (extra, key, says) in [
            (
                "    repo: git.example/acme/p\n",
                "projects.p.repo",
                "https:// or SSH",
            ),
            (
                "    repo: git@git.example:acme/p.git\n    checkout:\n      known_hosts: git.example ssh-ed25519 AAAA\n",
                "projects.p.checkout.ssh_key",
                "private key",
            ),
            (
                "    repo: ssh://git@git.example/acme/p.git\n    checkout:\n      ssh_key: not a key\n      known_hosts: git.example ssh-ed25519 AAAA\n",
                "projects.p.checkout.ssh_key",
                "not a private key",
            ),
            (
                "    repo: git@git.example:acme/p.git\n    checkout:\n      ssh_key: \"-----BEGIN OPENSSH PRIVATE KEY-----\"\n",
                "projects.p.checkout.known_hosts",
                "ssh-keyscan",
            ),
            (
                "    repo: git@git.example:acme/p.git\n    checkout:\n      token: t\n      ssh_key: \"-----BEGIN OPENSSH PRIVATE KEY-----\"\n      known_hosts: git.example ssh-ed25519 AAAA\n",
                "projects.p.checkout.token",
                "ssh_key",
            ),
            (
                "    repo: https://git.example/p.git\n    checkout:\n      ssh_key: \"-----BEGIN OPENSSH PRIVATE KEY-----\"\n",
                "projects.p.checkout.ssh_key",
                "checkout.token",
            ),
            (
                "    repo: https://me:tok@git.example/acme/p.git\n",
                "projects.p.repo",
                "checkout.token",
            ),
            (
                "    repo: https://git.example/p.git\n    checkout:\n      branch: fixed\n",
                "projects.p.checkout.branch",
                "{ticket}",
            ),
            (
                "    repo: https://git.example/p.git\n    checkout:\n      tokn: x\n",
                "projects.p.checkout",
                "tokn",
            ),
            (
                "    repo: https://git.example/p.git\n    checkout:\n      pull_request:\n        compare_url: https://git.example/p/compare\n",
                "projects.p.checkout.pull_request.compare_url",
                "{branch}",
            ),
        ] {
            let err = load(&format!("projects:\n  p:\n    agent: echo\n{extra}")).unwrap_err();
            assert!(
                err.0
                    .iter()
                    .any(|p| p.key.starts_with(key) && p.to_string().contains(says)),
                "{extra}: {err}"
            );
        }
        // An SSH repo with its key and host keys.
        for repo in [
            "git@git.example:acme/p.git",
            "ssh://git@git.example:2222/acme/p.git",
        ] {
            load(&format!(
                "projects:\n  p:\n    agent: echo\n    repo: {repo}\n    checkout:\n      \
                 ssh_key: \"-----BEGIN OPENSSH PRIVATE KEY-----\"\n      \
                 known_hosts: \"[git.example]:2222 ssh-ed25519 AAAA\"\n"
            ))
            .unwrap();
        }
        // Off: the repository is only named in the intent, as before.
        load("projects:\n  p:\n    agent: echo\n    repo: git@git.example:p.git\n    checkout:\n      enabled: false\n")
            .unwrap();
    }
}
