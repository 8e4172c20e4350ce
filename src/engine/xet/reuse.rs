//! Chunks that files on disk already hold, copied instead of fetched: what makes an
//! update of a re-uploaded model cost its changed chunks only.
//!
//! Every file fetched from Xet storage leaves its chunk map in the state database
//! ([`ChunkMap`]: its terms, each a run of chunks of one xorb at a file offset). A
//! later Xet download indexes those maps by xorb; a term it needs that a map holds is
//! copied from that file (`copy_file_range`), the chunks found inside a longer term by
//! running the chunker over it. Nothing is trusted: a file whose size changed is
//! skipped, and the whole download is verified by its sha256 as always (a mismatch
//! after a copy makes the next attempt fetch everything).

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::chunker::chunk_lengths;
use super::plan::Term;
use super::{Shared, XetError};
use crate::queue::store::Store;

/// The chunk map of a file on disk, as kept in the state database under its path
/// (relative to `download_dir`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChunkMap {
    pub(crate) size: u64,
    pub(crate) xet_hash: String,
    /// `(xorb, first chunk, end chunk, bytes)`, in file order.
    pub(crate) terms: Vec<(String, u32, u32, u64)>,
}

impl ChunkMap {
    pub(super) fn of(size: u64, xet_hash: &str, terms: &[Term]) -> ChunkMap {
        ChunkMap {
            size,
            xet_hash: xet_hash.to_owned(),
            terms: terms
                .iter()
                .map(|t| (t.xorb.clone(), t.chunks.start, t.chunks.end, t.len))
                .collect(),
        }
    }
}

/// A run of chunks of one xorb in one file on disk.
#[derive(Debug, Clone)]
struct Source {
    file: usize,
    chunks: Range<u32>,
    at: u64,
    len: u64,
}

/// One copy: `len` bytes from offset `from` of source file `file` to file offset `to`.
struct Piece {
    file: usize,
    from: u64,
    to: u64,
    len: u64,
}

/// Chunk lengths found in a source's term (`None`: the chunker disagreed), by
/// (file, offset); each found once, however many units ask at the same time.
type Lengths = HashMap<(usize, u64), Arc<tokio::sync::OnceCell<Option<Arc<Vec<u64>>>>>>;

/// The chunks of files on disk a download may take.
#[derive(Default)]
pub(super) struct Reuse {
    root: PathBuf,
    /// Relative path and size of each file a map describes.
    files: Vec<(String, u64)>,
    by_xorb: HashMap<String, Vec<Source>>,
    /// Files opened so far (`None`: could not be used).
    open: Mutex<HashMap<usize, Option<Arc<File>>>>,
    lengths: Mutex<Lengths>,
}

