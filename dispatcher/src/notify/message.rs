//! What a reply says, independent of where it goes: a headline, details, links, quoted log
//! lines, and which buttons fit. Each provider renders it in its own markup.
//!
//! Every text of a [`Message`] is plain text, whoever wrote it: the agent's summary, links
//! and output, the requester's task, a failure reason. The renderers ([`Message::mrkdwn`],
//! [`Message::markdown`], [`Message::jira_wiki`]) put each through [`neutralise`] and add
//! the only markup of a reply themselves.

use queue::{Job, JobState};

use super::neutralise::{self, Link};

/// One reply, before it is rendered for a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The job it is about, if any.
    pub job_id: Option<String>,
    /// The first line (`Finished abc123: fix PAY-12`).
    pub headline: String,
    /// More text (the agent's summary, the failure reason).
    pub detail: Option<String>,
    /// Links: the agent's (a pull request) and the job's page.
    pub links: Vec<Link>,
    /// How many of the agent's links the reply leaves out (not absolute http(s) URLs, or
    /// past [`neutralise::LINKS_MAX`]); the reply says so.
    pub links_left_out: usize,
    /// The last output lines, quoted (failures).
    pub log_lines: Vec<String>,
    /// Whether a Cancel button fits (the job has not ended).
    pub can_cancel: bool,
    /// Whether a Retry button fits (the job ended without success).
    pub can_retry: bool,
    /// Only the requester sees it (Slack).
    pub ephemeral: bool,
    /// The agent's open question, when the message asks it: a button per choice (Slack).
    pub question: Option<Asked>,
}

/// A question a message asks, for its buttons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// The question's id.
    pub id: String,
    /// Its choices.
    pub choices: Vec<String>,
}

