//! Chunked tensor-core prefill of `linear_attention` (spec section 4), kernel
//! `kernels/linear/chunked.cu`.
//!
//! The sequence is cut into chunks of [`CHUNK`] tokens. Inside a chunk the output is an
//! attention-like product (scores `q_t . (exp(Gq_t - G_j) k_j)` times `v_j`) plus the
//! contribution of the state entering the chunk; the state is then carried to the next chunk
//! with one matrix product. `G` is the cumulative log decay inside the chunk, in f32; only
//! differences of `G` taken forward in time are exponentiated (factors <= 1 for `g <= 0`), with
//! a reference point per 16-token sub-chunk for the tensor-core products; diagonal 16x16
//! sub-blocks with a large decay range are evaluated per element in f32. Both forms (inclusive, and RWKV bonus `u`)
//! and every decay shape run through the same kernel (scalar decays are broadcast over keys).
//!
//! One thread block per (head, sequence) with `V / 16` warps walks the sequence chunk by chunk,
//! the state `[K, V]` in f32 registers. Diagonal sub-blocks whose decay range inside 16 tokens
//! is small (at most 4 for f16, 30 for bf16, max over keys) also run on tensor cores.
//!
//! Supported here: q/k/v in f16 or bf16, `K` and `V` in {64, 128}, at most 65535 sequences and
//! heads. Anything else is a typed error before any launch; the recurrent kernels cover it.
//!
//! Numerical scope (documented choices): per-step log decays below -88 are clamped to -88
//! (`exp(-88)` is under `FLT_MIN`, so this only matters for `g = -inf`, which becomes a decay
//! of about 1e-38 instead of exactly 0); growth (`g > 0`) is supported as long as the
//! cumulative growth inside one chunk stays below `exp(88)`. With f16 inputs the state is
//! rescaled by a power of two before it enters the f16 product, so large states do not
//! overflow; the scores `scale * q . k` must fit in f16 (|.| < 65504).

use super::{plan_linear, LinearArgs, LinearAttentionConfig, LinearPlan, RecurrentOutput};
use super::DecayShape;
use crate::error::{Error, Result};
use crate::runtime::params::AkChunkedParams;
use crate::runtime::kernel_list::linear::{self as list, CHUNKED_DIMS};
use crate::runtime::view::{opt_parts_ptr, parts_of, Layout::Packed};
use crate::runtime::{check_views, kernel, opt_ptr, DeviceRead, DeviceTensor, DeviceWrite, Gpu, Key};
use crate::tensor::{expect_dtype, expect_same_dtype, expect_shape, DType};

/// Tokens per chunk (the kernel list's `linear::CHUNK`).
pub const CHUNK: usize = list::CHUNK;

/// Dynamic shared memory of the kernel for key dim `k` and value dim `v` (one block holds all
/// `v` value columns; the kernel list's formula, checked against the kernel's `Layout` at build).
pub fn shared_bytes(k: usize, v: usize) -> usize {
    list::chunked_smem_bytes(k, v)
}

/// Whether the chunked kernel supports this (already validated) plan; `Err` names the argument.
pub fn check_supported(plan: &LinearPlan) -> Result<()> {
    if !matches!(plan.dtype, DType::F16 | DType::BF16) {
        return Err(Error::DType {
            arg: "q".into(),
            expected: "f16 or bf16 (chunked tensor-core kernel)".into(),
            got: plan.dtype,
        });
    }
    if !CHUNKED_DIMS.contains(&plan.key_dim) {
        return Err(Error::unsupported("q", format!("chunked kernel needs K in {CHUNKED_DIMS:?}, got K = {}", plan.key_dim)));
    }
    if !CHUNKED_DIMS.contains(&plan.value_dim) {
        return Err(Error::unsupported("v", format!("chunked kernel needs V in {CHUNKED_DIMS:?}, got V = {}", plan.value_dim)));
    }
    if plan.heads > 65535 {
        return Err(Error::unsupported("q", format!("chunked kernel supports at most 65535 heads, got {}", plan.heads)));
    }
    if plan.n_seqs > 65535 {
        let arg = if plan.varlen { "cu_seqlens" } else { "q" };
        return Err(Error::unsupported(arg, format!("chunked kernel supports at most 65535 sequences, got {}", plan.n_seqs)));
    }
    if plan.t > i32::MAX as usize || plan.rows() > i32::MAX as usize {
        return Err(Error::unsupported("q", format!("{} token rows exceed the int32 range of the kernel", plan.rows())));
    }
    Ok(())
}

