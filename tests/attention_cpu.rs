//! CPU attention (spec section 1) against the naive float64 oracle, with fresh random inputs
//! every run (replay a failure with ATTN_KERNELS_SEED=<seed printed in the message>).

mod common;

use attn_kernels::attention::{self, alibi_slopes, attention_cpu, oracle, AttentionArgs, AttentionConfig};
use attn_kernels::tensor::{rel_error, DType, Tensor, TensorInfo};
use attn_kernels::Error;
use attn_kernels_harness::case::{self, Case, Device};
use attn_kernels_harness::check::Rng;
use common::{assert_err, f32t, randn, rope, yarn, ErrKind};
use serde_json::json;

/// Inputs of one test case.
struct Inputs {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alibi: Option<Tensor>,
    cu_q: Option<Vec<i32>>,
    cu_k: Option<Vec<i32>>,
    pid_q: Option<Vec<i32>>,
    pid_k: Option<Vec<i32>>,
}

impl Inputs {
    fn dense(rng: &mut Rng, dtype: DType, b: usize, sq: usize, sk: usize, hq: usize, hkv: usize, d: usize, dv: usize) -> Inputs {
        Inputs {
            q: randn(rng, dtype, &[b, sq, hq, d]),
            k: randn(rng, dtype, &[b, sk, hkv, d]),
            v: randn(rng, dtype, &[b, sk, hkv, dv]),
            alibi: None,
            cu_q: None,
            cu_k: None,
            pid_q: None,
            pid_k: None,
        }
    }
    fn args(&self) -> AttentionArgs<'_, Tensor> {
        AttentionArgs {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            alibi_slopes: self.alibi.as_ref(),
            cu_seqlens_q: self.cu_q.as_deref(),
            cu_seqlens_k: self.cu_k.as_deref(),
            position_ids_q: self.pid_q.as_deref(),
            position_ids_k: self.pid_k.as_deref(),
        }
    }
    fn with_alibi(mut self, hq: usize) -> Inputs {
        self.alibi = Some(f32t(&[hq], &alibi_slopes(hq)));
        self
    }
}

/// Compare CPU and oracle; returns (rel o, rel lse). Asserts the spec bound, finiteness where
/// the reference is finite, and exact o = 0 / lse = -inf on fully masked rows.
fn compare(what: &str, seed: u64, cfg: &AttentionConfig, inp: &Inputs) -> (f64, f64) {
    let args = inp.args();
    let out = attention_cpu(cfg, &args).unwrap_or_else(|e| panic!("{what}: cpu failed: {e} (seed {seed})"));
    let (ro, rl) = oracle::attention_f64(cfg, &args).unwrap();
    let o = out.o.to_f64_vec();
    let lse = out.lse.to_f64_vec();
    assert_eq!(out.o.dtype(), inp.q.dtype());
    assert_eq!(out.lse.dtype(), DType::F32);
    assert_eq!(o.len(), ro.len(), "{what}: o size");
    assert_eq!(lse.len(), rl.len(), "{what}: lse size");
    let tol = inp.q.dtype().rel_tolerance();
    let eo = rel_error(&o, &ro);
    let el = rel_error(&lse, &rl);
    assert!(eo <= tol, "{what}: o rel error {eo:.3e} > {tol:.1e} (seed {seed})");
    assert!(el <= 1e-5, "{what}: lse rel error {el:.3e} > 1e-5 (seed {seed})");
    for (i, (&a, &r)) in lse.iter().zip(&rl).enumerate() {
        if r == f64::NEG_INFINITY {
            assert_eq!(a, f64::NEG_INFINITY, "{what}: lse[{i}] of a fully masked row (seed {seed})");
        } else {
            assert!(a.is_finite(), "{what}: lse[{i}] = {a} not finite (seed {seed})");
        }
    }
    for (i, (&a, &r)) in o.iter().zip(&ro).enumerate() {
        assert!(a.is_finite(), "{what}: o[{i}] = {a} not finite (seed {seed})");
        if r == 0.0 {
            // Only fully masked rows have exact zeros in the reference (random inputs).
            assert_eq!(a, 0.0, "{what}: o[{i}] should be 0 (seed {seed})");
        }
    }
    if std::env::var("AK_VERBOSE").is_ok() {
        eprintln!("{what}: o {eo:.2e} lse {el:.2e}");
    }
    (eo, el)
}

