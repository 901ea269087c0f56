//! attn-kernels-harness: everything around the `attn-kernels` library that engines do not need.
//!
//! - [`case`]: case files (safetensors with a JSON config) and op dispatch by name.
//! - [`cases`]: per family, reading its case files, its `check` rows, and the adapters from a
//!   case to the library's float64 oracles (the library's `oracle` feature).
//! - [`check`]: the `check` table behind the CLI, and [`Rng`] for random inputs.
//! - [`bench`]: benchmark helpers and [`gpu_for_test`], the device guard of every GPU test.
//!
//! The `attn-kernels` binary (the CLI, docs/ops.md section 7) is this package's `src/main.rs`.

pub mod bench;
pub mod case;
pub mod cases;
pub mod check;

pub use bench::gpu_for_test;
pub use case::{Case, Device, Tensors};
pub use check::Rng;