/// Shortest longest-sequence for which `LinearMode::Auto` should prefer the chunked kernel (a
/// guess until measured: below a few chunks the recurrent kernel's single pass wins).
pub const AUTO_MIN_LEN: usize = 256;

/// Whether the automatic kernel choice should take the chunked kernel for this plan: supported
/// shape and dtype, and a longest sequence of at least [`AUTO_MIN_LEN`] tokens.
pub fn auto_picks_chunked(plan: &LinearPlan) -> bool {
    check_supported(plan).is_ok() && plan.seqs.iter().map(|s| s.1).max().unwrap_or(0) >= AUTO_MIN_LEN
}

/// `(row stride, head stride, key stride)` of `g` in elements, for the broadcast shapes.
fn decay_strides(decay: DecayShape, heads: usize, k: usize) -> (i64, i64, i32) {
    match decay {
        DecayShape::None => (0, 0, 0),
        DecayShape::PerTokenKey => ((heads * k) as i64, k as i64, 1),
        DecayShape::PerToken => (heads as i64, 1, 0),
        DecayShape::PerHeadKey => (0, k as i64, 1),
        DecayShape::PerHead => (0, 1, 0),
    }
}

/// `linear_attention` on the GPU with the chunked tensor-core kernel.
///
/// Validates with [`plan_linear`] and [`check_supported`] (f16/bf16, `K`, `V` in {64, 128})
/// before launching anything. Returns `o` (q's dtype, `[B, T, H, V]`) and the f32
/// `final_state` (`[N, H, K, V]`).
pub fn linear_attention_chunked_cuda<T: DeviceRead>(
    gpu: &Gpu,
    cfg: &LinearAttentionConfig,
    args: &LinearArgs<'_, T>,
) -> Result<RecurrentOutput<DeviceTensor>> {
    let plan = plan_linear(cfg, args)?;
    check_supported(&plan)?;
    let mut o = gpu.alloc_output(plan.dtype, &plan.o_shape())?;
    let mut final_state = gpu.alloc_output(DType::F32, &plan.state_shape())?;
    launch(gpu, &plan, args, &mut o, &mut final_state)?;
    Ok(RecurrentOutput { o, final_state })
}

/// As [`linear_attention_chunked_cuda`], writing into caller-owned outputs: `o` (q's dtype,
/// `[B, T, H, V]`) and `final_state` (f32, `[N, H, K, V]`). Every element of both is written.
/// Owned or borrowed tensors, all packed (as flash-linear-attention takes them).
pub fn linear_attention_chunked_cuda_into<T: DeviceRead, O: DeviceWrite>(
    gpu: &Gpu,
    cfg: &LinearAttentionConfig,
    args: &LinearArgs<'_, T>,
    o: &mut O,
    final_state: &mut O,
) -> Result<()> {
    let plan = plan_linear(cfg, args)?;
    check_supported(&plan)?;
    expect_same_dtype("o", o, "q", plan.dtype)?;
    expect_shape("o", o, &plan.o_shape())?;
    expect_dtype("final_state", final_state, &[DType::F32])?;
    expect_shape("final_state", final_state, &plan.state_shape())?;
    launch(gpu, &plan, args, o, final_state)
}

