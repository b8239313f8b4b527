//! Every Redis key agentsmith uses, built in one place.
//!
//! The Lua scripts build the same keys in `scripts/lib.lua` from the same prefix; the test
//! at the bottom of `queue/mod.rs` checks that the two agree.

/// The consumer group of dispatchers on the ready queue.
pub const GROUP: &str = "dispatchers";

/// The consumer group of notifiers on the reply outbox.
pub const NOTIFY_GROUP: &str = "notifiers";

/// The keys under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (for example `agentsmith:`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// The prefix itself (passed to every script).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `job:{id}`: hash, the job record.
    pub fn job(&self, id: &str) -> String {
        format!("{}job:{id}", self.prefix)
    }

    /// `job:{id}:events`: stream, the job's capped event history.
    pub fn events(&self, id: &str) -> String {
        format!("{}job:{id}:events", self.prefix)
    }

    /// `queue`: stream with the consumer group [`GROUP`], ready jobs.
    pub fn queue(&self) -> String {
        format!("{}queue", self.prefix)
    }

    /// `delayed`: zset scored by due time (ms), retries waiting out their backoff.
    pub fn delayed(&self) -> String {
        format!("{}delayed", self.prefix)
    }

    /// `running`: zset scored by lease deadline (ms), admitted jobs.
    pub fn running(&self) -> String {
        format!("{}running", self.prefix)
    }

    /// `waiting`: zset scored by submission order, queued jobs waiting for a slot.
    pub fn waiting(&self) -> String {
        format!("{}waiting", self.prefix)
    }

    /// `concurrency:{key}`: set, admitted jobs holding a concurrency key.
    pub fn concurrency(&self, key: &str) -> String {
        format!("{}concurrency:{key}", self.prefix)
    }

    /// `concurrency:{key}:queue`: zset scored by submission order, queued jobs of a key;
    /// only its head may be admitted, so one key's jobs start in order.
    pub fn concurrency_queue(&self, key: &str) -> String {
        format!("{}concurrency:{key}:queue", self.prefix)
    }

    /// `idem:{key}`: string with a ttl, the job an idempotency key names.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}idem:{key}", self.prefix)
    }

    /// `jobs`: zset scored by creation time (ms), the index for listing.
    pub fn jobs(&self) -> String {
        format!("{}jobs", self.prefix)
    }

    /// `feed`: stream, capped, every state change of every job (the dashboard's live view).
    pub fn feed(&self) -> String {
        format!("{}feed", self.prefix)
    }

    /// `stats`: hash of counters (`entered:<state>`, `current:<state>`).
    pub fn stats(&self) -> String {
        format!("{}stats", self.prefix)
    }

    /// `seq`: counter giving each job its submission order.
    pub fn seq(&self) -> String {
        format!("{}seq", self.prefix)
    }

    /// `runner_secret`: string, the generated key of runner tokens when none is configured.
    pub fn runner_secret(&self) -> String {
        format!("{}runner_secret", self.prefix)
    }

    /// `dedup:{source}:{delivery}`: string with a ttl, the job a webhook delivery made or
    /// was answered with.
    pub fn dedup(&self, delivery: &str) -> String {
        format!("{}dedup:{delivery}", self.prefix)
    }

    /// `active:{ticket}`: string, the ticket's latest job (one unfinished job per ticket).
    pub fn active(&self, ticket: &str) -> String {
        format!("{}active:{ticket}", self.prefix)
    }

    /// `notify`: stream with the consumer group [`NOTIFY_GROUP`], the outbox of replies.
    pub fn notify(&self) -> String {
        format!("{}notify", self.prefix)
    }

    /// `notify:delayed`: zset scored by due time (ms), replies waiting to be tried again.
    pub fn notify_delayed(&self) -> String {
        format!("{}notify:delayed", self.prefix)
    }
}
