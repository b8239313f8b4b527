//! Spawn latency of the kubernetes spawner, beside `kubectl create` of the same Job in the
//! same run: the real `agentsmith serve` binary with `spawner.type: kubernetes` runs N jobs
//! one after another and N at once (an agent that echoes one line), and kubectl creates a
//! Job of the same image, security context and command (`sh -c`, without the runner) and
//! waits for it to complete, N times one after another and N at once.
//!
//! agentsmith's figures come from the job record's own timestamps (submitted, runner
//! started = pod running, finished). kubectl's are wall time from `kubectl create` to
//! `kubectl wait --for=condition=complete` returning.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::docker::{
    build_image, latencies, latency_table, start_server, verdicts, Series, IMAGE, SCRIPT,
};
use crate::redis_info::BenchRedis;
use crate::sys::free_port;

const TOKEN: &str = crate::api::TOKEN;

/// Where the binaries and the cluster are.
#[derive(Debug, Clone)]
pub struct Config {
    /// `target/release/agentsmith`.
    pub agentsmith: PathBuf,
    /// `target/release/agent-runner` (put in the image).
    pub runner: PathBuf,
    /// The cluster's kubeconfig.
    pub kubeconfig: PathBuf,
    /// kubectl.
    pub kubectl: PathBuf,
    /// An address of this machine that pods reach.
    pub callback_host: String,
    /// Jobs per series.
    pub jobs: usize,
    /// Key prefix, installation and namespace suffix.
    pub tag: String,
}

/// What the kubernetes phase measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Jobs per series.
    pub jobs: usize,
    /// Sequential: submitted → pod running (runner started).
    pub seq_running: Series,
    /// Sequential: submitted → succeeded.
    pub seq_succeeded: Series,
    /// Sequential `kubectl create` → complete.
    pub seq_kubectl: Series,
    /// Concurrent: submitted → pod running.
    pub conc_running: Series,
    /// Concurrent: submitted → succeeded.
    pub conc_succeeded: Series,
    /// Concurrent `kubectl create` → complete.
    pub conc_kubectl: Series,
}

fn kubectl(cfg: &Config) -> Command {
    let mut command = Command::new(&cfg.kubectl);
    command.arg("--kubeconfig").arg(&cfg.kubeconfig);
    command
}

fn run_kubectl(cfg: &Config, args: &[&str]) -> anyhow::Result<String> {
    let out = kubectl(cfg)
        .args(args)
        .output()
        .with_context(|| format!("running {} {args:?}", cfg.kubectl.display()))?;
    if !out.status.success() {
        bail!(
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The plain Job kubectl creates: the same image, security context and agent command.
fn plain_job(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": {"agentsmith-bench/baseline": "true"}},
        "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 30, "template": {"spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001,
                "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "agent", "image": IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", SCRIPT],
                "securityContext": {"allowPrivilegeEscalation": false, "privileged": false,
                    "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": true},
                "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "tmp", "mountPath": "/tmp"}]}],
            "volumes": [{"name": "work", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]}}}
    })
    .to_string()
}

/// `kubectl create` of a plain Job, then `kubectl wait` for it to complete: milliseconds.
async fn kubectl_once(cfg: Config, namespace: String, name: String) -> anyhow::Result<f64> {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let manifest = dir_file(&name, &plain_job(&name))?;
        run_kubectl(&cfg, &["-n", &namespace, "create", "-f", &manifest])?;
        run_kubectl(
            &cfg,
            &[
                "-n",
                &namespace,
                "wait",
                "--for=condition=complete",
                "--timeout=180s",
                &format!("job/{name}"),
            ],
        )?;
        let took = started.elapsed().as_secs_f64() * 1000.0;
        let _ = std::fs::remove_file(&manifest);
        Ok(took)
    })
    .await
    .context("a kubectl task failed")?
}

