//! The final table: measured figures against their targets.

use std::fmt::Write as _;
use std::time::Duration;

use crate::redis_info::BenchRedis;
use crate::{api, bullmq, lifecycle, slack};

mod peer;
use self::peer::{against_bullmq_rows, bullmq_details, bullmq_rows, Accepted, Lifecycle};

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
mod tests;
