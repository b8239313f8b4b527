//! BullMQ beside agentsmith: the BullMQ phase's rows, and agentsmith's figures as ratios
//! of BullMQ's.

use std::fmt::Write as _;
use std::time::Duration;

use super::*;
use crate::{api, bullmq, lifecycle, slack};

/// The BullMQ phase's rows (and its warnings).
pub(super) fn bullmq_rows(
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
pub(super) struct Accepted {
    /// Requests per second.
    pub(super) rate: f64,
    /// Their p99 latency.
    pub(super) p99: Duration,
    /// No error answers or failed connections.
    pub(super) clean: bool,
}

/// What the ratios against BullMQ take from the lifecycle phase.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lifecycle {
    pub(super) jobs_per_sec: f64,
    pub(super) redis_us_per_job: f64,
    pub(super) commands_per_job: f64,
    /// Every job verified succeeded.
    pub(super) complete: bool,
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
pub(super) fn against_bullmq_rows(
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
pub(super) fn bullmq_details(out: &mut String, b: &bullmq::Outcome) {
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
