//! Attention (spec section 1): softmax attention with causal / sliding-window masks, softcap,
//! ALiBi, fused RoPE, GQA/MQA, variable-length batches and LSE output.
//!
//! One validation routine, [`plan`], turns a configuration and arguments (host [`Tensor`](crate::Tensor)s or
//! device tensors, anything implementing [`TensorInfo`]) into an [`AttentionPlan`]: every
//! number a backend needs, checked. [`attention_cpu`] is the CPU backend (a tiled online-softmax
//! computation, see [`cpu`]); `oracle` (feature `oracle`) is the naive float64 evaluation the tests and
//! `check` compare against; [`cuda`] is the GPU path.
//!
//! # Layouts
//! - dense: `q [B, Sq, Hq, D]`, `k [B, Sk, Hkv, D]`, `v [B, Sk, Hkv, Dv]`,
//!   `o [B, Sq, Hq, Dv]` (q's dtype), `lse [B, Hq, Sq]` (f32).
//! - varlen (`cu_seqlens_q` and `cu_seqlens_k` both given): `q [total_q, Hq, D]`,
//!   `k [total_k, Hkv, D]`, `v [total_k, Hkv, Dv]`, `o [total_q, Hq, Dv]`, `lse [Hq, total_q]`.
//!
//! # Choices where the spec is silent
//! - `cu_seqlens_q` and `cu_seqlens_k` must be given together and name the same number of
//!   sequences; either alone is an error naming the missing one. Empty sequences are allowed
//!   (their rows, if any, are fully masked: `o = 0`, `lse = -inf`).
//! - `position_ids_q` / `position_ids_k` only choose RoPE positions (spec section 2); masks and
//!   ALiBi always use `P(i) = i + Sk - Sq` and `j`. Passing position ids without a `rope`
//!   config is an error naming the ids (they would have no effect). Shapes: `[B, Sq]` / `[B, Sk]`
//!   (varlen: `[total_q]` / `[total_k]`), int32, non-negative.
//! - Without `position_ids_q` the query positions are `P(i)`, which is negative for the first
//!   `Sq - Sk` rows when `Sq > Sk`; RoPE is then applied at that negative position (exact:
//!   `cos(-x) = cos x`, `sin(-x) = -sin x`). [`AttentionPlan::min_position`] reports it.
//! - Any negative `window_left` / `window_right` means "no limit" (normalised to -1 in the plan).
//! - `softcap` must be finite and `>= 0` (0 = off); `softmax_scale`, if given, must be finite
//!   (0 and negative values are accepted: the formula is defined for them).
//! - Head dims `D` and `Dv` must be at least 1; `B`, `Sq`, `Sk` and the number of sequences may be
//!   zero (empty outputs, or fully masked rows when `Sk = 0`).
//! - ALiBi slope values are used as given (their finiteness is the caller's business, as they
//!   may live on the device).
//! - RoPE `dynamic` / `longrope` resolve with `n = max_position` (largest position used + 1),
//!   unless the RoPE config's `seq_len` overrides it.

pub mod cpu;
pub mod cuda;
#[cfg(feature = "oracle")]
pub mod oracle;

pub use cpu::attention_cpu;

use crate::error::{Error, Result};
use crate::rope::{ResolvedRope, RopeConfig};
use crate::tensor::{check_cu_seqlens, checked_numel, expect_dtype, expect_rank, expect_same_dtype, DType, TensorInfo};
use serde::{Deserialize, Serialize};

fn minus_one() -> i64 {
    -1
}

