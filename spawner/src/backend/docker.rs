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

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig, Mount,
    MountType,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures::StreamExt;
use tokio::sync::OnceCell;

use crate::contract::{env, labels, OutputStream};
use crate::secrets::SecretSource;
use crate::{
    Error, JobHandle, JobSpawner, JobSpec, LogLine, LogStream, Resources, Result, WorkloadStatus,
};

const BACKEND: &str = "docker";

/// Time the runner gets beyond the agent's grace period to report before Docker kills it.
const RUNNER_MARGIN: Duration = Duration::from_secs(5);

/// When to pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull only when the engine does not have the image.
    #[default]
    IfNotPresent,
    /// Pull before every attempt.
    Always,
    /// Never pull: the image must be on the engine already.
    Never,
}

/// Client certificate files for a Docker engine that requires TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed the engine's certificate.
    pub ca: PathBuf,
    /// This client's certificate.
    pub cert: PathBuf,
    /// This client's key.
    pub key: PathBuf,
}

/// Credentials for pulling from a private registry.
#[derive(Clone)]
pub struct RegistryAuth {
    /// The registry (`registry.example.com`); empty for Docker Hub.
    pub server: String,
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// Settings of the docker backend.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// The engine: `unix:///path`, `tcp://host:port`; `None` means `DOCKER_HOST`, else the
    /// local socket.
    pub host: Option<String>,
    /// Client certificates, for an engine behind TLS.
    pub tls: Option<TlsFiles>,
    /// The network containers join (`host`, a user network); `None` means the
    /// dispatcher's own network when it runs in a container, else the engine's default.
    pub network: Option<String>,
    /// When to pull images.
    pub pull_policy: PullPolicy,
    /// Registry credentials for pulls.
    pub registry_auth: Option<RegistryAuth>,
    /// How long a finished container (its logs and exit state) is kept.
    pub ttl_after_finished: Duration,
    /// The user the container runs as (`uid:gid`).
    pub user: String,
    /// The work directory inside the container (writable even on a read-only root).
    pub work_dir: String,
    /// `--add-host` entries (`host.docker.internal:host-gateway` lets a runner on a bridge
    /// network reach a dispatcher on the host).
    pub extra_hosts: Vec<String>,
    /// Labels added to every container, beside the standard ones.
    pub extra_labels: BTreeMap<String, String>,
    /// Limits for profiles that set none.
    pub default_resources: Resources,
    /// The installation name, in every container's labels.
    pub installation: String,
    /// Where secret values come from.
    pub secrets: SecretSource,
    /// How long one engine request may take before the engine counts as unavailable.
    pub request_timeout: Duration,
}

/// The docker backend.
pub struct DockerSpawner {
    settings: DockerSettings,
    client: OnceCell<Docker>,
    network: OnceCell<Option<String>>,
}

fn unavailable(message: impl Into<String>, source: EngineError) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        message: message.into(),
        source: Some(Box::new(source)),
    }
}

fn rejected(message: impl Into<String>) -> Error {
    Error::Rejected {
        backend: BACKEND,
        message: message.into(),
    }
}

