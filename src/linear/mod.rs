//! Linear-attention recurrences (spec section 4): `linear_attention` (diagonal decay: plain
//! linear attention, RetNet, GLA, Mamba-2 scalar decay, RWKV-5/6 with the bonus `u`),
//! `delta_rule` (diagonal plus rank one: RWKV-7, DeltaNet, gated DeltaNet) and `rwkv4`.
//!
//! This module holds what every backend shares: the op configs (the case-file JSON), the
//! argument structs, and the validation that turns arguments into a plan ([`plan_linear`],
//! [`plan_delta_rule`], [`plan_rwkv4`]). The CPU reference lives in [`cpu`], the float64 test
//! oracles in `oracle` (feature `oracle`), the CUDA paths in [`cuda`] (recurrent) and [`chunked`] (chunked
//! tensor-core prefill).
//!
//! Choices where the spec is silent (documented here, listed in the docs):
//! - Varlen keeps the rank-4 layout with `B = 1` (as flash-linear-attention does):
//!   `q, k [1, total, H, K]`, `v [1, total, H, V]`, per-token `g` `[1, total, H(, K)]`,
//!   state `[N, H, K, V]`. An empty sequence (`cu[n] == cu[n+1]`) returns its initial state.
//! - `g` (log decay) and `u` (bonus) may be f32 or the dtype of `q`; `a`, `b` have q's dtype;
//!   `initial_state` is always f32. `g` values are not inspected: `g = -inf` is an exact zero
//!   decay (`exp(-inf) = 0`), `g = 0` no decay; positive `g` (growth) is computed as given.
//! - `scale` must be finite (any finite value, 0 and negatives included); the default is
//!   `1/sqrt(K)`. `K`, `V` and `H` must be at least 1; `B`, `T` (and every sequence) may be 0.
//! - `u` is only accepted by `linear_attention` (bonus mode); `delta_rule` has no bonus.
//! - `rwkv4` has no varlen and no scale; its outputs are named `y` (the RWKV name, `[B, T, C]`
//!   in v's dtype) and `final_state` (`[B, 3, C]` f32, rows `aa`, `bb`, `pp`). `w` is the
//!   per-step log decay as the kernel uses it (RWKV-4 passes `w = -exp(time_decay)`).
//! - All math is f32 with f32 state for every input dtype; `o` is rounded once to v's dtype.
//! - Decays close to 1 are applied as `S + expm1(g) S` (CPU path): an f32 `exp(g)` near 1 is
//!   off by up to 3e-8 absolute, the same way every step, which at `g = -1e-4` over 64k steps
//!   is a 1e-4 relative output error (the f32 bound is 1e-5). Kernels must do the same or
//!   better (a chunked form that exponentiates cumulative differences is fine).
//! - `rwkv4` (CPU path) keeps the log scale `pp` as an unevaluated f32 sum (two-sum of
//!   `pp + w`) for the same reason (`pp ~ 10` rounds a small `|w|` to whole ulps of pp), and
//!   folds the residual into `aa`, `bb` when it returns, so the returned `(aa, bb, pp)` agrees
//!   with the float64 evaluation of the spec's recurrence to f32 precision. The triple is one
//!   representation of the state (`aa e^pp`, `bb e^pp`); an f32 kernel running the spec's
//!   formula literally drifts in that representation (pp off by many ulps, aa/bb compensating)
//!   and fails a raw comparison of `final_state` at 64k steps with small `|w|`.

pub mod chunked;
pub mod cpu;
pub mod cuda;
#[cfg(feature = "oracle")]
pub mod oracle;

pub use cpu::{delta_rule_cpu, linear_attention_cpu, rwkv4_cpu};

use crate::error::{Error, Result};
use crate::attention::checked_bytes;
use crate::tensor::{check_cu_seqlens, expect_dtype, expect_rank, expect_same_dtype, expect_shape};
use crate::tensor::{DType, TensorInfo};
use serde::{Deserialize, Serialize};

const FLOATS: &[DType] = &[DType::F32, DType::F16, DType::BF16];

/// Config of `linear_attention` (case-file JSON keys).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearAttentionConfig {
    /// Output scale; `None` means `1/sqrt(K)` (RWKV passes 1.0).
    #[serde(default)]
    pub scale: Option<f64>,
}

