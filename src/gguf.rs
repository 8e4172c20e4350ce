//! The GGUF header reader: what a model file says about itself, read without loading it.
//!
//! The format is ggml's `docs/gguf.md` (as read by llama.cpp's `gguf-py` `GGUFReader`):
//! little-endian; magic `GGUF`; a u32 version (2 or 3; version 1 had u32 counts and
//! lengths and is refused); u64 tensor and metadata counts; the metadata key/value
//! pairs; the tensor infos; then, aligned to `general.alignment` (default 32), the data.
//!
//! The reader is streaming: one pass through a `BufReader`, values we do not report
//! (the token list of a vocabulary, ~150k strings) skipped by seeking, and every
//! length and count checked against the bytes left in the file before anything is
//! allocated, skipped or looped over. A damaged or hostile header is an error for
//! that file, never a panic or a large allocation; what is kept is capped too.

mod cursor;
mod template;
mod tensors;
mod value;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use template::{read_chat_template, MAX_CHAT_TEMPLATE};

use cursor::Cursor;
use value::ValueType;

/// The longest `general.name` or `general.architecture` we keep; a longer one is an
/// error (not truncated: a name cut mid-way would be shown as if it were the name).
pub const MAX_KEPT_STRING: u64 = 64 << 10;

/// The spec's limit on a metadata key: "at most 2^16-1/65535 bytes long".
const MAX_KEY_LEN: u64 = 65_535;

/// The fewest bytes one key/value pair takes: empty key, type, a one-byte value.
const MIN_KV: u64 = 8 + 4 + 1;

/// `GGUF_DEFAULT_ALIGNMENT`: the data section's alignment when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;

/// The buffer for [`read_file`]: a header is read in a few large reads, and the skips of
/// short strings stay inside it.
const BUFFER: usize = 64 << 10;

/// What a GGUF header says: the `gguf` object of a library file in the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GgufInfo {
    /// The format version: 2 or 3.
    pub version: u32,
    /// `general.architecture`, e.g. "llama".
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// `{architecture}.context_length`.
    pub context_length: Option<u64>,
    /// `{architecture}.block_count`.
    pub block_count: Option<u64>,
    /// `{architecture}.embedding_length`.
    pub embedding_length: Option<u64>,
    /// `general.file_type` (llama.cpp's `llama_ftype`: 15 is Q4_K_M).
    pub file_type: Option<u64>,
    /// The sum over the tensors of this file of the product of their dims.
    pub parameters: u64,
    /// Whether `tokenizer.chat_template` is present.
    pub chat_template: bool,
    /// `split.no` and `split.count` of a split part (as llama.cpp's gguf-split writes).
    pub split: Option<Split>,
}

/// Which part of a split model a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Split {
    /// `split.no`: the part's index, from 0.
    pub no: u64,
    /// `split.count`: how many parts the model has.
    pub count: u64,
}

/// Why a file's GGUF header cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: it starts with {found:02x?}, not \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    /// Version 1 (August 2023) used 32-bit counts and lengths; nothing current writes it.
    #[error("GGUF version 1 is not supported (it predates 64-bit counts); convert the model again with a current llama.cpp")]
    Version1,
    /// The version field reads as a byte-swapped small number.
    #[error("a big-endian GGUF (version field {raw:#010x}) is not supported")]
    BigEndian { raw: u32 },
    /// A version other than 1, 2 or 3.
    #[error("GGUF version {0} is not supported (only versions 2 and 3)")]
    UnsupportedVersion(u32),
    /// The file ends inside a fixed-size field.
    #[error(
        "the file is truncated: {what} at byte {offset} needs {needed} bytes, {left} are left"
    )]
    Truncated {
        what: &'static str,
        offset: u64,
        needed: u64,
        left: u64,
    },
    /// A string's length reaches past the end of the file.
    #[error("{what} at byte {offset} claims {len} bytes, more than the {left} left in the file")]
    StringPastEnd {
        what: &'static str,
        offset: u64,
        len: u64,
        left: u64,
    },
    /// A count of entries that cannot all fit in what is left of the file.
    #[error("{what} at byte {offset} claims {count} entries of at least {each} bytes each, more than the {left} left in the file")]
    CountPastEnd {
        what: &'static str,
        offset: u64,
        count: u64,
        each: u64,
        left: u64,
    },
    /// The header reaches further into the file than any real one does.
    #[error("the GGUF header is larger than {limit} bytes")]
    HeaderTooLarge { limit: u64 },
    /// A metadata key over the spec's 65535 bytes.
    #[error("the metadata key at byte {offset} is {len} bytes long; GGUF allows at most 65535")]
    KeyTooLong { offset: u64, len: u64 },
    /// A value type number that GGUF does not define.
    #[error("unknown metadata value type {raw} at byte {offset}")]
    UnknownValueType { offset: u64, raw: u32 },
    /// Arrays of arrays nested deeper than we follow.
    #[error("arrays nested more than {max} deep at byte {offset}")]
    NestedTooDeep { offset: u64, max: u32 },
    /// A key we report holds a value of the wrong type.
    #[error("{key} is a {found}, not {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    /// A count we report is negative.
    #[error("{key} is {value}, a negative count")]
    Negative { key: String, value: i64 },
    /// A string we keep is longer than [`MAX_KEPT_STRING`].
    #[error("{key} is {len} bytes long, more than the {max} we keep")]
    StringTooLong { key: String, len: u64, max: u64 },
    /// A string we keep is not UTF-8.
    #[error("{key} is not valid UTF-8")]
    InvalidUtf8 { key: String },
    /// A key we report appears twice (gguf-py and llama.cpp refuse such a file too).
    #[error("the metadata key {key} appears twice")]
    DuplicateKey { key: String },
    /// `general.alignment` is not a non-zero power of two (gguf-py's rule).
    #[error("general.alignment is {0}, not a non-zero power of two")]
    BadAlignment(u32),
    /// More than [`tensors::MAX_DIMS`] dimensions.
    #[error("the tensor at byte {offset} has {n_dims} dimensions; ggml allows at most 4")]
    TooManyDims { offset: u64, n_dims: u32 },
    /// A tensor's element count, byte size or offset overflows 64 bits.
    #[error("the tensor at byte {offset} is too large: its size overflows 64 bits")]
    TensorTooLarge { offset: u64 },
    /// The tensor data reaches past the end of the file: a file cut short.
    #[error(
        "the file is truncated: its tensor data ends at byte {end}, the file has {file_len} bytes"
    )]
    TensorDataPastEnd { end: u64, file_len: u64 },
}

