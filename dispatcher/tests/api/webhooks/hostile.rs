//! The hostile agent (`testkit`'s `hostile-agent`) on each backend: from inside its
//! workload it attacks Redis, the runner's environment and memory, the runner routes, the
//! output bounds, the reply markup, the process backend's process groups and the disk, and
//! reports each outcome. Every attack must fail or be neutralised, the dispatcher must stay
//! ready with bounded memory, a normal job beside it must succeed untouched, and the fake
//! Slack must receive the neutralised reply. The report is printed (`--nocapture` shows it).
//!
//! The dispatcher's Redis here asks for a password and listens where agents can reach it
//! (the Docker bridge's gateway too), so the attack on it is real.

use std::time::{Duration, Instant};

use queue::JobState;
use spawner::conformance::lab::{agent_image, DockerLab, KubernetesLab};
use spawner::conformance::{Lab, KEEP_FINISHED};
use spawner::SpawnerKind;
use testkit::redis::RedisServer;

use super::*;

const PASSWORD: &str = "hostile-test-redis-password-4242";
const HOSTILE_LIMIT: Duration = Duration::from_secs(300);
/// What the attempt may record of its output here (the default is 16 MiB).
const OUTPUT_LIMIT: u64 = 4 << 20;

/// Where the hostile agent runs.
enum Backend {
    Process,
    Docker(DockerLab),
    Kubernetes(KubernetesLab),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Process => "process",
            Backend::Docker(_) => "docker",
            Backend::Kubernetes(_) => "kubernetes",
        }
    }

    /// The address the dispatcher listens on and agents reach it and Redis by.
    fn host(&self) -> String {
        match self {
            Backend::Process => "127.0.0.1".into(),
            Backend::Docker(lab) => lab.callback_host(),
            Backend::Kubernetes(lab) => lab.callback_host(),
        }
    }
}

/// The hostile agent's binary, built beside the test.
fn hostile_binary() -> PathBuf {
    runner_path().with_file_name("hostile-agent")
}

/// The agent image with the hostile agent added (built locally, once per run).
fn hostile_image() -> String {
    let tag = format!("agentsmith-hostile:{}", std::process::id());
    let dir = TempDir::new("hostile-image");
    std::fs::copy(hostile_binary(), dir.path().join("hostile-agent")).unwrap();
    let dockerfile = format!(
        "FROM {}\nCOPY hostile-agent /usr/local/bin/hostile-agent\n",
        agent_image()
    );
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    let built = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(dir.path())
        // The classic builder: the engine here may have no buildx.
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    tag
}

/// A process group that is not the agent's: the process backend must never signal it.
struct Victim(std::process::Child);

