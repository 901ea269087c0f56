//! Differential attention (spec section 3; Ye et al., ICLR 2025): two softmax maps per head,
//! `O = A1 V - lambda A2 V`, with an optional fused RMSNorm (variant v1), or the per-token
//! lambda of Differential Transformer V2 (variant v2).
//!
//! Validation lives in [`plan_diff`] (one routine for host and device tensors); the CPU
//! backend [`diff_attention_cpu`] runs both maps through the attention CPU machinery
//! (`crate::attention::cpu`) and combines them in f32; `oracle` (feature `oracle`) is the float64
//! test oracle.
//!
//! # Layouts
//! - v1: `q [B, Sq, 2H, d]`, `k [B, Sk, 2Hkv, d]`, `v [B, Sk, Hkv, 2d]`, `lambda` f32 `[H]`,
//!   optional `norm_weight` `[2d]` (f32 or q's dtype); `o [B, Sq, H, 2d]`.
//!   Head `h` (kv group `g = h / (H / Hkv)`): maps `(q head 2h, k head 2g)` and
//!   `(q head 2h+1, k head 2g+1)`, both over `v head g`.
//! - v2: `q [B, Sq, 2H, D]`, `k, v [B, Sk, Hkv, D]`, `lambda` f32 `[B, Sq, H]`; `o [B, Sq, H, D]`.
//!   Ordinary GQA over the 2H query heads; `2H / Hkv` must be even, so q heads `2h` and `2h+1`
//!   both read kv head `g = h / (H / Hkv)`.
//! - `lse1`, `lse2` f32 `[B, H, Sq]`; varlen (rank-3 q, k, v with `cu_seqlens_q/k`):
//!   `[H, total_q]`, `o [total_q, H, Dv]`, v2's `lambda [total_q, H]`.
//!
//! # Choices where the spec is silent
//! - `norm_weight` given without `lambda_init` is an error naming `lambda_init` (the fused norm
//!   multiplies by `1 - lambda_init`, which has no default). `lambda_init` without
//!   `norm_weight` is accepted and unused.
//! - `norm_weight` is f32 or the activation dtype (a checkpoint's RMSNorm weight as stored; the
//!   norm itself runs in f32) and only exists in v1; passing it with v2 is an error naming
//!   `norm_weight`.
//! - `eps` must be finite and `>= 0`; a row whose `mean(O^2) + eps` is 0 (a fully masked row
//!   with `eps = 0`) normalises to 0 rather than NaN.
//! - `alibi_slopes` is f32 `[H]`: head `h`'s slope applies to both of its maps.
//! - Fully masked rows give `o = 0` and `lse1 = lse2 = -inf`, as in attention.
//! - All other attention rules (scale default `1/sqrt(d)` with `d` the per-map head dim, masks,
//!   windows, softcap, RoPE on every q and k head vector, position ids, varlen) are those of
//!   `crate::attention`.

pub mod cpu;
pub mod cuda;
#[cfg(feature = "oracle")]
pub mod oracle;

pub use cpu::{diff_attention_cpu, diff_decode_cpu, DiffAttentionOutput};

use crate::attention::{plan_common, read_dims, AttentionArgs, AttentionPlan, Common};
use crate::decode::{check_cache, CacheLayout, KvCacheRef};
use crate::error::{Error, Result};
use crate::rope::RopeConfig;
use crate::tensor::{expect_dtype, expect_rank, expect_same_dtype, DType, TensorInfo};
use serde::{Deserialize, Serialize};

fn minus_one() -> i64 {
    -1
}
fn default_eps() -> f64 {
    1e-5
}

/// Which differential attention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiffVariant {
    /// The paper's layout: paired q and k heads, one V of width 2d, lambda per head, optional norm.
    #[default]
    #[serde(rename = "v1")]
    V1,
    /// Differential Transformer V2: paired q heads over ordinary GQA, lambda per token and head.
    #[serde(rename = "v2")]
    V2,
}

/// Options of `diff_attention`: the attention keys plus `variant`, `lambda_init`, `eps`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffAttentionConfig {
    #[serde(default)]
    pub softmax_scale: Option<f64>,
    #[serde(default)]
    pub causal: bool,
    #[serde(default = "minus_one")]
    pub window_left: i64,
    #[serde(default = "minus_one")]
    pub window_right: i64,
    #[serde(default)]
    pub softcap: f64,
    #[serde(default)]
    pub rope: Option<RopeConfig>,
    /// "v1" (default) or "v2".
    #[serde(default)]
    pub variant: DiffVariant,
    /// The paper's `0.8 - 0.6 exp(-0.3 * layer_index)`; required with `norm_weight`.
    #[serde(default)]
    pub lambda_init: Option<f64>,
    /// RMSNorm epsilon (default 1e-5).
    #[serde(default = "default_eps")]
    pub eps: f64,
}

