//! Publishing a Hub file to every runtime the config names (the HF cache, Ollama, LM
//! Studio) once its digest is known, and taking it back on delete. Each runtime gets
//! a link to our one copy, never a second one.

use std::path::{Path, PathBuf};

use super::record::{Published, Record};
use super::{hf_cache, lmstudio, ollama, Inner};

/// The runtime folders the config names.
#[derive(Debug, Clone, Default)]
pub struct Folders {
    pub hf_cache: Option<PathBuf>,
    pub ollama: Option<PathBuf>,
    pub lmstudio: Option<PathBuf>,
}

/// Publishes what is not published yet. `earlier` is what was published of the file
/// this one replaced at the same path (an update): its Ollama manifest and LM Studio
/// link are ours to replace.
pub(super) fn publish(inner: &Inner, path: &str, record: &mut Record, earlier: Option<&Published>) {
    let (Some(repo), Some(sha256)) = (record.repo.clone(), record.sha256.clone()) else {
        return;
    };
    let Some(file) = path.strip_prefix(&format!("{repo}/")).map(str::to_owned) else {
        return;
    };
    let full = inner.full_path(path);
    if let Some(cache) = &inner.folders.hf_cache {
        publish_hf_cache(inner, cache, path, record, &file, &sha256);
    }
    if !path.to_ascii_lowercase().ends_with(".gguf") {
        return;
    }
    if let Some(models) = &inner.folders.ollama {
        if record.published.ollama.is_none() {
            if let Some(old) = earlier.and_then(|e| e.ollama.as_ref()) {
                ollama::unpublish(models, old, &full);
            }
            let result = ollama_target(record, &repo, &sha256)
                .and_then(|t| ollama::publish(models, &t, &full));
            note(record, "ollama", result, |p, e| {
                tracing::info!(name = %e.name, "published for Ollama");
                p.ollama = Some(e);
            });
        }
    }
    if let Some(models) = &inner.folders.lmstudio {
        if record.published.lmstudio.is_none() {
            if let Some(old) = earlier.and_then(|e| e.lmstudio.as_ref()) {
                remove_replaced(old, &full);
            }
            let result = lmstudio::publish(models, &repo, &file, &full);
            note(record, "lmstudio", result, |p, at| p.lmstudio = Some(at));
        }
    }
}

/// Keeps what a runtime made, or why it could not.
fn note<T, E: std::fmt::Display>(
    record: &mut Record,
    runtime: &str,
    result: Result<T, E>,
    keep: impl FnOnce(&mut Published, T),
) {
    match result {
        Ok(made) => {
            record.published.not_published.remove(runtime);
            keep(&mut record.published, made);
        }
        Err(why) => {
            record
                .published
                .not_published
                .insert(runtime.to_owned(), why.to_string());
        }
    }
}

fn ollama_target<'a>(
    record: &'a Record,
    repo: &'a str,
    sha256: &'a str,
) -> Result<ollama::Target<'a>, ollama::Refused> {
    let quantization = record.quantization.as_deref().ok_or_else(|| {
        ollama::Refused::Name(
            format!("{}/{repo}", ollama::HOST),
            "the file name names no quantization, which would be the tag",
        )
    })?;
    Ok(ollama::Target {
        repo,
        quantization,
        sha256,
        size: record.size,
        gguf: record.gguf.as_ref(),
    })
}

/// The LM Studio link of the file an update replaced: it is a link to the old bytes.
fn remove_replaced(old: &Path, new_file: &Path) {
    use std::os::unix::fs::MetadataExt;
    let (Ok(link), Ok(file)) = (std::fs::symlink_metadata(old), std::fs::metadata(new_file)) else {
        return;
    };
    if link.is_file() && (link.dev(), link.ino()) != (file.dev(), file.ino()) {
        if let Err(e) = std::fs::remove_file(old) {
            tracing::warn!(path = %old.display(), error = %e, "cannot remove the replaced LM Studio link");
        }
    }
}

fn publish_hf_cache(
    inner: &Inner,
    cache: &Path,
    path: &str,
    record: &mut Record,
    file: &str,
    sha256: &str,
) {
    if record.published.hf_cache.is_some() {
        return;
    }
    let Some(commit) = record.revision.clone() else {
        return;
    };
    let target = hf_cache::Target {
        repo: record.repo.as_deref().unwrap_or_default(),
        file,
        commit: &commit,
        revision: record.asked_revision.as_deref(),
        sha256,
    };
    match hf_cache::publish(cache, &target, &inner.full_path(path)) {
        Ok(entry) => {
            record.published.hf_cache = Some(entry);
            siblings_at(inner, cache, path, target.repo, &commit);
        }
        Err(e) => tracing::warn!(%path, error = %e, "cannot publish into the HF cache"),
    }
}

/// When an updated file moved `refs/<revision>` to `commit`, the files of the same repo
/// that the last check found unchanged at `commit` get their entry in that snapshot
/// too: `main` must resolve every file we have, not only the new one.
fn siblings_at(inner: &Inner, cache: &Path, path: &str, repo: &str, commit: &str) {
    let prefix = format!("{repo}/");
    let siblings: Vec<(String, Record)> = inner
        .read()
        .iter()
        .filter(|(p, r)| {
            p.as_str() != path
                && p.starts_with(&prefix)
                && r.same_at.as_deref() == Some(commit)
                && r.revision.as_deref() != Some(commit)
        })
        .map(|(p, r)| (p.clone(), r.clone()))
        .collect();
    for (p, mut r) in siblings {
        let (Some(sha), Some(file)) = (r.sha256.clone(), p.strip_prefix(&prefix)) else {
            continue;
        };
        let target = hf_cache::Target {
            repo,
            file,
            commit,
            revision: None,
            sha256: &sha,
        };
        match hf_cache::publish(cache, &target, &inner.full_path(&p)) {
            Ok(entry) if !r.published.hf_cache_more.contains(&entry) => {
                r.published.hf_cache_more.push(entry);
                if let Err(e) = inner.put(&p, r) {
                    tracing::warn!(path = %p, error = %e, "cannot record an HF cache entry");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(path = %p, error = %e, "cannot publish into the HF cache"),
        }
    }
}

/// Removes every link the service made to `full` (blocking).
pub(super) fn unpublish(folders: &Folders, published: &Published, full: &Path) {
    if let Some(cache) = &folders.hf_cache {
        for entry in published.hf_cache.iter().chain(&published.hf_cache_more) {
            hf_cache::unpublish(cache, entry, full);
        }
    }
    if let (Some(models), Some(entry)) = (&folders.ollama, &published.ollama) {
        ollama::unpublish(models, entry, full);
    }
    if let (Some(models), Some(at)) = (&folders.lmstudio, &published.lmstudio) {
        lmstudio::unpublish(models, at, full);
    }
}
