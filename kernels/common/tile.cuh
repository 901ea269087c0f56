// Tile primitives for tensor-core kernels on sm_80+ (Ampere, Hopper through mma.sync), over the
// PTX wrappers of common/ptx.cuh: cp.async global->shared copies, ldmatrix fragment loads and
// their per-lane addresses, mma.sync m16n8k16 (f16/bf16 in, f32 accumulate) with the fragment
// packing helpers, the XOR swizzle of shared tiles, warp reductions and the online-softmax row.
// Kernels use these (and dtype.cuh); only the probe kernels call ak::ptx directly.
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
// The *_row / *_col helpers below compute the per-lane row and column for the four uses.
#pragma once
#include <stdint.h>
#include "common/dtype.cuh"
#include "common/ptx.cuh"

namespace ak {

// ------------------------------------------------------------------------- cp.async

// Copy 16 bytes global -> shared, bypassing L1. When `valid` is false the 16 destination bytes
// are zero-filled and `src` is not read (it must still be a mapped address; pass a tile base).
__device__ __forceinline__ void cp_async_16(void* dst_smem, const void* src, bool valid) {
    ptx::cp_async_cg_16(ptx::smem_addr(dst_smem), src, valid ? 16 : 0);
}

__device__ __forceinline__ void cp_async_commit() { ptx::cp_async_commit(); }

// Wait until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    ptx::cp_async_wait<N>();
}

// Hint: bring the 128-byte line holding p into L2 (no register, nothing to wait for).
__device__ __forceinline__ void prefetch_l2(const void* p) { ptx::prefetch_l2(p); }

// Cooperative copy of a ROWS x COLS tile (16-bit elements, COLS % 8 == 0) by NT threads:
// global row r at `src + r * src_row_stride`, shared row r at `dst + r * DST_STRIDE`.
// Rows >= rows_valid are zero-filled. Each thread keeps one 16-byte column chunk for all its
// rows, so the address arithmetic is one add per row. WHOLE: the caller knows rows_valid >= ROWS
// (a full key tile in a prefill's steady state), so no row predicate is issued.
template <int ROWS, int COLS, int DST_STRIDE, int NT, bool WHOLE = false, typename T>
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
        const bool ok = WHOLE || row + pass * ROWS_PER_PASS < rows_valid;
        cp_async_16(d, ok ? s : src, ok);
        s += ROWS_PER_PASS * src_row_stride;
        d += ROWS_PER_PASS * DST_STRIDE;
    }
}

// ------------------------------------------------------------------------- ldmatrix

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
    ptx::ldmatrix_x4(r, ptx::smem_addr(smem_row));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
    ptx::ldmatrix_x4_trans(r, ptx::smem_addr(smem_row));
}

// Per-lane (row, col) offsets inside a 16x16 tile for the four ldmatrix.x4 patterns:
// A operand from a row-major [m][k] tile -> regs a0..a3.
__device__ __forceinline__ int a_row(int lane) { return lane & 15; }
__device__ __forceinline__ int a_col(int lane) { return (lane >> 4) << 3; }
// A operand from a [k][m] tile with .trans (e.g. V^T from V) -> regs a0..a3.
__device__ __forceinline__ int at_row(int lane) { return (lane & 7) + ((lane >> 4) << 3); }
__device__ __forceinline__ int at_col(int lane) { return ((lane >> 3) & 1) << 3; }
// B operand of two n-tiles from an [n][k] tile (B = tile^T, e.g. K for Q.K^T)
// -> regs {b0, b1} of n-tile 0, then {b0, b1} of n-tile 1.
__device__ __forceinline__ int bt_row(int lane) { return (lane & 7) + ((lane >> 4) << 3); }
__device__ __forceinline__ int bt_col(int lane) { return ((lane >> 3) & 1) << 3; }
// B operand of two n-tiles from a [k][n] tile with .trans (e.g. V for P.V)
// -> regs {b0, b1} of n-tile 0, then {b0, b1} of n-tile 1.
__device__ __forceinline__ int bk_row(int lane) { return (lane & 7) + (((lane >> 3) & 1) << 3); }
__device__ __forceinline__ int bk_col(int lane) { return (lane >> 4) << 3; }

// ------------------------------------------------------------------------- swizzle

// Element offset of (row, col) in a row-major tile of COLS 16-bit columns whose 16-byte chunks
// are XOR-swizzled by (row % 8): the eight row addresses of one ldmatrix 8x8 matrix (and of one
// cp.async pass over a row) then hit distinct banks without padding.
template <int COLS>
__device__ __forceinline__ int swizzle(int row, int col) {
    static_assert(COLS % 64 == 0, "the swizzle needs at least eight 16-byte chunks per row");
    return row * COLS + (((col >> 3) ^ (row & 7)) << 3) + (col & 7);
}

