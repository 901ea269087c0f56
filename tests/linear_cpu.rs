//! CPU reference of the linear-attention recurrences (spec section 4) against the float64
//! oracles in `attn_kernels::linear::oracle`, plus the structural properties: closed form,
//! state passing, varlen, long sequences, extreme decays, bad input.
//!
//! Inputs are random and drawn fresh each run; every failure message carries the seed
//! (replay with `ATTN_KERNELS_SEED=<seed>`).

mod common;

use attn_kernels::linear::oracle;
use attn_kernels::linear::*;
use attn_kernels::tensor::rel_error;
use attn_kernels::{DType, Error, Tensor, TensorInfo};
use attn_kernels_harness::case::{self, Case, Device};
use attn_kernels_harness::check::Rng;
use common::{assert_close, expect_err, g_shape, randn, randn_scaled, tensor, unit_rows, ErrKind, DECAY_SHAPES, FLOATS};

/// Log decays in (lo, hi) for a layout (RWKV-6 style `-exp(x)`).
fn decay(rng: &mut Rng, dtype: DType, d: DecayShape, b: usize, tt: usize, h: usize, k: usize) -> Option<Tensor> {
    g_shape(d, b, tt, h, k).map(|s| {
        let n = s.iter().product();
        let g: Vec<f32> = rng.uniform_vec(n, -4.0, 0.5).iter().map(|&x| -x.exp()).collect();
        tensor(dtype, &s, &g)
    })
}

// ------------------------------------------------------------------------ linear_attention

#[test]
fn linear_attention_every_decay_bonus_dtype_vs_oracle() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let (b, tt, h, k, v) = (2, 37, 3, 16, 24);
    for dtype in FLOATS {
        for (di, d) in DECAY_SHAPES.into_iter().enumerate() {
            for bonus in [false, true] {
                let q = randn(&mut rng, dtype, &[b, tt, h, k]);
                let kk = randn(&mut rng, dtype, &[b, tt, h, k]);
                let vv = randn(&mut rng, dtype, &[b, tt, h, v]);
                // g alternates between f32 and q's dtype.
                let g_dtype = if di % 2 == 0 { DType::F32 } else { dtype };
                let g = decay(&mut rng, g_dtype, d, b, tt, h, k);
                let u = randn(&mut rng, if bonus && di % 2 == 1 { dtype } else { DType::F32 }, &[h, k]);
                let s0 = randn(&mut rng, DType::F32, &[b, h, k, v]);
                let mut args = LinearArgs::new(&q, &kk, &vv);
                args.g = g.as_ref();
                if bonus {
                    args.u = Some(&u);
                }
                if di >= 2 {
                    args.initial_state = Some(&s0);
                }
                let cfg = LinearAttentionConfig { scale: if bonus { Some(1.0) } else { None } };
                let out = linear_attention_cpu(&cfg, &args).unwrap();
                let r = oracle::linear_attention(&cfg, &args).unwrap();
                let what = format!("{dtype} {d:?} bonus={bonus}");
                assert_eq!(out.o.dtype(), dtype);
                assert_eq!(out.o.shape(), &[b, tt, h, v]);
                assert_eq!(out.final_state.shape(), &[b, h, k, v]);
                assert_close(&format!("{what} o"), &out.o, &r.o, dtype.rel_tolerance(), seed);
                assert_close(&format!("{what} final_state"), &out.final_state, &r.final_state, 1e-5, seed);
            }
        }
    }
}

#[test]
fn linear_attention_closed_form_matches_recurrence() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let (tt, h, k, v) = (29, 2, 8, 5);
    for d in DECAY_SHAPES {
        for bonus in [false, true] {
            for varlen in [false, true] {
                let b = if varlen { 1 } else { 2 };
                let cu = [0i32, 11, 11, 29];
                let n = if varlen { 3 } else { b };
                let q = randn(&mut rng, DType::F32, &[b, tt, h, k]);
                let kk = randn(&mut rng, DType::F32, &[b, tt, h, k]);
                let vv = randn(&mut rng, DType::F32, &[b, tt, h, v]);
                let g = decay(&mut rng, DType::F32, d, b, tt, h, k);
                let u = randn(&mut rng, DType::F32, &[h, k]);
                let s0 = randn(&mut rng, DType::F32, &[n, h, k, v]);
                let mut args = LinearArgs::new(&q, &kk, &vv).with_initial_state(&s0);
                args.g = g.as_ref();
                if bonus {
                    args.u = Some(&u);
                }
                if varlen {
                    args.cu_seqlens = Some(&cu);
                }
                let cfg = LinearAttentionConfig::default();
                let rec = oracle::linear_attention(&cfg, &args).unwrap();
                let closed = oracle::linear_attention_closed_form(&cfg, &args).unwrap();
                let e = rel_error(&closed, &rec.o);
                assert!(e < 1e-12, "{d:?} bonus={bonus} varlen={varlen}: closed form differs {e:.3e} (seed {seed})");
            }
        }
    }
}

