//! Reading one failure-queue message's batch back from the stream: its shard from the batch's
//! first sequence number until its last one is passed (or the shard ends), through the empty
//! pages DynamoDB Streams may answer on the way, within a bound that fails the message rather
//! than guessing.

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use super::messages::BatchInfo;
use crate::streams::reader::{ReadError, ReadPosition, ShardReader, MAX_RECORDS_PER_READ};
use crate::streams::record::StreamEventRecord;
use crate::streams::sequence::compare_sequence_numbers;

/// How long a batch's read may go on before the message is failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ReadLimits {
    /// `GetRecords` calls for one batch.
    pub max_pages: u32,
    /// Time spent reading one batch.
    pub max_time: Duration,
    /// The pause after an empty page before asking again.
    pub empty_page_pause: Duration,
}

impl Default for ReadLimits {
    /// Generous: a batch is at most 10,000 records (ten full pages), so the bound is only met
    /// by a stream that keeps answering empty. The pause keeps one reader within DynamoDB
    /// Streams' five `GetRecords` calls a second per shard, so a run of empty pages takes about
    /// as long as the time limit allows.
    fn default() -> Self {
        Self {
            max_pages: 2_000,
            max_time: Duration::from_secs(300),
            empty_page_pause: Duration::from_millis(200),
        }
    }
}

/// The batch as the stream holds it now.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct BatchRecords {
    /// The batch's records still in the stream, in stream order.
    pub records: Vec<StreamEventRecord>,
    /// The batch's records the stream no longer holds (0 when all are there): older than its
    /// retention (trimmed), or the stream is gone.
    pub missing: u64,
}

impl BatchRecords {
    pub fn expired(&self) -> bool {
        self.missing > 0
    }
}

/// Why a batch could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BatchReadError {
    #[error("read {pages} page(s) of shard {shard_id} over {seconds} s without passing the batch's last sequence number {end}; the stream answers slowly: run the replay again")]
    Unfinished {
        shard_id: String,
        end: String,
        pages: u32,
        seconds: u64,
    },
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Reads the batch `info` names from its shard.
pub(super) async fn read_batch(
    streams: &aws_sdk_dynamodbstreams::Client,
    info: &BatchInfo,
    limits: ReadLimits,
) -> Result<BatchRecords, BatchReadError> {
    let (start, end) = (&info.start_sequence_number, &info.end_sequence_number);
    let mut reader = ShardReader::new(
        streams.clone(),
        &info.stream_arn,
        &info.shard_id,
        ReadPosition::At(start.clone()),
    );
    let began = Instant::now();
    let mut pages = 0;
    let mut records = Vec::new();
    // A closed shard read to its end holds nothing more of the batch.
    while !reader.is_finished() {
        if pages >= limits.max_pages || began.elapsed() >= limits.max_time {
            return Err(BatchReadError::Unfinished {
                shard_id: info.shard_id.clone(),
                end: end.clone(),
                pages,
                seconds: began.elapsed().as_secs(),
            });
        }
        let page = match reader.read(MAX_RECORDS_PER_READ).await {
            Ok(page) => page,
            // No stream, no records: the batch is as gone as if it had expired.
            Err(ReadError::StreamGone { .. }) => break,
            Err(err) => return Err(err.into()),
        };
        pages += 1;
        if page.is_empty() {
            tokio::time::sleep(limits.empty_page_pause).await;
            continue;
        }
        let mut passed_the_end = false;
        for record in page {
            // After records were trimmed the reader goes on from the oldest one left, which
            // may lie past the batch.
            if compare_sequence_numbers(&record.sequence_number, end) == Ordering::Greater {
                passed_the_end = true;
                break;
            }
            let at_end = compare_sequence_numbers(&record.sequence_number, end).is_eq();
            if compare_sequence_numbers(&record.sequence_number, start).is_ge() {
                records.push(record);
            }
            if at_end {
                passed_the_end = true;
                break;
            }
        }
        if passed_the_end {
            break;
        }
    }
    let missing = missing_records(info, &records);
    Ok(BatchRecords { records, missing })
}

