//! CPU differential attention (spec section 3) against the naive float64 oracle, with fresh
//! random inputs every run (replay a failure with ATTN_KERNELS_SEED=<seed>).

mod common;

use attn_kernels::attention::{alibi_slopes, attention_cpu, AttentionArgs};
use attn_kernels::diff_attention::{
    diff_attention_cpu, oracle, plan_diff, DiffAttentionArgs, DiffAttentionConfig, DiffVariant,
};
use attn_kernels::tensor::{rel_error, DType, Tensor, TensorInfo};
use attn_kernels::Error;
use attn_kernels_harness::case::{self, Case, Device};
use attn_kernels_harness::cases::diff_attention::diff_attention_oracle_case;
use attn_kernels_harness::check::Rng;
use common::{f32t, pick_heads, randn, yarn};
use serde_json::json;

struct Inputs {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lambda: Tensor,
    norm: Option<Tensor>,
    alibi: Option<Tensor>,
}

impl Inputs {
    /// Dense inputs; `d` is the per-map head dim (v1: v has 2d; v2: v has d).
    #[allow(clippy::too_many_arguments)]
    fn new(rng: &mut Rng, variant: DiffVariant, dtype: DType, b: usize, sq: usize, sk: usize, h: usize, hkv: usize, d: usize) -> Inputs {
        let (k, v, lambda) = match variant {
            DiffVariant::V1 => (
                randn(rng, dtype, &[b, sk, 2 * hkv, d]),
                randn(rng, dtype, &[b, sk, hkv, 2 * d]),
                f32t(&[h], &rng.uniform_vec(h, 0.1, 0.9)),
            ),
            DiffVariant::V2 => (
                randn(rng, dtype, &[b, sk, hkv, d]),
                randn(rng, dtype, &[b, sk, hkv, d]),
                f32t(&[b, sq, h], &rng.uniform_vec(b * sq * h, 0.05, 0.95)),
            ),
        };
        Inputs { q: randn(rng, dtype, &[b, sq, 2 * h, d]), k, v, lambda, norm: None, alibi: None }
    }
    fn args(&self) -> DiffAttentionArgs<'_, Tensor> {
        DiffAttentionArgs {
            norm_weight: self.norm.as_ref(),
            alibi_slopes: self.alibi.as_ref(),
            ..DiffAttentionArgs::new(&self.q, &self.k, &self.v, &self.lambda)
        }
    }
}

fn compare_args(what: &str, seed: u64, cfg: &DiffAttentionConfig, args: &DiffAttentionArgs<'_, Tensor>) {
    let out = diff_attention_cpu(cfg, args).unwrap_or_else(|e| panic!("{what}: {e} (seed {seed})"));
    let r = oracle::diff_attention_f64(cfg, args).unwrap();
    let tol = 2.0 * args.q.dtype().rel_tolerance();
    assert_eq!(out.o.dtype(), args.q.dtype());
    let o = out.o.to_f64_vec();
    let eo = rel_error(&o, &r.o);
    let e1 = rel_error(&out.lse1.to_f64_vec(), &r.lse1);
    let e2 = rel_error(&out.lse2.to_f64_vec(), &r.lse2);
    if std::env::var("AK_VERBOSE").is_ok() {
        eprintln!("{what}: o {eo:.2e} lse1 {e1:.2e} lse2 {e2:.2e}");
    }
    assert!(eo <= tol, "{what}: o rel error {eo:.3e} > {tol:.1e} (seed {seed})");
    assert!(e1 <= 1e-5 && e2 <= 1e-5, "{what}: lse rel errors {e1:.3e} {e2:.3e} (seed {seed})");
    assert!(o.iter().all(|x| x.is_finite()), "{what}: non-finite o (seed {seed})");
    for (a, b) in out.lse1.to_f64_vec().iter().zip(&r.lse1).chain(out.lse2.to_f64_vec().iter().zip(&r.lse2)) {
        assert_eq!(*b == f64::NEG_INFINITY, *a == f64::NEG_INFINITY, "{what}: masked-row lse (seed {seed})");
    }
}

