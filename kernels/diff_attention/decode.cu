// Fused differential decode, variant v1 (spec section 3): one query token per sequence against a
// contiguous or paged KV cache, split along the keys (flash-decoding).
//
// Pass 1, ak_diff_decode_split_*_g<GM>: one block per (split, kv head or a chunk of GM of its
// G = H / Hkv diff heads, sequence b), 4 warps, so each kv head's keys are read once per split
// for the whole group. Key tiles of DT rows ([k1|k2] and the 2d-wide V) stream through a
// cp.async double buffer. Scores: warps 0,2 take map 1 and warps 1,3 map 2, two lanes per key
// (each holds half of the key row in registers and dots it with every head's query); then one
// warp per softmax row (head, map) runs its online softmax; then every thread accumulates its
// 2d/128 output columns of every row from the shared V tile. Each split writes, per (head, map),
// its normalised partial output and lse.
// Pass 2, ak_diff_decode_combine_*: per (h, b), merges the splits of each map by their lse, then
// forms O1 - lambda O2, applies the RMSNorm over 2d and stores o, lse1, lse2.
// The query sits at position P = seqlen - 1, so the causal mask allows every cached key; a
// left window keeps keys j >= P - window_left. A sequence with no key gives o = 0, lse = -inf.
#include "params.h"
#include "common/dtype.cuh"
#include "common/tile.cuh"
#include <math.h>

namespace ak::diff {

constexpr int DT = 32;         // keys per tile
constexpr int DTHREADS = 128;  // 4 warps

template <int D> struct DecodeLayout {
    static constexpr int KROW = 2 * D + 8;  // [k1 | k2] of one key, padded 16 B against bank conflicts
    static constexpr int VROW = 2 * D;
    static constexpr int K_TILE = DT * KROW;
    static constexpr int V_TILE = DT * VROW;
    // Dynamic shared memory: 2 stages of (K_TILE + V_TILE) elements, then RM * (D + DT + 3)
    // floats (sQ, sS, sAlpha, sML) with RM = 2 * GM.
    template <typename T, int GM>
    static constexpr int smem_bytes() {
        return (int)sizeof(T) * 2 * (K_TILE + V_TILE) + 4 * 2 * GM * (D + DT + 3);
    }
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

// GM: diff heads per block (the kv group of G = H / Hkv heads, in chunks of GM); the block runs
// R = 2 * GM softmax rows (head, map), row r = 2 * (head - h0) + map.
template <typename T, int D, int GM> __device__ __forceinline__ void diff_decode_split(const AkDiffDecodeParams& p) {
    using L = DecodeLayout<D>;
    constexpr int CPT = 2 * D / DTHREADS;        // output columns per thread (1 or 2)
    constexpr int RM = 2 * GM;                    // softmax rows per block (at most)
    constexpr int RPW = (RM + 3) / 4;             // softmax rows per warp
    AK_DYNAMIC_SHARED(unsigned char, smem_raw);
    T* sK = reinterpret_cast<T*>(smem_raw);                    // [2][DT][KROW]
    T* sV = sK + 2 * L::K_TILE;                                // [2][DT][VROW]
    float* sQ = reinterpret_cast<float*>(sV + 2 * L::V_TILE);  // [RM][D]
    float* sS = sQ + RM * D;                                   // [RM][DT] scores, then probabilities
    float* sAlpha = sS + RM * DT;                              // [RM]
    float* sML = sAlpha + RM;                                  // [RM][2] final (m, l)

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int split = blockIdx.x, b = blockIdx.z;
    const int G = p.kv_groups, chunks = (G + GM - 1) / GM;
    const int kvh = blockIdx.y / chunks, chunk = blockIdx.y - kvh * chunks;
    const int h0 = kvh * G + chunk * GM;
    const int R = 2 * min(GM, G - chunk * GM);  // rows of this block
    const int len = p.cache_seqlens[b], P = len - 1;
    int lo = split * p.keys_per_split;
    const int hi = min(lo + p.keys_per_split, len);
    if (p.window_left >= 0) lo = max(lo, P - p.window_left);
    // part_o / part_lse row of softmax row r: [B, H, splits, 2]
    auto part_of = [&](int r) { return ((long long)(b * p.heads + h0 + (r >> 1)) * p.num_splits + split) * 2 + (r & 1); };

    if (lo >= hi) {  // nothing in this split
        for (int r = 0; r < R; ++r)
            for (int c = tid; c < 2 * D; c += DTHREADS) p.part_o[part_of(r) * 2 * D + c] = 0.f;
        if (tid < R) p.part_lse[part_of(tid)] = -INFINITY;
        return;
    }

    // Query rows 2 * h0 .. 2 * h0 + R - 1 are exactly rows 0 .. R - 1 (q head 2h + map).
    const T* q = static_cast<const T*>(p.q) + b * p.q_batch_stride + 2 * h0 * p.q_head_stride;
    for (int i = tid; i < R * D; i += DTHREADS) sQ[i] = to_float(q[(i / D) * p.q_head_stride + i % D]);

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
            cp_async_16(k + r * L::KROW + col, ks, ok);
            const T* vs = cache_row<T>(p, p.v_cache, p.v_batch_stride, p.v_row_stride, b, jj) +
                          kvh * p.v_head_stride + col;
            cp_async_16(v + r * L::VROW + col, vs, ok);
        }
    };

