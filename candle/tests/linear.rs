//! `linear_attention` and `delta_rule` on candle's CPU device against the recurrences written as
//! a loop of plain candle ops (f64): every decay shape, the RWKV bonus, initial states, varlen
//! with an empty sequence.

mod common;

use attn_kernels_candle::{delta_rule, linear_attention, DeltaRuleConfig, LinearAttentionConfig, RecurrentOptions};
use candle_core::{DType, IndexOp, Tensor};
use common::*;

/// The recurrence over `[B, T, H, *]` inputs (f64): `g` already broadcast to `[B, T, H, K]`,
/// `u [H, K]`, `ab` the delta rule's factors, `s0 [B, H, K, V]`. Returns `(o, final_state)`.
fn reference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: Option<&Tensor>,
    u: Option<&Tensor>,
    ab: Option<(&Tensor, &Tensor)>,
    s0: &Tensor,
    scale: f64,
) -> (Tensor, Tensor) {
    let f = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let (q, k, v) = (f(q), f(k), f(v));
    let t_len = q.dim(1).unwrap();
    let mut s = f(s0);
    if t_len == 0 {
        let (b, _, h, vd) = v.dims4().unwrap();
        return (Tensor::zeros((b, 0, h, vd), DType::F64, v.device()).unwrap(), s);
    }
    let mut outs = Vec::new();
    for t in 0..t_len {
        let at = |x: &Tensor| x.i((.., t)).unwrap().contiguous().unwrap(); // [B, H, *]
        let (qt, kt, vt) = (at(&q), at(&k), at(&v));
        let kv = kt.unsqueeze(3).unwrap().broadcast_mul(&vt.unsqueeze(2).unwrap()).unwrap(); // [B, H, K, V]
        let decayed = match g {
            Some(g) => s.broadcast_mul(&at(&f(g)).exp().unwrap().unsqueeze(3).unwrap()).unwrap(),
            None => s.clone(),
        };
        let read = |state: &Tensor| (qt.unsqueeze(2).unwrap().matmul(state).unwrap().squeeze(2).unwrap() * scale).unwrap();
        match (u, ab) {
            (Some(u), _) => {
                let bonus = kv.broadcast_mul(&f(u).unsqueeze(2).unwrap()).unwrap();
                outs.push(read(&(&s + bonus).unwrap()));
                s = (decayed + kv).unwrap();
            }
            (None, Some((a, b))) => {
                let a_s = at(&f(a)).unsqueeze(2).unwrap().matmul(&s).unwrap(); // [B, H, 1, V]
                let rank1 = at(&f(b)).unsqueeze(3).unwrap().broadcast_mul(&a_s).unwrap();
                s = ((decayed + rank1).unwrap() + kv).unwrap();
                outs.push(read(&s));
            }
            (None, None) => {
                s = (decayed + kv).unwrap();
                outs.push(read(&s));
            }
        }
    }
    (Tensor::stack(&outs, 1).unwrap(), s)
}

struct Dims {
    b: usize,
    t: usize,
    h: usize,
    k: usize,
    v: usize,
}

const DIMS: Dims = Dims { b: 2, t: 37, h: 3, k: 12, v: 20 };

fn qkv(rng: &mut Rng, d: &Dims) -> (Tensor, Tensor, Tensor) {
    let q = rng.tensor(&[d.b, d.t, d.h, d.k], -1.0, 1.0);
    let k = rng.tensor(&[d.b, d.t, d.h, d.k], -1.0, 1.0);
    let v = rng.tensor(&[d.b, d.t, d.h, d.v], -1.0, 1.0);
    (q, k, v)
}

/// A log decay of the given shape (values in [-1, -0.01]) and its broadcast to `[B, T, H, K]`.
fn decay(rng: &mut Rng, shape: &[usize], d: &Dims) -> (Tensor, Tensor) {
    let g = rng.tensor(shape, -1.0, -0.01);
    let full = match shape.len() {
        4 => g.clone(),
        3 => g.unsqueeze(3).unwrap(),
        2 => g.reshape((1, 1, d.h, d.k)).unwrap(),
        _ => g.reshape((1, 1, d.h, 1)).unwrap(),
    };
    let full = full.broadcast_as((d.b, d.t, d.h, d.k)).unwrap().contiguous().unwrap();
    (g, full)
}

#[test]
fn linear_attention_every_decay_shape() {
    let mut rng = Rng::new("linear_attention_every_decay_shape");
    let d = DIMS;
    let (q, k, v) = qkv(&mut rng, &d);
    let s0 = Tensor::zeros((d.b, d.h, d.k, d.v), DType::F32, &candle_core::Device::Cpu).unwrap();
    let shapes: [&[usize]; 5] = [&[], &[d.b, d.t, d.h, d.k], &[d.b, d.t, d.h], &[d.h, d.k], &[d.h]];
    for shape in shapes {
        let mut opts = RecurrentOptions::default();
        let full = if shape.is_empty() {
            None
        } else {
            let (g, full) = decay(&mut rng, shape, &d);
            opts = opts.with_g(g);
            Some(full)
        };
        let (o, state) = linear_attention(&q, &k, &v, &LinearAttentionConfig::default(), &opts).unwrap();
        let (ro, rs) = reference(&q, &k, &v, full.as_ref(), None, None, &s0, 1.0 / (d.k as f64).sqrt());
        assert_close(&format!("linear g {shape:?} o"), &o, &ro, F32_BOUND);
        assert_close(&format!("linear g {shape:?} state"), &state, &rs, F32_BOUND);
    }
}

