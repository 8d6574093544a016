//! The function's metrics contract: the CloudWatch namespace, dimension and metric names of the
//! Embedded Metric Format record each batch writes. The template's alarms and dashboard and
//! `status` read the same names from here.

/// The CloudWatch namespace of the function's metrics.
pub const NAMESPACE: &str = "usersync";

/// The one dimension, whose value is the function's name.
pub const DIMENSION: &str = "FunctionName";

/// Metric names, each a root member of the EMF record.
pub mod metric {
    /// Stream records in the batch.
    pub const RECORDS: &str = "Records";
    /// Objects written.
    pub const PUTS: &str = "Puts";
    /// Deletions (single objects and prefixes).
    pub const DELETES: &str = "Deletes";
    /// Records folded into a later record of the same user.
    pub const COALESCED: &str = "Coalesced";
    /// Records that can never succeed, logged and dropped.
    pub const SKIPPED: &str = "Skipped";
    /// Users reported back for retry.
    pub const FAILED_USERS: &str = "FailedUsers";
    /// The largest `now − ApproximateCreationDateTime` in the batch, in milliseconds: how far
    /// the mirror trails the table.
    pub const LAG_MS: &str = "LagMs";

    /// Every metric, in the order the record lists them.
    pub const ALL: [&str; 7] = [
        RECORDS,
        PUTS,
        DELETES,
        COALESCED,
        SKIPPED,
        FAILED_USERS,
        LAG_MS,
    ];
}
