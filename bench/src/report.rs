//! The final table: measured figures against their targets.

use std::fmt::Write as _;
use std::time::Duration;

use crate::redis_info::BenchRedis;
use crate::{api, bullmq, lifecycle, slack};

/// Lifecycle throughput target (jobs/s).
pub const TARGET_JOBS_PER_SEC: f64 = 10_000.0;
/// POST throughput as a share of the hello-world's.
pub const TARGET_POST_SHARE: f64 = 0.40;
/// POST p99 latency bound.
pub const TARGET_POST_P99: Duration = Duration::from_millis(50);
/// Signed Slack slash commands per second as a share of the hello-world's (same generator).
pub const TARGET_SLACK_SHARE: f64 = 0.35;
/// Slack slash command ack p99 latency bound.
pub const TARGET_SLACK_P99: Duration = Duration::from_millis(50);
/// Idle RSS bound (bytes; 20 MB).
pub const TARGET_IDLE_RSS: u64 = 20_000_000;
/// Lifecycle throughput as a multiple of BullMQ's process rate.
pub const TARGET_LIFECYCLE_OVER_BULLMQ: f64 = 2.0;
/// `POST /v1/jobs` and Slack command rates as a multiple of BullMQ's add rate.
pub const TARGET_ACCEPT_OVER_BULLMQ: f64 = 1.0;
/// agentsmith's lifecycle Redis CPU per job over BullMQ's (add + process): below this.
pub const TARGET_REDIS_CPU_OVER_BULLMQ: f64 = 1.0;
/// Share of the machine other processes may use before a phase counts as disturbed.
const DISTURBED: f64 = 0.10;

/// The machine the figures come from.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Redis version.
    pub redis_version: String,
    /// wrk version line.
    pub wrk_version: String,
    /// The commit checked out when the bench ran, and whether the measured crates had
    /// uncommitted changes then (`bench/run.sh` builds right before running, so the
    /// binaries match it).
    pub code: String,
}

