//! attn-kernels: hand-written CUDA kernels for the attention variants long-context models need
//! (fused differential attention, ALiBi / scaled-RoPE flash attention, linear-attention
//! recurrences), each with a CPU reference, behind safe Rust APIs.
//!
//! The contract of every operation is `spec/ops.md` (the project's spec); see the README for a
//! guide. Layout of the crate:
//! - [`tensor`]: dtypes, host tensors, shared validation.
//! - [`runtime`]: the only `unsafe` layer: driver check, device, module cache, launches.
//! - one module per kernel family ([`rope`], ...): config, validation, CPU reference, CUDA path.
//! - [`case`] and [`check`]: the case-file contract and the self-check behind the CLI.

pub mod attention;
pub mod bench;
pub mod case;
pub mod check;
pub mod decode;
pub mod diff_attention;
pub mod error;
pub mod linear;
pub mod rope;
pub mod runtime;
pub mod tensor;

pub use case::Device;
pub use error::{Error, Result};
pub use runtime::{DeviceTensor, Gpu};
pub use tensor::{DType, Tensor, TensorInfo};
