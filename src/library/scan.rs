//! Walking `download_dir`: which files are there, which changed since they were read,
//! and what each one is (blocking: runs on a blocking thread).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use super::record::{identity, Origin, Record};
use super::{links, publish, relative, Inner, LibraryError};
use crate::model::{Download, DownloadView};

/// At most this many files are listed (a runaway tree must not eat the memory).
const MAX_FILES: usize = 200_000;

/// Brings the whole index up to date; how many files the library holds.
pub(super) fn scan(inner: &Inner, downloads: &[DownloadView]) -> Result<usize, LibraryError> {
    let mut origins: HashMap<&str, Origin> = HashMap::new();
    for d in downloads {
        // Newest first: the download that last wrote a path is its origin.
        origins
            .entry(d.path.as_str())
            .or_insert_with(|| Origin::of_view(d));
    }
    let found = walk(&inner.root)?;
    let stale: Vec<String> = inner
        .read()
        .keys()
        .filter(|p| !found.contains_key(p.as_str()))
        .cloned()
        .collect();
    for path in &stale {
        inner.forget(path)?;
    }
    for (path, meta) in &found {
        refresh(inner, path, meta, origins.get(path.as_str()))?;
    }
    inner.announce();
    tracing::info!(
        files = found.len(),
        dropped = stale.len(),
        "library scanned"
    );
    Ok(found.len())
}

/// The file a download just completed.
pub(super) fn scan_one(inner: &Inner, d: &Download) -> Result<(), LibraryError> {
    let full = inner.full_path(&d.path);
    let meta = fs::symlink_metadata(&full)?;
    if meta.is_file() {
        refresh(inner, &d.path, &meta, Some(&Origin::of_record(d)))?;
    }
    inner.announce();
    Ok(())
}

/// Reads a file again when it changed (or is new), and finishes what is owed: its
/// digest, its link to an identical file, its publication.
fn refresh(
    inner: &Inner,
    path: &str,
    meta: &fs::Metadata,
    origin: Option<&Origin>,
) -> Result<(), LibraryError> {
    let known = inner.read().get(path).cloned();
    let (mut record, replaced) = match known {
        Some(r) if r.matches(meta) => (r, None),
        earlier => (
            read_record(&inner.full_path(path), path, meta),
            earlier.map(|r| r.published),
        ),
    };
    if let Some(o) = origin {
        adopt(&mut record, o);
    }
    if record.sha256.is_none() {
        inner.hasher.enqueue(path);
    } else {
        links::dedupe(inner, path, &mut record);
        publish::publish(inner, path, &mut record, replaced.as_ref());
    }
    if inner.read().get(path) != Some(&record) {
        inner.put(path, record)?;
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

/// A fresh record of a file: its identity, and its GGUF header when it has one.
pub(super) fn read_record(full: &Path, path: &str, meta: &fs::Metadata) -> Record {
    let (size, mtime_ns, ino, dev) = identity(meta);
    let (gguf, error) = if path.to_ascii_lowercase().ends_with(".gguf") {
        match crate::gguf::read_file(full) {
            Ok(info) => (Some(info), None),
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, None)
    };
    Record {
        size,
        mtime_ns,
        ino,
        dev,
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
    }
}

/// Every regular file under `root` (relative path → metadata), without following a
/// link, without `.part` files and hidden names.
fn walk(root: &Path) -> Result<BTreeMap<String, fs::Metadata>, LibraryError> {
    let mut found = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if dir == root => return Err(e.into()),
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.ends_with(".part") {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let path = entry.path();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() && found.len() < MAX_FILES {
                if let Some(rel) = relative(root, &path) {
                    found.insert(rel, meta);
                }
            }
        }
    }
    Ok(found)
}
