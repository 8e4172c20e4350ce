//! Where a transfer writes: the directory handle its path was resolved to when the
//! transfer started, and the file's name in it. Every file operation of a transfer
//! goes through that handle (`openat`, `fstatat`, `renameat`, `unlinkat`), so that a
//! folder on the way swapped for a symlink mid-download moves none of them outside
//! `download_dir`: the handle still names the directory that was walked.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::dir::check;
use super::validate_relative_path;

/// A directory handle inside `download_dir` and a file name in it.
pub struct Place {
    dir: OwnedFd,
    /// `download_dir` and the folders walked, to walk them again before the rename.
    root: CString,
    dirs: Vec<CString>,
    name: CString,
    part: CString,
    /// The final path as walked, for messages and logs only.
    path: PathBuf,
}

impl std::fmt::Debug for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Place({})", self.path.display())
    }
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

/// Opens directory `name` in `dir` without following a symlink.
fn open_dir_at(dir: libc::c_int, name: &CString) -> io::Result<OwnedFd> {
    let flags = libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY;
    // SAFETY: a valid directory fd and a NUL-terminated name.
    let fd = check(unsafe { libc::openat(dir, name.as_ptr(), flags) })?;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstatat` without following a link; `None` when nothing has that name.
fn stat_at(dir: libc::c_int, name: &CString) -> io::Result<Option<libc::stat>> {
    // SAFETY: zeroed is a valid `stat`; the fd and name are valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    match check(rc) {
        Ok(_) => Ok(Some(st)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens `download_dir` itself (the configuration's: it may be a link).
fn open_root(root: &CString) -> io::Result<OwnedFd> {
    let flags = libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_RDONLY;
    // SAFETY: a NUL-terminated path.
    let fd = check(unsafe { libc::open(root.as_ptr(), flags) })?;
    // SAFETY: just opened, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn dev_ino(fd: libc::c_int) -> io::Result<(u64, u64)> {
    // SAFETY: zeroed is a valid `stat`; the fd is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok((st.st_dev, st.st_ino))
}

fn refuse(relative: &str, what: &str, e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) => io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{relative}: {what} is a symlink; downloads never follow links"),
        ),
        Some(libc::ENOTDIR) => io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{relative}: {what} is a file, not a directory"),
        ),
        _ => e,
    }
}

impl Place {
    /// Walks `relative` down from `root` one directory at a time (each opened with
    /// `O_NOFOLLOW`, created when missing), and keeps the handle of the last one.
    pub fn open(root: &Path, relative: &str) -> io::Result<Place> {
        validate_relative_path(relative)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let root_c = cstr(root.as_os_str())?;
        let mut dir = open_root(&root_c)?;
        let mut walked = Vec::new();
        let components: Vec<&str> = relative.split('/').collect();
        let (file_name, dirs) = components
            .split_last()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty path"))?;
        let mut path = root;
        for part in dirs {
            let c = cstr(OsStr::new(part))?;
            let next = match open_dir_at(dir.as_raw_fd(), &c) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // SAFETY: a valid directory fd and name. Another transfer may create
                    // it at the same moment: EEXIST is fine, the open below decides.
                    let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) };
                    if let Err(e) = check(rc) {
                        if e.kind() != io::ErrorKind::AlreadyExists {
                            return Err(e);
                        }
                    }
                    open_dir_at(dir.as_raw_fd(), &c)
                }
                other => other,
            }
            .map_err(|e| refuse(relative, part, e))?;
            dir = next;
            walked.push(c);
            path.push(part);
        }
        let name = cstr(OsStr::new(file_name))?;
        let part = cstr(OsStr::new(&format!("{file_name}.part")))?;
        let place = Place {
            dir,
            root: root_c,
            dirs: walked,
            name,
            part,
            path: path.join(file_name),
        };
        for n in [&place.name, &place.part] {
            if stat_at(place.dir.as_raw_fd(), n)?
                .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
            {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{relative}: {} is a symlink; downloads never follow links",
                        n.to_string_lossy()
                    ),
                ));
            }
        }
        Ok(place)
    }

    /// The final path as walked (for messages; never opened by name).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the `.part` read-write without following a link (`create`: make it when
    /// missing), with `flags` added (`O_DIRECT`, say).
    pub fn open_part(&self, create: bool, flags: libc::c_int) -> io::Result<File> {
        let mut all = libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC | flags;
        if create {
            all |= libc::O_CREAT;
        }
        // SAFETY: a valid directory fd and name; the mode is used only with O_CREAT.
        let fd =
            check(unsafe { libc::openat(self.dir.as_raw_fd(), self.part.as_ptr(), all, 0o644) })?;
        // SAFETY: just opened, owned by the File.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Device and inode of what the `.part` name holds now; `None` when nothing.
    pub fn part_id(&self) -> io::Result<Option<super::FileId>> {
        Ok(
            stat_at(self.dir.as_raw_fd(), &self.part)?.map(|st| super::FileId {
                dev: st.st_dev,
                ino: st.st_ino,
            }),
        )
    }

    /// The final name's file: inode, modification time (ns) and length, when it is a
    /// regular file.
    pub fn final_identity(&self) -> io::Result<Option<([u64; 2], u64)>> {
        Ok(stat_at(self.dir.as_raw_fd(), &self.name)?
            .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
            .map(|st| {
                let mtime = (st.st_mtime as u64)
                    .wrapping_mul(1_000_000_000)
                    .wrapping_add(st.st_mtime_nsec as u64);
                ([st.st_ino, mtime], st.st_size as u64)
            }))
    }

    /// Removes the `.part` name (whatever it holds now).
    pub fn remove_part(&self) -> io::Result<()> {
        // SAFETY: a valid directory fd and name.
        check(unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.part.as_ptr(), 0) }).map(|_| ())
    }

    /// Whether walking the same folders from `download_dir` again (without following
    /// links) still reaches the directory of the handle: a folder moved out of
    /// `download_dir` (and a link left in its place) takes the handle with it, and a
    /// rename there would land outside.
    pub fn still_inside(&self) -> io::Result<bool> {
        let mut dir = open_root(&self.root)?;
        for c in &self.dirs {
            dir = match open_dir_at(dir.as_raw_fd(), c) {
                Ok(next) => next,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ELOOP | libc::ENOENT | libc::ENOTDIR)
                    ) =>
                {
                    return Ok(false)
                }
                Err(e) => return Err(e),
            };
        }
        Ok(dev_ino(dir.as_raw_fd())? == dev_ino(self.dir.as_raw_fd())?)
    }

    /// Renames the `.part` to the final name, in the directory walked at the start.
    pub fn rename_into_place(&self) -> io::Result<()> {
        let d = self.dir.as_raw_fd();
        // SAFETY: valid directory fds and names.
        check(unsafe { libc::renameat(d, self.part.as_ptr(), d, self.name.as_ptr()) }).map(|_| ())
    }

    /// fsyncs the directory, so that a rename or create in it survives a crash.
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: a valid fd.
        check(unsafe { libc::fsync(self.dir.as_raw_fd()) }).map(|_| ())
    }

    /// Bytes free for an unprivileged user on the filesystem of the directory.
    pub fn free_space(&self) -> io::Result<u64> {
        // SAFETY: zeroed is a valid `statvfs`; the fd is valid.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        check(unsafe { libc::fstatvfs(self.dir.as_raw_fd(), &mut st) })?;
        Ok(st.f_bavail as u64 * st.f_frsize as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_swapped_for_a_link_after_the_walk_is_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let place = Place::open(root.path(), "sub/x.bin").unwrap();
        assert!(place.still_inside().unwrap());
        std::io::Write::write_all(&mut place.open_part(true, 0).unwrap(), b"abc").unwrap();
        // The folder goes and a link to outside takes its name.
        std::fs::rename(root.path().join("sub"), root.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("sub")).unwrap();
        assert!(
            !place.still_inside().unwrap(),
            "the walk no longer reaches it"
        );
        place.rename_into_place().unwrap();
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing outside"
        );
        assert_eq!(
            std::fs::read(root.path().join("moved/x.bin")).unwrap(),
            b"abc"
        );
        assert!(
            Place::open(root.path(), "sub/y.bin").is_err(),
            "a new walk refuses the link"
        );
    }
}
