//! Which file of a repo an Ollama tag names, as the Hub answers `hf.co/{owner}/{name}:{tag}`
//! (its docs, `docs/hub/ollama.md`): a quantization, case-insensitively (`:Q4_K_M`,
//! `:iq3_m`), or a file's full name (`:Model-IQ3_M.gguf`); `latest` (no tag) is
//! `Q4_K_M` when there is one, else `Q8_0`, else the first model file (llama.cpp's
//! rule for no tag, which the Hub's "one reasonable quant" is not more precise than).
//!
//! [`pick`] is the one function to switch over to `hub::pick` (llama.cpp's rules
//! ported) once that exists.

use super::error::RegistryError;
use crate::hub::RepoFile;

/// The tag Ollama sends for a name without one (`types/model/name.go`, `defaultTag`).
pub(super) const LATEST: &str = "latest";

/// The one GGUF file `tag` names in `files`.
pub(super) fn pick<'a>(
    files: &'a [RepoFile],
    repo: &str,
    tag: &str,
) -> Result<&'a RepoFile, RegistryError> {
    let unknown = || {
        RegistryError::ManifestUnknown(format!(
            "{repo} has no GGUF file for the tag {tag:?} (a quantization such as Q4_K_M, or a file name)"
        ))
    };
    if tag.to_ascii_lowercase().ends_with(".gguf") {
        let file = files
            .iter()
            .find(|f| {
                f.path
                    .rsplit('/')
                    .next()
                    .unwrap_or(&f.path)
                    .eq_ignore_ascii_case(tag)
            })
            .ok_or_else(unknown)?;
        return one(file, repo);
    }
    let groups = crate::hub::quantizations(files);
    let group = if tag == LATEST {
        ["Q4_K_M", "Q8_0"]
            .iter()
            .find_map(|q| groups.iter().find(|g| g.name == *q))
            .or_else(|| {
                // The first model file, in the repo's order of paths.
                let first = files
                    .iter()
                    .filter(|f| f.quantization.is_some())
                    .map(|f| f.path.as_str())
                    .min()?;
                groups.iter().find(|g| g.files.iter().any(|p| p == first))
            })
    } else {
        groups.iter().find(|g| g.name.eq_ignore_ascii_case(tag))
    }
    .ok_or_else(unknown)?;
    if group.files.len() > 1 {
        return Err(split(repo, &group.name));
    }
    let path = group.files.first().ok_or_else(unknown)?;
    files.iter().find(|f| &f.path == path).ok_or_else(unknown)
}

/// `file`, unless it is a part of a split model.
fn one<'a>(file: &'a RepoFile, repo: &str) -> Result<&'a RepoFile, RegistryError> {
    let stem = file.path.strip_suffix(".gguf").unwrap_or(&file.path);
    let is_split = crate::hub::quant::split_part(stem).is_some_and(|p| p.of > 1);
    if is_split {
        let name = file
            .quantization
            .clone()
            .unwrap_or_else(|| file.path.clone());
        return Err(split(repo, &name));
    }
    Ok(file)
}

fn split(repo: &str, name: &str) -> RegistryError {
    RegistryError::Unsupported(format!(
        "{repo}:{name} is a split GGUF (several files), which Ollama cannot load: pick another quantization"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(paths: &[&str]) -> Vec<RepoFile> {
        paths
            .iter()
            .map(|p| RepoFile {
                path: (*p).to_owned(),
                size: 10,
                sha256: Some("a".repeat(64)),
                quantization: crate::hub::quant::quantization(p),
            })
            .collect()
    }

    fn picked(paths: &[&str], tag: &str) -> Result<String, String> {
        let f = files(paths);
        pick(&f, "o/n", tag)
            .map(|f| f.path.clone())
            .map_err(|e| format!("{}", actix_web::ResponseError::status_code(&e).as_u16()))
    }

    #[test]
    fn tags_name_files_as_on_the_hub() {
        let repo = [
            "M-Q8_0.gguf",
            "M-Q4_K_M.gguf",
            "M-IQ3_M.gguf",
            "mmproj-M-f16.gguf",
            "big/M-F16-00001-of-00002.gguf",
            "big/M-F16-00002-of-00002.gguf",
            "README.md",
        ];
        assert_eq!(picked(&repo, "latest"), Ok("M-Q4_K_M.gguf".into()));
        assert_eq!(picked(&repo, "Q8_0"), Ok("M-Q8_0.gguf".into()));
        assert_eq!(picked(&repo, "iq3_m"), Ok("M-IQ3_M.gguf".into()));
        assert_eq!(picked(&repo, "m-iq3_m.gguf"), Ok("M-IQ3_M.gguf".into()));
        assert_eq!(picked(&repo, "Q5_K_M"), Err("404".into()));
        assert_eq!(picked(&repo, "F16"), Err("400".into()));
        assert_eq!(
            picked(&repo, "M-F16-00001-of-00002.gguf"),
            Err("400".into())
        );
        assert_eq!(picked(&repo, "README.md"), Err("404".into()));
        // No Q4_K_M: Q8_0; neither: the first model file by path.
        assert_eq!(
            picked(&["a-Q8_0.gguf", "b-Q2_K.gguf"], "latest"),
            Ok("a-Q8_0.gguf".into())
        );
        assert_eq!(
            picked(&["b-Q2_K.gguf", "a-Q6_K.gguf", "mmproj-x.gguf"], "latest"),
            Ok("a-Q6_K.gguf".into())
        );
        assert_eq!(picked(&["mmproj-x.gguf"], "latest"), Err("404".into()));
    }
}
