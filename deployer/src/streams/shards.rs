//! The shards of a DynamoDB stream, as `DescribeStream` lists them.

use aws_sdk_dynamodbstreams::error::DisplayErrorContext;

use super::reader::ReadError;

/// A shard as `DescribeStream` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardListing {
    pub shard_id: String,
    pub parent_shard_id: Option<String>,
    /// The shard has an ending sequence number: it takes no new records.
    pub closed: bool,
}

/// Lists every shard of the stream (`DescribeStream`, page by page).
pub async fn describe_shards(
    client: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
) -> Result<Vec<ShardListing>, ReadError> {
    let mut shards = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let output = client
            .describe_stream()
            .stream_arn(stream_arn)
            .set_exclusive_start_shard_id(start.take())
            .send()
            .await
            .map_err(|err| {
                let message = DisplayErrorContext(&err).to_string();
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception())
                {
                    ReadError::StreamGone {
                        stream_arn: stream_arn.to_owned(),
                        message,
                    }
                } else {
                    ReadError::Transient {
                        shard_id: "(listing)".into(),
                        message: format!("failed to describe the stream {stream_arn}: {message}"),
                    }
                }
            })?;
        let Some(description) = output.stream_description() else {
            break;
        };
        for shard in description.shards() {
            let Some(shard_id) = shard.shard_id() else {
                continue;
            };
            shards.push(ShardListing {
                shard_id: shard_id.to_owned(),
                parent_shard_id: shard.parent_shard_id().map(str::to_owned),
                closed: shard
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_some(),
            });
        }
        match description.last_evaluated_shard_id() {
            Some(last) => start = Some(last.to_owned()),
            None => break,
        }
    }
    Ok(shards)
}