impl Default for DiffAttentionConfig {
    fn default() -> Self {
        DiffAttentionConfig {
            softmax_scale: None,
            causal: false,
            window_left: -1,
            window_right: -1,
            softcap: 0.0,
            rope: None,
            variant: DiffVariant::V1,
            lambda_init: None,
            eps: 1e-5,
        }
    }
}

impl DiffAttentionConfig {
    /// The attention options of this config (what each of the two maps uses).
    pub fn attention_config(&self) -> crate::attention::AttentionConfig {
        crate::attention::AttentionConfig {
            softmax_scale: self.softmax_scale,
            causal: self.causal,
            window_left: self.window_left,
            window_right: self.window_right,
            softcap: self.softcap,
            rope: self.rope.clone(),
        }
    }
    fn common(&self) -> Common<'_> {
        Common {
            softmax_scale: self.softmax_scale,
            causal: self.causal,
            window_left: self.window_left,
            window_right: self.window_right,
            softcap: self.softcap,
            rope: self.rope.as_ref(),
        }
    }
}

/// Arguments of `diff_attention`; index data is host-side, as for attention.
pub struct DiffAttentionArgs<'a, T: TensorInfo> {
    pub q: &'a T,
    pub k: &'a T,
    pub v: &'a T,
    /// f32: v1 `[H]`, v2 `[B, Sq, H]` (varlen `[total_q, H]`).
    pub lambda: &'a T,
    /// f32 `[2d]` (v1 only).
    pub norm_weight: Option<&'a T>,
    /// f32 `[H]`.
    pub alibi_slopes: Option<&'a T>,
    pub cu_seqlens_q: Option<&'a [i32]>,
    pub cu_seqlens_k: Option<&'a [i32]>,
    pub position_ids_q: Option<&'a [i32]>,
    pub position_ids_k: Option<&'a [i32]>,
}

impl<'a, T: TensorInfo> Clone for DiffAttentionArgs<'a, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<'a, T: TensorInfo> Copy for DiffAttentionArgs<'a, T> {}

impl<'a, T: TensorInfo> DiffAttentionArgs<'a, T> {
    /// Dense arguments without norm, ALiBi or position ids.
    pub fn new(q: &'a T, k: &'a T, v: &'a T, lambda: &'a T) -> Self {
        DiffAttentionArgs {
            q,
            k,
            v,
            lambda,
            norm_weight: None,
            alibi_slopes: None,
            cu_seqlens_q: None,
            cu_seqlens_k: None,
            position_ids_q: None,
            position_ids_k: None,
        }
    }
    pub fn with_norm(mut self, w: &'a T) -> Self {
        self.norm_weight = Some(w);
        self
    }
    pub fn with_alibi(mut self, slopes: &'a T) -> Self {
        self.alibi_slopes = Some(slopes);
        self
    }
    pub fn with_varlen(mut self, cu_seqlens_q: &'a [i32], cu_seqlens_k: &'a [i32]) -> Self {
        self.cu_seqlens_q = Some(cu_seqlens_q);
        self.cu_seqlens_k = Some(cu_seqlens_k);
        self
    }
    pub fn with_positions(mut self, q: Option<&'a [i32]>, k: Option<&'a [i32]>) -> Self {
        self.position_ids_q = q;
        self.position_ids_k = k;
        self
    }
    /// The q, k, v, ALiBi and index arguments as attention arguments.
    pub fn attention_args(&self) -> AttentionArgs<'a, T> {
        AttentionArgs {
            q: self.q,
            k: self.k,
            v: self.v,
            alibi_slopes: self.alibi_slopes,
            cu_seqlens_q: self.cu_seqlens_q,
            cu_seqlens_k: self.cu_seqlens_k,
            position_ids_q: self.position_ids_q,
            position_ids_k: self.position_ids_k,
        }
    }
}

