//! A library entry's `run`: the commands that run it now, by runtime, only where it is
//! reachable. llama.cpp, for a Hub file published into the HuggingFace cache (so that
//! llama.cpp finds our copy instead of fetching it again; `HF_HUB_CACHE=…` set when that
//! cache is not llama.cpp's default): `llama-server -hf owner/name:TAG` when the Hub's tree
//! (as last listed) resolves that tag to this very file by llama.cpp's own rules
//! ([`crate::hub::pick`]), `--hf-repo … --hf-file …` when no tag does or the tree is not
//! known; `-m <path>` for any other file (not from the Hub, not in the cache, or in a repo
//! whose root `preset.ini` makes llama.cpp ignore both). Ollama: `ollama run <name>` when published
//! there. LM Studio is left out: `lms load` takes a model key whose derivation from a
//! path its docs do not pin down.

use std::collections::BTreeMap;
use std::path::Path;

use super::record::Record;
use crate::hub::{pick, RepoFile};

/// The `run` commands of library file `path` (relative to download_dir), at `full`.
pub fn commands(
    path: &str,
    record: &Record,
    full: &Path,
    tree: Option<&[RepoFile]>,
) -> BTreeMap<String, String> {
    let mut run = BTreeMap::new();
    if let Some(c) = llama_cpp(path, record, full, tree) {
        run.insert("llama.cpp".to_owned(), c);
    }
    if let Some(o) = &record.published.ollama {
        run.insert(
            "ollama".to_owned(),
            format!("ollama run {}", quote(&o.name)),
        );
    }
    run
}

fn llama_cpp(
    path: &str,
    record: &Record,
    full: &Path,
    tree: Option<&[RepoFile]>,
) -> Option<String> {
    // A projector, imatrix or draft sidecar is not a model llama.cpp runs alone, and a
    // file whose header did not read would not load.
    if !pick::is_model(path) || record.error.is_some() {
        return None;
    }
    let local = || {
        format!(
            "llama-server -m {}",
            quote(&first_part_of(&full.display().to_string()))
        )
    };
    let Some(repo) = record.repo.as_deref() else {
        return Some(local());
    };
    let Some(file) = path.strip_prefix(repo).and_then(|p| p.strip_prefix('/')) else {
        return Some(local());
    };
    // `-hf` runs our copy only when it is in the HuggingFace cache llama.cpp reads;
    // anywhere else it would fetch the model again, so the file itself is named.
    let Some(cache) = record
        .published
        .hf_cache
        .as_ref()
        .and_then(|e| e.repo_dir.parent())
    else {
        return Some(local());
    };
    let env = cache_env(cache);
    let Some(tree) = tree else {
        return Some(env + &hf_file(repo, &first_part_of(file)));
    };
    if tree.iter().any(|f| f.path == "preset.ini") {
        return Some(local());
    }
    if let Some(tag) = pick::tag_reaching(tree, file) {
        return Some(format!(
            "{env}llama-server -hf {}",
            quote(&format!("{repo}:{tag}"))
        ));
    }
    // `--hf-file` names the first part (the one llama.cpp loads the rest from), as the
    // tree spells it; `string_iequal` takes the first path equal but for case.
    let first = tree
        .iter()
        .map(|f| f.path.as_str())
        .find(|p| split_of(p) == split_of(file) && pick::split_info(p).index == 1)
        .map_or_else(|| first_part_of(file), str::to_owned);
    let reaches = pick::pick_file(tree, &first, false)
        .model_files
        .iter()
        .any(|f| f == file);
    Some(if reaches {
        env + &hf_file(repo, &first)
    } else {
        local()
    })
}

/// `HF_HUB_CACHE=<cache> ` when the cache we publish into is not the one llama.cpp reads
/// by default (`~/.cache/huggingface/hub`, as `huggingface_hub`), else nothing.
fn cache_env(cache: &Path) -> String {
    let default =
        std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/huggingface/hub"));
    if default.as_deref() == Some(cache) {
        String::new()
    } else {
        format!("HF_HUB_CACHE={} ", quote(&cache.display().to_string()))
    }
}

fn hf_file(repo: &str, file: &str) -> String {
    format!(
        "llama-server --hf-repo {} --hf-file {}",
        quote(repo),
        quote(file)
    )
}

fn split_of(path: &str) -> (String, u32) {
    let s = pick::split_info(path);
    (s.prefix, s.count)
}

/// The first part's name of a split (`…-00002-of-00003.gguf` → `…-00001-of-00003.gguf`);
/// any other name as it is.
fn first_part_of(path: &str) -> String {
    let s = pick::split_info(path);
    if s.count > 1 && s.index != 1 {
        format!("{}-00001-of-{:05}.gguf", s.prefix, s.count)
    } else {
        path.to_owned()
    }
}

