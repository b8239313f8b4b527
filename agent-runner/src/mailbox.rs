//! The agent's ask, say and inbox directories, read and written so that nothing the agent
//! puts there can mislead the runner.
//!
//! The agent is untrusted, owns these directories, and works in them while the runner
//! (perhaps root) reads them. So every directory is opened from the work directory down,
//! one component at a time, with `O_NOFOLLOW`; files are found relative to the opened
//! directory (through `/proc/self/fd/<fd>/<name>`, which resolves to the directory itself,
//! never again by path); and only a regular file with a single link, of the agent's user,
//! at most [`MAX_FILE_BYTES`] long, is read, opened with `O_NOFOLLOW | O_NONBLOCK` so that
//! a symbolic link is never followed and a FIFO never blocks. What the runner writes (answers,
//! messages) is created beside its name as `.tmp` with `O_EXCL | O_NOFOLLOW`, handed to the
//! agent's user, then renamed into place; a message is never written over anything already
//! there ([`Opened::write_new_json`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use contract::conversation::MAX_FILE_BYTES;
use contract::{AgentUser, AskReply};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{renameat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use serde::Serialize;

use crate::workspace::RUNNER_DIR;

/// One of the agent's directories under `.agentsmith/` (`ask`, `say` or `inbox`).
#[derive(Debug, Clone)]
pub struct Mailbox {
    workdir: PathBuf,
    name: &'static str,
    owner: Option<AgentUser>,
}

/// A file's identity: a file written again under the same name (a new file renamed over
/// it) has another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    ino: u64,
    ctime: (i64, i64),
}

/// What reading a file came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// The file's bytes.
    Bytes(Vec<u8>),
    /// The file is not one the runner reads; why, for the agent.
    Refused(String),
    /// The file is gone (or changed while it was read): look again on the next poll.
    Gone,
}

impl Mailbox {
    /// The directory `name` under `.agentsmith/` of `workdir`; files in it must belong to
    /// `owner` when the agent runs as another user.
    pub fn new(workdir: PathBuf, name: &'static str, owner: Option<AgentUser>) -> Self {
        Self {
            workdir,
            name,
            owner,
        }
    }

    /// The directory's name (`ask`, `say`, `inbox`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Opens the directory, refusing a symbolic link anywhere below the work directory.
    pub fn open(&self) -> io::Result<Opened> {
        let nofollow = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let top = Dir::open(&self.workdir, nofollow, Mode::empty())?;
        let nofollow = nofollow | OFlag::O_NOFOLLOW;
        let runner = Dir::openat(Some(top.as_raw_fd()), RUNNER_DIR, nofollow, Mode::empty())?;
        let dir = Dir::openat(Some(runner.as_raw_fd()), self.name, nofollow, Mode::empty())?;
        Ok(Opened {
            dir,
            owner: self.owner,
        })
    }
}

/// An opened [`Mailbox`]: its entries, read and written relative to the open directory.
#[derive(Debug)]
pub struct Opened {
    dir: Dir,
    owner: Option<AgentUser>,
}

impl Opened {
    /// The names in the directory, sorted (names that are not UTF-8 left out).
    pub fn names(&mut self) -> Vec<String> {
        let mut names: Vec<String> = self
            .dir
            .iter()
            .filter_map(|entry| entry.ok()?.file_name().to_str().ok().map(str::to_string))
            .filter(|name| name != "." && name != "..")
            .collect();
        names.sort();
        names
    }

    /// The identity of `name`, without following a link; `None` when it is gone.
    pub fn identity(&self, name: &str) -> Option<Identity> {
        self.stat(name).ok().map(|stat| identity_of(&stat))
    }

