//! Start-up: the data dir's lock, sled's files kept as found, and the journal compared
//! with what sled opened.
//!
//! sled rewrites its log as it opens, dropping whatever follows damage; so before it
//! opens, its folder is copied aside as found. Then sled's download records and settings
//! are compared with the journal's:
//! - the same: the copy is deleted;
//! - different only where writes were not flushed yet when the process ended (entries
//!   after the journal's last `Durable` mark): sled is brought up to the journal, quietly;
//! - different anywhere else (damage): the copy is kept as `damaged-<time>/v1`, sled is
//!   rewritten from the journal, and one warning line says so;
//! - sled cannot be read, or the journal is damaged too and sled lacks downloads it
//!   names: sled's files are put back as found and start-up stops with one line.
//!
//! Checkpoints and the library are not compared: they are caches (a lost checkpoint
//! costs a download restarted, a lost library record a file hashed again).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::journal::{self, Frame, Journal, Kind, Op, Scan};
use super::lock::DirLock;
use super::{StoreError, SETTINGS_KEY};

/// Where sled's folder is copied before sled opens it.
const AS_FOUND: &str = ".v1-as-found";

/// A copy of sled's folder as it was before sled opened it.
pub(super) struct AsFound {
    data_dir: PathBuf,
    /// `None` once kept or discarded, or when there was no folder to copy.
    copy: Option<PathBuf>,
    /// Whether sled's folder existed.
    existed: bool,
}

impl AsFound {
    pub(super) fn copy(data_dir: &Path) -> Result<AsFound, StoreError> {
        let v1 = data_dir.join("v1");
        let copy = data_dir.join(AS_FOUND);
        if copy.exists() {
            // Left by a start-up that ended midway: put back when a refusal's restore
            // was cut short, else stale (the journal was never touched).
            if v1.exists() {
                std::fs::remove_dir_all(&copy).map_err(StoreError::DataDir)?;
            } else {
                std::fs::rename(&copy, &v1).map_err(StoreError::DataDir)?;
            }
        }
        let existed = v1.is_dir();
        if existed {
            copy_dir(&v1, &copy).map_err(StoreError::DataDir)?;
        }
        Ok(AsFound {
            data_dir: data_dir.to_owned(),
            copy: existed.then_some(copy),
            existed,
        })
    }

    /// The copy is not needed: sled's files were fine.
    pub(super) fn discard(&mut self) {
        if let Some(copy) = self.copy.take() {
            if let Err(e) = std::fs::remove_dir_all(&copy) {
                tracing::warn!(path = %copy.display(), error = %e, "cannot remove a copy of the database");
            }
        }
    }

    /// Keeps the copy, fsynced, as `into/v1`, before anything rewrites sled.
    fn keep(&mut self, into: &Path) -> Result<(), StoreError> {
        if let Some(copy) = self.copy.take() {
            sync_tree(&copy).map_err(StoreError::DataDir)?;
            std::fs::rename(&copy, into.join("v1")).map_err(StoreError::DataDir)?;
            sync_dir(into).map_err(StoreError::DataDir)?;
            sync_dir(&self.data_dir).map_err(StoreError::DataDir)?;
        }
        Ok(())
    }

    /// Puts sled's folder back as it was found (sled may have rewritten it before it
    /// failed, or before the journal was found damaged): a refusal changes nothing.
    pub(super) fn restore(&mut self) {
        let v1 = self.data_dir.join("v1");
        let rejected = self.data_dir.join(".v1-rejected");
        let result = match self.copy.take() {
            Some(copy) => std::fs::rename(&v1, &rejected)
                .and_then(|_| std::fs::rename(&copy, &v1))
                .and_then(|_| std::fs::remove_dir_all(&rejected)),
            None if !self.existed && v1.exists() => std::fs::remove_dir_all(&v1),
            None => Ok(()),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot put the database's files back as found");
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() {
            // copy_file_range: within one filesystem, no bytes pass through us.
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        } else {
            File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A new `data_dir/damaged-<UTC time>` folder.
fn damaged_dir(data_dir: &Path) -> Result<PathBuf, StoreError> {
    let time = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "-");
    let mut n = 1;
    loop {
        let name = match n {
            1 => format!("damaged-{time}"),
            n => format!("damaged-{time}-{n}"),
        };
        let dir = data_dir.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(StoreError::DataDir(e)),
        }
    }
}

/// A value of the journal: its digest, and where it is in the file.
#[derive(Clone, Copy)]
struct Val {
    digest: u64,
    at: u64,
    len: u32,
}

fn digest(bytes: &[u8]) -> u64 {
    let h = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[..8]);
    u64::from_le_bytes(first)
}

/// The values one key had, from the last one sled must have made durable on.
#[derive(Default)]
struct History {
    changes: Vec<(u64, Option<Val>)>,
    seen: bool,
}

impl History {
    fn push(&mut self, seq: u64, value: Option<Val>, marker: u64) {
        if let Some(i) = self.changes.iter().rposition(|(s, _)| *s <= marker) {
            self.changes.drain(..i);
        }
        self.changes.push((seq, value));
    }

