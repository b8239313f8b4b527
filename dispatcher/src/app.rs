//! Wiring: [`Application::build`] connects Redis, picks the spawner and binds the listener;
//! [`Application::run`] serves until the shutdown token is cancelled, then drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::ExposeSecret;
use spawner::backend::docker::{DockerSettings, DockerSpawner, PullPolicy, RegistryAuth, TlsFiles};
use spawner::backend::kubernetes::{
    parse_affinity, parse_tolerations, KubernetesSettings, KubernetesSpawner,
};
use spawner::backend::process::{ProcessSettings, ProcessSpawner};
use spawner::JobSpawner;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::context::Context;
use crate::queue::Queue;
use crate::settings::{parse_cpus, parse_memory, PullPolicySetting, Settings, SpawnerKind};
use crate::token::RunnerTokens;

/// A dispatcher ready to run: bound, connected, not yet serving.
pub struct Application {
    listener: TcpListener,
    ctx: Arc<Context>,
}

/// The spawner the settings ask for.
pub fn spawner_from_settings(settings: &Settings) -> Arc<dyn JobSpawner> {
    match settings.spawner.kind {
        SpawnerKind::Process => Arc::new(ProcessSpawner::new(ProcessSettings {
            runner_path: settings.runner_path(),
            work_root: settings.work_root(),
            keep_finished: Duration::from_secs(settings.spawner.process.keep_finished_secs),
            secrets: settings.secret_source(),
        })),
        SpawnerKind::Docker => Arc::new(DockerSpawner::new(docker_settings(settings))),
        SpawnerKind::Kubernetes => Arc::new(KubernetesSpawner::new(kubernetes_settings(settings))),
    }
}

/// The kubernetes backend's settings from `spawner.kubernetes` (validated at load).
pub fn kubernetes_settings(settings: &Settings) -> KubernetesSettings {
    let k8s = &settings.spawner.kubernetes;
    let non_empty = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    KubernetesSettings {
        kubeconfig: non_empty(&k8s.kubeconfig).map(Into::into),
        context: non_empty(&k8s.context),
        namespace: non_empty(&k8s.namespace),
        service_account: non_empty(&k8s.service_account),
        ttl_seconds_after_finished: k8s.ttl_seconds_after_finished,
        image_pull_policy: match k8s.image_pull_policy {
            PullPolicySetting::IfNotPresent => "IfNotPresent",
            PullPolicySetting::Always => "Always",
            PullPolicySetting::Never => "Never",
        }
        .into(),
        image_pull_secrets: k8s.image_pull_secrets.clone(),
        secret_name: non_empty(&k8s.secret_name),
        default_resources: spawner::Resources {
            memory_bytes: non_empty(&k8s.memory).and_then(|m| parse_memory(&m).ok()),
            cpu_millis: non_empty(&k8s.cpus).and_then(|c| parse_cpus(&c).ok()),
            pids: None,
        },
        cpu_request_millis: non_empty(&k8s.cpu_request).and_then(|c| parse_cpus(&c).ok()),
        node_selector: k8s.node_selector.clone(),
        tolerations: parse_tolerations(&k8s.tolerations).unwrap_or_default(),
        affinity: parse_affinity(&k8s.affinity).unwrap_or_default(),
        run_as_user: k8s.run_as_user,
        run_as_group: k8s.run_as_group,
        extra_labels: k8s.labels.clone(),
        annotations: k8s.annotations.clone(),
        extra_env: k8s.env.clone(),
        installation: settings.server.installation.clone(),
        pending_timeout: Duration::from_secs(k8s.pending_timeout_secs),
        work_dir: k8s.work_dir.clone(),
        api_qps: k8s.api_qps,
    }
}

/// The docker backend's settings from `spawner.docker` (validated at load).
pub fn docker_settings(settings: &Settings) -> DockerSettings {
    let docker = &settings.spawner.docker;
    let non_empty = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    DockerSettings {
        host: non_empty(&docker.host),
        tls: non_empty(&docker.tls.ca).map(|ca| TlsFiles {
            ca: ca.into(),
            cert: docker.tls.cert.clone().into(),
            key: docker.tls.key.clone().into(),
        }),
        network: non_empty(&docker.network),
        pull_policy: match docker.pull_policy {
            PullPolicySetting::IfNotPresent => PullPolicy::IfNotPresent,
            PullPolicySetting::Always => PullPolicy::Always,
            PullPolicySetting::Never => PullPolicy::Never,
        },
        registry_auth: non_empty(&docker.registry.username).map(|username| RegistryAuth {
            server: docker.registry.server.clone(),
            username,
            password: docker.registry.password.expose_secret().to_string(),
        }),
        ttl_after_finished: Duration::from_secs(docker.ttl_after_finished_secs),
        user: docker.user.clone(),
        work_dir: docker.work_dir.clone(),
        extra_hosts: docker.extra_hosts.clone(),
        extra_labels: docker.labels.clone(),
        default_resources: spawner::Resources {
            memory_bytes: non_empty(&docker.memory).and_then(|m| parse_memory(&m).ok()),
            cpu_millis: non_empty(&docker.cpus).and_then(|c| parse_cpus(&c).ok()),
            pids: Some(docker.pids_limit).filter(|p| *p > 0),
        },
        installation: settings.server.installation.clone(),
        secrets: settings.secret_source(),
        // A stop waits out the grace period: leave room for it.
        request_timeout: Duration::from_secs(
            docker
                .request_timeout_secs
                .max(settings.spawner.grace_secs + 30),
        ),
    }
}

