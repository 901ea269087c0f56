//! CUDA path of differential attention: the fused prefill kernels (v1 and v2,
//! `kernels/diff_attention/prefill.cu`), fused v1 decode against contiguous and paged KV caches
//! (`kernels/diff_attention/decode.cu`; its CPU reference is [`super::diff_decode_cpu`]), and the
//! small subtract + RMSNorm kernel the unfused benchmark baselines use.
//!
//! # GPU support
//! f16 and bf16, per-map head dim `d` in {64, 128} (v1: V width 2d; v2: `D` in {64, 128}), every
//! option of the CPU path (GQA, causal, windows, softcap, ALiBi, fused RoPE, varlen, position
//! ids). Inputs are validated by [`plan_diff`] first; nothing is launched on invalid input.
//!
//! On compute capability 9.0 (an sm_90a build, or the emulated device presenting 9.0) the
//! prefill runs `kernels/diff_attention/prefill_sm90.cu` (wgmma, TMA and warp specialisation:
//! the two maps on two consumer warpgroups sharing each K/V stage; persistent, one block per SM
//! walking the 64-row block tiles) when the tensors' strides suit
//! TMA; otherwise, and below 9.0 or with `ATTN_KERNELS_ATTENTION_PATH=mma`, the mma.sync kernel.
//! [`DiffAttentionLaunch::kernel`] says which. The sm_90a kernel's speed is unmeasured until a
//! GPU is lent.
//!
//! # Decode (variant v1)
//! One new query token per sequence, `q [B, 1, 2H, d]`, against a cache of the decode family
//! ([`KvCacheRef`]) whose heads are `2d` wide: kv head `g` of `k_cache` holds `[k1 | k2]` (k heads
//! `2g` and `2g + 1` of a v1 prefill, adjacent), `v_cache` holds the `2d`-wide V:
//! contiguous `k, v [B, S_max, Hkv, 2d]` or paged `k, v [num_blocks, block_size, Hkv, 2d]`.
//! A v1 prefill's `k [B, S, 2Hkv, d]` is that layout reshaped to `[B, S, Hkv, 2d]`, so the
//! decode family's append (without RoPE) fills it. The query sits at `P = cache_seqlens[b] - 1`:
//! `causal` and `window_right` allow every cached key, `window_left` keeps `j >= P - window_left`.
//! RoPE is not fused in decode (rotate q and k before appending; the config's `rope` must be
//! absent). Outputs: `o [B, 1, H, 2d]`, `lse1`, `lse2 [B, H, 1]`. Splits: [`SplitPolicy`].
//!
//! # Rows with no allowed key
//! Both maps are empty, so `O = 0`; the RMSNorm of a zero row is 0 (as in the CPU path, also with
//! `eps = 0`), and `lse1 = lse2 = -inf`.

use super::cpu::DiffAttentionOutput;
use super::{
    plan_diff, plan_diff_decode, DiffAttentionArgs, DiffAttentionConfig, DiffAttentionPlan, DiffDecodeArgs, DiffDecodePlan,
    DiffVariant,
};
use crate::decode::cuda::DeviceKvIndex;
use crate::decode::{CacheLayout, SplitPolicy, MAX_SPLITS};
use crate::error::{Error, Result};
use crate::attention::cuda::{
    hopper_maps, hopper_takes, persistent_blocks, persistent_tiles, prefill_rope_table, qkv_layouts, rotate_once, HopperPath, Side,
};
use crate::rope::cuda::no_rope;
use crate::runtime::kernel_list::diff_attention::{self as list, DECODE_HEADS, DECODE_KEYS, HEAD_DIMS};
use crate::runtime::params::{AkAttnParams, AkDiffAttnParams, AkDiffDecodeParams, AkDiffEpilogueParams, AkDiffSm90Params};
use crate::runtime::view::{opt_parts_ptr, parts_of, Layout::{Packed, Strided}};
use crate::runtime::{check_views, kernel, opt_ptr, DeviceRead, DeviceTensor, DeviceWrite, Dt, Gpu, Kernel, Key, Ready};
use crate::tensor::{expect_dtype, expect_same_dtype, DType, PlannedTensors, Tensor, TensorInfo};

/// Kernel-side limit on `total_q + total_k` of the prefill (positions and windows are ints).
const MAX_TOKENS: usize = 1 << 30;

fn fits_i32(arg: &str, what: &str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::unsupported(arg, format!("{what} = {n} exceeds 2^31 - 1 on the GPU")))
}

/// The kernels' element type: f16 or bf16.
fn gpu_dtype(arg: &str, dtype: DType) -> Result<Dt> {
    match dtype {
        DType::F16 => Ok(Dt::F16),
        DType::BF16 => Ok(Dt::BF16),
        _ => Err(Error::unsupported(arg, format!("the GPU kernels take f16 or bf16, got {dtype} (use the CPU path)"))),
    }
}

/// The kernel list's number of a variant.
fn variant_code(variant: DiffVariant) -> u8 {
    match variant {
        DiffVariant::V1 => 1,
        DiffVariant::V2 => 2,
    }
}

/// A window (-1 = unlimited) clamped to `limit` keys, which it cannot exceed in effect, so it
/// fits the kernels' `int`.
fn clamp_window(w: i64, limit: usize) -> i32 {
    if w < 0 {
        -1
    } else {
        w.min(limit.min(i32::MAX as usize) as i64) as i32
    }
}

