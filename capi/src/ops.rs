//! One entry point per op: the device handle, a stream, the op's config as JSON, tensor
//! descriptors and host index arrays. Each builds borrowed views of the descriptors (errors name
//! `arg.field`), a handle on the caller's stream, and calls the library's CUDA path, which
//! validates everything before it enqueues anything: on an error nothing was written.
//!
//! Common contract (the `# Safety` of every entry): `dev` is a live handle; `stream` is NULL
//! (the legacy default stream) or a live stream of the device's primary context; every
//! descriptor pointer is NULL (only where the argument is optional) or points to a valid
//! `ak_tensor` naming device memory of that context that stays allocated until the op has run
//! on `stream`; inputs are not written and outputs not read or written by other work until then
//! (unless ordered on `stream`); each index array's `data` is NULL or holds `len` int32 values;
//! `config_json` is NULL or NUL-terminated.

use crate::{
    config, config_object, from_object, guard, i32_array, opt_view, opt_view_mut, required, view, view_mut, AkDevice, AkI32Array, AkStatus,
    AkTensor, CUstream_st, Failure, Res,
};
use attn_kernels::attention::{cuda::attention_cuda_into, AttentionArgs, AttentionConfig};
use attn_kernels::decode::cuda::{append_kv_cuda, merge_states_cuda_into, DecodeLaunch};
use attn_kernels::decode::{DecodeOptions, KvCacheMut, KvCacheRef, SplitPolicy};
use attn_kernels::diff_attention::cuda::{diff_attention_cuda_into, DiffDecodeLaunch};
use attn_kernels::diff_attention::{plan_diff, DiffAttentionArgs, DiffAttentionConfig, DiffAttentionOutput, DiffDecodeArgs};
use attn_kernels::linear::cuda::{delta_rule_cuda_into, linear_attention_cuda_into, LinearMode};
use attn_kernels::linear::{plan_delta_rule, plan_linear, DeltaRuleArgs, DeltaRuleConfig, LinearArgs, LinearAttentionConfig, RecurrentOutput};
use attn_kernels::rope::cuda::{rope_cuda_inplace, rope_cuda_into};
use attn_kernels::rope::{RopeArgs, RopeConfig, RopeOpConfig};
use attn_kernels::{DType, DeviceTensor, DeviceView, DeviceViewMut, Error, Gpu};
use std::ffi::c_char;

/// `attention` (docs/ops.md section 2): `o = softmax(scale * q k^T + masks) v`, dense
/// (`q [B, Sq, Hq, D]`, `k [B, Sk, Hkv, D]`, `v [B, Sk, Hkv, Dv]`, `o [B, Sq, Hq, Dv]`,
/// `lse [B, Hq, Sq]` f32) or varlen (`cu_seqlens_q` and `cu_seqlens_k` given: `q [total_q, Hq,
/// D]` ..., `lse [Hq, total_q]`). `config_json` holds the `AttentionConfig` keys
/// (`softmax_scale`, `causal`, `window_left`, `window_right`, `softcap`, `rope`); NULL = all
/// defaults. `alibi_slopes` (f32 `[Hq]`) and `lse` may be NULL; absent index arrays have
/// `data = NULL`. Any batch, row and head strides; the head dimension contiguous; 16-byte
/// aligned rows.
///
/// # Safety
/// The common contract of the ops (capi/README.md, "Safety contract of the ops").
#[no_mangle]
pub unsafe extern "C" fn ak_attention(
    dev: *const AkDevice,
    stream: *mut CUstream_st,
    config_json: *const c_char,
    q: *const AkTensor,
    k: *const AkTensor,
    v: *const AkTensor,
    alibi_slopes: *const AkTensor,
    cu_seqlens_q: AkI32Array,
    cu_seqlens_k: AkI32Array,
    position_ids_q: AkI32Array,
    position_ids_k: AkI32Array,
    o: *const AkTensor,
    lse: *const AkTensor,
) -> AkStatus {
    guard(|| {
        // SAFETY: the common contract of this module: a live handle, NULL or NUL-terminated
        // JSON, valid descriptors naming device memory that lives until the op has run.
        let (dev, cfg, q, k, v, alibi, mut o, mut lse) = unsafe {
            (
                required("dev", dev)?,
                config::<AttentionConfig>(config_json)?,
                view("q", required("q", q)?)?,
                view("k", required("k", k)?)?,
                view("v", required("v", v)?)?,
                opt_view("alibi_slopes", alibi_slopes)?,
                view_mut("o", required("o", o)?)?,
                opt_view_mut("lse", lse)?,
            )
        };
        let mut args = AttentionArgs::new(&q, &k, &v);
        args.alibi_slopes = alibi.as_ref();
        // SAFETY: the common contract: each array is absent or holds `len` int32 values.
        unsafe {
            args.cu_seqlens_q = i32_array("cu_seqlens_q", cu_seqlens_q)?;
            args.cu_seqlens_k = i32_array("cu_seqlens_k", cu_seqlens_k)?;
            args.position_ids_q = i32_array("position_ids_q", position_ids_q)?;
            args.position_ids_k = i32_array("position_ids_k", position_ids_k)?;
        }
        // SAFETY: the common contract: NULL or a live stream of the device's primary context.
        let gpu = unsafe { dev.on_stream(stream) };
        Ok(attention_cuda_into(&gpu, &cfg, &args, &mut o, lse.as_mut())?)
    })
}

