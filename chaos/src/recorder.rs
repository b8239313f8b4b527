//! The run recorder of the docker variant: agents in containers cannot append to the
//! harness's RUNS file, so they report each run over HTTP instead, with busybox `wget`:
//!
//! ```text
//! GET /run?job=<job id>&attempt=<attempt>&ev=start|end
//! ```
//!
//! Each accepted request appends `"<job id> <attempt> <ev>"` to the RUNS file before it is
//! answered, so the file reads exactly as the process variant's and the agent goes on only
//! once its line is written.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Counters of the recorder, for the summary.
#[derive(Debug, Default)]
pub struct Counts {
    /// Lines written to the RUNS file.
    pub recorded: AtomicU64,
    /// Connections closed before sending anything (a `wget` killed with its container).
    pub empty: AtomicU64,
    /// Requests that were not a well-formed report (a harness or agent-script problem).
    pub rejected: AtomicU64,
}

/// Serves reports on `listener` until the runtime stops, appending them to `runs`.
pub async fn serve(listener: TcpListener, runs: PathBuf, counts: Arc<Counts>) {
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&runs)
    {
        Ok(file) => Arc::new(Mutex::new(file)),
        Err(e) => {
            eprintln!("recorder: cannot open {}: {e}", runs.display());
            return;
        }
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (file, counts) = (file.clone(), counts.clone());
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(10), answer(stream, &file, &counts)).await;
        });
    }
}

/// Reads one request, records it when it is a report, and answers.
async fn answer(
    mut stream: TcpStream,
    file: &Mutex<std::fs::File>,
    counts: &Counts,
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    if request.is_empty() {
        counts.empty.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    let text = String::from_utf8_lossy(&request);
    let line = text.lines().next().and_then(report_line);
    let status = match line {
        Some(line) => {
            let written = file
                .lock()
                .expect("no writer panics while holding the RUNS file")
                .write_all(line.as_bytes());
            match written {
                Ok(()) => {
                    counts.recorded.fetch_add(1, Ordering::Relaxed);
                    "200 OK"
                }
                Err(e) => {
                    eprintln!("recorder: writing the RUNS file: {e}");
                    "500 Internal Server Error"
                }
            }
        }
        None => {
            counts.rejected.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "recorder: not a report: {:?}",
                text.lines().next().unwrap_or("")
            );
            "400 Bad Request"
        }
    };
    stream
        .write_all(
            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    stream.shutdown().await
}

/// The RUNS line (newline included) of a request line `GET /run?job=..&attempt=..&ev=..`.
fn report_line(request_line: &str) -> Option<String> {
    let mut parts = request_line.split_whitespace();
    if parts.next()? != "GET" {
        return None;
    }
    let query = parts.next()?.strip_prefix("/run?")?;
    let (mut job, mut attempt, mut ev) = (None, None, None);
    for pair in query.split('&') {
        match pair.split_once('=')? {
            ("job", v) => job = Some(v),
            ("attempt", v) => attempt = Some(v),
            ("ev", v) => ev = Some(v),
            _ => {}
        }
    }
    let job = job.filter(|j| {
        !j.is_empty()
            && j.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })?;
    let attempt: u64 = attempt?.parse().ok()?;
    let ev = ev.filter(|e| matches!(*e, "start" | "end"))?;
    Some(format!("{job} {attempt} {ev}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_becomes_the_runs_line_of_the_process_variant() {
        assert_eq!(
            report_line("GET /run?job=vcyhz533a8hr&attempt=2&ev=start HTTP/1.1").as_deref(),
            Some("vcyhz533a8hr 2 start\n")
        );
        assert_eq!(
            report_line("GET /run?ev=end&attempt=1&job=abc HTTP/1.0").as_deref(),
            Some("abc 1 end\n")
        );
    }

    #[test]
    fn a_report_missing_a_variable_is_rejected() {
        // What an agent without AGENTSMITH_JOB_ID or AGENTSMITH_ATTEMPT would send.
        assert_eq!(
            report_line("GET /run?job=&attempt=1&ev=start HTTP/1.1"),
            None
        );
        assert_eq!(
            report_line("GET /run?job=abc&attempt=&ev=start HTTP/1.1"),
            None
        );
        assert_eq!(
            report_line("GET /run?job=abc&attempt=1&ev=begin HTTP/1.1"),
            None
        );
        assert_eq!(
            report_line("POST /run?job=abc&attempt=1&ev=end HTTP/1.1"),
            None
        );
        assert_eq!(report_line("GET /other HTTP/1.1"), None);
    }
}