fn compare(what: &str, seed: u64, cfg: &DiffAttentionConfig, inp: &Inputs) {
    compare_args(what, seed, cfg, &inp.args());
}

#[test]
fn v1_with_and_without_norm() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for norm in [false, true] {
            for (causal, sq, sk) in [(true, 45, 45), (false, 31, 58), (true, 58, 31)] {
                let cfg = DiffAttentionConfig { causal, lambda_init: Some(0.8 - 0.6 * (-0.6f64).exp()), ..Default::default() };
                let mut inp = Inputs::new(&mut rng, DiffVariant::V1, dtype, 2, sq, sk, 4, 2, 24);
                if norm {
                    inp.norm = Some(f32t(&[48], &rng.uniform_vec(48, 0.5, 1.5)));
                }
                compare(&format!("v1 {dtype} norm={norm} causal={causal} {sq}x{sk}"), seed, &cfg, &inp);
            }
        }
    }
}

#[test]
fn v1_and_v2_with_every_attention_option() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for variant in [DiffVariant::V1, DiffVariant::V2] {
        for dtype in [DType::F32, DType::BF16] {
            let cfg = DiffAttentionConfig {
                variant,
                causal: true,
                window_left: 25,
                softcap: 4.0,
                softmax_scale: Some(0.2),
                rope: Some(yarn(16)),
                lambda_init: Some(0.2),
                ..Default::default()
            };
            let mut inp = Inputs::new(&mut rng, variant, dtype, 1, 70, 83, 4, 2, 32);
            inp.alibi = Some(f32t(&[4], &alibi_slopes(4)));
            if variant == DiffVariant::V1 {
                inp.norm = Some(f32t(&[64], &rng.uniform_vec(64, 0.5, 1.5)));
            }
            compare(&format!("{variant:?} {dtype} all options"), seed, &cfg, &inp);
            let cfg = DiffAttentionConfig { variant, window_left: 3, window_right: 4, lambda_init: Some(0.5), ..Default::default() };
            compare(&format!("{variant:?} {dtype} window"), seed, &cfg, &inp);
        }
    }
}

#[test]
fn v2_all_dtypes() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (h, hkv) in [(4, 4), (4, 2), (4, 1), (3, 1)] {
            let cfg = DiffAttentionConfig { variant: DiffVariant::V2, causal: true, ..Default::default() };
            let inp = Inputs::new(&mut rng, DiffVariant::V2, dtype, 2, 37, 41, h, hkv, 32);
            compare(&format!("v2 {dtype} h={h} hkv={hkv}"), seed, &cfg, &inp);
        }
    }
}