impl Victim {
    fn start() -> Self {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap();
        Self(child)
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Processes that the hostile agent `setsid`-ed out of its group, still alive.
fn escapees() -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let environ = entry.path().join("environ");
        if let Ok(bytes) = std::fs::read(&environ) {
            if bytes.split(|b| *b == 0).any(|v| v == b"HOSTILE_ESCAPEE=1") {
                found.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    found
}

/// Settings for `backend`: every source on the fake, a password Redis, the hostile agent
/// as the project's, and a normal agent.
fn hostile_settings(
    backend: &Backend,
    fake: &FakeApi,
    redis: &RedisServer,
    victim: Option<&Victim>,
) -> Settings {
    let mut s = test_settings(&random_prefix());
    configure(&mut s, fake);
    let host = backend.host();
    s.server.bind = format!("{host}:0");
    s.redis.url = SecretString::from(format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port()));
    s.queue.max_attempts = 1;
    s.queue.output_bytes_per_attempt = OUTPUT_LIMIT;
    s.queue.start_timeout_secs = 120;
    let mut hostile = sh_agent("unused");
    hostile.timeout_secs = 240;
    let mut normal = sh_agent(
        "for i in 1 2 3; do echo normal-$i; sleep 1; done; \
         printf '{\"summary\":\"normal done\"}' > \"$AGENTSMITH_RESULT_FILE\"",
    );
    let env = &mut hostile.env;
    env.insert("HOSTILE_REDIS".into(), format!("{host}:{}", redis.port()));
    env.insert("HOSTILE_LINE_MB".into(), "100".into());
    // 256 MiB: past the attempt's bound 64 times over. (1 GiB holds the same, but takes
    // minutes through debug builds of the runner and the dispatcher.)
    env.insert("HOSTILE_FLOOD_MB".into(), "256".into());
    match backend {
        Backend::Process => {
            hostile.command = vec![hostile_binary().display().to_string()];
            // The tests run as root, who may read any process's memory: agents run as
            // nobody, as the README tells a root dispatcher to do.
            s.spawner.process.agent_user = Some(spawner::backend::process::AgentUser {
                uid: 65534,
                gid: 65534,
            });
            let victim = victim.expect("the process backend's test has a victim");
            env.insert("HOSTILE_VICTIM_PGID".into(), victim.0.id().to_string());
        }
        Backend::Docker(lab) => {
            s.spawner.kind = SpawnerKind::Docker;
            s.spawner.docker = lab.settings(KEEP_FINISHED);
            s.server.installation = lab.installation().to_string();
        }
        Backend::Kubernetes(lab) => {
            s.spawner.kind = SpawnerKind::Kubernetes;
            s.spawner.kubernetes = lab.settings(KEEP_FINISHED);
            s.server.installation = lab.installation().to_string();
        }
    }
    if !matches!(backend, Backend::Process) {
        let image = hostile_image();
        hostile.image = image.clone();
        hostile.command = vec!["hostile-agent".into()];
        hostile.disk = Some("64Mi".parse().unwrap());
        // Past its disk: the work directory's bound must stop it (docker: the tmpfs says
        // ENOSPC; kubernetes: the kubelet evicts the pod).
        env.insert("HOSTILE_FILL_MB".into(), "256".into());
        env.insert("HOSTILE_FILL_HOLD_SECS".into(), "60".into());
        if matches!(backend, Backend::Kubernetes(_)) {
            // The kubelet's eviction ends the pod: the floods go first.
            env.insert("HOSTILE_FILL_LAST".into(), "1".into());
        }
        normal.image = image;
    }
    s.agents.insert("hostile".into(), hostile);
    s.agents.insert("normal".into(), normal);
    s.projects.get_mut("payments").unwrap().agent = "hostile".into();
    s
}

/// The dispatcher process's resident memory now and at its peak (kB).
fn rss_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Redis's peak memory (bytes), as it reports it.
fn redis_peak(redis: &RedisServer) -> u64 {
    let client =
        redis::Client::open(format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port())).unwrap();
    let mut conn = client.get_connection().unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory_peak:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A Redis that asks for a password, listening where agents reach `host` too.
fn password_redis(host: &str) -> RedisServer {
    let mut binds = vec!["--bind", "127.0.0.1"];
    if host != "127.0.0.1" {
        binds.push(host);
    }
    let mut redis = RedisServer::new().args(&binds).args(&[
        "--requirepass",
        PASSWORD,
        "--protected-mode",
        "yes",
    ]);
    redis.start().unwrap();
    redis
}

/// Queues the normal job before the dispatcher starts, so the agent can be told its id
/// (to forge events into it), and tells the agent where the dispatcher will listen.
async fn queue_normal_job(settings: &mut Settings, host: &str) -> String {
    let beside = queue::Queue::new(&settings.redis, &settings.queue).unwrap();
    let normal = match beside
        .submit(&queue::NewJob {
            agent: "normal".into(),
            task: "beside".into(),
            timeout_secs: 60,
            ..Default::default()
        })
        .await
        .unwrap()
    {
        queue::Submission::Created(job) => job.id,
        other => panic!("{other:?}"),
    };
    let port = testkit::free_port();
    settings.server.bind = format!("{host}:{port}");
    let env = &mut settings.agents.get_mut("hostile").unwrap().env;
    env.insert("HOSTILE_OTHER_JOB".into(), normal.clone());
    env.insert("HOSTILE_CALLBACK".into(), format!("http://{host}:{port}"));
    normal
}

/// `/agent fix PAY-66` in Slack, which runs the hostile agent; its job id.
async fn summon(app: &TestApp, fake: &FakeApi, normal: &str) -> String {
    let url = response_url(fake, "hostile");
    let command = slash_command("fix PAY-66", REQUESTER, "t.hostile", &url);
    let request = to_slack(app, "commands", &command, Sign::Right, unix_now());
    let (status, answer) = send(request).await;
    assert_eq!(status, 200, "{answer}");
    listed_jobs(app)
        .await
        .into_iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .find(|id| id != normal)
        .unwrap()
}

/// Waits for `job` to end, asking `/ready` every half second; how often it was not 200.
async fn not_ready_while(app: &TestApp, job: &str) -> usize {
    let mut not_ready = 0;
    let deadline = Instant::now() + HOSTILE_LIMIT;
    loop {
        let ready = app.http.get(format!("{}/ready", app.address)).send().await;
        if !ready.map(|r| r.status() == 200).unwrap_or(false) {
            not_ready += 1;
        }
        if app.job(job).await.state.is_terminal() || Instant::now() > deadline {
            return not_ready;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the hostile agent left in its job's record.
struct Transcript {
    report: Vec<String>,
    lines: usize,
    longest: usize,
    recorded: usize,
    truncations: usize,
}

impl Transcript {
    fn of(lines: &[String]) -> Self {
        Self {
            report: lines
                .iter()
                .filter(|l| l.starts_with("hostile: "))
                .cloned()
                .collect(),
            lines: lines.len(),
            longest: lines.iter().map(String::len).max().unwrap_or(0),
            recorded: lines.iter().map(String::len).sum(),
            truncations: lines
                .iter()
                .filter(|l| l.contains("output truncated"))
                .count(),
        }
    }

    /// Every attack reported, none breached, the output within its bounds.
    fn holds(&self) {
        let report = &self.report;
        for line in report {
            assert!(!line.contains("BREACHED"), "{line}");
        }
        for attack in [
            "runner-memory",
            "redis",
            "redis-guess",
            "credential-replay",
            "events-with-credential",
            "events-forged-token",
            "other-job",
            "result-injection",
            "huge-line",
        ] {
            let prefix = format!("hostile: {attack}: ");
            assert!(
                report.iter().any(|l| l.starts_with(&prefix)),
                "no report of {attack}: {report:#?}"
            );
        }
        let longest = self.longest;
        assert!(
            longest <= queue::MAX_RECORDED_LINE_BYTES + 64,
            "a line of {longest} bytes"
        );
        let recorded = self.recorded;
        assert!(
            recorded as u64 <= OUTPUT_LIMIT + 64 * 1024,
            "{recorded} bytes recorded"
        );
        assert_eq!(self.truncations, 1, "one truncation notice");
    }
}

/// The kubelet evicts a pod past its ephemeral-storage limit or an emptyDir past its
/// sizeLimit: the messages of the hostile job's evicted pods.
async fn evictions(lab: &KubernetesLab, job: &str) -> Vec<String> {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(lab.client().await, lab.namespace());
    let selector = format!("{}={job}", contract::labels::JOB_ID);
    let listed = pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .unwrap();
    listed
        .items
        .iter()
        .filter_map(|p| p.status.as_ref())
        .filter(|s| s.reason.as_deref() == Some("Evicted"))
        .map(|s| s.message.clone().unwrap_or_default())
        .collect()
}

/// The attempt's credential came from a Secret of its own, which its Job owns (so
/// Kubernetes removes it with the Job).
async fn credential_secrets_are_owned_by_their_jobs(lab: &KubernetesLab, job: &str) {
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(lab.client().await, lab.namespace());
    let selector = format!("{}={job}", contract::labels::JOB_ID);
    let listed = secrets
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1, "one credential Secret per attempt");
    let owners = listed.items[0]
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    assert!(
        owners
            .iter()
            .any(|o| o.kind == "Job" && o.name == contract::workload_name(job, 1)),
        "{owners:?}"
    );
}

/// The hostile job's reply reached Slack with nothing live in it.
async fn reply_is_inert(fake: &FakeApi) {
    let reply = fake
        .wait_for("the hostile job's reply", LIMIT, |r| {
            r.body.to_string().contains("boom")
        })
        .await;
    eprintln!("the reply as Slack got it: {}", reply.text());
    let whole = reply.body.to_string();
    // Slack's live markup is `<...>`: a markdown link is only text there.
    for live in ["<!channel>", "<!here>", "|Click here>", "<javascript"] {
        assert!(!whole.contains(live), "{live} reached Slack: {whole}");
    }
}

async fn hostile_run(backend: Backend) {
    let started = Instant::now();
    let fake = FakeApi::start().await;
    let host = backend.host();
    let redis = password_redis(&host);
    let mut victim = matches!(backend, Backend::Process).then(Victim::start);
    let mut settings = hostile_settings(&backend, &fake, &redis, victim.as_ref());
    let normal = queue_normal_job(&mut settings, &host).await;
    let app = start(settings, None).await;
    let hostile = summon(&app, &fake, &normal).await;

    let not_ready = not_ready_while(&app, &hostile).await;
    let hostile_job = app.job(&hostile).await;
    let normal_job = app.wait_for_end(&normal, LIMIT).await;
    let (rss, rss_peak) = rss_kb();
    let redis_peak = redis_peak(&redis);
    let transcript = Transcript::of(&app.log_lines(&hostile).await);
    eprintln!(
        "== the hostile agent on the {} backend ({:?})",
        backend.name(),
        started.elapsed()
    );
    for line in &transcript.report {
        eprintln!("{line}");
    }
    eprintln!(
        "hostile job {:?} ({:?}); normal job {:?}; {} lines recorded, {} bytes, longest {}; \
         /ready failed {not_ready} times; test process RSS {rss} kB (peak {rss_peak} kB); Redis peak {redis_peak} bytes",
        hostile_job.state, hostile_job.reason, normal_job.state, transcript.lines, transcript.recorded, transcript.longest
    );

    transcript.holds();
    assert_eq!(not_ready, 0, "the dispatcher stayed ready");
    assert!(
        rss_peak < 1024 * 1024,
        "the test process peaked at {rss_peak} kB"
    );
    assert!(redis_peak < 256 << 20, "Redis peaked at {redis_peak} bytes");
    assert_eq!(
        normal_job.state,
        JobState::Succeeded,
        "{:?}",
        normal_job.reason
    );
    assert_eq!(
        app.log_lines(&normal).await,
        ["normal-1", "normal-2", "normal-3"],
        "the normal job's transcript is its own"
    );
    let report = &transcript.report;
    match &backend {
        Backend::Process => {
            assert!(
                victim.as_mut().unwrap().alive(),
                "the victim's group was killed"
            );
            let left = escapees();
            assert!(
                left.is_empty(),
                "setsid escapees outlived the job: {left:?}"
            );
        }
        Backend::Docker(_) => assert!(
            report
                .iter()
                .any(|l| l.starts_with("hostile: fill-disk: blocked")),
            "the disk bound held: {report:#?}"
        ),
        Backend::Kubernetes(lab) => {
            credential_secrets_are_owned_by_their_jobs(lab, &hostile).await;
            let evicted = evictions(lab, &hostile).await;
            eprintln!("hostile pod evicted: {evicted:?}");
            assert!(
                !evicted.is_empty(),
                "the disk bound held: {:?}",
                hostile_job.reason
            );
        }
    }
    if !matches!(backend, Backend::Kubernetes(_)) {
        // Evicted in Kubernetes, the agent writes no result: elsewhere it ends well.
        assert_eq!(
            hostile_job.state,
            JobState::Succeeded,
            "{:?}",
            hostile_job.reason
        );
        reply_is_inert(&fake).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_agent_on_the_process_backend_gets_nothing_it_may_not_have() {
    hostile_run(Backend::Process).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Docker and the agent image: scripts/test provides them"]
async fn a_hostile_agent_in_docker_gets_nothing_it_may_not_have() {
    hostile_run(Backend::Docker(DockerLab::new().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster: scripts/k8s-testenv/start.sh and AGENTSMITH_TEST_KUBECONFIG"]
async fn a_hostile_agent_on_kubernetes_gets_nothing_it_may_not_have() {
    hostile_run(Backend::Kubernetes(KubernetesLab::new().await)).await;
}
