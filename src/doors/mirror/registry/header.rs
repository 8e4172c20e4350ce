//! What a manifest is made of besides the file's digest: the GGUF's header (family,
//! size, quantization) and its chat template. Read from the library's file, or, for a
//! file the library does not have, from the download the mirror starts for it (the
//! same one every blob request then follows): the header is the file's first bytes,
//! read from the `.part` as far as the download's last checkpoint vouches for them.

use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::error::RegistryError;
use super::source::Listing;
use crate::doors::mirror::{pull, Mirror, MirrorError};
use crate::gguf::{GgufError, GgufInfo};
use crate::hub::RepoFile;
use crate::queue::lifecycle::State;
use crate::queue::model::DownloadId;

/// What a manifest needs of a GGUF.
pub(super) struct Facts {
    pub info: GgufInfo,
    /// Whether the GGUF has a chat template at all.
    pub has_template: bool,
    /// What the Hub's table maps its chat template to. The template's text (up to
    /// 1 MiB) is not kept: a cache of facts holds only this reference into the table.
    pub mapped: Option<&'static super::automap::Mapped>,
}

/// How long a manifest request waits for a miss's header to arrive.
const HEADER_WAIT: Duration = Duration::from_secs(300);
/// How often it looks (the download checkpoints every second).
const POLL: Duration = Duration::from_millis(200);
/// Facts of library files (verified) kept by sha256: a GGUF's few header values (its
/// architecture and name capped at 64 KiB each) and a reference into the table.
const KEPT: usize = 128;

/// Facts by sha256, oldest first.
type Kept = Vec<(String, Arc<Facts>)>;

static CACHE: LazyLock<Mutex<Kept>> = LazyLock::new(Mutex::default);

fn cached(sha256: &str) -> Option<Arc<Facts>> {
    let cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache
        .iter()
        .find(|(s, _)| s == sha256)
        .map(|(_, f)| f.clone())
}

fn keep(sha256: &str, facts: Arc<Facts>) {
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if cache.iter().any(|(s, _)| s == sha256) {
        return;
    }
    if cache.len() >= KEPT {
        cache.remove(0);
    }
    cache.push((sha256.to_owned(), facts));
}

/// The facts of `file` of `repo`, whose content is `sha256`.
pub(super) async fn facts(
    mirror: &Mirror,
    repo: &str,
    listing: &Listing,
    file: &RepoFile,
    sha256: &str,
) -> Result<Arc<Facts>, RegistryError> {
    if let Some(facts) = of_library(mirror, repo, sha256).await? {
        return Ok(facts);
    }
    // Not kept: these bytes are not verified yet (an upstream that lies about the
    // sha256 must not leave its header standing for the real file's).
    Ok(Arc::new(
        from_download(mirror, repo, listing.revision(), file).await?,
    ))
}

/// The facts of the library's file of `repo` with this content (verified bytes, so
/// kept), if the library holds one.
pub(super) async fn of_library(
    mirror: &Mirror,
    repo: &str,
    sha256: &str,
) -> Result<Option<Arc<Facts>>, RegistryError> {
    if let Some(f) = cached(sha256) {
        return Ok(Some(f));
    }
    let Some(facts) = from_library(mirror, repo, sha256).await? else {
        return Ok(None);
    };
    let facts = Arc::new(facts);
    keep(sha256, facts.clone());
    Ok(Some(facts))
}

/// The library's file of `repo` with this content, read when it is still the file the
/// library indexed.
async fn from_library(
    mirror: &Mirror,
    repo: &str,
    sha256: &str,
) -> Result<Option<Facts>, RegistryError> {
    let Some((path, record)) = mirror
        .library
        .repo_files(repo)
        .into_iter()
        .find(|(_, r)| r.sha256.as_deref() == Some(sha256))
    else {
        return Ok(None);
    };
    let (library, rel) = (mirror.library.clone(), format!("{repo}/{path}"));
    blocking(move || {
        let (file, now) = match library.open(&rel) {
            Ok(opened) => opened,
            Err(e) => {
                tracing::info!(path = %rel, error = %e, "registry: a library file cannot be opened as indexed");
                return Ok(None);
            }
        };
        if !record.matches(&now) {
            return Ok(None);
        }
        let len = record.size;
        let reader = Prefix::new(file, len, len);
        read(reader, len).map(Some).map_err(|e| not_gguf(&rel, &e))
    })
    .await?
}