    float acc[RM][CPT];
#pragma unroll
    for (int r = 0; r < RM; ++r)
#pragma unroll
        for (int c = 0; c < CPT; ++c) acc[r][c] = 0.f;
    float m_run[RPW], l_run[RPW];  // softmax rows warp + 4 i
#pragma unroll
    for (int i = 0; i < RPW; ++i) m_run[i] = -INFINITY, l_run[i] = 0.f;

    // scoring role: map = warp & 1, key = (warp >> 1) * 16 + lane % 16, half of d = lane / 16
    // (eight consecutive lanes read eight padded rows: distinct banks)
    const int smap = warp & 1, skey = (warp >> 1) * 16 + (lane & 15), shalf = lane >> 4;

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

        {  // scores: this lane's half key row, once, against every head of the block
            const T* krow = sK + stage * L::K_TILE + skey * L::KROW + smap * D + shalf * (D / 2);
            uint4 kr[D / 16];
#pragma unroll
            for (int c = 0; c < D / 16; ++c) kr[c] = *reinterpret_cast<const uint4*>(krow + 8 * c);
            const int j = n0 + skey;
#pragma unroll
            for (int g = 0; g < GM; ++g) {
                const int r = 2 * g + smap;
                if (r >= R) break;
                const float* qv = sQ + r * D + shalf * (D / 2);
                float dot = 0.f;
#pragma unroll
                for (int c = 0; c < D / 16; ++c) {
                    const float4 qa = *reinterpret_cast<const float4*>(qv + 8 * c);
                    const float4 qb = *reinterpret_cast<const float4*>(qv + 8 * c + 4);
                    const float2 k0 = unpack2<T>(kr[c].x), k1 = unpack2<T>(kr[c].y);
                    const float2 k2 = unpack2<T>(kr[c].z), k3 = unpack2<T>(kr[c].w);
                    dot = fmaf(k0.x, qa.x, fmaf(k0.y, qa.y, dot));
                    dot = fmaf(k1.x, qa.z, fmaf(k1.y, qa.w, dot));
                    dot = fmaf(k2.x, qb.x, fmaf(k2.y, qb.y, dot));
                    dot = fmaf(k3.x, qb.z, fmaf(k3.y, qb.w, dot));
                }
                dot += __shfl_xor_sync(0xffffffffu, dot, 16);
                float x = dot * p.scale;
                if (p.softcap > 0.f) x = p.softcap * tanhf(x / p.softcap);
                if (p.alibi_slopes) x -= p.alibi_slopes[h0 + g] * (float)(P - j);  // one slope per head
                if (j >= hi) x = -INFINITY;
                if (shalf == 0) sS[r * DT + skey] = x;
            }
        }
        __syncthreads();

#pragma unroll
        for (int i = 0; i < RPW; ++i) {  // online softmax of row warp + 4 i, lane = key
            const int r = warp + 4 * i;
            if (r < R) {
                const float x = sS[r * DT + lane];
                const float m_new = fmaxf(m_run[i], warp_max(x));
                const float m_use = safe_max(m_new);
                const float pe = exp2f((x - m_use) * kLog2e);
                const float alpha = exp2f((m_run[i] - m_use) * kLog2e);
                l_run[i] = l_run[i] * alpha + warp_sum(pe);
                m_run[i] = m_new;
                sS[r * DT + lane] = pe;
                if (lane == 0) sAlpha[r] = alpha;
            }
        }
        __syncthreads();

