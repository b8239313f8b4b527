//! The semantic checks: values that parse but cannot work, each reported with its key. The
//! sections the queue and the spawner own are checked by those crates; what spans sections
//! (a project's agent, a profile's image for a container backend) is checked here.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use secrecy::ExposeSecret;
use spawner::SpawnerKind;

use super::agents::{CheckoutSettings, GithubPermission, ProjectSettings, GITLAB_LEVELS};
use super::{Problem, Settings};

/// Collects problems as they are found.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// The (key, message) pairs of a section under `section`.
    fn section(&mut self, section: &str, found: Vec<(String, String)>) {
        for (key, message) in found {
            self.add(&format!("{section}.{key}"), message);
        }
    }
}

impl Settings {
    /// Every semantic problem (values that parse but cannot work).
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Problems::default();
        self.check_server(&mut problems);
        problems.section("redis", self.redis.problems());
        problems.section("queue", self.queue.problems());
        problems.section("spawner", self.spawner.problems());
        self.check_targets(&mut problems);
        self.check_agents(&mut problems);
        self.check_sources(&mut problems);
        self.check_projects(&mut problems);
        problems.0
    }

    /// What works but is risky (a Redis without a password that agents may reach): printed
    /// by `config check` and logged when `serve` starts, never refused.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut warnings = Problems::default();
        warnings.section("redis", self.redis.warnings());
        // Another user is kept from the dispatcher's files, not from its loopback port.
        let agent_user = self.spawner.process.agent_user.as_ref();
        if let Some(user) = agent_user
            .filter(|_| self.api.tokens.is_empty() && self.spawner.kind == SpawnerKind::Process)
        {
            warnings.add(
                "api.tokens",
                format!(
                    "none configured while agents run as another user (spawner.process.agent_user \
                     is {user}): agents can still reach the open API on loopback and start, read \
                     or cancel any job. Configure api.tokens (agentsmith's own CLI and dashboard \
                     then need one too)"
                ),
            );
        }
        warnings.0
    }

    fn check_server(&self, problems: &mut Problems) {
        match self.server.bind.parse::<SocketAddr>() {
            Err(e) => problems.add("server.bind", format!("not an address:port ({e})")),
            Ok(addr) if self.api.tokens.is_empty() && !addr.ip().is_loopback() => problems.add(
                "api.tokens",
                format!("no API tokens configured, which is only allowed on a loopback bind address (server.bind is {addr})"),
            ),
            Ok(_) => {}
        }
        if self.api.tokens.iter().any(|t| t.expose_secret().len() < 16) {
            problems.add("api.tokens", "every token must be at least 16 characters");
        }
        let secret = self.server.runner_secret.expose_secret();
        if !secret.is_empty() && secret.len() < 16 {
            problems.add(
                "server.runner_secret",
                "must be at least 16 characters (or empty to generate one)",
            );
        }
        let public_url = &self.server.public_url;
        if !(public_url.is_empty() || is_http_url(public_url)) {
            problems.add("server.public_url", "must start with http:// or https://");
        }
        let installation = &self.server.installation;
        if installation.is_empty()
            || installation.len() > 63
            || !installation
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            problems.add(
                "server.installation",
                "must be 1-63 lowercase letters, digits or '-'",
            );
        }
        if self.server.body_limit_bytes < 1024 {
            problems.add("server.body_limit_bytes", "must be at least 1024");
        }
        if self.api.max_followers == 0 {
            problems.add("api.max_followers", "must be at least 1");
        }
        if !(1..=self.api.max_followers.max(1)).contains(&self.api.max_followers_per_client) {
            problems.add(
                "api.max_followers_per_client",
                "must be between 1 and api.max_followers",
            );
        }
    }

    /// The spawner section of each target, by name, the default first.
    pub fn target_settings(&self) -> Vec<(&str, &spawner::SpawnerSettings)> {
        std::iter::once((spawner::DEFAULT_TARGET, &self.spawner))
            .chain(self.spawners.iter().map(|(n, s)| (n.as_str(), s)))
            .collect()
    }

    fn check_targets(&self, problems: &mut Problems) {
        for (name, target) in &self.spawners {
            let key = format!("spawners.{name}");
            if name == spawner::DEFAULT_TARGET {
                problems.add(&key, "the target named default is the spawner section");
            } else if !valid_target_name(name) {
                problems.add(
                    &key,
                    "target names are lowercase letters, digits and '-', at most 40",
                );
            }
            problems.section(&key, target.problems());
        }
        let mut lists: Vec<(String, &[String])> = self
            .agents
            .iter()
            .map(|(n, a)| (format!("agents.{n}.targets"), a.targets.as_slice()))
            .collect();
        lists.extend(
            self.projects
                .iter()
                .map(|(n, p)| (format!("projects.{n}.targets"), p.targets.as_slice())),
        );
        for (key, list) in lists {
            for (i, target) in list.iter().enumerate() {
                if target != spawner::DEFAULT_TARGET && !self.spawners.contains_key(target) {
                    problems.add(
                        &format!("{key}[{i}]"),
                        format!("{target:?} names no target (default or spawners.*)"),
                    );
                } else if list[..i].contains(target) {
                    problems.add(
                        &format!("{key}[{i}]"),
                        format!("{target:?} is listed twice"),
                    );
                }
            }
        }
    }

    /// The targets a profile's own jobs may run on (a project may route elsewhere).
    fn targets_of(&self, agent: &super::AgentSettings) -> Vec<&spawner::SpawnerSettings> {
        if agent.targets.is_empty() {
            return vec![&self.spawner];
        }
        agent
            .targets
            .iter()
            .filter_map(|t| {
                if t == spawner::DEFAULT_TARGET {
                    Some(&self.spawner)
                } else {
                    self.spawners.get(t)
                }
            })
            .collect()
    }

    fn check_agents(&self, problems: &mut Problems) {
        if self.agents.is_empty() {
            problems.add("agents", "at least one agent profile is needed");
        }
        for (target, settings) in self.target_settings() {
            let section = if target == spawner::DEFAULT_TARGET {
                "spawner".to_string()
            } else {
                format!("spawners.{target}")
            };
            for profile in settings.kubernetes.profiles.keys() {
                if !self.agents.contains_key(profile) {
                    problems.add(
                        &format!("{section}.kubernetes.profiles.{profile}"),
                        "names no agent profile (agents.*)",
                    );
                }
            }
        }
        for (name, agent) in &self.agents {
            let key = |field: &str| format!("agents.{name}.{field}");
            if !valid_name(name) {
                problems.add(
                    &format!("agents.{name}"),
                    "names are letters, digits, '-' and '_'",
                );
            }
            if agent.command.first().is_none_or(String::is_empty) {
                problems.add(&key("command"), "must name a program");
            }
            let most = contract::conversation::MAX_ASK_TIMEOUT_SECS;
            if !(1..=most).contains(&agent.approval_timeout_secs) {
                problems.add(
                    &key("approval_timeout_secs"),
                    format!("must be 1 to {most} seconds"),
                );
            }
            if agent.timeout_secs == 0 {
                problems.add(&key("timeout_secs"), "must be greater than 0");
            }
            let targets = self.targets_of(agent);
            if targets.iter().any(|t| t.kind != SpawnerKind::Process) && agent.image.is_empty() {
                problems.add(
                    &key("image"),
                    "container spawners (docker, kubernetes) need an image for every agent profile",
                );
            }
            if !agent.secret_env.is_empty()
                && targets.iter().any(|t| {
                    t.kind == SpawnerKind::Kubernetes && t.kubernetes.secret_name.is_empty()
                })
            {
                problems.add(
                    &key("secret_env"),
                    "the kubernetes spawner reads secrets from its kubernetes.secret_name, which is not set",
                );
            }
            for (var, secret) in &agent.secret_env {
                if !spawner::valid_env_name(var) {
                    problems.add(
                        &format!("{}.{var}", key("secret_env")),
                        "invalid name (AGENTSMITH_* is reserved)",
                    );
                }
                if !spawner::secrets::valid_key(secret) {
                    problems.add(
                        &format!("{}.{var}", key("secret_env")),
                        format!("{secret:?} is not a secret key (letters, digits, '_', '-', '.')"),
                    );
                }
            }
            for var in agent.env.keys().filter(|v| !spawner::valid_env_name(v)) {
                problems.add(
                    &format!("{}.{var}", key("env")),
                    "invalid name (AGENTSMITH_* is reserved)",
                );
            }
        }
    }

    fn check_sources(&self, problems: &mut Problems) {
        let sources = &self.sources;
        let secrets = [
            (
                "slack",
                sources.slack.enabled,
                "signing_secret",
                &sources.slack.signing_secret,
            ),
            (
                "github",
                sources.github.enabled,
                "webhook_secret",
                &sources.github.webhook_secret,
            ),
            (
                "gitlab",
                sources.gitlab.enabled,
                "webhook_token",
                &sources.gitlab.webhook_token,
            ),
            (
                "jira",
                sources.jira.enabled,
                "webhook_secret",
                &sources.jira.webhook_secret,
            ),
        ];
        for (source, enabled, key, secret) in secrets {
            if enabled && secret.expose_secret().trim().is_empty() {
                problems.add(
                    &format!("sources.{source}.{key}"),
                    format!("must not be empty while sources.{source}.enabled is true (an unverified source would be open to anyone)"),
                );
            }
        }
        let urls = [
            (
                "sources.slack.api_base_url",
                &sources.slack.api_base_url,
                true,
            ),
            (
                "sources.github.api_base_url",
                &sources.github.api_base_url,
                true,
            ),
            (
                "sources.gitlab.api_base_url",
                &sources.gitlab.api_base_url,
                true,
            ),
            (
                "sources.jira.base_url",
                &sources.jira.base_url,
                sources.jira.enabled,
            ),
        ];
        for (key, url, required) in urls {
            if !((url.is_empty() && !required) || is_http_url(url)) {
                problems.add(key, "must be an http:// or https:// URL");
            }
        }
        for (key, command) in [
            ("sources.command", &sources.command),
            ("sources.slack.command", &sources.slack.command),
        ] {
            if !command.starts_with('/')
                || command.len() < 2
                || command.chars().any(char::is_whitespace)
            {
                problems.add(key, "must be a word starting with '/' (like /agent)");
            }
        }
        if sources.dedup_ttl_secs < 60 {
            problems.add("sources.dedup_ttl_secs", "must be at least 60");
        }
        if sources.replies.max_attempts == 0 {
            problems.add("sources.replies.max_attempts", "must be at least 1");
        }
        if sources.replies.backoff_base_ms == 0 || sources.replies.timeout_secs == 0 {
            problems.add(
                "sources.replies",
                "backoff_base_ms and timeout_secs must be at least 1",
            );
        }
        for host in &sources.slack.response_url_hosts {
            if !valid_host(host) {
                problems.add(
                    "sources.slack.response_url_hosts",
                    format!(
                        "{host:?} is not a host name (like hooks.slack.com: no scheme, port or path)"
                    ),
                );
            }
        }
        let default_project = &sources.slack.default_project;
        if !default_project.is_empty() && !self.projects.contains_key(default_project) {
            problems.add(
                "sources.slack.default_project",
                format!("no project named {default_project:?}"),
            );
        }
    }

    fn check_projects(&self, problems: &mut Problems) {
        // Each ticket source maps to at most one project, or a ticket could start a job in two.
        let mut owners: BTreeMap<(&str, String), &str> = BTreeMap::new();
        for (name, project) in &self.projects {
            if !valid_name(name) {
                problems.add(
                    &format!("projects.{name}"),
                    "names are letters, digits, '-' and '_'",
                );
            }
            if !self.agents.contains_key(&project.agent) {
                problems.add(
                    &format!("projects.{name}.agent"),
                    format!("no agent profile named {:?}", project.agent),
                );
            }
            self.check_access(name, project, problems);
            check_checkout(name, project, problems);
            let lists = [
                ("jira_projects", &project.jira_projects),
                ("github_repos", &project.github_repos),
                ("gitlab_projects", &project.gitlab_projects),
                ("slack_channels", &project.slack_channels),
            ];
            for (list, values) in lists {
                for value in values {
                    let key = format!("projects.{name}.{list}");
                    if value.trim().is_empty() {
                        problems.add(&key, "empty entry");
                    } else if let Some(other) =
                        owners.insert((list, value.to_ascii_lowercase()), name)
                    {
                        problems.add(
                            &key,
                            format!("{value:?} is also listed by project {other:?}"),
                        );
                    }
                }
            }
        }
    }

    /// A project's `access`: values the checks can use, and the credentials they ask the
    /// providers with (a check that cannot be made would refuse every trigger).
    fn check_access(&self, name: &str, project: &ProjectSettings, problems: &mut Problems) {
        let access = &project.access;
        let sources = &self.sources;
        let key = |field: &str| format!("projects.{name}.access.{field}");
        if !GITLAB_LEVELS.contains(&access.gitlab.min_access_level) {
            problems.add(
                &key("gitlab.min_access_level"),
                format!("must be one of GitLab's access levels {GITLAB_LEVELS:?}"),
            );
        }
        let lists = [
            ("slack.users", &access.slack.users),
            ("slack.user_groups", &access.slack.user_groups),
            ("slack.channels", &access.slack.channels),
            ("slack.bots", &access.slack.bots),
            ("github.bots", &access.github.bots),
            ("gitlab.bots", &access.gitlab.bots),
            ("jira.account_ids", &access.jira.account_ids),
            ("jira.groups", &access.jira.groups),
            ("jira.bots", &access.jira.bots),
        ];
        for (list, values) in lists {
            if values.iter().any(|v| v.trim().is_empty()) {
                problems.add(&key(list), "empty entry");
            }
        }
        let needs = [
            (
                sources.github.enabled
                    && !project.github_repos.is_empty()
                    && access.github.min_permission > GithubPermission::None,
                "sources.github.token",
                sources.github.token.expose_secret().is_empty(),
                "github.min_permission",
            ),
            (
                sources.gitlab.enabled
                    && !project.gitlab_projects.is_empty()
                    && access.gitlab.min_access_level > 0,
                "sources.gitlab.token",
                sources.gitlab.token.expose_secret().is_empty(),
                "gitlab.min_access_level",
            ),
            (
                sources.slack.enabled && !access.slack.user_groups.is_empty(),
                "sources.slack.bot_token",
                sources.slack.bot_token.expose_secret().is_empty(),
                "slack.user_groups",
            ),
            (
                sources.jira.enabled && !access.jira.groups.is_empty(),
                "sources.jira.api_token",
                sources.jira.email.is_empty() || sources.jira.api_token.expose_secret().is_empty(),
                "jira.groups",
            ),
        ];
        for (checked, credential, missing, setting) in needs {
            if checked && missing {
                problems.add(
                    credential,
                    format!(
                        "needed to check who may start jobs in project {name:?} ({}); set it, or relax that setting",
                        key(setting)
                    ),
                );
            }
        }
    }
}