    fn last(&self) -> Option<Val> {
        self.changes.last().and_then(|(_, v)| *v)
    }

    /// Whether sled may hold `digest` (`None`: nothing) without damage: the value
    /// durable at `marker`, or one written after it (not yet flushed at a crash).
    fn accepts(&self, digest: Option<u64>, marker: u64) -> bool {
        let from = self.changes.iter().rposition(|(s, _)| *s <= marker);
        if from.is_none() && digest.is_none() {
            return true; // before its first entry, the key did not exist
        }
        self.changes[from.unwrap_or(0)..]
            .iter()
            .any(|(_, v)| v.map(|v| v.digest) == digest)
    }
}

/// The journal read whole: every key's recent values, by key.
#[derive(Default)]
struct Replay {
    downloads: HashMap<Box<[u8]>, History>,
    settings: History,
    /// The last `Durable` mark: sled flushed every entry up to it.
    marker: u64,
    malformed: bool,
}

impl Replay {
    fn read(path: &Path) -> std::io::Result<(Replay, Scan)> {
        let mut r = Replay::default();
        let scan = journal::scan(path, |f| r.add(f))?;
        Ok((r, scan))
    }

    fn add(&mut self, f: &Frame) {
        let val = |value: &[u8], at: u64| Val {
            digest: digest(value),
            at,
            len: value.len() as u32,
        };
        match f.kind {
            Kind::Durable => self.marker = self.marker.max(f.seq),
            Kind::Settings => {
                let (value, at) = f.settings();
                self.settings.push(f.seq, Some(val(value, at)), self.marker);
            }
            Kind::Downloads => match f.ops() {
                None => self.malformed = true,
                Some(ops) => {
                    for op in ops {
                        let (id, value) = match op {
                            Op::Put { id, value, at } => (id, Some(val(value, at))),
                            Op::Remove { id } => (id, None),
                        };
                        self.downloads.entry(id.into()).or_default().push(
                            f.seq,
                            value,
                            self.marker,
                        );
                    }
                }
            },
        }
    }