/// Reads the GGUF header of the file at `path`.
pub fn read_file(path: &Path) -> Result<GgufInfo, GgufError> {
    read_open(File::open(path)?)
}

/// Reads the GGUF header of a file already open (the library opens it through its
/// directory handle, never by name).
pub fn read_open(file: File) -> Result<GgufInfo, GgufError> {
    let len = file.metadata()?.len();
    read_header(&mut BufReader::with_capacity(BUFFER, file), len)
}

/// Reads a GGUF header from the start of `file`, whose length is `file_len` (the bound
/// that every length and count in the header is checked against).
pub fn read_header<R: Read + Seek>(
    file: &mut BufReader<R>,
    file_len: u64,
) -> Result<GgufInfo, GgufError> {
    let mut cur = Cursor::new(file, file_len)?;
    let version = read_version(&mut cur)?;
    let tensor_count = cur.count("the tensor count", tensors::MIN_TENSOR_INFO)?;
    let kv_count = cur.count("the metadata count", MIN_KV)?;
    let kv_start = cur.pos();
    let mut meta = read_metadata(&mut cur, kv_count, None)?;
    if meta.missed_arch_keys {
        // `{arch}.*` keys came before `general.architecture`: a second pass knows it.
        if let Some(arch) = meta.architecture.clone() {
            cur.rewind_to(kv_start)?;
            meta = read_metadata(&mut cur, kv_count, Some(&arch))?;
        }
    }
    let tensors = tensors::read(&mut cur, tensor_count)?;
    let alignment = meta.alignment.map_or(DEFAULT_ALIGNMENT, u64::from);
    if tensors.data_len > 0 {
        let end = cur
            .pos()
            .div_ceil(alignment)
            .saturating_mul(alignment)
            .saturating_add(tensors.data_len);
        if end > file_len {
            return Err(GgufError::TensorDataPastEnd { end, file_len });
        }
    }
    Ok(GgufInfo {
        version,
        architecture: meta.architecture,
        name: meta.name,
        context_length: meta.context_length,
        block_count: meta.block_count,
        embedding_length: meta.embedding_length,
        file_type: meta.file_type,
        parameters: tensors.parameters,
        chat_template: meta.chat_template,
        split: meta
            .split_no
            .zip(meta.split_count)
            .map(|(no, count)| Split { no, count }),
    })
}

/// The magic and the version.
fn read_version<R: Read + Seek>(cur: &mut Cursor<'_, R>) -> Result<u32, GgufError> {
    let magic = cur.bytes4("the magic")?;
    if magic != *b"GGUF" {
        return Err(GgufError::BadMagic { found: magic });
    }
    match cur.u32("the version")? {
        1 => Err(GgufError::Version1),
        v @ (2 | 3) => Ok(v),
        // gguf-py's test: a version whose low half is zero was written the other way round.
        raw if raw & 0xffff == 0 && raw != 0 => Err(GgufError::BigEndian { raw }),
        other => Err(GgufError::UnsupportedVersion(other)),
    }
}

/// The metadata keys we report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Architecture,
    Name,
    FileType,
    Alignment,
    SplitNo,
    SplitCount,
    ChatTemplate,
    ContextLength,
    BlockCount,
    EmbeddingLength,
}

