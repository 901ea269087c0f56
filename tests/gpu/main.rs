//! The GPU tests: every CUDA entry point against the float64 oracles of the spec (and the CPU
//! paths), one module per op family, one binary (`cargo test --release --test gpu`).
//!
//! Each test asks `common::gpu` for a device: the GPU, or the emulated device
//! (`ATTN_KERNELS_DEVICE=emu`, the kernels run on the CPU with GPU semantics and checkers), or
//! none, in which case it prints why and returns. On the emulated device the long-sequence
//! sizes and the repetition counts shrink (each on one line marked `// emulated:`) while every
//! kernel instantiation, mask, feature flag, dtype and head dim stays covered.
//!
//! Inputs are random and fresh each run; every failure prints the seed, and
//! `ATTN_KERNELS_SEED=<seed>` replays it. Outputs are poisoned (NaN) before the kernels run, so
//! an element a kernel fails to write fails its check.

mod common;

mod attention;
mod cache;
mod concurrency;
mod decode;
mod diff_attention;
mod kernel_list;
mod linear;
mod linear_chunked;
mod rope;
mod views;