/// Config of `delta_rule` (case-file JSON keys).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaRuleConfig {
    /// Output scale; `None` means `1/sqrt(K)` (RWKV-7 passes 1.0).
    #[serde(default)]
    pub scale: Option<f64>,
}

/// Config of `rwkv4` (no options).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rwkv4Config {}

/// How the log decay `g` is laid out (broadcast over the missing dimensions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecayShape {
    /// No `g`: no decay.
    None,
    /// `[B, T, H, K]` (GLA, RWKV-6).
    PerTokenKey,
    /// `[B, T, H]` (Mamba-2 style scalar decay per token).
    PerToken,
    /// `[H, K]` (RWKV-5 style fixed decay per channel).
    PerHeadKey,
    /// `[H]` (RetNet).
    PerHead,
}

impl DecayShape {
    /// Element offset in `g` of the decay for global token row `row` (row index into the
    /// flattened `B*T` token dimension) and head `head`, and the stride along K (1 or 0).
    /// `None` when there is no `g`.
    pub fn offset(self, row: usize, head: usize, heads: usize, key_dim: usize) -> Option<(usize, usize)> {
        match self {
            DecayShape::None => None,
            DecayShape::PerTokenKey => Some(((row * heads + head) * key_dim, 1)),
            DecayShape::PerToken => Some((row * heads + head, 0)),
            DecayShape::PerHeadKey => Some((head * key_dim, 1)),
            DecayShape::PerHead => Some((head, 0)),
        }
    }
}

/// Arguments of `linear_attention`, generic over host ([`Tensor`](crate::Tensor)) and device tensors.
pub struct LinearArgs<'a, T> {
    /// `[B, T, H, K]`, f32/f16/bf16.
    pub q: &'a T,
    /// `[B, T, H, K]`, q's dtype.
    pub k: &'a T,
    /// `[B, T, H, V]`, q's dtype.
    pub v: &'a T,
    /// Log decay, one of `[B, T, H, K]`, `[B, T, H]`, `[H, K]`, `[H]`; f32 or q's dtype.
    pub g: Option<&'a T>,
    /// RWKV bonus `[H, K]`, f32 or q's dtype; switches to the exclusive (bonus) form.
    pub u: Option<&'a T>,
    /// `[B, H, K, V]` (varlen `[N, H, K, V]`), f32; absent means zeros.
    pub initial_state: Option<&'a T>,
    /// Varlen offsets `[N+1]` (then `B = 1`).
    pub cu_seqlens: Option<&'a [i32]>,
}

impl<'a, T> Clone for LinearArgs<'a, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<'a, T> Copy for LinearArgs<'a, T> {}

impl<'a, T> LinearArgs<'a, T> {
    /// Plain (no decay, no bonus, zero initial state, no varlen) arguments.
    pub fn new(q: &'a T, k: &'a T, v: &'a T) -> Self {
        LinearArgs { q, k, v, g: None, u: None, initial_state: None, cu_seqlens: None }
    }
    pub fn with_g(mut self, g: &'a T) -> Self {
        self.g = Some(g);
        self
    }
    pub fn with_u(mut self, u: &'a T) -> Self {
        self.u = Some(u);
        self
    }
    pub fn with_initial_state(mut self, s: &'a T) -> Self {
        self.initial_state = Some(s);
        self
    }
    pub fn with_cu_seqlens(mut self, cu: &'a [i32]) -> Self {
        self.cu_seqlens = Some(cu);
        self
    }
}

/// Arguments of `delta_rule`.
pub struct DeltaRuleArgs<'a, T> {
    /// `[B, T, H, K]`, f32/f16/bf16.
    pub q: &'a T,
    /// `[B, T, H, K]`, q's dtype.
    pub k: &'a T,
    /// `[B, T, H, V]`, q's dtype.
    pub v: &'a T,
    /// `[B, T, H, K]`, q's dtype (the rank-one update is `b_t a_t^T`).
    pub a: &'a T,
    /// `[B, T, H, K]`, q's dtype.
    pub b: &'a T,
    /// Log decay, as for [`LinearArgs::g`].
    pub g: Option<&'a T>,
    /// `[B, H, K, V]` (varlen `[N, H, K, V]`), f32.
    pub initial_state: Option<&'a T>,
    /// Varlen offsets `[N+1]` (then `B = 1`).
    pub cu_seqlens: Option<&'a [i32]>,
}

