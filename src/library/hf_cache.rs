//! Publishing into the HuggingFace cache layout, exactly as `huggingface_hub` writes it
//! (`file_download.py`: `repo_folder_name`, `_create_symlink`,
//! `_cache_commit_hash_for_specific_revision`; `_cache_manager.py` for what a scan
//! accepts):
//!
//! ```text
//! <cache>/models--<owner>--<name>/blobs/<sha256>                  the bytes (a hard link to our file)
//! <cache>/models--<owner>--<name>/snapshots/<commit>/<file>       -> ../../blobs/<sha256> (relative)
//! <cache>/models--<owner>--<name>/refs/<revision>                 the commit, no newline
//! ```
//!
//! Only what we made is ever removed: a blob that is not our file (same inode, or a
//! symlink to it) and a snapshot entry that is not our link stay as they are.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::inode::{Identity, Ours};
use crate::files::{parent_of, Dir, Kind};

/// A ref holds a 40-hex commit: anything longer is not one of ours.
const REF_CAP: u64 = 1024;
/// The most names one walk of a repo's `snapshots/` or `refs/` looks at.
const MAX_ENTRIES: usize = 100_000;

/// What publishing one file made, relative to its repo folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// `<cache>/models--o--n`.
    pub repo_dir: PathBuf,
    /// `snapshots/<commit>/<file>`.
    pub snapshot: String,
    /// `blobs/<sha256>`.
    pub blob: String,
    /// `refs/<revision>` was written, when the revision is a name, not the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub commit: String,
}

/// What to publish.
pub struct Target<'a> {
    pub repo: &'a str,
    /// The path of the file in the repo (`dir/x.gguf`).
    pub file: &'a str,
    pub commit: &'a str,
    /// The revision asked for (`main`); none when it was the commit itself.
    pub revision: Option<&'a str>,
    pub sha256: &'a str,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Publishes `file` (ours, in download_dir) into the cache at `cache`. Every folder
/// of the cache is walked through directory handles: a link in it is never followed.
pub fn publish(cache: &Path, target: &Target<'_>, file: &Ours) -> io::Result<Entry> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    let (owner, name) = target
        .repo
        .split_once('/')
        .ok_or_else(|| bad(format!("repo {:?} is not owner/name", target.repo)))?;
    if !is_hex(target.commit, 40) || !is_hex(target.sha256, 64) {
        return Err(bad("the commit or the sha256 is not known".into()));
    }
    crate::files::validate_relative_path(target.file).map_err(|e| bad(e.to_string()))?;
    if let Some(r) = target.revision {
        crate::files::validate_relative_path(r).map_err(|e| bad(e.to_string()))?;
    }
    let repo_name = format!("models--{owner}--{name}");
    let root = Dir::open_or_create(cache)?;
    let repo = root.sub_or_create(&repo_name)?;
    link_blob(&repo.sub_or_create("blobs")?, target.sha256, file)?;
    let snapshot = format!("snapshots/{}/{}", target.commit, target.file);
    let depth = target.file.matches('/').count();
    let pointer = format!("{}../../blobs/{}", "../".repeat(depth), target.sha256);
    let (dir, link) = parent_of(&repo, Path::new(""), Path::new(&snapshot), true)?;
    place_symlink(&dir, &link, Path::new(&pointer))?;
    let revision = target.revision.filter(|r| *r != target.commit);
    if let Some(r) = revision {
        let (dir, name) = parent_of(&repo, Path::new(""), &Path::new("refs").join(r), true)?;
        write_ref(&dir, &name, target.commit)?;
    }
    Ok(Entry {
        repo_dir: cache.join(repo_name),
        snapshot,
        blob: format!("blobs/{}", target.sha256),
        revision: revision.map(str::to_owned),
        commit: target.commit.to_owned(),
    })
}

/// The blob: a hard link to our file on one file system, else a symlink to it. A blob
/// already there is used only when it is our file (a link we made): one of another
/// program is never trusted by its name (its bytes may be anything), and nothing is
/// published there.
fn link_blob(blobs: &Dir, sha256: &str, file: &Ours) -> io::Result<()> {
    if blobs.stat(sha256)?.is_some() {
        if is_ours(blobs, sha256, &file.id) {
            return Ok(());
        }
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "the HF cache's blobs/{sha256} is already there and is not our file \
                 (a blob is never trusted by its name): left alone"
            ),
        ));
    }
    match file.link_into(blobs, sha256) {
        Ok(()) => Ok(()),
        Err(e)
            if e.raw_os_error() == Some(libc::EXDEV)
                || e.kind() == io::ErrorKind::PermissionDenied =>
        {
            blobs.symlink(&file.id.path, sha256)
        }
        Err(e) => Err(e),
    }
}

