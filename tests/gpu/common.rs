//! What every GPU test module shares: the one device guard, tensor makers, upload / download,
//! tolerance checks, and the linear-attention inputs both linear modules build.

use attn_kernels::linear::{DecayShape, LinearArgs};
use attn_kernels::tensor::rel_error;
use attn_kernels::{DType, DeviceTensor, Error, Gpu, Tensor};
use attn_kernels_harness::check::Rng;

/// The device for the GPU test named `test` (its full name, `module::function`), or `None` after
/// `attn_kernels_harness::bench::gpu_for_test` printed why the test is skipped (and logged `ran` /
/// `skipped` to `ATTN_KERNELS_TEST_LOG`). Outputs of the recurrent kernels are allocated
/// poisoned (NaN) from then on, so an element a kernel fails to write fails its check.
///
/// Where `gpu.info().emulated`, the tests shrink their long sequences and repetitions (one line
/// each, marked `// emulated:`) but keep every kernel instantiation and code path.
pub fn gpu(test: &str) -> Option<Gpu> {
    let gpu = attn_kernels_harness::bench::gpu_for_test(test)?;
    attn_kernels::linear::cuda::set_poison_outputs(true);
    Some(gpu)
}

// ---------------------------------------------------------------------------------- tensors

/// A tensor of `dtype` from f32 values.
pub fn tensor(dtype: DType, shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(dtype, shape, v).unwrap()
}

/// An f32 tensor.
pub fn f32t(shape: &[usize], v: &[f32]) -> Tensor {
    tensor(DType::F32, shape, v)
}

/// Standard normal entries.
pub fn randn(rng: &mut Rng, dtype: DType, shape: &[usize]) -> Tensor {
    tensor(dtype, shape, &rng.normal_vec(shape.iter().product()))
}

/// Normal entries with standard deviation `scale`.
pub fn randn_scaled(rng: &mut Rng, dtype: DType, shape: &[usize], scale: f32) -> Tensor {
    let n = shape.iter().product();
    tensor(dtype, shape, &rng.normal_vec(n).iter().map(|x| x * scale).collect::<Vec<_>>())
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

pub fn up(gpu: &Gpu, t: &Tensor) -> DeviceTensor {
    gpu.upload(t).unwrap()
}

pub fn down(gpu: &Gpu, t: &DeviceTensor) -> Tensor {
    gpu.download(t).unwrap()
}

// ------------------------------------------------------------------------------- tolerances

/// Relative L2 error of `got` against an f64 reference within `tol`.
pub fn assert_close(what: &str, got: &Tensor, want: &[f64], tol: f64, seed: u64) {
    let r = rel_error(&got.to_f64_vec(), want);
    assert!(r <= tol, "{what}: rel error {r:.3e} > {tol:.1e} (seed {seed})");
}

/// Output `name` against its reference: same length, finite where the reference is finite
/// (poisoned outputs are NaN), `-inf` exactly where the reference is `-inf`, and relative L2
/// error within `tol`.
pub fn compare(what: &str, seed: u64, name: &str, out: &Tensor, reference: &[f64], tol: f64) {
    let got = out.to_f64_vec();
    assert_eq!(got.len(), reference.len(), "{what}: {name} length (seed {seed})");
    for (i, (&g, &r)) in got.iter().zip(reference).enumerate() {
        assert!(!r.is_finite() || g.is_finite(), "{what} (seed {seed}): {name}[{i}] = {g}, reference {r} (poison or NaN)");
        if r == f64::NEG_INFINITY {
            assert!(g == f64::NEG_INFINITY, "{what} (seed {seed}): {name}[{i}] = {g}, reference -inf");
        }
    }
    let e = rel_error(&got, reference);
    assert!(e <= tol, "{what} (seed {seed}): {name} rel error {e:.3e} > {tol:.1e}");
}

/// The argument an error names ("" if none).
pub fn arg_of(e: &Error) -> &str {
    e.argument().unwrap_or("")
}

// ------------------------------------------------------------------------ linear attention

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

/// Host inputs of one `linear_attention` call.
pub struct LinCase {
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub g: Option<Tensor>,
    pub u: Option<Tensor>,
    pub s0: Option<Tensor>,
    pub cu: Option<Vec<i32>>,
}

impl LinCase {
    pub fn host(&self) -> LinearArgs<'_, Tensor> {
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

/// The device copy of a [`LinCase`] (index data stays on the host).
pub struct DevLin {
    pub q: DeviceTensor,
    pub k: DeviceTensor,
    pub v: DeviceTensor,
    pub g: Option<DeviceTensor>,
    pub u: Option<DeviceTensor>,
    pub s0: Option<DeviceTensor>,
}

impl DevLin {
    pub fn new(gpu: &Gpu, c: &LinCase) -> DevLin {
        DevLin {
            q: up(gpu, &c.q),
            k: up(gpu, &c.k),
            v: up(gpu, &c.v),
            g: c.g.as_ref().map(|t| up(gpu, t)),
            u: c.u.as_ref().map(|t| up(gpu, t)),
            s0: c.s0.as_ref().map(|t| up(gpu, t)),
        }
    }
    pub fn args<'a>(&'a self, cu: Option<&'a [i32]>) -> LinearArgs<'a, DeviceTensor> {
        LinearArgs {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            g: self.g.as_ref(),
            u: self.u.as_ref(),
            initial_state: self.s0.as_ref(),
            cu_seqlens: cu,
        }
    }
}
