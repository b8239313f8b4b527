//! One attempt from start to the final event: prepare the work directory, start the
//! agent, relay its output, heartbeats, questions and messages (its own, and those people
//! send it), stop it on a signal, a timeout or the dispatcher's word, and report how it
//! ended.

use std::sync::Arc;
use std::time::Duration;

use contract::{AgentResult, Change, Checkout, OutputStream, RunOutcome, RunnerEvent};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

use crate::agent::{self, Agent, Launch};
use crate::checkout::{self, CheckedOut, Pushing};
use crate::conversation::{Approver, Conversation};
use crate::credential::{self, Exchanged};
use crate::error::{Error, Result};
use crate::job::Job;
use crate::oom;
use crate::outbox::{Limits, Outbox};
use crate::output::{self, Echo, MAX_LINE_BYTES};
use crate::sender::{Delivery, Directive, Sender, SenderSettings};
use crate::workspace::Workspace;

/// Everything about the runner's behaviour that the job does not set.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Batching and buffering of events.
    pub limits: Limits,
    /// Delivery of events.
    pub sender: SenderSettings,
    /// The longest output line kept whole.
    pub max_line_bytes: usize,
    /// After the agent exited, its output is read until the pipes close or no line has
    /// come for this long (a process that left the agent's group may hold them open).
    pub output_drain: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            sender: SenderSettings::default(),
            max_line_bytes: MAX_LINE_BYTES,
            output_drain: Duration::from_secs(2),
        }
    }
}

/// Why the dispatcher ended the attempt early.
#[derive(Debug, Clone, Copy)]
enum Halt {
    Gone { status: u16 },
    Unauthorized { status: u16 },
}

/// Runs `job` to the end: `Ok` once the final event is recorded by the dispatcher (or
/// the dispatcher said it no longer wants the attempt), whatever the agent's own exit
/// code; an error only for a failure of the runner itself.
#[tracing::instrument(name = "runner", skip_all, fields(job_id = %job.job_id, attempt = job.attempt))]
pub async fn run(job: Job, settings: Settings) -> Result<()> {
    // First, before any child process exists: the process backend's pipe.
    let launch = Launch::from_env()?;
    let workspace = Workspace::new(job.workdir.clone());
    // Before anything is sent: a second run of an attempt must not speak for it.
    if let Ok(false) = workspace.mark_run(job.attempt).await {
        tracing::warn!(
            attempt = job.attempt,
            "this attempt already ran in this work directory (its container was started again); not running the agent twice"
        );
        return Err(Error::AlreadyRan {
            attempt: job.attempt,
        });
    }
    let mut signals = Signals::install()?;
    let (token, checkout) = match credential::exchange(&job, &settings.sender).await? {
        Exchanged::Token(token, checkout) => (token, checkout),
        Exchanged::Gone { status } => {
            tracing::info!(
                status,
                "the dispatcher no longer wants this attempt; not starting the agent"
            );
            return Ok(());
        }
    };
    let outbox = Arc::new(Outbox::new(job.attempt, settings.limits.clone()));
    let (directive_tx, mut directives) = mpsc::unbounded_channel();
    let sender = Sender::new(
        &job,
        token,
        Arc::clone(&outbox),
        directive_tx.clone(),
        settings.sender.clone(),
    )?;
    let callback = sender.callback();
    let inbox = sender.inbox();
    let sender = tokio::spawn(sender.run().in_current_span());
    tracing::info!(callback = %job.callback_url, workdir = %job.workdir.display(), "runner starting");

    let checked_out = match prepare(&workspace, &job, checkout.as_deref(), &outbox).await {
        Ok(checked_out) => checked_out,
        Err(outcome) => {
            outbox.finish(outcome, None);
            return delivered(sender).await;
        }
    };

    let oom_kills_before = oom::oom_kills();
    let agent_environment = [
        job.agent_env(&workspace),
        checkout::identity(checkout.as_deref()),
    ]
    .concat();
    let agent_user = launch.user;
    let (mut agent, pipes) =
        match Agent::start(&job.command, workspace.dir(), &agent_environment, launch) {
            Ok(started) => started,
            Err(e) => {
                let program = job.command.first().map_or("", String::as_str);
                let reason = format!("cannot start {program:?}: {e}");
                tracing::error!(%reason, "the agent did not start");
                outbox.finish(RunOutcome::StartFailed { reason }, None);
                return delivered(sender).await;
            }
        };
    tracing::info!(pgid = agent.pgid(), command = ?job.command, "agent started");
    if checkout.is_none() {
        outbox.push(RunnerEvent::Started);
    }
    let mut pumps = pump_output(pipes, &outbox, settings.max_line_bytes);
    let approver = Approver::for_push(checkout.as_deref(), &outbox, &callback, job.attempt);
    let conversation = Conversation::start(
        &workspace,
        agent_user,
        job.attempt,
        Arc::clone(&outbox),
        callback,
        directive_tx,
        inbox,
    );

    let ending = supervise(&mut agent, &job, &mut signals, &mut directives, &outbox).await;
    conversation.end().await;

    drain(&mut pumps, &outbox, settings.output_drain).await;
    let outcome = ending.outcome(oom_kills_before, &outbox);
    tracing::info!(?outcome, "agent ended");

    match ending.halt {
        Some(Halt::Gone { status }) => {
            tracing::info!(status, "exiting without a final event");
            return Ok(());
        }
        Some(Halt::Unauthorized { status }) => return Err(Error::Unauthorized { status }),
        None => {}
    }

    let checkout = checkout.as_deref();
    let (outcome, result, change) = conclude(
        outcome,
        checkout,
        checked_out.as_ref(),
        &workspace,
        &job,
        &outbox,
        approver.as_ref(),
    )
    .await;
    outbox.finish_with(outcome, result, change);
    delivered(sender).await
}

