//! The pick as a table: repo layouts (in the tree's order), a spec, and what llama.cpp's
//! `common_download_get_hf_plan` (common/download.cpp) fetches for it. Each case says
//! which line of llama.cpp's source decides it.

use super::*;

struct Case {
    name: &'static str,
    files: &'static [&'static str],
    tag: Option<&'static str>,
    mmproj: bool,
    preset: Option<&'static str>,
    primary: Option<&'static str>,
    model_files: &'static [&'static str],
    want_mmproj: Option<&'static str>,
}

const fn case(
    name: &'static str,
    files: &'static [&'static str],
    tag: Option<&'static str>,
) -> Case {
    Case {
        name,
        files,
        tag,
        mmproj: true,
        preset: None,
        primary: None,
        model_files: &[],
        want_mmproj: None,
    }
}

fn repo(paths: &[&str]) -> Vec<RepoFile> {
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

/// llama.cpp's own `flat` fixture (tests: ggml-org/gemma-4-31B-it-GGUF's layout).
const FLAT: &[&str] = &[
    "README.md",
    "model-BF16.gguf",
    "model-Q4_K_M.gguf",
    "model-Q8_0.gguf",
    "mmproj-model-BF16.gguf",
    "mmproj-model-Q8_0.gguf",
    "mtp-model-BF16.gguf",
    "mtp-model-Q8_0.gguf",
];

/// Quantizations in sub-folders, split, with an mmproj at the root.
const SUBDIR: &[&str] = &[
    "mmproj-model-f16.gguf",
    "Q3_K_M/model-Q3_K_M-00001-of-00003.gguf",
    "Q3_K_M/model-Q3_K_M-00002-of-00003.gguf",
    "Q3_K_M/model-Q3_K_M-00003-of-00003.gguf",
    "Q8_0/model-Q8_0-00001-of-00002.gguf",
    "Q8_0/model-Q8_0-00002-of-00002.gguf",
];

fn cases() -> Vec<Case> {
    let mut all = tag_cases();
    all.extend(layout_cases());
    all.extend(more_cases());
    all.extend(fixture_cases());
    all
}

/// How a tag is matched, and the default order without one.
fn tag_cases() -> Vec<Case> {
    vec![
        // find_best_model: `std::regex pattern(t + "[.-]", std::regex::icase)`: the tag
        // matches whatever its case; the first model file in tree order wins.
        Case {
            primary: Some("model-Q8_0.gguf"),
            model_files: &["model-Q8_0.gguf"],
            // find_best_sibling: same depth (0) for both, bits |8-8| = 0 beats |16-8|.
            want_mmproj: Some("mmproj-model-Q8_0.gguf"),
            ..case("flat, exact tag", FLAT, Some("Q8_0"))
        },
        Case {
            primary: Some("model-Q4_K_M.gguf"),
            model_files: &["model-Q4_K_M.gguf"],
            // model bits 4: |8-4| = 4 < |16-4| = 12.
            want_mmproj: Some("mmproj-model-Q8_0.gguf"),
            ..case("flat, lower-case tag q4_k_m", FLAT, Some("q4_k_m"))
        },
        Case {
            primary: Some("model-Q4_K_M.gguf"),
            model_files: &["model-Q4_K_M.gguf"],
            want_mmproj: Some("mmproj-model-Q8_0.gguf"),
            ..case("flat, mixed-case tag Q4_k_m", FLAT, Some("Q4_k_m"))
        },
        // `tags = {"Q4_K_M", "Q8_0"}` when the tag is empty.
        Case {
            primary: Some("model-Q4_K_M.gguf"),
            model_files: &["model-Q4_K_M.gguf"],
            ..case("flat, no tag, --no-mmproj", FLAT, None)
        }
        .no_mmproj(),
        // No Q4_K_M: the second default tag, Q8_0, before any first-file fallback.
        Case {
            primary: Some("m-Q8_0.gguf"),
            model_files: &["m-Q8_0.gguf"],
            ..case(
                "no tag, no Q4_K_M: Q8_0",
                &["m-F16.gguf", "m-Q5_K_S.gguf", "m-Q8_0.gguf"],
                None,
            )
        },
        // Neither default: "fallback to first available model only if tag is empty",
        // in tree order (here not the sorted order), skipping mmproj/imatrix names.
        Case {
            primary: Some("m-IQ2_XS.gguf"),
            model_files: &["m-IQ2_XS.gguf"],
            want_mmproj: Some("mmproj-F16.gguf"),
            ..case(
                "no tag, no default: first model file",
                &[
                    "imatrix.gguf",
                    "mmproj-F16.gguf",
                    "m-IQ2_XS.gguf",
                    "m-F16.gguf",
                ],
                None,
            )
        },
        // A tag and no match: no fallback (`if (tag.empty())` guards it).
        case("tag that matches nothing", FLAT, Some("Q2_K")),
        // gguf_filename_is_model: a file name with `mmproj` is never the model, even
        // when the tag matches it alone.
        case(
            "tag matching an mmproj only",
            &["model-Q4_K_M.gguf", "mmproj-model-F16.gguf"],
            Some("F16"),
        ),
    ]
}

/// Exclusions, splits, and where the tag may match.
fn layout_cases() -> Vec<Case> {
    vec![
        // `imatrix` names are excluded too; the `.imatrix.gguf` comes first in the tree.
        Case {
            primary: Some("m.Q4_K_M.gguf"),
            model_files: &["m.Q4_K_M.gguf"],
            ..case(
                "imatrix files are skipped",
                &["m-Q4_K_M.imatrix.gguf", "m.Q4_K_M.gguf"],
                Some("Q4_K_M"),
            )
        },
        // get_split_files: same prefix and count; only index 1 is a primary
        // (`split.count > 1 && split.index != 1` → continue); find_best_sibling walks up
        // to the root folder (depth 0) for the mmproj.
        Case {
            primary: Some("Q3_K_M/model-Q3_K_M-00001-of-00003.gguf"),
            model_files: &[
                "Q3_K_M/model-Q3_K_M-00001-of-00003.gguf",
                "Q3_K_M/model-Q3_K_M-00002-of-00003.gguf",
                "Q3_K_M/model-Q3_K_M-00003-of-00003.gguf",
            ],
            want_mmproj: Some("mmproj-model-f16.gguf"),
            ..case("split in a sub-folder", SUBDIR, Some("q3_k_m"))
        },
        // The tree lists part 2 before part 1 (a layout where the Hub's order puts it
        // first): the match on part 2 is skipped, part 1 is the primary, and all parts
        // go together in tree order.
        Case {
            primary: Some("x/m-Q8_0-00001-of-00002.gguf"),
            model_files: &[
                "x/m-Q8_0-00002-of-00002.gguf",
                "x/m-Q8_0-00001-of-00002.gguf",
            ],
            ..case(
                "split listed out of order",
                &[
                    "x/m-Q8_0-00002-of-00002.gguf",
                    "x/m-Q8_0-00001-of-00002.gguf",
                ],
                Some("Q8_0"),
            )
        },
        // `-Q4_K_M.` and `.Q4_K_M.` both match `Q4_K_M[.-]`: the first in the tree wins.
        Case {
            primary: Some("TheBloke.Q4_K_M.gguf"),
            model_files: &["TheBloke.Q4_K_M.gguf"],
            ..case(
                "dot and dash spellings",
                &["TheBloke.Q4_K_M.gguf", "bartowski-Q4_K_M.gguf"],
                Some("Q4_K_M"),
            )
        },
        // The match is a search over the whole path: `Q4_K` also matches inside
        // `Q4_K_M`? No: `Q4_K` must be followed by `.` or `-`, and `_` is neither.
        Case {
            primary: Some("m-Q4_K.gguf"),
            model_files: &["m-Q4_K.gguf"],
            ..case(
                "tag is not a prefix match",
                &["m-Q4_K_M.gguf", "m-Q4_K.gguf"],
                Some("Q4_K"),
            )
        },
    ]
}

/// Presets, the mmproj's choice, and odd spellings.
fn more_cases() -> Vec<Case> {
    vec![
        // `if (f.path == "preset.ini")`: the root preset overrides every tag.
        Case {
            preset: Some("preset.ini"),
            ..case(
                "preset.ini at the root",
                &["m-Q4_K_M.gguf", "preset.ini"],
                Some("Q4_K_M"),
            )
        },
        // Only the root counts: `sub/preset.ini` is just a file.
        Case {
            primary: Some("m-Q4_K_M.gguf"),
            model_files: &["m-Q4_K_M.gguf"],
            ..case(
                "preset.ini in a sub-folder",
                &["m-Q4_K_M.gguf", "sub/preset.ini"],
                None,
            )
        },
        // find_best_sibling: the deepest shared folder beats closer bits; a sibling in
        // another folder (`mismatch` stops short of its folders) is never taken.
        Case {
            primary: Some("Q4/m-Q4_K_M.gguf"),
            model_files: &["Q4/m-Q4_K_M.gguf"],
            want_mmproj: Some("Q4/mmproj-BF16.gguf"),
            ..case(
                "mmproj: depth before bits",
                &[
                    "mmproj-Q4_0.gguf",
                    "Q4/m-Q4_K_M.gguf",
                    "Q4/mmproj-BF16.gguf",
                    "Q8/mmproj-Q4_0.gguf",
                ],
                Some("Q4_K_M"),
            )
        },
        // Ties (same depth, same distance) keep the first: `diff < best_diff` is strict.
        Case {
            primary: Some("m-Q8_0.gguf"),
            model_files: &["m-Q8_0.gguf"],
            want_mmproj: Some("mmproj-Q4_0.gguf"),
            ..case(
                "mmproj: tie keeps the first",
                &["m-Q8_0.gguf", "mmproj-Q4_0.gguf", "mmproj-Q12_0.gguf"],
                Some("Q8_0"),
            )
        },
        // The `mmproj` keyword and the sidecar words are case-sensitive: `MMPROJ-…` is
        // a model file to llama.cpp, and is not an mmproj.
        Case {
            primary: Some("MMPROJ-F16.gguf"),
            model_files: &["MMPROJ-F16.gguf"],
            ..case("upper-case MMPROJ is a model", &["MMPROJ-F16.gguf"], None)
        },
        // `.` in a tag is a regex wildcard there, and here.
        Case {
            primary: Some("m-Q4_0.gguf"),
            model_files: &["m-Q4_0.gguf"],
            ..case("a dot in the tag", &["m-Q4_0.gguf"], Some("Q4.0"))
        },
        // unsloth: `UD-Q4_K_XL` is reached by `Q4_K_XL` and by `UD-Q4_K_XL`.
        Case {
            primary: Some("M-UD-Q4_K_XL.gguf"),
            model_files: &["M-UD-Q4_K_XL.gguf"],
            want_mmproj: Some("mmproj-BF16.gguf"),
            ..case(
                "unsloth dynamic quant",
                &["M-UD-Q4_K_XL.gguf", "mmproj-BF16.gguf"],
                Some("q4_k_xl"),
            )
        },
    ]
}

/// Fixtures of llama.cpp's own test of the resolution, and odd spellings.
fn fixture_cases() -> Vec<Case> {
    vec![
        // llama.cpp's own fixtures (tests/test-model-resolution): "unsloth fallback" (no
        // default tag matches: the first model; `-MTP-` is a model, `mtp-` is
        // case-sensitive) and "vendor prefix" (first match wins).
        Case {
            primary: Some("model-UD-Q8_K_XL.gguf"),
            model_files: &["model-UD-Q8_K_XL.gguf"],
            want_mmproj: Some("mmproj-BF16.gguf"),
            ..case(
                "llama.cpp fixture: unsloth fallback",
                &[
                    "model-UD-Q8_K_XL.gguf",
                    "mmproj-BF16.gguf",
                    "model-MTP-BF16.gguf",
                ],
                None,
            )
        },
        Case {
            primary: Some("TheDrummer_Model-24B-v4.1-Q8_0.gguf"),
            model_files: &["TheDrummer_Model-24B-v4.1-Q8_0.gguf"],
            ..case(
                "llama.cpp fixture: vendor prefix",
                &[
                    "TheDrummer_Model-24B-v4.1-Q8_0.gguf",
                    "BlackSheep-24B.Q8_0.gguf",
                ],
                Some("Q8_0"),
            )
        }
        .no_mmproj(),
        // An empty tag (`owner/name:`) is no tag (`parts.back()` is "").
        Case {
            primary: Some("model-Q4_K_M.gguf"),
            model_files: &["model-Q4_K_M.gguf"],
            want_mmproj: Some("mmproj-model-Q8_0.gguf"),
            ..case("empty tag", FLAT, Some(""))
        },
    ]
}

impl Case {
    fn no_mmproj(mut self) -> Case {
        self.mmproj = false;
        self
    }
}

#[test]
fn llama_cpp_picks_as_the_table_says() {
    let cases = cases();
    assert!(cases.len() >= 12);
    for c in &cases {
        let got = pick(&repo(c.files), c.tag, c.mmproj);
        let want = Pick {
            preset: c.preset.map(str::to_owned),
            primary: c.primary.map(str::to_owned),
            model_files: c.model_files.iter().map(|s| (*s).to_owned()).collect(),
            mmproj: c.want_mmproj.map(str::to_owned),
        };
        assert_eq!(got, want, "{}", c.name);
    }
}

#[test]
fn with_mmproj_off_no_projector_is_fetched() {
    let p = pick(&repo(FLAT), Some("Q8_0"), false);
    assert_eq!(p.mmproj, None);
    assert_eq!(p.files(), ["model-Q8_0.gguf"]);
    let p = pick(&repo(FLAT), Some("Q8_0"), true);
    assert_eq!(p.files(), ["model-Q8_0.gguf", "mmproj-model-Q8_0.gguf"]);
}

#[test]
fn split_info_as_llama_cpp_reads_names() {
    let s = split_info("Q8_0/model-Q8_0-00002-OF-00003.gguf");
    assert_eq!(
        (s.prefix.as_str(), s.tag.as_str(), s.index, s.count),
        ("Q8_0/model-Q8_0", "Q8_0", 2, 3)
    );
    assert_eq!(split_info("m.q4_k_m.gguf").tag, "Q4_K_M");
    assert_eq!(split_info("Q4_K_M/model.gguf").tag, "");
    assert_eq!(split_info("README.md"), SplitInfo::default());
    // `.+` needs one character before the split suffix.
    assert_eq!(split_info("-00001-of-00002.gguf").count, 1);
    assert_eq!(quant_bits("m-BF16.gguf"), 16);
    assert_eq!(quant_bits("m-Q4_K_M.gguf"), 4);
    assert_eq!(quant_bits("m-F99999999999.gguf"), i64::from(i32::MAX));
    assert_eq!(quant_bits("m.gguf"), 0);
}

#[test]
fn hf_file_and_the_tag_that_reaches_a_file() {
    let files = repo(&[
        "a-Q4_K_M.gguf",
        "b-Q4_K_M.gguf",
        "Q8/m-Q8_0-00001-of-00002.gguf",
        "Q8/m-Q8_0-00002-of-00002.gguf",
    ]);
    assert_eq!(
        pick_file(&files, "B-q4_k_m.GGUF", true).primary.as_deref(),
        Some("b-Q4_K_M.gguf")
    );
    assert_eq!(pick_file(&files, "nope.gguf", true), Pick::default());
    assert_eq!(
        tag_reaching(&files, "a-Q4_K_M.gguf").as_deref(),
        Some("Q4_K_M")
    );
    // `Q4_K_M` reaches a-… first: no tag reaches b-….
    assert_eq!(tag_reaching(&files, "b-Q4_K_M.gguf"), None);
    // Any part of a split is reached by the tag of its first part.
    assert_eq!(
        tag_reaching(&files, "Q8/m-Q8_0-00002-of-00002.gguf").as_deref(),
        Some("Q8_0")
    );
}

#[test]
fn files_llama_cpp_would_not_list_are_not_picked() {
    let mut files = repo(&[
        "../../m-Q4_K_M.gguf",
        "/abs-Q4_K_M.gguf",
        "bad-Q4_K_M.gguf",
        "a/../m-Q4_K_M.gguf",
    ]);
    files[2].sha256 = Some("not hex".into());
    // `a/../m…` stays inside the snapshot folder: llama.cpp keeps it, and so does the pick.
    assert_eq!(
        pick(&files, Some("Q4_K_M"), true).primary.as_deref(),
        Some("a/../m-Q4_K_M.gguf")
    );
    files.truncate(3);
    assert_eq!(pick(&files, Some("Q4_K_M"), true), Pick::default());
}

#[test]
fn tags_outside_the_regex_safe_letters_are_refused() {
    for ok in ["Q4_K_M", "q8_0", "UD-Q4_K_XL", "Q4.0"] {
        assert!(validate_tag(ok).is_ok(), "{ok}");
    }
    for bad in ["Q4*", "(Q4)", "Q4|Q8", "a b", "../x", &"Q".repeat(65)] {
        assert!(validate_tag(bad).is_err(), "{bad}");
    }
}