fn upload_i32(gpu: &Gpu, v: Option<&[i32]>) -> Result<Option<DeviceTensor>> {
    v.map(|v| gpu.upload_i32(v)).transpose()
}

/// Dynamic shared memory of one prefill block (f16 or bf16): Q1 and Q2 tiles plus two KV stages.
pub fn prefill_smem_bytes(variant: DiffVariant, d: usize) -> usize {
    list::prefill_smem_bytes(Dt::F16, variant_code(variant), d)
}

/// Diff heads per decode block for a kv group of `group` heads: the smallest instance of the
/// kernel list that holds the group (`_g1`, `_g2`, `_g4`, `_g8`), else the largest (larger
/// groups run in chunks of 8).
pub fn decode_heads_per_block(group: usize) -> usize {
    DECODE_HEADS.iter().copied().find(|&g| g >= group).unwrap_or(DECODE_HEADS[DECODE_HEADS.len() - 1])
}

/// Dynamic shared memory of one decode split block (f16 or bf16, `gm` heads per block).
pub fn decode_smem_bytes(d: usize, gm: usize) -> usize {
    list::decode_smem_bytes(Dt::F16, d, gm)
}

/// GPU-only restrictions, checked after [`plan_diff`].
fn check_gpu_prefill(dp: &DiffAttentionPlan) -> Result<()> {
    let p = &dp.attn;
    gpu_dtype("q", p.dtype)?;
    if !HEAD_DIMS.contains(&p.head_dim) {
        return Err(Error::unsupported(
            "q",
            format!("GPU diff_attention needs head dim d in {HEAD_DIMS:?}, got {}", p.head_dim),
        ));
    }
    fits_i32("q", "total query rows", p.total_q)?;
    fits_i32("k", "total key rows", p.total_k)?;
    // The kernel adds positions P(i) = i + Sk - Sq and windows (clamped to Sq + Sk) in ints:
    // below 2^30 tokens in all, every such sum stays inside 2^31 (as the attention kernel).
    if p.total_q.saturating_add(p.total_k) >= MAX_TOKENS {
        return Err(Error::unsupported(
            "q",
            format!("total_q + total_k = {} exceeds the kernel's limit of 2^30 tokens", p.total_q + p.total_k),
        ));
    }
    fits_i32("q", "query rows per sequence", p.max_q_len)?;
    fits_i32("k", "keys per sequence", p.max_k_len)?;
    if p.max_position > (1usize << 30) {
        return Err(Error::unsupported("position_ids_q", "RoPE positions beyond 2^30 on the GPU"));
    }
    Ok(())
}

/// A RoPE pre-pass ([`rotate_once`]) over the q (`Side::Queries`) or k rows of `params`: runs
/// it on an attention view of them and points `params` at the rotated copy it returns.
fn rotate(gpu: &Gpu, kernel: &'static Kernel, params: &mut AkDiffAttnParams, p: &crate::attention::AttentionPlan, side: Side) -> Result<Option<DeviceTensor>> {
    let mut a = AkAttnParams {
        q: params.q,
        k: params.k,
        q_batch_stride: params.q_batch_stride,
        q_row_stride: params.q_row_stride,
        q_head_stride: params.q_head_stride,
        k_batch_stride: params.k_batch_stride,
        k_row_stride: params.k_row_stride,
        k_head_stride: params.k_head_stride,
        cu_seqlens_q: params.cu_seqlens_q,
        cu_seqlens_k: params.cu_seqlens_k,
        position_ids_q: params.position_ids_q,
        position_ids_k: params.position_ids_k,
        pos_q_batch_stride: params.pos_q_batch_stride,
        pos_k_batch_stride: params.pos_k_batch_stride,
        rope: params.rope,
        batch: params.batch,
        seqlen_q: params.seqlen_q,
        seqlen_k: params.seqlen_k,
        dtype: params.dtype,
        ..Default::default()
    };
    let scratch = rotate_once(gpu, kernel, &mut a, p, side)?;
    (params.q, params.q_batch_stride, params.q_row_stride, params.q_head_stride) = (a.q, a.q_batch_stride, a.q_row_stride, a.q_head_stride);
    (params.k, params.k_batch_stride, params.k_row_stride, params.k_head_stride) = (a.k, a.k_batch_stride, a.k_row_stride, a.k_head_stride);
    Ok(scratch)
}

/// The device tensors of one fused prefill launch (index data belongs to the plan), owned or
/// borrowed.
pub struct DiffTensors<'a, T = DeviceTensor> {
    pub q: &'a T,
    pub k: &'a T,
    pub v: &'a T,
    /// f32, `[H]` (v1) or per token (v2), as planned.
    pub lambda: &'a T,
    pub norm_weight: Option<&'a T>,
    pub alibi_slopes: Option<&'a T>,
}

impl<T> Clone for DiffTensors<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for DiffTensors<'_, T> {}