impl<'a, T> Clone for DeltaRuleArgs<'a, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<'a, T> Copy for DeltaRuleArgs<'a, T> {}

impl<'a, T> DeltaRuleArgs<'a, T> {
    /// Arguments without decay, initial state or varlen.
    pub fn new(q: &'a T, k: &'a T, v: &'a T, a: &'a T, b: &'a T) -> Self {
        DeltaRuleArgs { q, k, v, a, b, g: None, initial_state: None, cu_seqlens: None }
    }
    pub fn with_g(mut self, g: &'a T) -> Self {
        self.g = Some(g);
        self
    }
    pub fn with_initial_state(mut self, s: &'a T) -> Self {
        self.initial_state = Some(s);
        self
    }
    pub fn with_cu_seqlens(mut self, cu: &'a [i32]) -> Self {
        self.cu_seqlens = Some(cu);
        self
    }
}

/// Arguments of `rwkv4`.
pub struct Rwkv4Args<'a, T> {
    /// `[B, T, C]`, f32/f16/bf16.
    pub k: &'a T,
    /// `[B, T, C]`, k's dtype.
    pub v: &'a T,
    /// Per-step log decay `[C]`, f32.
    pub w: &'a T,
    /// Bonus `[C]`, f32.
    pub u: &'a T,
    /// `(aa, bb, pp)` as `[B, 3, C]` f32; absent means `(0, 0, -1e38)`.
    pub initial_state: Option<&'a T>,
}

impl<'a, T> Clone for Rwkv4Args<'a, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<'a, T> Copy for Rwkv4Args<'a, T> {}

impl<'a, T> Rwkv4Args<'a, T> {
    pub fn new(k: &'a T, v: &'a T, w: &'a T, u: &'a T) -> Self {
        Rwkv4Args { k, v, w, u, initial_state: None }
    }
    pub fn with_initial_state(mut self, s: &'a T) -> Self {
        self.initial_state = Some(s);
        self
    }
}

/// A validated `linear_attention` / `delta_rule` call.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearPlan {
    /// Sequences (= state rows): `B`, or `N` with varlen.
    pub n_seqs: usize,
    pub varlen: bool,
    /// Token rows per batch row: `T` (varlen: `total`, with one batch row).
    pub t: usize,
    pub heads: usize,
    pub key_dim: usize,
    pub value_dim: usize,
    /// Per sequence: (first row in the flattened `B*T` token dimension, length).
    pub seqs: Vec<(usize, usize)>,
    pub decay: DecayShape,
    /// `u` given (linear_attention bonus form).
    pub has_bonus: bool,
    /// The resolved scale.
    pub scale: f32,
    /// dtype of q, k, v (and a, b); `o` has this dtype.
    pub dtype: DType,
}

impl LinearPlan {
    /// Batch rows of q: `B` (varlen: 1).
    pub fn batch_rows(&self) -> usize {
        if self.varlen {
            1
        } else {
            self.n_seqs
        }
    }
    /// Total token rows `B*T`.
    pub fn rows(&self) -> usize {
        self.batch_rows() * self.t
    }
    /// Shape of `o`: `[B, T, H, V]`.
    pub fn o_shape(&self) -> [usize; 4] {
        [self.batch_rows(), self.t, self.heads, self.value_dim]
    }
    /// Shape of the states: `[N, H, K, V]`.
    pub fn state_shape(&self) -> [usize; 4] {
        [self.n_seqs, self.heads, self.key_dim, self.value_dim]
    }
}

/// A validated `rwkv4` call.
#[derive(Clone, Debug, PartialEq)]
pub struct Rwkv4Plan {
    pub batch: usize,
    pub t: usize,
    pub channels: usize,
    /// dtype of k and v; `y` has this dtype.
    pub dtype: DType,
}

/// Outputs of a recurrence: `o` (rwkv4: `y`) and the f32 final state.
#[derive(Clone, Debug)]
pub struct RecurrentOutput<T> {
    pub o: T,
    pub final_state: T,
}

