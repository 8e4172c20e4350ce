//! HuggingFace's content-defined chunker, to find where the chunks of a term lie in a
//! file on disk (a term names chunks by index; only their total length is known).
//!
//! A line-for-line port of `Chunker::next_boundary` (`xet-core`,
//! `xet_data/src/deduplication/chunking.rs`): a gear hash over the bytes, a boundary
//! where its top 16 bits are zero, no chunk under 8 KiB or over 128 KiB, and the hash
//! reset at every boundary, so that chunking from any boundary finds the same ones.

use std::fs::File;
use std::os::unix::fs::FileExt;

const TARGET: usize = 64 * 1024;
const MINIMUM: usize = TARGET / 8;
const MAXIMUM: usize = TARGET * 2;
/// The gear hash's window: bytes further back no longer change it.
const WINDOW: usize = 64;

struct Chunker {
    hash: gearhash::Hasher<'static>,
    mask: u64,
    /// Bytes since the last boundary.
    previous: usize,
}

impl Chunker {
    fn new() -> Chunker {
        let mask = (TARGET - 1) as u64;
        Chunker {
            hash: gearhash::Hasher::default(),
            mask: mask << mask.leading_zeros(),
            previous: 0,
        }
    }

    /// Where in `data` the current chunk ends, if it does; all of `data` belongs to the
    /// current chunk otherwise.
    fn next_boundary(&mut self, data: &[u8]) -> Option<usize> {
        if data.is_empty() {
            return None;
        }
        let mut at = 0;
        // The first bytes of a chunk cannot end it: skip them, but hash the window's
        // worth before the minimum.
        if self.previous + WINDOW < MINIMUM {
            at += (MINIMUM - self.previous - WINDOW - 1).min(data.len());
        }
        let read_end = data.len().min(at + MAXIMUM - self.previous);
        let mut boundary = false;
        loop {
            match self.hash.next_match(&data[at..read_end], self.mask) {
                Some(n) => {
                    at += n;
                    if at + self.previous < MINIMUM {
                        continue;
                    }
                    boundary = true;
                }
                None => at = read_end,
            }
            break;
        }
        if at + self.previous >= MAXIMUM {
            at = MAXIMUM - self.previous;
            boundary = true;
        }
        if boundary {
            self.hash.set_hash(0);
            self.previous = 0;
            Some(at)
        } else {
            self.previous += data.len();
            None
        }
    }
}

/// The lengths of the chunks of `file`'s bytes `[at, at + len)`, which start at a
/// chunk boundary; read a MiB at a time.
pub(super) fn chunk_lengths(file: &File, at: u64, len: u64) -> std::io::Result<Vec<u64>> {
    let mut chunker = Chunker::new();
    let mut lengths = Vec::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let (mut pos, end) = (at, at + len);
    let mut chunk_start = at;
    while pos < end {
        let n = ((end - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)?;
        let mut data = &buf[..n];
        while let Some(b) = chunker.next_boundary(data) {
            let cut = pos + b as u64;
            lengths.push(cut - chunk_start);
            chunk_start = cut;
            pos = cut;
            data = &data[b..];
        }
        pos += data.len() as u64;
    }
    if chunk_start < end {
        lengths.push(end - chunk_start);
    }
    Ok(lengths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_are_within_bounds_and_found_again_from_any_boundary() {
        let data = noise(3 * 1024 * 1024 + 777, 42);
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let all = chunk_lengths(&f, 0, data.len() as u64).unwrap();
        assert_eq!(all.iter().sum::<u64>(), data.len() as u64);
        assert!(
            all.len() > 20,
            "random data makes ~64 KiB chunks: {}",
            all.len()
        );
        let (last, body) = all.split_last().unwrap();
        assert!(body
            .iter()
            .all(|&l| (MINIMUM as u64..=MAXIMUM as u64).contains(&l)));
        assert!(*last <= MAXIMUM as u64);
        // From the 5th boundary on, the same chunks.
        let skip: u64 = all[..5].iter().sum();
        let rest = chunk_lengths(&f, skip, data.len() as u64 - skip).unwrap();
        assert_eq!(rest, all[5..].to_vec());
        // A run of equal bytes never matches: chunks of the maximum.
        let zeros = vec![0u8; 3 * MAXIMUM];
        let mut z = tempfile::tempfile().unwrap();
        z.write_all(&zeros).unwrap();
        assert_eq!(
            chunk_lengths(&z, 0, zeros.len() as u64).unwrap(),
            vec![MAXIMUM as u64; 3]
        );
    }
}
