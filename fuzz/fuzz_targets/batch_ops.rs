//! Batches of well-formed stream records built from structured input (names from a small set
//! that collide a lot, or arbitrary text; every event type; assorted images), through the
//! handler: the same checks as `handler`, reaching deeper than raw JSON does.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use usersync_function::testing::{number_value, string_value, RecordBuilder};
use usersync_fuzz::{check_batch, FAIL_MARKER};

#[derive(Arbitrary, Debug)]
enum Event {
    Insert,
    Modify,
    Remove,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Name {
    /// One of a few names that look alike, escape, or fail in the failing store.
    Known(u8),
    Text(String),
    /// The key attribute missing, or of another type.
    Missing,
    Number(u32),
}

const KNOWN: [&str; 10] = [
    "alice",
    "alice/",
    "alice%2F",
    "a/b",
    "..",
    ".",
    "users",
    "bob",
    "%",
    FAIL_MARKER,
];

#[derive(Arbitrary, Debug)]
enum Attribute {
    S(String),
    N(String),
    Bool(bool),
    Null,
    L(Vec<String>),
    Ss(Vec<String>),
    B(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Op {
    event: Event,
    name: Name,
    /// Where the name is: Keys (Lambda's usual), else only the new or old image.
    in_keys: bool,
    image: Option<Vec<(String, Attribute)>>,
    sequence: Option<u16>,
}

fn attribute(value: &Attribute) -> Value {
    match value {
        Attribute::S(s) => json!({ "S": s }),
        Attribute::N(n) => json!({ "N": n }),
        Attribute::Bool(b) => json!({ "BOOL": b }),
        Attribute::Null => json!({ "NULL": true }),
        Attribute::L(items) => {
            json!({ "L": items.iter().map(|s| json!({ "S": s })).collect::<Vec<_>>() })
        }
        Attribute::Ss(items) => json!({ "SS": items }),
        Attribute::B(bytes) => {
            // Base64 of the bytes, written out by hand to keep the target's dependencies few.
            const ALPHABET: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut text = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
                for i in 0..4 {
                    if i <= chunk.len() {
                        text.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                    } else {
                        text.push('=');
                    }
                }
            }
            json!({ "B": text })
        }
    }
}

fn record(index: usize, op: &Op) -> Value {
    let event = match &op.event {
        Event::Insert => "INSERT",
        Event::Modify => "MODIFY",
        Event::Remove => "REMOVE",
        Event::Other(other) => other.as_str(),
    };
    let name = match &op.name {
        Name::Known(i) => Some(string_value(KNOWN[usize::from(*i) % KNOWN.len()])),
        Name::Text(text) => Some(string_value(text)),
        Name::Missing => None,
        Name::Number(n) => Some(number_value(n)),
    };
    // Lambda's fields the function never reads are left out; the event ID is `event-<index>`.
    let mut record = RecordBuilder::new(event, index as u64)
        .without_event_source_arn()
        .without_creation_time();
    record = match op.sequence {
        Some(sequence) => record.sequence_number(format!("{sequence:05}{index:05}")),
        None => record.without_sequence_number(),
    };
    let mut image: Map<String, Value> = op
        .image
        .iter()
        .flatten()
        .map(|(name, value)| (name.clone(), attribute(value)))
        .collect();
    // Both attribute names the fuzz configurations use as the key.
    for attribute in ["name", "id"] {
        if let Some(name) = &name {
            if op.in_keys {
                record = record.key(attribute, name.clone());
            }
            image.insert(attribute.to_owned(), name.clone());
        }
    }
    let image = Value::Object(image);
    if op.image.is_some() {
        // A REMOVE carries the item as it was; a write, as it is now.
        if event == "REMOVE" {
            record = record.old_image(image);
        } else {
            record = record.new_image(image);
        }
    } else if !op.in_keys {
        // No image and the name not in the keys: only the old image names the user.
        record = record.old_image(image);
    }
    record.build()
}

fuzz_target!(|ops: Vec<Op>| {
    if ops.len() > 64 {
        return;
    }
    let records: Vec<Box<RawValue>> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| serde_json::value::to_raw_value(&record(i, op)).expect("JSON"))
        .collect();
    let records: Vec<&RawValue> = records.iter().map(|record| &**record).collect();
    check_batch(&records);
});