/// A symlink `name` in `dir` pointing to `to`, replacing only a symlink that was there.
fn place_symlink(dir: &Dir, name: &OsStr, to: &Path) -> io::Result<()> {
    match dir.stat(name)? {
        Some(st) if st.kind == Kind::Link => {
            if dir.read_link(name)? == to {
                return Ok(());
            }
            dir.unlink(name)?;
        }
        Some(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name:?} exists and is not a link"),
            ))
        }
        None => {}
    }
    dir.symlink(to, name)
}

/// `refs/<revision>` holding the commit, written atomically (tmp + rename), no newline.
/// What is there is read only when it is a regular file, and at most [`REF_CAP`] bytes
/// of it: a FIFO, a device or a link there is replaced, never opened.
fn write_ref(dir: &Dir, name: &OsStr, commit: &str) -> io::Result<()> {
    if dir
        .read_capped(name, REF_CAP)
        .is_ok_and(|c| c == commit.as_bytes())
    {
        return Ok(());
    }
    if dir.stat(name)?.is_some_and(|st| st.kind == Kind::Dir) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{name:?} is a folder"),
        ));
    }
    dir.write_atomic(name, commit.as_bytes())
}

/// Removes what [`publish`] made for `file`; logs what it cannot remove.
pub fn unpublish(cache: &Path, entry: &Entry, file: &Identity) {
    let (Ok(rel), Ok(root)) = (entry.repo_dir.strip_prefix(cache), Dir::open(cache)) else {
        tracing::warn!(repo_dir = %entry.repo_dir.display(), "not in the configured cache; left alone");
        return;
    };
    let Ok(repo) = root.walk(rel, false) else {
        return;
    };
    let snapshot = Path::new(&entry.snapshot);
    if let Ok((dir, name)) = parent_of(&repo, Path::new(""), snapshot, false) {
        if dir
            .stat(&name)
            .ok()
            .flatten()
            .is_some_and(|st| st.kind == Kind::Link)
        {
            warn_on(dir.unlink(&name), snapshot);
        }
    }
    let folders: Vec<&OsStr> = snapshot
        .parent()
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    // snapshots/<commit>/sub…: the deepest first, `snapshots` itself stays.
    for k in (2..=folders.len()).rev() {
        let parent: PathBuf = folders[..k - 1].iter().collect();
        let removed = repo
            .walk(&parent, false)
            .and_then(|d| d.rmdir(folders[k - 1]));
        if removed.is_err() {
            break;
        }
    }
    let blob = entry.blob.rsplit('/').next().unwrap_or(&entry.blob);
    if let Ok(blobs) = repo.sub("blobs") {
        if is_ours(&blobs, blob, file) && !referenced(&repo, blob) {
            warn_on(blobs.unlink(blob), Path::new(&entry.blob));
        }
    }
    let commit_dir = Path::new("snapshots").join(&entry.commit);
    if repo.walk(&commit_dir, false).is_err() {
        drop_refs_to(&repo, &entry.commit);
    }
    remove_repo_if_empty(&repo);
    if let Some(name) = entry.repo_dir.file_name() {
        let _ = root.rmdir(name);
    }
}

fn warn_on(result: io::Result<()>, path: &Path) {
    if let Err(e) = result {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove from the HF cache");
        }
    }
}

/// The blob is our file: the same inode, or a symlink to it.
fn is_ours(blobs: &Dir, name: &str, file: &Identity) -> bool {
    match blobs.stat(name) {
        Ok(Some(st)) if st.kind == Kind::Link => {
            blobs.read_link(name).is_ok_and(|t| t == file.path)
        }
        Ok(st) => file.is(st),
        Err(_) => false,
    }
}

/// Every name below `top` (walked through handles, links never followed), with the
/// folder that holds it; at most [`MAX_ENTRIES`]. Folders wait their turn by path, so
/// a wide tree holds no descriptor per folder.
fn walk_tree(top: Dir, mut each: impl FnMut(&Dir, &OsStr, Kind) -> bool) {
    let mut stack = vec![PathBuf::new()];
    let mut seen = 0;
    while let Some(rel) = stack.pop() {
        let Ok(dir) = top.walk(&rel, false) else {
            continue;
        };
        let Ok(entries) = dir.entries() else { continue };
        for (name, st) in entries {
            seen += 1;
            if seen > MAX_ENTRIES {
                return;
            }
            if st.kind == Kind::Dir {
                stack.push(rel.join(&name));
            } else if !each(&dir, &name, st.kind) {
                return;
            }
        }
    }
}

/// Some snapshot entry still points at this blob.
fn referenced(repo: &Dir, blob: &str) -> bool {
    let Ok(snapshots) = repo.sub("snapshots") else {
        return false;
    };
    let mut found = false;
    walk_tree(snapshots, |dir, name, kind| {
        found = kind == Kind::Link
            && dir
                .read_link(name)
                .is_ok_and(|l| l.file_name().is_some_and(|n| n == blob));
        !found
    });
    found
}

