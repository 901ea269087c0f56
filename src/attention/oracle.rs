//! The test oracle of attention: a naive float64 evaluation of spec section 1, written straight
//! from the formulas and independently of the optimised CPU path. For every query row it forms
//! the full row of scores in f64 (RoPE rotated in f64, masks evaluated per (i, j) from the
//! definition of `allowed`), then the LSE and the weighted sum of values. `O(Sq Sk (D + Dv))` per
//! head with no tiling; used by the tests and by `attn-kernels check`.
//!
//! Only validation (shapes, dtypes, sequence offsets, RoPE resolution) is shared with the CPU
//! path, through [`super::plan`].

use super::{plan, AttentionArgs, AttentionConfig};
use crate::error::Result;
use crate::rope::ResolvedRope;
use crate::tensor::{f32_data, Tensor, TensorInfo};
use rayon::prelude::*;

/// One softmax map for the oracle: q head, k head, v head indices and ALiBi slope.
#[derive(Clone, Copy, Debug)]
pub struct OracleLane {
    pub q_head: usize,
    pub k_head: usize,
    pub v_head: usize,
    pub slope: Option<f64>,
}

/// Float64 results: `o [total_q, lanes, Dv]` and `lse [total_q, lanes]` (token-major).
pub struct OracleOut {
    pub o: Vec<f64>,
    pub lse: Vec<f64>,
}

/// Rotate one head vector in f64 (spec section 2), without intermediate rounding.
pub fn rotate_f64(r: &ResolvedRope, x: &mut [f64], pos: i64) {
    for i in 0..r.rotary_dim / 2 {
        let phi = pos as f64 * r.inv_freq[i];
        let (c, s) = (phi.cos(), phi.sin());
        let (i1, i2) = if r.interleaved { (2 * i, 2 * i + 1) } else { (i, i + r.rotary_dim / 2) };
        let (x1, x2) = (x[i1], x[i2]);
        x[i1] = r.attention_factor * (x1 * c - x2 * s);
        x[i2] = r.attention_factor * (x2 * c + x1 * s);
    }
}

