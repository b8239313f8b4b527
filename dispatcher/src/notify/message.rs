//! What a reply says, independent of where it goes: a headline, details, links, quoted log
//! lines, and which buttons fit. Each provider renders it in its own markup.

use queue::{Job, JobState};

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
    pub links: Vec<(String, String)>,
    /// The last output lines, quoted (failures).
    pub log_lines: Vec<String>,
    /// Whether a Cancel button fits (the job has not ended).
    pub can_cancel: bool,
    /// Whether a Retry button fits (the job ended without success).
    pub can_retry: bool,
    /// Only the requester sees it (Slack).
    pub ephemeral: bool,
}

impl Message {
    /// A plain message.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            job_id: None,
            headline: text.into(),
            detail: None,
            links: Vec::new(),
            log_lines: Vec::new(),
            can_cancel: false,
            can_retry: false,
            ephemeral: false,
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
        let mut links: Vec<(String, String)> = job
            .result
            .iter()
            .flat_map(|r| r.links.iter())
            .filter(|l| l.url.starts_with("http://") || l.url.starts_with("https://"))
            .map(|l| {
                (
                    l.title.clone().unwrap_or_else(|| l.url.clone()),
                    l.url.clone(),
                )
            })
            .collect();
        if let Some(url) = job_url {
            links.push((format!("job {id}"), url));
        }
        let failed = matches!(state, JobState::Failed | JobState::TimedOut);
        Self {
            job_id: Some(id.clone()),
            headline,
            detail,
            links,
            log_lines: if failed { log_lines } else { Vec::new() },
            can_cancel: !state.is_terminal(),
            can_retry: state.is_terminal() && state != JobState::Succeeded,
            ephemeral: false,
        }
    }

    /// The answer to a trigger for a ticket whose job has not ended.
    pub fn already_running(job: &Job, job_url: Option<String>) -> Self {
        let ticket = job.ticket.as_deref().unwrap_or("this ticket");
        Self {
            job_id: Some(job.id.clone()),
            headline: format!("{ticket} is already running as {} ({})", job.id, job.state),
            detail: None,
            links: job_url
                .map(|u| vec![(format!("job {}", job.id), u)])
                .unwrap_or_default(),
            log_lines: Vec::new(),
            can_cancel: !job.state.is_terminal(),
            can_retry: false,
            ephemeral: false,
        }
    }

    /// Markdown (GitHub, GitLab).
    pub fn markdown(&self) -> String {
        let mut out = format!("**agentsmith**: {}", self.headline);
        if let Some(detail) = &self.detail {
            out.push_str(&format!("\n\n{detail}"));
        }
        for (title, url) in &self.links {
            out.push_str(&format!("\n- [{}]({url})", title.replace(['[', ']'], "")));
        }
        if !self.log_lines.is_empty() {
            out.push_str(&format!(
                "\n\nLast output:\n```\n{}\n```",
                self.log_lines.join("\n").replace("```", "'''")
            ));
        }
        out
    }

    /// Slack's mrkdwn.
    pub fn mrkdwn(&self) -> String {
        let escape = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let mut out = escape(&self.headline);
        if let Some(detail) = &self.detail {
            out.push_str(&format!("\n{}", escape(detail)));
        }
        for (title, url) in &self.links {
            out.push_str(&format!("\n• <{url}|{}>", escape(title).replace('|', "/")));
        }
        if !self.log_lines.is_empty() {
            out.push_str(&format!(
                "\n```{}```",
                escape(&self.log_lines.join("\n")).replace("```", "'''")
            ));
        }
        out
    }

    /// Jira wiki markup (the REST v2 comment body).
    pub fn jira_wiki(&self) -> String {
        let mut out = format!("*agentsmith*: {}", self.headline);
        if let Some(detail) = &self.detail {
            out.push_str(&format!("\n\n{detail}"));
        }
        for (title, url) in &self.links {
            out.push_str(&format!(
                "\n* [{}|{url}]",
                title.replace(['[', ']', '|'], "")
            ));
        }
        if !self.log_lines.is_empty() {
            out.push_str(&format!(
                "\n\n{{noformat}}\n{}\n{{noformat}}",
                self.log_lines
                    .join("\n")
                    .replace("{noformat}", "{ noformat}")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::{AgentResult, Link};

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
    fn a_success_carries_the_summary_and_links_and_no_buttons_but_none() {
        let mut done = job(JobState::Succeeded);
        done.result = Some(AgentResult {
            summary: Some("Opened a PR".into()),
            links: vec![
                Link {
                    title: Some("PR #9".into()),
                    url: "https://github.com/acme/shop/pull/9".into(),
                },
                Link {
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