/// What the final event says: the agent's result file read, and its work pushed when the
/// job's checkout says so.
async fn conclude(
    outcome: RunOutcome,
    checkout: Option<&Checkout>,
    checked_out: Option<&CheckedOut>,
    workspace: &Workspace,
    job: &Job,
    outbox: &Outbox,
    approver: Option<&Approver>,
) -> (RunOutcome, Option<AgentResult>, Option<Change>) {
    let result = match workspace.read_result().await {
        Ok(result) => result,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the agent's result file");
            outbox.push_line(OutputStream::Stderr, format!("agent-runner: {e}"));
            None
        }
    };
    let (outcome, change) = push_the_work(
        outcome,
        checkout.zip(checked_out),
        result.as_ref(),
        workspace,
        job,
        outbox,
        approver,
    )
    .await;
    (outcome, result, change)
}

/// The tasks that read the agent's standard output and error into the outbox (and echo it).
fn pump_output(
    pipes: agent::Pipes,
    outbox: &Arc<Outbox>,
    max_line_bytes: usize,
) -> [JoinHandle<()>; 2] {
    let echo = Echo::default();
    [
        output::pump(
            OutputStream::Stdout,
            pipes.stdout,
            echo.clone(),
            Arc::clone(outbox),
            max_line_bytes,
        ),
        output::pump(
            OutputStream::Stderr,
            pipes.stderr,
            echo,
            Arc::clone(outbox),
            max_line_bytes,
        ),
    ]
}

