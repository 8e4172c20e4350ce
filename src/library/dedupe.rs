//! One copy of identical files: a file whose sha256 equals another library file's on
//! the same file system becomes a hard link to it, once its digest is known, and only
//! when both are files this service wrote (completed downloads of the queue, verified
//! and closed by us, unchanged since: [`Record::ours`]). A file put there by hand, or
//! one another program may still be writing (a preallocated part, a torrent's sparse
//! file), is hashed and listed, never linked, renamed over or rewritten.

use super::record::Record;
use super::Shared;
use crate::files::{Dir, Kind};

/// Replaces `path` by a hard link to an identical file when there is one (same
/// digest and size, same device, another inode, both ours); updates `record` to the
/// new inode. One lookup of the digest: the files that hold it, never the whole index.
pub(super) fn dedupe(shared: &Shared, path: &str, record: &mut Record) {
    let Some(sha) = record.sha256.clone() else {
        return;
    };
    if !record.ours {
        return;
    }
    let twin = shared
        .read()
        .same_digest(path, &sha)
        .into_iter()
        .find(|(_, r)| {
            r.ours && r.size == record.size && r.dev == record.dev && r.id() != record.id()
        });
    let Some((other, theirs)) = twin else {
        return;
    };
    match link_over(shared, (&other, &theirs), (path, record)) {
        Ok(()) => {
            tracing::info!(%path, twin = %other, bytes = record.size, "identical files: now one copy");
        }
        Err(e) => tracing::warn!(%path, twin = %other, error = %e, "cannot link identical files"),
    }
}

/// `mine` becomes a hard link to `theirs`, atomically: a link under a temporary name
/// in the same folder, then a rename over `mine`, all through the folders' handles.
/// Both names must still hold the inodes their records were read at.
fn link_over(
    shared: &Shared,
    (their_path, theirs): (&str, &Record),
    (my_path, mine): (&str, &mut Record),
) -> std::io::Result<()> {
    let (their_dir, their_name) = shared.locate(their_path)?;
    let (my_dir, my_name) = shared.locate(my_path)?;
    let unchanged = |dir: &Dir, name: &std::ffi::OsStr, r: &Record| -> std::io::Result<bool> {
        Ok(dir
            .stat(name)?
            .is_some_and(|st| st.kind == Kind::File && r.matches(&st)))
    };
    // Read leases on both for the moment of the merge: refused while anyone has
    // either open for writing, and a writer that opens one meanwhile waits for us.
    let leases = (
        their_dir.open_leased(&their_name),
        my_dir.open_leased(&my_name),
    );
    let (Ok(_theirs_held), Ok(_mine_held)) = leases else {
        return Err(std::io::Error::other(
            "one of them is open for writing elsewhere",
        ));
    };
    if !unchanged(&their_dir, &their_name, theirs)? || !unchanged(&my_dir, &my_name, mine)? {
        return Err(std::io::Error::other("changed since it was read"));
    }
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(&my_name);
    tmp.push(".mm-link");
    let _ = my_dir.unlink(&tmp);
    my_dir.link_from(&their_dir, &their_name, &tmp)?;
    let linked = my_dir.stat(&tmp)?;
    if !linked.is_some_and(|st| st.kind == Kind::File && st.id() == theirs.id()) {
        let _ = my_dir.unlink(&tmp);
        return Err(std::io::Error::other(
            "the twin changed while it was linked",
        ));
    }
    if let Err(e) = my_dir.rename(&tmp, &my_dir, &my_name) {
        let _ = my_dir.unlink(&tmp);
        return Err(e);
    }
    let now = my_dir
        .stat(&my_name)?
        .ok_or_else(|| std::io::Error::other("gone after the link"))?;
    mine.set_identity(&now);
    Ok(())
}
