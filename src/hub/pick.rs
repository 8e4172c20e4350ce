//! Which files `owner/name[:TAG]` means: llama.cpp's `-hf` rules, ported line by line
//! from its `common/download.cpp` (`get_gguf_split_info`, `extract_quant_bits`,
//! `get_split_files`, `find_best_sibling`, `find_best_mmproj`, `gguf_filename_is_model`,
//! `find_best_model`, `common_download_get_hf_plan`), so that `pull`, the REST intake and
//! the Hub tab fetch exactly the files `llama-server -hf` would, and a library entry's
//! `run` command names a tag that resolves back to its own file.
//!
//! Every rule depends on the order of `files`: llama.cpp takes the first match in the
//! order the Hub's tree lists them (`hf_cache::get_repo_files`), so callers pass the tree
//! as listed, unsorted.

use super::RepoFile;

/// The files llama.cpp would fetch for one spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pick {
    /// A `preset.ini` at the repo's root: llama.cpp then fetches only it (and runs the
    /// server in router mode from it); every other field is empty.
    pub preset: Option<String>,
    /// The model file the spec resolved to (the first part of a split).
    pub primary: Option<String>,
    /// `primary` and, for a split, its other parts, in tree order.
    pub model_files: Vec<String>,
    /// The multimodal projector fetched alongside, when asked for and present.
    pub mmproj: Option<String>,
}

impl Pick {
    /// Every file to fetch: the preset alone, else the model's parts and the mmproj.
    pub fn files(&self) -> Vec<&str> {
        if let Some(p) = &self.preset {
            return vec![p];
        }
        self.model_files
            .iter()
            .chain(&self.mmproj)
            .map(String::as_str)
            .collect()
    }

    /// Nothing matched (no preset, no model).
    pub fn is_empty(&self) -> bool {
        self.preset.is_none() && self.primary.is_none()
    }
}

/// `get_gguf_split_info`: a `.gguf` path's split prefix (tag and folders included), its
/// tag (upper-case) and its part `index` of `count`. Not a `.gguf`: all empty, 0 of 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitInfo {
    pub prefix: String,
    pub tag: String,
    pub index: u32,
    pub count: u32,
}

/// The tags tried, in order, when the spec names none (`find_best_model`).
pub const DEFAULT_TAGS: [&str; 2] = ["Q4_K_M", "Q8_0"];

/// The longest tag taken: llama.cpp has no limit, but no quantization name comes close.
const MAX_TAG: usize = 64;

/// A tag becomes part of a regular expression in llama.cpp (`TAG[.-]`); the letters,
/// digits and `_ - .` of every quantization name mean the same there and here (`.` is
/// "any character" in both). Anything else is refused rather than guessed at.
pub fn validate_tag(tag: &str) -> Result<(), String> {
    if tag.len() > MAX_TAG {
        return Err(format!("the tag is longer than {MAX_TAG} characters"));
    }
    if let Some(c) = tag
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "the tag {tag:?} holds {c:?}: a tag is letters, digits, '_', '-' and '.'"
        ));
    }
    Ok(())
}

/// `get_gguf_split_info`.
pub fn split_info(path: &str) -> SplitInfo {
    // `string_remove_suffix(prefix, ".gguf")`: case-sensitive.
    let Some(mut prefix) = path.strip_suffix(".gguf") else {
        return SplitInfo::default();
    };
    let (mut index, mut count) = (1, 1);
    // re_split `^(.+)-([0-9]{5})-of-([0-9]{5})$`, icase: 15 fixed characters at the end
    // after at least one more.
    if let Some((head, i, n)) = split_suffix(prefix) {
        (prefix, index, count) = (head, i, n);
    }
    // re_tag `[-.]([A-Z0-9_]+)$`, icase: the trailing run of word characters, when a
    // `-` or `.` stands right before it.
    let run = prefix
        .bytes()
        .rev()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    let before = prefix.len() - run;
    let tag = if run > 0 && before > 0 && matches!(prefix.as_bytes()[before - 1], b'-' | b'.') {
        prefix[before..].to_ascii_uppercase()
    } else {
        String::new()
    };
    SplitInfo {
        prefix: prefix.to_owned(),
        tag,
        index,
        count,
    }
}

fn split_suffix(stem: &str) -> Option<(&str, u32, u32)> {
    let b = stem.as_bytes();
    if b.len() < 16 {
        return None;
    }
    let tail = &b[b.len() - 15..];
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let ok = tail[0] == b'-'
        && digits(&tail[1..6])
        && tail[6..10].eq_ignore_ascii_case(b"-of-")
        && digits(&tail[10..15]);
    if !ok {
        return None;
    }
    // Five ASCII digits always parse and fit (`std::stoi`).
    let num = |s: &[u8]| s.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'));
    Some((
        &stem[..stem.len() - 15],
        num(&tail[1..6]),
        num(&tail[10..15]),
    ))
}

