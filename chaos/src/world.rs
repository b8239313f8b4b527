//! The processes a chaos run owns: a private Redis (or, in the sentinel variant, a primary,
//! a replica and three sentinels; in the cluster variant, three primaries with a replica
//! each), two `agentsmith serve` replicas, and the runners and agents (processes, or
//! containers in the docker variant) they spawn; how they are started, signalled and
//! found, and the cleanup that kills them all.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use testkit::cluster::RedisCluster;
use testkit::redis::RedisServer;
use testkit::sentinel::{SentinelSet, SetOptions};

use crate::args::{RedisKind, RunArgs, SpawnerKind};
use crate::docker;
use crate::topology::Topology;

/// What the docker variant adds to a run.
pub struct DockerRun {
    /// The engine, checked, with the bridge gateway.
    pub engine: docker::Engine,
    /// `server.installation` of both replicas: the label that finds this run's containers.
    pub installation: String,
    /// Base URL of the recorder, as the agents in containers reach it.
    pub recorder_url: String,
}

/// The run's Redis.
enum Redis {
    /// One server, on [`World::redis_port`].
    Single(RedisServer),
    /// A primary, a replica and three sentinels, once started.
    Sentinel(SetOptions, Option<SentinelSet>),
    /// Three primaries with a replica each, once started.
    Cluster(SetOptions, Option<RedisCluster>),
}

/// Every child process, container and path the run owns; cleans up on drop.
pub struct World {
    /// The run's temp dir: settings, logs, the RUNS file, Redis's data, work dirs.
    pub dir: PathBuf,
    keep: bool,
    /// Redis's AOF fsync policy (`always` or `everysec`).
    pub appendfsync: String,
    /// One Redis, a Sentinel set or a cluster.
    pub redis_kind: RedisKind,
    /// `redis.min_replicas_acked` of the replicas (sentinel and cluster variants; 0
    /// otherwise).
    pub min_replicas_acked: u32,
    agentsmith: PathBuf,
    /// The `agent-runner` binary (the process spawner's `runner_path`).
    pub runner: PathBuf,
    /// The address the replicas bind and are reached at: 127.0.0.1, or the Docker bridge
    /// gateway in the docker variant (so runners in containers can call back).
    pub host: String,
    /// Set in the docker variant.
    pub docker: Option<DockerRun>,
    /// The private Redis's port (not used in the sentinel and cluster variants).
    pub redis_port: u16,
    /// The replicas' ports.
    pub ports: [u16; 2],
    redis: Mutex<Redis>,
    replicas: [Mutex<Option<Child>>; 2],
    /// How many times each replica was started (for log file names).
    starts: [AtomicU64; 2],
    /// Set once cleaned up.
    cleaned: AtomicBool,
}

