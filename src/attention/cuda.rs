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
use crate::runtime::params::AkAttnParams;
use crate::runtime::{DeviceTensor, Gpu};
use crate::tensor::{expect_dtype, expect_shape, DType, Tensor};

/// Kernel module (kernels/attention/prefill.cu).
const MODULE: &str = "attention_prefill";

/// One compiled tile configuration; mirrors the `Cfg<..>` aliases in prefill.cu.
#[derive(Clone, Copy, Debug)]
struct TileConfig {
    d: usize,
    dv: usize,
    /// 16-row m-tiles per warp.
    m_tiles: usize,
    warps: usize,
    /// Keys per tile.
    block_n: usize,
    f16: &'static str,
    bf16: &'static str,
}

impl TileConfig {
    fn block_m(&self) -> usize {
        16 * self.m_tiles * self.warps
    }
    fn threads(&self) -> u32 {
        (32 * self.warps) as u32
    }
    /// Dynamic shared memory: Q (reused for O) plus two stages of K and V, rows padded by 8.
    fn smem_bytes(&self) -> u32 {
        let qs = self.d.max(self.dv) + 8;
        let (ks, vs) = (self.d + 8, self.dv + 8);
        (2 * (self.block_m() * qs + 2 * self.block_n * ks + 2 * self.block_n * vs)) as u32
    }
}

const CONFIGS: &[TileConfig] = &[
    TileConfig {
        d: 64,
        dv: 64,
        m_tiles: 2,
        warps: 4,
        block_n: 64,
        f16: "ak_attn_fwd_f16_d64",
        bf16: "ak_attn_fwd_bf16_d64",
    },
    TileConfig {
        d: 128,
        dv: 128,
        m_tiles: 2,
        warps: 4,
        block_n: 32,
        f16: "ak_attn_fwd_f16_d128",
        bf16: "ak_attn_fwd_bf16_d128",
    },
    TileConfig {
        d: 256,
        dv: 256,
        m_tiles: 1,
        warps: 8,
        block_n: 32,
        f16: "ak_attn_fwd_f16_d256",
        bf16: "ak_attn_fwd_bf16_d256",
    },
    TileConfig {
        d: 64,
        dv: 128,
        m_tiles: 2,
        warps: 4,
        block_n: 32,
        f16: "ak_attn_fwd_f16_d64_dv128",
        bf16: "ak_attn_fwd_bf16_d64_dv128",
    },
    TileConfig {
        d: 128,
        dv: 256,
        m_tiles: 1,
        warps: 8,
        block_n: 32,
        f16: "ak_attn_fwd_f16_d128_dv256",
        bf16: "ak_attn_fwd_bf16_d128_dv256",
    },
];

/// Kernel-side limit on `Sq + Sk` (the kernel indexes positions and masks in 32-bit ints).
const MAX_TOKENS: usize = 1 << 30;

/// The tile configuration for a plan, or why the device path does not support it.
fn tile_config(p: &AttentionPlan) -> Result<&'static TileConfig> {
    match p.dtype {
        DType::F16 | DType::BF16 => {}
        other => {
            return Err(Error::unsupported(
                "q",
                format!("the CUDA attention kernel takes f16 or bf16, got {other} (use the CPU path for f32)"),
            ))
        }
    }
    CONFIGS.iter().find(|c| c.d == p.head_dim && c.dv == p.head_dim_v).ok_or_else(|| {
        let (arg, what) = if [64, 128, 256].contains(&p.head_dim) { ("v", "Dv") } else { ("q", "D") };
        Error::unsupported(
            arg,
            format!(
                "{what}: the CUDA attention kernel supports D = Dv in {{64, 128, 256}} and Dv = 2D for D in {{64, 128}}, \
                 got D = {}, Dv = {}",
                p.head_dim, p.head_dim_v
            ),
        )
    })
}

/// Check everything the kernel needs beyond `plan`: dtype, head dims, device, index ranges.
fn check_device_support(gpu: &Gpu, p: &AttentionPlan) -> Result<&'static TileConfig> {
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
    let tc = check_device_support(gpu, &p)?;
    check_out("o", o, p.dtype, &p.o_shape())?;
    if let Some(l) = lse.as_deref() {
        check_out("lse", l, DType::F32, &p.lse_shape())?;
    }
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
    let kernel = if p.dtype == DType::F16 { tc.f16 } else { tc.bf16 };
    let grid = (p.max_q_len.div_ceil(tc.block_m()) as u32, p.heads_q as u32, p.batch as u32);
    gpu.launch(MODULE, kernel, grid, (tc.threads(), 1, 1), tc.smem_bytes(), &params)
}

/// Run attention on the GPU; allocates `o` (q's dtype) and `lse` (f32).
pub fn attention_cuda(
    gpu: &Gpu,
    cfg: &AttentionConfig,
    args: &AttentionArgs<'_, DeviceTensor>,
) -> Result<AttentionOutput<DeviceTensor>> {
    let p = plan(cfg, args)?;
    check_device_support(gpu, &p)?;
    let mut o = gpu.alloc(p.dtype, &p.o_shape())?;
    let mut lse = gpu.alloc(DType::F32, &p.lse_shape())?;
    attention_cuda_into(gpu, cfg, args, &mut o, Some(&mut lse))?;
    Ok(AttentionOutput { o, lse })
}

/// Host tensors in, host tensors out (uploads, runs, downloads): a convenience for tests and callers
/// with host data.
pub fn attention_cuda_host(
    gpu: &Gpu,
    cfg: &AttentionConfig,
    args: &AttentionArgs<'_, Tensor>,
) -> Result<AttentionOutput<Tensor>> {
    plan(cfg, args)?; // validate before any upload
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
    let out = attention_cuda(gpu, cfg, &dargs)?;
    Ok(AttentionOutput { o: gpu.download(&out.o)?, lse: gpu.download(&out.lse)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smem_matches_kernel_configs() {
        // Values from the Cfg<..>::SMEM_BYTES formula in prefill.cu.
        let want = [55296u32, 69632, 135168, 61440, 118784];
        for (c, w) in CONFIGS.iter().zip(want) {
            assert_eq!(c.smem_bytes(), w, "{c:?}");
            assert!(c.smem_bytes() <= 227 * 1024);
            assert_eq!(c.block_m(), 128);
        }
    }
}
