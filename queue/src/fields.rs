//! Every field name agentsmith writes into a Redis hash or stream entry, named in this one
//! place: the job record's fields ([`job`]), the reply outbox's ([`outbox`]), those of the
//! event and ready streams ([`stream`]) and the counters' ([`stats`]).
//!
//! The Lua scripts get the same names as generated constants (`F_STATE`, `O_KIND`, ...;
//! see `scripts.rs`), so a field is spelled once.

/// Declares a group of names: a constant each, and the table the Lua prelude is generated
/// from, with each Lua name made of `$lua` and the constant's name.
macro_rules! names {
    ($lua:literal; $($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        $( $(#[$doc])* pub const $name: &str = $value; )*

        /// (Lua name, field), for the generated prelude of the scripts.
        pub const LUA: &[(&str, &str)] = &[$((concat!($lua, stringify!($name)), $value),)*];
    };
}

/// Fields of the job record (`job:{id}`).
pub mod job {
    names! { "F_";
        /// The job's state (`queued`, `running`, ...).
        STATE = "state",
        /// The current attempt, from 1.
        ATTEMPT = "attempt",
        /// Attempts allowed for infrastructure failures.
        MAX_ATTEMPTS = "max_attempts",
        /// The agent profile.
        AGENT = "agent",
        /// The task text.
        TASK = "task",
        /// The project.
        PROJECT = "project",
        /// The ticket.
        TICKET = "ticket",
        /// The repository.
        REPO = "repo",
        /// The concurrency key.
        CONCURRENCY_KEY = "concurrency_key",
        /// Admitted jobs allowed per concurrency key.
        KEY_LIMIT = "key_limit",
        /// The idempotency key.
        IDEMPOTENCY_KEY = "idempotency_key",
        /// The agent's time limit (seconds).
        TIMEOUT_SECS = "timeout_secs",
        /// `1` when an agent failure is retried like an infrastructure one.
        RETRY_ON_FAILURE = "retry_on_failure",
        /// Submission order.
        SEQ = "seq",
        /// Created (ms).
        CREATED_AT = "created_at",
        /// Last changed (ms).
        UPDATED_AT = "updated_at",
        /// Admitted (ms).
        ADMITTED_AT = "admitted_at",
        /// The workload was recorded (ms).
        SPAWNED_AT = "spawned_at",
        /// The runner reported the agent started (ms).
        STARTED_AT = "started_at",
        /// Ended (ms).
        FINISHED_AT = "finished_at",
        /// The agent's exit code.
        EXIT_CODE = "exit_code",
        /// Why it failed, was retried or cancelled.
        REASON = "reason",
        /// The result event (JSON).
        RESULT = "result",
        /// The workload's handle (JSON).
        HANDLE = "handle",
        /// The workload's name and backend id: which spawn the attempt kept.
        HANDLE_IDENTITY = "handle_identity",
        /// The spawner target the current attempt holds a slot of (or ran on).
        TARGET = "target",
        /// The next runner sequence number expected.
        RUNNER_SEQ = "runner_seq",
        /// The ticket's title.
        TITLE = "title",
        /// The ticket's description.
        DESCRIPTION = "description",
        /// Who asked.
        REQUESTER = "requester",
        /// A link back to the request.
        URL = "url",
        /// Where replies go (JSON).
        ORIGIN = "origin",
        /// Slack's `response_url` of the command.
        RESPONSE_URL = "response_url",
        /// Posts made through the `response_url` so far.
        RESPONSE_POSTS = "response_posts",
        /// `<attempt>:<nonce digest>`: the attempt whose one-time credential was spent,
        /// and the runner nonce it was spent with.
        CREDENTIAL = "credential",
        /// Bytes of output the current attempt has recorded.
        OUTPUT_BYTES = "output_bytes",
        /// The agent's open question (its question event, JSON); read only while the job is
        /// `waiting_for_input`.
        QUESTION = "question",
        /// The answer to the attempt's last question (JSON: question, text, by, defaulted, at).
        ANSWER = "answer",
        /// How many messages people sent the job's agent (its inbox's length).
        INBOX = "inbox",
        /// When the agent's last progress message was posted where the job came from (ms).
        SAID_AT = "said_at",
        /// The finished job this one continues (JSON: job_id, state, summary, reason, task),
        /// as its record said when this one was made.
        FOLLOWS = "follows",
        /// The first job of the chain of follow-ups this one belongs to (whose branch the
        /// chain works on); absent on a job that follows none.
        CHAIN = "chain",
        /// The follow-up that continues this job, once one does.
        FOLLOWED_BY = "followed_by",
    }
}

/// Fields of a reply in the outbox (`notify`).
pub mod outbox {
    names! { "O_";
        /// What the reply is: `state`, `ask` (a question), `say` (the agent's progress),
        /// `running`, `text`, `unreadable`.
        KIND = "kind",
        /// The job it is about.
        JOB = "job",
        /// The state it tells of.
        STATE = "state",
        /// The attempt.
        ATTEMPT = "attempt",
        /// Where it goes (JSON), when the job does not say.
        ORIGIN = "origin",
        /// Its text (plain replies).
        TEXT = "text",
        /// Slack's `response_url` to answer through.
        RESPONSE_URL = "response_url",
        /// Why an entry could not be read.
        WHY = "why",
        /// Deliveries tried before.
        TRIES = "tries",
    }
}

/// Fields of stream entries.
pub mod stream {
    names! { "S_";
        /// The event (JSON) of an entry of `job:{id}:events` and `feed`.
        EVENT = "e",
        /// The job id of an entry of the ready queue.
        JOB = "job",
    }
}

/// Prefixes of the counters in `stats`.
pub mod stats {
    names! { "C_";
        /// `entered:<state>`: jobs that ever entered the state.
        ENTERED = "entered:",
        /// `current:<state>`: jobs in the (non-terminal) state now.
        CURRENT = "current:",
    }
}

/// Fields of an entry of the delivery journal (`delivery:{id}`).
pub mod delivery {
    names! { "D_";
        /// When the delivery came (ms).
        AT = "at",
        /// The source (`github`, ...).
        SOURCE = "source",
        /// The webhook route after `/webhooks/` (`slack/commands`, `github`, ...).
        ROUTE = "route",
        /// The event type header (`X-GitHub-Event`, `X-Gitlab-Event`).
        EVENT = "event",
        /// The source's name for the delivery.
        DELIVERY_ID = "delivery_id",
        /// `sha256:<hex>` of the body as it came.
        DIGEST = "digest",
        /// Who acted, as the provider knows them.
        ACTOR = "actor",
        /// Their name.
        ACTOR_NAME = "actor_name",
        /// The HTTP status answered.
        STATUS = "status",
        /// What was decided (`queued`, `duplicate`, ...).
        DECISION = "decision",
        /// The job made or answered with.
        JOB_ID = "job_id",
        /// Why (ignored, refused, answered, error).
        REASON = "reason",
        /// The error's code.
        CODE = "code",
        /// The entry a replay replays.
        REPLAY_OF = "replay_of",
        /// The job a replay of this entry made.
        REPLAY_JOB = "replay_job",
        /// The size of the body as it came.
        BODY_BYTES = "body_bytes",
        /// `1` when the body is kept.
        REPLAYABLE = "replayable",
        /// The body, as replays need it (Slack's verification token removed).
        BODY = "body",
    }
}