/// Options of `attention` (spec section 1); the JSON keys of a case file's config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionConfig {
    /// Multiplies `<q, k>`; default `1/sqrt(D)`.
    #[serde(default)]
    pub softmax_scale: Option<f64>,
    /// Bottom-right aligned causal mask: key `j` allowed when `j <= P(i)`.
    #[serde(default)]
    pub causal: bool,
    /// Keys `j >= P(i) - window_left` only; negative = unlimited (default -1).
    #[serde(default = "minus_one")]
    pub window_left: i64,
    /// Keys `j <= P(i) + window_right` only; negative = unlimited (default -1).
    #[serde(default = "minus_one")]
    pub window_right: i64,
    /// `s = softcap * tanh(s / softcap)` when `> 0`; 0 = off.
    #[serde(default)]
    pub softcap: f64,
    /// Fused RoPE on q and k (spec section 2).
    #[serde(default)]
    pub rope: Option<RopeConfig>,
}

impl Default for AttentionConfig {
    fn default() -> Self {
        AttentionConfig { softmax_scale: None, causal: false, window_left: -1, window_right: -1, softcap: 0.0, rope: None }
    }
}

/// Arguments of `attention`. Index data (`cu_seqlens_*`, `position_ids_*`) is host-side so it
/// can be validated before any launch; a GPU backend uploads it.
pub struct AttentionArgs<'a, T: TensorInfo> {
    pub q: &'a T,
    pub k: &'a T,
    pub v: &'a T,
    /// f32 `[Hq]`, indexed by the global query head.
    pub alibi_slopes: Option<&'a T>,
    /// int32 `[N + 1]` offsets into q's rows (varlen).
    pub cu_seqlens_q: Option<&'a [i32]>,
    /// int32 `[N + 1]` offsets into k's and v's rows (varlen).
    pub cu_seqlens_k: Option<&'a [i32]>,
    /// RoPE positions of the query rows, flattened (`B * Sq` or `total_q` entries).
    pub position_ids_q: Option<&'a [i32]>,
    /// RoPE positions of the key rows, flattened (`B * Sk` or `total_k` entries).
    pub position_ids_k: Option<&'a [i32]>,
}

impl<'a, T: TensorInfo> Clone for AttentionArgs<'a, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<'a, T: TensorInfo> Copy for AttentionArgs<'a, T> {}

impl<'a, T: TensorInfo> AttentionArgs<'a, T> {
    /// Dense arguments without ALiBi or position ids.
    pub fn new(q: &'a T, k: &'a T, v: &'a T) -> Self {
        AttentionArgs {
            q,
            k,
            v,
            alibi_slopes: None,
            cu_seqlens_q: None,
            cu_seqlens_k: None,
            position_ids_q: None,
            position_ids_k: None,
        }
    }
    /// With ALiBi slopes (f32 `[Hq]`).
    pub fn with_alibi(mut self, slopes: &'a T) -> Self {
        self.alibi_slopes = Some(slopes);
        self
    }
    /// Varlen: packed rows with cumulative sequence offsets.
    pub fn with_varlen(mut self, cu_seqlens_q: &'a [i32], cu_seqlens_k: &'a [i32]) -> Self {
        self.cu_seqlens_q = Some(cu_seqlens_q);
        self.cu_seqlens_k = Some(cu_seqlens_k);
        self
    }
    /// RoPE positions for query and/or key rows.
    pub fn with_positions(mut self, q: Option<&'a [i32]>, k: Option<&'a [i32]>) -> Self {
        self.position_ids_q = q;
        self.position_ids_k = k;
        self
    }
}

/// One sequence's rows: queries `q_start .. q_start + q_len` and keys `k_start .. k_start + k_len`
/// of the flattened token dimension (`b * Sq + i` when dense).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqSpan {
    pub q_start: usize,
    pub q_len: usize,
    pub k_start: usize,
    pub k_len: usize,
}

