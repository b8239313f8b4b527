//! `agentsmith spawner render`: the exact Kubernetes Job the kubernetes backend would
//! create for a job, printed for people to inspect and for tests to validate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Deserialize;

use crate::context::job_spec;
use crate::settings::Settings;
use queue::Job;

/// The job to render, as a JSON file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    /// The agent profile; the project's default when absent.
    #[serde(default)]
    agent: Option<String>,
    /// The task.
    task: String,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    ticket: Option<String>,
    /// A job id (default `example000001`).
    #[serde(default)]
    id: Option<String>,
    /// The attempt (default 1).
    #[serde(default)]
    attempt: Option<u32>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// YAML, as `kubectl get -o yaml` shows it.
    Yaml,
    /// JSON.
    Json,
}

/// Prints the manifest; exit code 1 with a message when anything is wrong.
pub fn run(
    config: Option<&Path>,
    job_file: &PathBuf,
    namespace: Option<&str>,
    format: Format,
) -> ExitCode {
    match render(config, job_file, namespace, format) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn render(
    config: Option<&Path>,
    job_file: &PathBuf,
    namespace: Option<&str>,
    format: Format,
) -> Result<String, String> {
    let settings = Settings::load(config).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(job_file)
        .map_err(|e| format!("cannot read {}: {e}", job_file.display()))?;
    let file: JobFile = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a job file: {e}", job_file.display()))?;
    let project = match &file.project {
        Some(name) => Some(
            settings
                .projects
                .get(name)
                .ok_or_else(|| format!("no project named {name:?} in the configuration"))?,
        ),
        None => None,
    };
    let agent = file
        .agent
        .clone()
        .or_else(|| project.map(|p| p.agent.clone()))
        .ok_or("the job file names no agent (and no project with a default agent)")?;
    if !settings.agents.contains_key(&agent) {
        return Err(format!(
            "no agent profile named {agent:?} in the configuration"
        ));
    }
    let id = file.id.clone().unwrap_or_else(|| "example000001".into());
    let mut fields = HashMap::from([
        ("state".to_string(), "queued".to_string()),
        ("created_at".to_string(), "0".to_string()),
        ("attempt".to_string(), file.attempt.unwrap_or(1).to_string()),
        ("agent".to_string(), agent),
        ("task".to_string(), file.task.clone()),
    ]);
    for (key, value) in [
        ("project", file.project.clone()),
        ("ticket", file.ticket.clone()),
        (
            "repo",
            project.map(|p| p.repo.clone()).filter(|r| !r.is_empty()),
        ),
    ] {
        if let Some(value) = value {
            fields.insert(key.to_string(), value);
        }
    }
    let job = Job::from_fields(&id, &fields).ok_or("the job file does not make a job")?;
    let callback_base = if settings.server.public_url.is_empty() {
        format!("http://{}", settings.server.bind)
    } else {
        settings.server.public_url.trim_end_matches('/').to_string()
    };
    // The real credential is an HMAC under the runner secret, held in a Secret of its own;
    // a placeholder stands in for it.
    let spec = job_spec(
        &settings,
        &job,
        job.attempt,
        &callback_base,
        "<one-time credential>".into(),
    )?;
    let k8s = &settings.spawner.kubernetes;
    let namespace = namespace
        .map(String::from)
        .or_else(|| Some(k8s.namespace.clone()).filter(|n| !n.is_empty()))
        .unwrap_or_else(|| "default".into());
    let manifest = spawner::backend::kubernetes::job_manifest(
        k8s,
        &settings.server.installation,
        &namespace,
        &spec,
    )
    .map_err(|e| e.to_string())?;
    let mut value = serde_json::to_value(&manifest).map_err(|e| e.to_string())?;
    if let Some(object) = value.as_object_mut() {
        object.insert("apiVersion".into(), "batch/v1".into());
        object.insert("kind".into(), "Job".into());
    }
    match format {
        Format::Json => serde_json::to_string_pretty(&value)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string()),
        Format::Yaml => serde_yaml::to_string(&value).map_err(|e| e.to_string()),
    }
}