/// Writes the intent file and checks the repository out (if the job has one); the outcome
/// to end the attempt with when either fails.
async fn prepare(
    workspace: &Workspace,
    job: &Job,
    checkout: Option<&Checkout>,
    outbox: &Outbox,
) -> std::result::Result<Option<CheckedOut>, RunOutcome> {
    let prepared = match &job.extra_ca {
        Some(ca) => match workspace.prepare(&job.intent_json).await {
            Ok(()) => workspace.write_ca(&ca.joined).await,
            failed => failed,
        },
        None => workspace.prepare(&job.intent_json).await,
    };
    if let Err(e) = prepared {
        tracing::error!(error = %e.chain(), "cannot prepare the work directory");
        return Err(RunOutcome::StartFailed { reason: e.chain() });
    }
    let Some(checkout) = checkout else {
        return Ok(None);
    };
    // The attempt runs from here: its lease is kept by heartbeats while git works.
    outbox.push(RunnerEvent::Started);
    match checkout::run(
        checkout,
        job.extra_ca.as_ref(),
        workspace.dir(),
        outbox,
        job.heartbeat,
    )
    .await
    {
        Ok(checked_out) => Ok(Some(checked_out)),
        Err(reason) => {
            tracing::error!(%reason, "the checkout failed");
            Err(RunOutcome::CheckoutFailed { reason })
        }
    }
}

/// After an agent that exited 0, with a checkout that pushes: its work committed and pushed
/// (or found unchanged); otherwise the outcome as it was, and no change.
async fn push_the_work(
    outcome: RunOutcome,
    checkout: Option<(&Checkout, &CheckedOut)>,
    result: Option<&AgentResult>,
    workspace: &Workspace,
    job: &Job,
    outbox: &Outbox,
    approver: Option<&Approver>,
) -> (RunOutcome, Option<Change>) {
    let (Some((checkout, checked_out)), RunOutcome::Exited { code: 0 }) = (checkout, &outcome)
    else {
        return (outcome, None);
    };
    if checkout.push.is_none() {
        return (outcome, None);
    }
    let summary = result.and_then(|r| r.summary.as_deref());
    let dir = workspace.dir();
    let extra_ca = job.extra_ca.as_ref();
    match checkout::push(
        checkout,
        extra_ca,
        checked_out,
        dir,
        summary,
        Pushing {
            outbox,
            heartbeat: job.heartbeat,
            approver,
        },
    )
    .await
    {
        Ok(mut change) => {
            if let Change::Pushed { notes, .. } = &mut change {
                *notes = match workspace.read_notes().await {
                    Ok(read) => read,
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring the agent's notes file");
                        outbox.push_line(OutputStream::Stderr, format!("agent-runner: {e}"));
                        None
                    }
                };
            }
            (outcome, Some(change))
        }
        Err(reason) => {
            tracing::error!(%reason, "the push failed");
            (RunOutcome::PushFailed { reason }, None)
        }
    }
}

/// How the agent's run ended, as [`supervise`] saw it.
struct Ending {
    /// The agent's exit status.
    status: std::io::Result<std::process::ExitStatus>,
    /// The outcome, when the runner stopped the agent (timeout, signal, cancel).
    stopped_as: Option<RunOutcome>,
    /// Set when the dispatcher ended the attempt: no final event is sent.
    halt: Option<Halt>,
}

impl Ending {
    /// How the agent's run ended: as the runner stopped it, else as it exited (a SIGKILL
    /// with the cgroup's OOM kill count grown past `oom_kills_before` is the kernel's OOM
    /// killer), else an exit code of -1 when waiting for it failed.
    fn outcome(&self, oom_kills_before: Option<u64>, outbox: &Outbox) -> RunOutcome {
        match (&self.stopped_as, &self.status) {
            (Some(outcome), _) => outcome.clone(),
            (None, Ok(status)) => match agent::outcome_of(*status) {
                RunOutcome::Signaled { signal: 9 }
                    if oom::oom_kills()
                        .zip(oom_kills_before)
                        .is_some_and(|(after, before)| after > before) =>
                {
                    RunOutcome::OomKilled
                }
                outcome => outcome,
            },
            (None, Err(e)) => {
                tracing::error!(error = %e, "waiting for the agent failed");
                outbox.push_line(
                    OutputStream::Stderr,
                    format!("agent-runner: waiting for the agent failed: {e}"),
                );
                RunOutcome::Exited { code: -1 }
            }
        }
    }
}

