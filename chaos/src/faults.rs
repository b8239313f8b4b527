//! The faults injected while the load runs: replica SIGKILLs and SIGSTOPs every ~10 s and
//! one SIGTERM rolling restart at 60 %; a runner SIGKILL (a container `docker kill` in the
//! docker variant) every 2–4 s; one Redis SIGKILL and restart at 40 %. Each loop stops
//! when [`Ctx::stop_faults`] is set or its duration is over.

use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::Rng;

use crate::ctx::{now_ms, Ctx};
use crate::docker;

/// Every 10 s: SIGKILL one replica (alternating) and restart it, or every third time
/// freeze it for 4 s instead; once, at 60 % of `duration`, a rolling SIGTERM restart of
/// both.
pub async fn replica_faults(ctx: Arc<Ctx>, duration: Duration) {
    let start = Instant::now();
    let rolling_at = duration.mul_f64(0.6);
    let mut rolled = false;
    let mut victim = 0;
    let mut round = 0u32;
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if ctx.stop_faults.load(Ordering::SeqCst) || start.elapsed() >= duration {
            return;
        }
        if !rolled && start.elapsed() >= rolling_at {
            rolled = true;
            eprintln!(
                "[{:>5.1}s] rolling SIGTERM restart",
                start.elapsed().as_secs_f64()
            );
            rolling_restart(&ctx).await;
            continue;
        }
        round += 1;
        if round.is_multiple_of(3) {
            eprintln!(
                "[{:>5.1}s] SIGSTOP replica {victim} for 4 s",
                start.elapsed().as_secs_f64()
            );
            freeze_replica(&ctx, victim, Duration::from_secs(4)).await;
        } else {
            eprintln!(
                "[{:>5.1}s] SIGKILL replica {victim}",
                start.elapsed().as_secs_f64()
            );
            kill_replica_and_restart(&ctx, victim).await;
        }
        victim = 1 - victim;
    }
}

/// SIGKILLs replica `i`, and starts it again a second later on the same port.
async fn kill_replica_and_restart(ctx: &Ctx, i: usize) {
    let _guard = ctx.replica_ops.lock().await;
    if let Some(mut child) = ctx.world.signal_replica(i, Signal::SIGKILL) {
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        ctx.stats.fault("replica SIGKILL");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    restart_replica(ctx, i).await;
}

/// Starts replica `i` and waits (up to 20 s) for it to answer `/health`; a failure is
/// printed, and the run goes on.
async fn restart_replica(ctx: &Ctx, i: usize) {
    if let Err(e) = ctx.world.start_replica(i) {
        eprintln!("restarting replica {i}: {e:#}");
    }
    if !ctx.wait_health(i, Duration::from_secs(20)).await {
        eprintln!("replica {i} did not come back healthy within 20 s");
    }
}

/// Freezes a replica (its callback endpoint stops answering; runners buffer), then thaws it.
async fn freeze_replica(ctx: &Ctx, i: usize, pause: Duration) {
    let _guard = ctx.replica_ops.lock().await;
    let Some(pid) = ctx.world.replica_pid(i) else {
        return;
    };
    if kill(Pid::from_raw(pid), Signal::SIGSTOP).is_ok() {
        ctx.stats
            .fault("replica SIGSTOP 4 s (callbacks unreachable)");
        tokio::time::sleep(pause).await;
        let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
    }
}

/// A deploy: SIGTERM each replica in turn, wait for it to exit (SIGKILL after 20 s), start
/// it again and wait for `/health` before the next.
async fn rolling_restart(ctx: &Ctx) {
    let _guard = ctx.replica_ops.lock().await;
    for i in 0..2 {
        if let Some(mut child) = ctx.world.signal_replica(i, Signal::SIGTERM) {
            let waited = tokio::task::spawn_blocking(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Some(status);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
                None
            })
            .await;
            match waited {
                Ok(Some(status)) => eprintln!("replica {i} stopped on SIGTERM: {status}"),
                _ => eprintln!("replica {i} did not stop within 20 s of SIGTERM: killed"),
            }
            ctx.stats.fault("replica SIGTERM (rolling)");
        }
        restart_replica(ctx, i).await;
    }
}

/// Every 2–4 s: SIGKILL a random runner of this run, or `docker kill` a random running
/// container of it in the docker variant.
pub async fn runner_faults(ctx: Arc<Ctx>, duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration && !ctx.stop_faults.load(Ordering::SeqCst) {
        let wait = rand::thread_rng().gen_range(2000..4000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if ctx.world.docker.is_some() {
            if kill_a_container(&ctx).await {
                ctx.stats.fault("runner container docker kill");
            }
            continue;
        }
        let runners: Vec<i32> = ctx
            .world
            .our_processes()
            .into_iter()
            .filter(|(_, is_runner)| *is_runner)
            .map(|(pid, _)| pid)
            .collect();
        if runners.is_empty() {
            continue;
        }
        let pid = runners[rand::thread_rng().gen_range(0..runners.len())];
        if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
            ctx.stats.fault("runner SIGKILL");
        }
    }
}

/// `docker kill` of a random running container of this run, logged with its name in
/// `container-kills.log`; whether one was killed.
async fn kill_a_container(ctx: &Ctx) -> bool {
    let Some(d) = &ctx.world.docker else {
        return false;
    };
    let installation = d.installation.clone();
    let log = ctx.world.dir.join("container-kills.log");
    tokio::task::spawn_blocking(move || {
        let running = docker::containers(&installation, true).unwrap_or_default();
        if running.is_empty() {
            return false;
        }
        let victim = &running[rand::thread_rng().gen_range(0..running.len())];
        let killed = docker::kill(victim);
        if killed {
            // Which attempt was hit, for reading the replica logs afterwards.
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .and_then(|mut f| writeln!(f, "{} {}", now_ms(), victim.name));
        }
        killed
    })
    .await
    .unwrap_or(false)
}

/// At `at`: SIGKILL Redis, and restart it a second later with the same port and data.
pub async fn redis_fault(ctx: Arc<Ctx>, at: Duration) {
    tokio::time::sleep(at).await;
    if ctx.stop_faults.load(Ordering::SeqCst) {
        return;
    }
    eprintln!("[{:>5.1}s] SIGKILL redis", at.as_secs_f64());
    let world = ctx.world.clone();
    let _ = tokio::task::spawn_blocking(move || world.kill_redis()).await;
    ctx.stats.fault("redis SIGKILL + restart");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let world = ctx.world.clone();
    match tokio::task::spawn_blocking(move || world.start_redis()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("restarting redis: {e:#}"),
        Err(e) => eprintln!("restarting redis: {e}"),
    }
}