impl Application {
    /// Builds with the spawner the settings name.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let spawner = spawner_from_settings(&settings);
        Self::build_with_spawner(settings, spawner, shutdown).await
    }

    /// Builds with a given spawner (tests and benchmarks use the no-op one).
    pub async fn build_with_spawner(
        settings: Settings,
        spawner: Arc<dyn JobSpawner>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let queue = Queue::new(&settings.redis, &settings.queue)
            .context("creating the redis pool")?
            .with_dedup_ttl(Duration::from_secs(settings.sources.dedup_ttl_secs));
        let redis_at = redacted_url(settings.redis.url.expose_secret());
        wait_for_redis(&queue, &redis_at, &shutdown).await?;
        queue.ensure_group().await.with_context(|| {
            format!("creating the queue's consumer group in redis at {redis_at}")
        })?;
        queue.ensure_notify_group().await.with_context(|| {
            format!("creating the reply outbox's consumer group in redis at {redis_at}")
        })?;
        let secret = queue
            .runner_secret(settings.server.runner_secret.expose_secret())
            .await
            .with_context(|| format!("reading the runner secret from redis at {redis_at}"))?;
        let bind = settings.bind_addr();
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding the HTTP server to {bind}"))?;
        let local = listener.local_addr().context("reading the bound address")?;
        let callback_base = if settings.server.public_url.is_empty() {
            let host = if local.ip().is_unspecified() {
                SocketAddr::from(([127, 0, 0, 1], local.port()))
            } else {
                local
            };
            format!("http://{host}")
        } else {
            settings.server.public_url.trim_end_matches('/').to_string()
        };
        let loopback = callback_base.contains("://127.") || callback_base.contains("://localhost");
        if loopback && spawner.backend() == "docker" && settings.spawner.docker.network != "host" {
            warn!(
                callback = %callback_base,
                "agent containers on a bridge network cannot reach a loopback callback URL: set server.public_url \
                 (e.g. http://host.docker.internal:PORT, with server.bind on an address containers reach) or spawner.docker.network: host"
            );
        }
        if loopback && spawner.backend() == "kubernetes" {
            warn!(
                callback = %callback_base,
                "agent pods cannot reach a loopback callback URL: set server.public_url to an address pods reach \
                 (in a cluster, the dispatcher's Service: http://agentsmith.<namespace>.svc:PORT)"
            );
        }
        if let Err(e) = spawner.probe().await {
            warn!(error = %e, backend = spawner.backend(), "the spawner is not usable yet; /ready reports it");
        }
        if !spawner.survives_restart() {
            warn!(
                backend = spawner.backend(),
                "workloads of this backend end with the dispatcher: running jobs are retried after a restart"
            );
        }
        if settings.api.tokens.is_empty() {
            warn!(%local, "no api.tokens configured: the API is open to local users");
        }
        let ctx = Arc::new(Context::new(
            settings,
            queue,
            spawner,
            RunnerTokens::new(&secret),
            callback_base,
            shutdown,
        ));
        Ok(Self { listener, ctx })
    }

    /// The port the server is bound to.
    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The shared context (for tests that look inside).
    pub fn context(&self) -> Arc<Context> {
        Arc::clone(&self.ctx)
    }

    /// Serves, schedules and keeps house until the shutdown token is cancelled; then turns
    /// `/ready` to 503, stops claiming, lets in-flight work finish (within
    /// `server.shutdown_grace_secs`) and returns.
    pub async fn run(self) -> anyhow::Result<()> {
        let ctx = self.ctx;
        let addr = self.listener.local_addr()?;
        info!(%addr, backend = ctx.spawner.backend(), callback = %ctx.callback_base, "agentsmith is serving");
        crate::watchdog::reconcile(&ctx).await;
        let scheduler = tokio::spawn(crate::scheduler::run(Arc::clone(&ctx)));
        let watchdog = tokio::spawn(crate::watchdog::run(Arc::clone(&ctx)));
        let notifier = tokio::spawn(crate::notify::run(Arc::clone(&ctx)));
        let app = crate::api::router(Arc::clone(&ctx));
        let shutdown = ctx.shutdown.clone();
        let drain_ctx = Arc::clone(&ctx);
        let server = axum::serve(self.listener, app).with_graceful_shutdown(async move {
            shutdown.cancelled().await;
            drain_ctx.start_draining();
            info!("shutting down: draining requests and in-flight spawns");
        });
        let grace = Duration::from_secs(ctx.settings.server.shutdown_grace_secs);
        let serving = tokio::spawn(async move { server.await });
        ctx.shutdown.cancelled().await;
        let drained = tokio::time::timeout(grace, async {
            let _ = scheduler.await;
            let _ = watchdog.await;
            let _ = notifier.await;
            serving.await
        })
        .await;
        match drained {
            Ok(Ok(result)) => result.context("serving HTTP")?,
            Ok(Err(e)) => return Err(e).context("the HTTP server task failed"),
            Err(_) => warn!(
                ?grace,
                "drain did not finish within the grace period; exiting anyway"
            ),
        }
        info!("stopped");
        Ok(())
    }
}

async fn wait_for_redis(
    queue: &Queue,
    redis_at: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match queue.ping().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline && !shutdown.is_cancelled() => {
                warn!(error = %e, redis = %redis_at, "waiting for redis");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to redis at {redis_at}")),
        }
    }
}

/// The Redis URL without its password, for messages.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_lose_their_password_in_messages() {
        assert_eq!(
            redacted_url("redis://:pw@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(
            redacted_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
