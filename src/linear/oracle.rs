//! The test oracles of the linear-attention family: naive float64 evaluations of spec
//! section 4, written independently of the optimised CPU path (their own indexing, f64 state,
//! the explicit matrix form). Tests and `attn-kernels check` compare against them.
//!
//! - [`linear_attention`], [`delta_rule`], [`rwkv4`]: the recurrences token by token.
//! - [`linear_attention_closed_form`]: the O(T^2) parallel form of `linear_attention`,
//!   `o_t = scale * sum_{s<=t} (q_t * exp(G_t - G_s)) . k_s v_s + scale * (q_t * exp(G_t)) S_0`
//!   with `G_t` the inclusive cumulative log decay (bonus form: the sum runs over `s < t`
//!   with `G_{t-1}`, plus `scale * (q_t . (u * k_t)) v_t`). Needs finite `g`.
//! - [`rwkv4_closed_form`]: RWKV-4 as the plain ratio of exponentially weighted sums (valid while
//!   the exponents stay inside the f64 range).
//!
//! Inputs are validated with the family's plan functions (so bad input fails the same way);
//! the evaluation itself uses nothing from the plans.

use super::{plan_delta_rule, plan_linear, plan_rwkv4};
use super::{DeltaRuleArgs, DeltaRuleConfig, LinearArgs, LinearAttentionConfig, Rwkv4Args, Rwkv4Config};
use crate::error::Result;
use crate::tensor::{Tensor, TensorInfo};

/// Float64 outputs in the layouts of the op's outputs (`o` / `y`, `final_state`).
#[derive(Clone, Debug)]
pub struct OracleOutput {
    pub o: Vec<f64>,
    pub final_state: Vec<f64>,
}

/// Shapes read straight from the tensors.
struct Dims {
    h: usize,
    kd: usize,
    vd: usize,
    /// Per sequence: global token rows `[start, end)`.
    seqs: Vec<(usize, usize)>,
    rows: usize,
}

fn dims(q: &Tensor, v: &Tensor, cu: Option<&[i32]>) -> Dims {
    let (b, t, h, kd) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let vd = v.shape()[3];
    let seqs = match cu {
        Some(cu) => (0..cu.len() - 1).map(|n| (cu[n] as usize, cu[n + 1] as usize)).collect(),
        None => (0..b).map(|i| (i * t, (i + 1) * t)).collect(),
    };
    Dims { h, kd, vd, seqs, rows: b * t }
}

/// Log decay of key channel `i` at token row `row`, head `hh` (0 without `g`).
fn log_decay(g: Option<&(Vec<f64>, Vec<usize>)>, row: usize, hh: usize, i: usize, h: usize, kd: usize) -> f64 {
    match g {
        None => 0.0,
        Some((g, shape)) => match shape.len() {
            4 => g[(row * h + hh) * kd + i],
            3 => g[row * h + hh],
            2 => g[hh * kd + i],
            _ => g[hh],
        },
    }
}

fn initial(s0: Option<&Tensor>, len: usize) -> Vec<f64> {
    s0.map(Tensor::to_f64_vec).unwrap_or_else(|| vec![0.0; len])
}

/// `linear_attention`, token by token in f64 (spec section 4, both forms).
pub fn linear_attention(cfg: &LinearAttentionConfig, args: &LinearArgs<'_, Tensor>) -> Result<OracleOutput> {
    plan_linear(cfg, args)?;
    let d = dims(args.q, args.v, args.cu_seqlens);
    let (h, kd, vd) = (d.h, d.kd, d.vd);
    let scale = cfg.scale.unwrap_or(1.0 / (kd as f64).sqrt());
    let (q, k, v) = (args.q.to_f64_vec(), args.k.to_f64_vec(), args.v.to_f64_vec());
    let g = args.g.map(|g| (g.to_f64_vec(), g.shape().to_vec()));
    let u = args.u.map(Tensor::to_f64_vec);
    let mut state = initial(args.initial_state, d.seqs.len() * h * kd * vd);
    let mut o = vec![0.0f64; d.rows * h * vd];

    for (n, &(start, end)) in d.seqs.iter().enumerate() {
        for hh in 0..h {
            let s = &mut state[(n * h + hh) * kd * vd..][..kd * vd];
            for r in start..end {
                let qt = &q[(r * h + hh) * kd..][..kd];
                let kt = &k[(r * h + hh) * kd..][..kd];
                let vt = &v[(r * h + hh) * vd..][..vd];
                let ot = &mut o[(r * h + hh) * vd..][..vd];
                if let Some(u) = &u {
                    // o_t = scale q_t (S_{t-1} + diag(u) k_t^T v_t)
                    for j in 0..vd {
                        let mut acc = 0.0;
                        for i in 0..kd {
                            acc += qt[i] * (s[i * vd + j] + u[hh * kd + i] * kt[i] * vt[j]);
                        }
                        ot[j] = scale * acc;
                    }
                }
                for i in 0..kd {
                    let decay = log_decay(g.as_ref(), r, hh, i, h, kd).exp();
                    for j in 0..vd {
                        s[i * vd + j] = decay * s[i * vd + j] + kt[i] * vt[j];
                    }
                }
                if u.is_none() {
                    for j in 0..vd {
                        ot[j] = scale * (0..kd).map(|i| qt[i] * s[i * vd + j]).sum::<f64>();
                    }
                }
            }
        }
    }
    Ok(OracleOutput { o, final_state: state })
}