/// Everything a backend needs, validated. Token rows are flattened: dense row `b * Sq + i`.
#[derive(Clone, Debug)]
pub struct AttentionPlan {
    /// Number of sequences (B, or N with varlen).
    pub batch: usize,
    pub varlen: bool,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    /// Row spans of every sequence (`batch` entries), except that a dense call with `Sq = 0`
    /// has none: there is nothing to compute and B may be huge for an empty tensor. Otherwise
    /// the list is bounded by the query rows, at most [`MAX_ROWS`] (see `plan`).
    pub seqs: Vec<SeqSpan>,
    pub total_q: usize,
    pub total_k: usize,
    pub max_q_len: usize,
    pub max_k_len: usize,
    /// Resolved softmax scale.
    pub scale: f32,
    /// 0 = off.
    pub softcap: f32,
    pub causal: bool,
    /// -1 = unlimited.
    pub window_left: i64,
    /// -1 = unlimited.
    pub window_right: i64,
    /// Element type of q, k, v and o.
    pub dtype: DType,
    pub has_alibi: bool,
    pub rope: Option<ResolvedRope>,
    /// Largest RoPE position used + 1 (size of the position table); 0 when nothing is rotated.
    pub max_position: usize,
    /// Smallest RoPE position used (negative only for default query positions with `Sq > Sk`).
    pub min_position: i64,
}

impl AttentionPlan {
    /// Element offset of `lse[h, i]` of sequence `n` (dense `[B, Hq, Sq]`, varlen `[Hq, total_q]`).
    pub fn lse_index(&self, n: usize, h: usize, i: usize) -> usize {
        let s = &self.seqs[n];
        if self.varlen {
            h * self.total_q + s.q_start + i
        } else {
            (n * self.heads_q + h) * s.q_len + i
        }
    }
    /// Shape of `o`.
    pub fn o_shape(&self) -> Vec<usize> {
        if self.varlen {
            vec![self.total_q, self.heads_q, self.head_dim_v]
        } else {
            vec![self.batch, self.max_q_len, self.heads_q, self.head_dim_v]
        }
    }
    /// Shape of `lse`.
    pub fn lse_shape(&self) -> Vec<usize> {
        if self.varlen {
            vec![self.heads_q, self.total_q]
        } else {
            vec![self.batch, self.heads_q, self.max_q_len]
        }
    }
    /// Query position in key coordinates, `P(i) = i + Sk - Sq`, of row `i` of sequence `n`.
    pub fn key_position(&self, n: usize, i: usize) -> i64 {
        let s = &self.seqs[n];
        i as i64 + s.k_len as i64 - s.q_len as i64
    }
    /// Allowed key range `[lo, hi)` (within the sequence) of query row `i` of sequence `n`;
    /// empty (`lo >= hi`) for a fully masked row.
    pub fn key_range(&self, n: usize, i: usize) -> (usize, usize) {
        let sk = self.seqs[n].k_len as i64;
        let p = self.key_position(n, i);
        let mut lo = 0i64;
        let mut hi = sk; // exclusive
        if self.causal {
            hi = hi.min(p + 1);
        }
        if self.window_left >= 0 {
            lo = lo.max(p - self.window_left);
        }
        if self.window_right >= 0 {
            hi = hi.min(p + self.window_right + 1);
        }
        let lo = lo.clamp(0, sk) as usize;
        let hi = hi.clamp(0, sk) as usize;
        (lo, hi.max(lo))
    }
    /// Multiply-add count of the allowed (i, j) pairs times `2 (D + Dv)`: the useful FLOPs.
    pub fn flops(&self) -> f64 {
        let mut pairs = 0f64;
        for (n, s) in self.seqs.iter().enumerate() {
            for i in 0..s.q_len {
                let (lo, hi) = self.key_range(n, i);
                pairs += (hi - lo) as f64;
            }
        }
        pairs * self.heads_q as f64 * 2.0 * (self.head_dim + self.head_dim_v) as f64
    }
}

/// Outputs of attention: `o` in q's dtype, `lse` f32.
#[derive(Clone, Debug)]
pub struct AttentionOutput<T> {
    pub o: T,
    pub lse: T,
}

