//! The zero-copy CUDA paths (built only with feature `cuda`, see Cargo.toml; they need a GPU:
//! without one they fail, they do not skip). Inputs are made on the CPU and copied to the GPU by
//! candle (some read as strided views). attention and rope outputs, brought back, are compared
//! with the f64 candle-ops references of the CPU tests at the bound of the inputs' dtype
//! (docs/ops.md); decode, diff_attention and the recurrences with the same op on candle's CPU
//! device (itself checked against the references by the CPU tests), at twice that bound (both
//! sides are within the bound of the exact result).

mod common;

use attn_kernels_candle::attn_kernels::attention::alibi_slopes;
use attn_kernels_candle::{
    attention_with_lse, decode_with_lse, delta_rule, diff_attention_with_lse, linear_attention, rope, AttentionConfig,
    AttentionOptions, CacheIndex, DecodeOptions, DeltaRuleConfig, DiffAttentionConfig, DiffVariant, LinearAttentionConfig,
    RecurrentOptions, RopeConfig, RopeOpConfig,
};
use candle_core::{DType, Device, IndexOp, Tensor};
use common::*;

fn gpu() -> Device {
    Device::new_cuda(0).expect("the `cuda` tests need a CUDA GPU (device 0)")
}

#[test]
fn attention_bf16_strided_causal_gqa_alibi_rope() {
    let dev = gpu();
    let mut rng = Rng::new("cuda attention_bf16_strided_causal_gqa_alibi_rope");
    let (b, sq, sk, hq, hkv, d) = (2, 77, 131, 8, 2, 64);
    // q as a transposed view of [B, H, S, D] on the device: batch, row and head strides differ
    // from the packed ones, and the op reads it in place.
    let q = rng.tensor(&[b, hq, sq, d], -1.0, 1.0).to_dtype(DType::BF16).unwrap();
    let k = rng.tensor(&[b, sk, hkv, d], -1.0, 1.0).to_dtype(DType::BF16).unwrap();
    let v = rng.tensor(&[b, sk, hkv, d], -1.0, 1.0).to_dtype(DType::BF16).unwrap();
    let slopes = alibi_slopes(hq);
    let cfg = AttentionConfig { causal: true, window_left: 50, rope: Some(RopeConfig::new(64, 10000.0)), ..Default::default() };
    let opts = AttentionOptions::default().with_alibi(Tensor::new(slopes.as_slice(), &dev).unwrap());
    let qd = q.to_device(&dev).unwrap().transpose(1, 2).unwrap();
    let (o, lse) = attention_with_lse(&qd, &k.to_device(&dev).unwrap(), &v.to_device(&dev).unwrap(), &cfg, &opts).unwrap();
    assert!(o.device().is_cuda() && lse.device().is_cuda());
    let r = RefOpts {
        scale: 1.0 / (d as f64).sqrt(),
        causal: true,
        window_left: 50,
        window_right: -1,
        alibi: Some(slopes),
        rope: Some(RefRope::plain(64, 10000.0, 1.0, false)),
        ..Default::default()
    };
    let (ro, rlse) = ref_attention(&q.transpose(1, 2).unwrap(), &k, &v, &r).unwrap();
    assert_close("cuda attention o", &o.to_device(&Device::Cpu).unwrap(), &ro, BF16_BOUND);
    assert_close("cuda attention lse", &lse.to_device(&Device::Cpu).unwrap(), &rlse, BF16_BOUND);
}

