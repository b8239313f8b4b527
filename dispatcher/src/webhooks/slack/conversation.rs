//! What a person asks of the bot (start, status, list, cancel, retry) and its answers, each
//! checked against the project's access rules.

use std::collections::HashMap;

use tracing::info;

use crate::api::error::ApiError;
use crate::context::AppState;
use crate::notify::message::Message;
use crate::settings::Settings;
use crate::webhooks::access::{self, Actor, Ask, Refusal, Verdict};
use crate::webhooks::command::{self, truncate, Command};
use crate::webhooks::journal;
use crate::webhooks::{accept, project_for, Request, Source};
use queue::{
    AnswerOutcome, CancelOutcome, Decision, Job, JobFilter, Origin, RetryOutcome, Submission,
};

/// Whether `user` is the job's requester or an admin: the first condition for cancelling
/// or retrying it (the project's access is the second).
fn requester_or_admin(settings: &Settings, job: &Job, user: &str) -> bool {
    let requester = matches!(&job.origin, Some(Origin::Slack { user: u, .. }) if u == user);
    requester || settings.sources.slack.admins.iter().any(|a| a == user)
}

/// The project of `fix <ticket>` with no `in <project>`: the channel's, else the one whose
/// Jira project or repository the ticket names, else `sources.slack.default_project`.
fn project_of_ticket(settings: &Settings, channel: &str, ticket: &str) -> Option<String> {
    let by = |source, scope: &str| project_for(settings, source, scope).map(|(n, _)| n.to_string());
    by(Source::Slack, channel)
        .or_else(|| {
            ticket
                .rsplit_once('-')
                .filter(|(_, n)| n.chars().all(|c| c.is_ascii_digit()))
                .and_then(|(key, _)| by(Source::Jira, key))
        })
        .or_else(|| {
            ticket
                .split_once('#')
                .and_then(|(repo, _)| by(Source::Github, repo).or_else(|| by(Source::Gitlab, repo)))
        })
        .or_else(|| Some(settings.sources.slack.default_project.clone()).filter(|p| !p.is_empty()))
}

/// One line about a job.
fn job_line(job: &Job) -> String {
    let mut line = format!("`{}` {} — {}", job.id, job.state, truncate(&job.task, 80));
    if let Some(reason) = job.reason.as_deref().filter(|r| !r.is_empty()) {
        line.push_str(&format!(" ({})", truncate(reason, 120)));
    }
    line
}

/// Where a command's answer goes and who asked.
pub(super) struct Asker<'a> {
    pub(super) actor: Actor,
    pub(super) channel: &'a str,
    pub(super) thread_ts: Option<&'a str>,
    pub(super) response_url: Option<&'a str>,
    pub(super) delivery: Option<String>,
    /// Whether answers can go in the HTTP response (slash commands) or must be posted
    /// (app mentions).
    pub(super) in_response: bool,
}

/// What a command comes to.
pub(super) struct Answer {
    /// What to tell the asker.
    pub(super) message: Message,
    /// Whether the outbox tells it already (a queued job's replies) or there is nothing
    /// new to tell (a duplicate delivery); a mention's other answers are posted.
    pub(super) told: bool,
    /// What was decided, for the journal.
    pub(super) decision: Decision,
}

impl Answer {
    /// An answer the outbox does not tell by itself.
    pub(super) fn new(message: Message, decision: Decision) -> Self {
        Self {
            message,
            told: false,
            decision,
        }
    }

    /// An ephemeral text answer to a command that starts no job.
    fn answered(text: String, what: impl Into<String>) -> Self {
        Self::new(
            private_text(text),
            Decision::Answered {
                reason: what.into(),
            },
        )
    }

    /// An ephemeral text answer to a command that asks for a job and gets none, saying why.
    fn ignored(text: String) -> Self {
        Self::new(
            private_text(text.clone()),
            Decision::Ignored { reason: text },
        )
    }
}

/// An ephemeral text answer.
fn private_text(text: String) -> Message {
    let mut message = Message::text(text);
    message.ephemeral = true;
    message
}

