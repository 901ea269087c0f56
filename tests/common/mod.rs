//! What the test binaries share: the device guard, tensor makers, typed-error and tolerance
//! checks, and the inputs several families build the same way. A top-level test file uses it
//! with `mod common;`; a test binary in a folder (`tests/gpu/`, `tests/hostile/`) with
//! `#[path = "../common/mod.rs"]`. Each binary uses only part of it, hence the `dead_code` allow.
//!
//! Random inputs come from [`Rng`], fresh each run; a failing test prints its seed and
//! `ATTN_KERNELS_SEED=<seed>` replays it.

#![allow(dead_code)]

use attn_kernels::attention::AttentionConfig;
use attn_kernels::linear::DecayShape;
use attn_kernels::rope::RopeConfig;
use attn_kernels::tensor::rel_error;
use attn_kernels::{DType, Error, Gpu, Tensor, TensorInfo};
use attn_kernels_harness::case::Device;
use attn_kernels_harness::check::Rng;
use serde_json::json;

// ----------------------------------------------------------------------------------- devices

/// The device for the GPU test named `test`, or `None` after printing why the test is skipped:
/// [`attn_kernels_harness::bench::gpu_for_test`], which picks the GPU or the emulated device
/// (`ATTN_KERNELS_DEVICE`) and logs `ran` / `skipped` under that name to `ATTN_KERNELS_TEST_LOG`.
/// A test in a module names itself `concat!(module_path!(), "::function")`.
pub fn gpu(test: &str) -> Option<Gpu> {
    attn_kernels_harness::bench::gpu_for_test(test)
}

/// The CPU, plus the device of [`gpu`] when there is one: for tests that run the same case
/// everywhere.
pub fn devices(test: &str) -> Vec<Device> {
    let mut v = vec![Device::Cpu];
    if let Some(g) = gpu(test) {
        v.push(Device::Cuda(g));
    }
    v
}

// ----------------------------------------------------------------------------------- tensors

/// Every floating-point dtype.
pub const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// A tensor of `dtype` from f32 values.
pub fn tensor(dtype: DType, shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(dtype, shape, v).unwrap()
}

/// An f32 tensor.
pub fn f32t(shape: &[usize], v: &[f32]) -> Tensor {
    tensor(DType::F32, shape, v)
}

/// An i32 tensor.
pub fn i32t(shape: &[usize], v: &[i32]) -> Tensor {
    Tensor::from_i32(shape, v).unwrap()
}

/// A rank-1 i32 tensor (cu_seqlens, position ids, cache lengths in case files).
pub fn ids(v: &[i32]) -> Tensor {
    i32t(&[v.len()], v)
}

/// `n` normal values with standard deviation `scale`.
pub fn normal_scaled(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    rng.normal_vec(n).into_iter().map(|x| x * scale).collect()
}

/// Standard normal entries.
pub fn randn(rng: &mut Rng, dtype: DType, shape: &[usize]) -> Tensor {
    tensor(dtype, shape, &rng.normal_vec(shape.iter().product()))
}

/// Normal entries with standard deviation `scale`.
pub fn randn_scaled(rng: &mut Rng, dtype: DType, shape: &[usize], scale: f32) -> Tensor {
    tensor(dtype, shape, &normal_scaled(rng, shape.iter().product(), scale))
}

/// Uniform entries in `[lo, hi)`.
pub fn uniform(rng: &mut Rng, dtype: DType, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    tensor(dtype, shape, &rng.uniform_vec(shape.iter().product(), lo, hi))
}

/// Fisher-Yates shuffle (block ids of paged caches, slot ids of state pools).
pub fn shuffle<T>(rng: &mut Rng, x: &mut [T]) {
    for i in (1..x.len()).rev() {
        x.swap(i, rng.below(i + 1));
    }
}

/// The listed heads of a `[.., H, W]` tensor, in that order, as a `[.., heads.len(), W]` tensor.
pub fn pick_heads(t: &Tensor, heads: &[usize]) -> Tensor {
    let s = t.shape();
    let (hh, w) = (s[s.len() - 2], s[s.len() - 1]);
    let rows: usize = s[..s.len() - 2].iter().product();
    let x = t.to_f32_vec();
    let mut y = Vec::with_capacity(rows * heads.len() * w);
    for r in 0..rows {
        for &h in heads {
            y.extend_from_slice(&x[(r * hh + h) * w..][..w]);
        }
    }
    let mut shape = s.to_vec();
    let l = shape.len();
    shape[l - 2] = heads.len();
    tensor(t.dtype(), &shape, &y)
}

// ------------------------------------------------------------------------------ typed errors

