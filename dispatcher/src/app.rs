//! Wiring: [`Application::build`] connects Redis, picks the spawner and binds the listener;
//! [`Application::run`] serves until the shutdown token is cancelled, then drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use queue::Queue;
use secrecy::ExposeSecret;
use spawner::{Fleet, JobSpawner};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::context::Context;
use crate::loops::Loops;
use crate::settings::Settings;
use crate::telemetry::chain;
use crate::token::RunnerTokens;

/// A dispatcher ready to run: bound, connected, not yet serving.
pub struct Application {
    listener: TcpListener,
    ctx: Arc<Context>,
}

impl Application {
    /// Builds with the spawner the settings name.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let fleet = spawner::fleet_from_settings(
            &settings.spawner,
            &settings.spawners,
            &settings.server.installation,
        )
        .context("building the spawner targets")?;
        Self::build_with_fleet(settings, fleet, shutdown).await
    }

    /// Builds with a given spawner as the only target, `default` (tests and benchmarks use
    /// the no-op one).
    pub async fn build_with_spawner(
        settings: Settings,
        spawner: Arc<dyn JobSpawner>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let fleet = Fleet::single(spawner, settings.spawner.max_concurrent_jobs);
        Self::build_with_fleet(settings, fleet, shutdown).await
    }

    /// Builds with the given spawner targets.
    pub async fn build_with_fleet(
        settings: Settings,
        fleet: Fleet,
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
        advise_stream_nodes(&queue).await;
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
        let docker_off_host = settings
            .target_settings()
            .iter()
            .any(|(_, t)| t.kind == spawner::SpawnerKind::Docker && t.docker.network != "host");
        let backends: Vec<&str> = fleet.targets().map(|t| t.backend()).collect();
        if loopback && docker_off_host {
            warn!(
                callback = %callback_base,
                "agent containers on a bridge network cannot reach a loopback callback URL: set server.public_url \
                 (e.g. http://host.docker.internal:PORT, with server.bind on an address containers reach) or spawner.docker.network: host"
            );
        }
        if loopback && backends.contains(&"kubernetes") {
            warn!(
                callback = %callback_base,
                "agent pods cannot reach a loopback callback URL: set server.public_url to an address pods reach \
                 (in a cluster, the dispatcher's Service: http://agentsmith.<namespace>.svc:PORT)"
            );
        }
        for (target, result) in fleet.probe_all().await {
            if let Err(e) = result {
                let error: &(dyn std::error::Error + 'static) = &e;
                warn!(
                    error,
                    %target,
                    backend = fleet.backend_of(&target),
                    "the spawner target is not usable yet; /ready reports it"
                );
            }
        }
        for target in fleet.targets().filter(|t| !t.spawner().survives_restart()) {
            warn!(
                target = target.name(),
                backend = target.backend(),
                "workloads of this backend end with the dispatcher: running jobs are retried after a restart"
            );
        }
        if settings.api.tokens.is_empty() {
            warn!(%local, "no api.tokens configured: the API is open to local users");
        }
        let ctx = Arc::new(Context::new(
            settings,
            queue,
            Arc::new(fleet),
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
    ///
    /// A background loop or the HTTP server that ends before shutdown fails the whole
    /// dispatcher: `/ready` turns 503, the failure is logged with its cause, everything is
    /// shut down as above, and the error is returned (the binary exits non-zero).
    pub async fn run(self) -> anyhow::Result<()> {
        let ctx = self.ctx;
        let addr = self.listener.local_addr()?;
        info!(%addr, backend = ctx.spawner.backend(), callback = %ctx.callback_base, "agentsmith is serving");
        crate::watchdog::reconcile(&ctx).await;
        let mut loops = Loops::start(&ctx);
        let app = crate::api::router(Arc::clone(&ctx));
        let shutdown = ctx.shutdown.clone();
        let drain_ctx = Arc::clone(&ctx);
        // The peer's address lets anonymous stream followers be capped per client.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(self.listener, app).with_graceful_shutdown(async move {
            shutdown.cancelled().await;
            drain_ctx.start_draining();
            info!("shutting down: draining requests and in-flight spawns");
        });
        let mut serving = tokio::spawn(async move { server.await });
        // A loop or the server ending after shutdown began is the shutdown, not a failure:
        // shutdown is looked at first.
        let failure = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => None,
            failure = loops.first_failure() => Some(failure.to_string()),
            served = &mut serving => Some(match served {
                Ok(Ok(())) => "the HTTP server stopped".to_string(),
                Ok(Err(e)) => format!("the HTTP server failed: {e}"),
                Err(e) => format!("the HTTP server task failed: {e}"),
            }),
        };
        let failure = failure.filter(|_| !ctx.shutdown.is_cancelled());
        if let Some(failure) = &failure {
            // Said once, with its cause, when the dispatcher has stopped (by whoever gets
            // the error); /ready says it from now on.
            ctx.fail(failure);
            warn!("the dispatcher can no longer do its work; shutting down");
            ctx.shutdown.cancel();
        }
        let grace = Duration::from_secs(ctx.settings.server.shutdown_grace_secs);
        let drained = tokio::time::timeout(grace, async {
            loops.stopped().await;
            if serving.is_finished() {
                return Ok(Ok(()));
            }
            serving.await
        })
        .await;
        match drained {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(e).context("serving HTTP"),
            Ok(Err(e)) => return Err(e).context("the HTTP server task failed"),
            Err(_) => warn!(
                ?grace,
                "drain did not finish within the grace period; exiting anyway"
            ),
        }
        if let Some(failure) = failure {
            anyhow::bail!(failure);
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
            // Wrong credentials or certificates do not get better by waiting.
            Err(e)
                if !e.is_misconfiguration()
                    && tokio::time::Instant::now() < deadline
                    && !shutdown.is_cancelled() =>
            {
                warn!(error = %chain(&e), redis = %redis_at, "waiting for redis");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to redis at {redis_at}")),
        }
    }
}

/// The stream node size above which a job's events take more memory than they need.
const STREAM_NODE_ADVISED: u64 = 1024;

/// Says at start-up when Redis allocates every job's event stream larger than it needs to
/// (Redis's default, 4096 bytes): a hint, not an error; the queue works on any setting.
async fn advise_stream_nodes(queue: &Queue) {
    if let Ok(Some(bytes)) = queue.stream_node_max_bytes().await {
        if bytes > STREAM_NODE_ADVISED {
            info!(
                stream_node_max_bytes = bytes,
                advised = STREAM_NODE_ADVISED,
                "Redis allocates each job's event stream at {bytes} bytes: with \
                 stream-node-max-bytes {STREAM_NODE_ADVISED} a finished job takes ~3 KB less \
                 (README, \"Redis's memory per job\")"
            );
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