/// Watches the agent until it exits: heartbeats meanwhile, and a stop (SIGTERM to the
/// group, grace, SIGKILL) on SIGTERM or SIGINT, at the time limit, or when the
/// dispatcher's answers ask for it. The first reason to stop decides the outcome.
async fn supervise(
    agent: &mut Agent,
    job: &Job,
    signals: &mut Signals,
    directives: &mut mpsc::UnboundedReceiver<Directive>,
    outbox: &Outbox,
) -> Ending {
    let deadline = Instant::now() + job.timeout;
    let mut heartbeat = tokio::time::interval_at(Instant::now() + job.heartbeat, job.heartbeat);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stopped_as: Option<RunOutcome> = None;
    let mut halt: Option<Halt> = None;

    let status = loop {
        tokio::select! {
            status = agent.wait() => break status,
            Some(name) = signals.next() => {
                stopped_as.get_or_insert(RunOutcome::Terminated);
                if agent.stop(job.grace) {
                    tracing::info!(signal = name, "stopping the agent");
                } else {
                    tracing::info!(signal = name, "already stopping the agent");
                }
            }
            () = tokio::time::sleep_until(deadline), if !agent.is_stopping() => {
                tracing::warn!(timeout_secs = job.timeout.as_secs(), "time limit reached; stopping the agent");
                stopped_as.get_or_insert(RunOutcome::TimedOut);
                agent.stop(job.grace);
            }
            Some(directive) = directives.recv() => {
                match directive {
                    Directive::Stop => {
                        stopped_as.get_or_insert(RunOutcome::Terminated);
                    }
                    Directive::Gone { status } => {
                        halt.get_or_insert(Halt::Gone { status });
                    }
                    Directive::Unauthorized { status } => {
                        halt.get_or_insert(Halt::Unauthorized { status });
                    }
                }
                agent.stop(job.grace);
            }
            _ = heartbeat.tick() => outbox.push(RunnerEvent::Heartbeat),
        }
    };
    Ending {
        status,
        stopped_as,
        halt,
    }
}

/// Waits for the sender to deliver the final event, and maps how it ended.
async fn delivered(sender: JoinHandle<Delivery>) -> Result<()> {
    match sender.await.map_err(Error::SenderStopped)? {
        Delivery::Delivered => {
            tracing::info!("final event delivered");
            Ok(())
        }
        Delivery::Gone { status } => {
            tracing::info!(status, "the dispatcher no longer wants this attempt");
            Ok(())
        }
        Delivery::Unauthorized { status } => Err(Error::Unauthorized { status }),
        Delivery::GaveUp { waited } => Err(Error::Undelivered { waited }),
    }
}

/// Lets the output pumps read what is left while it still flows: only when no line has
/// come for `idle` is the output of processes that escaped the agent's group abandoned.
/// (A fixed limit would lose lines that were merely slow to read on a busy machine.)
async fn drain(pumps: &mut [JoinHandle<()>], outbox: &Outbox, idle: Duration) {
    let mut done = vec![false; pumps.len()];
    loop {
        let seen = outbox.lines_seen();
        let all = async {
            for (pump, done) in pumps.iter_mut().zip(done.iter_mut()) {
                if !*done {
                    let _ = pump.await;
                    *done = true;
                }
            }
        };
        match tokio::time::timeout(idle, all).await {
            Ok(()) => return,
            Err(_) if outbox.lines_seen() != seen => continue,
            Err(_) => break,
        }
    }
    tracing::warn!("the agent's output is still open after it exited; no longer reading it");
    for (pump, done) in pumps.iter_mut().zip(done) {
        if !done {
            pump.abort();
            let _ = pump.await;
        }
    }
}

/// SIGTERM and SIGINT, the ways the runner is told to stop.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        let install = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|source| Error::SignalHandler {
                signal: name,
                source,
            })
        };
        Ok(Self {
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> Option<&'static str> {
        tokio::select! {
            received = self.term.recv() => received.map(|()| "SIGTERM"),
            received = self.int.recv() => received.map(|()| "SIGINT"),
        }
    }
}
