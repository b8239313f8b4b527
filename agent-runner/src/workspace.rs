//! The agent's work directory and the files the runner keeps in it: the intent file and
//! the result file (under `.agentsmith/`), and the agent's process-group file that lets
//! the process backend stop the agent if the runner dies first.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use contract::{env, AgentResult};

use crate::error::{Error, Result};

/// The directory, inside the work directory, that holds the runner's files for the agent.
const RUNNER_DIR: &str = ".agentsmith";

/// The largest result file the runner reads; a result is a summary and some links.
pub const MAX_RESULT_BYTES: u64 = 256 * 1024;

/// The agent's work directory.
#[derive(Debug, Clone)]
pub struct Workspace {
    dir: PathBuf,
}

impl Workspace {
    /// The work directory at `dir` (which should be absolute: the agent may change
    /// directory, and the file paths it is given must still hold).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The work directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the intent is written as JSON for the agent.
    pub fn intent_file(&self) -> PathBuf {
        self.dir.join(RUNNER_DIR).join("intent.json")
    }

    /// Where the agent may leave its result.
    pub fn result_file(&self) -> PathBuf {
        self.dir.join(RUNNER_DIR).join("result.json")
    }

    /// Where the agent's process group id is recorded.
    pub fn pgid_file(&self) -> PathBuf {
        self.dir.join(env::AGENT_PGID_FILE)
    }

    /// Marks `attempt` as run in this work directory; `false` if it already was. A
    /// container that is started again (Docker restarts an exited container in place, with
    /// its volume) finds the mark and does not run the agent twice.
    pub async fn mark_run(&self, attempt: u32) -> Result<bool> {
        let runner_dir = self.dir.join(RUNNER_DIR);
        let io = |path: PathBuf| move |source| Error::Workspace { path, source };
        tokio::fs::create_dir_all(&runner_dir)
            .await
            .map_err(io(runner_dir.clone()))?;
        let mark = runner_dir.join(format!("ran-{attempt}"));
        match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&mark)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(Error::Workspace { path: mark, source }),
        }
    }

    /// Creates the directories, writes the intent file and removes a result file left
    /// by an earlier attempt, so a result is never mistaken for this attempt's.
    pub async fn prepare(&self, intent: &serde_json::Value) -> Result<()> {
        let runner_dir = self.dir.join(RUNNER_DIR);
        tokio::fs::create_dir_all(&runner_dir)
            .await
            .map_err(|source| Error::Workspace {
                path: runner_dir.clone(),
                source,
            })?;
        let intent_file = self.intent_file();
        let text = serde_json::to_vec_pretty(intent).expect("a JSON value always serialises");
        tokio::fs::write(&intent_file, text)
            .await
            .map_err(|source| Error::Workspace {
                path: intent_file,
                source,
            })?;
        let result_file = self.result_file();
        match tokio::fs::remove_file(&result_file).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Workspace {
                path: result_file,
                source,
            }),
        }
    }

    /// Records the agent's process group id.
    pub async fn record_pgid(&self, pgid: i32) -> Result<()> {
        let path = self.pgid_file();
        tokio::fs::write(&path, pgid.to_string())
            .await
            .map_err(|source| Error::Workspace { path, source })
    }

    /// Removes the process-group file once the group is gone, so a stale number is never
    /// signalled after the system has reused it.
    pub async fn forget_pgid(&self) {
        let path = self.pgid_file();
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the agent's pgid file")
            }
        }
    }

    /// The agent's result: `Ok(None)` when it left no result file (or an empty one), an
    /// [`Error::ResultFile`] when the file is unreadable, too large or not a result.
    pub async fn read_result(&self) -> Result<Option<AgentResult>> {
        let path = self.result_file();
        let unusable = |reason: String| Error::ResultFile {
            path: path.clone(),
            reason,
        };
        let size = match tokio::fs::metadata(&path).await {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unusable(e.to_string())),
        };
        if size > MAX_RESULT_BYTES {
            return Err(unusable(format!(
                "it holds {size} bytes, more than the {MAX_RESULT_BYTES} allowed"
            )));
        }
        let text = tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| unusable(e.to_string()))?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| unusable(format!("not a result (summary, links): {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let dir = std::env::temp_dir().join(format!(
                "agent-runner-{name}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn prepare_writes_the_intent_and_clears_an_old_result() {
        let tmp = TempDir::new("prepare");
        let ws = Workspace::new(tmp.0.clone());
        std::fs::create_dir_all(tmp.0.join(RUNNER_DIR)).unwrap();
        std::fs::write(ws.result_file(), r#"{"summary":"old"}"#).unwrap();

        ws.prepare(&serde_json::json!({"task": "t", "extra": 1}))
            .await
            .unwrap();

        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(ws.intent_file()).unwrap()).unwrap();
        assert_eq!(written, serde_json::json!({"task": "t", "extra": 1}));
        assert!(!ws.result_file().exists());
        assert_eq!(ws.read_result().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_result_file_is_read_and_a_broken_one_is_an_error() {
        let tmp = TempDir::new("result");
        let ws = Workspace::new(tmp.0.clone());
        ws.prepare(&serde_json::json!({"task": "t"})).await.unwrap();

        std::fs::write(
            ws.result_file(),
            r#"{"summary":"done","links":[{"url":"http://x/pr/1"}]}"#,
        )
        .unwrap();
        let result = ws.read_result().await.unwrap().unwrap();
        assert_eq!(result.summary.as_deref(), Some("done"));
        assert_eq!(result.links[0].url, "http://x/pr/1");

        std::fs::write(ws.result_file(), "{\"summary\": ").unwrap();
        let err = ws.read_result().await.unwrap_err();
        assert!(matches!(err, Error::ResultFile { .. }), "{err}");

        std::fs::write(ws.result_file(), vec![b' '; MAX_RESULT_BYTES as usize + 1]).unwrap();
        assert!(ws.read_result().await.is_err());
    }

    #[tokio::test]
    async fn the_pgid_file_is_recorded_and_forgotten() {
        let tmp = TempDir::new("pgid");
        let ws = Workspace::new(tmp.0.clone());
        ws.record_pgid(4242).await.unwrap();
        assert_eq!(std::fs::read_to_string(ws.pgid_file()).unwrap(), "4242");
        ws.forget_pgid().await;
        assert!(!ws.pgid_file().exists());
        ws.forget_pgid().await;
    }
}
