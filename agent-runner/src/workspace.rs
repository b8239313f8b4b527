//! The agent's work directory and the files the runner keeps in it: the intent file, the
//! result file, the notes file, the directories where the agent leaves questions and
//! progress messages (`ask/`, `say/`) and the one where it finds the messages people send it
//! (`inbox/`), all under `.agentsmith/`. Nothing the runner or a
//! spawner acts on is kept here: the agent can write all of it.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use contract::AgentResult;
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};

/// The directory, inside the work directory, that holds the runner's files for the agent.
pub(crate) const RUNNER_DIR: &str = ".agentsmith";

/// The directory, under [`RUNNER_DIR`], where the agent leaves its questions.
pub(crate) const ASK_DIR: &str = "ask";

/// The directory, under [`RUNNER_DIR`], where the agent leaves its progress messages.
pub(crate) const SAY_DIR: &str = "say";

/// The directory, under [`RUNNER_DIR`], where the agent finds the messages people send it.
pub(crate) const INBOX_DIR: &str = "inbox";

/// The largest result file the runner reads; a result is a summary and some links.
pub const MAX_RESULT_BYTES: u64 = 256 * 1024;

/// The most of a notes file the runner reads (the dispatcher keeps 16 KiB of it).
pub const MAX_NOTES_BYTES: u64 = 32 * 1024;

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

    /// Where the agent may leave notes for the pull request's description.
    pub fn notes_file(&self) -> PathBuf {
        self.dir.join(RUNNER_DIR).join("notes.md")
    }

    /// Where the agent leaves its questions and finds their answers.
    pub fn ask_dir(&self) -> PathBuf {
        self.dir.join(RUNNER_DIR).join(ASK_DIR)
    }

    /// Where the agent leaves its progress messages.
    pub fn say_dir(&self) -> PathBuf {
        self.dir.join(RUNNER_DIR).join(SAY_DIR)
    }

    /// Where the agent finds the messages people send it while it runs (`<seq>.json`).
    pub fn inbox_dir(&self) -> PathBuf {
        self.dir.join(RUNNER_DIR).join(INBOX_DIR)
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

    /// Where the agent's CA bundle is written (the public roots and the extra certificates).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(RUNNER_DIR).join("ca-certificates.crt")
    }

    /// Writes the agent's CA bundle (after [`Workspace::prepare`]).
    pub async fn write_ca(&self, bundle: &str) -> Result<()> {
        let path = self.ca_file();
        tokio::fs::write(&path, bundle)
            .await
            .map_err(|source| Error::Workspace { path, source })
    }

    /// Creates the directories, writes the intent file and removes a result or notes file
    /// left by an earlier attempt, so neither is mistaken for this attempt's; the ask, say and
    /// inbox directories start empty for the same reason (an old answer is not this
    /// attempt's, and this attempt's messages are written afresh).
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
        for stale in [self.result_file(), self.notes_file()] {
            match tokio::fs::remove_file(&stale).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Workspace {
                        path: stale,
                        source,
                    })
                }
            }
        }
        for dir in [self.ask_dir(), self.say_dir(), self.inbox_dir()] {
            // `remove_dir_all` removes a symbolic link itself, never what it points to.
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(source) => return Err(Error::Workspace { path: dir, source }),
            }
            tokio::fs::create_dir(&dir)
                .await
                .map_err(|source| Error::Workspace { path: dir, source })?;
        }
        Ok(())
    }

    /// The agent's result: `Ok(None)` when it left no result file (or an empty one), an
    /// [`Error::ResultFile`] when the file is unreadable, too large or not a result.
    pub async fn read_result(&self) -> Result<Option<AgentResult>> {
        let path = self.result_file();
        let Some(text) = self
            .read_own("result.json", MAX_RESULT_BYTES, false)
            .await?
        else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::ResultFile {
                path,
                reason: format!("not a result (summary, links): {e}"),
            })
    }

    /// The agent's notes: `Ok(None)` when it wrote none, the first [`MAX_NOTES_BYTES`] of
    /// them when it wrote more (cut at a character, with a line saying so).
    pub async fn read_notes(&self) -> Result<Option<String>> {
        self.read_own("notes.md", MAX_NOTES_BYTES, true).await
    }

    /// The text of `name` under the runner's directory, `Ok(None)` when it is missing or
    /// blank. Over `max` bytes it is an error, or cut there when `cut`.
    ///
    /// The agent may have put anything at that path, and the runner may be root: only a
    /// regular file reached through no symbolic link is read (never a pipe that would block
    /// the runner, never another user's file). The agent has ended when it is read, so
    /// the path cannot change between the check and the read.
    async fn read_own(&self, name: &str, max: u64, cut: bool) -> Result<Option<String>> {
        let path = self.dir.join(RUNNER_DIR).join(name);
        let unusable = |reason: String| Error::ResultFile {
            path: path.clone(),
            reason,
        };
        let meta = match tokio::fs::symlink_metadata(&path).await {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unusable(e.to_string())),
        };
        if !meta.is_file() {
            return Err(unusable("it is not a regular file".into()));
        }
        let real = tokio::fs::canonicalize(&path).await;
        let expected = tokio::fs::canonicalize(&self.dir)
            .await
            .map(|dir| dir.join(RUNNER_DIR).join(name));
        match (real, expected) {
            (Ok(real), Ok(expected)) if real == expected => {}
            (Err(e), _) | (_, Err(e)) => return Err(unusable(e.to_string())),
            _ => return Err(unusable("it is reached through a symbolic link".into())),
        }
        let size = meta.len();
        if size > max && !cut {
            return Err(unusable(format!(
                "it holds {size} bytes, more than the {max} allowed"
            )));
        }
        let mut bytes = Vec::new();
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| unusable(e.to_string()))?;
        file.take(max)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| unusable(e.to_string()))?;
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if size > max {
            // A character split at the cut shows as U+FFFD: drop it.
            text.truncate(text.trim_end_matches('\u{FFFD}').len());
            text.push_str(&format!("\n\n[agentsmith: cut at {max} of {size} bytes]"));
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(text))
    }
}

