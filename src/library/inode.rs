//! Which inode is a library file of ours, and how a runtime's folder gets a hard link
//! to it (no other module's types: publishing modules of every runtime use it).

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::PathBuf;

use crate::files::{Dir, FileId, Kind, Stat};

/// A library file as its record knows it: its path (for messages, and the HF cache's
/// symlink when a hard link cannot be made) and the inode it was read at.
#[derive(Debug, Clone)]
pub struct Identity {
    pub path: PathBuf,
    pub file: FileId,
}

impl Identity {
    /// `st` is a regular file with this inode.
    pub fn is(&self, st: Option<Stat>) -> bool {
        st.is_some_and(|st| st.kind == Kind::File && st.id() == self.file)
    }
}

/// A library file, found through the directory handle of its folder.
pub struct Ours {
    pub id: Identity,
    pub dir: Dir,
    pub name: OsString,
}

impl Ours {
    /// A hard link `name` in `at` to this file: only while the file's name still
    /// holds the inode it was read at, and the new link is checked to be it (a name
    /// swapped meanwhile leaves nothing behind).
    pub fn link_into(&self, at: &Dir, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = name.as_ref();
        if !self.id.is(self.dir.stat(&self.name)?) {
            return Err(io::Error::other(format!(
                "{} changed since it was read",
                self.id.path.display()
            )));
        }
        at.link_from(&self.dir, &self.name, name)?;
        if !self.id.is(at.stat(name)?) {
            let _ = at.unlink(name);
            return Err(io::Error::other(format!(
                "{} changed while it was linked",
                self.id.path.display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
impl Ours {
    /// The file at `path` as it is now (tests).
    pub fn at(path: &std::path::Path) -> Ours {
        let m = std::fs::metadata(path).expect("a file");
        Ours {
            id: Identity {
                path: path.to_owned(),
                file: FileId::of(&m),
            },
            dir: Dir::open(path.parent().expect("a folder")).expect("its folder"),
            name: path.file_name().expect("a name").to_owned(),
        }
    }
}
