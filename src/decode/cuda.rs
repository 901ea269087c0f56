//! CUDA paths: split-KV decode (kernels/decode/decode.cu), cache append
//! (kernels/decode/append.cu) and merge_states.
//!
//! Decode launches one CTA per (split, kv head, row tile, sequence); with more than one split
//! each CTA writes a normalised partial output and its LSE to an f32 workspace and a combine
//! kernel merges the splits in split order, so results are bit-identical run to run.

use super::{
    check_cache, plan, plan_append, plan_merge, CacheLayout, DecodeOptions, DecodePlan, KvCacheMut, KvCacheRef,
    SplitPolicy,
};
use crate::attention::{AttentionConfig, AttentionOutput};
use crate::error::{Error, Result};
use crate::rope::cuda::{no_rope, rope_table};
use crate::rope::RopeConfig;
use crate::runtime::kernel_list::decode::{self as list, HEAD_DIMS, ROWS};
use crate::runtime::params::{AkAppendKvParams, AkDecodeCombineParams, AkDecodeParams, AkMergeStatesParams};
use crate::runtime::view::{opt_parts_ptr, parts_of, Layout::{Packed, Strided}};
use crate::runtime::{check_views, find_kernel, kernel, DeviceRead, DeviceTensor, DeviceWrite, Gpu, Kernel, Key, RawParts, Ready};
use crate::tensor::{expect_shape, expect_tensor, DType, PlannedTensors, TensorInfo};

/// Query rows per CTA for `n_rows` rows per kv head (GQA group size times Sq_new): the
/// smallest instance of the kernel list that holds them all, else the largest (several tiles).
pub fn rows_per_cta(n_rows: usize) -> usize {
    ROWS.iter().copied().find(|&r| r >= n_rows).unwrap_or(ROWS[ROWS.len() - 1])
}

/// Keys one decode CTA consumes per pipeline stage for head dim `d`.
pub fn keys_per_stage(d: usize) -> usize {
    list::keys_per_stage(d)
}

/// The split count of [`SplitPolicy::Auto`]: enough CTAs to fill the GPU about four deep
/// (`4 * sms`), but no split shorter than 256 keys, and at most 128 splits. A function of the
/// shapes and the device only, so repeated calls split identically.
pub fn auto_splits(sms: usize, batch: usize, heads_kv: usize, row_tiles: usize, max_len: usize) -> usize {
    let ctas = (batch * heads_kv * row_tiles).max(1);
    let target = 4 * sms.max(1);
    if ctas >= target {
        return 1;
    }
    let by_occupancy = target.div_ceil(ctas);
    let by_length = (max_len / 256).max(1);
    by_occupancy.min(by_length).clamp(1, 128)
}

/// The kernel element type of an activation dtype (the plans reject i32 before any launch).
fn kernel_dtype(arg: &str, dtype: DType) -> Result<crate::runtime::Dt> {
    dtype.kernel_dt().ok_or_else(|| Error::unsupported(arg, format!("no kernel for {dtype}")))
}

fn fits_i32(arg: &str, what: &str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::unsupported(arg, format!("{what} = {n} exceeds the kernels' 32-bit range")))
}

/// Element strides `(block, row, head)` of a cache tensor `[blocks, rows, H, width]` (owned or
/// borrowed: an engine's cache may interleave K and V or pad its blocks).
fn cache_strides(t: &RawParts) -> (i64, i64, i64) {
    (t.stride(0), t.stride(1), t.stride(2))
}

fn log2_block(layout: &CacheLayout) -> Result<i32> {
    match *layout {
        CacheLayout::Contiguous { .. } => Ok(0),
        CacheLayout::Paged { block_size, .. } => {
            if !block_size.is_power_of_two() {
                return Err(Error::unsupported(
                    "k_cache",
                    format!("paged block_size {block_size}: the GPU path needs a power of two"),
                ));
            }
            Ok(block_size.trailing_zeros() as i32)
        }
    }
}

