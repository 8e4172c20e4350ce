//! The journal: our own write-ahead record of the download records and the settings,
//! kept beside sled (`data_dir/journal/downloads.log`).
//!
//! sled 0.34 meets a damaged log by dropping every record after the damage, silently,
//! and rewrites the log as it opens. The journal is a second, simpler record of the same
//! writes, read only at start-up ([`super::startup`]): append-only, every entry framed
//! and checksummed, written in the same call that writes sled and written out to the
//! disk by the same group-commit flush, the way sled writes out its own log.
//!
//! A frame: [`MAGIC`], the payload's length (u32 LE), the CRC32 of length and payload
//! (u32 LE), then the payload: sequence number (u64 LE), kind (u8), body. A downloads
//! body is a count (u32 LE) of operations, each `1 id value` (put) or `2 id` (remove),
//! every byte string prefixed by its length (u32 LE). A `Durable` entry says that sled
//! has flushed every entry up to its sequence number.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::StoreError;

/// Where every frame starts: what a reader looks for past damage.
const MAGIC: [u8; 4] = *b"MMj1";
const HEADER: u64 = 12;
/// Far above any entry we write (a batch of 10,000 records is about 5 MiB).
const MAX_PAYLOAD: u64 = 256 << 20;
/// The journal is rewritten from sled once it is this many times the size it had
/// when last written whole.
const COMPACT_FACTOR: u64 = 4;
const COMPACT_SLACK: u64 = 256 * 1024;

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Downloads = 1,
    Settings = 2,
    Durable = 3,
}

/// The journal's file, in `data_dir`.
pub(super) fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("journal").join("downloads.log")
}

/// An entry being built; its header is filled in when it is appended.
pub(super) struct Entry {
    buf: Vec<u8>,
    count: u32,
    kind: Kind,
}

impl Entry {
    fn new(kind: Kind, capacity: usize) -> Entry {
        let mut buf = Vec::with_capacity(capacity + 32);
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&[0; 16]); // length, CRC, sequence number
        buf.push(kind as u8);
        if kind == Kind::Downloads {
            buf.extend_from_slice(&[0; 4]);
        }
        Entry {
            buf,
            count: 0,
            kind,
        }
    }

    /// An entry of download puts and removes, applied as one.
    pub(super) fn downloads() -> Entry {
        Entry::new(Kind::Downloads, 512)
    }

    pub(super) fn settings(value: &[u8]) -> Entry {
        let mut e = Entry::new(Kind::Settings, value.len());
        e.buf.extend_from_slice(value);
        e
    }

    fn durable() -> Entry {
        Entry::new(Kind::Durable, 0)
    }

    pub(super) fn put(&mut self, id: &[u8], value: &[u8]) {
        self.buf.push(1);
        self.bytes(id);
        self.bytes(value);
        self.count += 1;
    }

    pub(super) fn remove(&mut self, id: &[u8]) {
        self.buf.push(2);
        self.bytes(id);
        self.count += 1;
    }

    /// How many operations it holds.
    pub(super) fn len(&self) -> u32 {
        self.count
    }

    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(b);
    }

    /// Fills in the header: the frame is ready to write.
    fn seal(&mut self, seq: u64) -> &[u8] {
        if self.kind == Kind::Downloads {
            self.buf[21..25].copy_from_slice(&self.count.to_le_bytes());
        }
        self.buf[12..20].copy_from_slice(&seq.to_le_bytes());
        let len = (self.buf.len() as u64 - HEADER) as u32;
        self.buf[4..8].copy_from_slice(&len.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.buf[4..8]);
        crc.update(&self.buf[HEADER as usize..]);
        self.buf[8..12].copy_from_slice(&crc.finalize().to_le_bytes());
        &self.buf
    }
}

/// One frame read back.
pub(super) struct Frame {
    /// Where the frame starts in the file.
    pub offset: u64,
    pub seq: u64,
    pub kind: Kind,
    payload: Vec<u8>,
}

/// One operation of a downloads entry; `at` is where the value starts in the file.
pub(super) enum Op<'a> {
    Put {
        id: &'a [u8],
        value: &'a [u8],
        at: u64,
    },
    Remove {
        id: &'a [u8],
    },
}