fn dir_file(name: &str, text: &str) -> anyhow::Result<String> {
    let path = std::env::temp_dir().join(format!("agentsmith-bench-{name}.json"));
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

/// Runs the phase.
pub async fn run(redis: &BenchRedis, cfg: &Config, dir: &Path) -> anyhow::Result<Outcome> {
    for (what, path) in [
        ("agentsmith", &cfg.agentsmith),
        ("agent-runner", &cfg.runner),
    ] {
        if !path.is_file() {
            bail!(
                "{what} not found at {} (build it with cargo build --release -p agentsmith -p agent-runner)",
                path.display()
            );
        }
    }
    build_image(&cfg.runner)?;
    let namespace = format!("agentsmith-bench-{}", cfg.tag);
    run_kubectl(cfg, &["create", "namespace", &namespace])?;
    let result = measure(redis, cfg, dir, &namespace).await;
    let _ = run_kubectl(cfg, &["delete", "namespace", &namespace, "--wait=false"]);
    result
}

async fn measure(
    redis: &BenchRedis,
    cfg: &Config,
    dir: &Path,
    namespace: &str,
) -> anyhow::Result<Outcome> {
    // The namespace's default service account comes a moment after the namespace.
    let deadline = Instant::now() + Duration::from_secs(30);
    while run_kubectl(cfg, &["-n", namespace, "get", "serviceaccount", "default"]).is_err() {
        if Instant::now() > deadline {
            bail!("namespace {namespace} got no default service account");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let host = cfg.callback_host.clone();
    let port = free_port()?;
    let config = format!(
        "server:\n  bind: \"{host}:{port}\"\n  shutdown_grace_secs: 2\n  installation: \"bench-{tag}\"\n\
redis:\n  url: {url}\n  prefix: \"bench-{tag}-k8s:\"\n\
queue:\n  max_concurrent_jobs: {jobs}\n  start_timeout_secs: 300\n\
spawner:\n  type: kubernetes\n  grace_secs: 2\n  kubernetes:\n    kubeconfig: {kubeconfig}\n    namespace: \"{namespace}\"\n    image_pull_policy: Never\n    ttl_seconds_after_finished: 30\n    cpu_request: \"\"\n    memory: \"\"\n    cpus: \"\"\n\
agents:\n  hello:\n    image: \"{IMAGE}\"\n    command: [\"sh\", \"-c\", \"{SCRIPT}\"]\n    timeout_secs: 300\n\
api:\n  tokens: [\"{TOKEN}\"]\n\
log:\n  format: json\n",
        url = serde_json::to_string(&redis.url)?,
        tag = cfg.tag,
        jobs = cfg.jobs.max(1),
        kubeconfig = serde_json::to_string(&cfg.kubeconfig.display().to_string())?,
    );
    let mut server = start_server(&cfg.agentsmith, &config, dir, &host, port, "kubernetes").await?;

    eprintln!("bench: kubernetes: warm-up (one job, one kubectl Job; not counted)");
    let warm = server.submit("warm-up").await?;
    server.wait_all(&[warm]).await?;
    kubectl_once(cfg.clone(), namespace.into(), "baseline-warm".into()).await?;

    let n = cfg.jobs;
    let mut outcome = Outcome {
        jobs: n,
        ..Outcome::default()
    };
    eprintln!("bench: kubernetes: {n} jobs one after another");
    let mut sequential = Vec::new();
    for i in 0..n {
        let id = server.submit(&format!("sequential {i}")).await?;
        sequential.extend(server.wait_all(&[id]).await?);
    }
    (outcome.seq_running, outcome.seq_succeeded) = latencies(&sequential)?;

    eprintln!("bench: kubernetes: {n} kubectl Jobs one after another");
    for i in 0..n {
        let ms = kubectl_once(cfg.clone(), namespace.into(), format!("baseline-seq-{i}")).await?;
        outcome.seq_kubectl.ms.push(ms);
    }

    eprintln!("bench: kubernetes: {n} jobs at once");
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(server.submit(&format!("concurrent {i}")).await?);
    }
    let concurrent = server.wait_all(&ids).await?;
    (outcome.conc_running, outcome.conc_succeeded) = latencies(&concurrent)?;

    eprintln!("bench: kubernetes: {n} kubectl Jobs at once");
    let runs: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(kubectl_once(
                cfg.clone(),
                namespace.into(),
                format!("baseline-conc-{i}"),
            ))
        })
        .collect();
    for run in runs {
        outcome
            .conc_kubectl
            .ms
            .push(run.await.context("a kubectl task failed")??);
    }
    server.child.stop(Duration::from_secs(5)).await;
    Ok(outcome)
}

/// The phase's Markdown table.
pub fn render(outcome: &Outcome) -> String {
    let mut out = latency_table(
        "Kubernetes spawner",
        outcome.jobs,
        &[
            ("sequential: submitted → pod running", &outcome.seq_running),
            ("sequential: submitted → succeeded", &outcome.seq_succeeded),
            (
                "sequential: `kubectl create` → complete",
                &outcome.seq_kubectl,
            ),
            ("concurrent: submitted → pod running", &outcome.conc_running),
            ("concurrent: submitted → succeeded", &outcome.conc_succeeded),
            (
                "concurrent: `kubectl create` → complete",
                &outcome.conc_kubectl,
            ),
        ],
    );
    out.push('\n');
    out.push_str(&verdicts(
        "`kubectl`",
        "within 10 %",
        1.1,
        &[
            ("sequential", &outcome.seq_succeeded, &outcome.seq_kubectl),
            ("concurrent", &outcome.conc_succeeded, &outcome.conc_kubectl),
        ],
    ));
    out
}