// The ldmatrix addresses of one lane into a swizzled [.. x COLS] tile, with the XOR done once per
// fragment column group instead of per load. The lane reads row r + i (i % 8 == 0, so the
// swizzle row r % 8 is the same) at column 16 c + 8 h (h: the lane's 8-column half). Chunk
// 2c + h XOR r % 8 changes only the chunk's low three bits, and 2 (c % 4) + h = 2 (c % 4) | h, so
//   offset(i, c) = (off ^ 16 (c % 4)) + i COLS + 64 (c / 4),   off = offset(0, 0)
// (r COLS has its low six bits clear): with c and i compile-time, one XOR per distinct c % 4,
// the rest folds into the load's immediate offset.
template <int COLS>
struct SwizzledLane {
    int off;  // element offset of (r, 8 h)
    __device__ __forceinline__ SwizzledLane(int r, int h) : off(swizzle<COLS>(r, 8 * h)) {}
    __device__ __forceinline__ int at(int i, int c) const { return (off ^ ((c & 3) << 4)) + i * COLS + (c >> 2) * 64; }
};
// The lanes of the three ldmatrix.x4 patterns (a_row / a_col, bt_*, bk_* below).
template <int COLS> __device__ __forceinline__ SwizzledLane<COLS> swz_a(int lane) { return {lane & 15, lane >> 4}; }
template <int COLS> __device__ __forceinline__ SwizzledLane<COLS> swz_bt(int lane) {
    return {(lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1};
}
template <int COLS> __device__ __forceinline__ SwizzledLane<COLS> swz_bk(int lane) {
    return {(lane & 7) + (((lane >> 3) & 1) << 3), lane >> 4};
}

// load_tile_async (above) for an unpadded ROWS x COLS tile stored swizzled: a pass covers a
// multiple of 8 rows, so row % 8, hence the swizzled chunk, is the same for all of a thread's
// rows: one fixed destination column, one add per row as there. WHOLE: as there.
template <int ROWS, int COLS, int NT, bool WHOLE = false, typename T>
__device__ __forceinline__ void load_tile_async_swizzled(T* dst, const T* src, long long src_row_stride,
                                                         int rows_valid, int tid) {
    constexpr int CHUNKS = COLS / 8;
    constexpr int ROWS_PER_PASS = NT / CHUNKS;
    static_assert(NT % CHUNKS == 0 && ROWS % ROWS_PER_PASS == 0 && ROWS_PER_PASS % 8 == 0,
                  "tile shape: whole passes of a multiple of 8 rows");
    const int row = tid / CHUNKS;
    const int col = (tid % CHUNKS) * 8;
    const T* s = src + row * src_row_stride + col;
    T* d = dst + swizzle<COLS>(row, col);
#pragma unroll
    for (int pass = 0; pass < ROWS / ROWS_PER_PASS; ++pass) {
        const bool ok = WHOLE || row + pass * ROWS_PER_PASS < rows_valid;
        cp_async_16(d, ok ? s : src, ok);
        s += ROWS_PER_PASS * src_row_stride;
        d += ROWS_PER_PASS * COLS;
    }
}

// ------------------------------------------------------------------------- mma

// d += a * b, 16x8x16, f32 accumulators; pack / unpack convert between f32 pairs and the
// packed 16-bit register form of the operands (dtype.cuh's pack2 / unpack2).
template <typename T>
struct Mma;

template <>
struct Mma<__half> {
    static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        ptx::mma_m16n8k16_f16(d, a, b0, b1);
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return pack2<__half>(lo, hi); }
    static __device__ __forceinline__ float2 unpack(uint32_t u) { return unpack2<__half>(u); }
};

template <>
struct Mma<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        ptx::mma_m16n8k16_bf16(d, a, b0, b1);
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return pack2<__nv_bfloat16>(lo, hi); }
    static __device__ __forceinline__ float2 unpack(uint32_t u) { return unpack2<__nv_bfloat16>(u); }
};

// A packed pair multiplied elementwise by (s.x, s.y), rounded once back to T.
template <typename T>
__device__ __forceinline__ uint32_t scale_pair(uint32_t r, float2 s) {
    const float2 f = Mma<T>::unpack(r);
    return Mma<T>::pack(f.x * s.x, f.y * s.y);
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

constexpr float kLog2e = 1.4426950408889634f;  // log2(e): natural-log scores -> base-2 units
constexpr float kLn2 = 0.6931471805599453f;    // ln(2): base-2 statistics -> natural-log lse

// How far (base 2) a running row max may lag the true one before O and l are rescaled: scores
// then exponentiate to at most 2^8, far inside f32, f16 and bf16 range.
constexpr float RESCALE_SLACK = 8.f;

// Running statistics of one softmax row in base-2 units: max `m` (-inf until a finite score
// arrives) and the sum `l` of exp2(x - m) (this lane's share until reduced).
struct SoftmaxRow {
    float m;
    float l;
};

// 2^x with subnormal inputs and results flushed to zero (ex2.approx.ftz: one MUFU.EX2, where
// exp2f adds a range check and two multiplies); 2^-inf = 0. Probabilities below 2^-126 of the
// row max are dropped, far under the bf16 / f16 rounding of P.
__device__ __forceinline__ float exp2_ftz(float x) { return ptx::ex2_approx_ftz(x); }

// tanh(x) = 1 - 2 / (e^{2x} + 1) for softcaps: branch-free, saturates to +-1 at +-inf; absolute
// error a few f32 ulps of 1, which the softcap (a multiplier of tens) keeps far inside the
// spec's bounds (relative accuracy near 0 is not needed).
__device__ __forceinline__ float tanh_fast(float x) {
    return 1.f - __fdividef(2.f, exp2_ftz(x * (2.f * kLog2e)) + 1.f);
}

// Loop-invariant values the compiler would hoist out of the key-tile loop and hold in registers
// across both GEMMs (the 16 ALiBi column terms of a 64-key tile cost 16 registers and spilled):
// a value made from fresh_zero() inside the loop is recomputed there instead. fresh_zero() is 0
// (laneid >> 5), read by a volatile instruction the compiler can neither move nor fold.
__device__ __forceinline__ unsigned fresh_zero() { return ptx::laneid() >> 5; }
__device__ __forceinline__ float or_zero(float v, unsigned zero) {
    return __int_as_float(__float_as_int(v) | (int)zero);
}

// Where the row max is still -inf (every score so far masked), subtract 0 instead, so that
// exp2(-inf - m) = 0 rather than NaN.
__device__ __forceinline__ float safe_max(float m) { return m == -INFINITY ? 0.f : m; }

}  // namespace ak