#[test]
fn attention_f16_varlen_with_masked_rows() {
    let dev = gpu();
    let mut rng = Rng::new("cuda attention_f16_varlen_with_masked_rows");
    let (cu_q, cu_k) = (vec![0, 9, 9, 40, 43], vec![0, 5, 12, 70, 70]);
    let (tq, tk, hq, hkv, d) = (43, 70, 4, 4, 128);
    let q = rng.tensor(&[tq, hq, d], -1.0, 1.0).to_dtype(DType::F16).unwrap();
    let k = rng.tensor(&[tk, hkv, d], -1.0, 1.0).to_dtype(DType::F16).unwrap();
    let v = rng.tensor(&[tk, hkv, d], -1.0, 1.0).to_dtype(DType::F16).unwrap();
    let cfg = AttentionConfig { causal: true, softcap: 10.0, ..Default::default() };
    let opts = AttentionOptions::default().with_varlen(cu_q.clone(), cu_k.clone());
    let on = |t: &Tensor| t.to_device(&dev).unwrap();
    let (o, lse) = attention_with_lse(&on(&q), &on(&k), &on(&v), &cfg, &opts).unwrap();
    let r = RefOpts { scale: 1.0 / (d as f64).sqrt(), causal: true, window_left: -1, window_right: -1, softcap: 10.0, ..Default::default() };
    let (ro, rlse) = ref_attention_varlen(&q, &k, &v, &cu_q, &cu_k, &r).unwrap();
    assert_close("cuda varlen o", &o.to_device(&Device::Cpu).unwrap(), &ro, 3e-3);
    assert_close("cuda varlen lse", &lse.to_device(&Device::Cpu).unwrap(), &rlse, 3e-3);
}

#[test]
fn rope_every_dtype_strided() {
    let dev = gpu();
    let mut rng = Rng::new("cuda rope_every_dtype_strided");
    let (b, s, h, d) = (3, 45, 6, 64);
    for (dtype, bound) in [(DType::F32, F32_BOUND), (DType::F16, 3e-3), (DType::BF16, BF16_BOUND)] {
        // Heads narrowed out of a wider tensor: an offset and a row stride of (H + 2) D, read in place.
        let wide = rng.tensor(&[b, s, h + 2, d], -1.0, 1.0).to_dtype(dtype).unwrap();
        let x = wide.narrow(2, 1, h).unwrap();
        let cfg = RopeOpConfig { rope: RopeConfig::new(48, 10000.0), position_offset: 11 };
        let y = rope(&wide.to_device(&dev).unwrap().narrow(2, 1, h).unwrap(), &cfg, None, None).unwrap();
        assert_eq!(y.dtype(), dtype);
        let pos: Vec<i64> = (11..11 + s as i64).collect();
        let r = RefRope::plain(48, 10000.0, 1.0, false);
        let reference: Vec<Tensor> = (0..b).map(|i| r.apply(&x.i(i).unwrap().to_dtype(DType::F64).unwrap(), &pos).unwrap()).collect();
        assert_close(&format!("cuda rope {dtype:?}"), &y.to_device(&Device::Cpu).unwrap(), &Tensor::stack(&reference, 0).unwrap(), bound);
    }
}

fn cpu(t: &Tensor) -> Tensor {
    t.to_device(&Device::Cpu).unwrap()
}

#[test]
fn decode_paged_bf16_gqa_rope_alibi() {
    let dev = gpu();
    let mut rng = Rng::new("cuda decode_paged_bf16_gqa_rope_alibi");
    let (b, sq, hq, hkv, d, bs, mb, nb) = (3, 2, 8, 2, 128, 16, 8, 30);
    let seqlens = vec![37, 2, 120];
    // Blocks in reverse order, unused entries -1.
    let mut table = vec![-1i32; b * mb];
    let mut next = nb as i32;
    for (i, &s) in seqlens.iter().enumerate() {
        for j in 0..(s as usize).div_ceil(bs) {
            next -= 1;
            table[i * mb + j] = next;
        }
    }
    let q = rng.tensor(&[b, sq, hq, d], -1.0, 1.0).to_dtype(DType::BF16).unwrap();
    let k = rng.tensor(&[nb, bs, hkv, d], -1.0, 1.0).to_dtype(DType::BF16).unwrap();
    let v = rng.tensor(&[nb, bs, hkv, d], -1.0, 1.0).to_dtype(DType::BF16).unwrap();
    let slopes = Tensor::new(alibi_slopes(hq).as_slice(), &Device::Cpu).unwrap();
    let index = CacheIndex::Paged { block_table: table, max_blocks: mb, cache_seqlens: seqlens };
    let cfg = AttentionConfig { causal: true, softcap: 20.0, rope: Some(RopeConfig::new(64, 10000.0)), ..Default::default() };
    let opts = DecodeOptions::default();
    let on = |t: &Tensor| t.to_device(&dev).unwrap();
    let (o, lse) = decode_with_lse(&on(&q), &on(&k), &on(&v), &index, &cfg, Some(&on(&slopes)), &opts).unwrap();
    let (co, clse) = decode_with_lse(&q, &k, &v, &index, &cfg, Some(&slopes), &opts).unwrap();
    assert_close("cuda decode o", &cpu(&o), &co, 2.0 * BF16_BOUND);
    assert_close("cuda decode lse", &cpu(&lse), &clse, 2.0 * BF16_BOUND);
}