impl<'a, T: TensorInfo> DiffTensors<'a, T> {
    /// The tensors of `args` (its index data is the plan's business).
    pub fn of(args: &DiffAttentionArgs<'a, T>) -> DiffTensors<'a, T> {
        DiffTensors { q: args.q, k: args.k, v: args.v, lambda: args.lambda, norm_weight: args.norm_weight, alibi_slopes: args.alibi_slopes }
    }
}

/// Fused differential attention planned once for one batch and launched per layer, as
/// [`crate::attention::cuda::AttentionLaunch`]: [`DiffAttentionLaunch::new`] validates and
/// uploads the index data and the RoPE table; [`DiffAttentionLaunch::launch`] checks that the
/// tensors have the planned dtypes and shapes and enqueues the kernel.
pub struct DiffAttentionLaunch {
    plan: DiffAttentionPlan,
    kernel: &'static Kernel,
    /// Fused RoPE's key pre-pass (the attention family's `rope_keys`) when the plan rotates.
    rope_keys: Option<&'static Kernel>,
    /// The sm_90a kernel (`kernels/diff_attention/prefill_sm90.cu`) on compute capability 9.0
    /// (per launch, the tensors' strides must suit TMA too; otherwise `kernel` runs).
    hopper: Option<HopperPath>,
    /// q, k, v, lambda, norm_weight, alibi_slopes as planned.
    planned: PlannedTensors,
    table: Option<std::sync::Arc<crate::rope::cuda::DeviceRopeTable>>,
    cu_q: Option<DeviceTensor>,
    cu_k: Option<DeviceTensor>,
    pos_q: Option<DeviceTensor>,
    pos_k: Option<DeviceTensor>,
    uploaded: Ready,
}

const DIFF_ARGS: [&str; 6] = ["q", "k", "v", "lambda", "norm_weight", "alibi_slopes"];

impl DiffAttentionLaunch {
    /// Validate `args` against `cfg` and this device and upload the index data (tensors are read
    /// for their shapes and dtypes only).
    pub fn new<T: TensorInfo>(gpu: &Gpu, cfg: &DiffAttentionConfig, args: &DiffAttentionArgs<'_, T>) -> Result<DiffAttentionLaunch> {
        let dp = plan_diff(cfg, args)?;
        check_gpu_prefill(&dp)?;
        let p = &dp.attn;
        let kernel = kernel("q", Key::DiffPrefill { variant: variant_code(dp.variant), dtype: gpu_dtype("q", p.dtype)?, d: p.head_dim })?;
        let table = prefill_rope_table(gpu, p)?;
        let rope_keys = match table {
            Some(_) => Some(crate::runtime::kernel("k", Key::AttnRopeKeys { dtype: gpu_dtype("q", p.dtype)?, d: p.head_dim })?),
            None => None,
        };
        // The persistent sm_90a kernel numbers its block tiles with an int.
        let hopper = match p.dtype.kernel_dt().filter(|_| persistent_tiles(p, list::SM90_ROWS, dp.heads).is_some()) {
            Some(dtype) => {
                let key = Key::DiffPrefillSm90 {
                    variant: variant_code(dp.variant),
                    dtype,
                    d: p.head_dim,
                    alibi: p.has_alibi,
                    softcap: p.softcap > 0.0,
                };
                HopperPath::of(gpu, p, key)
            }
            None => None,
        };
        Ok(DiffAttentionLaunch {
            hopper,
            rope_keys,
            planned: PlannedTensors::of(
                &DIFF_ARGS,
                &[Some(args.q), Some(args.k), Some(args.v), Some(args.lambda), args.norm_weight, args.alibi_slopes],
            ),
            kernel,
            table,
            cu_q: upload_i32(gpu, args.cu_seqlens_q)?,
            cu_k: upload_i32(gpu, args.cu_seqlens_k)?,
            pos_q: upload_i32(gpu, args.position_ids_q)?,
            pos_k: upload_i32(gpu, args.position_ids_k)?,
            uploaded: Ready::now(gpu)?,
            plan: dp,
        })
    }

    /// The validated plan (output shapes, resolved options).
    pub fn plan(&self) -> &DiffAttentionPlan {
        &self.plan
    }

