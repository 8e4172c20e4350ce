//! The `.part`'s write lease (`fcntl(F_SETLEASE, F_WRLCK)`): how a one-connection
//! transfer knows that nothing but itself wrote the file, without reading it back.
//!
//! The kernel grants a write lease only to the one open file description of a file, and
//! breaks it before anyone else opens that file or truncates it by name: the opener
//! waits until the holder lets go. So a lease held from the moment the transfer opened
//! the `.part` to its end proves that what the transfer wrote is what is on disk, and
//! the end needs no read-back. (Every other way to write a file goes through an open
//! file description; one opened before ours makes the lease refused.)
//!
//! A keeper watches the lease: one thread polls every lease held (a thread per `.part`
//! cost more than the rest of a small file's transfer). When one breaks, the opener is
//! still waiting: the bytes on disk are still the transfer's alone, so a thread of its
//! own (a break is rare) hashes them, then lets go. From there the transfer hashes what it receives (continuing that digest) and the
//! end compares it with the file read back, as on a filesystem without leases. An
//! opener so waits a few milliseconds, plus the time to hash what is on disk.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::hashing::{hash_while, ReadBuf};

/// How often the keeper looks at the lease.
const POLL: Duration = Duration::from_millis(10);
/// How long the kernel lets an opener wait before it breaks the lease itself, when
/// `/proc/sys/fs/lease-break-time` cannot be read (its default).
const DEFAULT_BREAK_TIME: Duration = Duration::from_secs(45);
/// The longest an opener is kept waiting while the prefix is hashed: the bytes past
/// what was hashed by then are fetched again.
const LONGEST_WAIT: Duration = Duration::from_secs(30);

/// What the keeper did when the lease broke.
#[derive(Debug)]
pub(in crate::engine) enum Break {
    /// The transfer was hashing what it received from byte 0: nothing more was needed.
    Hashing,
    /// The digest of the first `len` bytes as they were on disk while still ours alone
    /// (all the transfer had written, or what could be hashed in [`LONGEST_WAIT`]).
    Prefix { len: u64, digest: Sha256 },
    /// Nothing could be vouched for (the file was cut meanwhile, or hashing failed).
    Nothing,
}

/// The transfer's side: what it tells the keeper, and what the keeper found.
struct Shared {
    file: File,
    /// Bytes from 0 the transfer has written and will not write again.
    on_disk: AtomicU64,
    /// Bumped before the transfer cuts the file: a prefix hashed across a cut is void.
    cuts: AtomicU64,
    /// The transfer hashes what it receives from byte 0 (a break then needs no prefix).
    hashing: AtomicBool,
    broken: Mutex<Option<Break>>,
    stop: AtomicBool,
    /// Held while `stop` is set and the lease let go, and while a break's outcome is
    /// recorded: a break met after the release never lets go of a lease taken since on
    /// the same open file description (leases belong to the description).
    gate: Mutex<()>,
}

/// The write lease on one `.part`, watched by the keeper; let go when dropped.
pub(in crate::engine) struct Lease {
    shared: Option<Arc<Shared>>,
    /// A break was handed to the transfer (or the lease was never held).
    spent: bool,
}

/// The one keeper thread and the leases it watches.
struct Keeper {
    leases: Mutex<Vec<Arc<Shared>>>,
    thread: std::thread::Thread,
}

/// The keeper, started with the first lease; `None` when no thread could be had (then
/// no lease is held: the ends are read back).
fn keeper() -> Option<&'static Keeper> {
    static KEEPER: OnceLock<Option<Keeper>> = OnceLock::new();
    KEEPER
        .get_or_init(|| {
            let spawned = std::thread::Builder::new()
                .name("part-lease".into())
                .spawn(|| {
                    // Blocks until the keeper is set (`OnceLock`), then watches.
                    if let Some(k) = keeper() {
                        watch(k);
                    }
                });
            match spawned {
                Ok(handle) => Some(Keeper {
                    leases: Mutex::new(Vec::new()),
                    thread: handle.thread().clone(),
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "no lease keeper thread: every .part is read back at its end");
                    None
                }
            }
        })
        .as_ref()
}