/// The configured projects' names, for answers.
fn project_names(settings: &Settings) -> String {
    settings
        .projects
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs a command and says what to answer.
pub(super) async fn run_command(
    state: &AppState,
    asker: &Asker<'_>,
    command: Command,
) -> Result<Answer, ApiError> {
    let settings = &state.settings;
    let (project, task, ticket) = match command {
        Command::Help => {
            let usage = command::usage(&settings.sources.slack.command);
            return Ok(Answer::answered(usage, "help"));
        }
        Command::Fix { ticket, project } => match fix_project(settings, asker, &ticket, project) {
            Ok(project) => (project, format!("fix {ticket}"), Some(ticket)),
            Err(answer) => return Ok(Answer::ignored(answer)),
        },
        Command::Run { project, task } => {
            if !settings.projects.contains_key(&project) {
                return Ok(Answer::ignored(format!(
                    "There is no project `{project}`. Projects: {}.",
                    project_names(settings)
                )));
            }
            (project, task, None)
        }
        Command::Status(id) => {
            let what = id
                .as_ref()
                .map_or("status".into(), |id| format!("status {id}"));
            let message = match id {
                Some(id) => job_status(state, asker, &id).await?,
                None => list_jobs(state, asker, true).await?,
            };
            let decision = Decision::Answered { reason: what };
            return Ok(Answer::new(message, decision));
        }
        Command::List => {
            let message = list_jobs(state, asker, false).await?;
            let decision = Decision::Answered {
                reason: "list".into(),
            };
            return Ok(Answer::new(message, decision));
        }
        Command::Cancel(id) => {
            let outcome = act(state, asker, "cancel", &id).await?;
            return Ok(Answer::answered(outcome.clone(), outcome));
        }
        Command::Retry(id) => {
            let outcome = act(state, asker, "retry", &id).await?;
            return Ok(Answer::answered(outcome.clone(), outcome));
        }
        Command::Answer { job, text } => {
            let outcome = answer(state, asker, &job, None, &text).await?;
            return Ok(Answer::answered(outcome.clone(), outcome));
        }
        Command::Say { job, text } => {
            let outcome = say(state, asker, &job, &text).await?;
            return Ok(Answer::answered(outcome.clone(), outcome));
        }
    };
    if let Some(refusal) = refusal(state, asker, &project).await {
        let text = refusal.answer(Some(&asker.actor), "start an agent here");
        return Ok(Answer::new(private_text(text), journal::refused(&refusal)));
    }
    start_job(state, asker, project, task, ticket).await
}

/// The project a `fix` runs in: the one named, else the ticket's; `Err` is the answer
/// when there is none.
fn fix_project(
    settings: &Settings,
    asker: &Asker<'_>,
    ticket: &str,
    named: Option<String>,
) -> Result<String, String> {
    match named {
        Some(p) if settings.projects.contains_key(&p) => Ok(p),
        Some(p) => Err(format!(
            "There is no project `{p}`. Projects: {}.",
            project_names(settings)
        )),
        None => project_of_ticket(settings, asker.channel, ticket).ok_or_else(|| {
            let name = &settings.sources.slack.command;
            format!(
                "Which project is {ticket} in? Say `{name} fix {ticket} in <project>` (projects: {}).",
                project_names(settings)
            )
        }),
    }
}

/// Why the asker may not act in `project` (counted and logged), or `None` when they may.
/// A provider that cannot be asked refuses too: a command is answered at once, and asking
/// again is one command away.
pub(super) async fn refusal(state: &AppState, asker: &Asker<'_>, project: &str) -> Option<Refusal> {
    let ask = Ask {
        source: Source::Slack,
        project,
        scope: "",
        actor: Some(&asker.actor),
        channel: Some(asker.channel),
        comment: false,
    };
    let refusal = match access::check(state, &ask).await {
        Ok(Verdict::Allowed) => return None,
        Ok(Verdict::Refused(refusal)) => refusal,
        Err(error) => Refusal::unchecked(&error),
    };
    access::record(state, &ask, &refusal);
    Some(refusal)
}

/// Whether the asker may see `job` in `status` and `list`: its project's access admits
/// them (and a job of no project, from the API, only an admin). `seen` remembers the
/// verdict per project within one answer.
async fn may_see(
    state: &AppState,
    asker: &Asker<'_>,
    job: &Job,
    seen: &mut HashMap<String, bool>,
) -> bool {
    let settings = &state.settings;
    let Some(project) = job.project.as_deref() else {
        return settings.sources.slack.admins.contains(&asker.actor.id);
    };
    if let Some(known) = seen.get(project) {
        return *known;
    }
    let ask = Ask {
        source: Source::Slack,
        project,
        scope: "",
        actor: Some(&asker.actor),
        channel: Some(asker.channel),
        comment: false,
    };
    let may = matches!(access::check(state, &ask).await, Ok(Verdict::Allowed));
    seen.insert(project.to_string(), may);
    may
}

/// One job's line, if the asker may see it.
async fn job_status(state: &AppState, asker: &Asker<'_>, id: &str) -> Result<Message, ApiError> {
    let job = state.queue.get(id).await?;
    Ok(match job {
        Some(job) if may_see(state, asker, &job, &mut HashMap::new()).await => {
            private_text(job_line(&job))
        }
        _ => private_text(format!("There is no job `{id}` you may see.")),
    })
}

/// The latest jobs the asker may see (their own with `mine`), ten at most.
async fn list_jobs(state: &AppState, asker: &Asker<'_>, mine: bool) -> Result<Message, ApiError> {
    let page = state.queue.list(&JobFilter::default(), None, 200).await?;
    let mut seen = HashMap::new();
    let mut jobs = Vec::new();
    for job in &page.jobs {
        let own =
            matches!(&job.origin, Some(Origin::Slack { user, .. }) if *user == asker.actor.id);
        if (own || !mine) && may_see(state, asker, job, &mut seen).await {
            jobs.push(job_line(job));
        }
        if jobs.len() == 10 {
            break;
        }
    }
    let title = if mine {
        "Your latest jobs"
    } else {
        "Latest jobs"
    };
    Ok(private_text(if jobs.is_empty() {
        format!("{title}: none.")
    } else {
        format!("{title}:\n{}", jobs.join("\n"))
    }))
}

/// Queues a job for a `fix` or `run` and says so.
pub(super) async fn start_job(
    state: &AppState,
    asker: &Asker<'_>,
    project: String,
    task: String,
    ticket: Option<String>,
) -> Result<Answer, ApiError> {
    let request = Request {
        source: Source::Slack,
        delivery: asker.delivery.clone(),
        project: project.clone(),
        task: task.clone(),
        ticket,
        title: None,
        description: None,
        url: None,
        requester: Some(asker.actor.name.clone()),
        origin: Origin::Slack {
            channel: asker.channel.to_string(),
            user: asker.actor.id.clone(),
            thread_ts: asker.thread_ts.map(str::to_string),
        },
        response_url: asker.response_url.map(str::to_string),
        reply_if_running: !asker.in_response,
    };
    let submission = accept(state, request).await?;
    let message = match &submission {
        Submission::Created(job) => {
            let mut m = Message::for_state(job, job.state, 1, None, Vec::new());
            m.headline = format!(
                "Queued as {}: {} (project {project}, asked by {}).",
                job.id,
                truncate(&task, 200),
                // A name, not a `<@U…>` mention: the answer's text is escaped as mrkdwn,
                // which would show a mention as literal markup.
                asker.actor.name
            );
            m
        }
        Submission::Running(job) => Message::already_running(job, None),
        Submission::Existing(job) => private_text(format!("Already queued as `{}`.", job.id)),
        Submission::Duplicate { job_id, .. } => {
            private_text(format!("Already queued as `{job_id}`."))
        }
    };
    Ok(Answer {
        message: Message {
            ephemeral: true,
            ..message
        },
        // The outbox tells a mention's thread of its job (queued, already running); a
        // duplicate was answered the first time.
        told: true,
        decision: journal::submitted(&submission),
    })
}

/// Cancels or retries a job for the asker, if they may; says what happened.
pub(super) async fn act(
    state: &AppState,
    asker: &Asker<'_>,
    action: &str,
    job_id: &str,
) -> Result<String, ApiError> {
    let user = asker.actor.id.as_str();
    let Some(job) = state.queue.get(job_id).await? else {
        return Ok(format!("There is no job `{job_id}`."));
    };
    if !requester_or_admin(&state.settings, &job, user) {
        info!(
            job_id,
            user, action, "refused: not the requester or an admin"
        );
        return Ok(format!(
            "Only the job's requester or an admin (sources.slack.admins) may {action} `{job_id}`."
        ));
    }
    // The requester must still pass the project's rules: access taken away since the job
    // started takes its buttons away too.
    if let Some(project) = job.project.as_deref() {
        if let Some(refusal) = refusal(state, asker, project).await {
            return Ok(refusal.answer(Some(&asker.actor), &format!("{action} `{job_id}`")));
        }
    }
    Ok(if action == "cancel" {
        match state
            .cancel_job(job_id, &format!("cancelled from Slack by {user}"))
            .await?
        {
            CancelOutcome::Cancelled(_) => format!("Cancelled `{job_id}`."),
            CancelOutcome::AlreadyFinished(s) => format!("`{job_id}` has already ended ({s})."),
            CancelOutcome::NotFound => format!("There is no job `{job_id}`."),
        }
    } else {
        match state.queue.retry(job_id).await? {
            RetryOutcome::Queued(attempt) => {
                format!("Queued `{job_id}` again (attempt {attempt}).")
            }
            RetryOutcome::Active(s) => format!("`{job_id}` is still {s}."),
            RetryOutcome::NotFound => format!("There is no job `{job_id}`."),
        }
    })
}

/// Puts `text` into the inbox of `job_id`'s agent, if `asker` may (as for an answer). What to
/// tell them.
pub(super) async fn say(
    state: &AppState,
    asker: &Asker<'_>,
    job_id: &str,
    text: &str,
) -> Result<String, ApiError> {
    let Some(job) = state.queue.get(job_id).await? else {
        return Ok(format!("There is no job `{job_id}`."));
    };
    if let Some(refused) = may_steer(
        state,
        asker,
        &job,
        &format!("send the agent of `{job_id}` a message"),
    )
    .await
    {
        return Ok(refused);
    }
    let by = format!("{} (slack)", asker.actor.name);
    Ok(match state.send_message(job_id, text, &by).await {
        Ok(seq) => crate::webhooks::answer::sent(job_id, seq),
        Err(e) if e.status.is_server_error() => return Err(e),
        Err(e) => e.message,
    })
}

/// Why `asker` may not answer or message `job`'s agent (`doing` says which), if they may
/// not: whoever the job's project lets start jobs here may; for a job of no project, its
/// requester or an admin.
async fn may_steer(state: &AppState, asker: &Asker<'_>, job: &Job, doing: &str) -> Option<String> {
    let user = asker.actor.id.as_str();
    match job.project.as_deref() {
        Some(project) => {
            let refusal = refusal(state, asker, project).await?;
            info!(job_id = %job.id, user, "refused to {doing}: the project's rules");
            Some(refusal.answer(Some(&asker.actor), doing))
        }
        None if !requester_or_admin(&state.settings, job, user) => {
            info!(job_id = %job.id, user, "refused to {doing}: not the requester or an admin");
            Some(format!(
                "Only the job's requester or an admin (sources.slack.admins) may {doing}."
            ))
        }
        None => None,
    }
}

/// Answers the question `job_id`'s agent waits on (`question`, when a button names the one
/// it was made for) with `text`, if `asker` may: whoever the job's project lets start jobs
/// here, or, for a job of no project, its requester or an admin. What to tell them.
pub(super) async fn answer(
    state: &AppState,
    asker: &Asker<'_>,
    job_id: &str,
    question: Option<&str>,
    text: &str,
) -> Result<String, ApiError> {
    let user = asker.actor.id.as_str();
    let Some(job) = state.queue.get(job_id).await? else {
        return Ok(format!("There is no job `{job_id}`."));
    };
    let doing = format!("answer the question of `{job_id}`");
    if let Some(refused) = may_steer(state, asker, &job, &doing).await {
        return Ok(refused);
    }
    let by = format!("{} (slack)", asker.actor.name);
    let outcome = state.queue.answer(job_id, question, text, &by).await?;
    info!(
        job_id,
        user,
        answered = matches!(outcome, AnswerOutcome::Answered(_)),
        "an answer from Slack"
    );
    Ok(crate::webhooks::answer::told(&outcome, job_id, question))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_finds_its_project_by_channel_jira_key_repository_or_default() {
        let mut settings = Settings::load_from(None, &[]).unwrap();
        let project = |f: &dyn Fn(&mut crate::settings::ProjectSettings)| {
            let mut p = crate::settings::ProjectSettings {
                agent: "echo".into(),
                ..Default::default()
            };
            f(&mut p);
            p
        };
        settings.projects.insert(
            "pay".into(),
            project(&|p| p.jira_projects = vec!["PAY".into()]),
        );
        settings.projects.insert(
            "shop".into(),
            project(&|p| p.github_repos = vec!["acme/shop".into()]),
        );
        settings.projects.insert(
            "ops".into(),
            project(&|p| p.slack_channels = vec!["C9".into()]),
        );
        assert_eq!(
            project_of_ticket(&settings, "C1", "PAY-12").as_deref(),
            Some("pay")
        );
        assert_eq!(
            project_of_ticket(&settings, "C1", "acme/shop#3").as_deref(),
            Some("shop")
        );
        assert_eq!(
            project_of_ticket(&settings, "C9", "PAY-12").as_deref(),
            Some("ops")
        );
        assert_eq!(project_of_ticket(&settings, "C1", "OTHER-1"), None);
        settings.sources.slack.default_project = "ops".into();
        assert_eq!(
            project_of_ticket(&settings, "C1", "OTHER-1").as_deref(),
            Some("ops")
        );
    }
}
