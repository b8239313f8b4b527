//! Every Redis key agentsmith uses, named in this one place.
//!
//! The Lua scripts get the same names from here: the fixed keys arrive as `KEYS[1..]` in
//! [`FIXED`] order, and the key builders of the families ([`FAMILIES`]) are generated into
//! the scripts' prelude (see `scripts.rs`), so Rust and Lua cannot disagree about a name.
//!
//! A part that comes from outside (a concurrency key, a ticket, a delivery id, a project) is
//! encoded before it goes into a name ([`encode_part`]): `%`, `:`, `{` and `}` become
//! `%XX`. An encoded part holds no `:`, so no part can reach into another family's shape (a
//! concurrency key `d:queue` would otherwise name key `d`'s queue), and no `{…}`, so no part
//! can move a key to another Redis Cluster slot than the prefix's hash tag says.
//!
//! All keys of an installation start with its prefix. On Redis Cluster, give the prefix a
//! hash tag (`{agentsmith}:`): every key then hashes to one slot, which the scripts need,
//! since they reach other jobs' keys through the data (admitting waiting jobs, say).

/// The consumer group of dispatchers on the ready queue.
pub const GROUP: &str = "dispatchers";

/// The consumer group of notifiers on the reply outbox.
pub const NOTIFY_GROUP: &str = "notifiers";

/// The installation's fixed keys, as (Lua name, key after the prefix), in the order every
/// script receives them as `KEYS[1..]`.
pub const FIXED: [(&str, &str); 10] = [
    ("K_QUEUE", QUEUE),
    ("K_DELAYED", DELAYED),
    ("K_RUNNING", RUNNING),
    ("K_WAITING", WAITING),
    ("K_JOBS", JOBS),
    ("K_STATS", STATS),
    ("K_SEQ", SEQ),
    ("K_FEED", FEED),
    ("K_NOTIFY", NOTIFY),
    ("K_NOTIFY_DELAYED", NOTIFY_DELAYED),
];

const QUEUE: &str = "queue";
const DELAYED: &str = "delayed";
const RUNNING: &str = "running";
const WAITING: &str = "waiting";
const JOBS: &str = "jobs";
const STATS: &str = "stats";
const SEQ: &str = "seq";
const FEED: &str = "feed";
const NOTIFY: &str = "notify";
const NOTIFY_DELAYED: &str = "notify:delayed";

/// A family of keys named after one part (a job id, a concurrency key): the prefix, then
/// `head`, the part, `tail`.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The name of the generated Lua builder (`job_key(id)`).
    pub lua: &'static str,
    /// What comes before the part.
    pub head: &'static str,
    /// What comes after it.
    pub tail: &'static str,
}

/// `job:{id}`: hash, the job record (its fields are in [`crate::fields`]).
pub const JOB: Family = Family {
    lua: "job_key",
    head: "job:",
    tail: "",
};
/// `job:{id}:events`: stream, the job's capped event history.
pub const EVENTS: Family = Family {
    lua: "events_key",
    head: "job:",
    tail: ":events",
};
/// `job:{id}:inbox`: list, the messages people sent the job's agent, in order (see
/// `questions.rs`). Not in [`FAMILIES`]: the one script that writes it is given the key.
pub const INBOX: Family = Family {
    lua: "inbox_key",
    head: "job:",
    tail: ":inbox",
};
/// `concurrency:{key}`: set, admitted jobs holding a concurrency key.
pub const CONCURRENCY: Family = Family {
    lua: "concurrency_key",
    head: "concurrency:",
    tail: "",
};
/// `concurrency:{key}:queue`: zset scored by submission order, queued jobs of a key; only
/// its head may be admitted, so one key's jobs start in order.
pub const CONCURRENCY_QUEUE: Family = Family {
    lua: "key_queue",
    head: "concurrency:",
    tail: ":queue",
};
/// `target:{name}`: set, the jobs whose current attempt holds a slot of a spawner target.
pub const TARGET: Family = Family {
    lua: "target_key",
    head: "target:",
    tail: "",
};
/// `idem:{key}`: string with a ttl, the job an idempotency key names.
pub const IDEMPOTENCY: Family = Family {
    lua: "idem_key",
    head: "idem:",
    tail: "",
};
/// `dedup:{source}:{delivery}`: string with a ttl, the job a webhook delivery made or was
/// answered with.
pub const DEDUP: Family = Family {
    lua: "dedup_key",
    head: "dedup:",
    tail: "",
};
/// `active:{ticket}`: string, the ticket's latest job (one unfinished job per ticket).
pub const ACTIVE: Family = Family {
    lua: "active_key",
    head: "active:",
    tail: "",
};
/// `thread:{channel}:{ts}`: string with a ttl, the latest job started in a Slack thread (where
/// a reply in the thread goes: an answer, a message to the agent, or a follow-up).
pub const THREAD: Family = Family {
    lua: "thread_key",
    head: "thread:",
    tail: "",
};
/// `jobs:state:{state}`: zset scored by creation time (ms), the jobs in a state (the index
/// of `GET /v1/jobs?state=`).
pub const STATE_JOBS: Family = Family {
    lua: "state_jobs_key",
    head: "jobs:state:",
    tail: "",
};
/// `jobs:project:{project}`: zset scored by creation time (ms), a project's jobs (the index
/// of `GET /v1/jobs?project=`).
pub const PROJECT_JOBS: Family = Family {
    lua: "project_jobs_key",
    head: "jobs:project:",
    tail: "",
};
/// What follows a project's [`PROJECT_JOBS`] key, then the encoded state, in the key of its
/// jobs in one state: `jobs:project:{project}:state:{state}`. The Lua prelude builds the same
/// key (`project_state_jobs_key(project, state)`).
pub const PROJECT_STATE_INFIX: &str = ":state:";