impl Message {
    /// A plain message.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            job_id: None,
            headline: text.into(),
            detail: None,
            links: Vec::new(),
            links_left_out: 0,
            log_lines: Vec::new(),
            can_cancel: false,
            can_retry: false,
            ephemeral: false,
            question: None,
        }
    }

    /// The reply for `job` having reached `state` in `attempt`. `job_url` links the job's
    /// page on the dashboard, when the dispatcher has a public URL.
    pub fn for_state(
        job: &Job,
        state: JobState,
        attempt: u32,
        job_url: Option<String>,
        log_lines: Vec<String>,
    ) -> Self {
        let what = job
            .ticket
            .as_deref()
            .filter(|t| job.task == format!("fix {t}"))
            .map(|t| format!("fix {t}"))
            .unwrap_or_else(|| super::short(&job.task, 120));
        let id = &job.id;
        let attempt_note = if attempt > 1 {
            format!(" (attempt {attempt})")
        } else {
            String::new()
        };
        let reason = job.reason.clone().filter(|r| !r.is_empty());
        let (headline, detail) = match state {
            JobState::Queued => (format!("Queued as {id}: {what}{attempt_note}"), None),
            JobState::Running => (format!("Started {id}: {what}{attempt_note}"), None),
            JobState::Succeeded => (
                format!("Finished {id}: {what}"),
                job.result.as_ref().and_then(|r| r.summary.clone()),
            ),
            JobState::Failed => (format!("Failed {id}: {what}"), reason),
            JobState::TimedOut => (format!("Timed out {id}: {what}"), reason),
            JobState::Cancelled => (format!("Cancelled {id}: {what}"), reason),
            other => (format!("{id} is {other}: {what}"), reason),
        };
        let agent_links = job.result.as_ref().map_or(&[][..], |r| &r.links[..]);
        let (agent_links, links_left_out) = neutralise::agent_links(agent_links);
        let (change_link, change_note) = match (&job.change, state) {
            (Some(change), JobState::Succeeded) => describe_change(change),
            _ => (None, None),
        };
        let mut links: Vec<Link> = change_link.into_iter().chain(agent_links).collect();
        links.extend(job_url.and_then(|url| Link::new(Some(&format!("job {id}")), &url)));
        let detail = match (detail.filter(|d| !d.is_empty()), change_note) {
            (Some(detail), Some(note)) => Some(format!("{note}\n{detail}")),
            (detail, note) => detail.or(note),
        };
        let failed = matches!(state, JobState::Failed | JobState::TimedOut);
        Self {
            job_id: Some(id.clone()),
            headline,
            detail: detail
                .filter(|d| !d.is_empty())
                .map(|d| neutralise::summary(&d)),
            links,
            links_left_out,
            log_lines: if failed {
                log_lines.iter().map(|l| neutralise::log_line(l)).collect()
            } else {
                Vec::new()
            },
            can_cancel: !state.is_terminal(),
            can_retry: state.is_terminal() && state != JobState::Succeeded,
            ephemeral: false,
            question: None,
        }
    }

    /// The agent of `job` asks `question`: the question, its choices, how to answer it
    /// (`command` is the sources' comment command, `/agent`) and what happens without an
    /// answer. Slack shows a button per choice; elsewhere a comment answers.
    pub fn question(
        job: &Job,
        question: &queue::Question,
        job_url: Option<String>,
        command: &str,
    ) -> Self {
        let mut detail = question.text.clone();
        if !question.choices.is_empty() {
            detail.push_str(&format!("\nChoices: {}", question.choices.join(" | ")));
        }
        let within = if question.timeout_secs.is_multiple_of(3600) {
            format!("{} h", question.timeout_secs / 3600)
        } else if question.timeout_secs.is_multiple_of(60) {
            format!("{} min", question.timeout_secs / 60)
        } else {
            format!("{} s", question.timeout_secs)
        };
        detail.push_str(&match &question.default {
            Some(default) => {
                format!("\nWithout an answer within {within} it goes on with: {default}")
            }
            None => format!("\nWithout an answer within {within} the job fails."),
        });
        match &job.origin {
            Some(queue::Origin::Slack { thread_ts, .. }) => {
                let thread = if thread_ts.is_some() {
                    ", a reply in this thread,"
                } else {
                    ""
                };
                detail.push_str(&format!(
                    "\nAnswer with a button{thread} or `{command} answer {} <your answer>`.",
                    job.id
                ));
            }
            _ => detail.push_str(&format!(
                "\nAnswer with a comment: {command} answer <your answer>"
            )),
        }
        Self {
            job_id: Some(job.id.clone()),
            headline: format!("The agent of {} asks:", job.id),
            detail: Some(neutralise::summary(&detail)),
            links: job_url
                .and_then(|u| Link::new(Some(&format!("job {}", job.id)), &u))
                .into_iter()
                .collect(),
            links_left_out: 0,
            log_lines: Vec::new(),
            can_cancel: false,
            can_retry: false,
            ephemeral: false,
            question: Some(Asked {
                id: question.id.clone(),
                choices: question.choices.clone(),
            }),
        }
    }

    /// The agent of `job` says `text` (a progress message): the headline names the job, the
    /// text is the agent's, neutralised like its summary.
    pub fn said(job: &Job, text: &str) -> Self {
        let mut message = Self::text(format!("The agent of {} says:", job.id));
        message.job_id = Some(job.id.clone());
        message.detail = Some(neutralise::summary(text)).filter(|t| !t.is_empty());
        message
    }

    /// The answer to a trigger for a ticket whose job has not ended.
    /// (See [`describe_change`] for what a success says of the agent's work.)
    pub fn already_running(job: &Job, job_url: Option<String>) -> Self {
        let ticket = job.ticket.as_deref().unwrap_or("this ticket");
        Self {
            job_id: Some(job.id.clone()),
            headline: format!("{ticket} is already running as {} ({})", job.id, job.state),
            detail: None,
            links: job_url
                .and_then(|u| Link::new(Some(&format!("job {}", job.id)), &u))
                .into_iter()
                .collect(),
            links_left_out: 0,
            log_lines: Vec::new(),
            can_cancel: !job.state.is_terminal(),
            can_retry: false,
            ephemeral: false,
            question: None,
        }
    }

    /// What the reply says of the links it leaves out, if it leaves any out.
    fn left_out_note(&self) -> Option<String> {
        let left_out = match self.links_left_out {
            0 => return None,
            1 => "1 of the agent's links was left out".to_string(),
            n => format!("{n} of the agent's links were left out"),
        };
        Some(format!(
            "{left_out}: a reply shows at most {} links, each an absolute http or https URL.",
            neutralise::LINKS_MAX
        ))
    }

    /// Markdown (GitHub, GitLab).
    pub fn markdown(&self) -> String {
        let text = neutralise::markdown_text;
        let mut out = format!("**agentsmith**: {}", text(&self.headline));
        if let Some(detail) = &self.detail {
            out.push_str(&format!("\n\n{}", text(detail)));
        }
        for link in &self.links {
            out.push_str(&format!("\n- {}", neutralise::markdown_link(link)));
        }
        if let Some(note) = self.left_out_note() {
            out.push_str(&format!("\n\n_{}_", text(&note)));
        }
        if !self.log_lines.is_empty() {
            out.push_str(&format!(
                "\n\nLast output:\n{}",
                neutralise::markdown_code(&self.log_lines)
            ));
        }
        out
    }

    /// Slack's mrkdwn.
    pub fn mrkdwn(&self) -> String {
        let text = neutralise::slack_text;
        let mut out = text(&self.headline);
        if let Some(detail) = &self.detail {
            out.push_str(&format!("\n{}", text(detail)));
        }
        for link in &self.links {
            out.push_str(&format!("\n• {}", neutralise::slack_link(link)));
        }
        if let Some(note) = self.left_out_note() {
            out.push_str(&format!("\n_{}_", text(&note)));
        }
        if !self.log_lines.is_empty() {
            out.push_str(&format!("\n{}", neutralise::slack_code(&self.log_lines)));
        }
        out
    }

    /// Jira wiki markup (the REST v2 comment body).
    pub fn jira_wiki(&self) -> String {
        let text = neutralise::jira_text;
        let mut out = format!("*agentsmith*: {}", text(&self.headline));
        if let Some(detail) = &self.detail {
            out.push_str(&format!("\n\n{}", text(detail)));
        }
        for link in &self.links {
            out.push_str(&format!("\n* {}", neutralise::jira_link(link)));
        }
        if let Some(note) = self.left_out_note() {
            out.push_str(&format!("\n\n_{}_", text(&note)));
        }
        if !self.log_lines.is_empty() {
            out.push_str(&format!("\n\n{}", neutralise::jira_code(&self.log_lines)));
        }
        out
    }
}

