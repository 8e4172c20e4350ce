//! A GGUF chat template (Jinja) → the Ollama template (Go) and parameters the Hub gives
//! it: the lookup of `@huggingface/ollama-utils` (`convertGGUFTemplateToOllama`), over
//! its table `chat-template-automap` (`automap.json`, regenerated from the published
//! package by `scripts/ollama_automap.mjs`). Its first two steps are ported: a template
//! whose first 128 UTF-16 units are a known one's, else one with the same set of
//! special tokens. Its last steps (a few hand-written patterns, then rendering the
//! Jinja template to guess a Go one) are not: a template they would map gets no
//! template layer here, and Ollama runs the model with its plain default template.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use serde::Deserialize;

/// An Ollama template and its parameters (`{"stop": [...]}`, …).
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Mapped {
    pub model: String,
    gguf_prefix: String,
    tokens: Vec<String>,
    pub template: String,
    pub params: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Table {
    entries: Vec<Mapped>,
}

static TABLE: LazyLock<Vec<Mapped>> = LazyLock::new(|| {
    match serde_json::from_str::<Table>(include_str!("automap.json")) {
        Ok(t) => t.entries,
        Err(e) => {
            // Built into the binary and checked by a unit test: never expected.
            tracing::error!(error = %e, "the chat template table does not parse");
            Vec::new()
        }
    }
});

/// How many leading UTF-16 units are compared (JavaScript's `substring(0, 128)`).
const PREFIX: usize = 128;

/// The Ollama template of a GGUF chat template, when the table knows it.
pub(super) fn lookup(chat_template: &str) -> Option<&'static Mapped> {
    let prefix: Vec<u16> = chat_template.encode_utf16().take(PREFIX).collect();
    if let Some(m) = TABLE
        .iter()
        .find(|m| m.gguf_prefix.encode_utf16().eq(prefix.iter().copied()))
    {
        return Some(m);
    }
    let tokens = special_tokens(chat_template);
    if tokens.is_empty() {
        return None;
    }
    TABLE.iter().find(|m| {
        let theirs: BTreeSet<&str> = m.tokens.iter().map(String::as_str).collect();
        theirs == tokens
    })
}

/// The special tokens in a template, as the package's `RE_SPECIAL_TOKEN` finds them:
/// `<[|_A-Za-z0-9]+>`, `\[[A-Z]+\]`, `<｜[▁A-Za-z]+｜>` (left to right, the first
/// alternative that matches at a position wins, no overlap).
fn special_tokens(text: &str) -> BTreeSet<&str> {
    let mut found = BTreeSet::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        match token_at(rest) {
            Some(len) => {
                found.insert(&rest[..len]);
                i += len;
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    found
}

/// The length in bytes of the token at the start of `s`, if one starts there.
fn token_at(s: &str) -> Option<usize> {
    let run = |body: &str, ok: fn(char) -> bool| -> usize {
        body.char_indices()
            .find(|(_, c)| !ok(*c))
            .map_or(body.len(), |(i, _)| i)
    };
    if let Some(body) = s.strip_prefix('<') {
        let n = run(body, |c| c == '|' || c == '_' || c.is_ascii_alphanumeric());
        if n > 0 && body[n..].starts_with('>') {
            return Some(1 + n + 1);
        }
        if let Some(inner) = body.strip_prefix('｜') {
            let n = run(inner, |c| c == '▁' || c.is_ascii_alphabetic());
            if n > 0 && inner[n..].starts_with("｜>") {
                return Some(1 + '｜'.len_utf8() + n + '｜'.len_utf8() + 1);
            }
        }
        return None;
    }
    let body = s.strip_prefix('[')?;
    let n = run(body, |c| c.is_ascii_uppercase());
    (n > 0 && body[n..].starts_with(']')).then_some(1 + n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses() {
        assert!(TABLE.len() > 50, "{} entries", TABLE.len());
    }

    #[test]
    fn special_tokens_as_the_package_finds_them() {
        let t =
            "{{ '<|im_start|>' + m }}<|im_end|>[INST]x[/INST]<｜User｜><｜Assistant｜>< |x>[a]<>";
        let got: Vec<&str> = special_tokens(t).into_iter().collect();
        assert_eq!(
            got,
            [
                "<|im_end|>",
                "<|im_start|>",
                "<｜Assistant｜>",
                "<｜User｜>",
                "[INST]"
            ]
        );
    }

    #[test]
    fn an_exact_template_maps_and_a_token_set_maps() {
        let first = &TABLE[0];
        // The same first 128 units, then anything.
        let mut text: String = first.gguf_prefix.clone();
        text.push_str("{# anything after #}");
        assert_eq!(lookup(&text).map(|m| &m.model), Some(&first.model));
        // Only the tokens: a template written otherwise with the same special tokens.
        let with_tokens = TABLE
            .iter()
            .find(|m| !m.tokens.is_empty())
            .expect("an entry with tokens");
        let text = format!("{{# other #}}{}", with_tokens.tokens.join(" "));
        let got = lookup(&text).expect("mapped by its tokens");
        let same: BTreeSet<&str> = got.tokens.iter().map(String::as_str).collect();
        let want: BTreeSet<&str> = with_tokens.tokens.iter().map(String::as_str).collect();
        assert_eq!(same, want);
        assert!(lookup("plain {{ messages }} without tokens").is_none());
    }
}