/// The status code of an engine error answer, if the engine answered.
fn engine_status(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own message for an error answer, or the error itself.
fn engine_message(e: &EngineError) -> String {
    match e {
        EngineError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
}

/// Seconds since the epoch of an RFC 3339 UTC time as the engine writes it
/// (`2026-11-23T23:40:01.123456789Z`); `None` for the zero time or anything else.
fn parse_engine_time(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (t.next()??, t.next()??, t.next()??);
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// How a container's state reads as a workload status.
fn status_of(container: &ContainerInspectResponse) -> WorkloadStatus {
    let Some(state) = &container.state else {
        return WorkloadStatus::Pending { reason: None };
    };
    let error = state.error.clone().filter(|e| !e.is_empty());
    let memory = container
        .host_config
        .as_ref()
        .and_then(|h| h.memory)
        .filter(|m| *m > 0);
    match state.status {
        Some(ContainerStateStatusEnum::RUNNING)
        | Some(ContainerStateStatusEnum::RESTARTING)
        | Some(ContainerStateStatusEnum::PAUSED)
        | Some(ContainerStateStatusEnum::STOPPING) => WorkloadStatus::Running,
        Some(ContainerStateStatusEnum::CREATED) | None => match error {
            Some(error) => WorkloadStatus::Failed {
                reason: format!("container could not start: {error}"),
                retryable: false,
            },
            None => WorkloadStatus::Pending {
                reason: Some("container created".into()),
            },
        },
        Some(ContainerStateStatusEnum::REMOVING) => WorkloadStatus::Failed {
            reason: "container is being removed".into(),
            retryable: true,
        },
        Some(ContainerStateStatusEnum::EXITED)
        | Some(ContainerStateStatusEnum::DEAD)
        | Some(ContainerStateStatusEnum::EMPTY) => {
            if state.oom_killed == Some(true) {
                let limit = memory
                    .map(|m| format!(" of {}", crate::contract::binary_size(m as u64)))
                    .unwrap_or_default();
                return WorkloadStatus::Failed {
                    reason: format!("OOM-killed: the container went over its memory limit{limit}"),
                    retryable: false,
                };
            }
            if let Some(error) = error {
                return WorkloadStatus::Failed {
                    reason: format!("container failed: {error}"),
                    retryable: false,
                };
            }
            match state.exit_code.unwrap_or(-1) {
                // 128 + n: the main process was killed by signal n.
                code @ 129..=159 => WorkloadStatus::Killed {
                    signal: (code - 128) as i32,
                },
                code => WorkloadStatus::Exited {
                    code: i32::try_from(code).unwrap_or(-1),
                },
            }
        }
    }
}

impl DockerSpawner {
    /// A backend with the given settings; the engine is first contacted by
    /// [`JobSpawner::probe`] or the first spawn.
    pub fn new(settings: DockerSettings) -> Self {
        Self {
            settings,
            client: OnceCell::new(),
            network: OnceCell::new(),
        }
    }

    /// The engine client, connected and with its API version agreed on first use.
    async fn client(&self) -> Result<&Docker> {
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

    fn host(&self) -> String {
        self.settings
            .host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
    }

    fn connect(&self) -> Result<Docker> {
        let host = self.host();
        // The stop request waits for the grace period, so allow for it.
        let timeout = self.settings.request_timeout.as_secs().max(1);
        let bad =
            |e: EngineError| unavailable(format!("cannot use the Docker engine at {host}"), e);
        if let Some(tls) = &self.settings.tls {
            if !(host.starts_with("tcp://") || host.starts_with("https://")) {
                return Err(rejected(format!(
                    "TLS settings need a tcp:// or https:// Docker host, not {host}"
                )));
            }
            return Docker::connect_with_ssl(
                &host,
                &tls.key,
                &tls.cert,
                &tls.ca,
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
    async fn network(&self, docker: &Docker) -> Option<String> {
        if let Some(network) = &self.settings.network {
            return Some(network.clone());
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

    async fn pull(&self, docker: &Docker, image: &str) -> Result<()> {
        tracing::info!(%image, "pulling image");
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let credentials = self
            .settings
            .registry_auth
            .as_ref()
            .map(|auth| DockerCredentials {
                username: Some(auth.username.clone()),
                password: Some(auth.password.clone()),
                serveraddress: Some(auth.server.clone()).filter(|s| !s.is_empty()),
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

    /// The container definition of one attempt.
    async fn container_body(
        &self,
        docker: &Docker,
        job: &JobSpec,
        image: &str,
    ) -> Result<ContainerCreateBody> {
        let settings = &self.settings;
        let mut env_vars: Vec<String> = job
            .profile
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for (name, value) in settings
            .secrets
            .resolve_env(BACKEND, &job.profile.secret_env)?
        {
            env_vars.push(format!("{name}={value}"));
        }
        env_vars.extend(
            job.runner_env()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}")),
        );
        env_vars.push(format!("{}={}", env::WORKDIR, settings.work_dir));

        let mut container_labels: HashMap<String, String> = settings
            .extra_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        container_labels.extend(job.labels(&settings.installation));

        let resources = job.profile.resources.or(settings.default_resources);
        let memory = resources.memory_bytes.map(|m| m as i64);
        let network = self.network(docker).await;
        let host_network = network.as_deref() == Some("host");
        let host_config = HostConfig {
            init: Some(true),
            memory,
            // Swap equal to the limit: no swap, so the limit is the limit.
            memory_swap: memory,
            nano_cpus: resources.cpu_millis.map(|c| (c * 1_000_000) as i64),
            pids_limit: resources.pids.map(i64::from),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            privileged: Some(false),
            readonly_rootfs: Some(!job.profile.writable_root),
            mounts: Some(vec![Mount {
                target: Some(settings.work_dir.clone()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                "rw,nosuid,nodev,size=268435456".to_string(),
            )])),
            network_mode: network,
            extra_hosts: Some(settings.extra_hosts.clone())
                .filter(|h| !h.is_empty() && !host_network),
            ..Default::default()
        };
        Ok(ContainerCreateBody {
            image: Some(image.to_string()),
            user: Some(settings.user.clone()),
            env: Some(env_vars),
            labels: Some(container_labels),
            working_dir: Some(settings.work_dir.clone()),
            stop_signal: Some("SIGTERM".into()),
            stop_timeout: Some((job.grace_secs + RUNNER_MARGIN.as_secs()) as i64),
            host_config: Some(host_config),
            ..Default::default()
        })
    }

    fn handle(&self, name: &str, job_id: &str, attempt: u32, id: Option<String>) -> JobHandle {
        JobHandle {
            backend: BACKEND.into(),
            name: name.to_string(),
            job_id: job_id.to_string(),
            attempt,
            id,
        }
    }

    /// Starts a created container; one that is already running or has run is left alone.
    async fn start(&self, docker: &Docker, name: &str) -> Result<()> {
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

    async fn inspect(
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
    async fn adopt(
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

    fn our_filters(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![
                format!("{}=agentsmith", labels::MANAGED_BY),
                format!("{}={}", labels::INSTALLATION, self.settings.installation),
            ],
        )])
    }

    /// Removes finished containers whose time to live has passed.
    async fn reap(&self, docker: &Docker) -> Result<usize> {
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
        let ttl = self.settings.ttl_after_finished.as_secs() as i64;
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

fn remove_options() -> RemoveContainerOptions {
    RemoveContainerOptions {
        v: true,
        force: true,
        ..Default::default()
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
    use bollard::models::ContainerState;

    use super::*;

    #[test]
    fn engine_times_parse_to_epoch_seconds() {
        assert_eq!(parse_engine_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_engine_time("2026-11-23T23:40:01.123456789Z"),
            Some(1_795_477_201)
        );
        assert_eq!(parse_engine_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_engine_time("yesterday"), None);
    }

    fn container(state: ContainerState, memory: Option<i64>) -> ContainerInspectResponse {
        ContainerInspectResponse {
            state: Some(state),
            host_config: Some(HostConfig {
                memory,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn container_states_say_why_the_workload_ended() {
        let exited = |code, oom| ContainerState {
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(code),
            oom_killed: Some(oom),
            ..Default::default()
        };
        assert_eq!(
            status_of(&container(exited(3, false), None)),
            WorkloadStatus::Exited { code: 3 }
        );
        assert_eq!(
            status_of(&container(exited(137, false), None)),
            WorkloadStatus::Killed { signal: 9 }
        );
        assert_eq!(
            status_of(&container(exited(137, true), Some(64 << 20))),
            WorkloadStatus::Failed {
                reason: "OOM-killed: the container went over its memory limit of 64Mi".into(),
                retryable: false
            }
        );
        let never_started = ContainerState {
            status: Some(ContainerStateStatusEnum::CREATED),
            error: Some("exec: \"agent-runner\": executable file not found in $PATH".into()),
            ..Default::default()
        };
        let status = status_of(&container(never_started, None));
        assert!(
            matches!(&status, WorkloadStatus::Failed { reason, retryable: false } if reason.contains("could not start")),
            "{status:?}"
        );
    }

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