impl Lease {
    /// Takes the lease on `file` (the `.part`, `on_disk` bytes long and kept). `None`
    /// inside when refused: another process has the file open, the filesystem keeps
    /// no leases (NFS, some FUSE), or leases are off (`fs.leases-enable`).
    pub(in crate::engine) fn take(file: &File, on_disk: u64, hashing: bool) -> Lease {
        let unheld = Lease {
            shared: None,
            spent: true,
        };
        let Some(keeper) = keeper() else {
            return unheld;
        };
        quiet_lease_signal();
        // SAFETY: a valid fd; F_SETLEASE takes an int.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) } != 0 {
            let e = std::io::Error::last_os_error();
            tracing::debug!(error = %e, "no write lease on the .part: its end is read back");
            return unheld;
        }
        let Ok(dup) = file.try_clone() else {
            unlease(file);
            return unheld;
        };
        let shared = Arc::new(Shared {
            file: dup,
            on_disk: AtomicU64::new(on_disk),
            cuts: AtomicU64::new(0),
            hashing: AtomicBool::new(hashing),
            broken: Mutex::new(None),
            stop: AtomicBool::new(false),
            gate: Mutex::new(()),
        });
        let first = {
            let mut leases = lock(&keeper.leases);
            leases.push(shared.clone());
            leases.len() == 1
        };
        if first {
            // It sleeps while it watches nothing.
            keeper.thread.unpark();
        }
        Lease {
            shared: Some(shared),
            spent: false,
        }
    }

    /// True while the lease has held since the file was opened: nothing else wrote it.
    pub(in crate::engine) fn intact(&self) -> bool {
        self.broken() == Some(false)
    }

    /// Whether the keeper met a break that the transfer has not taken yet.
    pub(in crate::engine) fn break_pending(&self) -> bool {
        self.broken() == Some(true)
    }

    /// Whether the keeper met a break; `None` once the lease is spent (or never held).
    fn broken(&self) -> Option<bool> {
        let s = self.shared.as_ref().filter(|_| !self.spent)?;
        Some(lock(&s.broken).is_some())
    }

    /// The break the keeper met, once (then the lease is spent for good).
    pub(in crate::engine) fn take_break(&mut self) -> Option<Break> {
        if self.spent {
            return None;
        }
        let found = lock(&self.shared.as_ref()?.broken).take();
        if found.is_some() {
            self.spent = true;
        }
        found
    }

    /// The transfer's bytes from 0 on disk are now `len` (after a write or a cut).
    pub(in crate::engine) fn set_on_disk(&self, len: u64) {
        if let Some(s) = &self.shared {
            s.on_disk.store(len, Ordering::Release);
        }
    }

    /// The transfer is about to cut the file to `len`.
    pub(in crate::engine) fn cutting(&self, len: u64) {
        if let Some(s) = &self.shared {
            // In this order: a keeper that sees the new count sees the new length too.
            s.on_disk.store(len, Ordering::Release);
            s.cuts.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Whether the transfer hashes what it receives from byte 0.
    pub(in crate::engine) fn set_hashing(&self, hashing: bool) {
        if let Some(s) = &self.shared {
            s.hashing.store(hashing, Ordering::Release);
        }
    }

    /// What the keeper was last told by [`Lease::set_hashing`]; `None` when unheld.
    #[cfg(test)]
    pub(in crate::engine) fn hashing(&self) -> Option<bool> {
        Some(self.shared.as_ref()?.hashing.load(Ordering::Acquire))
    }

    /// Lets go of the lease (the end was checked: nothing more depends on it).
    pub(in crate::engine) fn release(&mut self) {
        if let Some(s) = self.shared.take() {
            {
                let _gate = lock(&s.gate);
                s.stop.store(true, Ordering::Release);
                unlease(&s.file);
            }
            // A prefix hash under way stops at its next read.
            if let Some(k) = keeper() {
                lock(&k.leases).retain(|l| !Arc::ptr_eq(l, &s));
            }
        }
        self.spent = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The kernel tells a lease holder of a break with SIGIO, whose default action ends the
/// process; the keeper polls instead, so the signal is ignored.
fn quiet_lease_signal() {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| {
        // SAFETY: installing SIG_IGN is async-signal-safe and affects only SIGIO.
        unsafe {
            libc::signal(libc::SIGIO, libc::SIG_IGN);
        }
    });
}

fn unlease(file: &File) {
    // SAFETY: a valid fd; failure means there was no lease left to release.
    unsafe {
        libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK);
    }
}

/// The keeper: every [`POLL`], looks at each lease still held; a broken one leaves the
/// list and is met on a thread of its own. Sleeps while there is none.
fn watch(k: &Keeper) {
    loop {
        let broken: Vec<Arc<Shared>> = {
            let mut leases = lock(&k.leases);
            if leases.is_empty() {
                drop(leases);
                // Woken by the next `take` (a spurious wake only loops).
                std::thread::park();
                continue;
            }
            let mut found = Vec::new();
            leases.retain(|s| {
                // SAFETY: a valid fd (the `Shared` keeps its descriptor open).
                let now = unsafe { libc::fcntl(s.file.as_raw_fd(), libc::F_GETLEASE) };
                let gone = s.stop.load(Ordering::Acquire) || now != libc::F_WRLCK;
                if gone && !s.stop.load(Ordering::Acquire) {
                    found.push(s.clone());
                }
                !gone
            });
            found
        };
        for s in broken {
            let met = s.clone();
            let spawned = std::thread::Builder::new()
                .name("part-lease-break".into())
                .spawn(move || keep_break(&met));
            if spawned.is_err() {
                // No thread: met here (the other leases wait that long).
                keep_break(&s);
            }
        }
        std::thread::park_timeout(POLL);
    }
}

/// Meets a break (once), unless the transfer let go of the lease meanwhile.
fn keep_break(s: &Shared) {
    let found = meet_break(s);
    let _gate = lock(&s.gate);
    if s.stop.load(Ordering::Acquire) {
        return;
    }
    tracing::info!(outcome = ?found_name(&found), "someone opened the .part: it will be read back at the end");
    *lock(&s.broken) = Some(found);
    unlease(&s.file);
}

fn found_name(b: &Break) -> &'static str {
    match b {
        Break::Hashing => "already hashing",
        Break::Prefix { .. } => "prefix hashed",
        Break::Nothing => "nothing vouched for",
    }
}