impl Frame {
    /// The settings' value and where it starts in the file.
    pub fn settings(&self) -> (&[u8], u64) {
        (&self.payload[9..], self.offset + HEADER + 9)
    }

    /// The operations of a downloads entry; `None` when the body does not parse
    /// (which its checksum makes a bug of ours, not damage).
    pub fn ops(&self) -> Option<Vec<Op<'_>>> {
        let p = &self.payload;
        let mut at = 9;
        let count = u32::from_le_bytes(p.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        let take = |at: &mut usize| -> Option<(&[u8], u64)> {
            let len = u32::from_le_bytes(p.get(*at..*at + 4)?.try_into().ok()?) as usize;
            let start = *at + 4;
            *at = start + len;
            Some((
                p.get(start..start + len)?,
                self.offset + HEADER + start as u64,
            ))
        };
        let mut ops = Vec::with_capacity(count.min(1 << 16) as usize);
        for _ in 0..count {
            let tag = *p.get(at)?;
            at += 1;
            let (id, _) = take(&mut at)?;
            ops.push(match tag {
                1 => {
                    let (value, value_at) = take(&mut at)?;
                    Op::Put {
                        id,
                        value,
                        at: value_at,
                    }
                }
                2 => Op::Remove { id },
                _ => return None,
            });
        }
        (at == p.len()).then_some(ops)
    }
}

/// What a read of the whole journal found.
pub(super) struct Scan {
    /// The end of the last good frame: what follows is a torn last entry (or nothing).
    pub end: u64,
    /// Where damage starts that is not a torn last entry (good frames follow it).
    pub damage: Option<u64>,
    /// The highest sequence number read.
    pub seq: u64,
    /// How many frames were read.
    pub frames: u64,
}

/// Reads every good frame in order, up to the first that is not; tells a torn last
/// entry (nothing good after it) from damage (a good frame follows).
pub(super) fn scan(path: &Path, mut each: impl FnMut(&Frame)) -> std::io::Result<Scan> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(256 * 1024, &file);
    let mut scan = Scan {
        end: 0,
        damage: None,
        seq: 0,
        frames: 0,
    };
    while let Some(frame) = read_frame(&mut reader, scan.end, len)? {
        scan.end += HEADER + frame.payload.len() as u64;
        scan.seq = scan.seq.max(frame.seq);
        scan.frames += 1;
        each(&frame);
    }
    if scan.end < len && good_frame_after(&file, scan.end + 1, len)? {
        scan.damage = Some(scan.end);
    }
    Ok(scan)
}

/// The frame at `offset`, or `None` when there is none there (the end, a torn frame,
/// or damage).
fn read_frame(reader: &mut impl Read, offset: u64, len: u64) -> std::io::Result<Option<Frame>> {
    if len - offset < HEADER {
        return Ok(None);
    }
    let mut header = [0u8; HEADER as usize];
    reader.read_exact(&mut header)?;
    let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as u64;
    if header[..4] != MAGIC || !(9..=MAX_PAYLOAD).contains(&size) || size > len - offset - HEADER {
        return Ok(None);
    }
    let mut payload = vec![0; size as usize];
    reader.read_exact(&mut payload)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[4..8]);
    crc.update(&payload);
    if crc.finalize().to_le_bytes() != header[8..12] {
        return Ok(None);
    }
    let kind = match payload[8] {
        1 => Kind::Downloads,
        2 => Kind::Settings,
        3 => Kind::Durable,
        _ => return Ok(None),
    };
    let seq = u64::from_le_bytes(payload[..8].try_into().unwrap_or_default());
    Ok(Some(Frame {
        offset,
        seq,
        kind,
        payload,
    }))
}

/// Whether a good frame starts anywhere in `from..len`.
fn good_frame_after(file: &File, from: u64, len: u64) -> std::io::Result<bool> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize + 3];
    let mut at = from;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        for i in 0..n.saturating_sub(3) {
            if buf[i..i + 4] != MAGIC {
                continue;
            }
            let offset = at + i as u64;
            let mut rest = BufReader::new(ReadAt { file, at: offset });
            if read_frame(&mut rest, offset, len)?.is_some() {
                return Ok(true);
            }
        }
        at += CHUNK;
    }
    Ok(false)
}

