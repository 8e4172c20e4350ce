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
//! cache; a write refused with `EINVAL` or `EOPNOTSUPP` falls back to a buffered write.
//!
//! Every disk write, the partial ones of `flush` included, happens on the writer thread:
//! the byte loop only awaits buffers coming back, so a slow disk never blocks the thread
//! that runs the other downloads.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use tokio::sync::mpsc;

/// Alignment of file offsets and lengths: 4 KiB covers 512-byte and 4K-sector disks.
const ALIGN: usize = 4096;
/// One write to the disk: large, so that the disk sees few, long requests (4 MiB is
/// the most a virtio disk takes in one request, `max_sectors_kb`). A 1 GiB download,
/// medians of 7 interleaved runs: 2 MiB in 4 KiB pages took 0.60 s of service CPU,
/// 2 MiB in huge pages 0.50 s, 4 MiB in huge pages 0.45 s; peak RSS 23 → 29 MiB.
const BUF_SIZE: usize = 4 << 20;
/// Buffers per download: one filling, the others on their way to the disk.
const BUFFERS: usize = 3;
/// Where buffers start in memory: a huge-page boundary, so that the kernel can back
/// them with transparent huge pages (`MADV_HUGEPAGE`): pinning a buffer's pages for
/// each direct write, and copying into it, then walk 2 MiB pages, not 4 KiB ones.
const HUGE: usize = 2 << 20;

/// `BUF_SIZE` bytes of anonymous memory of their own (zero-filled when mapped), at a
/// [`HUGE`] boundary; unmapped when dropped.
struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    /// 0 for the placeholder, which maps nothing.
    len: usize,
}

// SAFETY: the buffer owns its mapping alone, as a `Box<[u8]>` owns its memory, and
// gives shared access only as `&[u8]`.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    fn new() -> io::Result<AlignedBuf> {
        let over = BUF_SIZE + HUGE;
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                over,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let head = (map as usize).next_multiple_of(HUGE) - map as usize;
        // SAFETY: `head + BUF_SIZE <= over`: the pieces before and after the aligned
        // buffer are inside the mapping, and unmapping them leaves the buffer mapped.
        let start = unsafe {
            let start = map.cast::<u8>().add(head);
            if head > 0 {
                libc::munmap(map, head);
            }
            let tail = over - head - BUF_SIZE;
            if tail > 0 {
                libc::munmap(start.add(BUF_SIZE).cast(), tail);
            }
            // A hint: without huge pages the buffer works the same.
            libc::madvise(start.cast(), BUF_SIZE, libc::MADV_HUGEPAGE);
            start
        };
        let ptr =
            std::ptr::NonNull::new(start).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(AlignedBuf { ptr, len: BUF_SIZE })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes mapped and initialised (zero-filled) at `ptr`, or none.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and borrowed mutably through `self` alone.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// A placeholder while the real buffer is with the writer thread (never written to).
    fn empty() -> AlignedBuf {
        AlignedBuf {
            ptr: std::ptr::NonNull::dangling(),
            len: 0,
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping made in `new`, unmapped once.
            unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), self.len);
            }
        }
    }
}

/// Bytes `from..len` of a buffer, written at file offset `at + from`.
struct WriteJob {
    buf: AlignedBuf,
    at: u64,
    from: usize,
    len: usize,
}

/// The byte loop's end of the writer thread.
pub struct DirectWriter {
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
    /// Buffers back from the writer thread, in the order sent, with how their write went.
    done: mpsc::Receiver<(AlignedBuf, io::Result<()>)>,
    worker: Option<JoinHandle<()>>,
}