#[test]
fn each_option_alone_f32() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let base = AttentionConfig::default();
    let cases: Vec<(&str, AttentionConfig, bool)> = vec![
        ("plain", base.clone(), false),
        ("causal", AttentionConfig { causal: true, ..base.clone() }, false),
        ("window_left", AttentionConfig { window_left: 5, ..base.clone() }, false),
        ("window_right", AttentionConfig { window_right: 3, ..base.clone() }, false),
        ("window both", AttentionConfig { window_left: 7, window_right: 2, ..base.clone() }, false),
        ("window 0/0", AttentionConfig { window_left: 0, window_right: 0, ..base.clone() }, false),
        ("softcap", AttentionConfig { softcap: 2.5, ..base.clone() }, false),
        ("scale", AttentionConfig { softmax_scale: Some(0.37), ..base.clone() }, false),
        ("alibi", base.clone(), true),
        ("rope neox", AttentionConfig { rope: Some(rope(24, false)), ..base.clone() }, false),
        ("rope gptj partial", AttentionConfig { rope: Some(rope(16, true)), ..base.clone() }, false),
        ("rope yarn", AttentionConfig { rope: Some(yarn(24)), ..base.clone() }, false),
    ];
    for (name, cfg, alibi) in cases {
        for (sq, sk) in [(37, 37), (19, 45), (45, 19), (1, 70), (70, 1)] {
            let mut inp = Inputs::dense(&mut rng, DType::F32, 2, sq, sk, 4, 4, 24, 21);
            if alibi {
                inp = inp.with_alibi(4);
            }
            compare(&format!("{name} sq={sq} sk={sk}"), seed, &cfg, &inp);
        }
    }
    // Head dims that are not multiples of any tile width.
    for (d, dv) in [(13, 5), (1, 1), (7, 130)] {
        let inp = Inputs::dense(&mut rng, DType::F32, 1, 70, 66, 2, 1, d, dv).with_alibi(2);
        compare(&format!("d={d} dv={dv}"), seed, &AttentionConfig { causal: true, ..Default::default() }, &inp);
    }
}

#[test]
fn all_options_combined_all_dtypes() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for causal in [false, true] {
            for (sq, sk) in [(67, 67), (33, 101), (101, 33), (130, 130)] {
                let cfg = AttentionConfig {
                    causal,
                    window_left: 40,
                    window_right: if causal { -1 } else { 9 },
                    softcap: 3.0,
                    rope: Some(yarn(32)),
                    ..Default::default()
                };
                let inp = Inputs::dense(&mut rng, dtype, 2, sq, sk, 6, 2, 32, 40).with_alibi(6);
                compare(&format!("{dtype} causal={causal} sq={sq} sk={sk}"), seed, &cfg, &inp);
            }
        }
        // Options one at a time in this dtype as well.
        let inp = Inputs::dense(&mut rng, dtype, 1, 77, 93, 4, 1, 64, 64).with_alibi(4);
        compare(&format!("{dtype} alibi mqa"), seed, &AttentionConfig { causal: true, ..Default::default() }, &inp);
    }
}