/// `extract_quant_bits`: the number after the tag's first digit run start (`Q4_K_M` → 4,
/// `F16` → 16, `BF16` → 16); 0 without one. llama.cpp's `std::stoi` throws past
/// `i32::MAX`; here such a run saturates.
pub fn quant_bits(path: &str) -> i64 {
    bits_of_tag(&split_info(path).tag)
}

fn bits_of_tag(tag: &str) -> i64 {
    let Some(pos) = tag.find(|c: char| c.is_ascii_digit()) else {
        return 0;
    };
    tag[pos..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0i64, |n, d| {
            (n * 10 + i64::from(d - b'0')).min(i64::from(i32::MAX))
        })
}

/// `gguf_filename_is_model`: a `.gguf` whose file name (not folders) holds none of the
/// sidecar words; case-sensitive, as there.
pub fn is_model(path: &str) -> bool {
    if !path.ends_with(".gguf") {
        return false;
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    ["mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-"]
        .iter()
        .all(|w| !name.contains(w))
}

/// `std::regex_search(path, std::regex(tag + "[.-]", icase))`, for tags that passed
/// [`validate_tag`]: `.` is any character but a line break, the rest is literal.
fn tag_matches(path: &str, tag: &str) -> bool {
    let (p, t) = (path.as_bytes(), tag.as_bytes());
    (0..p.len()).any(|start| {
        let rest = &p[start..];
        rest.len() > t.len()
            && t.iter().zip(rest).all(|(tc, pc)| match tc {
                b'.' => !matches!(pc, b'\n' | b'\r'),
                _ => tc.eq_ignore_ascii_case(pc),
            })
            && matches!(rest[t.len()], b'.' | b'-')
    })
}

/// A part other than the first of a real split is never the primary.
fn first_part(path: &str) -> bool {
    let s = split_info(path);
    !(s.count > 1 && s.index != 1)
}

/// `find_best_model`: the first model file (in tree order) matching the tag; without a
/// tag, `Q4_K_M`, then `Q8_0`, then the first model file.
pub fn find_best_model<'a>(files: &'a [RepoFile], tag: Option<&str>) -> Option<&'a RepoFile> {
    let tags: Vec<&str> = match tag {
        Some(t) => vec![t],
        None => DEFAULT_TAGS.to_vec(),
    };
    for t in tags {
        let found = files
            .iter()
            .find(|f| is_model(&f.path) && tag_matches(&f.path, t) && first_part(&f.path));
        if found.is_some() {
            return found;
        }
    }
    // "fallback to first available model only if tag is empty"
    if tag.is_none() {
        return files
            .iter()
            .find(|f| is_model(&f.path) && first_part(&f.path));
    }
    None
}

/// `get_split_files`: every file of the same split (same prefix and count), tree order.
pub fn split_files(files: &[RepoFile], primary: &str) -> Vec<String> {
    let s = split_info(primary);
    if s.count <= 1 {
        return vec![primary.to_owned()];
    }
    files
        .iter()
        .filter(|f| {
            let o = split_info(&f.path);
            o.count == s.count && o.prefix == s.prefix
        })
        .map(|f| f.path.clone())
        .collect()
}

/// `find_best_sibling`: a `.gguf` holding `keyword` (case-sensitive, anywhere in the
/// path) in the model's folder or one above it; the deepest folder wins, then a name
/// with `-TAG.`, then the closest quantization bits; the first in tree order on a tie.
pub fn find_best_sibling<'a>(
    files: &'a [RepoFile],
    model: &str,
    keyword: &str,
    tag: &str,
) -> Option<&'a RepoFile> {
    let tag_upper = tag.to_ascii_uppercase();
    let model_bits = if tag_upper.is_empty() {
        quant_bits(model)
    } else {
        bits_of_tag(&tag_upper)
    };
    let model_parts: Vec<&str> = model.split('/').collect();
    let model_dir = &model_parts[..model_parts.len() - 1];
    // (file, depth, diff, exact)
    let mut best: Option<(&RepoFile, usize, i64, bool)> = None;
    for f in files {
        if !f.path.ends_with(".gguf") || !f.path.contains(keyword) {
            continue;
        }
        let sib_parts: Vec<&str> = f.path.split('/').collect();
        let sib_dir = &sib_parts[..sib_parts.len() - 1];
        // `std::mismatch` must run through the whole of the sibling's folders: they are
        // the model's folders or a prefix of them.
        if sib_dir.len() > model_dir.len() || sib_dir != &model_dir[..sib_dir.len()] {
            continue;
        }
        let depth = sib_dir.len();
        let diff = (quant_bits(&f.path) - model_bits).abs();
        let exact = !tag_upper.is_empty()
            && f.path
                .to_ascii_uppercase()
                .contains(&format!("-{tag_upper}."));
        let better = match best {
            None => true,
            Some((_, bd, bdiff, bexact)) => {
                depth > bd
                    || (depth == bd && exact && !bexact)
                    || (depth == bd && exact == bexact && diff < bdiff)
            }
        };
        if better {
            best = Some((f, depth, diff, exact));
        }
    }
    best.map(|b| b.0)
}

