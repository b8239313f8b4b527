//! The machinery around the measurements: a temporary directory, child processes that are
//! always cleaned up, free ports, `/proc` readings and a minimal HTTP/1.1 client.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A directory removed (with everything in it) when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/agentsmith-bench-<tag>`.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("agentsmith-bench-{tag}"));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A child process that is killed (with every process it started) when dropped, so an
/// error or an interrupt anywhere in the harness leaves nothing behind.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    log: Option<PathBuf>,
}

impl ChildGuard {
    /// Starts `command` with stdin closed and stdout/stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::File::create(log)
            .with_context(|| format!("creating the log {}", log.display()))?;
        let err = out.try_clone().context("duplicating a log handle")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log: Some(log.to_path_buf()),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Fails (with the end of its log) if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait().context("polling a child")? {
                bail!(
                    "{} exited early ({status}); its log ends with:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
        }
        Ok(())
    }

    /// The last `lines` lines of the child's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let Some(log) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; then kills whatever it started that is
    /// still alive (workloads of the process spawner run in their own process groups).
    pub async fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        let descendants = descendants(pid);
        signal(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        // Descendants seen before the stop plus any started meanwhile (now re-parented, so
        // only the earlier list can name them).
        for pid in descendants {
            signal(pid, Signal::SIGKILL);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let descendants = descendants(pid);
            let _ = child.kill();
            let _ = child.wait();
            for pid in descendants {
                signal(pid, Signal::SIGKILL);
            }
        }
    }
}

fn signal(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        if raw > 1 {
            let _ = kill(Pid::from_raw(raw), signal);
        }
    }
}

/// Every live process descended from `root` (children, grandchildren, ...), from `/proc`.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(child) {
                found.push(child);
                stack.push(child);
            }
        }
    }
    found
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = StdListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The soft limit on this process's open files (`Max open files` of `/proc/self/limits`).
pub fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The resident set size of a process in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU seconds (user + system) this process has used so far.
pub fn own_cpu_secs() -> f64 {
    cpu_secs_of("/proc/self/stat", 11)
}

/// CPU seconds (user + system) used by this process's children that have been waited for
/// (wrk runs, once they end).
pub fn reaped_children_cpu_secs() -> f64 {
    cpu_secs_of("/proc/self/stat", 13)
}

/// CPU seconds (user + system) process `pid` has used so far (its threads included, its
/// children not).
pub fn cpu_secs(pid: u32) -> f64 {
    cpu_secs_of(&format!("/proc/{pid}/stat"), 11)
}

/// CPU seconds (user + system) used so far by this process's threads named `name` (the
/// first 15 bytes of a thread's name, as `/proc/self/task/*/comm` holds it).
pub fn threads_cpu_secs(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .map(|task| cpu_secs_of(&task.path().join("stat").to_string_lossy(), 11))
        .sum()
}

/// Fields `first` and `first + 1` (counted after the comm) in seconds: 11 is utime and
/// stime, 13 cutime and cstime.
fn cpu_secs_of(path: &str, first: usize) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    // After the comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14), in
    // clock ticks.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(first) + ticks(first + 1)) / clock_ticks()
}

/// CPU seconds the whole machine has spent busy (user, nice, system, irq, softirq) and
/// stolen by the hypervisor, from `/proc/stat`, summed over all CPUs.
pub fn machine_cpu_secs() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0.0, 0.0);
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
    // user nice system idle iowait irq softirq steal
    let busy = at(0) + at(1) + at(2) + at(5) + at(6);
    (busy / clock_ticks(), at(7) / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The machine: logical CPUs and the CPU model.
pub fn machine() -> (usize, String) {
    let cpus = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    (cpus, model)
}

/// A minimal HTTP/1.1 request to 127.0.0.1 (`Connection: close`); returns the status and
/// the body.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<(u16, String)> {
    http_to("127.0.0.1", port, method, path, headers, body).await
}

/// [`http`] to another local address.
pub async fn http_to(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let work = async {
        let mut stream = TcpStream::connect((host, port)).await?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .context("HTTP request timed out")??;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP response: {response:.200}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Waits until `GET path` answers 200, failing early if `child` exits.
pub async fn wait_http_ok(
    child: &mut ChildGuard,
    port: u16,
    path: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        child.check_alive()?;
        match http(port, "GET", path, &[], "").await {
            Ok((200, _)) => return Ok(()),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok((status, body)) => bail!("GET {path} answered {status}: {body:.300}"),
            Err(e) => {
                return Err(e).context(format!(
                    "nothing answered on port {port} within {within:?}; log:\n{}",
                    child.log_tail(30)
                ))
            }
        }
    }
}
