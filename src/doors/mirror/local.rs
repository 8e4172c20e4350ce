//! Model info and trees made from the library alone, in the Hub's shapes (the fields
//! `huggingface_hub`'s `ModelInfo` and `RepoFile` read), for when the upstream Hub does
//! not answer.

use serde_json::{json, Value};

use crate::library::Record;

/// Whether `rev` is a full commit id (else a branch or tag name).
pub(super) fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether a library file was fetched at `rev`: that commit, or asked for by that name.
pub(super) fn at_revision(record: &Record, rev: &str) -> bool {
    record.revision.as_deref() == Some(rev) || record.asked_revision.as_deref() == Some(rev)
}

/// `/api/models/{repo}[/revision/{rev}]` from the files of `repo` fetched at `rev`;
/// `None` when there are none.
pub(super) fn model_info(repo: &str, rev: &str, files: &[(String, Record)]) -> Option<Value> {
    let at: Vec<&(String, Record)> = files.iter().filter(|(_, r)| at_revision(r, rev)).collect();
    let sha = at.iter().find_map(|(_, r)| r.revision.clone())?;
    let siblings: Vec<Value> = at.iter().map(|(path, r)| sibling(path, r)).collect();
    let author = repo.split('/').next().unwrap_or(repo);
    Some(json!({
        "_id": repo,
        "id": repo,
        "modelId": repo,
        "author": author,
        "sha": sha,
        "private": false,
        "disabled": false,
        "gated": false,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
    }))
}

fn sibling(path: &str, r: &Record) -> Value {
    let mut s = json!({ "rfilename": path, "size": r.size });
    if let Some(sha) = &r.sha256 {
        s["lfs"] =
            json!({ "sha256": sha, "size": r.size, "pointerSize": pointer_size(sha, r.size) });
    }
    s
}

/// The size of the git LFS pointer file of such content (what the Hub reports).
fn pointer_size(sha256: &str, size: u64) -> usize {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n").len()
}

/// `/api/models/{repo}/tree/{rev}[/{dir}]`: the files (and, unless `recursive`, the
/// folders) under `dir`; `None` when nothing of the repo at `rev` is there.
pub(super) fn tree(
    rev: &str,
    dir: &str,
    recursive: bool,
    files: &[(String, Record)],
) -> Option<Vec<Value>> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut entries = Vec::new();
    let mut folders = std::collections::BTreeSet::new();
    for (path, r) in files.iter().filter(|(_, r)| at_revision(r, rev)) {
        let Some(below) = path.strip_prefix(&prefix) else {
            continue;
        };
        match below.split_once('/') {
            Some((folder, _)) if !recursive => {
                folders.insert(format!("{prefix}{folder}"));
            }
            _ => {
                let mut e = json!({ "type": "file", "path": path, "size": r.size });
                if let Some(sha) = &r.sha256 {
                    e["oid"] = json!(sha);
                    e["lfs"] = json!({
                        "oid": sha,
                        "size": r.size,
                        "pointerSize": pointer_size(sha, r.size),
                    });
                }
                entries.push(e);
            }
        }
    }
    if entries.is_empty() && folders.is_empty() {
        return None;
    }
    let folders = folders
        .into_iter()
        .map(|path| json!({ "type": "directory", "path": path, "oid": "", "size": 0 }));
    Some(folders.chain(entries).collect())
}
