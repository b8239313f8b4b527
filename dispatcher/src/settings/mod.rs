//! The settings: built-in defaults (`config/agentsmith.example.yml`, compiled in), then the
//! user's file, then `AGENTSMITH__SECTION__KEY` environment variables; validated with errors
//! that name the key.
//!
//! | module | what |
//! |---|---|
//! | this file | [`Settings`], [`Settings::load`], [`Problem`] and [`ConfigError`] |
//! | `layers` | reading and merging the layers; unknown keys and wrong types, by key |
//! | `validate` | values that parse but cannot work, by key ([`Settings::validate`]) |
//! | [`server`] | `server`, `api`, `dashboard`, `log` |
//! | [`agents`] | `agents` (profiles) and `projects` |
//! | [`sources`] | `sources` (the webhook sources and the reply outbox) |
//!
//! The `redis` and `queue` sections are declared by the `queue` crate, `spawner` by the
//! `spawner` crate, each beside the code that uses them, and each checks its own values.

pub mod agents;
#[cfg(test)]
mod kits;
mod layers;
pub mod server;
pub mod sources;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

pub use agents::{AgentSettings, CheckoutSettings, ProjectSettings, TriggerSettings};
pub use server::{ApiSettings, DashboardSettings, LogFormat, LogSettings, ServerSettings};
pub use sources::{
    GithubSettings, GitlabSettings, JiraSettings, ReplySettings, SlackSettings, SourcesSettings,
};
pub use validate::is_ssh_url;

use layers::{deserialize_all, env_layer, env_texts, merge, yaml_value};

