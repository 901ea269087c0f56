//! Host tensors and the shape checks every operation shares (the element type is [`DType`]).
//!
//! [`Tensor`] is the owned host tensor (row-major, contiguous). Device tensors live in
//! the runtime's `DeviceTensor`; both implement [`TensorInfo`], so one validation routine
//! per operation serves the CPU and the CUDA path.

pub use crate::dtype::DType;
use crate::error::{Error, Result};
use half::{bf16, f16};

/// Shape and element type: what validation needs to know about a tensor, host or device.
pub trait TensorInfo {
    fn dtype(&self) -> DType;
    fn shape(&self) -> &[usize];
    fn numel(&self) -> usize {
        self.shape().iter().product()
    }
}

/// Storage of a host tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I32(Vec<i32>),
}

/// An owned, contiguous, row-major host tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Storage,
}

impl TensorInfo for Tensor {
    fn dtype(&self) -> DType {
        match self.data {
            Storage::F32(_) => DType::F32,
            Storage::F16(_) => DType::F16,
            Storage::BF16(_) => DType::BF16,
            Storage::I32(_) => DType::I32,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

/// Element count of `shape`, or an error naming `arg` when it overflows.
pub fn checked_numel(arg: &str, shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| {
        Error::invalid(arg, format!("shape {shape:?} has more elements than fit in usize"))
    })
}

impl Tensor {
    fn with_len(arg: &str, shape: &[usize], len: usize) -> Result<usize> {
        let n = checked_numel(arg, shape)?;
        if n != len {
            return Err(Error::shape(arg, format!("{len} elements"), shape));
        }
        Ok(n)
    }

    /// Build from f32 values, rounding once to `dtype` (round to nearest even).
    pub fn from_f32(dtype: DType, shape: &[usize], values: &[f32]) -> Result<Tensor> {
        Self::with_len("values", shape, values.len())?;
        let data = match dtype {
            DType::F32 => Storage::F32(values.to_vec()),
            DType::F16 => Storage::F16(values.iter().map(|&x| f16::from_f32(x)).collect()),
            DType::BF16 => Storage::BF16(values.iter().map(|&x| bf16::from_f32(x)).collect()),
            DType::I32 => {
                return Err(Error::DType { arg: "dtype".into(), expected: "f32, f16 or bf16".into(), got: dtype })
            }
        };
        Ok(Tensor { shape: shape.to_vec(), data })
    }

    pub fn from_i32(shape: &[usize], values: &[i32]) -> Result<Tensor> {
        Self::with_len("values", shape, values.len())?;
        Ok(Tensor { shape: shape.to_vec(), data: Storage::I32(values.to_vec()) })
    }

    pub fn from_storage(shape: &[usize], data: Storage) -> Result<Tensor> {
        let len = match &data {
            Storage::F32(v) => v.len(),
            Storage::F16(v) => v.len(),
            Storage::BF16(v) => v.len(),
            Storage::I32(v) => v.len(),
        };
        Self::with_len("data", shape, len)?;
        Ok(Tensor { shape: shape.to_vec(), data })
    }

    /// A tensor of zeros.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<Tensor> {
        let n = checked_numel("shape", shape)?;
        let data = match dtype {
            DType::F32 => Storage::F32(vec![0.0; n]),
            DType::F16 => Storage::F16(vec![f16::ZERO; n]),
            DType::BF16 => Storage::BF16(vec![bf16::ZERO; n]),
            DType::I32 => Storage::I32(vec![0; n]),
        };
        Ok(Tensor { shape: shape.to_vec(), data })
    }

    pub fn storage(&self) -> &Storage {
        &self.data
    }
    pub fn into_storage(self) -> Storage {
        self.data
    }

    /// Values widened to f32 (exact for every float dtype; i32 converted).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            Storage::F32(v) => v.clone(),
            Storage::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Storage::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Storage::I32(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Values widened to f64 (exact).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            Storage::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Storage::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            Storage::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            Storage::I32(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Storage::F32(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            Storage::I32(v) => Some(v),
            _ => None,
        }
    }

    /// Little-endian bytes (the safetensors and device layout).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match &self.data {
            Storage::F32(v) => bytemuck::cast_slice(v).to_vec(),
            Storage::F16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
            Storage::BF16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
            Storage::I32(v) => bytemuck::cast_slice(v).to_vec(),
        }
    }

