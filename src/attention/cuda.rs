//! CUDA prefill path for attention: `kernels/attention/prefill.cu` (FlashAttention-2 style
//! forward on tensor cores, with ALiBi, softcap, masks, GQA, varlen and fused RoPE) and, on
//! compute capability 9.0, `kernels/attention/prefill_sm90.cu` (wgmma, TMA and warp
//! specialisation) for every f16 / bf16 plan with `Dv = D` or `Dv = 2D` (fused RoPE there rotates
//! Q and K once each in a pre-pass, the kernel reads them as TMA delivers them). Both compute the same
//! function to the same tolerance (the online softmax is one piece of code,
//! `kernels/attention/flash.cuh`); the Hopper kernel's speed is unmeasured until a GPU is lent.
//!
//! [`AttentionLaunch`] plans once (validation, device limits, index uploads) and launches per
//! layer; [`attention_cuda`] (allocates the outputs) and [`attention_cuda_into`] (buffers the
//! caller owns) do both for one call. Nothing is uploaded or launched before everything is
//! validated.
//!
//! Device support: f16 and bf16 (f32 inputs are rejected with `Error::Unsupported` naming `q`),
//! head dims `D = Dv` in {64, 128, 256} and `Dv = 2 D` for `D` in {64, 128}; compute capability
//! 8.0 or newer. Shared memory per block: 36 to 116 KB (`D = 128, Dv = 256`), so that head-dim
//! pair needs an A100 / H100 class GPU (consumer Ampere / Ada allow 99 KB and get
//! `Error::Unsupported`).
//!
//! Per call the host picks the kernel instance for the plan's ALiBi and softcap (four per tile);
//! with fused RoPE it first rotates every key once into a scratch copy (`rope_keys`, allocated
//! and freed in stream order on the call's stream), which the attention kernel reads as K.

