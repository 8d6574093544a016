//! The key rule: how a user's name becomes one path segment of an S3 key.
//!
//! A name is copied as it is, except that these characters are replaced by the `%XX` escapes
//! of their UTF-8 bytes (upper-case hex):
//!
//! - `/`, which would split the name into several segments;
//! - `%`, the escape character itself, so that the rule stays reversible;
//! - control characters (U+0000–U+001F, U+007F–U+009F) and Unicode noncharacters
//!   (U+FDD0–U+FDEF and every U+xFFFE/U+xFFFF), which S3 cannot list back in XML.
//!
//! A whole name of `.` or `..` becomes `%2E` or `%2E%2E`, so that no name is a relative path
//! segment. Because `%` is always escaped, decoding is unambiguous, so distinct names always
//! give distinct segments and no user can reach into another user's prefix.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The longest key S3 accepts, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// Encodes a user's name as one key segment; see the module documentation for the rule.
pub fn encode_name(name: &str) -> Cow<'_, str> {
    if name == "." || name == ".." {
        return Cow::Owned("%2E".repeat(name.len()));
    }
    if !name.chars().any(needs_escape) {
        return Cow::Borrowed(name);
    }
    let mut encoded = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if needs_escape(c) {
            let mut utf8 = [0u8; 4];
            for byte in c.encode_utf8(&mut utf8).bytes() {
                write!(encoded, "%{byte:02X}").expect("writing to a String cannot fail");
            }
        } else {
            encoded.push(c);
        }
    }
    Cow::Owned(encoded)
}

/// Reverses [`encode_name`]; returns `None` for text that the rule never produces.
pub fn decode_name(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(decoded).ok()?;
    (encode_name(&name) == segment).then_some(name)
}

fn needs_escape(c: char) -> bool {
    c == '/' || c == '%' || c.is_control() || is_noncharacter(c)
}

fn is_noncharacter(c: char) -> bool {
    let code = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&code) || (code & 0xFFFE) == 0xFFFE
}

/// Where a user's data lives in the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserKeys {
    /// `<KEY_PREFIX><encoded name>/`: everything of this user is below it.
    pub prefix: String,
    /// `<KEY_PREFIX><encoded name>/<OBJECT_NAME>`: the user's object.
    pub object: String,
}

/// Why a name cannot be given a key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("object key would be {bytes} bytes long, over S3's limit of {MAX_KEY_BYTES}")]
pub struct KeyTooLong {
    pub bytes: usize,
}

/// Computes the keys of the user `name` under `key_prefix`, with the object named `object_name`.
pub fn user_keys(key_prefix: &str, name: &str, object_name: &str) -> Result<UserKeys, KeyTooLong> {
    let segment = encode_name(name);
    let prefix = format!("{key_prefix}{segment}/");
    let bytes = prefix.len() + object_name.len();
    if bytes > MAX_KEY_BYTES {
        return Err(KeyTooLong { bytes });
    }
    let object = format!("{prefix}{object_name}");
    Ok(UserKeys { prefix, object })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordinary_names_stay_as_they_are() {
        for name in [
            "alice",
            "Bob Smith",
            "o'neil",
            "a-b_c.d@e+f",
            "zoë",
            "日本語",
            "naïve café",
            "...",
            ".hidden",
        ] {
            assert_eq!(encode_name(name), name);
        }
    }

    #[test]
    fn characters_that_change_a_key_are_escaped() {
        assert_eq!(encode_name("a/b"), "a%2Fb");
        assert_eq!(encode_name("../bob"), "..%2Fbob");
        assert_eq!(encode_name("100%"), "100%25");
        assert_eq!(encode_name("%2F"), "%252F");
        assert_eq!(encode_name("."), "%2E");
        assert_eq!(encode_name(".."), "%2E%2E");
        assert_eq!(encode_name("tab\there"), "tab%09here");
        assert_eq!(encode_name("nul\0"), "nul%00");
        assert_eq!(encode_name("c1\u{85}"), "c1%C2%85");
        assert_eq!(encode_name("x\u{FFFE}"), "x%EF%BF%BE");
        assert_eq!(encode_name("emoji 🎉"), "emoji 🎉");
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        let keys = user_keys("", "alice", "userdata").unwrap();
        assert_eq!(keys.object, "alice/userdata");
        assert_eq!(keys.prefix, "alice/");
        let keys = user_keys("users/", "a/b", "userdata").unwrap();
        assert_eq!(keys.object, "users/a%2Fb/userdata");
        assert_eq!(keys.prefix, "users/a%2Fb/");
    }

    #[test]
    fn keys_over_the_limit_are_refused() {
        let name = "n".repeat(1015);
        assert_eq!(user_keys("", &name, "userdata").unwrap().object.len(), 1024);
        let name = "n".repeat(1016);
        assert_eq!(
            user_keys("", &name, "userdata"),
            Err(KeyTooLong { bytes: 1025 })
        );
        // Escapes count at their encoded length.
        let name = "/".repeat(400);
        assert_eq!(
            user_keys("", &name, "userdata"),
            Err(KeyTooLong { bytes: 1209 })
        );
    }

    #[test]
    fn text_the_rule_never_produces_does_not_decode() {
        assert_eq!(decode_name("a%2"), None);
        assert_eq!(decode_name("a%zz"), None);
        assert_eq!(decode_name("a%41"), None, "'A' is never escaped");
        assert_eq!(decode_name("%2E"), Some(".".to_owned()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn encoded_names_are_single_safe_segments(name in any::<String>()) {
            let encoded = encode_name(&name);
            prop_assert!(!encoded.contains('/'));
            prop_assert!(encoded != "." && encoded != "..");
            prop_assert!(!encoded.chars().any(|c| c.is_control()));
        }

        #[test]
        fn encoding_is_reversible_so_distinct_names_give_distinct_keys(name in any::<String>()) {
            prop_assert_eq!(decode_name(&encode_name(&name)), Some(name));
        }

        #[test]
        fn distinct_names_never_collide(a in "[./%a-c\\x00-\\x02]{0,6}", b in "[./%a-c\\x00-\\x02]{0,6}") {
            if a != b {
                prop_assert_ne!(encode_name(&a), encode_name(&b));
            }
        }
    }
}
