//! Whether a link the library made is still a link to our file (no other module's
//! types: publishing modules of every runtime use it).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `link` is a regular file with the same inode as `file` (a hard link we made to it).
pub(super) fn same_inode(link: &Path, file: &Path) -> bool {
    match (fs::symlink_metadata(link), fs::metadata(file)) {
        (Ok(l), Ok(f)) => l.is_file() && (l.dev(), l.ino()) == (f.dev(), f.ino()),
        _ => false,
    }
}