#[test]
fn diff_attention_v1_bf16_norm() {
    let dev = gpu();
    let mut rng = Rng::new("cuda diff_attention_v1_bf16_norm");
    let (b, sq, sk, h, hkv, d) = (2, 70, 90, 4, 2, 64);
    let q = rng.tensor(&[b, sq, 2 * h, d], -1.0, 1.0).to_dtype(DType::BF16).unwrap();
    let k = rng.tensor(&[b, sk, 2 * hkv, d], -1.0, 1.0).to_dtype(DType::BF16).unwrap();
    let v = rng.tensor(&[b, sk, hkv, 2 * d], -1.0, 1.0).to_dtype(DType::BF16).unwrap();
    let lambda = rng.tensor(&[h], 0.1, 0.9);
    let w = rng.tensor(&[2 * d], 0.5, 1.5);
    let cfg = DiffAttentionConfig { causal: true, variant: DiffVariant::V1, lambda_init: Some(0.5), ..Default::default() };
    let opts = AttentionOptions::default();
    let on = |t: &Tensor| t.to_device(&dev).unwrap();
    let (o, l1, l2) = diff_attention_with_lse(&on(&q), &on(&k), &on(&v), &on(&lambda), Some(&on(&w)), &cfg, &opts).unwrap();
    let (co, cl1, cl2) = diff_attention_with_lse(&q, &k, &v, &lambda, Some(&w), &cfg, &opts).unwrap();
    // diff_attention's bound is twice attention's.
    assert_close("cuda diff o", &cpu(&o), &co, 4.0 * BF16_BOUND);
    assert_close("cuda diff lse1", &cpu(&l1), &cl1, 4.0 * BF16_BOUND);
    assert_close("cuda diff lse2", &cpu(&l2), &cl2, 4.0 * BF16_BOUND);
}

#[test]
fn recurrences_f32_with_state() {
    let dev = gpu();
    let mut rng = Rng::new("cuda recurrences_f32_with_state");
    let (b, t, h, kd, vd) = (2, 45, 3, 64, 64);
    let q = rng.tensor(&[b, t, h, kd], -1.0, 1.0);
    let k = rng.tensor(&[b, t, h, kd], -1.0, 1.0);
    let v = rng.tensor(&[b, t, h, vd], -1.0, 1.0);
    let g = rng.tensor(&[b, t, h, kd], -1.0, -0.01);
    let s0 = rng.tensor(&[b, h, kd, vd], -1.0, 1.0);
    let on = |t: &Tensor| t.to_device(&dev).unwrap();
    let opts = RecurrentOptions::default().with_g(g.clone()).with_initial_state(s0.clone());
    let dopts = RecurrentOptions::default().with_g(on(&g)).with_initial_state(on(&s0));
    let cfg = LinearAttentionConfig::default();
    let (o, s) = linear_attention(&on(&q), &on(&k), &on(&v), &cfg, &dopts).unwrap();
    let (co, cs) = linear_attention(&q, &k, &v, &cfg, &opts).unwrap();
    assert_close("cuda linear o", &cpu(&o), &co, 2.0 * F32_BOUND);
    assert_close("cuda linear state", &cpu(&s), &cs, 2.0 * F32_BOUND);
    let a = rng.tensor(&[b, t, h, kd], -0.1, 0.1);
    let bb = rng.tensor(&[b, t, h, kd], -0.1, 0.1);
    let cfg = DeltaRuleConfig::default();
    let (o, s) = delta_rule(&on(&q), &on(&k), &on(&v), &on(&a), &on(&bb), &cfg, &dopts).unwrap();
    let (co, cs) = delta_rule(&q, &k, &v, &a, &bb, &cfg, &opts).unwrap();
    assert_close("cuda delta o", &cpu(&o), &co, 2.0 * F32_BOUND);
    assert_close("cuda delta state", &cpu(&s), &cs, 2.0 * F32_BOUND);
}
