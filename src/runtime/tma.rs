//! TMA tensor maps (`cuTensorMapEncodeTiled`) for the Hopper kernels and the TMA probe: the
//! one place the library calls the encoder.

use super::params::AkTensorMap;
use crate::error::{Error, Result};
use crate::tensor::DType;
use cudarc::driver::sys;

/// Shared-memory swizzle of a tensor map's box (`CUtensorMapSwizzle`): none, or 16-byte chunks
/// within 32, 64 or 128 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmaSwizzle {
    /// `CU_TENSOR_MAP_SWIZZLE_NONE`
    None,
    /// `CU_TENSOR_MAP_SWIZZLE_32B`
    B32,
    /// `CU_TENSOR_MAP_SWIZZLE_64B`
    B64,
    /// `CU_TENSOR_MAP_SWIZZLE_128B`
    B128,
}

/// A tiled tensor map over the device memory at `addr`: `dims` elements per dimension
/// (innermost first, rank 1..=5), `strides` bytes between steps of dimensions 1.. (rank - 1
/// values), `box_dim` elements per copy, `element_strides` traversal strides (the first
/// ignored), no interleave, no L2 promotion, zero out-of-bounds fill. The driver checks the
/// rest (alignment, ranges) and its refusal comes back as `Error::Cuda`.
pub(crate) fn encode_tiled(
    dtype: DType,
    addr: *const std::ffi::c_void,
    dims: &[u64],
    strides: &[u64],
    box_dim: &[u32],
    element_strides: &[u32],
    swizzle: TmaSwizzle,
) -> Result<AkTensorMap> {
    let rank = dims.len();
    if !(1..=5).contains(&rank) || strides.len() + 1 != rank || box_dim.len() != rank || element_strides.len() != rank {
        return Err(Error::invalid("dims", format!("rank {rank} with mismatched strides, box or element strides")));
    }
    let dt = match dtype {
        DType::F32 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
        DType::F16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        DType::BF16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        other => return Err(Error::unsupported("dtype", format!("tensor maps of f32, f16 or bf16, not {other}"))),
    };
    let swizzle = match swizzle {
        TmaSwizzle::None => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
        TmaSwizzle::B32 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_32B,
        TmaSwizzle::B64 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_64B,
        TmaSwizzle::B128 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
    };
    let mut map = sys::CUtensorMap { opaque: [0; 16] };
    // SAFETY: every array is valid for `rank` elements (`strides` for rank - 1, checked above);
    // `map` is a live, 64-byte aligned CUtensorMap (the type's alignment). The encoder only
    // reads the arrays and writes `map`; it does not touch `addr`, which the caller keeps alive
    // for as long as the map is used.
    let r = unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut map,
            dt,
            rank as u32,
            addr as *mut std::ffi::c_void, // the encoder only records the address
            dims.as_ptr(),
            strides.as_ptr(),
            box_dim.as_ptr(),
            element_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_NONE,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    if r != sys::CUresult::CUDA_SUCCESS {
        return Err(super::cuda_err("cuTensorMapEncodeTiled", cudarc::driver::DriverError(r)));
    }
    Ok(AkTensorMap { opaque: map.opaque })
}
