//! Reading the layers of the configuration (built-in defaults, the user's file, the
//! environment) and turning them into [`Settings`], collecting every structural problem
//! (unknown keys, wrong types) with the key that has it.

use std::collections::HashMap;

use serde_json::Value;

use super::{ConfigError, Problem, Settings};

pub(super) fn yaml_value(text: &str, origin: &str) -> Result<Value, ConfigError> {
    serde_yaml::from_str::<Value>(text).map_err(|e| {
        ConfigError(vec![Problem {
            key: "(file)".into(),
            message: format!("{origin} is not valid YAML: {e}"),
        }])
    })
}

/// The `AGENTSMITH__SECTION__KEY` variables as a nested value, read through the `config`
/// crate so its parsing rules (numbers, booleans, `,`-separated lists) apply.
pub(super) fn env_layer(env: &[(String, String)]) -> Result<Value, ConfigError> {
    let source: config::Map<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("AGENTSMITH__"))
        .cloned()
        .collect();
    let built = config::Config::builder()
        .add_source(
            config::Environment::with_prefix("AGENTSMITH")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("api.tokens")
                .with_list_parse_key("redis.sentinel.nodes")
                .source(Some(source)),
        )
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .map_err(|e| {
            ConfigError(vec![Problem {
                key: "(environment)".into(),
                message: e.to_string(),
            }])
        })?;
    Ok(built)
}

/// The text of each `AGENTSMITH__` variable by its dotted key (`redis.sentinel.password`).
/// The environment layer parses what looks like a number or a boolean; where the setting is
/// text (a password of digits, a token `007`, a name `true`), [`deserialize_all`] puts the
/// variable's own text back instead of refusing it.
pub(super) fn env_texts(env: &[(String, String)]) -> HashMap<String, String> {
    env.iter()
        .filter_map(|(name, text)| {
            let key = name.strip_prefix("AGENTSMITH__")?;
            let key = key
                .split("__")
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
                .join(".");
            Some((key, text.clone()))
        })
        .collect()
}

/// The environment's text for `path` (`api.tokens[1]`: the second of its comma-separated
/// items), if a variable set it.
fn env_text(texts: &HashMap<String, String>, path: &str) -> Option<String> {
    match split_index(path) {
        (key, Some(index)) => texts
            .get(key)?
            .split(',')
            .nth(index)
            .map(|item| item.trim().to_string()),
        (key, None) => texts.get(key).cloned(),
    }
}

/// `a.b[2]` as (`a.b`, `Some(2)`); a path without an index as itself and `None`.
fn split_index(path: &str) -> (&str, Option<usize>) {
    path.strip_suffix(']')
        .and_then(|rest| rest.rsplit_once('['))
        .and_then(|(key, index)| Some((key, Some(index.parse().ok()?))))
        .unwrap_or((path, None))
}

/// Lays `over` onto `base`: objects merge key by key, anything else replaces.
pub(super) fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

/// Deserializes, collecting every structural problem: each error's key is set back to its
/// built-in default (or removed, when it has none) and the rest tried again, so one run
/// reports all unknown keys and wrong types, and the settings that result can still be
/// checked for the values that parse but cannot work. The settings are `None` when what is
/// left cannot be read at all.
///
/// A value the environment layer parsed as a number or boolean where text is expected is
/// given back as the variable's text (`texts`, see [`env_texts`]) instead.
pub(super) fn deserialize_all(
    mut value: Value,
    defaults: &Value,
    texts: &HashMap<String, String>,
) -> (Option<Settings>, Vec<Problem>) {
    let mut problems = Vec::new();
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, Settings>(&value) {
            Ok(settings) => return (Some(settings), problems),
            Err(err) => {
                let path = err.path().to_string();
                let inner = err.into_inner().to_string();
                if inner.contains("expected a string") {
                    if let Some(text) = env_text(texts, &path) {
                        if replace_key(&mut value, &path, Value::String(text)) {
                            continue;
                        }
                    }
                }
                let (key, message, removable) = describe(&path, &inner);
                problems.push(Problem {
                    key: key.clone(),
                    message,
                });
                let mended = match lookup(defaults, &key) {
                    Some(default) if removable => replace_key(&mut value, &key, default.clone()),
                    _ => removable && remove_key(&mut value, &key),
                };
                if !mended {
                    break;
                }
            }
        }
    }
    (None, problems)
}

/// The value at a dotted `key`, if there is one.
fn lookup<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
    key.split('.').try_fold(value, |node, part| node.get(part))
}

/// Sets the value at a dotted `key` (which may end with an index, `a.b[2]`) that exists;
/// whether it did.
fn replace_key(value: &mut Value, key: &str, new: Value) -> bool {
    let (key, index) = split_index(key);
    let slot = key
        .split('.')
        .try_fold(value, |node, part| node.get_mut(part));
    let slot = match (slot, index) {
        (Some(list), Some(index)) => list.get_mut(index),
        (slot, None) => slot,
        (None, Some(_)) => None,
    };
    match slot {
        Some(slot) if *slot != new => {
            *slot = new;
            true
        }
        _ => false,
    }
}

/// Turns a serde error at `path` into (key, message, whether removing the key may let the
/// rest parse).
fn describe(path: &str, inner: &str) -> (String, String, bool) {
    let parent = if path == "." {
        String::new()
    } else {
        path.to_string()
    };
    if let Some(rest) = inner.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        // serde_path_to_error's path already ends with the unknown field.
        let key = if parent == field || parent.ends_with(&format!(".{field}")) {
            parent.clone()
        } else {
            join(&parent, field)
        };
        let expected = rest
            .split_once(", expected ")
            .map(|(_, e)| format!(" (expected {e})"))
            .unwrap_or_default();
        return (key, format!("unknown key{expected}"), true);
    }
    if let Some(rest) = inner.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return (
            join(&parent, field),
            "required key is missing".into(),
            false,
        );
    }
    (
        if parent.is_empty() {
            "(root)".into()
        } else {
            parent
        },
        inner.to_string(),
        true,
    )
}

fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

fn remove_key(value: &mut Value, key: &str) -> bool {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else {
        return false;
    };
    let mut node = value;
    for part in parts {
        match node.get_mut(part) {
            Some(next) => node = next,
            None => return false,
        }
    }
    node.as_object_mut().and_then(|o| o.remove(last)).is_some()
}
