//! Under `DELETE_SCOPE=prefix`, a REMOVE clears everything under the user's prefix. When the
//! replay finds a REMOVE in a batch the mapping gave up on, it deletes the objects under the
//! prefix that were last modified before that REMOVE, whether or not the user exists again:
//! they belong to the user's life before it. Objects written after the REMOVE are kept. The only
//! S3 calls of the replay outside the function's own store are here.
//!
//! **Which objects are older.** DynamoDB Streams gives a record's `ApproximateCreationDateTime`
//! "in UNIX epoch time format and rounded down to the closest second"
//! (<https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_streams_StreamRecord.html>),
//! and S3 keeps `LastModified`, "the object creation date or the last modified date, whichever
//! is the latest" (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingMetadata.html>),
//! to the whole second (the `Last-Modified` header is an HTTP-date, which has no fraction:
//! RFC 9110, section 5.6.7). So both are compared as whole seconds, and an object is deleted only
//! when its second is strictly before the REMOVE's. With R the REMOVE's true time, its
//! timestamp is A = floor(R) ≤ R. An object put at P > R has floor(P) ≥ floor(R) = A: never
//! deleted. One deleted has floor(L) < A ≤ R: it was written before the REMOVE. Objects written
//! in the REMOVE's own second are kept, since at this precision they cannot be ordered; the
//! user's repair right after deletes them too when the user no longer exists, and rewrites the
//! user's own object when it does. (Flooring a time an emulator gives with a fraction keeps the
//! argument: it only lowers A. The argument takes DynamoDB's and S3's clocks to agree within
//! that second.)
//!
//! **Objects rewritten meanwhile.** Between the listing and the delete, an object may be put
//! again. Each delete is conditional on the ETag listed (If-Match,
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-deletes.html>): a changed
//! object fails its precondition and is kept.

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_smithy_types::DateTime;
use usersync_function::StoreError;

/// The most keys one DeleteObjects request may name.
const DELETE_OBJECTS_LIMIT: usize = 1000;

/// What one cleanup did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Cleaned {
    /// Objects deleted as older than the REMOVE.
    pub deleted: usize,
    /// Objects older than the REMOVE when listed but rewritten before the delete, so kept.
    pub rewritten: usize,
}

/// Whether an object last modified at `last_modified` was written before a REMOVE at
/// `removed_at_epoch_s` (see the module's comment for why whole seconds, strictly before).
pub(super) fn written_before(last_modified: &DateTime, removed_at_epoch_s: f64) -> bool {
    last_modified.secs() < removed_at_epoch_s.floor() as i64
}