/// A file the library lacks: its download (started now, or the one running), read as
/// its first bytes become durable.
async fn from_download(
    mirror: &Mirror,
    repo: &str,
    rev: &str,
    file: &RepoFile,
) -> Result<Facts, RegistryError> {
    let Some((id, up)) = pull::fetch_for(mirror, repo, rev, file).await? else {
        return Err(RegistryError::Unavailable(format!(
            "{repo}/{}: the path holds another version of the file (another download or program); try again once it is done",
            file.path
        )));
    };
    let size = up.size.unwrap_or(file.size);
    let rel = format!("{repo}/{}", file.path);
    let deadline = Instant::now() + HEADER_WAIT;
    let mut tried = None;
    loop {
        let ready = durable(mirror, &id, size).await?;
        // Nothing durable yet: the download may not even have made its `.part`.
        if ready > 0 && tried != Some(ready) {
            tried = Some(ready);
            let (root, rel) = (mirror.download_dir.clone(), rel.clone());
            let got = blocking(move || {
                let Some(file) = open_arriving(&root, &rel, size)? else {
                    return Ok(None);
                };
                match read(Prefix::new(file, ready, size), size) {
                    Ok(facts) => Ok(Some(facts)),
                    Err(GgufError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                    Err(e) => Err(not_gguf(&rel, &e)),
                }
            })
            .await??;
            if let Some(facts) = got {
                return Ok(facts);
            }
        }
        if Instant::now() > deadline {
            return Err(RegistryError::Unavailable(format!(
                "{rel}: its GGUF header has not arrived in {}s; the download goes on, try again",
                HEADER_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// How many bytes of the download are on disk for good.
async fn durable(mirror: &Mirror, id: &DownloadId, size: u64) -> Result<u64, RegistryError> {
    let view = mirror.queue.get(id).await.map_err(MirrorError::from)?;
    match view.state {
        State::Completed => Ok(size),
        State::Failed | State::Cancelled => Err(RegistryError::Upstream(format!(
            "the download {id} ended {}: {}",
            view.state.as_str(),
            view.error.map(|e| e.message).unwrap_or_default()
        ))),
        _ => Ok(mirror
            .queue
            .durable_prefix(id)
            .await
            .map_err(MirrorError::from)?
            .unwrap_or(0)),
    }
}

/// The `.part`, or the finished file once renamed (when it has the download's size),
/// opened without following a link on the way; `None` while neither is there.
fn open_arriving(
    root: &std::path::Path,
    rel: &str,
    size: u64,
) -> Result<Option<std::fs::File>, RegistryError> {
    let io_error = |e: io::Error| RegistryError::Internal(format!("{rel}: {e}"));
    let not_found = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    match crate::files::open_regular(root, &format!("{rel}.part")) {
        Ok(f) => Ok(Some(f)),
        Err(e) if not_found(&e) => match crate::files::open_regular(root, rel) {
            Ok(f) if f.metadata().map_err(io_error)?.len() == size => Ok(Some(f)),
            Ok(_) => Err(RegistryError::Unavailable(format!(
                "{rel} is no longer the file the download fetched"
            ))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(io_error(e)),
        },
        Err(e) => Err(io_error(e)),
    }
}

fn read(reader: Prefix, len: u64) -> Result<Facts, GgufError> {
    let mut reader = BufReader::with_capacity(64 << 10, reader);
    let info = crate::gguf::read_header(&mut reader, len)?;
    let template = crate::gguf::read_chat_template(&mut reader, len)?;
    Ok(Facts {
        info,
        has_template: template.is_some(),
        mapped: template.as_deref().and_then(super::automap::lookup),
    })
}

fn not_gguf(rel: &str, e: &GgufError) -> RegistryError {
    RegistryError::Unsupported(format!("{rel} is not a GGUF file Ollama can load: {e}"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RegistryError::Internal(e.to_string()))
}

/// A file of `len` bytes of which only the first `ready` may be read: a read past them
/// is `WouldBlock` (not yet there), never the zeros of a preallocated `.part`.
struct Prefix {
    file: std::fs::File,
    pos: u64,
    ready: u64,
    len: u64,
}

impl Prefix {
    fn new(file: std::fs::File, ready: u64, len: u64) -> Prefix {
        Prefix {
            file,
            pos: 0,
            ready: ready.min(len),
            len,
        }
    }
}

impl Read for Prefix {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if buf.is_empty() || self.pos >= self.len {
            return Ok(0);
        }
        if self.pos >= self.ready {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "not arrived yet"));
        }
        let want = usize::try_from(self.ready - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Prefix {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        self.pos = pos
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A GGUF v3 header (no tensors) with a chat template, then `filler` zero bytes.
    fn gguf(template: &str, filler: usize) -> Vec<u8> {
        let s = |v: &str| {
            let mut out = (v.len() as u64).to_le_bytes().to_vec();
            out.extend(v.as_bytes());
            out
        };
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        out.extend(2u64.to_le_bytes());
        for (k, v) in [
            ("general.architecture", "llama"),
            ("tokenizer.chat_template", template),
        ] {
            out.extend(s(k));
            out.extend(8u32.to_le_bytes());
            out.extend(s(v));
        }
        out.extend(vec![0u8; filler]);
        out
    }

    #[test]
    fn a_header_is_read_only_once_its_bytes_are_durable() {
        let bytes = gguf("{{ messages }}", 10_000);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        let len = bytes.len() as u64;
        let open = || file.try_clone().unwrap();
        // Half the template durable: not yet, and nothing past `ready` was read.
        for ready in [0, 10, 60] {
            match read(Prefix::new(open(), ready, len), len) {
                Err(GgufError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
                other => panic!("ready {ready}: {:?}", other.map(|f| f.has_template)),
            }
        }
        let header = bytes.len() as u64 - 10_000;
        let facts = read(Prefix::new(open(), header, len), len).expect("the header is there");
        assert!(facts.has_template && facts.mapped.is_none());
        assert_eq!(facts.info.architecture.as_deref(), Some("llama"));
        // A file shorter than it claims (an upstream that lied about the size).
        assert!(read(Prefix::new(open(), len + 50, len + 100), len + 100).is_ok());
        let short = read(Prefix::new(open(), 20, 20), 20);
        assert!(short.is_err());
    }
}