/// Standalone `rope` (docs/ops.md section 3): rotate `x [B, S, H, D]` or `x [total, H, D]`
/// (f32, f16, bf16) into `y` (same shape and dtype), or in place when `y` is NULL. `config_json`
/// holds the `RopeOpConfig` keys: `rope` (required: the RoPE config) and `position_offset`.
/// Positions: `position_ids` (one per row) if given, else from `cu_seqlens` (rank 3), else
/// `position_offset + s`.
///
/// # Safety
/// The common contract of the ops (capi/README.md, "Safety contract of the ops"); with `y` NULL,
/// `x` is written.
#[no_mangle]
pub unsafe extern "C" fn ak_rope(
    dev: *const AkDevice,
    stream: *mut CUstream_st,
    config_json: *const c_char,
    x: *const AkTensor,
    position_ids: AkI32Array,
    cu_seqlens: AkI32Array,
    y: *const AkTensor,
) -> AkStatus {
    guard(|| {
        // SAFETY: the common contract: a live handle, NULL or NUL-terminated JSON, valid
        // descriptors and index arrays, NULL or a live stream of the device's primary context.
        let (cfg, position_ids, cu_seqlens, gpu, x) = unsafe {
            let dev = required("dev", dev)?;
            (
                config::<RopeOpConfig>(config_json)?,
                i32_array("position_ids", position_ids)?,
                i32_array("cu_seqlens", cu_seqlens)?,
                dev.on_stream(stream),
                required("x", x)?,
            )
        };
        if y.is_null() {
            // SAFETY: the common contract; in place, `x` names memory kernels may write.
            let mut xm = unsafe { view_mut("x", x) }?;
            return Ok(rope_cuda_inplace(&gpu, &cfg, &mut xm, position_ids, cu_seqlens)?);
        }
        // SAFETY: the common contract.
        let (xv, mut yv) = unsafe { (view("x", x)?, view_mut("y", required("y", y)?)?) };
        let args = RopeArgs { x: &xv, position_ids, cu_seqlens };
        Ok(rope_cuda_into(&gpu, &cfg, &args, &mut yv)?)
    })
}