/// `delivery:{id}`: hash with a ttl, an entry of the delivery journal (its fields are in
/// [`crate::fields::delivery`]). Not in [`FAMILIES`]: no script of the prelude builds it (the
/// journal's own script is given the head), and its ids are generated, never from outside.
pub const DELIVERY: Family = Family {
    lua: "delivery_key",
    head: "delivery:",
    tail: "",
};

/// Every family, for the generated Lua prelude.
pub const FAMILIES: [Family; 11] = [
    JOB,
    EVENTS,
    CONCURRENCY,
    CONCURRENCY_QUEUE,
    TARGET,
    IDEMPOTENCY,
    DEDUP,
    ACTIVE,
    THREAD,
    STATE_JOBS,
    PROJECT_JOBS,
];

/// The bytes a key part may not hold as they are: the separator, the hash-tag braces and
/// the escape itself.
pub const ESCAPED: [char; 4] = ['%', ':', '{', '}'];

/// `part` with every [`ESCAPED`] character written as `%XX` (upper-case hex): injective, so
/// two parts name two keys, and free of `:`, `{` and `}`. The Lua scripts' key builders do
/// the same (`encode_part` in their generated prelude).
pub fn encode_part(part: &str) -> std::borrow::Cow<'_, str> {
    if !part.contains(ESCAPED) {
        return std::borrow::Cow::Borrowed(part);
    }
    let mut encoded = String::with_capacity(part.len() + 8);
    for c in part.chars() {
        if ESCAPED.contains(&c) {
            encoded.push_str(&format!("%{:02X}", c as u32));
        } else {
            encoded.push(c);
        }
    }
    std::borrow::Cow::Owned(encoded)
}

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

    fn fixed(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The key of `part` in `family`, the part encoded.
    pub fn of(&self, family: Family, part: &str) -> String {
        format!(
            "{}{}{}{}",
            self.prefix,
            family.head,
            encode_part(part),
            family.tail
        )
    }

    /// The fixed keys in [`FIXED`] order: the first `KEYS` of every script.
    pub fn fixed_keys(&self) -> Vec<String> {
        FIXED.iter().map(|(_, name)| self.fixed(name)).collect()
    }

    /// `job:{id}`: hash, the job record.
    pub fn job(&self, id: &str) -> String {
        self.of(JOB, id)
    }

    /// `job:{id}:events`: stream, the job's capped event history.
    pub fn events(&self, id: &str) -> String {
        self.of(EVENTS, id)
    }

    /// `job:{id}:inbox`: list, the messages people sent the job's agent.
    pub fn inbox(&self, id: &str) -> String {
        self.of(INBOX, id)
    }

    /// `concurrency:{key}`: set, admitted jobs holding a concurrency key.
    pub fn concurrency(&self, key: &str) -> String {
        self.of(CONCURRENCY, key)
    }

    /// `concurrency:{key}:queue`: zset, queued jobs of a key in submission order.
    pub fn concurrency_queue(&self, key: &str) -> String {
        self.of(CONCURRENCY_QUEUE, key)
    }

    /// `target:{name}`: set, the jobs holding a slot of a spawner target.
    pub fn target(&self, name: &str) -> String {
        self.of(TARGET, name)
    }

    /// `idem:{key}`: string with a ttl, the job an idempotency key names.
    pub fn idempotency(&self, key: &str) -> String {
        self.of(IDEMPOTENCY, key)
    }

    /// `dedup:{source}:{delivery}`: string with a ttl, a webhook delivery already accepted.
    pub fn dedup(&self, delivery: &str) -> String {
        self.of(DEDUP, delivery)
    }

    /// `active:{ticket}`: string, the ticket's latest job.
    pub fn active(&self, ticket: &str) -> String {
        self.of(ACTIVE, ticket)
    }

    /// `thread:{channel}:{ts}`: string, the latest job started in a Slack thread.
    pub fn thread(&self, channel: &str, thread_ts: &str) -> String {
        self.of(THREAD, &format!("{channel}:{thread_ts}"))
    }

    /// `queue`: stream with the consumer group [`GROUP`], ready jobs.
    pub fn queue(&self) -> String {
        self.fixed(QUEUE)
    }

    /// `delayed`: zset scored by due time (ms), retries waiting out their backoff.
    pub fn delayed(&self) -> String {
        self.fixed(DELAYED)
    }

    /// `running`: zset scored by lease deadline (ms), admitted jobs.
    pub fn running(&self) -> String {
        self.fixed(RUNNING)
    }

    /// `waiting`: zset scored by submission order, queued jobs waiting for a slot.
    pub fn waiting(&self) -> String {
        self.fixed(WAITING)
    }

    /// `jobs`: zset scored by creation time (ms), the index for listing.
    pub fn jobs(&self) -> String {
        self.fixed(JOBS)
    }

    /// `thread:{channel}:{ts}`: string with a ttl, the latest job started in a Slack thread (where
    /// a reply in the thread goes: an answer, a message to the agent, or a follow-up).
    pub const THREAD: Family = Family {
        lua: "thread_key",
        head: "thread:",
        tail: "",
    };
    /// `jobs:state:{state}`: zset scored by creation time (ms), the jobs in a state.
    pub fn state_jobs(&self, state: &str) -> String {
        self.of(STATE_JOBS, state)
    }

    /// `jobs:project:{project}`: zset scored by creation time (ms), a project's jobs.
    pub fn project_jobs(&self, project: &str) -> String {
        self.of(PROJECT_JOBS, project)
    }

    /// `jobs:project:{project}:state:{state}`: zset scored by creation time (ms), a
    /// project's jobs in a state.
    pub fn project_state_jobs(&self, project: &str, state: &str) -> String {
        format!(
            "{}{PROJECT_STATE_INFIX}{}",
            self.project_jobs(project),
            encode_part(state)
        )
    }

    /// `jobs:project_of`: hash, job id → its project, for jobs with one: the sweep reads it
    /// to find a project's indexes once the job's record has expired.
    pub fn project_of(&self) -> String {
        self.fixed("jobs:project_of")
    }

    /// `jobs:backfill`: string, how far the backfill of the state and project indexes has
    /// walked `jobs` (`<score>:<offset>`), `done` once every job is indexed.
    pub fn index_backfill(&self) -> String {
        self.fixed("jobs:backfill")
    }

    /// `feed`: stream, capped, every state change of every job (the dashboard's live view).
    pub fn feed(&self) -> String {
        self.fixed(FEED)
    }

    /// `stats`: hash of counters (`entered:<state>`, `current:<state>`).
    pub fn stats(&self) -> String {
        self.fixed(STATS)
    }

    /// `seq`: counter giving each job its submission order.
    pub fn seq(&self) -> String {
        self.fixed(SEQ)
    }

    /// `notify`: stream with the consumer group [`NOTIFY_GROUP`], the outbox of replies.
    pub fn notify(&self) -> String {
        self.fixed(NOTIFY)
    }

    /// `notify:delayed`: zset scored by due time (ms), replies waiting to be tried again.
    pub fn notify_delayed(&self) -> String {
        self.fixed(NOTIFY_DELAYED)
    }

    /// `runner_secret`: string, the generated key of runner tokens when none is configured.
    pub fn runner_secret(&self) -> String {
        self.fixed("runner_secret")
    }

    /// `delivery:{id}`: hash with a ttl, an entry of the delivery journal.
    pub fn delivery(&self, id: &str) -> String {
        self.of(DELIVERY, id)
    }

    /// `deliveries`: zset scored by arrival (ms), the index of the delivery journal.
    pub fn deliveries(&self) -> String {
        self.fixed("deliveries")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn keys_are_the_prefix_then_their_name() {
        let keys = Keys::new("P:");
        assert_eq!(keys.job("x"), "P:job:x");
        assert_eq!(keys.events("x"), "P:job:x:events");
        assert_eq!(keys.concurrency("k"), "P:concurrency:k");
        assert_eq!(keys.concurrency_queue("k"), "P:concurrency:k:queue");
        assert_eq!(keys.idempotency("k"), "P:idem:k");
        assert_eq!(keys.target("gpu-eu"), "P:target:gpu-eu");
        assert_eq!(keys.dedup("slack:1"), "P:dedup:slack%3A1");
        assert_eq!(keys.active("PAY-1"), "P:active:PAY-1");
        assert_eq!(keys.delivery("k3x"), "P:delivery:k3x");
        assert_eq!(keys.deliveries(), "P:deliveries");
        assert_eq!(keys.concurrency("d:queue"), "P:concurrency:d%3Aqueue");
        assert_eq!(keys.job("{x}%"), "P:job:%7Bx%7D%25");
        assert_eq!(keys.notify_delayed(), "P:notify:delayed");
        assert_eq!(keys.state_jobs("queued"), "P:jobs:state:queued");
        assert_eq!(keys.project_jobs("a:b"), "P:jobs:project:a%3Ab");
        assert_eq!(
            keys.project_state_jobs("a:state:b", "failed"),
            "P:jobs:project:a%3Astate%3Ab:state:failed"
        );
        assert_eq!(keys.project_of(), "P:jobs:project_of");
        assert_eq!(keys.fixed_keys()[0], keys.queue());
        assert_eq!(keys.fixed_keys()[9], keys.notify_delayed());
    }

    /// Names an attacker would pick: the families' own heads and tails, separators, hash-tag
    /// braces, escapes that look encoded already, and names that are prefixes of each other.
    pub(crate) fn adversarial_part() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "d",
            "queue",
            ":queue",
            "events",
            ":events",
            "job:",
            "concurrency:",
            "idem:",
            "target:",
            "dedup:",
            "active:",
            ":",
            "::",
            "{",
            "}",
            "{x}",
            "%",
            "%3A",
            "%3a",
            "%25",
            "delayed",
            "notify:",
            "runner_secret",
            "jobs:",
            "state:",
            ":state:",
            "project:",
            "project_of",
            "backfill",
            "-",
            "é",
            " ",
        ]);
        prop::collection::vec(pieces, 0..5).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(512)
        })]

        /// No two (family, part) pairs name the same key, no family names a fixed key, and no
        /// key carries a part's hash tag: for every batch of adversarial names.
        #[test]
        fn key_families_stay_disjoint_for_adversarial_names(
            parts in prop::collection::vec(adversarial_part(), 1..24)
        ) {
            let keys = Keys::new("{agentsmith}:");
            let mut named: HashMap<String, (usize, String)> = keys
                .fixed_keys()
                .into_iter()
                .chain([keys.runner_secret(), keys.project_of(), keys.index_backfill()])
                .map(|k| (k, (usize::MAX, String::new())))
                .collect();
            for part in &parts {
                for (f, family) in FAMILIES.iter().enumerate() {
                    let key = keys.of(*family, part);
                    let tags = key.matches(['{', '}']).count();
                    prop_assert_eq!(tags, 2, "{} moves its slot", &key);
                    if let Some((g, other)) = named.insert(key.clone(), (f, part.clone())) {
                        prop_assert!(
                            g == f && other == *part,
                            "{} is named by family {} with {:?} and family {} with {:?}",
                            key, g, other, f, part
                        );
                    }
                }
                // A project's jobs in a state: two parts, named as one more family.
                for state in &parts {
                    let key = keys.project_state_jobs(part, state);
                    let pair = format!("{part:?} {state:?}");
                    prop_assert_eq!(key.matches(['{', '}']).count(), 2, "{} moves its slot", &key);
                    if let Some((g, other)) = named.insert(key.clone(), (FAMILIES.len(), pair.clone())) {
                        prop_assert!(
                            g == FAMILIES.len() && other == pair,
                            "{} is named by family {} with {:?} and by project and state {}",
                            key, g, other, pair
                        );
                    }
                }
            }
        }

        /// Encoding is injective and leaves no separator: decoding gives the part back.
        #[test]
        fn encoded_parts_decode_to_themselves(part in adversarial_part()) {
            let encoded = encode_part(&part);
            let separators = encoded.matches([':', '{', '}']).count();
            prop_assert_eq!(separators, 0, "{} keeps a separator", &encoded);
            let mut decoded = String::new();
            let mut rest = encoded.as_ref();
            while let Some(at) = rest.find('%') {
                decoded.push_str(&rest[..at]);
                let byte = u8::from_str_radix(&rest[at + 1..at + 3], 16).unwrap();
                decoded.push(char::from(byte));
                rest = &rest[at + 3..];
            }
            decoded.push_str(rest);
            prop_assert_eq!(decoded, part);
        }
    }
}
