//! KV-cache decode: a few new query tokens against a long KV cache (contiguous or paged),
//! split-KV ("flash-decoding") on the GPU, cache append with RoPE, and `merge_states`.
//!
//! # Semantics
//! Decode is spec section 1 attention of `q [B, Sq_new, Hq, D]` against the first
//! `Sk = cache_seqlens[b]` keys of sequence `b`'s cache, with the options of
//! [`AttentionConfig`] (causal, window, softcap, ALiBi, RoPE) meaning exactly what they mean
//! there: query row `i` sits at `P(i) = i + Sk - Sq_new` (the new tokens are the last `Sq_new`
//! cache rows, so `cache_seqlens` counts them: it is the length *after* the append), key `j` at
//! `j`. Outputs are those of attention: `o [B, Sq_new, Hq, Dv]` in q's dtype, `lse [B, Hq, Sq_new]`
//! f32 (natural log, `-inf` and `o = 0` for rows that see no key).
//!
//! # Caches
//! - contiguous: `k [B, S_max, Hkv, D]`, `v [B, S_max, Hkv, Dv]`;
//! - paged: `k [num_blocks, block_size, Hkv, D]`, `v [num_blocks, block_size, Hkv, Dv]` with a
//!   host block table `[B, max_blocks]` (row-major): key `j` of sequence `b` is row
//!   `j % block_size` of block `block_table[b * max_blocks + j / block_size]`.
//!
//! Index data (`cache_seqlens`, `block_table`) is host-side so every index is checked before a
//! launch: `cache_seqlens[b] <= capacity` (`S_max`, or `max_blocks * block_size`) and every block
//! id a sequence uses (`ceil(Sk / block_size)` entries) in `[0, num_blocks)`. Entries past a
//! sequence's used blocks are never read and may hold anything (e.g. -1).
//!
//! # RoPE
//! With `cfg.rope` set, queries are rotated at `P(i)`. The cached keys are rotated on read at
//! position `j` ([`DecodeOptions::cache_keys_rotated`] = false, the default: the cache holds
//! un-rotated keys) or taken as stored (`true`: the keys were rotated when appended, e.g. by
//! [`append_kv_cpu`] / [`cuda::append_kv_cuda`] with the same RoPE). RoPE scalings that depend
//! on the sequence length (`dynamic`, `longrope`) resolve with `n = max_b cache_seqlens[b]`; keys
//! rotated at append time were rotated with that call's `n`, so for those scalings prefer
//! rotating on read. With RoPE every `cache_seqlens[b]` must be `>= Sq_new` (no negative query
//! positions).
//!
//! # Append
//! [`append_kv_cpu`] / [`cuda::append_kv_cuda`] write `k_new, v_new [B, Sq_new, Hkv, D|Dv]` into
//! rows `cache_seqlens[b] .. cache_seqlens[b] + Sq_new` (the lengths *before* the append),
//! rotating K at those positions when a RoPE config is given, and return the new lengths. The
//! caller keeps the lengths (they are host data) and passes the returned ones to decode.
//!
//! # merge_states
//! See `docs/merge_states.md`: two attention results over disjoint key sets, `(o_a, lse_a)` and
//! `(o_b, lse_b)`, become the result over their union. Layouts are attention's: `o [B, S, H, Dv]`
//! with `lse [B, H, S]`, or varlen `o [T, H, Dv]` with `lse [H, T]`.
//!
//! # GPU support
//! f16 and bf16 (f32 decode runs on the CPU only; append and merge_states take all three),
//! `D == Dv` in {64, 128, 256}, paged block sizes a power of two, RoPE `rotary_dim % 16 == 0`.

pub mod cpu;
pub mod cuda;
#[cfg(feature = "oracle")]
pub mod oracle;

pub use cpu::{append_kv_cpu, decode_cpu, merge_states_cpu};

use crate::attention::AttentionConfig;
use crate::error::{Error, Result};
use crate::rope::{ResolvedRope, RopeConfig};
use crate::tensor::{checked_numel, expect_dtype, expect_rank, expect_same_dtype, DType, TensorInfo};

/// A KV cache, borrowed: contiguous or paged, with host index data.
pub enum KvCacheRef<'a, T> {
    /// `k [B, S_max, Hkv, D]`, `v [B, S_max, Hkv, Dv]`.
    Contiguous { k: &'a T, v: &'a T, cache_seqlens: &'a [i32] },
    /// `k [num_blocks, block_size, Hkv, D]`, `v [num_blocks, block_size, Hkv, Dv]`,
    /// `block_table` `[B, max_blocks]` row-major.
    Paged { k: &'a T, v: &'a T, block_table: &'a [i32], max_blocks: usize, cache_seqlens: &'a [i32] },
}

