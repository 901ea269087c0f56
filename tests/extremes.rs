//! Extremes: every op at the edges of its numeric range, on the CPU and, in the same
//! test, on the GPU when one is usable (`attn_kernels_harness::bench::gpu_for_test` prints why not).
//!
//! - attention logits of magnitude ~1e4 with softcap off;
//! - fully masked rows (`o = 0` exactly, `lse = -inf`);
//! - single-token sequences for every op;
//! - RoPE at positions around 2^20 (standalone and fused in attention);
//! - recurrences with decays of exactly 0 (`g = -inf`) and 1 (`g = 0`) over 64k steps;
//! - f16 inputs near the top of its range (|x| ~ 60000) where the true outputs stay in range.
//!
//! Each output is compared with the family's float64 oracle: finite wherever the reference is
//! finite, `-inf` exactly where it is `-inf`, and within the spec's relative bound for the
//! input dtype. Random inputs are fresh each run; every message prints the seed
//! (replay with `ATTN_KERNELS_SEED=<seed>`).

mod common;

use attn_kernels::attention::alibi_slopes;
use attn_kernels::tensor::rel_error;
use attn_kernels::{DType, Error, Result, TensorInfo};
use attn_kernels_harness::case::{self, Case, Device};
use attn_kernels_harness::check::{Reference, Rng};
use common::{devices, i32t, ids, normal_scaled, randn, randn_scaled, tensor, unit_rows, FLOATS};
use serde_json::{json, Value};

type Oracle = fn(&Case) -> Result<Reference>;

fn with_op(op: &str, mut config: Value) -> Value {
    config["op"] = json!(op);
    config
}

