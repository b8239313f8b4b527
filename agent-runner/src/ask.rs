//! `agent-runner ask` and `agent-runner say`: the agent's client for questions and progress
//! messages. It runs inside the job, as the agent, and reads no job environment but the
//! directory it writes to ([`contract::env::ASK_DIR`], [`contract::env::SAY_DIR`]).
//!
//! `ask` leaves its question as `<name>.json` (written as `<name>.json.tmp`, then renamed,
//! so the runner never reads half of it), under a name of its own, and waits for the
//! runner's `<name>.answer.json` ([`crate::conversation`]). `say` leaves its message the
//! same way and returns at once.
//!
//! Exit codes: 0 with the answer alone on stdout (`say`: once the message is left); 1 when
//! there is no answer (the question was refused, the job is ending, nobody answered and
//! there is no default, or no reply came) or the file cannot be written; 2 for bad usage or
//! outside a job.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use contract::conversation::{DEFAULT_ASK_TIMEOUT_SECS, MAX_ASK_TIMEOUT_SECS};
use contract::{env, Ask, AskReply, Say};
use serde::Serialize;

use crate::conversation::check;

/// How often `ask` looks for its answer.
const POLL: Duration = Duration::from_millis(200);

/// How long past the question's own timeout `ask` waits for a reply before it gives up
/// (the runner gives up a minute past it and says so).
const REPLY_MARGIN: Duration = Duration::from_secs(5 * 60);

const ASK_USAGE: &str =
    "usage: agent-runner ask QUESTION [--choice ANSWER]... [--default ANSWER] [--timeout DURATION]";

const ASK_HELP: &str = "
Asks people QUESTION for the agent and waits for the answer, which it prints alone on
stdout. Runs inside an agentsmith job (it needs AGENTSMITH_ASK_DIR).

  --choice ANSWER     an answer offered as a button (repeatable; free text is accepted too)
  --default ANSWER    the answer taken when nobody answers in time (without one the job
                      fails then)
  --timeout DURATION  how long to wait: seconds, or a number with s, m or h (default 30m,
                      at most 24h)

Exit codes: 0 answered, 1 no answer (refused, the job is ending, nobody answered),
2 bad usage.";

const SAY_USAGE: &str = "usage: agent-runner say TEXT";

const SAY_HELP: &str = "
Tells people TEXT, a progress message from the agent, and returns at once. Runs inside an
agentsmith job (it needs AGENTSMITH_SAY_DIR).

Exit codes: 0 the message is left for the runner, 1 it cannot be written, 2 bad usage.";

/// What a command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<T> {
    /// Do it.
    Run(T),
    /// Print the help.
    Help,
}

/// `agent-runner ask ARGS...`: asks, waits, prints the answer; the exit code says how it
/// went (see the module's documentation).
pub fn ask(args: &[OsString]) -> ExitCode {
    let question = match parse_ask(args) {
        Ok(Command::Run(question)) => question,
        Ok(Command::Help) => return help(ASK_USAGE, ASK_HELP),
        Err(problem) => return usage("ask", ASK_USAGE, &problem),
    };
    let Some(dir) = job_dir(env::ASK_DIR, "ask") else {
        return ExitCode::from(2);
    };
    let timeout = question.timeout_secs.unwrap_or(DEFAULT_ASK_TIMEOUT_SECS);
    let name = match leave(&dir, "q", &question) {
        Ok(name) => name,
        Err(e) => return failed("ask", &e),
    };
    match wait_for_reply(&dir, &name, Duration::from_secs(timeout) + REPLY_MARGIN) {
        Ok(AskReply {
            answer: Some(answer),
            defaulted,
            ..
        }) => {
            if defaulted {
                eprintln!("agent-runner ask: nobody answered in time; taking the default");
            }
            let mut stdout = std::io::stdout().lock();
            match writeln!(stdout, "{answer}").and_then(|()| stdout.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failed("ask", &format!("writing the answer: {e}")),
            }
        }
        Ok(AskReply {
            error: Some(error), ..
        }) => failed("ask", &error),
        Ok(_) => failed("ask", "the reply holds neither an answer nor an error"),
        Err(e) => failed("ask", &e),
    }
}

/// `agent-runner say ARGS...`: leaves the message for the runner and returns.
pub fn say(args: &[OsString]) -> ExitCode {
    let message = match parse_say(args) {
        Ok(Command::Run(message)) => message,
        Ok(Command::Help) => return help(SAY_USAGE, SAY_HELP),
        Err(problem) => return usage("say", SAY_USAGE, &problem),
    };
    let Some(dir) = job_dir(env::SAY_DIR, "say") else {
        return ExitCode::from(2);
    };
    match leave(&dir, "s", &message) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => failed("say", &e),
    }
}

