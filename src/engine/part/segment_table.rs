//! Which bytes of a segmented file are done: the file cut into segments, each written
//! by one connection at a time, handed out in file order and split when a connection
//! runs out of work. The atomics let connections move their own segment without a lock;
//! the table's lock is taken only to hand out, split, snapshot or sum segments (never
//! per chunk).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A steal leaves at least this much to the victim and takes at least as much: far more
/// than one write block, so a victim can never have written past the new end.
const MIN_PIECE: u64 = 1024 * 1024;

/// The size of the pieces handed out in file order. In order, so that the written
/// prefix grows steadily and the digest can follow it during the transfer instead of
/// reading the whole file back at the end.
fn piece_size(total: u64) -> u64 {
    (total / 256).clamp(4 * MIN_PIECE, 64 * MIN_PIECE)
}

/// One range of the file: `[start, end)`, written up to `pos`.
#[derive(Debug)]
pub struct Segment {
    start: u64,
    pos: AtomicU64,
    end: AtomicU64,
    /// Held by one connection at a time: two writers would race on `pos`.
    owned: AtomicBool,
}

impl Segment {
    fn new(start: u64, pos: u64, end: u64) -> Arc<Segment> {
        Arc::new(Segment {
            start,
            pos: AtomicU64::new(pos),
            end: AtomicU64::new(end),
            owned: AtomicBool::new(false),
        })
    }

    /// The first byte of the segment (it never moves: a steal shrinks the end).
    pub(in crate::engine) fn start(&self) -> u64 {
        self.start
    }

    /// The next byte to write.
    pub(in crate::engine) fn pos(&self) -> u64 {
        self.pos.load(Ordering::SeqCst)
    }

    /// One past the last byte; lowered when another connection steals the upper half.
    pub(in crate::engine) fn end(&self) -> u64 {
        self.end.load(Ordering::SeqCst)
    }

    pub(in crate::engine) fn left(&self) -> u64 {
        self.end().saturating_sub(self.pos())
    }

    /// Records that bytes up to `pos` are written. Only the segment's owner calls it:
    /// a second writer would race on `pos`.
    pub(in crate::engine) fn written_to(&self, pos: u64) {
        self.pos.store(pos, Ordering::SeqCst);
    }

    /// Gives the segment up: another connection (or attempt) may take it.
    pub(in crate::engine) fn release(&self) {
        self.owned.store(false, Ordering::SeqCst);
    }
}

/// Every segment of the file.
#[derive(Debug, Default)]
pub struct SegmentTable {
    segs: Mutex<Vec<Arc<Segment>>>,
    piece: u64,
}

impl SegmentTable {
    /// `[from, total)` to fetch; `[0, from)` is already written.
    pub fn whole(from: u64, total: u64) -> SegmentTable {
        let mut segs = vec![Segment::new(from, from, total)];
        if from > 0 {
            segs.push(Segment::new(0, from, from));
        }
        SegmentTable {
            segs: Mutex::new(segs),
            piece: piece_size(total),
        }
    }

    /// From a checkpoint's `[start, pos, end]` triples.
    pub fn from_checkpoint(triples: &[[u64; 3]]) -> SegmentTable {
        let total = triples.iter().map(|t| t[2]).max().unwrap_or(0);
        SegmentTable {
            segs: Mutex::new(
                triples
                    .iter()
                    .map(|&[s, p, e]| Segment::new(s, p.min(e), e))
                    .collect(),
            ),
            piece: piece_size(total),
        }
    }

