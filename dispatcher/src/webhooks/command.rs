//! The command grammar shared by Slack (slash commands and app mentions) and by comments on
//! GitHub, GitLab and Jira issues.
//!
//! Slack: `fix <TICKET> [in <project>]`, `run <project> <task…>`, `status [<job>]`, `list`,
//! `cancel <job>`, `retry <job>`, `help`. Comments (`/agent fix`, `/agent run <task…>`) are
//! about the issue they are on, so they name neither ticket nor project.

/// A parsed Slack command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Work on a ticket.
    Fix {
        /// The ticket (`PAY-12`, `acme/shop#3`).
        ticket: String,
        /// The project, when given with `in <project>`.
        project: Option<String>,
    },
    /// Run a free-form task in a project.
    Run {
        /// The project.
        project: String,
        /// The task.
        task: String,
    },
    /// One job's state, or the requester's latest jobs.
    Status(Option<String>),
    /// The latest jobs.
    List,
    /// Cancel a job.
    Cancel(String),
    /// Run a finished job again.
    Retry(String),
    /// Answer the question a job's agent waits on.
    Answer {
        /// The job.
        job: String,
        /// The answer.
        text: String,
    },
    /// Send a running job's agent a message (steer it).
    Say {
        /// The job.
        job: String,
        /// The message.
        text: String,
    },
    /// The usage text.
    Help,
}

/// A command in a comment on an issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommentCommand {
    /// Work on the issue; any words after `fix` are passed on as the task's detail.
    Fix(String),
    /// Run a task about the issue.
    Run(String),
    /// Answer the question the job waits on (the rest of the comment; empty when
    /// nothing followed the verb).
    Answer(String),
    /// Send the running job's agent a message (the rest of the comment).
    Say(String),
}

/// The usage text of the Slack command named `command`.
pub fn usage(command: &str) -> String {
    format!(
        "Usage:\n\
         • `{command} fix <TICKET> [in <project>]`: work on a ticket\n\
         • `{command} run <project> <task…>`: run a task in a project\n\
         • `{command} status [<job>]`: a job's state, or your latest jobs\n\
         • `{command} list`: the latest jobs\n\
         • `{command} cancel <job>` / `{command} retry <job>`\n\
         • `{command} answer <job> <answer…>`: answer a job's question\n\
         • `{command} say <job> <message…>`: tell a running job's agent something\n\
         • `{command} help`: this text"
    )
}

/// Whether `word` can be a ticket, project or job id: 1-200 letters, digits and `._:/@#+=-`.
pub fn valid_key(word: &str) -> bool {
    !word.is_empty()
        && word.len() <= 200
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:/@#+=-".contains(c))
}

/// A command that cannot be read: what to tell the user (the reason, then the usage), never
/// an error page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}\n{usage}")]
pub struct CommandError {
    /// What was wrong.
    pub reason: String,
    /// How the command is used.
    pub usage: String,
}

/// Parses the text after a Slack command.
pub fn parse(text: &str, command: &str) -> Result<Command, CommandError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let wrong = |why: &str| CommandError {
        reason: why.to_string(),
        usage: usage(command),
    };
    let key = |word: &str, what: &str| {
        if valid_key(word) {
            Ok(word.to_string())
        } else {
            Err(wrong(&format!(
                "`{}` is not a {what} (letters, digits and ._:/@#+=-).",
                truncate(word, 40)
            )))
        }
    };
    let verb = words.first().map(|w| w.to_ascii_lowercase());
    match (verb.as_deref(), &words[words.len().min(1)..]) {
        (None | Some("help"), _) => Ok(Command::Help),
        (Some("fix"), [ticket]) => Ok(Command::Fix {
            ticket: key(ticket, "ticket")?,
            project: None,
        }),
        (Some("fix"), [ticket, in_, project]) if in_.eq_ignore_ascii_case("in") => {
            Ok(Command::Fix {
                ticket: key(ticket, "ticket")?,
                project: Some(key(project, "project")?),
            })
        }
        (Some("fix"), _) => Err(wrong(
            "`fix` takes a ticket, and optionally `in <project>`.",
        )),
        (Some("run"), [project, task @ ..]) if !task.is_empty() => Ok(Command::Run {
            project: key(project, "project")?,
            task: task.join(" "),
        }),
        (Some("run"), _) => Err(wrong("`run` takes a project and a task.")),
        (Some("status"), []) => Ok(Command::Status(None)),
        (Some("status"), [job]) => Ok(Command::Status(Some(key(job, "job id")?))),
        (Some("list"), []) => Ok(Command::List),
        (Some("cancel"), [job]) => Ok(Command::Cancel(key(job, "job id")?)),
        (Some("retry"), [job]) => Ok(Command::Retry(key(job, "job id")?)),
        (Some("answer"), [job, answer @ ..]) if !answer.is_empty() => Ok(Command::Answer {
            job: key(job, "job id")?,
            text: answer.join(" "),
        }),
        (Some("answer"), _) => Err(wrong("`answer` takes a job id and the answer.")),
        (Some("say"), [job, message @ ..]) if !message.is_empty() => Ok(Command::Say {
            job: key(job, "job id")?,
            text: message.join(" "),
        }),
        (Some("say"), _) => Err(wrong("`say` takes a job id and the message.")),
        (Some(verb @ ("status" | "list" | "cancel" | "retry")), _) => {
            Err(wrong(&format!("Wrong arguments for `{verb}`.")))
        }
        (Some(other), _) => Err(wrong(&format!("I don't know `{}`.", truncate(other, 40)))),
    }
}

