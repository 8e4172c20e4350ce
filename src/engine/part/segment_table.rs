//! Which bytes of a segmented file are done: the file cut into segments, each written
//! by one connection at a time, handed out in file order and split when a connection
//! runs out of work. The atomics let connections move their own segment without a lock;
//! the table's lock is taken only to hand out, split, ask for, snapshot or sum segments
//! (never per chunk).
//!
//! No byte is fetched twice: a split only takes the part of a segment that its owner has
//! not asked the server for yet (`asked`). A response already under way keeps coming
//! after the client stops reading it (the socket buffers of both ends hold megabytes), so
//! cutting a segment below what its owner asked for would fetch those bytes twice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The least a split takes, and the least piece handed out: far more than one write
/// block, and large enough that a request's round trip stays small beside its bytes.
const MIN_PIECE: u64 = 1024 * 1024;

/// What the first request of a download asks for when parallel connections may follow
/// (its size is unknown until the answer): the smallest piece. Asking for a bounded
/// range, rather than the whole file, is what lets every byte it brings be kept: the
/// server stops where the next connection starts.
pub const FIRST_WINDOW: u64 = 4 * MIN_PIECE;

/// The size of the pieces handed out in file order. In order, so that the written
/// prefix grows steadily and the digest can follow it during the transfer instead of
/// reading the whole file back at the end.
fn piece_size(total: u64) -> u64 {
    (total / 256).clamp(FIRST_WINDOW, 64 * MIN_PIECE)
}

/// The piece to hand out when `unowned` bytes are left that nobody works on: full pieces
/// first, then smaller ones toward the end (an eighth of what is left, down to
/// [`MIN_PIECE`]), so that the connections finish close together without splitting a
/// request under way.
fn next_piece(piece: u64, unowned: u64) -> u64 {
    (unowned / 8).clamp(MIN_PIECE, piece.max(MIN_PIECE))
}

/// One range of the file: `[start, end)`, written up to `pos`.
#[derive(Debug)]
pub struct Segment {
    start: u64,
    pos: AtomicU64,
    end: AtomicU64,
    /// One past the last byte its owner's request under way asked for (at most `pos`
    /// when none is): a split never takes a byte below it. Raised only under the
    /// table's lock ([`SegmentTable::ask`]).
    asked: AtomicU64,
    /// Held by one connection at a time: two writers would race on `pos`.
    owned: AtomicBool,
}

impl Segment {
    fn new(start: u64, pos: u64, end: u64) -> Arc<Segment> {
        Arc::new(Segment {
            start,
            pos: AtomicU64::new(pos),
            end: AtomicU64::new(end),
            asked: AtomicU64::new(pos),
            owned: AtomicBool::new(false),
        })
    }

    /// The first byte of the segment (it never moves: a split lowers the end).
    pub(in crate::engine) fn start(&self) -> u64 {
        self.start
    }

    /// The next byte to write.
    pub(in crate::engine) fn pos(&self) -> u64 {
        self.pos.load(Ordering::SeqCst)
    }

    /// One past the last byte; lowered when another connection splits off what nobody
    /// asked for yet.
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

    /// Its owner's request ended without all it asked for (an error, a refused link):
    /// nothing is under way any more, so a split may take what is left above `pos`
    /// while the owner waits to retry.
    pub(in crate::engine) fn unask(&self) {
        self.asked.store(self.pos(), Ordering::SeqCst);
    }

    /// The unfetched remainder: what nobody asked for yet.
    fn unasked(&self) -> u64 {
        let from = self.pos().max(self.asked.load(Ordering::SeqCst));
        self.end().saturating_sub(from)
    }