#[test]
fn fused_equals_two_attention_calls_plus_epilogue() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let (b, sq, sk, h, hkv, d) = (2, 29, 47, 6, 3, 16);
    for variant in [DiffVariant::V1, DiffVariant::V2] {
        let cfg = DiffAttentionConfig {
            variant,
            causal: true,
            softcap: 3.0,
            rope: Some(yarn(16)),
            lambda_init: Some(0.35),
            ..Default::default()
        };
        let mut inp = Inputs::new(&mut rng, variant, DType::F32, b, sq, sk, h, hkv, d);
        inp.alibi = Some(f32t(&[h], &alibi_slopes(h)));
        if variant == DiffVariant::V1 {
            inp.norm = Some(f32t(&[2 * d], &rng.uniform_vec(2 * d, 0.5, 1.5)));
        }
        let fused = diff_attention_cpu(&cfg, &inp.args()).unwrap();

        let even: Vec<usize> = (0..h).map(|x| 2 * x).collect();
        let odd: Vec<usize> = (0..h).map(|x| 2 * x + 1).collect();
        let (q1, q2) = (pick_heads(&inp.q, &even), pick_heads(&inp.q, &odd));
        let (k1, k2) = match variant {
            DiffVariant::V1 => {
                let ke: Vec<usize> = (0..hkv).map(|x| 2 * x).collect();
                let ko: Vec<usize> = (0..hkv).map(|x| 2 * x + 1).collect();
                (pick_heads(&inp.k, &ke), pick_heads(&inp.k, &ko))
            }
            DiffVariant::V2 => (inp.k.clone(), inp.k.clone()),
        };
        let acfg = cfg.attention_config();
        let a1 = attention_cpu(&acfg, &AttentionArgs::new(&q1, &k1, &inp.v).with_alibi(inp.alibi.as_ref().unwrap())).unwrap();
        let a2 = attention_cpu(&acfg, &AttentionArgs::new(&q2, &k2, &inp.v).with_alibi(inp.alibi.as_ref().unwrap())).unwrap();
        assert_eq!(a1.lse, fused.lse1, "{variant:?} lse1 (seed {seed})");
        assert_eq!(a2.lse, fused.lse2, "{variant:?} lse2 (seed {seed})");
        let (o1, o2) = (a1.o.to_f32_vec(), a2.o.to_f32_vec());
        let lam = inp.lambda.to_f32_vec();
        let dv = inp.v.shape()[3];
        let mut want = vec![0f32; o1.len()];
        for t in 0..b * sq {
            for hh in 0..h {
                let l = match variant {
                    DiffVariant::V1 => lam[hh],
                    DiffVariant::V2 => lam[t * h + hh],
                };
                let row = &mut want[(t * h + hh) * dv..][..dv];
                for c in 0..dv {
                    let i = (t * h + hh) * dv + c;
                    row[c] = o1[i] - l * o2[i];
                }
                if let Some(w) = &inp.norm {
                    let w = w.to_f32_vec();
                    let ms = row.iter().map(|x| x * x).sum::<f32>() / dv as f32;
                    let r = 1.0 / (ms + cfg.eps as f32).sqrt();
                    for c in 0..dv {
                        row[c] = row[c] * r * w[c] * (1.0 - 0.35);
                    }
                }
            }
        }
        let got = fused.o.to_f32_vec();
        let e = rel_error(&got.iter().map(|&x| x as f64).collect::<Vec<_>>(), &want.iter().map(|&x| x as f64).collect::<Vec<_>>());
        assert!(e <= 1e-6, "{variant:?}: fused vs two calls {e:.3e} (seed {seed})");
    }
}

#[test]
fn varlen_and_fully_masked_rows() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let (h, hkv, d) = (2, 1, 16);
    let lens = [(9usize, 9usize), (0, 4), (6, 0), (20, 7), (3, 40)];
    let total_q: usize = lens.iter().map(|l| l.0).sum();
    let total_k: usize = lens.iter().map(|l| l.1).sum();
    let mut cu_q = vec![0i32];
    let mut cu_k = vec![0i32];
    for &(a, b) in &lens {
        cu_q.push(cu_q.last().unwrap() + a as i32);
        cu_k.push(cu_k.last().unwrap() + b as i32);
    }
    let pid_q: Vec<i32> = (0..total_q).map(|_| rng.below(5000) as i32).collect();
    let pid_k: Vec<i32> = (0..total_k).map(|_| rng.below(5000) as i32).collect();
    for variant in [DiffVariant::V1, DiffVariant::V2] {
        let q = randn(&mut rng, DType::F16, &[total_q, 2 * h, d]);
        let (k, v, lambda) = match variant {
            DiffVariant::V1 => (
                randn(&mut rng, DType::F16, &[total_k, 2 * hkv, d]),
                randn(&mut rng, DType::F16, &[total_k, hkv, 2 * d]),
                f32t(&[h], &[0.3, 0.7]),
            ),
            DiffVariant::V2 => (
                randn(&mut rng, DType::F16, &[total_k, hkv, d]),
                randn(&mut rng, DType::F16, &[total_k, hkv, d]),
                f32t(&[total_q, h], &rng.uniform_vec(total_q * h, 0.1, 0.9)),
            ),
        };
        let w = f32t(&[2 * d], &rng.uniform_vec(2 * d, 0.5, 1.5));
        let mut args = DiffAttentionArgs::new(&q, &k, &v, &lambda).with_varlen(&cu_q, &cu_k).with_positions(Some(&pid_q), Some(&pid_k));
        if variant == DiffVariant::V1 {
            args = args.with_norm(&w);
        }
        let cfg = DiffAttentionConfig { variant, causal: true, rope: Some(yarn(16)), lambda_init: Some(0.5), ..Default::default() };
        compare_args(&format!("{variant:?} varlen"), seed, &cfg, &args);
        let out = diff_attention_cpu(&cfg, &args).unwrap();
        assert_eq!(out.lse1.shape(), &[h, total_q]);
        // Sequence 2 has no keys and sequence 3 has Sq > Sk: those rows are masked.
        let o = out.o.to_f64_vec();
        let dv = v.shape()[2];
        let lse1 = out.lse1.to_f64_vec();
        for (t, masked) in [(9usize, true), (14, true), (15, true), (15 + 12, true), (15 + 13, false)] {
            assert_eq!(lse1[t] == f64::NEG_INFINITY, masked, "{variant:?} row {t}");
            if masked {
                assert!(o[t * h * dv..(t + 1) * h * dv].iter().all(|&x| x == 0.0), "{variant:?} row {t} o");
            }
        }
    }
}

