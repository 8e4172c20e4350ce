//! The file rules of the contract: which names are allowed, where files land, and the
//! guarantee that nothing is ever written outside `download_dir`.

use std::io;
use std::path::{Path, PathBuf};

mod dir;
mod place;

pub use dir::{open_regular, parent_of, Dir, Kind, Stat};
pub use place::Place;

/// Why a name or path is refused (answered with 422).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name {0:?} is longer than {MAX_NAME_BYTES} bytes (its .part must fit in 255)")]
    TooLong(String),
    #[error("name {0:?} contains an invisible or direction-changing character (U+{1:04X})")]
    Invisible(String, u32),
    #[error("name {0:?} contains '/' or '\\'")]
    Separator(String),
    #[error("name {0:?} starts with '.' (hidden files and '..' are refused)")]
    LeadingDot(String),
    #[error("name {0:?} contains a NUL or control character")]
    Control(String),
    #[error("name {0:?} is reserved on Windows")]
    Reserved(String),
    #[error("name {0:?} ends with a space or '.'")]
    TrailingDotOrSpace(String),
    #[error("name {0:?} ends with '.part', the name of another file's unfinished download")]
    PartSuffix(String),
}

/// The longest name: a file system takes 255 bytes, and the `.part` beside it adds 5.
pub const MAX_NAME_BYTES: usize = 250;

/// Characters that change how a name is shown without being seen: bidi overrides,
/// embeddings, isolates and marks, and the zero-width ones. A name with one can pose as
/// another (`gguf.exe` shown as `exe.gguf`).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Checks one path component against the contract's rules (plus Windows-reserved names,
/// since download dirs are often shared with Windows machines over SMB).
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong(name.chars().take(40).collect()));
    }
    if let Some(c) = name.chars().find(|&c| is_invisible(c)) {
        return Err(NameError::Invisible(
            name.escape_unicode().to_string(),
            c as u32,
        ));
    }
    if name.contains('/') || name.contains('\\') {
        return Err(NameError::Separator(name.into()));
    }
    if name.starts_with('.') {
        return Err(NameError::LeadingDot(name.into()));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(NameError::Control(name.escape_default().to_string()));
    }
    if name.ends_with(' ') || name.ends_with('.') {
        return Err(NameError::TrailingDotOrSpace(name.into()));
    }
    let stem = name.split('.').next().unwrap_or(name).to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        return Err(NameError::Reserved(name.into()));
    }
    Ok(())
}

/// Checks the name a download's file will have: [`validate_name`], and no `.part` at
/// the end. `x.part` is where the download of `x` keeps its bytes, so a download named
/// `x.part` could be taken over by one named `x` (the `.part` adopted and renamed).
pub fn validate_file_name(name: &str) -> Result<(), NameError> {
    validate_name(name)?;
    if name.ends_with(".part") {
        return Err(NameError::PartSuffix(name.into()));
    }
    Ok(())
}

/// Checks a relative `/`-separated path (e.g. `owner/name/file.gguf`) component by component.
pub fn validate_relative_path(path: &str) -> Result<(), NameError> {
    if path.is_empty() {
        return Err(NameError::Empty);
    }
    path.split('/').try_for_each(validate_name)
}

/// The file name a URL suggests: its last non-empty path segment, percent-decoded.
pub fn name_from_url(url: &url::Url) -> Option<String> {
    let segment = url.path_segments()?.rfind(|s| !s.is_empty())?;
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?
        .into_owned();
    Some(decoded)
}

/// What tells one file from another that took its name: its inode and modification
/// time (ns), as a download records the file it renamed into place.
pub fn identity(meta: &std::fs::Metadata) -> [u64; 2] {
    use std::os::unix::fs::MetadataExt;
    let mtime_ns = (meta.mtime() as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(meta.mtime_nsec() as u64);
    [meta.ino(), mtime_ns]
}

/// `<path>.part`: where data goes while a download runs.
pub fn part_path(final_path: &Path) -> PathBuf {
    let mut s = final_path.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// `dir` is a real directory (not a link), created if it is missing.
fn real_dir_or_create(dir: &Path, relative: &str, part: &str) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{relative}: {part} is a symlink; downloads never follow links"),
        )),
        Ok(m) if !m.is_dir() => Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{relative}: {part} is a file, not a directory"),
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir(dir),
        Err(e) => Err(e),
    }
}

/// Resolves `relative` under `root`, creating the parent directories, and checks that the
/// result stays inside `root` even when a directory on the way is a symlink pointing out.
pub fn resolve_inside(root: &Path, relative: &str) -> io::Result<PathBuf> {
    validate_relative_path(relative)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    std::fs::create_dir_all(root)?;
    let root = root.canonicalize()?;
    let components: Vec<&str> = relative.split('/').collect();
    let (file_name, dirs) = components
        .split_last()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty path"))?;
    // Walk down one directory at a time, refusing symlinks *before* creating anything,
    // so that a link pointing out of download_dir is never followed, not even by mkdir.
    let mut dir = root.clone();
    for part in dirs {
        dir.push(part);
        if let Err(e) = real_dir_or_create(&dir, relative, part) {
            // Another transfer may have created it a moment ago: look again, once.
            if e.kind() != io::ErrorKind::AlreadyExists || dir.symlink_metadata().is_err() {
                return Err(e);
            }
            real_dir_or_create(&dir, relative, part)?;
        }
    }
    let resolved = dir.join(file_name);
    for path in [resolved.clone(), part_path(&resolved)] {
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is a symlink; downloads never follow links",
                    path.display()
                ),
            ));
        }
    }
    // Belt and braces: the directory, resolved by the kernel, is still inside.
    if !dir.canonicalize()?.starts_with(&root) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{relative} resolves outside download_dir"),
        ));
    }
    Ok(resolved)
}

