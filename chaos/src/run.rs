//! The chaos run, phase by phase: start the world, put load and faults on it for
//! `--duration`, bring both replicas back, drain, then reach the verdict and print it.
//! [`Ctx`] is what the load, the faults and the verdict share.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::args::{RedisKind, RunArgs};
use crate::config;
use crate::ctx::{Ctx, Stats};
use crate::kind::Acked;
use crate::load;
use crate::verdict::{self, Verdict};
use crate::world::World;
use crate::{failover, faults, recorder, report};

/// The chaos run, from nothing to the verdict: whether every promise held. Everything it
/// started is cleaned up before it returns, on Ctrl-C too.
pub fn run(args: RunArgs) -> anyhow::Result<bool> {
    let (world, recorder_listener) = World::prepare(&args)?;
    let world = Arc::new(world);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = chaos(args, world.clone(), recorder_listener) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    world.cleanup();
    outcome
}

async fn chaos(
    args: RunArgs,
    world: Arc<World>,
    recorder_listener: Option<TcpListener>,
) -> anyhow::Result<bool> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .build()?;
    let ctx = Arc::new(Ctx {
        world: world.clone(),
        http,
        stats: Stats::default(),
        stop_faults: AtomicBool::new(false),
        replica_ops: tokio::sync::Mutex::new(()),
    });
    let recorded = start_recorder(&world, recorder_listener)?;
    // Blocking: a sentinel set or a cluster takes seconds to settle.
    let starting = world.clone();
    tokio::task::spawn_blocking(move || starting.start_redis()).await??;
    config::start_replicas(&world)?;
    for i in 0..2 {
        if !ctx.wait_health(i, Duration::from_secs(30)).await {
            bail!(
                "replica {i} did not answer /health (see {})",
                world.dir.display()
            );
        }
    }
    let (jobs, duration_secs) = (args.jobs(), args.duration());
    let duration = Duration::from_secs(duration_secs);
    let t0 = Instant::now();
    let redis = match world.redis_kind {
        RedisKind::Single => format!("redis on {}", world.redis_port),
        RedisKind::Sentinel | RedisKind::Cluster => format!(
            "{}, min_replicas_acked {}",
            world.topology(|t| t.describe()).unwrap_or_default(),
            world.min_replicas_acked
        ),
    };
    eprintln!(
        "replicas on {:?}, {redis}, {} jobs over {} s, temp dir {}",
        world.ports,
        jobs,
        duration_secs,
        world.dir.display()
    );
    if let Some(d) = &world.docker {
        eprintln!(
            "docker spawner: image {}, installation {}, replicas and recorder on {} (recorder {})",
            d.engine.image, d.installation, d.engine.gateway, d.recorder_url
        );
    }

    let sampling_done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(verdict::sample_admitted(ctx.clone(), sampling_done.clone()));
    load_and_faults(&ctx, jobs, duration, args.failovers).await;
    bring_up_both(&ctx).await?;
    eprintln!(
        "[{:>5.1}s] faults stopped; draining (up to {} s)",
        t0.elapsed().as_secs_f64(),
        args.drain
    );
    let acked = ctx.stats.acked.lock().expect("lock").clone();
    drain(&ctx, &acked, Duration::from_secs(args.drain)).await;
    let drain_secs = t0.elapsed().as_secs_f64() - duration.as_secs_f64();
    sampling_done.store(true, Ordering::SeqCst);
    let _ = tokio::time::timeout(Duration::from_secs(10), sampler).await;

    let verdict = Verdict::reach(&ctx, &acked).await;
    let broken = report::print(&ctx, &verdict, jobs, drain_secs, &recorded);
    Ok(broken.is_empty())
}

/// In the docker variant, serves the agents' run reports into the RUNS file.
fn start_recorder(
    world: &World,
    listener: Option<TcpListener>,
) -> anyhow::Result<Arc<recorder::Counts>> {
    let recorded = Arc::new(recorder::Counts::default());
    if let Some(listener) = listener {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tokio::spawn(recorder::serve(
            listener,
            world.runs_file(),
            recorded.clone(),
        ));
    }
    Ok(recorded)
}

/// Submits `jobs` over `duration - 10 s` while the faults run for `duration`; returns once
/// the faults have stopped and every submit has been answered (each bounded). The Redis
/// fault is one crash of the single server, or `failovers` primary kills of the sentinel
/// set or the cluster spread over the load.
async fn load_and_faults(ctx: &Arc<Ctx>, jobs: usize, duration: Duration, failovers: u32) {
    let run_tag = format!("chaos-{:08x}", rand::random::<u32>());
    let spread = duration
        .saturating_sub(Duration::from_secs(10))
        .max(Duration::from_secs(1));
    let load = tokio::spawn(load::load(ctx.clone(), jobs, spread, run_tag));
    let redis_fault = match ctx.world.redis_kind {
        RedisKind::Single => tokio::spawn(faults::redis_fault(ctx.clone(), duration.mul_f64(0.4))),
        RedisKind::Sentinel | RedisKind::Cluster => {
            tokio::spawn(failover::primary_faults(ctx.clone(), spread, failovers))
        }
    };
    let faults = [
        tokio::spawn(faults::replica_faults(ctx.clone(), duration)),
        tokio::spawn(faults::runner_faults(ctx.clone(), duration)),
        redis_fault,
    ];
    tokio::time::sleep(duration).await;
    ctx.stop_faults.store(true, Ordering::SeqCst);
    for f in faults {
        let _ = tokio::time::timeout(Duration::from_secs(60), f).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(60), load).await;
}

/// Both replicas up for the drain: one that does not answer and has exited is started
/// again.
async fn bring_up_both(ctx: &Ctx) -> anyhow::Result<()> {
    for i in 0..2 {
        if !ctx.health(i).await {
            let _guard = ctx.replica_ops.lock().await;
            if ctx.world.replica_gone(i) {
                ctx.world.start_replica(i)?;
            }
            ctx.wait_health(i, Duration::from_secs(20)).await;
        }
    }
    Ok(())
}

/// Polls every acknowledged job about once a second until all have ended (or are gone),
/// for at most `limit`.
async fn drain(ctx: &Ctx, acked: &[Acked], limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut pending: Vec<&Acked> = acked.iter().collect();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for job in pending {
            let terminal = match ctx
                .get(job.index % 2, &format!("/v1/jobs/{}", job.id))
                .await
            {
                Some((200, v)) => v["state"].as_str().is_some_and(verdict::is_terminal),
                Some((404, _)) => true,
                _ => false,
            };
            if !terminal {
                still.push(job);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