/// Parses a comment whose first non-blank line starts with `command` (`/agent fix`,
/// `/agent run <task…>`); `None` for any other comment, which is not a trigger.
pub fn parse_comment(body: &str, command: &str) -> Option<CommentCommand> {
    let first = body.lines().find(|line| !line.trim().is_empty())?.trim();
    let rest = first.strip_prefix(command)?;
    // `/agentx` is not `/agent`.
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return None;
    }
    let mut words = rest.split_whitespace();
    let verb = words.next()?.to_ascii_lowercase();
    let tail = words.collect::<Vec<_>>().join(" ");
    match verb.as_str() {
        "fix" => Some(CommentCommand::Fix(tail)),
        "run" if !tail.is_empty() => Some(CommentCommand::Run(tail)),
        // The answer or message is the rest of the comment, as written (lines and all).
        "answer" | "say" => {
            let after = body.split_once(first).map_or("", |(_, after)| after);
            let line = rest.trim_start().get(verb.len()..).unwrap_or("");
            let text = format!("{}{after}", line.trim()).trim().to_string();
            Some(if verb == "say" {
                CommentCommand::Say(text)
            } else {
                CommentCommand::Answer(text)
            })
        }
        _ => None,
    }
}

/// At most `max` characters of `text`, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_commands_parse_by_the_grammar() {
        let fix = |t: &str, p: Option<&str>| Command::Fix {
            ticket: t.into(),
            project: p.map(Into::into),
        };
        assert_eq!(parse("fix PROJ-123", "/agent"), Ok(fix("PROJ-123", None)));
        assert_eq!(
            parse("  FIX  PROJ-123 in payments ", "/agent"),
            Ok(fix("PROJ-123", Some("payments")))
        );
        assert_eq!(
            parse("run payments bump the lockfile, then test", "/agent"),
            Ok(Command::Run {
                project: "payments".into(),
                task: "bump the lockfile, then test".into()
            })
        );
        assert_eq!(parse("status", "/agent"), Ok(Command::Status(None)));
        assert_eq!(
            parse("status abc123", "/agent"),
            Ok(Command::Status(Some("abc123".into())))
        );
        assert_eq!(parse("list", "/agent"), Ok(Command::List));
        assert_eq!(
            parse("cancel j1", "/agent"),
            Ok(Command::Cancel("j1".into()))
        );
        assert_eq!(parse("retry j1", "/agent"), Ok(Command::Retry("j1".into())));
        assert_eq!(parse("help", "/agent"), Ok(Command::Help));
        assert_eq!(parse("", "/agent"), Ok(Command::Help));
    }

    #[test]
    fn malformed_slack_commands_get_the_usage_with_the_reason() {
        for (text, why) in [
            ("fix", "`fix` takes a ticket"),
            ("fix A B C D", "`fix` takes a ticket"),
            ("fix A on p", "`fix` takes a ticket"),
            ("run payments", "`run` takes a project and a task"),
            ("cancel", "Wrong arguments for `cancel`"),
            ("deploy prod", "I don't know `deploy`"),
            ("fix <script>", "is not a ticket"),
        ] {
            let message = parse(text, "/bot").unwrap_err().to_string();
            assert!(message.contains(why), "{text:?}: {message}");
            assert!(message.contains("`/bot fix <TICKET>"), "{message}");
        }
    }

    #[test]
    fn comments_trigger_only_when_they_start_with_the_command() {
        assert_eq!(
            parse_comment("/agent fix", "/agent"),
            Some(CommentCommand::Fix(String::new()))
        );
        assert_eq!(
            parse_comment("\n  /agent fix the flaky test\nthanks", "/agent"),
            Some(CommentCommand::Fix("the flaky test".into()))
        );
        assert_eq!(
            parse_comment("/agent run add a changelog entry", "/agent"),
            Some(CommentCommand::Run("add a changelog entry".into()))
        );
        for body in [
            "please /agent fix",
            "/agentx fix",
            "/agent",
            "/agent run",
            "/agent status",
            "",
        ] {
            assert_eq!(parse_comment(body, "/agent"), None, "{body:?}");
        }
    }

    #[test]
    fn an_answer_is_the_rest_of_the_comment_or_of_the_command() {
        assert_eq!(
            parse_comment("/agent answer payments", "/agent"),
            Some(CommentCommand::Answer("payments".into()))
        );
        assert_eq!(
            parse_comment(
                "/agent Answer use the v2 client\nand keep v1 working",
                "/agent"
            ),
            Some(CommentCommand::Answer(
                "use the v2 client\nand keep v1 working".into()
            ))
        );
        assert_eq!(
            parse_comment("/agent answer", "/agent"),
            Some(CommentCommand::Answer(String::new()))
        );
        assert_eq!(
            parse_comment("/agent say use the v2 client", "/agent"),
            Some(CommentCommand::Say("use the v2 client".into()))
        );
        assert_eq!(
            parse("answer abc123 the billing one", "/agent"),
            Ok(Command::Answer {
                job: "abc123".into(),
                text: "the billing one".into()
            })
        );
        let message = parse("answer abc123", "/agent").unwrap_err().to_string();
        assert!(
            message.contains("`answer` takes a job id and the answer."),
            "{message}"
        );
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 2), "hi");
    }
}
