//! The data dir's lock.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use super::StoreError;

/// An exclusive `flock` on `data_dir/lock`, taken before anything in the data dir is
/// read: sled's own lock comes only with its open, which already rewrites its files.
/// Held (the descriptor open) for as long as the store is.
pub(super) struct DirLock {
    _held: File,
}

impl DirLock {
    pub(super) fn take(data_dir: &Path) -> Result<DirLock, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(StoreError::DataDir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(data_dir.join("lock"))
            .map_err(StoreError::DataDir)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => StoreError::InUse(data_dir.to_owned()),
                _ => StoreError::DataDir(e),
            });
        }
        Ok(DirLock { _held: file })
    }
}