impl Machine {
    /// Reads it (nothing here fails the run).
    pub async fn read(redis: &BenchRedis) -> Self {
        let (cpus, cpu_model) = crate::sys::machine();
        let redis_version = redis
            .snapshot()
            .await
            .map(|s| s.version)
            .unwrap_or_else(|_| "?".into());
        let wrk_version = std::process::Command::new("wrk")
            .arg("-v")
            .output()
            .ok()
            .map(|o| {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                text.lines()
                    .next()
                    .and_then(|l| l.split(" [").next())
                    .unwrap_or("?")
                    .trim()
                    .to_string()
            })
            .unwrap_or_else(|| "not installed".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        Self {
            cpus,
            cpu_model,
            kernel,
            redis_version,
            wrk_version,
            code: code_version(),
        }
    }
}

/// `git rev-parse --short HEAD` of the workspace, marked when a measured crate (dispatcher/,
/// queue/, contract/, spawner/, agent-runner/) has uncommitted changes (read only).
fn code_version() -> String {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        // --no-optional-locks: reading must never rewrite the index.
        std::process::Command::new("git")
            .arg("--no-optional-locks")
            .arg("-C")
            .arg(&workspace)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    // The crates the phases measure: the queue (and its wire types) as much as the binaries.
    let measured = ["dispatcher", "queue", "contract", "spawner", "agent-runner"];
    let mut args = vec!["status", "--porcelain", "--"];
    args.extend(measured);
    match git(&args) {
        Some(changes) if !changes.is_empty() => {
            format!("{commit} + uncommitted changes in {}", measured.join("/"))
        }
        _ => commit,
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}

pub(crate) fn thousands(value: f64) -> String {
    let n = value.round() as i64;
    let digits = n.abs().to_string();
    let mut reversed = String::new();
    let mut group = 0;
    for c in digits.chars().rev() {
        if group == 3 {
            reversed.push(',');
            group = 0;
        }
        reversed.push(c);
        group += 1;
    }
    let out: String = reversed.chars().rev().collect();
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The whole report, as Markdown.
pub fn render(
    machine: &Machine,
    options: &str,
    lifecycle: Option<&lifecycle::Outcome>,
    bullmq: Option<&bullmq::Outcome>,
    api: Option<&api::Outcome>,
    slack: Option<&slack::Outcome>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(out, "## agentsmith bench");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Machine: {} × {} (Linux {}), redis {}, {}",
        machine.cpus, machine.cpu_model, machine.kernel, machine.redis_version, machine.wrk_version
    );
    let _ = writeln!(out, "Working tree at run time: {}", machine.code);
    let _ = writeln!(out, "Options: {options}");
    let _ = writeln!(out);
    let _ = writeln!(out, "| Figure | Measured | Target | Verdict |");
    let _ = writeln!(out, "|---|---:|---:|---|");
    let mut warnings: Vec<String> = Vec::new();
    let mut rows = String::new();
    let mut row = |figure: &str, measured: String, target: &str, verdict: &str| {
        let _ = writeln!(rows, "| {figure} | {measured} | {target} | {verdict} |");
    };
    if let Some(l) = lifecycle {
        lifecycle_rows(&mut row, &mut warnings, machine, l);
    }
    if let Some(b) = bullmq {
        bullmq_rows(&mut row, &mut warnings, machine, b);
    }
    if let Some(a) = api {
        api_rows(&mut row, &mut warnings, machine, a);
    }
    if let Some(s) = slack {
        slack_rows(&mut row, &mut warnings, machine, s);
    }
    if let Some(b) = bullmq {
        against_bullmq_rows(
            &mut row,
            b,
            lifecycle.map(Lifecycle::from),
            api.map(Accepted::from),
            slack.map(Accepted::from),
        );
    }
    out.push_str(&rows);
    for w in &warnings {
        let _ = writeln!(out, "\nWARNING: {w}");
    }
    if let Some(l) = lifecycle {
        lifecycle_details(&mut out, l);
    }
    if let Some(b) = bullmq {
        bullmq_details(&mut out, b);
    }
    if let Some(a) = api {
        let _ = writeln!(out);
        let _ = writeln!(out, "wrk, POST /v1/jobs:\n```\n{}```", a.post_text);
        let _ = writeln!(out, "wrk, hello-world:\n```\n{}```", a.hello_text);
    }
    out
}

/// The lifecycle phase's rows (and its warnings).
fn lifecycle_rows(
    row: &mut impl FnMut(&str, String, &str, &str),
    warnings: &mut Vec<String>,
    machine: &Machine,
    l: &lifecycle::Outcome,
) {
    let complete = l.problems.is_empty();
    row(
        &format!("Lifecycle throughput ({} jobs, noop spawner)", l.jobs),
        format!("{} jobs/s", thousands(l.jobs_per_sec())),
        &format!("≥ {} jobs/s", thousands(TARGET_JOBS_PER_SEC)),
        verdict(complete && l.jobs_per_sec() >= TARGET_JOBS_PER_SEC),
    );
    row(
        "  all jobs succeeded, spawn recorded, counters agree",
        if complete {
            format!("{} / {}", l.succeeded, l.jobs)
        } else {
            format!("{} problem(s)", l.problems.len())
        },
        "all",
        verdict(complete),
    );
    row(
        "  submit alone (until the last submit returned)",
        format!(
            "{} jobs/s",
            thousands(l.jobs as f64 / l.submit_wall.as_secs_f64().max(1e-9))
        ),
        "",
        "",
    );
    row(
        "  Redis CPU during the phase",
        format!(
            "{:.2} s ({:.0} % of one core; {:.0} µs/job)",
            l.redis.cpu_secs,
            100.0 * l.redis.cpu_secs / l.wall.as_secs_f64().max(1e-9),
            l.redis_cpu_us_per_job()
        ),
        "",
        "",
    );
    row(
        "  bench process CPU (dispatcher + clients + runners)",
        format!(
            "{:.2} s ({:.0} % of one core)",
            l.bench_cpu_secs,
            100.0 * l.bench_cpu_secs / l.wall.as_secs_f64().max(1e-9)
        ),
        "",
        "",
    );
    let capacity = l.wall.as_secs_f64().max(1e-9) * machine.cpus as f64;
    let other = (l.machine_busy_secs - l.redis.cpu_secs - l.bench_cpu_secs).max(0.0);
    row(
        "  whole machine busy / other processes / stolen by the hypervisor",
        format!(
            "{:.0} % / {:.0} % / {:.0} % of {} cores",
            100.0 * l.machine_busy_secs / capacity,
            100.0 * other / capacity,
            100.0 * l.steal_secs / capacity,
            machine.cpus,
        ),
        "",
        "",
    );
    if other / capacity > DISTURBED {
        warnings.push(format!(
            "other processes used {:.0} % of the machine during the lifecycle phase: its figures are disturbed",
            100.0 * other / capacity
        ));
    }
    row(
        "  Redis commands per job (incl. those run by scripts)",
        format!("{:.1}", l.commands_per_job()),
        "",
        "",
    );
    row(
        "  Redis calls per job: scripts / connection checks / socket reads",
        format!(
            "{:.2} EVALSHA / {:.2} PING+UNWATCH / {:.2} reads",
            l.per_job("evalsha") + l.per_job("eval"),
            l.per_job("ping"),
            l.reads_per_job(),
        ),
        "",
        "",
    );
}

/// The API phase's rows (and its warnings).
fn api_rows(
    row: &mut impl FnMut(&str, String, &str, &str),
    warnings: &mut Vec<String>,
    machine: &Machine,
    a: &api::Outcome,
) {
    let share = a.post.rps / a.hello.rps.max(1e-9);
    row(
        "POST /v1/jobs throughput",
        format!("{} req/s", thousands(a.post.rps)),
        "",
        "",
    );
    row(
        "axum hello-world throughput (same runtime)",
        format!(
            "{} req/s ({:.0} µs server CPU per request)",
            thousands(a.hello.rps),
            a.hello_cpu_secs * 1e6 / a.hello.requests.max(1) as f64
        ),
        "",
        "",
    );
    row(
        "POST / hello-world",
        format!("{:.1} %", share * 100.0),
        &format!("≥ {:.0} %", TARGET_POST_SHARE * 100.0),
        verdict(share >= TARGET_POST_SHARE),
    );
    row(
        "POST p99 latency",
        format!("{} (p50 {})", ms(a.post.p99), ms(a.post.p50)),
        &format!("< {}", ms(TARGET_POST_P99)),
        verdict(a.post.p99 < TARGET_POST_P99),
    );
    row(
        "POST non-2xx responses / socket errors",
        format!("{} / {}", a.post.non_2xx, a.post.socket_errors),
        "0 / 0",
        verdict(a.post.non_2xx == 0 && a.post.socket_errors == 0),
    );
    row(
        "  jobs stored during the POST run (wrk counted)",
        format!(
            "{} ({})",
            thousands(a.jobs_stored as f64),
            thousands(a.post.requests as f64)
        ),
        "",
        "",
    );
    let secs = a.post.duration.as_secs_f64().max(1e-9);
    let requests = a.post.requests.max(1) as f64;
    row(
        "  Redis CPU during the POST run",
        format!(
            "{:.2} s ({:.0} % of one core; per request {:.0} µs, {:.1} commands, {:.2} socket reads)",
            a.redis.cpu_secs,
            100.0 * a.redis.cpu_secs / secs,
            a.redis.cpu_secs * 1e6 / requests,
            a.redis.commands as f64 / requests,
            a.redis.reads as f64 / requests
        ),
        "",
        "",
    );
    row(
        "  agentsmith serve CPU during the POST run",
        format!(
            "{:.2} s ({:.0} % of one core; {:.0} µs per request)",
            a.server_cpu_secs,
            100.0 * a.server_cpu_secs / secs,
            a.server_cpu_secs * 1e6 / requests
        ),
        "",
        "",
    );
    let capacity = secs * machine.cpus as f64;
    let other =
        (a.machine_busy_secs - a.redis.cpu_secs - a.server_cpu_secs - a.load_cpu_secs).max(0.0);
    row(
        "  whole machine busy / wrk / other processes during the POST run",
        format!(
            "{:.0} % / {:.0} % / {:.0} % of {} cores",
            100.0 * a.machine_busy_secs / capacity,
            100.0 * a.load_cpu_secs / capacity,
            100.0 * other / capacity,
            machine.cpus
        ),
        "",
        "",
    );
    if other / capacity > DISTURBED {
        warnings.push(format!(
            "other processes used {:.0} % of the machine during the POST run: its figures are disturbed",
            100.0 * other / capacity
        ));
    }
    if a.hello_other_share > DISTURBED {
        warnings.push(format!(
            "other processes used {:.0} % of the machine during the hello-world run: its figures are disturbed",
            100.0 * a.hello_other_share
        ));
    }
    row(
        "RSS of agentsmith serve, idle",
        mb(a.rss_idle),
        &format!("≤ {}", mb(TARGET_IDLE_RSS)),
        verdict(a.rss_idle <= TARGET_IDLE_RSS),
    );
    row(
        "RSS of agentsmith serve, max under POST load",
        mb(a.rss_loaded),
        "",
        "",
    );
}

/// The BullMQ phase's rows (and its warnings).
fn bullmq_rows(
    row: &mut impl FnMut(&str, String, &str, &str),
    warnings: &mut Vec<String>,
    machine: &Machine,
    b: &bullmq::Outcome,
) {
    let complete = b.problems.is_empty();
    let (add, process) = (&b.add, &b.process);
    row(
        &format!(
            "BullMQ process rate ({} jobs, no-op processor, worker concurrency {})",
            b.jobs, b.concurrency
        ),
        format!("{} jobs/s", thousands(process.rate())),
        "",
        "",
    );
    row(
        "  all jobs added, then completed (BullMQ's job counts)",
        if complete {
            format!("{} / {}", process.count, b.jobs)
        } else {
            format!("{} problem(s)", b.problems.len())
        },
        "all",
        verdict(complete),
    );
    row(
        &format!(
            "BullMQ add rate (p50/p99), one Queue.add per job, {} in flight",
            b.in_flight
        ),
        format!(
            "{} adds/s ({} / {}, max {})",
            thousands(add.rate()),
            ms(add.p50),
            ms(add.p99),
            ms(add.max)
        ),
        "",
        "",
    );
    let jobs = b.jobs.max(1) as f64;
    row(
        "BullMQ Redis CPU per job (add + process)",
        format!(
            "{:.0} µs/job (add {:.0} + process {:.0}; {:.1} commands/job)",
            b.redis_cpu_us_per_job(),
            add.redis.cpu_secs * 1e6 / jobs,
            process.redis.cpu_secs * 1e6 / jobs,
            b.commands_per_job()
        ),
        "",
        "",
    );
    let per_core = |busy: f64, run: &bullmq::Run| {
        format!(
            "{busy:.2} s ({:.0} %)",
            100.0 * busy / run.lifetime.as_secs_f64().max(1e-9)
        )
    };
    row(
        "  Redis CPU while node ran, add / process (% of one core)",
        format!(
            "{} / {}",
            per_core(add.redis.cpu_secs, add),
            per_core(process.redis.cpu_secs, process)
        ),
        "",
        "",
    );
    let window = |run: &bullmq::Run| {
        format!(
            "{:.2} s ({:.0} %)",
            run.node_cpu_secs,
            100.0 * run.node_cpu_secs / run.wall.as_secs_f64().max(1e-9)
        )
    };
    row(
        "  node CPU in the timed window, add / process (% of one core)",
        format!("{} / {}", window(add), window(process)),
        "",
        "",
    );
    let info = |run: &bullmq::Run| run.redis.calls_of("info");
    row(
        "  Redis commands per job, add / process (incl. those run by scripts)",
        format!(
            "{:.1} / {:.1} ({:.2} / {:.2} script calls, {:.2} / {:.2} socket reads)",
            add.redis.commands.saturating_sub(info(add)) as f64 / jobs,
            process.redis.commands.saturating_sub(info(process)) as f64 / jobs,
            (add.redis.calls_of("evalsha") + add.redis.calls_of("eval")) as f64 / jobs,
            (process.redis.calls_of("evalsha") + process.redis.calls_of("eval")) as f64 / jobs,
            add.redis.reads as f64 / jobs,
            process.redis.reads as f64 / jobs,
        ),
        "",
        "",
    );
    let busy = |run: &bullmq::Run| {
        let capacity = run.lifetime.as_secs_f64().max(1e-9) * machine.cpus as f64;
        format!(
            "{:.0} % / {:.0} % / {:.0} %",
            100.0 * run.machine_busy_secs / capacity,
            100.0 * run.other_share(machine.cpus),
            100.0 * run.steal_secs / capacity
        )
    };
    row(
        "  whole machine busy / other processes / stolen by the hypervisor, add; process",
        format!("{}; {} of {} cores", busy(add), busy(process), machine.cpus),
        "",
        "",
    );
    for (what, run) in [("add", add), ("process", process)] {
        let other = run.other_share(machine.cpus);
        if other > DISTURBED {
            warnings.push(format!(
                "other processes used {:.0} % of the machine during BullMQ's {what} run: its figures are disturbed",
                100.0 * other
            ));
        }
    }
}

/// What the ratios against BullMQ take from an agentsmith phase that accepts jobs.
#[derive(Debug, Clone, Copy)]
struct Accepted {
    /// Requests per second.
    rate: f64,
    /// Their p99 latency.
    p99: Duration,
    /// No error answers or failed connections.
    clean: bool,
}

/// What the ratios against BullMQ take from the lifecycle phase.
#[derive(Debug, Clone, Copy)]
struct Lifecycle {
    jobs_per_sec: f64,
    redis_us_per_job: f64,
    commands_per_job: f64,
    /// Every job verified succeeded.
    complete: bool,
}

impl From<&lifecycle::Outcome> for Lifecycle {
    fn from(l: &lifecycle::Outcome) -> Self {
        Self {
            jobs_per_sec: l.jobs_per_sec(),
            redis_us_per_job: l.redis_cpu_us_per_job(),
            commands_per_job: l.commands_per_job(),
            complete: l.problems.is_empty(),
        }
    }
}

impl From<&api::Outcome> for Accepted {
    fn from(a: &api::Outcome) -> Self {
        Self {
            rate: a.post.rps,
            p99: a.post.p99,
            clean: a.post.non_2xx == 0 && a.post.socket_errors == 0,
        }
    }
}

impl From<&slack::Outcome> for Accepted {
    fn from(s: &slack::Outcome) -> Self {
        let run = &s.slack;
        Self {
            rate: run.rps(),
            p99: run.p99,
            clean: run.non_2xx == 0 && run.errors == 0 && run.unexpected == 0,
        }
    }
}

/// The ratios of agentsmith's figures to BullMQ's, for the agentsmith phases that ran.
fn against_bullmq_rows(
    row: &mut impl FnMut(&str, String, &str, &str),
    b: &bullmq::Outcome,
    lifecycle: Option<Lifecycle>,
    post: Option<Accepted>,
    slack: Option<Accepted>,
) {
    let complete = b.problems.is_empty();
    let times = |x: f64| format!("≥ {x:.0}×");
    if let Some(l) = lifecycle {
        let ratio = l.jobs_per_sec / b.process.rate().max(1e-9);
        row(
            "lifecycle / BullMQ process",
            format!(
                "{ratio:.2}× ({} / {} jobs/s)",
                thousands(l.jobs_per_sec),
                thousands(b.process.rate())
            ),
            &times(TARGET_LIFECYCLE_OVER_BULLMQ),
            verdict(complete && l.complete && ratio >= TARGET_LIFECYCLE_OVER_BULLMQ),
        );
    }
    let add = format!("{} adds/s, p99 {}", thousands(b.add.rate()), ms(b.add.p99));
    for (figure, side) in [
        ("POST /v1/jobs / BullMQ add", post),
        ("Slack commands / BullMQ add", slack),
    ] {
        let Some(side) = side else {
            continue;
        };
        let ratio = side.rate / b.add.rate().max(1e-9);
        row(
            figure,
            format!(
                "{ratio:.2}× ({} req/s, p99 {} / {add})",
                thousands(side.rate),
                ms(side.p99)
            ),
            &times(TARGET_ACCEPT_OVER_BULLMQ),
            verdict(complete && side.clean && ratio >= TARGET_ACCEPT_OVER_BULLMQ),
        );
    }
    if let Some(l) = lifecycle {
        let ratio = l.redis_us_per_job / b.redis_cpu_us_per_job().max(1e-9);
        row(
            "Redis CPU per job, agentsmith / BullMQ",
            format!(
                "{ratio:.2} ({:.0} / {:.0} µs; {:.1} / {:.1} commands)",
                l.redis_us_per_job,
                b.redis_cpu_us_per_job(),
                l.commands_per_job,
                b.commands_per_job()
            ),
            &format!("< {TARGET_REDIS_CPU_OVER_BULLMQ:.0}"),
            verdict(complete && l.complete && ratio < TARGET_REDIS_CPU_OVER_BULLMQ),
        );
    }
}

/// The BullMQ phase's problems and its Redis calls per job, below the table.
fn bullmq_details(out: &mut String, b: &bullmq::Outcome) {
    if !b.problems.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "BullMQ problems:");
        for p in &b.problems {
            let _ = writeln!(out, "- {p}");
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "BullMQ {} on node {} ({}): add {:.2} s, process {:.2} s for {} jobs; Redis commands \
         per job by name (its INFO calls and the bench's included):",
        b.install.version,
        b.install.node,
        b.install.dir.display(),
        b.add.wall.as_secs_f64(),
        b.process.wall.as_secs_f64(),
        b.jobs
    );
    let jobs = b.jobs.max(1) as f64;
    for (what, run) in [("add", &b.add), ("process", &b.process)] {
        let mut calls: Vec<(&String, &u64)> = run.redis.calls.iter().collect();
        calls.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let line: Vec<String> = calls
            .iter()
            .filter(|(_, n)| **n as f64 / jobs >= 0.005)
            .map(|(name, n)| format!("{name} {:.2}", **n as f64 / jobs))
            .collect();
        let script_us = run.redis.usec.get("evalsha").copied().unwrap_or(0)
            + run.redis.usec.get("eval").copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "- {what}: {}; time inside scripts {:.0} µs/job",
            line.join(", "),
            script_us as f64 / jobs
        );
    }
}

