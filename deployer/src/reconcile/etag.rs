//! Comparing a body without downloading it: when S3's ETag is the MD5 of the body, the listing
//! already says whether an object holds the bytes the function would write.
//!
//! S3 documents when that holds (the `ETag` of `Object`,
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/API_Object.html>, and "Checking object
//! integrity", <https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html>):
//! objects created by PutObject, PostObject or CopyObject that are plaintext or encrypted with
//! SSE-S3 have an ETag that is the MD5 digest of their data; with SSE-C or SSE-KMS it is not;
//! and an object created by a multipart upload never has one (its ETag ends in `-<parts>`).
//! The function writes with PutObject and no encryption header, so its objects take the
//! bucket's default encryption, which [`BucketEncryption`] holds.

use md5::{Digest, Md5};

/// An MD5 digest.
pub type Md5Digest = [u8; 16];

/// The MD5 of `body`.
pub fn md5_of(body: &[u8]) -> Md5Digest {
    Md5::digest(body).into()
}

/// The bucket's default encryption, from GetBucketEncryption
/// (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketEncryption.html>): it
/// answers `ServerSideEncryptionConfigurationNotFoundError` for a bucket without one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BucketEncryption {
    /// No default encryption: objects are stored as sent.
    None,
    /// `AES256`: SSE-S3.
    SseS3,
    /// `aws:kms` or `aws:kms:dsse` (or an algorithm newer than this code): ETags are no MD5.
    Kms,
    /// The bucket would not say (no `s3:GetEncryptionConfiguration`, or an emulator without
    /// the call): an ETag that looks like an MD5 is compared, and every mismatch read.
    #[default]
    Unknown,
}

impl BucketEncryption {
    /// From the default rule's `SSEAlgorithm`.
    pub fn from_algorithm(algorithm: &str) -> Self {
        match algorithm {
            "AES256" => Self::SseS3,
            _ => Self::Kms,
        }
    }

    /// Whether an object's ETag may be the MD5 of its body.
    pub fn etags_may_be_md5(self) -> bool {
        !matches!(self, Self::Kms)
    }
}

/// What the listing's ETag says about an object's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtagCheck {
    /// The ETag is the MD5 of the expected body: in step.
    Matches,
    /// The ETag is an MD5 of other bytes. Reported as stale only once a read confirms it: an
    /// object written by other means (a KMS key given per request) may still be right.
    Differs,
    /// The ETag is no MD5 (SSE-KMS, SSE-C, multipart): only reading the body tells.
    NotAnMd5,
}

/// Compares a listed ETag (quoted, as S3 sends it) with the MD5 of the expected body.
pub fn check_etag(etag: &str, expected: &Md5Digest, encryption: BucketEncryption) -> EtagCheck {
    if !encryption.etags_may_be_md5() {
        return EtagCheck::NotAnMd5;
    }
    match parse_md5(etag) {
        Some(digest) if &digest == expected => EtagCheck::Matches,
        Some(_) => EtagCheck::Differs,
        None => EtagCheck::NotAnMd5,
    }
}

/// The digest an ETag of 32 hexadecimal digits spells; `None` for any other ETag (a multipart
/// one, `<hex>-<parts>`, or an opaque one).
fn parse_md5(etag: &str) -> Option<Md5Digest> {
    let hex_text = etag.trim().trim_matches('"');
    let mut digest = [0u8; 16];
    hex::decode_to_slice(hex_text, &mut digest).ok()?;
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"name":"ann"}"#;

    fn etag_of(body: &[u8]) -> String {
        format!("\"{}\"", hex::encode(md5_of(body)))
    }

    #[test]
    fn an_sse_s3_or_plain_etag_is_compared_as_an_md5() {
        let expected = md5_of(BODY);
        assert_eq!(hex::encode(md5_of(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        for encryption in [
            BucketEncryption::SseS3,
            BucketEncryption::None,
            BucketEncryption::Unknown,
        ] {
            assert_eq!(
                check_etag(&etag_of(BODY), &expected, encryption),
                EtagCheck::Matches
            );
            assert_eq!(
                check_etag(&etag_of(b"{}"), &expected, encryption),
                EtagCheck::Differs
            );
        }
        // Upper-case hex and no quotes are the same digest.
        let upper = hex::encode_upper(expected);
        assert_eq!(
            check_etag(&upper, &expected, BucketEncryption::SseS3),
            EtagCheck::Matches
        );
    }

    #[test]
    fn multipart_kms_and_opaque_etags_need_the_body() {
        let expected = md5_of(BODY);
        let multipart = format!("\"{}-2\"", hex::encode(expected));
        assert_eq!(
            check_etag(&multipart, &expected, BucketEncryption::SseS3),
            EtagCheck::NotAnMd5
        );
        assert_eq!(
            check_etag(&etag_of(BODY), &expected, BucketEncryption::Kms),
            EtagCheck::NotAnMd5
        );
        for opaque in ["", "\"abc\"", "\"zz8cd98f00b204e9800998ecf8427e00\""] {
            assert_eq!(
                check_etag(opaque, &expected, BucketEncryption::SseS3),
                EtagCheck::NotAnMd5
            );
        }
        assert_eq!(
            BucketEncryption::from_algorithm("aws:kms:dsse"),
            BucketEncryption::Kms
        );
        assert_eq!(
            BucketEncryption::from_algorithm("AES256"),
            BucketEncryption::SseS3
        );
    }
}