impl World {
    /// Checks the binaries (and, in the docker variant, the engine and the image), makes
    /// the temp dir and picks the ports; starts nothing yet. In the docker variant it also
    /// returns the recorder's listener, bound on the bridge gateway.
    pub fn prepare(args: &RunArgs) -> anyhow::Result<(World, Option<TcpListener>)> {
        let bin_dir = match &args.bin_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("the binary has a directory")?
                .to_path_buf(),
        };
        let agentsmith = bin_dir.join("agentsmith");
        let runner = bin_dir.join("agent-runner");
        // The docker variant's runner is the one in the image.
        let needed = match args.spawner {
            SpawnerKind::Process => vec![&agentsmith, &runner],
            SpawnerKind::Docker => vec![&agentsmith],
        };
        for p in needed {
            if !p.is_file() {
                bail!(
                    "{} is missing: build it first (cargo build [--release] -p agentsmith -p agent-runner)",
                    p.display()
                );
            }
        }
        let (host, docker, recorder_listener) = match args.spawner {
            SpawnerKind::Process => ("127.0.0.1".to_string(), None, None),
            SpawnerKind::Docker => {
                let (run, listener) = DockerRun::prepare(&args.image, &runner)?;
                (run.engine.gateway.clone(), Some(run), Some(listener))
            }
        };
        let dir =
            std::env::temp_dir().join(format!("agentsmith-chaos-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(dir.join("redis"))?;
        std::fs::create_dir_all(dir.join("work"))?;
        let redis_port = testkit::free_port();
        let persistence = ["--appendonly", "yes", "--appendfsync", &args.appendfsync];
        let server_args = persistence.iter().map(|a| a.to_string()).collect();
        let redis = match args.redis {
            RedisKind::Single => Redis::Single(
                RedisServer::at(redis_port, &dir.join("redis"))
                    .args(&persistence)
                    .log(&dir.join("redis.log")),
            ),
            RedisKind::Sentinel => Redis::Sentinel(
                SetOptions {
                    dir: Some(dir.join("redis")),
                    server_args,
                },
                None,
            ),
            RedisKind::Cluster => Redis::Cluster(
                SetOptions {
                    dir: Some(dir.join("redis")),
                    server_args,
                },
                None,
            ),
        };
        let world = World {
            dir,
            keep: args.keep,
            appendfsync: args.appendfsync.clone(),
            redis_kind: args.redis,
            min_replicas_acked: match args.redis {
                RedisKind::Single => 0,
                RedisKind::Sentinel | RedisKind::Cluster => args.min_replicas_acked,
            },
            agentsmith,
            runner,
            redis_port,
            ports: [
                testkit::net::free_port_on(&host),
                testkit::net::free_port_on(&host),
            ],
            host,
            docker,
            redis: Mutex::new(redis),
            replicas: [Mutex::new(None), Mutex::new(None)],
            starts: [AtomicU64::new(0), AtomicU64::new(0)],
            cleaned: AtomicBool::new(false),
        };
        Ok((world, recorder_listener))
    }

    /// The RUNS file: one `"<job id> <attempt> start|end"` line per run an agent made.
    pub fn runs_file(&self) -> PathBuf {
        self.dir.join("runs.txt")
    }

    /// Starts Redis (again, after [`World::kill_redis`]) and waits until it listens; in
    /// the sentinel and cluster variants, starts the set or the cluster and waits until
    /// it can fail over (blocks up to a minute).
    pub fn start_redis(&self) -> anyhow::Result<()> {
        match &mut *self.redis.lock().expect("lock") {
            Redis::Single(server) => server.start().map_err(anyhow::Error::msg),
            Redis::Sentinel(options, set) => {
                if set.is_none() {
                    *set = Some(SentinelSet::start(options).map_err(anyhow::Error::msg)?);
                }
                Ok(())
            }
            Redis::Cluster(options, cluster) => {
                if cluster.is_none() {
                    *cluster = Some(RedisCluster::start(options).map_err(anyhow::Error::msg)?);
                }
                Ok(())
            }
        }
    }

    /// SIGKILLs Redis, as a crash would; in the sentinel and cluster variants, every
    /// server, sentinel and node (the end of the run).
    pub fn kill_redis(&self) {
        match &mut *self.redis.lock().expect("lock") {
            Redis::Single(server) => server.kill(),
            Redis::Sentinel(_, set) => drop(set.take()),
            Redis::Cluster(_, cluster) => drop(cluster.take()),
        }
    }

    /// The sentinel and cluster variants: `f` on the running set or cluster (blocking:
    /// call it off the runtime's threads); `None` in the single-Redis variant or before it
    /// is started.
    pub fn topology<T>(&self, f: impl FnOnce(&mut dyn Topology) -> T) -> Option<T> {
        match &mut *self.redis.lock().expect("lock") {
            Redis::Sentinel(_, Some(set)) => Some(f(set)),
            Redis::Cluster(_, Some(cluster)) => Some(f(cluster)),
            _ => None,
        }
    }

    /// Starts replica `i` (again), logging to a file of its own for each start.
    pub fn start_replica(&self, i: usize) -> anyhow::Result<()> {
        let n = self.starts[i].fetch_add(1, Ordering::SeqCst);
        let log = std::fs::File::create(self.dir.join(format!("replica{i}.{n}.log")))?;
        let mut command = Command::new(&self.agentsmith);
        command
            .arg("serve")
            .arg("--config")
            .arg(self.dir.join(format!("replica{i}.yml")))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (key, _) in std::env::vars() {
            if key.starts_with("AGENTSMITH") {
                command.env_remove(key);
            }
        }
        let child = command.spawn().context("starting agentsmith serve")?;
        *self.replicas[i].lock().expect("lock") = Some(child);
        Ok(())
    }

    /// Sends `signal` to replica `i` and hands its process over (to wait for); `None` when
    /// it is not running.
    pub fn signal_replica(&self, i: usize, signal: Signal) -> Option<Child> {
        let child = self.replicas[i].lock().expect("lock").take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), signal);
        Some(child)
    }

    /// Replica `i`'s process id, while the harness holds it.
    pub fn replica_pid(&self, i: usize) -> Option<i32> {
        self.replicas[i]
            .lock()
            .expect("lock")
            .as_ref()
            .map(|c| c.id() as i32)
    }

    /// Whether replica `i` has no running process (never started, taken, or exited).
    pub fn replica_gone(&self, i: usize) -> bool {
        self.replicas[i]
            .lock()
            .expect("lock")
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Our runner and agent processes: their environment names our temp dir. Each with
    /// whether it is a runner (argv[0] is the runner binary).
    pub fn our_processes(&self) -> Vec<(i32, bool)> {
        let tag = self.dir.display().to_string();
        let me = std::process::id() as i32;
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if !String::from_utf8_lossy(&environ).contains(&tag) {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            let is_runner = Path::new(&*String::from_utf8_lossy(argv0)) == self.runner;
            found.push((pid, is_runner));
        }
        found
    }

    /// Kills everything the run started and removes the temp dir (unless `--keep`); runs
    /// once, whatever called it first.
    pub fn cleanup(&self) {
        if self.cleaned.swap(true, Ordering::SeqCst) {
            return;
        }
        for i in 0..2 {
            if let Some(mut child) = self.signal_replica(i, Signal::SIGKILL) {
                let _ = child.wait();
            }
        }
        for _ in 0..3 {
            for (pid, _) in self.our_processes() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(d) = &self.docker {
            // Twice: a create the killed replicas had in flight may still land.
            let mut removed = docker::remove_all(&d.installation);
            std::thread::sleep(Duration::from_millis(500));
            removed += docker::remove_all(&d.installation);
            // Not eprintln!: a closed stderr must not stop the cleanup half-way.
            let _ = writeln!(
                std::io::stderr(),
                "removed {removed} container(s) labelled agentsmith.io/installation={}",
                d.installation
            );
        }
        self.kill_redis();
        if self.keep {
            eprintln!("kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.cleanup();
    }
}

impl DockerRun {
    /// Checks the engine and the image before anything starts, and binds the recorder on
    /// the bridge gateway, where containers reach it (and the replicas, later).
    fn prepare(image: &str, runner: &Path) -> anyhow::Result<(DockerRun, TcpListener)> {
        let engine = docker::Engine::check(image, runner)?;
        let listener = TcpListener::bind((engine.gateway.as_str(), 0)).with_context(|| {
            format!(
                "binding the recorder on the Docker bridge gateway {}",
                engine.gateway
            )
        })?;
        let recorder_url = format!("http://{}", listener.local_addr()?);
        let run = DockerRun {
            installation: format!("chaos-{:012x}", rand::random::<u64>() >> 16),
            recorder_url,
            engine,
        };
        Ok((run, listener))
    }
}
