//! `attention` and `attention_with_lse` on candle's CPU device against attention written in plain
//! candle ops (f64): dense and varlen, causal, windows, softcap, GQA, ALiBi, RoPE (NeoX and
//! GPT-J pairs, partial rotary dim, linear scaling, position ids), fully masked rows, strided
//! inputs, bf16.

mod common;

use attn_kernels_candle::attn_kernels::attention::alibi_slopes;
use attn_kernels_candle::{attention, attention_with_lse, AttentionConfig, AttentionOptions, RopeConfig};
use candle_core::{DType, Device, Tensor};
use common::*;

struct Case {
    b: usize,
    sq: usize,
    sk: usize,
    hq: usize,
    hkv: usize,
    d: usize,
    dv: usize,
}

/// Run one dense case in f32 and compare o and lse.
fn dense(name: &str, c: &Case, cfg: &AttentionConfig, alibi: bool, rope: Option<RefRope>) {
    let mut rng = Rng::new(name);
    let q = rng.tensor(&[c.b, c.sq, c.hq, c.d], -1.0, 1.0);
    let k = rng.tensor(&[c.b, c.sk, c.hkv, c.d], -1.0, 1.0);
    let v = rng.tensor(&[c.b, c.sk, c.hkv, c.dv], -1.0, 1.0);
    let slopes = alibi_slopes(c.hq);
    let mut opts = AttentionOptions::default();
    if alibi {
        opts = opts.with_alibi(Tensor::new(slopes.as_slice(), &Device::Cpu).unwrap());
    }
    let (o, lse) = attention_with_lse(&q, &k, &v, cfg, &opts).unwrap();
    assert_eq!(o.dims(), &[c.b, c.sq, c.hq, c.dv]);
    assert_eq!(lse.dims(), &[c.b, c.hq, c.sq]);
    assert_eq!(o.dtype(), DType::F32);
    let r = RefOpts {
        scale: cfg.softmax_scale.unwrap_or(1.0 / (c.d as f64).sqrt()),
        causal: cfg.causal,
        window_left: cfg.window_left,
        window_right: cfg.window_right,
        softcap: cfg.softcap,
        alibi: alibi.then_some(slopes),
        rope,
        ..Default::default()
    };
    let (ro, rlse) = ref_attention(&q, &k, &v, &r).unwrap();
    assert_close(&format!("{name} o"), &o, &ro, F32_BOUND);
    assert_close(&format!("{name} lse"), &lse, &rlse, F32_BOUND);
}

const GQA: Case = Case { b: 2, sq: 37, sk: 53, hq: 6, hkv: 2, d: 24, dv: 40 };

#[test]
fn dense_plain_gqa() {
    dense("dense_plain_gqa", &GQA, &AttentionConfig::default(), false, None);
}

#[test]
fn dense_causal_window_softcap_alibi() {
    let cfg = AttentionConfig { causal: true, window_left: 11, softcap: 5.0, ..Default::default() };
    dense("dense_causal_window_softcap_alibi", &GQA, &cfg, true, None);
}

#[test]
fn dense_two_sided_window_scale_mqa() {
    let c = Case { b: 3, sq: 19, sk: 19, hq: 5, hkv: 1, d: 17, dv: 17 };
    let cfg = AttentionConfig { softmax_scale: Some(0.37), window_left: 4, window_right: 3, ..Default::default() };
    dense("dense_two_sided_window_scale_mqa", &c, &cfg, true, None);
}

#[test]
fn dense_rope_neox_partial_linear_scaling() {
    let mut rope = RopeConfig::new(16, 10000.0);
    rope.scaling = Some(serde_json::json!({"rope_type": "linear", "factor": 2.0}));
    let cfg = AttentionConfig { causal: true, rope: Some(rope), ..Default::default() };
    dense("dense_rope_neox_partial_linear_scaling", &GQA, &cfg, false, Some(RefRope::plain(16, 10000.0, 2.0, false)));
}

#[test]
fn dense_rope_gptj_alibi_softcap_more_queries_than_keys() {
    // Sq > Sk with causal: the first Sq - Sk rows see no key (o = 0, lse = -inf), and RoPE
    // rotates the other rows at negative positions P(i) < 0 where they exist.
    let c = Case { b: 2, sq: 29, sk: 13, hq: 4, hkv: 2, d: 20, dv: 20 };
    let mut rope = RopeConfig::new(20, 500.0);
    rope.interleaved = true;
    let cfg = AttentionConfig { causal: true, softcap: 2.5, rope: Some(rope), ..Default::default() };
    dense("dense_rope_gptj_alibi_softcap_more_queries_than_keys", &c, &cfg, true, Some(RefRope::plain(20, 500.0, 1.0, true)));
}

