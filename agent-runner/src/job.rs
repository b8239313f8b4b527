//! The job the runner was handed: read once from the environment into a [`Job`].
//!
//! The variable names are the constants of [`contract::env`]. A missing or
//! unusable variable is an [`Error::MissingVar`] or [`Error::InvalidVar`] naming it; the
//! credential's value never appears in an error or in `Debug` output.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use contract::{env, Intent};
use reqwest::Url;

use crate::ca::ExtraCa;
use crate::error::{Error, Result};
use crate::workspace::Workspace;

/// The longest time limit, heartbeat period or grace period the runner accepts (a year):
/// anything larger is a mistake, and would overflow a deadline.
const MAX_SECS: u64 = 365 * 24 * 60 * 60;

/// A secret for the dispatcher's runner routes: the attempt's one-time credential, or the
/// token it is exchanged for. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The token's value, for the `Authorization` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([redacted])")
    }
}

/// One attempt of one job, as the spawner described it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job id.
    pub job_id: String,
    /// The attempt number, starting at 1.
    pub attempt: u32,
    /// What the requester wants done.
    pub intent: Intent,
    /// The intent exactly as the spawner sent it, fields this runner does not know
    /// included, for the agent's intent file.
    pub intent_json: serde_json::Value,
    /// The agent command (argv, never run through a shell).
    pub command: Vec<String>,
    /// Where events are posted.
    pub callback_url: Url,
    /// The attempt's one-time credential, exchanged for the token of those posts
    /// ([`crate::credential`]).
    pub credential: Token,
    /// The agent's time limit.
    pub timeout: Duration,
    /// Time between heartbeats.
    pub heartbeat: Duration,
    /// Time between SIGTERM and SIGKILL when the agent is stopped.
    pub grace: Duration,
    /// The directory the agent runs in (absolute).
    pub workdir: PathBuf,
    /// Extra CA certificates the spawner mounted, joined with the public roots.
    pub extra_ca: Option<ExtraCa>,
}

impl Job {
    /// Reads the job from the runner's environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// Reads the job from `lookup`, which returns the value of an environment variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self> {
        let vars = Vars(lookup);
        let job_id = vars.required(env::JOB_ID)?;
        let attempt: u32 = vars.number(env::ATTEMPT)?;
        if attempt == 0 {
            return Err(invalid(env::ATTEMPT, "attempts start at 1"));
        }

        let intent_json: serde_json::Value = serde_json::from_str(&vars.required(env::INTENT)?)
            .map_err(|e| invalid(env::INTENT, format!("not JSON: {e}")))?;
        let intent: Intent = serde_json::from_value(intent_json.clone())
            .map_err(|e| invalid(env::INTENT, format!("not an intent: {e}")))?;

        let command: Vec<String> = serde_json::from_str(&vars.required(env::COMMAND)?)
            .map_err(|e| invalid(env::COMMAND, format!("not a JSON array of strings: {e}")))?;
        match command.first() {
            None => return Err(invalid(env::COMMAND, "the command is empty")),
            Some(program) if program.is_empty() => {
                return Err(invalid(env::COMMAND, "the program name is empty"))
            }
            Some(_) => {}
        }

        let callback_url = Url::parse(&vars.required(env::CALLBACK_URL)?)
            .map_err(|e| invalid(env::CALLBACK_URL, format!("not a URL: {e}")))?;
        if !matches!(callback_url.scheme(), "http" | "https") {
            // Failing here is clearer than retrying forever.
            return Err(invalid(
                env::CALLBACK_URL,
                format!(
                    "the scheme is {:?}; agent-runner speaks http and https",
                    callback_url.scheme()
                ),
            ));
        }
        let credential = Token::new(vars.required(env::JOB_CREDENTIAL)?);

        let timeout = vars.seconds(env::TIMEOUT_SECS)?;
        if timeout.is_zero() {
            return Err(invalid(env::TIMEOUT_SECS, "must be at least 1"));
        }
        let heartbeat = vars.seconds(env::HEARTBEAT_SECS)?;
        if heartbeat.is_zero() {
            return Err(invalid(env::HEARTBEAT_SECS, "must be at least 1"));
        }
        let grace = vars.seconds(env::GRACE_SECS)?;

        let workdir = match vars.optional(env::WORKDIR)? {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from("."),
        };
        let workdir = std::path::absolute(&workdir)
            .map_err(|e| invalid(env::WORKDIR, format!("cannot make it absolute: {e}")))?;

