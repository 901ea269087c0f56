// Element-type conversions, the only ones the kernels use: load as f32, store with one rounding
// to nearest even. T is float, __half or __nv_bfloat16 (AkDType AK_F32, AK_F16, AK_BF16).
#pragma once
#include <stdint.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include "params.h"

namespace ak {

// One element.
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Two 16-bit elements packed in one 32-bit word, `lo` in the low half (the register form of
// mma.sync operands and of 4-byte loads and stores).
template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
}
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
}

template <typename T> __device__ __forceinline__ float2 unpack2(uint32_t u);
template <> __device__ __forceinline__ float2 unpack2<__half>(uint32_t u) {
    return __half22float2(*reinterpret_cast<const __half2*>(&u));
}
template <> __device__ __forceinline__ float2 unpack2<__nv_bfloat16>(uint32_t u) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u));
}

// Element i of a tensor whose type is only known at run time (an AkDType code, validated on the
// host). For uniform branches outside the hot loops.
__device__ __forceinline__ float load_any(const void* p, long long i, int dtype) {
    if (dtype == AK_F32) return static_cast<const float*>(p)[i];
    if (dtype == AK_F16) return to_float(static_cast<const __half*>(p)[i]);
    return to_float(static_cast<const __nv_bfloat16*>(p)[i]);
}

__device__ __forceinline__ void store_any(void* p, long long i, int dtype, float x) {
    if (dtype == AK_F16) static_cast<__half*>(p)[i] = from_float<__half>(x);
    else if (dtype == AK_BF16) static_cast<__nv_bfloat16*>(p)[i] = from_float<__nv_bfloat16>(x);
    else static_cast<float*>(p)[i] = x;
}

}  // namespace ak