#[test]
fn rope_with_position_ids() {
    let mut rng = Rng::new("rope_with_position_ids");
    let (sq, sk, hq, hkv, d) = (11, 23, 4, 4, 32);
    let q = rng.tensor(&[1, sq, hq, d], -1.0, 1.0);
    let k = rng.tensor(&[1, sk, hkv, d], -1.0, 1.0);
    let v = rng.tensor(&[1, sk, hkv, d], -1.0, 1.0);
    let pos_q: Vec<i32> = (0..sq).map(|_| rng.below(5000) as i32).collect();
    let pos_k: Vec<i32> = (0..sk).map(|_| rng.below(5000) as i32).collect();
    let cfg = AttentionConfig { causal: true, rope: Some(RopeConfig::new(32, 10000.0)), ..Default::default() };
    let opts = AttentionOptions::default().with_positions(Some(pos_q.clone()), Some(pos_k.clone()));
    let (o, lse) = attention_with_lse(&q, &k, &v, &cfg, &opts).unwrap();
    let r = RefOpts {
        scale: 1.0 / (d as f64).sqrt(),
        causal: true,
        window_left: -1,
        window_right: -1,
        rope: Some(RefRope::plain(32, 10000.0, 1.0, false)),
        pos_q: Some(pos_q.iter().map(|&p| p as i64).collect()),
        pos_k: Some(pos_k.iter().map(|&p| p as i64).collect()),
        ..Default::default()
    };
    let (ro, rlse) = ref_attention(&q, &k, &v, &r).unwrap();
    assert_close("rope_with_position_ids o", &o, &ro, F32_BOUND);
    assert_close("rope_with_position_ids lse", &lse, &rlse, F32_BOUND);
}

#[test]
fn strided_inputs_are_gathered() {
    // q as a transposed view of [B, H, S, D], k and v narrowed out of larger tensors.
    let mut rng = Rng::new("strided_inputs_are_gathered");
    let (b, sq, sk, hq, hkv, d) = (2, 15, 21, 4, 2, 12);
    let q = rng.tensor(&[b, hq, sq, d], -1.0, 1.0).transpose(1, 2).unwrap();
    let kv = rng.tensor(&[b, sk + 3, hkv, 2 * d], -1.0, 1.0);
    let k = kv.narrow(1, 3, sk).unwrap().narrow(3, 0, d).unwrap();
    let v = kv.narrow(1, 0, sk).unwrap().narrow(3, d, d).unwrap();
    assert!(!q.is_contiguous() && !k.is_contiguous() && !v.is_contiguous());
    let cfg = AttentionConfig { causal: true, ..Default::default() };
    let o = attention(&q, &k, &v, &cfg, &AttentionOptions::default()).unwrap();
    let r = RefOpts { scale: 1.0 / (d as f64).sqrt(), causal: true, window_left: -1, window_right: -1, ..Default::default() };
    let (ro, _) = ref_attention(&q, &k, &v, &r).unwrap();
    assert_close("strided o", &o, &ro, F32_BOUND);
}

