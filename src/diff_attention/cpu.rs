//! CPU backend of differential attention: both softmax maps of every head go through the
//! attention CPU machinery (`crate::attention::cpu`, two lanes per output head sharing the V
//! rows), then `O = o1 - lambda o2` and the optional RMSNorm run in f32.

use super::{plan_diff, plan_diff_decode, DiffAttentionArgs, DiffAttentionConfig, DiffDecodeArgs, DiffVariant};
use crate::attention::cpu::{attend_lanes, load_rows, rope_positions, Lane, Rows};
use crate::decode::CacheLayout;
use crate::error::{Error, Result};
use crate::tensor::{f32_data, DType, Tensor};

/// Outputs of differential attention: `o` in q's dtype, `lse1`, `lse2` f32.
#[derive(Clone, Debug)]
pub struct DiffAttentionOutput<T> {
    pub o: T,
    pub lse1: T,
    pub lse2: T,
}

/// Differential attention on the CPU (spec section 3), both variants.
pub fn diff_attention_cpu(cfg: &DiffAttentionConfig, args: &DiffAttentionArgs<'_, Tensor>) -> Result<DiffAttentionOutput<Tensor>> {
    let dp = plan_diff(cfg, args)?;
    let p = &dp.attn;
    let (d, dv, hq, hk, heads) = (p.head_dim, p.head_dim_v, p.heads_q, p.heads_kv, dp.heads);
    let slopes = match args.alibi_slopes {
        Some(a) => Some(f32_data("alibi_slopes", a)?.to_vec()),
        None => None,
    };
    let lambda = f32_data("lambda", args.lambda)?;
    // f32 or the activation dtype (validated by the plan).
    let norm_w = args.norm_weight.map(|w| w.to_f32_vec());

    let (pos_q, pos_k) = rope_positions(p, args.position_ids_q, args.position_ids_k);
    let q = load_rows(args.q, hq, d, p.rope.as_ref().map(|r| (r, pos_q.as_slice())));
    let k = load_rows(args.k, hk, d, p.rope.as_ref().map(|r| (r, pos_k.as_slice())));
    let v = args.v.to_f32_vec();
    let rows = Rows { q: &q, q_row: hq * d, k: &k, k_row: hk * d, v: &v, v_row: dp.kv_groups * dv };
    let mut lanes = Vec::with_capacity(hq);
    for h in 0..heads {
        let (k1, k2, vh) = dp.heads_of(h);
        let slope = slopes.as_ref().map(|s| s[h]);
        lanes.push(Lane { q_off: 2 * h * d, k_off: k1 * d, v_off: vh * dv, slope });
        lanes.push(Lane { q_off: (2 * h + 1) * d, k_off: k2 * d, v_off: vh * dv, slope });
    }
    let maps = attend_lanes(p, &rows, &lanes);

    // Epilogue in f32: O = o1 - lambda o2, then the optional RMSNorm.
    let mut o = vec![0f32; p.total_q * heads * dv];
    let mut lse1 = vec![0f32; p.total_q * heads];
    let mut lse2 = vec![0f32; p.total_q * heads];
    for (n, s) in p.seqs.iter().enumerate() {
        for i in 0..s.q_len {
            let t = s.q_start + i;
            for h in 0..heads {
                let lam = match dp.variant {
                    DiffVariant::V1 => lambda[h],
                    DiffVariant::V2 => lambda[t * heads + h],
                };
                let o1 = &maps.o[(t * hq + 2 * h) * dv..][..dv];
                let o2 = &maps.o[(t * hq + 2 * h + 1) * dv..][..dv];
                let out = &mut o[(t * heads + h) * dv..][..dv];
                for c in 0..dv {
                    out[c] = o1[c] - lam * o2[c];
                }
                if let Some(w) = &norm_w {
                    let ms = out.iter().map(|x| x * x).sum::<f32>() / dv as f32;
                    let denom = ms + dp.eps;
                    let r = if denom > 0.0 { 1.0 / denom.sqrt() } else { 0.0 };
                    for c in 0..dv {
                        out[c] = out[c] * r * w[c] * dp.norm_scale;
                    }
                }
                let li = dp.lse_index(n, h, i);
                lse1[li] = maps.lse[t * hq + 2 * h];
                lse2[li] = maps.lse[t * hq + 2 * h + 1];
            }
        }
    }
    Ok(DiffAttentionOutput {
        o: Tensor::from_f32(p.dtype, &dp.o_shape(), &o)?,
        lse1: Tensor::from_f32(DType::F32, &dp.lse_shape(), &lse1)?,
        lse2: Tensor::from_f32(DType::F32, &dp.lse_shape(), &lse2)?,
    })
}