/// The decode options of a config object (keys `cache_keys_rotated`, `num_splits`), removed
/// from it; the rest is the attention config.
fn decode_options(m: &mut serde_json::Map<String, serde_json::Value>) -> Res<DecodeOptions> {
    let bad = |key: &str, what: &str| Failure::from(Error::config(format!("config_json.{key}"), what.to_string()));
    let cache_keys_rotated = match m.remove("cache_keys_rotated") {
        None | Some(serde_json::Value::Null) => false,
        Some(v) => v.as_bool().ok_or_else(|| bad("cache_keys_rotated", "expected true or false"))?,
    };
    let split = match m.remove("num_splits") {
        None | Some(serde_json::Value::Null) => SplitPolicy::Auto,
        Some(v) => match v.as_u64() {
            Some(0) => SplitPolicy::Auto,
            Some(n) => SplitPolicy::Fixed(usize::try_from(n).map_err(|_| bad("num_splits", "too large"))?),
            None => return Err(bad("num_splits", "expected a non-negative integer (0 or absent: automatic)")),
        },
    };
    Ok(DecodeOptions { split, cache_keys_rotated })
}

/// A KV cache from its tensors and host index data: paged when `block_table` is given.
fn cache<'a, T>(k: &'a T, v: &'a T, cache_seqlens: Option<&'a [i32]>, block_table: Option<&'a [i32]>, max_blocks: i64) -> Res<KvCacheRef<'a, T>> {
    let cache_seqlens = cache_seqlens.ok_or_else(|| Failure::null("cache_seqlens.data"))?;
    Ok(match block_table {
        None => KvCacheRef::Contiguous { k, v, cache_seqlens },
        Some(block_table) => KvCacheRef::Paged { k, v, block_table, max_blocks: max_blocks_of(max_blocks)?, cache_seqlens },
    })
}

fn max_blocks_of(max_blocks: i64) -> Res<usize> {
    Ok(usize::try_from(max_blocks).map_err(|_| Error::invalid("max_blocks", format!("{max_blocks} is negative")))?)
}

