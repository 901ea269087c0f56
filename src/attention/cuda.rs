//! CUDA prefill path for attention: `kernels/attention/prefill.cu` (FlashAttention-2 style
//! forward on tensor cores, with ALiBi, softcap, masks, GQA, varlen and fused RoPE).
//!
//! [`attention_cuda`] allocates the outputs; [`attention_cuda_into`] writes into buffers the
//! caller owns. Both validate everything through [`plan`] and the device limits below before
//! anything is uploaded or launched.
//!
//! Device support: f16 and bf16 (f32 inputs are rejected with `Error::Unsupported` naming `q`),
//! head dims `D = Dv` in {64, 128, 256} and `Dv = 2 D` for `D` in {64, 128}; compute capability
//! 8.0 or newer. Shared memory per block: 54 to 132 KB (`D = 256`), so the larger head dims need
//! an A100 / H100 class GPU (consumer Ampere / Ada allow 99 KB and get `Error::Unsupported`).

use super::{plan, AttentionArgs, AttentionConfig, AttentionOutput, AttentionPlan};
use crate::error::{Error, Result};
use crate::runtime::kernel_list::attention::TILES;
use crate::runtime::params::AkAttnParams;
use crate::runtime::{find_kernel, DeviceTensor, Gpu, Kernel, Key};
use crate::tensor::{expect_dtype, expect_shape, DType, Tensor};

/// Kernel-side limit on `Sq + Sk` (the kernel indexes positions and masks in 32-bit ints).
const MAX_TOKENS: usize = 1 << 30;

/// The kernel (tile configuration) for a plan, or why the device path does not support it.
fn tile_config(p: &AttentionPlan) -> Result<&'static Kernel> {
    let dtype = match p.dtype {
        DType::F16 | DType::BF16 => p.dtype.kernel_dt(),
        other => {
            return Err(Error::unsupported(
                "q",
                format!("the CUDA attention kernel takes f16 or bf16, got {other} (use the CPU path for f32)"),
            ))
        }
    };
    dtype.and_then(|dtype| find_kernel(Key::AttnFwd { dtype, d: p.head_dim, dv: p.head_dim_v })).ok_or_else(|| {
        let (arg, what) = if TILES.iter().any(|t| t.d == p.head_dim) { ("v", "Dv") } else { ("q", "D") };
        let pairs: Vec<String> = TILES.iter().map(|t| format!("({}, {})", t.d, t.dv)).collect();
        Error::unsupported(
            arg,
            format!(
                "{what}: the CUDA attention kernel supports (D, Dv) in {{{}}}, got D = {}, Dv = {}",
                pairs.join(", "),
                p.head_dim,
                p.head_dim_v
            ),
        )
    })
}

/// Check everything the kernel needs beyond `plan`: dtype, head dims, device, index ranges.
fn check_device_support(gpu: &Gpu, p: &AttentionPlan) -> Result<&'static Kernel> {
    let tc = tile_config(p)?;
    let (major, minor) = gpu.info().compute_capability;
    if major < 8 {
        return Err(Error::unsupported(
            "device",
            format!("the CUDA attention kernel needs compute capability 8.0 or newer, this GPU is {major}.{minor}"),
        ));
    }
    if p.total_q.saturating_add(p.total_k) >= MAX_TOKENS {
        return Err(Error::unsupported(
            "q",
            format!("total_q + total_k = {} exceeds the kernel's limit of 2^30 tokens", p.total_q + p.total_k),
        ));
    }
    if p.heads_q > 65535 {
        return Err(Error::unsupported("q", format!("{} query heads exceed the grid limit of 65535", p.heads_q)));
    }
    if p.batch > 65535 {
        return Err(Error::unsupported("q", format!("{} sequences exceed the grid limit of 65535", p.batch)));
    }
    Ok(tc)
}

/// Validate a caller-provided output buffer.
fn check_out(arg: &str, t: &DeviceTensor, dtype: DType, shape: &[usize]) -> Result<()> {
    expect_dtype(arg, t, &[dtype])?;
    expect_shape(arg, t, shape)
}

fn upload_i32(gpu: &Gpu, data: &[i32]) -> Result<DeviceTensor> {
    gpu.upload(&Tensor::from_i32(&[data.len()], data)?)
}

