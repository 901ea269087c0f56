// Split-KV decode attention over a contiguous or paged KV cache, the split combine, and
// merge_states (src/decode). Decode is memory-bound: the aim is to stream K and V at copy
// bandwidth, so the kernel is CUDA-core FMA with 16-byte cp.async loads and a deep pipeline.
//
// Work split. One CTA = (split, kv head, row tile, sequence). Its "rows" are query rows that
// share the kv head: the GQA group's heads times the new tokens, so each K/V element is read
// once per group. A key's head vector is spread over LANES = D / 8 lanes (8 elements each); the
// CTA's 128 threads form GROUPS = 128 / LANES lane groups, each walking its own keys with its
// own online-softmax state. Each thread copies exactly the K/V chunks it later reads, so the
// pipeline needs no barrier; the groups' states are merged through shared memory at the end.
#include "params.h"
#include "common/dtype.cuh"
#include "common/rope.cuh"
#include "common/tile.cuh"
#include <stdint.h>

namespace ak::decode {

constexpr int THREADS = 128;
constexpr int VEC = 8;     // head-dim elements per lane
constexpr int KPS = 2;     // keys per lane group per pipeline stage
constexpr int STAGES = 4;  // cp.async pipeline depth (STAGES - 1 stages in flight)
constexpr unsigned FULL = 0xffffffffu;

// ------------------------------------------------------------------------ 8-element chunks

// 8 elements of T as raw 32-bit words (4 for 16-bit types, 8 for f32) and as 16-byte vectors.
template <typename T>
struct Chunk {
    static constexpr int WORDS = VEC * (int)sizeof(T) / 4;
    static constexpr int U4 = WORDS / 4;
};

// The 8 elements held in `w` widened to f32.
__device__ __forceinline__ void words_to_float(const uint32_t* w, float* x, float) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) x[i] = __uint_as_float(w[i]);
}
template <typename T>
__device__ __forceinline__ void words_to_float(const uint32_t* w, float* x, T) {
#pragma unroll
    for (int i = 0; i < VEC / 2; ++i) {
        const float2 f = unpack2<T>(w[i]);
        x[2 * i] = f.x;
        x[2 * i + 1] = f.y;
    }
}

// ------------------------------------------------------------------------------- RoPE

// First frequency of the lane's chunk d0 .. d0+7 and how many it spans: NeoX 8 (element e uses
// frequency f0 + e), GPT-J 4 (pair (d0 + 2i, d0 + 2i + 1) uses f0 + i). Needs rotary_dim % 16 == 0
// (checked on the host) so a chunk never straddles the half or the rotary boundary.
__device__ __forceinline__ int rope_first_freq(const AkRopeTable& t, int d0) {
    const int half = t.rotary_dim >> 1;
    return t.interleaved ? d0 >> 1 : (d0 < half ? d0 : d0 - half);
}

// Rotate the lane's chunk x (d0 < rotary_dim) given the partner chunk (NeoX: the other half's
// chunk; GPT-J: unused) and the chunk's (cos, sin) per frequency, cs[0 .. 8 or 4).
__device__ __forceinline__ void rope_chunk(const AkRopeTable& t, int d0, float* x, const float* partner, const float2* cs) {
    const float a = t.attention_factor;
    if (t.interleaved) {
#pragma unroll
        for (int e = 0; e < VEC; e += 2) {
            const float2 r = rope_rotate(x[e], x[e + 1], cs[e >> 1], a);
            x[e] = r.x;
            x[e + 1] = r.y;
        }
    } else if (d0 < (t.rotary_dim >> 1)) {  // x holds the x1 of its pairs, partner the x2
#pragma unroll
        for (int e = 0; e < VEC; ++e) x[e] = rope_rotate(x[e], partner[e], cs[e], a).x;
    } else {
#pragma unroll
        for (int e = 0; e < VEC; ++e) x[e] = rope_rotate(partner[e], x[e], cs[e], a).y;
    }
}

