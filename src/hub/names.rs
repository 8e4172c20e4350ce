//! The names a Hub request is made of: a repo id and a revision.

/// `owner/name` with both parts valid names.
pub fn validate_repo(repo: &str) -> Result<(), String> {
    let mut parts = repo.split('/');
    let (Some(owner), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("repo {repo:?} is not owner/name"));
    };
    for p in [owner, name] {
        crate::files::validate_name(p).map_err(|e| format!("repo {repo:?}: {e}"))?;
        if !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(format!(
                "repo {repo:?}: only letters, digits, '-', '_' and '.' are allowed"
            ));
        }
    }
    Ok(())
}

/// Checks a revision (a branch, a tag, `refs/pr/N` or a commit) the way git checks a
/// ref name (`git check-ref-format`), at most 256 bytes: nothing that could be read as
/// a path trick or a header (`..`, control characters, a leading or trailing `/`, an
/// empty component) reaches the Hub or names a folder.
pub fn validate_revision(revision: &str) -> Result<(), String> {
    let bad_byte = |b: u8| {
        b < 0x20 || b == 0x7f || matches!(b, b' ' | b'~' | b'^' | b':' | b'?' | b'*' | b'[' | b'\\')
    };
    let refused = revision.is_empty()
        || revision.len() > 256
        || revision.bytes().any(bad_byte)
        || revision.contains("..")
        || revision.contains("@{")
        || revision == "@"
        || revision.ends_with(".lock")
        || revision.ends_with('.')
        || revision
            .split('/')
            .any(|c| c.is_empty() || c.starts_with('.'));
    if refused {
        let shown: String = revision.chars().take(80).collect();
        return Err(format!("revision {shown:?} is not a valid revision"));
    }
    Ok(())
}

/// Whether `rev` is a full commit id (40 hex digits), not a branch or tag name. A
/// commit names folders and is sent to clients, so an upstream's must be one.
pub fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// llama.cpp's `is_valid_oid`: a git or LFS object id, 40 or 64 hex digits.
pub fn is_git_oid(oid: &str) -> bool {
    matches!(oid.len(), 40 | 64) && oid.bytes().all(|b| b.is_ascii_hexdigit())
}

/// An upstream's sha256 as we keep it: 64 hex digits, lower-cased; anything else is no
/// sha256 at all. It becomes a digest in manifests (`sha256:<hex>`) and a blob's name in
/// caches, where a `../` or a non-hex digit must never reach (old Ollama versions joined
/// a manifest's digest into a path: CVE-2024-37032).
pub fn sha256_hex(s: &str) -> Option<String> {
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// Whether llama.cpp sends `token` to a Hub's API: `hf_` then ASCII letters and
/// digits, 37 to 256 characters in all (its `is_valid_hf_token` in
/// `common/hf-cache.cpp`). It drops any other token from its `refs` and `tree`
/// requests, so a LAN mirror guarded by such a token refuses it there.
pub fn is_hub_shaped_token(token: &str) -> bool {
    (37..=256).contains(&token.len())
        && token
            .strip_prefix("hf_")
            .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_checked_as_git_checks_ref_names() {
        for ok in [
            "main",
            "v1.0",
            "refs/pr/1",
            "0123456789abcdef0123456789abcdef01234567",
        ] {
            assert_eq!(validate_revision(ok), Ok(()), "{ok}");
        }
        let long = "r".repeat(257);
        for bad in [
            "", "..", "a/../b", "/main", "main/", "a//b", ".hidden", "a\0b", "a\nb", "a b", "a\\b",
            "x.lock", "x.", "@", "a@{1}", "a:b", &long,
        ] {
            assert!(validate_revision(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn repo_ids() {
        assert!(validate_repo("TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF").is_ok());
        for bad in [
            "noslash",
            "a/b/c",
            "../x",
            "a/..",
            "/abs",
            "a/.hidden",
            "a b/c",
            "a/b%2f",
        ] {
            assert!(validate_repo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hub_shaped_tokens_are_those_llama_cpp_sends() {
        let ok = format!("hf_{}", "a1B2".repeat(9)); // 39 characters
        assert!(is_hub_shaped_token(&ok));
        assert!(is_hub_shaped_token(&format!("hf_{}", "x".repeat(34)))); // 37: the least
        assert!(is_hub_shaped_token(&format!("hf_{}", "x".repeat(253)))); // 256: the most
        for bad in [
            format!("hf_{}", "x".repeat(33)),  // 36
            format!("hf_{}", "x".repeat(254)), // 257
            format!("hf_{}-{}", "x".repeat(20), "y".repeat(20)),
            format!("hf_{}_", "x".repeat(40)),
            format!("HF_{}", "x".repeat(40)),
            format!("xx_{}", "x".repeat(40)),
            format!("hf_{}é", "x".repeat(40)),
            String::new(),
            "secret".into(),
        ] {
            assert!(!is_hub_shaped_token(&bad), "{bad:?}");
        }
    }

    #[test]
    fn only_64_hex_digits_are_a_sha256() {
        let good = "AB".repeat(32);
        assert_eq!(super::sha256_hex(&good), Some("ab".repeat(32)));
        for bad in [
            "../../../../../tmp/x0000000000000000000000000000000000000000000000",
            &"g".repeat(64),
            &"a".repeat(63),
            &"a".repeat(65),
            "",
        ] {
            assert_eq!(super::sha256_hex(bad), None, "{bad}");
        }
    }
}
