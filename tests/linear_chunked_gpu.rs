//! The chunked tensor-core prefill of `linear_attention` on the GPU against the float64 oracle
//! (`attn_kernels::linear::oracle`) and the CPU reference: every decay shape, both forms (with
//! and without the RWKV bonus `u`), f16 and bf16, K and V in {64, 128}, lengths that are not
//! multiples of the chunk, varlen with empty sequences, initial and final states, decays down
//! to g = -20 per step, 64k-token sequences, poisoned outputs, and the typed errors.
//!
//! Skips (printing why) where there is no GPU or the kernels were not compiled. Inputs are
//! random and drawn fresh each run; failures print the seed (replay: `ATTN_KERNELS_SEED=<seed>`).

use attn_kernels::check::Rng;
use attn_kernels::linear::chunked::{linear_attention_chunked_cuda, linear_attention_chunked_cuda_into};
use attn_kernels::linear::{linear_attention_cpu, oracle, DecayShape, LinearArgs, LinearAttentionConfig};
use attn_kernels::tensor::rel_error;
use attn_kernels::{DType, DeviceTensor, Error, Gpu, Tensor, TensorInfo};

const DECAYS: [DecayShape; 5] =
    [DecayShape::None, DecayShape::PerTokenKey, DecayShape::PerToken, DecayShape::PerHeadKey, DecayShape::PerHead];

fn gpu() -> Option<Gpu> {
    match Gpu::first() {
        Ok(g) if attn_kernels::runtime::kernels_compiled() => Some(g),
        Ok(_) => {
            eprintln!("skipped: kernels were not compiled into this build");
            None
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

fn t(dtype: DType, shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(dtype, shape, v).unwrap()
}

fn normal(rng: &mut Rng, dtype: DType, shape: &[usize], scale: f32) -> Tensor {
    let n = shape.iter().product();
    t(dtype, shape, &rng.normal_vec(n).iter().map(|x| x * scale).collect::<Vec<_>>())
}

/// Shape of `g` for a decay layout (`rows` = B*T for per-token layouts, as `[b, tt, ...]`).
fn g_shape(d: DecayShape, b: usize, tt: usize, h: usize, k: usize) -> Option<Vec<usize>> {
    match d {
        DecayShape::None => None,
        DecayShape::PerTokenKey => Some(vec![b, tt, h, k]),
        DecayShape::PerToken => Some(vec![b, tt, h]),
        DecayShape::PerHeadKey => Some(vec![h, k]),
        DecayShape::PerHead => Some(vec![h]),
    }
}

/// How strong the random log decays are.
#[derive(Clone, Copy, Debug)]
enum Strength {
    /// RWKV-6 style `-exp(x)`, x in (-4, 0.5): g in about (-1.6, -0.02).
    Typical,
    /// g in [-20, 0], a quarter of them exactly -20 and some exactly 0.
    Strong,
    /// g in (-0.002, 0): long memory (64k tokens).
    Weak,
}

fn decay(rng: &mut Rng, dtype: DType, d: DecayShape, b: usize, tt: usize, h: usize, k: usize, s: Strength) -> Option<Tensor> {
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
            })
            .collect();
        t(dtype, &shape, &g)
    })
}

/// Host inputs of one case.
struct Inputs {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Option<Tensor>,
    u: Option<Tensor>,
    s0: Option<Tensor>,
    cu: Option<Vec<i32>>,
}

impl Inputs {
    fn args(&self) -> LinearArgs<'_, Tensor> {
        LinearArgs {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            g: self.g.as_ref(),
            u: self.u.as_ref(),
            initial_state: self.s0.as_ref(),
            cu_seqlens: self.cu.as_deref(),
        }
    }
}

struct DeviceInputs {
    q: DeviceTensor,
    k: DeviceTensor,
    v: DeviceTensor,
    g: Option<DeviceTensor>,
    u: Option<DeviceTensor>,
    s0: Option<DeviceTensor>,
}

fn upload(gpu: &Gpu, x: &Inputs) -> DeviceInputs {
    let up = |t: &Tensor| gpu.upload(t).unwrap();
    DeviceInputs {
        q: up(&x.q),
        k: up(&x.k),
        v: up(&x.v),
        g: x.g.as_ref().map(up),
        u: x.u.as_ref().map(up),
        s0: x.s0.as_ref().map(up),
    }
}