/// Evaluate softmax maps in f64. `q`, `k`, `v` are the raw inputs (any float dtype); heads are
/// vectors of `d` (q, k) and `dv` (v) elements. Only `args`' index data and `cfg` options are
/// read besides the tensors; `args` must have passed validation for the sizes given.
#[allow(clippy::too_many_arguments)]
pub fn softmax_maps_f64(
    cfg_scale: Option<f64>,
    causal: bool,
    window_left: i64,
    window_right: i64,
    softcap: f64,
    rope: Option<&ResolvedRope>,
    args: &AttentionArgs<'_, Tensor>,
    seqs: &[(usize, usize, usize, usize)],
    d: usize,
    dv: usize,
    lanes: &[OracleLane],
) -> OracleOut {
    let q = args.q.to_f64_vec();
    let k = args.k.to_f64_vec();
    let v = args.v.to_f64_vec();
    let row = |t: &Tensor| {
        let s = t.shape();
        s[s.len() - 2] * s[s.len() - 1]
    };
    let (q_row, k_row, v_row) = (row(args.q), row(args.k), row(args.v));
    let total_q = seqs.iter().map(|s| s.0 + s.1).max().unwrap_or(0);
    let scale = cfg_scale.unwrap_or(1.0 / (d as f64).sqrt());
    let nl = lanes.len();

    let jobs: Vec<(usize, usize)> = (0..seqs.len()).flat_map(|n| (0..nl).map(move |l| (n, l))).collect();
    let results: Vec<(usize, usize, Vec<f64>, Vec<f64>)> = jobs
        .into_par_iter()
        .map(|(n, li)| {
            let (q0, sq, k0, sk) = seqs[n];
            let lane = lanes[li];
            let head = |buf: &[f64], row: usize, t: usize, h: usize, w: usize| buf[t * row + h * w..][..w].to_vec();
            let qs: Vec<Vec<f64>> = (0..sq)
                .map(|i| {
                    let mut x = head(&q, q_row, q0 + i, lane.q_head, d);
                    if let Some(r) = rope {
                        let pos = match args.position_ids_q {
                            Some(ids) => ids[q0 + i] as i64,
                            None => i as i64 + sk as i64 - sq as i64,
                        };
                        rotate_f64(r, &mut x, pos);
                    }
                    x
                })
                .collect();
            let ks: Vec<Vec<f64>> = (0..sk)
                .map(|j| {
                    let mut x = head(&k, k_row, k0 + j, lane.k_head, d);
                    if let Some(r) = rope {
                        let pos = match args.position_ids_k {
                            Some(ids) => ids[k0 + j] as i64,
                            None => j as i64,
                        };
                        rotate_f64(r, &mut x, pos);
                    }
                    x
                })
                .collect();
            let mut o = vec![0f64; sq * dv];
            let mut lse = vec![f64::NEG_INFINITY; sq];
            let mut s = vec![f64::NEG_INFINITY; sk];
            for i in 0..sq {
                let p = i as i64 + sk as i64 - sq as i64;
                for j in 0..sk {
                    let ji = j as i64;
                    let allowed = (!causal || ji <= p)
                        && (window_left < 0 || ji >= p - window_left)
                        && (window_right < 0 || ji <= p + window_right);
                    s[j] = if allowed {
                        let mut x = scale * qs[i].iter().zip(&ks[j]).map(|(a, b)| a * b).sum::<f64>();
                        if softcap > 0.0 {
                            x = softcap * (x / softcap).tanh();
                        }
                        if let Some(m) = lane.slope {
                            x -= m * (p - ji).abs() as f64;
                        }
                        x
                    } else {
                        f64::NEG_INFINITY
                    };
                }
                let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if mx == f64::NEG_INFINITY {
                    continue; // no allowed key: o = 0, lse = -inf
                }
                let l = mx + s.iter().map(|&x| (x - mx).exp()).sum::<f64>().ln();
                lse[i] = l;
                for j in 0..sk {
                    if s[j] > f64::NEG_INFINITY {
                        let w = (s[j] - l).exp();
                        let vr = &v[(k0 + j) * v_row + lane.v_head * dv..][..dv];
                        for (a, b) in o[i * dv..][..dv].iter_mut().zip(vr) {
                            *a += w * b;
                        }
                    }
                }
            }
            (n, li, o, lse)
        })
        .collect();

    let mut o = vec![0f64; total_q * nl * dv];
    let mut lse = vec![f64::NEG_INFINITY; total_q * nl];
    for (n, li, so, sl) in results {
        let q0 = seqs[n].0;
        for i in 0..seqs[n].1 {
            o[((q0 + i) * nl + li) * dv..][..dv].copy_from_slice(&so[i * dv..][..dv]);
            lse[(q0 + i) * nl + li] = sl[i];
        }
    }
    OracleOut { o, lse }
}

/// Float64 attention: `o` flattened as `[B, Sq, Hq, Dv]` (varlen `[total_q, Hq, Dv]`) and `lse`
/// as `[B, Hq, Sq]` (varlen `[Hq, total_q]`).
pub fn attention_f64(cfg: &AttentionConfig, args: &AttentionArgs<'_, Tensor>) -> Result<(Vec<f64>, Vec<f64>)> {
    let p = plan(cfg, args)?;
    let slopes = match args.alibi_slopes {
        Some(a) => Some(f32_data("alibi_slopes", a)?.to_vec()),
        None => None,
    };
    let group = p.heads_q / p.heads_kv;
    let lanes: Vec<OracleLane> = (0..p.heads_q)
        .map(|h| OracleLane { q_head: h, k_head: h / group, v_head: h / group, slope: slopes.as_ref().map(|s| s[h] as f64) })
        .collect();
    let seqs: Vec<_> = p.seqs.iter().map(|s| (s.q_start, s.q_len, s.k_start, s.k_len)).collect();
    let out = softmax_maps_f64(
        cfg.softmax_scale,
        cfg.causal,
        cfg.window_left,
        cfg.window_right,
        cfg.softcap,
        p.rope.as_ref(),
        args,
        &seqs,
        p.head_dim,
        p.head_dim_v,
        &lanes,
    );
    let hq = p.heads_q;
    let mut lse = vec![0f64; p.total_q * hq];
    for (n, s) in p.seqs.iter().enumerate() {
        for i in 0..s.q_len {
            for h in 0..hq {
                lse[p.lse_index(n, h, i)] = out.lse[(s.q_start + i) * hq + h];
            }
        }
    }
    Ok((out.o, lse))
}