/// A word for a POSIX shell: as it is when it holds only safe characters, else in
/// single quotes (a `'` inside closed, escaped and reopened).
pub fn quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn record(repo: Option<&str>) -> Record {
        Record {
            size: 1,
            mtime_ns: 0,
            ino: 1,
            dev: 1,
            sha256: None,
            gguf: None,
            error: None,
            quantization: None,
            repo: repo.map(str::to_owned),
            revision: None,
            asked_revision: None,
            download_id: None,
            published: super::super::record::Published::default(),
            update: None,
            update_error: None,
            same_at: None,
            ours: false,
        }
    }

    fn tree(paths: &[&str]) -> Vec<RepoFile> {
        paths
            .iter()
            .map(|p| RepoFile {
                path: (*p).to_owned(),
                size: 1,
                sha256: None,
                quantization: None,
            })
            .collect()
    }

    /// A record of `repo` published into the cache at `cache` (`None`: not published).
    fn in_cache(repo: Option<&str>, cache: Option<&Path>) -> Record {
        let mut r = record(repo);
        r.published.hf_cache = cache
            .zip(repo)
            .map(|(c, repo)| super::super::hf_cache::Entry {
                repo_dir: c.join(format!("models--{}", repo.replace('/', "--"))),
                snapshot: String::new(),
                blob: String::new(),
                revision: None,
                commit: String::new(),
            });
        r
    }

    fn default_cache() -> PathBuf {
        let home = std::env::var_os("HOME").expect("HOME");
        Path::new(&home).join(".cache/huggingface/hub")
    }

    fn llama(path: &str, repo: Option<&str>, t: Option<&[&str]>) -> Option<String> {
        llama_with(path, &in_cache(repo, Some(&default_cache())), t)
    }

    fn llama_with(path: &str, r: &Record, t: Option<&[&str]>) -> Option<String> {
        let t = t.map(tree);
        let full = Path::new("/models").join(path);
        commands(path, r, &full, t.as_deref()).remove("llama.cpp")
    }

    #[test]
    fn hf_only_where_llama_cpp_finds_our_copy() {
        let t: &[&str] = &["a-Q4_K_M.gguf"];
        // Not in the HuggingFace cache: `-hf` would fetch it again, so the file is named.
        let unpublished = in_cache(Some("o/n"), None);
        assert_eq!(
            llama_with("o/n/a-Q4_K_M.gguf", &unpublished, Some(t)).as_deref(),
            Some("llama-server -m /models/o/n/a-Q4_K_M.gguf")
        );
        // In a cache llama.cpp does not read by default: it is told where.
        let elsewhere = in_cache(Some("o/n"), Some(Path::new("/srv/hf cache")));
        assert_eq!(
            llama_with("o/n/a-Q4_K_M.gguf", &elsewhere, Some(t)).as_deref(),
            Some("HF_HUB_CACHE='/srv/hf cache' llama-server -hf o/n:Q4_K_M")
        );
    }

    #[test]
    fn llama_cpp_commands_by_what_is_known() {
        let t: &[&str] = &["a-Q4_K_M.gguf", "b-Q4_K_M.gguf", "mmproj-F16.gguf"];
        assert_eq!(
            llama("o/n/a-Q4_K_M.gguf", Some("o/n"), Some(t)).as_deref(),
            Some("llama-server -hf o/n:Q4_K_M")
        );
        // `Q4_K_M` reaches a-… first: b-… is named by file.
        assert_eq!(
            llama("o/n/b-Q4_K_M.gguf", Some("o/n"), Some(t)).as_deref(),
            Some("llama-server --hf-repo o/n --hf-file b-Q4_K_M.gguf")
        );
        assert_eq!(llama("o/n/mmproj-F16.gguf", Some("o/n"), Some(t)), None);
        assert_eq!(
            llama("o/n/a-Q4_K_M.gguf", Some("o/n"), None).as_deref(),
            Some("llama-server --hf-repo o/n --hf-file a-Q4_K_M.gguf")
        );
        let preset: &[&str] = &["preset.ini", "a-Q4_K_M.gguf"];
        assert_eq!(
            llama("o/n/a-Q4_K_M.gguf", Some("o/n"), Some(preset)).as_deref(),
            Some("llama-server -m /models/o/n/a-Q4_K_M.gguf")
        );
        assert_eq!(
            llama("my dir/it's.gguf", None, None).as_deref(),
            Some(r"llama-server -m '/models/my dir/it'\''s.gguf'")
        );
        assert_eq!(
            llama("x/m-00002-of-00002.gguf", None, None).as_deref(),
            Some("llama-server -m /models/x/m-00001-of-00002.gguf")
        );
        assert_eq!(llama("notes.txt", None, None), None);
        // Names placed by hand are words to the shell, never code.
        for name in ["$(touch x).gguf", "`id`.gguf", "a;b.gguf", "new\nline.gguf"] {
            let c = llama(name, None, None).expect(name);
            let word = c.strip_prefix("llama-server -m ").expect(name);
            assert_eq!(word, format!("'/models/{name}'"), "{name}");
        }
    }
}