// (cos, sin) of the lane's frequencies at a query position (once per CTA: table lookups).
__device__ __forceinline__ void rope_cs_direct(const AkRopeTable& t, int pos, int d0, float2* cs) {
    const int f0 = rope_first_freq(t, d0);
    const int nf = t.interleaved ? VEC / 2 : VEC;
#pragma unroll
    for (int i = 0; i < VEC; ++i)
        if (i < nf) cs[i] = rope_cos_sin(t, pos, f0 + i);
}

// (cos, sin) of the lane's frequencies at key positions, walked in increasing order: the `lo`
// entries come as 16-byte loads (the lane's frequencies are contiguous), the `hi` entries are
// reloaded only when the position crosses into another block of AK_ROPE_LO_SIZE positions.
struct KeyRope {
    int f0;         // first frequency of the lane's chunk
    int nf;         // frequencies in the chunk: 8 (NeoX) or 4 (GPT-J)
    int hi_row;     // row of `hi` held in hcs; -1 = none yet
    float2 hcs[VEC];

    __device__ __forceinline__ void init(const AkRopeTable& t, int d0) {
        f0 = rope_first_freq(t, d0);
        nf = t.interleaved ? VEC / 2 : VEC;
        hi_row = -1;
    }

    __device__ __forceinline__ static void load_row(const float* table, int row, int half, int f0, int nf, float2* out) {
        // Byte offset 8 * (row * half + f0) is a multiple of 32 (half % 8 == 0, f0 % 4 == 0).
        const float4* src = reinterpret_cast<const float4*>(table + 2 * ((long long)row * half + f0));
#pragma unroll
        for (int i = 0; i < VEC / 2; ++i) {
            if (2 * i < nf) {
                const float4 v = src[i];
                out[2 * i] = make_float2(v.x, v.y);
                out[2 * i + 1] = make_float2(v.z, v.w);
            }
        }
    }

    __device__ __forceinline__ void cos_sin(const AkRopeTable& t, int pos, float2* cs) {
        const int half = t.rotary_dim >> 1;
        const long long max_pos = (long long)t.n_hi * AK_ROPE_LO_SIZE - 1;  // 64 bits, as rope_cos_sin
        pos = pos < 0 ? 0 : ((long long)pos > max_pos ? (int)max_pos : pos);
        const int hi = pos / AK_ROPE_LO_SIZE;
        const int lo = pos - hi * AK_ROPE_LO_SIZE;
        if (hi != hi_row) {
            load_row(t.hi, hi, half, f0, nf, hcs);
            hi_row = hi;
        }
        float2 l[VEC];
        load_row(t.lo, lo, half, f0, nf, l);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {  // angle addition, as rope_cos_sin (exact for hi = 0)
            if (i < nf) {
                const float2 h = hcs[i];
                cs[i] = make_float2(fmaf(h.x, l[i].x, -h.y * l[i].y), fmaf(h.y, l[i].x, h.x * l[i].y));
            }
        }
    }
};

// Chunk index of the NeoX partner of chunk `c` (c * VEC < rotary_dim).
__device__ __forceinline__ int rope_partner_chunk(const AkRopeTable& t, int c) {
    const int half_chunks = (t.rotary_dim >> 1) / VEC;
    return c < half_chunks ? c + half_chunks : c - half_chunks;
}

// ------------------------------------------------------------------------------ the kernel

// Dynamic shared memory of one decode CTA (the generated entry points check it against the
// kernel list): the larger of the cp.async ring and the end-of-CTA merge buffer.
template <typename T, int ROWS>
constexpr int smem_bytes() {
    constexpr int ring = STAGES * KPS * 2 * Chunk<T>::U4 * THREADS * 16;
    constexpr int merge = (ROWS * THREADS * VEC + 2 * ROWS * THREADS) * 4;
    return ring > merge ? ring : merge;
}

// Keys one CTA consumes per pipeline stage: GROUPS = THREADS / LANES lane groups, KPS keys each.
template <int D>
constexpr int keys_per_stage() {
    return THREADS / (D / VEC) * KPS;
}