#[test]
fn run_case_matches_oracle() {
    let mut rng = Rng::from_time();
    let (b, s, h, d) = (1, 40, 2, 16);
    let c = Case::new(json!({"op": "diff_attention", "causal": true, "lambda_init": 0.2, "eps": 1e-6}))
        .with("q", randn(&mut rng, DType::BF16, &[b, s, 2 * h, d]))
        .with("k", randn(&mut rng, DType::BF16, &[b, s, 2, d]))
        .with("v", randn(&mut rng, DType::BF16, &[b, s, 1, 2 * d]))
        .with("lambda", f32t(&[h], &[0.4, 0.6]))
        .with("norm_weight", f32t(&[2 * d], &rng.uniform_vec(2 * d, 0.5, 1.5)));
    let out = case::run(&c, &Device::Cpu).unwrap();
    let r = diff_attention_oracle_case(&c).unwrap();
    for name in ["o", "lse1", "lse2"] {
        let e = rel_error(&out[name].to_f64_vec(), &r[name]);
        assert!(e <= 3e-2, "{name}: {e} (seed {})", rng.seed);
    }
    let bad = Case { config: json!({"op": "diff_attention", "variant": "v3"}), inputs: c.inputs.clone() };
    assert!(matches!(case::run(&bad, &Device::Cpu), Err(Error::Config { .. })));
    let mut no_lambda = c.clone();
    no_lambda.inputs.remove("lambda");
    assert!(matches!(case::run(&no_lambda, &Device::Cpu), Err(Error::Case(_))));
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut rng = Rng::from_time();
    let check = |r: Result<attn_kernels::diff_attention::DiffAttentionPlan, Error>, arg: &str, kind: &str| {
        let e = r.err().unwrap_or_else(|| panic!("expected an error naming {arg}"));
        assert_eq!(e.argument(), Some(arg), "{e}");
        let got = match e {
            Error::Shape { .. } => "shape",
            Error::DType { .. } => "dtype",
            Error::InvalidArgument { .. } => "invalid",
            Error::Config { .. } => "config",
            _ => "other",
        };
        assert_eq!(got, kind, "{e}");
    };
    let v1 = DiffAttentionConfig::default();
    let inp = Inputs::new(&mut rng, DiffVariant::V1, DType::F32, 1, 5, 6, 4, 2, 8);
    let ok = inp.args();
    plan_diff(&v1, &ok).unwrap();
    let t = |rng: &mut Rng, s: &[usize]| randn(rng, DType::F32, s);
    let q_odd = t(&mut rng, &[1, 5, 7, 8]);
    check(plan_diff(&v1, &DiffAttentionArgs { q: &q_odd, ..ok }), "q", "shape");
    let k_odd = t(&mut rng, &[1, 6, 3, 8]);
    check(plan_diff(&v1, &DiffAttentionArgs { k: &k_odd, ..ok }), "k", "shape");
    let v_h = t(&mut rng, &[1, 6, 4, 16]);
    check(plan_diff(&v1, &DiffAttentionArgs { v: &v_h, ..ok }), "v", "shape");
    let v_d = t(&mut rng, &[1, 6, 2, 8]);
    check(plan_diff(&v1, &DiffAttentionArgs { v: &v_d, ..ok }), "v", "shape");
    let (k3, v3) = (t(&mut rng, &[1, 6, 6, 8]), t(&mut rng, &[1, 6, 3, 16]));
    check(plan_diff(&v1, &DiffAttentionArgs { k: &k3, v: &v3, ..ok }), "k", "invalid");
    let vb = Tensor::from_f32(DType::BF16, &[1, 6, 2, 16], &[0.5; 192]).unwrap();
    check(plan_diff(&v1, &DiffAttentionArgs { v: &vb, ..ok }), "v", "dtype");
    let lam_h = Tensor::from_f32(DType::F16, &[4], &[0.5; 4]).unwrap();
    check(plan_diff(&v1, &DiffAttentionArgs { lambda: &lam_h, ..ok }), "lambda", "dtype");
    let lam_s = f32t(&[1, 5, 4], &[0.5; 20]);
    check(plan_diff(&v1, &DiffAttentionArgs { lambda: &lam_s, ..ok }), "lambda", "shape");
    let w = f32t(&[16], &[1.0; 16]);
    check(plan_diff(&v1, &ok.with_norm(&w)), "lambda_init", "config");
    let v1n = DiffAttentionConfig { lambda_init: Some(0.8), ..Default::default() };
    plan_diff(&v1n, &ok.with_norm(&w)).unwrap();
    let w8 = f32t(&[8], &[1.0; 8]);
    check(plan_diff(&v1n, &ok.with_norm(&w8)), "norm_weight", "shape");
    let wh = Tensor::from_f32(DType::BF16, &[16], &[1.0; 16]).unwrap();
    check(plan_diff(&v1n, &ok.with_norm(&wh)), "norm_weight", "dtype");
    check(plan_diff(&DiffAttentionConfig { eps: -1.0, ..v1n.clone() }, &ok), "eps", "config");
    check(plan_diff(&DiffAttentionConfig { lambda_init: Some(f64::NAN), ..v1n.clone() }, &ok), "lambda_init", "config");
    let a8 = f32t(&[8], &[0.1; 8]);
    check(plan_diff(&v1, &ok.with_alibi(&a8)), "alibi_slopes", "shape");
    check(plan_diff(&DiffAttentionConfig { softcap: -2.0, ..Default::default() }, &ok), "softcap", "config");
    let cq = [0, 5];
    check(plan_diff(&v1, &DiffAttentionArgs { cu_seqlens_q: Some(&cq), ..ok }), "q", "shape");

    // v2.
    let v2 = DiffAttentionConfig { variant: DiffVariant::V2, ..Default::default() };
    let inp2 = Inputs::new(&mut rng, DiffVariant::V2, DType::F32, 1, 5, 6, 4, 2, 8);
    let ok2 = inp2.args();
    plan_diff(&v2, &ok2).unwrap();
    let (k4, v4) = (t(&mut rng, &[1, 6, 8, 8]), t(&mut rng, &[1, 6, 8, 8]));
    check(plan_diff(&v2, &DiffAttentionArgs { k: &k4, v: &v4, ..ok2 }), "k", "invalid"); // 2H / Hkv = 1
    let (k3, v3) = (t(&mut rng, &[1, 6, 3, 8]), t(&mut rng, &[1, 6, 3, 8]));
    check(plan_diff(&v2, &DiffAttentionArgs { k: &k3, v: &v3, ..ok2 }), "k", "invalid");
    let v_w = t(&mut rng, &[1, 6, 2, 16]);
    check(plan_diff(&v2, &DiffAttentionArgs { v: &v_w, ..ok2 }), "v", "shape");
    let lam1 = f32t(&[4], &[0.5; 4]);
    check(plan_diff(&v2, &DiffAttentionArgs { lambda: &lam1, ..ok2 }), "lambda", "shape");
    let v2n = DiffAttentionConfig { lambda_init: Some(0.8), ..v2.clone() };
    check(plan_diff(&v2n, &ok2.with_norm(&w8)), "norm_weight", "invalid");
    // The CPU entry point returns the same errors.
    assert_eq!(diff_attention_cpu(&v1, &ok.with_norm(&w)).unwrap_err().argument(), Some("lambda_init"));
}