/// CPU reference of the fused decode: gathers each sequence's cached keys into a packed (varlen)
/// batch and runs [`diff_attention_cpu`] with one query row per sequence (position
/// `cache_seqlens[b] - 1`, bottom-right aligned). Outputs as [`super::cuda::diff_decode_cuda`].
pub fn diff_decode_cpu(
    cfg: &DiffAttentionConfig,
    args: &DiffDecodeArgs<'_, Tensor>,
) -> Result<DiffAttentionOutput<Tensor>> {
    let p = plan_diff_decode(cfg, args)?;
    let (hkv, d2) = (p.heads_kv, 2 * p.head_dim);
    let row = hkv * d2;
    let kc = args.cache.k().to_f32_vec();
    let vc = args.cache.v().to_f32_vec();
    let total: usize = p.seqlens.iter().sum();
    let (mut k, mut v) = (Vec::with_capacity(total * row), Vec::with_capacity(total * row));
    let mut cu_k = vec![0i32];
    for (b, &len) in p.seqlens.iter().enumerate() {
        for j in 0..len {
            let r = match (&p.layout, args.cache.block_table()) {
                (CacheLayout::Paged { block_size, .. }, Some((table, max_blocks))) => {
                    table[b * max_blocks + j / block_size] as usize * block_size + j % block_size
                }
                (CacheLayout::Contiguous { s_max }, _) => b * s_max + j,
                _ => return Err(Error::invalid("block_table", "paged layout without a block table")),
            };
            k.extend_from_slice(&kc[r * row..(r + 1) * row]);
            v.extend_from_slice(&vc[r * row..(r + 1) * row]);
        }
        cu_k.push(cu_k[b] + len as i32);
    }
    let cu_q: Vec<i32> = (0..=p.batch as i32).collect();
    let kt = Tensor::from_f32(p.dtype, &[total, 2 * hkv, p.head_dim], &k)?;
    let vt = Tensor::from_f32(p.dtype, &[total, hkv, d2], &v)?;
    let qt = args.q.clone().reshape(&[p.batch, 2 * p.heads, p.head_dim])?;
    let mut dargs = DiffAttentionArgs::new(&qt, &kt, &vt, args.lambda).with_varlen(&cu_q, &cu_k);
    dargs.norm_weight = args.norm_weight;
    dargs.alibi_slopes = args.alibi_slopes;
    let out = diff_attention_cpu(cfg, &dargs)?;
    // lse [H, B] (varlen) -> [B, H, 1].
    let transpose = |t: &Tensor| -> Result<Tensor> {
        let x = t.to_f32_vec();
        let mut y = vec![0f32; x.len()];
        for h in 0..p.heads {
            for b in 0..p.batch {
                y[b * p.heads + h] = x[h * p.batch + b];
            }
        }
        Tensor::from_f32(DType::F32, &p.lse_shape(), &y)
    };
    Ok(DiffAttentionOutput {
        o: out.o.reshape(&p.o_shape())?,
        lse1: transpose(&out.lse1)?,
        lse2: transpose(&out.lse2)?,
    })
}
