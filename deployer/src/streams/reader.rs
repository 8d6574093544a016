//! Reading one shard of a DynamoDB stream: one iterator, renewed when it expires, converted
//! records out.

use aws_sdk_dynamodbstreams::error::DisplayErrorContext;
use aws_sdk_dynamodbstreams::operation::get_records::GetRecordsError;
use aws_sdk_dynamodbstreams::operation::get_shard_iterator::GetShardIteratorError;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;

use super::record::StreamEventRecord;

/// `GetRecords` returns at most this many records a call.
pub const MAX_RECORDS_PER_READ: usize = 1000;

/// Why a shard could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream (or the table) no longer exists; nothing more will come from it.
    #[error("the stream {stream_arn} no longer exists: {message}")]
    StreamGone { stream_arn: String, message: String },
    /// A failure worth retrying (throttling, a network error, an emulator restarting).
    #[error("failed to read shard {shard_id}: {message}")]
    Transient { shard_id: String, message: String },
}

/// Where to (re)start reading a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadPosition {
    TrimHorizon,
    Latest,
    /// At this record, included.
    At(String),
    /// Just after this record.
    After(String),
}

/// A cursor over one shard.
pub struct ShardReader {
    client: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    shard_id: String,
    /// Where a new iterator starts: the initial position until a record has been read, then
    /// just after the last record read.
    position: ReadPosition,
    iterator: Option<String>,
    /// The shard is closed and every record in it has been read.
    finished: bool,
}

impl ShardReader {
    pub fn new(
        client: aws_sdk_dynamodbstreams::Client,
        stream_arn: &str,
        shard_id: &str,
        start: ReadPosition,
    ) -> Self {
        Self {
            client,
            stream_arn: stream_arn.to_owned(),
            shard_id: shard_id.to_owned(),
            position: start,
            iterator: None,
            finished: false,
        }
    }

    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// The shard is closed and has no more records.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Takes the shard's iterator now, if the reader has none yet, rather than at the first read.
    ///
    /// This fixes where a [`ReadPosition::Latest`] reader starts: LATEST means "just after the
    /// most recent stream record in the shard" when the iterator is handed out
    /// (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_streams_GetShardIterator.html),
    /// so every record written after this call is read. The iterator expires 15 minutes after it
    /// was handed out (same page): read within that time, or the reader takes a new one at its
    /// position, which for a reader still at LATEST is a later point.
    pub async fn open(&mut self) -> Result<(), ReadError> {
        if self.iterator.is_none() && !self.finished {
            self.iterator = Some(self.new_iterator().await?);
        }
        Ok(())
    }

    /// Reads the next records, at most `limit` (capped at [`MAX_RECORDS_PER_READ`]). An empty
    /// answer means nothing new yet, or, once [`is_finished`](Self::is_finished), nothing ever.
    pub async fn read(&mut self, limit: usize) -> Result<Vec<StreamEventRecord>, ReadError> {
        if self.finished {
            return Ok(Vec::new());
        }
        let iterator = match self.iterator.take() {
            Some(iterator) => iterator,
            None => self.new_iterator().await?,
        };
        let limit = i32::try_from(limit.clamp(1, MAX_RECORDS_PER_READ)).unwrap_or(1000);
        let output = match self
            .client
            .get_records()
            .shard_iterator(&iterator)
            .limit(limit)
            .send()
            .await
        {
            Ok(output) => output,
            Err(err) => {
                let message = DisplayErrorContext(&err).to_string();
                // Throttling, a service fault or a request that never got an answer leave the
                // iterator valid: keep it. A new one would start at the reader's position,
                // which for a reader still at LATEST is past whatever was written meanwhile.
                let iterator_still_valid = err.as_service_error().is_none_or(|e| {
                    e.is_limit_exceeded_exception() || e.is_internal_server_error()
                });
                if iterator_still_valid {
                    self.iterator = Some(iterator);
                }
                return match err.into_service_error() {
                    // Iterators live 15 minutes; a new one continues after the last record.
                    GetRecordsError::ExpiredIteratorException(_) => Ok(Vec::new()),
                    // The records after our position aged out of the stream (24 hours): go on
                    // from the oldest that is left.
                    GetRecordsError::TrimmedDataAccessException(_) => {
                        tracing::warn!(shard = %self.shard_id, "records were trimmed from the stream before they were read; continuing from the oldest record left");
                        self.position = ReadPosition::TrimHorizon;
                        Ok(Vec::new())
                    }
                    GetRecordsError::ResourceNotFoundException(_) => Err(ReadError::StreamGone {
                        stream_arn: self.stream_arn.clone(),
                        message,
                    }),
                    _ => Err(ReadError::Transient {
                        shard_id: self.shard_id.clone(),
                        message,
                    }),
                };
            }
        };

        let mut records = Vec::with_capacity(output.records().len());
        for record in output.records() {
            match StreamEventRecord::from_stream(record, &self.stream_arn) {
                Ok(record) => records.push(record),
                // Cannot be checkpointed or retried from; no stream API returns one.
                Err(err) => {
                    tracing::error!(shard = %self.shard_id, error = %err, "skipping a stream record")
                }
            }
        }
        if let Some(last) = records.last() {
            self.position = ReadPosition::After(last.sequence_number.clone());
        }
        match output.next_shard_iterator() {
            Some(next) => self.iterator = Some(next.to_owned()),
            None => self.finished = true,
        }
        Ok(records)
    }

    /// An iterator at the current position; a position older than the stream's retention
    /// becomes the oldest record left (what was before it can no longer be read by anyone).
    async fn new_iterator(&mut self) -> Result<String, ReadError> {
        match self.request_iterator().await {
            Err(IteratorError::Trimmed(_)) if self.position != ReadPosition::TrimHorizon => {
                tracing::warn!(shard = %self.shard_id, "the position was trimmed from the stream; continuing from the oldest record left");
                self.position = ReadPosition::TrimHorizon;
                self.request_iterator()
                    .await
                    .map_err(|err| err.into_read_error(self))
            }
            result => result.map_err(|err| err.into_read_error(self)),
        }
    }

    async fn request_iterator(&self) -> Result<String, IteratorError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(&self.shard_id);
        let request = match &self.position {
            ReadPosition::TrimHorizon => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            ReadPosition::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            ReadPosition::At(sequence) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(sequence),
            ReadPosition::After(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence),
        };
        match request.send().await {
            Ok(output) => output.shard_iterator.ok_or_else(|| {
                IteratorError::Other("GetShardIterator returned no iterator".into())
            }),
            Err(err) => {
                let message = DisplayErrorContext(&err).to_string();
                Err(match err.into_service_error() {
                    GetShardIteratorError::TrimmedDataAccessException(_) => {
                        IteratorError::Trimmed(message)
                    }
                    GetShardIteratorError::ResourceNotFoundException(_) => {
                        IteratorError::Gone(message)
                    }
                    _ => IteratorError::Other(message),
                })
            }
        }
    }
}

/// Why no iterator was handed out.
enum IteratorError {
    /// The position is older than the stream's retention.
    Trimmed(String),
    /// The stream or shard no longer exists.
    Gone(String),
    Other(String),
}

impl IteratorError {
    fn into_read_error(self, reader: &ShardReader) -> ReadError {
        match self {
            IteratorError::Gone(message) => ReadError::StreamGone {
                stream_arn: reader.stream_arn.clone(),
                message,
            },
            IteratorError::Trimmed(message) | IteratorError::Other(message) => {
                ReadError::Transient {
                    shard_id: reader.shard_id.clone(),
                    message,
                }
            }
        }
    }
}
