//! Talking to the engine: connecting (socket, TCP, TLS), the network agents join, pulls,
//! starts, inspections and the removal of finished containers after their time to live.

use bollard::auth::DockerCredentials;
use bollard::errors::Error as EngineError;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::{
    CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures::StreamExt;
use secrecy::ExposeSecret;

use super::status::{now_secs, parse_engine_time};
use super::{DockerSpawner, BACKEND};
use crate::{Error, JobHandle, JobSpec, Result};

pub(super) fn unavailable(message: impl Into<String>, source: EngineError) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        message: message.into(),
        source: Some(Box::new(source)),
    }
}

pub(super) fn rejected(message: impl Into<String>) -> Error {
    Error::Rejected {
        backend: BACKEND,
        message: message.into(),
    }
}

/// The status code of an engine error answer, if the engine answered.
pub(super) fn engine_status(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own message for an error answer, or the error itself.
pub(super) fn engine_message(e: &EngineError) -> String {
    match e {
        EngineError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
}

pub(super) fn remove_options() -> RemoveContainerOptions {
    RemoveContainerOptions {
        v: true,
        force: true,
        ..Default::default()
    }
}

impl DockerSpawner {
    /// The engine client, connected and with its API version agreed on first use.
    pub(super) async fn client(&self) -> Result<&Docker> {
        self.client
            .get_or_try_init(|| async {
                let docker = self.connect()?;
                docker.negotiate_version().await.map_err(|e| {
                    unavailable(
                        format!("cannot reach the Docker engine at {}", self.host()),
                        e,
                    )
                })
            })
            .await
    }

    pub(super) fn host(&self) -> String {
        Some(self.settings.host.clone())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
    }

    pub(super) fn connect(&self) -> Result<Docker> {
        let host = self.host();
        // The stop request waits for the grace period, so allow for it.
        let timeout = self.request_timeout.as_secs().max(1);
        let bad =
            |e: EngineError| unavailable(format!("cannot use the Docker engine at {host}"), e);
        if let Some(tls) = self.settings.tls_files() {
            if !(host.starts_with("tcp://") || host.starts_with("https://")) {
                return Err(rejected(format!(
                    "TLS settings need a tcp:// or https:// Docker host, not {host}"
                )));
            }
            return Docker::connect_with_ssl(
                &host,
                std::path::Path::new(&tls.key),
                std::path::Path::new(&tls.cert),
                std::path::Path::new(&tls.ca),
                timeout,
                API_DEFAULT_VERSION,
            )
            .map_err(bad);
        }
        if host.starts_with("unix://") {
            Docker::connect_with_unix(&host, timeout, API_DEFAULT_VERSION).map_err(bad)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(&host, timeout, API_DEFAULT_VERSION).map_err(bad)
        } else {
            Err(rejected(format!(
                "unsupported Docker host {host}: use unix:///path or tcp://host:port"
            )))
        }
    }

    /// The network containers join: the configured one, else the network of the container
    /// the dispatcher runs in (found by its hostname), else the engine's default.
    pub(super) async fn network(&self, docker: &Docker) -> Option<String> {
        if !self.settings.network.is_empty() {
            return Some(self.settings.network.clone());
        }
        self.network
            .get_or_init(|| async {
                let hostname = std::fs::read_to_string("/etc/hostname").ok()?;
                let own = docker.inspect_container(hostname.trim(), None).await.ok()?;
                let networks = own.network_settings?.networks?;
                let mut names: Vec<String> = networks.into_keys().collect();
                names.sort();
                let name = names.into_iter().next()?;
                tracing::info!(network = %name, "agent containers join the dispatcher's own network");
                Some(name)
            })
            .await
            .clone()
    }

    pub(super) async fn pull(&self, docker: &Docker, image: &str) -> Result<()> {
        tracing::info!(%image, "pulling image");
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let registry = &self.settings.registry;
        let credentials = (!registry.username.is_empty()).then(|| DockerCredentials {
            username: Some(registry.username.clone()),
            password: Some(registry.password.expose_secret().to_string()),
            serveraddress: Some(registry.server.clone()).filter(|s| !s.is_empty()),
            ..Default::default()
        });
        let mut progress = docker.create_image(Some(options), None, credentials);
        while let Some(step) = progress.next().await {
            if let Err(e) = step {
                let message = engine_message(&e);
                let permanent = engine_status(&e) == Some(404)
                    || [
                        "not found",
                        "manifest unknown",
                        "access denied",
                        "invalid reference",
                    ]
                    .iter()
                    .any(|m| message.to_lowercase().contains(m));
                return Err(if permanent {
                    rejected(format!("image {image} cannot be pulled: {message}"))
                } else {
                    unavailable(format!("pulling image {image} failed"), e)
                });
            }
        }
        Ok(())
    }

    /// Starts a created container; one that is already running or has run is left alone.
    pub(super) async fn start(&self, docker: &Docker, name: &str) -> Result<()> {
        match docker.start_container(name, None).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let message = engine_message(&e);
                match engine_status(&e) {
                    // 304: already started (bollard passes it as success on newer engines).
                    Some(304) => Ok(()),
                    Some(404) => Err(unavailable(
                        format!("container {name} disappeared before it started"),
                        e,
                    )),
                    Some(_) => Err(rejected(format!(
                        "container {name} could not start: {message}"
                    ))),
                    None => Err(unavailable(format!("starting container {name}"), e)),
                }
            }
        }
    }

    pub(super) async fn inspect(
        &self,
        docker: &Docker,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>> {
        match docker.inspect_container(name, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if engine_status(&e) == Some(404) => Ok(None),
            Err(e) => Err(unavailable(format!("inspecting container {name}"), e)),
        }
    }

    /// Adopts the container an earlier spawn of this attempt created: starts it if it was
    /// created but never started.
    pub(super) async fn adopt(
        &self,
        docker: &Docker,
        job: &JobSpec,
        container: ContainerInspectResponse,
    ) -> Result<JobHandle> {
        let name = job.workload_name();
        tracing::info!(workload = %name, "adopting the existing container of this attempt");
        if matches!(
            container.state.as_ref().and_then(|s| s.status),
            Some(ContainerStateStatusEnum::CREATED)
        ) && container
            .state
            .as_ref()
            .and_then(|s| s.error.as_deref())
            .is_none_or(str::is_empty)
        {
            self.start(docker, &name).await?;
        }
        Ok(self.handle(&name, &job.job_id, job.attempt, container.id))
    }

    /// Removes finished containers whose time to live has passed.
    pub(super) async fn reap(&self, docker: &Docker) -> Result<usize> {
        let mut filters = self.our_filters();
        filters.insert(
            "status".into(),
            vec!["exited".into(), "dead".into(), "created".into()],
        );
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| unavailable("listing containers", e))?;
        let ttl = self.settings.ttl_after_finished_secs as i64;
        let now = now_secs();
        let mut removed = 0;
        for summary in containers {
            let Some(id) = summary.id else { continue };
            let Some(container) = self.inspect(docker, &id).await? else {
                continue;
            };
            let state = container.state.as_ref();
            let ended = state
                .and_then(|s| s.finished_at.as_deref())
                .and_then(parse_engine_time)
                .or(summary.created);
            let running = matches!(
                state.and_then(|s| s.status),
                Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::RESTARTING)
            );
            if running || ended.is_none_or(|at| now - at < ttl) {
                continue;
            }
            let name = container.name.unwrap_or_default();
            match docker.remove_container(&id, Some(remove_options())).await {
                Ok(()) => {
                    removed += 1;
                    tracing::debug!(container = %name.trim_start_matches('/'), "removed a finished container after its time to live");
                }
                Err(e) if engine_status(&e) == Some(404) || engine_status(&e) == Some(409) => {}
                Err(e) => return Err(unavailable(format!("removing container {name}"), e)),
            }
        }
        Ok(removed)
    }
}