/// Deletes the objects under `prefix` in `bucket` last modified before `removed_at_epoch_s`.
pub(super) async fn delete_written_before(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    removed_at_epoch_s: f64,
) -> Result<Cleaned, StoreError> {
    let error = |operation, err: &dyn std::error::Error| StoreError {
        operation,
        key: prefix.to_owned(),
        message: DisplayErrorContext(err).to_string(),
    };
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    let mut cleaned = Cleaned::default();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| error("list objects under", &err))?;
        let old: Vec<ObjectIdentifier> = page
            .contents()
            .iter()
            .filter(|o| {
                o.last_modified()
                    .is_some_and(|at| written_before(at, removed_at_epoch_s))
            })
            .filter_map(|o| {
                ObjectIdentifier::builder()
                    .key(o.key()?)
                    .set_e_tag(o.e_tag().map(str::to_owned))
                    .build()
                    .ok()
            })
            .collect();
        for chunk in old.chunks(DELETE_OBJECTS_LIMIT) {
            let delete = Delete::builder()
                .set_objects(Some(chunk.to_vec()))
                .quiet(true)
                .build()
                .map_err(|err| error("delete objects under", &err))?;
            let output = s3
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|err| error("delete objects under", &err))?;
            // DeleteObjects answers 200 even when single keys fail; those are in `Errors`.
            let (rewritten, failed): (Vec<_>, Vec<_>) = output
                .errors()
                .iter()
                .partition(|e| e.code() == Some("PreconditionFailed"));
            if let Some(first) = failed.first() {
                return Err(StoreError {
                    operation: "delete objects under",
                    key: prefix.to_owned(),
                    message: format!(
                        "{} of {} keys failed, first {:?}: {} {}",
                        failed.len(),
                        chunk.len(),
                        first.key().unwrap_or_default(),
                        first.code().unwrap_or("unknown error"),
                        first.message().unwrap_or_default()
                    ),
                });
            }
            cleaned.rewritten += rewritten.len();
            cleaned.deleted += chunk.len() - rewritten.len();
        }
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_sdk_s3::operation::delete_objects::DeleteObjectsOutput;
    use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
    use aws_sdk_s3::types::{Error as KeyError, Object};
    use aws_sdk_s3::Client;
    use aws_smithy_mocks::mock;

    use super::*;
    use crate::replay::scripted::s3_client_with;

    const REMOVED_AT: i64 = 1_764_000_100;

    type KeyAndETag = (String, Option<String>);

    fn object(key: &str, at: DateTime) -> Object {
        Object::builder()
            .key(key)
            .e_tag(format!("\"etag-of-{key}\""))
            .last_modified(at)
            .build()
    }

    #[test]
    fn only_whole_seconds_strictly_before_the_remove_count_as_older() {
        let removed = REMOVED_AT as f64;
        assert!(written_before(
            &DateTime::from_secs(REMOVED_AT - 1),
            removed
        ));
        // The REMOVE's own second, before or after it: kept.
        assert!(!written_before(&DateTime::from_secs(REMOVED_AT), removed));
        assert!(!written_before(
            &DateTime::from_secs_and_nanos(REMOVED_AT, 999_000_000),
            removed
        ));
        // A REMOVE time with a fraction (an emulator's) is floored: still its own second.
        assert!(!written_before(
            &DateTime::from_secs_and_nanos(REMOVED_AT, 100_000_000),
            removed + 0.7
        ));
        assert!(written_before(
            &DateTime::from_secs_and_nanos(REMOVED_AT - 1, 999_000_000),
            removed + 0.7
        ));
    }

    #[tokio::test]
    async fn deletes_the_objects_older_than_the_remove_and_keeps_the_rest() {
        let list = mock!(Client::list_objects_v2)
            .match_requests(|r| r.bucket() == Some("mirror") && r.prefix() == Some("cy/"))
            .then_output(|| {
                ListObjectsV2Output::builder()
                    .contents(object(
                        "cy/avatar.png",
                        DateTime::from_secs(REMOVED_AT - 600),
                    ))
                    .contents(object("cy/notes.txt", DateTime::from_secs(REMOVED_AT - 1)))
                    .contents(object("cy/same-second", DateTime::from_secs(REMOVED_AT)))
                    .contents(object("cy/userdata", DateTime::from_secs(REMOVED_AT + 5)))
                    .key_count(4)
                    .is_truncated(false)
                    .build()
            });
        // The keys each DeleteObjects names, with the ETag it is conditional on.
        let asked: Arc<Mutex<Vec<KeyAndETag>>> = Arc::default();
        let seen = asked.clone();
        let delete = mock!(Client::delete_objects)
            .match_requests(move |r| {
                let objects = r.delete().map(|d| d.objects()).unwrap_or_default();
                seen.lock().unwrap().extend(
                    objects
                        .iter()
                        .map(|o| (o.key().to_owned(), o.e_tag().map(str::to_owned))),
                );
                r.bucket() == Some("mirror")
            })
            .then_output(|| DeleteObjectsOutput::builder().build());
        let s3 = s3_client_with(vec![list, delete]);

        let cleaned = delete_written_before(&s3, "mirror", "cy/", REMOVED_AT as f64)
            .await
            .unwrap();

        assert_eq!(
            cleaned,
            Cleaned {
                deleted: 2,
                rewritten: 0
            }
        );
        assert_eq!(
            *asked.lock().unwrap(),
            [
                (
                    "cy/avatar.png".to_owned(),
                    Some("\"etag-of-cy/avatar.png\"".to_owned())
                ),
                (
                    "cy/notes.txt".to_owned(),
                    Some("\"etag-of-cy/notes.txt\"".to_owned())
                ),
            ]
        );
    }

    #[tokio::test]
    async fn an_object_rewritten_since_the_listing_is_kept_and_other_failures_fail() {
        let list = || {
            mock!(Client::list_objects_v2).then_output(|| {
                ListObjectsV2Output::builder()
                    .contents(object("cy/a", DateTime::from_secs(REMOVED_AT - 9)))
                    .contents(object("cy/b", DateTime::from_secs(REMOVED_AT - 9)))
                    .key_count(2)
                    .is_truncated(false)
                    .build()
            })
        };
        let key_error = |key: &str, code: &str| {
            KeyError::builder()
                .key(key)
                .code(code)
                .message("no")
                .build()
        };
        let rewritten = mock!(Client::delete_objects).then_output(move || {
            DeleteObjectsOutput::builder()
                .errors(key_error("cy/b", "PreconditionFailed"))
                .build()
        });
        let s3 = s3_client_with(vec![list(), rewritten]);
        let cleaned = delete_written_before(&s3, "mirror", "cy/", REMOVED_AT as f64)
            .await
            .unwrap();
        assert_eq!(
            cleaned,
            Cleaned {
                deleted: 1,
                rewritten: 1
            }
        );

        let denied = mock!(Client::delete_objects).then_output(move || {
            DeleteObjectsOutput::builder()
                .errors(key_error("cy/a", "AccessDenied"))
                .build()
        });
        let s3 = s3_client_with(vec![list(), denied]);
        let err = delete_written_before(&s3, "mirror", "cy/", REMOVED_AT as f64)
            .await
            .unwrap_err();
        assert_eq!(err.key, "cy/");
        assert!(err.message.contains("AccessDenied"), "{err}");
    }
}