    /// Run on `gpu`'s stream with the planned tensors into `out` (`o` in q's dtype with
    /// [`DiffAttentionPlan::o_shape`], `lse1`, `lse2` f32 with [`DiffAttentionPlan::lse_shape`]).
    /// Owned or borrowed tensors: q, k, v and o with any batch, row and head strides (16-byte
    /// aligned rows), the others packed.
    pub fn launch<T: DeviceRead, O: DeviceWrite>(&self, gpu: &Gpu, x: DiffTensors<'_, T>, out: &mut DiffAttentionOutput<O>) -> Result<()> {
        self.planned.check(&[Some(x.q), Some(x.k), Some(x.v), Some(x.lambda), x.norm_weight, x.alibi_slopes])?;
        let dp = &self.plan;
        check_outputs(out, dp.attn.dtype, &dp.o_shape(), &dp.lse_shape())?;
        let (qp, kp, vp, op) = (x.q.parts(), x.k.parts(), x.v.parts(), out.o.parts());
        check_views(
            &[
                ("q", Some(qp), Strided),
                ("k", Some(kp), Strided),
                ("v", Some(vp), Strided),
                ("lambda", Some(x.lambda.parts()), Packed),
                ("norm_weight", parts_of(x.norm_weight), Packed),
                ("alibi_slopes", parts_of(x.alibi_slopes), Packed),
            ],
            &[("o", Some(op), Strided), ("lse1", Some(out.lse1.parts()), Packed), ("lse2", Some(out.lse2.parts()), Packed)],
        )?;
        self.uploaded.wait_on(gpu, "DiffAttentionLaunch")?;
        let (table, cu_q, cu_k, pos_q, pos_k) = (&self.table, &self.cu_q, &self.cu_k, &self.pos_q, &self.pos_k);
        let p = &dp.attn;
        let (d, heads, groups) = (p.head_dim, dp.heads, dp.kv_groups);
        let (sq, sk) = (p.max_q_len, p.max_k_len);
        let ll = |n: usize| n as i64;
        let blse = if p.varlen { 0 } else { ll(heads * sq) };
        let [qs, ks, vs, os] = [&qp, &kp, &vp, &op].map(|t| t.seq_strides(p.varlen));
        let lse_head = if p.varlen { ll(p.total_q) } else { ll(sq) };
        let (lam_b, lam_r) = match (dp.variant, p.varlen) {
            (DiffVariant::V1, _) => (0, 0),
            (DiffVariant::V2, true) => (0, ll(heads)),
            (DiffVariant::V2, false) => (ll(sq * heads), ll(heads)),
        };
        let mut params = AkDiffAttnParams {
            q: qp.ptr(),
            k: kp.ptr(),
            v: vp.ptr(),
            o: op.ptr_mut(),
            lse1: out.lse1.parts().ptr_mut() as *mut f32,
            lse2: out.lse2.parts().ptr_mut() as *mut f32,
            lambda: x.lambda.parts().ptr() as *const f32,
            norm_weight: opt_parts_ptr(x.norm_weight),
            alibi_slopes: opt_parts_ptr(x.alibi_slopes) as *const f32,
            cu_seqlens_q: opt_ptr(cu_q.as_ref()) as *const i32,
            cu_seqlens_k: opt_ptr(cu_k.as_ref()) as *const i32,
            position_ids_q: opt_ptr(pos_q.as_ref()) as *const i32,
            position_ids_k: opt_ptr(pos_k.as_ref()) as *const i32,
            rope: table.as_ref().map_or_else(no_rope, |t| t.params()),
            q_batch_stride: qs.0,
            q_row_stride: qs.1,
            q_head_stride: qs.2,
            k_batch_stride: ks.0,
            k_row_stride: ks.1,
            k_head_stride: ks.2,
            v_batch_stride: vs.0,
            v_row_stride: vs.1,
            v_head_stride: vs.2,
            o_batch_stride: os.0,
            o_row_stride: os.1,
            o_head_stride: os.2,
            lse_batch_stride: blse,
            lse_head_stride: lse_head,
            lambda_batch_stride: lam_b,
            lambda_row_stride: lam_r,
            pos_q_batch_stride: if p.varlen { 0 } else { ll(sq) },
            pos_k_batch_stride: if p.varlen { 0 } else { ll(sk) },
            batch: fits_i32("q", "batch", p.batch)?,
            heads: heads as i32,
            kv_groups: (heads / groups) as i32,
            seqlen_q: sq as i32,
            seqlen_k: sk as i32,
            head_dim: d as i32,
            scale: p.scale,
            softcap: p.softcap,
            norm_factor: dp.norm_scale,
            eps: dp.eps,
            causal: p.causal as i32,
            window_left: clamp_window(p.window_left, sq + sk),
            window_right: clamp_window(p.window_right, sq + sk),
            dtype: p.dtype.kernel_code(),
            norm_weight_dtype: x.norm_weight.map_or(DType::F32, |w| w.dtype()).kernel_code(),
        };
        if sq == 0 || heads == 0 || p.batch == 0 {
            return Ok(());
        }
        let strides = |a: &AkDiffAttnParams| {
            [
                (a.q_batch_stride, a.q_row_stride, a.q_head_stride),
                (a.k_batch_stride, a.k_row_stride, a.k_head_stride),
                (a.v_batch_stride, a.v_row_stride, a.v_head_stride),
            ]
        };
        let hopper = self.hopper.filter(|_| hopper_takes(p, &qkv_layouts(p, groups, strides(&params))));
        // Fused RoPE: the prefill reads K rotated once by the pre-pass (kernels/diff_attention/
        // prefill.cu rotates its Q tiles itself; the sm_90a kernel reads Q rotated once too).
        let _rotated_k = match self.rope_keys {
            Some(rk) => rotate(gpu, rk, &mut params, p, Side::Keys)?,
            None => None,
        };
        if let Some(h) = hopper {
            let _rotated_q = match h.rope_queries {
                Some(rq) => rotate(gpu, rq, &mut params, p, Side::Queries)?,
                None => None,
            };
            let layouts = qkv_layouts(p, groups, strides(&params));
            let [tmap_q, tmap_k, tmap_v] = hopper_maps(p, layouts, [params.q, params.k, params.v], h.kernel.rows, h.kernel.keys)?;
            let query_blocks = sq.div_ceil(h.kernel.rows as usize);
            let grid = (persistent_blocks(gpu, query_blocks * heads * p.batch), 1, 1);
            let query_blocks = query_blocks as i32;
            return gpu.launch(h.kernel, grid, &AkDiffSm90Params { tmap_q, tmap_k, tmap_v, diff: params, query_blocks });
        }
        let grid = (sq.div_ceil(self.kernel.rows as usize) as u32, heads as u32, p.batch as u32);
        gpu.launch(self.kernel, grid, &params)
    }