/// The lifecycle phase's problems and its Redis calls and time per job, below the table.
fn lifecycle_details(out: &mut String, l: &lifecycle::Outcome) {
    if !l.problems.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Lifecycle problems:");
        for p in &l.problems {
            let _ = writeln!(out, "- {p}");
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Lifecycle: {} jobs in {:.2} s; {} retried calls; Redis commands per job by name \
         (the bench's {} HSTRLEN probes and INFO calls included here, excluded above):",
        l.jobs,
        l.wall.as_secs_f64(),
        l.retries,
        l.probes
    );
    let mut calls: Vec<(&String, &u64)> = l.redis.calls.iter().collect();
    calls.sort_by(|a, b| b.1.cmp(a.1));
    let line: Vec<String> = calls
        .iter()
        .map(|(name, n)| format!("{name} {:.2}", **n as f64 / l.jobs.max(1) as f64))
        .collect();
    let _ = writeln!(out, "{}", line.join(", "));
    let jobs = l.jobs.max(1) as f64;
    let evalsha_us = l.redis.usec.get("evalsha").copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "Time inside EVALSHA: {:.0} µs/job; average script {:.1} µs.",
        evalsha_us as f64 / jobs,
        evalsha_us as f64 / l.redis.calls_of("evalsha").max(1) as f64
    );
    let mut usec: Vec<(&String, &u64)> = l
        .redis
        .usec
        .iter()
        .filter(|(name, us)| **us > 0 && name.as_str() != "evalsha")
        .collect();
    usec.sort_by(|a, b| b.1.cmp(a.1));
    let line: Vec<String> = usec
        .iter()
        .map(|(name, us)| format!("{name} {:.1}", **us as f64 / jobs))
        .collect();
    let _ = writeln!(
        out,
        "Redis time per job by command, µs (commands run by scripts are also inside EVALSHA's time): {}",
        line.join(", ")
    );
}

