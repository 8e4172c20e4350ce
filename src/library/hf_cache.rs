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

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// Publishes `file` (ours, in download_dir) into the cache at `cache`.
pub fn publish(cache: &Path, target: &Target<'_>, file: &Path) -> io::Result<Entry> {
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
    let repo_dir = cache.join(format!("models--{owner}--{name}"));
    let blob = format!("blobs/{}", target.sha256);
    link_blob(&repo_dir.join(&blob), file)?;
    let snapshot = format!("snapshots/{}/{}", target.commit, target.file);
    let depth = target.file.matches('/').count();
    let pointer = format!("{}../../blobs/{}", "../".repeat(depth), target.sha256);
    place_symlink(&repo_dir.join(&snapshot), Path::new(&pointer))?;
    let revision = target.revision.filter(|r| *r != target.commit);
    if let Some(r) = revision {
        write_ref(&repo_dir.join("refs").join(r), target.commit)?;
    }
    Ok(Entry {
        repo_dir,
        snapshot,
        blob,
        revision: revision.map(str::to_owned),
        commit: target.commit.to_owned(),
    })
}

/// The blob: a hard link to our file on one file system, else a symlink to it. A blob
/// already there (the user's own download of the same bytes) is left as it is.
fn link_blob(blob: &Path, file: &Path) -> io::Result<()> {
    if let Some(dir) = blob.parent() {
        fs::create_dir_all(dir)?;
    }
    if fs::symlink_metadata(blob).is_ok() {
        return Ok(());
    }
    match fs::hard_link(file, blob) {
        Ok(()) => Ok(()),
        Err(e)
            if e.raw_os_error() == Some(libc::EXDEV)
                || e.kind() == io::ErrorKind::PermissionDenied =>
        {
            std::os::unix::fs::symlink(file, blob)
        }
        Err(e) => Err(e),
    }
}

/// A symlink at `at` pointing to `to`, replacing only a symlink that was there.
fn place_symlink(at: &Path, to: &Path) -> io::Result<()> {
    if let Some(dir) = at.parent() {
        fs::create_dir_all(dir)?;
    }
    match fs::symlink_metadata(at) {
        Ok(m) if m.file_type().is_symlink() => {
            if fs::read_link(at)? == to {
                return Ok(());
            }
            fs::remove_file(at)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a link", at.display()),
            ))
        }
        Err(_) => {}
    }
    std::os::unix::fs::symlink(to, at)
}

/// `refs/<revision>` holding the commit, written atomically (tmp + rename), no newline.
fn write_ref(path: &Path, commit: &str) -> io::Result<()> {
    if fs::read_to_string(path).is_ok_and(|c| c == commit) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("mm-{}.tmp", std::process::id()));
    fs::write(&tmp, commit)?;
    fs::rename(&tmp, path)
}

/// Removes what [`publish`] made for `file`; logs what it cannot remove.
pub fn unpublish(cache: &Path, entry: &Entry, file: &Path) {
    if !entry.repo_dir.starts_with(cache) {
        tracing::warn!(repo_dir = %entry.repo_dir.display(), "not in the configured cache; left alone");
        return;
    }
    let snapshot = entry.repo_dir.join(&entry.snapshot);
    if fs::symlink_metadata(&snapshot).is_ok_and(|m| m.file_type().is_symlink()) {
        warn_on(fs::remove_file(&snapshot), &snapshot);
    }
    let commit_dir = entry.repo_dir.join("snapshots").join(&entry.commit);
    remove_empty_dirs(snapshot.parent(), &commit_dir);
    let blob = entry.repo_dir.join(&entry.blob);
    if is_ours(&blob, file) && !referenced(&entry.repo_dir, &entry.blob) {
        warn_on(fs::remove_file(&blob), &blob);
    }
    if !commit_dir.exists() {
        drop_refs_to(&entry.repo_dir, &entry.commit);
    }
    remove_repo_if_empty(&entry.repo_dir);
}

fn warn_on(result: io::Result<()>, path: &Path) {
    if let Err(e) = result {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove from the HF cache");
        }
    }
}

/// The blob is our file: the same inode, or a symlink to it.
fn is_ours(blob: &Path, file: &Path) -> bool {
    let Ok(meta) = fs::symlink_metadata(blob) else {
        return false;
    };
    if meta.file_type().is_symlink() {
        return fs::read_link(blob).is_ok_and(|t| t == file);
    }
    fs::metadata(file).is_ok_and(|f| (f.dev(), f.ino()) == (meta.dev(), meta.ino()))
}

/// Some snapshot entry still points at this blob.
fn referenced(repo_dir: &Path, blob: &str) -> bool {
    let name = blob.rsplit('/').next().unwrap_or(blob);
    let mut stack = vec![repo_dir.join("snapshots")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_symlink() && points_to(&path, name) => return true,
                _ => {}
            }
        }
    }
    false
}

/// The link at `path` names a file called `name`.
fn points_to(path: &Path, name: &str) -> bool {
    fs::read_link(path).is_ok_and(|l| l.file_name().is_some_and(|n| n == name))
}

/// Removes `from` and its parents while they are empty, up to and including `last`.
fn remove_empty_dirs(from: Option<&Path>, last: &Path) {
    let mut dir = from.map(Path::to_path_buf);
    while let Some(d) = dir {
        if !d.starts_with(last) || fs::remove_dir(&d).is_err() {
            return;
        }
        if d == last {
            return;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
}

/// Refs that name a commit no snapshot has any more (a scan would warn of them).
fn drop_refs_to(repo_dir: &Path, commit: &str) {
    let refs = repo_dir.join("refs");
    let mut stack = vec![refs.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if fs::read_to_string(&path).is_ok_and(|c| c == commit) {
                warn_on(fs::remove_file(&path), &path);
            }
        }
    }
    remove_empty_tree(&refs);
}

/// Removes empty folders below `dir`, and `dir` when it ends up empty.
fn remove_empty_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// A repo folder with no snapshot and no blob left is ours alone: it goes.
fn remove_repo_if_empty(repo_dir: &Path) {
    for sub in ["snapshots", "blobs"] {
        remove_empty_tree(&repo_dir.join(sub));
    }
    remove_empty_tree(&repo_dir.join("refs"));
    let _ = fs::remove_dir(repo_dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

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
        let e = publish(&cache, &target("sub/x.gguf", &sha), &file).unwrap();
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
            publish(&cache, &target("sub/x.gguf", &sha), &file).unwrap(),
            e
        );
        // Someone else's file in the cache survives the unpublish.
        let theirs = cache.join("models--x--y/blobs/keep");
        fs::create_dir_all(theirs.parent().unwrap()).unwrap();
        fs::write(&theirs, b"theirs").unwrap();
        unpublish(&cache, &e, &file);
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
        let first = publish(&cache, &target("x.gguf", &sha), &file).unwrap();
        let other = Target {
            commit: "fedcba9876543210fedcba9876543210fedcba98",
            revision: None,
            ..target("x.gguf", &sha)
        };
        let second = publish(&cache, &other, &file).unwrap();
        unpublish(&cache, &first, &file);
        let blob = first.repo_dir.join(&first.blob);
        assert!(blob.exists(), "the other snapshot still uses it");
        assert!(
            !first.repo_dir.join("refs/main").exists(),
            "a ref to a gone commit goes"
        );
        unpublish(&cache, &second, &file);
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
            assert!(publish(&cache, &t, &file).is_err());
        }
        assert!(!cache.exists());
    }
}