    /// Build from little-endian bytes; `arg` names the tensor in errors.
    pub fn from_le_bytes(arg: &str, dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Tensor> {
        let n = checked_numel(arg, shape)?;
        let want = n.checked_mul(dtype.size()).ok_or_else(|| Error::invalid(arg, "byte size overflows"))?;
        if bytes.len() != want {
            return Err(Error::invalid(arg, format!("expected {want} bytes for {dtype} {shape:?}, got {}", bytes.len())));
        }
        let data = match dtype {
            DType::F32 => Storage::F32(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()),
            DType::I32 => Storage::I32(bytes.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect()),
            DType::F16 => Storage::F16(bytes.chunks_exact(2).map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]]))).collect()),
            DType::BF16 => Storage::BF16(bytes.chunks_exact(2).map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]]))).collect()),
        };
        Ok(Tensor { shape: shape.to_vec(), data })
    }

    /// Same data, new shape with the same element count.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Tensor> {
        let n = checked_numel("shape", shape)?;
        if n != self.numel() {
            return Err(Error::shape("shape", format!("{} elements", self.numel()), shape));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation helpers shared by every op.
// ---------------------------------------------------------------------------------------------

/// Check that `t` has rank `rank`; `dims` names the dimensions for the message (e.g. "[B, S, H, D]").
pub fn expect_rank(arg: &str, t: &dyn TensorInfo, rank: usize, dims: &str) -> Result<()> {
    if t.shape().len() != rank {
        return Err(Error::shape(arg, dims, t.shape()));
    }
    Ok(())
}

/// Check that `t` has exactly the shape `want`.
pub fn expect_shape(arg: &str, t: &dyn TensorInfo, want: &[usize]) -> Result<()> {
    if t.shape() != want {
        return Err(Error::shape(arg, format!("{want:?}"), t.shape()));
    }
    Ok(())
}

/// Check a tensor a caller hands in for an output (or a planned input): exactly `dtype`, then
/// exactly `shape`.
pub fn expect_tensor(arg: &str, t: &dyn TensorInfo, dtype: DType, shape: &[usize]) -> Result<()> {
    expect_dtype(arg, t, &[dtype])?;
    expect_shape(arg, t, shape)
}

/// Check that `t`'s dtype is one of `allowed`.
pub fn expect_dtype(arg: &str, t: &dyn TensorInfo, allowed: &[DType]) -> Result<()> {
    if !allowed.contains(&t.dtype()) {
        let expected = allowed.iter().map(|d| d.name()).collect::<Vec<_>>().join(" or ");
        return Err(Error::DType { arg: arg.into(), expected, got: t.dtype() });
    }
    Ok(())
}

/// Check that `t` has the same dtype as the reference tensor named `ref_arg`.
pub fn expect_same_dtype(arg: &str, t: &dyn TensorInfo, ref_arg: &str, want: DType) -> Result<()> {
    if t.dtype() != want {
        return Err(Error::DType { arg: arg.into(), expected: format!("{want} (the dtype of `{ref_arg}`)"), got: t.dtype() });
    }
    Ok(())
}

/// Validate cumulative sequence lengths (int32 `[N+1]`, starting at 0, non-decreasing, ending
/// at `total`). Returns the offsets as usize.
pub fn check_cu_seqlens(arg: &str, cu: &[i32], total: usize) -> Result<Vec<usize>> {
    if cu.len() < 2 {
        return Err(Error::invalid(arg, format!("needs at least 2 entries ([N+1] with N >= 1), got {}", cu.len())));
    }
    if cu[0] != 0 {
        return Err(Error::invalid(arg, format!("must start at 0, starts at {}", cu[0])));
    }
    let mut out = Vec::with_capacity(cu.len());
    for (i, w) in cu.windows(2).enumerate() {
        if w[1] < w[0] {
            return Err(Error::invalid(arg, format!("decreases at index {}: {} then {}", i + 1, w[0], w[1])));
        }
    }
    for &c in cu {
        out.push(c as usize);
    }
    let last = *out.last().unwrap();
    if last != total {
        return Err(Error::invalid(arg, format!("last entry {last} must equal the packed length {total}")));
    }
    Ok(out)
}

/// Fetch an i32 host tensor's data or fail naming `arg`.
pub fn i32_data<'a>(arg: &str, t: &'a Tensor) -> Result<&'a [i32]> {
    t.as_i32().ok_or_else(|| Error::DType { arg: arg.into(), expected: "i32".into(), got: t.dtype() })
}

/// Fetch an f32 host tensor's data or fail naming `arg`.
pub fn f32_data<'a>(arg: &str, t: &'a Tensor) -> Result<&'a [f32]> {
    t.as_f32().ok_or_else(|| Error::DType { arg: arg.into(), expected: "f32".into(), got: t.dtype() })
}

/// `||out - ref||_2 / ||ref||_2`, with `ref` all zeros giving `||out||_2`.
/// NaN or infinite entries in `out` where `ref` is finite give +inf.
pub fn rel_error(out: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len(), "rel_error: length mismatch");
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (&o, &r) in out.iter().zip(reference) {
        if r.is_finite() && !o.is_finite() {
            return f64::INFINITY;
        }
        if r.is_infinite() && o == r {
            continue;
        }
        num += (o - r) * (o - r);
        den += r * r;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// The dtypes and shapes of the tensors a launch plan was made for (`None`: an optional tensor
/// the plan was made without). A plan's launch checks the tensors it is given against them.
#[derive(Clone, Debug)]
pub(crate) struct PlannedTensors {
    names: &'static [&'static str],
    planned: Vec<Option<(DType, Vec<usize>)>>,
}

impl PlannedTensors {
    /// Record `tensors` (one per name, in order).
    pub(crate) fn of<T: TensorInfo>(names: &'static [&'static str], tensors: &[Option<&T>]) -> PlannedTensors {
        PlannedTensors { names, planned: tensors.iter().map(|t| t.map(|t| (t.dtype(), t.shape().to_vec()))).collect() }
    }

    /// `tensors` have the planned dtypes and shapes, and the optional ones are given exactly
    /// where the plan had them; the error names the first that differs.
    pub(crate) fn check<T: TensorInfo>(&self, tensors: &[Option<&T>]) -> Result<()> {
        for ((arg, t), planned) in self.names.iter().zip(tensors).zip(&self.planned) {
            match (t, planned) {
                (Some(t), Some((dtype, shape))) => {
                    expect_dtype(arg, *t, &[*dtype])?;
                    if t.shape() != shape.as_slice() {
                        return Err(Error::shape(*arg, format!("{shape:?} (as planned)"), t.shape()));
                    }
                }
                (None, None) => {}
                (_, planned) => {
                    let how = if planned.is_some() { "with" } else { "without" };
                    return Err(Error::invalid(*arg, format!("the plan was made {how} it")));
                }
            }
        }
        Ok(())
    }
}