template <typename T, int D, int ROWS>
__device__ __forceinline__ void decode_kernel(const AkDecodeParams& p) {
    constexpr int LANES = D / VEC;
    constexpr int GROUPS = THREADS / LANES;
    constexpr int KEYS_PER_STAGE = keys_per_stage<D>();
    constexpr int WORDS = Chunk<T>::WORDS;
    constexpr int U4 = Chunk<T>::U4;
    constexpr int ELEMS_PER_U4 = 16 / (int)sizeof(T);
    static_assert(LANES >= 1 && LANES <= 32 && (LANES & (LANES - 1)) == 0, "D / 8 lanes must be a power of two <= 32");

    AK_DYNAMIC_SHARED(uint4, smem);
    // Ring layout: [STAGES][KPS][K, V][U4][THREADS] 16-byte vectors (each thread its own column).
    auto ring = [&](int slot, int u, int kv, int q4) -> uint4* {
        return &smem[(((slot * KPS + u) * 2 + kv) * U4 + q4) * THREADS + threadIdx.x];
    };

    const int tid = threadIdx.x;
    const int lane = tid % LANES;  // which 8-element slice of the head vector
    const int group = tid / LANES;
    const int split = blockIdx.x;
    const int hk = blockIdx.y / p.row_tiles;
    const int tile = blockIdx.y % p.row_tiles;
    const int b = blockIdx.z;
    const int group_size = p.heads_q / p.heads_kv;
    const int sq = p.seqlen_q;
    const int n_rows = group_size * sq;
    const int sk = p.cache_seqlens[b];
    const bool has_rope = p.rope.lo != nullptr;
    const bool rope_keys = has_rope && p.rope_keys;

    // Keys any row of this sequence may see: P(i) = i + sk - sq ranges over [sk - sq, sk - 1].
    // The last row has P = sk - 1, so causal and window_right never exclude a cached key.
    int lo = 0;
    const int hi = sk;
    if (p.window_left >= 0) lo = max(lo, sk - sq - p.window_left);
    const int len = max(hi - lo, 0);
    // Split chunk: a whole number of stages, a function of (len, num_splits) only.
    int chunk = (len + p.num_splits - 1) / p.num_splits;
    chunk = (chunk + KEYS_PER_STAGE - 1) / KEYS_PER_STAGE * KEYS_PER_STAGE;
    const int k_begin = lo + split * chunk;
    const int k_end = min(hi, k_begin + chunk);
    const int n_iters = k_end > k_begin ? (k_end - k_begin + KEYS_PER_STAGE - 1) / KEYS_PER_STAGE : 0;

    // This tile's query rows: row r -> token t, query head h, position P = t + sk - sq.
    float q[ROWS][VEC];
    float slope[ROWS];
    int qpos[ROWS];
    bool row_ok[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const int gr = tile * ROWS + r;
        row_ok[r] = gr < n_rows;
        const int t = gr % sq;
        const int h = hk * group_size + gr / sq;
        qpos[r] = t + sk - sq;
        slope[r] = (p.alibi_slopes != nullptr && row_ok[r]) ? p.alibi_slopes[h] : 0.f;
#pragma unroll
        for (int e = 0; e < VEC; ++e) q[r][e] = 0.f;
        if (row_ok[r]) {
            const T* qrow = static_cast<const T*>(p.q) + ((long long)(b * sq + t) * p.heads_q + h) * D;
#pragma unroll
            for (int e = 0; e < VEC; ++e) q[r][e] = to_float(qrow[lane * VEC + e]);
            if (has_rope && lane * VEC < p.rope.rotary_dim) {
                float partner[VEC];
                const int pc = p.rope.interleaved ? lane : rope_partner_chunk(p.rope, lane);
#pragma unroll
                for (int e = 0; e < VEC; ++e) partner[e] = to_float(qrow[pc * VEC + e]);
                float2 cs[VEC];
                rope_cs_direct(p.rope, qpos[r], lane * VEC, cs);
                rope_chunk(p.rope, lane * VEC, q[r], partner, cs);
            }
        }
    }

    // Cache addressing for this thread's slice.
    const T* k_base = static_cast<const T*>(p.k_cache) + hk * p.k_head_stride + lane * VEC;
    const T* v_base = static_cast<const T*>(p.v_cache) + hk * p.v_head_stride + lane * VEC;
    const int* table = p.block_table != nullptr ? p.block_table + (long long)b * p.max_blocks : nullptr;
    const int block_mask = (1 << p.block_size_log2) - 1;

    auto issue = [&](int it) {
        const int slot = it % STAGES;
#pragma unroll
        for (int u = 0; u < KPS; ++u) {
            const int j = k_begin + it * KEYS_PER_STAGE + group * KPS + u;
            const bool valid = it < n_iters && j < k_end;
            const T* ks = k_base;
            const T* vs = v_base;
            if (valid) {
                long long blk = b, row = j;
                if (table != nullptr) {
                    blk = table[j >> p.block_size_log2];
                    row = j & block_mask;
                }
                ks += blk * p.k_block_stride + row * p.k_row_stride;
                vs += blk * p.v_block_stride + row * p.v_row_stride;
            }
#pragma unroll
            for (int q4 = 0; q4 < U4; ++q4) {
                cp_async_16(ring(slot, u, 0, q4), ks + q4 * ELEMS_PER_U4, valid);
                cp_async_16(ring(slot, u, 1, q4), vs + q4 * ELEMS_PER_U4, valid);
            }
        }
        cp_async_commit();  // also when empty, so group counting stays uniform
    };

    KeyRope key_rope;
    if (rope_keys) key_rope.init(p.rope, lane * VEC);

    float m[ROWS], l[ROWS], acc[ROWS][VEC];  // running max (log2 units), sum, output
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        m[r] = -INFINITY;
        l[r] = 0.f;
#pragma unroll
        for (int e = 0; e < VEC; ++e) acc[r][e] = 0.f;
    }

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) issue(s);

    for (int it = 0; it < n_iters; ++it) {
        cp_async_wait<STAGES - 2>();  // stage `it` has landed (this thread's own copies)
        uint32_t kw[KPS][WORDS], vw[KPS][WORDS];
        const int slot = it % STAGES;
#pragma unroll
        for (int u = 0; u < KPS; ++u)
#pragma unroll
            for (int q4 = 0; q4 < U4; ++q4) {
                const uint4 kk = *ring(slot, u, 0, q4);
                const uint4 vv = *ring(slot, u, 1, q4);
                kw[u][q4 * 4 + 0] = kk.x; kw[u][q4 * 4 + 1] = kk.y; kw[u][q4 * 4 + 2] = kk.z; kw[u][q4 * 4 + 3] = kk.w;
                vw[u][q4 * 4 + 0] = vv.x; vw[u][q4 * 4 + 1] = vv.y; vw[u][q4 * 4 + 2] = vv.z; vw[u][q4 * 4 + 3] = vv.w;
            }
        issue(it + STAGES - 1);  // refill the slot read one iteration ago

        // Scores s[u][r] in log2 units (-inf where masked).
        float s[KPS][ROWS];
#pragma unroll
        for (int u = 0; u < KPS; ++u) {
            const int j = k_begin + it * KEYS_PER_STAGE + group * KPS + u;
            float kf[VEC];
            words_to_float(kw[u], kf, T());
            if (rope_keys) {
                // Every lane takes part in the shuffle; lanes past rotary_dim ignore the result.
                const bool rotated = lane * VEC < p.rope.rotary_dim;
                const int pc = (p.rope.interleaved || !rotated) ? lane : rope_partner_chunk(p.rope, lane);
                float partner[VEC];
#pragma unroll
                for (int e = 0; e < VEC; ++e) partner[e] = __shfl_sync(FULL, kf[e], pc, LANES);
                if (rotated) {
                    float2 cs[VEC];
                    key_rope.cos_sin(p.rope, j, cs);
                    rope_chunk(p.rope, lane * VEC, kf, partner, cs);
                }
            }
#pragma unroll
            for (int r = 0; r < ROWS; ++r) {
                float dot = 0.f;
#pragma unroll
                for (int e = 0; e < VEC; ++e) dot = fmaf(q[r][e], kf[e], dot);
#pragma unroll
                for (int off = LANES / 2; off > 0; off >>= 1) dot += __shfl_xor_sync(FULL, dot, off, LANES);
                float x = dot * p.scale;
                if (p.softcap > 0.f) x = p.softcap * tanhf(x / p.softcap);
                if (p.alibi_slopes != nullptr) x -= slope[r] * fabsf((float)(qpos[r] - j));
                bool ok = row_ok[r] && j < k_end;
                if (p.causal) ok = ok && j <= qpos[r];
                if (p.window_left >= 0) ok = ok && j >= qpos[r] - p.window_left;
                if (p.window_right >= 0) ok = ok && j <= qpos[r] + p.window_right;
                s[u][r] = ok ? x * kLog2e : -INFINITY;
            }
        }

        // Online softmax update (identical on every lane of the group).
        float vf[KPS][VEC];
#pragma unroll
        for (int u = 0; u < KPS; ++u) words_to_float(vw[u], vf[u], T());
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
            float mx = m[r];
#pragma unroll
            for (int u = 0; u < KPS; ++u) mx = fmaxf(mx, s[u][r]);
            if (mx == -INFINITY) continue;  // nothing allowed yet for this row
            const float alpha = exp2f(m[r] - mx);
            float pu[KPS];
            float psum = 0.f;
#pragma unroll
            for (int u = 0; u < KPS; ++u) {
                pu[u] = exp2f(s[u][r] - mx);
                psum += pu[u];
            }
            l[r] = l[r] * alpha + psum;
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
                float a = acc[r][e] * alpha;
#pragma unroll
                for (int u = 0; u < KPS; ++u) a = fmaf(pu[u], vf[u][e], a);
                acc[r][e] = a;
            }
            m[r] = mx;
        }
    }
    cp_async_wait<0>();
    __syncthreads();  // the ring is reused below

    // Merge the groups' states in group order (deterministic).
    float* red_acc = reinterpret_cast<float*>(smem);      // [ROWS][GROUPS][D]
    float* red_m = red_acc + ROWS * THREADS * VEC;        // [ROWS][GROUPS]
    float* red_l = red_m + ROWS * GROUPS;                 // [ROWS][GROUPS]
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) red_acc[(r * GROUPS + group) * D + lane * VEC + e] = acc[r][e];
        if (lane == 0) {
            red_m[r * GROUPS + group] = m[r];
            red_l[r * GROUPS + group] = l[r];
        }
    }
    __syncthreads();

    const bool partial = p.num_splits > 1;
    for (int idx = tid; idx < ROWS * D; idx += THREADS) {
        const int r = idx / D;
        const int d = idx % D;
        const int gr = tile * ROWS + r;
        if (gr >= n_rows) continue;
        const int t = gr % sq;
        const int h = hk * group_size + gr / sq;
        float mmax = -INFINITY;
        for (int g = 0; g < GROUPS; ++g) mmax = fmaxf(mmax, red_m[r * GROUPS + g]);
        float out = 0.f, lse = -INFINITY;
        if (mmax != -INFINITY) {
            float lsum = 0.f, osum = 0.f;
            for (int g = 0; g < GROUPS; ++g) {
                const float w = exp2f(red_m[r * GROUPS + g] - mmax);  // 0 for empty groups
                lsum = fmaf(red_l[r * GROUPS + g], w, lsum);
                osum = fmaf(red_acc[(r * GROUPS + g) * D + d], w, osum);
            }
            out = osum / lsum;
            lse = (mmax + log2f(lsum)) * kLn2;
        }
        const long long orow = (long long)(b * sq + t) * p.heads_q + h;  // row of o [B, Sq, Hq, Dv]
        const long long lrow = ((long long)b * p.heads_q + h) * sq + t;   // entry of lse [B, Hq, Sq]
        if (partial) {
            const long long rows = (long long)p.batch * sq * p.heads_q;
            p.o_partial[((long long)split * rows + orow) * D + d] = out;
            if (d == 0) p.lse_partial[(long long)split * p.batch * p.heads_q * sq + lrow] = lse;
        } else {
            static_cast<T*>(p.o)[orow * D + d] = from_float<T>(out);
            if (d == 0) p.lse[lrow] = lse;
        }
    }
}