    /// The prefill kernel [`DiffAttentionLaunch::launch`] runs for tensors with TMA-compatible
    /// strides (the sm_90a kernel on compute capability 9.0, else the mma.sync one).
    pub fn kernel(&self) -> &'static Kernel {
        self.hopper.map_or(self.kernel, |h| h.kernel)
    }

    /// Allocate the outputs and launch.
    pub fn launch_alloc<T: DeviceRead>(&self, gpu: &Gpu, x: DiffTensors<'_, T>) -> Result<DiffAttentionOutput<DeviceTensor>> {
        let dp = &self.plan;
        let mut out = DiffAttentionOutput {
            o: gpu.alloc_output(dp.attn.dtype, &dp.o_shape())?,
            lse1: gpu.alloc_output(DType::F32, &dp.lse_shape())?,
            lse2: gpu.alloc_output(DType::F32, &dp.lse_shape())?,
        };
        self.launch(gpu, x, &mut out)?;
        Ok(out)
    }
}

/// Fused differential attention on the GPU (v1 and v2; one [`DiffAttentionLaunch`]). Outputs
/// `o` (q's dtype) and `lse1`, `lse2` (f32) in the shapes of [`DiffAttentionPlan::o_shape`] /
/// [`DiffAttentionPlan::lse_shape`].
pub fn diff_attention_cuda<T: DeviceRead>(
    gpu: &Gpu,
    cfg: &DiffAttentionConfig,
    args: &DiffAttentionArgs<'_, T>,
) -> Result<DiffAttentionOutput<DeviceTensor>> {
    DiffAttentionLaunch::new(gpu, cfg, args)?.launch_alloc(gpu, DiffTensors::of(args))
}

/// [`diff_attention_cuda`] into caller-provided outputs (checked for dtype and shape).
pub fn diff_attention_cuda_into<T: DeviceRead, O: DeviceWrite>(
    gpu: &Gpu,
    cfg: &DiffAttentionConfig,
    args: &DiffAttentionArgs<'_, T>,
    out: &mut DiffAttentionOutput<O>,
) -> Result<()> {
    DiffAttentionLaunch::new(gpu, cfg, args)?.launch(gpu, DiffTensors::of(args), out)
}

/// Host tensors in, host tensors out (validate, upload, run, download): the `--device cuda`
/// path of `attn-kernels run` for `diff_attention`, and a convenience for tests.
pub fn diff_attention_cuda_host(
    gpu: &Gpu,
    cfg: &DiffAttentionConfig,
    args: &DiffAttentionArgs<'_, Tensor>,
) -> Result<DiffAttentionOutput<Tensor>> {
    // Validate before any upload; the device copies have the planned shapes.
    let launch = DiffAttentionLaunch::new(gpu, cfg, args)?;
    let up = |t: &Tensor| gpu.upload(t);
    let (q, k, v, lambda) = (up(args.q)?, up(args.k)?, up(args.v)?, up(args.lambda)?);
    let norm = args.norm_weight.map(up).transpose()?;
    let alibi = args.alibi_slopes.map(up).transpose()?;
    let x = DiffTensors { q: &q, k: &k, v: &v, lambda: &lambda, norm_weight: norm.as_ref(), alibi_slopes: alibi.as_ref() };
    let out = launch.launch_alloc(gpu, x)?;
    Ok(DiffAttentionOutput { o: gpu.download(&out.o)?, lse1: gpu.download(&out.lse1)?, lse2: gpu.download(&out.lse2)? })
}

// ------------------------------------------------------------------------------- decode

/// The number of KV splits a decode with this plan uses on `gpu`.
pub fn diff_decode_splits(gpu: &Gpu, p: &DiffDecodePlan, split: SplitPolicy) -> usize {
    let tiles = p.max_seqlen().div_ceil(DECODE_KEYS).max(1);
    let n = match split {
        SplitPolicy::Fixed(n) => n,
        SplitPolicy::Auto => {
            // About four blocks per SM, never a split shorter than four key tiles.
            let group = p.heads / p.heads_kv.max(1);
            let blocks = (p.batch * p.heads_kv * group.div_ceil(decode_heads_per_block(group))).max(1);
            let target = 4 * gpu.info().multiprocessors.max(1) as usize;
            target.div_ceil(blocks).min(tiles.div_ceil(4)).max(1)
        }
    };
    n.clamp(1, tiles)
}

fn check_gpu_decode(p: &DiffDecodePlan, split: SplitPolicy) -> Result<()> {
    gpu_dtype("q", p.dtype)?;
    if !HEAD_DIMS.contains(&p.head_dim) {
        return Err(Error::unsupported("q", format!("GPU diff decode needs d in {HEAD_DIMS:?}, got {}", p.head_dim)));
    }
    if let CacheLayout::Paged { block_size, .. } = p.layout {
        fits_i32("k_cache", "block_size", block_size)?;
    }
    if let SplitPolicy::Fixed(n) = split {
        if n == 0 || n > MAX_SPLITS {
            return Err(Error::invalid("split", format!("Fixed(n) needs 1 <= n <= {MAX_SPLITS}, got {n}")));
        }
    }
    fits_i32("q", "B * H", p.batch * p.heads)?;
    Ok(())
}