/// `common_download_get_hf_plan` for `-hf owner/name[:TAG]` (an empty tag is no tag, as
/// `common_download_split_repo_tag` leaves it).
pub fn pick(files: &[RepoFile], tag: Option<&str>, with_mmproj: bool) -> Pick {
    let tag = tag.filter(|t| !t.is_empty());
    plan(files, with_mmproj, |all| find_best_model(all, tag))
}

/// The same plan for `--hf-repo owner/name --hf-file PATH`: the first path equal to
/// `file` ignoring ASCII case (`string_iequal`).
pub fn pick_file(files: &[RepoFile], file: &str, with_mmproj: bool) -> Pick {
    plan(files, with_mmproj, |all| {
        all.iter().find(|f| f.path.eq_ignore_ascii_case(file))
    })
}

/// `hf_cache::get_repo_files` drops what it lists only to skip: a path that leaves the
/// snapshot folder (`is_valid_subpath`: absolute, or `..` above its root) and an LFS oid
/// that is not 40 or 64 hex digits (`is_valid_oid`). (A `..` that climbs out and back
/// into a folder of the commit's name is kept there; here it is dropped too.)
fn listed(f: &RepoFile) -> bool {
    let oid_ok = f.sha256.as_deref().is_none_or(super::names::is_git_oid);
    let mut depth = 0i64;
    let inside = !f.path.starts_with('/')
        && f.path.split('/').all(|seg| {
            match seg {
                "" | "." => {}
                ".." => depth -= 1,
                _ => depth += 1,
            }
            depth >= 0
        });
    oid_ok && inside
}

fn plan(
    files: &[RepoFile],
    with_mmproj: bool,
    primary: impl FnOnce(&[RepoFile]) -> Option<&RepoFile>,
) -> Pick {
    if !files.iter().all(listed) {
        let kept: Vec<RepoFile> = files.iter().filter(|f| listed(f)).cloned().collect();
        return plan_listed(&kept, with_mmproj, primary);
    }
    plan_listed(files, with_mmproj, primary)
}

fn plan_listed(
    files: &[RepoFile],
    with_mmproj: bool,
    primary: impl FnOnce(&[RepoFile]) -> Option<&RepoFile>,
) -> Pick {
    // "if preset.ini exists in the repo root, download only that file"
    if let Some(p) = files.iter().find(|f| f.path == "preset.ini") {
        return Pick {
            preset: Some(p.path.clone()),
            ..Pick::default()
        };
    }
    let Some(primary) = primary(files) else {
        return Pick::default();
    };
    let mmproj = with_mmproj
        .then(|| find_best_sibling(files, &primary.path, "mmproj", ""))
        .flatten();
    Pick {
        preset: None,
        model_files: split_files(files, &primary.path),
        primary: Some(primary.path.clone()),
        mmproj: mmproj.map(|f| f.path.clone()),
    }
}

/// The distinct tags of the model files (first parts), in tree order, at most `max`:
/// the names `-hf owner/name:TAG` can be tried with.
pub fn tags(files: &[RepoFile], max: usize) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for f in files.iter().filter(|f| is_model(&f.path)) {
        let tag = split_info(&f.path).tag;
        if !tag.is_empty() && validate_tag(&tag).is_ok() && !tags.contains(&tag) {
            tags.push(tag);
            if tags.len() == max {
                break;
            }
        }
    }
    tags
}

/// The tag llama.cpp names a file by (its `get_gguf_split_info` tag), when `-hf
/// owner/name:TAG` resolves to that very file (or to the first part of its split) in
/// `files`; `None` when no tag reaches it.
pub fn tag_reaching(files: &[RepoFile], path: &str) -> Option<String> {
    let tag = split_info(path).tag;
    if tag.is_empty() || validate_tag(&tag).is_err() {
        return None;
    }
    let p = pick(files, Some(&tag), false);
    p.model_files.iter().any(|f| f == path).then_some(tag)
}

#[cfg(test)]
#[path = "pick_tests.rs"]
mod tests;