    fn live(&self) -> usize {
        self.downloads
            .values()
            .filter(|h| h.last().is_some())
            .count()
    }
}

/// How sled differs from the journal.
#[derive(Default)]
struct Diff {
    /// What to write to sled: the journal's last value of each key that differs.
    fixes: Vec<(Box<[u8]>, Option<Val>)>,
    settings: Option<Option<Val>>,
    /// Differences explained by writes not yet flushed when the process ended.
    unflushed: usize,
    /// Damage: records missing, changed, or that the journal never had.
    lost: usize,
    changed: usize,
    extra: usize,
}

impl Diff {
    fn damaged(&self) -> usize {
        self.lost + self.changed + self.extra
    }
}

struct Trees {
    downloads: sled::Tree,
    checkpoints: sled::Tree,
    meta: sled::Tree,
}

fn compare(replay: &mut Replay, trees: &Trees) -> Result<Diff, StoreError> {
    let marker = replay.marker;
    let mut diff = Diff::default();
    let judge = |h: &History, have: Option<u64>, diff: &mut Diff| {
        if h.accepts(have, marker) {
            diff.unflushed += 1;
        } else if have.is_none() {
            diff.lost += 1;
        } else {
            diff.changed += 1;
        }
    };
    for item in trees.downloads.iter() {
        let (id, value) = item?;
        let have = digest(&value);
        match replay.downloads.get_mut(&*id) {
            // sled cannot make records up: the journal lost these (a cut journal),
            // so they are kept, and the journal is written again from sled.
            None => diff.extra += 1,
            Some(h) => {
                h.seen = true;
                if h.last().map(|v| v.digest) != Some(have) {
                    judge(h, Some(have), &mut diff);
                    diff.fixes.push((id.to_vec().into(), h.last()));
                }
            }
        }
    }
    for (id, h) in &replay.downloads {
        if let (false, Some(v)) = (h.seen, h.last()) {
            judge(h, None, &mut diff);
            diff.fixes.push((id.clone(), Some(v)));
        }
    }
    let have = trees.meta.get(SETTINGS_KEY)?.map(|v| digest(&v));
    if replay.settings.changes.is_empty() && have.is_some() {
        diff.extra += 1;
    } else if have != replay.settings.last().map(|v| v.digest) {
        judge(&replay.settings, have, &mut diff);
        diff.settings = Some(replay.settings.last());
    }
    Ok(diff)
}

/// Writes the journal's values over sled's where they differ, and flushes.
fn apply(db: &sled::Db, trees: &Trees, journal: &Path, diff: &Diff) -> Result<(), StoreError> {
    let file = File::open(journal).map_err(StoreError::Journal)?;
    let read = |v: &Val| -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0; v.len as usize];
        file.read_exact_at(&mut buf, v.at)
            .map_err(StoreError::Journal)?;
        Ok(buf)
    };
    for (id, value) in &diff.fixes {
        match value {
            Some(v) => {
                trees.downloads.insert(&**id, read(v)?)?;
            }
            None => {
                trees.downloads.remove(&**id)?;
                trees.checkpoints.remove(&**id)?;
            }
        }
    }
    match &diff.settings {
        Some(Some(v)) => {
            trees.meta.insert(SETTINGS_KEY, read(v)?)?;
        }
        Some(None) => {
            trees.meta.remove(SETTINGS_KEY)?;
        }
        None => {}
    }
    db.flush()?;
    Ok(())
}

/// Compares sled with the journal and settles their differences (see the module's
/// doc); returns the journal, open to append. An error is a refusal to start, and
/// the caller puts sled's files back as found.
pub(super) fn reconcile(
    data_dir: &Path,
    db: &sled::Db,
    found: &mut AsFound,
    lock: DirLock,
) -> Result<Journal, StoreError> {
    let trees = Trees {
        downloads: db.open_tree("downloads")?,
        checkpoints: db.open_tree("checkpoints")?,
        meta: db.open_tree("meta")?,
    };
    let path = journal::path(data_dir);
    if !path.exists() {
        // The first start with a journal (or a new data dir): sled is all there is.
        let journal = Journal::create(
            data_dir,
            0,
            &trees.downloads,
            trees.meta.get(SETTINGS_KEY)?,
            lock,
        )?;
        tracing::info!(
            downloads = trees.downloads.len(),
            "journal written from the database"
        );
        found.discard();
        return Ok(journal);
    }
    let (mut replay, scan) = Replay::read(&path).map_err(StoreError::Journal)?;
    if scan.damage.is_some() || replay.malformed || scan.frames == 0 {
        return journal_damaged(data_dir, &replay, &scan, &trees, found, lock);
    }
    let diff = compare(&mut replay, &trees)?;
    let (marker, live) = (replay.marker, replay.live());
    drop(replay);
    if diff.fixes.is_empty() && diff.settings.is_none() && diff.extra == 0 {
        found.discard();
        return Journal::resume(data_dir, &scan, marker, lock).map_err(StoreError::Journal);
    }
    let kept = match diff.damaged() {
        0 => {
            found.discard();
            None
        }
        _ if !found.existed => Some("there was no database folder to keep".to_owned()),
        _ => {
            let dir = damaged_dir(data_dir)?;
            found.keep(&dir)?;
            Some(format!(
                "the database's files as found are kept in {}",
                dir.display()
            ))
        }
    };
    apply(db, &trees, &path, &diff)?;
    let journal = if diff.extra > 0 {
        let settings = trees.meta.get(SETTINGS_KEY)?;
        Journal::create(data_dir, scan.seq, &trees.downloads, settings, lock)?
    } else {
        let journal =
            Journal::resume(data_dir, &scan, marker, lock).map_err(StoreError::Journal)?;
        journal.durable(scan.seq, &trees.downloads, || {
            trees.meta.get(SETTINGS_KEY).ok().flatten()
        })?;
        journal
    };
    match kept {
        None => tracing::info!(
            records = diff.unflushed,
            "the database brought up to the journal: writes not yet flushed when the last run ended"
        ),
        Some(dir) => tracing::warn!(
            "the database in {} was damaged: {} download record(s) missing, {} changed, {} unknown to the journal (kept){}; \
             recovered all {live} downloads from the journal {}; {dir}",
            data_dir.join("v1").display(),
            diff.lost,
            diff.changed,
            diff.extra,
            if diff.settings.is_some() { " (and the settings)" } else { "" },
            path.display(),
        ),
    }
    Ok(journal)
}