/// `o` of `linear_attention` by the explicit O(T^2) closed form (finite `g` only).
pub fn linear_attention_closed_form(cfg: &LinearAttentionConfig, args: &LinearArgs<'_, Tensor>) -> Result<Vec<f64>> {
    plan_linear(cfg, args)?;
    let d = dims(args.q, args.v, args.cu_seqlens);
    let (h, kd, vd) = (d.h, d.kd, d.vd);
    let scale = cfg.scale.unwrap_or(1.0 / (kd as f64).sqrt());
    let (q, k, v) = (args.q.to_f64_vec(), args.k.to_f64_vec(), args.v.to_f64_vec());
    let g = args.g.map(|g| (g.to_f64_vec(), g.shape().to_vec()));
    let u = args.u.map(Tensor::to_f64_vec);
    let s0 = initial(args.initial_state, d.seqs.len() * h * kd * vd);
    let mut o = vec![0.0f64; d.rows * h * vd];

    for (n, &(start, end)) in d.seqs.iter().enumerate() {
        for hh in 0..h {
            let s0 = &s0[(n * h + hh) * kd * vd..][..kd * vd];
            // cum[t][i] = G_t[i] = sum_{r <= t} g_r[i] (t relative to start)
            let mut cum = vec![vec![0.0f64; kd]; end - start];
            for r in start..end {
                for i in 0..kd {
                    let prev = if r > start { cum[r - start - 1][i] } else { 0.0 };
                    cum[r - start][i] = prev + log_decay(g.as_ref(), r, hh, i, h, kd);
                }
            }
            for t in start..end {
                let qt = &q[(t * h + hh) * kd..][..kd];
                let zero = vec![0.0f64; kd];
                // Bonus form reads the state before token t: G_{t-1}, sum over s < t.
                let (gt, last) = if u.is_some() {
                    (if t > start { &cum[t - start - 1] } else { &zero }, t)
                } else {
                    (&cum[t - start], t + 1)
                };
                for j in 0..vd {
                    let mut acc = 0.0;
                    for i in 0..kd {
                        acc += qt[i] * gt[i].exp() * s0[i * vd + j];
                    }
                    for s in start..last {
                        let ks = &k[(s * h + hh) * kd..][..kd];
                        let vs = v[(s * h + hh) * vd + j];
                        for i in 0..kd {
                            acc += qt[i] * (gt[i] - cum[s - start][i]).exp() * ks[i] * vs;
                        }
                    }
                    if let Some(u) = &u {
                        let kt = &k[(t * h + hh) * kd..][..kd];
                        let vt = v[(t * h + hh) * vd + j];
                        for i in 0..kd {
                            acc += qt[i] * u[hh * kd + i] * kt[i] * vt;
                        }
                    }
                    o[(t * h + hh) * vd + j] = scale * acc;
                }
            }
        }
    }
    Ok(o)
}

/// `delta_rule`, token by token in f64: `S_t = (diag(exp(g_t)) + b_t a_t^T) S_{t-1} + k_t^T v_t`
/// with the transition matrix formed explicitly.
pub fn delta_rule(cfg: &DeltaRuleConfig, args: &DeltaRuleArgs<'_, Tensor>) -> Result<OracleOutput> {
    plan_delta_rule(cfg, args)?;
    let d = dims(args.q, args.v, args.cu_seqlens);
    let (h, kd, vd) = (d.h, d.kd, d.vd);
    let scale = cfg.scale.unwrap_or(1.0 / (kd as f64).sqrt());
    let (q, k, v) = (args.q.to_f64_vec(), args.k.to_f64_vec(), args.v.to_f64_vec());
    let (a, b) = (args.a.to_f64_vec(), args.b.to_f64_vec());
    let g = args.g.map(|g| (g.to_f64_vec(), g.shape().to_vec()));
    let mut state = initial(args.initial_state, d.seqs.len() * h * kd * vd);
    let mut o = vec![0.0f64; d.rows * h * vd];
    let mut m = vec![0.0f64; kd * kd];
    let mut next = vec![0.0f64; kd * vd];

    for (n, &(start, end)) in d.seqs.iter().enumerate() {
        for hh in 0..h {
            let s = &mut state[(n * h + hh) * kd * vd..][..kd * vd];
            for r in start..end {
                let base = (r * h + hh) * kd;
                let vt = &v[(r * h + hh) * vd..][..vd];
                for i in 0..kd {
                    for c in 0..kd {
                        let diag = if i == c { log_decay(g.as_ref(), r, hh, i, h, kd).exp() } else { 0.0 };
                        m[i * kd + c] = diag + b[base + i] * a[base + c];
                    }
                }
                for i in 0..kd {
                    for j in 0..vd {
                        let mut acc = k[base + i] * vt[j];
                        for c in 0..kd {
                            acc += m[i * kd + c] * s[c * vd + j];
                        }
                        next[i * vd + j] = acc;
                    }
                }
                s.copy_from_slice(&next);
                for j in 0..vd {
                    o[(r * h + hh) * vd + j] = scale * (0..kd).map(|i| q[base + i] * s[i * vd + j]).sum::<f64>();
                }
            }
        }
    }
    Ok(OracleOutput { o, final_state: state })
}