    /// Gives the segment up: another connection (or attempt) may take it.
    pub(in crate::engine) fn release(&self) {
        self.unask();
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
    /// held is free again for the next attempt (else only splits could reach it, and
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

    /// The rest of `seg` for its owner's next request, `[pos, end)`, now marked asked
    /// for: no split takes any of it until the request ends ([`Segment::unask`]).
    pub(in crate::engine) fn ask(&self, seg: &Segment) -> (u64, u64) {
        let _segs = self.lock();
        let (pos, end) = (seg.pos(), seg.end());
        seg.asked.store(end.max(pos), Ordering::SeqCst);
        (pos, end)
    }

    /// A piece nobody works on (the lowest), else the upper part of the largest
    /// remainder nobody asked for yet; either way now owned by the caller, who asks
    /// for it with [`SegmentTable::ask`].
    pub(in crate::engine) fn take(&self) -> Option<Arc<Segment>> {
        self.take_piece(None)
    }

    /// The lowest piece nobody works on, ending at `upto` (when that is inside it) and
    /// already asked for: the first request's answer, still streaming, fills it.
    pub(in crate::engine) fn take_asked(&self, upto: u64) -> Option<Arc<Segment>> {
        self.take_piece(Some(upto))
    }

    fn take_piece(&self, upto: Option<u64>) -> Option<Arc<Segment>> {
        let mut segs = self.lock();
        let unowned: u64 = segs
            .iter()
            .filter(|s| !s.owned.load(Ordering::SeqCst))
            .map(|s| s.left())
            .sum();
        // The lowest segment nobody works on; a large one gives up only its first piece.
        let free = segs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.left() > 0 && !s.owned.load(Ordering::SeqCst))
            .min_by_key(|(_, s)| s.pos())
            .map(|(i, s)| (i, s.clone()));
        if let Some((i, free)) = free {
            let (pos, end) = (free.pos(), free.end());
            let cut = match upto {
                Some(upto) => (upto > pos && upto < end).then_some(upto),
                None => {
                    let piece = next_piece(self.piece, unowned);
                    // No remainder smaller than the least piece is left behind.
                    (end - pos >= piece + MIN_PIECE).then_some(pos + piece)
                }
            };
            let taken = match cut {
                Some(cut) => {
                    // Nobody writes to an unowned segment: it can be cut safely.
                    let piece = Segment::new(free.start, pos, cut);
                    segs[i] = piece.clone();
                    segs.push(Segment::new(cut, cut, end));
                    piece
                }
                None => free,
            };
            taken.owned.store(true, Ordering::SeqCst);
            let asked = if upto.is_some() { taken.end() } else { pos };
            taken.asked.store(asked, Ordering::SeqCst);
            return Some(taken);
        }
        self.split(&mut segs)
    }

    /// Nothing is free: the segment with the most bytes nobody asked for gives up the
    /// upper half of what it has left, or all it has not asked for when that is less,
    /// so that its owner's request under way ends at or below the new end.
    fn split(&self, segs: &mut Vec<Arc<Segment>>) -> Option<Arc<Segment>> {
        let victim = segs.iter().max_by_key(|s| s.unasked())?.clone();
        let (pos, end) = (victim.pos(), victim.end());
        let asked = victim.asked.load(Ordering::SeqCst);
        let mid = (pos + (end.saturating_sub(pos)) / 2).max(asked);
        if end.saturating_sub(mid) < MIN_PIECE {
            return None;
        }
        victim.end.store(mid, Ordering::SeqCst);
        let stolen = Segment::new(mid, mid, end);
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
    fn pieces_go_out_in_file_order_and_a_released_one_again() {
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
    fn with_nothing_free_only_what_nobody_asked_for_is_split() {
        let t = SegmentTable::whole(0, 64 * MIB);
        let a = t.take_asked(4 * MIB).unwrap();
        assert_eq!(
            (a.start, a.end()),
            (0, 4 * MIB),
            "the first request's window"
        );
        let mut pieces = vec![a];
        while let Some(p) = t.take() {
            assert_eq!(t.ask(&p), (p.start, p.end()));
            pieces.push(p);
        }
        // Every piece asked for whole: nothing is left that no request covers.
        let sizes: Vec<u64> = pieces.iter().map(|p| p.end() - p.start).collect();
        assert_eq!(sizes.iter().sum::<u64>(), 64 * MIB);
        let last = sizes.len() - 1;
        assert!(
            sizes[1..last].windows(2).all(|w| w[0] >= w[1]),
            "pieces shrink toward the end: {sizes:?}"
        );
        assert!(sizes.iter().all(|&n| n >= MIB), "{sizes:?}");
        assert!(sizes[last - 1] == MIB && sizes[last] < 2 * MIB, "{sizes:?}");
        // A request that failed half-way: the rest above what was written can be split.
        let victim = &pieces[3];
        victim.written_to(victim.start + MIB);
        victim.unask();
        let (start, end) = (victim.start, victim.end());
        let stolen = t.take().unwrap();
        assert_eq!(
            (stolen.start, stolen.end(), victim.end()),
            (start + MIB + (end - start - MIB) / 2, end, stolen.start),
            "the upper half of what was left"
        );
    }

    #[test]
    fn a_split_stops_at_what_the_owner_asked_for() {
        let t = SegmentTable::whole(0, 16 * MIB);
        let a = t.take_asked(16 * MIB).unwrap();
        // A segment of 16 MiB asked for 12 (say a response cut short, asked again, and
        // the table restored from a checkpoint): the split starts at 12, not at 8.
        assert_eq!((a.start, a.end()), (0, 16 * MIB));
        a.asked.store(12 * MIB, Ordering::SeqCst);
        let b = t.take().unwrap();
        assert_eq!((b.start, b.end(), a.end()), (12 * MIB, 16 * MIB, 12 * MIB));
        // Asked for up to less than a piece from its end: no split at all.
        assert_eq!(t.ask(&b), (12 * MIB, 16 * MIB));
        a.asked.store(11 * MIB + MIB / 2, Ordering::SeqCst);
        assert!(t.take().is_none());
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
