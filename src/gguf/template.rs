//! `tokenizer.chat_template`, kept as text. The header reader only notes that a file has
//! one; the Ollama registry needs the text to give the model an Ollama template.

use std::io::{BufReader, Read, Seek};

use super::cursor::Cursor;
use super::value::{self, ValueType};
use super::{read_version, tensors, GgufError, MAX_KEY_LEN, MIN_KV};

/// The longest chat template kept. Real ones are a few KiB (the longest of
/// `@huggingface/ollama-utils`' table is under 20 KiB); a longer one is an error.
pub const MAX_CHAT_TEMPLATE: u64 = 1 << 20;

const KEY: &[u8] = b"tokenizer.chat_template";

/// The chat template of the GGUF at the start of `file` (`file_len` bytes long), or
/// `None` when it has none. Every length is checked as [`super::read_header`] checks it.
pub fn read_chat_template<R: Read + Seek>(
    file: &mut BufReader<R>,
    file_len: u64,
) -> Result<Option<String>, GgufError> {
    let mut cur = Cursor::new(file, file_len)?;
    read_version(&mut cur)?;
    cur.count("the tensor count", tensors::MIN_TENSOR_INFO)?;
    let kv_count = cur.count("the metadata count", MIN_KV)?;
    let mut key = Vec::new();
    for _ in 0..kv_count {
        let offset = cur.pos();
        let len = cur.string_len("a metadata key")?;
        if len > MAX_KEY_LEN {
            return Err(GgufError::KeyTooLong { offset, len });
        }
        cur.read_into("a metadata key", len, &mut key)?;
        let ty = ValueType::read(&mut cur)?;
        if key == KEY {
            let text = value::string(&mut cur, ty, "tokenizer.chat_template", MAX_CHAT_TEMPLATE)?;
            return Ok(Some(text));
        }
        value::skip(&mut cur, ty, 0)?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor as Bytes;

    fn gstr(s: &[u8]) -> Vec<u8> {
        let mut out = (s.len() as u64).to_le_bytes().to_vec();
        out.extend(s);
        out
    }

    /// A GGUF v3 header with no tensors and these key/value pairs (already encoded).
    fn gguf(kvs: &[Vec<u8>]) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        out.extend((kvs.len() as u64).to_le_bytes());
        for kv in kvs {
            out.extend(kv);
        }
        out
    }

    fn kv_str(key: &str, value: &[u8]) -> Vec<u8> {
        let mut out = gstr(key.as_bytes());
        out.extend(8u32.to_le_bytes());
        out.extend(gstr(value));
        out
    }

    fn template_of(bytes: Vec<u8>) -> Result<Option<String>, GgufError> {
        let len = bytes.len() as u64;
        read_chat_template(&mut BufReader::new(Bytes::new(bytes)), len)
    }

    #[test]
    fn the_template_is_read_after_other_keys_and_capped() {
        // An array of strings before it (a vocabulary) is skipped.
        let mut tokens = gstr(b"tokenizer.ggml.tokens");
        tokens.extend(9u32.to_le_bytes());
        tokens.extend(8u32.to_le_bytes());
        tokens.extend(2u64.to_le_bytes());
        tokens.extend(gstr(b"<s>"));
        tokens.extend(gstr(b"</s>"));
        let t = "{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}";
        let file = gguf(&[
            kv_str("general.architecture", b"llama"),
            tokens,
            kv_str("tokenizer.chat_template", t.as_bytes()),
        ]);
        assert_eq!(template_of(file).unwrap().as_deref(), Some(t));
        assert_eq!(
            template_of(gguf(&[kv_str("general.name", b"x")])).unwrap(),
            None
        );
        // Not a string, not UTF-8, longer than the cap: errors, not a template.
        let mut number = gstr(b"tokenizer.chat_template");
        number.extend(4u32.to_le_bytes());
        number.extend(7u32.to_le_bytes());
        assert!(template_of(gguf(&[number])).is_err());
        let bad = kv_str("tokenizer.chat_template", &[0xff, 0xfe]);
        assert!(template_of(gguf(&[bad])).is_err());
        let huge = vec![b'x'; MAX_CHAT_TEMPLATE as usize + 1];
        let huge = kv_str("tokenizer.chat_template", &huge);
        assert!(matches!(
            template_of(gguf(&[huge])),
            Err(GgufError::StringTooLong { .. })
        ));
        // A length past the end of the file.
        let mut cut = gstr(b"tokenizer.chat_template");
        cut.extend(8u32.to_le_bytes());
        cut.extend((1u64 << 40).to_le_bytes());
        assert!(template_of(gguf(&[cut])).is_err());
    }
}