/// Parses `ask`'s arguments (after `ask`) into a question that passes
/// [`crate::conversation::check`]; what is wrong, for the usage message, when they do not.
pub fn parse_ask(args: &[OsString]) -> Result<Command<Ask>, String> {
    let args = utf8(args)?;
    let mut iter = args.into_iter();
    let mut question = None;
    let mut choices = Vec::new();
    let mut default = None;
    let mut timeout_secs = None;
    let mut options_done = false;
    while let Some(arg) = iter.next() {
        if !options_done && arg == "--" {
            options_done = true;
        } else if !options_done && (arg == "-h" || arg == "--help") {
            return Ok(Command::Help);
        } else if !options_done && arg.starts_with('-') && arg.len() > 1 {
            let (option, inline) = match arg.split_once('=') {
                Some((option, value)) => (option.to_string(), Some(value.to_string())),
                None => (arg.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| iter.next())
                    .ok_or_else(|| format!("{option} needs a value"))
            };
            match option.as_str() {
                "--choice" => choices.push(value()?),
                "--default" => default = Some(value()?),
                "--timeout" => timeout_secs = Some(parse_timeout(&value()?)?),
                other => return Err(format!("unknown option {other}")),
            }
        } else if question.is_none() {
            question = Some(arg);
        } else {
            return Err("one question at a time: quote it as one argument".into());
        }
    }
    let Some(question) = question else {
        return Err("the question is missing".into());
    };
    let ask = Ask {
        question,
        choices,
        default,
        timeout_secs,
    };
    check(&ask)?;
    Ok(Command::Run(ask))
}

/// Parses `say`'s arguments (after `say`): one non-empty text.
pub fn parse_say(args: &[OsString]) -> Result<Command<Say>, String> {
    let args = utf8(args)?;
    let mut text = None;
    let mut options_done = false;
    for arg in args {
        if !options_done && arg == "--" {
            options_done = true;
        } else if !options_done && (arg == "-h" || arg == "--help") {
            return Ok(Command::Help);
        } else if !options_done && arg.starts_with('-') && arg.len() > 1 {
            return Err(format!("unknown option {arg}"));
        } else if text.is_none() {
            text = Some(arg);
        } else {
            return Err("one message at a time: quote it as one argument".into());
        }
    }
    match text {
        Some(text) if !text.trim().is_empty() => Ok(Command::Run(Say { text })),
        Some(_) => Err("the message is empty".into()),
        None => Err("the message is missing".into()),
    }
}

/// A timeout in seconds: plain seconds, or a number with `s`, `m` or `h`; from 1 second to
/// [`MAX_ASK_TIMEOUT_SECS`].
pub fn parse_timeout(text: &str) -> Result<u64, String> {
    let (number, unit) = match text.char_indices().last() {
        Some((at, 's')) => (&text[..at], 1),
        Some((at, 'm')) => (&text[..at], 60),
        Some((at, 'h')) => (&text[..at], 60 * 60),
        _ => (text, 1),
    };
    let secs = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| {
            format!("the timeout {text:?} is not seconds, or a number with s, m or h (30m)")
        })?;
    match secs {
        0 => Err("the timeout must be at least 1 second".into()),
        secs if secs > MAX_ASK_TIMEOUT_SECS => Err(format!(
            "the timeout {text} is more than the {}h allowed",
            MAX_ASK_TIMEOUT_SECS / 3600
        )),
        secs => Ok(secs),
    }
}

fn utf8(args: &[OsString]) -> Result<Vec<String>, String> {
    args.iter()
        .map(|arg| {
            arg.to_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{arg:?} is not valid UTF-8"))
        })
        .collect()
}

/// The directory `var` names; `None`, having said why, outside a job.
fn job_dir(var: &str, command: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => {
            eprintln!("agent-runner {command} runs inside an agentsmith job: {var} is not set");
            None
        }
    }
}

/// A name no other file in the directory has: `prefix`, the time in nanoseconds (fixed
/// width, so names sort oldest first) and the process id.
fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{nanos:020}-{}", std::process::id())
}

