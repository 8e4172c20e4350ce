//! The upstream's `Link` header (a tree's pagination) as the mirror passes it on: only
//! links to the upstream's own API are kept, each pointed at the mirror. Any other
//! link is dropped: `huggingface_hub` follows a `next` link with the client's
//! `HF_TOKEN` (this service's `api_token`), so a hostile upstream's
//! `<http://elsewhere/steal>; rel="next"` would have that token sent to it.

/// The most links kept of one header (the Hub sends one, `next`).
const MAX_LINKS: usize = 8;

/// `link` with only its links below `theirs/` kept, each rewritten below `ours/`;
/// `None` when none is left. `theirs` and `ours` have no trailing slash.
pub(super) fn kept(link: &str, theirs: &str, ours: &str) -> Option<String> {
    let prefix = format!("{theirs}/");
    let kept: Vec<String> = values(link)
        .into_iter()
        .filter_map(|(target, params)| {
            let rest = target.strip_prefix(&prefix)?;
            // Nothing that would end the target or start another link, no control.
            let plain = !rest
                .bytes()
                .any(|b| b.is_ascii_control() || matches!(b, b'<' | b'>' | b' '))
                && !params
                    .bytes()
                    .any(|b| b.is_ascii_control() || matches!(b, b'<' | b'>'));
            plain.then(|| format!("<{ours}/{rest}>{params}"))
        })
        .take(MAX_LINKS)
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

/// The link-values of a `Link` header (RFC 8288): each `<target>` with its parameters
/// (`; rel="next"`), split at commas outside quoted strings. Anything that is no
/// link-value ends the list (what follows cannot be told apart from a forged link).
fn values(link: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = link;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return out;
        }
        let Some(after) = rest.strip_prefix('<') else {
            return out;
        };
        let Some(close) = after.find('>') else {
            return out;
        };
        let target = &after[..close];
        let tail = &after[close + 1..];
        let mut quoted = false;
        let end = tail
            .char_indices()
            .find(|&(_, c)| {
                if c == '"' {
                    quoted = !quoted;
                }
                c == ',' && !quoted
            })
            .map_or(tail.len(), |(i, _)| i);
        out.push((target, tail[..end].trim_end()));
        rest = &tail[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::kept;

    const UP: &str = "https://huggingface.co";
    const US: &str = "http://box:8080/hf";

    #[test]
    fn only_the_upstreams_own_links_are_kept_and_pointed_here() {
        let next = "<https://huggingface.co/api/models/o/n/tree/main?cursor=x>; rel=\"next\"";
        assert_eq!(
            kept(next, UP, US).as_deref(),
            Some("<http://box:8080/hf/api/models/o/n/tree/main?cursor=x>; rel=\"next\"")
        );
        for hostile in [
            "<http://127.0.0.7:18099/steal>; rel=\"next\"",
            "<https://huggingface.co.evil.example/x>; rel=\"next\"",
            "<https://huggingface.co@evil.example/x>; rel=\"next\"",
            "</relative>; rel=\"next\"",
            "<//evil.example/x>; rel=\"next\"",
            "not a link",
        ] {
            assert_eq!(kept(hostile, UP, US), None, "{hostile}");
        }
        let mixed =
            format!("<http://evil/x>; rel=\"next\", {next}, <http://evil/y>; title=\"a,b\"");
        assert_eq!(
            kept(&mixed, UP, US).as_deref(),
            Some("<http://box:8080/hf/api/models/o/n/tree/main?cursor=x>; rel=\"next\"")
        );
        // A comma in a quoted parameter does not start a link.
        let sneaky = format!("{next}; title=\"x, <http://evil/z>; rel=next\"");
        assert_eq!(kept(&sneaky, UP, US), None, "{sneaky}");
    }
}