impl<'a, T> Clone for KvCacheRef<'a, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<'a, T> Copy for KvCacheRef<'a, T> {}

impl<'a, T> KvCacheRef<'a, T> {
    pub fn k(&self) -> &'a T {
        match self {
            KvCacheRef::Contiguous { k, .. } | KvCacheRef::Paged { k, .. } => k,
        }
    }
    pub fn v(&self) -> &'a T {
        match self {
            KvCacheRef::Contiguous { v, .. } | KvCacheRef::Paged { v, .. } => v,
        }
    }
    pub fn cache_seqlens(&self) -> &'a [i32] {
        match self {
            KvCacheRef::Contiguous { cache_seqlens, .. } | KvCacheRef::Paged { cache_seqlens, .. } => cache_seqlens,
        }
    }
    /// `(block_table, max_blocks)` of a paged cache.
    pub fn block_table(&self) -> Option<(&'a [i32], usize)> {
        match self {
            KvCacheRef::Contiguous { .. } => None,
            KvCacheRef::Paged { block_table, max_blocks, .. } => Some((block_table, *max_blocks)),
        }
    }
}

/// A KV cache, mutably borrowed (for append).
pub enum KvCacheMut<'a, T> {
    Contiguous { k: &'a mut T, v: &'a mut T, cache_seqlens: &'a [i32] },
    Paged { k: &'a mut T, v: &'a mut T, block_table: &'a [i32], max_blocks: usize, cache_seqlens: &'a [i32] },
}

impl<'a, T> KvCacheMut<'a, T> {
    /// A shared view (for validation).
    pub fn as_ref(&self) -> KvCacheRef<'_, T> {
        match self {
            KvCacheMut::Contiguous { k, v, cache_seqlens } => KvCacheRef::Contiguous { k, v, cache_seqlens },
            KvCacheMut::Paged { k, v, block_table, max_blocks, cache_seqlens } => {
                KvCacheRef::Paged { k, v, block_table, max_blocks: *max_blocks, cache_seqlens }
            }
        }
    }
    /// The k and v buffers.
    pub fn kv_mut(&mut self) -> (&mut T, &mut T) {
        match self {
            KvCacheMut::Contiguous { k, v, .. } | KvCacheMut::Paged { k, v, .. } => (&mut **k, &mut **v),
        }
    }
}

/// How many KV splits the GPU decode uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SplitPolicy {
    /// Chosen from batch, heads, length and the SM count ([`cuda::auto_splits`]).
    #[default]
    Auto,
    /// Exactly this many (1 ..= [`MAX_SPLITS`]); 1 = no split, no combine pass.
    Fixed(usize),
}

/// Most KV splits a decode call may use.
pub const MAX_SPLITS: usize = 1024;

/// Options of the decode call beyond the attention config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    pub split: SplitPolicy,
    /// With `cfg.rope`: the cache already holds rotated keys (only q is rotated).
    pub cache_keys_rotated: bool,
}

/// Cache geometry read off the tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheLayout {
    Contiguous { s_max: usize },
    Paged { num_blocks: usize, block_size: usize, max_blocks: usize },
}

impl CacheLayout {
    /// Keys a sequence can hold.
    pub fn capacity(&self) -> usize {
        match *self {
            CacheLayout::Contiguous { s_max } => s_max,
            CacheLayout::Paged { block_size, max_blocks, .. } => block_size.saturating_mul(max_blocks),
        }
    }
}

/// Everything a decode backend needs, validated.
#[derive(Clone, Debug)]
pub struct DecodePlan {
    pub batch: usize,
    /// New tokens per sequence (`Sq_new`).
    pub seqlen_q: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    pub dtype: DType,
    pub layout: CacheLayout,
    /// `Sk` per sequence.
    pub seqlens: Vec<usize>,
    pub scale: f32,
    pub softcap: f32,
    pub causal: bool,
    /// -1 = unlimited.
    pub window_left: i64,
    /// -1 = unlimited.
    pub window_right: i64,
    pub has_alibi: bool,
    pub rope: Option<ResolvedRope>,
    /// Rotate the cached keys on read.
    pub rope_keys: bool,
    /// Largest RoPE position used + 1 (0 without RoPE).
    pub max_position: usize,
}