thread_local! {
    /// Failures of the current test (each test runs on its own thread): collected, so one test
    /// reports every failing op and output, not just the first.
    static FAILURES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn fail(msg: String) {
    FAILURES.with(|f| f.borrow_mut().push(msg));
}

/// Panic with every failure collected by this test's `verify` calls.
fn report(test: &str) {
    let fails = FAILURES.with(|f| std::mem::take(&mut *f.borrow_mut()));
    assert!(fails.is_empty(), "{test}: {} failure(s):\n{}", fails.len(), fails.join("\n"));
}

/// Run `case` on every device and compare every output with `oracle`; failures are collected
/// (see [`report`]).
#[allow(clippy::too_many_arguments)]
fn verify(test: &str, what: &str, case: &Case, dtype: DType, tol_factor: f64, oracle: Oracle, devs: &[Device], seed: u64) {
    let reference = match oracle(case) {
        Ok(r) => r,
        Err(e) => return fail(format!("{test} / {what}: oracle failed: {e} (seed {seed})")),
    };
    for dev in devs {
        let out = match case::run(case, dev) {
            Ok(o) => o,
            // Documented: the CUDA attention-family kernels take f16/bf16 only.
            Err(Error::Unsupported { arg, msg }) if matches!(dev, Device::Cuda(_)) && dtype == DType::F32 => {
                eprintln!("{test} / {what}: {} does not take f32 ({arg}: {msg}); skipped there", dev.name());
                continue;
            }
            Err(e) => {
                fail(format!("{test} / {what} on {}: {e} (seed {seed})", dev.name()));
                continue;
            }
        };
        for (name, want) in &reference {
            let Some(got) = out.get(name) else {
                fail(format!("{test} / {what} on {}: no output `{name}`", dev.name()));
                continue;
            };
            let got = got.to_f64_vec();
            if got.len() != want.len() {
                fail(format!("{test} / {what} on {}: `{name}` has {} elements, reference {}", dev.name(), got.len(), want.len()));
                continue;
            }
            let bad = got.iter().zip(want).enumerate().find(|(_, (g, w))| (w.is_finite() && !g.is_finite()) || (w.is_infinite() && g != w));
            if let Some((i, (g, w))) = bad {
                let n_bad = got.iter().zip(want).filter(|(g, w)| w.is_finite() && !g.is_finite()).count();
                fail(format!(
                    "{test} / {what} on {}: `{name}`[{i}] = {g} where the reference is {w} ({n_bad} non-finite where the reference is finite) (seed {seed})",
                    dev.name()
                ));
                continue;
            }
            let rel = rel_error(&got, want);
            let tol = dtype.rel_tolerance() * tol_factor;
            if rel > tol {
                fail(format!("{test} / {what} on {}: `{name}` rel error {rel:e} > {tol:e} (dtype {dtype}, seed {seed})", dev.name()));
            }
        }
    }
}

/// An attention case `q [b, sq, hq, d]`, `k, v [b, sk, hkv, d]`.
#[allow(clippy::too_many_arguments)]
fn attention_case(rng: &mut Rng, dt: DType, config: Value, b: usize, sq: usize, sk: usize, hq: usize, hkv: usize, d: usize, qk_scale: f32, v_scale: f32) -> Case {
    Case::new(with_op("attention", config))
        .with("q", randn_scaled(rng, dt, &[b, sq, hq, d], qk_scale))
        .with("k", randn_scaled(rng, dt, &[b, sk, hkv, d], qk_scale))
        .with("v", randn_scaled(rng, dt, &[b, sk, hkv, d], v_scale))
}

#[test]
fn attention_logits_of_magnitude_1e4_softcap_off() {
    let devs = devices("attention_logits_of_magnitude_1e4_softcap_off");
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for dt in FLOATS {
        for config in [json!({}), json!({"causal": true}), json!({"causal": true, "window_left": 5})] {
            // q, k ~ N(0, 60^2), D = 64: scaled logits have a standard deviation of ~3600, so
            // the largest reach ~1e4.
            let case = attention_case(&mut rng, dt, config.clone(), 2, 33, 47, 4, 2, 64, 60.0, 1.0);
            let o = attn_kernels_harness::cases::attention::attention_oracle_case(&case).expect("oracle");
            let max_lse = o["lse"].iter().copied().filter(|x| x.is_finite()).fold(0f64, |m, x| m.max(x.abs()));
            assert!(max_lse > 3e3, "the test must reach logits of ~1e4, max |lse| = {max_lse} (seed {seed})");
            verify("logits_1e4", &format!("{dt} {config}"), &case, dt, 1.0, attn_kernels_harness::cases::attention::attention_oracle_case, &devs, seed);
        }
    }
    report("attention_logits_of_magnitude_1e4_softcap_off");
}

/// Rows whose reference lse is -inf must have o == 0 exactly.
fn assert_masked_rows_zero(case: &Case, devs: &[Device], seed: u64) {
    let reference = attn_kernels_harness::cases::attention::attention_oracle_case(case).expect("oracle");
    let n_masked = reference["lse"].iter().filter(|x| **x == f64::NEG_INFINITY).count();
    assert!(n_masked > 0, "the case must contain fully masked rows (seed {seed})");
    for dev in devs {
        let Ok(out) = case::run(case, dev) else { continue };
        let o = out["o"].to_f64_vec();
        let want = &reference["o"];
        for (i, (&g, &w)) in o.iter().zip(want).enumerate() {
            if w == 0.0 {
                assert_eq!(g, 0.0, "o[{i}] of a fully masked row is {g} on {} (seed {seed})", dev.name());
            }
        }
    }
}

#[test]
fn attention_fully_masked_rows() {
    let devs = devices("attention_fully_masked_rows");
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for dt in FLOATS {
        // Causal with Sq > Sk: the first Sq - Sk rows see no key (P(i) < 0).
        let causal = attention_case(&mut rng, dt, json!({"causal": true}), 2, 20, 12, 4, 2, 64, 1.0, 1.0);
        // A window that excludes every key of some rows: window_right = -1, window_left = 0 with
        // causal keeps only j == P(i), which does not exist for P(i) < 0.
        let window = attention_case(&mut rng, dt, json!({"causal": true, "window_left": 0}), 1, 9, 4, 2, 1, 64, 1.0, 1.0);
        // ALiBi and softcap do not change which rows are masked.
        let alibi = attention_case(&mut rng, dt, json!({"causal": true, "softcap": 30.0}), 1, 17, 3, 4, 4, 64, 1.0, 1.0)
            .with("alibi_slopes", tensor(DType::F32, &[4], &alibi_slopes(4)));
        // Varlen with an empty key sequence (every row of sequence 0 is masked).
        let (tq, tk) = (5usize, 6usize);
        let varlen = Case::new(json!({"op": "attention"}))
            .with("q", randn(&mut rng, dt, &[tq, 2, 64]))
            .with("k", randn(&mut rng, dt, &[tk, 1, 64]))
            .with("v", randn(&mut rng, dt, &[tk, 1, 64]))
            .with("cu_seqlens_q", ids(&[0, 3, 5]))
            .with("cu_seqlens_k", ids(&[0, 0, 6]));
        for (what, case) in [("causal Sq > Sk", causal), ("window", window), ("alibi softcap", alibi), ("varlen empty keys", varlen)] {
            verify("fully_masked", &format!("{dt} {what}"), &case, dt, 1.0, attn_kernels_harness::cases::attention::attention_oracle_case, &devs, seed);
            if dt != DType::F32 {
                assert_masked_rows_zero(&case, &devs, seed);
            } else {
                assert_masked_rows_zero(&case, &devs[..1], seed);
            }
        }
    }
    report("attention_fully_masked_rows");
}

#[test]
fn single_token_sequences() {
    let devs = devices("single_token_sequences");
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for dt in FLOATS {
        let dense = attention_case(&mut rng, dt, json!({"causal": true}), 3, 1, 1, 4, 2, 64, 1.0, 1.0);
        verify("single_token", &format!("attention dense {dt}"), &dense, dt, 1.0, attn_kernels_harness::cases::attention::attention_oracle_case, &devs, seed);
        let varlen = Case::new(json!({"op": "attention", "causal": true}))
            .with("q", randn(&mut rng, dt, &[3, 2, 64]))
            .with("k", randn(&mut rng, dt, &[3, 2, 64]))
            .with("v", randn(&mut rng, dt, &[3, 2, 64]))
            .with("cu_seqlens_q", ids(&[0, 1, 2, 3]))
            .with("cu_seqlens_k", ids(&[0, 1, 2, 3]));
        verify("single_token", &format!("attention varlen {dt}"), &varlen, dt, 1.0, attn_kernels_harness::cases::attention::attention_oracle_case, &devs, seed);
        let diff = Case::new(json!({"op": "diff_attention", "causal": true}))
            .with("q", randn(&mut rng, dt, &[2, 1, 4, 64]))
            .with("k", randn(&mut rng, dt, &[2, 1, 2, 64]))
            .with("v", randn(&mut rng, dt, &[2, 1, 1, 128]))
            .with("lambda", tensor(DType::F32, &[2], &[0.3, 0.7]));
        verify("single_token", &format!("diff_attention {dt}"), &diff, dt, 2.0, attn_kernels_harness::cases::diff_attention::diff_attention_oracle_case, &devs, seed);
        let decode = Case::new(json!({"op": "decode_attention"}))
            .with("q", randn(&mut rng, dt, &[2, 1, 4, 64]))
            .with("k_cache", randn(&mut rng, dt, &[2, 3, 2, 64]))
            .with("v_cache", randn(&mut rng, dt, &[2, 3, 2, 64]))
            .with("cache_seqlens", ids(&[1, 1]));
        verify("single_token", &format!("decode {dt}"), &decode, dt, 1.0, attn_kernels_harness::cases::decode::decode_oracle_case, &devs, seed);
        let rope = Case::new(json!({"op": "rope", "rope": {"rotary_dim": 64}, "position_offset": 7}))
            .with("x", randn(&mut rng, dt, &[1, 1, 2, 64]));
        verify("single_token", &format!("rope {dt}"), &rope, dt, 1.0, attn_kernels_harness::cases::rope::rope_oracle_case, &devs, seed);
        let (h, k, v) = (2usize, 16usize, 16usize);
        let lin = Case::new(json!({"op": "linear_attention"}))
            .with("q", randn(&mut rng, dt, &[3, 1, h, k]))
            .with("k", randn(&mut rng, dt, &[3, 1, h, k]))
            .with("v", randn(&mut rng, dt, &[3, 1, h, v]))
            .with("g", tensor(DType::F32, &[3, 1, h, k], &rng.uniform_vec(3 * h * k, -1.0, 0.0)))
            .with("initial_state", randn(&mut rng, DType::F32, &[3, h, k, v]));
        verify("single_token", &format!("linear_attention {dt}"), &lin, dt, 1.0, attn_kernels_harness::cases::linear::linear_attention_oracle_case, &devs, seed);
        let kk: Vec<f32> = normal_scaled(&mut rng, h * k, 0.25);
        let delta = Case::new(json!({"op": "delta_rule"}))
            .with("q", randn(&mut rng, dt, &[1, 1, h, k]))
            .with("k", tensor(dt, &[1, 1, h, k], &kk))
            .with("v", randn(&mut rng, dt, &[1, 1, h, v]))
            .with("a", tensor(dt, &[1, 1, h, k], &kk.iter().map(|x| -x).collect::<Vec<_>>()))
            .with("b", tensor(dt, &[1, 1, h, k], &kk.iter().map(|x| 0.5 * x).collect::<Vec<_>>()))
            .with("initial_state", randn(&mut rng, DType::F32, &[1, h, k, v]));
        verify("single_token", &format!("delta_rule {dt}"), &delta, dt, 1.0, attn_kernels_harness::cases::linear::delta_rule_oracle_case, &devs, seed);
        let c = 40usize;
        let rwkv = Case::new(json!({"op": "rwkv4"}))
            .with("k", randn_scaled(&mut rng, dt, &[2, 1, c], 2.0))
            .with("v", randn(&mut rng, dt, &[2, 1, c]))
            .with("w", tensor(DType::F32, &[c], &rng.uniform_vec(c, -3.0, 0.0)))
            .with("u", tensor(DType::F32, &[c], &rng.uniform_vec(c, -1.0, 1.0)));
        verify("single_token", &format!("rwkv4 {dt}"), &rwkv, dt, 1.0, attn_kernels_harness::cases::linear::rwkv4_oracle_case, &devs, seed);
    }
    report("single_token_sequences");
}

#[test]
fn rope_at_position_2_pow_20() {
    let devs = devices("rope_at_position_2_pow_20");
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let p20 = 1i64 << 20;
    let scalings = [
        json!(null),
        json!({"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 32768}),
        json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    ];
    for dt in FLOATS {
        for scaling in &scalings {
            let rope = json!({"rotary_dim": 64, "theta": 500000.0, "max_position_embeddings": 1 << 21, "scaling": scaling});
            // Standalone, rows at 2^20 - 16 .. 2^20 - 1.
            let s = 16usize;
            let case = Case::new(json!({"op": "rope", "rope": rope, "position_offset": p20 - s as i64}))
                .with("x", randn(&mut rng, dt, &[2, s, 3, 128]));
            verify("rope_2^20", &format!("offset {dt} {scaling}"), &case, dt, 1.0, attn_kernels_harness::cases::rope::rope_oracle_case, &devs, seed);
            // Explicit position ids at and just beyond 2^20.
            let pos: Vec<i32> = vec![(p20 - 1) as i32, p20 as i32, (p20 + 1) as i32, (p20 + 4097) as i32, 0, (p20 / 2 + 3) as i32];
            let case = Case::new(json!({"op": "rope", "rope": rope}))
                .with("x", randn(&mut rng, dt, &[pos.len(), 2, 64]))
                .with("position_ids", ids(&pos));
            verify("rope_2^20", &format!("ids {dt} {scaling}"), &case, dt, 1.0, attn_kernels_harness::cases::rope::rope_oracle_case, &devs, seed);
            // Fused in attention, with query and key positions near 2^20.
            let (sq, sk) = (12usize, 40usize);
            let pq: Vec<i32> = (0..sq).map(|i| (p20 - sq as i64 + i as i64) as i32).collect();
            let pk: Vec<i32> = (0..sk).map(|j| (p20 - sk as i64 + j as i64) as i32).collect();
            let case = attention_case(&mut rng, dt, json!({"causal": true, "rope": rope}), 1, sq, sk, 4, 2, 64, 1.0, 1.0)
                .with("position_ids_q", i32t(&[1, sq], &pq))
                .with("position_ids_k", i32t(&[1, sk], &pk));
            verify("rope_2^20", &format!("fused attention {dt} {scaling}"), &case, dt, 1.0, attn_kernels_harness::cases::attention::attention_oracle_case, &devs, seed);
        }
    }
    report("rope_at_position_2_pow_20");
}

const STEPS: usize = 1 << 16;
/// The recurrences' length on the emulated device, which runs every CUDA thread on the CPU: the
/// CPU paths keep [`STEPS`].
const EMULATED_STEPS: usize = 1 << 12;

/// `(devices, steps)` runs of a long-recurrence test: all devices over [`STEPS`], except that an
/// emulated device gets its own shorter run.
fn step_runs(devs: &[Device]) -> Vec<(Vec<Device>, usize)> {
    let emulated = |d: &Device| matches!(d, Device::Cuda(g) if g.info().emulated);
    if devs.iter().any(emulated) {
        let (emu, rest): (Vec<Device>, Vec<Device>) = devs.iter().cloned().partition(emulated);
        vec![(rest, STEPS), (emu, EMULATED_STEPS)] // emulated: 4096 steps instead of 65536
    } else {
        vec![(devs.to_vec(), STEPS)]
    }
}

/// `(what, g)` for a decay of exactly 0 and exactly 1.
const DECAYS: [(&str, f32); 2] = [("decay 1 (g = 0)", 0.0), ("decay 0 (g = -inf)", f32::NEG_INFINITY)];

#[test]
fn linear_attention_decay_exactly_0_and_1_over_64k_steps() {
    let all_devs = devices("linear_attention_decay_exactly_0_and_1_over_64k_steps");
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for (devs, t) in step_runs(&all_devs) {
        let (h, k, v) = (2usize, 8usize, 8usize);
        for dt in [DType::F32, DType::BF16] {
            for (what, g) in DECAYS {
                let q = randn(&mut rng, dt, &[1, t, h, k]);
                let kt = randn_scaled(&mut rng, dt, &[1, t, h, k], 0.1);
                let vt = randn(&mut rng, dt, &[1, t, h, v]);
                for g_shape in [vec![h], vec![1, t, h]] {
                    let n: usize = g_shape.iter().product();
                    let lin = Case::new(json!({"op": "linear_attention"}))
                        .with("q", q.clone())
                        .with("k", kt.clone())
                        .with("v", vt.clone())
                        .with("g", tensor(DType::F32, &g_shape, &vec![g; n]));
                    verify("64k", &format!("linear_attention {dt} {what} g{g_shape:?}"), &lin, dt, 1.0, attn_kernels_harness::cases::linear::linear_attention_oracle_case, &devs, seed);
                }
                // Bonus (RWKV-5/6) form with the same decay.
                let lin_u = Case::new(json!({"op": "linear_attention", "scale": 1.0}))
                    .with("q", q)
                    .with("k", kt)
                    .with("v", vt)
                    .with("g", tensor(DType::F32, &[h, k], &vec![g; h * k]))
                    .with("u", tensor(DType::F32, &[h, k], &rng.uniform_vec(h * k, -1.0, 1.0)));
                verify("64k", &format!("linear_attention bonus {dt} {what}"), &lin_u, dt, 1.0, attn_kernels_harness::cases::linear::linear_attention_oracle_case, &devs, seed);
            }
        }
    }
    report("linear_attention_decay_exactly_0_and_1_over_64k_steps");
}

#[test]
fn delta_rule_decay_exactly_0_and_1_over_64k_steps() {
    let all_devs = devices("delta_rule_decay_exactly_0_and_1_over_64k_steps");
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for (devs, t) in step_runs(&all_devs) {
        let (h, k, v) = (2usize, 8usize, 8usize);
        for dt in [DType::F32, DType::BF16] {
            for (what, g) in DECAYS {
                // Gated DeltaNet: unit-norm keys, a = -k, b = beta k.
                let kn = unit_rows(&rng.normal_vec(t * h * k), k);
                let beta = rng.uniform_vec(t * h, 0.0, 1.0);
                let bvals: Vec<f32> = kn.iter().enumerate().map(|(i, x)| x * beta[i / k]).collect();
                let delta = Case::new(json!({"op": "delta_rule"}))
                    .with("q", randn(&mut rng, dt, &[1, t, h, k]))
                    .with("k", tensor(dt, &[1, t, h, k], &kn))
                    .with("v", randn(&mut rng, dt, &[1, t, h, v]))
                    .with("a", tensor(dt, &[1, t, h, k], &kn.iter().map(|x| -x).collect::<Vec<_>>()))
                    .with("b", tensor(dt, &[1, t, h, k], &bvals))
                    .with("g", tensor(DType::F32, &[1, t, h], &vec![g; t * h]));
                verify("64k", &format!("delta_rule {dt} {what}"), &delta, dt, 1.0, attn_kernels_harness::cases::linear::delta_rule_oracle_case, &devs, seed);
            }
        }
    }
    report("delta_rule_decay_exactly_0_and_1_over_64k_steps");
}

#[test]
fn rwkv4_decay_exactly_0_and_1_over_64k_steps() {
    let all_devs = devices("rwkv4_decay_exactly_0_and_1_over_64k_steps");
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for (devs, t) in step_runs(&all_devs) {
        let c = 16usize;
        for dt in [DType::F32, DType::BF16] {
            for (what, w) in DECAYS {
                // w = -inf forgets everything each step, w = 0 nothing.
                let rwkv = Case::new(json!({"op": "rwkv4"}))
                    .with("k", randn_scaled(&mut rng, dt, &[1, t, c], 3.0))
                    .with("v", randn(&mut rng, dt, &[1, t, c]))
                    .with("w", tensor(DType::F32, &[c], &vec![w; c]))
                    .with("u", tensor(DType::F32, &[c], &rng.uniform_vec(c, -1.0, 1.0)));
                verify("64k", &format!("rwkv4 {dt} {what}"), &rwkv, dt, 1.0, attn_kernels_harness::cases::linear::rwkv4_oracle_case, &devs, seed);
            }
        }
    }
    report("rwkv4_decay_exactly_0_and_1_over_64k_steps");
}

/// Values of magnitude in [0.5, 1] * `top`, random signs.
fn near_top(rng: &mut Rng, n: usize, top: f32) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(0.5, 1.0) * top * if rng.below(2) == 0 { -1.0 } else { 1.0 }).collect()
}

#[test]
fn f16_inputs_near_the_top_of_its_range() {
    let devs = devices("f16_inputs_near_the_top_of_its_range");
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let dt = DType::F16;
    let top = 60000.0f32;
    // Attention: q, k, v all near 60000 (logits ~1e10 in f32; o is a convex combination of v).
    let (b, sq, sk, hq, hkv, d) = (1usize, 19usize, 29usize, 4usize, 2usize, 64usize);
    for config in [json!({}), json!({"causal": true})] {
        let case = Case::new(with_op("attention", config.clone()))
            .with("q", tensor(dt, &[b, sq, hq, d], &near_top(&mut rng, b * sq * hq * d, top)))
            .with("k", tensor(dt, &[b, sk, hkv, d], &near_top(&mut rng, b * sk * hkv * d, top)))
            .with("v", tensor(dt, &[b, sk, hkv, d], &near_top(&mut rng, b * sk * hkv * d, top)));
        verify("f16_top", &format!("attention {config}"), &case, dt, 1.0, attn_kernels_harness::cases::attention::attention_oracle_case, &devs, seed);
    }
    // Decode against a cache near the top of the range.
    let decode = Case::new(json!({"op": "decode_attention"}))
        .with("q", tensor(dt, &[2, 1, 4, 64], &near_top(&mut rng, 2 * 4 * 64, top)))
        .with("k_cache", tensor(dt, &[2, 37, 2, 64], &near_top(&mut rng, 2 * 37 * 2 * 64, top)))
        .with("v_cache", tensor(dt, &[2, 37, 2, 64], &near_top(&mut rng, 2 * 37 * 2 * 64, top)))
        .with("cache_seqlens", ids(&[37, 20]));
    verify("f16_top", "decode", &decode, dt, 1.0, attn_kernels_harness::cases::decode::decode_oracle_case, &devs, seed);
    // Differential attention: |O| <= (1 + lambda) max |v| = 63000 < 65504.
    let diff = Case::new(json!({"op": "diff_attention", "causal": true}))
        .with("q", tensor(dt, &[1, 13, 4, 64], &near_top(&mut rng, 13 * 4 * 64, top)))
        .with("k", tensor(dt, &[1, 13, 2, 64], &near_top(&mut rng, 13 * 2 * 64, top)))
        .with("v", tensor(dt, &[1, 13, 1, 128], &near_top(&mut rng, 13 * 128, top)))
        .with("lambda", tensor(DType::F32, &[2], &[0.05, 0.01]));
    verify("f16_top", "diff_attention", &diff, dt, 2.0, attn_kernels_harness::cases::diff_attention::diff_attention_oracle_case, &devs, seed);
    // RoPE: each rotated pair has norm <= 60000, so the rotation stays in range.
    let (rows, heads, hd, rd) = (9usize, 2usize, 128usize, 64usize);
    let mut x = near_top(&mut rng, rows * heads * hd, top);
    for r in 0..rows * heads {
        for i in 0..rd / 2 {
            let (rad, th) = (rng.uniform(0.5, 1.0) * top, rng.uniform(0.0, std::f32::consts::TAU));
            x[r * hd + i] = rad * th.cos();
            x[r * hd + i + rd / 2] = rad * th.sin();
        }
    }
    let rope = Case::new(json!({"op": "rope", "rope": {"rotary_dim": rd, "theta": 10000.0}, "position_offset": 1000}))
        .with("x", tensor(dt, &[rows, heads, hd], &x));
    verify("f16_top", "rope", &rope, dt, 1.0, attn_kernels_harness::cases::rope::rope_oracle_case, &devs, seed);
    // Linear attention: v near 60000 with small q, k, so o stays well inside the range.
    let (t, h, k, v) = (16usize, 2usize, 8usize, 8usize);
    let lin = Case::new(json!({"op": "linear_attention"}))
        .with("q", randn_scaled(&mut rng, dt, &[1, t, h, k], 0.01))
        .with("k", randn_scaled(&mut rng, dt, &[1, t, h, k], 0.01))
        .with("v", tensor(dt, &[1, t, h, v], &near_top(&mut rng, t * h * v, top)))
        .with("g", tensor(DType::F32, &[h], &[-0.1, 0.0]));
    verify("f16_top", "linear_attention", &lin, dt, 1.0, attn_kernels_harness::cases::linear::linear_attention_oracle_case, &devs, seed);
    // RWKV-4: y is a weighted average of v.
    let c = 24usize;
    let rwkv = Case::new(json!({"op": "rwkv4"}))
        .with("k", randn_scaled(&mut rng, dt, &[2, t, c], 3.0))
        .with("v", tensor(dt, &[2, t, c], &near_top(&mut rng, 2 * t * c, top)))
        .with("w", tensor(DType::F32, &[c], &rng.uniform_vec(c, -2.0, 0.0)))
        .with("u", tensor(DType::F32, &[c], &rng.uniform_vec(c, -1.0, 1.0)));
    verify("f16_top", "rwkv4", &rwkv, dt, 1.0, attn_kernels_harness::cases::linear::rwkv4_oracle_case, &devs, seed);
    // merge_states: the merged o is a convex combination of the two.
    let (mb, ms, mh, mdv) = (2usize, 5usize, 3usize, 64usize);
    let merge = Case::new(json!({"op": "merge_states"}))
        .with("o_a", tensor(dt, &[mb, ms, mh, mdv], &near_top(&mut rng, mb * ms * mh * mdv, top)))
        .with("o_b", tensor(dt, &[mb, ms, mh, mdv], &near_top(&mut rng, mb * ms * mh * mdv, top)))
        .with("lse_a", randn_scaled(&mut rng, DType::F32, &[mb, mh, ms], 3.0))
        .with("lse_b", randn_scaled(&mut rng, DType::F32, &[mb, mh, ms], 3.0));
    verify("f16_top", "merge_states", &merge, dt, 1.0, attn_kernels_harness::cases::decode::merge_oracle_case, &devs, seed);
    report("f16_inputs_near_the_top_of_its_range");
}

/// Where the true f16 result itself overflows (a rotated pair of norm ~85000 > 65504), only
/// "no panic" is asserted: the output rounds to inf as IEEE rounding does.
#[test]
fn f16_overflowing_results_do_not_panic() {
    let x = tensor(DType::F16, &[1, 1, 1, 4], &[60000.0, 60000.0, 60000.0, 60000.0]);
    let case = Case::new(json!({"op": "rope", "rope": {"rotary_dim": 4}, "position_offset": 1})).with("x", x);
    let r = std::panic::catch_unwind(|| case::run(&case, &Device::Cpu));
    assert!(r.is_ok(), "rope on f16 values whose rotation overflows panicked");
    let _ = r.map(|out| out.map(|o| o["y"].numel()));
}