/// The cache's index data on the device (`cache_seqlens`, `block_table`), with the host copy it
/// was made from: one type for every op that reads a KV cache (decode, and diff_attention's
/// fused decode). Upload once per step and reuse it across layers with
/// [`decode_cuda_with_index`] or `diff_attention::cuda::diff_decode_cuda_into`; it is checked
/// against the cache's host data on every call.
pub struct DeviceKvIndex {
    pub(crate) seqlens: DeviceTensor,
    pub(crate) block_table: Option<DeviceTensor>,
    host_seqlens: Vec<i32>,
    host_table: Option<Vec<i32>>,
    /// After the uploads: another stream waits for it before reading the index.
    ready: Ready,
}

impl DeviceKvIndex {
    /// Validate the cache (shapes, lengths, block ids) and upload its index data.
    pub fn new<T: TensorInfo>(gpu: &Gpu, cache: &KvCacheRef<'_, T>) -> Result<DeviceKvIndex> {
        check_cache(cache, 0)?;
        Self::upload(gpu, cache)
    }

    fn upload<T>(gpu: &Gpu, cache: &KvCacheRef<'_, T>) -> Result<DeviceKvIndex> {
        let sl = cache.cache_seqlens();
        let seqlens = gpu.upload_i32(sl)?;
        let (block_table, host_table) = match cache.block_table() {
            None => (None, None),
            Some((t, _)) => (Some(gpu.upload_i32(t)?), Some(t.to_vec())),
        };
        Ok(DeviceKvIndex { seqlens, block_table, host_seqlens: sl.to_vec(), host_table, ready: Ready::now(gpu)? })
    }

    /// Make `gpu`'s stream wait for the uploads (nothing to do on the uploading stream).
    pub(crate) fn wait_on(&self, gpu: &Gpu) -> Result<()> {
        self.ready.wait_on(gpu, "index")
    }

    pub(crate) fn matches<T>(&self, cache: &KvCacheRef<'_, T>) -> bool {
        self.host_seqlens == cache.cache_seqlens() && self.host_table.as_deref() == cache.block_table().map(|(t, _)| t)
    }
}

/// GPU-only restrictions of decode, checked after [`plan`].
fn check_gpu_decode(p: &DecodePlan) -> Result<()> {
    if !matches!(p.dtype, DType::F16 | DType::BF16) {
        return Err(Error::unsupported("q", format!("GPU decode takes f16 or bf16, got {} (use decode_cpu)", p.dtype)));
    }
    if p.head_dim != p.head_dim_v || !HEAD_DIMS.contains(&p.head_dim) {
        return Err(Error::unsupported(
            "q",
            format!("GPU decode needs D == Dv in {HEAD_DIMS:?}, got D = {}, Dv = {}", p.head_dim, p.head_dim_v),
        ));
    }
    if let Some(r) = &p.rope {
        if r.rotary_dim % 16 != 0 {
            return Err(Error::unsupported(
                "rope",
                format!("GPU decode needs rotary_dim % 16 == 0, got {}", r.rotary_dim),
            ));
        }
    }
    log2_block(&p.layout)?;
    if p.window_left > i32::MAX as i64 || p.window_right > i32::MAX as i64 {
        return Err(Error::unsupported("window_left", "windows beyond 2^31 - 1 keys"));
    }
    fits_i32("q", "B * Sq_new * Hq", p.batch * p.seqlen_q * p.heads_q)?;
    Ok(())
}

