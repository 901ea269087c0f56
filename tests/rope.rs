//! RoPE: frequencies and attention factors of real model configs against formulas written out
//! here from the published sources, rotation against a float64 scalar evaluation, positions up
//! to 2^20, and every bad-input path.

mod common;

use attn_kernels::rope::{plan_rope, rope_cpu, rope_cpu_inplace, RopeArgs, RopeConfig, RopeOpConfig};
use attn_kernels::tensor::{rel_error, DType, Tensor, TensorInfo};
use attn_kernels::Error;
use attn_kernels_harness::check::Rng;
use common::{expect_err, ErrKind};
use serde_json::json;
use std::f64::consts::PI;

fn cfg(v: serde_json::Value) -> RopeConfig {
    serde_json::from_value(v).expect("valid rope config JSON")
}

fn assert_freqs(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(((g - w) / w).abs() < 1e-12, "f[{i}]: got {g}, want {w}");
    }
}

/// theta^(-2i/d) written as 1 / theta^(2i/d), as in the Hugging Face utilities.
fn base_freqs(theta: f64, d: usize) -> Vec<f64> {
    (0..d).step_by(2).map(|j| 1.0 / theta.powf(j as f64 / d as f64)).collect()
}

#[test]
fn llama_3_1_8b() {
    // meta-llama/Llama-3.1-8B config.json: rope_theta 500000, head_dim 128.
    let c = cfg(json!({"rotary_dim": 128, "theta": 500000.0, "max_position_embeddings": 131072,
        "scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192, "rope_type": "llama3"}}));
    let r = c.resolve(10).unwrap();
    // Meta's apply_scaling: wavelengths below 8192/4 keep their frequency, above 8192/1 are
    // divided by 8, and between the two are blended by how far the wavelength sits.
    let want: Vec<f64> = base_freqs(500000.0, 128)
        .into_iter()
        .map(|f| {
            let wavelen = 2.0 * PI / f;
            if wavelen < 8192.0 / 4.0 {
                f
            } else if wavelen > 8192.0 / 1.0 {
                f / 8.0
            } else {
                let smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
                (1.0 - smooth) * f / 8.0 + smooth * f
            }
        })
        .collect();
    assert_freqs(&r.inv_freq, &want);
    assert_eq!(r.attention_factor, 1.0);
    // Sanity: the highest frequency is untouched, the lowest divided by the factor.
    assert_eq!(r.inv_freq[0], 1.0);
    assert!((r.inv_freq[63] * 8.0 - base_freqs(500000.0, 128)[63]).abs() < 1e-18);
}

/// YaRN (Peng et al. 2023), written from the paper: dims whose wavelength fits more than
/// beta_fast rotations in L0 keep their frequency, fewer than beta_slow are interpolated by s.
fn yarn_reference(theta: f64, d: usize, s: f64, l0: f64, truncate: bool) -> Vec<f64> {
    let dim_for_rotations = |r: f64| (d as f64) * (l0 / (r * 2.0 * PI)).ln() / (2.0 * theta.ln());
    let mut low = dim_for_rotations(32.0);
    let mut high = dim_for_rotations(1.0);
    if truncate {
        low = low.floor();
        high = high.ceil();
    }
    let low = low.max(0.0);
    let mut high = high.min(d as f64 - 1.0);
    if (high - low).abs() == 0.0 {
        high += 0.001;
    }
    base_freqs(theta, d)
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let gamma = 1.0 - ((i as f64 - low) / (high - low)).clamp(0.0, 1.0); // 1: extrapolate
            f * gamma + (f / s) * (1.0 - gamma)
        })
        .collect()
}

#[test]
fn qwen2_5_yarn() {
    // Qwen2.5-7B-Instruct's documented long-context setting.
    let c = cfg(json!({"rotary_dim": 128, "theta": 1000000.0, "max_position_embeddings": 32768,
        "scaling": {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"}}));
    let r = c.resolve(1).unwrap();
    assert_freqs(&r.inv_freq, &yarn_reference(1e6, 128, 4.0, 32768.0, true));
    assert!((r.attention_factor - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-15);
}

#[test]
fn gpt_oss_yarn_without_truncation() {
    // gpt-oss config: head_dim 64, rope_theta 150000, truncate false.
    let c = cfg(json!({"rotary_dim": 64, "theta": 150000.0, "max_position_embeddings": 131072,
        "scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                    "truncate": false, "original_max_position_embeddings": 4096}}));
    let r = c.resolve(1).unwrap();
    assert_freqs(&r.inv_freq, &yarn_reference(150000.0, 64, 32.0, 4096.0, false));
    assert!((r.attention_factor - (0.1 * 32f64.ln() + 1.0)).abs() < 1e-15);
}

#[test]
fn deepseek_v3_yarn_mscale() {
    // DeepSeek-V3: qk_rope_head_dim 64, mscale == mscale_all_dim, so the factor cancels to 1.
    let c = cfg(json!({"rotary_dim": 64, "theta": 10000.0, "max_position_embeddings": 163840,
        "scaling": {"type": "yarn", "factor": 40, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0,
                    "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096}}));
    let r = c.resolve(1).unwrap();
    assert_freqs(&r.inv_freq, &yarn_reference(10000.0, 64, 40.0, 4096.0, true));
    assert!((r.attention_factor - 1.0).abs() < 1e-15);
    // With different mscales the ratio of the two g's applies.
    let c2 = cfg(json!({"rotary_dim": 64, "theta": 10000.0, "max_position_embeddings": 163840,
        "scaling": {"type": "yarn", "factor": 40, "mscale": 0.707, "mscale_all_dim": 1.0,
                    "original_max_position_embeddings": 4096}}));
    let g = |m: f64| 0.1 * m * 40f64.ln() + 1.0;
    assert!((c2.resolve(1).unwrap().attention_factor - g(0.707) / g(1.0)).abs() < 1e-15);
    // An explicit attention_factor wins.
    let c3 = cfg(json!({"rotary_dim": 64, "max_position_embeddings": 8192,
        "scaling": {"type": "yarn", "factor": 2.0, "attention_factor": 0.5, "original_max_position_embeddings": 4096}}));
    assert_eq!(c3.resolve(1).unwrap().attention_factor, 0.5);
}

/// Phi-3-mini-128k's LongRoPE layout: head dim 96, theta 1e4, L = 131072, and L0 = 4096 kept
/// beside `rope_scaling` (top level of config.json), `type: longrope`, 48 short and long factors.
/// The factor values here are synthetic (monotone, as in the published lists), which exercises
/// the same formula.
fn phi3_like() -> (RopeConfig, Vec<f64>, Vec<f64>) {
    let short: Vec<f64> = (0..48).map(|i| 1.0 + 0.05 * i as f64).collect();
    let long: Vec<f64> = (0..48).map(|i| 1.0 + 1.25 * i as f64).collect();
    let c = cfg(json!({"rotary_dim": 96, "theta": 10000.0, "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096,
        "scaling": {"type": "longrope", "short_factor": short, "long_factor": long}}));
    (c, short, long)
}

#[test]
fn phi3_longrope_short_and_long() {
    let (c, short, long) = phi3_like();
    let base = base_freqs(10000.0, 96);
    // s = L / L0 = 32 (no factor in the dict); a = sqrt(1 + ln s / ln L0).
    let a = (1.0 + (131072f64 / 4096.0).ln() / 4096f64.ln()).sqrt();
    let r_short = c.resolve(4096).unwrap();
    assert_freqs(&r_short.inv_freq, &base.iter().zip(&short).map(|(f, e)| f / e).collect::<Vec<_>>());
    assert!((r_short.attention_factor - a).abs() < 1e-15);
    let r_long = c.resolve(4097).unwrap();
    assert_freqs(&r_long.inv_freq, &base.iter().zip(&long).map(|(f, e)| f / e).collect::<Vec<_>>());
    // seq_len in the config overrides n.
    let mut c2 = c.clone();
    c2.seq_len = Some(100_000);
    assert_freqs(&c2.resolve(1).unwrap().inv_freq, &r_long.inv_freq);
}

#[test]
fn dynamic_ntk() {
    // A Llama-2-7B-style dynamic NTK setting.
    let c = cfg(json!({"rotary_dim": 128, "theta": 10000.0, "max_position_embeddings": 4096,
        "scaling": {"type": "dynamic", "factor": 2.0}}));
    // n <= L: unchanged.
    assert_freqs(&c.resolve(4096).unwrap().inv_freq, &base_freqs(10000.0, 128));
    // n > L: the base grows by (s n / L - (s - 1))^(d / (d - 2)).
    let n = 10000.0;
    let new_base = 10000.0 * ((2.0 * n / 4096.0) - 1.0f64).powf(128.0 / 126.0);
    assert_freqs(&c.resolve(10000).unwrap().inv_freq, &base_freqs(new_base, 128));
}

#[test]
fn linear_and_default() {
    let c = cfg(json!({"rotary_dim": 64, "theta": 10000.0, "scaling": {"rope_type": "linear", "factor": 4.0}}));
    let want: Vec<f64> = base_freqs(10000.0, 64).iter().map(|f| f / 4.0).collect();
    assert_freqs(&c.resolve(1).unwrap().inv_freq, &want);
    let d = cfg(json!({"rotary_dim": 64, "scaling": {"rope_type": "default"}}));
    assert_freqs(&d.resolve(1).unwrap().inv_freq, &base_freqs(10000.0, 64));
    let n = cfg(json!({"rotary_dim": 64, "scaling": null}));
    assert_freqs(&n.resolve(1).unwrap().inv_freq, &base_freqs(10000.0, 64));
}

/// Float64 scalar RoPE of one head vector, independent of the library's rotation code.
fn rotate_f64(x: &[f64], pos: f64, f: &[f64], a: f64, d: usize, interleaved: bool) -> Vec<f64> {
    let mut y = x.to_vec();
    for (i, &fi) in f.iter().enumerate() {
        let (p, q) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + d / 2) };
        let phi = pos * fi;
        y[p] = a * (x[p] * phi.cos() - x[q] * phi.sin());
        y[q] = a * (x[q] * phi.cos() + x[p] * phi.sin());
    }
    y
}

fn check_rotation(dtype: DType, scaling: serde_json::Value, rotary_dim: usize, interleaved: bool, offset: i64) {
    let (b, s, h, d) = (2usize, 37usize, 3usize, 64usize);
    let mut rng = Rng::from_time();
    let x = Tensor::from_f32(dtype, &[b, s, h, d], &rng.normal_vec(b * s * h * d)).unwrap();
    let rope = cfg(json!({"rotary_dim": rotary_dim, "theta": 10000.0, "interleaved": interleaved,
        "max_position_embeddings": 4096, "original_max_position_embeddings": 2048, "scaling": scaling}));
    let op = RopeOpConfig { rope: rope.clone(), position_offset: offset };
    let y = rope_cpu(&op, &RopeArgs { x: &x, position_ids: None, cu_seqlens: None }).unwrap();
    assert_eq!(y.dtype(), dtype);
    assert_eq!(y.shape(), x.shape());
    let r = rope.resolve((offset as usize) + s).unwrap();
    let xs = x.to_f64_vec();
    let mut want = Vec::with_capacity(xs.len());
    for (row, head) in xs.chunks(d).enumerate() {
        let pos = offset as f64 + ((row / h) % s) as f64;
        want.extend(rotate_f64(head, pos, &r.inv_freq, r.attention_factor, rotary_dim, interleaved));
    }
    let err = rel_error(&y.to_f64_vec(), &want);
    assert!(err <= dtype.rel_tolerance(), "{dtype} rotary {rotary_dim} interleaved {interleaved} offset {offset}: rel {err:e} (seed {})", rng.seed);
    // Dims past rotary_dim pass through bit-exactly.
    let (xv, yv) = (x.to_f32_vec(), y.to_f32_vec());
    for row in 0..b * s * h {
        for c in rotary_dim..d {
            assert_eq!(xv[row * d + c].to_bits(), yv[row * d + c].to_bits());
        }
    }
}

fn every_scaling() -> Vec<serde_json::Value> {
    let short: Vec<f64> = (0..16).map(|i| 1.0 + 0.1 * i as f64).collect();
    let long: Vec<f64> = (0..16).map(|i| 1.0 + 2.0 * i as f64).collect();
    vec![
        serde_json::Value::Null,
        json!({"rope_type": "linear", "factor": 2.0}),
        json!({"rope_type": "dynamic", "factor": 2.0}),
        json!({"rope_type": "yarn", "factor": 4.0}),
        json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 2048}),
        json!({"rope_type": "longrope", "short_factor": short, "long_factor": long}),
    ]
}

#[test]
fn rotation_matches_f64_for_every_type_layout_and_dtype() {
    for scaling in every_scaling() {
        // rotary_dim 32 of 64: partial rotary, which also sizes the longrope lists (16 pairs).
        for interleaved in [false, true] {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                check_rotation(dtype, scaling.clone(), 32, interleaved, 5);
            }
        }
    }
    check_rotation(DType::F32, serde_json::Value::Null, 64, false, 0);
}

#[test]
fn positions_up_to_2_pow_20_are_exact() {
    for scaling in every_scaling() {
        check_rotation(DType::F32, scaling, 32, false, (1 << 20) - 36);
    }
    // The test bites: an f32 product p * f_i would miss the f32 bound by orders of magnitude.
    let p = (1u32 << 20) as f32 - 1.0;
    let f = 1.0f64 / 10000f64.powf(2.0 / 64.0);
    let exact = (p as f64 * f).cos();
    let naive = (p * f as f32).cos() as f64;
    assert!((exact - naive).abs() > 1e-3, "f32 angle error {}", (exact - naive).abs());
}

#[test]
fn position_ids_varlen_and_in_place() {
    let mut rng = Rng::from_time();
    let (total, h, d) = (11usize, 2usize, 16usize);
    let x = Tensor::from_f32(DType::F32, &[total, h, d], &rng.normal_vec(total * h * d)).unwrap();
    let op = RopeOpConfig { rope: RopeConfig::new(16, 10000.0), position_offset: 3 };
    // cu_seqlens [0, 4, 4, 11]: positions restart per sequence (one sequence empty).
    let cu = [0, 4, 4, 11];
    let ids: Vec<i32> = (0..4).chain(0..7).map(|p| p + 3).collect();
    let a = rope_cpu(&op, &RopeArgs { x: &x, position_ids: None, cu_seqlens: Some(&cu) }).unwrap();
    let op0 = RopeOpConfig { position_offset: 0, ..op.clone() };
    let b = rope_cpu(&op0, &RopeArgs { x: &x, position_ids: Some(&ids), cu_seqlens: None }).unwrap();
    assert_eq!(a, b);
    let mut x2 = x.clone();
    rope_cpu_inplace(&op0, &mut x2, Some(&ids), None).unwrap();
    assert_eq!(x2, b);
    // Identity at position 0 with attention factor 1.
    let z = rope_cpu(&op0, &RopeArgs { x: &x, position_ids: Some(&[0; 11]), cu_seqlens: None }).unwrap();
    assert_eq!(z, x);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let x = Tensor::from_f32(DType::F32, &[1, 4, 2, 16], &[0.5; 128]).unwrap();
    let args = |x| RopeArgs { x, position_ids: None, cu_seqlens: None };
    let op = |v: serde_json::Value| RopeOpConfig { rope: cfg(v), position_offset: 0 };
    let config_err = |c: serde_json::Value, key: &str, what: &str| {
        expect_err(plan_rope(&op(c), &args(&x)), ErrKind::Config, key, what);
    };
    config_err(json!({"rotary_dim": 15}), "rope.rotary_dim", "odd rotary_dim");
    config_err(json!({"rotary_dim": 32}), "rope.rotary_dim", "rotary_dim > D");
    config_err(json!({"rotary_dim": 16, "theta": 0.5}), "rope.theta", "theta 0.5");
    config_err(json!({"rotary_dim": 16, "scaling": {"rope_type": "ntk-by-parts"}}), "rope.scaling.rope_type", "unknown rope_type");
    config_err(json!({"rotary_dim": 16, "scaling": {"factor": 2.0}}), "rope.scaling.rope_type", "no rope_type");
    config_err(json!({"rotary_dim": 16, "scaling": {"rope_type": "linear"}}), "rope.scaling.factor", "linear without factor");
    config_err(json!({"rotary_dim": 16, "scaling": {"rope_type": "linear", "factor": -1.0}}), "rope.scaling.factor", "negative factor");
    config_err(json!({"rotary_dim": 16, "scaling": {"rope_type": "dynamic", "factor": 2.0}}), "rope.max_position_embeddings", "dynamic without L");
    config_err(
        json!({"rotary_dim": 16, "scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0, "original_max_position_embeddings": 8192}}),
        "rope.scaling.high_freq_factor",
        "llama3 high_freq_factor <= low_freq_factor",
    );
    config_err(
        json!({"rotary_dim": 16, "max_position_embeddings": 8, "scaling": {"rope_type": "longrope", "short_factor": [1.0, 1.0], "long_factor": vec![1.0; 8]}}),
        "rope.scaling.short_factor",
        "longrope short_factor of the wrong length",
    );
    config_err(json!({"rotary_dim": 16, "scaling": [1, 2]}), "rope.scaling", "scaling not a dict");
    let ok = op(json!({"rotary_dim": 16}));
    let flat = Tensor::from_f32(DType::F32, &[4, 32], &[0.5; 128]).unwrap();
    expect_err(plan_rope(&ok, &args(&flat)), ErrKind::Shape, "x", "rank-2 x");
    let ints = Tensor::from_i32(&[1, 4, 2, 16], &[1; 128]).unwrap();
    assert!(matches!(plan_rope(&ok, &args(&ints)), Err(Error::DType { .. })));
    let with = |x: &Tensor, position_ids: Option<&[i32]>, cu_seqlens: Option<&[i32]>| plan_rope(&ok, &RopeArgs { x, position_ids, cu_seqlens });
    expect_err(with(&x, Some(&[0, 1, 2]), None), ErrKind::Shape, "position_ids", "3 position ids for 4 rows");
    expect_err(with(&x, Some(&[0, 1, -2, 3]), None), ErrKind::Invalid, "position_ids", "negative position id");
    expect_err(with(&x, None, Some(&[0, 4])), ErrKind::Invalid, "cu_seqlens", "cu_seqlens with dense x");
    let x3 = Tensor::from_f32(DType::F32, &[4, 2, 16], &[0.5; 128]).unwrap();
    expect_err(with(&x3, None, Some(&[0, 3, 2, 4])), ErrKind::Invalid, "cu_seqlens", "decreasing cu_seqlens");
    expect_err(with(&x3, None, Some(&[0, 3])), ErrKind::Invalid, "cu_seqlens", "cu_seqlens short of the rows");
    expect_err(with(&x3, Some(&[0; 4]), Some(&[0, 4])), ErrKind::Invalid, "position_ids", "position_ids and cu_seqlens");
    let offset = |position_offset| RopeOpConfig { rope: cfg(json!({"rotary_dim": 16})), position_offset };
    expect_err(plan_rope(&offset(-1), &args(&x)), ErrKind::Invalid, "position_offset", "negative offset");
    expect_err(plan_rope(&offset(i32::MAX as i64), &args(&x)), ErrKind::Invalid, "position_offset", "offset beyond int32");
    // Unknown keys in the config are rejected rather than ignored.
    assert!(serde_json::from_value::<RopeConfig>(json!({"rotary_dim": 16, "thetta": 1.0})).is_err());
}

#[test]
fn gpu_tables_cover_2_pow_20_and_recombine_exactly() {
    // The device tables (two levels, recombined by angle addition in f32) reproduce the exact
    // cos/sin to a few f32 ulps at every position tier; emulated here in f32 as the kernel does.
    let c = cfg(json!({"rotary_dim": 128, "theta": 500000.0, "max_position_embeddings": 131072,
        "scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192, "rope_type": "llama3"}}));
    let r = c.resolve(1).unwrap();
    let (lo, hi, n_hi) = r.host_tables(10);
    assert!(n_hi * 1024 >= 1 << 20);
    let half = 64;
    let mut worst = 0.0f64;
    for pos in [0usize, 1, 1023, 1024, 1025, 65_537, 999_999, (1 << 20) - 1] {
        let (h, l) = (pos / 1024, pos % 1024);
        for i in 0..half {
            let (lc, ls) = (lo[(l * half + i) * 2], lo[(l * half + i) * 2 + 1]);
            let (hc, hs) = (hi[(h * half + i) * 2], hi[(h * half + i) * 2 + 1]);
            let (c32, s32) = if h == 0 { (lc, ls) } else { (hc.mul_add(lc, -hs * ls), hs.mul_add(lc, hc * ls)) };
            let (s, c) = (pos as f64 * r.inv_freq[i]).sin_cos();
            worst = worst.max((c32 as f64 - c).abs()).max((s32 as f64 - s).abs());
        }
    }
    assert!(worst < 4.0 * f32::EPSILON as f64, "table recombination error {worst:e}");
}
