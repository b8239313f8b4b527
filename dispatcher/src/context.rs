//! What the scheduler, the watchdog and the HTTP handlers share: the queue, the spawner,
//! the settings, the runner tokens, the metrics and the event streams' fan-out. Nothing in
//! it outlives a restart; the state is all in Redis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contract::{Approval, Checkout, GitCredential, Intent, Push};
use queue::{CancelOutcome, Expiry, Job, MessageOutcome, Queue};
use spawner::{AgentProfile, Fleet, Health, JobSpec};
use tokio_util::sync::CancellationToken;

use crate::api::error::ApiError;
use crate::fanout::{Fanout, Limits};
use crate::metrics::{Metrics, Stage, TargetState, OTHER};
use crate::settings::agents::ApprovalMode;
use crate::settings::Settings;
use crate::telemetry::chain;
use crate::token::RunnerTokens;
use crate::webhooks::membership::Directory;

/// The state every HTTP handler gets.
pub type AppState = Arc<Context>;

/// The shared parts of a running dispatcher.
pub struct Context {
    /// The settings it started with.
    pub settings: Settings,
    /// The Redis queue.
    pub queue: Queue,
    /// The spawner targets that run workloads.
    pub spawner: Arc<Fleet>,
    /// Runner tokens.
    pub tokens: RunnerTokens,
    /// Metrics of this process.
    pub metrics: Metrics,
    /// This dispatcher's consumer name in the ready stream's group.
    pub consumer: String,
    /// Base URL runners post their events to.
    pub callback_base: String,
    /// Cancelled when the dispatcher starts shutting down.
    pub shutdown: CancellationToken,
    /// The followers of event streams (SSE): one Redis reader for all, and their caps.
    pub fanout: Fanout,
    /// Who is who at the providers (for who may trigger), remembered briefly.
    pub directory: Directory,
    draining: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl Context {
    /// Puts the parts together.
    pub fn new(
        settings: Settings,
        queue: Queue,
        spawner: Arc<Fleet>,
        tokens: RunnerTokens,
        callback_base: String,
        shutdown: CancellationToken,
    ) -> Self {
        let consumer = format!(
            "{}-{}-{}",
            settings.server.installation,
            std::process::id(),
            queue::new_job_id()
        );
        let fanout = Fanout::new(
            queue.clone(),
            Limits::from(&settings.api),
            shutdown.clone(),
            format!("agentsmith-streams-{consumer}"),
        );
        Self {
            settings,
            queue,
            spawner,
            tokens,
            metrics: Metrics::new(),
            consumer,
            callback_base,
            shutdown,
            fanout,
            directory: Directory::new(),
            draining: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }

    /// Records that `stage` of `job` took `seconds` (nothing for a negative span: clocks of
    /// two replicas may disagree by a little).
    pub fn observe_stage(&self, stage: Stage, job: &Job, seconds: f64) {
        let target = job
            .handle
            .as_ref()
            .map(|h| h.target.as_str())
            .or(job.target.as_deref());
        self.observe_stage_on(stage, job, target, seconds);
    }

    /// [`Context::observe_stage`] for a job whose record does not name its target yet.
    pub fn observe_stage_on(&self, stage: Stage, job: &Job, target: Option<&str>, seconds: f64) {
        let source = job.origin.as_ref().map_or("api", |o| o.source());
        let profile = if self.settings.agents.contains_key(&job.agent) {
            job.agent.clone()
        } else {
            OTHER.to_string()
        };
        let where_ = match target.filter(|t| self.spawner.get(t).is_some()) {
            Some(t) => (self.spawner.backend_of(t), t.to_string()),
            None => ("none", "none".to_string()),
        };
        self.observe(stage, source, where_, profile, seconds);
    }

    /// Records how long a webhook delivery from `source` took to answer.
    pub fn observe_acknowledgement(&self, source: &'static str, seconds: f64) {
        let nowhere = ("none", "none".to_string());
        self.observe(
            Stage::Acknowledge,
            source,
            nowhere,
            "none".to_string(),
            seconds,
        );
    }

    fn observe(
        &self,
        stage: Stage,
        source: &'static str,
        target: (&'static str, String),
        profile: String,
        seconds: f64,
    ) {
        if seconds < 0.0 {
            return;
        }
        self.metrics
            .observe_stage(stage, source, target, profile, seconds);
    }

    /// Each spawner target as its last probe left it, with the jobs holding its slots (none
    /// while Redis is down).
    pub async fn target_states(&self) -> Vec<TargetState> {
        let names: Vec<&str> = self.spawner.targets().map(|t| t.name()).collect();
        let load = self.queue.target_load(&names).await.ok();
        self.spawner
            .targets()
            .enumerate()
            .map(|(i, t)| {
                let (state, error) = match t.health() {
                    Health::Unknown => ("unknown", None),
                    Health::Up => ("up", None),
                    Health::Down(e) => ("down", Some(e)),
                };
                TargetState {
                    name: t.name().to_string(),
                    backend: t.backend(),
                    state,
                    error,
                    jobs: load.as_ref().and_then(|l| l.get(i).copied()),
                    max_concurrent_jobs: t.max_concurrent_jobs(),
                }
            })
            .collect()
    }

    /// The targets `job` may run on, in order of preference: its project's, else its
    /// profile's, else the default one.
    pub fn routes(&self, job: &Job) -> Vec<String> {
        let project = job
            .project
            .as_deref()
            .and_then(|p| self.settings.projects.get(p))
            .map(|p| p.targets.as_slice())
            .filter(|t| !t.is_empty());
        let profile = self
            .settings
            .agents
            .get(&job.agent)
            .map(|a| a.targets.as_slice())
            .filter(|t| !t.is_empty());
        match project.or(profile) {
            Some(targets) => targets.to_vec(),
            None => vec![spawner::DEFAULT_TARGET.to_string()],
        }
    }

    /// Marks the dispatcher as draining: `/ready` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the dispatcher is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Marks the dispatcher as failed (a background loop ended): `/ready` answers 503 and
    /// says why from now on. The first failure is kept.
    pub fn fail(&self, why: &str) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert_with(|| why.to_string());
    }

    /// Why the dispatcher failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The SIGTERM-to-SIGKILL grace of workloads.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.settings.spawner.grace_secs)
    }

    /// Cancels a job and, when a workload runs for it, stops that in the background (the
    /// record is final at once; the caller does not wait out the grace period).
    pub async fn cancel_job(
        self: &Arc<Self>,
        job_id: &str,
        reason: &str,
    ) -> queue::Result<CancelOutcome> {
        let outcome = self.queue.cancel(job_id, reason).await?;
        if let CancelOutcome::Cancelled(Some(handle)) = &outcome {
            let ctx = self.clone();
            let handle = handle.clone();
            tokio::spawn(async move {
                if let Err(e) = ctx.spawner.cancel(&handle, ctx.grace()).await {
                    tracing::warn!(error = %chain(&e), workload = %handle.name, "stopping the workload failed");
                }
            });
        }
        Ok(outcome)
    }

    /// Puts `text` from `by` into `job_id`'s inbox, for its agent: its number, or why not
    /// (an API error the API, a command or a comment can tell as it is).
    pub async fn send_message(&self, job_id: &str, text: &str, by: &str) -> Result<u64, ApiError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ApiError::bad_request("the message is empty"));
        }
        let most = contract::conversation::MAX_MESSAGE_BYTES;
        if text.len() > most {
            return Err(ApiError::bad_request(format!(
                "the message holds {} bytes; at most {most} are taken",
                text.len()
            )));
        }
        let max = contract::conversation::MAX_INBOX_MESSAGES;
        match self.queue.send_message(job_id, text, by, max).await? {
            MessageOutcome::Sent(seq) => Ok(seq),
            MessageOutcome::Ended(state) => Err(ApiError::conflict(
                "already_finished",
                format!(
                    "job {job_id} has already ended ({state}): its agent reads no more messages"
                ),
            )),
            MessageOutcome::Full => Err(ApiError::conflict(
                "inbox_full",
                format!("job {job_id} has been sent {max} messages, as many as it takes"),
            )),
            MessageOutcome::NotFound => Err(ApiError::not_found(
                "unknown_job",
                format!("no job {job_id:?}"),
            )),
        }
    }

    /// Lets every question whose deadline has passed expire: it takes its default, or its
    /// job fails and its workload is stopped.
    pub async fn expire_questions(self: &Arc<Self>) {
        let due = match self.queue.due_questions(queue::now_ms()).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "reading the questions waiting for an answer failed");
                return;
            }
        };
        for job_id in due {
            match self.queue.expire_question(&job_id).await {
                Ok(Expiry::Defaulted(answer)) => tracing::info!(
                    %job_id,
                    question = %answer.question,
                    "nobody answered in time: the question took its default"
                ),
                Ok(Expiry::Failed(handle)) => {
                    tracing::info!(%job_id, "nobody answered in time and the question has no default: the job failed");
                    if let Some(handle) = handle {
                        if let Err(e) = self.spawner.cancel(&handle, self.grace()).await {
                            tracing::warn!(error = %chain(&e), workload = %handle.name, "stopping the workload failed");
                        }
                    }
                }
                Ok(Expiry::Open) => {}
                Err(e) => {
                    tracing::warn!(error = %chain(&e), %job_id, "letting a question expire failed")
                }
            }
        }
    }

    /// The spec of one attempt of `job` on `target`, or why it cannot be built.
    pub fn job_spec(&self, job: &Job, attempt: u32, target: &str) -> Result<JobSpec, String> {
        job_spec(
            &self.settings,
            job,
            attempt,
            self.callback_base_of(target),
            self.tokens.credential(&job.id, attempt),
        )
    }

    /// Where runners of `target` post their events: its `callback_url`, else the
    /// dispatcher's own.
    pub fn callback_base_of(&self, target: &str) -> &str {
        let own = if target == spawner::DEFAULT_TARGET {
            &self.settings.spawner.callback_url
        } else {
            self.settings
                .spawners
                .get(target)
                .map_or(&self.settings.spawner.callback_url, |t| &t.callback_url)
        };
        match own.trim_end_matches('/') {
            "" => &self.callback_base,
            url => url,
        }
    }
}