/// The journal is damaged before its end (or holds nothing readable). sled is kept
/// when it has every download the journal's readable part has; the journal is then
/// written again from sled, the damaged one kept. Otherwise start-up is refused.
fn journal_damaged(
    data_dir: &Path,
    replay: &Replay,
    scan: &Scan,
    trees: &Trees,
    found: &mut AsFound,
    lock: DirLock,
) -> Result<Journal, StoreError> {
    let path = journal::path(data_dir);
    let at = scan.damage.unwrap_or(scan.end);
    let mut lacking = 0;
    for (id, h) in &replay.downloads {
        if h.last().is_some() && !trees.downloads.contains_key(&**id)? {
            lacking += 1;
        }
    }
    if lacking > 0 {
        return Err(StoreError::Refused(format!(
            "the journal {} is damaged at byte {at}, and the database in {} lacks {lacking} of the \
             downloads it names; nothing was changed: to start from the database as it is (without \
             them), move the journal away; or restore the data dir from a backup",
            path.display(),
            data_dir.join("v1").display()
        )));
    }
    let dir = damaged_dir(data_dir)?;
    std::fs::copy(&path, dir.join("downloads.log")).map_err(StoreError::DataDir)?;
    found.keep(&dir)?;
    let journal = Journal::create(
        data_dir,
        scan.seq,
        &trees.downloads,
        trees.meta.get(SETTINGS_KEY)?,
        lock,
    )?;
    tracing::warn!(
        "the journal {} was damaged at byte {at}; the database has every download it names, so the \
         journal was written again from the database; the damaged journal is kept in {}",
        path.display(),
        dir.display()
    );
    Ok(journal)
}

/// The line start-up stops with when sled cannot be read.
pub(super) fn unreadable(data_dir: &Path, why: &str) -> StoreError {
    let v1 = data_dir.join("v1");
    let path = journal::path(data_dir);
    let why = why.replace(['\n', '\r'], " ");
    let journal = match Replay::read(&path) {
        Ok((replay, scan)) if scan.damage.is_none() && !replay.malformed && scan.frames > 0 => {
            format!(
                "the journal {} has all {} downloads: move {} away (e.g. `mv {} {}.damaged`) and \
                 start again to recover them from it",
                path.display(),
                replay.live(),
                v1.display(),
                v1.display(),
                v1.display()
            )
        }
        Ok(_) => format!(
            "the journal {} is damaged too: restore the data dir from a backup",
            path.display()
        ),
        Err(_) => "there is no journal to recover from: restore the data dir from a backup".into(),
    };
    StoreError::Refused(format!(
        "the database in {} cannot be read ({why}); nothing was changed; {journal}",
        v1.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(d: u64) -> Option<Val> {
        Some(Val {
            digest: d,
            at: 0,
            len: 0,
        })
    }

    #[test]
    fn sled_may_hold_the_durable_value_or_a_later_one_never_an_earlier_one() {
        let mut h = History::default();
        h.push(1, v(10), 0);
        h.push(2, v(20), 0);
        // sled flushed up to 2, then 3 and 4 were written and the process died.
        h.push(3, v(30), 2);
        h.push(4, None, 2);
        let marker = 2;
        assert!(h.accepts(Some(20), marker));
        assert!(h.accepts(Some(30), marker));
        assert!(h.accepts(None, marker));
        assert!(!h.accepts(Some(10), marker), "older than what sled flushed");
        // Once everything is marked durable, only the last value will do.
        assert!(h.accepts(None, 4));
        assert!(!h.accepts(Some(30), 4));
        // A key first written after the mark may be missing; one before may not.
        let mut new = History::default();
        new.push(5, v(50), 4);
        assert!(new.accepts(None, 4));
        assert!(!new.accepts(None, 5));
    }
}