/// Hands `dir` and everything in it over to `uid:gid`, so an agent running as that user
/// can work there. Symbolic links are changed themselves, never followed.
pub fn hand_over(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let chown = |path: &Path| {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("handing {} over to {uid}:{gid}: {e}", path.display()),
            )
        })
    };
    chown(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            hand_over(&entry.path(), uid, gid)?;
        } else {
            chown(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
    async fn prepare_empties_the_ask_say_and_inbox_directories_of_an_earlier_attempt() {
        let tmp = TempDir::new("prepare-ask");
        let ws = Workspace::new(tmp.0.clone());
        ws.prepare(&serde_json::json!({"task": "t"})).await.unwrap();
        std::fs::write(ws.ask_dir().join("q.answer.json"), r#"{"answer":"old"}"#).unwrap();
        std::fs::write(ws.say_dir().join("s.json"), r#"{"text":"old"}"#).unwrap();
        std::fs::write(
            ws.inbox_dir().join("000001.json"),
            r#"{"seq":1,"text":"old"}"#,
        )
        .unwrap();
        // A link left in place of a directory is removed, not what it points to.
        let outside = TempDir::new("prepare-ask-outside");
        std::fs::write(outside.0.join("keep"), "someone else's").unwrap();
        std::fs::remove_dir_all(ws.say_dir()).unwrap();
        std::os::unix::fs::symlink(&outside.0, ws.say_dir()).unwrap();

        ws.prepare(&serde_json::json!({"task": "t"})).await.unwrap();

        for dir in [ws.ask_dir(), ws.say_dir(), ws.inbox_dir()] {
            let meta = std::fs::symlink_metadata(&dir).unwrap();
            assert!(meta.is_dir(), "{}", dir.display());
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        }
        assert!(outside.0.join("keep").exists());
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
    async fn a_handed_over_directory_belongs_to_the_user_all_the_way_down() {
        use std::os::unix::fs::MetadataExt;
        let tmp = TempDir::new("hand-over");
        let ws = Workspace::new(tmp.0.clone());
        ws.prepare(&serde_json::json!({"task": "t"})).await.unwrap();
        let outside = TempDir::new("hand-over-outside");
        let target = outside.0.join("target");
        std::fs::write(&target, "not the agent's").unwrap();
        std::os::unix::fs::symlink(&target, tmp.0.join("link")).unwrap();
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        // Handing over to oneself is allowed to anyone; another user needs root.
        let (to_uid, to_gid) = if uid == 0 { (65534, 65533) } else { (uid, gid) };
        if uid != 0 {
            // Nothing to tell apart: the link test below needs another owner.
            return;
        }

        hand_over(&tmp.0, to_uid, to_gid).unwrap();

        for path in [tmp.0.clone(), tmp.0.join(RUNNER_DIR), ws.intent_file()] {
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid()),
                (to_uid, to_gid),
                "{}",
                path.display()
            );
        }
        let link = std::fs::symlink_metadata(tmp.0.join("link")).unwrap();
        assert_eq!((link.uid(), link.gid()), (to_uid, to_gid));
        let target = std::fs::metadata(&target).unwrap();
        assert_eq!(target.uid(), uid, "the link was followed");
    }

    #[tokio::test]
    async fn a_result_file_that_is_a_link_or_a_pipe_is_not_read() {
        let tmp = TempDir::new("result-link");
        let ws = Workspace::new(tmp.0.clone());
        ws.prepare(&serde_json::json!({"task": "t"})).await.unwrap();
        let outside = TempDir::new("result-outside");
        let secret = outside.0.join("secret.json");
        std::fs::write(&secret, r#"{"summary":"someone else's"}"#).unwrap();

        std::os::unix::fs::symlink(&secret, ws.result_file()).unwrap();
        let err = ws.read_result().await.unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");

        // A link further up the path: the runner's directory itself.
        std::fs::remove_dir_all(tmp.0.join(RUNNER_DIR)).unwrap();
        std::fs::rename(&secret, outside.0.join("result.json")).unwrap();
        std::os::unix::fs::symlink(&outside.0, tmp.0.join(RUNNER_DIR)).unwrap();
        let err = ws.read_result().await.unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");

        std::fs::remove_file(tmp.0.join(RUNNER_DIR)).unwrap();
        ws.prepare(&serde_json::json!({"task": "t"})).await.unwrap();
        nix::unistd::mkfifo(&ws.result_file(), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(5), ws.read_result())
            .await
            .expect("a pipe must not block the runner")
            .unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[tokio::test]
    async fn notes_are_read_cut_at_their_limit_and_never_through_a_link() {
        let tmp = TempDir::new("notes");
        let ws = Workspace::new(tmp.0.clone());
        std::fs::create_dir_all(tmp.0.join(RUNNER_DIR)).unwrap();
        std::fs::write(ws.notes_file(), "an earlier attempt's").unwrap();
        ws.prepare(&serde_json::json!({"task": "t"})).await.unwrap();
        assert_eq!(ws.read_notes().await.unwrap(), None, "cleared by prepare");

        std::fs::write(ws.notes_file(), "## Why\n\nThe rounding was off.\n").unwrap();
        assert_eq!(
            ws.read_notes().await.unwrap().as_deref(),
            Some("## Why\n\nThe rounding was off.\n")
        );

        // Over the limit, with a two-byte character across it: cut before that character.
        let limit = MAX_NOTES_BYTES as usize;
        let long = format!("{}é{}", "a".repeat(limit - 1), "b".repeat(100));
        std::fs::write(ws.notes_file(), &long).unwrap();
        let notes = ws.read_notes().await.unwrap().unwrap();
        let size = long.len();
        assert_eq!(
            notes,
            format!(
                "{}\n\n[agentsmith: cut at {limit} of {size} bytes]",
                "a".repeat(limit - 1)
            )
        );

        let outside = TempDir::new("notes-outside");
        let secret = outside.0.join("secret.md");
        std::fs::write(&secret, "someone else's").unwrap();
        std::fs::remove_file(ws.notes_file()).unwrap();
        std::os::unix::fs::symlink(&secret, ws.notes_file()).unwrap();
        let err = ws.read_notes().await.unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
