//! The Lua scripts, one per state change, each run as one atomic call.
//!
//! Every script is three parts joined at load time: a prelude generated here from
//! [`crate::keys`] (the common arguments, the key builders), the shared logic of
//! `scripts/lib.lua`, then the script's own body from `scripts/<name>.lua`. The scripts name
//! fixed keys and fields by the names of [`crate::keys::FIXED`] and [`crate::fields`]
//! (`K_QUEUE`, `F_STATE`, `O_KIND`, ...), which the loader replaces with `KEYS[n]` and the
//! quoted field: so no script spells a key or a field itself, a name changed in Rust changes
//! in Lua too, and a script pays nothing for it at run time (a local per name, captured by
//! every function of lib.lua, cost Redis about 10 % more CPU per job).
//!
//! Arguments: `KEYS[1..10]` are the installation's fixed keys ([`crate::keys::FIXED`]), then
//! the keys of the job the script acts on (its header says which); `ARGV[1..6]` are the
//! common arguments ([`COMMON`]), then the script's own. That is what a body sees: one call
//! carries any number of such items (see [`ITEMS`]), so the calls of many tasks can share
//! one script call (`batch.rs`).

use std::collections::HashMap;
use std::fmt::Write as _;

use redis::Script;

use crate::fields;
use crate::keys::{self, FAMILIES, FIXED};

const LIB: &str = include_str!("scripts/lib.lua");

/// The script bodies, by name.
const BODIES: [(&str, &str); 18] = [
    ("submit", include_str!("scripts/submit.lua")),
    ("claim", include_str!("scripts/claim.lua")),
    ("record_spawn", include_str!("scripts/record_spawn.lua")),
    ("fail_attempt", include_str!("scripts/fail_attempt.lua")),
    ("runner_events", include_str!("scripts/runner_events.lua")),
    ("cancel", include_str!("scripts/cancel.lua")),
    ("retry", include_str!("scripts/retry.lua")),
    ("promote", include_str!("scripts/promote.lua")),
    ("extend_lease", include_str!("scripts/extend_lease.lua")),
    ("reserve_target", include_str!("scripts/reserve_target.lua")),
    ("defer_start", include_str!("scripts/defer_start.lua")),
    ("answer", include_str!("scripts/answer.lua")),
    ("send_message", include_str!("scripts/send_message.lua")),
    ("sweep", include_str!("scripts/sweep.lua")),
    ("backfill", include_str!("scripts/backfill.lua")),
    ("notify_defer", include_str!("scripts/notify_defer.lua")),
    ("notify_promote", include_str!("scripts/notify_promote.lua")),
    (
        "exchange_credential",
        include_str!("scripts/exchange_credential.lua"),
    ),
];

/// What follows every script's body (wrapped as `item(KEYS, ARGV)`): one call runs the body
/// for each of its items, each seeing the fixed keys then its own as `KEYS`, the common
/// arguments then its own as `ARGV`, as if it were a call of its own. The items are
/// `ARGV[7]` (how many), then for each its number of keys and of arguments, then its
/// arguments; their keys follow the fixed keys in order. An item that fails (a Lua error, a
/// refused command) answers `{ITEM_FAILED, why}` (an error inside the reply would fail the
/// whole reply in the client), and the items after it still run. An item's tables are
/// made at their size at once (`item_keys`, `item_args`): grown one entry at a time, they were
/// reallocated up to seven times per item. Then what the items leave
/// to the end is done once: waiting jobs admitted if a slot was freed, the list indexes'
/// changes and the ready queue's acknowledgements written, the feed trimmed, and the counters
/// the items moved written, once each (see lib.lua).
const ITEMS: &str = "\
local replies = {}
local ki, ai = FIXED_KEYS + 1, COMMON_ARGS + 2
for r = 1, tonumber(ARGV[COMMON_ARGS + 1]) do
  local nk, na = tonumber(ARGV[ai]), tonumber(ARGV[ai + 1])
  ai = ai + 2
  local keys, args = item_keys(ki, nk), item_args(ai, na)
  ki, ai = ki + nk, ai + na
  local ok, reply = pcall(item, keys, args)
  if not ok then
    if type(reply) == 'table' then reply = reply.err end
    reply = { ITEM_FAILED, tostring(reply) }
  end
  if reply == nil then reply = false end
  replies[r] = reply
