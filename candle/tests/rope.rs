//! The standalone `rope` on candle's CPU device against the rotation written in plain candle ops
//! (f64): offsets, varlen restarts, position ids, partial rotary dims, both pairings, scalings,
//! strided input, bf16.

mod common;

use attn_kernels_candle::{rope, RopeConfig, RopeOpConfig};
use candle_core::{DType, IndexOp, Tensor};
use common::*;

fn f64t(t: &Tensor) -> Tensor {
    t.to_dtype(DType::F64).unwrap()
}

#[test]
fn dense_offset_partial_neox() {
    let mut rng = Rng::new("dense_offset_partial_neox");
    let (b, s, h, d) = (3, 13, 5, 22);
    let x = rng.tensor(&[b, s, h, d], -2.0, 2.0);
    let cfg = RopeOpConfig { rope: RopeConfig::new(14, 10000.0), position_offset: 7 };
    let y = rope(&x, &cfg, None, None).unwrap();
    let r = RefRope::plain(14, 10000.0, 1.0, false);
    let pos: Vec<i64> = (7..7 + s as i64).collect();
    let reference: Vec<Tensor> = (0..b).map(|i| r.apply(&f64t(&x.i(i).unwrap()), &pos).unwrap()).collect();
    assert_close("dense rope", &y, &Tensor::stack(&reference, 0).unwrap(), F32_BOUND);
}

#[test]
fn varlen_restarts_interleaved_strided() {
    let mut rng = Rng::new("varlen_restarts_interleaved_strided");
    let cu = vec![0, 4, 4, 15, 24];
    let (total, h, d) = (24, 3, 10);
    // A strided input: heads and rows transposed out of [H, total, D].
    let x = rng.tensor(&[h, total, d], -1.0, 1.0).transpose(0, 1).unwrap();
    let mut rc = RopeConfig::new(10, 1000.0);
    rc.interleaved = true;
    let cfg = RopeOpConfig { rope: rc, position_offset: 3 };
    let y = rope(&x, &cfg, None, Some(&cu)).unwrap();
    let pos: Vec<i64> = cu.windows(2).flat_map(|w| (0..(w[1] - w[0]) as i64).map(|r| 3 + r)).collect();
    let reference = RefRope::plain(10, 1000.0, 1.0, true).apply(&f64t(&x), &pos).unwrap();
    assert_close("varlen rope", &y, &reference, F32_BOUND);
}

#[test]
fn position_ids_far_positions_yarn() {
    // Large positions and a yarn scaling: the frequencies and attention factor come from the
    // library's RopeConfig::resolve (tested against the Hugging Face formulas in the library);
    // the rotation is the candle-ops reference.
    let mut rng = Rng::new("position_ids_far_positions_yarn");
    let (total, h, d) = (31, 2, 16);
    let x = rng.tensor(&[total, h, d], -1.0, 1.0);
    let ids: Vec<i32> = (0..total).map(|_| rng.below(1 << 20) as i32).collect();
    let mut rc = RopeConfig::new(16, 10000.0);
    rc.max_position_embeddings = Some(32768);
    rc.scaling = Some(serde_json::json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192}));
    let resolved = rc.resolve(1).unwrap();
    let cfg = RopeOpConfig { rope: rc, position_offset: 0 };
    let y = rope(&x, &cfg, Some(&ids), None).unwrap();
    let r = RefRope { rotary_dim: 16, inv_freq: resolved.inv_freq.clone(), factor: resolved.attention_factor, interleaved: false };
    assert!(resolved.attention_factor > 1.0);
    let reference = r.apply(&f64t(&x), &ids.iter().map(|&p| p as i64).collect::<Vec<_>>()).unwrap();
    assert_close("yarn rope", &y, &reference, F32_BOUND);
}

#[test]
fn bf16_linear_scaling() {
    let mut rng = Rng::new("bf16_linear_scaling");
    let (b, s, h, d) = (2, 9, 4, 32);
    let x = rng.tensor(&[b, s, h, d], -1.0, 1.0).to_dtype(DType::BF16).unwrap();
    let mut rc = RopeConfig::new(32, 10000.0);
    rc.scaling = Some(serde_json::json!({"type": "linear", "factor": 4.0}));
    let y = rope(&x, &RopeOpConfig { rope: rc, position_offset: 0 }, None, None).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    let r = RefRope::plain(32, 10000.0, 4.0, false);
    let pos: Vec<i64> = (0..s as i64).collect();
    let reference: Vec<Tensor> = (0..b).map(|i| r.apply(&f64t(&x.i(i).unwrap()), &pos).unwrap()).collect();
    assert_close("bf16 rope", &y, &Tensor::stack(&reference, 0).unwrap(), BF16_BOUND);
}

#[test]
fn ids_and_cu_seqlens_together_is_an_error() {
    let mut rng = Rng::new("ids_and_cu_seqlens_together_is_an_error");
    let x = rng.tensor(&[4, 1, 4], -1.0, 1.0);
    let cfg = RopeOpConfig { rope: RopeConfig::new(4, 10000.0), position_offset: 0 };
    let err = rope(&x, &cfg, Some(&[0, 1, 2, 3]), Some(&[0, 4])).unwrap_err();
    assert!(err.to_string().contains("position_ids"), "{err}");
}
