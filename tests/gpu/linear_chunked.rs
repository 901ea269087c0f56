//! The chunked tensor-core prefill of `linear_attention` against the float64 oracle
//! (`attn_kernels::linear::oracle`) and the CPU reference: every decay shape, both forms (with
//! and without the RWKV bonus `u`), f16 and bf16, K and V in {64, 128}, lengths that are not
//! multiples of the chunk, varlen with empty sequences, initial and final states, decays down
//! to g = -20 per step, 64k-token sequences, poisoned outputs, and the typed errors.

use super::common::{compare, g_shape, gpu, randn_scaled, tensor, DevLin, LinCase, DECAY_SHAPES};
use attn_kernels::linear::chunked::{linear_attention_chunked_cuda, linear_attention_chunked_cuda_into};
use attn_kernels::linear::cuda::{linear_attention_cuda, LinearMode};
use attn_kernels::linear::{linear_attention_cpu, oracle, DecayShape, LinearAttentionConfig};
use attn_kernels::tensor::rel_error;
use attn_kernels::{DType, Error, Gpu, Tensor, TensorInfo};
use attn_kernels_harness::check::Rng;

/// How strong the random log decays are.
#[derive(Clone, Copy, Debug)]
enum Strength {
    /// RWKV-6 style `-exp(x)`, x in (-4, 0.5): g in about (-1.6, -0.02).
    Typical,
    /// g in [-20, 0], a quarter of them exactly -20 and some exactly 0.
    Strong,
    /// g in (-0.002, 0): long memory (64k tokens).
    Weak,
    /// g in (-0.2, 0): GLA-like; every 16-token sub-block takes the tensor-core diagonal path.
    Mild,
    /// Mild, with one g in 16 equal to -inf (an exact reset; the kernel floors it at -88).
    Resets,
}

#[allow(clippy::too_many_arguments)]
fn decay_of_strength(rng: &mut Rng, dtype: DType, d: DecayShape, b: usize, tt: usize, h: usize, k: usize, s: Strength) -> Option<Tensor> {
    g_shape(d, b, tt, h, k).map(|shape| {
        let n = shape.iter().product();
        let g: Vec<f32> = (0..n)
            .map(|_| match s {
                Strength::Typical => -rng.uniform(-4.0, 0.5).exp(),
                Strength::Strong => match rng.below(8) {
                    0 | 1 => -20.0,
                    2 => 0.0,
                    _ => rng.uniform(-20.0, 0.0),
                },
                Strength::Weak => rng.uniform(-0.002, 0.0),
                Strength::Mild => rng.uniform(-0.2, 0.0),
                Strength::Resets => {
                    if rng.below(16) == 0 {
                        f32::NEG_INFINITY
                    } else {
                        rng.uniform(-0.2, 0.0)
                    }
                }
            })
            .collect();
        tensor(dtype, &shape, &g)
    })
}

#[allow(clippy::too_many_arguments)]
fn make(
    rng: &mut Rng,
    dtype: DType,
    (b, tt, h, k, v): (usize, usize, usize, usize, usize),
    d: DecayShape,
    strength: Strength,
    g_dtype: DType,
    bonus: bool,
    with_s0: bool,
    cu: Option<Vec<i32>>,
) -> LinCase {
    let n_seqs = cu.as_ref().map_or(b, |c| c.len() - 1);
    // Unit-norm keys (as GLA / RWKV normalise them) keep the state in a realistic range.
    let q = randn_scaled(rng, dtype, &[b, tt, h, k], 1.0);
    let kk = randn_scaled(rng, dtype, &[b, tt, h, k], 1.0 / (k as f32).sqrt());
    let vv = randn_scaled(rng, dtype, &[b, tt, h, v], 1.0);
    LinCase {
        q,
        k: kk,
        v: vv,
        g: decay_of_strength(rng, g_dtype, d, b, tt, h, k, strength),
        u: bonus.then(|| randn_scaled(rng, if g_dtype == DType::F32 { DType::F32 } else { dtype }, &[h, k], 0.5)),
        s0: with_s0.then(|| randn_scaled(rng, DType::F32, &[n_seqs, h, k, v], 1.0)),
        cu,
    }
}

