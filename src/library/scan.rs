//! Walking `download_dir`: which files are there, which changed since they were read,
//! and what each one is (blocking: runs on a blocking thread, beside the owner task of
//! the index, which it only reads: the owner makes the records of what it found).

use std::collections::BTreeMap;

use super::record::{Origin, Record};
use super::{LibraryError, Shared};
use crate::files::{Dir, Kind, Stat};
use crate::queue::model::Download;

/// At most this many files are listed (a runaway tree must not eat the memory).
const MAX_FILES: usize = 200_000;

/// A file a walk found.
pub(super) struct Seen {
    /// What it was when the walk saw it.
    pub(super) stat: Stat,
    /// A fresh read of it, when the index did not hold it as it was then.
    pub(super) fresh: Option<Record>,
}

/// A walk of `download_dir`: the files the index knows as they are, and the ones to
/// read (new, or changed since they were read).
pub(super) struct Walked {
    /// Names and stats only: a `Seen` is the size of a record.
    pub(super) known: BTreeMap<String, Stat>,
    pub(super) unknown: Vec<(String, Stat)>,
}

/// Every file under `download_dir`, sorted into known and to read. Only names and
/// stats: the reads come after, a batch at a time ([`read_all`]), so a scan never
/// holds more than a batch of fresh records beside the index.
pub(super) fn walk_and_sort(shared: &Shared) -> Result<Walked, LibraryError> {
    let found = walk(&Dir::open(&shared.root)?)?;
    let index = shared.read();
    let (known, unknown): (BTreeMap<_, _>, BTreeMap<_, _>) = found
        .into_iter()
        .partition(|(p, st)| index.get(p).is_some_and(|r| r.matches(st)));
    Ok(Walked {
        known,
        unknown: unknown.into_iter().collect(),
    })
}

/// A fresh read of each of `files`.
pub(super) fn read_all(shared: &Shared, files: Vec<(String, Stat)>) -> Vec<(String, Seen)> {
    files
        .into_iter()
        .map(|(path, stat)| {
            let fresh = Some(read_record(shared, &path, &stat));
            (path, Seen { stat, fresh })
        })
        .collect()
}

/// The completed downloads of the queue, by path, as a scan began: which of the files
/// it finds are still the very files those downloads completed.
///
/// The library records a completed download when the completion reaches it; a crash
/// before its store kept that record (sled writes back every half second), or a
/// completion it never heard of (it lagged behind the queue), would leave the file
/// read as one put there by hand for good: not published, its repo unknown. A
/// download's record keeps the identity of the file it renamed into place, so the
/// next scan knows the file again, by that identity, never by its name alone.
#[derive(Default)]
pub(super) struct Completions(BTreeMap<String, Vec<Download>>);

impl Completions {
    pub(super) fn of(downloads: Vec<Download>) -> Completions {
        let mut by_path: BTreeMap<String, Vec<Download>> = BTreeMap::new();
        for d in downloads {
            by_path.entry(d.path.clone()).or_default().push(d);
        }
        Completions(by_path)
    }

    /// The download that completed the file at `path` whose inode, mtime and size
    /// are `file`: the identity it renamed into place, and the size it completed with.
    pub(super) fn origin(
        &self,
        path: &str,
        (ino, mtime_ns, size): (u64, i128, u64),
    ) -> Option<Origin> {
        let mtime = u64::try_from(mtime_ns).ok()?;
        self.0
            .get(path)?
            .iter()
            .find(|d| d.completed_as == Some([ino, mtime]) && d.bytes_total == Some(size))
            .map(Origin::of_record)
    }
}

/// What the download that fetched the file knew of it.
pub(super) fn adopt(record: &mut Record, o: &Origin) {
    record
        .download_id
        .get_or_insert_with(|| o.download_id.clone());
    if record.repo.is_none() {
        record.repo.clone_from(&o.repo);
        record.revision.clone_from(&o.commit);
        record.asked_revision.clone_from(&o.revision);
    }
    // Its digest is the file's only while the file is the size it completed with.
    if record.sha256.is_none() && o.bytes == Some(record.size) {
        record.sha256.clone_from(&o.sha256);
    }
}

