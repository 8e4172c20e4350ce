//! The directory handle the library and its publishers go through: every name is
//! looked up in a directory that was itself opened without following a link
//! (`openat` with `O_NOFOLLOW`, `fstatat` with `AT_SYMLINK_NOFOLLOW`, `unlinkat`,
//! `linkat`, `renameat`), so that a link planted in `download_dir`, the HF cache's
//! `refs/`, Ollama's or LM Studio's folder is a name like any other, never a way out.
//! A file is opened with `O_NONBLOCK` (a FIFO never blocks the open) and refused
//! unless `fstat` of the handle says it is a regular file; every read of a file we did
//! not write is capped. The engine's [`super::Place`] is the same discipline for one
//! transfer's `.part`.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// An open directory.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

/// What a name in a directory is, as `fstatat` (no follow) or `fstat` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Link,
    /// A FIFO, socket or device: never opened.
    Special,
}

/// One `stat`, the parts the library uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl Stat {
    fn of(st: &libc::stat) -> Stat {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Link,
            _ => Kind::Special,
        };
        Stat {
            kind,
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime_ns: i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec),
        }
    }

    /// Which file this is.
    pub fn id(&self) -> super::FileId {
        super::FileId {
            dev: self.dev,
            ino: self.ino,
        }
    }
}

pub(super) fn cname(name: &OsStr) -> io::Result<CString> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.as_bytes().contains(&b'/')
        || name.as_bytes().contains(&0);
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a name in a folder"),
        ));
    }
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// A libc return value as a `Result` (negative: the OS error); `Place` uses it too.
pub(super) fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fstat(fd: libc::c_int) -> io::Result<Stat> {
    // SAFETY: zeroed is a valid `stat`; the fd is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(Stat::of(&st))
}

fn not_a(what: &str, name: &OsStr, kind: Kind) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{name:?} is a {kind:?}, not a {what}: never followed or opened"),
    )
}

