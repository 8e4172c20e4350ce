//! The write block: received chunks kept as they came (reference-counted, no copy) and
//! written in one positional vectored write once there are enough of them.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

use bytes::Bytes;

/// Writes go to disk in blocks at least this large: one syscall per network chunk
/// (often 8-16 KiB) would cost more CPU than the rest of the loop.
pub const WRITE_BLOCK: usize = 256 * 1024;
/// At most this many buffers per `pwritev` (Linux's IOV_MAX is 1024).
const MAX_IOV: usize = 512;

/// Chunks waiting to be written, in order.
#[derive(Default)]
pub struct WriteBlock {
    chunks: Vec<Bytes>,
    len: usize,
}

impl WriteBlock {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    /// Writes the first `n` bytes (all of them when `n >= len`) at `offset`, then
    /// empties the block.
    pub fn write_at(&mut self, file: &File, offset: u64, n: usize) -> io::Result<()> {
        let mut left = n.min(self.len);
        if left > 0 {
            super::slow_disk::pause(file);
        }
        let mut at = offset;
        let mut first = 0; // index of the first chunk not fully written
        let mut skip = 0; // bytes of that chunk already written
        while left > 0 {
            let mut iov: Vec<libc::iovec> = Vec::with_capacity(self.chunks.len().min(MAX_IOV));
            let mut planned = 0usize;
            for (i, c) in self.chunks[first..].iter().enumerate() {
                if iov.len() == MAX_IOV || planned == left {
                    break;
                }
                let from = if i == 0 { skip } else { 0 };
                let take = (c.len() - from).min(left - planned);
                iov.push(libc::iovec {
                    iov_base: c[from..].as_ptr() as *mut libc::c_void,
                    iov_len: take,
                });
                planned += take;
            }
            // SAFETY: every iovec points into a live `Bytes` of `self.chunks` with its
            // length inside that buffer; the fd is open for writing.
            let wrote = unsafe {
                libc::pwritev(
                    file.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len() as libc::c_int,
                    at as libc::off_t,
                )
            };
            if wrote < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if wrote == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let mut wrote = wrote as usize;
            left -= wrote;
            at += wrote as u64;
            // Advance past what was written.
            while wrote > 0 {
                let rest = self.chunks[first].len() - skip;
                if wrote >= rest {
                    wrote -= rest;
                    first += 1;
                    skip = 0;
                } else {
                    skip += wrote;
                    wrote = 0;
                }
            }
        }
        self.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn writes_every_chunk_in_order_at_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let mut block = WriteBlock::default();
        let mut want = Vec::new();
        for i in 0..1500u32 {
            let chunk: Vec<u8> = (0..(i % 97 + 1)).map(|j| (i + j) as u8).collect();
            want.extend_from_slice(&chunk);
            block.push(Bytes::from(chunk));
        }
        assert_eq!(block.len(), want.len());
        block.write_at(&file, 10, usize::MAX).unwrap();
        assert!(block.is_empty());
        let mut got = vec![0u8; want.len()];
        file.read_exact_at(&mut got, 10).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn writes_only_the_first_n_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let mut block = WriteBlock::default();
        block.push(Bytes::from_static(b"hello "));
        block.push(Bytes::from_static(b"world"));
        block.write_at(&file, 0, 8).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"hello wo");
    }
}
