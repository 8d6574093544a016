//! Reading DynamoDB Streams, shared by the local mapping and `replay-failures`: the shard
//! listing, the shard reader, a stream record in the shape Lambda delivers it, and the record
//! an event source mapping sends to its on-failure destination.

pub mod failure_record;
pub mod reader;
pub mod record;
pub mod sequence;
pub mod shards;
