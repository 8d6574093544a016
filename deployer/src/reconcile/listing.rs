//! Listing the bucket into the index: every key under `KEY_PREFIX`, a page at a time, each
//! page committed with the key it ends at, from which the next request (and a resumed run)
//! continues with `StartAfter`.

use futures::stream::BoxStream;
use futures::StreamExt;

use super::bucket::BucketReader;
use super::index::{Index, ListingState};
use super::run::ReconcileError;

/// A page committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedPage {
    pub objects: u64,
    pub done: bool,
}

/// Lists every key under `prefix` from the listing's checkpoint; yields each page once
/// committed.
pub fn list_bucket<'a, B: BucketReader>(
    bucket: &'a B,
    index: &'a Index,
    prefix: &'a str,
) -> BoxStream<'a, Result<ListedPage, ReconcileError>> {
    futures::stream::try_unfold(None, move |state: Option<ListingState>| async move {
        let mut state = match state {
            Some(state) => state,
            None => index.listing()?,
        };
        if state.done {
            return Ok(None);
        }
        let page = bucket.list_page(prefix, state.after.as_deref()).await?;
        let objects = page.objects.len() as u64;
        state.listed += objects;
        match page.objects.last() {
            Some(last) => state.after = Some(last.key.clone()),
            // An empty page cannot move the checkpoint on: nothing more to list.
            None => state.done = true,
        }
        state.done |= !page.truncated;
        index.commit_listing_page(&page.objects, &state)?;
        let listed = ListedPage {
            objects,
            done: state.done,
        };
        Ok(Some((listed, Some(state))))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::reconcile::bucket::S3Bucket;
    use crate::reconcile::index::Parameters;
    use aws_sdk_s3::operation::list_objects_v2::{ListObjectsV2Input, ListObjectsV2Output};
    use aws_sdk_s3::types::Object;
    use aws_sdk_s3::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    /// A bucket of `keys` under `u/`, two keys a page, answering StartAfter.
    fn bucket(
        keys: &'static [&'static str],
        seen: &Arc<Mutex<Vec<ListObjectsV2Input>>>,
    ) -> S3Bucket {
        let seen = Arc::clone(seen);
        let list = mock!(Client::list_objects_v2)
            .match_requests(move |input| {
                seen.lock().unwrap().push(input.clone());
                true
            })
            .then_compute_output(move |input| {
                let after = input.start_after().unwrap_or("");
                let rest: Vec<&str> = keys.iter().copied().filter(|k| *k > after).collect();
                let page = &rest[..rest.len().min(2)];
                ListObjectsV2Output::builder()
                    .set_contents(Some(
                        page.iter()
                            .map(|k| Object::builder().key(*k).e_tag("\"e\"").size(1).build())
                            .collect(),
                    ))
                    .is_truncated(rest.len() > 2)
                    .build()
            });
        S3Bucket::new(
            mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[&list]),
            "data",
        )
    }

    #[tokio::test]
    async fn lists_under_the_prefix_and_resumes_after_the_last_key_committed() {
        let dir = tempfile::tempdir().unwrap();
        let parameters = Parameters {
            stack: "s".into(),
            table: "t".into(),
            bucket: "data".into(),
            key_prefix: "u/".into(),
            object_name: "userdata".into(),
            delete_scope: "object".into(),
            key_attribute: "name".into(),
            segments: 1,
            share: None,
        };
        let (index, _) = Index::open(dir.path(), &parameters, false).unwrap();
        let seen = Arc::default();
        let bucket = bucket(
            &[
                "u/a/userdata",
                "u/b/userdata",
                "u/c/userdata",
                "u/d/userdata",
                "u/e",
            ],
            &seen,
        );
        let first: Vec<ListedPage> = list_bucket(&bucket, &index, "u/")
            .take(1)
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(
            first,
            [ListedPage {
                objects: 2,
                done: false
            }]
        );
        let rest: Vec<ListedPage> = list_bucket(&bucket, &index, "u/")
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(
            rest,
            [
                ListedPage {
                    objects: 2,
                    done: false
                },
                ListedPage {
                    objects: 1,
                    done: true
                }
            ]
        );
        let requests: Vec<(Option<String>, Option<String>, Option<String>)> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.prefix().map(str::to_owned),
                    r.start_after().map(str::to_owned),
                    r.continuation_token().map(str::to_owned),
                )
            })
            .collect();
        let u = Some("u/".to_owned());
        assert_eq!(
            requests,
            [
                (u.clone(), None, None),
                (u.clone(), Some("u/b/userdata".to_owned()), None),
                (u, Some("u/d/userdata".to_owned()), None),
            ]
        );
        let state = index.listing().unwrap();
        assert_eq!((state.listed, state.done), (5, true));
        // Done: another pass asks for nothing.
        assert_eq!(list_bucket(&bucket, &index, "u/").count().await, 0);
        assert_eq!(seen.lock().unwrap().len(), 3);
    }
}
