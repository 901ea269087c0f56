//! What the GPU test modules share: everything in `tests/common/mod.rs` (the device guard
//! `gpu`, tensor makers, typed-error and tolerance checks), re-exported here, plus upload /
//! download, the element-wise output check, and the linear-attention inputs both linear modules
//! build.
//!
//! Where `gpu.info().emulated`, the tests shrink their long sequences and repetitions (one line
//! each, marked `// emulated:`) but keep every kernel instantiation and code path.

#[path = "../common/mod.rs"]
mod shared;
pub use shared::*;

use attn_kernels::linear::LinearArgs;
use attn_kernels::tensor::rel_error;
use attn_kernels::{DeviceTensor, Gpu, Tensor};

/// Whether the sm_90a prefill kernels should run on `gpu` (compute capability 9.0, the mma.sync
/// path not forced by `ATTN_KERNELS_ATTENTION_PATH=mma`); printed for the test log.
pub fn expect_hopper_path(gpu: &Gpu, test: &str) -> bool {
    let forced_mma = std::env::var("ATTN_KERNELS_ATTENTION_PATH").is_ok_and(|v| v == "mma");
    println!("{test}: compute capability {:?}", gpu.info().compute_capability);
    gpu.info().compute_capability == (9, 0) && !forced_mma
}

pub fn up(gpu: &Gpu, t: &Tensor) -> DeviceTensor {
    gpu.upload(t).unwrap()
}

pub fn down(gpu: &Gpu, t: &DeviceTensor) -> Tensor {
    gpu.download(t).unwrap()
}

// ------------------------------------------------------------------------------- tolerances

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

// ------------------------------------------------------------------------ linear attention

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
