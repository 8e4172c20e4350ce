//! Publishing a Hub file to every runtime the config names (the HF cache, Ollama, LM
//! Studio) once its digest is known, and taking it back on delete. Each runtime gets
//! a link to our one copy, never a second one.

use std::path::{Path, PathBuf};

use super::inode::{Identity, Ours};
use super::record::{Published, Record};
use super::{hf_cache, lmstudio, ollama, Shared};

/// The runtime folders the config names.
#[derive(Debug, Clone, Default)]
pub struct Folders {
    pub hf_cache: Option<PathBuf>,
    pub ollama: Option<PathBuf>,
    pub lmstudio: Option<PathBuf>,
}

/// Publishes what is not published yet. `earlier` is the record of the file this one
/// replaced at the same path (an update): its Ollama manifest and LM Studio link are
/// ours to replace, and the blobs and links of its inode that nothing names any more
/// go with them. Returns the records of other files it changed (the owner stores them).
pub(super) fn publish(
    shared: &Shared,
    path: &str,
    record: &mut Record,
    earlier: Option<&Record>,
) -> Vec<(String, Record)> {
    let (Some(repo), Some(sha256)) = (record.repo.clone(), record.sha256.clone()) else {
        return Vec::new();
    };
    let Some(file) = path.strip_prefix(&format!("{repo}/")).map(str::to_owned) else {
        return Vec::new();
    };
    let ours = match shared.ours(path, record) {
        Ok(ours) => ours,
        Err(e) => {
            tracing::warn!(%path, error = %e, "cannot publish: the file is not where it was read");
            return Vec::new();
        }
    };
    let siblings = match &shared.folders.hf_cache {
        Some(cache) => publish_hf_cache(shared, cache, path, record, (&file, &sha256), &ours),
        None => Vec::new(),
    };
    if path.to_ascii_lowercase().ends_with(".gguf") {
        publish_gguf(
            shared,
            path,
            record,
            earlier,
            (&repo, &file, &sha256),
            &ours,
        );
    }
    siblings
}

/// Ollama and LM Studio, which take GGUF files only.
fn publish_gguf(
    shared: &Shared,
    path: &str,
    record: &mut Record,
    earlier: Option<&Record>,
    (repo, file, sha256): (&str, &str, &str),
    ours: &Ours,
) {
    let old = earlier.map(|e| (&e.published, shared.identity(path, e)));
    if let Some(models) = &shared.folders.ollama {
        if record.published.ollama.is_none() {
            if let Some((Some(entry), id)) = old.as_ref().map(|(p, id)| (p.ollama.as_ref(), id)) {
                ollama::unpublish(models, entry, id);
            }
            let result =
                ollama_target(record, repo, sha256).and_then(|t| ollama::publish(models, &t, ours));
            note(record, "ollama", result, |p, e| {
                tracing::info!(name = %e.name, "published for Ollama");
                p.ollama = Some(e);
            });
        }
    }
    if let Some(models) = &shared.folders.lmstudio {
        if record.published.lmstudio.is_none() {
            if let Some((Some(at), id)) = old.as_ref().map(|(p, id)| (p.lmstudio.as_ref(), id)) {
                lmstudio::unpublish(models, at, id);
            }
            let result = lmstudio::publish(models, repo, file, ours);
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

fn publish_hf_cache(
    shared: &Shared,
    cache: &Path,
    path: &str,
    record: &mut Record,
    (file, sha256): (&str, &str),
    ours: &Ours,
) -> Vec<(String, Record)> {
    if record.published.hf_cache.is_some() {
        return Vec::new();
    }
    let (Some(commit), Some(repo)) = (record.revision.clone(), record.repo.clone()) else {
        return Vec::new();
    };
    let asked = record.asked_revision.clone();
    let target = hf_cache::Target {
        repo: &repo,
        file,
        commit: &commit,
        revision: asked.as_deref(),
        sha256,
    };
    let result = hf_cache::publish(cache, &target, ours);
    if let Err(e) = &result {
        tracing::warn!(%path, error = %e, "cannot publish into the HF cache");
    }
    let published = result.is_ok();
    note(record, "hf_cache", result, |p, entry| {
        p.hf_cache = Some(entry)
    });
    if !published {
        return Vec::new();
    }
    siblings_at(shared, cache, path, target.repo, &commit)
}

/// When an updated file moved `refs/<revision>` to `commit`, the files of the same repo
/// that the last check found unchanged at `commit` get their entry in that snapshot
/// too: `main` must resolve every file we have, not only the new one. One lookup of
/// the commit (the files found at it), never the whole index; the records it changed.
fn siblings_at(
    shared: &Shared,
    cache: &Path,
    path: &str,
    repo: &str,
    commit: &str,
) -> Vec<(String, Record)> {
    let prefix = format!("{repo}/");
    let siblings: Vec<(String, Record)> = shared
        .read()
        .same_at(path, commit)
        .into_iter()
        .filter(|(p, r)| p.starts_with(&prefix) && r.revision.as_deref() != Some(commit))
        .collect();
    let mut changed = Vec::new();
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
        let published = shared
            .ours(&p, &r)
            .and_then(|ours| hf_cache::publish(cache, &target, &ours));
        match published {
            Ok(entry) if !r.published.hf_cache_more.contains(&entry) => {
                r.published.hf_cache_more.push(entry);
                changed.push((p, r));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(path = %p, error = %e, "cannot publish into the HF cache"),
        }
    }
    changed
}

/// Removes every link the service made to the file `file` (blocking).
pub(super) fn unpublish(folders: &Folders, published: &Published, file: &Identity) {
    if let Some(cache) = &folders.hf_cache {
        for entry in published.hf_cache.iter().chain(&published.hf_cache_more) {
            hf_cache::unpublish(cache, entry, file);
        }
    }
    if let (Some(models), Some(entry)) = (&folders.ollama, &published.ollama) {
        ollama::unpublish(models, entry, file);
    }
    if let (Some(models), Some(at)) = (&folders.lmstudio, &published.lmstudio) {
        lmstudio::unpublish(models, at, file);
    }
}