/// Bytes free for an unprivileged user on the filesystem holding `dir`.
pub fn free_space(dir: &Path) -> io::Result<u64> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL"))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `stat` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// Which file, whatever its name (device and inode): a file opened by name is checked
/// against one already open by this, since the name may have moved on. The one way
/// the code asks "is this the same file".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// fsyncs a directory so that a rename or create inside it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Transfers of one repo start together and create its folders at once.
    #[test]
    fn concurrent_resolutions_of_one_new_folder_all_succeed() {
        let root = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let root = root.path().to_owned();
                std::thread::spawn(move || resolve_inside(&root, &format!("o/r/sub/f{i}.gguf")))
            })
            .collect();
        for t in threads {
            let path = t.join().unwrap().expect("every one resolves");
            assert!(path.starts_with(root.path().canonicalize().unwrap()));
        }
    }

    #[test]
    fn names_that_cannot_take_a_part_or_hide_their_spelling_are_refused() {
        assert!(validate_name(&"x".repeat(MAX_NAME_BYTES)).is_ok());
        assert!(matches!(
            validate_name(&"x".repeat(MAX_NAME_BYTES + 1)),
            Err(NameError::TooLong(_))
        ));
        // 'é' is two bytes: 126 of them are 252 bytes.
        assert!(validate_name(&"é".repeat(126)).is_err());
        for sneaky in [
            "model\u{202E}fuggg.exe",
            "a\u{200B}b.gguf",
            "x\u{2066}y",
            "\u{FEFF}z.bin",
        ] {
            assert!(
                matches!(validate_name(sneaky), Err(NameError::Invisible(..))),
                "{sneaky:?}"
            );
        }
        // Other scripts and emoji stay welcome.
        for fine in ["模型.gguf", "مدل.bin", "llama🦙.gguf"] {
            assert!(validate_name(fine).is_ok(), "{fine:?}");
        }
    }

    #[test]
    fn a_download_is_never_named_as_another_ones_part() {
        assert!(matches!(
            validate_file_name("c.bin.part"),
            Err(NameError::PartSuffix(_))
        ));
        assert!(
            validate_name("c.bin.part").is_ok(),
            "a folder may be named so"
        );
        for fine in ["c.bin", "c.part.bin", "c.partial", "c.PART"] {
            assert!(validate_file_name(fine).is_ok(), "{fine:?}");
        }
    }

    #[test]
    fn names_follow_the_contract() {
        for ok in [
            "model.gguf",
            "a b.bin",
            "Q4_K_M-00001-of-00003.gguf",
            "ünïcode.txt",
            "x..y",
        ] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".",
            ".hidden",
            "a/b",
            "a\\b",
            "nul\0x",
            "tab\tx",
            "CON",
            "com1.txt",
            "lpt9",
            "trailing.",
            "trailing ",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_name(&"x".repeat(256)).is_err());
        assert!(validate_name("console.gguf").is_ok());
    }

    #[test]
    fn relative_paths_are_checked_per_component() {
        assert!(validate_relative_path("owner/name/file.gguf").is_ok());
        for bad in ["/abs", "a//b", "../x", "a/../b", "a/.git/x", "a/"] {
            assert!(validate_relative_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn url_names_are_decoded() {
        let u = url::Url::parse("http://h/a/My%20Model.gguf?x=1").unwrap();
        assert_eq!(name_from_url(&u).as_deref(), Some("My Model.gguf"));
        let u = url::Url::parse("http://h/").unwrap();
        assert_eq!(name_from_url(&u), None);
    }

    #[test]
    fn symlinked_dirs_cannot_escape() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("evil")).unwrap();
        assert!(resolve_inside(root.path(), "evil/x.bin").is_err());
        assert!(resolve_inside(root.path(), "evil/sub/x.bin").is_err());
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "mkdir went through the link"
        );
        std::os::unix::fs::symlink(outside.path().join("t"), root.path().join("p.bin.part"))
            .unwrap();
        assert!(
            resolve_inside(root.path(), "p.bin").is_err(),
            "a symlinked .part is refused"
        );
        let ok = resolve_inside(root.path(), "good/x.bin").unwrap();
        assert!(ok.starts_with(root.path().canonicalize().unwrap()));
    }
}

/// Property tests: random names never get a path out of `download_dir`.
#[cfg(test)]
mod properties {
    use super::*;

    #[test]
    fn accepted_names_stay_inside_and_refused_ones_write_nothing() {
        let root = tempfile::tempdir().unwrap();
        let alphabet: Vec<char> = "ab./\\\0\n .-_~é:*?<>|CONUL1".chars().collect();
        let mut rng = fastrand::Rng::with_seed(42);
        for _ in 0..5_000 {
            let name: String = (0..rng.usize(0..12))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let name = format!("{name}{}", if rng.bool() { "/x" } else { "" });
            let ok = validate_relative_path(&name).is_ok();
            for c in name.split('/') {
                if ok {
                    assert!(
                        !c.is_empty()
                            && !c.starts_with('.')
                            && !c.contains('\\')
                            && !c.contains('\0'),
                        "{name:?}"
                    );
                }
            }
            if let Ok(p) = resolve_inside(root.path(), &name) {
                assert!(ok, "{name:?} resolved without passing validation");
                assert!(
                    p.starts_with(root.path().canonicalize().unwrap()),
                    "{name:?} -> {}",
                    p.display()
                );
            }
        }
        // Only directories were created, all inside.
        for entry in walk(root.path()) {
            assert!(entry.starts_with(root.path()));
            assert!(entry.is_dir(), "a file was created: {}", entry.display());
        }
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
        out
    }
}
