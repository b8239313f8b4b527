//! The settings: built-in defaults (`config/agentsmith.example.yml`, compiled in), then
//! the user's file, then `AGENTSMITH__SECTION__KEY` environment variables; validated with
//! errors that name the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

/// The built-in defaults, which are also the documented example.
pub const DEFAULTS_YAML: &str = include_str!("../../config/agentsmith.example.yml");

/// Environment variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "AGENTSMITH_CONFIG";

/// One thing wrong with the configuration, and the key that has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key (`queue.max_attempts`), or `(file)` for the file itself.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found while loading the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError(pub Vec<Problem>);

/// All settings of the dispatcher.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The HTTP server.
    pub server: ServerSettings,
    /// Redis, where all state lives.
    pub redis: RedisSettings,
    /// Limits, retries, leases and retention.
    pub queue: QueueSettings,
    /// The backend that runs agent workloads.
    pub spawner: SpawnerSettings,
    /// Agent profiles by name.
    pub agents: BTreeMap<String, AgentSettings>,
    /// Projects by name.
    pub projects: BTreeMap<String, ProjectSettings>,
    /// Webhook sources (Slack, GitHub, GitLab, Jira) and the replies sent back to them.
    pub sources: SourcesSettings,
    /// The REST API.
    pub api: ApiSettings,
    /// The web dashboard served at `/`.
    pub dashboard: DashboardSettings,
    /// Logging.
    pub log: LogSettings,
}

/// `server.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address.
    pub bind: String,
    /// Base URL at which runners reach this dispatcher; empty derives it from `bind`.
    pub public_url: String,
    /// Largest request body in bytes.
    pub body_limit_bytes: usize,
    /// Drain time on shutdown.
    pub shutdown_grace_secs: u64,
    /// Key of the per-job runner tokens; empty keeps a generated one in Redis.
    pub runner_secret: SecretString,
    /// Installation name, put on every workload's labels.
    pub installation: String,
}

/// `redis.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Connection URL (a secret: it may hold a password).
    pub url: SecretString,
    /// Key prefix.
    pub prefix: String,
    /// Connect and reply timeout.
    pub timeout_secs: u64,
}

/// `queue.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// Global limit of admitted jobs.
    pub max_concurrent_jobs: u32,
    /// Limit of admitted jobs per concurrency key.
    pub concurrency_key_limit: u32,
    /// Attempts for infrastructure failures.
    pub max_attempts: u32,
    /// First retry delay.
    pub backoff_base_secs: u64,
    /// Largest retry delay.
    pub backoff_max_secs: u64,
    /// Lease of a running job, renewed by heartbeats.
    pub lease_secs: u64,
    /// Seconds between runner heartbeats.
    pub heartbeat_secs: u64,
    /// Lease of a starting job.
    pub start_timeout_secs: u64,
    /// Idle time after which another dispatcher takes over an unrecorded claim.
    pub reclaim_idle_secs: u64,
    /// How long finished jobs are kept.
    pub retention_secs: u64,
    /// How long an idempotency key maps to its job.
    pub idempotency_ttl_secs: u64,
    /// Events kept per job.
    pub events_max_len: u64,
    /// Ready jobs claimed per read.
    pub claim_batch: usize,
    /// Housekeeping interval in milliseconds.
    pub tick_ms: u64,
}

/// `spawner.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnerSettings {
    /// Which backend.
    #[serde(rename = "type")]
    pub kind: SpawnerKind,
    /// SIGTERM-to-SIGKILL grace.
    pub grace_secs: u64,
    /// Seconds between reconciliations of workloads with job records.
    pub reconcile_secs: u64,
    /// Directory of secret files (one file per key); empty: `AGENTSMITH_SECRET_<KEY>` only.
    pub secrets_dir: String,
    /// Settings of the process backend.
    pub process: ProcessBackendSettings,
    /// Settings of the docker backend.
    pub docker: DockerBackendSettings,
    /// Settings of the kubernetes backend.
    pub kubernetes: KubernetesBackendSettings,
}