/// A bare host name: no scheme, port, path or user.
/// A project's `repo` as the checkout takes it: an HTTP(S) URL holding no credential (the
/// credential is `checkout.token`, which no record or log shows), and a working branch that
/// names each job's own.
fn check_checkout(name: &str, project: &ProjectSettings, problems: &mut Problems) {
    let checkout = &project.checkout;
    if !checkout.enabled || project.repo.is_empty() {
        return;
    }
    let key = format!("projects.{name}.repo");
    let repo = project.repo.as_str();
    let authority = repo
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or_default();
    if is_http_url(repo) {
        if authority.contains('@') {
            problems.add(
                &key,
                format!("holds a credential: give the URL without it, and the token as projects.{name}.checkout.token"),
            );
        }
        if !checkout.ssh_key.expose_secret().is_empty()
            || !checkout.push_ssh_key.expose_secret().is_empty()
        {
            problems.add(
                &format!("projects.{name}.checkout.ssh_key"),
                format!("is for an SSH repo, and {repo:?} is not one: give its token as projects.{name}.checkout.token"),
            );
        }
    } else if is_ssh_url(repo) {
        check_ssh(name, checkout, authority, problems);
    } else {
        problems.add(
            &key,
            format!(
                "{repo:?}: the checkout takes an https:// or SSH URL (ssh://git@host/acme/shop.git, \
                 git@host:acme/shop.git); or set projects.{name}.checkout.enabled: false"
            ),
        );
    }
    let branch = &checkout.branch;
    if !branch.contains("{ticket}") && !branch.contains("{job}") {
        problems.add(
            &format!("projects.{name}.checkout.branch"),
            format!("{branch:?} names no job: put {{ticket}} or {{job}} in it, so each job works on its own branch"),
        );
    }
    let compare = &checkout.pull_request.compare_url;
    if !compare.is_empty() && (!is_http_url(compare) || !compare.contains("{branch}")) {
        problems.add(
            &format!("projects.{name}.checkout.pull_request.compare_url"),
            format!("{compare:?}: an http(s) URL with {{branch}} (and {{base}}) in it"),
        );
    }
    if checkout.username.is_empty() || checkout.username.contains(':') {
        problems.add(
            &format!("projects.{name}.checkout.username"),
            "a user name, without ':'",
        );
    }
}