end
if PUMP then pump() end
flush_indexes()
flush_acks()
trim_feed()
flush_counts()
return replies
";

/// The first value of an item's reply that says the item failed; the second says why.
pub(crate) const ITEM_FAILED: &str = "agentsmith:item-failed";

/// The names of the common arguments, `ARGV[1..]` of every script, in order.
pub(crate) const COMMON: [&str; 6] = [
    "prefix",
    "now",
    "events_max",
    "retention_ms",
    "max_running",
    "start_lease_ms",
];

/// The loaded scripts.
pub(crate) struct Scripts {
    pub submit: Script,
    pub claim: Script,
    pub record_spawn: Script,
    pub fail_attempt: Script,
    pub runner_events: Script,
    pub cancel: Script,
    pub retry: Script,
    pub promote: Script,
    pub extend_lease: Script,
    pub reserve_target: Script,
    pub defer_start: Script,
    pub answer: Script,
    pub send_message: Script,
    pub sweep: Script,
    pub backfill: Script,
    pub notify_defer: Script,
    pub notify_promote: Script,
    pub exchange_credential: Script,
}

/// The generated start of every script: the common arguments, the consumer groups and the
/// key builders (one per family, and `project_state_jobs_key(project, state)`).
fn prelude() -> String {
    let mut lua =
        String::from("-- Generated by queue/src/scripts.rs from keys.rs and fields.rs.\n");
    for (i, name) in COMMON.iter().enumerate() {
        let value = if i == 0 {
            format!("ARGV[{}]", i + 1)
        } else {
            format!("tonumber(ARGV[{}])", i + 1)
        };
        let _ = writeln!(lua, "local {name} = {value}");
    }
    // `now` as Redis sent it, for the commands that store it (a Lua number would be
    // formatted back into text for each).
    let _ = writeln!(lua, "local NOW = ARGV[2]");
    let _ = writeln!(lua, "local ITEM_FAILED = '{ITEM_FAILED}'");
    let _ = writeln!(lua, "local FIXED_KEYS = {}", FIXED.len());
    let _ = writeln!(lua, "local COMMON_ARGS = {}", COMMON.len());
    let _ = writeln!(lua, "local GROUP = '{}'", keys::GROUP);
    let _ = writeln!(lua, "local NOTIFY_GROUP = '{}'", keys::NOTIFY_GROUP);
    lua.push_str(&item_tables());
    // Lua's twin of keys::encode_part: every escaped character as %XX.
    let escaped: String = keys::ESCAPED.iter().map(|c| format!("%{c}")).collect();
    // Each part is encoded once per call: a transition names its job's keys many times.
    let _ = writeln!(
        lua,
        "local ENCODED = {{}}\n\
         local function encode_part(part) local e = ENCODED[part] if e then return e end \
         e = (string.gsub(part, '[{escaped}]', \
         function(c) return string.format('%%%02X', string.byte(c)) end)) \
         ENCODED[part] = e return e end"
    );
    for family in FAMILIES {
        let tail = if family.tail.is_empty() {
            String::new()
        } else {
            format!(" .. '{}'", family.tail)
        };
        let _ = writeln!(
            lua,
            "local function {}(part) return prefix .. '{}' .. encode_part(part){tail} end",
            family.lua, family.head
        );
    }
    let _ = writeln!(
        lua,
        "local function project_state_jobs_key(project, state) return {}(project) .. '{}' .. \
         encode_part(state) end",
        keys::PROJECT_JOBS.lua,
        keys::PROJECT_STATE_INFIX
    );
    lua
}

/// `item_keys(from, n)` and `item_args(from, n)`: an item's `KEYS` (the fixed keys, then `n`
/// of the call's from `from`) and `ARGV` (the common arguments, then its own), each made by
/// one table constructor. `unpack` needs a stack slot per value, so a longer item (a runner
/// batch of thousands of events) is copied one value at a time.
fn item_tables() -> String {
    let mut lua = String::new();
    for (name, all, fixed) in [
        ("item_keys", "KEYS", FIXED.len()),
        ("item_args", "ARGV", COMMON.len()),
    ] {
        let head: Vec<String> = (1..=fixed).map(|i| format!("{all}[{i}]")).collect();
        let _ = writeln!(
            lua,
            "local function {name}(from, n)\n\
             \x20 if n <= 4000 then return {{ {head}, unpack({all}, from, from + n - 1) }} end\n\
             \x20 local t = {{ {head} }}\n\
             \x20 for j = 1, n do t[{fixed} + j] = {all}[from + j - 1] end\n\
             \x20 return t\n\
             end",
            head = head.join(", ")
        );
    }
    lua
}

