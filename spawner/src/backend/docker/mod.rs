//! The docker backend: one container per attempt on a Docker engine, through bollard.
//!
//! The container is named after the attempt ([`crate::workload_name`]), so a repeated
//! spawn (another replica, a restarted dispatcher) finds it and adopts it. Its main
//! process is the image's `agent-runner`, behind Docker's init so signals are forwarded
//! and zombies reaped. It runs as a non-root user with every capability dropped,
//! `no-new-privileges`, memory (without swap), CPU and process limits, and, unless the
//! profile asks for a writable root, a read-only root filesystem with a writable work
//! directory (a volume removed with the container) and a `/tmp` tmpfs.
//!
//! Finished containers are kept `ttl_after_finished` so their logs and exit state can be
//! read, then [`JobSpawner::housekeeping`] removes them.

mod container;
mod engine;
mod settings;
mod status;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, LogsOptions, StopContainerOptions,
};
use bollard::Docker;
use contract::{labels, OutputStream};
use futures::StreamExt;
use tokio::sync::OnceCell;

use engine::{engine_message, engine_status, rejected, remove_options, unavailable};
pub use settings::{DockerSettings, DockerTlsSettings, RegistrySettings, WorkMedium};
use status::status_of;

use crate::secrets::SecretSource;
use crate::settings::pull_policy::PullPolicy;
use crate::{
    Error, Installation, JobHandle, JobSpawner, JobSpec, LogLine, LogStream, Result, WorkloadStatus,
};

const BACKEND: &str = "docker";

/// Time the runner gets beyond the agent's grace period to report before Docker kills it.
const RUNNER_MARGIN: Duration = Duration::from_secs(5);

/// The docker backend.
pub struct DockerSpawner {
    settings: DockerSettings,
    installation: String,
    secrets: SecretSource,
    /// How long one engine request may take: the configured time, and at least the grace
    /// period a stop waits out plus a margin.
    request_timeout: Duration,
    client: OnceCell<Docker>,
    network: OnceCell<Option<String>>,
}

impl DockerSpawner {
    /// A backend with the given settings; the engine is first contacted by
    /// [`JobSpawner::probe`] or the first spawn.
    pub fn new(settings: DockerSettings, installation: &Installation) -> Self {
        let request_timeout = Duration::from_secs(settings.request_timeout_secs)
            .max(installation.grace + Duration::from_secs(30));
        Self {
            settings,
            installation: installation.name.clone(),
            secrets: installation.secrets.clone(),
            request_timeout,
            client: OnceCell::new(),
            network: OnceCell::new(),
        }
    }

    fn handle(&self, name: &str, job_id: &str, attempt: u32, id: Option<String>) -> JobHandle {
        JobHandle {
            backend: BACKEND.into(),
            name: name.to_string(),
            job_id: job_id.to_string(),
            attempt,
            id,
            target: contract::DEFAULT_TARGET.into(),
        }
    }

    fn our_filters(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![
                format!("{}=agentsmith", labels::MANAGED_BY),
                format!("{}={}", labels::INSTALLATION, self.installation),
            ],
        )])
    }
}

/// Splits engine log frames into lines, keeping a partial last line for the next frame.
fn split_lines(stream: OutputStream, pending: &mut String, chunk: &[u8]) -> Vec<LogLine> {
    pending.push_str(&String::from_utf8_lossy(chunk));
    let mut lines = Vec::new();
    while let Some(at) = pending.find('\n') {
        let line: String = pending.drain(..=at).collect();
        lines.push(LogLine {
            stream,
            line: line.trim_end_matches(['\n', '\r']).to_string(),
        });
    }
    lines
}

#[async_trait]
impl JobSpawner for DockerSpawner {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn survives_restart(&self) -> bool {
        true
    }

    async fn probe(&self) -> Result<()> {
        let docker = self.client().await?;
        docker.ping().await.map_err(|e| {
            unavailable(
                format!("the Docker engine at {} does not answer", self.host()),
                e,
            )
        })?;
        Ok(())
    }

