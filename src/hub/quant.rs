//! GGUF quantization types from file names, and split parts (`-00001-of-00003`).
//!
//! Names on the Hub follow loose conventions (TheBloke: `model.Q4_K_M.gguf`; bartowski:
//! `Model-Q4_K_M.gguf`, splits in a sub-folder; unsloth: `Model-UD-Q4_K_XL.gguf`; Qwen:
//! `qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf`), so the type is found by token:
//! the last token of the name (split on `-`, `.` and spaces) that reads as a type.

/// The quantization type in a GGUF file name, upper-case (`fp16` = `F16`); `None` for
/// files that are not GGUF, carry no type, or are multimodal projectors (`mmproj-*`).
pub fn quantization(path: &str) -> Option<String> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let lower = name.to_ascii_lowercase();
    let stem = lower.strip_suffix(".gguf")?;
    if stem.starts_with("mmproj") {
        return None;
    }
    let stem = split_part(stem).map(|s| s.prefix).unwrap_or(stem);
    let tokens: Vec<String> = stem
        .split(['-', '.', ' '])
        .map(|t| t.to_ascii_uppercase())
        .collect();
    let (i, kind) = tokens
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, t)| normalize(t).map(|k| (i, k)))?;
    // unsloth's dynamic quants are their own kind: `UD-Q4_K_XL` is not `Q4_K_XL`.
    if i > 0 && tokens[i - 1] == "UD" {
        return Some(format!("UD-{kind}"));
    }
    Some(kind)
}

fn normalize(token: &str) -> Option<String> {
    match token {
        "F16" | "FP16" => return Some("F16".into()),
        "F32" | "FP32" => return Some("F32".into()),
        "BF16" => return Some("BF16".into()),
        "MXFP4" => return Some("MXFP4".into()),
        _ => {}
    }
    // I?Q<bits> or TQ<bits>, then `_`-separated parts: Q4_K_M, IQ3_XXS, Q4_0_4_4, TQ1_0.
    let rest = token
        .strip_prefix("IQ")
        .or_else(|| token.strip_prefix("TQ"))
        .or_else(|| token.strip_prefix('Q'))?;
    let mut parts = rest.split('_');
    let bits = parts.next()?;
    if bits.len() != 1 || !matches!(bits.as_bytes()[0], b'1'..=b'8') {
        return None;
    }
    if parts.all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        Some(token.to_owned())
    } else {
        None
    }
}

/// `name-00001-of-00003` → prefix `name`, part 1 of 3.
#[derive(Debug, PartialEq, Eq)]
pub struct SplitPart<'a> {
    pub prefix: &'a str,
    pub part: u32,
    pub of: u32,
}

/// Recognizes the split suffix of a GGUF stem (without `.gguf`).
pub fn split_part(stem: &str) -> Option<SplitPart<'_>> {
    let (head, of) = stem.rsplit_once("-of-")?;
    let (prefix, part) = head.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(part) || !digits(of) {
        return None;
    }
    let (part, of) = (part.parse().ok()?, of.parse().ok()?);
    (part >= 1 && part <= of).then_some(SplitPart { prefix, part, of })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real file names seen on the Hub, with the type a user would pick them by.
    const NAMES: &[(&str, Option<&str>)] = &[
        // TheBloke
        ("tinyllama-1.1b-chat-v1.0.Q2_K.gguf", Some("Q2_K")),
        ("tinyllama-1.1b-chat-v1.0.Q3_K_M.gguf", Some("Q3_K_M")),
        ("llama-2-7b-chat.Q4_K_M.gguf", Some("Q4_K_M")),
        ("mistral-7b-instruct-v0.2.Q5_K_S.gguf", Some("Q5_K_S")),
        ("llama-2-13b.Q4_0.gguf", Some("Q4_0")),
        ("mixtral-8x7b-v0.1.Q8_0.gguf", Some("Q8_0")),
        ("codellama-7b.Q6_K.gguf", Some("Q6_K")),
        ("llama-2-70b.Q5_K_M.gguf-split-a", None),
        // bartowski
        ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", Some("Q4_K_M")),
        ("Meta-Llama-3.1-8B-Instruct-IQ3_M.gguf", Some("IQ3_M")),
        ("Meta-Llama-3.1-8B-Instruct-IQ4_XS.gguf", Some("IQ4_XS")),
        ("Meta-Llama-3.1-8B-Instruct-IQ2_XXS.gguf", Some("IQ2_XXS")),
        ("Meta-Llama-3.1-8B-Instruct-Q6_K_L.gguf", Some("Q6_K_L")),
        ("Meta-Llama-3.1-8B-Instruct-Q4_0_4_4.gguf", Some("Q4_0_4_4")),
        ("Meta-Llama-3.1-8B-Instruct-f32.gguf", Some("F32")),
        (
            "Meta-Llama-3.1-70B-Instruct-Q8_0/Meta-Llama-3.1-70B-Instruct-Q8_0-00001-of-00002.gguf",
            Some("Q8_0"),
        ),
        ("gemma-2-27b-it-IQ1_M.gguf", Some("IQ1_M")),
        // unsloth
        ("Qwen3-30B-A3B-UD-Q4_K_XL.gguf", Some("UD-Q4_K_XL")),
        ("DeepSeek-R1-UD-IQ1_S-00001-of-00003.gguf", Some("UD-IQ1_S")),
        ("Llama-3.2-1B-Instruct-BF16.gguf", Some("BF16")),
        ("gpt-oss-20b-MXFP4.gguf", Some("MXFP4")),
        ("Qwen3-8B-Q4_K_M.gguf", Some("Q4_K_M")),
        // Qwen
        (
            "qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf",
            Some("Q4_K_M"),
        ),
        ("qwen2.5-7b-instruct-fp16-00003-of-00004.gguf", Some("F16")),
        ("qwen2.5-0.5b-instruct-q8_0.gguf", Some("Q8_0")),
        ("qwen2-7b-instruct-q5_0.gguf", Some("Q5_0")),
        // lmstudio-community
        ("Meta-Llama-3-8B-Instruct-Q4_K_M.gguf", Some("Q4_K_M")),
        ("gemma-3-12b-it-Q3_K_L.gguf", Some("Q3_K_L")),
        ("mmproj-model-f16.gguf", None),
        // Microsoft, ggml-org and others
        ("Phi-3-mini-4k-instruct-q4.gguf", Some("Q4")),
        ("Phi-3-mini-4k-instruct-fp16.gguf", Some("F16")),
        ("ggml-model-Q4_1.gguf", Some("Q4_1")),
        ("bitnet-b1.58-2B-4T-TQ1_0.gguf", Some("TQ1_0")),
        ("model-IQ4_NL.gguf", Some("IQ4_NL")),
        // Not GGUF, or no type.
        ("config.json", None),
        ("README.md", None),
        ("model.safetensors", None),
        ("Qwen2-7B.gguf", None),
    ];

    #[test]
    fn quantization_of_real_names() {
        assert!(NAMES.len() >= 30);
        for (name, want) in NAMES {
            assert_eq!(quantization(name).as_deref(), *want, "{name}");
        }
    }

    #[test]
    fn split_parts() {
        assert_eq!(
            split_part("model-q4_k_m-00001-of-00003"),
            Some(SplitPart {
                prefix: "model-q4_k_m",
                part: 1,
                of: 3
            })
        );
        assert_eq!(split_part("model-q4_k_m-1-of-3"), None);
        assert_eq!(split_part("model-00004-of-00003"), None);
        assert_eq!(split_part("model"), None);
    }
}
