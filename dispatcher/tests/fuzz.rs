//! Property tests ("fuzzing") of everything a webhook request reaches before it is trusted:
//! the payload parsers of GitHub, GitLab, Jira and Slack, the command grammar, and the
//! signature checks. Their one promise is that no input panics (an unverified sender picks
//! the bytes), so every property feeds them arbitrary bytes and near-valid payloads (the
//! right keys with wrong types, missing fields, deep nesting, numbers no `u64` holds,
//! strings no `String` holds, arbitrary Unicode) and checks what an answer must say; where
//! an input round-trips, it checks that the parse gives back what was put in.
//!
//! A separate test binary, so it runs alone: `cargo test -p agentsmith --test fuzz`. Each
//! property runs 256 cases; `PROPTEST_CASES=10000` runs more.
//!
//! Layout: [`Doc`] builds JSON text from `(pointer, raw JSON)` leaves; the strategies below
//! it make field values (good ones, and [`fragment`]s of every wrong kind); then one
//! section of properties per module.

// A failed unwrap is a failed property.
#![allow(clippy::unwrap_used)]

use agentsmith::webhooks::command::{self, Command, CommentCommand};
use agentsmith::webhooks::signature::{self, SignatureError, SLACK_MAX_SKEW_SECS};
use agentsmith::webhooks::slack::{self, SlackEvent};
use agentsmith::webhooks::{github, gitlab, jira, Parsed, PayloadError, Source};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use queue::Origin;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Building near-valid JSON
// ---------------------------------------------------------------------------------------

/// A JSON document built from leaves of raw JSON text, so a field can hold what no
/// `serde_json::Value` can: a 400-digit number, a lone surrogate, nesting past the parser's
/// limit, or text that is not JSON at all.
#[derive(Debug, Clone)]
enum Doc {
    Raw(String),
    Object(Vec<(String, Doc)>),
}

impl Doc {
    /// Builds an object from `(pointer, raw)` leaves in order; `None` leaves the field out.
    /// A leaf set on a path replaces what was there, so a later `("issue", "7")` turns the
    /// whole `issue` object into a number.
    fn from_leaves(leaves: &[(&str, Option<String>)]) -> String {
        let mut doc = Doc::Object(Vec::new());
        for (pointer, raw) in leaves {
            if let Some(raw) = raw {
                let path: Vec<&str> = pointer.split('/').collect();
                doc.set(&path, raw.clone());
            }
        }
        let mut out = String::new();
        doc.render(&mut out);
        out
    }

    fn set(&mut self, path: &[&str], raw: String) {
        // A raw value higher up already decided this part of the document.
        let Doc::Object(fields) = self else { return };
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let at = fields.iter().position(|(k, _)| k == first);
        if rest.is_empty() {
            match at {
                Some(i) => fields[i].1 = Doc::Raw(raw),
                None => fields.push((first.to_string(), Doc::Raw(raw))),
            }
            return;
        }
        let i = at.unwrap_or_else(|| {
            fields.push((first.to_string(), Doc::Object(Vec::new())));
            fields.len() - 1
        });
        fields[i].1.set(rest, raw);
    }

    fn render(&self, out: &mut String) {
        match self {
            Doc::Raw(raw) => out.push_str(raw),
            Doc::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&json_str(key));
                    out.push(':');
                    value.render(out);
                }
                out.push('}');
            }
        }
    }
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    Value::from(s).to_string()
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// Arbitrary bytes, as a sender may post.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..1024)
}

/// Any string: arbitrary Unicode, control characters and all.
fn text() -> BoxedStrategy<String> {
    any::<String>().boxed()
}

/// A JSON string literal of any text.
fn string_lit() -> BoxedStrategy<String> {
    text().prop_map(|s| json_str(&s)).boxed()
}

/// A JSON string literal: usually one of `known`, sometimes anything.
fn one_of(known: &[&'static str]) -> BoxedStrategy<String> {
    let known: Vec<&'static str> = known.to_vec();
    prop_oneof![
        3 => select(known).prop_map(json_str),
        1 => string_lit(),
    ]
    .boxed()
}

/// A JSON number that fits a `u64`.
fn number_lit() -> BoxedStrategy<String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        (0u64..1000).prop_map(|n| n.to_string()),
    ]
    .boxed()
}