/// A `Read` over a file from an offset, for [`read_frame`] at a found candidate.
struct ReadAt<'a> {
    file: &'a File,
    at: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The open journal: appends go through one lock, in the order they reach sled.
pub(super) struct Journal {
    path: PathBuf,
    state: Mutex<Writer>,
    /// The data dir's lock, held as long as the journal is open.
    _lock: super::lock::DirLock,
    /// How many syncs wrote something out (what group commit saves is counted here).
    pub(super) syncs: std::sync::atomic::AtomicU64,
}

struct Writer {
    file: Arc<File>,
    /// The last sequence number written.
    seq: u64,
    /// The last sequence number a `Durable` entry covers.
    marked: u64,
    /// The last sequence number fsynced.
    synced: u64,
    size: u64,
    /// The size when it was last written whole.
    base: u64,
}

impl Journal {
    /// Opens the journal to append after its last good frame (a torn last entry is cut).
    pub(super) fn resume(
        data_dir: &Path,
        scan: &Scan,
        marked: u64,
        lock: super::lock::DirLock,
    ) -> std::io::Result<Journal> {
        let path = path(data_dir);
        // Appends go to the end, wherever a cut left it.
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        if file.metadata()?.len() != scan.end {
            file.set_len(scan.end)?;
            file.sync_all()?;
        }
        Ok(Journal {
            state: Mutex::new(Writer {
                file: Arc::new(file),
                seq: scan.seq,
                marked,
                synced: scan.seq,
                size: scan.end,
                base: scan.end,
            }),
            path,
            _lock: lock,
            syncs: Default::default(),
        })
    }

