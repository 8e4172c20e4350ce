//! Reading a file back into SHA-256: the digest of the bytes a resume starts after, of a
//! whole file whose running hash was lost, of the prefix that parallel connections
//! fill (followed while they fill it), and of what the lease's keeper vouches for (on a
//! description that may be in `O_DIRECT` mode). One reader serves all four.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::segment_table::SegmentTable;

/// One read of the file: large, so that reading back is bound by the disk, not syscalls;
/// a multiple of [`ALIGN`].
const READ_BUF: usize = 1 << 20;
/// Reads are aligned (memory, length and, from an aligned start, offset): a description in
/// `O_DIRECT` mode takes no other.
const ALIGN: usize = 4096;

/// A [`READ_BUF`]-byte buffer aligned to [`ALIGN`], inside a slightly larger `Vec`.
pub(in crate::engine) struct ReadBuf {
    raw: Vec<u8>,
    start: usize,
}

impl ReadBuf {
    pub(in crate::engine) fn new() -> ReadBuf {
        let raw = vec![0u8; READ_BUF + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        ReadBuf { raw, start }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + READ_BUF]
    }
}

/// Feeds bytes `[from, to)` of `file` to `hasher` through `buf` (blocking), while
/// `go_on` allows another read; returns where it stopped. A file that ends early is an
/// error: its checkpoint promised those bytes.
pub(in crate::engine) fn hash_while(
    file: &File,
    hasher: &mut Sha256,
    buf: &mut ReadBuf,
    from: u64,
    to: u64,
    mut go_on: impl FnMut() -> bool,
) -> std::io::Result<u64> {
    let mut pos = from;
    while pos < to && go_on() {
        let want = ((to - pos) as usize).min(READ_BUF);
        // Rounded up to the alignment: what is read past `to` is not hashed.
        let bytes = buf.bytes_mut();
        let n = file.read_at(&mut bytes[..want.next_multiple_of(ALIGN)], pos)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shorter than its checkpoint",
            ));
        }
        let n = n.min(want);
        hasher.update(&bytes[..n]);
        pos += n as u64;
    }
    Ok(pos)
}

/// Feeds bytes `[from, to)` of `file` to `hasher` through `buf` (blocking).
fn hash_range(
    file: &File,
    hasher: &mut Sha256,
    buf: &mut ReadBuf,
    from: u64,
    to: u64,
) -> std::io::Result<()> {
    hash_while(file, hasher, buf, from, to, || true).map(|_| ())
}

/// Hashes bytes `[from, to)` of `file` (blocking).
pub(in crate::engine) fn hash_range_of(file: &File, from: u64, to: u64) -> std::io::Result<Sha256> {
    let mut hasher = Sha256::new();
    let mut buf = ReadBuf::new();
    hash_range(file, &mut hasher, &mut buf, from, to)?;
    Ok(hasher)
}

/// Hashes the first `len` bytes of `file` (blocking).
pub(in crate::engine) fn hash_prefix(file: &File, len: u64) -> std::io::Result<Sha256> {
    let mut hasher = Sha256::new();
    let mut buf = ReadBuf::new();
    hash_range(file, &mut hasher, &mut buf, 0, len)?;
    Ok(hasher)
}

/// Lower-case hex, as the contract writes digests.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes the written prefix of the file while the connections fill it, so that the
/// digest is ready (or nearly) when the last byte lands.
pub(in crate::engine) struct Follower {
    stop: Arc<AtomicBool>,
    worker: Option<std::thread::JoinHandle<Option<Sha256>>>,
}

impl Follower {
    pub(in crate::engine) fn start(
        table: Arc<SegmentTable>,
        file: File,
        total: u64,
    ) -> std::io::Result<Follower> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let worker = std::thread::Builder::new()
            .name("sha256-follow".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                let mut buf = ReadBuf::new();
                let mut at = 0u64;
                loop {
                    let prefix = table.prefix();
                    hash_range(&file, &mut hasher, &mut buf, at, prefix).ok()?;
                    at = at.max(prefix);
                    if at >= total {
                        return Some(hasher);
                    }
                    // All written, yet the prefix stops short: the table does not cover
                    // the file. Give up; the digest is then taken by reading it back.
                    if table.complete() && table.prefix() == at {
                        return None;
                    }
                    if stopping.load(Ordering::Relaxed) {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })?;
        Ok(Follower {
            stop,
            worker: Some(worker),
        })
    }

    /// Waits for the digest of the whole file (blocking; the table must be complete).
    pub(in crate::engine) fn finish(mut self) -> Option<Sha256> {
        self.worker.take()?.join().ok().flatten()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_hashed_and_a_short_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_123u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let got = hash_prefix(&file, 2_500_000).unwrap().finalize();
        assert_eq!(got, Sha256::digest(&data[..2_500_000]));
        assert_eq!(hex(&got[..2]), format!("{:02x}{:02x}", got[0], got[1]));
        assert!(hash_prefix(&file, data.len() as u64 + 1).is_err());
    }

    #[test]
    fn the_follower_hashes_a_finished_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let total = data.len() as u64;
        let table = Arc::new(SegmentTable::from_checkpoint(&[[0, total, total]]));
        let f = Follower::start(table, File::open(&path).unwrap(), total).unwrap();
        assert_eq!(f.finish().unwrap().finalize(), Sha256::digest(&data));
    }
}