#[test]
fn linear_attention_extreme_decays() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let (b, tt, h, k, v) = (1, 50, 4, 8, 8);
    // Per head: near 0, near 1, exactly 0 (g = -inf), exactly 1 (g = 0).
    let per_head = [-20.0f32, -1e-6, f32::NEG_INFINITY, 0.0];
    let q = randn(&mut rng, DType::F32, &[b, tt, h, k]);
    let kk = randn(&mut rng, DType::F32, &[b, tt, h, k]);
    let vv = randn(&mut rng, DType::F32, &[b, tt, h, v]);
    let s0 = randn(&mut rng, DType::F32, &[b, h, k, v]);
    let u = randn(&mut rng, DType::F32, &[h, k]);
    // The same decays as [H] and broadcast to [B, T, H, K] (mixed with a token at -inf).
    let g_head = tensor(DType::F32, &[h], &per_head);
    let mut full = vec![0.0f32; b * tt * h * k];
    for (i, x) in full.iter_mut().enumerate() {
        *x = per_head[(i / k) % h];
    }
    let g_full = tensor(DType::F32, &[b, tt, h, k], &full);
    for g in [&g_head, &g_full] {
        for bonus in [false, true] {
            let mut args = LinearArgs::new(&q, &kk, &vv).with_g(g).with_initial_state(&s0);
            if bonus {
                args.u = Some(&u);
            }
            let cfg = LinearAttentionConfig::default();
            let out = linear_attention_cpu(&cfg, &args).unwrap();
            let r = oracle::linear_attention(&cfg, &args).unwrap();
            assert!(out.o.to_f32_vec().iter().all(|x| x.is_finite()), "non-finite o (seed {seed})");
            assert_close(&format!("extreme {:?} bonus={bonus} o", g.shape()), &out.o, &r.o, 1e-5, seed);
            assert_close("extreme final_state", &out.final_state, &r.final_state, 1e-5, seed);
            // Exactly-zero decay: the final state of head 2 is the last token's k^T v alone.
            let st = out.final_state.to_f32_vec();
            let (kv, vv_) = (kk.to_f32_vec(), vv.to_f32_vec());
            let last = tt - 1;
            for i in 0..k {
                for j in 0..v {
                    let want = kv[(last * h + 2) * k + i] * vv_[(last * h + 2) * v + j];
                    assert_eq!(st[(2 * k + i) * v + j], want, "g=-inf must reset the state (seed {seed})");
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------- delta_rule

/// Inputs of a delta-rule test in a model's parameterisation.
struct DeltaInputs {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
    cfg: DeltaRuleConfig,
}

/// RWKV-7: a = -kk, b = kk * alpha (kk unit rows), scale 1.
/// DeltaNet: a = -k, b = beta k (k unit rows), v fed as beta v, default scale.
fn delta_inputs(rng: &mut Rng, rwkv7: bool, dtype: DType, shape: [usize; 4], v: usize) -> DeltaInputs {
    let [b, tt, h, k] = shape;
    let n = b * tt * h * k;
    let kk = unit_rows(&rng.normal_vec(n), k);
    let mut vv = rng.normal_vec(b * tt * h * v);
    let (a, bb, kin): (Vec<f32>, Vec<f32>, Vec<f32>) = if rwkv7 {
        let alpha = rng.uniform_vec(n, 0.0, 1.0);
        let k_raw = rng.normal_vec(n);
        (kk.iter().map(|x| -x).collect(), kk.iter().zip(&alpha).map(|(x, a)| x * a).collect(), k_raw)
    } else {
        let beta = rng.uniform_vec(b * tt * h, 0.0, 1.0);
        for (i, x) in vv.iter_mut().enumerate() {
            *x *= beta[i / v];
        }
        (kk.iter().map(|x| -x).collect(), kk.iter().enumerate().map(|(i, x)| x * beta[i / k]).collect(), kk.clone())
    };
    DeltaInputs {
        q: tensor(dtype, &shape, &rng.normal_vec(n)),
        k: tensor(dtype, &shape, &kin),
        v: tensor(dtype, &[b, tt, h, v], &vv),
        a: tensor(dtype, &shape, &a),
        b: tensor(dtype, &shape, &bb),
        cfg: DeltaRuleConfig { scale: if rwkv7 { Some(1.0) } else { None } },
    }
}

#[test]
fn delta_rule_rwkv7_and_deltanet_vs_oracle() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let (b, tt, h, k, v) = (2, 33, 3, 12, 20);
    for dtype in FLOATS {
        for rwkv7 in [true, false] {
            for (di, d) in DECAY_SHAPES.into_iter().enumerate() {
                let x = delta_inputs(&mut rng, rwkv7, dtype, [b, tt, h, k], v);
                // RWKV-7 decay exp(-0.6065 sigmoid(.)) lies in (0.545, 1); use the generic range too.
                let g = decay(&mut rng, if di % 2 == 0 { DType::F32 } else { dtype }, d, b, tt, h, k);
                let s0 = randn(&mut rng, DType::F32, &[b, h, k, v]);
                let mut args = DeltaRuleArgs::new(&x.q, &x.k, &x.v, &x.a, &x.b);
                args.g = g.as_ref();
                if di % 2 == 1 {
                    args.initial_state = Some(&s0);
                }
                let out = delta_rule_cpu(&x.cfg, &args).unwrap();
                let r = oracle::delta_rule(&x.cfg, &args).unwrap();
                let what = format!("delta {} {dtype} {d:?}", if rwkv7 { "rwkv7" } else { "deltanet" });
                assert_eq!(out.o.dtype(), dtype);
                assert_close(&format!("{what} o"), &out.o, &r.o, dtype.rel_tolerance(), seed);
                assert_close(&format!("{what} final_state"), &out.final_state, &r.final_state, 1e-5, seed);
            }
        }
    }
}

#[test]
fn delta_rule_generic_rank_one_vs_oracle() {
    // Arbitrary (non-model) a, b, including an exactly-zero decay token.
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let (b, tt, h, k, v) = (1, 40, 2, 7, 9);
    let q = randn(&mut rng, DType::F32, &[b, tt, h, k]);
    let kk = randn(&mut rng, DType::F32, &[b, tt, h, k]);
    let vv = randn(&mut rng, DType::F32, &[b, tt, h, v]);
    let a = randn_scaled(&mut rng, DType::F32, &[b, tt, h, k], 0.3);
    let bb = randn_scaled(&mut rng, DType::F32, &[b, tt, h, k], 0.3);
    let mut g = rng.uniform_vec(b * tt * h, -1.0, 0.0);
    g[5] = f32::NEG_INFINITY;
    let g = tensor(DType::F32, &[b, tt, h], &g);
    let args = DeltaRuleArgs::new(&q, &kk, &vv, &a, &bb).with_g(&g);
    let cfg = DeltaRuleConfig { scale: Some(0.7) };
    let out = delta_rule_cpu(&cfg, &args).unwrap();
    let r = oracle::delta_rule(&cfg, &args).unwrap();
    assert_close("generic delta o", &out.o, &r.o, 1e-5, seed);
    assert_close("generic delta final_state", &out.final_state, &r.final_state, 1e-5, seed);
}

// ------------------------------------------------------------------ state passing, varlen

fn slice_rows(x: &Tensor, lo: usize, hi: usize) -> Tensor {
    // [1, T, ...] -> [1, hi - lo, ...]
    let s = x.shape();
    let inner: usize = s[2..].iter().product();
    let vals = x.to_f32_vec()[lo * inner..hi * inner].to_vec();
    let mut shape = s.to_vec();
    shape[1] = hi - lo;
    tensor(x.dtype(), &shape, &vals)
}

#[test]
fn split_with_state_passing_equals_one_call() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let (tt, h, k, v, cut) = (45, 2, 8, 6, 17);
    for dtype in [DType::F32, DType::BF16] {
        for bonus in [false, true] {
            let q = randn(&mut rng, dtype, &[1, tt, h, k]);
            let kk = randn(&mut rng, dtype, &[1, tt, h, k]);
            let vv = randn(&mut rng, dtype, &[1, tt, h, v]);
            let g = decay(&mut rng, DType::F32, DecayShape::PerTokenKey, 1, tt, h, k).unwrap();
            let u = randn(&mut rng, DType::F32, &[h, k]);
            let s0 = randn(&mut rng, DType::F32, &[1, h, k, v]);
            let cfg = LinearAttentionConfig::default();
            fn with<'a>(a: LinearArgs<'a, Tensor>, u: Option<&'a Tensor>) -> LinearArgs<'a, Tensor> {
                LinearArgs { u, ..a }
            }
            let ub = if bonus { Some(&u) } else { None };
            let full =
                linear_attention_cpu(&cfg, &with(LinearArgs::new(&q, &kk, &vv).with_g(&g).with_initial_state(&s0), ub))
                    .unwrap();
            let parts: Vec<[Tensor; 4]> = [(0, cut), (cut, tt)]
                .iter()
                .map(|&(lo, hi)| {
                    [slice_rows(&q, lo, hi), slice_rows(&kk, lo, hi), slice_rows(&vv, lo, hi), slice_rows(&g, lo, hi)]
                })
                .collect();
            let [q1, k1, v1, g1] = &parts[0];
            let [q2, k2, v2, g2] = &parts[1];
            let first =
                linear_attention_cpu(&cfg, &with(LinearArgs::new(q1, k1, v1).with_g(g1).with_initial_state(&s0), ub))
                    .unwrap();
            let second = linear_attention_cpu(
                &cfg,
                &with(LinearArgs::new(q2, k2, v2).with_g(g2).with_initial_state(&first.final_state), ub),
            )
            .unwrap();
            let mut o = first.o.to_f32_vec();
            o.extend(second.o.to_f32_vec());
            assert_eq!(o, full.o.to_f32_vec(), "linear {dtype} bonus={bonus}: split o (seed {seed})");
            assert_eq!(second.final_state, full.final_state, "linear split final_state (seed {seed})");
        }
        // delta rule
        let x = delta_inputs(&mut rng, true, dtype, [1, tt, h, k], v);
        let g = decay(&mut rng, DType::F32, DecayShape::PerToken, 1, tt, h, k).unwrap();
        let full = delta_rule_cpu(&x.cfg, &DeltaRuleArgs::new(&x.q, &x.k, &x.v, &x.a, &x.b).with_g(&g)).unwrap();
        let p = |lo, hi| [&x.q, &x.k, &x.v, &x.a, &x.b, &g].map(|t| slice_rows(t, lo, hi));
        let [q1, k1, v1, a1, b1, g1] = p(0, cut);
        let [q2, k2, v2, a2, b2, g2] = p(cut, tt);
        let first = delta_rule_cpu(&x.cfg, &DeltaRuleArgs::new(&q1, &k1, &v1, &a1, &b1).with_g(&g1)).unwrap();
        let second = delta_rule_cpu(
            &x.cfg,
            &DeltaRuleArgs::new(&q2, &k2, &v2, &a2, &b2).with_g(&g2).with_initial_state(&first.final_state),
        )
        .unwrap();
        let mut o = first.o.to_f32_vec();
        o.extend(second.o.to_f32_vec());
        assert_eq!(o, full.o.to_f32_vec(), "delta {dtype}: split o (seed {seed})");
        assert_eq!(second.final_state, full.final_state, "delta split final_state (seed {seed})");
    }
    // rwkv4
    let (bn, c) = (2, 70);
    let k4 = randn_scaled(&mut rng, DType::F32, &[bn, tt, c], 3.0);
    let v4 = randn(&mut rng, DType::F32, &[bn, tt, c]);
    let w = tensor(DType::F32, &[c], &rng.uniform_vec(c, -3.0, 1.0).iter().map(|x| -x.exp()).collect::<Vec<_>>());
    let u = randn(&mut rng, DType::F32, &[c]);
    let cfg = Rwkv4Config::default();
    let full = rwkv4_cpu(&cfg, &Rwkv4Args::new(&k4, &v4, &w, &u)).unwrap();
    let batch_rows = |x: &Tensor, lo: usize, hi: usize| {
        let vals = x.to_f32_vec();
        let mut out = Vec::new();
        for b in 0..bn {
            out.extend_from_slice(&vals[(b * tt + lo) * c..(b * tt + hi) * c]);
        }
        tensor(DType::F32, &[bn, hi - lo, c], &out)
    };
    let (k1, v1, k2, v2) =
        (batch_rows(&k4, 0, cut), batch_rows(&v4, 0, cut), batch_rows(&k4, cut, tt), batch_rows(&v4, cut, tt));
    let first = rwkv4_cpu(&cfg, &Rwkv4Args::new(&k1, &v1, &w, &u)).unwrap();
    let second = rwkv4_cpu(&cfg, &Rwkv4Args::new(&k2, &v2, &w, &u).with_initial_state(&first.final_state)).unwrap();
    // rwkv4 folds its internal log-scale residual into the returned state, so the split agrees
    // to f32 rounding rather than bit for bit.
    assert_eq!(batch_rows(&full.o, 0, cut), first.o, "rwkv4 split y, first part (seed {seed})");
    assert_close("rwkv4 split y", &second.o, &batch_rows(&full.o, cut, tt).to_f64_vec(), 1e-6, seed);
    assert_close("rwkv4 split final_state", &second.final_state, &full.final_state.to_f64_vec(), 1e-6, seed);
}

#[test]
fn varlen_equals_per_sequence_loop() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let (h, k, v) = (3, 8, 10);
    let cu = [0i32, 13, 13, 40, 41];
    let total = 41;
    let n = cu.len() - 1;
    for dtype in [DType::F32, DType::F16] {
        for d in DECAY_SHAPES {
            for delta in [false, true] {
                let q = randn(&mut rng, dtype, &[1, total, h, k]);
                let kk = randn(&mut rng, dtype, &[1, total, h, k]);
                let vv = randn(&mut rng, dtype, &[1, total, h, v]);
                let x = delta_inputs(&mut rng, false, dtype, [1, total, h, k], v);
                let g = decay(&mut rng, DType::F32, d, 1, total, h, k);
                let u = randn(&mut rng, DType::F32, &[h, k]);
                let s0 = randn(&mut rng, DType::F32, &[n, h, k, v]);
                let s0v = s0.to_f32_vec();
                let per_head_g = matches!(d, DecayShape::PerHead | DecayShape::PerHeadKey);
                let run = |lo: usize, hi: usize, state: &Tensor, cu: Option<&[i32]>| -> RecurrentOutput<Tensor> {
                    let whole = cu.is_some();
                    let sl = |x: &Tensor| if whole { x.clone() } else { slice_rows(x, lo, hi) };
                    let gs = g.as_ref().map(|g| if per_head_g || whole { g.clone() } else { slice_rows(g, lo, hi) });
                    if delta {
                        let (q, k, v, a, b) = (sl(&x.q), sl(&x.k), sl(&x.v), sl(&x.a), sl(&x.b));
                        let mut args = DeltaRuleArgs::new(&q, &k, &v, &a, &b).with_initial_state(state);
                        args.g = gs.as_ref();
                        args.cu_seqlens = cu;
                        delta_rule_cpu(&x.cfg, &args).unwrap()
                    } else {
                        let (q, k, v) = (sl(&q), sl(&kk), sl(&vv));
                        let mut args = LinearArgs::new(&q, &k, &v).with_u(&u).with_initial_state(state);
                        args.g = gs.as_ref();
                        args.cu_seqlens = cu;
                        linear_attention_cpu(&LinearAttentionConfig::default(), &args).unwrap()
                    }
                };
                let packed = run(0, total, &s0, Some(&cu));
                let (po, ps) = (packed.o.to_f32_vec(), packed.final_state.to_f32_vec());
                for i in 0..n {
                    let (lo, hi) = (cu[i] as usize, cu[i + 1] as usize);
                    let st = tensor(DType::F32, &[1, h, k, v], &s0v[i * h * k * v..(i + 1) * h * k * v]);
                    let one = run(lo, hi, &st, None);
                    let what = format!("{dtype} {d:?} delta={delta} seq {i} (seed {seed})");
                    assert_eq!(one.o.to_f32_vec()[..], po[lo * h * v..hi * h * v], "varlen o {what}");
                    assert_eq!(
                        one.final_state.to_f32_vec()[..],
                        ps[i * h * k * v..(i + 1) * h * k * v],
                        "varlen state {what}"
                    );
                    if lo == hi {
                        assert_eq!(one.final_state, st, "empty sequence keeps its state {what}");
                    }
                }
                // And the oracle agrees on the packed call.
                if !delta {
                    let mut args =
                        LinearArgs::new(&q, &kk, &vv).with_u(&u).with_initial_state(&s0).with_cu_seqlens(&cu);
                    args.g = g.as_ref();
                    let r = oracle::linear_attention(&LinearAttentionConfig::default(), &args).unwrap();
                    assert_close("varlen o vs oracle", &packed.o, &r.o, dtype.rel_tolerance(), seed);
                    assert_close("varlen state vs oracle", &packed.final_state, &r.final_state, 1e-5, seed);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------- long inputs

#[test]
fn long_sequences_64k_steps_stay_within_bounds() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let (tt, h, k, v) = (65_536, 2, 8, 8);
    for dtype in [DType::F32, DType::BF16] {
        let q = randn(&mut rng, dtype, &[1, tt, h, k]);
        let kk = randn(&mut rng, dtype, &[1, tt, h, k]);
        let vv = randn(&mut rng, dtype, &[1, tt, h, v]);
        let u = randn(&mut rng, DType::F32, &[h, k]);
        // No decay (state grows like sqrt(T)), slow decay per head, RWKV-6 decay per token.
        let g_head = tensor(DType::F32, &[h], &[-1e-4, -1e-2]);
        let g_tok = decay(&mut rng, DType::F32, DecayShape::PerTokenKey, 1, tt, h, k).unwrap();
        for (name, g) in [("none", None), ("head", Some(&g_head)), ("token", Some(&g_tok))] {
            for bonus in [false, true] {
                let mut args = LinearArgs::new(&q, &kk, &vv);
                args.g = g;
                if bonus {
                    args.u = Some(&u);
                }
                let cfg = LinearAttentionConfig::default();
                let out = linear_attention_cpu(&cfg, &args).unwrap();
                let r = oracle::linear_attention(&cfg, &args).unwrap();
                assert!(out.o.to_f32_vec().iter().all(|x| x.is_finite()), "64k non-finite (seed {seed})");
                let what = format!("64k {dtype} g={name} bonus={bonus}");
                assert_close(&format!("{what} o"), &out.o, &r.o, dtype.rel_tolerance(), seed);
                assert_close(&format!("{what} final_state"), &out.final_state, &r.final_state, 1e-5, seed);
            }
        }
        for rwkv7 in [true, false] {
            let x = delta_inputs(&mut rng, rwkv7, dtype, [1, tt, h, k], v);
            let g = tensor(DType::F32, &[h], &[0.0, -1e-3]);
            let args = DeltaRuleArgs::new(&x.q, &x.k, &x.v, &x.a, &x.b).with_g(&g);
            let out = delta_rule_cpu(&x.cfg, &args).unwrap();
            let r = oracle::delta_rule(&x.cfg, &args).unwrap();
            let what = format!("64k delta rwkv7={rwkv7} {dtype}");
            assert_close(&format!("{what} o"), &out.o, &r.o, dtype.rel_tolerance(), seed);
            assert_close(&format!("{what} final_state"), &out.final_state, &r.final_state, 1e-5, seed);
        }
        let c = 16;
        let k4 = randn_scaled(&mut rng, dtype, &[1, tt, c], 3.0);
        let v4 = randn(&mut rng, dtype, &[1, tt, c]);
        let w = tensor(DType::F32, &[c], &rng.uniform_vec(c, -9.0, 1.0).iter().map(|x| -x.exp()).collect::<Vec<_>>());
        let u4 = randn(&mut rng, DType::F32, &[c]);
        let args = Rwkv4Args::new(&k4, &v4, &w, &u4);
        let out = rwkv4_cpu(&Rwkv4Config::default(), &args).unwrap();
        let r = oracle::rwkv4(&Rwkv4Config::default(), &args).unwrap();
        assert_close(&format!("64k rwkv4 {dtype} y"), &out.o, &r.o, dtype.rel_tolerance(), seed);
        assert_close(&format!("64k rwkv4 {dtype} final_state"), &out.final_state, &r.final_state, 1e-5, seed);
    }
}

// ------------------------------------------------------------------------------------ rwkv4

#[test]
fn rwkv4_vs_oracle_and_closed_form() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let (b, tt, c) = (2, 57, 33);
    for dtype in FLOATS {
        for (k_scale, with_state) in [(1.0f32, false), (3.0, true), (40.0, false), (40.0, true)] {
            // k_scale 40: exp(k) overflows f32 (e^88) without the stable form.
            let k = randn_scaled(&mut rng, dtype, &[b, tt, c], k_scale);
            let v = randn(&mut rng, dtype, &[b, tt, c]);
            let w = tensor(DType::F32, &[c], &rng.uniform_vec(c, -5.0, 1.5).iter().map(|x| -x.exp()).collect::<Vec<_>>());
            let u = randn(&mut rng, DType::F32, &[c]);
            let mut s0 = rng.uniform_vec(b * c, 0.0, 2.0); // aa
            s0.extend(rng.uniform_vec(b * c, 0.5, 2.0)); // bb > 0
            s0.extend(rng.uniform_vec(b * c, -3.0, 3.0)); // pp
                                                          // rearrange [3, B, C] -> [B, 3, C]
            let s0: Vec<f32> = (0..b * 3 * c).map(|i| s0[((i / c) % 3) * b * c + (i / (3 * c)) * c + i % c]).collect();
            let s0 = tensor(DType::F32, &[b, 3, c], &s0);
            let mut args = Rwkv4Args::new(&k, &v, &w, &u);
            if with_state {
                args.initial_state = Some(&s0);
            }
            let cfg = Rwkv4Config::default();
            let out = rwkv4_cpu(&cfg, &args).unwrap();
            let r = oracle::rwkv4(&cfg, &args).unwrap();
            let closed = oracle::rwkv4_closed_form(&cfg, &args).unwrap();
            let what = format!("rwkv4 {dtype} k*{k_scale} state={with_state}");
            assert_eq!(out.o.dtype(), dtype);
            assert_eq!(out.final_state.shape(), &[b, 3, c]);
            let e = rel_error(&closed, &r.o);
            assert!(e < 1e-10, "{what}: closed form vs stable oracle {e:.3e} (seed {seed})");
            assert!(out.o.to_f32_vec().iter().all(|x| x.is_finite()), "{what}: non-finite y (seed {seed})");
            assert_close(&format!("{what} y"), &out.o, &r.o, dtype.rel_tolerance(), seed);
            // pp (log scale) is compared as is; aa, bb relative to it.
            assert_close(&format!("{what} final_state"), &out.final_state, &r.final_state, 1e-5, seed);
        }
    }
}

// ----------------------------------------------------------------------------- case files

#[test]
fn case_files_run_through_the_dispatcher() {
    let mut rng = Rng::from_time();
    let (b, tt, h, k, v) = (1, 9, 2, 4, 3);
    let q = randn(&mut rng, DType::F16, &[b, tt, h, k]);
    let g = tensor(DType::F32, &[h], &[-0.1, -0.5]);
    let lin = Case::new(serde_json::json!({"op": "linear_attention", "scale": 0.5}))
        .with("q", q.clone())
        .with("k", q.clone())
        .with("v", randn(&mut rng, DType::F16, &[b, tt, h, v]))
        .with("g", g.clone())
        .with("cu_seqlens", Tensor::from_i32(&[3], &[0, 4, 9]).unwrap());
    let out = case::run(&lin, &Device::Cpu).unwrap();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["final_state", "o"]);
    assert_eq!(out["final_state"].shape(), &[2, h, k, v]);
    let r = attn_kernels_harness::cases::linear::linear_attention_oracle_case(&lin).unwrap();
    assert!(rel_error(&out["o"].to_f64_vec(), &r["o"]) <= 3e-3);

    let delta = Case::new(serde_json::json!({"op": "delta_rule"}))
        .with("q", q.clone())
        .with("k", q.clone())
        .with("v", randn(&mut rng, DType::F16, &[b, tt, h, v]))
        .with("a", randn_scaled(&mut rng, DType::F16, &[b, tt, h, k], 0.2))
        .with("b", randn_scaled(&mut rng, DType::F16, &[b, tt, h, k], 0.2));
    let out = case::run(&delta, &Device::Cpu).unwrap();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["final_state", "o"]);

    let c = 5;
    let rw = Case::new(serde_json::json!({"op": "rwkv4"}))
        .with("k", randn(&mut rng, DType::BF16, &[2, tt, c]))
        .with("v", randn(&mut rng, DType::BF16, &[2, tt, c]))
        .with("w", tensor(DType::F32, &[c], &[-0.5; 5]))
        .with("u", tensor(DType::F32, &[c], &[0.3; 5]));
    let out = case::run(&rw, &Device::Cpu).unwrap();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["final_state", "y"]);
    assert_eq!(out["y"].dtype(), DType::BF16);

    // Unknown tensor, missing tensor, unknown config key.
    let bad = lin.clone().with("w", g.clone());
    assert!(matches!(case::run(&bad, &Device::Cpu), Err(Error::Case(_))));
    let mut missing = lin.clone();
    missing.inputs.remove("k");
    assert!(matches!(case::run(&missing, &Device::Cpu), Err(Error::Case(_))));
    let typo = Case { config: serde_json::json!({"op": "linear_attention", "scael": 1.0}), inputs: lin.inputs.clone() };
    assert!(matches!(case::run(&typo, &Device::Cpu), Err(Error::Config { .. })));
    let rw_scale = Case { config: serde_json::json!({"op": "rwkv4", "scale": 1.0}), inputs: rw.inputs.clone() };
    assert!(matches!(case::run(&rw_scale, &Device::Cpu), Err(Error::Config { .. })));
}

// ------------------------------------------------------------------------------- bad input

#[test]
fn bad_inputs_return_typed_errors() {
    let z = |d: DType, s: &[usize]| Tensor::zeros(d, s).unwrap();
    let (b, tt, h, k, v) = (2, 5, 3, 4, 6);
    let f = DType::F32;
    let q = z(DType::BF16, &[b, tt, h, k]);
    let kk = z(DType::BF16, &[b, tt, h, k]);
    let vv = z(DType::BF16, &[b, tt, h, v]);
    let cfg = LinearAttentionConfig::default();
    let lin = |a: LinearArgs<'_, Tensor>| plan_linear(&cfg, &a).map(|_| ());
    let base = LinearArgs::new(&q, &kk, &vv);
    assert!(lin(base).is_ok());

    let i32q = z(DType::I32, &[b, tt, h, k]);
    expect_err(lin(LinearArgs::new(&i32q, &kk, &vv)), ErrKind::DType, "q", "i32 q");
    let q3 = z(DType::BF16, &[b, tt, h * k]);
    expect_err(lin(LinearArgs::new(&q3, &kk, &vv)), ErrKind::Shape, "q", "rank-3 q");
    let q0 = z(DType::BF16, &[b, tt, h, 0]);
    let k0 = z(DType::BF16, &[b, tt, h, 0]);
    expect_err(lin(LinearArgs::new(&q0, &k0, &vv)), ErrKind::Shape, "q", "K = 0");
    let kf = z(f, &[b, tt, h, k]);
    expect_err(lin(LinearArgs::new(&q, &kf, &vv)), ErrKind::DType, "k", "k dtype");
    let kshort = z(DType::BF16, &[b, tt - 1, h, k]);
    expect_err(lin(LinearArgs::new(&q, &kshort, &vv)), ErrKind::Shape, "k", "k shape");
    let vf = z(DType::F16, &[b, tt, h, v]);
    expect_err(lin(LinearArgs::new(&q, &kk, &vf)), ErrKind::DType, "v", "v dtype");
    let vh = z(DType::BF16, &[b, tt, h + 1, v]);
    expect_err(lin(LinearArgs::new(&q, &kk, &vh)), ErrKind::Shape, "v", "v heads");
    let v0 = z(DType::BF16, &[b, tt, h, 0]);
    expect_err(lin(LinearArgs::new(&q, &kk, &v0)), ErrKind::Shape, "v", "V = 0");

    for s in [vec![b, tt, h, k + 1], vec![tt, h], vec![h + 1], vec![b, tt], vec![1, h, k], vec![]] {
        let g = z(f, &s);
        expect_err(lin(base.with_g(&g)), ErrKind::Shape, "g", &format!("g shape {s:?}"));
    }
    let g16 = z(DType::F16, &[h]);
    expect_err(lin(base.with_g(&g16)), ErrKind::DType, "g", "g f16 with bf16 q");
    let gbf = z(DType::BF16, &[h]);
    assert!(lin(base.with_g(&gbf)).is_ok(), "g in q's dtype is accepted");
    let gi = z(DType::I32, &[h]);
    expect_err(lin(base.with_g(&gi)), ErrKind::DType, "g", "g i32");

    let u_bad = z(f, &[h, k + 1]);
    expect_err(lin(base.with_u(&u_bad)), ErrKind::Shape, "u", "u shape");
    let u16 = z(DType::F16, &[h, k]);
    expect_err(lin(base.with_u(&u16)), ErrKind::DType, "u", "u dtype");

    let s_bad = z(f, &[b, h, v, k]);
    expect_err(lin(base.with_initial_state(&s_bad)), ErrKind::Shape, "initial_state", "state shape");
    let s_bf = z(DType::BF16, &[b, h, k, v]);
    expect_err(lin(base.with_initial_state(&s_bf)), ErrKind::DType, "initial_state", "state dtype");

    for s in [f64::NAN, f64::INFINITY, 1e300] {
        let c = LinearAttentionConfig { scale: Some(s) };
        expect_err(plan_linear(&c, &base), ErrKind::Invalid, "scale", "non-finite scale");
        let c = DeltaRuleConfig { scale: Some(s) };
        let a = z(DType::BF16, &[b, tt, h, k]);
        expect_err(
            plan_delta_rule(&c, &DeltaRuleArgs::new(&q, &kk, &vv, &a, &a)),
            ErrKind::Invalid,
            "scale",
            "delta scale",
        );
    }

    // varlen
    let q1 = z(DType::BF16, &[1, 10, h, k]);
    let v1 = z(DType::BF16, &[1, 10, h, v]);
    let vl = LinearArgs::new(&q1, &q1, &v1);
    assert!(lin(vl.with_cu_seqlens(&[0, 3, 3, 10])).is_ok());
    expect_err(lin(base.with_cu_seqlens(&[0, 5, 10])), ErrKind::Shape, "q", "varlen with B = 2");
    for cu in [&[0i32][..], &[1, 10], &[0, 6, 4, 10], &[0, 3, 9], &[0, 3, 11], &[0, -1, 10]] {
        expect_err(lin(vl.with_cu_seqlens(cu)), ErrKind::Invalid, "cu_seqlens", &format!("cu {cu:?}"));
    }
    let s_wrong_n = z(f, &[2, h, k, v]);
    expect_err(
        lin(vl.with_cu_seqlens(&[0, 3, 3, 10]).with_initial_state(&s_wrong_n)),
        ErrKind::Shape,
        "initial_state",
        "varlen state",
    );
    let cu_case = Case::new(serde_json::json!({"op": "linear_attention"}))
        .with("q", q1.clone())
        .with("k", q1.clone())
        .with("v", v1.clone())
        .with("cu_seqlens", z(f, &[3]));
    expect_err(case::run(&cu_case, &Device::Cpu), ErrKind::DType, "cu_seqlens", "f32 cu_seqlens");
    let cu_case = cu_case.with("cu_seqlens", z(DType::I32, &[1, 3]));
    expect_err(case::run(&cu_case, &Device::Cpu), ErrKind::Shape, "cu_seqlens", "rank-2 cu_seqlens");

    // delta rule: a and b
    let dcfg = DeltaRuleConfig::default();
    let a = z(DType::BF16, &[b, tt, h, k]);
    let a_f = z(f, &[b, tt, h, k]);
    let a_s = z(DType::BF16, &[b, tt, h, k + 1]);
    assert!(plan_delta_rule(&dcfg, &DeltaRuleArgs::new(&q, &kk, &vv, &a, &a)).is_ok());
    expect_err(plan_delta_rule(&dcfg, &DeltaRuleArgs::new(&q, &kk, &vv, &a_f, &a)), ErrKind::DType, "a", "a dtype");
    expect_err(plan_delta_rule(&dcfg, &DeltaRuleArgs::new(&q, &kk, &vv, &a, &a_s)), ErrKind::Shape, "b", "b shape");
    let g_bad = z(f, &[h, 1]);
    expect_err(
        plan_delta_rule(&dcfg, &DeltaRuleArgs::new(&q, &kk, &vv, &a, &a).with_g(&g_bad)),
        ErrKind::Shape,
        "g",
        "delta g",
    );
    expect_err(
        delta_rule_cpu(&dcfg, &DeltaRuleArgs::new(&q, &kk, &vv, &a, &a).with_initial_state(&s_bad)),
        ErrKind::Shape,
        "initial_state",
        "delta state",
    );
    let delta_u = Case::new(serde_json::json!({"op": "delta_rule"}))
        .with("q", q.clone())
        .with("k", kk.clone())
        .with("v", vv.clone())
        .with("a", a.clone())
        .with("b", a.clone())
        .with("u", z(f, &[h, k]));
    assert!(matches!(case::run(&delta_u, &Device::Cpu), Err(Error::Case(_))), "delta_rule takes no u");

    // rwkv4
    let c = 7;
    let rk = z(DType::F16, &[b, tt, c]);
    let w = z(f, &[c]);
    let rcfg = Rwkv4Config::default();
    let rw = |a: Rwkv4Args<'_, Tensor>| rwkv4_cpu(&rcfg, &a).map(|_| ());
    assert!(rw(Rwkv4Args::new(&rk, &rk, &w, &w)).is_ok());
    let rk4 = z(DType::F16, &[b, tt, 1, c]);
    expect_err(rw(Rwkv4Args::new(&rk4, &rk4, &w, &w)), ErrKind::Shape, "k", "rwkv4 k rank");
    let rki = z(DType::I32, &[b, tt, c]);
    expect_err(rw(Rwkv4Args::new(&rki, &rki, &w, &w)), ErrKind::DType, "k", "rwkv4 k dtype");
    let rv = z(DType::BF16, &[b, tt, c]);
    expect_err(rw(Rwkv4Args::new(&rk, &rv, &w, &w)), ErrKind::DType, "v", "rwkv4 v dtype");
    let rvs = z(DType::F16, &[b, tt + 1, c]);
    expect_err(rw(Rwkv4Args::new(&rk, &rvs, &w, &w)), ErrKind::Shape, "v", "rwkv4 v shape");
    let w16 = z(DType::F16, &[c]);
    expect_err(rw(Rwkv4Args::new(&rk, &rk, &w16, &w)), ErrKind::DType, "w", "rwkv4 w dtype");
    let ws = z(f, &[c + 1]);
    expect_err(rw(Rwkv4Args::new(&rk, &rk, &w, &ws)), ErrKind::Shape, "u", "rwkv4 u shape");
    let st = z(f, &[b, 2, c]);
    expect_err(
        rw(Rwkv4Args::new(&rk, &rk, &w, &w).with_initial_state(&st)),
        ErrKind::Shape,
        "initial_state",
        "rwkv4 state",
    );
    let st16 = z(DType::F16, &[b, 3, c]);
    expect_err(
        rw(Rwkv4Args::new(&rk, &rk, &w, &w).with_initial_state(&st16)),
        ErrKind::DType,
        "initial_state",
        "rwkv4 state dtype",
    );
    let rc0 = z(DType::F16, &[b, tt, 0]);
    let w0 = z(f, &[0]);
    expect_err(rw(Rwkv4Args::new(&rc0, &rc0, &w0, &w0)), ErrKind::Shape, "k", "rwkv4 C = 0");
}

#[test]
fn empty_batch_and_zero_length_are_fine() {
    let z = |d: DType, s: &[usize]| Tensor::zeros(d, s).unwrap();
    let q = z(DType::F32, &[2, 0, 2, 4]);
    let v = z(DType::F32, &[2, 0, 2, 3]);
    let s0 = Tensor::from_f32(DType::F32, &[2, 2, 4, 3], &(0..48).map(|x| x as f32).collect::<Vec<_>>()).unwrap();
    let out =
        linear_attention_cpu(&LinearAttentionConfig::default(), &LinearArgs::new(&q, &q, &v).with_initial_state(&s0))
            .unwrap();
    assert_eq!(out.o.shape(), &[2, 0, 2, 3]);
    assert_eq!(out.final_state, s0);
    let k = z(DType::F32, &[0, 4, 3]);
    let w = z(DType::F32, &[3]);
    let out = rwkv4_cpu(&Rwkv4Config::default(), &Rwkv4Args::new(&k, &k, &w, &w)).unwrap();
    assert_eq!(out.final_state.shape(), &[0, 3, 3]);
}