/// `spawner.kubernetes.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesBackendSettings {
    /// Kubeconfig file; empty: in-cluster config in a pod, else `KUBECONFIG` or
    /// `~/.kube/config`.
    pub kubeconfig: String,
    /// Kubeconfig context; empty: the current one.
    pub context: String,
    /// Namespace of agent Jobs; empty: the context's, or the pod's own in a cluster.
    pub namespace: String,
    /// Service account of agent pods; empty: the namespace's default.
    pub service_account: String,
    /// Seconds a finished Job (and its pod and logs) is kept.
    pub ttl_seconds_after_finished: u64,
    /// `IfNotPresent`, `Always` or `Never`.
    pub image_pull_policy: PullPolicySetting,
    /// Names of Secrets used to pull images.
    pub image_pull_secrets: Vec<String>,
    /// The Secret whose keys profiles' `secret_env` names (through `secretKeyRef`).
    pub secret_name: String,
    /// Default memory limit (and request) for profiles that set none.
    pub memory: String,
    /// Default CPU limit for profiles that set none.
    pub cpus: String,
    /// CPU request of every agent pod; empty: none.
    pub cpu_request: String,
    /// Node selector of agent pods.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of agent pods (Kubernetes `Toleration` objects).
    pub tolerations: Vec<Value>,
    /// Affinity of agent pods (a Kubernetes `Affinity` object); empty: none.
    pub affinity: Value,
    /// The pod security context's user and group.
    pub run_as_user: i64,
    /// Group of the pod's files (`fsGroup`) and processes.
    pub run_as_group: i64,
    /// Extra labels on Jobs and pods.
    pub labels: BTreeMap<String, String>,
    /// Annotations on Jobs and pods.
    pub annotations: BTreeMap<String, String>,
    /// Environment of every agent container (proxies, say), before the profile's own.
    pub env: BTreeMap<String, String>,
    /// Seconds a pod may stay unscheduled or waiting before its attempt fails.
    pub pending_timeout_secs: u64,
    /// The agent's writable work directory (an `emptyDir`).
    pub work_dir: String,
    /// Client-side limit of API requests per second (bursts up to twice this).
    pub api_qps: u32,
}

/// The spawner backends this build knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpawnerKind {
    /// Child processes of the dispatcher.
    Process,
    /// Containers on a Docker engine.
    Docker,
    /// Jobs in a Kubernetes cluster.
    Kubernetes,
}

/// `spawner.docker.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerBackendSettings {
    /// The engine; empty means `DOCKER_HOST`, else the local socket.
    pub host: String,
    /// Client certificates for an engine behind TLS.
    pub tls: DockerTlsSettings,
    /// The network agent containers join; empty means automatic.
    pub network: String,
    /// `IfNotPresent`, `Always` or `Never`.
    pub pull_policy: PullPolicySetting,
    /// Registry credentials for pulls.
    pub registry: RegistrySettings,
    /// How long finished containers are kept.
    pub ttl_after_finished_secs: u64,
    /// `uid:gid` the containers run as.
    pub user: String,
    /// The writable work directory inside containers.
    pub work_dir: String,
    /// `--add-host` entries.
    pub extra_hosts: Vec<String>,
    /// Extra labels on every container.
    pub labels: BTreeMap<String, String>,
    /// Default memory limit (`2Gi`), for profiles that set none; empty: none.
    pub memory: String,
    /// Default CPU limit (`2`, `500m`); empty: none.
    pub cpus: String,
    /// Default process limit; 0: none.
    pub pids_limit: u32,
    /// Seconds one engine request may take.
    pub request_timeout_secs: u64,
}

/// `spawner.docker.tls.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerTlsSettings {
    /// The CA certificate (PEM file).
    pub ca: String,
    /// The client certificate (PEM file).
    pub cert: String,
    /// The client key (PEM file).
    pub key: String,
}

/// `spawner.docker.registry.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// The registry host; empty for Docker Hub.
    pub server: String,
    /// The user name; empty: pull anonymously.
    pub username: String,
    /// The password or token.
    pub password: SecretString,
}

/// When the docker backend pulls images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PullPolicySetting {
    /// Pull when missing.
    IfNotPresent,
    /// Pull before every attempt.
    Always,
    /// Never pull.
    Never,
}

/// Bytes of a memory quantity: a number with an optional suffix, binary (`Ki`, `Mi`,
/// `Gi`, `Ti`) or decimal (`k`, `M`, `G`, `T`), as Kubernetes writes them.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let factor: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use Ki, Mi, Gi, Ti, k, M, G or T)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a memory size such as 512Mi or 2Gi"))?;
    let bytes = value * factor as f64;
    if !(1.0..1e18).contains(&bytes) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// Thousandths of a CPU of a CPU quantity: `2`, `0.5` or `500m`.
pub fn parse_cpus(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a CPU amount such as 2, 0.5 or 500m");
    let millis = match text.strip_suffix('m') {
        Some(millis) => millis.parse::<u64>().map_err(|_| bad())?,
        None => {
            let cpus: f64 = text.parse().map_err(|_| bad())?;
            if !(cpus > 0.0 && cpus < 1e6) {
                return Err(bad());
            }
            (cpus * 1000.0).round() as u64
        }
    };
    if millis == 0 {
        return Err(format!("{text:?} must be more than 0"));
    }
    Ok(millis)
}

/// `spawner.process.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessBackendSettings {
    /// The runner binary; empty means next to the running executable.
    pub runner_path: String,
    /// Root of the work directories; empty means `<tmp>/agentsmith`.
    pub work_root: String,
    /// How long finished workloads are kept.
    pub keep_finished_secs: u64,
}

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
    #[serde(default)]
    pub memory: String,
    /// CPU limit (container backends); empty: the backend's default.
    #[serde(default)]
    pub cpus: String,
    /// Process limit (container backends); 0: the backend's default.
    #[serde(default)]
    pub pids_limit: u32,
    /// Let the agent write outside its work directory and /tmp (container backends).
    #[serde(default)]
    pub writable_root: bool,
    /// Mount a service account token in the agent's pod (kubernetes).
    #[serde(default)]
    pub service_account_token: bool,
}