        let public_roots = vars
            .optional("SSL_CERT_FILE")
            .ok()
            .flatten()
            .map(PathBuf::from);
        let extra_ca = vars
            .optional(env::EXTRA_CA_FILE)?
            .map(|path| ExtraCa::read(Path::new(&path), public_roots.as_deref()))
            .transpose()
            .map_err(|e| invalid(env::EXTRA_CA_FILE, e))?;

        Ok(Self {
            job_id,
            attempt,
            intent,
            intent_json,
            command,
            callback_url,
            credential,
            timeout,
            heartbeat,
            grace,
            workdir,
            extra_ca,
        })
    }

    /// The environment changes for the agent: `Some(value)` sets a variable, `None`
    /// removes one it would otherwise inherit from the runner. The credential and the callback
    /// URL are always removed: the agent never speaks for the job. The runner's own
    /// directory comes first on the agent's `PATH`, so that `agent-runner ask` and `say`
    /// are found wherever the runner was started from.
    pub fn agent_env(&self, workspace: &Workspace) -> Vec<(&'static str, Option<String>)> {
        let path = |p: PathBuf| Some(p.to_string_lossy().into_owned());
        vec![
            (env::JOB_CREDENTIAL, None),
            (env::CALLBACK_URL, None),
            (env::JOB_ID, Some(self.job_id.clone())),
            (env::ATTEMPT, Some(self.attempt.to_string())),
            (env::TASK, Some(self.intent.task.clone())),
            (env::PROJECT, self.intent.project.clone()),
            (env::TICKET, self.intent.ticket.clone()),
            (env::REPO, self.intent.repo.clone()),
            (env::TITLE, self.intent.title.clone()),
            (env::DESCRIPTION, self.intent.description.clone()),
            (env::REQUESTER, self.intent.requester.clone()),
            (env::URL, self.intent.url.clone()),
            (
                env::PREVIOUS_JOB,
                self.intent.previous.as_ref().map(|p| p.job_id.clone()),
            ),
            (
                env::PREVIOUS_SUMMARY,
                self.intent
                    .previous
                    .as_ref()
                    .and_then(|p| p.summary.clone()),
            ),
            (
                env::SOURCE,
                Some(self.intent.source.clone().unwrap_or_else(|| "api".into())),
            ),
            (env::INTENT_FILE, path(workspace.intent_file())),
            (env::RESULT_FILE, path(workspace.result_file())),
            (env::NOTES_FILE, path(workspace.notes_file())),
            (env::ASK_DIR, path(workspace.ask_dir())),
            (env::SAY_DIR, path(workspace.say_dir())),
            (env::INBOX_DIR, path(workspace.inbox_dir())),
        ]
        .into_iter()
        .chain(
            search_path(
                std::env::current_exe().ok().as_deref(),
                std::env::var_os("PATH").as_deref(),
            )
            .map(|path| ("PATH", Some(path))),
        )
        .chain(
            self.extra_ca
                .iter()
                .flat_map(|ca| ca.agent_env(&workspace.ca_file())),
        )
        .collect()
    }
}

/// The agent's `PATH`: the directory of `runner` (the runner's executable) first, then
/// `inherited` (or the usual system directories when there is none). `None` when the
/// runner's directory cannot be put on a `PATH` (unknown, or with a `:` in it): the agent
/// inherits the runner's as it is.
fn search_path(runner: Option<&Path>, inherited: Option<&std::ffi::OsStr>) -> Option<String> {
    let dir = runner?.parent()?.to_str()?;
    if dir.is_empty() || dir.contains(':') {
        return None;
    }
    let rest = inherited
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    if rest.split(':').next() == Some(dir) {
        return Some(rest);
    }
    Some(format!("{dir}:{rest}"))
}

fn invalid(name: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidVar {
        name,
        reason: reason.into(),
    }
}

/// Typed access to environment variables, each error naming its variable.
struct Vars<F>(F);

impl<F: Fn(&str) -> Option<OsString>> Vars<F> {
    /// The variable's value; `None` when it is unset. Set but empty is invalid.
    fn optional(&self, name: &'static str) -> Result<Option<String>> {
        let Some(value) = (self.0)(name) else {
            return Ok(None);
        };
        let value = value
            .into_string()
            .map_err(|_| invalid(name, "not valid UTF-8"))?;
        if value.is_empty() {
            return Err(invalid(name, "it is empty"));
        }
        Ok(Some(value))
    }