/// ALiBi slopes of Press et al. for `n` heads: for a power of two `2^(-8h/n)`, h = 1..n;
/// otherwise the series of `c = 2^floor(log2 n)` followed by every other slope of the `2c`
/// series, `2^(-4(2k-1)/c)`, k = 1..n-c.
pub fn alibi_slopes(n: usize) -> Vec<f32> {
    if n == 0 {
        return Vec::new();
    }
    let c = 1usize << (usize::BITS - 1 - n.leading_zeros());
    let mut out: Vec<f32> = (1..=c).map(|h| (-8.0 * h as f64 / c as f64).exp2() as f32).collect();
    for k in 1..=(n - c) {
        out.push((-4.0 * (2 * k - 1) as f64 / c as f64).exp2() as f32);
    }
    out
}

// ------------------------------------------------------------------------------- validation

/// Ranks and sizes read off q, k, v (rank checks only).
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub varlen: bool,
    /// B (dense) or 1 (varlen; sequences come from cu_seqlens).
    pub b: usize,
    pub sq: usize,
    pub sk: usize,
    pub hq: usize,
    pub hk: usize,
    pub hv: usize,
    pub d: usize,
    pub dk: usize,
    pub dv: usize,
}

/// Read and rank-check q, k, v; batch and sequence dims must agree between k and v (and B
/// between q and k).
pub fn read_dims<T: TensorInfo>(q: &T, k: &T, v: &T, varlen: bool) -> Result<Dims> {
    if varlen {
        expect_rank("q", q, 3, "[total_q, Hq, D] (varlen)")?;
        expect_rank("k", k, 3, "[total_k, Hkv, D] (varlen)")?;
        expect_rank("v", v, 3, "[total_k, Hkv, Dv] (varlen)")?;
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        if vs[0] != ks[0] {
            return Err(Error::shape("v", format!("[{}, Hkv, Dv] (total_k rows of k)", ks[0]), vs));
        }
        Ok(Dims { varlen, b: 1, sq: qs[0], sk: ks[0], hq: qs[1], hk: ks[1], hv: vs[1], d: qs[2], dk: ks[2], dv: vs[2] })
    } else {
        expect_rank("q", q, 4, "[B, Sq, Hq, D]")?;
        expect_rank("k", k, 4, "[B, Sk, Hkv, D]")?;
        expect_rank("v", v, 4, "[B, Sk, Hkv, Dv]")?;
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        if ks[0] != qs[0] {
            return Err(Error::shape("k", format!("[{}, Sk, Hkv, D] (batch of q)", qs[0]), ks));
        }
        if vs[0] != ks[0] || vs[1] != ks[1] {
            return Err(Error::shape("v", format!("[{}, {}, Hkv, Dv] (batch and Sk of k)", ks[0], ks[1]), vs));
        }
        Ok(Dims { varlen, b: qs[0], sq: qs[1], sk: ks[1], hq: qs[2], hk: ks[2], hv: vs[2], d: qs[3], dk: ks[3], dv: vs[3] })
    }
}

/// The attention options of a config (attention, decode and both diff_attention paths read
/// theirs through this one view, and validate them with [`Common::scores`]).
pub(crate) struct Common<'c> {
    pub softmax_scale: Option<f64>,
    pub causal: bool,
    pub window_left: i64,
    pub window_right: i64,
    pub softcap: f64,
    pub rope: Option<&'c RopeConfig>,
}

/// The score options, validated and resolved: what every attention kernel applies to `q . k`
/// (scale, softcap) and which keys it masks (causal, windows).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Scores {
    pub scale: f32,
    /// 0 = off.
    pub softcap: f32,
    pub causal: bool,
    /// -1 = unlimited.
    pub window_left: i64,
    /// -1 = unlimited.
    pub window_right: i64,
}

