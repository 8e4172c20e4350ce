//! What the library keeps of one file (stored in sled), and how the API shows it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::hf_cache::Entry;
use crate::files::{FileId, Stat};
use crate::gguf::GgufInfo;
use crate::queue::model::Source;

/// Where a file is published, so that a delete removes exactly what we made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// The HuggingFace cache entry, when published there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf_cache: Option<Entry>,
    /// Snapshot entries of later commits that have the same bytes (made when an
    /// update of a sibling file moved `refs/main`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hf_cache_more: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama: Option<super::ollama::Entry>,
    /// The hard link in LM Studio's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmstudio: Option<std::path::PathBuf>,
    /// Why a runtime does not have it, by runtime.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub not_published: BTreeMap<String, String>,
}

impl Published {
    /// What a later read of the same file keeps from this one.
    pub fn fill_from(&mut self, earlier: &Published) {
        if self.hf_cache.is_none() {
            self.hf_cache.clone_from(&earlier.hf_cache);
        }
        for e in &earlier.hf_cache_more {
            if !self.hf_cache_more.contains(e) {
                self.hf_cache_more.push(e.clone());
            }
        }
        if self.ollama.is_none() {
            self.ollama.clone_from(&earlier.ollama);
        }
        if self.lmstudio.is_none() {
            self.lmstudio.clone_from(&earlier.lmstudio);
        }
        if self.not_published.is_empty() {
            self.not_published.clone_from(&earlier.not_published);
        }
    }
}

/// A newer file on the Hub than the one on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Update {
    /// The commit the revision points to now.
    pub revision: String,
    pub sha256: String,
    pub size: u64,
    /// What the update will fetch: for a Xet-backed file, the bytes of the chunks no
    /// file on disk holds; else its size. `null` until told.
    #[serde(default)]
    pub fetch_bytes: Option<u64>,
}

/// One file as the library knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub size: u64,
    /// Modification time in nanoseconds, with `ino` and `dev`: the file was read as it
    /// was then; a change of any makes the next scan read it again.
    pub mtime_ns: i128,
    pub ino: u64,
    pub dev: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gguf: Option<GgufInfo>,
    /// Why the GGUF header could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The commit the file was fetched at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The revision asked for (a branch name), for the HF cache's `refs/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_id: Option<String>,
    #[serde(default)]
    pub published: Published,
    /// What the last update check found newer on the Hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    /// Why the last update check could not tell (the repo is gone, or became gated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_error: Option<String>,
    /// The newest commit the last check found this very file at (same sha256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_at: Option<String>,
    /// This inode is a file this service wrote: a download of the queue completed it
    /// (verified, renamed into place, closed), and it has not changed since. Only
    /// such files are ever merged with another (see `dedupe`); a file put there by
    /// hand, or that another program may hold, never is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ours: bool,
}

/// The download that fetched a file, as far as the library cares.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub download_id: String,
    pub sha256: Option<String>,
    pub repo: Option<String>,
    pub commit: Option<String>,
    pub revision: Option<String>,
    /// The size it completed with.
    pub bytes: Option<u64>,
}

impl Origin {
    pub fn of_record(d: &crate::queue::model::Download) -> Origin {
        Origin::new(&d.id, d.sha256.clone(), &d.source, d.bytes_total)
    }

    fn new(id: &str, sha256: Option<String>, source: &Source, bytes: Option<u64>) -> Origin {
        let (repo, commit, revision) = match source {
            Source::Hub {
                repo,
                revision,
                commit,
                ..
            } => (Some(repo.clone()), commit.clone(), Some(revision.clone())),
            Source::Url => (None, None, None),
        };
        Origin {
            download_id: id.to_owned(),
            sha256,
            repo,
            commit,
            revision,
            bytes,
        }
    }
}

/// Where a file is found by each runtime (`null` where it is not published).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Runtimes {
    pub hf_cache: Option<String>,
    pub ollama: Option<String>,
    pub lmstudio: Option<String>,
    /// Why a runtime does not have it, by runtime.
    #[schema(value_type = std::collections::HashMap<String, String>)]
    pub not_published: BTreeMap<String, String>,
}

/// A library file as `GET /api/library` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LibraryFile {
    pub path: String,
    pub size: u64,
    pub sha256: Option<String>,
    pub repo: Option<String>,
    pub revision: Option<String>,
    pub quantization: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub gguf: Option<GgufInfo>,
    /// Why the GGUF header could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub runtimes: Runtimes,
    /// A newer file on the Hub, when the last check found one.
    pub update: Option<Update>,
    /// Why the last update check could not tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_error: Option<String>,
    pub download_id: Option<String>,
    /// Commands that run it now, by runtime (`llama.cpp`, `ollama`): only runtimes
    /// that can reach it.
    #[schema(value_type = std::collections::HashMap<String, String>)]
    pub run: BTreeMap<String, String>,
}

impl Record {
    pub fn view(&self, path: &str) -> LibraryFile {
        let hf_cache = self
            .published
            .hf_cache
            .as_ref()
            .map(|e| e.repo_dir.join(&e.snapshot).display().to_string());
        LibraryFile {
            path: path.to_owned(),
            size: self.size,
            sha256: self.sha256.clone(),
            repo: self.repo.clone(),
            revision: self.revision.clone(),
            quantization: self.quantization.clone(),
            gguf: self.gguf.clone(),
            error: self.error.clone(),
            runtimes: Runtimes {
                hf_cache,
                ollama: self.published.ollama.as_ref().map(|e| e.name.clone()),
                lmstudio: self
                    .published
                    .lmstudio
                    .as_ref()
                    .map(|p| p.display().to_string()),
                not_published: self.published.not_published.clone(),
            },
            update: self.update.clone(),
            update_error: self.update_error.clone(),
            download_id: self.download_id.clone(),
            run: BTreeMap::new(),
        }
    }

    /// Which file the record was read at (device and inode).
    pub fn id(&self) -> FileId {
        FileId {
            dev: self.dev,
            ino: self.ino,
        }
    }

    /// Both records were made of the same file, unchanged (the same [`FileId`], size
    /// and mtime).
    pub fn same_file(&self, other: &Record) -> bool {
        self.id() == other.id() && (self.size, self.mtime_ns) == (other.size, other.mtime_ns)
    }

    /// Still the same file on disk as when this record was made.
    pub fn matches(&self, st: &Stat) -> bool {
        self.id() == st.id() && (self.size, self.mtime_ns) == (st.size, st.mtime_ns)
    }

    /// Takes the identity of the file as `st` says it is now.
    pub fn set_identity(&mut self, st: &Stat) {
        (self.size, self.mtime_ns, self.ino, self.dev) = (st.size, st.mtime_ns, st.ino, st.dev);
    }
}