// -------------------------------------------------------------------- combine / merge

// Weighted sum of `n` normalised states with natural-log LSEs, in index order. All -inf: 0, -inf.
template <typename T>
__device__ __forceinline__ void combine_kernel(const AkDecodeCombineParams& p) {
    const int row = blockIdx.x;  // (b * Sq + t) * Hq + h
    const int rows = p.batch * p.seqlen_q * p.heads_q;
    if (row >= rows) return;
    const int h = row % p.heads_q;
    const int bt = row / p.heads_q;
    const int t = bt % p.seqlen_q;
    const int b = bt / p.seqlen_q;
    const long long lrow = ((long long)b * p.heads_q + h) * p.seqlen_q + t;
    const long long lstride = (long long)p.batch * p.heads_q * p.seqlen_q;
    float mmax = -INFINITY;
    for (int s = 0; s < p.num_splits; ++s) mmax = fmaxf(mmax, p.lse_partial[s * lstride + lrow]);
    float lsum = 0.f;
    if (mmax != -INFINITY)
        for (int s = 0; s < p.num_splits; ++s) lsum += expf(p.lse_partial[s * lstride + lrow] - mmax);
    for (int d = threadIdx.x; d < p.head_dim_v; d += blockDim.x) {
        float out = 0.f;
        if (mmax != -INFINITY) {
            float osum = 0.f;
            for (int s = 0; s < p.num_splits; ++s) {
                const float w = expf(p.lse_partial[s * lstride + lrow] - mmax);
                if (w > 0.f) osum = fmaf(w, p.o_partial[((long long)s * rows + row) * p.head_dim_v + d], osum);
            }
            out = osum / lsum;
        }
        static_cast<T*>(p.o)[(long long)row * p.head_dim_v + d] = from_float<T>(out);
    }
    if (threadIdx.x == 0) p.lse[lrow] = mmax == -INFINITY ? -INFINITY : mmax + logf(lsum);
}

