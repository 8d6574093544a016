//! What a running reconcile tells its caller after each step, for a progress bar or a few
//! log lines.

/// Where the reconcile is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Scanning the table and listing the bucket, side by side.
    #[default]
    Reading,
    /// Walking the index: judging users, reading bodies the ETags did not settle, repairing.
    Comparing,
    Done,
}

/// The counts so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileProgress {
    pub phase: Phase,
    /// Items scanned (this share's segments), from the checkpoint on when resumed.
    pub items_scanned: u64,
    pub objects_listed: u64,
    /// DescribeTable's `ItemCount` for the segments this run scans: only an estimate (DynamoDB
    /// updates it about every six hours), for a rate's ETA.
    pub expected_items: Option<u64>,
    /// Scan segments finished, of `segments`.
    pub segments_done: u32,
    pub segments: u32,
    pub listing_done: bool,
    /// Groups of keys (users, mostly) judged.
    pub judged: u64,
    pub repaired: u64,
    pub failed: u64,
    /// A line worth printing once: a resumed checkpoint, the bucket's encryption not readable.
    pub note: Option<String>,
}