/// Fused differential decode planned once per step and launched per layer, as
/// [`crate::decode::cuda::DecodeLaunch`]: [`DiffDecodeLaunch::new`] validates, uploads the
/// cache index, picks kernels and split count and allocates the split workspace;
/// [`DiffDecodeLaunch::launch`] checks the layer's tensors against the plan (and the cache's
/// host index against the uploaded one) and enqueues the two kernels, allocating nothing.
/// Launches of one `DiffDecodeLaunch` share its workspace: order them.
pub struct DiffDecodeLaunch {
    plan: DiffDecodePlan,
    /// q, k_cache, v_cache, lambda, norm_weight, alibi_slopes as planned.
    planned: PlannedTensors,
    index: Option<DeviceKvIndex>,
    /// The index is the caller's: wait for its own upload (ours is covered by `uploaded`).
    callers_index: bool,
    split_kernel: &'static Kernel,
    combine_kernel: &'static Kernel,
    grid_y: u32,
    splits: usize,
    workspace: (DeviceTensor, DeviceTensor),
    uploaded: Ready,
}

const DIFF_DECODE_ARGS: [&str; 6] = ["q", "k_cache", "v_cache", "lambda", "norm_weight", "alibi_slopes"];

impl DiffDecodeLaunch {
    /// Validate a decode step and prepare it (tensors read for their shapes and dtypes only).
    pub fn new<T: TensorInfo>(gpu: &Gpu, cfg: &DiffAttentionConfig, args: &DiffDecodeArgs<'_, T>, split: SplitPolicy) -> Result<DiffDecodeLaunch> {
        let p = plan_diff_decode(cfg, args)?;
        check_gpu_decode(&p, split)?;
        let index = DeviceKvIndex::new(gpu, &args.cache)?;
        Self::prepare(gpu, p, args, Some(index), split)
    }

    fn prepare<T: TensorInfo>(
        gpu: &Gpu,
        p: DiffDecodePlan,
        args: &DiffDecodeArgs<'_, T>,
        index: Option<DeviceKvIndex>,
        split: SplitPolicy,
    ) -> Result<DiffDecodeLaunch> {
        let (d, h) = (p.head_dim, p.heads);
        let splits = diff_decode_splits(gpu, &p, split);
        let group = h / p.heads_kv.max(1);
        let gm = decode_heads_per_block(group);
        let dtype = gpu_dtype("q", p.dtype)?;
        Ok(DiffDecodeLaunch {
            planned: PlannedTensors::of(
                &DIFF_DECODE_ARGS,
                &[Some(args.q), Some(args.cache.k()), Some(args.cache.v()), Some(args.lambda), args.norm_weight, args.alibi_slopes],
            ),
            callers_index: index.is_none(),
            index,
            split_kernel: kernel("q", Key::DiffDecodeSplit { dtype, d, heads: gm })?,
            combine_kernel: kernel("q", Key::DiffDecodeCombine { dtype, d })?,
            grid_y: (p.heads_kv * group.div_ceil(gm)) as u32,
            splits,
            workspace: (
                gpu.alloc_output(DType::F32, &[p.batch, h, splits, 2, 2 * d])?,
                gpu.alloc_output(DType::F32, &[p.batch, h, splits, 2])?,
            ),
            uploaded: Ready::now(gpu)?,
            plan: p,
        })
    }

    /// The validated plan.
    pub fn plan(&self) -> &DiffDecodePlan {
        &self.plan
    }

    /// Run on `gpu`'s stream with the layer's tensors (the cache's lengths and block table must
    /// be the planned ones) into `out` (`o [B, 1, H, 2d]`, `lse1`, `lse2` f32 `[B, H, 1]`).
    /// Owned or borrowed tensors: q and o with any batch and head strides, the cache with any
    /// block, row and head strides (16-byte aligned rows), the others packed.
    pub fn launch<T: DeviceRead, O: DeviceWrite>(&mut self, gpu: &Gpu, args: &DiffDecodeArgs<'_, T>, out: &mut DiffAttentionOutput<O>) -> Result<()> {
        let index = self.index.take().ok_or_else(|| Error::invalid("index", "this DiffDecodeLaunch has no index data"))?;
        let r = self.enqueue(gpu, args, &index, out);
        self.index = Some(index);
        r
    }

