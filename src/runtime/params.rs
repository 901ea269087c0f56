//! The kernel parameter structs: bindgen's view of `kernels/params.h`, checked in as
//! `params_bindings.rs` (no bindgen runs at build time).
//!
//! `tests/bindings.rs` runs bindgen on the header and proves the checked-in file identical to
//! its output; with `ATTN_KERNELS_UPDATE_BINDINGS=1` it rewrites the file instead (the way to
//! refresh it after editing the header).
#![allow(non_camel_case_types, non_upper_case_globals, non_snake_case, dead_code, clippy::all)]

// bindgen's generated `Default` impls zero the structs with `unsafe { mem::zeroed() }` (no
// `// SAFETY:` lines in generated code): all-zero is a valid value of these plain structs (null
// pointers, zero integers and floats).
include!("params_bindings.rs");

/// Where the bindings come from, for `attn-kernels info`.
pub const BINDINGS_STATUS: &str = "checked-in src/runtime/params_bindings.rs (tests/bindings.rs checks it against kernels/params.h)";

/// Marks a parameter struct as passable by value to a kernel.
///
/// # Safety
/// Implement only for `#[repr(C)]` plain-old-data structs generated from `kernels/params.h`,
/// whose layout nvcc sees identically.
pub unsafe trait KernelParams: Copy {}

macro_rules! kernel_params {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: bindgen emits these as #[repr(C)] POD structs from the header nvcc compiles.
        unsafe impl KernelParams for $t {}
        // SAFETY: same layout argument; cudarc copies the bytes into the launch's argument buffer.
        unsafe impl cudarc::driver::DeviceRepr for $t {}
    )*};
}

// Each family appends its structs here.
kernel_params!(AkRopeParams, AkFillParams, AkCopyParams);
kernel_params!(AkChunkedParams);
kernel_params!(AkAttnParams, AkAttnSm90Params);
kernel_params!(AkDecodeParams, AkDecodeCombineParams, AkMergeStatesParams, AkAppendKvParams);
kernel_params!(AkLinearParams, AkRwkv4Params);
kernel_params!(AkDiffAttnParams, AkDiffSm90Params, AkDiffEpilogueParams, AkDiffDecodeParams);
kernel_params!(AkProbeParams);