use super::{plan, AttentionArgs, AttentionConfig, AttentionOutput, AttentionPlan};
use crate::error::{Error, Result};
use crate::rope::cuda::{rope_table, DeviceRopeTable};
use crate::runtime::kernel_list::attention::TILES;
use crate::runtime::kernel_list::attention_sm90;
use crate::runtime::params::{AkAttnParams, AkAttnSm90Params, AkTensorMap};
use crate::runtime::tma::{encode_tiled, TmaSwizzle};
use crate::runtime::view::{opt_parts_ptr, parts_of, Layout::{Packed, Strided}};
use crate::runtime::{check_views, find_kernel, DeviceRead, DeviceTensor, DeviceWrite, Gpu, Kernel, Key, Ready, CUDA_ARCHS};
use crate::tensor::{expect_tensor, DType, PlannedTensors, Tensor, TensorInfo};
use std::sync::Arc;

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
    let (alibi, softcap) = (p.has_alibi, p.softcap > 0.0);
    let key = |dtype| Key::AttnFwd { dtype, d: p.head_dim, dv: p.head_dim_v, alibi, softcap };
    dtype.and_then(|dtype| find_kernel(key(dtype))).ok_or_else(|| {
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

/// An sm_90a kernel (`kernels/attention/prefill_sm90.cu`, `kernels/diff_attention/
/// prefill_sm90.cu`) and, with fused RoPE, the query pre-pass it needs (it reads Q and K rotated
/// once by `rope_pass`).
#[derive(Clone, Copy)]
pub(crate) struct HopperPath {
    pub kernel: &'static Kernel,
    pub rope_queries: Option<&'static Kernel>,
}

impl HopperPath {
    /// The path of `key` when this device and build run sm_90a kernels: compute capability 9.0
    /// with an sm_90a image in the build (or the emulated device presenting 9.0), and
    /// `ATTN_KERNELS_ATTENTION_PATH` not `mma` (which forces the mma.sync kernels, for
    /// comparisons). None otherwise, or when the list has no such instance.
    pub(crate) fn of(gpu: &Gpu, p: &AttentionPlan, key: Key) -> Option<HopperPath> {
        let info = gpu.info();
        let built = info.emulated || CUDA_ARCHS.contains(&"sm_90a");
        let forced_mma = std::env::var("ATTN_KERNELS_ATTENTION_PATH").is_ok_and(|v| v == "mma");
        if info.compute_capability != (9, 0) || !built || forced_mma {
            return None;
        }
        let kernel = find_kernel(key)?;
        let rope_queries = match p.rope {
            Some(_) => Some(find_kernel(Key::AttnRopeQueries { dtype: p.dtype.kernel_dt()?, d: p.head_dim })?),
            None => None,
        };
        Some(HopperPath { kernel, rope_queries })
    }
}

/// The sm_90a attention path for a plan: f16 / bf16 with an instance for (D, Dv), which the list
/// has for D = 64 / 128 / 256 with Dv = D and D = 64 / 128 with Dv = 2D (everything else takes
/// the mma.sync kernel, which runs on every compute capability from 8.0).
fn hopper_path(gpu: &Gpu, p: &AttentionPlan) -> Option<HopperPath> {
    let dtype = p.dtype.kernel_dt()?;
    persistent_tiles(p, attention_sm90::ROWS, p.heads_q)?;
    let key = Key::AttnFwdSm90 { dtype, d: p.head_dim, dv: p.head_dim_v, alibi: p.has_alibi, softcap: p.softcap > 0.0 };
    HopperPath::of(gpu, p, key)
}

/// Block tiles of a persistent sm_90a launch (query blocks of `rows` x `heads` x sequences), or
/// None past i32::MAX / 2: the kernels number them with an int, a round of the grid past the
/// last (such plans take the mma.sync kernel).
pub(crate) fn persistent_tiles(p: &AttentionPlan, rows: usize, heads: usize) -> Option<usize> {
    let tiles = p.max_q_len.div_ceil(rows).checked_mul(heads)?.checked_mul(p.batch)?;
    (tiles <= i32::MAX as usize / 2).then_some(tiles)
}

/// Blocks of a persistent sm_90a launch over `tiles` block tiles: one per SM, no more than tiles.
pub(crate) fn persistent_blocks(gpu: &Gpu, tiles: usize) -> u32 {
    tiles.min(gpu.info().multiprocessors.max(1) as usize) as u32
}

/// A rank-4 TMA layout (head dim, heads, rows, batch; varlen: one batch of the packed rows):
/// dims and byte strides.
pub(crate) type TmaLayout = ([u64; 4], [u64; 3]);

/// The TMA layout of a tensor of `heads` heads of `d` with element strides `st` (batch, row,
/// head), or None when a stride is not one TMA takes (a multiple of 16 bytes below 2^40, not 0
/// across more than one index).
fn tma_layout(p: &AttentionPlan, d: usize, heads: usize, rows: usize, st: (i64, i64, i64)) -> Option<TmaLayout> {
    let esize = p.dtype.size() as i64;
    let nb = if p.varlen { 1 } else { p.batch } as u64;
    let dims = [d as u64, heads as u64, rows as u64, nb];
    // Bytes between steps of a dimension of `n` indices.
    let stride = |elems: i64, n: u64| -> Option<u64> {
        let bytes = elems.checked_mul(esize)?;
        if n <= 1 {
            Some(16) // never stepped
        } else if bytes > 0 && bytes % 16 == 0 && bytes < 1 << 40 {
            Some(bytes as u64)
        } else {
            None
        }
    };
    Some((dims, [stride(st.2, dims[1])?, stride(st.1, dims[2])?, stride(st.0, dims[3])?]))
}

/// The TMA layouts of q (`heads_q` heads of `head_dim`), k (`heads_kv` of `head_dim`) and v
/// (`v_heads` of `head_dim_v`) with element strides `st` (batch, row, head) each.
pub(crate) fn qkv_layouts(p: &AttentionPlan, v_heads: usize, st: [(i64, i64, i64); 3]) -> [Option<TmaLayout>; 3] {
    let (rows_q, rows_k) = if p.varlen { (p.total_q, p.total_k) } else { (p.max_q_len, p.max_k_len) };
    [
        tma_layout(p, p.head_dim, p.heads_q, rows_q, st[0]),
        tma_layout(p, p.head_dim, p.heads_kv, rows_k, st[1]),
        tma_layout(p, p.head_dim_v, v_heads, rows_k, st[2]),
    ]
}

/// Whether an sm_90a kernel takes these tensors: TMA must take the strides of v, and of q and k
/// unless fused RoPE replaces them by packed rotated copies.
pub(crate) fn hopper_takes(p: &AttentionPlan, layouts: &[Option<TmaLayout>; 3]) -> bool {
    let [q, k, v] = layouts;
    v.is_some() && (p.rope.is_some() || (q.is_some() && k.is_some()))
}

/// The TMA tensor maps of q, k and v at `ptrs` for an sm_90a kernel: 128-byte swizzled boxes
/// of 64 elements x 1 head x `block_m` rows (q) or `block_n` keys (k, v).
pub(crate) fn hopper_maps(
    p: &AttentionPlan,
    layouts: [Option<TmaLayout>; 3],
    ptrs: [*const std::ffi::c_void; 3],
    block_m: u32,
    block_n: u32,
) -> Result<[AkTensorMap; 3]> {
    let boxes = [block_m, block_n, block_n];
    let mut maps = [AkTensorMap::default(); 3];
    for (i, layout) in layouts.into_iter().enumerate() {
        let name = ["q", "k", "v"][i];
        let (dims, strides) =
            layout.ok_or_else(|| Error::unsupported(name, "strides a TMA tensor map cannot take (not multiples of 16 bytes)"))?;
        maps[i] = encode_tiled(p.dtype, ptrs[i], &dims, &strides, &[64, 1, boxes[i], 1], &[1; 4], TmaSwizzle::B128)?;
    }
    Ok(maps)
}

/// The RoPE table of a prefill plan (attention, diff_attention), if it rotates: it covers
/// `|P|` for negative default query positions too (rotated by `|P|` with the sine negated).
pub(crate) fn prefill_rope_table(gpu: &Gpu, p: &AttentionPlan) -> Result<Option<Arc<DeviceRopeTable>>> {
    let span = p.max_position.max(p.min_position.unsigned_abs() as usize);
    p.rope.as_ref().map(|r| rope_table(gpu, r, span)).transpose()
}

/// Windows beyond `Sq + Sk` cannot exclude any key; clamp them so the kernel's ints stay small.
fn clamp_window(w: i64, limit: usize) -> i32 {
    if w < 0 {
        -1
    } else {
        w.min(limit as i64) as i32
    }
}

/// Attention planned once for one batch (shapes, options, index data) and launched any number of
/// times: per layer, an engine's prefill has the same `cu_seqlens`, position ids and shapes and
/// new q, k, v. [`AttentionLaunch::new`] validates everything and uploads the index data (and
/// the RoPE table) once; [`AttentionLaunch::launch`] checks only that the tensors it is given
/// have the planned dtypes and shapes, and enqueues the kernel on the handle it is given (a fork
/// of the planning handle waits for the uploads first).
pub struct AttentionLaunch {
    plan: AttentionPlan,
    kernel: &'static Kernel,
    /// The sm_90a path, when the device and the plan allow it (per launch, the tensors' strides
    /// must suit TMA too; otherwise `kernel` runs).
    hopper: Option<HopperPath>,
    /// The RoPE pre-pass (`rope_keys`) when the plan rotates.
    rope_keys: Option<&'static Kernel>,
    /// q, k, v, alibi_slopes as planned.
    planned: PlannedTensors,
    table: Option<Arc<DeviceRopeTable>>,
    cu_q: Option<DeviceTensor>,
    cu_k: Option<DeviceTensor>,
    ids_q: Option<DeviceTensor>,
    ids_k: Option<DeviceTensor>,
    uploaded: Ready,
}

impl AttentionLaunch {
    /// Validate `args` against `cfg` and this device, and upload the index data. The tensors of
    /// `args` are read only for their shapes and dtypes (host or device tensors alike).
    pub fn new<T: TensorInfo>(gpu: &Gpu, cfg: &AttentionConfig, args: &AttentionArgs<'_, T>) -> Result<AttentionLaunch> {
        let plan = plan(cfg, args)?;
        let kernel = check_device_support(gpu, &plan)?;
        let rope_keys = match (&plan.rope, plan.dtype.kernel_dt()) {
            (Some(_), Some(dtype)) => Some(find_kernel(Key::AttnRopeKeys { dtype, d: plan.head_dim }).ok_or_else(|| {
                Error::unsupported("q", format!("no RoPE key pre-pass for head dim {}", plan.head_dim))
            })?),
            _ => None,
        };
        let table = prefill_rope_table(gpu, &plan)?;
        let upload = |on: bool, data: Option<&[i32]>| data.filter(|_| on).map(|c| gpu.upload_i32(c)).transpose();
        let (varlen, rope) = (plan.varlen, plan.rope.is_some());
        Ok(AttentionLaunch {
            kernel,
            hopper: hopper_path(gpu, &plan),
            rope_keys,
            planned: PlannedTensors::of(&["q", "k", "v", "alibi_slopes"], &[Some(args.q), Some(args.k), Some(args.v), args.alibi_slopes]),
            table,
            cu_q: upload(varlen, args.cu_seqlens_q)?,
            cu_k: upload(varlen, args.cu_seqlens_k)?,
            ids_q: upload(rope, args.position_ids_q)?,
            ids_k: upload(rope, args.position_ids_k)?,
            uploaded: Ready::now(gpu)?,
            plan,
        })
    }

    /// The validated plan (output shapes, sequence spans, resolved options).
    pub fn plan(&self) -> &AttentionPlan {
        &self.plan
    }

    /// Run on `gpu`'s stream: `q, k, v` (and ALiBi slopes, f32 `[Hq]`, if the plan has them) with
    /// the planned dtypes and shapes, into `o` ([`AttentionPlan::o_shape`], q's dtype) and
    /// optionally `lse` (f32, [`AttentionPlan::lse_shape`]).
    ///
    /// The tensors may be owned or borrowed ([`DeviceView`](crate::DeviceView)): any batch, row and
    /// head strides, the head dimension contiguous, 16-byte aligned rows; `lse` packed.
    pub fn launch<T: DeviceRead, O: DeviceWrite>(
        &self,
        gpu: &Gpu,
        inputs: [&T; 3],
        alibi_slopes: Option<&T>,
        o: &mut O,
        lse: Option<&mut O>,
    ) -> Result<()> {
        let p = &self.plan;
        let [q, k, v] = inputs;
        self.planned.check(&[Some(q), Some(k), Some(v), alibi_slopes])?;
        expect_tensor("o", o, p.dtype, &p.o_shape())?;
        if let Some(l) = lse.as_deref() {
            expect_tensor("lse", l, DType::F32, &p.lse_shape())?;
        }
        let (qp, kp, vp, op) = (q.parts(), k.parts(), v.parts(), o.parts());
        let lse_parts = parts_of(lse.as_deref());
        check_views(
            &[("q", Some(qp), Strided), ("k", Some(kp), Strided), ("v", Some(vp), Strided), ("alibi_slopes", parts_of(alibi_slopes), Packed)],
            &[("o", Some(op), Strided), ("lse", lse_parts, Packed)],
        )?;
        self.uploaded.wait_on(gpu, "AttentionLaunch")?;
        if p.total_q == 0 || p.batch == 0 {
            return Ok(()); // nothing to compute; outputs are empty
        }
        let ptr_i32 = |t: &Option<DeviceTensor>| t.as_ref().map_or(std::ptr::null(), |t| t.kernel_ptr() as *const i32);
        let (hq, sq, sk) = (p.heads_q as i64, p.max_q_len as i64, p.max_k_len as i64);
        let [qs, ks, vs, os] = [&qp, &kp, &vp, &op].map(|t| t.seq_strides(p.varlen));
        let (lse_b, lse_h) = if p.varlen { (0, p.total_q as i64) } else { (hq * sq, sq) };
        let lse_ptr = lse_parts.map_or(std::ptr::null_mut(), |l| l.ptr_mut() as *mut f32);
        let (bq, bk) = if p.varlen { (0, 0) } else { (sq, sk) };
        let window_limit = p.max_q_len + p.max_k_len;
        let mut params = AkAttnParams {
            q: qp.ptr(),
            k: kp.ptr(),
            v: vp.ptr(),
            o: op.ptr_mut(),
            lse: lse_ptr,
            alibi_slopes: opt_parts_ptr(alibi_slopes) as *const f32,
            cu_seqlens_q: ptr_i32(&self.cu_q),
            cu_seqlens_k: ptr_i32(&self.cu_k),
            position_ids_q: ptr_i32(&self.ids_q),
            position_ids_k: ptr_i32(&self.ids_k),
            rope: self.table.as_ref().map_or_else(crate::rope::cuda::no_rope, |t| t.params()),
            k_rotated: std::ptr::null_mut(),
            q_rotated: std::ptr::null_mut(),
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
        let strides = |a: &AkAttnParams| {
            [
                (a.q_batch_stride, a.q_row_stride, a.q_head_stride),
                (a.k_batch_stride, a.k_row_stride, a.k_head_stride),
                (a.v_batch_stride, a.v_row_stride, a.v_head_stride),
            ]
        };
        let hopper = self.hopper.filter(|_| hopper_takes(p, &qkv_layouts(p, p.heads_kv, strides(&params))));
        // Fused RoPE: the attention kernels read keys rotated once by the pre-pass (the scratch
        // copies are freed in stream order after the launch below).
        let _rotated_k = match self.rope_keys {
            Some(rk) => rotate_once(gpu, rk, &mut params, p, Side::Keys)?,
            None => None,
        };
        if let Some(h) = hopper {
            // ... and the sm_90a kernel queries too (the mma.sync one rotates its Q tile itself).
            let _rotated_q = match h.rope_queries {
                Some(rq) => rotate_once(gpu, rq, &mut params, p, Side::Queries)?,
                None => None,
            };
            let layouts = qkv_layouts(p, p.heads_kv, strides(&params));
            let [tmap_q, tmap_k, tmap_v] = hopper_maps(p, layouts, [params.q, params.k, params.v], h.kernel.rows, h.kernel.keys)?;
            // Persistent: one block per SM (or per tile, if fewer) walks its share of the tiles.
            let query_blocks = p.max_q_len.div_ceil(h.kernel.rows as usize);
            let grid = (persistent_blocks(gpu, query_blocks * p.heads_q * p.batch), 1, 1);
            let query_blocks = query_blocks as i32;
            return gpu.launch(h.kernel, grid, &AkAttnSm90Params { tmap_q, tmap_k, tmap_v, attn: params, query_blocks });
        }
        let grid = (p.max_q_len.div_ceil(self.kernel.rows as usize) as u32, p.heads_q as u32, p.batch as u32);
        gpu.launch(self.kernel, grid, &params)
    }

    /// The kernel [`AttentionLaunch::launch`] runs for tensors with TMA-compatible strides (the
    /// sm_90a kernel on compute capability 9.0 when the plan allows it, else the mma.sync one).
    pub fn kernel(&self) -> &'static Kernel {
        self.hopper.map_or(self.kernel, |h| h.kernel)
    }

    /// Allocate `o` and `lse` and launch.
    pub fn launch_alloc<T: DeviceRead>(&self, gpu: &Gpu, inputs: [&T; 3], alibi_slopes: Option<&T>) -> Result<AttentionOutput<DeviceTensor>> {
        let mut o = gpu.alloc_output(self.plan.dtype, &self.plan.o_shape())?;
        let mut lse = gpu.alloc_output(DType::F32, &self.plan.lse_shape())?;
        self.launch(gpu, inputs, alibi_slopes, &mut o, Some(&mut lse))?;
        Ok(AttentionOutput { o, lse })
    }
}

/// Which rows a RoPE pre-pass rotates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Keys,
    Queries,
}

/// A RoPE pre-pass (`ak::attention::rope_pass`): rotate every key row of `params.k` (the plan's
/// `heads_kv` heads of `head_dim`; `Side::Queries`: every query row of `params.q`, `heads_q`
/// heads, at P(i)) once into a packed scratch copy `[rows, heads, head_dim]`, then point
/// `params.k` (`params.q`) and its strides at that copy, so the prefill reads rotated rows
/// instead of each block rotating every K tile it visits (O(Sk) work, not O(Sq / rows x Sk)).
/// Reads the side's tensor, strides, lengths, `cu_seqlens`, position ids and `rope` (queries
/// also the key lengths, for P(i) = i + Sk - Sq); the heads and `head_dim` are set here from
/// the plan. Returns the scratch (None when there are no rows): keep it until the prefill is
/// enqueued; its free is ordered on the stream after that.
pub(crate) fn rotate_once(
    gpu: &Gpu,
    kernel: &'static Kernel,
    params: &mut AkAttnParams,
    plan: &AttentionPlan,
    side: Side,
) -> Result<Option<DeviceTensor>> {
    let p = plan;
    let queries = side == Side::Queries;
    let (total, max_len, heads) =
        if queries { (p.total_q, p.max_q_len, p.heads_q) } else { (p.total_k, p.max_k_len, p.heads_kv) };
    if total == 0 || p.batch == 0 {
        return Ok(None);
    }
    let d = p.head_dim;
    if queries {
        params.heads_q = heads as i32;
    } else {
        params.heads_kv = heads as i32;
    }
    params.head_dim = d as i32;
    let rows = if p.varlen { total } else { p.batch * max_len };
    let mut scratch = gpu.alloc(p.dtype, &[rows, heads, d])?;
    let out = scratch.kernel_ptr_mut();
    if queries {
        params.q_rotated = out;
    } else {
        params.k_rotated = out;
    }
    let grid = (max_len.div_ceil(kernel.rows as usize) as u32, heads as u32, p.batch as u32);
    gpu.launch(kernel, grid, params)?;
    let row = (heads * d) as i64;
    let strides = (if p.varlen { 0 } else { max_len as i64 * row }, row, d as i64);
    if queries {
        params.q = out as *const _;
        (params.q_batch_stride, params.q_row_stride, params.q_head_stride) = strides;
    } else {
        params.k = out as *const _;
        (params.k_batch_stride, params.k_row_stride, params.k_head_stride) = strides;
    }
    Ok(Some(scratch))
}

/// Run attention on the GPU into caller-owned outputs: `o` with the shape and dtype of
/// [`AttentionPlan::o_shape`] (q's dtype) and optionally `lse` (f32, [`AttentionPlan::lse_shape`]).
/// Everything is validated before any upload or launch ([`AttentionLaunch`] once).
pub fn attention_cuda_into<T: DeviceRead, O: DeviceWrite>(
    gpu: &Gpu,
    cfg: &AttentionConfig,
    args: &AttentionArgs<'_, T>,
    o: &mut O,
    lse: Option<&mut O>,
) -> Result<()> {
    AttentionLaunch::new(gpu, cfg, args)?.launch(gpu, [args.q, args.k, args.v], args.alibi_slopes, o, lse)
}

/// Run attention on the GPU; allocates `o` (q's dtype) and `lse` (f32).
pub fn attention_cuda<T: DeviceRead>(
    gpu: &Gpu,
    cfg: &AttentionConfig,
    args: &AttentionArgs<'_, T>,
) -> Result<AttentionOutput<DeviceTensor>> {
    AttentionLaunch::new(gpu, cfg, args)?.launch_alloc(gpu, [args.q, args.k, args.v], args.alibi_slopes)
}

/// Host tensors in, host tensors out (uploads, runs, downloads): a convenience for tests and callers
/// with host data.
pub fn attention_cuda_host(
    gpu: &Gpu,
    cfg: &AttentionConfig,
    args: &AttentionArgs<'_, Tensor>,
) -> Result<AttentionOutput<Tensor>> {
    // Validate before any upload; the device copies have the planned shapes.
    let launch = AttentionLaunch::new(gpu, cfg, args)?;
    let (q, k, v) = (gpu.upload(args.q)?, gpu.upload(args.k)?, gpu.upload(args.v)?);
    let alibi = args.alibi_slopes.map(|a| gpu.upload(a)).transpose()?;
    let out = launch.launch_alloc(gpu, [&q, &k, &v], alibi.as_ref())?;
    Ok(AttentionOutput { o: gpu.download(&out.o)?, lse: gpu.download(&out.lse)? })
}

#[cfg(test)]
mod tests {
    use crate::runtime::{Key, KERNELS};

    #[test]
    fn every_tile_fits_the_opt_in_shared_memory() {
        // The generated entry points prove the table's values equal Cfg<..>'s in prefill.cu.
        let tiles: Vec<_> = KERNELS.iter().filter(|k| matches!(k.key, Key::AttnFwd { .. })).collect();
        assert_eq!(tiles.len(), 40);
        for k in tiles {
            assert!(k.smem_bytes <= 227 * 1024, "{k:?}");
            assert_eq!(k.rows, 128, "{k:?}");
        }
    }
}