/// The key and host keys an SSH `repo` needs, and no token (`authority`: its `user@host` of
/// an `ssh://` URL).
fn check_ssh(name: &str, checkout: &CheckoutSettings, authority: &str, problems: &mut Problems) {
    let at = |field: &str| format!("projects.{name}.checkout.{field}");
    if authority
        .split('@')
        .next()
        .is_some_and(|user| user.contains(':'))
        && authority.contains('@')
    {
        problems.add(
            &format!("projects.{name}.repo"),
            format!("holds a password: give the URL without it, and the key as projects.{name}.checkout.ssh_key"),
        );
    }
    if !checkout.token.expose_secret().is_empty() || !checkout.push_token.expose_secret().is_empty()
    {
        problems.add(
            &at("token"),
            format!("is for an https:// repo, and this one is SSH: give its key as projects.{name}.checkout.ssh_key"),
        );
    }
    for (field, key) in [
        ("ssh_key", &checkout.ssh_key),
        ("push_ssh_key", &checkout.push_ssh_key),
    ] {
        let key = key.expose_secret();
        if field == "ssh_key" && key.is_empty() {
            problems.add(
                &at(field),
                format!(
                    "an SSH repo needs a private key (AGENTSMITH__PROJECTS__{}__CHECKOUT__SSH_KEY)",
                    name.to_uppercase()
                ),
            );
        } else if !key.is_empty() && !key.contains("PRIVATE KEY-----") {
            problems.add(&at(field), "not a private key (OpenSSH's or PEM format)");
        }
    }
    let hosts = checkout.known_hosts.lines().filter(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with('#')
    });
    if hosts.clone().next().is_none() {
        problems.add(
            &at("known_hosts"),
            "an SSH repo needs the host's keys as known_hosts lines (ssh-keyscan <host>, checked), \
             so that no other host is trusted",
        );
    } else if hosts.clone().any(|l| l.split_whitespace().count() < 3) {
        problems.add(
            &at("known_hosts"),
            "each line is `<host> <key type> <key>`, as ssh-keyscan prints them",
        );
    }
}

/// `ssh://[user@]host[:port]/path`, or git's short form `[user@]host:path`.
pub fn is_ssh_url(url: &str) -> bool {
    if let Some(rest) = url.strip_prefix("ssh://") {
        return rest
            .split_once('/')
            .is_some_and(|(host, path)| !host.is_empty() && !path.is_empty());
    }
    if url.contains("://") {
        return false;
    }
    url.split_once(':')
        .is_some_and(|(host, path)| !host.is_empty() && !host.contains('/') && !path.is_empty())
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// A target's name: in metrics labels and job records, so short and plain.
fn valid_target_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
