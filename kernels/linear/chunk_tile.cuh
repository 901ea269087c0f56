// Tensor-core primitives for the chunked linear-attention prefill: ldmatrix, mma.sync
// m16n8k16 (f16 / bf16 in, f32 accumulate) and packing helpers. Fragment layouts are the PTX
// ones: with g = lane / 4 and t = lane % 4,
//   A 16x16: a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
//   B 16x8 : b0 (k 2t..2t+1, n g)  b1 (k 2t+8.., n g)
//   C 16x8 : c0 c1 (g, 2t..2t+1)   c2 c3 (g+8, 2t..2t+1)
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include "common/ptx.cuh"

namespace chunk_tile {

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return ak::ptx::smem_addr(p); }

// Four 8x8 b16 matrices; lane l gives the address of row (l % 8) of matrix (l / 8).
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void* p) {
    ak::ptx::ldmatrix_x4(*reinterpret_cast<uint32_t(*)[4]>(r), smem_addr(p));
}

// Same, each 8x8 matrix transposed on the way into registers.
__device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], const void* p) {
    ak::ptx::ldmatrix_x4_trans(*reinterpret_cast<uint32_t(*)[4]>(r), smem_addr(p));
}

// Hint: bring the 128-byte line holding p into L2 (no register, no completion to wait for).
__device__ __forceinline__ void prefetch_l2(const void* p) { ak::ptx::prefetch_l2(p); }

template <typename T> struct Mma;

template <> struct Mma<__half> {
    // c += a * b  (16x16 by 16x8, f32 accumulators)
    static __device__ __forceinline__ void run(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
        ak::ptx::mma_m16n8k16_f16(*reinterpret_cast<float(*)[4]>(c), *reinterpret_cast<const uint32_t(*)[4]>(a), b0, b1);
    }
    static __device__ __forceinline__ uint32_t pack(float x, float y) {
        __half2 h = __floats2half2_rn(x, y);
        return *reinterpret_cast<uint32_t*>(&h);
    }
    static __device__ __forceinline__ float2 unpack(uint32_t r) {
        return __half22float2(*reinterpret_cast<__half2*>(&r));
    }
};

template <> struct Mma<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
        ak::ptx::mma_m16n8k16_bf16(*reinterpret_cast<float(*)[4]>(c), *reinterpret_cast<const uint32_t(*)[4]>(a), b0, b1);
    }
    static __device__ __forceinline__ uint32_t pack(float x, float y) {
        __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
        return *reinterpret_cast<uint32_t*>(&h);
    }
    static __device__ __forceinline__ float2 unpack(uint32_t r) {
        return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&r));
    }
};

// A packed pair multiplied elementwise by (s.x, s.y), rounded once back to T.
template <typename T>
__device__ __forceinline__ uint32_t scale_pair(uint32_t r, float2 s) {
    float2 f = Mma<T>::unpack(r);
    return Mma<T>::pack(f.x * s.x, f.y * s.y);
}

}  // namespace chunk_tile