/// How many of the batch's records `found` lacks: by the batch size when the message gives
/// one, and at least one when the found records do not begin at the batch's start and end at
/// its end (sequence numbers have gaps, so the ends are all that can be checked without it).
fn missing_records(info: &BatchInfo, found: &[StreamEventRecord]) -> u64 {
    let by_size = info
        .batch_size
        .map_or(0, |size| size.saturating_sub(found.len() as u64));
    let ends_match = found.first().is_some_and(|r| {
        compare_sequence_numbers(&r.sequence_number, &info.start_sequence_number).is_eq()
    }) && found.last().is_some_and(|r| {
        compare_sequence_numbers(&r.sequence_number, &info.end_sequence_number).is_eq()
    });
    if by_size == 0 && !ends_match {
        1
    } else {
        by_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::scripted::{record, Cloud, ScriptedShard, SHARD_ID, STREAM_ARN};
    use aws_sdk_dynamodbstreams::types::OperationType::{Insert, Modify};
    use usersync_function::testing::sequence_number;

    fn info(start: u64, end: u64, size: Option<u64>) -> BatchInfo {
        BatchInfo {
            shard_id: SHARD_ID.into(),
            start_sequence_number: sequence_number(start),
            end_sequence_number: sequence_number(end),
            batch_size: size,
            stream_arn: STREAM_ARN.into(),
            condition: None,
        }
    }

    fn quick(max_pages: u32) -> ReadLimits {
        ReadLimits {
            max_pages,
            max_time: Duration::from_secs(60),
            empty_page_pause: Duration::ZERO,
        }
    }

    fn sequences(read: &BatchRecords) -> Vec<String> {
        read.records
            .iter()
            .map(|r| r.sequence_number.clone())
            .collect()
    }

    #[tokio::test]
    async fn reads_through_many_empty_pages_to_the_batch_s_end() {
        let cloud = Cloud::default();
        let mut pages = vec![vec![record(Insert, "a", Some(1), 10, 1)]];
        pages.extend((0..50).map(|_| Vec::new()));
        pages.push(vec![
            record(Modify, "b", Some(1), 12, 2),
            record(Modify, "c", Some(1), 13, 2),
        ]);
        cloud.set_shard(ScriptedShard {
            pages,
            ..ScriptedShard::default()
        });
        let read = read_batch(&cloud.streams(), &info(10, 12, Some(2)), quick(100))
            .await
            .unwrap();
        assert_eq!(sequences(&read), [sequence_number(10), sequence_number(12)]);
        assert!(!read.expired());
        assert_eq!(cloud.get_records_calls(), 52, "stops at the batch's end");
    }

    #[tokio::test]
    async fn an_open_shard_that_stays_empty_fails_the_read_at_the_bound() {
        let cloud = Cloud::default();
        let mut pages = vec![vec![record(Insert, "a", Some(1), 10, 1)]];
        pages.extend((0..50).map(|_| Vec::new()));
        cloud.set_shard(ScriptedShard {
            pages,
            ..ScriptedShard::default()
        });
        let err = read_batch(&cloud.streams(), &info(10, 11, Some(2)), quick(20))
            .await
            .unwrap_err();
        assert!(
            matches!(err, BatchReadError::Unfinished { pages: 20, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&sequence_number(11)), "{err}");
    }

    #[tokio::test]
    async fn records_trimmed_from_the_stream_are_missing() {
        let cloud = Cloud::default();
        cloud.set_shard(ScriptedShard {
            pages: vec![
                vec![record(Insert, "a", Some(1), 10, 1)],
                vec![record(Insert, "b", Some(1), 11, 1)],
                vec![record(Insert, "c", Some(1), 12, 1)],
            ],
            // 10 is older than the stream's retention.
            trim_horizon: 1,
            ..ScriptedShard::default()
        });
        let read = read_batch(&cloud.streams(), &info(10, 11, Some(2)), quick(10))
            .await
            .unwrap();
        assert_eq!(sequences(&read), [sequence_number(11)]);
        assert_eq!(read.missing, 1);

        // Wholly trimmed: the oldest record left is past the batch.
        cloud.set_shard(ScriptedShard {
            pages: vec![
                vec![record(Insert, "a", Some(1), 10, 1)],
                vec![record(Insert, "c", Some(1), 12, 1)],
            ],
            trim_horizon: 1,
            ..ScriptedShard::default()
        });
        let read = read_batch(&cloud.streams(), &info(10, 11, None), quick(10))
            .await
            .unwrap();
        assert!(read.records.is_empty());
        assert_eq!(read.missing, 1, "without a batch size the ends tell");
    }

    #[tokio::test]
    async fn a_closed_shard_ends_the_read() {
        let cloud = Cloud::default();
        cloud.set_shard(ScriptedShard {
            pages: vec![vec![record(Insert, "a", Some(1), 10, 1)], Vec::new()],
            closed: true,
            ..ScriptedShard::default()
        });
        let read = read_batch(&cloud.streams(), &info(10, 14, Some(3)), quick(10))
            .await
            .unwrap();
        assert_eq!(read.missing, 2);
        assert_eq!(cloud.get_records_calls(), 2);
    }
}