#[test]
fn fully_masked_rows() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    // Causal with Sq > Sk: the first Sq - Sk rows see nothing.
    let cfg = AttentionConfig { causal: true, ..Default::default() };
    let inp = Inputs::dense(&mut rng, DType::F32, 1, 50, 20, 2, 2, 16, 16);
    compare("causal sq>sk", seed, &cfg, &inp);
    let out = attention_cpu(&cfg, &inp.args()).unwrap();
    let lse = out.lse.to_f64_vec();
    let o = out.o.to_f64_vec();
    for h in 0..2 {
        for i in 0..50 {
            let masked = i < 30;
            assert_eq!(lse[h * 50 + i] == f64::NEG_INFINITY, masked, "row {i} head {h}");
            if masked {
                assert!(o[(i * 2 + h) * 16..][..16].iter().all(|&x| x == 0.0));
            }
        }
    }
    // A window entirely beyond the keys: window_left = 0 and window_right = 0 with Sq > Sk.
    let cfg = AttentionConfig { window_left: 0, window_right: 0, ..Default::default() };
    let inp = Inputs::dense(&mut rng, DType::BF16, 1, 40, 9, 2, 1, 8, 8);
    compare("window sq>sk", seed, &cfg, &inp);
    // Sk = 0: every row masked, with RoPE and ALiBi on.
    let cfg = AttentionConfig { rope: Some(rope(8, false)), ..Default::default() };
    let inp = Inputs::dense(&mut rng, DType::F16, 2, 5, 0, 2, 1, 8, 8).with_alibi(2);
    let out = attention_cpu(&cfg, &inp.args()).unwrap();
    assert!(out.o.to_f64_vec().iter().all(|&x| x == 0.0));
    assert!(out.lse.to_f64_vec().iter().all(|&x| x == f64::NEG_INFINITY));
    // Rotation at the negative default positions of rows with Sq > Sk (bidirectional RoPE).
    let cfg = AttentionConfig { rope: Some(rope(8, false)), ..Default::default() };
    let inp = Inputs::dense(&mut rng, DType::F32, 1, 30, 7, 2, 1, 8, 8);
    compare("rope negative positions", seed, &cfg, &inp);
}

#[test]
fn gqa_equals_repeated_kv_heads() {
    let mut rng = Rng::from_time();
    let (b, sq, sk, hq, hkv, d) = (2, 45, 61, 8, 2, 32);
    let inp = Inputs::dense(&mut rng, DType::F32, b, sq, sk, hq, hkv, d, d).with_alibi(hq);
    let cfg = AttentionConfig { causal: true, softcap: 4.0, rope: Some(rope(32, false)), ..Default::default() };
    let gqa = attention_cpu(&cfg, &inp.args()).unwrap();
    let repeat = |t: &Tensor| {
        let x = t.to_f32_vec();
        let mut y = Vec::with_capacity(x.len() * hq / hkv);
        for row in x.chunks_exact(hkv * d) {
            for h in 0..hq {
                y.extend_from_slice(&row[(h / (hq / hkv)) * d..][..d]);
            }
        }
        f32t(&[b, sk, hq, d], &y)
    };
    let (k2, v2) = (repeat(&inp.k), repeat(&inp.v));
    let args = AttentionArgs { k: &k2, v: &v2, ..inp.args() };
    let mha = attention_cpu(&cfg, &args).unwrap();
    assert_eq!(gqa.o, mha.o, "seed {}", rng.seed);
    assert_eq!(gqa.lse, mha.lse, "seed {}", rng.seed);
}

