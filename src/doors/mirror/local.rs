//! Model info, refs and trees made from the library alone, in the Hub's shapes (the fields
//! `huggingface_hub`'s `ModelInfo` and `RepoFile` read), for when the upstream Hub does
//! not answer.

use serde_json::{json, Value};

use crate::library::Record;

pub(super) use crate::hub::is_commit;

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

/// `/api/models/{repo}/refs` from the files of the repo: each branch a file was asked
/// by, at the commit of its newest such file (the newest file written). When no file
/// was asked by a branch name (a client that asks by commit, as llama.cpp does), `main`
/// stands for the newest commit held: offline, that is what this mirror can serve.
/// `None` when no file knows its commit.
pub(super) fn refs(files: &[(String, Record)]) -> Option<Value> {
    let mut newest: std::collections::BTreeMap<&str, (i128, &str)> = Default::default();
    let mut any: Option<(i128, &str)> = None;
    for (_, r) in files {
        let Some(commit) = r.revision.as_deref().filter(|c| is_commit(c)) else {
            continue;
        };
        let seen = (r.mtime_ns, commit);
        any = any.max(Some(seen));
        if let Some(branch) = r
            .asked_revision
            .as_deref()
            .filter(|b| !is_commit(b) && !b.starts_with("refs/"))
        {
            let slot = newest.entry(branch).or_insert(seen);
            *slot = (*slot).max(seen);
        }
    }
    if newest.is_empty() {
        newest.insert("main", any?);
    }
    let branches: Vec<Value> = newest
        .into_iter()
        .map(|(name, (_, commit))| {
            json!({ "name": name, "ref": format!("refs/heads/{name}"), "targetCommit": commit })
        })
        .collect();
    Some(json!({ "branches": branches, "converts": [], "tags": [] }))
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

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn file(mtime_ns: i128, revision: Option<&str>, asked: Option<&str>) -> (String, Record) {
        let record = Record {
            size: 1,
            mtime_ns,
            ino: 1,
            dev: 1,
            sha256: None,
            gguf: None,
            error: None,
            quantization: None,
            repo: Some("o/n".into()),
            revision: revision.map(str::to_owned),
            asked_revision: asked.map(str::to_owned),
            download_id: None,
            published: Default::default(),
            update: None,
            update_error: None,
            same_at: None,
            ours: true,
        };
        (format!("f{mtime_ns}.gguf"), record)
    }

    fn branches(files: &[(String, Record)]) -> Vec<(String, String)> {
        let refs = refs(files).expect("refs");
        assert_eq!(refs["tags"], json!([]));
        assert_eq!(refs["converts"], json!([]));
        refs["branches"]
            .as_array()
            .expect("branches")
            .iter()
            .map(|b| {
                let name = b["name"].as_str().unwrap().to_owned();
                assert_eq!(b["ref"], format!("refs/heads/{name}"));
                (name, b["targetCommit"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    fn pair(name: &str, commit: &str) -> (String, String) {
        (name.to_owned(), commit.to_owned())
    }

    #[test]
    fn refs_name_the_newest_commit_of_each_branch_asked() {
        let files = [
            file(1, Some(A), Some("main")),
            file(3, Some(B), Some("main")),
            file(2, Some(A), Some("dev")),
            file(4, Some(B), Some(B)),
        ];
        assert_eq!(branches(&files), vec![pair("dev", A), pair("main", B)]);
    }

    #[test]
    fn files_asked_by_commit_only_make_main_the_newest_commit_held() {
        let files = [file(5, Some(A), Some(A)), file(2, Some(B), Some(B))];
        assert_eq!(branches(&files), vec![pair("main", A)]);
    }

    #[test]
    fn no_commit_known_is_no_refs_and_pr_refs_are_no_branches() {
        assert!(refs(&[]).is_none());
        assert!(refs(&[file(1, None, Some("main"))]).is_none());
        assert!(refs(&[file(1, Some("main"), Some("main"))]).is_none());
        let pr = [file(1, Some(A), Some("refs/pr/1"))];
        assert_eq!(branches(&pr), vec![pair("main", A)]);
    }
}