/// What each generated name stands for: `K_QUEUE` → `KEYS[1]`, `F_STATE` → `'state'`.
fn names() -> HashMap<&'static str, String> {
    let mut names: HashMap<&'static str, String> = FIXED
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (*name, format!("KEYS[{}]", i + 1)))
        .collect();
    for table in [
        fields::job::LUA,
        fields::outbox::LUA,
        fields::stream::LUA,
        fields::stats::LUA,
    ] {
        for (name, field) in table {
            names.insert(name, format!("'{field}'"));
        }
    }
    names
}

/// Whether `word` has the shape of a generated name: a letter of F, O, S, C or K, `_`, then
/// capitals and `_`.
fn looks_generated(word: &str) -> bool {
    let bytes = word.as_bytes();
    bytes.len() > 2
        && matches!(bytes[0], b'F' | b'O' | b'S' | b'C' | b'K')
        && bytes[1] == b'_'
        && bytes[2..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || *b == b'_')
}

/// `lua` with every generated name replaced by what it stands for; the names of that shape
/// `names` does not know (a script's own locals, such as `K_JOB`) are left as they are.
fn expand(lua: &str, names: &HashMap<&'static str, String>) -> String {
    let mut out = String::with_capacity(lua.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        match names.get(word.as_str()) {
            Some(value) if looks_generated(word) => out.push_str(value),
            _ => out.push_str(word),
        }
        word.clear();
    };
    for c in lua.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The whole text of script `name`: the prelude, the shared logic, its body as the function
/// of one item, and the loop over the items.
fn source(shebang: &str, name: &str) -> String {
    let names = names();
    let body = BODIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, body)| expand(body, &names))
        .expect("every script named here is in BODIES");
    format!(
        "{shebang}{}{}\nlocal function item(KEYS, ARGV)\n{body}\nend\n{ITEMS}",
        prelude(),
        expand(LIB, &names)
    )
}

impl Scripts {
    /// Every script, with its prelude and the shared logic.
    pub(crate) fn load() -> Self {
        Self::load_with("")
    }

    /// The scripts as Redis 7 checks them strictly (`#!lua`: in cluster mode a script may
    /// then touch no key outside the slot of its KEYS), for the tests. The scripts run
    /// without it, so Redis 6.2 serves them too.
    #[cfg(test)]
    pub(crate) fn strict() -> Self {
        Self::load_with("#!lua\n")
    }