#[test]
fn varlen_equals_per_sequence_loop() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let (hq, hkv, d, dv) = (4, 2, 16, 19);
    // (q_len, k_len): includes an empty sequence, one with no keys, Sq > Sk and Sq < Sk.
    let lens = [(13usize, 13usize), (0, 5), (7, 0), (20, 9), (5, 70), (1, 1), (66, 66)];
    let total_q: usize = lens.iter().map(|l| l.0).sum();
    let total_k: usize = lens.iter().map(|l| l.1).sum();
    let mut cu_q = vec![0i32];
    let mut cu_k = vec![0i32];
    for &(a, b) in &lens {
        cu_q.push(cu_q.last().unwrap() + a as i32);
        cu_k.push(cu_k.last().unwrap() + b as i32);
    }
    for dtype in [DType::F32, DType::BF16] {
        let cfg = AttentionConfig { causal: true, window_left: 30, softcap: 5.0, rope: Some(yarn(16)), ..Default::default() };
        let pid_q: Vec<i32> = (0..total_q).map(|_| rng.below(3000) as i32).collect();
        let pid_k: Vec<i32> = (0..total_k).map(|_| rng.below(3000) as i32).collect();
        let inp = Inputs {
            q: randn(&mut rng, dtype, &[total_q, hq, d]),
            k: randn(&mut rng, dtype, &[total_k, hkv, d]),
            v: randn(&mut rng, dtype, &[total_k, hkv, dv]),
            alibi: Some(f32t(&[hq], &alibi_slopes(hq))),
            cu_q: Some(cu_q.clone()),
            cu_k: Some(cu_k.clone()),
            pid_q: Some(pid_q.clone()),
            pid_k: Some(pid_k.clone()),
        };
        compare(&format!("varlen {dtype}"), seed, &cfg, &inp);
        let all = attention_cpu(&cfg, &inp.args()).unwrap();
        assert_eq!(all.o.shape(), &[total_q, hq, dv]);
        assert_eq!(all.lse.shape(), &[hq, total_q]);
        let (o_all, lse_all) = (all.o.to_f64_vec(), all.lse.to_f64_vec());
        let (qv, kv, vv) = (inp.q.to_f32_vec(), inp.k.to_f32_vec(), inp.v.to_f32_vec());
        for (n, &(lq, lk)) in lens.iter().enumerate() {
            let (q0, k0) = (cu_q[n] as usize, cu_k[n] as usize);
            let q = Tensor::from_f32(dtype, &[1, lq, hq, d], &qv[q0 * hq * d..(q0 + lq) * hq * d]).unwrap();
            let k = Tensor::from_f32(dtype, &[1, lk, hkv, d], &kv[k0 * hkv * d..(k0 + lk) * hkv * d]).unwrap();
            let v = Tensor::from_f32(dtype, &[1, lk, hkv, dv], &vv[k0 * hkv * dv..(k0 + lk) * hkv * dv]).unwrap();
            let pq = &pid_q[q0..q0 + lq];
            let pk = &pid_k[k0..k0 + lk];
            let args = AttentionArgs::new(&q, &k, &v).with_alibi(inp.alibi.as_ref().unwrap()).with_positions(Some(pq), Some(pk));
            let one = attention_cpu(&cfg, &args).unwrap();
            let (o1, l1) = (one.o.to_f64_vec(), one.lse.to_f64_vec());
            assert_eq!(&o_all[q0 * hq * dv..(q0 + lq) * hq * dv], &o1[..], "seq {n} o (seed {seed})");
            for h in 0..hq {
                for i in 0..lq {
                    let (a, b) = (lse_all[h * total_q + q0 + i], l1[h * lq + i]);
                    assert!(a == b, "seq {n} lse h={h} i={i}: {a} vs {b} (seed {seed})");
                }
            }
        }
    }
}

#[test]
fn causal_alibi_lse_is_the_true_one() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    // Strong slopes so a dropped row-constant term would show; both causal and bidirectional.
    for causal in [true, false] {
        let mut inp = Inputs::dense(&mut rng, DType::F32, 1, 40, 90, 3, 3, 16, 16);
        inp.alibi = Some(f32t(&[3], &[0.9, 0.3, 0.05]));
        let cfg = AttentionConfig { causal, ..Default::default() };
        compare(&format!("alibi causal={causal}"), seed, &cfg, &inp);
        // And explicitly: lse_i = log sum_j exp(s_ij) with the bias -m |P(i) - j| (P(i) = i + 50).
        let out = attention_cpu(&cfg, &inp.args()).unwrap();
        let lse = out.lse.to_f64_vec();
        let (q, k) = (inp.q.to_f64_vec(), inp.k.to_f64_vec());
        let (i, h, m) = (7usize, 0usize, 0.9f64);
        let p = i as i64 + 50;
        let mut sum = 0f64;
        for j in 0..90i64 {
            if causal && j > p {
                continue;
            }
            let dot: f64 = (0..16).map(|c| q[(i * 3 + h) * 16 + c] * k[(j as usize * 3 + h) * 16 + c]).sum();
            sum += (dot / 4.0 - m * (p - j).abs() as f64).exp();
        }
        let want = sum.ln();
        assert!((lse[h * 40 + i] - want).abs() <= 1e-5 * want.abs().max(1.0), "lse {} vs {want} (seed {seed})", lse[h * 40 + i]);
    }
}