/// Runs the chunked kernel on poisoned outputs and checks it against the float64 oracle.
fn check_chunked(gpu: &Gpu, what: &str, seed: u64, x: &LinCase, cfg: &LinearAttentionConfig) {
    let reference = oracle::linear_attention(cfg, &x.host()).unwrap();
    let dev = DevLin::new(gpu, x);
    let args = dev.args(x.cu.as_deref());
    let o_shape = [x.q.shape()[0], x.q.shape()[1], x.q.shape()[2], x.v.shape()[3]];
    let n_seqs = x.cu.as_ref().map_or(x.q.shape()[0], |c| c.len() - 1);
    let s_shape = [n_seqs, x.q.shape()[2], x.q.shape()[3], x.v.shape()[3]];
    let mut o = gpu.alloc_poisoned(x.q.dtype(), &o_shape).unwrap();
    let mut fs = gpu.alloc_poisoned(DType::F32, &s_shape).unwrap();
    linear_attention_chunked_cuda_into(gpu, cfg, &args, &mut o, &mut fs).unwrap();
    let bound = x.q.dtype().rel_tolerance();
    compare(what, seed, "o", &gpu.download(&o).unwrap(), &reference.o, bound);
    compare(what, seed, "final_state", &gpu.download(&fs).unwrap(), &reference.final_state, bound);
}