/// `rwkv4` in f64, following the spec's numerically stable recurrence literally.
pub fn rwkv4(cfg: &Rwkv4Config, args: &Rwkv4Args<'_, Tensor>) -> Result<OracleOutput> {
    plan_rwkv4(cfg, args)?;
    let (bn, tn, c) = (args.k.shape()[0], args.k.shape()[1], args.k.shape()[2]);
    let (k, v) = (args.k.to_f64_vec(), args.v.to_f64_vec());
    let (w, u) = (args.w.to_f64_vec(), args.u.to_f64_vec());
    let mut state = match args.initial_state {
        Some(s) => s.to_f64_vec(),
        None => (0..bn * 3 * c).map(|i| if (i / c) % 3 == 2 { -1e38 } else { 0.0 }).collect(),
    };
    let mut y = vec![0.0f64; bn * tn * c];
    for b in 0..bn {
        for ch in 0..c {
            let (ia, ib, ip) = ((b * 3) * c + ch, (b * 3 + 1) * c + ch, (b * 3 + 2) * c + ch);
            let (mut aa, mut bb, mut pp) = (state[ia], state[ib], state[ip]);
            for t in 0..tn {
                let (kt, vt) = (k[(b * tn + t) * c + ch], v[(b * tn + t) * c + ch]);
                let ww = u[ch] + kt;
                let p = pp.max(ww);
                let (e1, e2) = ((pp - p).exp(), (ww - p).exp());
                y[(b * tn + t) * c + ch] = (e1 * aa + e2 * vt) / (e1 * bb + e2);
                let ww = w[ch] + pp;
                let p = ww.max(kt);
                let (e1, e2) = ((ww - p).exp(), (kt - p).exp());
                aa = e1 * aa + e2 * vt;
                bb = e1 * bb + e2;
                pp = p;
            }
            state[ia] = aa;
            state[ib] = bb;
            state[ip] = pp;
        }
    }
    Ok(OracleOutput { o: y, final_state: state })
}

/// `y` of `rwkv4` as the explicit ratio
/// `(aa0 e^{pp0 + t w} + sum_{s<t} e^{(t-1-s) w + k_s} v_s + e^{u + k_t} v_t) / (same with bb0, v = 1)`.
pub fn rwkv4_closed_form(cfg: &Rwkv4Config, args: &Rwkv4Args<'_, Tensor>) -> Result<Vec<f64>> {
    plan_rwkv4(cfg, args)?;
    let (bn, tn, c) = (args.k.shape()[0], args.k.shape()[1], args.k.shape()[2]);
    let (k, v) = (args.k.to_f64_vec(), args.v.to_f64_vec());
    let (w, u) = (args.w.to_f64_vec(), args.u.to_f64_vec());
    let s0 = args.initial_state.map(Tensor::to_f64_vec);
    let mut y = vec![0.0f64; bn * tn * c];
    for b in 0..bn {
        for ch in 0..c {
            let (aa0, bb0, pp0) = match &s0 {
                Some(s) => (s[(b * 3) * c + ch], s[(b * 3 + 1) * c + ch], s[(b * 3 + 2) * c + ch]),
                None => (0.0, 0.0, -1e38),
            };
            for t in 0..tn {
                let init = (pp0 + t as f64 * w[ch]).exp();
                let (mut num, mut den) = (aa0 * init, bb0 * init);
                for s in 0..t {
                    let e = ((t - 1 - s) as f64 * w[ch] + k[(b * tn + s) * c + ch]).exp();
                    num += e * v[(b * tn + s) * c + ch];
                    den += e;
                }
                let e = (u[ch] + k[(b * tn + t) * c + ch]).exp();
                num += e * v[(b * tn + t) * c + ch];
                den += e;
                y[(b * tn + t) * c + ch] = num / den;
            }
        }
    }
    Ok(y)
}
