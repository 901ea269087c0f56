//! `diff_attention` v1 (with and without the fused RMSNorm) and v2, dense and varlen, on candle's
//! CPU device against the two softmax maps written in plain candle ops (f64). The bound is twice
//! the f32 one (docs/ops.md section 4).

mod common;

use attn_kernels_candle::attn_kernels::attention::alibi_slopes;
use attn_kernels_candle::{diff_attention, diff_attention_with_lse, AttentionOptions, DiffAttentionConfig, DiffVariant, RopeConfig};
use candle_core::{DType, Device, Tensor, D};
use common::*;

const BOUND: f64 = 2.0 * F32_BOUND;

fn heads(t: &Tensor, start: u32, n: usize, dim: usize) -> Tensor {
    let idx = Tensor::from_vec((0..n as u32).map(|h| start + 2 * h).collect::<Vec<_>>(), n, &Device::Cpu).unwrap();
    t.index_select(&idx, dim).unwrap()
}

#[test]
fn v1_norm_causal_gqa_alibi() {
    let mut rng = Rng::new("v1_norm_causal_gqa_alibi");
    let (b, sq, sk, h, hkv, d) = (2, 21, 30, 4, 2, 12);
    let q = rng.tensor(&[b, sq, 2 * h, d], -1.0, 1.0);
    let k = rng.tensor(&[b, sk, 2 * hkv, d], -1.0, 1.0);
    let v = rng.tensor(&[b, sk, hkv, 2 * d], -1.0, 1.0);
    let lambda = rng.tensor(&[h], 0.1, 0.9);
    let norm_w = rng.tensor(&[2 * d], 0.5, 1.5);
    let slopes = alibi_slopes(h);
    let cfg = DiffAttentionConfig { causal: true, window_left: 13, lambda_init: Some(0.35), eps: 1e-5, ..Default::default() };
    let opts = AttentionOptions::default().with_alibi(Tensor::new(slopes.as_slice(), &Device::Cpu).unwrap());
    let (o, lse1, lse2) = diff_attention_with_lse(&q, &k, &v, &lambda, Some(&norm_w), &cfg, &opts).unwrap();
    assert_eq!(o.dims(), &[b, sq, h, 2 * d]);

    let r = RefOpts {
        scale: 1.0 / (d as f64).sqrt(),
        causal: true,
        window_left: 13,
        window_right: -1,
        alibi: Some(slopes),
        ..Default::default()
    };
    // Map 1: q heads 2h with k heads 2g; map 2: q heads 2h + 1 with k heads 2g + 1; both over v head g.
    let (o1, l1) = ref_attention(&heads(&q, 0, h, 2), &heads(&k, 0, hkv, 2), &v, &r).unwrap();
    let (o2, l2) = ref_attention(&heads(&q, 1, h, 2), &heads(&k, 1, hkv, 2), &v, &r).unwrap();
    let lam = lambda.to_dtype(DType::F64).unwrap().reshape((1, 1, h, 1)).unwrap();
    let x = (o1 - o2.broadcast_mul(&lam).unwrap()).unwrap();
    let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let w = norm_w.to_dtype(DType::F64).unwrap();
    let reference = x
        .broadcast_div(&(ms + 1e-5).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(&w)
        .unwrap()
        .affine(1.0 - 0.35, 0.0)
        .unwrap();
    assert_close("v1 o", &o, &reference, BOUND);
    assert_close("v1 lse1", &lse1, &l1, BOUND);
    assert_close("v1 lse2", &lse2, &l2, BOUND);
}

#[test]
fn v2_rope_window_softcap() {
    let mut rng = Rng::new("v2_rope_window_softcap");
    let (b, sq, sk, h, hkv, dd) = (2, 17, 17, 6, 3, 20);
    let q = rng.tensor(&[b, sq, 2 * h, dd], -1.0, 1.0);
    let k = rng.tensor(&[b, sk, hkv, dd], -1.0, 1.0);
    let v = rng.tensor(&[b, sk, hkv, dd], -1.0, 1.0);
    let lambda = rng.tensor(&[b, sq, h], -0.5, 1.0);
    let cfg = DiffAttentionConfig {
        variant: DiffVariant::V2,
        window_left: 5,
        window_right: 2,
        softcap: 6.0,
        rope: Some(RopeConfig::new(20, 10000.0)),
        ..Default::default()
    };
    let o = diff_attention(&q, &k, &v, &lambda, None, &cfg, &AttentionOptions::default()).unwrap();
    assert_eq!(o.dims(), &[b, sq, h, dd]);
    let r = RefOpts {
        scale: 1.0 / (dd as f64).sqrt(),
        window_left: 5,
        window_right: 2,
        softcap: 6.0,
        rope: Some(RefRope::plain(20, 10000.0, 1.0, false)),
        ..Default::default()
    };
    // q heads 2h and 2h + 1 both read kv head h / (H / Hkv): ordinary GQA over each half.
    let (o1, _) = ref_attention(&heads(&q, 0, h, 2), &k, &v, &r).unwrap();
    let (o2, _) = ref_attention(&heads(&q, 1, h, 2), &k, &v, &r).unwrap();
    let lam = lambda.to_dtype(DType::F64).unwrap().unsqueeze(3).unwrap();
    let reference = (o1 - o2.broadcast_mul(&lam).unwrap()).unwrap();
    assert_close("v2 o", &o, &reference, BOUND);
}

#[test]
fn v1_varlen_with_masked_rows() {
    let mut rng = Rng::new("v1_varlen_with_masked_rows");
    let (cu_q, cu_k) = (vec![0, 6, 9, 20], vec![0, 2, 2, 15]); // (6, 2), (3, 0), (11, 13)
    let (tq, tk, h, hkv, d) = (20, 15, 2, 1, 8);
    let q = rng.tensor(&[tq, 2 * h, d], -1.0, 1.0);
    let k = rng.tensor(&[tk, 2 * hkv, d], -1.0, 1.0);
    let v = rng.tensor(&[tk, hkv, 2 * d], -1.0, 1.0);
    let lambda = rng.tensor(&[h], 0.1, 0.9);
    let cfg = DiffAttentionConfig { causal: true, ..Default::default() };
    let opts = AttentionOptions::default().with_varlen(cu_q.clone(), cu_k.clone());
    let (o, lse1, _) = diff_attention_with_lse(&q, &k, &v, &lambda, None, &cfg, &opts).unwrap();
    let r = RefOpts { scale: 1.0 / (d as f64).sqrt(), causal: true, window_left: -1, window_right: -1, ..Default::default() };
    let (o1, l1) = ref_attention_varlen(&heads(&q, 0, h, 1), &heads(&k, 0, hkv, 1), &v, &cu_q, &cu_k, &r).unwrap();
    let (o2, _) = ref_attention_varlen(&heads(&q, 1, h, 1), &heads(&k, 1, hkv, 1), &v, &cu_q, &cu_k, &r).unwrap();
    let lam = lambda.to_dtype(DType::F64).unwrap().reshape((1, h, 1)).unwrap();
    let reference = (o1 - o2.broadcast_mul(&lam).unwrap()).unwrap();
    assert!(f64s(&lse1).iter().filter(|x| **x == f64::NEG_INFINITY).count() >= 2 * (4 + 3));
    assert_close("v1 varlen o", &o, &reference, BOUND);
    assert_close("v1 varlen lse1", &lse1, &l1, BOUND);
}

#[test]
fn norm_weight_without_lambda_init_is_an_error() {
    let mut rng = Rng::new("norm_weight_without_lambda_init_is_an_error");
    let q = rng.tensor(&[1, 3, 2, 4], -1.0, 1.0);
    let v = rng.tensor(&[1, 3, 1, 8], -1.0, 1.0);
    let lambda = rng.tensor(&[1], 0.1, 0.9);
    let w = rng.tensor(&[8], 0.5, 1.5);
    let err = diff_attention(&q, &q, &v, &lambda, Some(&w), &DiffAttentionConfig::default(), &AttentionOptions::default()).unwrap_err();
    assert!(err.to_string().contains("lambda_init"), "{err}");
}