    /// Writes the journal whole from sled's records (the first start with a journal,
    /// or after damage to it) and opens it.
    pub(super) fn create(
        data_dir: &Path,
        seq: u64,
        downloads: &sled::Tree,
        settings: Option<sled::IVec>,
        lock: super::lock::DirLock,
    ) -> Result<Journal, StoreError> {
        let path = path(data_dir);
        let (file, size) = write_whole(&path, seq, downloads, settings)?;
        Ok(Journal {
            state: Mutex::new(Writer {
                file: Arc::new(file),
                seq,
                marked: seq,
                synced: seq,
                size,
                base: size,
            }),
            path,
            _lock: lock,
            syncs: Default::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding the lock leaves at worst a torn last entry, which the
        // next append is written after: nothing to refuse for.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `entry`, then runs `apply` (the same write to sled) under the same lock,
    /// so that the journal's order is sled's.
    ///
    /// When sled refuses the write (it stays failed after an I/O error of its own,
    /// e.g. a full disk met by a background flush), the entry is cut off again: the
    /// caller answers a refusal, and a start-up must not replay what was refused.
    pub(super) fn append<T>(
        &self,
        mut entry: Entry,
        apply: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut w = self.lock();
        let seq = w.seq + 1;
        let before = w.size;
        w.write(entry.seal(seq))?;
        w.seq = seq;
        let applied = apply();
        if applied.is_err() {
            w.unwrite(before, seq - 1);
        }
        applied
    }

    /// Writes what was appended to the disk (nothing when nothing was: a flush of
    /// checkpoints only), the way sled writes its own log: `sync_file_range`, which
    /// waits for the bytes to reach the disk but flushes no disk cache and no file
    /// size. The journal is then as durable as sled (kill -9 loses nothing; a power
    /// cut is not a promise either makes), and a flush costs what it did: a full
    /// `fdatasync` took 3-4 ms here, which halved the rate of single adds. Returns
    /// the last sequence number covered.
    pub(super) fn sync(&self) -> Result<u64, StoreError> {
        let (seq, file) = {
            let w = self.lock();
            (w.seq, (w.seq > w.synced).then(|| w.file.clone()))
        };
        if let Some(file) = file {
            write_out(&file).map_err(StoreError::Journal)?;
            self.syncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut w = self.lock();
            w.synced = w.synced.max(seq);
        }
        Ok(seq)
    }

    /// The last sequence number written, when a sync has not covered it yet.
    pub(super) fn unsynced(&self) -> Option<u64> {
        let w = self.lock();
        (w.seq > w.synced).then_some(w.seq)
    }

    /// The last sequence number a sync covered.
    pub(super) fn synced(&self) -> u64 {
        self.lock().synced
    }

    /// Records that sled has flushed everything up to `seq`; rewrites the journal from
    /// sled when it has grown past a few times its last whole size and nothing was
    /// written since the flush (so that sled's records are the ones it made durable).
    pub(super) fn durable(
        &self,
        seq: u64,
        downloads: &sled::Tree,
        settings: impl FnOnce() -> Option<sled::IVec>,
    ) -> Result<(), StoreError> {
        let mut w = self.lock();
        if seq <= w.marked {
            return Ok(());
        }
        w.write(Entry::durable().seal(seq))?;
        w.marked = seq;
        if w.seq == seq && w.size > COMPACT_FACTOR * w.base + COMPACT_SLACK {
            let (file, size) = write_whole(&self.path, seq, downloads, settings())?;
            tracing::debug!(
                from = w.size,
                to = size,
                "journal rewritten from the database"
            );
            w.file = Arc::new(file);
            w.size = size;
            w.base = size;
        }
        Ok(())
    }
}

impl Writer {
    /// Cuts the last entry off (its frame starts at `size`).
    fn unwrite(&mut self, size: u64, seq: u64) {
        match self.file.set_len(size) {
            Ok(()) => {
                self.size = size;
                self.seq = seq;
                self.synced = self.synced.min(seq);
            }
            // Left in place it is replayed at the next start: say so.
            Err(e) => tracing::error!(error = %e, "cannot cut a refused entry off the journal"),
        }
    }

    /// Writes a whole frame, or (on failure, e.g. a full disk) nothing.
    fn write(&mut self, frame: &[u8]) -> Result<(), StoreError> {
        match (&*self.file).write_all(frame) {
            Ok(()) => {
                self.size += frame.len() as u64;
                Ok(())
            }
            Err(e) => {
                // A partial frame followed by good ones would read as damage.
                if let Err(cut) = self.file.set_len(self.size) {
                    tracing::error!(error = %cut, "cannot cut a partly written journal entry");
                }
                Err(StoreError::Journal(e))
            }
        }
    }
}

/// sled's flush of its log (`pagecache/iobuf.rs`): the whole file's dirty pages
/// written and waited for; `fdatasync` where the call is missing.
fn write_out(file: &File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a system call on a descriptor `file` keeps open; no memory is passed.
    let ret = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            0,
            0,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    match std::io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::ENOSYS) => file.sync_data(),
        e => Err(e),
    }
}

/// Writes every record of `downloads` and the settings to a new journal beside `path`
/// (all with sequence number `seq`, then a `Durable` entry), fsyncs it and renames it
/// over `path`. Returns it, open for appending, and its size.
fn write_whole(
    path: &Path,
    seq: u64,
    downloads: &sled::Tree,
    settings: Option<sled::IVec>,
) -> Result<(File, u64), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(StoreError::Journal)?;
    let tmp = path.with_extension("log.new");
    let file = File::create(&tmp).map_err(StoreError::Journal)?;
    let mut out = BufWriter::with_capacity(256 * 1024, &file);
    let mut size = 0u64;
    let mut put = |entry: &mut Entry| -> Result<(), StoreError> {
        let frame = entry.seal(seq);
        size += frame.len() as u64;
        out.write_all(frame).map_err(StoreError::Journal)
    };
    for item in downloads.iter() {
        let (id, value) = item?;
        let mut e = Entry::downloads();
        e.put(&id, &value);
        put(&mut e)?;
    }
    if let Some(value) = settings {
        put(&mut Entry::settings(&value))?;
    }
    put(&mut Entry::durable())?;
    out.flush().map_err(StoreError::Journal)?;
    drop(out);
    file.sync_all().map_err(StoreError::Journal)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(StoreError::Journal)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::Journal)?;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(StoreError::Journal)?;
    Ok((file, size))
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
