//! The key rule: a name becomes exactly one key segment, reversibly, so distinct names never
//! share a key or a prefix.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use usersync_function::key::{decode_name, encode_name, user_keys, KeyTooLong, MAX_KEY_BYTES};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    name: &'a str,
    other: &'a str,
    segment: &'a str,
    key_prefix: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    let Input {
        name,
        other,
        segment,
        key_prefix,
    } = input;

    let encoded = encode_name(name);
    assert!(
        !encoded.contains('/'),
        "{name:?} -> {encoded:?} holds a '/'"
    );
    assert!(encoded != "." && encoded != "..", "{name:?} -> {encoded:?}");
    assert!(
        !encoded.chars().any(char::is_control),
        "{name:?} -> {encoded:?} holds a control character"
    );
    assert_eq!(encoded.is_empty(), name.is_empty());
    assert_eq!(
        decode_name(&encoded).as_deref(),
        Some(name),
        "not reversible"
    );

    // Injective: distinct names, distinct segments.
    if name != other {
        assert_ne!(
            encoded,
            encode_name(other),
            "{name:?} and {other:?} collide"
        );
    }

    // `decode_name` accepts exactly what the rule produces.
    if let Some(decoded) = decode_name(segment) {
        assert_eq!(encode_name(&decoded), segment);
    }

    // Keys: the documented layout, within S3's limit, and no user's object is under another
    // user's prefix.
    for object_name in ["userdata", "profile.json"] {
        let expected_bytes = key_prefix.len() + encoded.len() + 1 + object_name.len();
        match user_keys(key_prefix, name, object_name) {
            Ok(keys) => {
                assert_eq!(keys.prefix, format!("{key_prefix}{encoded}/"));
                assert_eq!(keys.object, format!("{}{object_name}", keys.prefix));
                assert!(keys.object.len() <= MAX_KEY_BYTES);
                if name != other {
                    if let Ok(theirs) = user_keys(key_prefix, other, object_name) {
                        assert!(!theirs.object.starts_with(&keys.prefix));
                        assert!(!keys.object.starts_with(&theirs.prefix));
                    }
                }
            }
            Err(KeyTooLong { bytes }) => {
                assert_eq!(bytes, expected_bytes);
                assert!(bytes > MAX_KEY_BYTES);
            }
        }
    }
});
