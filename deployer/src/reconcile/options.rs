//! What a reconcile is asked to do: compare only or repair, how the table is split, where its
//! checkpoint lives.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::share::Share;
use super::user::RepairHook;

/// Scan segments when none are asked for: four requests in flight keep a small table quick and
/// a large one within its read capacity.
pub const DEFAULT_SEGMENTS: u32 = 4;

/// Users compared at once (object reads, consistent reads), and writes in flight while
/// repairing.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// DynamoDB's own limit on `TotalSegments`.
pub const MAX_SEGMENTS: u32 = 1_000_000;

/// How to reconcile.
#[derive(Clone)]
pub struct ReconcileOptions {
    /// Fix every missing, stale and orphaned object (never a foreign key).
    pub repair: bool,
    /// `TotalSegments` of the parallel scan.
    pub segments: u32,
    /// Only this share of the work; `None` does it all.
    pub share: Option<Share>,
    /// Where the checkpoint lives; `None`: `target/usersync/reconcile/<stack>/`.
    pub state_dir: Option<PathBuf>,
    /// Start afresh even when an interrupted run left a checkpoint.
    pub restart: bool,
    /// Users compared at once, and writes in flight while repairing.
    pub concurrency: usize,
    /// Runs between each repair's read and its write (tests inject concurrent writes here).
    pub hook: Option<Arc<dyn RepairHook>>,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        Self {
            repair: false,
            segments: DEFAULT_SEGMENTS,
            share: None,
            state_dir: None,
            restart: false,
            concurrency: DEFAULT_CONCURRENCY,
            hook: None,
        }
    }
}

impl fmt::Debug for ReconcileOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconcileOptions")
            .field("repair", &self.repair)
            .field("segments", &self.segments)
            .field("share", &self.share)
            .field("state_dir", &self.state_dir)
            .field("restart", &self.restart)
            .field("concurrency", &self.concurrency)
            .field("hook", &self.hook.as_ref().map(|_| "set"))
            .finish()
    }
}

impl ReconcileOptions {
    /// Why these options cannot run, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if self.segments == 0 || self.segments > MAX_SEGMENTS {
            return Some(format!(
                "--segments {} is out of range: expected 1 to {MAX_SEGMENTS}",
                self.segments
            ));
        }
        if let Some(share) = self.share {
            if share.count == 0 || share.index >= share.count {
                return Some(format!(
                    "--share {share} is not a share: expected I/N with I < N"
                ));
            }
            if share.count > self.segments {
                return Some(format!(
                    "--share {share} splits the work {} ways but the scan has only {} segments: \
                     pass --segments {} or more",
                    share.count, self.segments, share.count
                ));
            }
        }
        if self.concurrency == 0 {
            return Some("the concurrency must be at least 1".to_owned());
        }
        None
    }

    /// The scan segments this run reads.
    pub fn own_segments(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.segments).filter(|segment| self.share.is_none_or(|s| s.scans_segment(*segment)))
    }

    /// Whether this run judges a listed key owned by `text` (see [`Share::judges`]).
    pub fn judges(&self, text: &str) -> bool {
        self.share.is_none_or(|share| share.judges(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_takes_every_nth_segment_and_needs_enough_of_them() {
        let options = ReconcileOptions {
            segments: 5,
            share: Some(Share { index: 1, count: 2 }),
            ..ReconcileOptions::default()
        };
        assert_eq!(options.own_segments().collect::<Vec<_>>(), [1, 3]);
        assert!(options.problem().is_none());
        let too_few = ReconcileOptions {
            segments: 2,
            share: Some(Share { index: 0, count: 3 }),
            ..ReconcileOptions::default()
        };
        assert!(too_few.problem().unwrap().contains("--segments 3"));
        let zero = ReconcileOptions {
            segments: 0,
            ..ReconcileOptions::default()
        };
        assert!(zero.problem().is_some());
    }
}