fn launch<T: DeviceRead, O: DeviceWrite>(
    gpu: &Gpu,
    plan: &LinearPlan,
    args: &LinearArgs<'_, T>,
    o: &mut O,
    final_state: &mut O,
) -> Result<()> {
    let (op, fp) = (o.parts(), final_state.parts());
    check_views(
        &[
            ("q", Some(args.q.parts()), Packed),
            ("k", Some(args.k.parts()), Packed),
            ("v", Some(args.v.parts()), Packed),
            ("g", parts_of(args.g), Packed),
            ("u", parts_of(args.u), Packed),
            ("initial_state", parts_of(args.initial_state), Packed),
        ],
        &[("o", Some(op), Packed), ("final_state", Some(fp), Packed)],
    )?;
    let dtype = plan.dtype.kernel_dt().ok_or_else(|| Error::unsupported("q", "no chunked kernel for i32"))?;
    let kernel = kernel("q", Key::LinearChunked { dtype, k: plan.key_dim, v: plan.value_dim })?;
    let smem = kernel.smem_bytes;
    let optin = gpu.info().max_shared_per_block_optin;
    if smem as i64 > optin as i64 {
        return Err(Error::unsupported(
            "q",
            format!(
                "chunked kernel needs {smem} bytes of shared memory for K = {}, V = {}, this GPU allows {optin}",
                plan.key_dim, plan.value_dim
            ),
        ));
    }
    let cu_dev = match args.cu_seqlens {
        Some(cu) => Some(gpu.upload_i32(cu)?),
        None => None,
    };
    let (g_row_stride, g_head_stride, g_key_stride) = decay_strides(plan.decay, plan.heads, plan.key_dim);
    let params = AkChunkedParams {
        q: args.q.parts().ptr(),
        k: args.k.parts().ptr(),
        v: args.v.parts().ptr(),
        g: opt_parts_ptr(args.g),
        u: opt_parts_ptr(args.u),
        initial_state: opt_parts_ptr(args.initial_state) as *const f32,
        o: op.ptr_mut(),
        final_state: fp.ptr_mut() as *mut f32,
        cu_seqlens: opt_ptr(cu_dev.as_ref()) as *const i32,
        g_row_stride,
        g_head_stride,
        g_key_stride,
        n_seqs: plan.n_seqs as i32,
        seqlen: plan.t as i32,
        heads: plan.heads as i32,
        key_dim: plan.key_dim as i32,
        value_dim: plan.value_dim as i32,
        dtype: plan.dtype.kernel_code(),
        g_dtype: args.g.map_or(DType::F32, |g| g.dtype()).kernel_code(),
        u_dtype: args.u.map_or(DType::F32, |u| u.dtype()).kernel_code(),
        scale: plan.scale,
    };
    // One block per (head, sequence) with V / 16 warps (warp w owns value columns 16w..16w+15).
    let grid = (1, plan.heads as u32, plan.n_seqs as u32);
    gpu.launch(kernel, grid, &params)?;
    // The device copy of cu_seqlens is freed stream-ordered (after the kernel) when dropped.
    drop(cu_dev);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_memory_fits_an_h100_and_an_a100() {
        // A100 and H100 opt-in limits: 163 KiB and 227 KiB per block.
        assert_eq!(shared_bytes(128, 128), 110_400);
        assert_eq!(shared_bytes(128, 64), 102_208);
        assert!(shared_bytes(64, 64) < shared_bytes(128, 64));
        assert!(shared_bytes(128, 128) <= 163 * 1024);
    }

    fn plan(dtype: DType, k: usize, v: usize) -> LinearPlan {
        LinearPlan {
            n_seqs: 2,
            varlen: false,
            t: 100,
            heads: 4,
            key_dim: k,
            value_dim: v,
            seqs: vec![(0, 100), (100, 100)],
            decay: DecayShape::None,
            has_bonus: false,
            scale: 1.0,
            dtype,
        }
    }

    #[test]
    fn unsupported_shapes_and_dtypes_are_typed_errors() {
        assert!(check_supported(&plan(DType::F16, 128, 64)).is_ok());
        assert!(check_supported(&plan(DType::BF16, 64, 128)).is_ok());
        match check_supported(&plan(DType::F32, 64, 64)) {
            Err(Error::DType { arg, .. }) => assert_eq!(arg, "q"),
            other => panic!("expected a dtype error, got {other:?}"),
        }
        let e = check_supported(&plan(DType::F16, 96, 64)).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }) && e.argument() == Some("q"));
        let e = check_supported(&plan(DType::F16, 64, 32)).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }) && e.argument() == Some("v"));
    }
}