impl AgentSettings {
    /// The profile's limits (validated at load; unparsable values read as unset).
    pub fn resources(&self) -> spawner::Resources {
        spawner::Resources {
            memory_bytes: Some(&self.memory)
                .filter(|m| !m.is_empty())
                .and_then(|m| parse_memory(m).ok()),
            cpu_millis: Some(&self.cpus)
                .filter(|c| !c.is_empty())
                .and_then(|c| parse_cpus(c).ok()),
            pids: Some(self.pids_limit).filter(|p| *p > 0),
        }
    }
}

fn default_agent_timeout() -> u64 {
    1800
}

/// `projects.<name>.*`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    /// The repository.
    #[serde(default)]
    pub repo: String,
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

/// `sources.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesSettings {
    /// The command word of comments and app mentions (`/agent`); Slack's slash command is
    /// `sources.slack.command`.
    pub command: String,
    /// How long a delivery id is remembered, so a redelivery creates no second job.
    pub dedup_ttl_secs: u64,
    /// One job per ticket at a time: a second trigger for a ticket whose job has not ended
    /// is answered with that job instead of starting another.
    pub one_job_per_ticket: bool,
    /// Slack.
    pub slack: SlackSettings,
    /// GitHub.
    pub github: GithubSettings,
    /// GitLab.
    pub gitlab: GitlabSettings,
    /// Jira Cloud.
    pub jira: JiraSettings,
    /// The reply outbox.
    pub replies: ReplySettings,
}

/// `sources.slack.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSettings {
    /// Accept Slack's requests; off: its routes answer 404.
    pub enabled: bool,
    /// The app's signing secret (requests are verified with it).
    pub signing_secret: SecretString,
    /// The bot token (`xoxb-...`) for chat.postMessage, when `response_url` cannot be used.
    pub bot_token: SecretString,
    /// The slash command's name.
    pub command: String,
    /// Slack's Web API base URL.
    pub api_base_url: String,
    /// User ids who may cancel and retry anyone's jobs (others: only their own).
    pub admins: Vec<String>,
    /// The project of commands that name none and come from a channel no project lists.
    pub default_project: String,
}

/// `sources.github.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubSettings {
    /// Accept GitHub's webhooks; off: 404.
    pub enabled: bool,
    /// The webhook secret (`X-Hub-Signature-256`).
    pub webhook_secret: SecretString,
    /// A token that may comment on the repositories' issues.
    pub token: SecretString,
    /// The REST API base URL (GitHub Enterprise: `https://HOST/api/v3`).
    pub api_base_url: String,
    /// Adding this label to an issue starts a job.
    pub label: String,
}

/// `sources.gitlab.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabSettings {
    /// Accept GitLab's webhooks; off: 404.
    pub enabled: bool,
    /// The webhook's secret token (`X-Gitlab-Token`).
    pub webhook_token: SecretString,
    /// A token (`PRIVATE-TOKEN`) that may add notes to the projects' issues.
    pub token: SecretString,
    /// The REST API base URL.
    pub api_base_url: String,
    /// Adding this label to an issue starts a job.
    pub label: String,
}

/// `sources.jira.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraSettings {
    /// Accept Jira's webhooks; off: 404.
    pub enabled: bool,
    /// The webhook secret (`X-Hub-Signature`).
    pub webhook_secret: SecretString,
    /// The site (`https://your-site.atlassian.net`), for replies and links.
    pub base_url: String,
    /// The account that comments (basic auth with `api_token`).
    pub email: String,
    /// The account's API token.
    pub api_token: SecretString,
    /// Adding this label to an issue starts a job.
    pub label: String,
    /// Moving an issue into one of these statuses starts a job.
    pub statuses: Vec<String>,
}

/// `sources.replies.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplySettings {
    /// Attempts per reply before it is given up (and logged).
    pub max_attempts: u32,
    /// First retry delay, in milliseconds.
    pub backoff_base_ms: u64,
    /// Largest retry delay.
    pub backoff_max_secs: u64,
    /// Timeout of one request to a provider.
    pub timeout_secs: u64,
    /// Log lines quoted in a failure reply.
    pub log_lines: usize,
}

/// `api.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Accepted bearer tokens.
    pub tokens: Vec<SecretString>,
}

/// `dashboard.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSettings {
    /// Serve the dashboard at `/` (its assets under `/assets/`).
    pub enabled: bool,
    /// Let `GET` requests to `/v1` in without a token (jobs, logs, the event streams, the
    /// overview); actions (`POST`) always need one.
    pub public_read: bool,
}

/// `log.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Output format.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, pretty when it is.
    Auto,
    /// One JSON object per line.
    Json,
    /// Readable lines.
    Pretty,
}