/// The built-in defaults, which are also the documented example.
pub const DEFAULTS_YAML: &str = include_str!("../../../config/agentsmith.example.yml");

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
    pub redis: queue::RedisSettings,
    /// Limits, retries, leases and retention.
    pub queue: queue::QueueSettings,
    /// The backend that runs agent workloads: the target named `default`.
    pub spawner: spawner::SpawnerSettings,
    /// More spawner targets, by name.
    pub spawners: BTreeMap<String, spawner::SpawnerSettings>,
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
        let builtin = yaml_value(DEFAULTS_YAML, "(built-in defaults)")?;
        let mut defaults = builtin.clone();
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
        // Each named target starts from the built-in spawner section.
        if let (Some(base), Some(Value::Object(targets))) =
            (builtin.get("spawner"), defaults.get_mut("spawners"))
        {
            for target in targets.values_mut() {
                let mut full = base.clone();
                merge(&mut full, std::mem::take(target));
                *target = full;
            }
        }
        let (settings, mut problems) = deserialize_all(defaults, &builtin, &env_texts(env));
        if let Some(settings) = &settings {
            problems.extend(settings.validate());
        }
        match settings {
            Some(settings) if problems.is_empty() => Ok(settings),
            _ => Err(ConfigError(problems)),
        }
    }

    /// The listen address (validated at load).
    pub fn bind_addr(&self) -> SocketAddr {
        self.server
            .bind
            .parse()
            .expect("server.bind is validated at load")
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

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
        assert_eq!(settings.queue.deliveries_max_len, 10_000);
        assert!(settings.agents.contains_key("echo"));
    }

    #[test]
    fn the_delivery_journal_cap_is_set_by_its_key_and_a_misspelt_one_is_refused() {
        let settings = load_yaml("queue:\n  deliveries_max_len: 0\n", &[]).unwrap();
        assert_eq!(settings.queue.deliveries_max_len, 0, "0 keeps no journal");
        let err = load_yaml("queue:\n  deliveries_max: 10\n", &[]).unwrap_err();
        assert!(
            err.0.iter().any(|p| p.key == "queue.deliveries_max"),
            "{err}"
        );
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
    fn a_profiles_pod_shape_is_read_strictly_and_must_name_a_profile() {
        let shaped = "spawner:\n  kubernetes:\n    profiles:\n      echo:\n        \
                      priority_class_name: low\n        volumes:\n          - name: cache\n            \
                      persistentVolumeClaim: {claimName: c}\n";
        let settings = load_yaml(shaped, &[]).unwrap();
        let shape = &settings.spawner.kubernetes.profiles["echo"];
        assert_eq!(shape.priority_class_name, "low");
        assert_eq!(shape.volumes[0].name, "cache");

        let misspelt = shaped.replace("claimName", "claim");
        let err = load_yaml(&misspelt, &[]).unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|p| p.key.starts_with("spawner.kubernetes.profiles")),
            "{err}"
        );
        assert!(err.to_string().contains("claim"), "{err}");

        let err = load_yaml(&shaped.replace("echo:", "ehco:"), &[]).unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|p| p.key == "spawner.kubernetes.profiles.ehco"
                    && p.message.contains("names no agent profile")),
            "{err}"
        );
        let err = load_yaml(&shaped.replace("name: cache", "name: work"), &[]).unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|p| p.key == "spawner.kubernetes.profiles.echo.volumes"),
            "{err}"
        );
    }

    #[test]
    fn named_targets_start_from_the_built_in_spawner_and_routes_must_name_them() {
        let yaml = "spawners:\n  gpu-eu:\n    type: docker\n    max_concurrent_jobs: 2\n    \
                    docker:\n      network: host\n  spare:\n    process:\n      keep_finished_secs: 5\n\
                    agents:\n  echo:\n    command: [\"true\"]\n    image: agent:1\n    \
                    targets: [gpu-eu, default]\n    overflow: wait\n\
                    projects:\n  p:\n    agent: echo\n    targets: [spare]\n";
        let settings = load_yaml(yaml, &[]).unwrap();
        let gpu = &settings.spawners["gpu-eu"];
        assert_eq!(gpu.kind, spawner::SpawnerKind::Docker);
        assert_eq!(gpu.max_concurrent_jobs, 2);
        assert_eq!(gpu.docker.network, "host");
        // Unset keys take the built-in defaults.
        assert_eq!(gpu.docker.user, "10001:10001");
        assert_eq!(gpu.probe_secs, 10);
        assert_eq!(
            settings.spawners["spare"].kind,
            spawner::SpawnerKind::Process
        );
        assert_eq!(settings.spawners["spare"].process.keep_finished_secs, 5);
        let echo = &settings.agents["echo"];
        assert_eq!(echo.targets, ["gpu-eu", "default"]);
        assert_eq!(echo.overflow, agents::Overflow::Wait);
        assert_eq!(settings.projects["p"].targets, ["spare"]);

        let problems = |yaml: &str| load_yaml(yaml, &[]).unwrap_err().0;
        let has = |found: &[Problem], key: &str, part: &str| {
            found
                .iter()
                .any(|p| p.key == key && p.message.contains(part))
        };
        let found = problems(&yaml.replace("[gpu-eu, default]", "[gpu-us]"));
        assert!(
            has(&found, "agents.echo.targets[0]", "names no target"),
            "{found:?}"
        );
        let found = problems(&yaml.replace("[spare]", "[spare, spare]"));
        assert!(
            has(&found, "projects.p.targets[1]", "listed twice"),
            "{found:?}"
        );
        let found = problems(&yaml.replace("  spare:", "  default:"));
        assert!(
            has(&found, "spawners.default", "spawner section"),
            "{found:?}"
        );
        let found = problems(&yaml.replace("  spare:", "  Spare_1:"));
        assert!(has(&found, "spawners.Spare_1", "lowercase"), "{found:?}");
        let found = problems(&yaml.replace("network: host", "netwrok: host"));
        assert!(
            found
                .iter()
                .any(|p| p.key == "spawners.gpu-eu.docker.netwrok"),
            "{found:?}"
        );
        let found = problems(&yaml.replace("max_concurrent_jobs: 2", "probe_secs: 0"));
        assert!(
            has(&found, "spawners.gpu-eu.probe_secs", "greater than 0"),
            "{found:?}"
        );
        let found = problems(&yaml.replace("overflow: wait", "overflow: later"));
        assert!(
            found.iter().any(|p| p.key == "agents.echo.overflow"),
            "{found:?}"
        );
        // A profile that may run in a container needs an image.
        let found = problems(&yaml.replace("    image: agent:1\n", ""));
        assert!(
            has(&found, "agents.echo.image", "need an image"),
            "{found:?}"
        );
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
    fn sentinel_settings_are_checked_by_key_and_nodes_come_as_a_list_from_the_environment() {
        let err = load_yaml(
            "redis:\n  sentinel:\n    nodes: [\"redis://10.0.0.1:26379\"]\n    master: x\n",
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"redis.sentinel.master"), "{err}");
        assert!(keys.contains(&"redis.sentinel.master_name"), "{err}");
        let settings = load_yaml(
            "redis:\n  sentinel:\n    master_name: mymaster\n  min_replicas_acked: 1\n",
            &[(
                "AGENTSMITH__REDIS__SENTINEL__NODES",
                "redis://10.0.0.1:26379,redis://10.0.0.2:26379",
            )],
        )
        .unwrap();
        assert_eq!(settings.redis.sentinel.nodes.len(), 2);
        assert_eq!(settings.redis.min_replicas_acked, 1);
    }

    #[test]
    fn text_settings_from_the_environment_keep_text_that_looks_like_a_number_or_a_boolean() {
        let settings = load_yaml(
            "redis:\n  prefix: \"{agentsmith}:\"\n",
            &[
                (
                    "AGENTSMITH__REDIS__SENTINEL__NODES",
                    "redis://10.0.0.1:26379",
                ),
                ("AGENTSMITH__REDIS__SENTINEL__MASTER_NAME", "12"),
                ("AGENTSMITH__REDIS__SENTINEL__USERNAME", "true"),
                ("AGENTSMITH__REDIS__SENTINEL__PASSWORD", "00123456"),
                (
                    "AGENTSMITH__API__TOKENS",
                    "0123456789012345678901234567890123,abcdefabcdefabcdefabcdefabcdef12",
                ),
                ("AGENTSMITH__QUEUE__MAX_CONCURRENT_JOBS", "7"),
            ],
        )
        .unwrap();
        let sentinel = &settings.redis.sentinel;
        assert_eq!(sentinel.master_name, "12");
        assert_eq!(sentinel.username, "true");
        assert_eq!(sentinel.password.expose_secret(), "00123456");
        let tokens: Vec<&str> = settings
            .api
            .tokens
            .iter()
            .map(|t| t.expose_secret())
            .collect();
        assert_eq!(
            tokens,
            [
                "0123456789012345678901234567890123",
                "abcdefabcdefabcdefabcdefabcdef12"
            ]
        );
        // Numbers stay numbers where the setting is one.
        assert_eq!(settings.queue.max_concurrent_jobs, 7);

        let cluster = load_yaml(
            "redis:\n  prefix: \"{agentsmith}:\"\n",
            &[("AGENTSMITH__REDIS__CLUSTER", "true")],
        )
        .unwrap();
        assert!(cluster.redis.cluster);
        let err = load_yaml("redis:\n  cluster: true\n", &[]).unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|p| p.key == "redis.prefix" && p.message.contains("hash tag")),
            "{err}"
        );
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
