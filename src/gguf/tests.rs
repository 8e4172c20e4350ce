//! Damaged and unusual headers, built byte by byte.

use std::io::{BufReader, Cursor};

use super::*;

const F32: u32 = 0;
const F16: u32 = 1;

/// Writes GGUF bytes the way the spec lays them out.
#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn header(version: u32, tensors: u64, kvs: u64) -> W {
        let mut w = W(b"GGUF".to_vec());
        w.u32(version).u64(tensors).u64(kvs);
        w
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    /// A key and its value type; the value follows.
    fn key(&mut self, k: &str, ty: u32) -> &mut Self {
        self.str(k).u32(ty)
    }
    fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.key(k, 4).u32(v)
    }
    fn kv_str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k, 8).str(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for d in dims {
            self.u64(*d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `n` bytes of tensor data.
    fn data(&mut self, n: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(32) {
            self.0.push(0);
        }
        self.0.resize(self.0.len() + n, 0x5a);
        self
    }
}

fn read(bytes: &[u8]) -> Result<GgufInfo, GgufError> {
    read_header(&mut BufReader::new(Cursor::new(bytes)), bytes.len() as u64)
}

/// A value of every type, scalars and arrays, under keys we do not report.
fn every_value_type(w: &mut W) {
    for (ty, size) in [
        (0, 1),
        (1, 1),
        (2, 2),
        (3, 2),
        (4, 4),
        (5, 4),
        (6, 4),
        (10, 8),
        (11, 8),
        (12, 8),
    ] {
        w.key(&format!("test.scalar_{ty}"), ty)
            .raw(&vec![0xff; size]);
        w.key(&format!("test.array_{ty}"), 9)
            .u32(ty)
            .u64(3)
            .raw(&vec![0xee; 3 * size]);
    }
    w.key("test.bool", 7).raw(&[1]);
    w.key("test.string", 8).str("héllo");
    w.key("test.strings", 9).u32(8).u64(2).str("a").str("bc");
    // [[1, 2], ["x"], []]: arrays of arrays, each element with its own type and count.
    w.key("test.nested", 9).u32(9).u64(3);
    w.u32(4).u64(2).u32(1).u32(2);
    w.u32(8).u64(1).str("x");
    w.u32(0).u64(0);
}

const EVERY_VALUE_KVS: u64 = 10 * 2 + 4;

/// A valid llama header: two tensors, 8 + 8 elements, 32 + 16 bytes of data.
fn small() -> Vec<u8> {
    let mut w = W::header(3, 2, 8 + EVERY_VALUE_KVS);
    w.kv_str("general.architecture", "llama")
        .kv_str("general.name", "Tiny Llama")
        .kv_u32("llama.context_length", 4096)
        .key("llama.block_count", 10)
        .u64(16)
        .key("llama.embedding_length", 2)
        .raw(&2048u16.to_le_bytes())
        .kv_u32("general.file_type", 15)
        .kv_str("tokenizer.chat_template", "{{ messages }}");
    w.key("tokenizer.ggml.tokens", 9).u32(8).u64(3);
    w.str("<s>").str("</s>").str("hello");
    every_value_type(&mut w);
    w.tensor("a.weight", &[4, 2], F32, 0)
        .tensor("b.weight", &[8], F16, 32)
        .data(48);
    w.0
}

#[test]
fn a_small_header_reads_every_field() {
    let info = read(&small()).expect("valid");
    assert_eq!(
        info,
        GgufInfo {
            version: 3,
            architecture: Some("llama".into()),
            name: Some("Tiny Llama".into()),
            context_length: Some(4096),
            block_count: Some(16),
            embedding_length: Some(2048),
            file_type: Some(15),
            parameters: 16,
            chat_template: true,
            split: None,
        }
    );
    let json = serde_json::to_value(&info).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys.len(), 10, "{keys:?}");
    assert_eq!(json["split"], serde_json::Value::Null);
}

#[test]
fn every_prefix_of_a_valid_header_is_an_error_not_a_panic() {
    let bytes = small();
    for n in 0..bytes.len() {
        assert!(
            read(&bytes[..n]).is_err(),
            "a file cut at {n} read as valid"
        );
    }
    assert!(read(&bytes).is_ok());
}

#[test]
fn a_file_cut_in_its_tensor_data_says_truncated() {
    let bytes = small();
    let err = read(&bytes[..bytes.len() - 1]).unwrap_err();
    assert!(matches!(err, GgufError::TensorDataPastEnd { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn bad_magic_version_1_and_others_are_refused() {
    let mut bytes = small();
    bytes[..4].copy_from_slice(b"GGML");
    assert!(matches!(read(&bytes), Err(GgufError::BadMagic { .. })));
    for (version, check) in [
        (1u32, "version 1"),
        (4, "version 4"),
        (0x0300_0000, "big-endian"),
    ] {
        let mut bytes = small();
        bytes[4..8].copy_from_slice(&version.to_le_bytes());
        let err = read(&bytes).unwrap_err().to_string();
        assert!(err.contains(check), "{version}: {err}");
    }
    let mut v2 = small();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(read(&v2).unwrap().version, 2);
}

#[test]
fn counts_of_2_pow_60_are_refused_before_any_loop() {
    let huge = 1u64 << 60;
    let err = read(&W::header(3, huge, 0).0).unwrap_err();
    assert!(
        matches!(err, GgufError::CountPastEnd { count, .. } if count == huge),
        "{err}"
    );
    let err = read(&W::header(3, 0, huge).0).unwrap_err();
    assert!(matches!(err, GgufError::CountPastEnd { .. }), "{err}");
    for elem in [0u32, 8, 9, 12] {
        let mut w = W::header(3, 0, 1);
        w.key("tokenizer.ggml.tokens", 9).u32(elem).u64(huge);
        let err = read(&w.0).unwrap_err();
        assert!(
            matches!(err, GgufError::CountPastEnd { .. }),
            "{elem}: {err}"
        );
    }
    // u64::MAX elements of 8 bytes overflows the product: still a clean error.
    let mut w = W::header(3, 0, 1);
    w.key("x", 9).u32(10).u64(u64::MAX);
    assert!(matches!(read(&w.0), Err(GgufError::CountPastEnd { .. })));
}

#[test]
fn lengths_past_the_end_are_refused_before_any_allocation() {
    let huge = 1u64 << 60;
    // A key, a kept string, a skipped string, a tensor name: each longer than the file.
    let mut w = W::header(3, 0, 1);
    w.u64(huge).raw(&[0; 16]);
    let err = read(&w.0).unwrap_err();
    assert!(
        matches!(err, GgufError::StringPastEnd { len, .. } if len == huge),
        "{err}"
    );
    let mut w = W::header(3, 0, 1);
    w.key("general.name", 8).u64(huge);
    assert!(matches!(read(&w.0), Err(GgufError::StringPastEnd { .. })));
    let mut w = W::header(3, 0, 1);
    w.key("general.description", 8).u64(100).raw(b"short");
    assert!(matches!(read(&w.0), Err(GgufError::StringPastEnd { .. })));
    let mut w = W::header(3, 1, 0);
    w.u64(huge).u32(1).u64(1).u32(0).u64(0);
    assert!(matches!(read(&w.0), Err(GgufError::StringPastEnd { .. })));
}

#[test]
fn a_key_over_65535_bytes_is_refused() {
    let mut w = W::header(3, 0, 1);
    w.key(&"k".repeat(70_000), 0).raw(&[0]);
    assert!(matches!(
        read(&w.0),
        Err(GgufError::KeyTooLong { len: 70_000, .. })
    ));
}

#[test]
fn kept_strings_are_capped_and_must_be_utf8() {
    let mut w = W::header(3, 0, 1);
    w.kv_str("general.name", &"n".repeat(MAX_KEPT_STRING as usize + 1));
    let err = read(&w.0).unwrap_err();
    assert!(matches!(err, GgufError::StringTooLong { .. }), "{err}");
    let mut w = W::header(3, 0, 1);
    w.key("general.name", 8).u64(2).raw(&[0xc3, 0x28]);
    assert!(matches!(read(&w.0), Err(GgufError::InvalidUtf8 { .. })));
    let mut w = W::header(3, 0, 1);
    w.kv_str("general.name", &"n".repeat(MAX_KEPT_STRING as usize));
    assert_eq!(read(&w.0).unwrap().name.unwrap().len(), 64 << 10);
}

#[test]
fn more_than_four_dims_and_overflowing_shapes_are_refused() {
    let mut w = W::header(3, 1, 0);
    w.tensor("t", &[1, 1, 1, 1, 1], F32, 0).data(4);
    assert!(matches!(
        read(&w.0),
        Err(GgufError::TooManyDims { n_dims: 5, .. })
    ));
    let mut w = W::header(3, 1, 0);
    w.tensor("t", &[1 << 40, 1 << 40], F32, 0).data(4);
    assert!(matches!(read(&w.0), Err(GgufError::TensorTooLarge { .. })));
    let mut w = W::header(3, 1, 0);
    w.tensor("t", &[1 << 63], F32, 0).data(4);
    assert!(matches!(read(&w.0), Err(GgufError::TensorTooLarge { .. })));
    // A shape that fits 64 bits but not the file.
    let mut w = W::header(3, 1, 0);
    w.tensor("t", &[1 << 40], F16, 0).data(4);
    assert!(matches!(
        read(&w.0),
        Err(GgufError::TensorDataPastEnd { .. })
    ));
}

#[test]
fn a_tensor_of_an_unknown_type_counts_its_elements() {
    let mut w = W::header(3, 1, 0);
    w.tensor("t", &[3, 5, 7], 999, 0).data(0);
    assert_eq!(read(&w.0).unwrap().parameters, 105);
}

#[test]
fn arrays_nest_but_not_without_end() {
    let nest = |depth: usize| {
        let mut w = W::header(3, 0, 1);
        w.key("x", 9);
        for _ in 1..depth {
            w.u32(9).u64(1);
        }
        w.u32(0).u64(1).raw(&[7]);
        read(&w.0)
    };
    assert!(nest(1).is_ok());
    assert!(nest(value::MAX_NESTING as usize).is_ok());
    let err = nest(value::MAX_NESTING as usize + 1).unwrap_err();
    assert!(matches!(err, GgufError::NestedTooDeep { .. }), "{err}");
    // 100,000 levels: an error, not a stack overflow.
    assert!(nest(100_000).is_err());
}

#[test]
fn unknown_value_types_and_wrong_types_are_errors() {
    let mut w = W::header(3, 0, 1);
    w.key("x", 13).raw(&[0; 8]);
    assert!(matches!(
        read(&w.0),
        Err(GgufError::UnknownValueType { raw: 13, .. })
    ));
    let mut w = W::header(3, 0, 2);
    w.kv_str("general.architecture", "llama")
        .kv_str("llama.context_length", "4096");
    let err = read(&w.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "llama.context_length is a STRING, not an integer"
    );
    let mut w = W::header(3, 0, 1);
    w.key("general.file_type", 5).u32(-1i32 as u32);
    assert!(matches!(
        read(&w.0),
        Err(GgufError::Negative { value: -1, .. })
    ));
    let mut w = W::header(3, 0, 1);
    w.key("general.alignment", 10).u64(32);
    assert!(matches!(read(&w.0), Err(GgufError::WrongType { .. })));
    let mut w = W::header(3, 0, 1);
    w.kv_u32("general.alignment", 24);
    assert!(matches!(read(&w.0), Err(GgufError::BadAlignment(24))));
}

#[test]
fn a_reported_key_twice_is_refused() {
    let mut w = W::header(3, 0, 2);
    w.kv_str("general.name", "a").kv_str("general.name", "b");
    assert!(matches!(read(&w.0), Err(GgufError::DuplicateKey { .. })));
}

#[test]
fn arch_keys_before_the_architecture_are_found() {
    let mut w = W::header(2, 0, 4);
    w.kv_u32("qwen2.block_count", 28)
        .kv_u32("bert.block_count", 12)
        .kv_str("general.architecture", "qwen2")
        .kv_u32("qwen2.context_length", 32768);
    let info = read(&w.0).unwrap();
    assert_eq!(info.block_count, Some(28));
    assert_eq!(info.context_length, Some(32768));
    assert_eq!(info.embedding_length, None);
}

#[test]
fn split_keys_as_gguf_split_writes_them() {
    // gguf-split: split.no and split.count as u16, split.tensors.count as i32.
    let mut w = W::header(3, 1, 3);
    w.key("split.no", 2).raw(&1u16.to_le_bytes());
    w.key("split.count", 2).raw(&3u16.to_le_bytes());
    w.key("split.tensors.count", 5).u32(7);
    w.tensor("t", &[4], F32, 0).data(16);
    let info = read(&w.0).unwrap();
    assert_eq!(info.split, Some(Split { no: 1, count: 3 }));
    assert_eq!(info.architecture, None);
    let json = serde_json::to_value(info).unwrap();
    assert_eq!(json["split"], serde_json::json!({"no": 1, "count": 3}));
}

#[test]
fn a_custom_alignment_places_the_data() {
    let mut w = W::header(3, 1, 1);
    w.kv_u32("general.alignment", 64).tensor("t", &[4], F32, 0);
    while !w.0.len().is_multiple_of(64) {
        w.0.push(0);
    }
    w.raw(&[0; 16]);
    assert!(read(&w.0).is_ok());
    let n = w.0.len();
    assert!(read(&w.0[..n - 1]).is_err());
}

#[test]
fn a_vocabulary_of_150k_tokens_reads_fast() {
    let mut w = W::header(3, 0, 2);
    w.kv_str("general.architecture", "llama");
    w.key("tokenizer.ggml.tokens", 9).u32(8).u64(150_000);
    for i in 0..150_000 {
        w.str(&format!("tok{i}"));
    }
    let start = std::time::Instant::now();
    let info = read(&w.0).unwrap();
    let took = start.elapsed();
    assert_eq!(info.architecture.as_deref(), Some("llama"));
    // Generous for a debug build on a busy machine; the integration test reports the figure.
    assert!(took.as_millis() < 500, "{took:?}");
}

/// threats.md's "hostile GGUF headers": 5,000 seeded mutations of a valid header (bytes
/// overwritten, lengths and counts set to the edges of their types, cuts, insertions),
/// each read without a panic and fast; the reader checks every count against the file
/// before it allocates, so no mutation costs more than the file's own size.
#[test]
fn five_thousand_mutated_headers_are_read_or_refused_without_a_panic() {
    let good = small();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let edges = [
        0u64,
        1,
        0x7f,
        0xff,
        0xffff,
        0xffff_ffff,
        1 << 32,
        1 << 60,
        u64::MAX,
    ];
    let (mut refused, mut slowest) = (0, std::time::Duration::ZERO);
    for round in 0..5_000 {
        let mut bytes = good.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % bytes.len();
            match next() % 5 {
                0 => bytes[at] = next() as u8,
                1 => {
                    let edge = edges[(next() as usize) % edges.len()].to_le_bytes();
                    let end = (at + 8).min(bytes.len());
                    bytes[at..end].copy_from_slice(&edge[..end - at]);
                }
                2 => bytes.truncate(at.max(1)),
                3 => {
                    let edge = (edges[(next() as usize) % edges.len()] as u32).to_le_bytes();
                    let end = (at + 4).min(bytes.len());
                    bytes[at..end].copy_from_slice(&edge[..end - at]);
                }
                _ => bytes.splice(at..at, [next() as u8; 3]).for_each(drop),
            }
        }
        let start = std::time::Instant::now();
        let result = std::panic::catch_unwind(|| read(&bytes));
        slowest = slowest.max(start.elapsed());
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!("mutation round {round} panicked on {} bytes", bytes.len()),
        }
    }
    // Most mutations hit a length, a count or a type: refused, not read as garbage.
    assert!(refused > 1_000, "only {refused} of 5000 refused");
    assert!(slowest.as_millis() < 200, "slowest read {slowest:?}");
}