impl DirectWriter {
    /// A writer that appends at `at` to `file`, through the same open file description
    /// put in `O_DIRECT` mode (so that the transfer keeps one description, which its
    /// write lease needs; the mode goes when the writer's thread ends). `None` when
    /// the filesystem does not take `O_DIRECT`.
    pub fn open(file: &File, at: u64) -> io::Result<Option<DirectWriter>> {
        let mut cur = AlignedBuf::new()?;
        let cur_start = at - at % ALIGN as u64;
        let fill = (at - cur_start) as usize;
        // The bytes between the aligned start and `at` are rewritten with the first
        // block: read them from the file (before the direct mode, which would refuse
        // a read of that length).
        file.read_exact_at(&mut cur.bytes_mut()[..fill], cur_start)?;
        let direct = file.try_clone()?;
        match set_direct(&direct, true) {
            Ok(()) => {}
            Err(e) if refuses_direct(&e) => return Ok(None),
            Err(e) => return Err(e),
        }
        let (jobs, worker_rx) = sync_channel::<WriteJob>(BUFFERS);
        // Room for every buffer: the writer thread never waits to hand one back.
        let (done_tx, done) = mpsc::channel::<(AlignedBuf, io::Result<()>)>(BUFFERS);
        let spawned = std::thread::Builder::new()
            .name("direct-write".into())
            .spawn(move || {
                // Once O_DIRECT was refused for a write, every later write is buffered.
                let mut refused = false;
                for job in worker_rx {
                    let data = &job.buf.bytes()[job.from..job.len];
                    let at = job.at + job.from as u64;
                    let result = write_all(&direct, &mut refused, data, at);
                    if done_tx.blocking_send((job.buf, result)).is_err() {
                        break;
                    }
                }
                // Before the last buffer is seen back: the description is buffered again
                // once `close` (or the drop) returns.
                if let Err(e) = set_direct(&direct, false) {
                    tracing::warn!(error = %e, "could not end O_DIRECT mode on the .part");
                }
                drop(done_tx);
            });
        let worker = match spawned {
            Ok(worker) => worker,
            Err(e) => {
                set_direct(file, false)?;
                return Err(e);
            }
        };
        Ok(Some(DirectWriter {
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

    /// Copies `data` in; full buffers go to the writer thread. Waits only when every
    /// buffer is on its way to the disk. After an error the writer takes nothing more.
    pub async fn push(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.check()?;
        while !data.is_empty() {
            let take = data.len().min(BUF_SIZE - self.fill);
            self.cur.bytes_mut()[self.fill..self.fill + take].copy_from_slice(&data[..take]);
            self.fill += take;
            data = &data[take..];
            if self.fill == BUF_SIZE {
                let next = self.free_buffer().await;
                let sent = next.and_then(|next| {
                    let full = std::mem::replace(&mut self.cur, next);
                    self.send(full, 0, BUF_SIZE)
                });
                if let Err(e) = sent {
                    self.broken = true;
                    return Err(e);
                }
                self.cur_start += BUF_SIZE as u64;
                self.fill = 0;
            }
        }
        Ok(())
    }

    fn send(&mut self, buf: AlignedBuf, from: usize, len: usize) -> io::Result<()> {
        let job = WriteJob {
            buf,
            at: self.cur_start,
            from,
            len,
        };
        let jobs = self.jobs.as_ref().ok_or_else(worker_gone)?;
        jobs.send(job).map_err(|_| worker_gone())?;
        self.in_flight += 1;
        Ok(())
    }

    async fn free_buffer(&mut self) -> io::Result<AlignedBuf> {
        if let Some(buf) = self.spare.pop() {
            return Ok(buf);
        }
        if self.allocated < BUFFERS {
            let buf = AlignedBuf::new()?;
            self.allocated += 1;
            return Ok(buf);
        }
        self.wait_one().await
    }

    /// The next buffer the writer thread is done with (its write's error, if any).
    async fn wait_one(&mut self) -> io::Result<AlignedBuf> {
        let (buf, result) = self.done.recv().await.ok_or_else(worker_gone)?;
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

    /// Writes what the current buffer holds since the last flush (from the aligned
    /// block it starts in), after every write on its way. Afterwards every byte taken
    /// is on disk (in the device's cache until an fsync) and the file may extend up to
    /// `ALIGN - 1` bytes past them.
    pub async fn flush(&mut self) -> io::Result<u64> {
        self.check()?;
        let end = self.cur_start + self.fill as u64;
        if end > self.flushed {
            let from = (self.flushed.saturating_sub(self.cur_start) as usize) / ALIGN * ALIGN;
            let len = self.fill.div_ceil(ALIGN) * ALIGN;
            // The current buffer goes to the writer thread too and comes back last.
            let cur = std::mem::replace(&mut self.cur, AlignedBuf::empty());
            if let Err(e) = self.send(cur, from, len) {
                self.broken = true;
                return Err(e);
            }
        }
        let mut last = None;
        while self.in_flight > 0 {
            match self.wait_one().await {
                Ok(buf) => {
                    if let Some(earlier) = last.replace(buf) {
                        self.spare.push(earlier);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if end > self.flushed {
            self.cur = last.ok_or_else(worker_gone)?;
        } else if let Some(buf) = last {
            self.spare.push(buf);
        }
        self.flushed = end;
        Ok(end)
    }

    /// Ends the writer thread once the writes on their way are done, without blocking.
    pub async fn close(mut self) {
        drop(self.jobs.take());
        while self.done.recv().await.is_some() {}
        // The thread has handed back its last buffer and is ending: joining is immediate.
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

/// How a filesystem says that it does not do `O_DIRECT` (for this file, or this write).
fn refuses_direct(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
    )
}

/// Puts the open file description of `file` in `O_DIRECT` mode, or takes it out.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: a valid fd; F_GETFL/F_SETFL take and give ints.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let wanted = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if wanted != flags && unsafe { libc::fcntl(fd, libc::F_SETFL, wanted) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `data` at `at` with `O_DIRECT`, or buffered once the filesystem refused that
/// (the description then leaves direct mode for good).
fn write_all(file: &File, refused: &mut bool, data: &[u8], at: u64) -> io::Result<()> {
    super::slow_disk::pause(file);
    if !*refused {
        match file.write_all_at(data, at) {
            Err(e) if refuses_direct(&e) => {
                tracing::debug!(error = %e, "O_DIRECT write refused; writing through the page cache");
                *refused = true;
                set_direct(file, false)?;
            }
            other => return other,
        }
    }
    file.write_all_at(data, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::path::Path;

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
    fn a_buffer_starts_at_a_huge_page_boundary_and_holds_zeros() {
        let mut bufs: Vec<AlignedBuf> = (0..3).map(|_| AlignedBuf::new().unwrap()).collect();
        for (i, buf) in bufs.iter_mut().enumerate() {
            assert_eq!(buf.bytes().as_ptr() as usize % HUGE, 0);
            assert_eq!(buf.bytes().len(), BUF_SIZE);
            assert!(buf.bytes().iter().all(|&b| b == 0));
            buf.bytes_mut().fill(i as u8 + 1);
        }
        // Each its own memory.
        for (i, buf) in bufs.iter().enumerate() {
            assert!(buf.bytes().iter().all(|&b| b == i as u8 + 1));
        }
        assert!(AlignedBuf::empty().bytes().is_empty());
    }

    #[tokio::test]
    async fn appends_after_an_unaligned_start_in_odd_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let head = pattern(5_000, 1);
        std::fs::write(&path, &head).unwrap();
        let file = open_rw(&path);
        let Some(mut w) = DirectWriter::open(&file, head.len() as u64).unwrap() else {
            eprintln!("no O_DIRECT on this filesystem; nothing to test");
            return;
        };
        // More than all buffers together, so the writer thread hands buffers back.
        let body = pattern(BUF_SIZE * BUFFERS * 2 + 12_345, 2);
        for piece in body.chunks(100_003) {
            w.push(piece).await.unwrap();
        }
        assert!(w.unflushed() > 0);
        let end = w.flush().await.unwrap();
        assert_eq!(end, (head.len() + body.len()) as u64);
        assert_eq!(w.unflushed(), 0);
        w.close().await;
        let got = std::fs::read(&path).unwrap();
        assert!(got.len() as u64 >= end, "the file holds every byte");
        assert_eq!(&got[..head.len()], &head[..]);
        assert_eq!(&got[head.len()..end as usize], &body[..]);
    }

    #[tokio::test]
    async fn a_flush_in_the_middle_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let file = open_rw(&path);
        let Some(mut w) = DirectWriter::open(&file, 0).unwrap() else {
            return;
        };
        let body = pattern(3 * BUF_SIZE + 70_000, 3);
        // Flushes inside one buffer (twice, the second from an unaligned point), then
        // across buffers: each time the file holds every byte taken so far.
        let cuts = [
            BUF_SIZE / 2 + 7,
            BUF_SIZE / 2 + 5000,
            2 * BUF_SIZE + 3,
            body.len(),
        ];
        let mut at = 0;
        for cut in cuts {
            w.push(&body[at..cut]).await.unwrap();
            assert_eq!(w.flush().await.unwrap(), cut as u64);
            assert_eq!(
                w.flush().await.unwrap(),
                cut as u64,
                "a second flush is a no-op"
            );
            assert_eq!(&std::fs::read(&path).unwrap()[..cut], &body[..cut]);
            at = cut;
        }
        w.close().await;
        assert_eq!(&std::fs::read(&path).unwrap()[..body.len()], &body[..]);
    }

    #[tokio::test]
    async fn a_failed_write_is_never_claimed_as_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let file = open_rw(&path);
        // 1 PiB is past the largest file ext4 (and most filesystems) can hold: EFBIG.
        let Some(mut w) = DirectWriter::open(&file, 1 << 50).unwrap() else {
            return;
        };
        let body = pattern(BUF_SIZE * BUFFERS + 1000, 5);
        let mut result = Ok(0);
        for piece in body.chunks(BUF_SIZE / 3) {
            if let Err(e) = w.push(piece).await {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            result = w.flush().await;
        }
        assert!(
            result.is_err(),
            "the write past the limit failed: {result:?}"
        );
        assert!(
            w.flush().await.is_err(),
            "a later flush does not claim its bytes"
        );
        assert!(w.push(b"more").await.is_err());
    }

    #[test]
    fn a_refused_direct_write_is_written_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = open_rw(&path);
        let mut refused = false;
        // An unaligned length is refused by O_DIRECT on every filesystem that takes it.
        let direct = file.try_clone().unwrap();
        if set_direct(&direct, true).is_err() {
            return;
        }
        let data = pattern(1000, 4);
        write_all(&direct, &mut refused, &data, 0).unwrap();
        assert!(refused);
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[tokio::test]
    async fn the_transfer_keeps_one_description_buffered_again_after_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let file = open_rw(&path);
        let Some(mut w) = DirectWriter::open(&file, 0).unwrap() else {
            return;
        };
        let flags =
            || unsafe { libc::fcntl(std::os::unix::io::AsRawFd::as_raw_fd(&file), libc::F_GETFL) };
        assert_ne!(
            flags() & libc::O_DIRECT,
            0,
            "the writer uses the transfer's own description"
        );
        w.push(&pattern(5000, 6)).await.unwrap();
        w.flush().await.unwrap();
        w.close().await;
        assert_eq!(
            flags() & libc::O_DIRECT,
            0,
            "buffered again once the writer is closed"
        );
        // An unaligned buffered read works again on the transfer's handle.
        let mut back = [0u8; 7];
        file.read_exact_at(&mut back, 3).unwrap();
        assert_eq!(&back[..], &pattern(5000, 6)[3..10]);
    }
}