/// The slack phase's rows (and its warnings).
fn slack_rows(
    row: &mut impl FnMut(&str, String, &str, &str),
    warnings: &mut Vec<String>,
    machine: &Machine,
    s: &slack::Outcome,
) {
    let (slack, hello) = (&s.slack, &s.hello);
    let share = slack.rps() / hello.rps().max(1e-9);
    row(
        &format!(
            "Slack slash commands, signed, each a new job ({} connections)",
            s.connections
        ),
        format!("{} req/s", thousands(slack.rps())),
        "",
        "",
    );
    row(
        "axum hello-world, same load generator",
        format!(
            "{} req/s (p50 {}, p99 {})",
            thousands(hello.rps()),
            ms(hello.p50),
            ms(hello.p99)
        ),
        "",
        "",
    );
    row(
        "Slack / hello-world",
        format!("{:.1} %", share * 100.0),
        &format!("≥ {:.0} %", TARGET_SLACK_SHARE * 100.0),
        verdict(share >= TARGET_SLACK_SHARE),
    );
    row(
        "Slack ack p99 latency",
        format!(
            "{} (p50 {}, max {})",
            ms(slack.p99),
            ms(slack.p50),
            ms(slack.max)
        ),
        &format!("< {}", ms(TARGET_SLACK_P99)),
        verdict(slack.p99 < TARGET_SLACK_P99),
    );
    let clean = |r: &slack::Run| r.non_2xx == 0 && r.errors == 0 && r.unexpected == 0;
    row(
        "Slack non-2xx / connection errors / answers without a new job",
        format!(
            "{} / {} / {}",
            slack.non_2xx, slack.errors, slack.unexpected
        ),
        "0 / 0 / 0",
        verdict(clean(slack)),
    );
    row(
        "  jobs stored during the Slack run (answers that said queued), warm-up included",
        format!(
            "{} ({})",
            thousands(s.jobs_stored as f64),
            thousands(slack.expected as f64)
        ),
        "",
        "",
    );
    if !clean(hello) {
        warnings.push(format!(
            "the hello-world had {} non-2xx answers, {} connection errors and {} unexpected answers",
            hello.non_2xx, hello.errors, hello.unexpected
        ));
    }
    slack_cost_rows(row, warnings, machine, s);
}

