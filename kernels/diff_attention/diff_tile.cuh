// Thin layer over the shared tile primitives (common/tile.cuh: cp.async, ldmatrix, mma.sync
// m16n8k16, quad/warp reductions) under the names the differential-attention kernels use, plus
// the one thing tile.cuh lacks: the XOR swizzle of their shared-memory tiles.
// Tiles are row-major with 16-byte chunks XOR-swizzled by (row % 8), so the eight row addresses
// of one ldmatrix 8x8 matrix (and of one cp.async pass over a row) hit distinct banks.
#pragma once
#include "common/dtype.cuh"
#include "common/tile.cuh"

namespace diff {

using ak::cp_async_commit;
using ak::cp_async_wait;
using ak::ldmatrix_x4;
using ak::ldmatrix_x4_trans;
using ak::quad_max;
using ak::quad_sum;
using ak::warp_max;
using ak::warp_sum;

// 16-byte async copy global -> shared; when !valid the destination is zero-filled.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
    ak::cp_async_16(smem, gmem, valid);
}

// c += a (16x16, row) * b (16x8, col), f32 accumulators.
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    ak::Mma<T>::run(c, a, b0, b1);
}

// f16 / bf16 element conversions.
template <typename T> struct Elem {
    static __device__ __forceinline__ float to_f(T x) { return to_float(x); }
    static __device__ __forceinline__ T from_f(float x) { return from_float<T>(x); }
    // Round two floats and pack them, `lo` in the low 16 bits.
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return ak::Mma<T>::pack(lo, hi); }
    static __device__ __forceinline__ float2 unpack(uint32_t u) { return ak::unpack2<T>(u); }
};

// Element offset of (row, col) in a swizzled row-major tile with COLS columns (COLS % 64 == 0).
template <int COLS> __device__ __forceinline__ int swz(int row, int col) {
    static_assert(COLS % 64 == 0, "the swizzle needs at least eight 16-byte chunks per row");
    return row * COLS + (((col >> 3) ^ (row & 7)) << 3) + (col & 7);
}

}  // namespace diff