/// Decode planned once per step and launched per layer. [`DecodeLaunch::new`] validates the call
/// (host index data included), uploads the cache's index data, resolves the RoPE table, picks the
/// kernel and the split count and allocates the split workspace; [`DecodeLaunch::launch`] checks
/// only that the tensors it is given have the planned dtypes and shapes and enqueues the kernels:
/// no upload, no allocation, no synchronisation, so a launch can be captured in a CUDA graph.
/// Launches of one `DecodeLaunch` share its workspace: order them (one stream, or events between).
pub struct DecodeLaunch {
    plan: DecodePlan,
    /// q, k_cache, v_cache, alibi_slopes as planned.
    planned: PlannedTensors,
    /// The uploaded index data (`None`: the caller's, see [`decode_cuda_with_index`]).
    index: Option<DeviceKvIndex>,
    /// The index is the caller's: wait for its own upload (ours is covered by `uploaded`).
    callers_index: bool,
    table: Option<std::sync::Arc<crate::rope::cuda::DeviceRopeTable>>,
    decode: &'static Kernel,
    combine: &'static Kernel,
    row_tiles: usize,
    splits: usize,
    max_blocks: usize,
    block_size_log2: i32,
    /// Splits > 1: the f32 partial outputs and LSEs the combine kernel merges.
    workspace: Option<(DeviceTensor, DeviceTensor)>,
    uploaded: Ready,
}

impl DecodeLaunch {
    /// Validate and prepare a decode of `q` against `cache` (tensors read for their shapes only).
    pub fn new<T: TensorInfo>(
        gpu: &Gpu,
        cfg: &AttentionConfig,
        q: &T,
        cache: &KvCacheRef<'_, T>,
        alibi_slopes: Option<&T>,
        opts: &DecodeOptions,
    ) -> Result<DecodeLaunch> {
        let p = plan(cfg, q, cache, alibi_slopes, opts)?;
        check_gpu_decode(&p)?;
        let index = DeviceKvIndex::upload(gpu, cache)?;
        Self::prepare(gpu, p, q, cache, alibi_slopes, Some(index), opts)
    }

    fn prepare<T: TensorInfo>(
        gpu: &Gpu,
        p: DecodePlan,
        q: &T,
        cache: &KvCacheRef<'_, T>,
        alibi_slopes: Option<&T>,
        index: Option<DeviceKvIndex>,
        opts: &DecodeOptions,
    ) -> Result<DecodeLaunch> {
        let n_rows = p.heads_q / p.heads_kv * p.seqlen_q;
        let rows = rows_per_cta(n_rows);
        let row_tiles = n_rows.div_ceil(rows);
        let splits = num_splits(gpu, &p, opts.split);
        let grid_y = p.heads_kv * row_tiles;
        if grid_y > 65535 || p.batch > 65535 {
            return Err(Error::unsupported(
                "q",
                format!("Hkv * row tiles = {grid_y} and B = {} must be <= 65535", p.batch),
            ));
        }
        for (arg, what, n) in [("q", "B", p.batch), ("q", "Sq_new", p.seqlen_q), ("q", "Hq", p.heads_q), ("k_cache", "Hkv", p.heads_kv)] {
            fits_i32(arg, what, n)?;
        }
        let dtype = kernel_dtype("q", p.dtype)?;
        let decode = find_kernel(Key::Decode { dtype, d: p.head_dim, rows })
            .ok_or_else(|| Error::unsupported("q", format!("no decode kernel for {} D = {}", p.dtype, p.head_dim)))?;
        // GPU decode takes f16 and bf16 only (check_gpu_decode), so the combine has no f32 form.
        let combine = kernel("q", Key::DecodeCombine { dtype })?;
        let table = match &p.rope {
            Some(r) => Some(rope_table(gpu, r, p.max_position)?),
            None => None,
        };
        let (max_blocks, block_size_log2) = match (&p.layout, cache.block_table()) {
            (CacheLayout::Paged { max_blocks, .. }, Some(_)) => (*max_blocks, log2_block(&p.layout)?),
            _ => (0, 0),
        };
        fits_i32("block_table", "max_blocks", max_blocks)?;
        let workspace = if splits > 1 && p.batch > 0 && p.seqlen_q > 0 {
            let o_part = gpu.alloc_output(DType::F32, &[splits, p.batch, p.seqlen_q, p.heads_q, p.head_dim_v])?;
            let lse_part = gpu.alloc_output(DType::F32, &[splits, p.batch, p.heads_q, p.seqlen_q])?;
            Some((o_part, lse_part))
        } else {
            None
        };
        Ok(DecodeLaunch {
            callers_index: index.is_none(),
            planned: PlannedTensors::of(&["q", "k_cache", "v_cache", "alibi_slopes"], &[Some(q), Some(cache.k()), Some(cache.v()), alibi_slopes]),
            index,
            table,
            decode,
            combine,
            row_tiles,
            splits,
            max_blocks,
            block_size_log2,
            workspace,
            uploaded: Ready::now(gpu)?,
            plan: p,
        })
    }

