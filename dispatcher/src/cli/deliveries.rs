//! `agentsmith deliveries list|show|replay`: the delivery journal of a running dispatcher
//! (every verified webhook delivery and what it came to). Its routes need an API token
//! (`AGENTSMITH_API_TOKEN`) unless the API is open.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::client::Client;
use super::Remote;
use queue::{Decision, Delivery};

/// Options shared by every `deliveries` subcommand.
#[derive(Debug, Args)]
pub struct DeliveriesArgs {
    /// The dispatcher, and how to print.
    #[command(flatten)]
    pub remote: Remote,
    /// What to do.
    #[command(subcommand)]
    pub command: DeliveriesCommand,
}

/// The `deliveries` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries, newest first.
    List {
        /// Only this source's: slack, github, gitlab, jira.
        #[arg(long)]
        source: Option<String>,
        /// Only those with this decision: queued, duplicate, already_running, ignored,
        /// refused, answered, error.
        #[arg(long)]
        decision: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show one delivery.
    Show {
        /// The delivery's id (the first column of `list`).
        id: String,
    },
    /// Run a delivery through its source's checks again (after an outage, say): a delivery
    /// that made a job is answered with that job, never a second one.
    Replay {
        /// The delivery's id.
        id: String,
    },
}

/// Runs a `deliveries` subcommand.
pub async fn run(args: DeliveriesArgs) -> ExitCode {
    let client = args.remote.client();
    match execute(&client, args.command, args.remote.json).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentsmith: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(client: &Client, command: DeliveriesCommand, json: bool) -> anyhow::Result<()> {
    match command {
        DeliveriesCommand::List {
            source,
            decision,
            limit,
        } => {
            let deliveries = client
                .deliveries(source.as_deref(), decision.as_deref(), limit)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&deliveries)?);
            } else {
                print_table(&deliveries, queue::now_ms());
            }
        }
        DeliveriesCommand::Show { id } => {
            let delivery = client.delivery(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&delivery)?);
            } else {
                print_delivery(&delivery, queue::now_ms());
            }
        }
        DeliveriesCommand::Replay { id } => {
            let replay = client.replay(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&replay)?);
            } else {
                println!(
                    "replayed {id} as {}: {}",
                    replay.id,
                    outcome(&replay.decision)
                );
            }
        }
    }
    Ok(())
}

/// A decision in a few words: `queued job abc`, `refused: it needs ...`.
fn outcome(decision: &Decision) -> String {
    let name = decision.name();
    match (decision.job_id(), decision) {
        (Some(job), _) => format!("{name} (job {job})"),
        (None, Decision::Error { code, reason }) => format!("{name} {code}: {reason}"),
        (None, _) => match decision.reason().filter(|r| !r.is_empty()) {
            Some(reason) => format!("{name}: {reason}"),
            None => name.to_string(),
        },
    }
}

/// How long ago `at` was, roughly (`45s`, `12m`, `3h`, `2d`).
fn age(at: i64, now: i64) -> String {
    let secs = (now - at).max(0) / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// `text` on one line, cut to `max` characters.
fn cell(text: &str, max: usize) -> String {
    let mut cut: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        cut.push('…');
    }
    cut.replace('\n', " ")
}

fn print_table(deliveries: &[Delivery], now: i64) {
    println!(
        "{:<13} {:>4} {:<19} {:<16} {:<16} {:<15} DETAIL",
        "ID", "AGE", "ROUTE", "EVENT", "ACTOR", "DECISION"
    );
    for delivery in deliveries {
        let actor = delivery
            .actor_name
            .as_ref()
            .or(delivery.actor.as_ref())
            .map_or("-".to_string(), |a| cell(a, 16));
        let mut detail = match (delivery.decision.job_id(), delivery.decision.reason()) {
            (Some(job), _) => format!("job {job}"),
            (None, Some(reason)) => cell(reason, 50),
            (None, None) => String::new(),
        };
        if let Some(first) = &delivery.replay_of {
            detail.push_str(&format!(" (replay of {first})"));
        }
        println!(
            "{:<13} {:>4} {:<19} {:<16} {:<16} {:<15} {}",
            delivery.id,
            age(delivery.at, now),
            delivery.route,
            cell(delivery.event.as_deref().unwrap_or("-"), 16),
            actor,
            delivery.decision.name(),
            detail.trim()
        );
    }
    if deliveries.is_empty() {
        println!("(no deliveries)");
    }
}

fn print_delivery(delivery: &Delivery, now: i64) {
    println!("id:          {}", delivery.id);
    println!("received:    {} ago", age(delivery.at, now));
    println!("route:       /webhooks/{}", delivery.route);
    for (label, value) in [
        ("event:      ", &delivery.event),
        ("delivery:   ", &delivery.delivery_id),
        ("actor:      ", &delivery.actor),
        ("actor name: ", &delivery.actor_name),
        ("replay of:  ", &delivery.replay_of),
        ("replay job: ", &delivery.replay_job),
    ] {
        if let Some(v) = value {
            println!("{label} {v}");
        }
    }
    println!("status:      {}", delivery.status);
    println!("decision:    {}", outcome(&delivery.decision));
    println!("digest:      {}", delivery.digest);
    println!(
        "body:        {} bytes{}",
        delivery.body_bytes,
        if delivery.replayable {
            ""
        } else {
            " (not kept: cannot be replayed)"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_outcomes_read_briefly() {
        assert_eq!(age(0, 45_000), "45s");
        assert_eq!(age(0, 12 * 60_000), "12m");
        assert_eq!(age(0, 3 * 3_600_000), "3h");
        assert_eq!(age(5_000, 0), "0s");
        assert_eq!(
            outcome(&Decision::Queued {
                job_id: "abc".into()
            }),
            "queued (job abc)"
        );
        assert_eq!(
            outcome(&Decision::Error {
                code: "access_unchecked".into(),
                reason: "try again".into()
            }),
            "error access_unchecked: try again"
        );
        assert_eq!(outcome(&Decision::Duplicate { job_id: None }), "duplicate");
    }
}