fn device_args<'a>(d: &'a DeviceInputs, cu: Option<&'a [i32]>) -> LinearArgs<'a, DeviceTensor> {
    LinearArgs { q: &d.q, k: &d.k, v: &d.v, g: d.g.as_ref(), u: d.u.as_ref(), initial_state: d.s0.as_ref(), cu_seqlens: cu }
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
) -> Inputs {
    let n_seqs = cu.as_ref().map_or(b, |c| c.len() - 1);
    // Unit-norm keys (as GLA / RWKV normalise them) keep the state in a realistic range.
    let q = normal(rng, dtype, &[b, tt, h, k], 1.0);
    let kk = normal(rng, dtype, &[b, tt, h, k], 1.0 / (k as f32).sqrt());
    let vv = normal(rng, dtype, &[b, tt, h, v], 1.0);
    Inputs {
        q,
        k: kk,
        v: vv,
        g: decay(rng, g_dtype, d, b, tt, h, k, strength),
        u: bonus.then(|| normal(rng, if g_dtype == DType::F32 { DType::F32 } else { dtype }, &[h, k], 0.5)),
        s0: with_s0.then(|| normal(rng, DType::F32, &[n_seqs, h, k, v], 1.0)),
        cu,
    }
}

/// Runs the chunked kernel on poisoned outputs and checks it against the float64 oracle.
fn check_case(gpu: &Gpu, what: &str, seed: u64, x: &Inputs, cfg: &LinearAttentionConfig) {
    let reference = oracle::linear_attention(cfg, &x.args()).unwrap();
    let dev = upload(gpu, x);
    let args = device_args(&dev, x.cu.as_deref());
    let o_shape = [x.q.shape()[0], x.q.shape()[1], x.q.shape()[2], x.v.shape()[3]];
    let n_seqs = x.cu.as_ref().map_or(x.q.shape()[0], |c| c.len() - 1);
    let s_shape = [n_seqs, x.q.shape()[2], x.q.shape()[3], x.v.shape()[3]];
    let mut o = gpu.alloc_poisoned(x.q.dtype(), &o_shape).unwrap();
    let mut fs = gpu.alloc_poisoned(DType::F32, &s_shape).unwrap();
    linear_attention_chunked_cuda_into(gpu, cfg, &args, &mut o, &mut fs).unwrap();
    let o = gpu.download(&o).unwrap().to_f64_vec();
    let fs = gpu.download(&fs).unwrap().to_f64_vec();
    let bound = x.q.dtype().rel_tolerance();
    for (name, out, r) in [("o", &o, &reference.o), ("final_state", &fs, &reference.final_state)] {
        assert_eq!(out.len(), r.len(), "{what}: {name} length (seed {seed})");
        let bad = out.iter().zip(r.iter()).position(|(a, b)| b.is_finite() && !a.is_finite());
        assert!(bad.is_none(), "{what}: {name}[{}] is not finite (seed {seed})", bad.unwrap_or(0));
        let e = rel_error(out, r);
        assert!(e <= bound, "{what}: {name} rel error {e:.3e} > {bound:.1e} (seed {seed})");
    }
}

#[test]
fn chunked_every_decay_bonus_dtype_and_head_dim_vs_oracle() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let dims = [(64, 64), (128, 128), (64, 128), (128, 64)];
    let mut i = 0;
    for dtype in [DType::F16, DType::BF16] {
        for (di, d) in DECAYS.into_iter().enumerate() {
            for bonus in [false, true] {
                let (k, v) = dims[i % dims.len()];
                i += 1;
                // 150 tokens: two full chunks and a partial one.
                let g_dtype = if di % 2 == 0 { DType::F32 } else { dtype };
                let x = make(&mut rng, dtype, (2, 150, 3, k, v), d, Strength::Typical, g_dtype, bonus, i % 3 != 0, None);
                let cfg = LinearAttentionConfig { scale: if bonus { Some(1.0) } else { None } };
                let what = format!("{dtype} {d:?} bonus={bonus} K={k} V={v}");
                check_case(&gpu, &what, seed, &x, &cfg);
            }
        }
    }
}

#[test]
fn chunked_lengths_around_the_chunk_size() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for tt in [1usize, 15, 16, 17, 63, 64, 65, 127, 128, 129, 200] {
        for bonus in [false, true] {
            let x = make(&mut rng, DType::F16, (1, tt, 2, 64, 64), DecayShape::PerTokenKey, Strength::Typical, DType::F32, bonus, true, None);
            check_case(&gpu, &format!("T={tt} bonus={bonus}"), seed, &x, &LinearAttentionConfig::default());
        }
    }
}

#[test]
fn chunked_strong_decays_down_to_minus_20() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for dtype in [DType::F16, DType::BF16] {
        for d in [DecayShape::PerTokenKey, DecayShape::PerToken, DecayShape::PerHeadKey] {
            for bonus in [false, true] {
                let x = make(&mut rng, dtype, (2, 333, 2, 128, 64), d, Strength::Strong, DType::F32, bonus, true, None);
                check_case(&gpu, &format!("strong {dtype} {d:?} bonus={bonus}"), seed, &x, &LinearAttentionConfig::default());
            }
        }
    }
}