    async fn spawn(&self, job: &JobSpec) -> Result<JobHandle> {
        let docker = self.client().await?;
        let name = job.workload_name();
        let image = job
            .profile
            .image
            .clone()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| {
                rejected(format!(
                    "agent profile {:?} has no image; the docker backend needs one",
                    job.profile.name
                ))
            })?;
        // The common case costs one create: an existing container (a repeated spawn) shows
        // as a conflict, a missing image as a 404, and each is dealt with then.
        if self.settings.pull_policy == PullPolicy::Always {
            self.pull(docker, &image).await?;
        }
        let body = self.container_body(docker, job, &image).await?;
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let mut pulled = false;
        let created = loop {
            let e = match docker
                .create_container(Some(options.clone()), body.clone())
                .await
            {
                Ok(created) => break created,
                Err(e) => e,
            };
            match engine_status(&e) {
                Some(409) => {
                    // This attempt's container exists: another spawn created it (a restarted
                    // dispatcher, a reclaim, a race). The engine reserves the name before the
                    // container can be inspected, so give a racing create a moment to finish.
                    for _ in 0..50 {
                        if let Some(existing) = self.inspect(docker, &name).await? {
                            return self.adopt(docker, job, existing).await;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    return Err(unavailable(
                        format!("container {name} is being created by another spawn that did not finish within 5 s"),
                        e,
                    ));
                }
                // The only 404 of a create: no such image.
                Some(404) if !pulled => match self.settings.pull_policy {
                    PullPolicy::Never => {
                        return Err(rejected(format!(
                            "image {image} is not on the Docker engine and pull_policy is Never: build or load it there first"
                        )))
                    }
                    PullPolicy::IfNotPresent | PullPolicy::Always => {
                        self.pull(docker, &image).await?;
                        pulled = true;
                    }
                },
                Some(400) | Some(404) => {
                    return Err(rejected(format!(
                        "the Docker engine refused container {name}: {}",
                        engine_message(&e)
                    )))
                }
                _ => return Err(unavailable(format!("creating container {name}"), e)),
            }
        };
        for warning in created.warnings.iter().filter(|w| !w.is_empty()) {
            tracing::warn!(workload = %name, %warning, "the Docker engine warns");
        }
        self.start(docker, &name).await?;
        Ok(self.handle(&name, &job.job_id, job.attempt, Some(created.id)))
    }

    async fn status(&self, handle: &JobHandle) -> Result<WorkloadStatus> {
        let docker = self.client().await?;
        Ok(match self.inspect(docker, &handle.name).await? {
            Some(container) => status_of(&container),
            None => WorkloadStatus::NotFound,
        })
    }

    async fn logs(&self, handle: &JobHandle, follow: bool) -> Result<LogStream> {
        let docker = self.client().await?;
        if self.inspect(docker, &handle.name).await?.is_none() {
            return Err(Error::NotFound {
                name: handle.name.clone(),
            });
        }
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let frames = docker.logs(&handle.name, Some(options));
        let name = handle.name.clone();
        let lines = frames
            .scan((String::new(), String::new()), move |(out, err), frame| {
                let lines = match frame {
                    Ok(bollard::container::LogOutput::StdErr { message }) => {
                        split_lines(OutputStream::Stderr, err, &message)
                            .into_iter()
                            .map(Ok)
                            .collect()
                    }
                    Ok(output) => split_lines(OutputStream::Stdout, out, &output.into_bytes())
                        .into_iter()
                        .map(Ok)
                        .collect(),
                    Err(e) => vec![Err(unavailable(format!("reading the logs of {name}"), e))],
                };
                futures::future::ready(Some(futures::stream::iter(lines)))
            })
            .flatten();
        Ok(lines.boxed())
    }

    async fn cancel(&self, handle: &JobHandle, grace: Duration) -> Result<()> {
        let docker = self.client().await?;
        let seconds = if grace.is_zero() {
            Duration::ZERO
        } else {
            grace + RUNNER_MARGIN
        }
        .as_secs();
        let options = StopContainerOptions {
            t: Some(i32::try_from(seconds).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        match docker.stop_container(&handle.name, Some(options)).await {
            Ok(()) => Ok(()),
            // 304: already stopped; 404: already gone. Both are what a stop wants.
            Err(e) if matches!(engine_status(&e), Some(304) | Some(404)) => Ok(()),
            Err(e) => Err(unavailable(
                format!("stopping container {}", handle.name),
                e,
            )),
        }
    }

    async fn list(&self) -> Result<Vec<JobHandle>> {
        let docker = self.client().await?;
        let options = ListContainersOptions {
            all: true,
            filters: Some(self.our_filters()),
            ..Default::default()
        };
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| unavailable("listing containers", e))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let container_labels = c.labels.unwrap_or_default();
                let job_id = container_labels.get(labels::JOB_ID)?.clone();
                let attempt = container_labels.get(labels::ATTEMPT)?.parse().ok()?;
                let name = c
                    .names?
                    .into_iter()
                    .next()?
                    .trim_start_matches('/')
                    .to_string();
                Some(self.handle(&name, &job_id, attempt, c.id))
            })
            .collect())
    }

    async fn remove(&self, handle: &JobHandle) -> Result<()> {
        let docker = self.client().await?;
        match docker
            .remove_container(&handle.name, Some(remove_options()))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if engine_status(&e) == Some(404) => Ok(()),
            Err(e) => Err(unavailable(
                format!("removing container {}", handle.name),
                e,
            )),
        }
    }

    async fn housekeeping(&self) -> Result<()> {
        let docker = self.client().await?;
        let removed = self.reap(docker).await?;
        if removed > 0 {
            tracing::info!(
                removed,
                "removed finished containers after their time to live"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_frames_become_lines() {
        let mut pending = String::new();
        let first = split_lines(OutputStream::Stdout, &mut pending, b"one\ntw");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].line, "one");
        let second = split_lines(OutputStream::Stdout, &mut pending, b"o\n");
        assert_eq!(second[0].line, "two");
        assert!(pending.is_empty());
    }
}