// merge_states: one warp per (b, s, h) row; lanes stride over Dv.
template <typename T>
__device__ __forceinline__ void merge_kernel(const AkMergeStatesParams& p) {
    const long long row = (long long)blockIdx.x * blockDim.y + threadIdx.y;  // (b * S + s) * H + h
    const long long rows = (long long)p.batch * p.seqlen * p.heads;
    if (row >= rows) return;
    const int h = (int)(row % p.heads);
    const long long bs = row / p.heads;
    const int s = (int)(bs % p.seqlen);
    const long long b = bs / p.seqlen;
    const long long lidx = (b * p.heads + h) * p.seqlen + s;
    const float la = p.lse_a[lidx], lb = p.lse_b[lidx];
    const float mx = fmaxf(la, lb);
    const T* oa = static_cast<const T*>(p.o_a) + row * p.head_dim_v;
    const T* ob = static_cast<const T*>(p.o_b) + row * p.head_dim_v;
    T* o = static_cast<T*>(p.o) + row * p.head_dim_v;
    if (mx == -INFINITY) {  // neither side saw a key
        for (int d = threadIdx.x; d < p.head_dim_v; d += blockDim.x) o[d] = from_float<T>(0.f);
        if (threadIdx.x == 0) p.lse[lidx] = -INFINITY;
        return;
    }
    const float wa = expf(la - mx), wb = expf(lb - mx);  // one of them is 1
    const float inv = 1.f / (wa + wb);
    for (int d = threadIdx.x; d < p.head_dim_v; d += blockDim.x) {
        // A side with zero weight is skipped, so its (unused) values cannot leak a NaN in.
        float acc = 0.f;
        if (wa > 0.f) acc = wa * to_float(oa[d]);
        if (wb > 0.f) acc = fmaf(wb, to_float(ob[d]), acc);
        o[d] = from_float<T>(acc * inv);
    }
    if (threadIdx.x == 0) p.lse[lidx] = mx + log1pf(fminf(wa, wb));
}

}  // namespace ak::decode

// ------------------------------------------------------------------------- entry points
// Generated from src/runtime/kernel_list.rs (`decode::`): ak_decode_<dtype>_d<D>_r<ROWS> (f16/bf16,
// D = Dv in {64, 128, 256}, ROWS query rows per CTA), ak_decode_combine_<dtype>,
// ak_merge_states_<dtype> (f32 too). (f32 decode runs on the CPU path only: it would double the
// compile time for no engine use.)
#include "generated/decode_decode_entries.cuh"
