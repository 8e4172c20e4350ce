//! Metadata values: the thirteen value types of `gguf_metadata_value_type` (ggml
//! `docs/gguf.md`, gguf-py `GGUFValueType`), skipped without being held, or read as
//! the few shapes we report (a count, a string).

use std::io::{Read, Seek};

use super::cursor::Cursor;
use super::GgufError;

/// How deep arrays of arrays may nest. Real files nest none; the cap keeps a hostile
/// file from recursing the stack away.
pub(super) const MAX_NESTING: u32 = 16;

/// A metadata value type, numbered as in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    /// Reads the u32 type number at the cursor.
    pub(super) fn read<R: Read + Seek>(cur: &mut Cursor<'_, R>) -> Result<Self, GgufError> {
        let offset = cur.pos();
        let raw = cur.u32("a value type")?;
        Self::from_raw(raw).ok_or(GgufError::UnknownValueType { offset, raw })
    }

    fn from_raw(raw: u32) -> Option<Self> {
        use ValueType::*;
        Some(match raw {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The size of a value of this type; `None` for strings and arrays.
    fn fixed_size(self) -> Option<u64> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    /// The fewest bytes a value of this type takes: what a count of them is checked with.
    fn min_size(self) -> u64 {
        match self {
            ValueType::String => 8,
            ValueType::Array => 12,
            fixed => fixed.fixed_size().unwrap_or(1),
        }
    }

    /// The name used in error messages (gguf-py's names).
    pub(super) fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "UINT8",
            I8 => "INT8",
            U16 => "UINT16",
            I16 => "INT16",
            U32 => "UINT32",
            I32 => "INT32",
            F32 => "FLOAT32",
            Bool => "BOOL",
            String => "STRING",
            Array => "ARRAY",
            U64 => "UINT64",
            I64 => "INT64",
            F64 => "FLOAT64",
        }
    }
}

/// Moves past one value of type `ty`; `depth` is how many arrays it sits in.
pub(super) fn skip<R: Read + Seek>(
    cur: &mut Cursor<'_, R>,
    ty: ValueType,
    depth: u32,
) -> Result<(), GgufError> {
    match ty {
        ValueType::String => {
            let len = cur.string_len("a string value")?;
            cur.skip("a string value", len)
        }
        ValueType::Array => skip_array(cur, depth + 1),
        fixed => cur.skip("a value", fixed.fixed_size().unwrap_or(0)),
    }
}

/// An array: element type, count, elements. Fixed-size elements are skipped in one
/// seek; strings and arrays one by one, each length checked, nothing kept.
fn skip_array<R: Read + Seek>(cur: &mut Cursor<'_, R>, depth: u32) -> Result<(), GgufError> {
    if depth > MAX_NESTING {
        return Err(GgufError::NestedTooDeep {
            offset: cur.pos(),
            max: MAX_NESTING,
        });
    }
    let ty = ValueType::read(cur)?;
    let count = cur.count("an array length", ty.min_size())?;
    match ty.fixed_size() {
        // count * size <= bytes left: `count` checked it.
        Some(size) => cur.skip("an array", count * size),
        None => (0..count).try_for_each(|_| skip(cur, ty, depth)),
    }
}

/// A value we report as a count: any integer type (the spec says u64 but writers use
/// u32 and u16, and recommends readers take both), never negative.
pub(super) fn integer<R: Read + Seek>(
    cur: &mut Cursor<'_, R>,
    ty: ValueType,
    key: &str,
) -> Result<u64, GgufError> {
    let what = "an integer value";
    let signed = match ty {
        ValueType::U8 => return Ok(u64::from(cur.u8(what)?)),
        ValueType::U16 => return Ok(u64::from(cur.u16(what)?)),
        ValueType::U32 => return Ok(u64::from(cur.u32(what)?)),
        ValueType::U64 => return cur.u64(what),
        ValueType::I8 => i64::from(cur.u8(what)? as i8),
        ValueType::I16 => i64::from(cur.u16(what)? as i16),
        ValueType::I32 => i64::from(cur.u32(what)? as i32),
        ValueType::I64 => cur.u64(what)? as i64,
        other => return Err(wrong_type(key, "an integer", other)),
    };
    u64::try_from(signed).map_err(|_| GgufError::Negative {
        key: key.to_owned(),
        value: signed,
    })
}

/// A string value we keep: at most `max` bytes, valid UTF-8.
pub(super) fn string<R: Read + Seek>(
    cur: &mut Cursor<'_, R>,
    ty: ValueType,
    key: &str,
    max: u64,
) -> Result<String, GgufError> {
    if ty != ValueType::String {
        return Err(wrong_type(key, "a string", ty));
    }
    let len = cur.string_len("a string value")?;
    if len > max {
        return Err(GgufError::StringTooLong {
            key: key.to_owned(),
            len,
            max,
        });
    }
    let mut buf = Vec::new();
    cur.read_into("a string value", len, &mut buf)?;
    String::from_utf8(buf).map_err(|_| GgufError::InvalidUtf8 {
        key: key.to_owned(),
    })
}

pub(super) fn wrong_type(key: &str, expected: &'static str, found: ValueType) -> GgufError {
    GgufError::WrongType {
        key: key.to_owned(),
        expected,
        found: found.name(),
    }
}
