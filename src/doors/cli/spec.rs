//! What `pull SPEC` names: a URL, a quantization of a Hub repo, or one file of it.

use super::CliError;

/// Ollama pulls this quantization of `hf.co/owner/name` when none is named.
pub const DEFAULT_QUANTIZATION: &str = "Q4_K_M";

#[derive(Debug, PartialEq, Eq)]
pub enum Spec {
    Url(String),
    /// `owner/name:QUANT` or `hf.co/owner/name:QUANT` (Ollama's spelling).
    Quantization {
        repo: String,
        quantization: String,
    },
    /// `owner/name/path/in/repo`
    HubFile {
        repo: String,
        file: String,
    },
}

pub fn parse(raw: &str) -> Result<Spec, CliError> {
    let raw = raw.trim();
    if raw.starts_with("http://") || raw.starts_with("https://") {
        return Ok(Spec::Url(raw.to_owned()));
    }
    let bare = ["hf.co/", "huggingface.co/"]
        .iter()
        .find_map(|p| raw.strip_prefix(p))
        .unwrap_or(raw);
    let bad = |why: &str| {
        CliError::Usage(format!(
            "{raw:?}: {why}; give a URL, owner/name:QUANT, hf.co/owner/name:QUANT or owner/name/file"
        ))
    };
    let (path, quantization) = match bare.rsplit_once(':') {
        Some((_, "")) => return Err(bad("the quantization after ':' is empty")),
        Some((path, q)) => (path, Some(q)),
        None => (bare, None),
    };
    let mut parts = path.splitn(3, '/');
    let (Some(owner), Some(name)) = (parts.next(), parts.next()) else {
        return Err(bad("not a Hub repo (owner/name)"));
    };
    let repo = format!("{owner}/{name}");
    crate::hub::validate_repo(&repo).map_err(|e| bad(&e))?;
    match (parts.next(), quantization) {
        (Some(_), Some(_)) => Err(bad("a file and a quantization at once")),
        (Some(file), None) if !file.is_empty() => Ok(Spec::HubFile {
            repo,
            file: file.to_owned(),
        }),
        (Some(_), None) => Err(bad("the file after the repo is empty")),
        (None, q) => Ok(Spec::Quantization {
            repo,
            quantization: q.unwrap_or(DEFAULT_QUANTIZATION).to_ascii_uppercase(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quant(repo: &str, q: &str) -> Spec {
        Spec::Quantization {
            repo: repo.into(),
            quantization: q.into(),
        }
    }

    #[test]
    fn every_spelling_of_a_spec() {
        let ok = |s: &str| parse(s).expect(s);
        assert_eq!(ok("http://h/x.gguf"), Spec::Url("http://h/x.gguf".into()));
        assert_eq!(ok("o/n:Q4_K_M"), quant("o/n", "Q4_K_M"));
        assert_eq!(ok("hf.co/o/n:q8_0"), quant("o/n", "Q8_0"));
        assert_eq!(ok("hf.co/o/n"), quant("o/n", "Q4_K_M"));
        assert_eq!(
            ok("o/n/dir/f.gguf"),
            Spec::HubFile {
                repo: "o/n".into(),
                file: "dir/f.gguf".into()
            }
        );
        for bad in [
            "",
            "o",
            "o/n:",
            "o/n/f:Q4",
            "o/n/",
            "../x/y:Q4",
            "ftp://h/x",
        ] {
            assert!(
                matches!(parse(bad), Err(CliError::Usage(_))),
                "{bad:?} is refused"
            );
        }
    }
}
