//! DynamoDB item images as plain JSON: the body of a user's object.
//!
//! Types are unwrapped: `S` → string, `N` → number, `BOOL` → boolean, `NULL` → null,
//! `M` → object, `L` → array, `SS`/`NS`/`BS` → arrays, `B` → base64 string. A number that a
//! JSON number cannot hold exactly (more than 17 significant digits, say) stays a string with
//! DynamoDB's digits, so no value is silently rounded. Object keys are sorted, so the same
//! item always gives the same bytes.

use std::collections::HashMap;

use base64::Engine as _;
use serde_dynamo::AttributeValue;
use serde_json::{Map, Number, Value};

/// The body of a user's object for `image`: its JSON, as bytes. The function writes exactly
/// these bytes, and every repair path (reconcile, replay, `dev`) compares and writes with it.
pub fn object_body(image: &HashMap<String, AttributeValue>) -> Vec<u8> {
    serde_json::to_vec(&item_to_json(image)).expect("a JSON value always serializes")
}

/// Converts an item image to a JSON object.
pub fn item_to_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(map_to_json(item))
}

fn map_to_json(item: &HashMap<String, AttributeValue>) -> Map<String, Value> {
    // Sorted explicitly: with serde_json's `preserve_order` (which other crates in a build may
    // switch on) a `Map` keeps insertion order, and a `HashMap`'s order is random.
    let mut entries: Vec<_> = item.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
        .into_iter()
        .map(|(name, value)| (name.clone(), attribute_to_json(value)))
        .collect()
}

fn attribute_to_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::N(n) => number_to_json(n),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::B(bytes) => Value::String(base64(bytes)),
        AttributeValue::M(map) => Value::Object(map_to_json(map)),
        AttributeValue::L(list) => Value::Array(list.iter().map(attribute_to_json).collect()),
        AttributeValue::Ss(set) => Value::Array(set.iter().cloned().map(Value::String).collect()),
        AttributeValue::Ns(set) => Value::Array(set.iter().map(|n| number_to_json(n)).collect()),
        AttributeValue::Bs(set) => {
            Value::Array(set.iter().map(|b| Value::String(base64(b))).collect())
        }
    }
}

fn number_to_json(digits: &str) -> Value {
    let exact = if let Ok(i) = digits.parse::<i64>() {
        Some(Number::from(i))
    } else if let Ok(u) = digits.parse::<u64>() {
        Some(Number::from(u))
    } else {
        // DynamoDB sends numbers in a canonical spelling; a float that prints back the same
        // digits holds the value exactly.
        digits
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .filter(|n| n.to_string() == digits)
    };
    exact.map_or_else(|| Value::String(digits.to_owned()), Value::Number)
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image(json: Value) -> HashMap<String, AttributeValue> {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn types_are_unwrapped() {
        let item = image(json!({
            "name": {"S": "alice"},
            "age": {"N": "42"},
            "score": {"N": "-1.5"},
            "active": {"BOOL": true},
            "nothing": {"NULL": true},
            "avatar": {"B": "aGk="},
            "address": {"M": {"city": {"S": "Lisbon"}, "zip": {"N": "1000"}}},
            "tags": {"L": [{"S": "a"}, {"N": "1"}]},
            "roles": {"SS": ["admin", "dev"]},
            "lucky": {"NS": ["7", "13"]},
            "keys": {"BS": ["AAE="]}
        }));
        assert_eq!(
            item_to_json(&item),
            json!({
                "name": "alice", "age": 42, "score": -1.5, "active": true, "nothing": null,
                "avatar": "aGk=", "address": {"city": "Lisbon", "zip": 1000},
                "tags": ["a", 1], "roles": ["admin", "dev"], "lucky": [7, 13], "keys": ["AAE="]
            })
        );
    }

    #[test]
    fn numbers_json_cannot_hold_exactly_stay_strings() {
        assert_eq!(
            number_to_json("18446744073709551615"),
            json!(18446744073709551615u64)
        );
        assert_eq!(
            number_to_json("123456789012345678901234567890"),
            json!("123456789012345678901234567890")
        );
        assert_eq!(number_to_json("0.1"), json!(0.1));
        assert_eq!(
            number_to_json("3.14159265358979323846"),
            json!("3.14159265358979323846")
        );
    }

    #[test]
    fn the_same_item_gives_the_same_bytes() {
        let item = image(json!({"b": {"S": "2"}, "a": {"S": "1"}, "c": {"S": "3"}}));
        let text = serde_json::to_string(&item_to_json(&item)).unwrap();
        assert_eq!(text, r#"{"a":"1","b":"2","c":"3"}"#);
    }
}