#[test]
fn alibi_slopes_press_rule() {
    let s8 = alibi_slopes(8);
    for (h, &m) in s8.iter().enumerate() {
        assert_eq!(m, 2f64.powf(-8.0 * (h + 1) as f64 / 8.0) as f32);
    }
    assert_eq!(s8[0], 0.5);
    assert_eq!(s8[7], 1.0 / 256.0);
    let s12 = alibi_slopes(12);
    assert_eq!(s12.len(), 12);
    for h in 0..8 {
        assert_eq!(s12[h], 2f64.powf(-8.0 * (h + 1) as f64 / 8.0) as f32);
    }
    for k in 1..=4 {
        // Every other slope of the 16 series: 2^(-8 (2k-1) / 16) = 2^(-(2k-1)/2).
        assert_eq!(s12[7 + k], 2f64.powf(-4.0 * (2 * k - 1) as f64 / 8.0) as f32);
    }
    assert!((s12[8] - 2f32.powf(-0.5)).abs() < 1e-7);
    assert_eq!(alibi_slopes(1), vec![2f32.powi(-8)]);
    assert!(alibi_slopes(0).is_empty());
}

#[test]
fn long_keys_8k_and_32k() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for (dtype, causal) in [(DType::F32, true), (DType::BF16, false)] {
        let cfg = AttentionConfig { causal, rope: Some(yarn(64)), ..Default::default() };
        let inp = Inputs::dense(&mut rng, dtype, 1, 96, 8192, 2, 1, 64, 64).with_alibi(2);
        compare(&format!("8k keys {dtype}"), seed, &cfg, &inp);
        let cfg = AttentionConfig { causal, ..Default::default() };
        let inp = Inputs::dense(&mut rng, dtype, 1, 64, 8192, 2, 2, 64, 64);
        compare(&format!("8k keys no alibi {dtype}"), seed, &cfg, &inp);
    }
    // The spec's longest attention: 32k keys, f32 bound, a few queries.
    let cfg = AttentionConfig { rope: Some(yarn(64)), softcap: 30.0, ..Default::default() };
    let inp = Inputs::dense(&mut rng, DType::F32, 1, 24, 32768, 1, 1, 64, 64).with_alibi(1);
    compare("32k keys f32", seed, &cfg, &inp);
}

#[test]
fn run_case_matches_oracle() {
    let mut rng = Rng::from_time();
    let (b, s, h, d) = (2, 33, 4, 16);
    let config = json!({
        "op": "attention", "causal": true, "softcap": 6.0, "window_left": 20,
        "rope": {"rotary_dim": 16, "theta": 10000.0, "scaling": {"rope_type": "linear", "factor": 2.0}},
    });
    let c = Case::new(config)
        .with("q", randn(&mut rng, DType::BF16, &[b, s, h, d]))
        .with("k", randn(&mut rng, DType::BF16, &[b, s, 2, d]))
        .with("v", randn(&mut rng, DType::BF16, &[b, s, 2, d]))
        .with("alibi_slopes", f32t(&[h], &alibi_slopes(h)))
        .with("position_ids_q", Tensor::from_i32(&[b, s], &(0..b * s).map(|x| (x % s) as i32 + 3).collect::<Vec<_>>()).unwrap());
    let out = case::run(&c, &Device::Cpu).unwrap();
    let reference = attn_kernels_harness::cases::attention::attention_oracle_case(&c).unwrap();
    for name in ["o", "lse"] {
        let e = rel_error(&out[name].to_f64_vec(), &reference[name]);
        assert!(e <= 1.5e-2, "{name}: {e} (seed {})", rng.seed);
    }
    assert_eq!(out["lse"].shape(), &[b, h, s]);
    // An unknown tensor name and a misspelt config key are rejected.
    let bad = c.clone().with("alibi", f32t(&[h], &alibi_slopes(h)));
    assert!(matches!(case::run(&bad, &Device::Cpu), Err(Error::Case(_))));
    let bad = Case { config: json!({"op": "attention", "casual": true}), inputs: c.inputs.clone() };
    assert!(matches!(case::run(&bad, &Device::Cpu), Err(Error::Config { .. })));
    // Position ids with a wrong shape for the dense layout.
    let bad = c.clone().with("position_ids_k", Tensor::from_i32(&[b * s], &vec![0; b * s]).unwrap());
    let e = case::run(&bad, &Device::Cpu).unwrap_err();
    assert_eq!(e.argument(), Some("position_ids_k"), "{e}");
}