/// Any `serde_json::Value`, a few levels deep, with keys the parsers look for among others.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // NaN and the infinities become null.
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::from),
    ];
    let key = prop_oneof![
        select(vec![
            "text",
            "content",
            "type",
            "title",
            "number",
            "key",
            "name",
            "id",
            "iid",
            "body",
            "value",
            "action_id",
        ])
        .prop_map(str::to_string),
        ".{0,8}",
    ];
    leaf.prop_recursive(3, 16, 4, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Numbers no `u64` or `i64` holds, and numbers that are not integers.
fn huge_number() -> BoxedStrategy<String> {
    // Long digit strings are built by repetition: a regex strategy is slow to draw them.
    let digits = |n: usize, seed: u64| {
        let d = seed.to_string();
        d.repeat(n / d.len() + 1)[..n].to_string()
    };
    prop_oneof![
        (20usize..400, any::<u64>()).prop_map(move |(n, seed)| format!("9{}", digits(n, seed))),
        (20usize..60, any::<u64>()).prop_map(move |(n, seed)| format!("-9{}", digits(n, seed))),
        "[1-9]e[0-9]{3,5}",
        "-?[0-9]\\.[0-9]{1,20}[eE][+-]?[0-9]{1,4}",
        select(vec![
            "18446744073709551616",
            "18446744073709551615",
            "-9223372036854775809",
            "-9223372036854775808",
            "1e309",
            "-1e309",
            "-0",
            "0.0",
            "1.0",
            "-1",
            "0",
        ])
        .prop_map(str::to_string),
    ]
    .boxed()
}

/// Arrays and objects nested up to 300 deep (serde_json stops at 128), some in the shape of
/// Atlassian Document Format, which the Jira parser walks.
fn deep_nesting() -> BoxedStrategy<String> {
    let shapes = vec![
        ("[", "]"),
        ("{\"a\":", "}"),
        ("{\"type\":\"paragraph\",\"content\":[", "]}"),
        ("{\"text\":\"x\",\"content\":[", "]}"),
        ("{\"title\":\"t\",\"content\":[", "]}"),
    ];
    (1usize..300, select(shapes), any::<bool>())
        .prop_map(|(depth, (open, close), with_leaf)| {
            let mut out = open.repeat(depth);
            if with_leaf {
                out.push_str(if open.ends_with('[') {
                    "{\"text\":\"leaf\"}"
                } else {
                    "1"
                });
            } else if open.ends_with(':') {
                out.push_str("null");
            }
            out.push_str(&close.repeat(depth));
            out
        })
        .boxed()
}

/// String literals JSON allows but Rust strings cannot hold, literals that are not
/// well-formed, and long ones.
fn odd_string() -> BoxedStrategy<String> {
    prop_oneof![
        select(vec![
            r#""\ud800""#,
            r#""\udc00\ud800""#,
            r#""\ud83d\ude00""#,
            r#""\u0000""#,
            r#""\""#,
            r#""\x""#,
            r#""\u12""#,
            "\"",
            "''",
            "\"\u{feff}\"",
            "\"<@U1\"",
            "\"<@U1> <@U2>   fix  A-1 \"",
        ])
        .prop_map(str::to_string),
        "\"[^\"\\\\]{0,20}",
        (0usize..5_000).prop_map(|n| json_str(&"é".repeat(n))),
    ]
    .boxed()
}

/// A value of the wrong kind for any field: other JSON values, huge numbers, deep nesting,
/// odd strings, or text that is not JSON.
fn fragment() -> BoxedStrategy<String> {
    prop_oneof![
        4 => json_value().prop_map(|v| v.to_string()),
        2 => huge_number(),
        1 => deep_nesting(),
        2 => odd_string(),
        1 => ".{0,12}",
    ]
    .boxed()
}

/// A field: usually a good value, sometimes a wrong one, sometimes missing.
fn field(good: BoxedStrategy<String>) -> BoxedStrategy<Option<String>> {
    prop_oneof![
        6 => good.prop_map(Some),
        2 => fragment().prop_map(Some),
        1 => Just(None),
    ]
    .boxed()
}

/// A field that is usually absent and otherwise wrong: put after the children of the same
/// path, it replaces a whole object with a value of the wrong kind.
fn rarely_wrong() -> BoxedStrategy<Option<String>> {
    prop_oneof![
        12 => Just(None),
        1 => fragment().prop_map(Some),
    ]
    .boxed()
}

/// A near-valid JSON body: for each `(pointer, good value)` a [`field`], in order.
fn near_valid(
    template: Vec<(&'static str, BoxedStrategy<Option<String>>)>,
) -> BoxedStrategy<String> {
    let (pointers, fields): (Vec<&'static str>, Vec<_>) = template.into_iter().unzip();
    fields
        .prop_map(move |values| {
            let leaves: Vec<(&str, Option<String>)> =
                pointers.iter().copied().zip(values).collect();
            Doc::from_leaves(&leaves)
        })
        .boxed()
}

/// `body` with up to four bytes overwritten and perhaps cut short: a broken near-valid body.
fn mutated(body: BoxedStrategy<String>) -> BoxedStrategy<Vec<u8>> {
    (
        body,
        vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        proptest::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(body, edits, cut)| {
            let mut bytes = body.into_bytes();
            if !bytes.is_empty() {
                for (at, byte) in edits {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut.index(bytes.len()));
                }
            }
            bytes
        })
        .boxed()
}

/// An array of label objects (`[{"title": ..}]`), as GitLab sends them, with wrong entries.
fn gitlab_labels() -> BoxedStrategy<String> {
    vec(
        prop_oneof![
            3 => one_of(&["agent", "bug"]).prop_map(|t| format!("{{\"title\":{t}}}")),
            1 => fragment(),
        ],
        0..4,
    )
    .prop_map(|items| format!("[{}]", items.join(",")))
    .boxed()
}

/// An array of strings, with wrong entries.
fn string_array(known: &[&'static str]) -> BoxedStrategy<String> {
    vec(prop_oneof![3 => one_of(known), 1 => fragment()], 0..5)
        .prop_map(|items| format!("[{}]", items.join(",")))
        .boxed()
}

/// The `X-GitHub-Event` header: the three the parser knows, or anything.
fn github_event() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(vec!["issues", "issue_comment", "ping"]).prop_map(str::to_string),
        1 => text(),
    ]
    .boxed()
}

fn github_body() -> BoxedStrategy<String> {
    near_valid(vec![
        (
            "action",
            field(one_of(&["labeled", "created", "opened", "closed"])),
        ),
        ("repository/full_name", field(one_of(&["acme/shop"]))),
        ("issue/number", field(number_lit())),
        ("issue/title", field(string_lit())),
        ("issue/body", field(string_lit())),
        ("issue/html_url", field(string_lit())),
        ("label/name", field(one_of(&["agent"]))),
        (
            "comment/body",
            field(one_of(&["/agent fix", "/agent run it"])),
        ),
        ("comment/html_url", field(string_lit())),
        ("sender/login", field(string_lit())),
        ("sender/type", field(one_of(&["User", "Bot"]))),
        ("issue", rarely_wrong()),
        ("label", rarely_wrong()),
        ("repository", rarely_wrong()),
    ])
}

fn gitlab_body() -> BoxedStrategy<String> {
    near_valid(vec![
        ("object_kind", field(one_of(&["issue", "note", "push"]))),
        ("project/path_with_namespace", field(one_of(&["acme/shop"]))),
        ("user/username", field(string_lit())),
        ("object_attributes/iid", field(number_lit())),
        (
            "object_attributes/action",
            field(one_of(&["open", "update"])),
        ),
        ("object_attributes/title", field(string_lit())),
        ("object_attributes/description", field(string_lit())),
        ("object_attributes/url", field(string_lit())),
        (
            "object_attributes/noteable_type",
            field(one_of(&["Issue", "MergeRequest"])),
        ),
        ("object_attributes/note", field(one_of(&["/agent fix"]))),
        ("changes/labels/previous", field(gitlab_labels())),
        ("changes/labels/current", field(gitlab_labels())),
        ("labels", field(gitlab_labels())),
        ("issue/iid", field(number_lit())),
        ("issue/title", field(string_lit())),
        ("issue/description", field(string_lit())),
        ("object_attributes", rarely_wrong()),
        ("changes/labels", rarely_wrong()),
    ])
}

/// An Atlassian Document Format body: paragraphs of text nodes, with wrong nodes among them.
fn adf_doc() -> BoxedStrategy<String> {
    let node = prop_oneof![
        3 => string_lit().prop_map(|t| format!("{{\"type\":\"text\",\"text\":{t}}}")),
        1 => fragment(),
    ];
    vec(vec(node, 0..3), 0..3)
        .prop_map(|paragraphs| {
            let paragraphs: Vec<String> = paragraphs
                .into_iter()
                .map(|nodes| {
                    format!(
                        "{{\"type\":\"paragraph\",\"content\":[{}]}}",
                        nodes.join(",")
                    )
                })
                .collect();
            format!(
                "{{\"type\":\"doc\",\"version\":1,\"content\":[{}]}}",
                paragraphs.join(",")
            )
        })
        .boxed()
}

fn jira_changelog() -> BoxedStrategy<String> {
    let item = prop_oneof![
        3 => (
            one_of(&["labels", "status", "assignee"]),
            field(one_of(&["bug", "bug agent"])),
            field(one_of(&["bug agent", "Ready for agent"])),
        )
            .prop_map(|(f, from, to)| {
                Doc::from_leaves(&[("field", Some(f)), ("fromString", from), ("toString", to)])
            }),
        1 => fragment(),
    ];
    vec(item, 0..5)
        .prop_map(|items| format!("[{}]", items.join(",")))
        .boxed()
}

fn jira_body() -> BoxedStrategy<String> {
    near_valid(vec![
        (
            "webhookEvent",
            field(one_of(&[
                "jira:issue_created",
                "jira:issue_updated",
                "comment_created",
            ])),
        ),
        ("issue/key", field(one_of(&["PAY-12", "PAY", "-", "PAY-"]))),
        ("issue/fields/project/key", field(one_of(&["PAY"]))),
        ("issue/fields/summary", field(string_lit())),
        (
            "issue/fields/description",
            field(prop_oneof![string_lit(), adf_doc()].boxed()),
        ),
        (
            "issue/fields/labels",
            field(string_array(&["agent", "bug"])),
        ),
        (
            "issue/fields/status/name",
            field(one_of(&["Ready for agent"])),
        ),
        ("changelog/items", field(jira_changelog())),
        ("user/displayName", field(string_lit())),
        (
            "comment/body",
            field(prop_oneof![one_of(&["/agent fix"]), adf_doc()].boxed()),
        ),
        ("comment/author/displayName", field(string_lit())),
        ("issue/fields", rarely_wrong()),
        ("changelog", rarely_wrong()),
    ])
}

fn slack_event_body() -> BoxedStrategy<String> {
    near_valid(vec![
        (
            "type",
            field(one_of(&[
                "url_verification",
                "event_callback",
                "app_rate_limited",
            ])),
        ),
        ("challenge", field(string_lit())),
        ("event_id", field(string_lit())),
        ("event/type", field(one_of(&["app_mention", "message"]))),
        ("event/ts", field(one_of(&["1.5"]))),
        ("event/thread_ts", field(one_of(&["1.0"]))),
        ("event/user", field(one_of(&["U1"]))),
        ("event/channel", field(one_of(&["C1"]))),
        (
            "event/text",
            field(one_of(&[
                "<@UBOT> fix PAY-12",
                "<@UBOT",
                "<@>",
                "<@U1><@U2>",
                "  ",
            ])),
        ),
        ("event", rarely_wrong()),
    ])
}

fn slack_interaction_payload() -> BoxedStrategy<String> {
    let actions = vec(
        prop_oneof![
            3 => (field(one_of(&["cancel", "retry", "open"])), field(string_lit()))
                .prop_map(|(id, value)| Doc::from_leaves(&[("action_id", id), ("value", value)])),
            1 => fragment(),
        ],
        0..3,
    )
    .prop_map(|items| format!("[{}]", items.join(",")))
    .boxed();
    near_valid(vec![
        ("type", field(one_of(&["block_actions", "view_submission"]))),
        ("actions", field(actions)),
        ("user/id", field(one_of(&["U1"]))),
        ("channel/id", field(one_of(&["C1"]))),
        ("container/channel_id", field(one_of(&["C2"]))),
        ("response_url", field(string_lit())),
        ("user", rarely_wrong()),
    ])
}

/// A form body: known and unknown keys with any values, or raw form syntax gone wrong.
fn form_body(keys: &[&'static str], value: BoxedStrategy<String>) -> BoxedStrategy<Vec<u8>> {
    let keys: Vec<&'static str> = keys.to_vec();
    let key = prop_oneof![
        4 => select(keys).prop_map(str::to_string),
        1 => text(),
    ];
    let pair = prop_oneof![
        6 => (key, value).prop_map(|(k, v)| {
            form_urlencoded::Serializer::new(String::new())
                .append_pair(&k, &v)
                .finish()
        }),
        1 => select(vec!["%", "%zz", "%f0%9f", "%ff%fe", "&&", "==", "+", "=", "a", "payload"])
            .prop_map(str::to_string),
    ];
    vec(pair, 0..6)
        .prop_map(|pairs| pairs.join("&").into_bytes())
        .boxed()
}

/// A word that [`command::valid_key`] accepts.
fn key_word() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:/@#+=-]{1,200}"
}

/// A word of a task or a comment: no whitespace, some of it beyond ASCII.
fn word() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9,.!?'-]{1,10}", "[éß日本Ωж0-9]{1,4}"]
}

