//! The stream's entries as Redis returns them (pure): an XREAD reply in
//! RESP2 or RESP3 form, and another relay's entry as a change to apply.

use std::time::{Duration, UNIX_EPOCH};

use redis::Value;

use super::super::entry::{Entry, Source, normalize};
use super::super::store::Published;
use crate::bounce::BounceClass;

/// One stream entry's fields, as text.
pub(super) type Fields = Vec<(String, String)>;

/// The entries of an XREAD reply for `relayq:suppression` (RESP2 arrays or a RESP3
/// map), in order; nothing for a timeout (nil).
pub(super) fn stream_entries(reply: &Value) -> Vec<(String, Fields)> {
    let streams: Vec<(&Value, &Value)> = match reply {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|stream| match stream {
                Value::Array(pair) if pair.len() == 2 => Some((&pair[0], &pair[1])),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.iter().map(|(key, value)| (key, value)).collect(),
        _ => Vec::new(),
    };
    let mut entries = Vec::new();
    for (_, items) in streams {
        let Value::Array(items) = items else { continue };
        for item in items {
            let Value::Array(pair) = item else { continue };
            let (Some(id), Some(Value::Array(values))) = (pair.first().and_then(text), pair.get(1))
            else {
                continue;
            };
            let values: Vec<String> = values.iter().filter_map(text).collect();
            let fields = values
                .chunks_exact(2)
                .map(|pair| (pair[0].clone(), pair[1].clone()))
                .collect();
            entries.push((id, fields));
        }
    }
    entries
}

pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

pub(super) fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Another relay's change as this relay applies it (source `cluster`); a
/// malformed entry is logged and skipped.
pub(super) fn remote_change(id: &str, fields: &Fields) -> Option<Published> {
    let address = field(fields, "address").filter(|address| !address.is_empty());
    let change = match (field(fields, "op"), address) {
        (Some("add"), Some(address)) => Some(Published::Add(Entry {
            address: normalize(address),
            class: field(fields, "class")
                .and_then(|class| class.parse().ok())
                .unwrap_or(BounceClass::Unclassified),
            reply: field(fields, "reply").unwrap_or_default().to_owned(),
            time: field(fields, "time")
                .and_then(|ms| ms.parse::<u64>().ok())
                .map_or_else(std::time::SystemTime::now, |ms| {
                    UNIX_EPOCH + Duration::from_millis(ms)
                }),
            source: Source::Cluster,
        })),
        (Some("remove"), Some(address)) => Some(Published::Remove(normalize(address))),
        _ => None,
    };
    if change.is_none() {
        tracing::warn!(
            "suppression stream: entry {id} is not a change relayq understands; skipped"
        );
    }
    change
}

/// Stream ids compare as (milliseconds, sequence).
pub(super) fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, sequence) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, sequence.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::super::STREAM;
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn xread_replies_in_both_protocols() {
        let items = Value::Array(vec![
            entry(
                "1-0",
                &[
                    "relay",
                    "a",
                    "op",
                    "add",
                    "address",
                    "X@Example.org",
                    "class",
                    "bad_domain",
                    "time",
                    "1000",
                ],
            ),
            entry(
                "1-1",
                &["relay", "a", "op", "remove", "address", "y@example.org"],
            ),
            entry("2-0", &["op", "frobnicate"]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk(STREAM), items.clone()])]);
        let resp3 = Value::Map(vec![(bulk(STREAM), items)]);
        for reply in [resp2, resp3] {
            let entries = stream_entries(&reply);
            assert_eq!(entries.len(), 3);
            let changes: Vec<_> = entries
                .iter()
                .filter_map(|(id, fields)| remote_change(id, fields))
                .collect();
            assert_eq!(changes.len(), 2, "the unknown op is skipped");
            let Published::Add(added) = &changes[0] else {
                panic!()
            };
            assert_eq!(added.address, "x@example.org");
            assert_eq!(added.class, BounceClass::BadDomain);
            assert_eq!(added.source, Source::Cluster);
            assert_eq!(added.time, UNIX_EPOCH + Duration::from_secs(1));
            assert_eq!(changes[1], Published::Remove("y@example.org".into()));
        }
        assert!(stream_entries(&Value::Nil).is_empty());
    }

    #[test]
    fn stream_ids_order_by_time_then_sequence() {
        assert!(parse_id("10-2") > parse_id("10-1"));
        assert!(parse_id("11-0") > parse_id("10-99"));
        assert_eq!(parse_id("5"), Some((5, 0)));
        assert_eq!(parse_id("x-1"), None);
    }
}
