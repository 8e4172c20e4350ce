//! Large single-connection downloads written with `O_DIRECT` from a writer thread.
//!
//! A buffered write copies every byte into the page cache and makes the kernel manage
//! those pages (allocation, dirty tracking, writeback): on a 1 GiB download that is about
//! a third of the byte loop's CPU. Here the byte loop copies each chunk into an aligned
//! buffer instead, and a thread of its own hands full buffers to the disk without a
//! page-cache copy, while the byte loop goes on receiving. Whatever the buffers hold when
//! a checkpoint, a retry or the end comes is written by [`DirectWriter::flush`], rounded
//! up to the alignment: the file may then be longer than the bytes it holds, which is
//! harmless (a resume truncates to its checkpoint; the end sets the exact length).
//!
//! A filesystem without `O_DIRECT` (or with stricter alignment than ours) is not an
//! error: [`DirectWriter::open`] answers `None` and the caller writes through the page
//! cache; a write refused with `EINVAL` falls back to a buffered write.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Alignment of file offsets, lengths and memory: 4 KiB covers 512-byte and 4K-sector disks.
const ALIGN: usize = 4096;
/// One write to the disk. Large, so that the disk sees few, long requests.
const BUF_SIZE: usize = 2 << 20;
/// Buffers per download: one filling, the others on their way to the disk.
const BUFFERS: usize = 3;

/// A `BUF_SIZE` byte region aligned to `ALIGN`, inside a slightly larger `Vec`.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    fn new() -> AlignedBuf {
        let raw = vec![0u8; BUF_SIZE + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        AlignedBuf { raw, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.raw[self.start..self.start + BUF_SIZE]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + BUF_SIZE]
    }
}

/// A full buffer and where it goes.
struct WriteJob {
    buf: AlignedBuf,
    at: u64,
    len: usize,
}

/// The byte loop's end of the writer thread.
pub struct DirectWriter {
    /// The `O_DIRECT` descriptor, for the partial writes of `flush`.
    direct: File,
    /// The ordinary descriptor: the head of an unaligned start, and the fallback.
    buffered: File,
    /// Once `O_DIRECT` was refused for a write, every later write is buffered.
    refused: bool,
    cur: AlignedBuf,
    /// File offset of `cur`'s first byte (a multiple of `ALIGN`).
    cur_start: u64,
    /// Bytes of `cur` that hold data (from `cur_start`).
    fill: usize,
    /// Where the last `flush` ended: bytes before it are on disk.
    flushed: u64,
    spare: Vec<AlignedBuf>,
    allocated: usize,
    in_flight: usize,
    /// A write failed: the bytes it held are not on disk, so nothing may claim them.
    broken: bool,
    jobs: Option<SyncSender<WriteJob>>,
    /// Buffers back from the writer thread, with how their write went.
    done: Receiver<(AlignedBuf, io::Result<()>)>,
    worker: Option<JoinHandle<()>>,
}

impl DirectWriter {
    /// A writer that appends at `at` to the file at `path` (open as `buffered`).
    /// `None` when the filesystem does not take `O_DIRECT`.
    pub fn open(path: &Path, buffered: &File, at: u64) -> io::Result<Option<DirectWriter>> {
        let direct = match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut cur = AlignedBuf::new();
        let cur_start = at - at % ALIGN as u64;
        let fill = (at - cur_start) as usize;
        // The bytes between the aligned start and `at` are rewritten with the first
        // block: read them from the file.
        buffered.read_exact_at(&mut cur.bytes_mut()[..fill], cur_start)?;
        let (jobs, worker_rx) = sync_channel::<WriteJob>(BUFFERS);
        let (done_tx, done) = sync_channel::<(AlignedBuf, io::Result<()>)>(BUFFERS);
        let worker_direct = direct.try_clone()?;
        let worker_buffered = buffered.try_clone()?;
        let worker = std::thread::Builder::new()
            .name("direct-write".into())
            .spawn(move || {
                let mut refused = false;
                for job in worker_rx {
                    let data = &job.buf.bytes()[..job.len];
                    let result =
                        write_all(&worker_direct, &worker_buffered, &mut refused, data, job.at);
                    if done_tx.send((job.buf, result)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Some(DirectWriter {
            direct,
            buffered: buffered.try_clone()?,
            refused: false,
            cur,
            cur_start,
            fill,
            flushed: at,
            spare: Vec::new(),
            allocated: 1,
            in_flight: 0,
            broken: false,
            jobs: Some(jobs),
            done,
            worker: Some(worker),
        }))
    }

    /// Bytes taken but not yet known to be on disk (they are after a `flush`).
    pub fn unflushed(&self) -> u64 {
        self.cur_start + self.fill as u64 - self.flushed
    }

    /// Copies `data` in; full buffers go to the writer thread. Blocks only when every
    /// buffer is on its way to the disk.
    pub fn push(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.check()?;
        while !data.is_empty() {
            let take = data.len().min(BUF_SIZE - self.fill);
            self.cur.bytes_mut()[self.fill..self.fill + take].copy_from_slice(&data[..take]);
            self.fill += take;
            data = &data[take..];
            if self.fill == BUF_SIZE {
                self.submit_full()?;
            }
        }
        Ok(())
    }

    fn submit_full(&mut self) -> io::Result<()> {
        let next = self.free_buffer()?;
        let full = std::mem::replace(&mut self.cur, next);
        let job = WriteJob {
            buf: full,
            at: self.cur_start,
            len: BUF_SIZE,
        };
        let jobs = self.jobs.as_ref().ok_or_else(worker_gone)?;
        jobs.send(job).map_err(|_| worker_gone())?;
        self.in_flight += 1;
        self.cur_start += BUF_SIZE as u64;
        self.fill = 0;
        Ok(())
    }

    fn free_buffer(&mut self) -> io::Result<AlignedBuf> {
        if let Some(buf) = self.spare.pop() {
            return Ok(buf);
        }
        if self.allocated < BUFFERS {
            self.allocated += 1;
            return Ok(AlignedBuf::new());
        }
        self.wait_one()
    }

    /// The next buffer the writer thread is done with (its write's error, if any).
    fn wait_one(&mut self) -> io::Result<AlignedBuf> {
        let (buf, result) = self.done.recv().map_err(|_| worker_gone())?;
        self.in_flight -= 1;
        match result {
            Ok(()) => Ok(buf),
            Err(e) => {
                self.broken = true;
                self.spare.push(buf);
                Err(e)
            }
        }
    }

    fn check(&self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other("an earlier O_DIRECT write failed"));
        }
        Ok(())
    }

    /// Waits for every write on its way, then writes what the current buffer holds.
    /// Afterwards every byte taken is on disk (in the device's cache until an fsync)
    /// and the file may extend up to `ALIGN - 1` bytes past them.
    pub fn flush(&mut self) -> io::Result<u64> {
        self.check()?;
        while self.in_flight > 0 {
            let buf = self.wait_one()?;
            self.spare.push(buf);
        }
        if self.cur_start + self.fill as u64 > self.flushed {
            let len = self.fill.div_ceil(ALIGN) * ALIGN;
            let data = &self.cur.bytes()[..len];
            let written = write_all(
                &self.direct,
                &self.buffered,
                &mut self.refused,
                data,
                self.cur_start,
            );
            if written.is_err() {
                self.broken = true;
            }
            written?;
        }
        self.flushed = self.cur_start + self.fill as u64;
        Ok(self.flushed)
    }
}

impl Drop for DirectWriter {
    fn drop(&mut self) {
        // Wait for the writes on their way: none may land after the caller truncates
        // or reuses the file (a few milliseconds at most).
        drop(self.jobs.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn worker_gone() -> io::Error {
    io::Error::other("the direct-write thread has stopped")
}

/// Writes `data` at `at` with `O_DIRECT`, or buffered once the filesystem refused that.
fn write_all(
    direct: &File,
    buffered: &File,
    refused: &mut bool,
    data: &[u8],
    at: u64,
) -> io::Result<()> {
    if !*refused {
        match direct.write_all_at(data, at) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(error = %e, "O_DIRECT write refused; writing through the page cache");
                *refused = true;
            }
            other => return other,
        }
    }
    buffered.write_all_at(data, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13 ^ seed) as u8)
            .collect()
    }