impl Settings {
    /// Loads the defaults, then `file` (if any), then the environment, and validates.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    /// [`Settings::load`] with an explicit environment, for tests.
    pub fn load_from(
        file: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Settings, ConfigError> {
        let mut defaults = yaml_value(DEFAULTS_YAML, "(built-in defaults)")?;
        let mut user = Value::Object(Default::default());
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(vec![Problem {
                    key: "(file)".into(),
                    message: format!("cannot read {}: {e}", path.display()),
                }])
            })?;
            user = yaml_value(&text, &path.display().to_string())?;
            if user.is_null() {
                user = Value::Object(Default::default());
            }
        }
        merge(&mut user, env_layer(env)?);
        // A user who defines agent profiles gets exactly those, not the built-in demo one.
        if user.get("agents").is_some() {
            if let Some(obj) = defaults.as_object_mut() {
                obj.remove("agents");
            }
        }
        merge(&mut defaults, user);
        let settings = deserialize_all(defaults)?;
        let problems = settings.validate();
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError(problems))
        }
    }

    /// Every semantic problem (values that parse but cannot work).
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(Problem {
                key: key.into(),
                message,
            })
        };
        let bind = self.server.bind.parse::<SocketAddr>();
        match &bind {
            Err(e) => problem("server.bind", format!("not an address:port ({e})")),
            Ok(addr) if self.api.tokens.is_empty() && !addr.ip().is_loopback() => problem(
                "api.tokens",
                format!("no API tokens configured, which is only allowed on a loopback bind address (server.bind is {addr})"),
            ),
            Ok(_) => {}
        }
        if self.api.tokens.iter().any(|t| t.expose_secret().len() < 16) {
            problem(
                "api.tokens",
                "every token must be at least 16 characters".into(),
            );
        }
        let secret = self.server.runner_secret.expose_secret();
        if !secret.is_empty() && secret.len() < 16 {
            problem(
                "server.runner_secret",
                "must be at least 16 characters (or empty to generate one)".into(),
            );
        }
        let public_url = &self.server.public_url;
        if !(public_url.is_empty()
            || public_url.starts_with("http://")
            || public_url.starts_with("https://"))
        {
            problem(
                "server.public_url",
                "must start with http:// or https://".into(),
            );
        }
        if self.server.installation.is_empty()
            || !self
                .server
                .installation
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            || self.server.installation.len() > 63
        {
            problem(
                "server.installation",
                "must be 1-63 lowercase letters, digits or '-'".into(),
            );
        }
        if self.server.body_limit_bytes < 1024 {
            problem("server.body_limit_bytes", "must be at least 1024".into());
        }
        let url = self.redis.url.expose_secret();
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("unix://"))
        {
            problem(
                "redis.url",
                "must start with redis://, rediss:// or unix://".into(),
            );
        }
        if self.redis.timeout_secs == 0 {
            problem("redis.timeout_secs", "must be at least 1".into());
        }
        let q = &self.queue;
        for (key, value) in [
            (
                "queue.max_concurrent_jobs",
                u64::from(q.max_concurrent_jobs),
            ),
            (
                "queue.concurrency_key_limit",
                u64::from(q.concurrency_key_limit),
            ),
            ("queue.max_attempts", u64::from(q.max_attempts)),
            ("queue.backoff_base_secs", q.backoff_base_secs),
            ("queue.lease_secs", q.lease_secs),
            ("queue.heartbeat_secs", q.heartbeat_secs),
            ("queue.start_timeout_secs", q.start_timeout_secs),
            ("queue.reclaim_idle_secs", q.reclaim_idle_secs),
            ("queue.retention_secs", q.retention_secs),
            ("queue.idempotency_ttl_secs", q.idempotency_ttl_secs),
            ("queue.events_max_len", q.events_max_len),
            ("queue.claim_batch", q.claim_batch as u64),
            ("queue.tick_ms", q.tick_ms),
        ] {
            if value == 0 {
                problem(key, "must be greater than 0".into());
            }
        }
        if q.heartbeat_secs >= q.lease_secs && q.lease_secs > 0 {
            problem(
                "queue.heartbeat_secs",
                format!("must be shorter than queue.lease_secs ({})", q.lease_secs),
            );
        }
        if q.backoff_max_secs < q.backoff_base_secs {
            problem(
                "queue.backoff_max_secs",
                "must not be below queue.backoff_base_secs".into(),
            );
        }
        if self.agents.is_empty() {
            problem("agents", "at least one agent profile is needed".into());
        }
        for (name, agent) in &self.agents {
            if !valid_name(name) {
                problem(
                    &format!("agents.{name}"),
                    "names are letters, digits, '-' and '_'".into(),
                );
            }
            if agent.command.is_empty() || agent.command[0].is_empty() {
                problem(
                    &format!("agents.{name}.command"),
                    "must name a program".into(),
                );
            }
            if agent.timeout_secs == 0 {
                problem(
                    &format!("agents.{name}.timeout_secs"),
                    "must be greater than 0".into(),
                );
            }
            if !agent.memory.is_empty() {
                if let Err(e) = parse_memory(&agent.memory) {
                    problem(&format!("agents.{name}.memory"), e);
                }
            }
            if !agent.cpus.is_empty() {
                if let Err(e) = parse_cpus(&agent.cpus) {
                    problem(&format!("agents.{name}.cpus"), e);
                }
            }
            if self.spawner.kind != SpawnerKind::Process && agent.image.is_empty() {
                problem(
                    &format!("agents.{name}.image"),
                    "container spawners (docker, kubernetes) need an image for every agent profile"
                        .into(),
                );
            }
            if self.spawner.kind == SpawnerKind::Kubernetes
                && !agent.secret_env.is_empty()
                && self.spawner.kubernetes.secret_name.is_empty()
            {
                problem(
                    &format!("agents.{name}.secret_env"),
                    "the kubernetes spawner reads secrets from spawner.kubernetes.secret_name, which is not set".into(),
                );
            }
            env_names(
                &format!("agents.{name}.secret_env"),
                agent.secret_env.keys(),
                &mut problem,
            );
            for (var, key) in &agent.secret_env {
                if !spawner::secrets::valid_key(key) {
                    problem(
                        &format!("agents.{name}.secret_env.{var}"),
                        format!("{key:?} is not a secret key (letters, digits, '_', '-', '.')"),
                    );
                }
            }
            env_names(
                &format!("agents.{name}.env"),
                agent.env.keys(),
                &mut problem,
            );
        }
        let docker = &self.spawner.docker;
        if self.spawner.reconcile_secs == 0 {
            problem("spawner.reconcile_secs", "must be greater than 0".into());
        }
        if !docker.memory.is_empty() {
            if let Err(e) = parse_memory(&docker.memory) {
                problem("spawner.docker.memory", e);
            }
        }
        if !docker.cpus.is_empty() {
            if let Err(e) = parse_cpus(&docker.cpus) {
                problem("spawner.docker.cpus", e);
            }
        }
        if docker.request_timeout_secs == 0 {
            problem(
                "spawner.docker.request_timeout_secs",
                "must be greater than 0".into(),
            );
        }
        if docker.work_dir.is_empty() || !docker.work_dir.starts_with('/') || docker.work_dir == "/"
        {
            problem(
                "spawner.docker.work_dir",
                "must be an absolute path other than /".into(),
            );
        }
        if docker.user.is_empty()
            || docker.user == "0"
            || docker.user.starts_with("0:")
            || docker.user.starts_with("root")
        {
            problem(
                "spawner.docker.user",
                "must name a non-root user (uid:gid), e.g. 10001:10001".into(),
            );
        }
        if !(docker.host.is_empty()
            || docker.host.starts_with("unix://")
            || docker.host.starts_with("tcp://")
            || docker.host.starts_with("http://")
            || docker.host.starts_with("https://"))
        {
            problem(
                "spawner.docker.host",
                "must start with unix://, tcp://, http:// or https://".into(),
            );
        }
        let tls = [&docker.tls.ca, &docker.tls.cert, &docker.tls.key];
        if tls.iter().any(|f| !f.is_empty()) && tls.iter().any(|f| f.is_empty()) {
            problem(
                "spawner.docker.tls",
                "ca, cert and key are needed together".into(),
            );
        }
        reserved_labels("spawner.docker.labels", &docker.labels, &mut problem);
        let k8s = &self.spawner.kubernetes;
        for (key, value) in [
            ("memory", &k8s.memory),
            ("cpus", &k8s.cpus),
            ("cpu_request", &k8s.cpu_request),
        ] {
            if value.is_empty() {
                continue;
            }
            let parsed = if key == "memory" {
                parse_memory(value).map(|_| ())
            } else {
                parse_cpus(value).map(|_| ())
            };
            if let Err(e) = parsed {
                problem(&format!("spawner.kubernetes.{key}"), e);
            }
        }
        if let Err(e) = spawner::backend::kubernetes::parse_tolerations(&k8s.tolerations) {
            problem("spawner.kubernetes.tolerations", e);
        }
        if let Err(e) = spawner::backend::kubernetes::parse_affinity(&k8s.affinity) {
            problem("spawner.kubernetes.affinity", e);
        }
        if k8s.run_as_user <= 0 || k8s.run_as_group <= 0 {
            problem(
                "spawner.kubernetes.run_as_user",
                "agent pods run as a non-root user and group (both above 0)".into(),
            );
        }
        if k8s.pending_timeout_secs == 0 {
            problem(
                "spawner.kubernetes.pending_timeout_secs",
                "must be greater than 0".into(),
            );
        }
        if k8s.api_qps == 0 {
            problem(
                "spawner.kubernetes.api_qps",
                "must be greater than 0".into(),
            );
        }
        if !k8s.work_dir.starts_with('/') || k8s.work_dir == "/" || k8s.work_dir == "/tmp" {
            problem(
                "spawner.kubernetes.work_dir",
                "must be an absolute path other than / and /tmp".into(),
            );
        }
        if !matches!(k8s.ttl_seconds_after_finished, 1..=2_147_483_647) {
            problem(
                "spawner.kubernetes.ttl_seconds_after_finished",
                "must be between 1 and 2147483647".into(),
            );
        }
        env_names("spawner.kubernetes.env", k8s.env.keys(), &mut problem);
        reserved_labels("spawner.kubernetes.labels", &k8s.labels, &mut problem);
        self.validate_sources(&mut problem);
        for (name, project) in &self.projects {
            if !valid_name(name) {
                problem(
                    &format!("projects.{name}"),
                    "names are letters, digits, '-' and '_'".into(),
                );
            }
            if !self.agents.contains_key(&project.agent) {
                problem(
                    &format!("projects.{name}.agent"),
                    format!("no agent profile named {:?}", project.agent),
                );
            }
        }
        problems
    }

    /// The problems of `sources.*` and of the projects' source mappings.
    fn validate_sources(&self, problem: &mut impl FnMut(&str, String)) {
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
                problem(
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
            let empty_ok = url.is_empty() && !required;
            if !(empty_ok || url.starts_with("http://") || url.starts_with("https://")) {
                problem(key, "must be an http:// or https:// URL".into());
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
                problem(key, "must be a word starting with '/' (like /agent)".into());
            }
        }
        if sources.dedup_ttl_secs < 60 {
            problem("sources.dedup_ttl_secs", "must be at least 60".into());
        }
        if sources.replies.max_attempts == 0 {
            problem("sources.replies.max_attempts", "must be at least 1".into());
        }
        if sources.replies.backoff_base_ms == 0 || sources.replies.timeout_secs == 0 {
            problem(
                "sources.replies",
                "backoff_base_ms and timeout_secs must be at least 1".into(),
            );
        }
        let default_project = &sources.slack.default_project;
        if !default_project.is_empty() && !self.projects.contains_key(default_project) {
            problem(
                "sources.slack.default_project",
                format!("no project named {default_project:?}"),
            );
        }
        // Each ticket source maps to at most one project, or a ticket could start a job in two.
        let mut owners: BTreeMap<(&str, String), &str> = BTreeMap::new();
        for (name, project) in &self.projects {
            let lists = [
                ("jira_projects", &project.jira_projects),
                ("github_repos", &project.github_repos),
                ("gitlab_projects", &project.gitlab_projects),
                ("slack_channels", &project.slack_channels),
            ];
            for (list, values) in lists {
                for value in values {
                    if value.trim().is_empty() {
                        problem(&format!("projects.{name}.{list}"), "empty entry".into());
                    } else if let Some(other) =
                        owners.insert((list, value.to_ascii_lowercase()), name)
                    {
                        problem(
                            &format!("projects.{name}.{list}"),
                            format!("{value:?} is also listed by project {other:?}"),
                        );
                    }
                }
            }
        }
    }

    /// The listen address (validated at load).
    pub fn bind_addr(&self) -> SocketAddr {
        self.server
            .bind
            .parse()
            .expect("server.bind is validated at load")
    }

    /// The runner binary for the process backend.
    pub fn runner_path(&self) -> PathBuf {
        if !self.spawner.process.runner_path.is_empty() {
            return PathBuf::from(&self.spawner.process.runner_path);
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("agent-runner")))
            .unwrap_or_else(|| PathBuf::from("agent-runner"))
    }

    /// The work root of the process backend.
    pub fn work_root(&self) -> PathBuf {
        if self.spawner.process.work_root.is_empty() {
            std::env::temp_dir().join("agentsmith")
        } else {
            PathBuf::from(&self.spawner.process.work_root)
        }
    }

    /// The secret source of the process and docker backends.
    pub fn secret_source(&self) -> spawner::secrets::SecretSource {
        spawner::secrets::SecretSource::new(
            Some(&self.spawner.secrets_dir)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
        )
    }

    /// Shorthand for a duration in seconds.
    pub fn secs(value: u64) -> Duration {
        Duration::from_secs(value)
    }
}