impl DecodePlan {
    pub fn max_seqlen(&self) -> usize {
        self.seqlens.iter().copied().max().unwrap_or(0)
    }
    pub fn o_shape(&self) -> Vec<usize> {
        vec![self.batch, self.seqlen_q, self.heads_q, self.head_dim_v]
    }
    pub fn lse_shape(&self) -> Vec<usize> {
        vec![self.batch, self.heads_q, self.seqlen_q]
    }
    /// Bytes of K and V a decode must read (each sequence's visible keys once per kv head),
    /// plus q and o: the figure behind achieved GB/s.
    pub fn bytes_moved(&self) -> f64 {
        let e = self.dtype.size() as f64;
        let mut keys = 0f64;
        for &sk in &self.seqlens {
            let lo = if self.window_left >= 0 {
                (sk as i64 - self.seqlen_q as i64 - self.window_left).max(0) as usize
            } else {
                0
            };
            keys += sk.saturating_sub(lo) as f64;
        }
        let kv = keys * self.heads_kv as f64 * (self.head_dim + self.head_dim_v) as f64 * e;
        let rows = (self.batch * self.seqlen_q * self.heads_q) as f64;
        kv + rows * (self.head_dim + self.head_dim_v) as f64 * e
    }
}

/// Reject tensors whose element or byte count overflows `usize` (absurd shapes), naming `arg`.
fn check_size(arg: &str, t: &dyn TensorInfo) -> Result<()> {
    let n = checked_numel(arg, t.shape())?;
    n.checked_mul(t.dtype().size())
        .ok_or_else(|| Error::invalid(arg, format!("byte size of {} {:?} overflows", t.dtype(), t.shape())))?;
    Ok(())
}

/// Validate the cache tensors and index data against each other; returns
/// `(layout, batch, heads_kv, head_dim, head_dim_v, seqlens)`. `extra_rows` keys must still fit
/// after each sequence's length (append), and the blocks they land in must be valid.
pub(crate) fn check_cache<T: TensorInfo>(
    cache: &KvCacheRef<'_, T>,
    extra_rows: usize,
) -> Result<(CacheLayout, usize, usize, usize, usize, Vec<usize>)> {
    let (k, v) = (cache.k(), cache.v());
    check_size("k_cache", k)?;
    check_size("v_cache", v)?;
    let seqlens_raw = cache.cache_seqlens();
    let (layout, batch) = match cache.block_table() {
        None => {
            expect_rank("k_cache", k, 4, "[B, S_max, Hkv, D]")?;
            expect_rank("v_cache", v, 4, "[B, S_max, Hkv, Dv]")?;
            let ks = k.shape();
            (CacheLayout::Contiguous { s_max: ks[1] }, ks[0])
        }
        Some((table, max_blocks)) => {
            expect_rank("k_cache", k, 4, "[num_blocks, block_size, Hkv, D]")?;
            expect_rank("v_cache", v, 4, "[num_blocks, block_size, Hkv, Dv]")?;
            let ks = k.shape();
            if ks[1] == 0 {
                return Err(Error::invalid("k_cache", "block_size (dim 1) must be at least 1"));
            }
            if max_blocks == 0 {
                return Err(Error::invalid("block_table", "max_blocks must be at least 1"));
            }
            if table.len() % max_blocks != 0 {
                return Err(Error::invalid(
                    "block_table",
                    format!("{} entries is not a whole number of rows of max_blocks = {max_blocks}", table.len()),
                ));
            }
            (CacheLayout::Paged { num_blocks: ks[0], block_size: ks[1], max_blocks }, table.len() / max_blocks)
        }
    };
    let ks = k.shape();
    let vs = v.shape();
    if vs[0] != ks[0] || vs[1] != ks[1] || vs[2] != ks[2] {
        return Err(Error::shape(
            "v_cache",
            format!("[{}, {}, {}, Dv] (the first three dims of k_cache)", ks[0], ks[1], ks[2]),
            vs,
        ));
    }
    expect_dtype("k_cache", k, &[DType::F32, DType::F16, DType::BF16])?;
    expect_same_dtype("v_cache", v, "k_cache", k.dtype())?;
    let (heads_kv, d, dv) = (ks[2], ks[3], vs[3]);
    if heads_kv == 0 {
        return Err(Error::invalid("k_cache", "needs at least one kv head"));
    }
    if d == 0 {
        return Err(Error::invalid("k_cache", "head dim D must be at least 1"));
    }
    if dv == 0 {
        return Err(Error::invalid("v_cache", "head dim Dv must be at least 1"));
    }
    if seqlens_raw.len() != batch {
        return Err(Error::invalid(
            "cache_seqlens",
            format!("expected {batch} entries (one per sequence), got {}", seqlens_raw.len()),
        ));
    }
    let capacity = layout.capacity();
    let mut seqlens = Vec::with_capacity(batch);
    for (b, &s) in seqlens_raw.iter().enumerate() {
        if s < 0 {
            return Err(Error::invalid("cache_seqlens", format!("entry {b} is {s}; lengths must be >= 0")));
        }
        let need = s as usize + extra_rows;
        if need > capacity {
            let what = if extra_rows > 0 { format!("{s} + {extra_rows} new rows") } else { format!("{s}") };
            return Err(Error::invalid(
                "cache_seqlens",
                format!("entry {b} needs {what} keys, the cache holds {capacity} per sequence"),
            ));
        }
        seqlens.push(s as usize);
    }
    if let (Some((table, max_blocks)), CacheLayout::Paged { num_blocks, block_size, .. }) =
        (cache.block_table(), &layout)
    {
        for (b, &s) in seqlens.iter().enumerate() {
            let used = (s + extra_rows).div_ceil(*block_size);
            for (i, &id) in table[b * max_blocks..b * max_blocks + used].iter().enumerate() {
                if id < 0 || id as usize >= *num_blocks {
                    return Err(Error::invalid(
                        "block_table",
                        format!("entry [{b}, {i}] is {id}, outside [0, {num_blocks}) (num_blocks of k_cache)"),
                    ));
                }
            }
        }
    }
    Ok((layout, batch, heads_kv, d, dv, seqlens))
}