/// The suffixes of the `{arch}.*` keys we report.
const ARCH_KEYS: [(&[u8], Field); 3] = [
    (b".context_length", Field::ContextLength),
    (b".block_count", Field::BlockCount),
    (b".embedding_length", Field::EmbeddingLength),
];

impl Field {
    /// The field a key names, given the architecture when it is known.
    fn of(key: &[u8], arch: Option<&str>) -> Option<Field> {
        Some(match key {
            b"general.architecture" => Field::Architecture,
            b"general.name" => Field::Name,
            b"general.file_type" => Field::FileType,
            b"general.alignment" => Field::Alignment,
            b"split.no" => Field::SplitNo,
            b"split.count" => Field::SplitCount,
            b"tokenizer.chat_template" => Field::ChatTemplate,
            _ => {
                let rest = key.strip_prefix(arch?.as_bytes())?;
                return ARCH_KEYS.iter().find(|(s, _)| *s == rest).map(|(_, f)| *f);
            }
        })
    }
}

/// What the metadata says, as far as we report it.
#[derive(Debug, Default)]
struct Metadata {
    architecture: Option<String>,
    name: Option<String>,
    file_type: Option<u64>,
    alignment: Option<u32>,
    split_no: Option<u64>,
    split_count: Option<u64>,
    chat_template: bool,
    context_length: Option<u64>,
    block_count: Option<u64>,
    embedding_length: Option<u64>,
    /// The fields met so far (a bit per [`Field`]), to refuse a duplicate.
    seen: u16,
    /// An `{arch}.*`-looking key came before the architecture was known.
    missed_arch_keys: bool,
}

/// One pass over the `kv_count` key/value pairs.
fn read_metadata<R: Read + Seek>(
    cur: &mut Cursor<'_, R>,
    kv_count: u64,
    arch: Option<&str>,
) -> Result<Metadata, GgufError> {
    let mut meta = Metadata::default();
    let mut key = Vec::new();
    for _ in 0..kv_count {
        let offset = cur.pos();
        let len = cur.string_len("a metadata key")?;
        if len > MAX_KEY_LEN {
            return Err(GgufError::KeyTooLong { offset, len });
        }
        cur.read_into("a metadata key", len, &mut key)?;
        let ty = ValueType::read(cur)?;
        let known_arch = arch.or(meta.architecture.as_deref());
        match Field::of(&key, known_arch) {
            Some(field) => meta.set(cur, field, &key, ty)?,
            None => {
                if known_arch.is_none() && ARCH_KEYS.iter().any(|(s, _)| key.ends_with(s)) {
                    meta.missed_arch_keys = true;
                }
                value::skip(cur, ty, 0)?;
            }
        }
    }
    Ok(meta)
}

impl Metadata {
    /// Reads the value of a field we report.
    fn set<R: Read + Seek>(
        &mut self,
        cur: &mut Cursor<'_, R>,
        field: Field,
        key: &[u8],
        ty: ValueType,
    ) -> Result<(), GgufError> {
        // A field's key is ASCII: it matched one of ours.
        let key = std::str::from_utf8(key).unwrap_or("?");
        let bit = 1u16 << field as u16;
        if self.seen & bit != 0 {
            return Err(GgufError::DuplicateKey {
                key: key.to_owned(),
            });
        }
        self.seen |= bit;
        let count = |cur: &mut Cursor<'_, R>| value::integer(cur, ty, key).map(Some);
        match field {
            Field::Architecture => {
                self.architecture = Some(value::string(cur, ty, key, MAX_KEPT_STRING)?);
            }
            Field::Name => self.name = Some(value::string(cur, ty, key, MAX_KEPT_STRING)?),
            Field::FileType => self.file_type = count(cur)?,
            Field::SplitNo => self.split_no = count(cur)?,
            Field::SplitCount => self.split_count = count(cur)?,
            Field::ContextLength => self.context_length = count(cur)?,
            Field::BlockCount => self.block_count = count(cur)?,
            Field::EmbeddingLength => self.embedding_length = count(cur)?,
            Field::ChatTemplate => {
                self.chat_template = true;
                value::skip(cur, ty, 0)?;
            }
            Field::Alignment => self.alignment = Some(alignment(cur, ty)?),
        }
        Ok(())
    }
}

/// `general.alignment`: a u32 (gguf-py refuses any other type), a power of two.
fn alignment<R: Read + Seek>(cur: &mut Cursor<'_, R>, ty: ValueType) -> Result<u32, GgufError> {
    if ty != ValueType::U32 {
        return Err(value::wrong_type("general.alignment", "a UINT32", ty));
    }
    let a = cur.u32("general.alignment")?;
    if !a.is_power_of_two() {
        return Err(GgufError::BadAlignment(a));
    }
    Ok(a)
}
