//! Publishing into LM Studio's models folder: LM Studio lists exactly
//! `<models>/<publisher>/<model>/<file>.gguf` (two folders deep), so a Hub file
//! `owner/name/dir/x.gguf` appears as `owner/name/x.gguf`, a hard link to ours. The
//! parts of a split GGUF land side by side, which is how llama.cpp loads them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::inode::same_inode;

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

/// Hard-links `file` (ours) as `<models>/<owner>/<name>/<basename of repo_file>`.
pub fn publish(
    models: &Path,
    repo: &str,
    repo_file: &str,
    file: &Path,
) -> Result<PathBuf, Refused> {
    let base = repo_file.rsplit('/').next().unwrap_or(repo_file);
    if !base.to_ascii_lowercase().ends_with(".gguf") {
        return Err(Refused::NotGguf);
    }
    crate::files::validate_relative_path(repo)
        .and_then(|()| crate::files::validate_name(base))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let at = models.join(repo).join(base);
    match fs::symlink_metadata(&at) {
        Ok(_) if same_inode(&at, file) => return Ok(at),
        Ok(_) => return Err(Refused::Taken(at)),
        Err(_) => {}
    }
    if let Some(dir) = at.parent() {
        fs::create_dir_all(dir)?;
    }
    match fs::hard_link(file, &at) {
        Ok(()) => Ok(at),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Err(Refused::OtherFileSystem),
        Err(e) => Err(e.into()),
    }
}

/// Removes the link when it is still our file, and the folders left empty.
pub fn unpublish(models: &Path, at: &Path, file: &Path) {
    if !at.starts_with(models) {
        tracing::warn!(path = %at.display(), "not in the configured LM Studio folder; left alone");
        return;
    }
    if !same_inode(at, file) {
        return;
    }
    if let Err(e) = fs::remove_file(at) {
        tracing::warn!(path = %at.display(), error = %e, "cannot remove from LM Studio's folder");
        return;
    }
    let mut dir = at.parent();
    while let Some(d) = dir {
        if d == models || !d.starts_with(models) || fs::remove_dir(d).is_err() {
            return;
        }
        dir = d.parent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_folders_deep_and_back() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("x.gguf");
        fs::write(&file, b"w").unwrap();
        let models = root.path().join("lms");
        let at = publish(&models, "o/r", "sub/x-Q4_K_M.gguf", &file).unwrap();
        assert_eq!(at, models.join("o/r/x-Q4_K_M.gguf"));
        assert!(same_inode(&at, &file));
        fs::write(root.path().join("other.gguf"), b"o").unwrap();
        let taken = publish(
            &models,
            "o/r",
            "x-Q4_K_M.gguf",
            &root.path().join("other.gguf"),
        );
        assert!(matches!(taken, Err(Refused::Taken(_))));
        unpublish(&models, &at, &file);
        assert!(!at.exists());
        assert!(file.exists());
        assert_eq!(fs::read_dir(&models).unwrap().count(), 0);
        assert!(matches!(
            publish(&models, "o/r", "README.md", &file),
            Err(Refused::NotGguf)
        ));
    }
}
