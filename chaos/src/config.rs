//! The settings file each replica runs with (`replica<i>.yml` in the temp dir): the Redis
//! (one server, the sentinels of the sentinel variant, or a node of the cluster variant's
//! cluster), the queue tuned for fast leases
//! and retries, the spawner of the variant, and the four agent profiles `quick`, `fail`,
//! `slow` and `sleeper`, which record every run they make.

use serde_json::json;

use crate::args::RedisKind;
use crate::world::{DockerRun, World};

/// The API token both replicas accept.
pub const TOKEN: &str = "chaos-token-0123456789abcdef";
/// The admission limit configured (and checked).
pub const MAX_CONCURRENT: u64 = 6;
/// `redis.prefix` of both replicas. Its hash tag puts every key of the queue in one slot,
/// as a cluster needs (the cluster variant kills that slot's primary); the other variants
/// do not mind it.
pub const PREFIX: &str = "{chaos}:";

/// The `spawner` section of the docker variant: containers on the default bridge (whose
/// gateway reaches the replicas and the recorder), never pulled, small limits so six fit
/// on a small machine, and a short reconcile period so the reconciler runs under the
/// faults too.
const DOCKER_SPAWNER: &str = "spawner:\n  type: docker\n  grace_secs: 2\n  reconcile_secs: 5\n  docker:\n    network: bridge\n    pull_policy: Never\n    ttl_after_finished_secs: 30\n    memory: \"128Mi\"\n    cpus: \"1\"\n    pids_limit: 64\n";

/// A YAML string (JSON's quoting is valid YAML).
pub fn yaml(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serialises")
}

/// The settings file of replica `i`.
pub fn replica(world: &World, i: usize) -> String {
    let port = world.ports[i];
    let host = &world.host;
    let (installation, spawner, [quick, fail, slow, sleeper]) = match &world.docker {
        None => (String::new(), process_spawner(world), process_agents(world)),
        Some(d) => (
            format!("  installation: {}\n", yaml(&d.installation)),
            DOCKER_SPAWNER.to_string(),
            docker_agents(d),
        ),
    };
    format!(
        "server:\n  bind: \"{host}:{port}\"\n  public_url: \"http://{host}:{port}\"\n{installation}  shutdown_grace_secs: 3\n  runner_secret: \"chaos-runner-secret-0123456789abcdef\"\n\
{redis}\
queue:\n  max_concurrent_jobs: {MAX_CONCURRENT}\n  lease_secs: 3\n  heartbeat_secs: 1\n  reclaim_idle_secs: 2\n  tick_ms: 200\n  backoff_base_secs: 1\n  backoff_max_secs: 2\n  max_attempts: 5\n  start_timeout_secs: 30\n\
{spawner}\
agents:\n  quick:\n{quick}  fail:\n{fail}  slow:\n{slow}  sleeper:\n{sleeper}\
api:\n  tokens: [\"{TOKEN}\"]\n\
log:\n  format: json\n",
        redis = redis(world),
    )
}

/// The `redis` section: the private server, or how to reach the primary of the sentinel
/// set or the cluster (see [`crate::topology::Topology::settings`]) with
/// `min_replicas_acked`. A 2 s timeout: a `WAIT` for the replica then waits 0.5 s at most.
fn redis(world: &World) -> String {
    let common = format!("  prefix: {}\n  timeout_secs: 2\n", yaml(PREFIX));
    match world.redis_kind {
        RedisKind::Single => format!(
            "redis:\n  url: \"redis://127.0.0.1:{}\"\n{common}",
            world.redis_port
        ),
        RedisKind::Sentinel | RedisKind::Cluster => format!(
            "redis:\n{common}{reach}  min_replicas_acked: {acked}\n",
            reach = world.topology(|t| t.settings()).unwrap_or_default(),
            acked = world.min_replicas_acked,
        ),
    }
}

/// The `spawner` section of the process variant.
fn process_spawner(world: &World) -> String {
    format!(
        "spawner:\n  type: process\n  grace_secs: 2\n  process:\n    runner_path: {runner}\n    work_root: {work}\n    keep_finished_secs: 30\n",
        runner = yaml(&world.runner.display().to_string()),
        work = yaml(&world.dir.join("work").display().to_string()),
    )
}

/// The profiles quick, fail, slow and sleeper of the process variant: they append
/// their runs to the RUNS file themselves.
fn process_agents(world: &World) -> [String; 4] {
    let runs = yaml(&world.runs_file().display().to_string());
    let rec = "echo \\\"$AGENTSMITH_JOB_ID $AGENTSMITH_ATTEMPT start\\\" >> \\\"$RUNS\\\"";
    let end = "echo \\\"$AGENTSMITH_JOB_ID $AGENTSMITH_ATTEMPT end\\\" >> \\\"$RUNS\\\"";
    let agent = |script: String, timeout: u64| {
        format!(
            "    command: [\"sh\", \"-c\", \"{script}\"]\n    env: {{RUNS: {runs}}}\n    timeout_secs: {timeout}\n"
        )
    };
    [
        agent(format!("{rec}; sleep 0.3; {end}"), 60),
        agent(format!("{rec}; {end}; exit 3"), 60),
        agent(format!("{rec}; sleep 30; {end}"), 2),
        agent(format!("{rec}; sleep 20; {end}"), 60),
    ]
}

/// The profiles quick, fail, slow and sleeper of the docker variant: the scripts of the
/// process variant, reporting to the recorder with busybox `wget` instead of appending to
/// the RUNS file. A report that fails stops the script, so no job can succeed without both
/// of its lines recorded.
fn docker_agents(d: &DockerRun) -> [String; 4] {
    let rec = "rec() { wget -q -O /dev/null \"$REC/run?job=$AGENTSMITH_JOB_ID&attempt=$AGENTSMITH_ATTEMPT&ev=$1\"; }; rec start";
    let agent = |script: String, timeout: u64| {
        format!(
            "    image: {image}\n    command: {command}\n    env: {{REC: {url}}}\n    timeout_secs: {timeout}\n",
            image = yaml(&d.engine.image),
            command = json!(["sh", "-c", script]),
            url = yaml(&d.recorder_url),
        )
    };
    [
        agent(format!("{rec} && sleep 0.3 && rec end"), 60),
        agent(format!("{rec} && rec end; exit 3"), 60),
        agent(format!("{rec} && sleep 30 && rec end"), 2),
        agent(format!("{rec} && sleep 20 && rec end"), 60),
    ]
}

/// Writes both replicas' settings files and starts both.
pub fn start_replicas(world: &World) -> anyhow::Result<()> {
    for i in 0..2 {
        std::fs::write(world.dir.join(format!("replica{i}.yml")), replica(world, i))?;
        world.start_replica(i)?;
    }
    Ok(())
}