/// Validate a decode call and resolve what a backend needs. Errors name the argument or config
/// key at fault; nothing is computed.
pub fn plan<T: TensorInfo>(
    cfg: &AttentionConfig,
    q: &T,
    cache: &KvCacheRef<'_, T>,
    alibi_slopes: Option<&T>,
    opts: &DecodeOptions,
) -> Result<DecodePlan> {
    expect_rank("q", q, 4, "[B, Sq_new, Hq, D]")?;
    expect_dtype("q", q, &[DType::F32, DType::F16, DType::BF16])?;
    check_size("q", q)?;
    let (layout, batch, heads_kv, d, dv, seqlens) = check_cache(cache, 0)?;
    let qs = q.shape();
    if qs[0] != batch {
        return Err(Error::shape("q", format!("[{batch}, Sq_new, Hq, D] (batch of the cache)"), qs));
    }
    if qs[3] != d {
        return Err(Error::shape("q", format!("[B, Sq_new, Hq, {d}] (head dim of k_cache)"), qs));
    }
    expect_same_dtype("k_cache", cache.k(), "q", q.dtype())?;
    let (seqlen_q, heads_q) = (qs[1], qs[2]);
    if heads_q == 0 {
        return Err(Error::invalid("q", "needs at least one head"));
    }
    if heads_q % heads_kv != 0 {
        return Err(Error::invalid(
            "k_cache",
            format!("Hq % Hkv must be 0 (GQA), got Hq = {heads_q}, Hkv = {heads_kv}"),
        ));
    }
    if let Some(a) = alibi_slopes {
        expect_dtype("alibi_slopes", a, &[DType::F32])?;
        if a.shape() != [heads_q] {
            return Err(Error::shape("alibi_slopes", format!("[{heads_q}]"), a.shape()));
        }
    }
    let scores = cfg.common().scores(d)?;
    if let SplitPolicy::Fixed(n) = opts.split {
        if n == 0 || n > MAX_SPLITS {
            return Err(Error::invalid("split", format!("Fixed(n) needs 1 <= n <= {MAX_SPLITS}, got {n}")));
        }
    }
    let max_sk = seqlens.iter().copied().max().unwrap_or(0);
    let (rope, max_position) = match &cfg.rope {
        None => (None, 0),
        Some(rc) => {
            rc.validate(d)?;
            if seqlen_q > 0 {
                if let Some((b, &s)) = seqlens.iter().enumerate().find(|(_, &s)| s < seqlen_q) {
                    return Err(Error::invalid(
                        "cache_seqlens",
                        format!("entry {b} is {s} < Sq_new = {seqlen_q}: with RoPE the new tokens must be in the cache (positions >= 0)"),
                    ));
                }
            }
            (Some(rc.resolve(max_sk.max(1))?), max_sk)
        }
    };
    Ok(DecodePlan {
        batch,
        seqlen_q,
        heads_q,
        heads_kv,
        head_dim: d,
        head_dim_v: dv,
        dtype: q.dtype(),
        layout,
        seqlens,
        scale: scores.scale,
        softcap: scores.softcap,
        causal: scores.causal,
        window_left: scores.window_left,
        window_right: scores.window_right,
        has_alibi: alibi_slopes.is_some(),
        rope_keys: rope.is_some() && !opts.cache_keys_rotated,
        rope,
        max_position,
    })
}

