//! attn-kernels ops on [`candle_core::Tensor`]: `attention` (dense and varlen), paged / contiguous
//! KV-cache `decode`, `diff_attention` v1 / v2, standalone `rope`, and the linear recurrences
//! `linear_attention` and `delta_rule`.
//!
//! Every op is a candle custom op (`CustomOp1` / `CustomOp3`, applied with `apply_op*_no_bwd`:
//! forward only, no gradient). The op struct carries the library's config (ALiBi, RoPE with every
//! scaling, windows, softcap, GQA come with it), the host index data (`cu_seqlens`, position ids,
//! block tables, cache lengths) and the operands beyond candle's three (ALiBi slopes, lambda,
//! decays, states), which must live on q's device. Index data stays on the host so the library
//! validates every index before anything runs; errors are candle errors carrying the library's
//! message, which names the argument at fault.
//!
//! Outputs past the first (`lse`, `final_state`) are returned as tensors too: candle's custom ops
//! return one storage, so the op hands the others over beside it (no copy).
//!
//! # Devices
//! - **CPU** (always): the library's CPU references. candle's `CpuStorage` is copied into the
//!   library's own host tensor type (gathering any strided, offset or broadcast layout) and the
//!   output vectors move back into candle without a copy. Zero-copy *inputs* are not possible on
//!   the CPU: the references take the library's owned `attn_kernels::Tensor`, a different type from
//!   candle's storage.
//! - **CUDA** (feature `cuda`): zero-copy. q, k, v and every operand are borrowed views
//!   (`attn_kernels::DeviceView`) of candle's `CudaSlice`s at their layout's offset and strides;
//!   outputs are allocated by candle's device; kernels run on candle's stream of the device, so
//!   they are ordered with candle's own work. Every op has this path. Tensors whose layout the
//!   kernels cannot address (strided where a kernel takes packed tensors only, a last
//!   dimension that is not contiguous, rows off 16-byte alignment) are copied first.
//!
//! # Features
//! - default: CPU only; attn-kernels with `dynamic-loading` and `cuda-13000` (its defaults).
//! - `cuda`: candle-core's `cuda` and the zero-copy CUDA paths. Build with
//!   `--no-default-features --features cuda`: candle's `cuda` enables cudarc `dynamic-linking`,
//!   which cannot be combined with attn-kernels' `dynamic-loading`, and picks the CUDA version
//!   from the build system's nvcc.

#![deny(unsafe_op_in_unsafe_fn)]

mod attention;
mod common;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "cuda")]
mod cuda_ops;
mod decode;
mod linear;
mod rope;

pub use attention::{attention, attention_with_lse, diff_attention, diff_attention_with_lse, AttentionOptions};
pub use decode::{decode, decode_with_lse, CacheIndex};
pub use linear::{delta_rule, linear_attention, RecurrentOptions};
pub use rope::rope;

/// The library, re-exported for its config types (`attention::AttentionConfig`,
/// `rope::{RopeConfig, RopeOpConfig}`, `diff_attention::DiffAttentionConfig`,
/// `decode::DecodeOptions`, `linear::{LinearAttentionConfig, DeltaRuleConfig}`).
pub use attn_kernels;
pub use attn_kernels::attention::AttentionConfig;
pub use attn_kernels::decode::DecodeOptions;
pub use attn_kernels::diff_attention::{DiffAttentionConfig, DiffVariant};
pub use attn_kernels::linear::{DeltaRuleConfig, LinearAttentionConfig};
pub use attn_kernels::rope::{RopeConfig, RopeOpConfig};
