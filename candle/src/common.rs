//! What every op shares: errors, dtypes, the CPU conversion between candle's storage and the
//! library's host tensors, operand tensors held by an op, and the side outputs (`lse`,
//! `final_state`) a candle custom op cannot return itself.

use attn_kernels as ak;
use candle_core::op::BackpropOp;
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Storage, Tensor};
use std::sync::Mutex;

/// An attn-kernels error as a candle error (the message names the argument at fault).
pub(crate) fn ak_err(e: ak::Error) -> candle_core::Error {
    candle_core::Error::wrap(format!("attn-kernels: {e}"))
}

/// The library's dtype of a candle dtype (f32, f16, bf16, i32).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn ak_dtype(arg: &str, d: DType) -> Result<ak::DType> {
    Ok(match d {
        DType::F32 => ak::DType::F32,
        DType::F16 => ak::DType::F16,
        DType::BF16 => ak::DType::BF16,
        DType::I32 => ak::DType::I32,
        other => bail!("attn-kernels: `{arg}` has dtype {other:?}; the ops take f32, f16 or bf16"),
    })
}

fn gather<T: Copy>(v: &[T], l: &Layout) -> Vec<T> {
    if let Some((start, end)) = l.contiguous_offsets() {
        return v[start..end].to_vec();
    }
    // Row-major walk over the layout: the innermost dimension is copied as a run (strided when
    // it is not contiguous), the outer ones advance an index odometer.
    let (dims, strides) = (l.dims(), l.stride());
    let n: usize = dims.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let rank = dims.len();
    let (inner, inner_stride) = (dims[rank - 1], strides[rank - 1]);
    let mut idx = vec![0usize; rank - 1];
    loop {
        let base = l.start_offset() + idx.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        if inner_stride == 1 {
            out.extend_from_slice(&v[base..base + inner]);
        } else {
            out.extend((0..inner).map(|j| v[base + j * inner_stride]));
        }
        // Advance the odometer over the outer dimensions.
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Copy candle CPU storage (any layout: offsets, strides, broadcasts) into a packed host tensor
/// of the library. A copy is unavoidable: the library's CPU references take their own owned
/// tensor type.
pub(crate) fn to_host(arg: &str, s: &CpuStorage, l: &Layout) -> Result<ak::Tensor> {
    use ak::tensor::Storage as H;
    let data = match s {
        CpuStorage::F32(v) => H::F32(gather(v, l)),
        CpuStorage::F16(v) => H::F16(gather(v, l)),
        CpuStorage::BF16(v) => H::BF16(gather(v, l)),
        CpuStorage::I32(v) => H::I32(gather(v, l)),
        _ => bail!("attn-kernels: `{arg}` must be f32, f16 or bf16"),
    };
    ak::Tensor::from_storage(l.dims(), data).map_err(ak_err)
}

/// A library host tensor as candle CPU storage (the vector moves, no copy).
pub(crate) fn from_host(t: ak::Tensor) -> Result<(CpuStorage, Shape)> {
    use ak::tensor::Storage as H;
    use ak::TensorInfo;
    let shape = Shape::from(t.shape());
    let s = match t.into_storage() {
        H::F32(v) => CpuStorage::F32(v),
        H::F16(v) => CpuStorage::F16(v),
        H::BF16(v) => CpuStorage::BF16(v),
        H::I32(v) => CpuStorage::I32(v),
    };
    Ok((s, shape))
}

/// An operand beyond the (at most three) tensors candle hands a custom op: held by the op and
/// read through its storage lock when the op runs.
pub(crate) fn host_operand(arg: &str, t: &Tensor) -> Result<ak::Tensor> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => to_host(arg, s, layout),
        _ => bail!("attn-kernels: `{arg}` is on {:?}, the op runs on the CPU", t.device().location()),
    }
}

pub(crate) fn host_operand_opt(arg: &str, t: Option<&Tensor>) -> Result<Option<ak::Tensor>> {
    t.map(|t| host_operand(arg, t)).transpose()
}

/// The outputs of an op past its first: candle's custom ops return one storage, so the op
/// stores the others here while it runs and the caller wraps them into tensors after it.
#[derive(Default)]
pub(crate) struct SideOutputs(Mutex<Vec<(Storage, Shape)>>);

impl SideOutputs {
    pub(crate) fn push(&self, storage: Storage, shape: Shape) {
        self.0.lock().unwrap().push((storage, shape));
    }

    pub(crate) fn push_host(&self, t: ak::Tensor) -> Result<()> {
        let (s, shape) = from_host(t)?;
        self.push(Storage::Cpu(s), shape);
        Ok(())
    }

    /// The stored outputs as tensors (no copy), exactly `n` of them.
    pub(crate) fn take(&self, n: usize) -> Result<Vec<Tensor>> {
        let outs = std::mem::take(&mut *self.0.lock().unwrap());
        if outs.len() != n {
            bail!("attn-kernels: internal error: {} side outputs, expected {n}", outs.len());
        }
        Ok(outs.into_iter().map(|(s, shape)| Tensor::from_storage(s, shape, BackpropOp::none(), false)).collect())
    }
}

/// `t` itself, or a contiguous copy when it is on a CUDA device and the kernels cannot address
/// its layout: the last dimension must be contiguous, and rows whose byte size is a multiple of
/// 16 must start on 16 bytes with outer strides that are multiples of 16 bytes (the kernels load
/// them 16 bytes at a time). On the CPU every layout is gathered anyway.
pub(crate) fn device_ready(t: &Tensor) -> Result<Tensor> {
    if !t.device().is_cuda() {
        return Ok(t.clone());
    }
    let l = t.layout();
    let dims = l.dims();
    let strides = l.stride();
    let size = t.dtype().size_in_bytes();
    let Some(&last) = dims.last() else { return Ok(t.clone()) };
    if dims.contains(&0) {
        return Ok(t.clone());
    }
    let mut ok = last <= 1 || strides[dims.len() - 1] == 1;
    if (last * size) % 16 == 0 {
        ok &= (l.start_offset() * size) % 16 == 0;
        ok &= dims[..dims.len() - 1].iter().zip(strides).all(|(&d, &s)| d <= 1 || (s * size) % 16 == 0);
    }
    if ok {
        Ok(t.clone())
    } else {
        t.force_contiguous()
    }
}

/// As [`device_ready`] for a tensor the kernels take packed only (row-major strides; an offset
/// is fine): a strided CUDA tensor is copied first.
pub(crate) fn device_packed(t: &Tensor) -> Result<Tensor> {
    if t.device().is_cuda() && !t.is_contiguous() {
        device_ready(&t.contiguous()?)
    } else {
        device_ready(t)
    }
}

pub(crate) fn device_packed_opt(t: Option<&Tensor>) -> Result<Option<Tensor>> {
    t.map(device_packed).transpose()
}