        {  // acc = alpha * acc + P V over this thread's columns, every row of the block
            const T* v = sV + stage * L::V_TILE + tid * CPT;
#pragma unroll
            for (int r = 0; r < RM; ++r)
                if (r < R)
#pragma unroll
                    for (int c = 0; c < CPT; ++c) acc[r][c] *= sAlpha[r];
#pragma unroll 8
            for (int t = 0; t < DT; ++t) {
                float vf[CPT];
                if constexpr (CPT == 2) {
                    const float2 f = unpack2<T>(*reinterpret_cast<const uint32_t*>(v + t * L::VROW));
                    vf[0] = f.x;
                    vf[1] = f.y;
                } else {
                    vf[0] = to_float(v[t * L::VROW]);
                }
#pragma unroll
                for (int r = 0; r < RM; ++r) {
                    if (r < R) {
                        const float pr = sS[r * DT + t];
#pragma unroll
                        for (int c = 0; c < CPT; ++c) acc[r][c] = fmaf(pr, vf[c], acc[r][c]);
                    }
                }
            }
        }
        __syncthreads();
    }

    // Publish (m, l) of every row, then write the normalised partial outputs.
#pragma unroll
    for (int i = 0; i < RPW; ++i) {
        const int r = warp + 4 * i;
        if (r < R && lane == 0) {
            sML[2 * r] = m_run[i];
            sML[2 * r + 1] = l_run[i];
        }
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < RM; ++r) {
        if (r >= R) break;
        const float mm = sML[2 * r], l = sML[2 * r + 1];
        const float inv = l > 0.f ? 1.f / l : 0.f;
        const long long pr = part_of(r);
#pragma unroll
        for (int c = 0; c < CPT; ++c) p.part_o[pr * 2 * D + tid * CPT + c] = acc[r][c] * inv;
        if (tid == 0) p.part_lse[pr] = l > 0.f ? mm + logf(l) : -INFINITY;
    }
}

template <typename T, int D> __device__ __forceinline__ void diff_decode_combine(const AkDiffDecodeParams& p) {
    constexpr int CPT = 2 * D / DTHREADS;
    AK_SHARED(float, red, [DTHREADS / 32]);
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
        for (int c = 0; c < CPT; ++c) out[c] *= r * load_any(p.norm_weight, tid * CPT + c, p.norm_weight_dtype);
    }
    T* ob = static_cast<T*>(p.o) + b * p.o_batch_stride + h * p.o_head_stride + tid * CPT;
#pragma unroll
    for (int c = 0; c < CPT; ++c) ob[c] = from_float<T>(out[c]);
    if (tid == 0) {
        p.lse1[b * p.heads + h] = lse[0];
        p.lse2[b * p.heads + h] = lse[1];
    }
}

}  // namespace ak::diff

// Entry points (generated from src/runtime/kernel_list.rs, `diff_attention::`):
// ak_diff_decode_split_<dtype>_d<d>_g<GM> (DecodeLayout<d>::smem_bytes<T, GM>() of dynamic shared
// memory) and ak_diff_decode_combine_<dtype>_d<d>, DTHREADS threads each.
#include "generated/diff_attention_decode_entries.cuh"
