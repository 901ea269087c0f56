// KV-cache append (src/decode): copy the new K/V rows into a contiguous or paged cache at
// positions cache_seqlens[b] + t, rotating K with RoPE on the way in when a table is given.
// Small (Sq_new rows per sequence), so one CTA per (sequence, token, kv head) row is plenty.
#include "params.h"
#include "common/dtype.cuh"
#include "common/rope.cuh"

namespace ak::decode {

template <typename T>
__device__ __forceinline__ void append_kernel(const AkAppendKvParams& p) {
    const int hk = blockIdx.x % p.heads_kv;
    const int bt = blockIdx.x / p.heads_kv;  // b * seqlen_new + t
    const int t = bt % p.seqlen_new;
    const int b = bt / p.seqlen_new;
    if (b >= p.batch) return;
    const int pos = p.cache_seqlens[b] + t;  // validated on the host: within capacity
    long long blk = b, row = pos;
    if (p.block_table != nullptr) {
        blk = p.block_table[(long long)b * p.max_blocks + (pos >> p.block_size_log2)];
        row = pos & ((1 << p.block_size_log2) - 1);
    }
    const long long src_row = (long long)bt * p.heads_kv + hk;
    const T* k_src = static_cast<const T*>(p.k_new) + src_row * p.head_dim;
    const T* v_src = static_cast<const T*>(p.v_new) + src_row * p.head_dim_v;
    T* k_dst = static_cast<T*>(p.k_cache) + blk * p.k_block_stride + row * p.k_row_stride + hk * p.k_head_stride;
    T* v_dst = static_cast<T*>(p.v_cache) + blk * p.v_block_stride + row * p.v_row_stride + hk * p.v_head_stride;

    const AkRopeTable& rt = p.rope;
    const int rd = rt.lo != nullptr ? rt.rotary_dim : 0;
    for (int d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
        const float x = to_float(k_src[d]);
        float y = x;
        if (d < rd) {
            // Element d is x1 (sign -1) or x2 (sign +1) of pair i; its partner is the other.
            const int half = rd >> 1;
            int i, partner;
            float sign;
            if (rt.interleaved) {
                i = d >> 1;
                partner = d ^ 1;
                sign = (d & 1) ? 1.f : -1.f;
            } else {
                i = d < half ? d : d - half;
                partner = d < half ? d + half : d - half;
                sign = d < half ? -1.f : 1.f;
            }
            const float2 cs = rope_cos_sin(rt, pos, i);
            y = rt.attention_factor * (x * cs.x + sign * to_float(k_src[partner]) * cs.y);
        }
        k_dst[d] = from_float<T>(y);
    }
    for (int d = threadIdx.x; d < p.head_dim_v; d += blockDim.x) v_dst[d] = v_src[d];
}

}  // namespace ak::decode

// Entry points (generated from src/runtime/kernel_list.rs): ak_append_kv_<dtype>, one block of
// 128 threads per (sequence, token, kv head) row.
#include "generated/decode_append_entries.cuh"
