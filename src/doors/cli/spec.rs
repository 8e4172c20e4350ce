//! What `pull SPEC` names: a URL, a quantization of a Hub repo, or one file of it.

use super::CliError;

#[derive(Debug, PartialEq, Eq)]
pub enum Spec {
    Url(String),
    /// `owner/name[:TAG]` or `hf.co/owner/name[:TAG]` (Ollama's spelling): what
    /// llama.cpp's `-hf` picks for it (`None`: its default pick).
    Quantization {
        repo: String,
        quantization: Option<String>,
    },
    /// `owner/name/path/in/repo`
    HubFile {
        repo: String,
        file: String,
    },
}

pub fn parse(raw: &str) -> Result<Spec, CliError> {
    let raw = raw.trim();
    // `file:///x`, `ftp://h/x`: a URL of a scheme we do not fetch, said as such (read as
    // a repo it would be refused as "not a Hub repo", which misleads).
    if let Some((scheme, _)) = raw.split_once("://") {
        if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
            return Ok(Spec::Url(raw.to_owned()));
        }
        return Err(CliError::Usage(format!(
            "{raw:?}: the scheme {scheme:?} is refused; a URL must be http:// or https://"
        )));
    }
    let bare = ["hf.co/", "huggingface.co/"]
        .iter()
        .find_map(|p| raw.strip_prefix(p))
        .unwrap_or(raw);
    let bad = |why: &str| {
        CliError::Usage(format!(
            "{raw:?}: {why}; give a URL, owner/name[:TAG], hf.co/owner/name[:TAG] or owner/name/file"
        ))
    };
    // `common_download_split_repo_tag`: the repo before the first ':', the tag after
    // the last; an empty tag is no tag.
    let (path, quantization) = match bare.split_once(':') {
        Some((path, rest)) => {
            let tag = rest.rsplit(':').next().unwrap_or(rest);
            (path, Some(tag).filter(|t| !t.is_empty()))
        }
        None => (bare, None),
    };
    if let Some(t) = quantization {
        crate::hub::pick::validate_tag(t).map_err(|e| bad(&e))?;
    }
    let mut parts = path.splitn(3, '/');
    let (Some(owner), Some(name)) = (parts.next(), parts.next()) else {
        return Err(bad("not a Hub repo (owner/name)"));
    };
    let repo = format!("{owner}/{name}");
    crate::hub::validate_repo(&repo).map_err(|e| bad(&e))?;
    match (parts.next(), quantization) {
        (Some(_), Some(_)) => Err(bad("a file and a tag at once")),
        (Some(file), None) if !file.is_empty() => Ok(Spec::HubFile {
            repo,
            file: file.to_owned(),
        }),
        (Some(_), None) => Err(bad("the file after the repo is empty")),
        (None, q) => Ok(Spec::Quantization {
            repo,
            quantization: q.map(str::to_owned),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quant(repo: &str, q: Option<&str>) -> Spec {
        Spec::Quantization {
            repo: repo.into(),
            quantization: q.map(Into::into),
        }
    }

    #[test]
    fn every_spelling_of_a_spec() {
        let ok = |s: &str| parse(s).expect(s);
        assert_eq!(ok("http://h/x.gguf"), Spec::Url("http://h/x.gguf".into()));
        assert_eq!(ok("HTTPS://h/x.gguf"), Spec::Url("HTTPS://h/x.gguf".into()));
        assert_eq!(ok("o/n:Q4_K_M"), quant("o/n", Some("Q4_K_M")));
        // The tag keeps its case: llama.cpp matches it ignoring case.
        assert_eq!(ok("hf.co/o/n:q8_0"), quant("o/n", Some("q8_0")));
        assert_eq!(ok("hf.co/o/n"), quant("o/n", None));
        assert_eq!(ok("o/n:"), quant("o/n", None));
        assert_eq!(ok("o/n:x:Q8_0"), quant("o/n", Some("Q8_0")));
        assert_eq!(
            ok("o/n/dir/f.gguf"),
            Spec::HubFile {
                repo: "o/n".into(),
                file: "dir/f.gguf".into()
            }
        );
        for url in ["file:///etc/passwd", "ftp://h/x.gguf", "FILE://x"] {
            let e = parse(url).expect_err(url).to_string();
            assert!(e.contains("scheme") && e.contains("refused"), "{url}: {e}");
        }
        for bad in [
            "",
            "o",
            "o/n:Q4*",
            "o/n:Q4 K",
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