fn err_of(cfg: &AttentionConfig, args: &AttentionArgs<'_, Tensor>) -> Error {
    match attention::plan(cfg, args) {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            // The CPU entry point fails the same way.
            assert_eq!(attention_cpu(cfg, args).unwrap_err(), e);
            e
        }
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut rng = Rng::from_time();
    let q = randn(&mut rng, DType::F32, &[2, 5, 4, 8]);
    let k = randn(&mut rng, DType::F32, &[2, 6, 2, 8]);
    let v = randn(&mut rng, DType::F32, &[2, 6, 2, 8]);
    let cfg = AttentionConfig::default();
    let ok = AttentionArgs::new(&q, &k, &v);
    attention::plan(&cfg, &ok).unwrap();

    let check = |e: Error, arg: &str, kind: ErrKind| assert_err(&e, kind, arg, "attention::plan");
    // Ranks and shapes.
    let q3 = randn(&mut rng, DType::F32, &[5, 4, 8]);
    check(err_of(&cfg, &AttentionArgs { q: &q3, ..ok }), "q", ErrKind::Shape);
    let k_b = randn(&mut rng, DType::F32, &[3, 6, 2, 8]);
    check(err_of(&cfg, &AttentionArgs { k: &k_b, ..ok }), "k", ErrKind::Shape);
    let k_d = randn(&mut rng, DType::F32, &[2, 6, 2, 16]);
    check(err_of(&cfg, &AttentionArgs { k: &k_d, ..ok }), "k", ErrKind::Shape);
    let v_s = randn(&mut rng, DType::F32, &[2, 7, 2, 8]);
    check(err_of(&cfg, &AttentionArgs { v: &v_s, ..ok }), "v", ErrKind::Shape);
    let v_h = randn(&mut rng, DType::F32, &[2, 6, 1, 8]);
    check(err_of(&cfg, &AttentionArgs { v: &v_h, ..ok }), "v", ErrKind::Shape);
    let k_h3 = randn(&mut rng, DType::F32, &[2, 6, 3, 8]);
    let v_h3 = randn(&mut rng, DType::F32, &[2, 6, 3, 8]);
    check(err_of(&cfg, &AttentionArgs { k: &k_h3, v: &v_h3, ..ok }), "k", ErrKind::Invalid);
    let q_d0 = randn(&mut rng, DType::F32, &[2, 5, 4, 0]);
    let k_d0 = randn(&mut rng, DType::F32, &[2, 6, 2, 0]);
    check(err_of(&cfg, &AttentionArgs { q: &q_d0, k: &k_d0, ..ok }), "q", ErrKind::Invalid);
    // Dtypes.
    let q_h = randn(&mut rng, DType::F16, &[2, 5, 4, 8]);
    check(err_of(&cfg, &AttentionArgs { q: &q_h, ..ok }), "k", ErrKind::DType);
    let v_b = randn(&mut rng, DType::BF16, &[2, 6, 2, 8]);
    check(err_of(&cfg, &AttentionArgs { v: &v_b, ..ok }), "v", ErrKind::DType);
    let q_i = Tensor::from_i32(&[2, 5, 4, 8], &vec![1; 320]).unwrap();
    check(err_of(&cfg, &AttentionArgs { q: &q_i, ..ok }), "q", ErrKind::DType);
    // ALiBi.
    let a3 = f32t(&[3], &[0.1, 0.2, 0.3]);
    check(err_of(&cfg, &ok.with_alibi(&a3)), "alibi_slopes", ErrKind::Shape);
    let a_h = Tensor::from_f32(DType::F16, &[4], &[0.1; 4]).unwrap();
    check(err_of(&cfg, &ok.with_alibi(&a_h)), "alibi_slopes", ErrKind::DType);
    // Options.
    check(err_of(&AttentionConfig { softcap: -1.0, ..Default::default() }, &ok), "softcap", ErrKind::Config);
    check(err_of(&AttentionConfig { softcap: f64::INFINITY, ..Default::default() }, &ok), "softcap", ErrKind::Config);
    check(err_of(&AttentionConfig { softmax_scale: Some(f64::NAN), ..Default::default() }, &ok), "softmax_scale", ErrKind::Config);
    check(err_of(&AttentionConfig { rope: Some(rope(10, false)), ..Default::default() }, &ok), "rope.rotary_dim", ErrKind::Config);
    check(err_of(&AttentionConfig { rope: Some(rope(7, false)), ..Default::default() }, &ok), "rope.rotary_dim", ErrKind::Config);
    // Position ids.
    let rcfg = AttentionConfig { rope: Some(rope(8, false)), ..Default::default() };
    let p10 = vec![0i32; 10];
    let p12 = vec![0i32; 12];
    attention::plan(&rcfg, &ok.with_positions(Some(&p10), Some(&p12))).unwrap();
    check(err_of(&rcfg, &ok.with_positions(Some(&p12), None)), "position_ids_q", ErrKind::Invalid);
    check(err_of(&rcfg, &ok.with_positions(None, Some(&p10))), "position_ids_k", ErrKind::Invalid);
    let neg = vec![0, 1, 2, -1, 3, 4, 5, 6, 7, 8];
    check(err_of(&rcfg, &ok.with_positions(Some(&neg), None)), "position_ids_q", ErrKind::Invalid);
    check(err_of(&cfg, &ok.with_positions(Some(&p10), None)), "position_ids_q", ErrKind::Invalid);
    // Varlen.
    let qv = randn(&mut rng, DType::F32, &[10, 4, 8]);
    let kv = randn(&mut rng, DType::F32, &[12, 2, 8]);
    let vv = randn(&mut rng, DType::F32, &[12, 2, 8]);
    let vl = AttentionArgs::new(&qv, &kv, &vv);
    let cq = [0, 4, 10];
    let ck = [0, 5, 12];
    attention::plan(&cfg, &vl.with_varlen(&cq, &ck)).unwrap();
    check(err_of(&cfg, &AttentionArgs { cu_seqlens_q: Some(&cq), ..vl }), "cu_seqlens_k", ErrKind::Invalid);
    check(err_of(&cfg, &AttentionArgs { cu_seqlens_k: Some(&ck), ..vl }), "cu_seqlens_q", ErrKind::Invalid);
    check(err_of(&cfg, &vl.with_varlen(&[0, 4, 9], &ck)), "cu_seqlens_q", ErrKind::Invalid);
    check(err_of(&cfg, &vl.with_varlen(&[1, 4, 10], &ck)), "cu_seqlens_q", ErrKind::Invalid);
    check(err_of(&cfg, &vl.with_varlen(&cq, &[0, 6, 5, 12])), "cu_seqlens_k", ErrKind::Invalid);
    check(err_of(&cfg, &vl.with_varlen(&cq, &[0, 12])), "cu_seqlens_k", ErrKind::Invalid);
    check(err_of(&cfg, &vl.with_varlen(&[0], &[0])), "cu_seqlens_q", ErrKind::Invalid);
    // Dense q with cu_seqlens: varlen needs rank 3.
    check(err_of(&cfg, &ok.with_varlen(&cq, &ck)), "q", ErrKind::Shape);
}

#[test]
fn empty_shapes() {
    let cfg = AttentionConfig { causal: true, ..Default::default() };
    let q = Tensor::zeros(DType::F32, &[0, 5, 2, 8]).unwrap();
    let k = Tensor::zeros(DType::F32, &[0, 6, 2, 8]).unwrap();
    let out = attention_cpu(&cfg, &AttentionArgs::new(&q, &k, &k)).unwrap();
    assert_eq!(out.o.shape(), &[0, 5, 2, 8]);
    assert_eq!(out.lse.shape(), &[0, 2, 5]);
    let q = Tensor::zeros(DType::F32, &[2, 0, 2, 8]).unwrap();
    let k = Tensor::zeros(DType::F32, &[2, 6, 2, 8]).unwrap();
    let out = attention_cpu(&cfg, &AttentionArgs::new(&q, &k, &k)).unwrap();
    assert_eq!(out.o.shape(), &[2, 0, 2, 8]);
    assert_eq!(out.lse.shape(), &[2, 2, 0]);
}