/// Windows beyond `Sq + Sk` cannot exclude any key; clamp them so the kernel's ints stay small.
fn clamp_window(w: i64, limit: usize) -> i32 {
    if w < 0 {
        -1
    } else {
        w.min(limit as i64) as i32
    }
}

/// Run attention on the GPU into caller-owned outputs: `o` with the shape and dtype of
/// [`AttentionPlan::o_shape`] (q's dtype) and optionally `lse` (f32, [`AttentionPlan::lse_shape`]).
/// Everything is validated before any upload or launch.
pub fn attention_cuda_into(
    gpu: &Gpu,
    cfg: &AttentionConfig,
    args: &AttentionArgs<'_, DeviceTensor>,
    o: &mut DeviceTensor,
    lse: Option<&mut DeviceTensor>,
) -> Result<()> {
    let p = plan(cfg, args)?;
    let kernel = check_device_support(gpu, &p)?;
    check_out("o", o, p.dtype, &p.o_shape())?;
    if let Some(l) = lse.as_deref() {
        check_out("lse", l, DType::F32, &p.lse_shape())?;
    }
    launch(gpu, &p, kernel, args, o, lse)
}

/// Launch the kernel of plan `p` (made from `args`, outputs checked against it).
fn launch(
    gpu: &Gpu,
    p: &AttentionPlan,
    kernel: &Kernel,
    args: &AttentionArgs<'_, DeviceTensor>,
    o: &mut DeviceTensor,
    lse: Option<&mut DeviceTensor>,
) -> Result<()> {
    if p.total_q == 0 || p.batch == 0 {
        return Ok(()); // nothing to compute; outputs are empty
    }
    let table = match &p.rope {
        Some(r) => {
            let max_abs = p.max_position.max(p.min_position.unsigned_abs() as usize);
            Some(crate::rope::cuda::rope_table(gpu, r, max_abs)?)
        }
        None => None,
    };

    // Index data to the device (stream-ordered before the launch; freed stream-ordered after).
    let cu_q = args.cu_seqlens_q.filter(|_| p.varlen).map(|c| upload_i32(gpu, c)).transpose()?;
    let cu_k = args.cu_seqlens_k.filter(|_| p.varlen).map(|c| upload_i32(gpu, c)).transpose()?;
    let ids_q = args.position_ids_q.filter(|_| p.rope.is_some()).map(|c| upload_i32(gpu, c)).transpose()?;
    let ids_k = args.position_ids_k.filter(|_| p.rope.is_some()).map(|c| upload_i32(gpu, c)).transpose()?;
    let ptr_i32 = |t: &Option<DeviceTensor>| t.as_ref().map_or(std::ptr::null(), |t| t.kernel_ptr() as *const i32);

    let (hq, hk, d, dv) = (p.heads_q as i64, p.heads_kv as i64, p.head_dim as i64, p.head_dim_v as i64);
    let (sq, sk) = (p.max_q_len as i64, p.max_k_len as i64);
    // Dense rows are b * S + i; varlen rows are cu[b] + i with batch strides 0.
    let (bq, bk) = if p.varlen { (0, 0) } else { (sq, sk) };
    let (lse_b, lse_h) = if p.varlen { (0, p.total_q as i64) } else { (hq * sq, sq) };
    let lse_ptr = lse.map_or(std::ptr::null_mut(), |l| l.kernel_ptr_mut() as *mut f32);
    let window_limit = p.max_q_len + p.max_k_len;
    let params = AkAttnParams {
        q: args.q.kernel_ptr(),
        k: args.k.kernel_ptr(),
        v: args.v.kernel_ptr(),
        o: o.kernel_ptr_mut(),
        lse: lse_ptr,
        alibi_slopes: args.alibi_slopes.map_or(std::ptr::null(), |a| a.kernel_ptr() as *const f32),
        cu_seqlens_q: ptr_i32(&cu_q),
        cu_seqlens_k: ptr_i32(&cu_k),
        position_ids_q: ptr_i32(&ids_q),
        position_ids_k: ptr_i32(&ids_k),
        rope: table.as_ref().map_or_else(crate::rope::cuda::no_rope, |t| t.params()),
        q_batch_stride: bq * hq * d,
        q_row_stride: hq * d,
        q_head_stride: d,
        k_batch_stride: bk * hk * d,
        k_row_stride: hk * d,
        k_head_stride: d,
        v_batch_stride: bk * hk * dv,
        v_row_stride: hk * dv,
        v_head_stride: dv,
        o_batch_stride: bq * hq * dv,
        o_row_stride: hq * dv,
        o_head_stride: dv,
        lse_batch_stride: lse_b,
        lse_head_stride: lse_h,
        pos_q_batch_stride: bq,
        pos_k_batch_stride: bk,
        batch: p.batch as i32,
        seqlen_q: sq as i32,
        seqlen_k: sk as i32,
        heads_q: p.heads_q as i32,
        heads_kv: p.heads_kv as i32,
        head_dim: p.head_dim as i32,
        head_dim_v: p.head_dim_v as i32,
        scale: p.scale,
        softcap: p.softcap,
        causal: p.causal as i32,
        window_left: clamp_window(p.window_left, window_limit),
        window_right: clamp_window(p.window_right, window_limit),
        dtype: p.dtype.kernel_code(),
    };
    let grid = (p.max_q_len.div_ceil(kernel.rows as usize) as u32, p.heads_q as u32, p.batch as u32);
    gpu.launch(kernel, grid, &params)
}

