//! Writing users into a table with `BatchWriteItem`, as the end-to-end and reconcile sections
//! load their tables: every item of a batch written, what DynamoDB hands back unprocessed
//! retried after a backoff.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};

use super::BenchError;
use deployer::stack::aws_error;

/// The most items one `BatchWriteItem` request may carry.
pub const BATCH_WRITE_ITEMS: usize = 25;

/// Puts `items` (at most [`BATCH_WRITE_ITEMS`]) into `table`, retrying unprocessed items.
pub async fn batch_put(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    items: impl IntoIterator<Item = HashMap<String, AttributeValue>>,
) -> Result<(), BenchError> {
    let mut pending: Vec<WriteRequest> = items
        .into_iter()
        .map(|item| {
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .expect("the item is set");
            WriteRequest::builder().put_request(put).build()
        })
        .collect();
    let mut attempt = 0;
    while !pending.is_empty() {
        if attempt > 0 {
            // DynamoDB hands back what it could not take now; it asks for a backoff first.
            tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
        }
        attempt += 1;
        let answer = dynamodb
            .batch_write_item()
            .request_items(table, pending)
            .send()
            .await
            .map_err(|err| aws_error("write users with BatchWriteItem", err))?;
        pending = answer
            .unprocessed_items()
            .and_then(|items| items.get(table))
            .cloned()
            .unwrap_or_default();
    }
    Ok(())
}
