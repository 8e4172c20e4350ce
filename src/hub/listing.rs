//! A repo's quantizations as the Hub tab and `files` list them: what each tag reaches
//! through llama.cpp's pick ([`super::pick`]).

use super::{pick, Quantization, RepoFile};

/// At most this many tags are listed: each costs one pass of llama.cpp's pick over the
/// tree, and a tree of a few hundred thousand names (within `CAP_TREE_TOTAL`) with a tag
/// each would cost passes by the hundred thousand. Real repos have a few dozen.
pub const MAX_QUANTIZATIONS: usize = 256;

/// The quantizations of a repo, one per tag of its model files that llama.cpp's pick
/// resolves (two tags reaching the same file are one entry), each with exactly the files
/// `-hf owner/name:TAG` fetches; the default pick is marked. Smallest first.
pub fn quantizations(files: &[RepoFile]) -> Vec<Quantization> {
    let size_of = |paths: &[String]| -> u64 {
        paths
            .iter()
            .filter_map(|p| files.iter().find(|f| &f.path == p))
            .map(|f| f.size)
            .sum()
    };
    let entry = |name: String, p: &pick::Pick, default: bool| {
        let files: Vec<String> = p.files().iter().map(|s| (*s).to_owned()).collect();
        let model: Vec<String> = p.preset.iter().chain(&p.model_files).cloned().collect();
        Quantization {
            name,
            size: size_of(&model),
            files: model,
            mmproj: p.mmproj.clone().filter(|m| files.contains(m)),
            default,
        }
    };
    let default = pick::pick(files, None, true);
    if default.preset.is_some() {
        return vec![entry(String::new(), &default, true)];
    }
    let tags = pick::tags(files, MAX_QUANTIZATIONS);
    let mut out: Vec<Quantization> = Vec::new();
    let mut primaries: Vec<String> = Vec::new();
    for tag in tags {
        let p = pick::pick(files, Some(&tag), true);
        let Some(primary) = p.primary.clone() else {
            continue;
        };
        if primaries.contains(&primary) {
            continue;
        }
        primaries.push(primary);
        out.push(entry(tag, &p, p.primary == default.primary));
    }
    if default.primary.is_some() && !out.iter().any(|q| q.default) {
        out.push(entry(String::new(), &default, true));
    }
    out.sort_by(|a, b| a.size.cmp(&b.size).then(a.name.cmp(&b.name)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> RepoFile {
        RepoFile {
            path: path.into(),
            size,
            sha256: None,
            quantization: None,
        }
    }

    #[test]
    fn split_files_form_one_quantization() {
        let files = vec![
            file("m-Q4_K_M.gguf", 40),
            file("f16/m-F16-00001-of-00002.gguf", 100),
            file("f16/m-F16-00002-of-00002.gguf", 60),
            file("README.md", 1),
            file("m-IQ3_M.gguf", 30),
            file("mmproj-m-F16.gguf", 5),
        ];
        let q = quantizations(&files);
        let names: Vec<&str> = q.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["IQ3_M", "Q4_K_M", "F16"]);
        assert_eq!(
            q[2].files,
            [
                "f16/m-F16-00001-of-00002.gguf",
                "f16/m-F16-00002-of-00002.gguf"
            ]
        );
        assert_eq!(q[2].size, 160);
        let defaults: Vec<bool> = q.iter().map(|q| q.default).collect();
        assert_eq!(defaults, [false, true, false]);
        // The mmproj at the root goes with the model in `f16/` too (a folder above).
        assert!(q
            .iter()
            .all(|q| q.mmproj.as_deref() == Some("mmproj-m-F16.gguf")));
    }

    #[test]
    fn a_tree_of_many_tags_lists_a_bounded_number() {
        let files: Vec<RepoFile> = (0..10_000)
            .map(|i| file(&format!("d{}/m-T{i}.gguf", i % 7), 1))
            .collect();
        let t = std::time::Instant::now();
        let q = quantizations(&files);
        assert_eq!(q.len(), MAX_QUANTIZATIONS);
        eprintln!("10,000 files, {} tags listed in {:?}", q.len(), t.elapsed());
    }

    #[test]
    fn a_file_no_tag_reaches_is_the_default_entry() {
        let files = vec![file("model.gguf", 10), file("preset-free.txt", 1)];
        let q = quantizations(&files);
        assert_eq!(q.len(), 1);
        assert_eq!((q[0].name.as_str(), q[0].default), ("", true));
        assert_eq!(q[0].files, ["model.gguf"]);
        let q = quantizations(&[file("m-Q4_K_M.gguf", 10), file("preset.ini", 1)]);
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].files, ["preset.ini"]);
    }
}