/// Refs that name a commit no snapshot has any more (a scan would warn of them). Only
/// regular files are read (capped); a link or FIFO in `refs/` is never followed.
fn drop_refs_to(repo: &Dir, commit: &str) {
    let Ok(refs) = repo.sub("refs") else { return };
    walk_tree(refs, |dir, name, kind| {
        if kind == Kind::File
            && dir
                .read_capped(name, REF_CAP)
                .is_ok_and(|c| c == commit.as_bytes())
        {
            warn_on(dir.unlink(name), Path::new(name));
        }
        true
    });
    remove_empty_tree(repo, OsStr::new("refs"));
}

/// Removes empty folders below `parent/name`, and it when it ends up empty.
fn remove_empty_tree(parent: &Dir, name: &OsStr) {
    if let Ok(dir) = parent.sub(name) {
        for (n, st) in dir.entries().unwrap_or_default() {
            if st.kind == Kind::Dir {
                remove_empty_tree(&dir, &n);
            }
        }
    }
    let _ = parent.rmdir(name);
}

/// A repo folder with no snapshot and no blob left is ours alone: its folders go (the
/// caller removes the repo folder itself when it is empty).
fn remove_repo_if_empty(repo: &Dir) {
    for sub in ["snapshots", "blobs", "refs"] {
        remove_empty_tree(repo, OsStr::new(sub));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn ours(file: &Path) -> Ours {
        Ours::at(file)
    }

    fn target<'a>(file: &'a str, sha: &'a str) -> Target<'a> {
        Target {
            repo: "o/r",
            file,
            commit: COMMIT,
            revision: Some("main"),
            sha256: sha,
        }
    }

    #[test]
    fn publish_makes_the_layout_and_unpublish_takes_exactly_it_back() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("x.gguf");
        fs::write(&file, b"weights").unwrap();
        let cache = root.path().join("hub");
        let sha = "a".repeat(64);
        let e = publish(&cache, &target("sub/x.gguf", &sha), &ours(&file)).unwrap();
        let repo = cache.join("models--o--r");
        let link = repo.join("snapshots").join(COMMIT).join("sub/x.gguf");
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new(&format!("../../../blobs/{sha}"))
        );
        assert_eq!(fs::read(&link).unwrap(), b"weights");
        assert_eq!(fs::read_to_string(repo.join("refs/main")).unwrap(), COMMIT);
        let blob = fs::metadata(repo.join("blobs").join(&sha)).unwrap();
        assert_eq!(
            blob.ino(),
            fs::metadata(&file).unwrap().ino(),
            "a hard link"
        );
        // Publishing again changes nothing.
        assert_eq!(
            publish(&cache, &target("sub/x.gguf", &sha), &ours(&file)).unwrap(),
            e
        );
        // Someone else's file in the cache survives the unpublish.
        let theirs = cache.join("models--x--y/blobs/keep");
        fs::create_dir_all(theirs.parent().unwrap()).unwrap();
        fs::write(&theirs, b"theirs").unwrap();
        unpublish(&cache, &e, &ours(&file).id);
        assert!(!repo.exists(), "nothing of ours is left");
        assert!(theirs.exists());
        assert_eq!(
            fs::read(&file).unwrap(),
            b"weights",
            "our file is untouched"
        );
    }

    #[test]
    fn a_blob_shared_by_two_snapshots_stays_until_the_last_goes() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("x.gguf");
        fs::write(&file, b"w").unwrap();
        let cache = root.path().join("hub");
        let sha = "b".repeat(64);
        let first = publish(&cache, &target("x.gguf", &sha), &ours(&file)).unwrap();
        let other = Target {
            commit: "fedcba9876543210fedcba9876543210fedcba98",
            revision: None,
            ..target("x.gguf", &sha)
        };
        let second = publish(&cache, &other, &ours(&file)).unwrap();
        unpublish(&cache, &first, &ours(&file).id);
        let blob = first.repo_dir.join(&first.blob);
        assert!(blob.exists(), "the other snapshot still uses it");
        assert!(
            !first.repo_dir.join("refs/main").exists(),
            "a ref to a gone commit goes"
        );
        unpublish(&cache, &second, &ours(&file).id);
        assert!(!first.repo_dir.exists());
    }

    #[test]
    fn bad_targets_are_refused_before_anything_is_made() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("x");
        fs::write(&file, b"w").unwrap();
        let cache = root.path().join("hub");
        let sha = "c".repeat(64);
        for t in [
            Target {
                repo: "noslash",
                ..target("x", &sha)
            },
            Target {
                file: "../escape",
                ..target("x", &sha)
            },
            Target {
                commit: "main",
                ..target("x", &sha)
            },
            Target {
                revision: Some("../../x"),
                ..target("x", &sha)
            },
        ] {
            assert!(publish(&cache, &t, &ours(&file)).is_err());
        }
        assert!(!cache.exists());
    }
}