/// Writes `value` as `<name>.json` in `dir` under a fresh name, whole or not at all; the name.
fn leave(dir: &Path, prefix: &str, value: &impl Serialize) -> Result<String, String> {
    let name = unique_name(prefix);
    let json = serde_json::to_vec(value).expect("an Ask or a Say always serialises");
    let tmp = dir.join(format!("{name}.json.tmp"));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut file| file.write_all(&json));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("writing {}: {e}", tmp.display()));
    }
    let path = dir.join(format!("{name}.json"));
    std::fs::rename(&tmp, &path).map_err(|e| format!("renaming to {}: {e}", path.display()))?;
    Ok(name)
}

/// Waits up to `limit` for `<name>.answer.json` in `dir`.
fn wait_for_reply(dir: &Path, name: &str, limit: Duration) -> Result<AskReply, String> {
    let path = dir.join(format!("{name}.answer.json"));
    let deadline = Instant::now() + limit;
    let mut unreadable = None;
    loop {
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(reply) => return Ok(reply),
                // The runner renames a whole file into place; whatever this is, it may be
                // replaced yet.
                Err(e) => unreadable = Some(e.to_string()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        }
        if Instant::now() >= deadline {
            let why = unreadable.map_or_else(String::new, |e| format!(" (it is not a reply: {e})"));
            return Err(format!(
                "no reply in {} within {} seconds{why}; is the runner still watching?",
                path.display(),
                limit.as_secs()
            ));
        }
        std::thread::sleep(POLL);
    }
}

fn help(usage: &str, help: &str) -> ExitCode {
    println!("{usage}\n{help}");
    ExitCode::SUCCESS
}

fn usage(command: &str, usage: &str, problem: &str) -> ExitCode {
    eprintln!(
        "agent-runner {command}: {problem}\n{usage}\n(agent-runner {command} --help says more)"
    );
    ExitCode::from(2)
}

fn failed(command: &str, error: &str) -> ExitCode {
    eprintln!("agent-runner {command}: {error}");
    ExitCode::from(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn an_ask_command_line_becomes_a_question() {
        let parsed = parse_ask(&args(&[
            "which?",
            "--choice",
            "a",
            "--choice=b",
            "--default",
            "anything",
            "--timeout",
            "2m",
        ]))
        .unwrap();
        assert_eq!(
            parsed,
            Command::Run(Ask {
                question: "which?".into(),
                choices: vec!["a".into(), "b".into()],
                default: Some("anything".into()),
                timeout_secs: Some(120),
            })
        );
        assert_eq!(parse_ask(&args(&["--help"])).unwrap(), Command::Help);
        let dashed = parse_ask(&args(&["--", "-1 or +1?"])).unwrap();
        assert!(matches!(dashed, Command::Run(ask) if ask.question == "-1 or +1?"));
    }

    #[test]
    fn a_bad_ask_command_line_says_what_is_wrong() {
        for (line, says) in [
            (&[][..], "missing"),
            (&["q", "--colour", "red"][..], "unknown option --colour"),
            (&["q", "--choice"][..], "--choice needs a value"),
            (&["q", "r"][..], "one question"),
            (&["q", "--timeout", "soon"][..], "not seconds"),
            (&["q", "--timeout", "25h"][..], "24h"),
            (&["q", "--default", ""][..], "default is empty"),
            (&["  "][..], "empty"),
        ] {
            let error = parse_ask(&args(line)).unwrap_err();
            assert!(error.contains(says), "{line:?}: {error}");
        }
    }

    #[test]
    fn timeouts_are_seconds_minutes_or_hours() {
        assert_eq!(parse_timeout("45"), Ok(45));
        assert_eq!(parse_timeout("45s"), Ok(45));
        assert_eq!(parse_timeout("30m"), Ok(1800));
        assert_eq!(parse_timeout("24h"), Ok(MAX_ASK_TIMEOUT_SECS));
        for bad in ["0", "0m", "", "m", "1.5h", "-1", "99999999999999999999h"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_say_command_line_is_one_non_empty_text() {
        assert_eq!(
            parse_say(&args(&["halfway"])).unwrap(),
            Command::Run(Say {
                text: "halfway".into()
            })
        );
        assert!(parse_say(&args(&[])).is_err());
        assert!(parse_say(&args(&[" "])).is_err());
        assert!(parse_say(&args(&["a", "b"])).is_err());
        assert_eq!(parse_say(&args(&["-h"])).unwrap(), Command::Help);
    }

    #[test]
    fn names_are_valid_and_sort_oldest_first() {
        let first = unique_name("q");
        std::thread::sleep(Duration::from_millis(2));
        let second = unique_name("q");
        assert!(contract::conversation::valid_file_name(&first), "{first}");
        assert!(first < second, "{first} {second}");
    }
}
