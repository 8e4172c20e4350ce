//! The bytes of a xorb range: chunks one after another, each an 8-byte header and its
//! (maybe compressed) data. The layout is HuggingFace's
//! (`xet-core-structures` 1.8.0, `xorb_object/xorb_chunk_format.rs`):
//! `version: u8 = 0`, `compressed_length: u24 LE`, `compression_scheme: u8`
//! (0 none, 1 LZ4 frame, 2 LZ4 frame of the bytes grouped by position mod 4),
//! `uncompressed_length: u24 LE`. Their crate is not linked: it pulls in their own
//! runtime crate (`xet-runtime`: a second tokio runtime, sysinfo, reqwest middleware);
//! the format is these few lines, checked against their CAS by the tests.

use std::io::Read;

use bytes::{Buf, Bytes, BytesMut};

use super::XetError;

/// A chunk header's length.
const HEADER: usize = 8;
/// The largest chunk HuggingFace's chunker makes (`MAX_CHUNK_SIZE`, 2 × 64 KiB).
pub(super) const MAX_CHUNK: usize = 128 * 1024;
/// Their reader accepts compressed data up to twice that.
const MAX_COMPRESSED: usize = 2 * MAX_CHUNK;
/// The most bytes one chunk takes in a xorb.
pub(super) const MAX_WIRE_CHUNK: usize = HEADER + MAX_COMPRESSED;

/// Cuts a xorb range's bytes, as they arrive, into decoded chunks.
#[derive(Default)]
pub(super) struct ChunkReader {
    buf: BytesMut,
}

impl ChunkReader {
    /// Bytes received from the network.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole chunk, decoded; `None` until its bytes are all there.
    pub(super) fn next_chunk(&mut self) -> Result<Option<Bytes>, XetError> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let h = Header::parse(&self.buf[..HEADER])?;
        if self.buf.len() < HEADER + h.compressed {
            return Ok(None);
        }
        self.buf.advance(HEADER);
        let data = self.buf.split_to(h.compressed).freeze();
        h.decode(data).map(Some)
    }

    /// Bytes left over that make no whole chunk.
    #[cfg(test)]
    pub(super) fn leftover(&self) -> usize {
        self.buf.len()
    }
}

struct Header {
    compressed: usize,
    scheme: u8,
    uncompressed: usize,
}

impl Header {
    fn parse(b: &[u8]) -> Result<Header, XetError> {
        let u24 = |x: &[u8]| usize::from(x[0]) | usize::from(x[1]) << 8 | usize::from(x[2]) << 16;
        let h = Header {
            compressed: u24(&b[1..4]),
            scheme: b[4],
            uncompressed: u24(&b[5..8]),
        };
        if b[0] != 0 {
            return Err(XetError::Malformed(format!("chunk version {}", b[0])));
        }
        if h.scheme > 2 {
            return Err(XetError::Malformed(format!(
                "chunk compression scheme {}",
                h.scheme
            )));
        }
        if h.uncompressed > MAX_CHUNK || h.compressed > MAX_COMPRESSED {
            return Err(XetError::Malformed(format!(
                "a chunk of {} bytes ({} compressed): larger than any chunk",
                h.uncompressed, h.compressed
            )));
        }
        Ok(h)
    }

    fn decode(&self, data: Bytes) -> Result<Bytes, XetError> {
        // Stored as is (what incompressible weights mostly are): no copy.
        let out = match self.scheme {
            0 => data,
            1 => lz4_frame(&data, self.uncompressed)?.into(),
            _ => regroup(&lz4_frame(&data, self.uncompressed)?).into(),
        };
        if out.len() != self.uncompressed {
            return Err(XetError::Malformed(format!(
                "a chunk decoded to {} bytes, its header says {}",
                out.len(),
                self.uncompressed
            )));
        }
        Ok(out)
    }
}