fn resolve_scale(scale: Option<f64>, key_dim: usize) -> Result<f32> {
    let s = match scale {
        Some(s) => s,
        None => 1.0 / (key_dim as f64).sqrt(),
    };
    if !s.is_finite() || !(s as f32).is_finite() {
        return Err(Error::invalid("scale", format!("must be finite (and fit in f32), got {s}")));
    }
    Ok(s as f32)
}

/// Most token rows (`B * T`) and sequences one call may have, as for attention: the kernels
/// index rows and sequences with int32 and `cu_seqlens` is int32, so dense calls get the same
/// limit as varlen ones (CPU included, so every device accepts the same calls).
pub const MAX_ROWS: usize = crate::attention::MAX_ROWS;

/// Rejects more than [`MAX_ROWS`] of `what` with `Unsupported` naming `arg`.
fn check_rows(arg: &str, what: &str, n: usize) -> Result<()> {
    if n > MAX_ROWS {
        return Err(Error::unsupported(arg, format!("{n} {what} exceed 2^31 - 1 (indices are int32)")));
    }
    Ok(())
}

/// Validates q, k, v, g, initial_state, cu_seqlens (shared by both ops). `u` handled by caller.
fn plan_common<T: TensorInfo>(
    scale: Option<f64>,
    q: &T,
    k: &T,
    v: &T,
    g: Option<&T>,
    initial_state: Option<&T>,
    cu_seqlens: Option<&[i32]>,
) -> Result<LinearPlan> {
    expect_dtype("q", q, FLOATS)?;
    expect_rank("q", q, 4, "[B, T, H, K]")?;
    let dtype = q.dtype();
    let (b, t, h, kd) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    if h == 0 || kd == 0 {
        return Err(Error::shape("q", "[B, T, H, K] with H >= 1 and K >= 1", q.shape()));
    }
    checked_bytes("q", q.shape(), dtype)?;
    expect_same_dtype("k", k, "q", dtype)?;
    expect_shape("k", k, q.shape())?;
    expect_same_dtype("v", v, "q", dtype)?;
    expect_rank("v", v, 4, "[B, T, H, V]")?;
    let vd = v.shape()[3];
    if v.shape()[..3] != q.shape()[..3] || vd == 0 {
        return Err(Error::shape("v", format!("[{b}, {t}, {h}, V] (B, T, H of q; V >= 1)"), v.shape()));
    }
    checked_bytes("v", v.shape(), dtype)?;

    // Every count is checked before anything is allocated per sequence.
    let offsets = match cu_seqlens {
        Some(cu) => {
            if b != 1 {
                return Err(Error::shape("q", "[1, total, H, K] (B = 1 when cu_seqlens is given)", q.shape()));
            }
            Some(check_cu_seqlens("cu_seqlens", cu, t)?)
        }
        None => None,
    };
    let n_seqs = offsets.as_ref().map_or(b, |o| o.len() - 1);
    // B * T fits: q's element count was checked and H, K >= 1.
    check_rows("q", "token rows (B * T)", b * t)?;
    check_rows("q", "sequences", n_seqs)?;
    let state_shape = [n_seqs, h, kd, vd];
    checked_bytes("initial_state", &state_shape, DType::F32)?;

    let decay = match g {
        None => DecayShape::None,
        Some(g) => {
            let allowed: &[DType] = if dtype == DType::F32 { &[DType::F32] } else { &[DType::F32, dtype] };
            expect_dtype("g", g, allowed)?;
            let s = g.shape();
            if s == [b, t, h, kd] {
                DecayShape::PerTokenKey
            } else if s == [b, t, h] {
                DecayShape::PerToken
            } else if s == [h, kd] {
                DecayShape::PerHeadKey
            } else if s == [h] {
                DecayShape::PerHead
            } else {
                return Err(Error::shape(
                    "g",
                    format!("one of [{b}, {t}, {h}, {kd}] ([B, T, H, K]), [{b}, {t}, {h}], [{h}, {kd}], [{h}]"),
                    s,
                ));
            }
        }
    };

    if let Some(g) = g {
        checked_bytes("g", g.shape(), g.dtype())?;
    }
    if let Some(s0) = initial_state {
        expect_dtype("initial_state", s0, &[DType::F32])?;
        expect_shape("initial_state", s0, &state_shape)?;
    }
    // `o` is `[B, T, H, V]` in q's dtype: v's counts, checked above.

    let seqs = match offsets {
        Some(offs) => offs.windows(2).map(|w| (w[0], w[1] - w[0])).collect(),
        None => {
            let mut seqs = Vec::new();
            seqs.try_reserve_exact(b)
                .map_err(|_| Error::unsupported("q", format!("cannot allocate the spans of {b} sequences")))?;
            seqs.extend((0..b).map(|i| (i * t, t)));
            seqs
        }
    };

    Ok(LinearPlan {
        n_seqs,
        varlen: cu_seqlens.is_some(),
        t,
        heads: h,
        key_dim: kd,
        value_dim: vd,
        seqs,
        decay,
        has_bonus: false,
        scale: resolve_scale(scale, kd)?,
        dtype,
    })
}