/// Environment variable names under `key`: not empty, no `=`, not `AGENTSMITH_*`.
fn env_names<'a>(
    key: &str,
    names: impl Iterator<Item = &'a String>,
    problem: &mut impl FnMut(&str, String),
) {
    for name in names {
        if name.is_empty() || name.contains('=') || name.starts_with("AGENTSMITH_") {
            problem(
                &format!("{key}.{name}"),
                "invalid name (AGENTSMITH_* is reserved)".into(),
            );
        }
    }
}

/// Extra labels under `key` must not be the ones agentsmith sets itself.
fn reserved_labels(
    key: &str,
    labels: &BTreeMap<String, String>,
    problem: &mut impl FnMut(&str, String),
) {
    for (label, value) in labels {
        if label.starts_with("agentsmith.io/") || label == spawner::contract::labels::MANAGED_BY {
            problem(
                &format!("{key}.{label}"),
                format!("{value:?}: this label is set by agentsmith itself"),
            );
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn yaml_value(text: &str, origin: &str) -> Result<Value, ConfigError> {
    serde_yaml::from_str::<Value>(text).map_err(|e| {
        ConfigError(vec![Problem {
            key: "(file)".into(),
            message: format!("{origin} is not valid YAML: {e}"),
        }])
    })
}

/// The `AGENTSMITH__SECTION__KEY` variables as a nested value, read through the `config`
/// crate so its parsing rules (numbers, booleans, `,`-separated lists) apply.
fn env_layer(env: &[(String, String)]) -> Result<Value, ConfigError> {
    let source: config::Map<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("AGENTSMITH__"))
        .cloned()
        .collect();
    let built = config::Config::builder()
        .add_source(
            config::Environment::with_prefix("AGENTSMITH")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("api.tokens")
                .source(Some(source)),
        )
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .map_err(|e| {
            ConfigError(vec![Problem {
                key: "(environment)".into(),
                message: e.to_string(),
            }])
        })?;
    Ok(built)
}

/// Lays `over` onto `base`: objects merge key by key, anything else replaces.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

/// Deserializes, collecting every structural problem: each error's key is removed and the
/// rest tried again, so one run reports all unknown keys and wrong types.
fn deserialize_all(mut value: Value) -> Result<Settings, ConfigError> {
    let mut problems = Vec::new();
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, Settings>(&value) {
            Ok(settings) if problems.is_empty() => return Ok(settings),
            Ok(_) => break,
            Err(err) => {
                let path = err.path().to_string();
                let inner = err.into_inner().to_string();
                let (key, message, removable) = describe(&path, &inner);
                problems.push(Problem {
                    key: key.clone(),
                    message,
                });
                if !removable || !remove_key(&mut value, &key) {
                    break;
                }
            }
        }
    }
    Err(ConfigError(problems))
}

/// Turns a serde error at `path` into (key, message, whether removing the key may let the
/// rest parse).
fn describe(path: &str, inner: &str) -> (String, String, bool) {
    let parent = if path == "." {
        String::new()
    } else {
        path.to_string()
    };
    if let Some(rest) = inner.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        // serde_path_to_error's path already ends with the unknown field.
        let key = if parent == field || parent.ends_with(&format!(".{field}")) {
            parent.clone()
        } else {
            join(&parent, field)
        };
        let expected = rest
            .split_once(", expected ")
            .map(|(_, e)| format!(" (expected {e})"))
            .unwrap_or_default();
        return (key, format!("unknown key{expected}"), true);
    }
    if let Some(rest) = inner.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return (
            join(&parent, field),
            "required key is missing".into(),
            false,
        );
    }
    (
        if parent.is_empty() {
            "(root)".into()
        } else {
            parent
        },
        inner.to_string(),
        true,
    )
}

fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

fn remove_key(value: &mut Value, key: &str) -> bool {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else {
        return false;
    };
    let mut node = value;
    for part in parts {
        match node.get_mut(part) {
            Some(next) => node = next,
            None => return false,
        }
    }
    node.as_object_mut().and_then(|o| o.remove(last)).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_yaml(yaml: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir =
            std::env::temp_dir().join(format!("agentsmith-settings-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agentsmith.yml");
        std::fs::write(&path, yaml).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let result = Settings::load_from(Some(&path), &env);
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    #[test]
    fn built_in_defaults_load_and_validate() {
        let settings = Settings::load_from(None, &[]).unwrap();
        assert_eq!(settings.queue.max_attempts, 3);
        assert_eq!(settings.queue.retention_secs, 7 * 24 * 3600);
        assert!(settings.agents.contains_key("echo"));
    }

    #[test]
    fn unknown_keys_are_errors_that_name_every_key() {
        let err = load_yaml(
            "queue:\n  max_attemps: 4\nserver:\n  bnd: x\nnonsense: 1\n",
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"queue.max_attemps"), "{keys:?}");
        assert!(keys.contains(&"server.bnd"), "{keys:?}");
        assert!(keys.contains(&"nonsense"), "{keys:?}");
        assert!(err.to_string().contains("unknown key"), "{err}");
    }

    #[test]
    fn wrong_types_and_bad_values_name_their_keys() {
        let err = load_yaml("queue:\n  max_attempts: many\n  lease_secs: 0\n", &[]).unwrap_err();
        assert!(err.0.iter().any(|p| p.key == "queue.max_attempts"), "{err}");
        let err = load_yaml(
            "queue:\n  lease_secs: 0\nprojects:\n  p:\n    agent: nope\n",
            &[],
        )
        .unwrap_err();
        assert!(err.0.iter().any(|p| p.key == "queue.lease_secs"), "{err}");
        assert!(err.0.iter().any(|p| p.key == "projects.p.agent"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let settings = load_yaml(
            "queue:\n  max_concurrent_jobs: 3\n",
            &[
                ("AGENTSMITH__QUEUE__MAX_CONCURRENT_JOBS", "7"),
                ("AGENTSMITH__REDIS__PREFIX", "x:"),
            ],
        )
        .unwrap();
        assert_eq!(settings.queue.max_concurrent_jobs, 7);
        assert_eq!(settings.redis.prefix, "x:");
    }

    #[test]
    fn user_agents_replace_the_built_in_ones_and_keep_case() {
        let settings = load_yaml(
            "agents:\n  mine:\n    command: [\"true\"]\n    env:\n      MY_VAR: One\n",
            &[],
        )
        .unwrap();
        assert!(!settings.agents.contains_key("echo"));
        assert_eq!(settings.agents["mine"].env["MY_VAR"], "One");
    }

    #[test]
    fn open_api_is_refused_on_a_public_address() {
        let err = load_yaml("server:\n  bind: \"0.0.0.0:8080\"\n", &[]).unwrap_err();
        assert!(err.0.iter().any(|p| p.key == "api.tokens"), "{err}");
        load_yaml(
            "server:\n  bind: \"0.0.0.0:8080\"\napi:\n  tokens: [\"0123456789abcdef\"]\n",
            &[],
        )
        .unwrap();
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let settings = load_yaml(
            "server:\n  runner_secret: \"super-secret-value-1\"\napi:\n  tokens: [\"super-secret-token-2\"]\nredis:\n  url: \"redis://:pw-secret-3@127.0.0.1:6379\"\n",
            &[],
        )
        .unwrap();
        let debug = format!("{settings:?}");
        for secret in [
            "super-secret-value-1",
            "super-secret-token-2",
            "pw-secret-3",
        ] {
            assert!(!debug.contains(secret), "{secret} leaked");
        }
    }

    #[test]
    fn an_enabled_source_without_its_secret_is_refused_by_name() {
        let err = load_yaml(
            "sources:\n  slack:\n    enabled: true\n  github:\n    enabled: true\n    webhook_secret: \"  \"\n  jira:\n    enabled: true\n    webhook_secret: s3cret\n",
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"sources.slack.signing_secret"), "{err}");
        assert!(keys.contains(&"sources.github.webhook_secret"), "{err}");
        assert!(keys.contains(&"sources.jira.base_url"), "{err}");
        assert!(
            !keys.iter().any(|k| k.starts_with("sources.gitlab")),
            "{err}"
        );
        // The secret may come from the environment, as the chart gives it.
        let settings = load_yaml(
            "sources:\n  slack:\n    enabled: true\n",
            &[(
                "AGENTSMITH__SOURCES__SLACK__SIGNING_SECRET",
                "env-signing-secret-1",
            )],
        )
        .unwrap();
        assert_eq!(
            settings.sources.slack.signing_secret.expose_secret(),
            "env-signing-secret-1"
        );
        assert!(!format!("{settings:?}").contains("env-signing-secret-1"));
    }

    #[test]
    fn a_ticket_source_listed_by_two_projects_is_refused() {
        let err = load_yaml(
            "projects:\n  a:\n    agent: echo\n    jira_projects: [PAY]\n  b:\n    agent: echo\n    jira_projects: [pay]\nsources:\n  slack:\n    default_project: nope\n",
            &[],
        )
        .unwrap_err();
        assert!(
            err.0.iter().any(|p| p.key == "projects.b.jira_projects"
                && p.message.contains("also listed by project \"a\"")),
            "{err}"
        );
        assert!(
            err.0
                .iter()
                .any(|p| p.key == "sources.slack.default_project"),
            "{err}"
        );
    }

    #[test]
    fn quantities_parse_like_kubernetes_writes_them() {
        assert_eq!(parse_memory("512Mi"), Ok(512 << 20));
        assert_eq!(parse_memory("2Gi"), Ok(2 << 30));
        assert_eq!(parse_memory("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_memory("65536"), Ok(65536));
        assert!(parse_memory("12 apples")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_memory("Mi").is_err());
        assert_eq!(parse_cpus("2"), Ok(2000));
        assert_eq!(parse_cpus("0.5"), Ok(500));
        assert_eq!(parse_cpus("250m"), Ok(250));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("lots").is_err());
    }

    #[test]
    fn docker_settings_are_checked_and_named() {
        let yaml = r#"
spawner:
  type: docker
  docker:
    user: "0:0"
    memory: "2 GB"
    pull_policy: Never
    labels:
      agentsmith.io/job-id: "x"
agents:
  noimage:
    command: ["true"]
    cpus: "many"
"#;
        let problems = load_yaml(yaml, &[]).unwrap_err().0;
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "spawner.docker.user",
            "spawner.docker.memory",
            "spawner.docker.labels.agentsmith.io/job-id",
            "agents.noimage.image",
            "agents.noimage.cpus",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        let wrong_policy = "spawner:\n  docker:\n    pull_policy: Sometimes\n";
        let problems = load_yaml(wrong_policy, &[]).unwrap_err().0;
        assert_eq!(
            problems[0].key, "spawner.docker.pull_policy",
            "{problems:?}"
        );
    }
}