/// What a success says of the agent's work: the pull request's link ("Pull request #42
/// opened"), or a line saying where the work went or that there was none.
fn describe_change(change: &contract::Change) -> (Option<Link>, Option<String>) {
    match change {
        contract::Change::NoChanges => (None, Some("No changes: nothing was pushed.".into())),
        contract::Change::Pushed {
            branch,
            commit,
            pull_request: Some(pr),
            ..
        } => {
            let verb = if pr.opened { "opened" } else { "updated" };
            let title = match pr.provider.as_str() {
                "gitlab" => format!("Merge request !{} {verb}", pr.number),
                _ => format!("Pull request #{} {verb}", pr.number),
            };
            let note = format!("Pushed {} to {branch}.", commit.get(..7).unwrap_or(commit));
            (Link::new(Some(&title), &pr.url), Some(note))
        }
        contract::Change::Pushed {
            branch,
            base_branch,
            commit,
            pull_request_error,
            compare_url,
            ..
        } => {
            let mut note = format!("Pushed {} to {branch}.", commit.get(..7).unwrap_or(commit));
            if let Some(error) = pull_request_error {
                note.push_str(&format!(" No pull request: {error}."));
            }
            let title = format!("Compare {branch} with {base_branch}");
            let link = compare_url
                .as_deref()
                .and_then(|url| Link::new(Some(&title), url));
            (link, Some(note))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::neutralise::tests::{live_at, slash_line, unescaped, HOSTILE};
    use contract::AgentResult;

    fn job(state: JobState) -> Job {
        let mut fields = std::collections::HashMap::new();
        for (k, v) in [
            ("state", state.as_str()),
            ("attempt", "1"),
            ("created_at", "1"),
            ("task", "fix PAY-12"),
            ("ticket", "PAY-12"),
            ("reason", "the agent exited with 1"),
        ] {
            fields.insert(k.to_string(), v.to_string());
        }
        Job::from_fields("abc123", &fields).unwrap()
    }

    #[test]
    fn a_success_says_what_became_of_the_agents_work_first() {
        let pushed = |pull_request, compare_url: Option<&str>| contract::Change::Pushed {
            branch: "agentsmith/PAY-12".into(),
            base_branch: "main".into(),
            commit: "4ce4cb2aa".into(),
            files: 1,
            insertions: 1,
            deletions: 1,
            pull_request,
            pull_request_error: None,
            compare_url: compare_url.map(str::to_string),
            notes: None,
        };
        let mut done = job(JobState::Succeeded);
        let pr = contract::PullRequest {
            provider: "gitlab".into(),
            number: 7,
            url: "https://gitlab.example/acme/shop/-/merge_requests/7".into(),
            opened: true,
        };
        for (change, title, url, note) in [
            (
                pushed(Some(Box::new(pr)), None),
                Some("Merge request !7 opened"),
                Some("https://gitlab.example/acme/shop/-/merge_requests/7"),
                "Pushed 4ce4cb2 to agentsmith/PAY-12.",
            ),
            (
                pushed(None, Some("https://git.example/c/main...agentsmith/PAY-12")),
                Some("Compare agentsmith/PAY-12 with main"),
                Some("https://git.example/c/main...agentsmith/PAY-12"),
                "Pushed 4ce4cb2 to agentsmith/PAY-12.",
            ),
            (
                contract::Change::NoChanges,
                None,
                None,
                "No changes: nothing was pushed.",
            ),
        ] {
            done.change = Some(change);
            let m = Message::for_state(&done, JobState::Succeeded, 1, None, Vec::new());
            assert_eq!(m.links.first().map(|l| l.title()), title, "{m:?}");
            assert_eq!(m.links.first().map(|l| l.url().as_str()), url, "{m:?}");
            assert_eq!(m.detail.as_deref(), Some(note), "{m:?}");
        }
    }

    #[test]
    fn a_success_carries_the_summary_and_links_and_no_buttons_but_none() {
        let mut done = job(JobState::Succeeded);
        done.result = Some(AgentResult {
            summary: Some("Opened a PR".into()),
            links: vec![
                contract::Link {
                    title: Some("PR #9".into()),
                    url: "https://github.com/acme/shop/pull/9".into(),
                },
                contract::Link {
                    title: None,
                    url: "javascript:alert(1)".into(),
                },
            ],
        });
        let m = Message::for_state(
            &done,
            JobState::Succeeded,
            1,
            Some("https://agentsmith.example/#/jobs/abc123".into()),
            vec!["x".into()],
        );
        assert_eq!(m.headline, "Finished abc123: fix PAY-12");
        assert_eq!(m.detail.as_deref(), Some("Opened a PR"));
        assert_eq!(m.links.len(), 2, "{:?}", m.links);
        assert_eq!(m.links_left_out, 1);
        assert!(m.log_lines.is_empty());
        assert!(!m.can_cancel && !m.can_retry);
        let md = m.markdown();
        assert!(
            md.contains("[PR #9](https://github.com/acme/shop/pull/9)"),
            "{md}"
        );
        assert!(!md.contains("javascript:"), "{md}");
        let slack = m.mrkdwn();
        assert!(
            slack.contains("<https://github.com/acme/shop/pull/9|PR #9>"),
            "{slack}"
        );
        let wiki = m.jira_wiki();
        assert!(
            wiki.contains("[PR #9|https://github.com/acme/shop/pull/9]"),
            "{wiki}"
        );
        let note = "1 of the agent's links was left out: a reply shows at most 10 links, \
                    each an absolute http or https URL.";
        assert!(slack.contains(&format!("\n_{note}_")), "{slack}");
        assert!(wiki.contains(&format!("\n\n_{note}_")), "{wiki}");
        assert!(md.contains(&format!("\n\n_{note}_")), "{md}");
    }

    /// A finished job whose requester and agent wrote `hostile` everywhere they can.
    fn hostile_job(hostile: &str) -> Job {
        let mut done = job(JobState::Succeeded);
        done.task = format!("run {hostile}");
        done.ticket = None;
        done.result = Some(AgentResult {
            summary: Some(hostile.into()),
            links: vec![
                contract::Link {
                    title: Some(hostile.into()),
                    url: "https://ok.example/pr/1".into(),
                },
                contract::Link {
                    title: None,
                    url: format!("https://ok.example/{hostile}"),
                },
                contract::Link {
                    title: Some(hostile.into()),
                    url: hostile.into(),
                },
            ],
        });
        done
    }

    #[test]
    fn hostile_task_summary_and_links_come_out_inert_in_every_provider() {
        for &h in HOSTILE {
            let m = Message::for_state(&hostile_job(h), JobState::Succeeded, 1, None, vec![]);
            let links = m.links.len();
            let slack = m.mrkdwn();
            assert_eq!(slack.matches('<').count(), links, "{h:?} -> {slack}");
            assert_eq!(slack.matches("\n• <https://ok.example/").count(), links);
            let md = m.markdown();
            assert_eq!(unescaped(&md, '['), links, "{h:?} -> {md}");
            assert_eq!(
                unescaped(&md, '<') + unescaped(&md, '`'),
                0,
                "{h:?} -> {md}"
            );
            assert!(!slash_line(&md), "{h:?} -> {md}");
            let text: String = md
                .lines()
                .map(|l| l.split("](https://ok.example/").next().unwrap_or(l))
                .collect();
            assert!(!live_at(&text), "{h:?} -> {md}");
            let wiki = m.jira_wiki();
            assert_eq!(unescaped(&wiki, '['), links, "{h:?} -> {wiki}");
            assert_eq!(unescaped(&wiki, '{') + unescaped(&wiki, '!'), 0, "{wiki}");
            assert!(!wiki.contains("[~"), "{h:?} -> {wiki}");
        }
    }

    #[test]
    fn every_reply_opens_with_agentsmith_own_words_so_it_never_reads_as_a_command() {
        let m = Message::for_state(
            &hostile_job("/agent fix PAY-1"),
            JobState::Succeeded,
            1,
            None,
            vec![],
        );
        assert!(m
            .markdown()
            .starts_with("**agentsmith**: Finished abc123: run /agent"));
        assert!(m
            .jira_wiki()
            .starts_with("*agentsmith*: Finished abc123: run /agent"));
    }

    #[test]
    fn caps_hold_on_the_summary_the_links_and_the_output() {
        let mut done = job(JobState::Failed);
        done.reason = Some("r".repeat(5_000));
        done.result = Some(AgentResult {
            summary: None,
            links: (0..30)
                .map(|n| contract::Link {
                    title: Some("t".repeat(1_000)),
                    url: format!("https://ok.example/{n}"),
                })
                .collect(),
        });
        let m = Message::for_state(&done, JobState::Failed, 1, None, vec!["x".repeat(9_000)]);
        let detail = m.detail.clone().unwrap_or_default();
        assert_eq!(detail.chars().count(), neutralise::SUMMARY_MAX + 1);
        assert_eq!(m.links.len(), neutralise::LINKS_MAX);
        assert_eq!(m.links_left_out, 20);
        assert!(m
            .links
            .iter()
            .all(|l| l.title().chars().count() <= neutralise::TITLE_MAX + 1));
        assert_eq!(m.log_lines[0].chars().count(), neutralise::LOG_LINE_MAX + 1);
    }

    #[test]
    fn a_failure_quotes_the_reason_and_the_last_lines_and_offers_retry() {
        let m = Message::for_state(
            &job(JobState::Failed),
            JobState::Failed,
            2,
            None,
            vec!["step 1".into(), "boom <here>".into()],
        );
        assert_eq!(m.headline, "Failed abc123: fix PAY-12");
        assert_eq!(m.detail.as_deref(), Some("the agent exited with 1"));
        assert!(m.can_retry && !m.can_cancel);
        assert!(m.markdown().contains("```\nstep 1\nboom <here>\n```"));
        assert!(m.mrkdwn().contains("boom &lt;here&gt;"), "{}", m.mrkdwn());
        assert!(m
            .jira_wiki()
            .contains("{noformat}\nstep 1\nboom <here>\n{noformat}"));
    }

    #[test]
    fn a_started_job_offers_cancel() {
        let m = Message::for_state(&job(JobState::Running), JobState::Running, 2, None, vec![]);
        assert_eq!(m.headline, "Started abc123: fix PAY-12 (attempt 2)");
        assert!(m.can_cancel && !m.can_retry);
    }
}
