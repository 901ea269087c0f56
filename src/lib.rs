//! attn-kernels: hand-written CUDA kernels for the attention variants long-context models need
//! (fused differential attention, ALiBi / scaled-RoPE flash attention, linear-attention
//! recurrences), each with a CPU reference, behind safe Rust APIs.
//!
//! The contract of every operation is `docs/ops.md`; see the README for a guide. Layout of the
//! crate:
//! - [`tensor`]: dtypes, host tensors, shared validation.
//! - [`runtime`]: the only `unsafe` layer: driver check, device, module cache, launches.
//! - one module per kernel family ([`rope`], [`attention`], [`diff_attention`], [`linear`],
//!   [`decode`]): config, validation, CPU reference, CUDA path, and (feature `oracle`) the
//!   naive float64 oracle the tests compare against.
//!
//! Case files, the `check` table, the test and bench helpers and the `attn-kernels` CLI live in
//! the `attn-kernels-harness` crate of this workspace; the library does not depend on it.
//!
//! Features: `dynamic-loading` (default: the driver is loaded at run time), `cuda-XXXXX` (the
//! CUDA version of cudarc's bindings, `cuda-13000` by default), `oracle`, `emulator`,
//! `require-kernels`; see Cargo.toml and the README.

#![deny(unsafe_code)]

pub mod attention;
pub mod decode;
pub mod diff_attention;
pub mod dtype;
pub mod error;
pub mod linear;
pub mod rope;
// The one layer allowed `unsafe` (driver calls, launches); each block carries its `// SAFETY:`.
#[allow(unsafe_code)]
pub mod runtime;
pub mod tensor;

pub use error::{Error, Result};
pub use runtime::{DeviceRead, DeviceTensor, DeviceView, DeviceViewMut, DeviceWrite, Gpu};
pub use tensor::{DType, Tensor, TensorInfo};
