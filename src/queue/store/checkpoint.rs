//! What the engine records to resume a transfer.

use serde::{Deserialize, Serialize};

/// What the engine needs to resume a transfer: how many bytes of the `.part` are known
/// good (fsynced before this was written), and the validators they were fetched under.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub offset: u64,
    pub total: Option<u64>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Time spent downloading up to this checkpoint, across runs.
    pub elapsed_secs: f64,
    /// Parallel connections: `[start, written up to, end]` of every segment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<[u64; 3]>,
    /// Set only in the checkpoint written just before the final rename: the inode and
    /// modification time (ns) of the verified `.part`, which the file keeps when renamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renaming: Option<[u64; 2]>,
    /// The URL the bytes were fetched from: after a URL swap they are kept only when
    /// the new one proves to serve the same file. `None` in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Checkpoint {
    /// The bytes it vouches for: the offset on one connection, the sum of what every
    /// segment wrote on several.
    pub fn bytes_done(&self) -> u64 {
        if self.segments.is_empty() {
            return self.offset;
        }
        self.segments
            .iter()
            .map(|[start, pos, end]| (*pos).min(*end).saturating_sub(*start))
            .sum()
    }

    /// The bytes from the start of the file that are all on disk (fsynced before this
    /// checkpoint was written): the offset on one connection; on several, up to the
    /// first segment that has not reached its end. What a reader of the growing
    /// `.part` may trust.
    pub fn contiguous_prefix(&self) -> u64 {
        if self.segments.is_empty() {
            return self.offset;
        }
        let mut segments = self.segments.clone();
        segments.sort_unstable_by_key(|s| s[0]);
        let mut prefix = 0;
        for [start, pos, end] in segments {
            if start > prefix {
                break;
            }
            let reached = pos.min(end);
            prefix = prefix.max(reached);
            if reached < end {
                break;
            }
        }
        prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_vouches_for_its_offset_or_its_segments() {
        let one = Checkpoint {
            offset: 1234,
            ..Default::default()
        };
        assert_eq!(one.bytes_done(), 1234);
        // Segments written from their start up to pos (an over-long pos counts to end);
        // the offset is the prefix from before the switch and is not the answer.
        let many = Checkpoint {
            offset: 100,
            segments: vec![
                [0, 100, 100],
                [100, 150, 200],
                [200, 260, 250],
                [250, 250, 300],
            ],
            ..Default::default()
        };
        assert_eq!(many.bytes_done(), 100 + 50 + 50);
    }

    #[test]
    fn the_contiguous_prefix_stops_at_the_first_unfinished_segment() {
        let many = Checkpoint {
            segments: vec![[100, 150, 200], [0, 100, 100], [200, 260, 250]],
            ..Default::default()
        };
        assert_eq!(many.contiguous_prefix(), 150);
        let first_open = Checkpoint {
            segments: vec![[0, 10, 100], [100, 200, 200]],
            ..Default::default()
        };
        assert_eq!(first_open.contiguous_prefix(), 10);
        let one = Checkpoint {
            offset: 77,
            ..Default::default()
        };
        assert_eq!(one.contiguous_prefix(), 77);
    }
}