#[test]
fn chunked_every_decay_bonus_dtype_and_head_dim_vs_oracle() {
    let Some(gpu) = gpu(concat!(module_path!(), "::chunked_every_decay_bonus_dtype_and_head_dim_vs_oracle")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let dims = [(64, 64), (128, 128), (64, 128), (128, 64)];
    let mut i = 0;
    for dtype in [DType::F16, DType::BF16] {
        for (di, d) in DECAY_SHAPES.into_iter().enumerate() {
            for bonus in [false, true] {
                let (k, v) = dims[i % dims.len()];
                i += 1;
                // 150 tokens: two full chunks and a partial one.
                let g_dtype = if di % 2 == 0 { DType::F32 } else { dtype };
                let strength = if i % 2 == 0 { Strength::Mild } else { Strength::Typical };
                let x = make(&mut rng, dtype, (2, 150, 3, k, v), d, strength, g_dtype, bonus, i % 3 != 0, None);
                let cfg = LinearAttentionConfig { scale: if bonus { Some(1.0) } else { None } };
                let what = format!("{dtype} {d:?} {strength:?} bonus={bonus} K={k} V={v}");
                check_chunked(&gpu, &what, seed, &x, &cfg);
            }
        }
    }
}

#[test]
fn chunked_lengths_around_the_chunk_size() {
    let Some(gpu) = gpu(concat!(module_path!(), "::chunked_lengths_around_the_chunk_size")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for tt in [1usize, 15, 16, 17, 63, 64, 65, 127, 128, 129, 200] {
        for bonus in [false, true] {
            let strength = if bonus { Strength::Mild } else { Strength::Typical };
            let x = make(&mut rng, DType::F16, (1, tt, 2, 64, 64), DecayShape::PerTokenKey, strength, DType::F32, bonus, true, None);
            check_chunked(&gpu, &format!("T={tt} bonus={bonus}"), seed, &x, &LinearAttentionConfig::default());
        }
    }
}

#[test]
fn chunked_strong_decays_down_to_minus_20() {
    let Some(gpu) = gpu(concat!(module_path!(), "::chunked_strong_decays_down_to_minus_20")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for dtype in [DType::F16, DType::BF16] {
        for d in [DecayShape::PerTokenKey, DecayShape::PerToken, DecayShape::PerHeadKey] {
            for bonus in [false, true] {
                for strength in [Strength::Strong, Strength::Resets] {
                    let x = make(&mut rng, dtype, (2, 333, 2, 128, 64), d, strength, DType::F32, bonus, true, None);
                    check_chunked(&gpu, &format!("{strength:?} {dtype} {d:?} bonus={bonus}"), seed, &x, &LinearAttentionConfig::default());
                }
            }
        }
    }
}

#[test]
fn chunked_varlen_with_empty_sequences() {
    let Some(gpu) = gpu(concat!(module_path!(), "::chunked_varlen_with_empty_sequences")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    // Empty first, middle and last sequences; lengths around chunk boundaries.
    let cu = vec![0, 0, 70, 70, 134, 135, 300, 300];
    let total = *cu.last().unwrap() as usize;
    for dtype in [DType::F16, DType::BF16] {
        for d in DECAY_SHAPES {
            for bonus in [false, true] {
                let x = make(&mut rng, dtype, (1, total, 2, 64, 128), d, Strength::Typical, DType::F32, bonus, true, Some(cu.clone()));
                check_chunked(&gpu, &format!("varlen {dtype} {d:?} bonus={bonus}"), seed, &x, &LinearAttentionConfig::default());
            }
        }
    }
    // All sequences empty: the final states are the initial ones, o has no rows.
    let x = make(&mut rng, DType::F16, (1, 0, 2, 64, 64), DecayShape::PerHead, Strength::Typical, DType::F32, false, true, Some(vec![0, 0, 0]));
    check_chunked(&gpu, "varlen all empty", seed, &x, &LinearAttentionConfig::default());
}

#[test]
fn chunked_64k_tokens() {
    let Some(gpu) = gpu(concat!(module_path!(), "::chunked_64k_tokens")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let tt = if gpu.info().emulated { 4096 } else { 65536 }; // emulated: 64 chunks instead of 1024, same code paths; CPU time
    for (dtype, d, strength, bonus) in [
        (DType::BF16, DecayShape::PerTokenKey, Strength::Weak, false),
        (DType::F16, DecayShape::PerTokenKey, Strength::Typical, true),
        (DType::F16, DecayShape::None, Strength::Typical, false),
        (DType::BF16, DecayShape::PerToken, Strength::Strong, false),
    ] {
        let x = make(&mut rng, dtype, (1, tt, 1, 64, 64), d, strength, DType::F32, bonus, true, None);
        check_chunked(&gpu, &format!("T={tt} {dtype} {d:?} {strength:?} bonus={bonus}"), seed, &x, &LinearAttentionConfig::default());
    }
}

#[test]
fn chunked_f16_state_beyond_f16_range() {
    // |S| ~ 1e5 > 65504: the f16 path rescales the state by a power of two before its f16
    // product. A small scale keeps o itself inside f16.
    let Some(gpu) = gpu(concat!(module_path!(), "::chunked_f16_state_beyond_f16_range")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for bonus in [false, true] {
        let mut x = make(&mut rng, DType::F16, (2, 300, 2, 128, 128), DecayShape::PerHead, Strength::Weak, DType::F32, bonus, true, None);
        x.s0 = Some(randn_scaled(&mut rng, DType::F32, &[2, 2, 128, 128], 1e5));
        let cfg = LinearAttentionConfig { scale: Some(1e-3) };
        check_chunked(&gpu, &format!("f16 large state bonus={bonus}"), seed, &x, &cfg);
    }
}

#[test]
fn chunked_matches_cpu_reference_at_realistic_shape() {
    let Some(gpu) = gpu(concat!(module_path!(), "::chunked_matches_cpu_reference_at_realistic_shape")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for bonus in [false, true] {
        let x = make(&mut rng, DType::BF16, (2, 1000, 4, 128, 128), DecayShape::PerTokenKey, Strength::Typical, DType::BF16, bonus, true, None);
        let cfg = LinearAttentionConfig::default();
        let cpu = linear_attention_cpu(&cfg, &x.host()).unwrap();
        let dev = DevLin::new(&gpu, &x);
        let out = linear_attention_chunked_cuda(&gpu, &cfg, &dev.args(None)).unwrap();
        let o = gpu.download(&out.o).unwrap();
        let fs = gpu.download(&out.final_state).unwrap();
        assert_eq!(o.shape(), cpu.o.shape());
        assert_eq!(fs.shape(), cpu.final_state.shape());
        let bound = 2.0 * DType::BF16.rel_tolerance();
        let e = rel_error(&o.to_f64_vec(), &cpu.o.to_f64_vec());
        assert!(e <= bound, "o vs cpu bonus={bonus}: {e:.3e} (seed {seed})");
        let e = rel_error(&fs.to_f64_vec(), &cpu.final_state.to_f64_vec());
        assert!(e <= bound, "final_state vs cpu bonus={bonus}: {e:.3e} (seed {seed})");
    }
}

#[test]
fn chunked_matches_recurrent_kernel() {
    let Some(gpu) = gpu(concat!(module_path!(), "::chunked_matches_recurrent_kernel")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let cfg = LinearAttentionConfig::default();
    let t: i32 = if gpu.info().emulated { 600 } else { 2000 }; // emulated: still 10 chunks, empty and 1-token sequences; CPU time
    for (dtype, d, strength, bonus, cu) in [
        (DType::BF16, DecayShape::PerTokenKey, Strength::Typical, false, None),
        (DType::F16, DecayShape::PerTokenKey, Strength::Strong, true, None),
        (DType::F16, DecayShape::PerToken, Strength::Typical, false, Some(vec![0, 100, 100, t / 2, t])),
        (DType::BF16, DecayShape::PerHeadKey, Strength::Strong, true, Some(vec![0, 1, 65, t])),
    ] {
        let b = if cu.is_some() { 1 } else { 2 };
        let x = make(&mut rng, dtype, (b, t as usize, 4, 128, 128), d, strength, DType::F32, bonus, true, cu);
        let dev = DevLin::new(&gpu, &x);
        let args = dev.args(x.cu.as_deref());
        let chunked = linear_attention_chunked_cuda(&gpu, &cfg, &args).unwrap();
        let recurrent = linear_attention_cuda(&gpu, &cfg, &args, LinearMode::Recurrent).unwrap();
        let bound = 2.0 * dtype.rel_tolerance();
        for (name, a, r) in [("o", &chunked.o, &recurrent.o), ("final_state", &chunked.final_state, &recurrent.final_state)] {
            let a = gpu.download(a).unwrap().to_f64_vec();
            let r = gpu.download(r).unwrap().to_f64_vec();
            let e = rel_error(&a, &r);
            assert!(e <= bound, "{dtype} {d:?} {strength:?} bonus={bonus}: {name} chunked vs recurrent {e:.3e} (seed {seed})");
        }
    }
}

#[test]
fn chunked_rejects_unsupported_input_with_typed_errors() {
    let Some(gpu) = gpu(concat!(module_path!(), "::chunked_rejects_unsupported_input_with_typed_errors")) else { return };
    let mut rng = Rng::from_time();
    let cfg = LinearAttentionConfig::default();
    let run = |x: &LinCase| {
        let dev = DevLin::new(&gpu, x);
        linear_attention_chunked_cuda(&gpu, &cfg, &dev.args(x.cu.as_deref())).map(|_| ())
    };
    // f32 inputs: the chunked kernel is f16/bf16 only.
    let x = make(&mut rng, DType::F32, (1, 10, 1, 64, 64), DecayShape::None, Strength::Typical, DType::F32, false, false, None);
    match run(&x) {
        Err(Error::DType { arg, .. }) => assert_eq!(arg, "q"),
        other => panic!("f32: expected a dtype error on q, got {other:?}"),
    }
    // K = 96, V = 32.
    let x = make(&mut rng, DType::F16, (1, 10, 1, 96, 64), DecayShape::None, Strength::Typical, DType::F32, false, false, None);
    let e = run(&x).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }) && e.argument() == Some("q"), "K=96: {e:?}");
    let x = make(&mut rng, DType::F16, (1, 10, 1, 64, 32), DecayShape::None, Strength::Typical, DType::F32, false, false, None);
    let e = run(&x).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }) && e.argument() == Some("v"), "V=32: {e:?}");
    // Shape errors come from the shared validation.
    let mut x = make(&mut rng, DType::F16, (1, 10, 2, 64, 64), DecayShape::None, Strength::Typical, DType::F32, false, false, None);
    x.g = Some(tensor(DType::F32, &[3], &[-0.1, -0.2, -0.3]));
    let e = run(&x).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.argument() == Some("g"), "g [3]: {e:?}");
    let mut x = make(&mut rng, DType::F16, (1, 10, 2, 64, 64), DecayShape::None, Strength::Typical, DType::F32, false, false, None);
    x.cu = Some(vec![0, 5, 9]);
    let e = run(&x).unwrap_err();
    assert!(e.argument() == Some("cu_seqlens"), "cu_seqlens not ending at total: {e:?}");
    // Caller-owned outputs of the wrong shape or dtype.
    let x = make(&mut rng, DType::F16, (1, 10, 2, 64, 64), DecayShape::None, Strength::Typical, DType::F32, false, false, None);
    let dev = DevLin::new(&gpu, &x);
    let args = dev.args(None);
    let mut o = gpu.alloc(DType::BF16, &[1, 10, 2, 64]).unwrap();
    let mut fs = gpu.alloc(DType::F32, &[1, 2, 64, 64]).unwrap();
    let e = linear_attention_chunked_cuda_into(&gpu, &cfg, &args, &mut o, &mut fs).unwrap_err();
    assert!(e.argument() == Some("o"), "o bf16 for f16 q: {e:?}");
    let mut o = gpu.alloc(DType::F16, &[1, 10, 2, 64]).unwrap();
    let mut fs = gpu.alloc(DType::F32, &[1, 2, 64, 63]).unwrap();
    let e = linear_attention_chunked_cuda_into(&gpu, &cfg, &args, &mut o, &mut fs).unwrap_err();
    assert!(e.argument() == Some("final_state"), "final_state shape: {e:?}");
}

// ---------------------------------------------------------------- CPU emulation (no GPU needed)

/// Rounds to the kernel's 16-bit operand type.
fn rnd(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F16 => half::f16::from_f32(x).to_f32(),
        DType::BF16 => half::bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

/// The chunked kernel's algorithm on the CPU, step by step as `kernels/linear/chunked.cu`
/// computes it (same sub-chunk reference points, masks and factors, same roundings to the
/// 16-bit operand type), without the tensor-core fragment layouts. Checks the decomposition
/// against the float64 oracle where no GPU is at hand.
#[allow(clippy::needless_range_loop)]
fn emulate(x: &LinCase, cfg: &LinearAttentionConfig) -> (Vec<f64>, Vec<f64>) {
    const C: usize = 64;
    let dtype = x.q.dtype();
    let (b, tt, h, kd) = (x.q.shape()[0], x.q.shape()[1], x.q.shape()[2], x.q.shape()[3]);
    let vd = x.v.shape()[3];
    let scale = cfg.scale.map_or(1.0 / (kd as f32).sqrt(), |s| s as f32);
    let (q, k, v) = (x.q.to_f32_vec(), x.k.to_f32_vec(), x.v.to_f32_vec());
    let g = x.g.as_ref().map(Tensor::to_f32_vec);
    let u = x.u.as_ref().map(Tensor::to_f32_vec);
    let s0 = x.s0.as_ref().map(Tensor::to_f32_vec);
    let decay = match x.g.as_ref().map(|g| g.shape().len()) {
        None => DecayShape::None,
        Some(4) => DecayShape::PerTokenKey,
        Some(3) => DecayShape::PerToken,
        Some(2) => DecayShape::PerHeadKey,
        Some(_) => DecayShape::PerHead,
    };
    let seqs: Vec<(usize, usize)> = match &x.cu {
        Some(cu) => cu.windows(2).map(|w| (w[0] as usize, (w[1] - w[0]) as usize)).collect(),
        None => (0..b).map(|i| (i * tt, tt)).collect(),
    };
    let mut o = vec![0f64; b * tt * h * vd];
    let mut fs = vec![0f64; seqs.len() * h * kd * vd];
    for (n, &(bos, len)) in seqs.iter().enumerate() {
        for hh in 0..h {
            let sb = (n * h + hh) * kd * vd;
            let mut st: Vec<f32> = (0..kd * vd).map(|i| s0.as_ref().map_or(0.0, |s| s[sb + i])).collect();
            let mut c0 = 0;
            while c0 < len {
                let valid = C.min(len - c0);
                let row = |t: usize| bos + c0 + t;
                let ld = |src: &[f32], t: usize, i: usize, w: usize| if t < valid { src[(row(t) * h + hh) * w + i] } else { 0.0 };
                let mut gc = vec![0f32; C * kd];
                let mut e = vec![0f32; 5 * kd];
                for key in 0..kd {
                    let mut run = 0f32;
                    for t in 0..C {
                        let gv = match (&g, decay.offset(if t < valid { row(t) } else { 0 }, hh, h, kd)) {
                            (Some(g), Some((off, ks))) if t < valid => g[off + key * ks].max(-88.0),
                            _ => 0.0,
                        };
                        run += gv;
                        gc[t * kd + key] = run;
                        if t % 16 == 15 {
                            e[(t / 16 + 1) * kd + key] = run;
                        }
                    }
                }
                let cf = |a: usize, bb: usize, key: usize| (e[a * kd + key] - e[bb * kd + key]).exp();
                let gq = |t: usize, key: usize| {
                    if u.is_some() {
                        if t > 0 { gc[(t - 1) * kd + key] } else { 0.0 }
                    } else {
                        gc[t * kd + key]
                    }
                };
                // sub-blocks whose diagonal block runs on tensor cores
                let limit = if dtype == DType::F16 { 4.0 } else { 30.0 };
                let fast: Vec<bool> = (0..4)
                    .map(|a| {
                        let dev = (0..kd)
                            .flat_map(|key| (16 * a..16 * a + 16).map(move |t| (key, t)))
                            .map(|(key, t)| (gc[t * kd + key] - e[a * kd + key]).abs())
                            .fold(0f32, f32::max);
                        dev <= limit
                    })
                    .collect();
                // diagonal sub-blocks in f32
                let mut att = vec![0f32; C * C];
                for a in 0..4 {
                    for r in 0..16 {
                        for j in 0..=r {
                            if fast[a] && !(u.is_some() && j == r) {
                                continue;
                            }
                            let (tr, tj) = (16 * a + r, 16 * a + j);
                            let mut acc = 0f32;
                            for key in 0..kd {
                                let (qv, kv) = (ld(&q, tr, key, kd), ld(&k, tj, key, kd));
                                acc += match &u {
                                    Some(u) if j == r => qv * u[hh * kd + key] * kv,
                                    _ => qv * kv * (gq(tr, key) - gc[tj * kd + key]).exp(),
                                };
                            }
                            att[tr * C + tj] = rnd(dtype, acc * scale);
                        }
                    }
                }
                // rescaled operands
                let mut qa = vec![0f32; C * kd];
                let mut ke = vec![0f32; C * kd];
                for t in 0..C {
                    let a = t / 16;
                    for key in 0..kd {
                        qa[t * kd + key] = rnd(dtype, ld(&q, t, key, kd) * (gq(t, key) - e[a * kd + key]).exp());
                        ke[t * kd + key] = rnd(dtype, ld(&k, t, key, kd) * (e[(a + 1) * kd + key] - gc[t * kd + key]).exp());
                    }
                }
                // off-diagonal sub-blocks, and the diagonal ones of fast sub-blocks
                for a in 0..4 {
                    for bb in 0..=a {
                        if bb == a && !fast[a] {
                            continue;
                        }
                        for r in 0..16 {
                            for j in 0..16 {
                                if bb == a && (j > r || (u.is_some() && j == r)) {
                                    continue;
                                }
                                let (tr, tj) = (16 * a + r, 16 * bb + j);
                                let mut acc = 0f32;
                                for key in 0..kd {
                                    acc += qa[tr * kd + key] * rnd(dtype, ke[tj * kd + key] * cf(a, bb + 1, key));
                                }
                                att[tr * C + tj] = rnd(dtype, acc * scale);
                            }
                        }
                    }
                }
                // outputs: state part (f16 state rescaled by a power of two) plus A V
                let mx = st.iter().fold(0f32, |m, x| m.max(x.abs()));
                let (inv, back) = if dtype == DType::F16 && mx > 16384.0 {
                    let ex = mx.log2().floor() as i32 - 13;
                    (2f32.powi(-ex), scale * 2f32.powi(ex))
                } else {
                    (1.0, scale)
                };
                for t in 0..valid {
                    let a = t / 16;
                    for col in 0..vd {
                        let mut inter = 0f32;
                        for key in 0..kd {
                            inter += rnd(dtype, qa[t * kd + key] * cf(a, 0, key)) * rnd(dtype, st[key * vd + col] * inv);
                        }
                        let mut acc = inter * back;
                        for j in 0..16 * (a + 1) {
                            acc += att[t * C + j] * ld(&v, j, col, vd);
                        }
                        o[(row(t) * h + hh) * vd + col] = rnd(dtype, acc) as f64;
                    }
                }
                // state update
                for key in 0..kd {
                    let d = cf(4, 0, key);
                    for col in 0..vd {
                        let mut acc = st[key * vd + col] * d;
                        for j in 0..C {
                            acc += ld(&v, j, col, vd) * rnd(dtype, ke[j * kd + key] * cf(4, j / 16 + 1, key));
                        }
                        st[key * vd + col] = acc;
                    }
                }
                c0 += C;
            }
            for i in 0..kd * vd {
                fs[sb + i] = st[i] as f64;
            }
        }
    }
    (o, fs)
}

fn check_emulation(what: &str, seed: u64, x: &LinCase, cfg: &LinearAttentionConfig) {
    let reference = oracle::linear_attention(cfg, &x.host()).unwrap();
    let (o, fs) = emulate(x, cfg);
    let bound = x.q.dtype().rel_tolerance();
    for (name, out, r) in [("o", &o, &reference.o), ("final_state", &fs, &reference.final_state)] {
        let e = rel_error(out, r);
        eprintln!("{what}: {name} rel error {e:.3e}");
        assert!(e <= bound, "{what}: emulated {name} rel error {e:.3e} > {bound:.1e} (seed {seed})");
    }
}

#[test]
fn chunk_algorithm_emulated_on_cpu_matches_oracle() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for dtype in [DType::F16, DType::BF16] {
        for d in DECAY_SHAPES {
            for bonus in [false, true] {
                for strength in [Strength::Typical, Strength::Strong, Strength::Mild, Strength::Resets] {
                    let x = make(&mut rng, dtype, (1, 150, 1, 64, 16), d, strength, DType::F32, bonus, true, None);
                    check_emulation(&format!("{dtype} {d:?} {strength:?} bonus={bonus}"), seed, &x, &LinearAttentionConfig::default());
                }
            }
        }
    }
    let cu = vec![0, 0, 70, 70, 135];
    let x = make(&mut rng, DType::F16, (1, 135, 2, 64, 16), DecayShape::PerTokenKey, Strength::Typical, DType::F32, true, true, Some(cu));
    check_emulation("varlen", seed, &x, &LinearAttentionConfig::default());
    let mut x = make(&mut rng, DType::F16, (1, 100, 1, 64, 16), DecayShape::PerHead, Strength::Weak, DType::F32, false, true, None);
    x.s0 = Some(randn_scaled(&mut rng, DType::F32, &[1, 1, 64, 16], 1e5));
    check_emulation("f16 large state", seed, &x, &LinearAttentionConfig { scale: Some(1e-3) });
}
