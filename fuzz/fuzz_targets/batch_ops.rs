//! Batches of well-formed stream records built from structured input (names from a small set
//! that collide a lot, or arbitrary text; every event type; assorted images), through the
//! handler: the same checks as `handler`, reaching deeper than raw JSON does.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
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
        Name::Known(i) => Some(json!({ "S": KNOWN[usize::from(*i) % KNOWN.len()] })),
        Name::Text(text) => Some(json!({ "S": text })),
        Name::Missing => None,
        Name::Number(n) => Some(json!({ "N": n.to_string() })),
    };
    let mut keys = Map::new();
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
                keys.insert(attribute.to_owned(), name.clone());
            }
            image.insert(attribute.to_owned(), name.clone());
        }
    }
    let mut dynamodb = json!({
        "Keys": keys,
        "SizeBytes": 64,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    });
    if let Some(sequence) = op.sequence {
        dynamodb["SequenceNumber"] = json!(format!("{sequence:05}{index:05}"));
    }
    if op.image.is_some() {
        let side = if event == "REMOVE" {
            "OldImage"
        } else {
            "NewImage"
        };
        dynamodb[side] = Value::Object(image);
    } else if !op.in_keys {
        dynamodb["OldImage"] = Value::Object(image);
    }
    json!({
        "eventID": format!("event-{index}"),
        "eventName": event,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": dynamodb,
    })
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