    fn enqueue<T: DeviceRead, O: DeviceWrite>(
        &mut self,
        gpu: &Gpu,
        args: &DiffDecodeArgs<'_, T>,
        index: &DeviceKvIndex,
        out: &mut DiffAttentionOutput<O>,
    ) -> Result<()> {
        self.planned.check(&[Some(args.q), Some(args.cache.k()), Some(args.cache.v()), Some(args.lambda), args.norm_weight, args.alibi_slopes])?;
        let p = &self.plan;
        check_outputs(out, p.dtype, &p.o_shape(), &p.lse_shape())?;
        let (qp, kp, vp, op) = (args.q.parts(), args.cache.k().parts(), args.cache.v().parts(), out.o.parts());
        check_views(
            &[
                ("q", Some(qp), Strided),
                ("k_cache", Some(kp), Strided),
                ("v_cache", Some(vp), Strided),
                ("lambda", Some(args.lambda.parts()), Packed),
                ("norm_weight", parts_of(args.norm_weight), Packed),
                ("alibi_slopes", parts_of(args.alibi_slopes), Packed),
            ],
            &[("o", Some(op), Strided), ("lse1", Some(out.lse1.parts()), Packed), ("lse2", Some(out.lse2.parts()), Packed)],
        )?;
        self.uploaded.wait_on(gpu, "DiffDecodeLaunch")?;
        if self.callers_index {
            index.wait_on(gpu)?;
        }
        if p.batch == 0 || p.heads == 0 {
            return Ok(());
        }
        let (d, h, hkv) = (p.head_dim, p.heads, p.heads_kv);
        let splits = self.splits;
        let keys_per_split = p.max_seqlen().div_ceil(splits).div_ceil(DECODE_KEYS).max(1) * DECODE_KEYS;
        let (part_o, part_lse) = &mut self.workspace;
        let ll = |n: usize| n as i64;
        let (block_size, max_blocks) = match p.layout {
            CacheLayout::Contiguous { .. } => (1, 0),
            CacheLayout::Paged { block_size, max_blocks, .. } => (block_size, max_blocks),
        };
        let params = AkDiffDecodeParams {
            q: qp.ptr(),
            k_cache: kp.ptr(),
            v_cache: vp.ptr(),
            cache_seqlens: index.seqlens.kernel_ptr() as *const i32,
            block_table: opt_ptr(index.block_table.as_ref()) as *const i32,
            part_o: part_o.kernel_ptr_mut() as *mut f32,
            part_lse: part_lse.kernel_ptr_mut() as *mut f32,
            o: op.ptr_mut(),
            lse1: out.lse1.parts().ptr_mut() as *mut f32,
            lse2: out.lse2.parts().ptr_mut() as *mut f32,
            lambda: args.lambda.parts().ptr() as *const f32,
            norm_weight: opt_parts_ptr(args.norm_weight),
            alibi_slopes: opt_parts_ptr(args.alibi_slopes) as *const f32,
            // q [B, 1, 2H, d], o [B, 1, H, 2d]; the cache [B or blocks, rows, Hkv, 2d].
            q_batch_stride: qp.stride(0),
            q_head_stride: qp.stride(2),
            k_batch_stride: kp.stride(0),
            k_row_stride: kp.stride(1),
            k_head_stride: kp.stride(2),
            v_batch_stride: vp.stride(0),
            v_row_stride: vp.stride(1),
            v_head_stride: vp.stride(2),
            block_table_stride: ll(max_blocks),
            o_batch_stride: op.stride(0),
            o_head_stride: op.stride(2),
            batch: p.batch as i32,
            heads: h as i32,
            kv_groups: (h / hkv) as i32,
            head_dim: d as i32,
            block_size: block_size as i32,
            num_splits: splits as i32,
            keys_per_split: fits_i32("k_cache", "keys per split", keys_per_split)?,
            scale: p.scale,
            softcap: p.softcap,
            norm_factor: p.norm_scale,
            eps: p.eps,
            window_left: clamp_window(p.window_left, p.max_seqlen()),
            dtype: p.dtype.kernel_code(),
            norm_weight_dtype: args.norm_weight.map_or(DType::F32, |w| w.dtype()).kernel_code(),
        };
        gpu.launch(self.split_kernel, (splits as u32, self.grid_y, p.batch as u32), &params)?;
        gpu.launch(self.combine_kernel, (h as u32, p.batch as u32, 1), &params)
    }
}

/// Fused v1 decode on the GPU (one [`DiffDecodeLaunch`]): `o [B, 1, H, 2d]` in q's dtype,
/// `lse1`, `lse2` f32 `[B, H, 1]`.
pub fn diff_decode_cuda<T: DeviceRead>(
    gpu: &Gpu,
    cfg: &DiffAttentionConfig,
    args: &DiffDecodeArgs<'_, T>,
    split: SplitPolicy,
) -> Result<DiffAttentionOutput<DeviceTensor>> {
    let mut launch = DiffDecodeLaunch::new(gpu, cfg, args, split)?;
    let p = launch.plan();
    let mut out = DiffAttentionOutput {
        o: gpu.alloc_output(p.dtype, &p.o_shape())?,
        lse1: gpu.alloc_output(DType::F32, &p.lse_shape())?,
        lse2: gpu.alloc_output(DType::F32, &p.lse_shape())?,
    };
    launch.launch(gpu, args, &mut out)?;
    Ok(out)
}

/// [`diff_decode_cuda`] into caller-provided outputs, with index data uploaded beforehand.
pub fn diff_decode_cuda_into<T: DeviceRead, O: DeviceWrite>(
    gpu: &Gpu,
    cfg: &DiffAttentionConfig,
    args: &DiffDecodeArgs<'_, T>,
    index: &DeviceKvIndex,
    split: SplitPolicy,
    out: &mut DiffAttentionOutput<O>,
) -> Result<()> {
    let p = plan_diff_decode(cfg, args)?;
    check_gpu_decode(&p, split)?;
    DiffDecodeLaunch::prepare(gpu, p, args, None, split)?.enqueue(gpu, args, index, out)
}