/// Validate a `linear_attention` call (spec section 4).
///
/// Sizes (here and in [`plan_delta_rule`], [`plan_rwkv4`]) are checked before anything is
/// allocated per sequence: every tensor's element count and byte count (`elements * dtype
/// size <= isize::MAX`), the state's included, must fit (`InvalidArgument` otherwise), and a
/// call may have at most [`MAX_ROWS`] token rows and sequences (`Unsupported` beyond).
pub fn plan_linear<T: TensorInfo>(cfg: &LinearAttentionConfig, args: &LinearArgs<'_, T>) -> Result<LinearPlan> {
    let mut plan = plan_common(cfg.scale, args.q, args.k, args.v, args.g, args.initial_state, args.cu_seqlens)?;
    if let Some(u) = args.u {
        let allowed: &[DType] = if plan.dtype == DType::F32 { &[DType::F32] } else { &[DType::F32, plan.dtype] };
        expect_dtype("u", u, allowed)?;
        expect_shape("u", u, &[plan.heads, plan.key_dim])?;
        checked_bytes("u", u.shape(), u.dtype())?;
        plan.has_bonus = true;
    }
    Ok(plan)
}

/// Validate a `delta_rule` call (spec section 4).
pub fn plan_delta_rule<T: TensorInfo>(cfg: &DeltaRuleConfig, args: &DeltaRuleArgs<'_, T>) -> Result<LinearPlan> {
    let plan = plan_common(cfg.scale, args.q, args.k, args.v, args.g, args.initial_state, args.cu_seqlens)?;
    for (name, t) in [("a", args.a), ("b", args.b)] {
        expect_same_dtype(name, t, "q", plan.dtype)?;
        expect_shape(name, t, args.q.shape())?;
        checked_bytes(name, t.shape(), t.dtype())?;
    }
    Ok(plan)
}

/// Validate an `rwkv4` call (spec section 4).
pub fn plan_rwkv4<T: TensorInfo>(_cfg: &Rwkv4Config, args: &Rwkv4Args<'_, T>) -> Result<Rwkv4Plan> {
    expect_dtype("k", args.k, FLOATS)?;
    expect_rank("k", args.k, 3, "[B, T, C]")?;
    let dtype = args.k.dtype();
    let (b, t, c) = (args.k.shape()[0], args.k.shape()[1], args.k.shape()[2]);
    if c == 0 {
        return Err(Error::shape("k", "[B, T, C] with C >= 1", args.k.shape()));
    }
    checked_bytes("k", args.k.shape(), dtype)?;
    check_rows("k", "token rows (B * T)", b * t)?;
    check_rows("k", "sequences (B)", b)?;
    expect_same_dtype("v", args.v, "k", dtype)?;
    expect_shape("v", args.v, args.k.shape())?;
    for (name, x) in [("w", args.w), ("u", args.u)] {
        expect_dtype(name, x, &[DType::F32])?;
        expect_shape(name, x, &[c])?;
    }
    if let Some(s0) = args.initial_state {
        expect_dtype("initial_state", s0, &[DType::F32])?;
        expect_shape("initial_state", s0, &[b, 3, c])?;
    }
    checked_bytes("initial_state", &[b, 3, c], DType::F32)?;
    Ok(Rwkv4Plan { batch: b, t, channels: c, dtype })
}