    /// The validated plan (output shapes, lengths, resolved options).
    pub fn plan(&self) -> &DecodePlan {
        &self.plan
    }

    /// The number of KV splits (CTAs along the keys; > 1 adds the combine kernel).
    pub fn splits(&self) -> usize {
        self.splits
    }

    /// Run on `gpu`'s stream: `q` and the cache's `k`, `v` (and ALiBi slopes, f32 `[Hq]`, if the
    /// plan has them) with the planned dtypes and shapes, into `o [B, Sq_new, Hq, Dv]` (q's dtype)
    /// and `lse [B, Hq, Sq_new]` (f32). The cache's lengths and block table are the planned ones.
    /// Owned or borrowed tensors: the cache with any block, row and head strides (16-byte aligned
    /// rows), the others packed.
    pub fn launch<T: DeviceRead, O: DeviceWrite>(
        &mut self,
        gpu: &Gpu,
        q: &T,
        kv: [&T; 2],
        alibi_slopes: Option<&T>,
        o: &mut O,
        lse: &mut O,
    ) -> Result<()> {
        let index = self.index.take().ok_or_else(|| Error::invalid("index", "this DecodeLaunch has no index data"))?;
        let r = self.enqueue(gpu, &index, q, kv, alibi_slopes, o, lse);
        self.index = Some(index);
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn enqueue<T: DeviceRead, O: DeviceWrite>(
        &mut self,
        gpu: &Gpu,
        index: &DeviceKvIndex,
        q: &T,
        kv: [&T; 2],
        alibi_slopes: Option<&T>,
        o: &mut O,
        lse: &mut O,
    ) -> Result<()> {
        let p = &self.plan;
        self.planned.check(&[Some(q), Some(kv[0]), Some(kv[1]), alibi_slopes])?;
        expect_tensor("o", o, p.dtype, &p.o_shape())?;
        expect_tensor("lse", lse, DType::F32, &p.lse_shape())?;
        let (qp, kp, vp, op, lp) = (q.parts(), kv[0].parts(), kv[1].parts(), o.parts(), lse.parts());
        check_views(
            &[
                ("q", Some(qp), Packed),
                ("k_cache", Some(kp), Strided),
                ("v_cache", Some(vp), Strided),
                ("alibi_slopes", parts_of(alibi_slopes), Packed),
            ],
            &[("o", Some(op), Packed), ("lse", Some(lp), Packed)],
        )?;
        self.uploaded.wait_on(gpu, "DecodeLaunch")?;
        if self.callers_index {
            index.wait_on(gpu)?;
        }
        if p.batch == 0 || p.seqlen_q == 0 {
            return Ok(());
        }
        let (kb, kr, kh) = cache_strides(&kp);
        let (vb, vr, vh) = cache_strides(&vp);
        let mut params = AkDecodeParams {
            q: qp.ptr(),
            k_cache: kp.ptr(),
            v_cache: vp.ptr(),
            block_table: index.block_table.as_ref().map_or(std::ptr::null(), |t| t.kernel_ptr() as *const i32),
            cache_seqlens: index.seqlens.kernel_ptr() as *const i32,
            alibi_slopes: opt_parts_ptr(alibi_slopes) as *const f32,
            o: std::ptr::null_mut(),
            lse: std::ptr::null_mut(),
            o_partial: std::ptr::null_mut(),
            lse_partial: std::ptr::null_mut(),
            rope: self.table.as_ref().map_or_else(no_rope, |t| t.params()),
            rope_keys: p.rope_keys as i32,
            k_block_stride: kb,
            k_row_stride: kr,
            k_head_stride: kh,
            v_block_stride: vb,
            v_row_stride: vr,
            v_head_stride: vh,
            // Range-checked in `new`.
            batch: p.batch as i32,
            seqlen_q: p.seqlen_q as i32,
            heads_q: p.heads_q as i32,
            heads_kv: p.heads_kv as i32,
            head_dim: p.head_dim as i32,
            row_tiles: self.row_tiles as i32,
            max_blocks: self.max_blocks as i32,
            block_size_log2: self.block_size_log2,
            num_splits: self.splits as i32,
            scale: p.scale,
            softcap: p.softcap,
            causal: p.causal as i32,
            window_left: p.window_left as i32,
            window_right: p.window_right as i32,
            dtype: p.dtype.kernel_code(),
        };
        match &mut self.workspace {
            Some((o_part, lse_part)) => {
                params.o_partial = o_part.kernel_ptr_mut() as *mut f32;
                params.lse_partial = lse_part.kernel_ptr_mut() as *mut f32;
            }
            None => {
                params.o = op.ptr_mut();
                params.lse = lp.ptr_mut() as *mut f32;
            }
        }
        let grid_y = p.heads_kv * self.row_tiles;
        gpu.launch(self.decode, (self.splits as u32, grid_y as u32, p.batch as u32), &params)?;
        if let Some((o_part, lse_part)) = &self.workspace {
            let cp = AkDecodeCombineParams {
                o_partial: o_part.kernel_ptr() as *const f32,
                lse_partial: lse_part.kernel_ptr() as *const f32,
                o: op.ptr_mut(),
                lse: lp.ptr_mut() as *mut f32,
                num_splits: self.splits as i32,
                batch: p.batch as i32,
                seqlen_q: p.seqlen_q as i32,
                heads_q: p.heads_q as i32,
                head_dim_v: p.head_dim_v as i32,
                dtype: p.dtype.kernel_code(),
            };
            let total_rows = (p.batch * p.seqlen_q * p.heads_q) as u32;
            gpu.launch(self.combine, (total_rows, 1, 1), &cp)?;
        }
        Ok(())
    }
}

/// Decode on the GPU: validates (host index data included), uploads the index data, and runs
/// split-KV decode (one [`DecodeLaunch`]). Outputs `o [B, Sq_new, Hq, Dv]` (q's dtype),
/// `lse [B, Hq, Sq_new]` f32.
pub fn decode_cuda<T: DeviceRead>(
    gpu: &Gpu,
    cfg: &AttentionConfig,
    q: &T,
    cache: &KvCacheRef<'_, T>,
    alibi_slopes: Option<&T>,
    opts: &DecodeOptions,
) -> Result<AttentionOutput<DeviceTensor>> {
    let mut launch = DecodeLaunch::new(gpu, cfg, q, cache, alibi_slopes, opts)?;
    let p = launch.plan();
    let mut o = gpu.alloc_output(p.dtype, &p.o_shape())?;
    let mut lse = gpu.alloc_output(DType::F32, &p.lse_shape())?;
    launch.launch(gpu, q, [cache.k(), cache.v()], alibi_slopes, &mut o, &mut lse)?;
    Ok(AttentionOutput { o, lse })
}

/// Decode into caller-provided outputs (`o [B, Sq_new, Hq, Dv]` in q's dtype, `lse [B, Hq, Sq_new]`
/// f32) with index data uploaded beforehand ([`DeviceKvIndex::new`] from the same cache). For
/// many layers of one step, [`DecodeLaunch`] also keeps the plan and the workspace.
#[allow(clippy::too_many_arguments)]
pub fn decode_cuda_with_index<T: DeviceRead, O: DeviceWrite>(
    gpu: &Gpu,
    cfg: &AttentionConfig,
    q: &T,
    cache: &KvCacheRef<'_, T>,
    index: &DeviceKvIndex,
    alibi_slopes: Option<&T>,
    opts: &DecodeOptions,
    o: &mut O,
    lse: &mut O,
) -> Result<()> {
    let p = plan(cfg, q, cache, alibi_slopes, opts)?;
    check_gpu_decode(&p)?;
    if !index.matches(cache) {
        return Err(Error::invalid(
            "index",
            "DeviceKvIndex was made from other cache_seqlens / block_table than this cache's",
        ));
    }
    // The caller's index may come from another handle: `enqueue` waits for its uploads.
    let mut launch = DecodeLaunch::prepare(gpu, p, q, cache, alibi_slopes, None, opts)?;
    launch.enqueue(gpu, index, q, [cache.k(), cache.v()], alibi_slopes, o, lse)
}

/// The split count a decode with this plan uses on `gpu`.
pub fn num_splits(gpu: &Gpu, p: &DecodePlan, split: SplitPolicy) -> usize {
    let rows = p.heads_q / p.heads_kv * p.seqlen_q;
    let row_tiles = rows.div_ceil(rows_per_cta(rows)).max(1);
    match split {
        SplitPolicy::Fixed(n) => n,
        SplitPolicy::Auto => {
            auto_splits(gpu.info().multiprocessors.max(1) as usize, p.batch, p.heads_kv, row_tiles, p.max_seqlen())
        }
    }
}

/// Append on the GPU (see [`super::append_kv_cpu`]): writes rows `cache_seqlens[b] + t`,
/// rotating K when `rope` is given; returns the new lengths. Validated before any write.
///
/// Owned or borrowed tensors: the cache with any block, row and head strides (16-byte aligned
/// rows), `k_new` and `v_new` packed and not overlapping the cache.
pub fn append_kv_cuda<T: DeviceRead, C: DeviceWrite>(
    gpu: &Gpu,
    cache: &mut KvCacheMut<'_, C>,
    k_new: &T,
    v_new: &T,
    rope: Option<&RopeConfig>,
) -> Result<Vec<i32>> {
    let p = plan_append(&cache.as_ref(), k_new, v_new, rope)?;
    let (kc, vc) = cache.kv_mut();
    let (kcp, vcp, knp, vnp) = (kc.parts(), vc.parts(), k_new.parts(), v_new.parts());
    check_views(
        &[("k_new", Some(knp), Packed), ("v_new", Some(vnp), Packed)],
        &[("k_cache", Some(kcp), Strided), ("v_cache", Some(vcp), Strided)],
    )?;
    let new_lens: Vec<i32> = p.old_seqlens.iter().map(|&s| (s + p.seqlen_new) as i32).collect();
    if p.batch == 0 || p.seqlen_new == 0 {
        return Ok(new_lens);
    }
    let log2 = log2_block(&p.layout)?;
    let rows = p.batch * p.seqlen_new * p.heads_kv;
    fits_i32("k_new", "B * Sq_new * Hkv", rows)?;
    let index = DeviceKvIndex::upload(gpu, &cache.as_ref())?;
    let table = match &p.rope {
        Some(r) => Some(rope_table(gpu, r, p.max_position)?),
        None => None,
    };
    let max_blocks = match p.layout {
        CacheLayout::Paged { max_blocks, .. } => max_blocks,
        CacheLayout::Contiguous { .. } => 0,
    };
    let (kb, kr, kh) = cache_strides(&kcp);
    let (vb, vr, vh) = cache_strides(&vcp);
    let params = AkAppendKvParams {
        k_new: knp.ptr(),
        v_new: vnp.ptr(),
        k_cache: kcp.ptr_mut(),
        v_cache: vcp.ptr_mut(),
        block_table: index.block_table.as_ref().map_or(std::ptr::null(), |t| t.kernel_ptr() as *const i32),
        cache_seqlens: index.seqlens.kernel_ptr() as *const i32,
        rope: table.as_ref().map_or_else(no_rope, |t| t.params()),
        k_block_stride: kb,
        k_row_stride: kr,
        k_head_stride: kh,
        v_block_stride: vb,
        v_row_stride: vr,
        v_head_stride: vh,
        batch: p.batch as i32,
        seqlen_new: p.seqlen_new as i32,
        heads_kv: p.heads_kv as i32,
        head_dim: fits_i32("k_new", "D", p.head_dim)?,
        head_dim_v: fits_i32("v_new", "Dv", p.head_dim_v)?,
        max_blocks: fits_i32("block_table", "max_blocks", max_blocks)?,
        block_size_log2: log2,
        dtype: p.dtype.kernel_code(),
    };
    let append = kernel("k_new", Key::AppendKv { dtype: kernel_dtype("k_new", p.dtype)? })?;
    gpu.launch(append, (rows as u32, 1, 1), &params)?;
    Ok(new_lens)
}

/// `merge_states` on the GPU: returns `(o, lse)` (see docs/merge_states.md).
pub fn merge_states_cuda<T: DeviceRead>(
    gpu: &Gpu,
    o_a: &T,
    lse_a: &T,
    o_b: &T,
    lse_b: &T,
) -> Result<(DeviceTensor, DeviceTensor)> {
    plan_merge(o_a, lse_a, o_b, lse_b)?;
    let mut o = gpu.alloc_output(o_a.dtype(), o_a.shape())?;
    let mut lse = gpu.alloc_output(DType::F32, lse_a.shape())?;
    merge_states_cuda_into(gpu, o_a, lse_a, o_b, lse_b, &mut o, &mut lse)?;
    Ok((o, lse))
}

/// `merge_states` into caller-provided outputs (shapes and dtypes of `o_a` and `lse_a`).
/// Owned or borrowed tensors, all packed; the outputs may not overlap the inputs.
pub fn merge_states_cuda_into<T: DeviceRead, O: DeviceWrite>(
    gpu: &Gpu,
    o_a: &T,
    lse_a: &T,
    o_b: &T,
    lse_b: &T,
    o: &mut O,
    lse: &mut O,
) -> Result<()> {
    let (b, s, h, dv, _) = plan_merge(o_a, lse_a, o_b, lse_b)?;
    expect_shape("o", o, o_a.shape())?;
    if o.dtype() != o_a.dtype() {
        return Err(Error::DType {
            arg: "o".into(),
            expected: format!("{} (the dtype of `o_a`)", o_a.dtype()),
            got: o.dtype(),
        });
    }
    expect_shape("lse", lse, lse_a.shape())?;
    if lse.dtype() != DType::F32 {
        return Err(Error::DType { arg: "lse".into(), expected: "f32".into(), got: lse.dtype() });
    }
    let [oa, la, ob, lb] = [o_a.parts(), lse_a.parts(), o_b.parts(), lse_b.parts()];
    let (op, lp) = (o.parts(), lse.parts());
    check_views(
        &[("o_a", Some(oa), Packed), ("lse_a", Some(la), Packed), ("o_b", Some(ob), Packed), ("lse_b", Some(lb), Packed)],
        &[("o", Some(op), Packed), ("lse", Some(lp), Packed)],
    )?;
    let rows = b * s * h;
    if rows == 0 || dv == 0 {
        return Ok(());
    }
    let params = AkMergeStatesParams {
        o_a: oa.ptr(),
        lse_a: la.ptr() as *const f32,
        o_b: ob.ptr(),
        lse_b: lb.ptr() as *const f32,
        o: op.ptr_mut(),
        lse: lp.ptr_mut() as *mut f32,
        batch: fits_i32("o_a", "B", b)?,
        seqlen: fits_i32("o_a", "S", s)?,
        heads: fits_i32("o_a", "H", h)?,
        head_dim_v: fits_i32("o_a", "Dv", dv)?,
        dtype: o_a.dtype().kernel_code(),
    };
    let merge = kernel("o_a", Key::MergeStates { dtype: kernel_dtype("o_a", o_a.dtype())? })?;
    let blocks = fits_i32("o_a", "B * S * H / rows per block", rows.div_ceil(merge.rows as usize))? as u32;
    gpu.launch(merge, (blocks, 1, 1), &params)
}