/// Run attention on the GPU; allocates `o` (q's dtype) and `lse` (f32).
pub fn attention_cuda(
    gpu: &Gpu,
    cfg: &AttentionConfig,
    args: &AttentionArgs<'_, DeviceTensor>,
) -> Result<AttentionOutput<DeviceTensor>> {
    let p = plan(cfg, args)?;
    let kernel = check_device_support(gpu, &p)?;
    let mut o = gpu.alloc_output(p.dtype, &p.o_shape())?;
    let mut lse = gpu.alloc_output(DType::F32, &p.lse_shape())?;
    launch(gpu, &p, kernel, args, &mut o, Some(&mut lse))?;
    Ok(AttentionOutput { o, lse })
}

/// Host tensors in, host tensors out (uploads, runs, downloads): a convenience for tests and callers
/// with host data.
pub fn attention_cuda_host(
    gpu: &Gpu,
    cfg: &AttentionConfig,
    args: &AttentionArgs<'_, Tensor>,
) -> Result<AttentionOutput<Tensor>> {
    // Validate before any upload; the device copies have the planned shapes.
    let p = plan(cfg, args)?;
    let kernel = check_device_support(gpu, &p)?;
    let q = gpu.upload(args.q)?;
    let k = gpu.upload(args.k)?;
    let v = gpu.upload(args.v)?;
    let alibi = args.alibi_slopes.map(|a| gpu.upload(a)).transpose()?;
    let dargs = AttentionArgs {
        q: &q,
        k: &k,
        v: &v,
        alibi_slopes: alibi.as_ref(),
        cu_seqlens_q: args.cu_seqlens_q,
        cu_seqlens_k: args.cu_seqlens_k,
        position_ids_q: args.position_ids_q,
        position_ids_k: args.position_ids_k,
    };
    let mut o = gpu.alloc_output(p.dtype, &p.o_shape())?;
    let mut lse = gpu.alloc_output(DType::F32, &p.lse_shape())?;
    launch(gpu, &p, kernel, &dargs, &mut o, Some(&mut lse))?;
    Ok(AttentionOutput { o: gpu.download(&o)?, lse: gpu.download(&lse)? })
}

#[cfg(test)]
mod tests {
    use crate::runtime::{Key, KERNELS};

    #[test]
    fn every_tile_fits_the_opt_in_shared_memory() {
        // The generated entry points prove the table's values equal Cfg<..>'s in prefill.cu.
        let tiles: Vec<_> = KERNELS.iter().filter(|k| matches!(k.key, Key::AttnFwd { .. })).collect();
        assert_eq!(tiles.len(), 10);
        for k in tiles {
            assert!(k.smem_bytes <= 227 * 1024, "{k:?}");
            assert_eq!(k.rows, 128, "{k:?}");
        }
    }
}
