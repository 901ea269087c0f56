//! CPU reference of the linear-attention recurrences (spec section 4).
//!
//! One rayon task per (sequence, head) runs the recurrence token by token with an f32 state
//! `S [K, V]` held row-major, so each token is two passes over K rows of V contiguous floats
//! (the compiler vectorises the inner loops). Inputs of every dtype are widened to f32 once;
//! `o` is rounded once to v's dtype.

use super::{plan_delta_rule, plan_linear, plan_rwkv4, DecayShape, LinearPlan, RecurrentOutput};
use super::{DeltaRuleArgs, DeltaRuleConfig, LinearArgs, LinearAttentionConfig, Rwkv4Args, Rwkv4Config};
use crate::error::{Error, Result};
use crate::tensor::{Storage, Tensor};
use rayon::prelude::*;

/// Widened inputs of one `linear_attention` / `delta_rule` call.
struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    g: Option<Vec<f32>>,
    /// linear_attention bonus `[H, K]`.
    u: Option<Vec<f32>>,
    /// delta_rule rank-one factors `[B, T, H, K]`.
    ab: Option<(Vec<f32>, Vec<f32>)>,
    s0: Option<Vec<f32>>,
}

/// `linear_attention` on the CPU: `o [B, T, H, V]` in v's dtype, `final_state [N, H, K, V]` f32.
pub fn linear_attention_cpu(
    cfg: &LinearAttentionConfig,
    args: &LinearArgs<'_, Tensor>,
) -> Result<RecurrentOutput<Tensor>> {
    let plan = plan_linear(cfg, args)?;
    let inputs = Inputs {
        q: args.q.to_f32_vec(),
        k: args.k.to_f32_vec(),
        v: args.v.to_f32_vec(),
        g: args.g.map(Tensor::to_f32_vec),
        u: args.u.map(Tensor::to_f32_vec),
        ab: None,
        s0: args.initial_state.map(Tensor::to_f32_vec),
    };
    run(&plan, &inputs)
}

/// `delta_rule` on the CPU: `o [B, T, H, V]` in v's dtype, `final_state [N, H, K, V]` f32.
pub fn delta_rule_cpu(cfg: &DeltaRuleConfig, args: &DeltaRuleArgs<'_, Tensor>) -> Result<RecurrentOutput<Tensor>> {
    let plan = plan_delta_rule(cfg, args)?;
    let inputs = Inputs {
        q: args.q.to_f32_vec(),
        k: args.k.to_f32_vec(),
        v: args.v.to_f32_vec(),
        g: args.g.map(Tensor::to_f32_vec),
        u: None,
        ab: Some((args.a.to_f32_vec(), args.b.to_f32_vec())),
        s0: args.initial_state.map(Tensor::to_f32_vec),
    };
    run(&plan, &inputs)
}

fn run(plan: &LinearPlan, x: &Inputs) -> Result<RecurrentOutput<Tensor>> {
    let (h, kd, vd) = (plan.heads, plan.key_dim, plan.value_dim);
    // Outputs first, fallibly: the plan bounds every count, but a huge batch of empty
    // sequences still has a real (zero) final state to allocate.
    let mut o = try_zeros("q", plan.rows() * h * vd)?;
    let mut state = try_zeros("initial_state", plan.n_seqs * h * kd * vd)?;
    let tasks: Vec<(usize, usize)> = (0..plan.n_seqs).flat_map(|n| (0..h).map(move |hh| (n, hh))).collect();
    let results: Vec<(Vec<f32>, Vec<f32>)> = tasks.par_iter().map(|&(n, hh)| run_head(plan, x, n, hh)).collect();

    for (&(n, hh), (o_seq, s)) in tasks.iter().zip(results) {
        let (row0, len) = plan.seqs[n];
        for t in 0..len {
            let dst = ((row0 + t) * h + hh) * vd;
            o[dst..dst + vd].copy_from_slice(&o_seq[t * vd..(t + 1) * vd]);
        }
        let dst = (n * h + hh) * kd * vd;
        state[dst..dst + kd * vd].copy_from_slice(&s);
    }
    Ok(RecurrentOutput {
        o: Tensor::from_f32(plan.dtype, &plan.o_shape(), &o)?,
        final_state: Tensor::from_storage(&plan.state_shape(), Storage::F32(state))?,
    })
}

/// `n` zeros, or an `Unsupported` error naming `arg` when they cannot be allocated.
fn try_zeros(arg: &str, n: usize) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::unsupported(arg, format!("cannot allocate {n} f32 outputs on the host")))?;
    v.resize(n, 0.0);
    Ok(v)
}