    fn stat(&self, name: &str) -> nix::Result<FileStat> {
        fstatat(
            Some(self.dir.as_raw_fd()),
            name,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
    }

    /// The path of `name` in the opened directory itself, whatever has been renamed since.
    fn at(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{name}", self.dir.as_raw_fd()))
    }

    /// Reads `name` if it is a file the runner reads (see the module's documentation).
    pub fn read(&self, name: &str) -> Content {
        let stat = match self.stat(name) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => return Content::Gone,
            Err(e) => return Content::Refused(format!("it cannot be examined: {e}")),
        };
        if let Some(reason) = self.refusal(&stat) {
            return Content::Refused(reason);
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
            .open(self.at(name));
        let file = match file {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Content::Gone,
            Err(e) if e.raw_os_error() == Some(Errno::ELOOP as i32) => {
                return Content::Refused("it is a symbolic link".into())
            }
            Err(e) => return Content::Refused(format!("it cannot be opened: {e}")),
        };
        // Replaced between the look and the open: look again next time.
        match file.metadata() {
            Ok(meta) if meta.ino() == stat.st_ino && meta.is_file() => {}
            _ => return Content::Gone,
        }
        read_bounded(file)
    }

    /// Why the file `stat` describes is not read, if it is not.
    fn refusal(&self, stat: &FileStat) -> Option<String> {
        let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
        if kind != SFlag::S_IFREG {
            let what = match kind {
                SFlag::S_IFLNK => "a symbolic link",
                SFlag::S_IFIFO => "a pipe",
                SFlag::S_IFDIR => "a directory",
                _ => "not a regular file",
            };
            return Some(format!("it is {what}; only a regular file is read"));
        }
        if stat.st_nlink != 1 {
            return Some(format!(
                "it has {} hard links; only a file of its own is read",
                stat.st_nlink
            ));
        }
        if let Some(owner) = self.owner.filter(|owner| owner.uid != stat.st_uid) {
            return Some(format!(
                "it belongs to user {}, not to the agent's user {}",
                stat.st_uid, owner.uid
            ));
        }
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        (size > MAX_FILE_BYTES)
            .then(|| format!("it holds {size} bytes, more than the {MAX_FILE_BYTES} allowed"))
    }

    /// Writes `<stem>.answer.json` ([`Opened::write_json`]).
    pub fn write_reply(&self, stem: &str, reply: &AskReply) -> io::Result<()> {
        self.write_json(&format!("{stem}.answer.json"), reply)
    }

    /// Writes `value` as JSON to `name`: created anew beside it as `.tmp` (never through a
    /// link), given to the agent's user, then renamed into place, replacing whatever was
    /// there (a link itself, never what it points to).
    pub fn write_json(&self, name: &str, value: &impl Serialize) -> io::Result<()> {
        self.write(name, value, Replace::Yes)
    }

    /// Like [`Opened::write_json`], but never over anything: an `AlreadyExists` error when
    /// something (a file, a link, a directory) is at `name` already.
    pub fn write_new_json(&self, name: &str, value: &impl Serialize) -> io::Result<()> {
        self.write(name, value, Replace::No)
    }

    fn write(&self, name: &str, value: &impl Serialize, replace: Replace) -> io::Result<()> {
        let exists = || {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name} is there already"),
            )
        };
        if replace == Replace::No && !matches!(self.stat(name), Err(Errno::ENOENT)) {
            return Err(exists());
        }
        let json = serde_json::to_vec(value).map_err(io::Error::other)?;
        let tmp = format!("{name}.tmp");
        let fd = Some(self.dir.as_raw_fd());
        match unlinkat(fd, tmp.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
            .open(self.at(&tmp))?;
        file.write_all(&json)?;
        if let Some(owner) = self.owner {
            std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid))?;
        }
        drop(file);
        // Looked at again just before the rename: what the agent put there meanwhile is
        // left alone. (Should it come between this look and the rename, the rename replaces
        // it, never follows it: the agent's own directory gets the true message.)
        if replace == Replace::No && !matches!(self.stat(name), Err(Errno::ENOENT)) {
            let _ = unlinkat(fd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(exists());
        }
        renameat(fd, tmp.as_str(), fd, name)?;
        Ok(())
    }

    /// Removes `name` (a link itself, never what it points to); gone already is fine.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match unlinkat(Some(self.dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether a write may replace what is at its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replace {
    Yes,
    No,
}

