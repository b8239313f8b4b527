//! The report's verdicts and ratios, from outcomes made in the test.

use super::peer::{against_bullmq_rows, Accepted, Lifecycle};
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