/// A fresh record of a file: its identity, and its GGUF header when it has one (read
/// through the folder's handle, from a regular file only; the identity is then the
/// one of the file read).
pub(super) fn read_record(shared: &Shared, path: &str, st: &Stat) -> Record {
    let mut st = *st;
    let (gguf, error) = if path.to_ascii_lowercase().ends_with(".gguf") {
        let read = shared.open(path).and_then(|(file, now)| {
            st = now;
            crate::gguf::read_open(file).map_err(std::io::Error::other)
        });
        match read {
            Ok(info) => (Some(info), None),
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, None)
    };
    Record {
        size: st.size,
        mtime_ns: st.mtime_ns,
        ino: st.ino,
        dev: st.dev,
        sha256: None,
        gguf,
        error,
        quantization: crate::hub::quant::quantization(path),
        repo: None,
        revision: None,
        asked_revision: None,
        download_id: None,
        published: Default::default(),
        update: None,
        update_error: None,
        same_at: None,
        ours: false,
    }
}

/// Every regular file under `root` (relative path → what it is), through directory
/// handles: no link is followed, no `.part` file, no hidden name, no name that is not
/// UTF-8; FIFOs, sockets and devices are left out.
fn walk(root: &Dir) -> Result<BTreeMap<String, Stat>, LibraryError> {
    let mut found = BTreeMap::new();
    // Folders still to read, by relative path (opened when their turn comes: a wide
    // tree must not hold a descriptor per folder).
    let mut stack = vec![String::new()];
    while let Some(prefix) = stack.pop() {
        let entries = match root
            .walk(std::path::Path::new(&prefix), false)
            .and_then(|dir| dir.entries())
        {
            Ok(e) => e,
            Err(e) if prefix.is_empty() => return Err(e.into()),
            Err(_) => continue,
        };
        for (name, st) in entries {
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || name.ends_with(".part") {
                continue;
            }
            let rel = format!("{prefix}{name}");
            match st.kind {
                Kind::Dir => stack.push(format!("{rel}/")),
                Kind::File if found.len() < MAX_FILES => {
                    found.insert(rel, st);
                }
                _ => {}
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::Completions;
    use crate::queue::model::Download;

    fn completed(path: &str, file: Option<[u64; 2]>, size: u64) -> Download {
        serde_json::from_value(serde_json::json!({
            "id": "dl_1", "url": "http://h/f", "file_name": "f.gguf", "path": path,
            "state": "completed", "order": 0, "bytes_done": size, "bytes_total": size,
            "elapsed_secs": 1.0, "attempt": 0, "created_at": "2026-12-07T00:00:00Z",
            "source": {"kind": "hub", "repo": "o/r", "revision": "main", "file": "f.gguf"},
            "completed_as": file,
        }))
        .expect("a download record")
    }

    #[test]
    fn a_file_is_a_downloads_only_by_its_identity() {
        let c = Completions::of(vec![
            completed("o/r/f.gguf", Some([7, 1_000]), 50),
            completed("o/r/g.gguf", None, 50),
        ]);
        let origin = c
            .origin("o/r/f.gguf", (7, 1_000, 50))
            .expect("the very file");
        assert_eq!(origin.repo.as_deref(), Some("o/r"));
        // Another inode, another mtime, another size, another path: not that file.
        assert!(c.origin("o/r/f.gguf", (8, 1_000, 50)).is_none());
        assert!(c.origin("o/r/f.gguf", (7, 1_001, 50)).is_none());
        assert!(c.origin("o/r/f.gguf", (7, 1_000, 51)).is_none());
        assert!(c.origin("o/r/x.gguf", (7, 1_000, 50)).is_none());
        assert!(c.origin("o/r/f.gguf", (7, -1, 50)).is_none());
        // A download that does not know what it completed vouches for nothing.
        assert!(c.origin("o/r/g.gguf", (7, 1_000, 50)).is_none());
    }
}