impl Common<'_> {
    /// The one validation of the score options: `softmax_scale` finite (default `1/sqrt(D)` for
    /// head dim `head_dim`), `softcap` finite and `>= 0`; negative windows mean unlimited (-1).
    pub(crate) fn scores(&self, head_dim: usize) -> Result<Scores> {
        if let Some(s) = self.softmax_scale {
            if !s.is_finite() {
                return Err(Error::config("softmax_scale", format!("must be finite, got {s}")));
            }
        }
        if !(self.softcap.is_finite() && self.softcap >= 0.0) {
            return Err(Error::config("softcap", format!("must be finite and >= 0 (0 = off), got {}", self.softcap)));
        }
        let unlimited = |w: i64| if w < 0 { -1 } else { w };
        Ok(Scores {
            scale: self.softmax_scale.unwrap_or(1.0 / (head_dim as f64).sqrt()) as f32,
            softcap: self.softcap as f32,
            causal: self.causal,
            window_left: unlimited(self.window_left),
            window_right: unlimited(self.window_right),
        })
    }
}

impl AttentionConfig {
    pub(crate) fn common(&self) -> Common<'_> {
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

/// Most rows (query or key tokens, over all sequences) one call may have: row indices are
/// int32 in the kernels and in `cu_seqlens`, so dense calls get the same limit as varlen ones.
pub const MAX_ROWS: usize = i32::MAX as usize;

/// Element count of a tensor of `shape` and `dtype`, or an error naming `arg` when the element
/// count overflows usize or the byte count (`elements * dtype size`) exceeds `isize::MAX` (no
/// allocation, host or device, can be that large).
pub(crate) fn checked_bytes(arg: &str, shape: &[usize], dtype: DType) -> Result<usize> {
    let n = checked_numel(arg, shape)?;
    match n.checked_mul(dtype.size()) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(n),
        _ => Err(Error::invalid(arg, format!("shape {shape:?} of {dtype} needs more than isize::MAX bytes"))),
    }
}

/// Rejects more than [`MAX_ROWS`] rows (`what`) with `Unsupported` naming `arg`.
fn check_rows(arg: &str, what: &str, rows: usize) -> Result<()> {
    if rows > MAX_ROWS {
        return Err(Error::unsupported(arg, format!("{rows} {what} exceed 2^31 - 1 (row indices are int32)")));
    }
    Ok(())
}

/// The spans of a dense batch. Called after [`check_rows`]: with `Sq >= 1`, B <= B * Sq <=
/// [`MAX_ROWS`], so the list is bounded by the number of query rows. A dense call with `Sq = 0`
/// gets no spans at all (nothing to compute; B may be huge for an empty tensor). The list is
/// reserved fallibly, so even a bounded but unaffordable B is an error, not an abort.
fn dense_seqs(dims: &Dims) -> Result<Vec<SeqSpan>> {
    if dims.sq == 0 {
        return Ok(Vec::new());
    }
    let mut seqs = Vec::new();
    seqs.try_reserve_exact(dims.b)
        .map_err(|_| Error::unsupported("q", format!("cannot allocate the spans of {} sequences", dims.b)))?;
    // B * Sq and B * Sk were checked, so these products do not wrap.
    seqs.extend((0..dims.b).map(|b| SeqSpan { q_start: b * dims.sq, q_len: dims.sq, k_start: b * dims.sk, k_len: dims.sk }));
    Ok(seqs)
}

