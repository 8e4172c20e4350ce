//! Tensor infos: name, n_dims, dims[n_dims] (u64), type (u32), offset (u64) into the
//! data section. We keep two sums: the element count (`parameters`) and how far the
//! data reaches, so that a file cut short in its tensor data is found without reading it.

use std::io::{Read, Seek};

use super::cursor::Cursor;
use super::GgufError;

/// `GGML_MAX_DIMS` in ggml.h; ggml refuses a tensor info with more.
pub(super) const MAX_DIMS: u32 = 4;

/// The fewest bytes one tensor info takes (empty name, no dims).
pub(super) const MIN_TENSOR_INFO: u64 = 8 + 4 + 4 + 8;

/// What the tensor infos add up to.
#[derive(Debug, Default)]
pub(super) struct Tensors {
    /// Sum over tensors of the product of their dims.
    pub(super) parameters: u64,
    /// The end of the furthest tensor's data, relative to the data section.
    pub(super) data_len: u64,
}

/// Reads `count` tensor infos (the count is already checked against the bytes left).
pub(super) fn read<R: Read + Seek>(
    cur: &mut Cursor<'_, R>,
    count: u64,
) -> Result<Tensors, GgufError> {
    let mut sums = Tensors::default();
    for _ in 0..count {
        let offset = cur.pos();
        let name_len = cur.string_len("a tensor name")?;
        cur.skip("a tensor name", name_len)?;
        let n_dims = cur.u32("a tensor's n_dims")?;
        if n_dims > MAX_DIMS {
            return Err(GgufError::TooManyDims { offset, n_dims });
        }
        let mut elements: u64 = 1;
        for _ in 0..n_dims {
            let dim = cur.u64("a tensor dimension")?;
            elements = elements
                .checked_mul(dim)
                .ok_or(GgufError::TensorTooLarge { offset })?;
        }
        let ggml_type = cur.u32("a tensor type")?;
        let data_offset = cur.u64("a tensor offset")?;
        let end = data_size(ggml_type, elements)
            .and_then(|size| data_offset.checked_add(size))
            .ok_or(GgufError::TensorTooLarge { offset })?;
        sums.data_len = sums.data_len.max(end);
        sums.parameters = sums
            .parameters
            .checked_add(elements)
            .ok_or(GgufError::TensorTooLarge { offset })?;
    }
    Ok(sums)
}

/// The bytes of `elements` values of a ggml type; 0 for a type we do not know (newer
/// than this table), so that only its offset is checked. `None` on overflow.
fn data_size(ggml_type: u32, elements: u64) -> Option<u64> {
    match block_size(ggml_type) {
        Some((block, bytes)) => elements.div_ceil(block).checked_mul(bytes),
        None => Some(0),
    }
}

/// (elements per block, bytes per block) for each `ggml_type`, from gguf-py's
/// `GGML_QUANT_SIZES` (constants.py, gguf 0.19.0); QK_K = 256.
fn block_size(ggml_type: u32) -> Option<(u64, u64)> {
    const K: u64 = 256;
    Some(match ggml_type {
        0 => (1, 4),                               // F32
        1 | 30 => (1, 2),                          // F16, BF16
        2 | 20 => (32, 2 + 16),                    // Q4_0, IQ4_NL
        3 => (32, 2 + 2 + 16),                     // Q4_1
        6 => (32, 2 + 4 + 16),                     // Q5_0
        7 => (32, 2 + 2 + 4 + 16),                 // Q5_1
        8 => (32, 2 + 32),                         // Q8_0
        9 => (32, 4 + 4 + 32),                     // Q8_1
        10 => (K, 2 + 2 + K / 16 + K / 4),         // Q2_K
        11 => (K, 2 + K / 4 + K / 8 + 12),         // Q3_K
        12 => (K, 2 + 2 + K / 2 + 12),             // Q4_K
        13 => (K, 2 + 2 + K / 2 + K / 8 + 12),     // Q5_K
        14 => (K, 2 + K / 2 + K / 4 + K / 16),     // Q6_K
        15 => (K, 4 + K + K / 8),                  // Q8_K
        16 => (K, 2 + K / 4),                      // IQ2_XXS
        17 => (K, 2 + K / 4 + K / 32),             // IQ2_XS
        18 => (K, 2 + K / 4 + K / 8),              // IQ3_XXS
        19 => (K, 2 + K / 8 + K / 16),             // IQ1_S
        21 => (K, 2 + K / 4 + K / 8 + K / 32 + 4), // IQ3_S
        22 => (K, 2 + K / 4 + K / 16),             // IQ2_S
        23 => (K, 2 + 2 + K / 2 + K / 64),         // IQ4_XS
        24 => (1, 1),                              // I8
        25 => (1, 2),                              // I16
        26 => (1, 4),                              // I32
        27 | 28 => (1, 8),                         // I64, F64
        29 => (K, K / 8 + K / 16 + K / 32),        // IQ1_M
        34 => (K, 2 + 4 * 13),                     // TQ1_0
        35 => (K, 2 + 64),                         // TQ2_0
        39 => (32, 1 + 16),                        // MXFP4
        40 => (64, 4 + 32),                        // NVFP4
        41 => (128, 2 + 16),                       // Q1_0
        _ => return None,
    })
}