/// While the opener still waits: hashes the bytes the transfer wrote, unless it hashes
/// what it receives already.
fn meet_break(s: &Shared) -> Break {
    if s.hashing.load(Ordering::Acquire) {
        return Break::Hashing;
    }
    let deadline = Instant::now() + longest_wait();
    let cuts = s.cuts.load(Ordering::Acquire);
    let len = s.on_disk.load(Ordering::Acquire);
    let hashed = hash_aligned(&s.file, len, &s.stop, deadline);
    let cut_meanwhile = s.cuts.load(Ordering::Acquire) != cuts;
    match hashed {
        // Past the deadline, the kernel may have let the opener in already.
        Ok((len, digest)) if !cut_meanwhile && Instant::now() < deadline => {
            Break::Prefix { len, digest }
        }
        _ => Break::Nothing,
    }
}

/// How long a prefix may be hashed: [`LONGEST_WAIT`], and well within the time after
/// which the kernel breaks the lease itself.
fn longest_wait() -> Duration {
    let kernel = std::fs::read_to_string("/proc/sys/fs/lease-break-time")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(DEFAULT_BREAK_TIME, Duration::from_secs);
    LONGEST_WAIT.min(kernel.saturating_sub(Duration::from_secs(2)))
}

/// The digest of the first `len` bytes, or of as many as were hashed by `deadline`
/// (their count comes with it), in aligned reads (the description may be in `O_DIRECT`
/// mode); gives up when `stop` is set.
fn hash_aligned(
    file: &File,
    len: u64,
    stop: &AtomicBool,
    deadline: Instant,
) -> std::io::Result<(u64, Sha256)> {
    let mut hasher = Sha256::new();
    // A whole read before the deadline is checked: a margin of one read remains.
    let go_on = || Instant::now() + Duration::from_millis(500) < deadline;
    let pos = hash_while(file, &mut hasher, &mut ReadBuf::new(), 0, len, || {
        go_on() && !stop.load(Ordering::Acquire)
    })?;
    if stop.load(Ordering::Acquire) {
        return Err(std::io::Error::other("stopped"));
    }
    Ok((pos, hasher))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    fn part(dir: &std::path::Path, data: &[u8]) -> (std::path::PathBuf, File) {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("f.part");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all(data).unwrap();
        (path, f)
    }

    #[test]
    fn an_opener_gets_through_at_once_and_the_prefix_is_what_was_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_001u32).map(|i| (i % 251) as u8).collect();
        let (path, file) = part(dir.path(), &data);
        let mut lease = Lease::take(&file, data.len() as u64, false);
        if lease.shared.is_none() {
            eprintln!("no leases on this filesystem; nothing to test");
            return;
        }
        assert!(lease.intact());
        let started = Instant::now();
        // Another opener (the kernel treats any other open file description alike).
        let other = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(5),
            "the opener waited {waited:?}"
        );
        other.write_all_at(b"XX", 10).unwrap();
        assert!(!lease.intact(), "a broken lease is not taken for intact");
        match lease.take_break() {
            Some(Break::Prefix { len, digest }) => {
                assert_eq!(len, data.len() as u64);
                assert_eq!(
                    digest.finalize(),
                    Sha256::digest(&data),
                    "hashed before the write"
                );
            }
            other => panic!("expected the prefix, got {other:?}"),
        }
        assert!(lease.take_break().is_none(), "a break is handed over once");
    }

    /// One keeper watches every lease: no thread per `.part` (the threads' names are
    /// read from /proc; a break's own thread is `part-lease-brea`, cut by the kernel).
    #[test]
    fn many_leases_share_one_keeper_thread() {
        let dir = tempfile::tempdir().unwrap();
        let held: Vec<Lease> = (0..4)
            .map(|i| {
                let (_, file) = part(&dir.path().join(i.to_string()), b"x");
                Lease::take(&file, 1, true)
            })
            .collect();
        if held.iter().any(|l| l.shared.is_none()) {
            eprintln!("no leases on this filesystem; nothing to test");
            return;
        }
        let keepers = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.trim() == "part-lease")
                .count()
        };
        // A thread names itself once it runs: a moment for every one there is to do so.
        let deadline = Instant::now() + Duration::from_secs(5);
        while keepers() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(keepers(), 1, "4 leases held");
        assert!(held.iter().all(Lease::intact));
    }

    /// The shared keeper meets a break on the lease that broke, and on no other; a
    /// lease let go meanwhile is never reported broken.
    #[test]
    fn a_break_is_met_on_its_own_lease_only() {
        let dir = tempfile::tempdir().unwrap();
        let (a_path, a_file) = part(&dir.path().join("a"), b"aaaa");
        let (_, b_file) = part(&dir.path().join("b"), b"bbbb");
        let (c_path, c_file) = part(&dir.path().join("c"), b"cccc");
        let mut a = Lease::take(&a_file, 4, false);
        let b = Lease::take(&b_file, 4, false);
        let mut c = Lease::take(&c_file, 4, false);
        if a.shared.is_none() || b.shared.is_none() || c.shared.is_none() {
            eprintln!("no leases on this filesystem; nothing to test");
            return;
        }
        c.release();
        let _c_reader = File::open(&c_path).unwrap();
        let _a_reader = File::open(&a_path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while a.intact() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(matches!(a.take_break(), Some(Break::Prefix { len: 4, .. })));
        std::thread::sleep(POLL * 3);
        assert!(b.intact(), "the other lease still holds");
        assert!(c.take_break().is_none(), "a lease let go is not broken");
    }

    #[test]
    fn a_prefix_is_hashed_as_far_as_time_allows_in_aligned_reads() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..2_500_003u32).map(|i| (i % 253) as u8).collect();
        let (_, file) = part(dir.path(), &data);
        let stop = AtomicBool::new(false);
        let later = Instant::now() + Duration::from_secs(60);
        let (len, digest) = hash_aligned(&file, 2_400_001, &stop, later).unwrap();
        assert_eq!(len, 2_400_001);
        assert_eq!(digest.finalize(), Sha256::digest(&data[..2_400_001]));
        // No time left: nothing is vouched for, and says so by its length.
        let (len, digest) = hash_aligned(&file, 2_400_001, &stop, Instant::now()).unwrap();
        assert_eq!(len, 0);
        assert_eq!(digest.finalize(), Sha256::digest(b""));
        stop.store(true, Ordering::Release);
        assert!(
            hash_aligned(&file, 10, &stop, later).is_err(),
            "a stop ends it"
        );
    }

    #[test]
    fn a_transfer_that_hashes_needs_no_prefix_and_a_second_description_refuses_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = part(dir.path(), b"hello");
        let mut lease = Lease::take(&file, 5, true);
        if lease.shared.is_none() {
            return;
        }
        let other = File::open(&path).unwrap();
        // The keeper has met the break once the open returns; its record follows at once.
        let deadline = Instant::now() + Duration::from_secs(5);
        while lease.intact() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(matches!(lease.take_break(), Some(Break::Hashing)));
        drop(lease);
        let refused = Lease::take(&file, 5, false);
        assert!(!refused.intact(), "another open description: no lease");
        drop(other);
    }
}