/// Shared second half of validation: dtypes, sequences, position ids, ALiBi, options, RoPE.
/// `dims` has passed the op's head checks; `heads_q`/`heads_kv` are what the plan reports,
/// `alibi_len` the expected length of `alibi_slopes`, `rope_dim` the head dim RoPE rotates.
pub(crate) fn plan_common<T: TensorInfo>(
    opts: &Common<'_>,
    args: &AttentionArgs<'_, T>,
    dims: &Dims,
    heads_q: usize,
    heads_kv: usize,
    alibi_len: usize,
) -> Result<AttentionPlan> {
    let dtype = args.q.dtype();
    expect_dtype("q", args.q, &[DType::F32, DType::F16, DType::BF16])?;
    expect_same_dtype("k", args.k, "q", dtype)?;
    expect_same_dtype("v", args.v, "q", dtype)?;
    if dims.d == 0 {
        return Err(Error::invalid("q", "head dim D must be at least 1"));
    }
    if dims.dv == 0 {
        return Err(Error::invalid("v", "head dim Dv must be at least 1"));
    }

    // Sizes, all before anything is allocated per sequence (B may be absurd for a lazily
    // described tensor): element and byte counts of q, k, v, the row totals and the outputs.
    for (name, t) in [("q", args.q), ("k", args.k), ("v", args.v)] {
        checked_bytes(name, t.shape(), t.dtype())?;
    }
    let (total_q, total_k) = if dims.varlen {
        (dims.sq, dims.sk)
    } else {
        let tq = dims.b.checked_mul(dims.sq).ok_or_else(|| Error::invalid("q", "B * Sq overflows"))?;
        let tk = dims.b.checked_mul(dims.sk).ok_or_else(|| Error::invalid("k", "B * Sk overflows"))?;
        (tq, tk)
    };
    check_rows("q", "query rows (B * Sq or total_q)", total_q)?;
    check_rows("k", "key rows (B * Sk or total_k)", total_k)?;
    let o_elems = total_q.checked_mul(heads_q).and_then(|n| n.checked_mul(dims.dv));
    let o_elems = o_elems.ok_or_else(|| Error::invalid("q", "output o (rows * heads * Dv) overflows"))?;
    checked_bytes("q", &[o_elems], dtype)?;
    let lse_elems = total_q.checked_mul(heads_q).ok_or_else(|| Error::invalid("q", "lse (rows * heads) overflows"))?;
    checked_bytes("q", &[lse_elems], DType::F32)?;

    // Sequences.
    let seqs = if dims.varlen {
        let cq = args.cu_seqlens_q.ok_or_else(|| Error::invalid("cu_seqlens_q", "required with cu_seqlens_k (varlen)"))?;
        let ck = args.cu_seqlens_k.ok_or_else(|| Error::invalid("cu_seqlens_k", "required with cu_seqlens_q (varlen)"))?;
        let oq = check_cu_seqlens("cu_seqlens_q", cq, dims.sq)?;
        let ok = check_cu_seqlens("cu_seqlens_k", ck, dims.sk)?;
        if oq.len() != ok.len() {
            return Err(Error::invalid(
                "cu_seqlens_k",
                format!("has {} entries but cu_seqlens_q has {} (same number of sequences needed)", ok.len(), oq.len()),
            ));
        }
        (0..oq.len() - 1)
            .map(|n| SeqSpan { q_start: oq[n], q_len: oq[n + 1] - oq[n], k_start: ok[n], k_len: ok[n + 1] - ok[n] })
            .collect::<Vec<_>>()
    } else {
        if args.cu_seqlens_q.is_some() || args.cu_seqlens_k.is_some() {
            let which = if args.cu_seqlens_q.is_some() { "cu_seqlens_q" } else { "cu_seqlens_k" };
            return Err(Error::invalid(which, "varlen needs both cu_seqlens_q and cu_seqlens_k with rank-3 q, k, v"));
        }
        dense_seqs(dims)?
    };
    let (max_q_len, max_k_len) = if dims.varlen {
        (seqs.iter().map(|s| s.q_len).max().unwrap_or(0), seqs.iter().map(|s| s.k_len).max().unwrap_or(0))
    } else {
        (dims.sq, dims.sk)
    };

    // Options.
    let scores = opts.scores(dims.d)?;

    // ALiBi.
    if let Some(a) = args.alibi_slopes {
        expect_dtype("alibi_slopes", a, &[DType::F32])?;
        if a.shape() != [alibi_len] {
            return Err(Error::shape("alibi_slopes", format!("[{alibi_len}]"), a.shape()));
        }
    }

    // Position ids and RoPE.
    let check_ids = |arg: &str, ids: Option<&[i32]>, want: usize, what: &str| -> Result<Option<i64>> {
        let Some(ids) = ids else { return Ok(None) };
        if opts.rope.is_none() {
            return Err(Error::invalid(arg, "position ids only choose RoPE positions; pass them with a `rope` config"));
        }
        if ids.len() != want {
            return Err(Error::invalid(arg, format!("expected {want} entries ({what}), got {}", ids.len())));
        }
        if let Some((idx, &p)) = ids.iter().enumerate().find(|(_, &p)| p < 0) {
            return Err(Error::invalid(arg, format!("positions must be >= 0, entry {idx} is {p}")));
        }
        Ok(Some(ids.iter().copied().max().map_or(-1, i64::from)))
    };
    let (wq, wk) = if dims.varlen { ("total_q", "total_k") } else { ("B * Sq", "B * Sk") };
    let max_id_q = check_ids("position_ids_q", args.position_ids_q, total_q, wq)?;
    let max_id_k = check_ids("position_ids_k", args.position_ids_k, total_k, wk)?;

    let (rope, max_position, min_position) = match opts.rope {
        None => (None, 0, 0),
        Some(rc) => {
            rc.validate(dims.d)?;
            let mut max_pos: i64 = -1;
            let mut min_pos: i64 = 0;
            match max_id_q {
                Some(m) => max_pos = max_pos.max(m),
                None => {
                    for s in seqs.iter().filter(|s| s.q_len > 0) {
                        max_pos = max_pos.max(s.k_len as i64 - 1);
                        min_pos = min_pos.min(s.k_len as i64 - s.q_len as i64);
                    }
                }
            }
            match max_id_k {
                Some(m) => max_pos = max_pos.max(m),
                None => max_pos = max_pos.max(max_k_len as i64 - 1),
            }
            let max_position = (max_pos + 1).max(0) as usize;
            let resolved = rc.resolve(max_position.max(1))?;
            (Some(resolved), max_position, min_pos)
        }
    };

    Ok(AttentionPlan {
        batch: if dims.varlen { seqs.len() } else { dims.b },
        varlen: dims.varlen,
        heads_q,
        heads_kv,
        head_dim: dims.d,
        head_dim_v: dims.dv,
        seqs,
        total_q,
        total_k,
        max_q_len,
        max_k_len,
        scale: scores.scale,
        softcap: scores.softcap,
        causal: scores.causal,
        window_left: scores.window_left,
        window_right: scores.window_right,
        dtype,
        has_alibi: args.alibi_slopes.is_some(),
        rope,
        max_position,
        min_position,
    })
}