#[test]
fn linear_attention_rwkv_bonus_initial_state() {
    let mut rng = Rng::new("linear_attention_rwkv_bonus_initial_state");
    let d = DIMS;
    let (q, k, v) = qkv(&mut rng, &d);
    let (g, full) = decay(&mut rng, &[d.b, d.t, d.h, d.k], &d);
    let u = rng.tensor(&[d.h, d.k], -1.0, 1.0);
    let s0 = rng.tensor(&[d.b, d.h, d.k, d.v], -1.0, 1.0);
    let opts = RecurrentOptions::default().with_g(g).with_u(u.clone()).with_initial_state(s0.clone());
    let cfg = LinearAttentionConfig { scale: Some(1.0) };
    let (o, state) = linear_attention(&q, &k, &v, &cfg, &opts).unwrap();
    let (ro, rs) = reference(&q, &k, &v, Some(&full), Some(&u), None, &s0, 1.0);
    assert_close("rwkv o", &o, &ro, F32_BOUND);
    assert_close("rwkv state", &state, &rs, F32_BOUND);
}

#[test]
fn delta_rule_gated_initial_state() {
    let mut rng = Rng::new("delta_rule_gated_initial_state");
    let d = DIMS;
    let (q, k, v) = qkv(&mut rng, &d);
    let scale = 1.0 / (d.k as f64).sqrt();
    // Rank-one factors small enough that diag(exp g) + b a^T stays a contraction.
    let a = rng.tensor(&[d.b, d.t, d.h, d.k], -0.25, 0.25);
    let b = rng.tensor(&[d.b, d.t, d.h, d.k], -0.25, 0.25);
    let (g, full) = decay(&mut rng, &[d.b, d.t, d.h], &d);
    let s0 = rng.tensor(&[d.b, d.h, d.k, d.v], -1.0, 1.0);
    let opts = RecurrentOptions::default().with_g(g).with_initial_state(s0.clone());
    let (o, state) = delta_rule(&q, &k, &v, &a, &b, &DeltaRuleConfig::default(), &opts).unwrap();
    let (ro, rs) = reference(&q, &k, &v, Some(&full), None, Some((&a, &b)), &s0, scale);
    assert_close("delta o", &o, &ro, F32_BOUND);
    assert_close("delta state", &state, &rs, F32_BOUND);
}

#[test]
fn delta_rule_varlen_with_empty_sequence() {
    let mut rng = Rng::new("delta_rule_varlen_with_empty_sequence");
    let cu = vec![0, 9, 9, 26];
    let (total, h, kd, vd) = (26, 2, 8, 6);
    let d1 = Dims { b: 1, t: total, h, k: kd, v: vd };
    let (q, k, v) = qkv(&mut rng, &d1);
    let a = rng.tensor(&[1, total, h, kd], -0.3, 0.3);
    let b = rng.tensor(&[1, total, h, kd], -0.3, 0.3);
    let s0 = rng.tensor(&[3, h, kd, vd], -1.0, 1.0);
    let opts = RecurrentOptions::default().with_initial_state(s0.clone()).with_cu_seqlens(cu.clone());
    let cfg = DeltaRuleConfig { scale: Some(0.5) };
    let (o, state) = delta_rule(&q, &k, &v, &a, &b, &cfg, &opts).unwrap();
    assert_eq!(state.dims(), &[3, h, kd, vd]);
    let mut ro = Vec::new();
    let mut rs = Vec::new();
    for n in 0..3 {
        let (t0, len) = (cu[n] as usize, (cu[n + 1] - cu[n]) as usize);
        let part = |x: &Tensor| x.narrow(1, t0, len).unwrap();
        let (on, sn) = reference(&part(&q), &part(&k), &part(&v), None, None, Some((&part(&a), &part(&b))), &s0.narrow(0, n, 1).unwrap(), 0.5);
        if len > 0 {
            ro.push(on);
        }
        rs.push(sn);
    }
    // The empty sequence returns its initial state unchanged.
    assert_eq!(f64s(&state.i(1).unwrap()), f64s(&s0.i(1).unwrap()));
    assert_close("delta varlen o", &o, &Tensor::cat(&ro, 1).unwrap(), F32_BOUND);
    assert_close("delta varlen state", &state, &Tensor::cat(&rs, 0).unwrap(), F32_BOUND);
}

#[test]
fn delta_rule_rejects_u() {
    let mut rng = Rng::new("delta_rule_rejects_u");
    let (q, k, v) = qkv(&mut rng, &Dims { b: 1, t: 2, h: 1, k: 4, v: 4 });
    let opts = RecurrentOptions::default().with_u(rng.tensor(&[1, 4], -1.0, 1.0));
    let err = delta_rule(&q, &k, &v, &q, &k, &DeltaRuleConfig::default(), &opts).unwrap_err();
    assert!(err.to_string().contains("`u`"), "{err}");
}