/// What the slack phase cost: Redis, server, load generator and the whole machine.
fn slack_cost_rows(
    row: &mut impl FnMut(&str, String, &str, &str),
    warnings: &mut Vec<String>,
    machine: &Machine,
    s: &slack::Outcome,
) {
    let (slack, hello) = (&s.slack, &s.hello);
    let secs = slack.window.as_secs_f64().max(1e-9);
    let requests = slack.requests.max(1) as f64;
    row(
        "  Redis CPU during the Slack run",
        format!(
            "{:.2} s ({:.0} % of one core; per request {:.0} µs, {:.1} commands, {:.2} socket reads)",
            s.redis.cpu_secs,
            100.0 * s.redis.cpu_secs / secs,
            s.redis.cpu_secs * 1e6 / requests,
            s.redis.commands as f64 / requests,
            s.redis.reads as f64 / requests
        ),
        "",
        "",
    );
    for (what, run) in [("Slack", slack), ("hello-world", hello)] {
        row(
            &format!("  server / load generator CPU during the {what} run"),
            format!(
                "{:.2} s / {:.2} s ({:.0} / {:.0} µs per request)",
                run.server_cpu_secs,
                run.load_cpu_secs,
                run.server_us_per_request(),
                run.load_cpu_secs * 1e6 / run.requests.max(1) as f64
            ),
            "",
            "",
        );
    }
    for (what, run, others) in [
        (
            "Slack",
            slack,
            slack.server_cpu_secs + slack.load_cpu_secs + s.redis.cpu_secs,
        ),
        (
            "hello-world",
            hello,
            hello.server_cpu_secs + hello.load_cpu_secs,
        ),
    ] {
        let capacity = run.window.as_secs_f64().max(1e-9) * machine.cpus as f64;
        let other = (run.machine_busy_secs - others).max(0.0);
        row(
            &format!("  whole machine busy / other processes during the {what} run"),
            format!(
                "{:.0} % / {:.0} % of {} cores",
                100.0 * run.machine_busy_secs / capacity,
                100.0 * other / capacity,
                machine.cpus
            ),
            "",
            "",
        );
        if other / capacity > DISTURBED {
            warnings.push(format!(
                "other processes used {:.0} % of the machine during the {what} run: its figures are disturbed",
                100.0 * other / capacity
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bullmq_outcome(add_rate: f64, process_rate: f64, redis_cpu_secs: f64) -> bullmq::Outcome {
        let run = |rate: f64| bullmq::Run {
            count: 1_000,
            wall: Duration::from_secs_f64(1_000.0 / rate),
            lifetime: Duration::from_secs(1),
            redis: crate::redis_info::Delta {
                cpu_secs: redis_cpu_secs / 2.0,
                commands: 10_000,
                ..Default::default()
            },
            ..Default::default()
        };
        bullmq::Outcome {
            install: bullmq::Install {
                dir: "/cache/agentsmith/bullmq-5.81.5".into(),
                version: "5.81.5".into(),
                node: "v20.20.2".into(),
            },
            jobs: 1_000,
            concurrency: 100,
            in_flight: 50,
            add: run(add_rate),
            process: run(process_rate),
            problems: Vec::new(),
        }
    }

    fn machine() -> Machine {
        Machine {
            cpus: 2,
            cpu_model: "test".into(),
            kernel: "test".into(),
            redis_version: "7.0.15".into(),
            wrk_version: "wrk 4.1.0".into(),
            code: "abc1234".into(),
        }
    }

    fn line_of<'a>(report: &'a str, figure: &str) -> Option<&'a str> {
        report
            .lines()
            .find(|line| line.starts_with(&format!("| {figure} |")))
    }

    fn ratio_rows(
        b: &bullmq::Outcome,
        lifecycle: Option<Lifecycle>,
        post: Option<Accepted>,
        slack: Option<Accepted>,
    ) -> String {
        let mut rows = String::new();
        let mut row = |figure: &str, measured: String, target: &str, verdict: &str| {
            let _ = writeln!(rows, "| {figure} | {measured} | {target} | {verdict} |");
        };
        against_bullmq_rows(&mut row, b, lifecycle, post, slack);
        rows
    }

    fn lifecycle_at(jobs_per_sec: f64, redis_us_per_job: f64) -> Lifecycle {
        Lifecycle {
            jobs_per_sec,
            redis_us_per_job,
            commands_per_job: 40.0,
            complete: true,
        }
    }

    fn accepted_at(rate: f64) -> Accepted {
        Accepted {
            rate,
            p99: Duration::from_millis(20),
            clean: true,
        }
    }

    #[test]
    fn ratios_against_bullmq_are_judged_when_both_sides_ran() {
        let b = bullmq_outcome(8_000.0, 5_000.0, 0.4);
        let rows = ratio_rows(
            &b,
            Some(lifecycle_at(12_000.0, 300.0)),
            Some(accepted_at(9_000.0)),
            Some(accepted_at(7_000.0)),
        );
        let lifecycle = line_of(&rows, "lifecycle / BullMQ process").expect("a ratio row");
        assert!(lifecycle.contains("2.40×"), "{lifecycle}");
        assert!(lifecycle.ends_with("| ≥ 2× | PASS |"), "{lifecycle}");
        let post = line_of(&rows, "POST /v1/jobs / BullMQ add").expect("a ratio row");
        assert!(post.contains("1.12× (9,000 req/s, p99 20.00 ms"), "{post}");
        assert!(post.ends_with("| ≥ 1× | PASS |"), "{post}");
        let slack = line_of(&rows, "Slack commands / BullMQ add").expect("a ratio row");
        assert!(slack.ends_with("| ≥ 1× | MISS |"), "{slack}");
        let cpu = line_of(&rows, "Redis CPU per job, agentsmith / BullMQ").expect("a ratio row");
        assert!(cpu.contains("0.75 (300 / 400 µs"), "{cpu}");
        assert!(cpu.ends_with("| < 1 | PASS |"), "{cpu}");

        let rows = ratio_rows(&b, Some(lifecycle_at(2_500.0, 500.0)), None, None);
        for figure in [
            "lifecycle / BullMQ process",
            "Redis CPU per job, agentsmith / BullMQ",
        ] {
            let line = line_of(&rows, figure).expect("a ratio row");
            assert!(line.ends_with("| MISS |"), "{line}");
        }
    }

    #[test]
    fn a_ratio_is_missed_when_either_side_failed_its_checks() {
        let mut b = bullmq_outcome(8_000.0, 5_000.0, 0.4);
        let unclean = Accepted {
            clean: false,
            ..accepted_at(20_000.0)
        };
        let rows = ratio_rows(&b, None, Some(unclean), None);
        let post = line_of(&rows, "POST /v1/jobs / BullMQ add").expect("a ratio row");
        assert!(post.ends_with("| MISS |"), "{post}");
        b.problems.push("process: 999 completed".into());
        let rows = ratio_rows(&b, Some(lifecycle_at(50_000.0, 10.0)), None, None);
        let lifecycle = line_of(&rows, "lifecycle / BullMQ process").expect("a ratio row");
        assert!(lifecycle.ends_with("| MISS |"), "{lifecycle}");
    }

    #[test]
    fn a_ratio_row_is_left_out_when_its_phase_did_not_run() {
        let b = bullmq_outcome(8_000.0, 5_000.0, 0.4);
        let report = render(&machine(), "", None, Some(&b), None, None);
        assert!(line_of(
            &report,
            "BullMQ process rate (1000 jobs, no-op processor, worker concurrency 100)"
        )
        .is_some());
        assert!(line_of(&report, "BullMQ Redis CPU per job (add + process)").is_some());
        for figure in [
            "lifecycle / BullMQ process",
            "POST /v1/jobs / BullMQ add",
            "Slack commands / BullMQ add",
            "Redis CPU per job, agentsmith / BullMQ",
        ] {
            assert!(line_of(&report, figure).is_none(), "{figure}");
        }
        let rows = ratio_rows(&b, None, None, Some(accepted_at(9_000.0)));
        assert_eq!(rows.lines().count(), 1, "{rows}");
        let report = render(&machine(), "", None, None, None, None);
        assert!(!report.contains("BullMQ"));
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-12345.0), "-12,345");
    }
}