/// Validate `attention` arguments against `cfg` and resolve everything a backend needs.
/// Errors name the argument (or config key) at fault; nothing is launched or computed.
///
/// Sizes are checked before anything is allocated per sequence: element and byte counts of
/// q, k, v and of the outputs must fit (`InvalidArgument` otherwise), and a call may have at
/// most [`MAX_ROWS`] query rows and key rows (`B * Sq`, `B * Sk`, or the varlen totals;
/// `Unsupported` beyond). A dense call with `Sq = 0` may have any B: it computes nothing.
pub fn plan<T: TensorInfo>(cfg: &AttentionConfig, args: &AttentionArgs<'_, T>) -> Result<AttentionPlan> {
    let varlen = args.cu_seqlens_q.is_some() || args.cu_seqlens_k.is_some();
    let dims = read_dims(args.q, args.k, args.v, varlen)?;
    if dims.hq == 0 {
        return Err(Error::invalid("q", "needs at least one head"));
    }
    if dims.hk == 0 {
        return Err(Error::invalid("k", "needs at least one head"));
    }
    if dims.hq % dims.hk != 0 {
        return Err(Error::invalid("k", format!("Hq % Hkv must be 0 (GQA), got Hq = {}, Hkv = {}", dims.hq, dims.hk)));
    }
    if dims.dk != dims.d {
        return Err(Error::shape("k", format!("head dim D = {} (of q)", dims.d), args.k.shape()));
    }
    if dims.hv != dims.hk {
        return Err(Error::shape("v", format!("Hkv = {} heads (of k)", dims.hk), args.v.shape()));
    }
    plan_common(&cfg.common(), args, &dims, dims.hq, dims.hk, dims.hq)
}
