//! Publishing into LM Studio's models folder: LM Studio lists exactly
//! `<models>/<publisher>/<model>/<file>.gguf` (two folders deep), so a Hub file
//! `owner/name/dir/x.gguf` appears as `owner/name/x.gguf`, a hard link to ours. The
//! parts of a split GGUF land side by side, which is how llama.cpp loads them.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use super::inode::{Identity, Ours};
use crate::files::{parent_of, Dir};

/// Why a file cannot be published (shown in `runtimes.not_published.lmstudio`).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("not a GGUF file: LM Studio lists GGUF models only")]
    NotGguf,
    #[error("LM Studio's folder is on another file system than download_dir, and the library does not copy models")]
    OtherFileSystem,
    #[error("LM Studio already has a different file at {0}: left alone")]
    Taken(PathBuf),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Hard-links `file` (ours) as `<models>/<owner>/<name>/<basename of repo_file>`,
/// through directory handles (a link in LM Studio's folder is never followed).
pub fn publish(
    models: &Path,
    repo: &str,
    repo_file: &str,
    file: &Ours,
) -> Result<PathBuf, Refused> {
    let base = repo_file.rsplit('/').next().unwrap_or(repo_file);
    if !base.to_ascii_lowercase().ends_with(".gguf") {
        return Err(Refused::NotGguf);
    }
    crate::files::validate_relative_path(repo)
        .and_then(|()| crate::files::validate_name(base))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let at = models.join(repo).join(base);
    let dir = Dir::open_or_create(models)?.walk(Path::new(repo), true)?;
    match dir.stat(base)? {
        st @ Some(_) if file.id.is(st) => return Ok(at),
        Some(_) => return Err(Refused::Taken(at)),
        None => {}
    }
    match file.link_into(&dir, base) {
        Ok(()) => Ok(at),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Err(Refused::OtherFileSystem),
        Err(e) => Err(e.into()),
    }
}

/// Removes the link when it is still `file`'s inode, and the folders left empty.
pub fn unpublish(models: &Path, at: &Path, file: &Identity) {
    let Ok(root) = Dir::open(models) else { return };
    let Ok((dir, name)) = parent_of(&root, models, at, false) else {
        tracing::warn!(path = %at.display(), "not in the configured LM Studio folder; left alone");
        return;
    };
    if !file.is(dir.stat(&name).ok().flatten()) {
        return;
    }
    if let Err(e) = dir.unlink(&name) {
        tracing::warn!(path = %at.display(), error = %e, "cannot remove from LM Studio's folder");
        return;
    }
    let Ok(rel) = at.strip_prefix(models) else {
        return;
    };
    let folders: Vec<&OsStr> = rel.parent().map(|p| p.iter().collect()).unwrap_or_default();
    for k in (1..=folders.len()).rev() {
        let parent: PathBuf = folders[..k - 1].iter().collect();
        if root
            .walk(&parent, false)
            .and_then(|d| d.rmdir(folders[k - 1]))
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn two_folders_deep_and_back() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("x.gguf");
        fs::write(&file, b"w").unwrap();
        let models = root.path().join("lms");
        let ours = Ours::at(&file);
        let at = publish(&models, "o/r", "sub/x-Q4_K_M.gguf", &ours).unwrap();
        assert_eq!(at, models.join("o/r/x-Q4_K_M.gguf"));
        assert_eq!(fs::metadata(&at).unwrap().ino(), ours.id.file.ino);
        fs::write(root.path().join("other.gguf"), b"o").unwrap();
        let taken = publish(
            &models,
            "o/r",
            "x-Q4_K_M.gguf",
            &Ours::at(&root.path().join("other.gguf")),
        );
        assert!(matches!(taken, Err(Refused::Taken(_))));
        unpublish(&models, &at, &ours.id);
        assert!(!at.exists());
        assert!(file.exists());
        assert_eq!(fs::read_dir(&models).unwrap().count(), 0);
        assert!(matches!(
            publish(&models, "o/r", "README.md", &ours),
            Err(Refused::NotGguf)
        ));
    }
}
