//! `agentsmith jobs submit|list|show|logs|cancel|retry|answer|say`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::client::Client;
use super::Remote;
use crate::api::SubmitRequest;
use queue::{Job, JobEvent, JobState};

/// Options shared by every `jobs` subcommand.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// The dispatcher, and how to print.
    #[command(flatten)]
    pub remote: Remote,
    /// What to do.
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// The `jobs` subcommands. The API token is read from AGENTSMITH_API_TOKEN.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Submit a job.
    Submit {
        /// The task.
        task: String,
        /// The agent profile.
        #[arg(long)]
        agent: Option<String>,
        /// The project.
        #[arg(long)]
        project: Option<String>,
        /// The ticket.
        #[arg(long)]
        ticket: Option<String>,
        /// Jobs with the same key run one at a time.
        #[arg(long)]
        concurrency_key: Option<String>,
        /// Resubmits with the same key return the first job.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Continue this finished job (a follow-up: its branch, its summary in the intent).
        #[arg(long, value_name = "JOB")]
        continues: Option<String>,
        /// Follow the job's events until it ends; exit 0 only if it succeeded.
        #[arg(long)]
        follow: bool,
    },
    /// List jobs, newest first.
    List {
        /// Only jobs in this state.
        #[arg(long)]
        state: Option<String>,
        /// Only jobs of this project.
        #[arg(long)]
        project: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show one job.
    Show {
        /// The job id.
        id: String,
    },
    /// Print a job's events and output; with --follow, until it ends.
    Logs {
        /// The job id.
        id: String,
        /// Keep following until the job ends; exit 0 only if it succeeded.
        #[arg(long, short)]
        follow: bool,
    },
    /// Cancel a job.
    Cancel {
        /// The job id.
        id: String,
    },
    /// Run an ended job again.
    Retry {
        /// The job id.
        id: String,
    },
    /// Send a running job's agent a message (steer it); it reads it at its next step.
    Say {
        /// The job id.
        id: String,
        /// The message.
        text: String,
        /// Who sends it, as recorded (default `api`).
        #[arg(long)]
        by: Option<String>,
    },
    /// Answer the question a job's agent is waiting on.
    Answer {
        /// The job id.
        id: String,
        /// The answer: one of the question's choices, or any text.
        text: String,
        /// Answer only this question (its id, as `jobs show` prints it), never a later one.
        #[arg(long)]
        question: Option<String>,
        /// Who answers, as recorded (default `api`).
        #[arg(long)]
        by: Option<String>,
    },
}

/// Runs a `jobs` subcommand.
pub async fn run(args: JobsArgs) -> ExitCode {
    let client = args.remote.client();
    match execute(&client, args.command, args.remote.json).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agentsmith: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `jobs submit`: queues the job and says so, then follows it if asked to.
async fn submit(
    client: &Client,
    request: &SubmitRequest,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let job = client.submit(request).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        let continuing = job
            .follows
            .as_ref()
            .map(|p| format!(", continuing {} ({})", p.job_id, p.state))
            .unwrap_or_default();
        println!(
            "queued job {} (agent {}, attempt {}){continuing}",
            job.id, job.agent, job.attempt
        );
    }
    if follow {
        return follow_job(client, &job.id, json).await;
    }
    Ok(ExitCode::SUCCESS)
}