fn identity_of(stat: &FileStat) -> Identity {
    Identity {
        ino: stat.st_ino,
        ctime: (stat.st_ctime, stat.st_ctime_nsec),
    }
}

/// At most [`MAX_FILE_BYTES`] of `file`; more is refused (the file may have grown since it
/// was looked at).
fn read_bounded(file: File) -> Content {
    let mut bytes = Vec::new();
    match file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes) {
        Ok(_) if bytes.len() as u64 > MAX_FILE_BYTES => Content::Refused(format!(
            "it holds more than the {MAX_FILE_BYTES} bytes allowed"
        )),
        Ok(_) => Content::Bytes(bytes),
        // A file with O_NONBLOCK that has nothing to give yet.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Content::Gone,
        Err(e) => Content::Refused(format!("it cannot be read: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use testkit::temp::TempDir;

    use super::*;
    use crate::workspace::ASK_DIR;

    fn mailbox() -> (TempDir, Mailbox) {
        let tmp = TempDir::new("mailbox");
        std::fs::create_dir_all(tmp.path().join(RUNNER_DIR).join(ASK_DIR)).unwrap();
        let mailbox = Mailbox::new(tmp.path().to_path_buf(), ASK_DIR, None);
        (tmp, mailbox)
    }

    #[test]
    fn a_regular_file_is_read_and_listed_in_order() {
        let (tmp, mailbox) = mailbox();
        let dir = tmp.path().join(RUNNER_DIR).join(ASK_DIR);
        std::fs::write(dir.join("b.json"), "B").unwrap();
        std::fs::write(dir.join("a.json"), "A").unwrap();
        let mut opened = mailbox.open().unwrap();
        assert_eq!(opened.names(), ["a.json", "b.json"]);
        assert_eq!(opened.read("a.json"), Content::Bytes(b"A".to_vec()));
        assert_eq!(opened.read("c.json"), Content::Gone);
    }

    #[test]
    fn a_link_is_neither_read_nor_followed() {
        let (tmp, mailbox) = mailbox();
        let outside = TempDir::new("mailbox-outside");
        let secret = outside.path().join("secret.json");
        std::fs::write(&secret, r#"{"question":"someone else's"}"#).unwrap();
        let dir = tmp.path().join(RUNNER_DIR).join(ASK_DIR);
        std::os::unix::fs::symlink(&secret, dir.join("q.json")).unwrap();

        let opened = mailbox.open().unwrap();
        match opened.read("q.json") {
            Content::Refused(reason) => assert!(reason.contains("symbolic link"), "{reason}"),
            other => panic!("a link was read: {other:?}"),
        }
        // Nor is an answer written through a link.
        std::os::unix::fs::symlink(&secret, dir.join("q.answer.json.tmp")).unwrap();
        opened
            .write_reply(
                "q",
                &AskReply {
                    answer: None,
                    by: None,
                    defaulted: false,
                    error: Some("refused".into()),
                },
            )
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            r#"{"question":"someone else's"}"#
        );
        assert!(std::fs::symlink_metadata(dir.join("q.answer.json"))
            .unwrap()
            .is_file());
    }

    #[test]
    fn a_linked_directory_is_not_opened() {
        let (tmp, mailbox) = mailbox();
        let outside = TempDir::new("mailbox-outside-dir");
        let ask = tmp.path().join(RUNNER_DIR).join(ASK_DIR);
        std::fs::remove_dir(&ask).unwrap();
        std::os::unix::fs::symlink(outside.path(), &ask).unwrap();
        let err = mailbox.open().unwrap_err();
        // Linux says ENOTDIR for a link opened with O_NOFOLLOW | O_DIRECTORY.
        let refused = [Errno::ELOOP as i32, Errno::ENOTDIR as i32];
        assert!(refused.contains(&err.raw_os_error().unwrap()), "{err}");
    }

    #[test]
    fn a_fifo_does_not_block_the_runner() {
        let (tmp, mailbox) = mailbox();
        let fifo = tmp.path().join(RUNNER_DIR).join(ASK_DIR).join("q.json");
        nix::unistd::mkfifo(&fifo, Mode::S_IRWXU).unwrap();
        let started = Instant::now();
        match mailbox.open().unwrap().read("q.json") {
            Content::Refused(reason) => assert!(reason.contains("pipe"), "{reason}"),
            other => panic!("a pipe was read: {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_oversized_file_or_a_hard_link_is_refused() {
        let (tmp, mailbox) = mailbox();
        let dir = tmp.path().join(RUNNER_DIR).join(ASK_DIR);
        std::fs::write(
            dir.join("big.json"),
            vec![b' '; MAX_FILE_BYTES as usize + 1],
        )
        .unwrap();
        std::fs::write(dir.join("one.json"), "{}").unwrap();
        std::fs::hard_link(dir.join("one.json"), dir.join("two.json")).unwrap();
        let opened = mailbox.open().unwrap();
        for (name, says) in [("big.json", "bytes"), ("two.json", "hard links")] {
            match opened.read(name) {
                Content::Refused(reason) => assert!(reason.contains(says), "{reason}"),
                other => panic!("{name} was read: {other:?}"),
            }
        }
    }

    #[test]
    fn a_file_of_another_user_is_refused_when_the_agent_has_its_own() {
        let (tmp, _) = mailbox();
        let dir = tmp.path().join(RUNNER_DIR).join(ASK_DIR);
        std::fs::write(dir.join("q.json"), "{}").unwrap();
        let me = nix::unistd::getuid().as_raw();
        let other = AgentUser {
            uid: me.wrapping_add(1),
            gid: 0,
        };
        let mailbox = Mailbox::new(tmp.path().to_path_buf(), ASK_DIR, Some(other));
        match mailbox.open().unwrap().read("q.json") {
            Content::Refused(reason) => assert!(reason.contains("belongs to user"), "{reason}"),
            other => panic!("another user's file was read: {other:?}"),
        }
    }

    #[test]
    fn a_new_file_is_written_over_nothing_and_leaves_no_temporary_file() {
        let (tmp, mailbox) = mailbox();
        let dir = tmp.path().join(RUNNER_DIR).join(ASK_DIR);
        let outside = TempDir::new("mailbox-outside-new");
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "someone else's").unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("taken.json")).unwrap();
        std::fs::create_dir(dir.join("dir.json")).unwrap();
        let opened = mailbox.open().unwrap();

        for name in ["taken.json", "dir.json"] {
            let err = opened.write_new_json(name, &"new").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{name}: {err}");
        }
        opened.write_new_json("free.json", &"new").unwrap();

        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "someone else's");
        assert_eq!(
            std::fs::read_to_string(dir.join("free.json")).unwrap(),
            r#""new""#
        );
        let names = mailbox.open().unwrap().names();
        assert!(
            !names.iter().any(|name| name.ends_with(".tmp")),
            "{names:?}"
        );
    }

    #[test]
    fn a_reply_replaces_a_stale_temporary_file_and_lands_whole() {
        let (tmp, mailbox) = mailbox();
        let dir = tmp.path().join(RUNNER_DIR).join(ASK_DIR);
        std::fs::write(dir.join("q.answer.json.tmp"), "half").unwrap();
        let reply = AskReply {
            answer: Some("b".into()),
            by: Some("api".into()),
            defaulted: false,
            error: None,
        };
        mailbox.open().unwrap().write_reply("q", &reply).unwrap();
        let written: AskReply =
            serde_json::from_slice(&std::fs::read(dir.join("q.answer.json")).unwrap()).unwrap();
        assert_eq!(written, reply);
        assert!(!dir.join("q.answer.json.tmp").exists());
    }
}
