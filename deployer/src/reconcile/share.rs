//! Splitting one reconcile across machines: share `I/N` scans the table segments `≡ I (mod N)`
//! and judges the bucket's keys whose stable hash is `≡ I (mod N)`, so that N shares, merged,
//! report every item and every key exactly once.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// One share of a reconcile split `count` ways: `index` in `0..count`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Share {
    pub index: u32,
    pub count: u32,
}

impl Share {
    /// Whether this share scans table segment `segment`.
    pub fn scans_segment(self, segment: u32) -> bool {
        segment % self.count == self.index
    }

    /// Whether this share judges a listed key whose owner is `text` (the decoded user name, or
    /// the key itself for a key that names no user).
    pub fn judges(self, text: &str) -> bool {
        stable_hash(text) % u64::from(self.count) == u64::from(self.index)
    }
}

/// The first 8 bytes of SHA-256: the same on every machine and every run, unlike `std`'s
/// hasher, so that separate processes agree on who judges what.
pub fn stable_hash(text: &str) -> u64 {
    let digest = Sha256::digest(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Share {
    type Err = String;

    /// `I/N` with `I` in `0..N`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let expected = "expected I/N with I from 0 to N-1, such as 0/2";
        let (index, count) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a share: {expected}"))?;
        let number = |part: &str| {
            part.trim()
                .parse::<u32>()
                .map_err(|_| format!("{text:?} is not a share: {expected}"))
        };
        let (index, count) = (number(index)?, number(count)?);
        if count == 0 || index >= count {
            return Err(format!("{text:?} is not a share: {expected}"));
        }
        Ok(Self { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_i_of_n_and_refuses_the_rest() {
        assert_eq!("1/3".parse(), Ok(Share { index: 1, count: 3 }));
        assert_eq!(Share { index: 0, count: 2 }.to_string(), "0/2");
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2", "1/2/3"] {
            assert!(bad.parse::<Share>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_segment_and_every_key_has_exactly_one_share() {
        let shares: Vec<Share> = (0..3).map(|index| Share { index, count: 3 }).collect();
        for segment in 0..12 {
            assert_eq!(
                shares.iter().filter(|s| s.scans_segment(segment)).count(),
                1
            );
        }
        for name in ["alice", "bob", "", "日本語", "a%2Fb/userdata"] {
            assert_eq!(shares.iter().filter(|s| s.judges(name)).count(), 1);
        }
        // Stable across runs and machines: a fixed value.
        assert_eq!(stable_hash("alice"), 0x2bd8_06c9_7f0e_00af);
    }
}
