//! One copy of identical files: a file whose sha256 equals another library file's on
//! the same file system becomes a hard link to it, once its digest is known.

use std::fs;
use std::path::Path;

use super::record::{identity, Record};
use super::Inner;

/// Replaces `path` by a hard link to an identical file when there is one (same
/// digest and size, same device, another inode); updates `record` to the new inode.
pub(super) fn dedupe(inner: &Inner, path: &str, record: &mut Record) {
    let Some(sha) = record.sha256.clone() else {
        return;
    };
    let twin = inner
        .same_digest(path, &sha)
        .into_iter()
        .find(|(_, r)| r.size == record.size && r.dev == record.dev && r.ino != record.ino);
    let Some((other, _)) = twin else {
        return;
    };
    let (mine, theirs) = (inner.full_path(path), inner.full_path(&other));
    match link_over(&theirs, &mine) {
        Ok(meta) => {
            let (size, mtime_ns, ino, dev) = identity(&meta);
            (record.size, record.mtime_ns, record.ino, record.dev) = (size, mtime_ns, ino, dev);
            tracing::info!(%path, twin = %other, bytes = size, "identical files: now one copy");
        }
        Err(e) => tracing::warn!(%path, twin = %other, error = %e, "cannot link identical files"),
    }
}

/// `mine` becomes a hard link to `theirs`, atomically: a link under a temporary name
/// in the same folder, then a rename over `mine`. Both must still be regular files.
fn link_over(theirs: &Path, mine: &Path) -> std::io::Result<fs::Metadata> {
    for p in [theirs, mine] {
        if !fs::symlink_metadata(p)?.is_file() {
            return Err(std::io::Error::other(format!(
                "{} is not a file",
                p.display()
            )));
        }
    }
    let tmp = mine.with_file_name(format!(
        ".{}.mm-link",
        mine.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let _ = fs::remove_file(&tmp);
    fs::hard_link(theirs, &tmp)?;
    if let Err(e) = fs::rename(&tmp, mine) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::symlink_metadata(mine)
}