/// One (sequence, head): returns `o` rows `[len, V]` and the final state `[K, V]`.
fn run_head(plan: &LinearPlan, x: &Inputs, n: usize, hh: usize) -> (Vec<f32>, Vec<f32>) {
    let (h, kd, vd) = (plan.heads, plan.key_dim, plan.value_dim);
    let (row0, len) = plan.seqs[n];
    let mut s = match &x.s0 {
        Some(s0) => s0[(n * h + hh) * kd * vd..][..kd * vd].to_vec(),
        None => vec![0.0f32; kd * vd],
    };
    let mut o = vec![0.0f32; len * vd];
    let mut decay = vec![1.0f32; kd];
    let mut decay_m1 = vec![0.0f32; kd];
    let mut qs = vec![0.0f32; kd];
    let mut w = vec![0.0f32; vd];
    let static_decay = matches!(plan.decay, DecayShape::PerHeadKey | DecayShape::PerHead);
    if static_decay {
        fill_decay(plan, x, row0, hh, &mut decay, &mut decay_m1);
    }
    let bonus = x.u.as_ref().map(|u| &u[hh * kd..(hh + 1) * kd]);

    for t in 0..len {
        let r = row0 + t;
        let qk = (r * h + hh) * kd;
        let (q, k) = (&x.q[qk..qk + kd], &x.k[qk..qk + kd]);
        let v = &x.v[(r * h + hh) * vd..][..vd];
        if !static_decay {
            fill_decay(plan, x, r, hh, &mut decay, &mut decay_m1);
        }
        for i in 0..kd {
            qs[i] = plan.scale * q[i];
        }
        let out = &mut o[t * vd..(t + 1) * vd];

        if let Some((a_all, b_all)) = &x.ab {
            // Delta rule: S = diag(d) S + b (a^T S) + k^T v;  o = scale q S.
            let (a, b) = (&a_all[qk..qk + kd], &b_all[qk..qk + kd]);
            w.iter_mut().for_each(|x| *x = 0.0);
            for i in 0..kd {
                let ai = a[i];
                for (wj, &r) in w.iter_mut().zip(&s[i * vd..(i + 1) * vd]) {
                    *wj += ai * r;
                }
            }
            for i in 0..kd {
                let row = &mut s[i * vd..(i + 1) * vd];
                let (di, bi, ki, qi) = (decay[i], b[i], k[i], qs[i]);
                if di < NEAR_ONE {
                    for (((r, &wj), &vj), oj) in row.iter_mut().zip(&w).zip(v).zip(out.iter_mut()) {
                        *r = di * *r + bi * wj + ki * vj;
                        *oj += qi * *r;
                    }
                } else {
                    let dm1 = decay_m1[i];
                    for (((r, &wj), &vj), oj) in row.iter_mut().zip(&w).zip(v).zip(out.iter_mut()) {
                        *r += dm1 * *r + bi * wj + ki * vj;
                        *oj += qi * *r;
                    }
                }
            }
        } else if let Some(u) = bonus {
            // RWKV bonus: o = scale q (S_{t-1} + diag(u) k^T v), then S = diag(d) S + k^T v.
            let mut quk = 0.0f32;
            for i in 0..kd {
                quk += qs[i] * u[i] * k[i];
            }
            for i in 0..kd {
                let row = &mut s[i * vd..(i + 1) * vd];
                let (di, ki, qi) = (decay[i], k[i], qs[i]);
                if di < NEAR_ONE {
                    for ((r, &vj), oj) in row.iter_mut().zip(v).zip(out.iter_mut()) {
                        *oj += qi * *r;
                        *r = di * *r + ki * vj;
                    }
                } else {
                    let dm1 = decay_m1[i];
                    for ((r, &vj), oj) in row.iter_mut().zip(v).zip(out.iter_mut()) {
                        *oj += qi * *r;
                        *r += dm1 * *r + ki * vj;
                    }
                }
            }
            for j in 0..vd {
                out[j] += quk * v[j];
            }
        } else {
            // Inclusive form: S = diag(d) S + k^T v, then o = scale q S.
            for i in 0..kd {
                let row = &mut s[i * vd..(i + 1) * vd];
                let (di, ki, qi) = (decay[i], k[i], qs[i]);
                if di < NEAR_ONE {
                    for ((r, &vj), oj) in row.iter_mut().zip(v).zip(out.iter_mut()) {
                        *r = di * *r + ki * vj;
                        *oj += qi * *r;
                    }
                } else {
                    let dm1 = decay_m1[i];
                    for ((r, &vj), oj) in row.iter_mut().zip(v).zip(out.iter_mut()) {
                        *r += dm1 * *r + ki * vj;
                        *oj += qi * *r;
                    }
                }
            }
        }
    }
    (o, s)
}

