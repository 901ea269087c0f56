//! The test oracle of decode and merge_states: naive float64 evaluations of the definitions,
//! written independently of the CPU path (which gathers the cache and calls attention). For
//! every query row the oracle walks the cache key by key through the block table, rotates in
//! f64, forms each score from spec section 1, and sums. Only validation and RoPE resolution
//! are shared, through [`super::plan`]. Used by the tests and by `attn-kernels check`.

use super::{case_cache, case_index, plan, plan_merge, DecodeCaseConfig, DecodeOptions, KvCacheRef};
use crate::attention::AttentionConfig;
use crate::case::{self, Case};
use crate::check::{CheckCase, Reference, Rng, Work};
use crate::error::Result;
use crate::rope::ResolvedRope;
use crate::tensor::{f32_data, DType, Tensor, TensorInfo};

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

/// Oracle of a `decode_attention` case.
pub fn decode_oracle_case(c: &Case) -> Result<Reference> {
    let cfg: DecodeCaseConfig = case::parse_config(&c.config)?;
    let q = case::input(&c.inputs, "q")?;
    let k = case::input(&c.inputs, "k_cache")?;
    let v = case::input(&c.inputs, "v_cache")?;
    let (seqlens, table) = case_index(&c.inputs)?;
    let cache = case_cache(k, v, seqlens, table);
    let (o, lse) = decode_f64(&cfg.attention(), q, &cache, c.inputs.get("alibi_slopes"), &cfg.options())?;
    Ok(Reference::from([("o".to_string(), o), ("lse".to_string(), lse)]))
}

/// Oracle of a `merge_states` case.
pub fn merge_oracle_case(c: &Case) -> Result<Reference> {
    let g = |n: &str| case::input(&c.inputs, n);
    let (o, lse) = merge_f64(g("o_a")?, g("lse_a")?, g("o_b")?, g("lse_b")?)?;
    Ok(Reference::from([("o".to_string(), o), ("lse".to_string(), lse)]))
}

/// A random paged cache: `(k, v, block_table, max_blocks)` with the blocks of each sequence
/// shuffled over the pool, and `num_blocks` = what the sequences need plus two spare blocks.
pub fn random_paged(
    rng: &mut Rng,
    dtype: DType,
    seqlens: &[usize],
    block_size: usize,
    heads_kv: usize,
    d: usize,
    dv: usize,
) -> Result<(Tensor, Tensor, Vec<i32>, usize)> {
    let per_seq: Vec<usize> = seqlens.iter().map(|&s| s.div_ceil(block_size).max(1)).collect();
    let max_blocks = per_seq.iter().copied().max().unwrap_or(1);
    let num_blocks = per_seq.iter().sum::<usize>() + 2;
    // A random permutation of block ids, dealt out to the sequences.
    let mut ids: Vec<i32> = (0..num_blocks as i32).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i + 1));
    }
    let mut table = vec![-1i32; seqlens.len() * max_blocks];
    let mut next = 0;
    for (b, &n) in per_seq.iter().enumerate() {
        for i in 0..n {
            table[b * max_blocks + i] = ids[next];
            next += 1;
        }
    }
    let k = Tensor::from_f32(
        dtype,
        &[num_blocks, block_size, heads_kv, d],
        &rng.normal_vec(num_blocks * block_size * heads_kv * d),
    )?;
    let v = Tensor::from_f32(
        dtype,
        &[num_blocks, block_size, heads_kv, dv],
        &rng.normal_vec(num_blocks * block_size * heads_kv * dv),
    )?;
    Ok((k, v, table, max_blocks))
}