    fn load_with(shebang: &str) -> Self {
        let script = |name: &str| Script::new(&source(shebang, name));
        Self {
            submit: script("submit"),
            claim: script("claim"),
            record_spawn: script("record_spawn"),
            fail_attempt: script("fail_attempt"),
            runner_events: script("runner_events"),
            cancel: script("cancel"),
            retry: script("retry"),
            promote: script("promote"),
            extend_lease: script("extend_lease"),
            reserve_target: script("reserve_target"),
            defer_start: script("defer_start"),
            answer: script("answer"),
            send_message: script("send_message"),
            sweep: script("sweep"),
            backfill: script("backfill"),
            notify_defer: script("notify_defer"),
            notify_promote: script("notify_promote"),
            exchange_credential: script("exchange_credential"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The words of `text` that look like generated names: `F_STATE`, `K_QUEUE`, ...
    fn generated_names(text: &str) -> BTreeSet<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| {
                w.len() > 2
                    && w.as_bytes()[1] == b'_'
                    && matches!(w.as_bytes()[0], b'F' | b'O' | b'S' | b'C' | b'K')
                    && w.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            })
            .map(str::to_string)
            .collect()
    }

    /// The names `text` declares with `local` (`local a, b = ...`, `local function f`).
    fn declared(text: &str) -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.trim_start().strip_prefix("local "))
            .flat_map(|l| {
                let l = l.trim_start_matches("function ");
                let names = l.split(['=', '(']).next().unwrap_or_default();
                names
                    .split(',')
                    .map(|n| n.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn every_generated_name_a_script_uses_is_known_or_its_own() {
        let known = names();
        for (name, body) in BODIES.iter().chain([&("lib", LIB)]) {
            let own = declared(body);
            let missing: Vec<_> = generated_names(body)
                .into_iter()
                .filter(|n| !known.contains_key(n.as_str()) && !own.contains(n))
                .collect();
            assert!(missing.is_empty(), "{name}.lua uses undeclared {missing:?}");
        }
    }

    #[test]
    fn names_become_keys_and_quoted_fields_and_nothing_else_changes() {
        let names = names();
        let lua = "redis.call('HGET', K_QUEUE, F_STATE) -- F_STATE_X K_JOB F_STATEx";
        assert_eq!(
            expand(lua, &names),
            "redis.call('HGET', KEYS[1], 'state') -- F_STATE_X K_JOB F_STATEx"
        );
        assert_eq!(names["K_NOTIFY_DELAYED"], "KEYS[10]");
        assert_eq!(names["O_KIND"], "'kind'");
    }

    #[test]
    fn no_script_spells_a_key_or_a_record_field_itself() {
        for (name, body) in BODIES.iter().chain([&("lib", LIB)]) {
            let code: String = body
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                // 'state' is also the type of a state event and the kind of a state reply.
                .replace("type = 'state'", "")
                .replace("O_KIND, 'state'", "");
            assert!(
                !code.contains("prefix .."),
                "{name}.lua builds a key itself"
            );
            for (_, field) in fields::job::LUA {
                let spelled = format!("'{field}'");
                assert!(
                    !code.contains(&spelled),
                    "{name}.lua spells the record field {spelled} instead of its F_ name"
                );
            }
        }
    }

    #[test]
    fn the_prelude_builds_the_keys_keys_rs_builds() {
        let keys = crate::Keys::new("P:");
        let prelude = prelude();
        for family in FAMILIES {
            let built = keys.of(family, "x");
            let head = built.strip_suffix(&format!("x{}", family.tail)).unwrap();
            assert_eq!(head, format!("P:{}", family.head));
            assert!(prelude.contains(&format!("local function {}(part)", family.lua)));
        }
        assert!(prelude.contains("local prefix = ARGV[1]"));
        assert!(prelude.contains("local start_lease_ms = tonumber(ARGV[6])"));
    }

    /// The Lua key builders, run by a real Redis, name every adversarial part exactly as
    /// keys.rs does (so a script reaching a key through the data finds the key Rust wrote).
    #[test]
    fn the_lua_builders_encode_parts_as_rust_does() {
        use proptest::strategy::{Strategy, ValueTree};
        let client = ::redis::Client::open(testkit::redis::test_url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let keys = crate::Keys::new("{p}:");
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut parts: Vec<String> = ["d:queue", "{x}", "%3A", "%", "a:b:c", "", "é:}"]
            .map(String::from)
            .to_vec();
        for _ in 0..200 {
            let tree = crate::keys::tests::adversarial_part()
                .new_tree(&mut runner)
                .unwrap();
            parts.push(tree.current());
        }
        let calls: String = FAMILIES
            .iter()
            .map(|f| format!("{}(ARGV[2]),", f.lua))
            .collect();
        let script = format!(
            "{}\nreturn {{ {calls} project_state_jobs_key(ARGV[2], ARGV[3]) }}",
            prelude()
        );
        for (i, part) in parts.iter().enumerate() {
            let state = &parts[(i + 1) % parts.len()];
            let built: Vec<String> = ::redis::cmd("EVAL")
                .arg(&script)
                .arg(0)
                .arg("{p}:")
                .arg(part)
                .arg(state)
                .query(&mut conn)
                .unwrap();
            let mut expected: Vec<String> = FAMILIES.iter().map(|f| keys.of(*f, part)).collect();
            expected.push(keys.project_state_jobs(part, state));
            assert_eq!(built, expected, "for the parts {part:?} and {state:?}");
        }
    }
}