#[test]
fn varlen_with_fully_masked_rows() {
    let mut rng = Rng::new("varlen_with_fully_masked_rows");
    // (q_len, k_len): an ordinary one, an empty query sequence, Sq > Sk under causal (its first
    // rows see nothing), a sequence with no keys at all (every row masked), a longer one.
    let lens = [(5usize, 9usize), (0, 4), (7, 3), (3, 0), (13, 21)];
    let mut cu_q = vec![0i32];
    let mut cu_k = vec![0i32];
    for &(lq, lk) in &lens {
        cu_q.push(cu_q.last().unwrap() + lq as i32);
        cu_k.push(cu_k.last().unwrap() + lk as i32);
    }
    let (tq, tk) = (*cu_q.last().unwrap() as usize, *cu_k.last().unwrap() as usize);
    let (hq, hkv, d, dv) = (6, 3, 16, 8);
    let q = rng.tensor(&[tq, hq, d], -1.5, 1.5);
    let k = rng.tensor(&[tk, hkv, d], -1.5, 1.5);
    let v = rng.tensor(&[tk, hkv, dv], -1.0, 1.0);
    let slopes = alibi_slopes(hq);
    let cfg = AttentionConfig { causal: true, window_left: 6, softcap: 4.0, ..Default::default() };
    let opts = AttentionOptions::default()
        .with_varlen(cu_q.clone(), cu_k.clone())
        .with_alibi(Tensor::new(slopes.as_slice(), &Device::Cpu).unwrap());
    let (o, lse) = attention_with_lse(&q, &k, &v, &cfg, &opts).unwrap();
    assert_eq!(o.dims(), &[tq, hq, dv]);
    assert_eq!(lse.dims(), &[hq, tq]);
    let r = RefOpts {
        scale: 1.0 / (d as f64).sqrt(),
        causal: true,
        window_left: 6,
        window_right: -1,
        softcap: 4.0,
        alibi: Some(slopes),
        ..Default::default()
    };
    let (ro, rlse) = ref_attention_varlen(&q, &k, &v, &cu_q, &cu_k, &r).unwrap();
    // The masked rows really are there: lse = -inf and o = 0 in both.
    let lse_v = f64s(&lse);
    let masked = lse_v.iter().filter(|x| **x == f64::NEG_INFINITY).count();
    assert!(masked >= hq * (4 + 3), "expected fully masked rows, found {masked} -inf entries");
    assert_eq!(masked, f64s(&rlse).iter().filter(|x| **x == f64::NEG_INFINITY).count());
    let row = cu_q[3] as usize; // first row of the sequence without keys
    assert!(f64s(&o.narrow(0, row, 3).unwrap()).iter().all(|&x| x == 0.0));
    assert_close("varlen o", &o, &ro, F32_BOUND);
    assert_close("varlen lse", &lse, &rlse, F32_BOUND);
}

#[test]
fn bf16_dense_causal_gqa_alibi() {
    let mut rng = Rng::new("bf16_dense_causal_gqa_alibi");
    let c = GQA;
    let q = rng.tensor(&[c.b, c.sq, c.hq, c.d], -1.0, 1.0).to_dtype(DType::BF16).unwrap();
    let k = rng.tensor(&[c.b, c.sk, c.hkv, c.d], -1.0, 1.0).to_dtype(DType::BF16).unwrap();
    let v = rng.tensor(&[c.b, c.sk, c.hkv, c.dv], -1.0, 1.0).to_dtype(DType::BF16).unwrap();
    let slopes = alibi_slopes(c.hq);
    let cfg = AttentionConfig { causal: true, window_left: 20, ..Default::default() };
    let opts = AttentionOptions::default().with_alibi(Tensor::new(slopes.as_slice(), &Device::Cpu).unwrap());
    let (o, lse) = attention_with_lse(&q, &k, &v, &cfg, &opts).unwrap();
    assert_eq!(o.dtype(), DType::BF16);
    assert_eq!(lse.dtype(), DType::F32);
    let r = RefOpts {
        scale: 1.0 / (c.d as f64).sqrt(),
        causal: true,
        window_left: 20,
        window_right: -1,
        alibi: Some(slopes),
        ..Default::default()
    };
    let (ro, rlse) = ref_attention(&q, &k, &v, &r).unwrap();
    assert_close("bf16 o", &o, &ro, BF16_BOUND);
    assert_close("bf16 lse", &lse, &rlse, BF16_BOUND);
}

#[test]
fn errors_name_the_argument() {
    let mut rng = Rng::new("errors_name_the_argument");
    let q = rng.tensor(&[1, 4, 3, 8], -1.0, 1.0);
    let k = rng.tensor(&[1, 4, 2, 8], -1.0, 1.0);
    let err = attention(&q, &k, &k, &AttentionConfig::default(), &AttentionOptions::default()).unwrap_err().to_string();
    assert!(err.contains("GQA") && err.contains('k'), "{err}");
    let q3 = rng.tensor(&[4, 2, 8], -1.0, 1.0);
    let opts = AttentionOptions::default().with_varlen(vec![0, 3], vec![0, 4]);
    let err = attention(&q3, &q3, &q3, &AttentionConfig::default(), &opts).unwrap_err().to_string();
    assert!(err.contains("cu_seqlens_q"), "{err}");
}
