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