impl Dir {
    /// Opens a configured folder (`download_dir`, a runtime's folder): the
    /// configuration's own path may be a link; nothing below it is followed.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let flags = libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_RDONLY;
        // SAFETY: a NUL-terminated path.
        let fd = check(unsafe { libc::open(c.as_ptr(), flags) })?;
        // SAFETY: just opened, owned here.
        Ok(Dir {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Like [`Dir::open`], creating the folder (and its parents) when missing.
    pub fn open_or_create(path: &Path) -> io::Result<Dir> {
        std::fs::create_dir_all(path)?;
        Dir::open(path)
    }

    fn raw(&self) -> libc::c_int {
        self.fd.as_raw_fd()
    }

    /// The directory itself.
    pub fn stat_self(&self) -> io::Result<Stat> {
        fstat(self.raw())
    }

    /// What an open file is now.
    pub fn stat_of(file: &File) -> io::Result<Stat> {
        fstat(file.as_raw_fd())
    }

    /// What `name` is, without following it; `None` when nothing has that name.
    pub fn stat(&self, name: impl AsRef<OsStr>) -> io::Result<Option<Stat>> {
        let c = cname(name.as_ref())?;
        // SAFETY: zeroed is a valid `stat`; the fd and name are valid.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let rc =
            unsafe { libc::fstatat(self.raw(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        match check(rc) {
            Ok(_) => Ok(Some(Stat::of(&st))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The sub-folder `name`, never through a link.
    pub fn sub(&self, name: impl AsRef<OsStr>) -> io::Result<Dir> {
        let c = cname(name.as_ref())?;
        let flags = libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY;
        // SAFETY: a valid directory fd and a NUL-terminated name.
        let fd = check(unsafe { libc::openat(self.raw(), c.as_ptr(), flags) })?;
        // SAFETY: just opened, owned here.
        Ok(Dir {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The sub-folder `name`, made when missing (never through a link).
    pub fn sub_or_create(&self, name: impl AsRef<OsStr>) -> io::Result<Dir> {
        let name = name.as_ref();
        match self.sub(name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let c = cname(name)?;
                // SAFETY: a valid directory fd and name. EEXIST: another made it.
                let rc = unsafe { libc::mkdirat(self.raw(), c.as_ptr(), 0o755) };
                if let Err(e) = check(rc) {
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        return Err(e);
                    }
                }
                self.sub(name)
            }
            other => other,
        }
    }

    /// Walks the folders of `relative` (plain names only; `create`: made when
    /// missing), each opened without following a link.
    pub fn walk(&self, relative: &Path, create: bool) -> io::Result<Dir> {
        let mut dir = self.dup()?;
        for c in relative.components() {
            let Component::Normal(name) = c else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a plain relative path", relative.display()),
                ));
            };
            dir = if create {
                dir.sub_or_create(name)?
            } else {
                dir.sub(name)?
            };
        }
        Ok(dir)
    }

    fn dup(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
        })
    }

    /// Every name in the folder (not `.` and `..`) with what it is (no follow).
    /// A name gone between the listing and its `stat` is left out.
    pub fn entries(&self) -> io::Result<Vec<(OsString, Stat)>> {
        // fdopendir takes the fd it is given: hand it a fresh one of the same folder.
        let fd = self.fd.try_clone()?;
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        // SAFETY: `raw` is an open directory fd that the DIR stream now owns.
        let stream = unsafe { libc::fdopendir(raw) };
        if stream.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed: the fd is still ours to close.
            unsafe { libc::close(raw) };
            return Err(e);
        }
        // SAFETY: rewinding a valid stream (the duplicate shares its offset).
        unsafe { libc::rewinddir(stream) };
        let mut names = Vec::new();
        loop {
            // SAFETY: a valid stream; the entry is read before the next call.
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                break;
            }
            // SAFETY: d_name is NUL-terminated.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            let bytes = name.to_bytes();
            if bytes != b"." && bytes != b".." {
                names.push(OsString::from_vec(bytes.to_vec()));
            }
        }
        // SAFETY: the stream is valid and closed once (it closes its fd).
        unsafe { libc::closedir(stream) };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Ok(Some(st)) = self.stat(&name) {
                out.push((name, st));
            }
        }
        Ok(out)
    }

    /// Opens regular file `name` for reading: not through a link, not blocking on a
    /// FIFO, and refused unless the handle is a regular file.
    pub fn open_file(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        let name = name.as_ref();
        // A device is not even opened (an open may have effects of its own).
        match self.stat(name)? {
            Some(st) if st.kind != Kind::File => return Err(not_a("file", name, st.kind)),
            _ => {}
        }
        let c = cname(name)?;
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        // SAFETY: a valid directory fd and a NUL-terminated name.
        let fd = match check(unsafe { libc::openat(self.raw(), c.as_ptr(), flags) }) {
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(not_a("file", name, Kind::Link))
            }
            other => other?,
        };
        // SAFETY: just opened, owned by the File.
        let file = unsafe { File::from_raw_fd(fd) };
        let st = fstat(file.as_raw_fd())?;
        if st.kind != Kind::File {
            return Err(not_a("file", name, st.kind));
        }
        // A regular file: reads block as usual from here.
        // SAFETY: plain fcntl on a valid fd.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, libc::O_RDONLY) };
        Ok(file)
    }

