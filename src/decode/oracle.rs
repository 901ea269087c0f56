//! The test oracle of decode and merge_states: naive float64 evaluations of the definitions,
//! written independently of the CPU path (which gathers the cache and calls attention). For
//! every query row the oracle walks the cache key by key through the block table, rotates in
//! f64, forms each score from spec section 1, and sums. Only validation and RoPE resolution
//! are shared, through [`super::plan`]. Used by the tests and by `attn-kernels check`.

use super::{plan, plan_merge, DecodeOptions, KvCacheRef};
use crate::attention::AttentionConfig;
use crate::error::Result;
use crate::rope::ResolvedRope;
use crate::tensor::{f32_data, Tensor, TensorInfo};

/// Rotate `x` (f64) at `pos` per spec section 2, in f64.
fn rotate_f64(r: &ResolvedRope, x: &mut [f64], pos: i64) {
    let d = r.rotary_dim;
    for i in 0..d / 2 {
        let (i1, i2) = if r.interleaved { (2 * i, 2 * i + 1) } else { (i, i + d / 2) };
        let phi = pos as f64 * r.inv_freq[i];
        let (x1, x2) = (x[i1], x[i2]);
        x[i1] = r.attention_factor * (x1 * phi.cos() - x2 * phi.sin());
        x[i2] = r.attention_factor * (x2 * phi.cos() + x1 * phi.sin());
    }
}

/// Float64 decode: `(o [B, Sq_new, Hq, Dv], lse [B, Hq, Sq_new])`.
pub fn decode_f64(
    cfg: &AttentionConfig,
    q: &Tensor,
    cache: &KvCacheRef<'_, Tensor>,
    alibi_slopes: Option<&Tensor>,
    opts: &DecodeOptions,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let p = plan(cfg, q, cache, alibi_slopes, opts)?;
    let slopes = alibi_slopes.map(|a| f32_data("alibi_slopes", a)).transpose()?;
    let (sq, hq, hkv, d, dv) = (p.seqlen_q, p.heads_q, p.heads_kv, p.head_dim, p.head_dim_v);
    let qv = q.to_f64_vec();
    let kc = cache.k().to_f64_vec();
    let vc = cache.v().to_f64_vec();
    let kshape = cache.k().shape();
    let rows_per_block = kshape[1];
    let table = cache.block_table();
    // Element offset of head `g` of key `j` of sequence `b` in a cache of head width `w`.
    let offset = |b: usize, j: usize, g: usize, w: usize| -> usize {
        let (blk, row) = match table {
            None => (b, j),
            Some((t, m)) => (t[b * m + j / rows_per_block] as usize, j % rows_per_block),
        };
        ((blk * rows_per_block + row) * hkv + g) * w
    };
    let group = hq / hkv;
    let scale = cfg.softmax_scale.unwrap_or(1.0 / (d as f64).sqrt());
    let mut o = vec![0f64; p.batch * sq * hq * dv];
    let mut lse = vec![f64::NEG_INFINITY; p.batch * hq * sq];
    for b in 0..p.batch {
        let sk = p.seqlens[b];
        for i in 0..sq {
            let pos = i as i64 + sk as i64 - sq as i64; // P(i)
            for h in 0..hq {
                let g = h / group;
                let mut qr = qv[((b * sq + i) * hq + h) * d..][..d].to_vec();
                if let Some(r) = &p.rope {
                    rotate_f64(r, &mut qr, pos);
                }
                let mut scores = Vec::with_capacity(sk);
                for j in 0..sk {
                    let jj = j as i64;
                    let allowed = (!cfg.causal || jj <= pos)
                        && (cfg.window_left < 0 || jj >= pos - cfg.window_left)
                        && (cfg.window_right < 0 || jj <= pos + cfg.window_right);
                    if !allowed {
                        continue;
                    }
                    let mut kr = kc[offset(b, j, g, d)..][..d].to_vec();
                    if let (Some(r), true) = (&p.rope, p.rope_keys) {
                        rotate_f64(r, &mut kr, jj);
                    }
                    let mut s = scale * qr.iter().zip(&kr).map(|(a, b)| a * b).sum::<f64>();
                    if cfg.softcap > 0.0 {
                        s = cfg.softcap * (s / cfg.softcap).tanh();
                    }
                    if let Some(sl) = slopes {
                        s -= sl[h] as f64 * (pos - jj).abs() as f64;
                    }
                    scores.push((j, s));
                }
                if scores.is_empty() {
                    continue; // o = 0, lse = -inf
                }
                let m = scores.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|x| (x.1 - m).exp()).sum();
                let l = m + sum.ln();
                lse[(b * hq + h) * sq + i] = l;
                let orow = &mut o[((b * sq + i) * hq + h) * dv..][..dv];
                for &(j, s) in &scores {
                    let w = (s - l).exp();
                    let vrow = &vc[offset(b, j, g, dv)..][..dv];
                    for (acc, &x) in orow.iter_mut().zip(vrow) {
                        *acc += w * x;
                    }
                }
            }
        }
    }
    Ok((o, lse))
}

/// Float64 merge_states: `(o, lse)` with the layouts of `o_a` and `lse_a`.
pub fn merge_f64(o_a: &Tensor, lse_a: &Tensor, o_b: &Tensor, lse_b: &Tensor) -> Result<(Vec<f64>, Vec<f64>)> {
    let (b, s, h, dv, _) = plan_merge(o_a, lse_a, o_b, lse_b)?;
    let (oa, ob, la, lb) = (o_a.to_f64_vec(), o_b.to_f64_vec(), lse_a.to_f64_vec(), lse_b.to_f64_vec());
    let mut o = vec![0f64; oa.len()];
    let mut lse = vec![f64::NEG_INFINITY; la.len()];
    if la.is_empty() {
        return Ok((o, lse));
    }
    for bi in 0..b {
        for si in 0..s {
            for hi in 0..h {
                let li = (bi * h + hi) * s + si;
                let row = ((bi * s + si) * h + hi) * dv;
                let (x, y) = (la[li], lb[li]);
                if x == f64::NEG_INFINITY && y == f64::NEG_INFINITY {
                    continue;
                }
                // lse = ln(e^x + e^y), evaluated around the larger one; weights exp(lse_x - lse).
                let m = x.max(y);
                let l = m + ((x - m).exp() + (y - m).exp()).ln();
                lse[li] = l;
                let (wa, wb) = ((x - l).exp(), (y - l).exp());
                for e in 0..dv {
                    let mut acc = 0.0;
                    if wa > 0.0 {
                        acc += wa * oa[row + e];
                    }
                    if wb > 0.0 {
                        acc += wb * ob[row + e];
                    }
                    o[row + e] = acc;
                }
            }
        }
    }
    Ok((o, lse))
}
