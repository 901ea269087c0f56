// Fused differential decode, variant v1 (spec section 3): one query token per sequence against a
// contiguous or paged KV cache, split along the keys (flash-decoding).
//
// Pass 1, ak_diff_decode_split_*: one block per (split, diff head h, sequence b), 4 warps. Key
// tiles of DT rows ([k1|k2] and the 2d-wide V) stream through a cp.async double buffer; both
// maps score the same tile (warps 0,2: map 1, warps 1,3: map 2; two lanes per key, each summing
// half of d), warps 0 and 1 run the two online softmaxes, then every thread accumulates its
// 2d/128 output columns of both maps from the shared V tile. Each split writes, per map, its
// normalised partial output and lse.
// Pass 2, ak_diff_decode_combine_*: per (h, b), merges the splits of each map by their lse, then
// forms O1 - lambda O2, applies the RMSNorm over 2d and stores o, lse1, lse2.
// The query sits at position P = seqlen - 1, so the causal mask allows every cached key; a
// left window keeps keys j >= P - window_left. A sequence with no key gives o = 0, lse = -inf.
#include "params.h"
#include "diff_attention/diff_tile.cuh"
#include <math.h>

using namespace diff;

namespace {

constexpr int DT = 32;         // keys per tile
constexpr int DTHREADS = 128;  // 4 warps
constexpr float LOG2E = 1.4426950408889634f;

template <int D> struct DecodeLayout {
    static constexpr int KROW = 2 * D + 8;  // [k1 | k2] of one key, padded 16 B against bank conflicts
    static constexpr int VROW = 2 * D;
    static constexpr int K_TILE = DT * KROW;
    static constexpr int V_TILE = DT * VROW;
    // Dynamic shared memory: 2 stages of (K_TILE + V_TILE) elements, then 2*D + 2*DT + 2 floats.
};

template <typename T>
__device__ __forceinline__ const T* cache_row(const AkDiffDecodeParams& p, const void* cache, long long batch_stride,
                                              long long row_stride, int b, int j) {
    const T* base = static_cast<const T*>(cache);
    if (p.block_table) {
        const int blk = p.block_table[b * p.block_table_stride + j / p.block_size];
        return base + blk * batch_stride + (long long)(j % p.block_size) * row_stride;
    }
    return base + b * batch_stride + (long long)j * row_stride;
}

template <typename T, int D> __device__ __forceinline__ void diff_decode_split(const AkDiffDecodeParams& p) {
    using L = DecodeLayout<D>;
    constexpr int CPT = 2 * D / DTHREADS;  // output columns per thread (1 or 2)
    extern __shared__ __align__(128) unsigned char smem_raw[];
    T* sK = reinterpret_cast<T*>(smem_raw);   // [2][DT][KROW]
    T* sV = sK + 2 * L::K_TILE;               // [2][DT][VROW]
    float* sQ = reinterpret_cast<float*>(sV + 2 * L::V_TILE);  // [2][D]
    float* sS = sQ + 2 * D;                   // [2][DT] scores, then probabilities
    float* sAlpha = sS + 2 * DT;              // [2]

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int len = p.cache_seqlens[b], P = len - 1;
    int lo = split * p.keys_per_split;
    const int hi = min(lo + p.keys_per_split, len);
    if (p.window_left >= 0) lo = max(lo, P - p.window_left);
    const int kvh = h / p.kv_groups;
    const long long part = ((long long)(b * p.heads + h) * p.num_splits + split) * 2;

    if (lo >= hi) {  // nothing in this split
        for (int c = tid; c < 4 * D; c += DTHREADS) p.part_o[part * 2 * D + c] = 0.f;
        if (tid < 2) p.part_lse[part + tid] = -INFINITY;
        return;
    }

    const T* q = static_cast<const T*>(p.q) + b * p.q_batch_stride + 2 * h * p.q_head_stride;
    for (int i = tid; i < 2 * D; i += DTHREADS) sQ[i] = Elem<T>::to_f(q[(i / D) * p.q_head_stride + i % D]);

    auto load_tile = [&](int n0, int stage) {
        T* k = sK + stage * L::K_TILE;
        T* v = sV + stage * L::V_TILE;
        constexpr int CH = DT * (2 * D / 8);  // 16-byte chunks per tile, for K and for V
        for (int c = tid; c < CH; c += DTHREADS) {
            const int r = c / (2 * D / 8), col = (c % (2 * D / 8)) * 8;
            const int j = n0 + r;
            const bool ok = j < hi;
            const int jj = ok ? j : lo;
            const T* ks = cache_row<T>(p, p.k_cache, p.k_batch_stride, p.k_row_stride, b, jj) +
                          kvh * p.k_head_stride + col;  // [k1 | k2] of kv head kvh
            cp_async16(k + r * L::KROW + col, ks, ok);
            const T* vs = cache_row<T>(p, p.v_cache, p.v_batch_stride, p.v_row_stride, b, jj) +
                          kvh * p.v_head_stride + col;
            cp_async16(v + r * L::VROW + col, vs, ok);
        }
    };

    float acc[2][CPT];
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int c = 0; c < CPT; ++c) acc[m][c] = 0.f;
    float m_run = -INFINITY, l_run = 0.f;  // meaningful in warps 0 (map 1) and 1 (map 2)

