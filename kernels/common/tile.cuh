// Tile primitives for tensor-core kernels on sm_80+ (Ampere, Hopper through mma.sync):
// cp.async global->shared copies, ldmatrix fragment loads, mma.sync m16n8k16 (f16/bf16 in,
// f32 accumulate), and the warp reductions an online softmax needs.
//
// Fragment layouts of mma.sync.m16n8k16.row.col (per warp; g = lane / 4, t = lane % 4):
//   A 16x16 (row-major), 4 regs of 2 elements, low half = lower column:
//       a0: (row g,   cols 2t, 2t+1)      a1: (row g+8, cols 2t, 2t+1)
//       a2: (row g,   cols 2t+8, 2t+9)    a3: (row g+8, cols 2t+8, 2t+9)
//   B 16x8 (k x n), 2 regs:   b0: (k 2t, 2t+1; n g)   b1: (k 2t+8, 2t+9; n g)
//   C/D 16x8 f32, 4 floats:   c0, c1: (row g, cols 2t, 2t+1)   c2, c3: (row g+8, same cols)
// So the accumulator of two adjacent n-tiles (c of n-tile 2k and 2k+1), rounded and packed
// pairwise, is exactly the A fragment of k-step k: the P = softmax(S) tile feeds P.V without
// passing through shared memory (see pack_c_as_a).
//
// ldmatrix.x4 loads four 8x8 matrices of 16-bit elements; lane l gives the shared address of
// row (l % 8) of matrix (l / 8), and register i of every lane receives matrix i, with lane l
// holding row l/4, columns 2(l%4), 2(l%4)+1 (.trans: column l/4, rows 2(l%4), 2(l%4)+1).
// The *_addr helpers below compute the per-lane row and column for the three uses.
#pragma once
#include <stdint.h>
#include "common/dtype.cuh"
#include "common/ptx.cuh"

namespace ak {

// ------------------------------------------------------------------------- cp.async

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return ptx::smem_addr(p); }

// Copy 16 bytes global -> shared, bypassing L1. When `valid` is false the 16 destination bytes
// are zero-filled and `src` is not read (it must still be a mapped address; pass a tile base).
__device__ __forceinline__ void cp_async_16(void* dst_smem, const void* src, bool valid) {
    ptx::cp_async_cg_16(smem_u32(dst_smem), src, valid ? 16 : 0);
}

__device__ __forceinline__ void cp_async_commit() { ptx::cp_async_commit(); }

// Wait until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    ptx::cp_async_wait<N>();
}

// Cooperative copy of a ROWS x COLS tile (16-bit elements, COLS % 8 == 0) by NT threads:
// global row r at `src + r * src_row_stride`, shared row r at `dst + r * DST_STRIDE`.
// Rows >= rows_valid are zero-filled. Each thread keeps one 16-byte column chunk for all its
// rows, so the address arithmetic is one add per row.
template <int ROWS, int COLS, int DST_STRIDE, int NT, typename T>
__device__ __forceinline__ void load_tile_async(T* dst, const T* src, long long src_row_stride, int rows_valid,
                                                int tid) {
    constexpr int CHUNKS = COLS / 8;             // 16-byte chunks per row
    constexpr int ROWS_PER_PASS = NT / CHUNKS;   // rows covered by one pass of all threads
    static_assert(COLS % 8 == 0 && NT % CHUNKS == 0 && ROWS % ROWS_PER_PASS == 0, "tile shape");
    const int row = tid / CHUNKS;
    const int col = (tid % CHUNKS) * 8;
    const T* s = src + row * src_row_stride + col;
    T* d = dst + row * DST_STRIDE + col;
#pragma unroll
    for (int pass = 0; pass < ROWS / ROWS_PER_PASS; ++pass) {
        const int r = row + pass * ROWS_PER_PASS;
        cp_async_16(d, r < rows_valid ? s : src, r < rows_valid);
        s += ROWS_PER_PASS * src_row_stride;
        d += ROWS_PER_PASS * DST_STRIDE;
    }
}

// ------------------------------------------------------------------------- ldmatrix

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
    ptx::ldmatrix_x4(r, smem_u32(smem_row));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
    ptx::ldmatrix_x4_trans(r, smem_u32(smem_row));
}

// Per-lane (row, col) offsets inside a 16x16 tile for the three ldmatrix.x4 patterns:
// A operand from a row-major [m][k] tile -> regs a0..a3.
__device__ __forceinline__ int a_row(int lane) { return lane & 15; }
__device__ __forceinline__ int a_col(int lane) { return (lane >> 4) << 3; }
// B operand of two n-tiles from an [n][k] tile (B = tile^T, e.g. K for Q.K^T)
// -> regs {b0, b1} of n-tile 0, then {b0, b1} of n-tile 1.
__device__ __forceinline__ int bt_row(int lane) { return (lane & 7) + ((lane >> 4) << 3); }
__device__ __forceinline__ int bt_col(int lane) { return ((lane >> 3) & 1) << 3; }
// B operand of two n-tiles from a [k][n] tile with .trans (e.g. V for P.V)
// -> regs {b0, b1} of n-tile 0, then {b0, b1} of n-tile 1.
__device__ __forceinline__ int bk_row(int lane) { return (lane & 7) + (((lane >> 3) & 1) << 3); }
__device__ __forceinline__ int bk_col(int lane) { return (lane >> 4) << 3; }

// ------------------------------------------------------------------------- mma

template <typename T>
struct Mma;

template <>
struct Mma<__half> {
    // d += a * b, 16x8x16, f16 inputs, f32 accumulators.
    static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        ptx::mma_m16n8k16_f16(d, a, b0, b1);
    }
    // Round two floats and pack them, `lo` in the low 16 bits.
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t*>(&h);
    }
};

template <>
struct Mma<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        ptx::mma_m16n8k16_bf16(d, a, b0, b1);
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t*>(&h);
    }
};

// Two packed 16-bit elements (low half first) widened to f32.
template <typename T>
__device__ __forceinline__ float2 unpack2(uint32_t u);
template <>
__device__ __forceinline__ float2 unpack2<__half>(uint32_t u) {
    return __half22float2(*reinterpret_cast<const __half2*>(&u));
}
template <>
__device__ __forceinline__ float2 unpack2<__nv_bfloat16>(uint32_t u) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u));
}

// The A fragment (k-step kk) made of the f32 accumulators of n-tiles 2kk and 2kk+1.
template <typename T>
__device__ __forceinline__ void pack_c_as_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
    a[0] = Mma<T>::pack(c0[0], c0[1]);
    a[1] = Mma<T>::pack(c0[2], c0[3]);
    a[2] = Mma<T>::pack(c1[0], c1[1]);
    a[3] = Mma<T>::pack(c1[2], c1[3]);
}

// ------------------------------------------------------------------------- reductions

// Reductions over the 4 lanes of a quad (the lanes sharing rows g and g+8 of a fragment).
__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// ------------------------------------------------------------------------- online softmax

// Running statistics of one softmax row in base-2 units: max `m` (-inf until a finite score
// arrives) and the sum `l` of exp2(x - m) (this lane's share until reduced).
struct SoftmaxRow {
    float m;
    float l;
};

// Where the row max is still -inf (every score so far masked), subtract 0 instead, so that
// exp2(-inf - m) = 0 rather than NaN.
__device__ __forceinline__ float safe_max(float m) { return m == -INFINITY ? 0.f : m; }

}  // namespace ak
