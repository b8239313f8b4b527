//! Running `wrk` and reading its report.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};

/// What one `wrk` run reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Requests/sec.
    pub rps: f64,
    /// Requests completed.
    pub requests: u64,
    /// How long the run took ("N requests in 10.01s").
    pub duration: Duration,
    /// 50th percentile latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// "Non-2xx or 3xx responses" (0 when wrk prints no such line).
    pub non_2xx: u64,
    /// Socket errors (connect + read + write + timeout).
    pub socket_errors: u64,
}

/// How to load a server.
#[derive(Debug, Clone)]
pub struct Load {
    /// wrk threads.
    pub threads: usize,
    /// Open connections.
    pub connections: usize,
    /// Seconds.
    pub duration: u64,
}

/// Runs wrk against `url`, with `script` if given; returns its parsed report and raw text.
pub async fn run(
    load: &Load,
    url: &str,
    script: Option<&Path>,
) -> anyhow::Result<(Report, String)> {
    let mut command = tokio::process::Command::new("wrk");
    command
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration))
        .arg("--latency");
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    command.arg(url).kill_on_drop(true);
    let output = command
        .output()
        .await
        .context("running wrk (is it installed? bench/run.sh installs it)")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            output.status,
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report = parse(&text).with_context(|| format!("reading wrk's report:\n{text}"))?;
    Ok((report, text))
}

/// Parses wrk's text report.
pub fn parse(text: &str) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let mut rps = None;
    let mut in_distribution = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            if let Some((pct, value)) = line.split_once(char::is_whitespace) {
                match pct {
                    "50%" => report.p50 = duration(value.trim())?,
                    "99%" => report.p99 = duration(value.trim())?,
                    "75%" | "90%" => {}
                    _ => in_distribution = false,
                }
            } else {
                in_distribution = false;
            }
        }
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>().context("Requests/sec")?);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            report.non_2xx = v.trim().parse().context("Non-2xx count")?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            report.socket_errors = v
                .split(',')
                .filter_map(|part| part.split_whitespace().last())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum();
        } else if let Some((count, rest)) = line.split_once(" requests in ") {
            report.requests = count.trim().parse().unwrap_or(0);
            if let Some(took) = rest.split(',').next() {
                report.duration = duration(took.trim())?;
            }
        }
    }
    report.rps = rps.context("no Requests/sec line")?;
    if report.p99.is_zero() {
        bail!("no 99% latency line (was --latency given?)");
    }
    Ok(report)
}

/// "1.23ms", "850.00us", "1.02s", "1.50m".
fn duration(text: &str) -> anyhow::Result<Duration> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("not a number: {text:?}"))?;
    let secs = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => bail!("unknown unit in {text:?}"),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// The Lua script that makes wrk POST a job.
pub fn post_script(token: &str, body: &str) -> String {
    format!(
        "wrk.method = \"POST\"\nwrk.body = '{body}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 10s test @ http://127.0.0.1:8080/v1/jobs
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.12ms    2.01ms  40.31ms   80.12%
    Req/Sec     7.89k   512.33     8.91k    70.00%
  Latency Distribution
     50%    3.80ms
     75%    4.90ms
     90%    6.20ms
     99%   11.52ms
  157012 requests in 10.01s, 98.23MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:  15685.31
Transfer/sec:      9.81MB
";

    #[test]
    fn parses_a_wrk_report() {
        let r = parse(SAMPLE).expect("parses");
        assert!((r.rps - 15685.31).abs() < 1e-6);
        assert_eq!(r.requests, 157_012);
        assert_eq!(r.duration, Duration::from_millis(10_010));
        assert_eq!(r.p50, Duration::from_micros(3800));
        assert_eq!(r.p99, Duration::from_micros(11_520));
        assert_eq!(r.non_2xx, 3);
        assert_eq!(r.socket_errors, 3);
    }

    #[test]
    fn units_convert() {
        assert_eq!(
            duration("850.00us").expect("parses"),
            Duration::from_micros(850)
        );
        assert_eq!(
            duration("1.50s").expect("parses"),
            Duration::from_millis(1500)
        );
        assert!(duration("12").is_err());
    }
}