#[test]
fn chunked_varlen_with_empty_sequences() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    // Empty first, middle and last sequences; lengths around chunk boundaries.
    let cu = vec![0, 0, 70, 70, 134, 135, 300, 300];
    let total = *cu.last().unwrap() as usize;
    for dtype in [DType::F16, DType::BF16] {
        for d in DECAYS {
            for bonus in [false, true] {
                let x = make(&mut rng, dtype, (1, total, 2, 64, 128), d, Strength::Typical, DType::F32, bonus, true, Some(cu.clone()));
                check_case(&gpu, &format!("varlen {dtype} {d:?} bonus={bonus}"), seed, &x, &LinearAttentionConfig::default());
            }
        }
    }
    // All sequences empty: the final states are the initial ones, o has no rows.
    let x = make(&mut rng, DType::F16, (1, 0, 2, 64, 64), DecayShape::PerHead, Strength::Typical, DType::F32, false, true, Some(vec![0, 0, 0]));
    check_case(&gpu, "varlen all empty", seed, &x, &LinearAttentionConfig::default());
}

#[test]
fn chunked_64k_tokens() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let tt = 65536;
    for (dtype, d, strength, bonus) in [
        (DType::BF16, DecayShape::PerTokenKey, Strength::Weak, false),
        (DType::F16, DecayShape::PerTokenKey, Strength::Typical, true),
        (DType::F16, DecayShape::None, Strength::Typical, false),
        (DType::BF16, DecayShape::PerToken, Strength::Strong, false),
    ] {
        let x = make(&mut rng, dtype, (1, tt, 1, 64, 64), d, strength, DType::F32, bonus, true, None);
        check_case(&gpu, &format!("64k {dtype} {d:?} {strength:?} bonus={bonus}"), seed, &x, &LinearAttentionConfig::default());
    }
}

#[test]
fn chunked_f16_state_beyond_f16_range() {
    // |S| ~ 1e5 > 65504: the f16 path rescales the state by a power of two before its f16
    // product. A small scale keeps o itself inside f16.
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for bonus in [false, true] {
        let mut x = make(&mut rng, DType::F16, (2, 300, 2, 128, 128), DecayShape::PerHead, Strength::Weak, DType::F32, bonus, true, None);
        x.s0 = Some(normal(&mut rng, DType::F32, &[2, 2, 128, 128], 1e5));
        let cfg = LinearAttentionConfig { scale: Some(1e-3) };
        check_case(&gpu, &format!("f16 large state bonus={bonus}"), seed, &x, &cfg);
    }
}

#[test]
fn chunked_matches_cpu_reference_at_realistic_shape() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for bonus in [false, true] {
        let x = make(&mut rng, DType::BF16, (2, 1000, 4, 128, 128), DecayShape::PerTokenKey, Strength::Typical, DType::BF16, bonus, true, None);
        let cfg = LinearAttentionConfig::default();
        let cpu = linear_attention_cpu(&cfg, &x.args()).unwrap();
        let dev = upload(&gpu, &x);
        let out = linear_attention_chunked_cuda(&gpu, &cfg, &device_args(&dev, None)).unwrap();
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
fn chunked_rejects_unsupported_input_with_typed_errors() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::from_time();
    let cfg = LinearAttentionConfig::default();
    let run = |x: &Inputs| {
        let dev = upload(&gpu, x);
        linear_attention_chunked_cuda(&gpu, &cfg, &device_args(&dev, x.cu.as_deref())).map(|_| ())
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
    x.g = Some(t(DType::F32, &[3], &[-0.1, -0.2, -0.3]));
    let e = run(&x).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.argument() == Some("g"), "g [3]: {e:?}");
    let mut x = make(&mut rng, DType::F16, (1, 10, 2, 64, 64), DecayShape::None, Strength::Typical, DType::F32, false, false, None);
    x.cu = Some(vec![0, 5, 9]);
    let e = run(&x).unwrap_err();
    assert!(e.argument() == Some("cu_seqlens"), "cu_seqlens not ending at total: {e:?}");
    // Caller-owned outputs of the wrong shape or dtype.
    let x = make(&mut rng, DType::F16, (1, 10, 2, 64, 64), DecayShape::None, Strength::Typical, DType::F32, false, false, None);
    let dev = upload(&gpu, &x);
    let args = device_args(&dev, None);
    let mut o = gpu.alloc(DType::BF16, &[1, 10, 2, 64]).unwrap();
    let mut fs = gpu.alloc(DType::F32, &[1, 2, 64, 64]).unwrap();
    let e = linear_attention_chunked_cuda_into(&gpu, &cfg, &args, &mut o, &mut fs).unwrap_err();
    assert!(e.argument() == Some("o"), "o bf16 for f16 q: {e:?}");
    let mut o = gpu.alloc(DType::F16, &[1, 10, 2, 64]).unwrap();
    let mut fs = gpu.alloc(DType::F32, &[1, 2, 64, 63]).unwrap();
    let e = linear_attention_chunked_cuda_into(&gpu, &cfg, &args, &mut o, &mut fs).unwrap_err();
    assert!(e.argument() == Some("final_state"), "final_state shape: {e:?}");
}
