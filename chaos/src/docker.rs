//! The Docker engine as the docker variant (`--spawner docker`) sees it, through the
//! `docker` CLI: the checks before a run, the bridge gateway the replicas and the recorder
//! bind to, and this run's agent containers, found by their `agentsmith.io/installation`
//! label (killed at random as a fault, counted when every job has ended, removed at the
//! end). Nothing here touches a container without this run's installation label.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

use anyhow::{bail, Context as _};

/// The label naming the installation a container belongs to (as the docker spawner sets it).
const INSTALLATION_LABEL: &str = "agentsmith.io/installation";

/// The engine, checked to be usable for a run.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The default bridge's gateway: an address of this machine that containers reach.
    pub gateway: String,
    /// The agent image, present on the engine.
    pub image: String,
}

/// One agent container of this run.
#[derive(Debug, Clone)]
pub struct Container {
    /// The container id.
    pub id: String,
    /// Its name (`agentsmith-<job id>-<attempt>`).
    pub name: String,
    /// Its state (`running`, `exited`, ...).
    pub state: String,
}

/// Runs `docker ARGS` and returns its output; failing to run it at all is an error that
/// says how to get the CLI.
fn docker(args: &[&str]) -> anyhow::Result<Output> {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running the docker CLI (apt-get install docker.io)")
}

/// What a failed `docker` command said, on one line.
fn said(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
}

impl Engine {
    /// Checks that the engine answers and has `image`, and finds the bridge gateway.
    /// Each failure names the command that fixes it. Warns when the image is older than
    /// the `runner` binary (the containers would run a stale runner).
    pub fn check(image: &str, runner: &Path) -> anyhow::Result<Engine> {
        let info = docker(&["info", "--format", "{{.ServerVersion}}"])?;
        if !info.status.success() {
            bail!(
                "the Docker engine does not answer (`docker info`: {}): start it with \
                 `. scripts/lib.sh; ensure_docker` (or `dockerd --iptables=false &`)",
                said(&info)
            );
        }
        let inspect = docker(&["image", "inspect", "--format", "{{.Created}}", image])?;
        if !inspect.status.success() {
            bail!(
                "image {image} is not on the Docker engine: run \
                 `scripts/build-agent-image --tag {image}` (after `cargo build -p agent-runner`)"
            );
        }
        let created = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
        if let (Some(image_secs), Ok(modified)) = (
            engine_time_secs(&created),
            std::fs::metadata(runner).and_then(|m| m.modified()),
        ) {
            let runner_secs = modified
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default();
            if runner_secs > image_secs {
                eprintln!(
                    "warning: {} is newer than the image {image} (built {created}): the \
                     containers run an older runner; rebuild with \
                     `scripts/build-agent-image --runner {} --tag {image}`",
                    runner.display(),
                    runner.display()
                );
            }
        }
        let network = docker(&[
            "network",
            "inspect",
            "bridge",
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}} {{.Subnet}}{{\"\\n\"}}{{end}}",
        ])?;
        if !network.status.success() {
            bail!(
                "the engine's default bridge network cannot be inspected \
                 (`docker network inspect bridge`: {})",
                said(&network)
            );
        }
        let text = String::from_utf8_lossy(&network.stdout).to_string();
        let gateway = text
            .lines()
            .find_map(gateway_of)
            .with_context(|| format!("no IPv4 gateway in the bridge network's IPAM ({text:?})"))?;
        Ok(Engine {
            gateway,
            image: image.to_string(),
        })
    }
}

/// The gateway of one `GATEWAY SUBNET` line of the bridge's IPAM: the gateway when set,
/// else the subnet's first address (what the engine gives the bridge).
fn gateway_of(line: &str) -> Option<String> {
    let mut parts = line.split_whitespace();
    let (first, second) = (parts.next()?, parts.next());
    let (gateway, subnet) = match second {
        Some(subnet) => (Some(first), subnet),
        // An empty gateway leaves only the subnet.
        None if first.contains('/') => (None, first),
        None => (Some(first), ""),
    };
    if let Some(g) = gateway.and_then(|g| g.parse::<std::net::Ipv4Addr>().ok()) {
        return Some(g.to_string());
    }
    let network: std::net::Ipv4Addr = subnet.split('/').next()?.parse().ok()?;
    Some(std::net::Ipv4Addr::from(u32::from(network) + 1).to_string())
}

/// Seconds since the epoch of an engine timestamp (`2026-11-23T23:40:01.123456789Z`).
fn engine_time_secs(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time
        .split('.')
        .next()?
        .splitn(3, ':')
        .map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// The containers of `installation` (every state, or only running ones).
pub fn containers(installation: &str, only_running: bool) -> anyhow::Result<Vec<Container>> {
    let filter = format!("label={INSTALLATION_LABEL}={installation}");
    let mut args = vec![
        "ps",
        "--no-trunc",
        "--filter",
        &filter,
        "--format",
        "{{.ID}} {{.Names}} {{.State}}",
    ];
    if only_running {
        args.extend(["--filter", "status=running"]);
    } else {
        args.push("--all");
    }
    let output = docker(&args)?;
    if !output.status.success() {
        bail!("docker ps failed: {}", said(&output));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            Some(Container {
                id: parts.next()?.to_string(),
                name: parts.next()?.to_string(),
                state: parts.next().unwrap_or_default().to_string(),
            })
        })
        .collect())
}

/// `docker kill` (SIGKILL to the container's init, so the runner and the agent die with
/// it) of one container; true when the engine did it (false: it had already stopped).
pub fn kill(container: &Container) -> bool {
    docker(&["kill", &container.id]).is_ok_and(|o| o.status.success())
}

/// Removes every container of `installation`, running or not, with its volumes; returns
/// how many were removed.
pub fn remove_all(installation: &str) -> usize {
    let Ok(found) = containers(installation, false) else {
        return 0;
    };
    if found.is_empty() {
        return 0;
    }
    let mut args = vec!["rm", "--force", "--volumes"];
    args.extend(found.iter().map(|c| c.id.as_str()));
    match docker(&args) {
        Ok(output) if output.status.success() => found.len(),
        Ok(output) => {
            eprintln!("docker rm of this run's containers: {}", said(&output));
            0
        }
        Err(e) => {
            eprintln!("docker rm of this run's containers: {e:#}");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_is_read_from_ipam_or_derived_from_the_subnet() {
        assert_eq!(
            gateway_of("172.17.0.1 172.17.0.0/16").as_deref(),
            Some("172.17.0.1")
        );
        assert_eq!(gateway_of("172.18.0.0/16").as_deref(), Some("172.18.0.1"));
        assert_eq!(gateway_of("fd00::1 fd00::/64"), None);
        assert_eq!(gateway_of(""), None);
    }

    #[test]
    fn engine_times_read_as_epoch_seconds() {
        assert_eq!(engine_time_secs("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            engine_time_secs("2026-12-01T10:26:38.960313499Z"),
            Some(1_796_120_798)
        );
        assert_eq!(engine_time_secs("not a time"), None);
    }
}