    /// After an attempt's connections are gone: a segment that a dropped connection
    /// held is free again for the next attempt (else only steals could reach it, and
    /// never its last piece).
    pub(in crate::engine) fn release_all(&self) {
        for seg in self.lock().iter() {
            seg.release();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Segment>>> {
        match self.segs.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// `[start, pos, end]` of every segment, for a checkpoint (read before the fsync),
    /// with runs of finished neighbours merged into one.
    pub fn snapshot(&self) -> Vec<[u64; 3]> {
        let mut triples: Vec<[u64; 3]> = self
            .lock()
            .iter()
            .map(|s| {
                let end = s.end();
                [s.start, s.pos().min(end), end]
            })
            .collect();
        triples.sort_unstable();
        let mut merged: Vec<[u64; 3]> = Vec::with_capacity(triples.len());
        for t in triples {
            match merged.last_mut() {
                Some(last) if last[1] == last[2] && t[1] == t[2] && last[2] == t[0] => {
                    last[1] = t[2];
                    last[2] = t[2];
                }
                _ => merged.push(t),
            }
        }
        merged
    }

    /// The end of the written prefix: every byte before it is on disk.
    pub fn prefix(&self) -> u64 {
        let segs = self.lock();
        let mut sorted: Vec<&Arc<Segment>> = segs.iter().collect();
        sorted.sort_unstable_by_key(|s| s.start);
        let mut at = 0;
        for s in sorted {
            if s.start > at {
                break;
            }
            let (pos, end) = (s.pos(), s.end());
            at = at.max(pos.min(end));
            if pos < end {
                break;
            }
        }
        at
    }

    /// Bytes written, over all segments.
    pub fn held(&self) -> u64 {
        self.lock()
            .iter()
            .map(|s| s.pos().min(s.end()) - s.start)
            .sum()
    }

    /// Every byte of every segment is written.
    pub fn complete(&self) -> bool {
        self.lock().iter().all(|s| s.pos() >= s.end())
    }

    /// One past the last byte of the file.
    pub fn end(&self) -> u64 {
        self.lock().iter().map(|s| s.end()).max().unwrap_or(0)
    }

    /// Records `[from, to)` as written by a transport that writes ranges in any order
    /// (not by connections that own segments): a segment it reaches the position of
    /// moves on; one it lands inside of is split around it, the hole before it kept.
    pub fn mark(&self, from: u64, to: u64) {
        let mut segs = self.lock();
        let mut added = Vec::new();
        for s in segs.iter() {
            let (pos, end) = (s.pos(), s.end());
            if to <= pos || from >= end {
                continue;
            }
            if from <= pos {
                s.written_to(to.min(end));
                continue;
            }
            let upto = to.min(end);
            s.end.store(from, Ordering::SeqCst);
            added.push(Segment::new(from, upto, upto));
            if upto < end {
                added.push(Segment::new(upto, upto, end));
            }
        }
        segs.extend(added);
    }

    /// The ranges not written yet, in file order.
    pub fn missing(&self) -> Vec<std::ops::Range<u64>> {
        let mut gaps: Vec<std::ops::Range<u64>> = self
            .lock()
            .iter()
            .filter(|s| s.pos() < s.end())
            .map(|s| s.pos()..s.end())
            .collect();
        gaps.sort_unstable_by_key(|r| r.start);
        gaps
    }

    /// A segment nobody works on (after a resume), else the upper half of the largest
    /// one still running; either way now owned by the caller.
    pub(in crate::engine) fn take(&self) -> Option<Arc<Segment>> {
        let mut segs = self.lock();
        // The lowest segment nobody works on; a large one gives up only its first piece.
        let free = segs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.left() > 0 && !s.owned.load(Ordering::SeqCst))
            .min_by_key(|(_, s)| s.pos())
            .map(|(i, s)| (i, s.clone()));
        if let Some((i, free)) = free {
            let (pos, end) = (free.pos(), free.end());
            if end - pos > self.piece + MIN_PIECE {
                // Nobody writes to an unowned segment: it can be cut safely.
                let piece = Segment::new(free.start, pos, pos + self.piece);
                piece.owned.store(true, Ordering::SeqCst);
                segs[i] = piece.clone();
                segs.push(Segment::new(pos + self.piece, pos + self.piece, end));
                return Some(piece);
            }
            free.owned.store(true, Ordering::SeqCst);
            return Some(free);
        }
        let victim = segs.iter().max_by_key(|s| s.left())?.clone();
        let left = victim.left();
        if left < 2 * MIN_PIECE {
            return None;
        }
        let mid = victim.pos() + left / 2;
        let old_end = victim.end();
        victim.end.store(mid, Ordering::SeqCst);
        let stolen = Segment::new(mid, mid, old_end);
        stolen.owned.store(true, Ordering::SeqCst);
        segs.push(stolen.clone());
        Some(stolen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn pieces_go_out_in_file_order_then_the_largest_is_split() {
        let t = SegmentTable::whole(0, 64 * MIB);
        let a = t.take().unwrap();
        let b = t.take().unwrap();
        assert_eq!((a.start, a.end()), (0, 4 * MIB), "the first piece first");
        assert_eq!((b.start, b.end()), (4 * MIB, 8 * MIB));
        assert_eq!(t.prefix(), 0);
        a.written_to(4 * MIB);
        b.written_to(5 * MIB);
        assert_eq!(
            t.prefix(),
            5 * MIB,
            "the written prefix runs through finished pieces"
        );
        assert_eq!(t.held(), 5 * MIB);
        // A checkpoint and back: the same bytes done, the rest still to fetch.
        let again = SegmentTable::from_checkpoint(&t.snapshot());
        assert_eq!(again.held(), 5 * MIB);
        assert_eq!(again.prefix(), 5 * MIB);
        assert!(!again.complete());
        // Owned segments are not handed out twice; released ones are.
        let c = t.take().unwrap();
        assert_eq!(c.start, 8 * MIB);
        c.release();
        assert_eq!(t.take().unwrap().start, 8 * MIB);
    }

    #[test]
    fn with_nothing_free_the_largest_running_segment_is_split() {
        let t = SegmentTable::whole(0, 8 * MIB);
        let a = t.take().unwrap();
        let b = t.take().unwrap();
        assert_eq!((a.end() - a.start, b.end() - b.start), (4 * MIB, 4 * MIB));
        let c = t.take().unwrap();
        assert_eq!(
            c.end() - c.start,
            2 * MIB,
            "half of one of the two running pieces"
        );
        assert!(a.end() == c.start || b.end() == c.start);
    }

    #[test]
    fn bytes_written_before_the_switch_count_as_the_prefix() {
        let t = SegmentTable::whole(3 * MIB, 64 * MIB);
        assert_eq!(t.prefix(), 3 * MIB);
        assert_eq!(t.held(), 3 * MIB);
        assert_eq!(t.take().unwrap().start, 3 * MIB);
    }

    #[test]
    fn small_remainders_are_not_split() {
        let t = SegmentTable::whole(0, MIB);
        assert!(t.take().is_some());
        assert!(
            t.take().is_none(),
            "the only segment is owned and too small to split"
        );
    }
}
