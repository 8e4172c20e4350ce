//! Walking `download_dir`: which files are there, which changed since they were read,
//! and what each one is (blocking: runs on a blocking thread).

use std::collections::BTreeMap;

use super::record::{Origin, Record};
use super::{links, publish, Inner, LibraryError};
use crate::files::{Dir, Kind, Stat};
use crate::queue::model::Download;

/// At most this many files are listed (a runaway tree must not eat the memory).
const MAX_FILES: usize = 200_000;

/// Brings the whole index up to date; how many files the library holds.
///
/// What a download vouched for (its sha256, repo, commit, [`Record::ours`]) is taken
/// only when it completes ([`scan_one`]), tied to the file's identity then; a scan
/// never gives it to a path by name: a file that is not that identity any more (swapped
/// by another program, edited in place, or fetched there again by something else) is
/// read as a hand-placed file.
pub(super) fn scan(inner: &Inner) -> Result<usize, LibraryError> {
    let found = walk(&Dir::open(&inner.root)?)?;
    let stale: Vec<String> = inner
        .read()
        .keys()
        .filter(|p| !found.contains_key(p.as_str()))
        .cloned()
        .collect();
    for path in &stale {
        inner.forget(path)?;
    }
    for (path, st) in &found {
        refresh(inner, path, st, None, false)?;
    }
    inner.announce();
    tracing::info!(
        files = found.len(),
        dropped = stale.len(),
        "library scanned"
    );
    Ok(found.len())
}

/// The file a download just completed: written by this service.
pub(super) fn scan_one(inner: &Inner, d: &Download) -> Result<(), LibraryError> {
    let (dir, name) = inner.locate(&d.path)?;
    if let Some(st) = dir.stat(&name)?.filter(|st| st.kind == Kind::File) {
        refresh(inner, &d.path, &st, Some(&Origin::of_record(d)), true)?;
    }
    inner.announce();
    Ok(())
}

/// Reads a file again when it changed (or is new), and finishes what is owed: its
/// digest, its link to an identical file, its publication. `completed`: a download
/// of the queue has just completed it (the file is ours, see [`Record::ours`]).
fn refresh(
    inner: &Inner,
    path: &str,
    st: &Stat,
    origin: Option<&Origin>,
    completed: bool,
) -> Result<(), LibraryError> {
    let known = inner.read().get(path).cloned();
    let (mut record, replaced) = match known {
        Some(r) if r.matches(st) => (r, None),
        earlier => (read_record(inner, path, st), earlier),
    };
    if let (Some(earlier), false) = (&replaced, completed) {
        // Not the file that was read (or verified) any more, and no download of ours
        // put it there: what was published of the earlier one goes (a blob named by
        // its digest must not hold other bytes, nor stand for a file we no longer
        // have), and the new one starts as a hand-placed file.
        tracing::info!(%path, "a library file changed on disk; read again as a file put by hand");
        publish::unpublish(
            &inner.folders,
            &earlier.published,
            &inner.identity(path, earlier),
        );
    }
    if let Some(o) = origin {
        adopt(&mut record, o);
        if completed && o.bytes == Some(record.size) {
            record.ours = true;
        }
    }
    let unhashed = record.sha256.is_none();
    if !unhashed {
        links::dedupe(inner, path, &mut record);
        publish::publish(inner, path, &mut record, replaced.as_ref());
    }
    if inner.read().get(path) != Some(&record) {
        inner.put(path, record)?;
    }
    // Only once the record is in the index: the hasher hashes what the index holds,
    // and would drop a path it finds no record of yet.
    if unhashed {
        inner.hasher.enqueue(path);
    }
    Ok(())
}

/// What the download that fetched the file knew of it.
fn adopt(record: &mut Record, o: &Origin) {
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
fn read_record(inner: &Inner, path: &str, st: &Stat) -> Record {
    let mut st = *st;
    let (gguf, error) = if path.to_ascii_lowercase().ends_with(".gguf") {
        let read = inner.open(path).and_then(|(file, now)| {
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