/// KV-cache `decode_attention` (docs/ops.md section 6): `q [B, Sq_new, Hq, D]` against the first
/// `cache_seqlens[b]` keys (the lengths after the append) of a contiguous cache (`k_cache
/// [B, S_max, Hkv, D]`, `v_cache [B, S_max, Hkv, Dv]`, `block_table.data` NULL) or a paged one
/// (`k_cache [num_blocks, block_size, Hkv, D]`, ..., host `block_table [B, max_blocks]`
/// row-major). Outputs `o [B, Sq_new, Hq, Dv]` (q's dtype) and `lse [B, Hq, Sq_new]` (f32; may be
/// NULL). `config_json`: the `attention` keys plus `cache_keys_rotated` (bool) and
/// `num_splits` (0 or absent: automatic). The caches take any block, row and head strides
/// (16-byte aligned rows); q, o and lse are packed.
///
/// # Safety
/// The common contract of the ops (capi/README.md, "Safety contract of the ops").
#[no_mangle]
pub unsafe extern "C" fn ak_decode_attention(
    dev: *const AkDevice,
    stream: *mut CUstream_st,
    config_json: *const c_char,
    q: *const AkTensor,
    k_cache: *const AkTensor,
    v_cache: *const AkTensor,
    alibi_slopes: *const AkTensor,
    cache_seqlens: AkI32Array,
    block_table: AkI32Array,
    max_blocks: i64,
    o: *const AkTensor,
    lse: *const AkTensor,
) -> AkStatus {
    guard(|| {
        // SAFETY: the common contract: a live handle, NULL or NUL-terminated JSON, valid
        // descriptors and index arrays, NULL or a live stream of the device's primary context.
        let (mut m, q, k, v, alibi, mut o, lse, seqlens, table, gpu) = unsafe {
            let dev = required("dev", dev)?;
            (
                config_object(config_json)?,
                view("q", required("q", q)?)?,
                view("k_cache", required("k_cache", k_cache)?)?,
                view("v_cache", required("v_cache", v_cache)?)?,
                opt_view("alibi_slopes", alibi_slopes)?,
                view_mut("o", required("o", o)?)?,
                opt_view_mut("lse", lse)?,
                i32_array("cache_seqlens", cache_seqlens)?,
                i32_array("block_table", block_table)?,
                dev.on_stream(stream),
            )
        };
        let opts = decode_options(&mut m)?;
        let cfg: AttentionConfig = from_object(m)?;
        let kv = cache(&k, &v, seqlens, table, max_blocks)?;
        let mut launch = DecodeLaunch::new(&gpu, &cfg, &q, &kv, alibi.as_ref(), &opts)?;
        let mut scratch = None;
        let lse_shape = launch.plan().lse_shape();
        let mut lse = or_scratch(&gpu, lse, &mut scratch, DType::F32, || Ok(lse_shape))?;
        Ok(launch.launch(&gpu, &q, [&k, &v], alibi.as_ref(), &mut o, &mut lse)?)
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendConfig {
    /// Rotate the new keys at their positions as they are written.
    #[serde(default)]
    rope: Option<RopeConfig>,
}

/// `append_kv` (docs/ops.md section 6): write `k_new [B, Sq_new, Hkv, D]` and `v_new [B, Sq_new,
/// Hkv, Dv]` (packed) into rows `cache_seqlens[b] ..` (the lengths before the append) of a
/// contiguous or paged cache (as `ak_decode_attention`), rotating the keys when `config_json`
/// has a `rope` config (NULL: no rotation). When `new_seqlens` is not NULL it receives the B
/// lengths after the append (pass them to `ak_decode_attention`).
///
/// # Safety
/// The common contract of the ops (capi/README.md, "Safety contract of the ops"); the caches are
/// written; `new_seqlens` is NULL or has room for `cache_seqlens.len` int32 values.
#[no_mangle]
pub unsafe extern "C" fn ak_append_kv(
    dev: *const AkDevice,
    stream: *mut CUstream_st,
    config_json: *const c_char,
    k_cache: *const AkTensor,
    v_cache: *const AkTensor,
    cache_seqlens: AkI32Array,
    block_table: AkI32Array,
    max_blocks: i64,
    k_new: *const AkTensor,
    v_new: *const AkTensor,
    new_seqlens: *mut i32,
) -> AkStatus {
    guard(|| {
        // SAFETY: the common contract: a live handle, NULL or NUL-terminated JSON, valid
        // descriptors and index arrays, NULL or a live stream of the device's primary context.
        let (cfg, mut k, mut v, k_new, v_new, seqlens, table, gpu) = unsafe {
            let dev = required("dev", dev)?;
            (
                config::<AppendConfig>(config_json)?,
                view_mut("k_cache", required("k_cache", k_cache)?)?,
                view_mut("v_cache", required("v_cache", v_cache)?)?,
                view("k_new", required("k_new", k_new)?)?,
                view("v_new", required("v_new", v_new)?)?,
                i32_array("cache_seqlens", cache_seqlens)?,
                i32_array("block_table", block_table)?,
                dev.on_stream(stream),
            )
        };
        let cache_seqlens = seqlens.ok_or_else(|| Failure::null("cache_seqlens.data"))?;
        let mut kv: KvCacheMut<'_, DeviceViewMut<'_>> = match table {
            None => KvCacheMut::Contiguous { k: &mut k, v: &mut v, cache_seqlens },
            Some(block_table) => KvCacheMut::Paged { k: &mut k, v: &mut v, block_table, max_blocks: max_blocks_of(max_blocks)?, cache_seqlens },
        };
        let lens = append_kv_cuda::<DeviceView<'_>, _>(&gpu, &mut kv, &k_new, &v_new, cfg.rope.as_ref())?;
        if !new_seqlens.is_null() {
            // SAFETY: the caller's promise: room for `cache_seqlens.len` values, which is the
            // number of lengths append_kv returns (one per sequence).
            let out = unsafe { std::slice::from_raw_parts_mut(new_seqlens, lens.len()) };
            out.copy_from_slice(&lens);
        }
        Ok(())
    })
}

/// `merge_states` (docs/merge_states.md): two attention results over disjoint key sets,
/// `(o_a, lse_a)` and `(o_b, lse_b)` (`o [B, S, H, Dv]` with `lse [B, H, S]` f32, or `o [T, H, Dv]`
/// with `lse [H, T]`), into the result over their union `(o, lse)`. All packed.
///
/// # Safety
/// The common contract of the ops (capi/README.md, "Safety contract of the ops").
#[no_mangle]
pub unsafe extern "C" fn ak_merge_states(
    dev: *const AkDevice,
    stream: *mut CUstream_st,
    o_a: *const AkTensor,
    lse_a: *const AkTensor,
    o_b: *const AkTensor,
    lse_b: *const AkTensor,
    o: *const AkTensor,
    lse: *const AkTensor,
) -> AkStatus {
    guard(|| {
        // SAFETY: the common contract: a live handle, valid descriptors, NULL or a live stream
        // of the device's primary context.
        let (o_a, lse_a, o_b, lse_b, mut o, mut lse, gpu) = unsafe {
            let dev = required("dev", dev)?;
            (
                view("o_a", required("o_a", o_a)?)?,
                view("lse_a", required("lse_a", lse_a)?)?,
                view("o_b", required("o_b", o_b)?)?,
                view("lse_b", required("lse_b", lse_b)?)?,
                view_mut("o", required("o", o)?)?,
                view_mut("lse", required("lse", lse)?)?,
                dev.on_stream(stream),
            )
        };
        Ok(merge_states_cuda_into(&gpu, &o_a, &lse_a, &o_b, &lse_b, &mut o, &mut lse)?)
    })
}

/// The caller's output, or (when the caller passed NULL) a view of a stream-ordered scratch
/// tensor of `shape` kept in `scratch`, freed on the same stream after the kernels that write it.
fn or_scratch<'a>(
    gpu: &Gpu,
    given: Option<DeviceViewMut<'a>>,
    scratch: &'a mut Option<DeviceTensor>,
    dtype: DType,
    shape: impl FnOnce() -> Res<Vec<usize>>,
) -> Res<DeviceViewMut<'a>> {
    Ok(match given {
        Some(v) => v,
        None => scratch.insert(gpu.alloc(dtype, &shape()?)?).view_mut(),
    })
}

/// Differential attention prefill (docs/ops.md section 4), both variants. v1: `q [B, Sq, 2H, d]`,
/// `k [B, Sk, 2Hkv, d]`, `v [B, Sk, Hkv, 2d]`, `lambda` f32 `[H]`, optional `norm_weight [2d]`,
/// `o [B, Sq, H, 2d]`; v2: `q [B, Sq, 2H, D]`, `k, v [B, Sk, Hkv, D]`, `lambda` f32 `[B, Sq, H]`,
/// `o [B, Sq, H, D]`. `lse1`, `lse2` f32 `[B, H, Sq]` (may be NULL). Varlen with both
/// `cu_seqlens_q/k` (rank-3 q, k, v). `config_json`: the `attention` keys plus `variant`
/// ("v1"/"v2"), `lambda_init`, `eps`. `norm_weight` and `alibi_slopes` may be NULL.
///
/// # Safety
/// The common contract of the ops (capi/README.md, "Safety contract of the ops").
#[no_mangle]
pub unsafe extern "C" fn ak_diff_attention(
    dev: *const AkDevice,
    stream: *mut CUstream_st,
    config_json: *const c_char,
    q: *const AkTensor,
    k: *const AkTensor,
    v: *const AkTensor,
    lambda: *const AkTensor,
    norm_weight: *const AkTensor,
    alibi_slopes: *const AkTensor,
    cu_seqlens_q: AkI32Array,
    cu_seqlens_k: AkI32Array,
    position_ids_q: AkI32Array,
    position_ids_k: AkI32Array,
    o: *const AkTensor,
    lse1: *const AkTensor,
    lse2: *const AkTensor,
) -> AkStatus {
    guard(|| {
        // SAFETY: the common contract: a live handle, NULL or NUL-terminated JSON, valid
        // descriptors and index arrays, NULL or a live stream of the device's primary context.
        let (cfg, q, k, v, lambda, norm, alibi, o, lse1, lse2, gpu) = unsafe {
            let dev = required("dev", dev)?;
            (
                config::<DiffAttentionConfig>(config_json)?,
                view("q", required("q", q)?)?,
                view("k", required("k", k)?)?,
                view("v", required("v", v)?)?,
                view("lambda", required("lambda", lambda)?)?,
                opt_view("norm_weight", norm_weight)?,
                opt_view("alibi_slopes", alibi_slopes)?,
                view_mut("o", required("o", o)?)?,
                opt_view_mut("lse1", lse1)?,
                opt_view_mut("lse2", lse2)?,
                dev.on_stream(stream),
            )
        };
        let mut args = DiffAttentionArgs::new(&q, &k, &v, &lambda);
        args.norm_weight = norm.as_ref();
        args.alibi_slopes = alibi.as_ref();
        // SAFETY: the common contract: each array is absent or holds `len` int32 values.
        unsafe {
            args.cu_seqlens_q = i32_array("cu_seqlens_q", cu_seqlens_q)?;
            args.cu_seqlens_k = i32_array("cu_seqlens_k", cu_seqlens_k)?;
            args.position_ids_q = i32_array("position_ids_q", position_ids_q)?;
            args.position_ids_k = i32_array("position_ids_k", position_ids_k)?;
        }
        let lse_shape = || Ok(plan_diff(&cfg, &args)?.lse_shape());
        let (mut s1, mut s2) = (None, None);
        let lse1 = or_scratch(&gpu, lse1, &mut s1, DType::F32, lse_shape)?;
        let lse2 = or_scratch(&gpu, lse2, &mut s2, DType::F32, lse_shape)?;
        let mut out = DiffAttentionOutput { o, lse1, lse2 };
        Ok(diff_attention_cuda_into(&gpu, &cfg, &args, &mut out)?)
    })
}

/// Differential attention decode over a KV cache (docs/ops.md section 4, v1 layout):
/// `q [B, 1, 2H, d]` against caches of `Hkv` heads of width `2d` (`k_cache` holds `[k1 | k2]`,
/// `v_cache` V), contiguous (`[B, S_max, Hkv, 2d]`) or paged (`[num_blocks, block_size, Hkv,
/// 2d]` with a host `block_table [B, max_blocks]`), the first `cache_seqlens[b]` keys. `lambda`
/// f32 `[H]`; `norm_weight [2d]` and `alibi_slopes [H]` may be NULL. Outputs `o [B, 1, H, 2d]`,
/// `lse1`, `lse2` f32 `[B, H, 1]` (may be NULL). `config_json`: the `ak_diff_attention` keys
/// plus `num_splits` (0 or absent: automatic).
///
/// # Safety
/// The common contract of the ops (capi/README.md, "Safety contract of the ops").
#[no_mangle]
pub unsafe extern "C" fn ak_diff_decode(
    dev: *const AkDevice,
    stream: *mut CUstream_st,
    config_json: *const c_char,
    q: *const AkTensor,
    k_cache: *const AkTensor,
    v_cache: *const AkTensor,
    lambda: *const AkTensor,
    norm_weight: *const AkTensor,
    alibi_slopes: *const AkTensor,
    cache_seqlens: AkI32Array,
    block_table: AkI32Array,
    max_blocks: i64,
    o: *const AkTensor,
    lse1: *const AkTensor,
    lse2: *const AkTensor,
) -> AkStatus {
    guard(|| {
        // SAFETY: the common contract: a live handle, NULL or NUL-terminated JSON, valid
        // descriptors and index arrays, NULL or a live stream of the device's primary context.
        let (mut m, q, k, v, lambda, norm, alibi, seqlens, table, o, lse1, lse2, gpu) = unsafe {
            let dev = required("dev", dev)?;
            (
                config_object(config_json)?,
                view("q", required("q", q)?)?,
                view("k_cache", required("k_cache", k_cache)?)?,
                view("v_cache", required("v_cache", v_cache)?)?,
                view("lambda", required("lambda", lambda)?)?,
                opt_view("norm_weight", norm_weight)?,
                opt_view("alibi_slopes", alibi_slopes)?,
                i32_array("cache_seqlens", cache_seqlens)?,
                i32_array("block_table", block_table)?,
                view_mut("o", required("o", o)?)?,
                opt_view_mut("lse1", lse1)?,
                opt_view_mut("lse2", lse2)?,
                dev.on_stream(stream),
            )
        };
        if m.contains_key("cache_keys_rotated") {
            return Err(Error::config("config_json.cache_keys_rotated", "not an option of diff_attention decode").into());
        }
        let split = decode_options(&mut m)?.split;
        let cfg: DiffAttentionConfig = from_object(m)?;
        let args = DiffDecodeArgs { q: &q, cache: cache(&k, &v, seqlens, table, max_blocks)?, lambda: &lambda, norm_weight: norm.as_ref(), alibi_slopes: alibi.as_ref() };
        let mut launch = DiffDecodeLaunch::new(&gpu, &cfg, &args, split)?;
        let lse_shape = launch.plan().lse_shape();
        let (mut s1, mut s2) = (None, None);
        let lse1 = or_scratch(&gpu, lse1, &mut s1, DType::F32, || Ok(lse_shape.clone()))?;
        let lse2 = or_scratch(&gpu, lse2, &mut s2, DType::F32, || Ok(lse_shape.clone()))?;
        Ok(launch.launch(&gpu, &args, &mut DiffAttentionOutput { o, lse1, lse2 })?)
    })
}

/// The `mode` key of a linear config ("auto", "recurrent", "decode", "chunked"), removed.
fn linear_mode(m: &mut serde_json::Map<String, serde_json::Value>) -> Res<LinearMode> {
    Ok(match m.remove("mode") {
        None | Some(serde_json::Value::Null) => LinearMode::Auto,
        Some(v) => match v.as_str() {
            Some("auto") => LinearMode::Auto,
            Some("recurrent") => LinearMode::Recurrent,
            Some("decode") => LinearMode::Decode,
            Some("chunked") => LinearMode::Chunked,
            _ => return Err(Error::config("config_json.mode", format!("expected \"auto\", \"recurrent\", \"decode\" or \"chunked\", got {v}")).into()),
        },
    })
}

/// `linear_attention` (docs/ops.md section 5, diagonal decay): `q, k [B, T, H, K]`, `v [B, T, H,
/// V]`, optional log decay `g` (`[B, T, H, K]`, `[B, T, H]`, `[H, K]` or `[H]`), optional RWKV
/// bonus `u [H, K]`, optional f32 `initial_state [B, H, K, V]` (NULL: zeros); varlen with
/// `cu_seqlens` (`B = 1`, states `[N, H, K, V]`). Outputs `o [B, T, H, V]` (q's dtype) and f32
/// `final_state` like the initial state (may be NULL). `config_json`: `scale` (default
/// `1/sqrt(K)`) and `mode` ("auto" default, "recurrent", "decode", "chunked").
///
/// # Safety
/// The common contract of the ops (capi/README.md, "Safety contract of the ops").
#[no_mangle]
pub unsafe extern "C" fn ak_linear_attention(
    dev: *const AkDevice,
    stream: *mut CUstream_st,
    config_json: *const c_char,
    q: *const AkTensor,
    k: *const AkTensor,
    v: *const AkTensor,
    g: *const AkTensor,
    u: *const AkTensor,
    initial_state: *const AkTensor,
    cu_seqlens: AkI32Array,
    o: *const AkTensor,
    final_state: *const AkTensor,
) -> AkStatus {
    guard(|| {
        // SAFETY: the common contract: a live handle, NULL or NUL-terminated JSON, valid
        // descriptors and index arrays, NULL or a live stream of the device's primary context.
        let (mut m, q, k, v, g, u, s0, cu, o, fs, gpu) = unsafe {
            let dev = required("dev", dev)?;
            (
                config_object(config_json)?,
                view("q", required("q", q)?)?,
                view("k", required("k", k)?)?,
                view("v", required("v", v)?)?,
                opt_view("g", g)?,
                opt_view("u", u)?,
                opt_view("initial_state", initial_state)?,
                i32_array("cu_seqlens", cu_seqlens)?,
                view_mut("o", required("o", o)?)?,
                opt_view_mut("final_state", final_state)?,
                dev.on_stream(stream),
            )
        };
        let mode = linear_mode(&mut m)?;
        let cfg: LinearAttentionConfig = from_object(m)?;
        let args = LinearArgs { q: &q, k: &k, v: &v, g: g.as_ref(), u: u.as_ref(), initial_state: s0.as_ref(), cu_seqlens: cu };
        let mut scratch = None;
        let final_state = or_scratch(&gpu, fs, &mut scratch, DType::F32, || Ok(plan_linear(&cfg, &args)?.state_shape().to_vec()))?;
        Ok(linear_attention_cuda_into(&gpu, &cfg, &args, mode, &mut RecurrentOutput { o, final_state })?)
    })
}

/// `delta_rule` (docs/ops.md section 5, diagonal plus rank one: RWKV-7, DeltaNet): `q, k, a, b
/// [B, T, H, K]`, `v [B, T, H, V]`, optional log decay `g` (as `ak_linear_attention`), optional
/// f32 `initial_state [B, H, K, V]`; varlen with `cu_seqlens`. Outputs `o [B, T, H, V]` and f32
/// `final_state` (may be NULL). `config_json`: `scale` and `mode` ("auto", "recurrent",
/// "decode").
///
/// # Safety
/// The common contract of the ops (capi/README.md, "Safety contract of the ops").
#[no_mangle]
pub unsafe extern "C" fn ak_delta_rule(
    dev: *const AkDevice,
    stream: *mut CUstream_st,
    config_json: *const c_char,
    q: *const AkTensor,
    k: *const AkTensor,
    v: *const AkTensor,
    a: *const AkTensor,
    b: *const AkTensor,
    g: *const AkTensor,
    initial_state: *const AkTensor,
    cu_seqlens: AkI32Array,
    o: *const AkTensor,
    final_state: *const AkTensor,
) -> AkStatus {
    guard(|| {
        // SAFETY: the common contract: a live handle, NULL or NUL-terminated JSON, valid
        // descriptors and index arrays, NULL or a live stream of the device's primary context.
        let (mut m, q, k, v, a, b, g, s0, cu, o, fs, gpu) = unsafe {
            let dev = required("dev", dev)?;
            (
                config_object(config_json)?,
                view("q", required("q", q)?)?,
                view("k", required("k", k)?)?,
                view("v", required("v", v)?)?,
                view("a", required("a", a)?)?,
                view("b", required("b", b)?)?,
                opt_view("g", g)?,
                opt_view("initial_state", initial_state)?,
                i32_array("cu_seqlens", cu_seqlens)?,
                view_mut("o", required("o", o)?)?,
                opt_view_mut("final_state", final_state)?,
                dev.on_stream(stream),
            )
        };
        let mode = linear_mode(&mut m)?;
        let cfg: DeltaRuleConfig = from_object(m)?;
        let args = DeltaRuleArgs { q: &q, k: &k, v: &v, a: &a, b: &b, g: g.as_ref(), initial_state: s0.as_ref(), cu_seqlens: cu };
        let mut scratch = None;
        let final_state = or_scratch(&gpu, fs, &mut scratch, DType::F32, || Ok(plan_delta_rule(&cfg, &args)?.state_shape().to_vec()))?;
        Ok(delta_rule_cuda_into(&gpu, &cfg, &args, mode, &mut RecurrentOutput { o, final_state })?)
    })
}
