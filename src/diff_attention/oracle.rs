//! The test oracle of differential attention: a naive float64 evaluation of spec section 3.
//! Both maps are evaluated with the float64 attention oracle (full score rows per query, see
//! `crate::attention::oracle`), with the head pairing taken straight from the spec, and the
//! combination `A1 V - lambda A2 V` plus the optional RMSNorm are done in f64.

use super::{plan_diff, DiffAttentionArgs, DiffAttentionConfig, DiffVariant};
use crate::attention::oracle::{softmax_maps_f64, OracleLane};
use crate::error::Result;
use crate::tensor::Tensor;

/// Float64 results: `o` flattened as `[B, Sq, H, Dv]` (varlen `[total_q, H, Dv]`), `lse1`,
/// `lse2` as `[B, H, Sq]` (varlen `[H, total_q]`).
pub struct DiffOracleOut {
    pub o: Vec<f64>,
    pub lse1: Vec<f64>,
    pub lse2: Vec<f64>,
}

/// Evaluate differential attention in float64.
pub fn diff_attention_f64(cfg: &DiffAttentionConfig, args: &DiffAttentionArgs<'_, Tensor>) -> Result<DiffOracleOut> {
    let dp = plan_diff(cfg, args)?; // validation and sequence offsets only
    let p = &dp.attn;
    let h_out = p.heads_q / 2;
    let hkv = match cfg.variant {
        DiffVariant::V1 => p.heads_kv / 2,
        DiffVariant::V2 => p.heads_kv,
    };
    let slopes = args.alibi_slopes.map(|a| a.to_f64_vec());
    let mut lanes = Vec::new();
    for h in 0..h_out {
        let g = h / (h_out / hkv);
        let slope = slopes.as_ref().map(|s| s[h]);
        let (k1, k2) = match cfg.variant {
            DiffVariant::V1 => (2 * g, 2 * g + 1),
            DiffVariant::V2 => ((2 * h) / (2 * h_out / hkv), (2 * h + 1) / (2 * h_out / hkv)),
        };
        lanes.push(OracleLane { q_head: 2 * h, k_head: k1, v_head: g, slope });
        lanes.push(OracleLane { q_head: 2 * h + 1, k_head: k2, v_head: g, slope });
    }
    let seqs: Vec<_> = p.seqs.iter().map(|s| (s.q_start, s.q_len, s.k_start, s.k_len)).collect();
    let maps = softmax_maps_f64(
        cfg.softmax_scale,
        cfg.causal,
        cfg.window_left,
        cfg.window_right,
        cfg.softcap,
        p.rope.as_ref(),
        &args.attention_args(),
        &seqs,
        p.head_dim,
        p.head_dim_v,
        &lanes,
    );
    let dv = p.head_dim_v;
    let lambda = args.lambda.to_f64_vec();
    let norm = args.norm_weight.map(|w| w.to_f64_vec());
    let lambda_init = cfg.lambda_init.unwrap_or(0.0);
    let nl = 2 * h_out;
    let mut o = vec![0f64; p.total_q * h_out * dv];
    let mut lse1 = vec![0f64; p.total_q * h_out];
    let mut lse2 = vec![0f64; p.total_q * h_out];
    for (n, s) in p.seqs.iter().enumerate() {
        for i in 0..s.q_len {
            let t = s.q_start + i;
            for h in 0..h_out {
                let lam = match cfg.variant {
                    DiffVariant::V1 => lambda[h],
                    DiffVariant::V2 => lambda[t * h_out + h],
                };
                let mut x: Vec<f64> = (0..dv)
                    .map(|c| maps.o[(t * nl + 2 * h) * dv + c] - lam * maps.o[(t * nl + 2 * h + 1) * dv + c])
                    .collect();
                if let Some(w) = &norm {
                    let denom = x.iter().map(|a| a * a).sum::<f64>() / dv as f64 + cfg.eps;
                    let r = if denom > 0.0 { 1.0 / denom.sqrt() } else { 0.0 };
                    for c in 0..dv {
                        x[c] = x[c] * r * w[c] * (1.0 - lambda_init);
                    }
                }
                o[(t * h_out + h) * dv..][..dv].copy_from_slice(&x);
                let li = if p.varlen { h * p.total_q + t } else { (n * h_out + h) * s.q_len + i };
                lse1[li] = maps.lse[t * nl + 2 * h];
                lse2[li] = maps.lse[t * nl + 2 * h + 1];
            }
        }
    }
    Ok(DiffOracleOut { o, lse1, lse2 })
}
