//! Reading Redis replies: strings, flat maps, stream entries and the events they carry,
//! and the stream commands (`XREADGROUP`, `XAUTOCLAIM`) the ready queue and the outbox share.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

/// A reply value as a string (bulk, simple or integer; anything else is empty).
pub(crate) fn value_string(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

/// `XREADGROUP` of up to `count` new entries of `stream` for `consumer` of `group`,
/// blocking up to `block`.
pub(crate) fn read_group(
    group: &str,
    consumer: &str,
    count: usize,
    block: Duration,
    stream: &str,
) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("STREAMS")
        .arg(stream)
        .arg(">");
    cmd
}

/// `XAUTOCLAIM` of up to `count` entries of `stream` that `group`'s consumers took more
/// than `min_idle` ago, for `consumer`.
pub(crate) fn auto_claim(
    stream: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
    count: usize,
) -> redis::Cmd {
    let mut cmd = redis::cmd("XAUTOCLAIM");
    cmd.arg(stream)
        .arg(group)
        .arg(consumer)
        .arg(min_idle.as_millis() as u64)
        .arg("0-0")
        .arg("COUNT")
        .arg(count);
    cmd
}

/// The entry lists of an XREADGROUP reply, one per stream.
pub(crate) fn read_stream_entries(reply: &Value) -> Vec<&Value> {
    match reply {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(kv) if kv.len() == 2 => Some(&kv[1]),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.iter().map(|(_, entries)| entries).collect(),
        _ => Vec::new(),
    }
}

/// A flat `[field, value, ...]` reply (HGETALL inside a script) as a map.
pub(crate) fn flat_map(value: &Value) -> HashMap<String, String> {
    match value {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|pair| match pair {
                [k, v] => Some((value_string(k), value_string(v))),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| (value_string(k), value_string(v)))
            .collect(),
        _ => HashMap::new(),
    }
}

/// Parses `[[id, [field, value, ...]], ...]` into (entry id, fields).
pub(crate) fn stream_fields(entries: &Value) -> Vec<(String, HashMap<String, String>)> {
    let Value::Array(entries) = entries else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| match entry {
            Value::Array(parts) if parts.len() == 2 => {
                let id = value_string(&parts[0]);
                let mut fields = HashMap::new();
                if let Value::Array(kv) = &parts[1] {
                    for pair in kv.chunks(2) {
                        if let [k, v] = pair {
                            fields.insert(value_string(k), value_string(v));
                        }
                    }
                }
                Some((id, fields))
            }
            _ => None,
        })
        .collect()
}

/// The events (`e` fields, JSON) of stream entries; an entry that does not parse is
/// skipped with a warning.
pub(crate) fn decode_events<T: serde::de::DeserializeOwned>(entries: &Value) -> Vec<(String, T)> {
    stream_fields(entries)
        .into_iter()
        .filter_map(|(id, fields)| {
            let event = fields
                .get(crate::fields::stream::EVENT)
                .and_then(|e| serde_json::from_str(e).ok());
            if event.is_none() {
                tracing::warn!(entry = %id, "skipping an event that does not parse");
            }
            Some((id, event?))
        })
        .collect()
}