impl Reuse {
    /// The maps of every file on disk under `root` (none when `off`).
    pub(super) fn load(store: &Store, root: &Path, off: bool) -> Reuse {
        let mut reuse = Reuse {
            root: root.to_path_buf(),
            ..Reuse::default()
        };
        if off {
            return reuse;
        }
        let maps: Vec<(String, ChunkMap)> = match store.xet_maps() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the chunk maps; fetching every chunk");
                return reuse;
            }
        };
        for (path, map) in maps {
            let file = reuse.files.len();
            reuse.files.push((path, map.size));
            let mut at = 0;
            for (xorb, start, end, len) in map.terms {
                reuse.by_xorb.entry(xorb).or_default().push(Source {
                    file,
                    chunks: start..end,
                    at,
                    len,
                });
                at += len;
            }
        }
        reuse
    }

    /// Writes `terms` (clipped to `unit`) from files on disk when they hold all of
    /// them; false (nothing written) when the CAS must serve them.
    pub(super) async fn copy(
        &self,
        s: &Shared<'_>,
        terms: &[&Term],
        unit: &Range<u64>,
    ) -> Result<bool, XetError> {
        if self.by_xorb.is_empty() {
            return Ok(false);
        }
        let mut pieces = Vec::with_capacity(terms.len());
        for term in terms {
            match self.find(term).await {
                Some(p) => pieces.push(p),
                None => return Ok(false),
            }
        }
        for p in pieces {
            if !self.put(s, &p, unit).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Copies every term of `terms` a file on disk holds (clipped to `within`), before
    /// any unit runs: whole terms of a whole-file reconstruction mostly match whole
    /// terms (or their ends) of a chunk map, so few need the chunker. The bytes copied.
    pub(super) async fn copy_each(
        &self,
        s: &Shared<'_>,
        terms: &[Term],
        within: &Range<u64>,
    ) -> Result<u64, XetError> {
        let mut copied = 0;
        let missing = s.table.missing();
        for term in terms {
            if *s.stop.borrow() {
                break;
            }
            let end = term.at + term.len;
            if !missing.iter().any(|m| m.start < end && term.at < m.end) {
                continue;
            }
            if let Some(p) = self.find(term).await {
                if self.put(s, &p, within).await? {
                    copied += p.len;
                }
            }
        }
        Ok(copied)
    }

    /// Writes one piece, clipped to `within`; false when its file cannot be used.
    async fn put(&self, s: &Shared<'_>, p: &Piece, within: &Range<u64>) -> Result<bool, XetError> {
        let Some(file) = self.file(p.file) else {
            return Ok(false);
        };
        let (start, end) = (p.to.max(within.start), (p.to + p.len).min(within.end));
        if start >= end {
            return Ok(true);
        }
        let from = p.from + (start - p.to);
        let copied = s.ranges.copy_from(file, from, start, end - start).await;
        if let Err(e) = copied {
            // The source changed under us (truncated, replaced): a file on disk is not
            // ours to fail the download for. Unmarked bytes it left in the `.part` are
            // overwritten by the fetch; a `.part` that cannot be written fails that
            // fetch in its turn.
            tracing::warn!(path = %self.files[p.file].0, error = %e, "a chunk map's file could not be copied from; fetching its chunks");
            lock(&self.open).insert(p.file, None);
            return Ok(false);
        }
        s.progress.set_done(s.table.held());
        s.reused(end - start);
        Ok(true)
    }

    /// Whether any file's chunk map was found.
    pub(super) fn is_empty(&self) -> bool {
        self.by_xorb.is_empty()
    }

    /// Whether files on disk hold every one of `terms`.
    pub(super) async fn holds(&self, terms: &[&Term]) -> bool {
        for term in terms {
            if self.find(term).await.is_none() {
                return false;
            }
        }
        !terms.is_empty()
    }

    /// Where a file on disk holds `term`'s bytes.
    async fn find(&self, term: &Term) -> Option<Piece> {
        for src in self.by_xorb.get(&term.xorb)? {
            if src.chunks.start > term.chunks.start || term.chunks.end > src.chunks.end {
                continue;
            }
            // A file that is gone or changed: another may hold the same chunks.
            if self.file(src.file).is_none() {
                continue;
            }
            if src.chunks == term.chunks && src.len == term.len {
                return Some(Piece {
                    file: src.file,
                    from: src.at,
                    to: term.at,
                    len: term.len,
                });
            }
            let lengths = self.lengths_of(src).await?;
            let skip = (term.chunks.start - src.chunks.start) as usize;
            let take = (term.chunks.end - term.chunks.start) as usize;
            let offset: u64 = lengths[..skip].iter().sum();
            let len: u64 = lengths[skip..skip + take].iter().sum();
            if len == term.len {
                return Some(Piece {
                    file: src.file,
                    from: src.at + offset,
                    to: term.at,
                    len,
                });
            }
        }
        None
    }

    /// The chunk lengths of a source's term, when the chunker finds as many chunks as
    /// the term has (else the file is not what its map says).
    async fn lengths_of(&self, src: &Source) -> Option<Arc<Vec<u64>>> {
        let cell = lock(&self.lengths)
            .entry((src.file, src.at))
            .or_default()
            .clone();
        cell.get_or_init(|| async {
            let file = self.file(src.file)?;
            let (at, len) = (src.at, src.len);
            let count = (src.chunks.end - src.chunks.start) as usize;
            tokio::task::spawn_blocking(move || chunk_lengths(&file, at, len))
                .await
                .ok()
                .and_then(Result::ok)
                .filter(|l| l.len() == count)
                .map(Arc::new)
        })
        .await
        .clone()
    }

    /// Source file `i`, opened once (inside `download_dir`, no link followed), when
    /// it still has the size its map says.
    fn file(&self, i: usize) -> Option<Arc<File>> {
        let mut open = lock(&self.open);
        if let Some(f) = open.get(&i) {
            return f.clone();
        }
        let (path, size) = self.files.get(i)?;
        let file = crate::files::open_regular(&self.root, path)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.is_file() && m.len() == *size))
            .map(Arc::new);
        if file.is_none() {
            tracing::debug!(path = %path, "a chunk map's file is gone or changed; not reused");
        }
        open.insert(i, file.clone());
        file
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