/// One LZ4 frame, read no further than `expected` bytes (plus one, to see an overrun).
fn lz4_frame(data: &[u8], expected: usize) -> Result<Vec<u8>, XetError> {
    let mut out = Vec::with_capacity(expected);
    lz4_flex::frame::FrameDecoder::new(data)
        .take(expected as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| XetError::Malformed(format!("a chunk's LZ4 data: {e}")))?;
    Ok(out)
}

/// Undoes the byte grouping (HuggingFace's `bg4_regroup_together`): the bytes at
/// positions 0, 4, 8… come first, then 1, 5, 9…, and so on; the first `len % 4`
/// groups are one byte longer.
fn regroup(g: &[u8]) -> Vec<u8> {
    let n = g.len();
    let (split, rem) = (n / 4, n % 4);
    let mut starts = [0usize; 4];
    for i in 1..4 {
        starts[i] = starts[i - 1] + split + usize::from(i - 1 < rem);
    }
    (0..n).map(|i| g[starts[i % 4] + i / 4]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn chunk(scheme: u8, data: &[u8]) -> Vec<u8> {
        let payload = match scheme {
            0 => data.to_vec(),
            _ => {
                let src = if scheme == 2 {
                    group(data)
                } else {
                    data.to_vec()
                };
                let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
                enc.write_all(&src).unwrap();
                enc.finish().unwrap()
            }
        };
        let mut out = vec![0u8];
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
        out.push(scheme);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes()[..3]);
        out.extend_from_slice(&payload);
        out
    }

    /// HuggingFace's `bg4_split_together`, for the round trip.
    fn group(data: &[u8]) -> Vec<u8> {
        (0..4)
            .flat_map(|k| data.iter().skip(k).step_by(4).copied())
            .collect()
    }

    #[test]
    fn chunks_of_every_scheme_decode_across_any_split() {
        let data: Vec<Vec<u8>> = (0..3)
            .map(|k| (0..(1000 + k * 7)).map(|i| (i * 31 % 251) as u8).collect())
            .collect();
        let mut wire = Vec::new();
        for (scheme, d) in data.iter().enumerate() {
            wire.extend(chunk(scheme as u8, d));
        }
        for cut in [1, 5, 8, 9, 500, wire.len()] {
            let mut r = ChunkReader::default();
            let mut got = Vec::new();
            for piece in wire.chunks(cut) {
                r.push(piece);
                while let Some(c) = r.next_chunk().unwrap() {
                    got.push(c);
                }
            }
            let got: Vec<Vec<u8>> = got.iter().map(|b| b.to_vec()).collect();
            assert_eq!(got, data, "cut {cut}");
            assert_eq!(r.leftover(), 0);
        }
    }

    #[test]
    fn regroup_undoes_grouping_for_every_remainder() {
        for n in [0usize, 1, 2, 3, 4, 5, 6, 7, 64, 65, 66, 67] {
            let d: Vec<u8> = (0..n).map(|i| i as u8).collect();
            assert_eq!(regroup(&group(&d)), d, "n {n}");
        }
    }

    #[test]
    fn damaged_chunks_are_refused() {
        let good = chunk(1, &[7u8; 4000]);
        let mut lying = good.clone();
        lying[5] = 0x10; // claims 4096 + … bytes
        let mut r = ChunkReader::default();
        r.push(&lying);
        assert!(r.next_chunk().is_err());
        let mut huge = good.clone();
        huge[7] = 0x7f;
        let mut r = ChunkReader::default();
        r.push(&huge);
        assert!(r.next_chunk().is_err());
        let mut bad_version = good.clone();
        bad_version[0] = 1;
        let mut r = ChunkReader::default();
        r.push(&bad_version);
        assert!(r.next_chunk().is_err());
        let mut bad_scheme = good;
        bad_scheme[4] = 9;
        let mut r = ChunkReader::default();
        r.push(&bad_scheme);
        assert!(r.next_chunk().is_err());
    }
}