/// Validated append: `(layout, batch, seqlen_new, heads_kv, D, Dv, old seqlens, resolved rope)`.
pub(crate) struct AppendPlan {
    pub layout: CacheLayout,
    pub batch: usize,
    pub seqlen_new: usize,
    pub heads_kv: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    pub dtype: DType,
    pub old_seqlens: Vec<usize>,
    pub rope: Option<ResolvedRope>,
    /// Largest position written + 1.
    pub max_position: usize,
}

pub(crate) fn plan_append<C: TensorInfo, T: TensorInfo>(
    cache: &KvCacheRef<'_, C>,
    k_new: &T,
    v_new: &T,
    rope: Option<&RopeConfig>,
) -> Result<AppendPlan> {
    expect_rank("k_new", k_new, 4, "[B, Sq_new, Hkv, D]")?;
    expect_rank("v_new", v_new, 4, "[B, Sq_new, Hkv, Dv]")?;
    check_size("k_new", k_new)?;
    check_size("v_new", v_new)?;
    let seqlen_new = k_new.shape()[1];
    let (layout, batch, heads_kv, d, dv, old) = check_cache(cache, seqlen_new)?;
    let want_k = [batch, seqlen_new, heads_kv, d];
    if k_new.shape() != want_k {
        return Err(Error::shape("k_new", format!("{want_k:?} ([B, Sq_new, Hkv, D] of the cache)"), k_new.shape()));
    }
    let want_v = [batch, seqlen_new, heads_kv, dv];
    if v_new.shape() != want_v {
        return Err(Error::shape("v_new", format!("{want_v:?} ([B, Sq_new, Hkv, Dv] of the cache)"), v_new.shape()));
    }
    let dtype = cache.k().dtype();
    expect_same_dtype("k_new", k_new, "k_cache", dtype)?;
    expect_same_dtype("v_new", v_new, "k_cache", dtype)?;
    let max_position = old.iter().map(|&s| s + seqlen_new).max().unwrap_or(0);
    let rope = match rope {
        None => None,
        Some(rc) => {
            rc.validate(d)?;
            Some(rc.resolve(max_position.max(1))?)
        }
    };
    Ok(AppendPlan {
        layout,
        batch,
        seqlen_new,
        heads_kv,
        head_dim: d,
        head_dim_v: dv,
        dtype,
        old_seqlens: old,
        rope,
        max_position,
    })
}

/// Shapes of a merge_states call: `(batch, seqlen, heads, Dv, varlen)`.
pub fn plan_merge<T: TensorInfo>(
    o_a: &T,
    lse_a: &T,
    o_b: &T,
    lse_b: &T,
) -> Result<(usize, usize, usize, usize, bool)> {
    let os = o_a.shape();
    let (b, s, h, dv, varlen) = match os.len() {
        4 => (os[0], os[1], os[2], os[3], false),
        3 => (1, os[0], os[1], os[2], true),
        _ => return Err(Error::shape("o_a", "[B, S, H, Dv] or [T, H, Dv] (varlen)", os)),
    };
    expect_dtype("o_a", o_a, &[DType::F32, DType::F16, DType::BF16])?;
    for (name, t) in [("o_a", o_a), ("lse_a", lse_a), ("o_b", o_b), ("lse_b", lse_b)] {
        check_size(name, t)?;
    }
    expect_same_dtype("o_b", o_b, "o_a", o_a.dtype())?;
    if o_b.shape() != os {
        return Err(Error::shape("o_b", format!("{os:?} (the shape of o_a)"), o_b.shape()));
    }
    let want_lse: Vec<usize> = if varlen { vec![h, s] } else { vec![b, h, s] };
    for (name, l) in [("lse_a", lse_a), ("lse_b", lse_b)] {
        expect_dtype(name, l, &[DType::F32])?;
        if l.shape() != want_lse.as_slice() {
            let dims = if varlen { "[H, T]" } else { "[B, H, S]" };
            return Err(Error::shape(name, format!("{want_lse:?} ({dims} of o_a)"), l.shape()));
        }
    }
    Ok((b, s, h, dv, varlen))
}