/// The spec of one attempt of `job` under `settings`, with its callback base and one-time
/// credential.
pub fn job_spec(
    settings: &Settings,
    job: &Job,
    attempt: u32,
    callback_base: &str,
    credential: String,
) -> Result<JobSpec, String> {
    let agent = settings
        .agents
        .get(&job.agent)
        .ok_or_else(|| format!("agent profile {:?} is no longer configured", job.agent))?;
    Ok(JobSpec {
        job_id: job.id.clone(),
        attempt,
        intent: Intent {
            task: job.task.clone(),
            project: job.project.clone(),
            ticket: job.ticket.clone(),
            repo: job.repo.clone(),
            title: job.title.clone(),
            description: job.description.clone(),
            requester: job.requester.clone(),
            url: job.url.clone(),
            source: job.origin.as_ref().map(|o| o.source().to_string()),
            previous: job.follows.clone(),
        },
        profile: AgentProfile {
            name: job.agent.clone(),
            image: Some(agent.image.clone()).filter(|i| !i.is_empty()),
            command: agent.command.clone(),
            env: agent.env.clone(),
            secret_env: agent.secret_env.clone(),
            timeout_secs: agent.timeout_secs,
            resources: agent.resources(),
            writable_root: agent.writable_root,
            service_account_token: agent.service_account_token,
        },
        callback_url: format!("{callback_base}/internal/jobs/{}/events", job.id),
        credential,
        heartbeat_secs: settings.queue.heartbeat_secs,
        grace_secs: settings.spawner.grace_secs,
    })
}