/// Everything a backend needs, validated.
#[derive(Clone, Debug)]
pub struct DiffAttentionPlan {
    /// The shared geometry and options: `heads_q = 2H` query heads, `heads_kv` = k's heads
    /// (v1: 2Hkv, v2: Hkv), `head_dim` = d (v2: D), `head_dim_v` = v's last dim (v1: 2d, v2: D),
    /// `has_alibi` with slopes `[H]`. Its `lse_index` / shapes are per query head: use this
    /// plan's methods for the outputs instead.
    pub attn: AttentionPlan,
    pub variant: DiffVariant,
    /// H: output heads (pairs of query heads).
    pub heads: usize,
    /// Hkv: kv groups (v's heads); head `h` uses group `h / (heads / kv_groups)`.
    pub kv_groups: usize,
    /// Whether `norm_weight` is given (v1 only).
    pub has_norm: bool,
    /// `1 - lambda_init` when `has_norm` (1 otherwise).
    pub norm_scale: f32,
    pub eps: f32,
}

impl DiffAttentionPlan {
    /// The kv group of output head `h`.
    pub fn kv_group(&self, h: usize) -> usize {
        h / (self.heads / self.kv_groups)
    }
    /// (k head of map 1, k head of map 2, v head) of output head `h`.
    pub fn heads_of(&self, h: usize) -> (usize, usize, usize) {
        let g = self.kv_group(h);
        match self.variant {
            DiffVariant::V1 => (2 * g, 2 * g + 1, g),
            DiffVariant::V2 => (g, g, g),
        }
    }
    /// Element offset of `lse1[h, i]` / `lse2[h, i]` of sequence `n`
    /// (dense `[B, H, Sq]`, varlen `[H, total_q]`).
    pub fn lse_index(&self, n: usize, h: usize, i: usize) -> usize {
        let p = &self.attn;
        let s = &p.seqs[n];
        if p.varlen {
            h * p.total_q + s.q_start + i
        } else {
            (n * self.heads + h) * s.q_len + i
        }
    }
    pub fn o_shape(&self) -> Vec<usize> {
        let p = &self.attn;
        if p.varlen {
            vec![p.total_q, self.heads, p.head_dim_v]
        } else {
            vec![p.batch, p.max_q_len, self.heads, p.head_dim_v]
        }
    }
    pub fn lse_shape(&self) -> Vec<usize> {
        let p = &self.attn;
        if p.varlen {
            vec![self.heads, p.total_q]
        } else {
            vec![p.batch, self.heads, p.max_q_len]
        }
    }
}

/// Validate `diff_attention` arguments against `cfg` (spec section 3) and resolve everything a
/// backend needs. Errors name the argument or config key at fault.
pub fn plan_diff<T: TensorInfo>(cfg: &DiffAttentionConfig, args: &DiffAttentionArgs<'_, T>) -> Result<DiffAttentionPlan> {
    let varlen = args.cu_seqlens_q.is_some() || args.cu_seqlens_k.is_some();
    let dims = read_dims(args.q, args.k, args.v, varlen)?;
    let (qs, ks, vs) = (args.q.shape(), args.k.shape(), args.v.shape());
    if dims.hq == 0 || dims.hq % 2 != 0 {
        return Err(Error::shape("q", "2H query heads (an even, positive count)", qs));
    }
    let heads = dims.hq / 2;
    if dims.dk != dims.d {
        return Err(Error::shape("k", format!("head dim {} (of q)", dims.d), ks));
    }
    let kv_groups = match cfg.variant {
        DiffVariant::V1 => {
            if dims.hk == 0 || dims.hk % 2 != 0 {
                return Err(Error::shape("k", "2Hkv key heads (an even, positive count)", ks));
            }
            if dims.hv * 2 != dims.hk {
                return Err(Error::shape("v", format!("Hkv = {} heads (half of k's)", dims.hk / 2), vs));
            }
            if dims.dv != 2 * dims.d {
                return Err(Error::shape("v", format!("head dim 2d = {}", 2 * dims.d), vs));
            }
            if heads % dims.hv != 0 {
                return Err(Error::invalid("k", format!("H % Hkv must be 0, got H = {heads}, Hkv = {}", dims.hv)));
            }
            dims.hv
        }
        DiffVariant::V2 => {
            if dims.hk == 0 {
                return Err(Error::invalid("k", "needs at least one head"));
            }
            if dims.hv != dims.hk {
                return Err(Error::shape("v", format!("Hkv = {} heads (of k)", dims.hk), vs));
            }
            if dims.dv != dims.d {
                return Err(Error::shape("v", format!("head dim D = {} (of q)", dims.d), vs));
            }
            if dims.hq % dims.hk != 0 || (dims.hq / dims.hk) % 2 != 0 {
                return Err(Error::invalid(
                    "k",
                    format!("2H / Hkv must be an even integer (both heads of a pair share a kv head), got 2H = {}, Hkv = {}", dims.hq, dims.hk),
                ));
            }
            dims.hk
        }
    };
    let attn = plan_common(&cfg.common(), &args.attention_args(), &dims, dims.hq, dims.hk, heads)?;

    // lambda.
    expect_dtype("lambda", args.lambda, &[DType::F32])?;
    let want_lambda: Vec<usize> = match cfg.variant {
        DiffVariant::V1 => vec![heads],
        DiffVariant::V2 if varlen => vec![attn.total_q, heads],
        DiffVariant::V2 => vec![dims.b, dims.sq, heads],
    };
    if args.lambda.shape() != want_lambda.as_slice() {
        return Err(Error::shape("lambda", format!("{want_lambda:?}"), args.lambda.shape()));
    }

    // Norm.
    check_norm_keys(cfg)?;
    let norm_scale = match args.norm_weight {
        None => 1.0,
        Some(w) => {
            if cfg.variant == DiffVariant::V2 {
                return Err(Error::invalid("norm_weight", "only variant v1 has the fused RMSNorm"));
            }
            expect_dtype("norm_weight", w, &norm_weight_dtypes(args.q.dtype()))?;
            if w.shape() != [dims.dv] {
                return Err(Error::shape("norm_weight", format!("[{}] (2d)", dims.dv), w.shape()));
            }
            let li = cfg
                .lambda_init
                .ok_or_else(|| Error::config("lambda_init", "required when norm_weight is given (the norm scales by 1 - lambda_init)"))?;
            (1.0 - li) as f32
        }
    };

    Ok(DiffAttentionPlan {
        attn,
        variant: cfg.variant,
        heads,
        kv_groups,
        has_norm: args.norm_weight.is_some(),
        norm_scale,
        eps: cfg.eps as f32,
    })
}