/// Decays at or above this are applied as `S + (exp(g) - 1) S`: an f32 `exp(g)` close to 1
/// carries an absolute error of ~3e-8, i.e. a *systematic* relative error of 3e-8/|g| in the
/// decay rate (3e-4 at g = -1e-4), which a long sequence turns into a visible output error.
/// `expm1(g)` keeps full relative precision. Below it, `exp(g) S` is exact enough and keeps
/// `g = -inf` an exact reset.
const NEAR_ONE: f32 = 0.5;

/// `decay[i] = exp(g)`, `decay_m1[i] = expm1(g)` for token row `r`, head `hh` (1 and 0 without `g`).
fn fill_decay(plan: &LinearPlan, x: &Inputs, r: usize, hh: usize, decay: &mut [f32], decay_m1: &mut [f32]) {
    if let (Some(g), Some((off, stride))) = (&x.g, plan.decay.offset(r, hh, plan.heads, plan.key_dim)) {
        for i in 0..decay.len() {
            let gi = g[off + i * stride];
            decay[i] = gi.exp();
            decay_m1[i] = gi.exp_m1();
        }
    }
}

/// Channels per rwkv4 task (enough work per task, enough tasks for the cores).
const RWKV4_CHANNEL_BLOCK: usize = 64;

/// `rwkv4` on the CPU: `o` is `y [B, T, C]` in v's dtype, `final_state [B, 3, C]` f32
/// (`aa`, `bb`, `pp`).
///
/// # Per-step algorithm (the CUDA kernel `kernels/linear/rwkv4.cu` mirrors it)
///
/// All arithmetic is f32, rounded to nearest, with no contraction into FMAs (on the GPU use
/// `__fadd_rn` / `__fsub_rn` / `__fmul_rn` for the lines marked exact). Per channel the state is
/// `aa, bb, pp` (the spec's) plus three internal correction terms, all starting at 0:
/// `ca, cb` (compensation of `aa`, `bb`: the represented values are `aa + ca`, `bb + cb`) and
/// `lo` (the log scale is the unevaluated sum `pp + lo`, `|lo| <= ulp(pp) / 2`).
/// `two_sum(a, b)` returns `(s, e)` with `s = fl(a + b)`, `z = s - a`,
/// `e = (a - (s - z)) + (b - z)` (exact: `s + e == a + b`). For token `t` with `k, v` widened
/// to f32 and `w, u` of the channel:
///
/// ```text
/// // output
/// d  = ((u + k) - pp) - lo
/// if d > 0 { e1 = exp(-d); e2 = 1 } else { e1 = 1; e2 = exp(d) }
/// y  = (e1 * (aa + ca) + e2 * v) / (e1 * (bb + cb) + e2)
/// // state: log scale pp + w, kept exactly as s + l
/// s  = pp + w
/// if s is finite { (s, err) = two_sum(pp, w); l = lo + err } else { l = lo }   // exact
/// d  = (k - s) - l                      // +inf when w = -inf: the old state is forgotten
/// if d > 0 {                            // k is the new maximum: rescale the old state
///     e1 = exp(-d)                      // exactly 0 when w = -inf
///     (aa, ea) = two_sum(e1 * aa, v);  ca = e1 * ca + ea        // exact two_sum
///     (bb, eb) = two_sum(e1 * bb, 1);  cb = e1 * cb + eb
///     pp = k;  lo = 0
/// } else {                              // the old state keeps the maximum: scale factor 1
///     e2 = exp(d)
///     (aa, ea) = two_sum(aa, e2 * v);  ca = ca + ea              // exact two_sum
///     (bb, eb) = two_sum(bb, e2);      cb = cb + eb
///     hi = s + l;  lo = l - (hi - s);  pp = hi                   // exact
/// }
/// ```
///
/// After the last token the corrections are folded in, so the state returned is the spec's
/// plain triple: `f = exp(lo); aa = (aa + ca) * f; bb = (bb + cb) * f; pp` unchanged. A given
/// `initial_state` starts with `ca = cb = lo = 0`.
///
/// Why: `pp + w` in plain f32 rounds a small `|w|` to whole ulps of `pp` the same way every
/// step (1e-4 relative error after 64k steps at `w = -2e-4`); with `w = 0` the sums `aa, bb`
/// collect 64k terms (3e-5 relative error in plain f32, 1e-7 compensated); with `w = -inf` the
/// two-sum would compute `inf - inf`, hence the finiteness test (the decay is exactly 0 then).
pub fn rwkv4_cpu(cfg: &Rwkv4Config, args: &Rwkv4Args<'_, Tensor>) -> Result<RecurrentOutput<Tensor>> {
    let plan = plan_rwkv4(cfg, args)?;
    let (bn, tn, c) = (plan.batch, plan.t, plan.channels);
    let (k, v) = (args.k.to_f32_vec(), args.v.to_f32_vec());
    let (w, u) = (args.w.to_f32_vec(), args.u.to_f32_vec());
    let s0 = args.initial_state.map(Tensor::to_f32_vec);

    let mut y = try_zeros("k", bn * tn * c)?;
    let mut state = try_zeros("initial_state", bn * 3 * c)?;
    let blocks = c.div_ceil(RWKV4_CHANNEL_BLOCK);
    let tasks: Vec<(usize, usize)> = (0..bn).flat_map(|b| (0..blocks).map(move |cb| (b, cb))).collect();
    let results: Vec<(Vec<f32>, [Vec<f32>; 3])> = tasks
        .par_iter()
        .map(|&(b, cb)| {
            let c0 = cb * RWKV4_CHANNEL_BLOCK;
            let nc = RWKV4_CHANNEL_BLOCK.min(c - c0);
            let (mut aa, mut bb, mut pp) = match &s0 {
                Some(s) => {
                    let at = |row: usize| s[(b * 3 + row) * c + c0..][..nc].to_vec();
                    (at(0), at(1), at(2))
                }
                None => (vec![0.0f32; nc], vec![0.0f32; nc], vec![-1e38f32; nc]),
            };
            let mut ca = vec![0.0f32; nc];
            let mut cbb = vec![0.0f32; nc];
            let mut lo = vec![0.0f32; nc];
            let mut y = vec![0.0f32; tn * nc];
            for t in 0..tn {
                let base = (b * tn + t) * c + c0;
                for i in 0..nc {
                    let (kt, vt) = (k[base + i], v[base + i]);
                    // Output: p = max(pp, u + k); d = (u + k) - pp.
                    let d = ((u[c0 + i] + kt) - pp[i]) - lo[i];
                    let (e1, e2) = if d > 0.0 { ((-d).exp(), 1.0) } else { (1.0, d.exp()) };
                    y[t * nc + i] = (e1 * (aa[i] + ca[i]) + e2 * vt) / (e1 * (bb[i] + cbb[i]) + e2);
                    // State: the log scale pp + w, exactly as s + l (w = -inf: decay 0, l = lo).
                    let wi = w[c0 + i];
                    let s = pp[i] + wi;
                    let l = if s.is_finite() { lo[i] + two_sum(pp[i], wi).1 } else { lo[i] };
                    let d = (kt - s) - l;
                    if d > 0.0 {
                        // k is the new maximum: rescale the old state, e2 = 1.
                        let e1 = (-d).exp();
                        let (a, ea) = two_sum(e1 * aa[i], vt);
                        let (bsum, eb) = two_sum(e1 * bb[i], 1.0);
                        (aa[i], ca[i]) = (a, e1 * ca[i] + ea);
                        (bb[i], cbb[i]) = (bsum, e1 * cbb[i] + eb);
                        pp[i] = kt;
                        lo[i] = 0.0;
                    } else {
                        // The old state keeps the maximum: factor 1, only the scale moves.
                        let e2 = d.exp();
                        let (a, ea) = two_sum(aa[i], e2 * vt);
                        let (bsum, eb) = two_sum(bb[i], e2);
                        (aa[i], ca[i]) = (a, ca[i] + ea);
                        (bb[i], cbb[i]) = (bsum, cbb[i] + eb);
                        let hi = s + l;
                        lo[i] = l - (hi - s);
                        pp[i] = hi;
                    }
                }
            }
            // Fold the corrections in, so the returned (aa, bb, pp) is the spec's f32 state.
            for i in 0..nc {
                let f = lo[i].exp();
                aa[i] = (aa[i] + ca[i]) * f;
                bb[i] = (bb[i] + cbb[i]) * f;
            }
            (y, [aa, bb, pp])
        })
        .collect();

    for (&(b, cb), (yb, st)) in tasks.iter().zip(results) {
        let c0 = cb * RWKV4_CHANNEL_BLOCK;
        let nc = st[0].len();
        for t in 0..tn {
            let dst = (b * tn + t) * c + c0;
            y[dst..dst + nc].copy_from_slice(&yb[t * nc..(t + 1) * nc]);
        }
        for (row, vals) in st.iter().enumerate() {
            let dst = (b * 3 + row) * c + c0;
            state[dst..dst + nc].copy_from_slice(vals);
        }
    }
    Ok(RecurrentOutput {
        o: Tensor::from_f32(plan.dtype, &[bn, tn, c], &y)?,
        final_state: Tensor::from_storage(&[bn, 3, c], Storage::F32(state))?,
    })
}

/// Knuth's two-sum: `(s, e)` with `s = fl(a + b)` and `s + e == a + b` exactly (finite inputs).
#[inline]
fn two_sum(a: f32, b: f32) -> (f32, f32) {
    let s = a + b;
    let z = s - a;
    (s, (a - (s - z)) + (b - z))
}