pub(crate) fn check_cases() -> Vec<CheckCase> {
    let mut rng = Rng::from_time();
    let mut cases = Vec::new();
    let build = |rng: &mut Rng| -> Result<Vec<CheckCase>> {
        let mut out = Vec::new();
        // Paged, GQA 32/8, one new token, causal: the common serving step.
        {
            let (hq, hkv, d, sq, bs) = (32usize, 8usize, 128usize, 1usize, 16usize);
            let seqlens = [1531usize, 300, 2048, 77];
            let dtype = DType::F16;
            let (k, v, table, max_blocks) = random_paged(rng, dtype, &seqlens, bs, hkv, d, d)?;
            let b = seqlens.len();
            let q = Tensor::from_f32(dtype, &[b, sq, hq, d], &rng.normal_vec(b * sq * hq * d))?;
            let sl: Vec<i32> = seqlens.iter().map(|&s| s as i32).collect();
            let bytes = (seqlens.iter().sum::<usize>() * hkv * 2 * d + 2 * b * sq * hq * d) * dtype.size();
            out.push(CheckCase {
                op: "decode_attention",
                shape: format!("paged{bs} q[{b},{sq},{hq},{d}] Hkv{hkv} Sk<=2048"),
                dtype,
                case: Case::new(serde_json::json!({"op": "decode_attention", "causal": true}))
                    .with("q", q)
                    .with("k_cache", k)
                    .with("v_cache", v)
                    .with("cache_seqlens", Tensor::from_i32(&[b], &sl)?)
                    .with("block_table", Tensor::from_i32(&[b, max_blocks], &table)?),
                work: Work::Bytes(bytes as f64),
                tol_factor: 1.0,
                oracle: decode_oracle_case,
            });
        }
        // Contiguous, MHA 16/16, 4 new tokens, ALiBi + RoPE on read + sliding window, bf16.
        {
            let (hq, hkv, d, sq, s_max) = (16usize, 16usize, 128usize, 4usize, 1100usize);
            let seqlens = [1000usize, 513];
            let dtype = DType::BF16;
            let b = seqlens.len();
            let k = Tensor::from_f32(dtype, &[b, s_max, hkv, d], &rng.normal_vec(b * s_max * hkv * d))?;
            let v = Tensor::from_f32(dtype, &[b, s_max, hkv, d], &rng.normal_vec(b * s_max * hkv * d))?;
            let q = Tensor::from_f32(dtype, &[b, sq, hq, d], &rng.normal_vec(b * sq * hq * d))?;
            let sl: Vec<i32> = seqlens.iter().map(|&s| s as i32).collect();
            let slopes = crate::attention::alibi_slopes(hq);
            let bytes = (seqlens.iter().map(|&s| s.min(sq + 256)).sum::<usize>() * hkv * 2 * d + 2 * b * sq * hq * d)
                * dtype.size();
            out.push(CheckCase {
                op: "decode_attention",
                shape: format!("contig q[{b},{sq},{hq},{d}] alibi rope win256"),
                dtype,
                case: Case::new(serde_json::json!({
                    "op": "decode_attention", "causal": true, "window_left": 256,
                    "rope": {"rotary_dim": 64, "theta": 10000.0}
                }))
                .with("q", q)
                .with("k_cache", k)
                .with("v_cache", v)
                .with("cache_seqlens", Tensor::from_i32(&[b], &sl)?)
                .with("alibi_slopes", Tensor::from_f32(DType::F32, &[hq], &slopes)?),
                work: Work::Bytes(bytes as f64),
                tol_factor: 1.0,
                oracle: decode_oracle_case,
            });
        }
        // merge_states with some rows empty on one or both sides.
        {
            let (b, s, h, dv) = (2usize, 64usize, 32usize, 128usize);
            let dtype = DType::F16;
            let n = b * s * h;
            let mut la = rng.uniform_vec(n, -5.0, 5.0);
            let mut lb = rng.uniform_vec(n, -5.0, 5.0);
            for i in (0..n).step_by(7) {
                la[i] = f32::NEG_INFINITY;
            }
            for i in (0..n).step_by(11) {
                lb[i] = f32::NEG_INFINITY;
            }
            let o_a = Tensor::from_f32(dtype, &[b, s, h, dv], &rng.normal_vec(n * dv))?;
            let o_b = Tensor::from_f32(dtype, &[b, s, h, dv], &rng.normal_vec(n * dv))?;
            out.push(CheckCase {
                op: "merge_states",
                shape: format!("o[{b},{s},{h},{dv}]"),
                dtype,
                case: Case::new(serde_json::json!({"op": "merge_states"}))
                    .with("o_a", o_a)
                    .with("lse_a", Tensor::from_f32(DType::F32, &[b, h, s], &la)?)
                    .with("o_b", o_b)
                    .with("lse_b", Tensor::from_f32(DType::F32, &[b, h, s], &lb)?),
                work: Work::Bytes((3 * n * dv * dtype.size() + 3 * n * 4) as f64),
                tol_factor: 1.0,
                oracle: merge_oracle_case,
            });
        }
        Ok(out)
    };
    if let Ok(v) = build(&mut rng) {
        cases.extend(v);
    }
    cases
}