    fn open_rw(path: &Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }

    #[test]
    fn appends_after_an_unaligned_start_in_odd_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let head = pattern(5_000, 1);
        std::fs::write(&path, &head).unwrap();
        let file = open_rw(&path);
        let Some(mut w) = DirectWriter::open(&path, &file, head.len() as u64).unwrap() else {
            eprintln!("no O_DIRECT on this filesystem; nothing to test");
            return;
        };
        // More than all buffers together, so the writer thread hands buffers back.
        let body = pattern(BUF_SIZE * BUFFERS * 2 + 12_345, 2);
        for piece in body.chunks(100_003) {
            w.push(piece).unwrap();
        }
        assert!(w.unflushed() > 0);
        let end = w.flush().unwrap();
        assert_eq!(end, (head.len() + body.len()) as u64);
        assert_eq!(w.unflushed(), 0);
        drop(w);
        let got = std::fs::read(&path).unwrap();
        assert!(got.len() as u64 >= end, "the file holds every byte");
        assert_eq!(&got[..head.len()], &head[..]);
        assert_eq!(&got[head.len()..end as usize], &body[..]);
    }

    #[test]
    fn a_flush_in_the_middle_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let file = open_rw(&path);
        let Some(mut w) = DirectWriter::open(&path, &file, 0).unwrap() else {
            return;
        };
        let body = pattern(BUF_SIZE + 70_000, 3);
        let (a, b) = body.split_at(BUF_SIZE / 2 + 7);
        w.push(a).unwrap();
        assert_eq!(w.flush().unwrap(), a.len() as u64);
        // A crash here: the file holds the first part.
        assert_eq!(&std::fs::read(&path).unwrap()[..a.len()], a);
        w.push(b).unwrap();
        assert_eq!(w.flush().unwrap(), body.len() as u64);
        drop(w);
        assert_eq!(&std::fs::read(&path).unwrap()[..body.len()], &body[..]);
    }

    #[test]
    fn a_failed_write_is_never_claimed_as_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let file = open_rw(&path);
        // 1 PiB is past the largest file ext4 (and most filesystems) can hold: EFBIG.
        let Some(mut w) = DirectWriter::open(&path, &file, 1 << 50).unwrap() else {
            return;
        };
        let body = pattern(BUF_SIZE * BUFFERS + 1000, 5);
        let pushed = body
            .chunks(BUF_SIZE / 3)
            .try_for_each(|piece| w.push(piece));
        let flushed = pushed.and_then(|()| w.flush());
        assert!(
            flushed.is_err(),
            "the write past the limit failed: {flushed:?}"
        );
        assert!(
            w.flush().is_err(),
            "and a later flush does not claim its bytes"
        );
        assert!(w.push(b"more").is_err());
    }

    #[test]
    fn a_refused_direct_write_is_written_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = open_rw(&path);
        let mut refused = false;
        // An unaligned length is refused by O_DIRECT on every filesystem that takes it.
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path);
        let Ok(direct) = direct else { return };
        let data = pattern(1000, 4);
        write_all(&direct, &file, &mut refused, &data, 0).unwrap();
        assert!(refused);
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
