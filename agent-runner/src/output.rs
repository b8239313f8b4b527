//! The agent's output: read line by line with a bound on a line's length, echoed on the
//! runner's own stdout (so `docker logs` and `kubectl logs` show the agent's output as
//! is), and queued as log events.

use std::io;
use std::sync::Arc;

use contract::OutputStream;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::outbox::Outbox;

/// The longest line kept whole, in bytes; the rest of a longer line is cut off and its
/// length noted at the end.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Reads lines of at most a given length, holding no more than that in memory however
/// long a line is. Invalid UTF-8 is replaced, a trailing `\r` removed.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: BufReader<R>,
    max: usize,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// Reads from `reader`, keeping at most `max` bytes of each line.
    pub fn new(reader: R, max: usize) -> Self {
        Self {
            inner: BufReader::new(reader),
            max,
            buf: Vec::new(),
        }
    }

    /// The next line, without its newline; `None` at the end of the stream.
    pub async fn next_line(&mut self) -> io::Result<Option<String>> {
        self.buf.clear();
        let mut cut = 0usize;
        let mut read_any = false;
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                if !read_any {
                    return Ok(None);
                }
                break;
            }
            read_any = true;
            let newline = available.iter().position(|&b| b == b'\n');
            let content = &available[..newline.unwrap_or(available.len())];
            let keep = content.len().min(self.max.saturating_sub(self.buf.len()));
            self.buf.extend_from_slice(&content[..keep]);
            cut += content.len() - keep;
            let used = content.len() + usize::from(newline.is_some());
            self.inner.consume(used);
            if newline.is_some() {
                break;
            }
        }
        if cut == 0 && self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        let mut line = String::from_utf8_lossy(&self.buf).into_owned();
        if cut > 0 {
            line.push_str(&format!(" [{cut} more bytes cut]"));
        }
        Ok(Some(line))
    }
}

/// The runner's stdout, shared by the readers of both agent streams so that lines are
/// echoed whole.
#[derive(Debug, Clone)]
pub struct Echo {
    stdout: Arc<Mutex<tokio::io::Stdout>>,
}

impl Default for Echo {
    fn default() -> Self {
        Self {
            stdout: Arc::new(Mutex::new(tokio::io::stdout())),
        }
    }
}

impl Echo {
    /// Writes `line` and a newline. Failures are ignored: a closed stdout must not stop
    /// the agent's output from reaching the dispatcher.
    pub async fn line(&self, line: &str) {
        let mut text = String::with_capacity(line.len() + 1);
        text.push_str(line);
        text.push('\n');
        let mut stdout = self.stdout.lock().await;
        let _ = stdout.write_all(text.as_bytes()).await;
        let _ = stdout.flush().await;
    }
}

/// Starts a task that reads `pipe` line by line until it closes, echoing and queueing
/// each line as coming from `stream`.
pub fn pump<R>(
    stream: OutputStream,
    pipe: R,
    echo: Echo,
    outbox: Arc<Outbox>,
    max_line: usize,
) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(
        async move {
            let mut lines = LineReader::new(pipe, max_line);
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        echo.line(&line).await;
                        outbox.push_line(stream, line);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(?stream, error = %e, "reading the agent's output failed");
                        break;
                    }
                }
            }
        }
        .in_current_span(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all_lines(input: &[u8], max: usize) -> Vec<String> {
        let mut reader = LineReader::new(input, max);
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            lines.push(line);
        }
        lines
    }

    #[tokio::test]
    async fn lines_are_split_on_newlines_with_a_last_unterminated_line() {
        assert_eq!(
            all_lines(b"one\r\ntwo\n\nthree", 100).await,
            ["one", "two", "", "three"]
        );
        assert!(all_lines(b"", 100).await.is_empty());
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_say_how_much_was_cut() {
        let mut input = vec![b'x'; 50];
        input.extend_from_slice(b"\nshort\n");
        let lines = all_lines(&input, 20).await;
        assert_eq!(lines[0], format!("{} [30 more bytes cut]", "x".repeat(20)));
        assert_eq!(lines[1], "short");
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced() {
        assert_eq!(all_lines(b"a\xffb\n", 100).await, ["a\u{fffd}b"]);
    }
}
