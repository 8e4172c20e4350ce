//! Little-endian reads over a `BufReader` that know how many bytes are left.
//!
//! Every length or count taken from the file goes through [`Cursor::string_len`] or
//! [`Cursor::count`], which compare it with the bytes left *before* the caller allocates,
//! skips or loops: that one rule is what keeps a hostile header from costing more than
//! its own size.

use std::io::{BufReader, Read, Seek, SeekFrom};

use super::GgufError;

/// How far into a file the header (metadata and tensor infos) may reach. The largest
/// real headers (a 256k-token vocabulary with its merges) are ~20 MB; the cap bounds the
/// work a file of a few GB of tiny entries could ask for.
pub(super) const MAX_HEADER_BYTES: u64 = 256 << 20;

/// A position in the file, with the end that reads may not pass.
pub(super) struct Cursor<'a, R> {
    inner: &'a mut BufReader<R>,
    pos: u64,
    /// `min(file_len, MAX_HEADER_BYTES)`.
    end: u64,
    file_len: u64,
}

impl<'a, R: Read + Seek> Cursor<'a, R> {
    /// A cursor at the start of the file.
    pub(super) fn new(inner: &'a mut BufReader<R>, file_len: u64) -> Result<Self, GgufError> {
        inner.seek(SeekFrom::Start(0))?;
        Ok(Self {
            inner,
            pos: 0,
            end: file_len.min(MAX_HEADER_BYTES),
            file_len,
        })
    }

    /// The offset of the next byte to read.
    pub(super) fn pos(&self) -> u64 {
        self.pos
    }

    /// Bytes that may still be read.
    fn left(&self) -> u64 {
        self.end - self.pos
    }

    /// The error for `n` bytes that are not there: the header cap when that is what
    /// stops us, else a truncated file.
    fn past_end(&self, what: &'static str, needed: u64) -> GgufError {
        if self.end < self.file_len && self.pos.saturating_add(needed) <= self.file_len {
            GgufError::HeaderTooLarge {
                limit: MAX_HEADER_BYTES,
            }
        } else {
            GgufError::Truncated {
                what,
                offset: self.pos,
                needed,
                left: self.file_len - self.pos,
            }
        }
    }

    fn need(&self, what: &'static str, n: u64) -> Result<(), GgufError> {
        if n > self.left() {
            return Err(self.past_end(what, n));
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        self.need(what, N as u64)?;
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf)?;
        self.pos += N as u64;
        Ok(buf)
    }

    pub(super) fn bytes4(&mut self, what: &'static str) -> Result<[u8; 4], GgufError> {
        self.array(what)
    }

    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(super) fn u16(&mut self, what: &'static str) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(super) fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Moves `n` bytes on without reading them (inside the buffer when it can).
    pub(super) fn skip(&mut self, what: &'static str, n: u64) -> Result<(), GgufError> {
        self.need(what, n)?;
        // n <= left <= MAX_HEADER_BYTES, so it fits an i64.
        self.inner.seek_relative(n as i64)?;
        self.pos += n;
        Ok(())
    }

    /// Goes back to an offset already read (the metadata's second pass).
    pub(super) fn rewind_to(&mut self, pos: u64) -> Result<(), GgufError> {
        debug_assert!(pos <= self.pos);
        self.inner.seek(SeekFrom::Start(pos))?;
        self.pos = pos;
        Ok(())
    }

    /// Reads `n` bytes, already checked by [`Cursor::string_len`], into `buf`.
    pub(super) fn read_into(
        &mut self,
        what: &'static str,
        n: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), GgufError> {
        self.need(what, n)?;
        buf.clear();
        buf.resize(n as usize, 0);
        self.inner.read_exact(buf)?;
        self.pos += n;
        Ok(())
    }

    /// True when `bytes` more would fit in the file but not under the header cap.
    fn only_over_cap(&self, bytes: Option<u64>) -> bool {
        self.end < self.file_len
            && bytes
                .and_then(|b| self.pos.checked_add(b))
                .is_some_and(|end| end <= self.file_len)
    }

    /// The length of a GGUF string (a u64), refused when the bytes are not in the file.
    pub(super) fn string_len(&mut self, what: &'static str) -> Result<u64, GgufError> {
        let offset = self.pos;
        let len = self.u64(what)?;
        if len <= self.left() {
            return Ok(len);
        }
        if self.only_over_cap(Some(len)) {
            return Err(GgufError::HeaderTooLarge {
                limit: MAX_HEADER_BYTES,
            });
        }
        Err(GgufError::StringPastEnd {
            what,
            offset,
            len,
            left: self.file_len - self.pos,
        })
    }

    /// A count (a u64) of entries of at least `each` bytes, refused when that many
    /// cannot fit in what is left: a loop over it then ends within the file.
    pub(super) fn count(&mut self, what: &'static str, each: u64) -> Result<u64, GgufError> {
        let offset = self.pos;
        let count = self.u64(what)?;
        let bytes = count.checked_mul(each);
        if bytes.is_some_and(|b| b <= self.left()) {
            return Ok(count);
        }
        if self.only_over_cap(bytes) {
            return Err(GgufError::HeaderTooLarge {
                limit: MAX_HEADER_BYTES,
            });
        }
        Err(GgufError::CountPastEnd {
            what,
            offset,
            count,
            each,
            left: self.file_len - self.pos,
        })
    }
}
