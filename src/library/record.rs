//! What the library keeps of one file (stored in sled), and how the API shows it.

use serde::{Deserialize, Serialize};

use super::hf_cache::Entry;
use crate::gguf::GgufInfo;
use crate::model::{DownloadView, Source};

/// Where a file is published, so that a delete removes exactly what we made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// The HuggingFace cache entry, when published there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf_cache: Option<Entry>,
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
    pub fn of_view(d: &DownloadView) -> Origin {
        Origin::new(&d.id, d.sha256.clone(), &d.source, d.bytes_total)
    }

    pub fn of_record(d: &crate::model::Download) -> Origin {
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
    pub not_published: std::collections::BTreeMap<&'static str, String>,
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
    /// A newer file on the Hub (not checked yet: always null).
    #[schema(value_type = Option<Object>)]
    pub update: Option<serde_json::Value>,
    pub download_id: Option<String>,
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
                ..Runtimes::default()
            },
            update: None,
            download_id: self.download_id.clone(),
        }
    }

    /// Both records were made of the same file (size, mtime, inode, device).
    pub fn same_file(&self, other: &Record) -> bool {
        (self.size, self.mtime_ns, self.ino, self.dev)
            == (other.size, other.mtime_ns, other.ino, other.dev)
    }

    /// Still the same file on disk as when this record was made.
    pub fn matches(&self, meta: &std::fs::Metadata) -> bool {
        let (size, mtime_ns, ino, dev) = identity(meta);
        (self.size, self.mtime_ns, self.ino, self.dev) == (size, mtime_ns, ino, dev)
    }
}

/// A file's size, mtime (ns), inode and device.
pub fn identity(meta: &std::fs::Metadata) -> (u64, i128, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    (meta.len(), mtime_ns, meta.ino(), meta.dev())
}