/// The norm-related config keys (`eps`, `lambda_init`), shared by the prefill and decode plans.
/// The dtypes `norm_weight` may have with activations of `act`: f32, or the activation dtype
/// (what a model's checkpoint stores; the kernels convert it to f32 on load).
pub(crate) fn norm_weight_dtypes(act: DType) -> Vec<DType> {
    if act == DType::F32 {
        vec![DType::F32]
    } else {
        vec![DType::F32, act]
    }
}

pub(crate) fn check_norm_keys(cfg: &DiffAttentionConfig) -> Result<()> {
    if !(cfg.eps.is_finite() && cfg.eps >= 0.0) {
        return Err(Error::config("eps", format!("must be finite and >= 0, got {}", cfg.eps)));
    }
    if let Some(li) = cfg.lambda_init {
        if !li.is_finite() {
            return Err(Error::config("lambda_init", format!("must be finite, got {li}")));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------- decode

/// Arguments of the fused v1 decode (see [`cuda`] for the cache layout).
pub struct DiffDecodeArgs<'a, T: TensorInfo> {
    /// `[B, 1, 2H, d]`.
    pub q: &'a T,
    /// `k, v` with `Hkv` heads of width `2d` (`[k1 | k2]` and V).
    pub cache: KvCacheRef<'a, T>,
    /// f32 `[H]`.
    pub lambda: &'a T,
    /// f32 `[2d]`; requires `lambda_init` in the config.
    pub norm_weight: Option<&'a T>,
    /// f32 `[H]`: head `h`'s slope for both maps.
    pub alibi_slopes: Option<&'a T>,
}

impl<'a, T: TensorInfo> Clone for DiffDecodeArgs<'a, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<'a, T: TensorInfo> Copy for DiffDecodeArgs<'a, T> {}

/// A validated decode call.
#[derive(Clone, Debug)]
pub struct DiffDecodePlan {
    pub batch: usize,
    /// H: output heads.
    pub heads: usize,
    /// Hkv: kv heads of the cache.
    pub heads_kv: usize,
    /// d: per-map head dim (the cache's heads are 2d wide).
    pub head_dim: usize,
    pub dtype: DType,
    pub layout: CacheLayout,
    /// Keys per sequence.
    pub seqlens: Vec<usize>,
    pub scale: f32,
    pub softcap: f32,
    /// -1 = unlimited.
    pub window_left: i64,
    pub has_norm: bool,
    pub norm_scale: f32,
    pub eps: f32,
    pub has_alibi: bool,
}

impl DiffDecodePlan {
    pub fn o_shape(&self) -> Vec<usize> {
        vec![self.batch, 1, self.heads, 2 * self.head_dim]
    }
    pub fn lse_shape(&self) -> Vec<usize> {
        vec![self.batch, self.heads, 1]
    }
    pub fn max_seqlen(&self) -> usize {
        self.seqlens.iter().copied().max().unwrap_or(0)
    }
    /// Bytes a decode must move: every visible key's `[k1 | k2]` and V once per kv head, q and o.
    pub fn bytes_moved(&self) -> f64 {
        let e = self.dtype.size() as f64;
        let keys: f64 = self
            .seqlens
            .iter()
            .map(|&s| if self.window_left >= 0 { s.min(self.window_left as usize + 1) } else { s } as f64)
            .sum();
        let d2 = (2 * self.head_dim) as f64;
        keys * self.heads_kv as f64 * 2.0 * d2 * e + (self.batch * self.heads) as f64 * 2.0 * d2 * e
    }
}

/// Validate a fused v1 decode call. Errors name the argument or config key at fault.
pub fn plan_diff_decode<T: TensorInfo>(
    cfg: &DiffAttentionConfig,
    args: &DiffDecodeArgs<'_, T>,
) -> Result<DiffDecodePlan> {
    if cfg.variant != DiffVariant::V1 {
        return Err(Error::unsupported("variant", "diff decode implements variant v1"));
    }
    if cfg.rope.is_some() {
        return Err(Error::unsupported(
            "rope",
            "diff decode does not fuse RoPE: rotate q and k before appending to the cache",
        ));
    }
    let (layout, batch, heads_kv, dk, dv, seqlens) = check_cache(&args.cache, 0)?;
    if dk % 2 != 0 {
        return Err(Error::shape("k_cache", "kv heads of even width 2d ([k1 | k2])", args.cache.k().shape()));
    }
    if dv != dk {
        return Err(Error::shape("v_cache", format!("head width 2d = {dk} (of k_cache)"), args.cache.v().shape()));
    }
    let d = dk / 2;
    let q = args.q;
    expect_rank("q", q, 4, "[B, 1, 2H, d]")?;
    expect_dtype("q", q, &[DType::F32, DType::F16, DType::BF16])?;
    expect_same_dtype("k_cache", args.cache.k(), "q", q.dtype())?;
    let qs = q.shape();
    if qs[0] != batch {
        return Err(Error::shape("q", format!("[{batch}, 1, 2H, {d}] (batch of the cache)"), qs));
    }
    if qs[1] != 1 {
        return Err(Error::unsupported(
            "q",
            format!("diff decode takes one new token per sequence, got Sq_new = {}", qs[1]),
        ));
    }
    if qs[3] != d {
        return Err(Error::shape("q", format!("[{batch}, 1, 2H, {d}] (half the cache's head width)"), qs));
    }
    if qs[2] == 0 || qs[2] % 2 != 0 {
        return Err(Error::shape("q", "2H query heads (an even, positive count)", qs));
    }
    let heads = qs[2] / 2;
    if heads % heads_kv != 0 {
        return Err(Error::invalid("k_cache", format!("H % Hkv must be 0, got H = {heads}, Hkv = {heads_kv}")));
    }
    expect_dtype("lambda", args.lambda, &[DType::F32])?;
    if args.lambda.shape() != [heads] {
        return Err(Error::shape("lambda", format!("[{heads}]"), args.lambda.shape()));
    }
    if let Some(a) = args.alibi_slopes {
        expect_dtype("alibi_slopes", a, &[DType::F32])?;
        if a.shape() != [heads] {
            return Err(Error::shape("alibi_slopes", format!("[{heads}]"), a.shape()));
        }
    }
    let scores = cfg.common().scores(d)?;
    check_norm_keys(cfg)?;
    let norm_scale = match args.norm_weight {
        None => 1.0,
        Some(w) => {
            expect_dtype("norm_weight", w, &norm_weight_dtypes(q.dtype()))?;
            if w.shape() != [2 * d] {
                return Err(Error::shape("norm_weight", format!("[{}] (2d)", 2 * d), w.shape()));
            }
            let li = cfg.lambda_init.ok_or_else(|| {
                Error::config("lambda_init", "required when norm_weight is given (the norm scales by 1 - lambda_init)")
            })?;
            (1.0 - li) as f32
        }
    };
    Ok(DiffDecodePlan {
        batch,
        heads,
        heads_kv,
        head_dim: d,
        dtype: q.dtype(),
        layout,
        seqlens,
        scale: scores.scale,
        softcap: scores.softcap,
        window_left: scores.window_left,
        has_norm: args.norm_weight.is_some(),
        norm_scale,
        eps: cfg.eps as f32,
        has_alibi: args.alibi_slopes.is_some(),
    })
}
