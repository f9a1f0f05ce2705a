//! Tensors as wasi-nn passes them, and the byte encoding of a list of
//! tensors: what a run's transcript digests for every inference (inputs and
//! outputs) and what `RECEIPT.tensors` carries. A format crate: a verifier
//! reads and checks these bytes without any inference engine.
//!
//! - [`ElemType`]: wasi-nn's element types, by their `tensor_type` codes.
//! - [`Tensor`]: element type, `u32` dimensions, little-endian bytes,
//!   checked on construction ([`Tensor::new`]).
//! - [`encode_tensors`] / [`decode_tensors`]: the stable encoding of a
//!   list of tensors.
//!
//! **Stability:** the encoding is bound by transcript digests in receipts;
//! a golden test pins it.

use half::f16;

/// A tensor or tensor list that does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TensorError(pub String);

/// Result alias for this crate.
pub type Result<T, E = TensorError> = std::result::Result<T, E>;

/// Element types, numbered as wasi-nn's `tensor_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ElemType {
    /// IEEE half precision.
    F16 = 0,
    /// IEEE single precision.
    F32 = 1,
    /// IEEE double precision.
    F64 = 2,
    /// Unsigned byte.
    U8 = 3,
    /// 32-bit signed integer.
    I32 = 4,
    /// 64-bit signed integer.
    I64 = 5,
}

impl ElemType {
    /// From wasi-nn's `tensor_type` code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::F16,
            1 => Self::F32,
            2 => Self::F64,
            3 => Self::U8,
            4 => Self::I32,
            5 => Self::I64,
            _ => return None,
        })
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::F16 => 2,
            Self::F32 | Self::I32 => 4,
            Self::F64 | Self::I64 => 8,
        }
    }
    /// Lower-case name (`f32`, `i64`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::F32 => "f32",
            Self::F64 => "f64",
            Self::U8 => "u8",
            Self::I32 => "i32",
            Self::I64 => "i64",
        }
    }
}

/// A dense tensor: element type, dimensions, little-endian data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor {
    ty: ElemType,
    dims: Vec<u32>,
    data: Vec<u8>,
}

impl Tensor {
    /// A tensor whose `data` holds exactly product(`dims`) × element size
    /// bytes (checked arithmetic), and at most `max_bytes`.
    pub fn new(ty: ElemType, dims: Vec<u32>, data: Vec<u8>, max_bytes: usize) -> Result<Self> {
        let want = byte_len(ty, &dims)
            .filter(|&n| n <= max_bytes)
            .ok_or_else(|| {
                TensorError(format!(
                    "{} {dims:?} is larger than the cap of {max_bytes} bytes",
                    ty.name()
                ))
            })?;
        if data.len() != want {
            return Err(TensorError(format!(
                "{} {dims:?} needs {want} bytes, got {}",
                ty.name(),
                data.len()
            )));
        }
        Ok(Tensor { ty, dims, data })
    }
    /// The element type.
    pub fn ty(&self) -> ElemType {
        self.ty
    }
    /// The dimensions.
    pub fn dims(&self) -> &[u32] {
        &self.dims
    }
    /// The raw little-endian data.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len() / self.ty.size()
    }
    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// The elements widened to `f64` (f16 included), for comparisons.
    pub fn to_f64(&self) -> Vec<f64> {
        let d = &self.data;
        match self.ty {
            ElemType::U8 => d.iter().map(|&b| b as f64).collect(),
            ElemType::F16 => d
                .chunks_exact(2)
                .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64())
                .collect(),
            ElemType::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            ElemType::I32 => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            ElemType::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            ElemType::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
        }
    }
}

/// product(`dims`) × element size, or `None` on overflow.
pub fn byte_len(ty: ElemType, dims: &[u32]) -> Option<usize> {
    dims.iter()
        .try_fold(ty.size(), |acc, &d| acc.checked_mul(d as usize))
}

/// Encodes tensors as: count (u32 LE), then per tensor its type code (u8),
/// rank (u32), dimensions (u32 each), byte length (u64) and bytes. Stable:
/// stored output tensors and the portable backend's ABI use it.
pub fn encode_tensors(tensors: &[Tensor]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(tensors.len() as u32).to_le_bytes());
    for t in tensors {
        out.push(t.ty as u8);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&(t.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&t.data);
    }
    out
}

/// Decodes [`encode_tensors`]' format, checking every tensor against
/// `max_bytes` and rejecting trailing bytes.
pub fn decode_tensors(mut bytes: &[u8], max_bytes: usize) -> Result<Vec<Tensor>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
        if b.len() < n {
            return Err(TensorError("truncated tensor list".into()));
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Ok(head)
    }
    let u32_of =
        |b: &mut &[u8]| -> Result<u32> { Ok(u32::from_le_bytes(take(b, 4)?.try_into().unwrap())) };
    let count = u32_of(&mut bytes)?;
    let mut tensors = Vec::new();
    for _ in 0..count {
        let code = take(&mut bytes, 1)?[0];
        let ty = ElemType::from_code(code)
            .ok_or_else(|| TensorError(format!("unknown tensor type code {code}")))?;
        let rank = u32_of(&mut bytes)?;
        if rank > 16 {
            return Err(TensorError(format!("rank {rank} exceeds 16")));
        }
        let dims = (0..rank)
            .map(|_| u32_of(&mut bytes))
            .collect::<Result<Vec<_>>>()?;
        let len = u64::from_le_bytes(take(&mut bytes, 8)?.try_into().unwrap());
        let len = usize::try_from(len).map_err(|_| TensorError("length overflows".into()))?;
        let data = take(&mut bytes, len)?.to_vec();
        tensors.push(Tensor::new(ty, dims, data, max_bytes)?);
    }
    if !bytes.is_empty() {
        return Err(TensorError(format!(
            "{} trailing bytes after the tensor list",
            bytes.len()
        )));
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoding_is_pinned_and_round_trips() {
        let a = Tensor::new(
            ElemType::F32,
            vec![2],
            [1.5f32, -0.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            64,
        )
        .unwrap();
        let b = Tensor::new(ElemType::U8, vec![1, 3], vec![1, 2, 3], 64).unwrap();
        let bytes = encode_tensors(&[a.clone(), b.clone()]);
        // Bound by every transcript: changing it is a receipt format change.
        assert_eq!(
            bytes,
            [
                2, 0, 0, 0, // count
                1, 1, 0, 0, 0, 2, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0,
                0, // f32, rank 1, [2], 8 bytes
                0, 0, 0xc0, 0x3f, 0, 0, 0, 0x80, // 1.5, -0.0
                3, 2, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0,
                0, // u8, rank 2, [1, 3], 3 bytes
                1, 2, 3,
            ]
        );
        assert_eq!(decode_tensors(&bytes, 64).unwrap(), [a, b]);
        assert!(decode_tensors(&bytes[..bytes.len() - 1], 64).is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode_tensors(&extra, 64).is_err());
        assert!(decode_tensors(&bytes, 4).is_err(), "the cap applies");
    }
}