    // scoring role: map = warp & 1, key = (warp >> 1) * 16 + lane % 16, half of d = lane / 16
    // (eight consecutive lanes read eight padded rows: distinct banks)
    const int smap = warp & 1, skey = (warp >> 1) * 16 + (lane & 15), shalf = lane >> 4;
    const float slope = p.alibi_slopes ? p.alibi_slopes[h] : 0.f;  // one slope per diff head

    load_tile(lo, 0);
    cp_async_commit();
    int stage = 0;
    for (int n0 = lo; n0 < hi; n0 += DT, stage ^= 1) {
        if (n0 + DT < hi) {
            load_tile(n0 + DT, stage ^ 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();

        {  // scores
            const T* krow = sK + stage * L::K_TILE + skey * L::KROW + smap * D + shalf * (D / 2);
            const float* qv = sQ + smap * D + shalf * (D / 2);
            float dot = 0.f;
#pragma unroll
            for (int c = 0; c < D / 2; c += 8) {
                const uint4 raw = *reinterpret_cast<const uint4*>(krow + c);
                const float4 qa = *reinterpret_cast<const float4*>(qv + c);
                const float4 qb = *reinterpret_cast<const float4*>(qv + c + 4);
                const float2 k0 = Elem<T>::unpack(raw.x), k1 = Elem<T>::unpack(raw.y);
                const float2 k2 = Elem<T>::unpack(raw.z), k3 = Elem<T>::unpack(raw.w);
                dot = fmaf(k0.x, qa.x, fmaf(k0.y, qa.y, dot));
                dot = fmaf(k1.x, qa.z, fmaf(k1.y, qa.w, dot));
                dot = fmaf(k2.x, qb.x, fmaf(k2.y, qb.y, dot));
                dot = fmaf(k3.x, qb.z, fmaf(k3.y, qb.w, dot));
            }
            dot += __shfl_xor_sync(0xffffffffu, dot, 16);
            const int j = n0 + skey;
            float x = dot * p.scale;
            if (p.softcap > 0.f) x = p.softcap * tanhf(x / p.softcap);
            if (p.alibi_slopes) x -= slope * (float)(P - j);
            if (j >= hi) x = -INFINITY;
            if (shalf == 0) sS[smap * DT + skey] = x;
        }
        __syncthreads();

        if (warp < 2) {  // online softmax of map `warp`, lane = key
            const float x = sS[warp * DT + lane];
            const float m_new = fmaxf(m_run, warp_max(x));
            const float m_use = m_new == -INFINITY ? 0.f : m_new;
            const float pe = exp2f((x - m_use) * LOG2E);
            const float alpha = exp2f((m_run - m_use) * LOG2E);
            l_run = l_run * alpha + warp_sum(pe);
            m_run = m_new;
            sS[warp * DT + lane] = pe;
            if (lane == 0) sAlpha[warp] = alpha;
        }
        __syncthreads();

        {  // acc = alpha * acc + P V over this thread's columns
            const T* v = sV + stage * L::V_TILE + tid * CPT;
#pragma unroll
            for (int m = 0; m < 2; ++m)
#pragma unroll
                for (int c = 0; c < CPT; ++c) acc[m][c] *= sAlpha[m];
#pragma unroll
            for (int t = 0; t < DT; ++t) {
                float vf[CPT];
                if constexpr (CPT == 2) {
                    const float2 f = Elem<T>::unpack(*reinterpret_cast<const uint32_t*>(v + t * L::VROW));
                    vf[0] = f.x;
                    vf[1] = f.y;
                } else {
                    vf[0] = Elem<T>::to_f(v[t * L::VROW]);
                }
                const float p1 = sS[t], p2 = sS[DT + t];
#pragma unroll
                for (int c = 0; c < CPT; ++c) {
                    acc[0][c] = fmaf(p1, vf[c], acc[0][c]);
                    acc[1][c] = fmaf(p2, vf[c], acc[1][c]);
                }
            }
        }
        __syncthreads();
    }

    // Publish (m, l) of both maps, then write the normalised partial outputs.
    if (warp < 2 && lane == 0) {
        sS[2 * warp] = m_run;
        sS[2 * warp + 1] = l_run;
    }
    __syncthreads();
#pragma unroll
    for (int m = 0; m < 2; ++m) {
        const float mm = sS[2 * m], l = sS[2 * m + 1];
        const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
        for (int c = 0; c < CPT; ++c) p.part_o[(part + m) * 2 * D + tid * CPT + c] = acc[m][c] * inv;
        if (tid == 0) p.part_lse[part + m] = l > 0.f ? mm + logf(l) : -INFINITY;
    }
}

template <typename T, int D> __device__ __forceinline__ void diff_decode_combine(const AkDiffDecodeParams& p) {
    constexpr int CPT = 2 * D / DTHREADS;
    __shared__ float red[DTHREADS / 32];
    const int tid = threadIdx.x, h = blockIdx.x, b = blockIdx.y;
    const long long base = (long long)(b * p.heads + h) * p.num_splits * 2;
    float o[2][CPT], lse[2];
#pragma unroll
    for (int m = 0; m < 2; ++m) {
        float mx = -INFINITY;
        for (int s = 0; s < p.num_splits; ++s) mx = fmaxf(mx, p.part_lse[base + 2 * s + m]);
#pragma unroll
        for (int c = 0; c < CPT; ++c) o[m][c] = 0.f;
        if (mx == -INFINITY) {
            lse[m] = -INFINITY;
            continue;
        }
        float sum = 0.f;
        for (int s = 0; s < p.num_splits; ++s) sum += expf(p.part_lse[base + 2 * s + m] - mx);
        lse[m] = mx + logf(sum);
        for (int s = 0; s < p.num_splits; ++s) {
            const float w = expf(p.part_lse[base + 2 * s + m] - lse[m]);  // 0 for empty splits
            if (w == 0.f) continue;
            const float* po = p.part_o + (base + 2 * s + m) * 2 * D + tid * CPT;
#pragma unroll
            for (int c = 0; c < CPT; ++c) o[m][c] = fmaf(w, po[c], o[m][c]);
        }
    }
    const float lam = p.lambda[h];
    float ss = 0.f, out[CPT];
#pragma unroll
    for (int c = 0; c < CPT; ++c) {
        out[c] = o[0][c] - lam * o[1][c];
        ss += out[c] * out[c];
    }
    if (p.norm_weight) {
        ss = warp_sum(ss);
        if ((tid & 31) == 0) red[tid >> 5] = ss;
        __syncthreads();
        float tot = 0.f;
#pragma unroll
        for (int w = 0; w < DTHREADS / 32; ++w) tot += red[w];
        const float den = tot / (2 * D) + p.eps;
        const float r = den > 0.f ? p.norm_factor / sqrtf(den) : 0.f;
#pragma unroll
        for (int c = 0; c < CPT; ++c) out[c] *= r * p.norm_weight[tid * CPT + c];
    }
    T* ob = static_cast<T*>(p.o) + b * p.o_batch_stride + h * p.o_head_stride + tid * CPT;
#pragma unroll
    for (int c = 0; c < CPT; ++c) ob[c] = Elem<T>::from_f(out[c]);
    if (tid == 0) {
        p.lse1[b * p.heads + h] = lse[0];
        p.lse2[b * p.heads + h] = lse[1];
    }
}

}  // namespace

#define DIFF_DECODE(T, tname, D)                                                                             \
    extern "C" __global__ void __launch_bounds__(DTHREADS) ak_diff_decode_split_##tname##_d##D(              \
        const AkDiffDecodeParams p) {                                                                       \
        diff_decode_split<T, D>(p);                                                                         \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(DTHREADS) ak_diff_decode_combine_##tname##_d##D(            \
        const AkDiffDecodeParams p) {                                                                       \
        diff_decode_combine<T, D>(p);                                                                       \
    }

DIFF_DECODE(__half, f16, 64)
DIFF_DECODE(__half, f16, 128)
DIFF_DECODE(__nv_bfloat16, bf16, 64)
DIFF_DECODE(__nv_bfloat16, bf16, 128)