    /// Opens regular file `name` (as [`Dir::open_file`]) with a read lease on it: the
    /// kernel grants one only while no one has the file open for writing, and makes
    /// a later opener for writing wait until the lease goes (when the returned file
    /// is closed). An error: someone may be writing it.
    pub fn open_leased(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        static QUIET: std::sync::Once = std::sync::Once::new();
        // A lease holder is told of a break by SIGIO, whose default ends the process;
        // the lease is held for a moment only, and let go without being told.
        // SAFETY: installing SIG_IGN is async-signal-safe and affects only SIGIO.
        QUIET.call_once(|| unsafe {
            libc::signal(libc::SIGIO, libc::SIG_IGN);
        });
        let file = self.open_file(name)?;
        // SAFETY: a valid fd; F_SETLEASE takes an int.
        check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) })?;
        Ok(file)
    }

    /// The whole of regular file `name` when it is at most `cap` bytes (a file we did
    /// not write: a ref, a manifest); an error when it is longer.
    pub fn read_capped(&self, name: impl AsRef<OsStr>, cap: u64) -> io::Result<Vec<u8>> {
        let name = name.as_ref();
        let file = self.open_file(name)?;
        let mut out = Vec::new();
        file.take(cap + 1).read_to_end(&mut out)?;
        if out.len() as u64 > cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name:?} is longer than {cap} bytes"),
            ));
        }
        Ok(out)
    }

    /// Writes `bytes` as `name`: a new temporary file (`O_EXCL`, never through a
    /// link), then a rename over `name`, so nobody reads half of it. A folder at
    /// `name` is not replaced.
    pub fn write_atomic(&self, name: impl AsRef<OsStr>, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let name = name.as_ref();
        let target = cname(name)?;
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".mm-{}.tmp", std::process::id()));
        let tmp = cname(&tmp_name)?;
        let _ = self.unlink(&tmp_name);
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a valid directory fd and name; mode with O_CREAT.
        let fd = check(unsafe { libc::openat(self.raw(), tmp.as_ptr(), flags, 0o644) })?;
        // SAFETY: just opened, owned by the File.
        let mut file = unsafe { File::from_raw_fd(fd) };
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        drop(file);
        // SAFETY: valid fds and names.
        let renamed = written.and_then(|()| {
            check(unsafe { libc::renameat(self.raw(), tmp.as_ptr(), self.raw(), target.as_ptr()) })
                .map(|_| ())
        });
        if renamed.is_err() {
            let _ = self.unlink(&tmp_name);
        }
        renamed
    }

    /// A symlink `name` pointing to `to`.
    pub fn symlink(&self, to: &Path, name: impl AsRef<OsStr>) -> io::Result<()> {
        let c = cname(name.as_ref())?;
        let t = CString::new(to.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: valid fd and NUL-terminated strings.
        check(unsafe { libc::symlinkat(t.as_ptr(), self.raw(), c.as_ptr()) }).map(|_| ())
    }

    /// Where the symlink `name` points (read, never followed).
    pub fn read_link(&self, name: impl AsRef<OsStr>) -> io::Result<PathBuf> {
        let c = cname(name.as_ref())?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: a valid fd and name; the buffer's length is passed.
        let n =
            unsafe { libc::readlinkat(self.raw(), c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(PathBuf::from(OsString::from_vec(buf)))
    }

    /// Removes the name `name` (a file or a link; never what a link points to).
    pub fn unlink(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let c = cname(name.as_ref())?;
        // SAFETY: a valid fd and name.
        check(unsafe { libc::unlinkat(self.raw(), c.as_ptr(), 0) }).map(|_| ())
    }

    /// Removes the empty folder `name`.
    pub fn rmdir(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let c = cname(name.as_ref())?;
        // SAFETY: a valid fd and name.
        check(unsafe { libc::unlinkat(self.raw(), c.as_ptr(), libc::AT_REMOVEDIR) }).map(|_| ())
    }

    /// A hard link `name` here to `from_name` in `from` (the name itself: a link
    /// there is linked as a link, never followed). Refuses to replace anything.
    pub fn link_from(
        &self,
        from: &Dir,
        from_name: &OsStr,
        name: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        let (f, t) = (cname(from_name)?, cname(name.as_ref())?);
        // SAFETY: valid fds and names; flags 0: no following.
        check(unsafe { libc::linkat(from.raw(), f.as_ptr(), self.raw(), t.as_ptr(), 0) })
            .map(|_| ())
    }

    /// Renames `from` here to `to_name` in `to`.
    pub fn rename(
        &self,
        from: impl AsRef<OsStr>,
        to: &Dir,
        to_name: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        let (f, t) = (cname(from.as_ref())?, cname(to_name.as_ref())?);
        // SAFETY: valid fds and names.
        check(unsafe { libc::renameat(self.raw(), f.as_ptr(), to.raw(), t.as_ptr()) }).map(|_| ())
    }
}

/// Opens `relative` (plain names, `/` between them) below `root` for reading: each
/// folder through [`Dir::sub`], the file through [`Dir::open_file`]. Any name is
/// accepted but an empty one, `.` and `..` (a hand-placed file may be named as the
/// contract would not allow). A regular file under a write lease (a transfer's
/// `.part`) answers `EWOULDBLOCK` and the open starts breaking the lease: it is asked
/// again (never without `O_NONBLOCK`, which a FIFO swapped in meanwhile would block)
/// until its holder lets go, within the kernel's lease-break time.
pub fn open_regular(root: &Path, relative: &str) -> io::Result<File> {
    let mut names = relative.split('/');
    let file_name = names.next_back().unwrap_or_default();
    let folders: PathBuf = names.collect();
    if relative.starts_with('/')
        || relative
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{relative:?} is not a path below download_dir"),
        ));
    }
    let dir = Dir::open(root)?.walk(&folders, false)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    loop {
        match dir.open_file(file_name) {
            Err(e)
                if e.raw_os_error() == Some(libc::EWOULDBLOCK)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// `path` split into its folder (walked from `root`'s handle without following links)
/// and its last name. `path` is absolute under `root`, or relative to it.
pub fn parent_of(
    root: &Dir,
    root_path: &Path,
    path: &Path,
    create: bool,
) -> io::Result<(Dir, OsString)> {
    let rel = if path.is_absolute() {
        path.strip_prefix(root_path).map_err(|_| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is not under {}", path.display(), root_path.display()),
            )
        })?
    } else {
        path
    };
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
        .to_owned();
    let dir = root.walk(rel.parent().unwrap_or(Path::new("")), create)?;
    Ok((dir, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_fifos_and_long_files_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.path().join("zero")).unwrap();
        std::fs::write(root.path().join("big"), vec![b'x'; 2000]).unwrap();
        let fifo = CString::new(root.path().join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let dir = Dir::open(root.path()).unwrap();
        assert!(dir.sub("out").is_err());
        assert!(dir.walk(Path::new("out"), false).is_err());
        assert!(dir.read_capped("zero", 1024).is_err());
        assert!(dir.read_capped("fifo", 1024).is_err(), "no block, refused");
        assert!(dir.read_capped("big", 1024).is_err());
        assert_eq!(dir.read_capped("big", 4096).unwrap().len(), 2000);
        let kinds: std::collections::BTreeMap<_, _> = dir
            .entries()
            .unwrap()
            .into_iter()
            .map(|(n, s)| (n.into_string().unwrap(), s.kind))
            .collect();
        assert_eq!(kinds["out"], Kind::Link);
        assert_eq!(kinds["fifo"], Kind::Special);
        assert_eq!(kinds["big"], Kind::File);
        dir.unlink("out").unwrap();
        assert!(outside.path().join("secret").exists());
    }

    #[test]
    fn open_regular_follows_no_link_and_opens_no_fifo() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("d")).unwrap();
        std::fs::write(root.path().join("d/f"), b"ours").unwrap();
        std::fs::write(outside.path().join("f"), b"theirs").unwrap();
        let mut got = String::new();
        std::io::Read::read_to_string(&mut open_regular(root.path(), "d/f").unwrap(), &mut got)
            .unwrap();
        assert_eq!(got, "ours");
        std::os::unix::fs::symlink(outside.path().join("f"), root.path().join("d/l")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("e")).unwrap();
        assert!(open_regular(root.path(), "d/l").is_err(), "a linked file");
        assert!(open_regular(root.path(), "e/f").is_err(), "a linked folder");
        assert!(open_regular(root.path(), "d/../d/f").is_err());
        let fifo = CString::new(root.path().join("d/p").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        check(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }).unwrap();
        assert!(open_regular(root.path(), "d/p").is_err(), "a FIFO, at once");
        assert!(open_regular(root.path(), "d").is_err(), "a folder");
    }
}
