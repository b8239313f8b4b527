//! Reading a job's event stream (`GET /v1/jobs/{id}/events`) byte by byte, as the streams
//! and fleet phases' followers do: the response head, the `id:`/`event:`/`data:` lines of
//! each event, and the stamp a printed line carries.

use std::fmt::Display;

use anyhow::bail;

use crate::api::TOKEN;

/// What a follower saw of one response.
#[derive(Debug, Default)]
pub struct Seen {
    /// The id of the last event.
    pub last_id: Option<String>,
    /// `log` events received.
    pub lines: u64,
    /// The server said `lagged`: the follower must resume after `last_id`.
    pub lagged: bool,
    /// The response ended (its last chunk came).
    pub ended: bool,
    /// A `log` event's data comes next (the line before was `event: log`).
    log_next: bool,
}

impl Seen {
    /// Nothing seen yet of a response that resumes after the event `last_id`.
    pub fn after(last_id: Option<String>) -> Self {
        Self {
            last_id,
            ..Self::default()
        }
    }
}

/// The request for the events of `job_id` from `host` (`127.0.0.1:PORT`), resuming after
/// the event `after` when given.
pub fn request(job_id: &str, host: impl Display, after: Option<&str>) -> String {
    let query = after.map(|a| format!("?after={a}")).unwrap_or_default();
    format!(
        "GET /v1/jobs/{job_id}/events{query} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n"
    )
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Drops the response head from `pending` once it is complete: `Ok(true)` then, `Ok(false)`
/// while it is not; an error when the answer is not `200`.
pub fn take_head(pending: &mut Vec<u8>) -> anyhow::Result<bool> {
    let Some(end) = find(pending, b"\r\n\r\n") else {
        return Ok(false);
    };
    if !pending.starts_with(b"HTTP/1.1 200") {
        bail!("{}", String::from_utf8_lossy(&pending[..end]));
    }
    pending.drain(..end + 4);
    Ok(true)
}

/// Reads the complete lines of `pending` (and drops them), calling `on_log` with the
/// `data:` line of every `log` event and the id of that event.
pub fn scan(pending: &mut Vec<u8>, seen: &mut Seen, mut on_log: impl FnMut(&[u8], Option<&str>)) {
    let mut start = 0;
    while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
        let line = &pending[start..start + nl];
        start += nl + 1;
        if let Some(id) = line.strip_prefix(b"id: ") {
            seen.last_id = Some(String::from_utf8_lossy(id).into_owned());
        } else if line == b"event: log" {
            seen.log_next = true;
        } else if line == b"event: lagged" {
            seen.lagged = true;
        } else if line.starts_with(b"data: ") && seen.log_next {
            seen.log_next = false;
            seen.lines += 1;
            on_log(line, seen.last_id.as_deref());
        } else if line == b"0\r" {
            // The last chunk of the response: the stream is over.
            seen.ended = true;
        }
    }
    pending.drain(..start);
}

/// The stamp of a printed line in a `log` event's data: its line is
/// `<n> <microseconds since the epoch>`.
pub fn line_stamp(data: &[u8]) -> Option<u64> {
    let at = find(data, b"\"line\":\"")?;
    let rest = &data[at + 8..];
    let text = std::str::from_utf8(&rest[..rest.iter().position(|b| *b == b'"')?]).ok()?;
    text.split_whitespace().nth(1)?.parse::<u64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_reads_log_events_lagged_and_the_end_and_keeps_a_partial_line() {
        let mut pending = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nid: 17-0\nevent: log\ndata: {\"line\":\"3 1500\"}\n\nevent: lagged\n0\r\nid: 1".to_vec();
        assert!(take_head(&mut pending).unwrap());
        let mut seen = Seen::default();
        let mut logs = Vec::new();
        scan(&mut pending, &mut seen, |data, id| {
            logs.push((line_stamp(data), id.map(str::to_string)));
        });
        assert_eq!(logs, [(Some(1500), Some("17-0".to_string()))]);
        assert_eq!((seen.lines, seen.lagged, seen.ended), (1, true, true));
        assert_eq!(pending, b"id: 1");
    }

    #[test]
    fn a_request_resumes_after_the_last_event_when_given_one() {
        let resuming = request("j1", "127.0.0.1:8080", Some("17-0"));
        assert!(resuming
            .starts_with("GET /v1/jobs/j1/events?after=17-0 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(resuming.ends_with("Accept: text/event-stream\r\n\r\n"));
        assert!(request("j1", "h", None).starts_with("GET /v1/jobs/j1/events HTTP/1.1\r\n"));
    }

    #[test]
    fn a_head_is_taken_only_when_complete_and_only_if_it_says_200() {
        let mut pending = b"HTTP/1.1 200 OK\r\n".to_vec();
        assert!(!take_head(&mut pending).unwrap());
        let mut pending = b"HTTP/1.1 404 Not Found\r\n\r\n".to_vec();
        assert!(take_head(&mut pending).is_err());
    }
}