/// What the runner of `job` checks out before its agent starts: the job's repository, when
/// its project still asks for a checkout, with the project's current credential.
pub fn checkout_for(settings: &Settings, job: &Job) -> Option<Checkout> {
    let repo = job.repo.as_deref().filter(|r| !r.is_empty())?;
    let project = settings.projects.get(job.project.as_deref()?)?;
    let checkout = &project.checkout;
    if !checkout.enabled {
        return None;
    }
    // Over SSH a key (the push's own, or the reading one), over HTTPS a token (likewise).
    let ssh = crate::settings::is_ssh_url(repo);
    let credential = |secret: &str| {
        (!secret.is_empty()).then(|| {
            if ssh {
                GitCredential::SshKey {
                    ssh_key: secret.to_string(),
                    known_hosts: checkout.known_hosts.clone(),
                }
            } else {
                GitCredential::Token {
                    username: checkout.username.clone(),
                    token: secret.to_string(),
                }
            }
        })
    };
    let expose = |secret| secrecy::ExposeSecret::expose_secret(secret);
    let (read, push_secret) = if ssh {
        (expose(&checkout.ssh_key), expose(&checkout.push_ssh_key))
    } else {
        (expose(&checkout.token), expose(&checkout.push_token))
    };
    let push = checkout.push.then(|| Push {
        credential: credential(if push_secret.is_empty() {
            read
        } else {
            push_secret
        }),
        author_name: checkout.author_name.clone(),
        author_email: checkout.author_email.clone(),
        subject: commit_subject(job),
        trailers: std::iter::once(format!("Agentsmith-Job: {}", job.id))
            .chain(
                job.ticket
                    .as_ref()
                    .map(|t| format!("Agentsmith-Ticket: {t}")),
            )
            .collect(),
        approval: settings
            .agents
            .get(&job.agent)
            .filter(|profile| profile.approval == ApprovalMode::BeforePush)
            .map(|profile| Approval {
                timeout_secs: profile.approval_timeout_secs,
            }),
    });
    Some(Checkout {
        repo: repo.to_string(),
        base_branch: project.base_branch.clone(),
        // A follow-up works on its chain's branch: the first job's, which every later one
        // continued.
        branch: checkout.branch_for(
            job.chain.as_deref().unwrap_or(&job.id),
            job.ticket.as_deref(),
        ),
        depth: checkout.depth,
        submodules: checkout.submodules,
        lfs: checkout.lfs,
        credential: credential(read),
        push,
    })
}

/// The subject of the commit of a job's work when its agent left no summary: the ticket and
/// the task's first line, 72 characters at most.
pub fn commit_subject(job: &Job) -> String {
    let task = job.task.lines().next().unwrap_or_default().trim();
    let subject = match job.ticket.as_deref() {
        Some(ticket) => format!("{ticket}: {task}"),
        None => format!("agentsmith: {task}"),
    };
    match (subject.chars().count() > 72, subject.char_indices().nth(71)) {
        (true, Some((end, _))) => format!("{}…", &subject[..end]),
        _ => subject,
    }
}
