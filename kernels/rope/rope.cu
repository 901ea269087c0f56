// Standalone RoPE (spec section 2): y = rotate(x) for x [rows, heads, head_dim] (strided rows and
// heads, contiguous features), NeoX or GPT-J pairs, partial rotary, exact-angle tables.
//
// One block per row: the row's cos/sin are looked up once per frequency into shared memory, then
// threads stride over (head, pair). Memory-bound: each element is read once and written once.
#include "common/dtype.cuh"
#include "common/rope.cuh"
#include "common/ptx.cuh"

// The Rust side rejects rotary_dim > 2 * AK_ROPE_MAX_HALF for this kernel.
#define AK_ROPE_MAX_HALF 1024

namespace ak::rope {

template <typename T>
__device__ void rope_row(const AkRopeParams& p) {
    AK_SHARED(float2, cos_sin, [AK_ROPE_MAX_HALF]);  // [rotary_dim / 2]
    const int row = blockIdx.x;
    const int half = p.table.rotary_dim >> 1;
    const int pos = p.position_ids ? p.position_ids[row] : p.position_offset + row % p.seqlen;
    for (int i = threadIdx.x; i < half; i += blockDim.x) cos_sin[i] = rope_cos_sin(p.table, pos, i);
    __syncthreads();

    const T* x = static_cast<const T*>(p.x) + (long long)row * p.x_row_stride;
    T* y = static_cast<T*>(p.y) + (long long)row * p.y_row_stride;
    const float factor = p.table.attention_factor;
    // Rotated pairs. In place is safe: each pair is read and written by the same thread.
    for (int idx = threadIdx.x; idx < p.heads * half; idx += blockDim.x) {
        const int h = idx / half, i = idx - h * half;
        const int2 e = rope_pair(p.table, i);
        const T* xh = x + h * p.x_head_stride;
        T* yh = y + h * p.y_head_stride;
        const float2 r = rope_rotate(to_float(xh[e.x]), to_float(xh[e.y]), cos_sin[i], factor);
        yh[e.x] = from_float<T>(r.x);
        yh[e.y] = from_float<T>(r.y);
    }
    // Pass-through dims (out of place only; in place they are already there).
    const int pass = p.head_dim - p.table.rotary_dim;
    if (pass > 0 && p.x != p.y) {
        for (int idx = threadIdx.x; idx < p.heads * pass; idx += blockDim.x) {
            const int h = idx / pass, c = p.table.rotary_dim + (idx - h * pass);
            y[h * p.y_head_stride + c] = x[h * p.x_head_stride + c];
        }
    }
}

}  // namespace ak::rope

// Entry points (generated from src/runtime/kernel_list.rs): ak_rope_<dtype>, one block of 128
// threads per row.
#include "generated/rope_rope_entries.cuh"