/// The variant of a typed [`Error`], as the tests name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrKind {
    Shape,
    DType,
    Invalid,
    Config,
    Case,
    Unsupported,
}

impl ErrKind {
    /// The kind of `e` (`None` for the variants no validation returns: driver, I/O, ...).
    pub fn of(e: &Error) -> Option<ErrKind> {
        Some(match e {
            Error::Shape { .. } => ErrKind::Shape,
            Error::DType { .. } => ErrKind::DType,
            Error::InvalidArgument { .. } => ErrKind::Invalid,
            Error::Config { .. } => ErrKind::Config,
            Error::Case(_) => ErrKind::Case,
            Error::Unsupported { .. } => ErrKind::Unsupported,
            _ => return None,
        })
    }
}

/// The argument (or config key) an error names ("" if none).
pub fn arg_of(e: &Error) -> &str {
    e.argument().unwrap_or("")
}

/// `e` is of `kind`, names `arg`, and its message names `arg` too (so an engine that shows only
/// the message still points at the culprit).
pub fn assert_err(e: &Error, kind: ErrKind, arg: &str, what: &str) {
    assert_eq!(ErrKind::of(e), Some(kind), "{what}: expected {kind:?} naming `{arg}`, got {e:?}");
    assert_eq!(e.argument(), Some(arg), "{what}: wrong argument in {e}");
    assert!(e.to_string().contains(arg), "{what}: message must name `{arg}`: {e}");
}

/// `r` is an error of `kind` naming `arg` (see [`assert_err`]); returns it.
pub fn expect_err<T: std::fmt::Debug>(r: attn_kernels::Result<T>, kind: ErrKind, arg: &str, what: &str) -> Error {
    match r {
        Ok(v) => panic!("{what}: expected {kind:?} naming `{arg}`, got Ok({v:?})"),
        Err(e) => {
            assert_err(&e, kind, arg, what);
            e
        }
    }
}

// -------------------------------------------------------------------------------- tolerances

/// `got` against an f64 reference: same length, relative L2 error within `tol` (the error is
/// printed, shown with `--nocapture`).
pub fn assert_close(what: &str, got: &Tensor, want: &[f64], tol: f64, seed: u64) {
    assert_eq!(got.numel(), want.len(), "{what}: length (seed {seed})");
    let r = rel_error(&got.to_f64_vec(), want);
    eprintln!("{what}: rel error {r:.2e} (bound {tol:.1e})");
    assert!(r <= tol, "{what}: rel error {r:.3e} > {tol:.1e} (seed {seed})");
}

// ---------------------------------------------------------------------------- configurations

/// Plain RoPE over `rotary_dim` dims, base 10000; GPT-J pairs when `interleaved`.
pub fn rope(rotary_dim: usize, interleaved: bool) -> RopeConfig {
    RopeConfig { interleaved, ..RopeConfig::new(rotary_dim, 10000.0) }
}

/// YaRN RoPE over `d` dims (factor 4 over 1024 original positions), base 10000.
pub fn yarn(d: usize) -> RopeConfig {
    serde_json::from_value(json!({
        "rotary_dim": d, "theta": 10000.0, "max_position_embeddings": 4096,
        "scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024}
    }))
    .unwrap()
}

/// An attention config with the default scale; `window_*` -1 is unbounded, `softcap` 0 is off.
pub fn attn_cfg(causal: bool, window_left: i64, window_right: i64, softcap: f64, rope: Option<RopeConfig>) -> AttentionConfig {
    AttentionConfig { softmax_scale: None, causal, window_left, window_right, softcap, rope }
}

// -------------------------------------------------------------------------- linear attention

/// Every layout of the decay `g`.
pub const DECAY_SHAPES: [DecayShape; 5] =
    [DecayShape::None, DecayShape::PerTokenKey, DecayShape::PerToken, DecayShape::PerHeadKey, DecayShape::PerHead];

/// Shape of `g` in layout `d` for `q [b, t, h, k]` (`None`: no decay).
pub fn g_shape(d: DecayShape, b: usize, t: usize, h: usize, k: usize) -> Option<Vec<usize>> {
    match d {
        DecayShape::None => None,
        DecayShape::PerTokenKey => Some(vec![b, t, h, k]),
        DecayShape::PerToken => Some(vec![b, t, h]),
        DecayShape::PerHeadKey => Some(vec![h, k]),
        DecayShape::PerHead => Some(vec![h]),
    }
}

/// Each `[.., k]` row of `x` scaled to unit L2 norm (delta-rule keys).
pub fn unit_rows(x: &[f32], k: usize) -> Vec<f32> {
    x.chunks(k)
        .flat_map(|r| {
            let n = r.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-6);
            r.iter().map(move |a| a / n)
        })
        .collect()
}
