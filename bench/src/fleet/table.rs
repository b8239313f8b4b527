//! The fleet phase's table.

use super::{Outcome, TARGET_P99_MS};

/// The phase's table.
pub fn render(o: &Outcome) -> String {
    let c = &o.config;
    let mut out = format!(
        "## A fleet of agents (`--only fleet`)\n\n\
         Two dispatcher replicas in-process ({} worker threads each) on one Redis; each runner prints {} lines/s and heartbeats every {} s; {} SSE followers; {} s measured per size. Target: p99 line-to-follower latency < {TARGET_P99_MS} ms, every followed line delivered, no lease expiry. CPU is % of one core per 1,000 runners.\n\n\
         | runners | lines/s (intended) | line → follower p50 / p99 / max | followed lines got | lease expiries / ended attempts / not running | replica A / B CPU | Redis CPU | fleet sim CPU | machine busy (others) | RSS (bench process) | verdict |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        c.workers,
        c.lines_per_sec,
        o.sizes.first().map_or(0, |s| s.heartbeat_secs),
        c.followers,
        c.duration.as_secs()
    );
    for s in &o.sizes {
        let secs = s.window.as_secs_f64().max(1e-9);
        out.push_str(&format!(
            "| {} | {:.0} ({}) | {} / {} / {} ms | {} of {} | {} / {} / {} | {:.1} % / {:.1} % | {:.1} % | {:.1} % | {:.0} % of 2 cores ({:.0} %) | {:.0} MB | {} |\n",
            s.runners,
            s.lines_per_sec(),
            s.runners as u64 * u64::from(c.lines_per_sec),
            s.latency.p50,
            s.latency.p99,
            s.latency.max,
            s.followed.1,
            s.followed.0,
            s.lease_expiries,
            s.ended_attempts,
            s.not_running,
            s.per_thousand(s.cpu[0]),
            s.per_thousand(s.cpu[1]),
            s.per_thousand(s.redis_cpu),
            s.per_thousand(s.fleet_cpu),
            100.0 * s.machine.0 / secs / 2.0,
            s.others_share(),
            s.rss_max as f64 / 1e6,
            if s.meets() { "PASS" } else { "MISS" }
        ));
    }
    out.push('\n');
    for s in &o.sizes {
        let secs = s.window.as_secs_f64().max(1e-9);
        let posts = ((s.batches[0] + s.batches[1]) as f64).max(1.0);
        out.push_str(&format!(
            "- {} runners: ramp-up {:.1} s; event posts p50 {} / p99 {} ms ({} posts, {:.0}/s; replica A {}, B {}); CPU in the window: replicas {:.2} + {:.2} s ({:.0} µs per post), Redis {:.2} s ({:.0} % of a core, {:.0} µs and {:.1} commands per post), fleet {:.2} s, stolen {:.2} s; posts sent again {}, runners gone {}, `lagged` {}, failed follower connections {}{}\n",
            s.runners,
            s.ramp_up.as_secs_f64(),
            s.post_latency.p50,
            s.post_latency.p99,
            s.post_latency.count,
            (s.batches[0] + s.batches[1]) as f64 / secs,
            s.batches[0],
            s.batches[1],
            s.cpu[0],
            s.cpu[1],
            (s.cpu[0] + s.cpu[1]) * 1e6 / posts,
            s.redis_cpu,
            100.0 * s.redis_cpu / secs,
            s.redis_cpu * 1e6 / posts,
            s.redis_commands as f64 / posts,
            s.fleet_cpu,
            s.machine.1,
            s.retries,
            s.gone,
            s.lagged,
            s.follower_failures,
            if s.problems.is_empty() {
                String::new()
            } else {
                format!("; problems: {}", s.problems.join("; "))
            }
        ));
    }
    for s in &o.sizes {
        let secs = s.window.as_secs_f64().max(1e-9);
        let top: Vec<String> = s
            .redis_top
            .iter()
            .map(|(name, calls, us)| {
                format!(
                    "{name} {:.0}/s {:.0} ms/s",
                    *calls as f64 / secs,
                    *us as f64 / 1e3 / secs
                )
            })
            .collect();
        out.push_str(&format!(
            "- {} runners, Redis time by command: {}\n",
            s.runners,
            top.join(", ")
        ));
    }
    if o.sizes.iter().any(|s| s.others_share() > 10.0) {
        out.push_str("\nWARNING: other processes took more than 10 % of the machine during a size (\"others\"): its figures are disturbed.\n");
    }
    out.push_str(&match o.largest_meeting() {
        Some(n) => {
            format!("\nLargest fleet meeting the target on this machine: **{n} runners**.\n")
        }
        None => "\nLargest fleet meeting the target on this machine: **none of the sizes run**.\n"
            .to_string(),
    });
    out
}
