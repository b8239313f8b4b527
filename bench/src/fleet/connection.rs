//! One keep-alive HTTP/1.1 connection to a dispatcher, as each runner's HTTP client keeps:
//! a request written whole, its answer read by its `Content-Length` (the runner routes
//! answer JSON, always with a length). Plain bytes on a socket, so 5,000 of them cost the
//! bench little next to the dispatchers they load.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sse::find;

/// The limit on one request, answer included (the runner's default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection that reconnects on the next request after any failure.
pub struct Connection {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Connection {
    /// A connection to `addr`, opened by the first request.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            buf: Vec::with_capacity(1024),
        }
    }

    /// Posts `body` as JSON with a bearer token; the status and the body of the answer.
    pub async fn post(
        &mut self,
        path: &str,
        bearer: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(path, bearer, body))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}"))
            .and_then(|answer| answer);
        if answer.is_err() {
            self.stream = None;
        }
        answer
    }

    async fn exchange(
        &mut self,
        path: &str,
        bearer: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connecting to {}", self.addr))?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        let Self { addr, stream, buf } = self;
        let stream = stream.as_mut().expect("connected above");
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await?;
        buf.clear();
        loop {
            if let Some(end) = find(buf, b"\r\n\r\n") {
                let (status, length, close) = parse_head(&buf[..end])?;
                let total = end + 4 + length;
                while buf.len() < total {
                    if stream.read_buf(buf).await? == 0 {
                        bail!("the connection closed inside an answer");
                    }
                }
                let answer = buf[end + 4..total].to_vec();
                if close {
                    self.stream = None;
                }
                return Ok((status, answer));
            }
            if stream.read_buf(buf).await? == 0 {
                bail!("the connection closed before an answer");
            }
        }
    }
}

/// The status, the `Content-Length` and whether the server closes the connection.
fn parse_head(head: &[u8]) -> anyhow::Result<(u16, usize, bool)> {
    let head = std::str::from_utf8(head).context("an answer's head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer: {head:.200}"))?;
    let (mut length, mut close) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.trim().eq_ignore_ascii_case("close");
        }
    }
    let length = length.with_context(|| format!("an answer without a length: {head:.200}"))?;
    Ok((status, length, close))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_head_gives_its_status_length_and_close() {
        let head = b"HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\nContent-Length: 13\r\nconnection: close";
        assert_eq!(parse_head(head).unwrap(), (409, 13, true));
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 14";
        assert_eq!(parse_head(head).unwrap(), (200, 14, false));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked").is_err());
    }
}