    fn required(&self, name: &'static str) -> Result<String> {
        self.optional(name)?.ok_or(Error::MissingVar { name })
    }

    fn number<T: std::str::FromStr>(&self, name: &'static str) -> Result<T>
    where
        T::Err: fmt::Display,
    {
        let text = self.required(name)?;
        text.trim()
            .parse()
            .map_err(|e| invalid(name, format!("{text:?} is not a whole number: {e}")))
    }

    fn seconds(&self, name: &'static str) -> Result<Duration> {
        let secs: u64 = self.number(name)?;
        if secs > MAX_SECS {
            return Err(invalid(name, format!("must be at most {MAX_SECS}")));
        }
        Ok(Duration::from_secs(secs))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn complete_env() -> HashMap<&'static str, String> {
        HashMap::from([
            (env::JOB_ID, "job1".to_string()),
            (env::ATTEMPT, "2".to_string()),
            (
                env::INTENT,
                r#"{"task":"fix PROJ-1","ticket":"PROJ-1","later":true}"#.to_string(),
            ),
            (env::COMMAND, r#"["sh","-c","true"]"#.to_string()),
            (
                env::CALLBACK_URL,
                "http://127.0.0.1:9/internal/jobs/job1/events".to_string(),
            ),
            (env::JOB_CREDENTIAL, "sekrit-token".to_string()),
            (env::TIMEOUT_SECS, "60".to_string()),
            (env::HEARTBEAT_SECS, "5".to_string()),
            (env::GRACE_SECS, "0".to_string()),
            (env::WORKDIR, "/tmp/agentsmith-job1".to_string()),
        ])
    }

    fn parse(vars: &HashMap<&'static str, String>) -> Result<Job> {
        Job::from_lookup(|name| vars.get(name).map(OsString::from))
    }

    #[test]
    fn a_complete_environment_is_read_into_a_job() {
        let job = parse(&complete_env()).unwrap();
        assert_eq!(job.job_id, "job1");
        assert_eq!(job.attempt, 2);
        assert_eq!(job.intent.task, "fix PROJ-1");
        assert_eq!(job.intent.ticket.as_deref(), Some("PROJ-1"));
        assert_eq!(job.intent_json["later"], serde_json::json!(true));
        assert_eq!(job.command, ["sh", "-c", "true"]);
        assert_eq!(job.credential.expose(), "sekrit-token");
        assert_eq!(job.timeout, Duration::from_secs(60));
        assert_eq!(job.grace, Duration::ZERO);
        assert_eq!(job.workdir, PathBuf::from("/tmp/agentsmith-job1"));
    }

    #[test]
    fn each_missing_required_variable_is_named() {
        for name in [
            env::JOB_ID,
            env::ATTEMPT,
            env::INTENT,
            env::COMMAND,
            env::CALLBACK_URL,
            env::JOB_CREDENTIAL,
            env::TIMEOUT_SECS,
            env::HEARTBEAT_SECS,
            env::GRACE_SECS,
        ] {
            let mut vars = complete_env();
            vars.remove(name);
            let err = parse(&vars).unwrap_err();
            assert!(
                matches!(err, Error::MissingVar { name: n } if n == name),
                "{err}"
            );
            assert!(err.to_string().contains(name));
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn invalid_values_are_rejected_naming_the_variable() {
        let cases = [
            (env::ATTEMPT, "zero"),
            (env::ATTEMPT, "0"),
            (env::INTENT, "{not json"),
            (env::INTENT, r#"{"no_task":1}"#),
            (env::COMMAND, "sh -c true"),
            (env::COMMAND, "[]"),
            (env::COMMAND, r#"[""]"#),
            (env::CALLBACK_URL, "not a url"),
            (
                env::CALLBACK_URL,
                "ftp://dispatcher/internal/jobs/job1/events",
            ),
            (env::TIMEOUT_SECS, "0"),
            (env::TIMEOUT_SECS, "-5"),
            (env::HEARTBEAT_SECS, "0"),
            (env::GRACE_SECS, "99999999999"),
            (env::WORKDIR, ""),
        ];
        for (name, value) in cases {
            let mut vars = complete_env();
            vars.insert(name, value.to_string());
            let err = parse(&vars).unwrap_err();
            assert!(
                matches!(err, Error::InvalidVar { name: n, .. } if n == name),
                "{name}={value}: {err}"
            );
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn the_work_directory_defaults_to_the_current_directory() {
        let mut vars = complete_env();
        vars.remove(env::WORKDIR);
        let job = parse(&vars).unwrap();
        assert_eq!(job.workdir, std::env::current_dir().unwrap());
    }

    #[test]
    fn job_debug_never_shows_the_token() {
        let job = parse(&complete_env()).unwrap();
        let text = format!("{job:?}");
        assert!(!text.contains("sekrit"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }

    #[test]
    fn agent_env_removes_the_token_and_callback_and_exposes_the_intent() {
        let job = parse(&complete_env()).unwrap();
        let workspace = Workspace::new(job.workdir.clone());
        let vars: HashMap<_, _> = job.agent_env(&workspace).into_iter().collect();
        assert_eq!(vars[env::JOB_CREDENTIAL], None);
        assert_eq!(vars[env::CALLBACK_URL], None);
        assert_eq!(vars[env::TASK].as_deref(), Some("fix PROJ-1"));
        assert_eq!(vars[env::TICKET].as_deref(), Some("PROJ-1"));
        assert_eq!(vars[env::PROJECT], None);
        assert_eq!(vars[env::ATTEMPT].as_deref(), Some("2"));
        let result_file = vars[env::RESULT_FILE].as_deref().unwrap();
        assert!(
            result_file.starts_with("/tmp/agentsmith-job1/"),
            "{result_file}"
        );
        assert!(!vars.values().flatten().any(|v| v.contains("sekrit")));
        assert_eq!(vars[env::SOURCE].as_deref(), Some("api"));
        assert_eq!(vars[env::TITLE], None);
        assert_eq!(
            vars[env::ASK_DIR].as_deref(),
            Some("/tmp/agentsmith-job1/.agentsmith/ask")
        );
        assert_eq!(
            vars[env::SAY_DIR].as_deref(),
            Some("/tmp/agentsmith-job1/.agentsmith/say")
        );
        assert_eq!(
            vars[env::INBOX_DIR].as_deref(),
            Some("/tmp/agentsmith-job1/.agentsmith/inbox")
        );
        let runner_dir = std::env::current_exe().unwrap();
        let runner_dir = runner_dir.parent().unwrap().to_str().unwrap();
        let path = vars["PATH"].as_deref().unwrap();
        assert_eq!(path.split(':').next(), Some(runner_dir), "{path}");
    }

    #[test]
    fn the_runners_directory_comes_first_on_the_agents_path() {
        let runner = Path::new("/opt/agentsmith/bin/agent-runner");
        let path = |inherited: Option<&str>| {
            search_path(Some(runner), inherited.map(std::ffi::OsStr::new))
        };
        assert_eq!(
            path(Some("/usr/bin:/bin")).as_deref(),
            Some("/opt/agentsmith/bin:/usr/bin:/bin")
        );
        assert_eq!(
            path(Some("/opt/agentsmith/bin:/bin")).as_deref(),
            Some("/opt/agentsmith/bin:/bin"),
            "not twice"
        );
        assert_eq!(
            path(None).as_deref(),
            Some("/opt/agentsmith/bin:/usr/local/bin:/usr/bin:/bin")
        );
        assert_eq!(
            search_path(Some(Path::new("/a:b/agent-runner")), None),
            None
        );
        assert_eq!(search_path(None, None), None);
    }

    #[test]
    fn a_webhook_intent_gives_the_agent_its_ticket_details() {
        let mut vars = complete_env();
        vars.insert(
            env::INTENT,
            r#"{"task":"fix PAY-1","ticket":"PAY-1","title":"Refunds fail","description":"Since Monday","requester":"Ann","url":"https://acme.atlassian.net/browse/PAY-1","source":"jira","previous":{"job_id":"j0","state":"failed","summary":"Half done"}}"#.to_string(),
        );
        let job = parse(&vars).unwrap();
        let workspace = Workspace::new(job.workdir.clone());
        let agent: HashMap<_, _> = job.agent_env(&workspace).into_iter().collect();
        for (name, value) in [
            (env::TITLE, "Refunds fail"),
            (env::DESCRIPTION, "Since Monday"),
            (env::REQUESTER, "Ann"),
            (env::URL, "https://acme.atlassian.net/browse/PAY-1"),
            (env::SOURCE, "jira"),
            (env::PREVIOUS_JOB, "j0"),
            (env::PREVIOUS_SUMMARY, "Half done"),
        ] {
            assert_eq!(agent[name].as_deref(), Some(value), "{name}");
        }
    }
}