/// Whitespace between words, of the kinds `split_whitespace` knows.
fn gap() -> impl Strategy<Value = String> {
    "[ \t\n\u{a0}\u{3000}]{1,3}"
}

/// 256 cases a property. XorShift instead of the default ChaCha: in a debug build the
/// generator's own work is most of the time, and these tests need no cryptographic RNG.
/// A failure prints its shrunk input; no regression file is written next to this one (a
/// failing input worth keeping becomes a named `#[test]` beside the code it breaks).
fn config() -> ProptestConfig {
    ProptestConfig {
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        failure_persistence: None,
        ..ProptestConfig::with_cases(256)
    }
}

// ---------------------------------------------------------------------------------------
// GitHub
// ---------------------------------------------------------------------------------------

/// What every answer of the GitHub parser must say, whatever the body.
fn check_github(event: &str, parsed: &Result<Parsed, PayloadError>) -> Result<(), TestCaseError> {
    match event {
        "ping" => prop_assert!(matches!(parsed, Ok(Parsed::Ping)), "{parsed:?}"),
        "issues" | "issue_comment" => {}
        _ => prop_assert!(matches!(parsed, Ok(Parsed::Ignore(_))), "{parsed:?}"),
    }
    if let Ok(Parsed::Issue(issue)) = parsed {
        let Origin::Github { repo, issue: n } = &issue.origin else {
            return Err(TestCaseError::fail(format!(
                "not a GitHub origin: {issue:?}"
            )));
        };
        prop_assert_eq!(issue.source, Source::Github);
        prop_assert_eq!(&issue.scope, repo);
        prop_assert_eq!(&issue.ticket, &format!("{repo}#{n}"));
        prop_assert!(!repo.is_empty());
        match event {
            "issues" => prop_assert_eq!(issue.labels_added.len(), 1),
            _ => prop_assert!(issue.comment.as_deref().is_some_and(|c| !c.is_empty())),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn github_parse_never_panics_on_arbitrary_bytes(event in github_event(), body in bytes()) {
        check_github(&event, &github::parse(&event, &body))?;
    }

    #[test]
    fn github_parse_never_panics_on_near_valid_payloads(event in github_event(), body in github_body()) {
        check_github(&event, &github::parse(&event, body.as_bytes()))?;
    }

    #[test]
    fn github_parse_never_panics_on_broken_payloads(event in github_event(), body in mutated(github_body())) {
        check_github(&event, &github::parse(&event, &body))?;
    }

    #[test]
    fn a_labelled_github_issue_parses_to_its_ticket(
        owner in ".+", repo in ".+", number in any::<u64>(),
        title in text(), body in text(), label in ".+", login in text(),
    ) {
        let payload = json!({
            "action": "labeled",
            "issue": {"number": number, "title": title, "body": body},
            "label": {"name": label},
            "repository": {"full_name": format!("{owner}/{repo}")},
            "sender": {"login": login, "type": "User"},
        });
        let parsed = github::parse("issues", payload.to_string().as_bytes());
        let Ok(Parsed::Issue(issue)) = parsed else {
            return Err(TestCaseError::fail(format!("not an issue event: {parsed:?}")));
        };
        prop_assert_eq!(&issue.ticket, &format!("{owner}/{repo}#{number}"));
        prop_assert_eq!(&issue.scope, &format!("{owner}/{repo}"));
        prop_assert_eq!(&issue.labels_added, &vec![label]);
        let non_empty = |s: String| Some(s).filter(|s| !s.is_empty());
        prop_assert_eq!(&issue.title, &non_empty(title));
        prop_assert_eq!(&issue.description, &non_empty(body));
        prop_assert_eq!(&issue.requester, &non_empty(login));
        prop_assert_eq!(
            &issue.origin,
            &Origin::Github { repo: format!("{owner}/{repo}"), issue: number }
        );
    }

    #[test]
    fn a_github_comment_by_a_person_carries_its_body(
        number in any::<u64>(), comment in ".+", bot in any::<bool>(),
    ) {
        let payload = json!({
            "action": "created",
            "issue": {"number": number},
            "comment": {"body": comment},
            "repository": {"full_name": "acme/shop"},
            "sender": {"login": "ann", "type": if bot { "Bot" } else { "User" }},
        });
        let parsed = github::parse("issue_comment", payload.to_string().as_bytes());
        if bot {
            prop_assert!(matches!(parsed, Ok(Parsed::Ignore(_))), "{parsed:?}");
        } else {
            let Ok(Parsed::Issue(issue)) = parsed else {
                return Err(TestCaseError::fail(format!("not an issue event: {parsed:?}")));
            };
            prop_assert_eq!(issue.comment, Some(comment));
            prop_assert_eq!(issue.ticket, format!("acme/shop#{number}"));
        }
    }
}

// ---------------------------------------------------------------------------------------
// GitLab
// ---------------------------------------------------------------------------------------

fn check_gitlab(parsed: &Result<Parsed, PayloadError>) -> Result<(), TestCaseError> {
    prop_assert!(!matches!(parsed, Ok(Parsed::Ping)));
    if let Ok(Parsed::Issue(issue)) = parsed {
        let Origin::Gitlab { project, issue: n } = &issue.origin else {
            return Err(TestCaseError::fail(format!(
                "not a GitLab origin: {issue:?}"
            )));
        };
        prop_assert_eq!(issue.source, Source::Gitlab);
        prop_assert_eq!(&issue.scope, project);
        prop_assert_eq!(&issue.ticket, &format!("{project}#{n}"));
        // Either labels were added or it is a note with a comment.
        prop_assert!(!issue.labels_added.is_empty() || issue.comment.is_some());
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gitlab_parse_never_panics_on_arbitrary_bytes(body in bytes()) {
        check_gitlab(&gitlab::parse(&body))?;
    }

    #[test]
    fn gitlab_parse_never_panics_on_near_valid_payloads(body in gitlab_body()) {
        check_gitlab(&gitlab::parse(body.as_bytes()))?;
    }

    #[test]
    fn gitlab_parse_never_panics_on_broken_payloads(body in mutated(gitlab_body())) {
        check_gitlab(&gitlab::parse(&body))?;
    }

    #[test]
    fn a_gitlab_issue_hook_adding_a_label_parses_to_its_ticket(
        project in ".+", iid in any::<u64>(), previous in vec(".*", 0..4), added in ".*",
    ) {
        prop_assume!(!previous.contains(&added));
        let titles = |labels: &[String]| -> Vec<Value> {
            labels.iter().map(|t| json!({"title": t})).collect()
        };
        let mut current = previous.clone();
        current.push(added.clone());
        let payload = json!({
            "object_kind": "issue",
            "project": {"path_with_namespace": project},
            "object_attributes": {"iid": iid, "action": "update"},
            "changes": {"labels": {"previous": titles(&previous), "current": titles(&current)}},
        });
        let parsed = gitlab::parse(payload.to_string().as_bytes());
        let Ok(Parsed::Issue(issue)) = parsed else {
            return Err(TestCaseError::fail(format!("not an issue event: {parsed:?}")));
        };
        prop_assert_eq!(&issue.ticket, &format!("{project}#{iid}"));
        prop_assert_eq!(&issue.labels_added, &vec![added]);
    }
}

// ---------------------------------------------------------------------------------------
// Jira
// ---------------------------------------------------------------------------------------

fn check_jira(parsed: &Result<Parsed, PayloadError>, base_url: &str) -> Result<(), TestCaseError> {
    prop_assert!(!matches!(parsed, Ok(Parsed::Ping)));
    if let Ok(Parsed::Issue(issue)) = parsed {
        prop_assert_eq!(issue.source, Source::Jira);
        prop_assert_eq!(
            &issue.origin,
            &Origin::Jira {
                issue: issue.ticket.clone()
            }
        );
        prop_assert!(!issue.ticket.is_empty());
        if base_url.is_empty() {
            prop_assert_eq!(&issue.url, &None);
        } else {
            let url = issue.url.as_deref().unwrap_or_default();
            prop_assert!(url.ends_with(&format!("/browse/{}", issue.ticket)), "{url}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn jira_parse_never_panics_on_arbitrary_bytes(body in bytes(), base_url in text()) {
        check_jira(&jira::parse(&body, &base_url), &base_url)?;
    }

    #[test]
    fn jira_parse_never_panics_on_near_valid_payloads(body in jira_body(), base_url in text()) {
        check_jira(&jira::parse(body.as_bytes(), &base_url), &base_url)?;
    }

    #[test]
    fn jira_parse_never_panics_on_broken_payloads(body in mutated(jira_body())) {
        let base_url = "https://acme.atlassian.net/";
        check_jira(&jira::parse(&body, base_url), base_url)?;
    }

    #[test]
    fn a_jira_issue_created_with_labels_parses_to_its_key(
        project in "[A-Z][A-Z0-9]{0,9}", n in any::<u64>(), labels in vec(".*", 0..4),
        summary in text(), status in text(),
    ) {
        let key = format!("{project}-{n}");
        let payload = json!({
            "webhookEvent": "jira:issue_created",
            "issue": {"key": key, "fields": {"summary": summary, "labels": labels,
                      "status": {"name": status}}},
        });
        let parsed = jira::parse(payload.to_string().as_bytes(), "https://acme.atlassian.net");
        let Ok(Parsed::Issue(issue)) = parsed else {
            return Err(TestCaseError::fail(format!("not an issue event: {parsed:?}")));
        };
        prop_assert_eq!(&issue.ticket, &key);
        // No project in the fields: the key's prefix names it.
        prop_assert_eq!(&issue.scope, &project);
        prop_assert_eq!(&issue.labels_added, &labels);
        prop_assert_eq!(issue.url, Some(format!("https://acme.atlassian.net/browse/{key}")));
        prop_assert_eq!(issue.status_entered, Some(status).filter(|s| !s.is_empty()));
    }

    #[test]
    fn a_jira_comment_in_document_format_becomes_its_text(texts in vec(".*", 1..5)) {
        let joined: String = texts.concat();
        prop_assume!(!joined.trim().is_empty());
        let nodes: Vec<Value> = texts.iter().map(|t| json!({"type": "text", "text": t})).collect();
        let payload = json!({
            "webhookEvent": "comment_created",
            "issue": {"key": "PAY-3"},
            "comment": {"body": {"type": "doc", "version": 1,
                "content": [{"type": "paragraph", "content": nodes}]}},
        });
        let parsed = jira::parse(payload.to_string().as_bytes(), "");
        let Ok(Parsed::Issue(issue)) = parsed else {
            return Err(TestCaseError::fail(format!("not an issue event: {parsed:?}")));
        };
        prop_assert_eq!(issue.comment.as_deref(), Some(joined.trim()));
    }
}

// ---------------------------------------------------------------------------------------
// Slack
// ---------------------------------------------------------------------------------------

const COMMAND_KEYS: &[&str] = &[
    "command",
    "text",
    "user_id",
    "user_name",
    "channel_id",
    "response_url",
    "trigger_id",
];

fn check_command(parsed: &Result<slack::SlashCommand, PayloadError>) -> Result<(), TestCaseError> {
    if let Ok(c) = parsed {
        prop_assert!(!c.command.is_empty() && !c.user_id.is_empty() && !c.channel_id.is_empty());
        if let Some(url) = &c.response_url {
            prop_assert!(url.starts_with("https://") || url.starts_with("http://"));
        }
        prop_assert!(c.trigger_id.as_deref() != Some(""));
    }
    Ok(())
}

fn check_event(parsed: &Result<SlackEvent, PayloadError>) -> Result<(), TestCaseError> {
    if let Ok(SlackEvent::Mention {
        event_id,
        user,
        channel,
        thread_ts,
        text,
        ..
    }) = parsed
    {
        prop_assert!(!event_id.is_empty() && !user.is_empty() && !channel.is_empty());
        prop_assert!(!thread_ts.is_empty());
        prop_assert_eq!(text.trim(), text.as_str());
    }
    Ok(())
}

fn check_interaction(
    parsed: &Result<Option<slack::ButtonClick>, PayloadError>,
) -> Result<(), TestCaseError> {
    if let Ok(Some(click)) = parsed {
        prop_assert!(click.action == "cancel" || click.action == "retry");
        prop_assert!(!click.job_id.is_empty() && !click.user.is_empty());
    }
    Ok(())
}

/// A form body whose `payload` is `json`.
fn payload_form(json: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", json)
        .finish()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn slack_command_parse_never_panics_on_arbitrary_bytes(body in bytes()) {
        check_command(&slack::parse_command(&body))?;
    }

    #[test]
    fn slack_command_parse_never_panics_on_near_valid_forms(
        body in form_body(COMMAND_KEYS, prop_oneof![
            3 => select(vec!["/agent", "fix PAY-12", "U1", "C1", "https://hooks.slack.com/x", "http://", "t.1", ""])
                .prop_map(str::to_string),
            1 => text(),
        ].boxed()),
    ) {
        check_command(&slack::parse_command(&body))?;
    }

    #[test]
    fn a_slash_command_form_round_trips(
        name in ".+", text_ in text(), user_id in ".+", user_name in text(), channel in ".+",
        url in prop_oneof![
            "https?://.*",
            text(),
        ],
        trigger in text(),
    ) {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("command", &name)
            .append_pair("text", &text_)
            .append_pair("user_id", &user_id)
            .append_pair("user_name", &user_name)
            .append_pair("channel_id", &channel)
            .append_pair("response_url", &url)
            .append_pair("trigger_id", &trigger)
            .finish();
        let c = slack::parse_command(body.as_bytes()).unwrap();
        prop_assert_eq!(c.command, name);
        prop_assert_eq!(c.text, text_);
        prop_assert_eq!(c.user_id, user_id);
        prop_assert_eq!(c.user_name, user_name);
        prop_assert_eq!(c.channel_id, channel);
        let is_url = url.starts_with("https://") || url.starts_with("http://");
        prop_assert_eq!(c.response_url, Some(url).filter(|_| is_url));
        prop_assert_eq!(c.trigger_id, Some(trigger).filter(|t| !t.is_empty()));
    }

    #[test]
    fn slack_event_parse_never_panics_on_arbitrary_bytes(body in bytes()) {
        check_event(&slack::parse_event(&body))?;
    }

    #[test]
    fn slack_event_parse_never_panics_on_near_valid_payloads(body in slack_event_body()) {
        check_event(&slack::parse_event(body.as_bytes()))?;
    }

    #[test]
    fn slack_event_parse_never_panics_on_broken_payloads(body in mutated(slack_event_body())) {
        check_event(&slack::parse_event(&body))?;
    }

    #[test]
    fn a_mention_loses_its_leading_mentions(
        mentions in vec("<@[A-Z0-9]{1,11}>", 1..4), text_ in ".*", id in ".+",
    ) {
        let full = format!("{} {text_}", mentions.join(" "));
        let payload = json!({"type": "event_callback", "event_id": id,
            "event": {"type": "app_mention", "user": "U1", "channel": "C1", "ts": "1.5",
                      "text": full}});
        let parsed = slack::parse_event(payload.to_string().as_bytes());
        let Ok(SlackEvent::Mention { text, event_id, thread_ts, .. }) = parsed else {
            return Err(TestCaseError::fail(format!("not a mention: {parsed:?}")));
        };
        prop_assert_eq!(event_id, id);
        prop_assert_eq!(thread_ts, "1.5");
        if text_.trim_start().starts_with("<@") {
            prop_assert!(full.trim_end().ends_with(&text), "{text:?} is not the end of {full:?}");
        } else {
            prop_assert_eq!(text, text_.trim());
        }
    }

    #[test]
    fn slack_interaction_parse_never_panics_on_arbitrary_bytes(body in bytes()) {
        check_interaction(&slack::parse_interaction(&body))?;
    }

    #[test]
    fn slack_interaction_parse_never_panics_on_near_valid_payloads(payload in slack_interaction_payload()) {
        check_interaction(&slack::parse_interaction(payload_form(&payload).as_bytes()))?;
    }

    #[test]
    fn slack_interaction_parse_never_panics_on_broken_payloads(
        payload in mutated(slack_interaction_payload()),
        raw in any::<bool>(),
    ) {
        // Broken JSON inside a well-formed form, or the raw bytes as the whole body.
        let body = if raw {
            payload
        } else {
            payload_form(&String::from_utf8_lossy(&payload)).into_bytes()
        };
        check_interaction(&slack::parse_interaction(&body))?;
    }

    #[test]
    fn slack_interaction_parse_never_panics_on_near_valid_forms(
        body in form_body(&["payload", "token"], prop_oneof![
            3 => slack_interaction_payload(),
            1 => text(),
        ].boxed()),
    ) {
        check_interaction(&slack::parse_interaction(&body))?;
    }

    #[test]
    fn a_button_click_round_trips(
        action in select(vec!["cancel", "retry"]), job in ".+", user in ".+", channel in text(),
    ) {
        let payload = json!({"type": "block_actions", "user": {"id": user},
            "channel": {"id": channel}, "actions": [{"action_id": action, "value": job}]});
        let click = slack::parse_interaction(payload_form(&payload.to_string()).as_bytes())
            .unwrap()
            .unwrap();
        prop_assert_eq!(click.action, action);
        prop_assert_eq!(click.job_id, job);
        prop_assert_eq!(click.user, user);
        prop_assert_eq!(click.channel, channel);
    }
}

// ---------------------------------------------------------------------------------------
// The command grammar
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn command_parse_never_panics_and_errors_carry_the_usage(text_ in text(), name in text()) {
        match command::parse(&text_, &name) {
            Ok(_) => {}
            Err(message) => prop_assert!(message.to_string().contains(&command::usage(&name))),
        }
    }

    #[test]
    fn command_parse_never_panics_on_near_valid_commands(
        words in vec(prop_oneof![
            3 => select(vec!["fix", "FIX", "run", "status", "list", "cancel", "retry", "help", "in", "PAY-12"])
                .prop_map(str::to_string),
            1 => "\\PC{0,300}",
        ], 0..6),
        gaps in vec(gap(), 6),
    ) {
        let text_: String = words.iter().zip(&gaps).map(|(w, g)| format!("{g}{w}")).collect();
        let _ = command::parse(&text_, "/agent");
    }

    #[test]
    fn fix_with_a_valid_ticket_parses_to_that_ticket(
        ticket in key_word(), verb in "[fF][iI][xX]", before in "[ \t]{0,3}", between in gap(),
        after in "[ \t\n]{0,3}",
    ) {
        let text_ = format!("{before}{verb}{between}{ticket}{after}");
        prop_assert_eq!(
            command::parse(&text_, "/agent"),
            Ok(Command::Fix { ticket, project: None })
        );
    }

    #[test]
    fn fix_in_a_project_parses_to_both(
        ticket in key_word(), project in key_word(), in_ in "[iI][nN]", g1 in gap(), g2 in gap(),
    ) {
        let text_ = format!("fix{g1}{ticket}{g2}{in_}{g1}{project}");
        prop_assert_eq!(
            command::parse(&text_, "/agent"),
            Ok(Command::Fix { ticket, project: Some(project) })
        );
    }

    #[test]
    fn run_keeps_the_task_words(
        project in key_word(), words in vec(word(), 1..6), g in gap(),
    ) {
        let text_ = format!("run{g}{project}{g}{}", words.join(&g));
        prop_assert_eq!(
            command::parse(&text_, "/agent"),
            Ok(Command::Run { project, task: words.join(" ") })
        );
    }

    #[test]
    fn invalid_tickets_are_refused_with_the_usage(ticket in "\\S*[<>\"'`;$(){}\\[\\]|\\\\]\\S*") {
        let parsed = command::parse(&format!("fix {ticket}"), "/agent");
        prop_assert!(
            matches!(&parsed, Err(m) if m.reason.contains("is not a ticket") && m.usage.contains("/agent fix <TICKET>")),
            "{parsed:?}"
        );
    }

    #[test]
    fn parse_comment_never_panics(body in text(), name in text()) {
        if let Some(CommentCommand::Run(task)) = command::parse_comment(&body, &name) {
            prop_assert!(!task.is_empty());
        }
    }

    #[test]
    fn a_fix_comment_carries_its_detail(
        blank in "(\\s*\n){0,3}", words in vec(word(), 0..6),
        rest in "(\n.*){0,3}", g in "[ \t]{1,3}",
    ) {
        let body = format!("{blank}/agent{g}fix{g}{}{rest}", words.join(&g));
        prop_assert_eq!(
            command::parse_comment(&body, "/agent"),
            Some(CommentCommand::Fix(words.join(" ")))
        );
    }

    #[test]
    fn truncate_keeps_whole_characters_within_the_limit(text_ in text(), max in 0usize..300) {
        let cut = command::truncate(&text_, max);
        let n = text_.chars().count();
        if n <= max {
            prop_assert_eq!(cut, text_);
        } else {
            prop_assert_eq!(cut.chars().count(), max + 1);
            prop_assert!(cut.ends_with('…'));
            prop_assert!(text_.starts_with(cut.trim_end_matches('…')));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------

/// A header value: absent, empty, of the right form, or anything.
fn header(right_form: BoxedStrategy<String>) -> BoxedStrategy<Option<String>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(String::new())),
        3 => right_form.prop_map(Some),
        2 => text().prop_map(Some),
    ]
    .boxed()
}

/// Unix seconds from 1970 to 2100.
fn realistic_time() -> impl Strategy<Value = i64> {
    0i64..4_102_444_800
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn verify_slack_never_panics_on_arbitrary_headers(
        secret in text(),
        timestamp in header(prop_oneof![
            any::<i64>().prop_map(|t| t.to_string()),
            " ?[0-9]{1,25} ?",
        ].boxed()),
        sig in header("v[01]=[0-9a-fA-F]{0,70}".boxed()),
        body in bytes(),
        now in any::<i64>(),
    ) {
        let result = signature::verify_slack(&secret, timestamp.as_deref(), sig.as_deref(), &body, now);
        // Nothing unsigned gets through.
        prop_assert!(result.is_err());
    }

    #[test]
    fn a_slack_signature_verifies_and_any_changed_byte_does_not(
        secret in text(), at in realistic_time(), skew in -SLACK_MAX_SKEW_SECS..=SLACK_MAX_SKEW_SECS,
        body in vec(any::<u8>(), 1..512), flip in any::<prop::sample::Index>(), bit in 0u8..8,
    ) {
        let sig = testkit::sign::slack(&secret, at, &body);
        let ts = at.to_string();
        prop_assert_eq!(
            signature::verify_slack(&secret, Some(&ts), Some(&sig), &body, at + skew),
            Ok(())
        );
        let mut tampered = body.clone();
        tampered[flip.index(body.len())] ^= 1 << bit;
        prop_assert_eq!(
            signature::verify_slack(&secret, Some(&ts), Some(&sig), &tampered, at),
            Err(SignatureError::Mismatch("X-Slack-Signature"))
        );
        let late = at + SLACK_MAX_SKEW_SECS + 1 + skew.abs();
        prop_assert_eq!(
            signature::verify_slack(&secret, Some(&ts), Some(&sig), &body, late),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn verify_hub_never_panics_on_arbitrary_headers(
        secret in text(), sig in header("(sha256=)?[0-9a-fA-F]{0,70}".boxed()), body in bytes(),
    ) {
        let result = signature::verify_hub("X-Hub-Signature-256", &secret, sig.as_deref(), &body);
        prop_assert!(result.is_err());
    }

    #[test]
    fn a_hub_signature_verifies_and_any_changed_byte_does_not(
        secret in text(), body in vec(any::<u8>(), 1..1024),
        flip in any::<prop::sample::Index>(), bit in 0u8..8,
    ) {
        let sig = testkit::sign::hub(&secret, &body);
        prop_assert_eq!(signature::verify_hub("X-Hub-Signature", &secret, Some(&sig), &body), Ok(()));
        let mut tampered = body.clone();
        tampered[flip.index(body.len())] ^= 1 << bit;
        prop_assert_eq!(
            signature::verify_hub("X-Hub-Signature", &secret, Some(&sig), &tampered),
            Err(SignatureError::Mismatch("X-Hub-Signature"))
        );
        // A changed signature fails too: a flipped hex digit, or a byte off its end.
        let mut wrong = sig.clone().into_bytes();
        let i = "sha256=".len() + flip.index(64);
        wrong[i] = if wrong[i] == b'0' { b'1' } else { b'0' };
        let wrong = String::from_utf8(wrong).unwrap();
        prop_assert!(signature::verify_hub("X-Hub-Signature", &secret, Some(&wrong), &body).is_err());
        prop_assert!(signature::verify_hub("X-Hub-Signature", &secret, Some(&sig[..sig.len() - 2]), &body).is_err());
    }

    #[test]
    fn a_gitlab_token_verifies_exactly_when_it_is_the_secret(
        secret in text(), token in prop_oneof![text().prop_map(Some), Just(None)], same in any::<bool>(),
    ) {
        let token = if same { Some(secret.clone()) } else { token };
        let result = signature::verify_gitlab(&secret, token.as_deref());
        prop_assert_eq!(result.is_ok(), token.as_deref() == Some(secret.as_str()));
    }
}

proptest! {
    #![proptest_config(config())]

    /// A correctly signed request whose timestamp is far outside any real clock is stale,
    /// never a panic (the skew check once subtracted it from now unchecked, which overflowed
    /// `i64` for a timestamp near `i64::MIN`; this property found it).
    #[test]
    fn a_signed_slack_request_with_any_timestamp_never_panics(
        secret in text(),
        at in prop_oneof![any::<i64>(), i64::MIN..i64::MIN + 10_000_000_000, i64::MAX - 10..=i64::MAX],
        now in realistic_time(),
        body in bytes(),
    ) {
        let sig = testkit::sign::slack(&secret, at, &body);
        let ts = at.to_string();
        let result = signature::verify_slack(&secret, Some(&ts), Some(&sig), &body, now);
        let fresh = now
            .checked_sub(at)
            .is_some_and(|d| d.unsigned_abs() <= SLACK_MAX_SKEW_SECS.unsigned_abs());
        prop_assert_eq!(result.is_ok(), fresh);
    }
}