/// Every kernel key this file can launch (for the build-manifest test).
pub fn launched_kernels() -> Vec<Key> {
    let mut v = Vec::new();
    for dtype in [Dt::F16, Dt::BF16] {
        for d in HEAD_DIMS {
            for variant in [DiffVariant::V1, DiffVariant::V2] {
                let variant = variant_code(variant);
                v.push(Key::DiffPrefill { variant, dtype, d });
                for (alibi, softcap) in crate::runtime::kernel_list::attention::VARIANTS {
                    v.push(Key::DiffPrefillSm90 { variant, dtype, d, alibi, softcap });
                }
            }
            for group in 1..=16 {
                v.push(Key::DiffDecodeSplit { dtype, d, heads: decode_heads_per_block(group) });
            }
            v.push(Key::DiffDecodeCombine { dtype, d });
        }
        v.push(Key::DiffEpilogue { dtype });
    }
    v.dedup();
    v
}

// ------------------------------------------------------------------------------- baseline

/// The unfused baselines' epilogue: `o = a - lambda_h b`, then the optional RMSNorm with
/// `norm_weight` and `norm_scale` (= 1 - lambda_init), over `[.., H, Dv]` tensors of one dtype.
/// With `a_hi` / `b_hi`, `a` and `b` hold columns `[0, Dv/2)` and the `_hi` tensors
/// `[Dv/2, Dv)` (the four-call baseline). Benchmarks only; the fused kernels never use it.
#[allow(clippy::too_many_arguments)]
pub fn diff_epilogue_cuda(
    gpu: &Gpu,
    a: &DeviceTensor,
    a_hi: Option<&DeviceTensor>,
    b: &DeviceTensor,
    b_hi: Option<&DeviceTensor>,
    lambda: &DeviceTensor,
    norm_weight: Option<&DeviceTensor>,
    norm_scale: f32,
    eps: f32,
    o: &mut DeviceTensor,
) -> Result<()> {
    let os = o.shape().to_vec();
    if os.len() < 2 {
        return Err(Error::shape("o", "[.., H, Dv]", &os));
    }
    let dtype = gpu_dtype("o", o.dtype())?;
    let (heads, dv) = (os[os.len() - 2], os[os.len() - 1]);
    let rows = os[..os.len() - 2].iter().product::<usize>();
    let split = a_hi.is_some();
    if split != b_hi.is_some() {
        return Err(Error::invalid("b_hi", "a_hi and b_hi come together"));
    }
    if dv % 2 != 0 || (split && dv % 4 != 0) {
        return Err(Error::shape("o", "an even Dv (a multiple of 4 when split)", &os));
    }
    let mut part = os.clone();
    if split {
        *part.last_mut().unwrap() = dv / 2;
    }
    for (name, t) in [("a", Some(a)), ("a_hi", a_hi), ("b", Some(b)), ("b_hi", b_hi)] {
        if let Some(t) = t {
            expect_same_dtype(name, t, "o", o.dtype())?;
            if t.shape() != part.as_slice() {
                return Err(Error::shape(name, format!("{part:?}"), t.shape()));
            }
        }
    }
    expect_dtype("lambda", lambda, &[DType::F32])?;
    if lambda.shape() != [heads] {
        return Err(Error::shape("lambda", format!("[{heads}]"), lambda.shape()));
    }
    if let Some(w) = norm_weight {
        expect_dtype("norm_weight", w, &super::norm_weight_dtypes(o.dtype()))?;
        if w.shape() != [dv] {
            return Err(Error::shape("norm_weight", format!("[{dv}]"), w.shape()));
        }
    }
    let pw = *part.last().unwrap();
    let params = AkDiffEpilogueParams {
        a: a.kernel_ptr(),
        a_hi: opt_ptr(a_hi),
        b: b.kernel_ptr(),
        b_hi: opt_ptr(b_hi),
        o: o.kernel_ptr_mut(),
        lambda: lambda.kernel_ptr() as *const f32,
        norm_weight: opt_ptr(norm_weight),
        a_row_stride: (heads * pw) as i64,
        a_head_stride: pw as i64,
        b_row_stride: (heads * pw) as i64,
        b_head_stride: pw as i64,
        o_row_stride: (heads * dv) as i64,
        o_head_stride: dv as i64,
        rows: fits_i32("o", "rows", rows)?,
        heads: heads as i32,
        dv: dv as i32,
        norm_factor: norm_scale,
        eps,
        dtype: o.dtype().kernel_code(),
        norm_weight_dtype: norm_weight.map_or(DType::F32, |w| w.dtype()).kernel_code(),
    };
    let items = rows * heads;
    let epilogue = kernel("o", Key::DiffEpilogue { dtype })?;
    gpu.launch(epilogue, (items.div_ceil(epilogue.rows as usize) as u32, 1, 1), &params)
}

/// Caller-provided outputs of prefill and decode: `o` in q's dtype, `lse1`/`lse2` f32, shapes
/// as planned.
fn check_outputs<O: TensorInfo>(out: &DiffAttentionOutput<O>, dtype: DType, o_shape: &[usize], lse_shape: &[usize]) -> Result<()> {
    expect_same_dtype("o", &out.o, "q", dtype)?;
    if out.o.shape() != o_shape {
        return Err(Error::shape("o", format!("{o_shape:?}"), out.o.shape()));
    }
    for (name, t) in [("lse1", &out.lse1), ("lse2", &out.lse2)] {
        expect_dtype(name, t, &[DType::F32])?;
        if t.shape() != lse_shape {
            return Err(Error::shape(name, format!("{lse_shape:?}"), t.shape()));
        }
    }
    Ok(())
}
