//! Walking `download_dir`: which files are there, which changed since they were read,
//! and what each one is (blocking: runs on a blocking thread, beside the owner task of
//! the index, which it only reads: the owner makes the records of what it found).

use std::collections::BTreeMap;

use super::record::{Origin, Record};
use super::{LibraryError, Shared};
use crate::files::{Dir, Kind, Stat};

/// At most this many files are listed (a runaway tree must not eat the memory).
const MAX_FILES: usize = 200_000;

/// A file a walk found.
pub(super) struct Seen {
    /// What it was when the walk saw it.
    pub(super) stat: Stat,
    /// A fresh read of it, when the index did not hold it as it was then.
    pub(super) fresh: Option<Record>,
}

/// Every file under `download_dir`, each read again when the index does not know it
/// as it is (new, or changed since it was read).
pub(super) fn walk_and_read(shared: &Shared) -> Result<BTreeMap<String, Seen>, LibraryError> {
    let found = walk(&Dir::open(&shared.root)?)?;
    let unknown: Vec<String> = {
        let index = shared.read();
        found
            .iter()
            .filter(|(p, st)| !index.get(p).is_some_and(|r| r.matches(st)))
            .map(|(p, _)| p.clone())
            .collect()
    };
    let mut seen: BTreeMap<String, Seen> = found
        .into_iter()
        .map(|(p, stat)| (p, Seen { stat, fresh: None }))
        .collect();
    for path in unknown {
        if let Some(s) = seen.get_mut(&path) {
            s.fresh = Some(read_record(shared, &path, &s.stat));
        }
    }
    Ok(seen)
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