async fn execute(client: &Client, command: JobsCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        JobsCommand::Submit {
            task,
            agent,
            project,
            ticket,
            concurrency_key,
            idempotency_key,
            continues,
            follow,
        } => {
            let request = SubmitRequest {
                agent,
                task,
                project,
                ticket,
                concurrency_key,
                idempotency_key,
                follows: continues,
            };
            return submit(client, &request, follow, json).await;
        }
        JobsCommand::List {
            state,
            project,
            limit,
        } => {
            let jobs = client
                .list(state.as_deref(), project.as_deref(), limit)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                print_table(&jobs);
            }
        }
        JobsCommand::Show { id } => {
            let job = client.show(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                print_job(&job);
            }
        }
        JobsCommand::Logs { id, follow } => {
            if follow {
                return follow_job(client, &id, json).await;
            }
            let job = client.show(&id).await?;
            if job.state.is_terminal() {
                return follow_job(client, &id, json).await;
            }
            // Not following a live job: print what is there, stop at the first quiet moment.
            let mut events = Vec::new();
            let fetch = client.events(&id, |e| {
                events.push(e);
                true
            });
            let _ = tokio::time::timeout(std::time::Duration::from_millis(500), fetch).await;
            for e in events {
                print_event(&e.event, json);
            }
        }
        JobsCommand::Cancel { id } => {
            let job = client.act(&id, "cancel").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                println!("job {} is {}", job.id, job.state);
            }
        }
        JobsCommand::Answer {
            id,
            text,
            question,
            by,
        } => {
            let body = serde_json::json!({"text": text, "question": question, "by": by});
            let job = client.post(&format!("/v1/jobs/{id}/answer"), &body).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else if let Some(answer) = &job.answer {
                println!(
                    "answered question {} of job {}: {}",
                    answer.question, job.id, answer.text
                );
            }
        }
        JobsCommand::Say { id, text, by } => {
            let body = serde_json::json!({"text": text, "by": by});
            let sent = client
                .send_json(&format!("/v1/jobs/{id}/messages"), &body)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&sent)?);
            } else {
                println!("sent message {} to job {id}", sent["seq"]);
            }
        }
        JobsCommand::Retry { id } => {
            let job = client.act(&id, "retry").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                println!("job {} queued again as attempt {}", job.id, job.attempt);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a job's events until it ends; exit 0 only if it succeeded.
async fn follow_job(client: &Client, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    client
        .events(id, |e| {
            print_event(&e.event, json);
            true
        })
        .await?;
    let job = client.show(id).await?;
    if !json {
        print_outcome(&job);
    }
    Ok(if job.state == JobState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_event(event: &JobEvent, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(event) {
            println!("{line}");
        }
        return;
    }
    match event {
        JobEvent::State {
            state,
            attempt,
            reason,
            ..
        } => match reason {
            Some(r) => println!("==> {state} (attempt {attempt}): {r}"),
            None => println!("==> {state} (attempt {attempt})"),
        },
        JobEvent::Waiting { reason, .. } => println!("==> waiting: {reason}"),
        JobEvent::Spawned {
            backend,
            workload,
            target,
            ..
        } => {
            if target == spawner::DEFAULT_TARGET {
                println!("==> spawned {workload} ({backend})")
            } else {
                println!("==> spawned {workload} ({backend}, target {target})")
            }
        }
        JobEvent::Log { line, .. } => println!("    {line}"),
        JobEvent::Question(question) => {
            println!("==> the agent asks ({}): {}", question.id, question.text);
            if !question.choices.is_empty() {
                println!("==> choices: {}", question.choices.join(" | "));
            }
            if let Some(default) = &question.default {
                println!(
                    "==> without an answer in {}s: {default}",
                    question.timeout_secs
                );
            }
            println!("==> answer with: agentsmith jobs answer <job id> <text>");
        }
        JobEvent::Answer { answer, .. } => {
            if answer.defaulted {
                println!("==> nobody answered in time; the default: {}", answer.text);
            } else {
                println!("==> answered by {}: {}", answer.by, answer.text);
            }
        }
        JobEvent::Say { text, .. } => println!("==> the agent says: {text}"),
        JobEvent::Message { message } => {
            println!(
                "==> message {} from {}: {}",
                message.seq, message.by, message.text
            )
        }
        JobEvent::Result {
            exit_code,
            result,
            change,
            ..
        } => {
            if let Some(code) = exit_code {
                println!("==> agent exited with code {code}");
            }
            if let Some(summary) = &result.summary {
                println!("==> summary: {summary}");
            }
            for link in &result.links {
                println!("==> link: {}", link.url);
            }
            if let Some(change) = change {
                for line in describe_change(change) {
                    println!("==> {line}");
                }
            }
        }
    }
}

/// What the runner did with the agent's work, a line each: the push, the pull request.
fn describe_change(change: &contract::Change) -> Vec<String> {
    match change {
        contract::Change::NoChanges => vec!["no changes: nothing pushed".into()],
        contract::Change::Pushed {
            branch,
            commit,
            files,
            insertions,
            deletions,
            pull_request,
            pull_request_error,
            compare_url,
            ..
        } => {
            let mut lines = vec![format!(
                "pushed {} to {branch} ({files} files, +{insertions} -{deletions})",
                commit.get(..7).unwrap_or(commit)
            )];
            if let Some(pr) = pull_request {
                let (kind, mark) = match pr.provider.as_str() {
                    "gitlab" => ("merge request", "!"),
                    _ => ("pull request", "#"),
                };
                let verb = if pr.opened { "opened" } else { "updated" };
                lines.push(format!("{kind} {mark}{} {verb}: {}", pr.number, pr.url));
            }
            if let Some(url) = compare_url {
                lines.push(format!("compare: {url}"));
            }
            if let Some(error) = pull_request_error {
                lines.push(format!("no pull request: {error}"));
            }
            lines
        }
    }
}

fn print_outcome(job: &Job) {
    match &job.reason {
        Some(reason) => println!(
            "job {} {} after {} attempt(s): {reason}",
            job.id, job.state, job.attempt
        ),
        None => println!(
            "job {} {} after {} attempt(s)",
            job.id, job.state, job.attempt
        ),
    }
}

fn print_job(job: &Job) {
    println!("id:         {}", job.id);
    println!("state:      {}", job.state);
    println!("attempt:    {} of {}", job.attempt, job.max_attempts);
    println!("agent:      {}", job.agent);
    println!("task:       {}", job.task);
    for (label, value) in [
        ("project:   ", &job.project),
        ("ticket:    ", &job.ticket),
        ("reason:    ", &job.reason),
    ] {
        if let Some(v) = value {
            println!("{label} {v}");
        }
    }
    if let Some(code) = job.exit_code {
        println!("exit code:  {code}");
    }
    if let Some(summary) = job.result.as_ref().and_then(|r| r.summary.as_ref()) {
        println!("summary:    {summary}");
    }
    if let Some(change) = &job.change {
        for line in describe_change(change) {
            println!("change:     {line}");
        }
    }
    if let Some(question) = &job.question {
        println!("question:   {} ({})", question.text, question.id);
        if !question.choices.is_empty() {
            println!("choices:    {}", question.choices.join(" | "));
        }
        let default = match &question.default {
            Some(default) => format!(", then {default:?}"),
            None => ", then the job fails".into(),
        };
        let left = (question.deadline - queue::now_ms()).max(0) / 1000;
        println!("waits:      {left}s more{default}");
        println!("answer:     agentsmith jobs answer {} <text>", job.id);
    } else if let Some(answer) = &job.answer {
        let by = if answer.defaulted {
            "its default".to_string()
        } else {
            answer.by.clone()
        };
        println!("answered:   {} ({} by {by})", answer.text, answer.question);
    }
    if let Some(handle) = &job.handle {
        println!(
            "workload:   {} ({}, target {})",
            handle.name, handle.backend, handle.target
        );
    }
}

fn print_table(jobs: &[Job]) {
    println!(
        "{:<14} {:<17} {:>7} {:<12} TASK",
        "ID", "STATE", "ATTEMPT", "AGENT"
    );
    for job in jobs {
        let mut task: String = job.task.chars().take(50).collect();
        if job.task.chars().count() > 50 {
            task.push('…');
        }
        println!(
            "{:<14} {:<17} {:>7} {:<12} {}",
            job.id,
            job.state.as_str(),
            job.attempt,
            job.agent,
            task.replace('\n', " ")
        );
    }
    if jobs.is_empty() {
        println!("(no jobs)");
    }
}
