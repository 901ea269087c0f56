// Recurrent linear_attention and delta_rule (spec section 4), f32 state and math.
//
//   linear_attention:  S_t = diag(exp g_t) S_{t-1} + k_t^T v_t,  o_t = scale q_t S_t
//                      (bonus u: o_t = scale q_t (S_{t-1} + diag(u) k_t^T v_t))
//   delta_rule:        S_t = (diag(exp g_t) + b_t a_t^T) S_{t-1} + k_t^T v_t,  o_t = scale q_t S_t
//
// Every column c of S evolves on its own given the token's q, k, g, a, b and v[c]:
//   s <- e * s + b (a . s) + k v[c],   o[c] = q . s
// so both kernels give threads whole (or split) columns and never exchange state.
//
// prefill (any T): one block per (sequence, head, 32 value columns). A thread owns one column
//   (KSPLIT = 1) or a quarter of one (KSPLIT = 4, K > 128) in registers. Tokens are staged in shared
//   memory a chunk at a time (q pre-scaled, exp(g) - 1 precomputed, zero-padded to the register
//   length), so there are two barriers per chunk, none per token.
//
// Decay: every kernel applies exp(g) as s + (exp(g) - 1) s with expm1f (one fma, like the plain
// multiply). An f32 exp(g) near 1 is off by up to half an ulp of 1 (3e-8), the same way every
// step: at g = -1e-4 that is a 3e-4 relative error in the decay rate, which 64k steps turn into
// ~1e-4 in o and the state. expm1f keeps full relative precision there. g = 0 stays an exact
// identity (fma(0, s, s) = s) and g = -inf an exact reset (expm1f = -1, fma(-1, s, s) = 0).
// The CPU reference multiplies by exp(g) when exp(g) < 0.5; one staged float cannot say which
// form to use for every g (g > 0 included), so here the fma form is used throughout. For strong
// decays it differs from exp(g) s by at most 2^-25 |s| a step (expm1 rounded near -1), which
// the decay itself damps instead of accumulating.
// decode (T = 1, many sequences): one block per (sequence, head, 64 value columns), 256 threads
//   as 16 column groups (4 adjacent columns each, so state moves in coalesced 16-byte vectors)
//   x 16 row groups (rows rg, rg + 16, ...). The few cross-row sums go through shared memory.
// Element types are a uniform runtime branch (ak::load_any / store_any): loads happen only while
// staging, outside the register-resident loops, and one kernel per shape keeps the build small.
#include "params.h"
#include "common/dtype.cuh"
#include "common/tile.cuh"

namespace ak::linear {

// --------------------------------------------------------------------------- shared helpers
struct SeqSpan {
    long long first_row;
    int len;
};

__device__ __forceinline__ SeqSpan seq_span(const AkLinearParams& p, int n) {
    if (p.cu_seqlens) {
        const int lo = p.cu_seqlens[n], hi = p.cu_seqlens[n + 1];
        return {lo, hi - lo};
    }
    return {(long long)n * p.seq_len, p.seq_len};
}

// Element offset of sequence n's head h in the state tensors.
__device__ __forceinline__ long long state_offset(const AkLinearParams& p, int n, int h) {
    const long long slot = p.slot_ids ? p.slot_ids[n] : n;
    return (slot * p.heads + h) * (long long)p.key_dim * p.value_dim;
}

__device__ __forceinline__ float4 operator+(float4 a, float4 b) { return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w); }
__device__ __forceinline__ float4 fma4(float s, float4 a, float4 c) {
    return make_float4(fmaf(s, a.x, c.x), fmaf(s, a.y, c.y), fmaf(s, a.z, c.z), fmaf(s, a.w, c.w));
}

// exp(g) - 1 for the log decay g of token `row`, head h, key k (k ignored for scalar layouts);
// 0 without a decay. Applied as apply_decay(d, s) = s + d s.
__device__ __forceinline__ float decay_m1_at(const AkLinearParams& p, long long row, int h, int k) {
    long long i = 0;
    switch (p.decay_kind) {
        case AK_LINEAR_DECAY_PER_TOKEN_KEY: i = (row * p.heads + h) * p.key_dim + k; break;
        case AK_LINEAR_DECAY_PER_TOKEN: i = row * p.heads + h; break;
        case AK_LINEAR_DECAY_PER_HEAD_KEY: i = (long long)h * p.key_dim + k; break;
        case AK_LINEAR_DECAY_PER_HEAD: i = h; break;
        default: return 0.f;
    }
    return expm1f(load_any(p.g, i, p.g_dtype));  // g = -inf gives exactly -1
}

__device__ __forceinline__ float apply_decay(float decay_m1, float s) { return fmaf(decay_m1, s, s); }
__device__ __forceinline__ float4 apply_decay(float decay_m1, float4 s) { return fma4(decay_m1, s, s); }

// Per-key decays are staged as vectors; none / per-token / per-head as one scalar per token
// (no decay is a scalar 0: one fma per element is cheaper than another kernel variant).
__device__ __forceinline__ bool decay_is_vector(int kind) {
    return kind == AK_LINEAR_DECAY_PER_TOKEN_KEY || kind == AK_LINEAR_DECAY_PER_HEAD_KEY;
}

// =================================================================================== prefill
constexpr int kPrefillCols = 32;  // value columns per block: one warp's worth

// Shared-memory layout of one staged chunk. A token row holds KSPLIT parts of KPT floats, each
// part shifted by 4 more floats so the KSPLIT lanes of one column read different banks.
// The buffer (the host sizes it with the kernel list's formula, which the generated entry points
// check against `floats`): rows = 2 + vector decay + 2 * delta staged rows of ROW floats per
// token, the token's 32 v columns, two per-token scalars, then KPAD floats of u.
template <int KPT, int KSPLIT>
struct PrefillLayout {
    static constexpr int KPAD = KPT * KSPLIT;  // register length of a column (>= K, zero padded)
    static constexpr int PART = KSPLIT == 1 ? KPT : KPT + 4;
    static constexpr int ROW = KSPLIT * PART;  // floats per staged token row
    static constexpr int floats(int chunk, int rows) { return chunk * (rows * ROW + kPrefillCols + 2) + KPAD; }
    __device__ static int at(int t, int kk) { return t * ROW + (kk / KPT) * PART + kk % KPT; }
};

template <bool DELTA, int KPT, int KSPLIT, bool VEC_DECAY, bool BONUS>
__device__ __forceinline__ void prefill_body(const AkLinearParams& p, float* smem) {
    using L = PrefillLayout<KPT, KSPLIT>;
    const int n_slices = (p.value_dim + kPrefillCols - 1) / kPrefillCols;
    const int slice = blockIdx.x % n_slices;
    const int h = (blockIdx.x / n_slices) % p.heads;
    const int n = blockIdx.x / (n_slices * p.heads);
    const int tid = threadIdx.x, nthreads = blockDim.x;
    const int lane = tid & 31, warp = tid >> 5, nwarps = nthreads >> 5;
    const int part = tid % KSPLIT;  // which K slice (rows part*KPT ..) this thread owns
    const int col_in_block = tid / KSPLIT;
    const int col = slice * kPrefillCols + col_in_block;
    const bool active = col < p.value_dim;
    const int K = p.key_dim, V = p.value_dim, H = p.heads, dt = p.dtype;
    const int CH = p.chunk;

    // Chunk buffers: q*scale, k, [exp(g) - 1 per key], [a, b] rows; v columns; per-token scalars; u.
    constexpr int n_rows = 2 + (VEC_DECAY ? 1 : 0) + (DELTA ? 2 : 0);
    float* sq = smem;
    float* sk = sq + CH * L::ROW;
    float* sdv = sk + CH * L::ROW;                        // VEC_DECAY only
    float* sa = sdv + (VEC_DECAY ? CH * L::ROW : 0);      // DELTA only
    float* sb = sa + (DELTA ? CH * L::ROW : 0);           // DELTA only
    float* sv = smem + n_rows * CH * L::ROW;              // [CH][32]
    float* sds = sv + CH * kPrefillCols;                  // [CH] scalar decay - 1
    float* squk = sds + CH;                               // [CH] bonus: scale * sum_k q u k
    float* su = squk + CH;                                // [KPAD] bonus u

    const SeqSpan seq = seq_span(p, n);
    const long long sbase = state_offset(p, n, h);

    if (BONUS) {
        for (int kk = tid; kk < L::KPAD; kk += nthreads)
            su[kk] = kk < K ? load_any(p.u, (long long)h * K + kk, p.u_dtype) : 0.f;
    }

    // The column (or half column) of the state, rows part*KPT + i.
    float s[KPT];
#pragma unroll
    for (int i = 0; i < KPT; ++i) {
        const int kk = part * KPT + i;
        s[i] = (p.state_in && active && kk < K) ? p.state_in[sbase + (long long)kk * V + col] : 0.f;
    }

    for (int t0 = 0; t0 < seq.len; t0 += CH) {
        const int nt = min(CH, seq.len - t0);
        const long long row0 = seq.first_row + t0;
        // ---- stage the chunk, one token row per warp pass (keys beyond K: q = k = a = b = 0,
        // decay - 1 = 0). Lanes walk the keys: coalesced loads, no divisions.
        for (int t = warp; t < nt; t += nwarps) {
            const long long row = row0 + t;
            const long long gbase = (row * H + h) * K;
            for (int kk = lane; kk < L::KPAD; kk += 32) {
                const int si = L::at(t, kk);
                const bool in = kk < K;
                sq[si] = in ? load_any(p.q, gbase + kk, dt) * p.scale : 0.f;
                sk[si] = in ? load_any(p.k, gbase + kk, dt) : 0.f;
                if (VEC_DECAY) sdv[si] = in ? decay_m1_at(p, row, h, kk) : 0.f;
                if (DELTA) {
                    sa[si] = in ? load_any(p.a, gbase + kk, dt) : 0.f;
                    sb[si] = in ? load_any(p.b, gbase + kk, dt) : 0.f;
                }
            }
            const int c = slice * kPrefillCols + lane;
            sv[t * kPrefillCols + lane] = c < V ? load_any(p.v, (row * H + h) * V + c, dt) : 0.f;
        }
        if (!VEC_DECAY)
            for (int t = tid; t < nt; t += nthreads) sds[t] = decay_m1_at(p, row0 + t, h, 0);
        __syncthreads();
        if (BONUS) {  // one warp per token: the column-independent part of the bonus term
            for (int t = warp; t < nt; t += nwarps) {
                float acc = 0.f;
                for (int kk = lane; kk < L::KPAD; kk += 32) {
                    const int si = L::at(t, kk);
                    acc = fmaf(sq[si] * sk[si], su[kk], acc);
                }
                acc = warp_sum(acc);
                if (lane == 0) squk[t] = acc;
            }
            __syncthreads();
        }

        // ---- the recurrence over the chunk, all in registers
        for (int t = 0; t < nt; ++t) {
            const float vc = sv[t * kPrefillCols + col_in_block];
            const int off = t * L::ROW + part * L::PART;
            const float4* q4 = reinterpret_cast<const float4*>(sq + off);
            const float4* k4 = reinterpret_cast<const float4*>(sk + off);
            const float4* d4 = reinterpret_cast<const float4*>(sdv + off);
            const float4* a4 = reinterpret_cast<const float4*>(sa + off);
            const float4* b4 = reinterpret_cast<const float4*>(sb + off);
            const float ds = VEC_DECAY ? 0.f : sds[t];
            float sab = 0.f;  // a . s over the old state (delta rule)
            if (DELTA) {
                float acc0 = 0.f, acc1 = 0.f;
#pragma unroll
                for (int j = 0; j < KPT / 4; ++j) {
                    const float4 av = a4[j];
                    acc0 = fmaf(av.x, s[4 * j], acc0);
                    acc1 = fmaf(av.y, s[4 * j + 1], acc1);
                    acc0 = fmaf(av.z, s[4 * j + 2], acc0);
                    acc1 = fmaf(av.w, s[4 * j + 3], acc1);
                }
                sab = acc0 + acc1;
                #pragma unroll
                for (int m = 1; m < KSPLIT; m <<= 1) sab += __shfl_xor_sync(0xffffffffu, sab, m);
            }
            float o0 = 0.f, o1 = 0.f;
#pragma unroll
            for (int j = 0; j < KPT / 4; ++j) {
                const float4 qv = q4[j], kv = k4[j];
                const float4 dv = VEC_DECAY ? d4[j] : make_float4(ds, ds, ds, ds);
                const float4 bv = DELTA ? b4[j] : make_float4(0.f, 0.f, 0.f, 0.f);
                const float qq[4] = {qv.x, qv.y, qv.z, qv.w};
                const float kk[4] = {kv.x, kv.y, kv.z, kv.w};
                const float dd[4] = {dv.x, dv.y, dv.z, dv.w};
                const float bb[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    float& x = s[4 * j + e];
                    float& acc = (e & 1) ? o1 : o0;
                    if (BONUS) acc = fmaf(qq[e], x, acc);  // exclusive form reads S_{t-1}
                    float nx = apply_decay(dd[e], x);
                    if (DELTA) nx = fmaf(bb[e], sab, nx);
                    x = fmaf(kk[e], vc, nx);
                    if (!BONUS) acc = fmaf(qq[e], x, acc);
                }
            }
            float out = o0 + o1;
            #pragma unroll
            for (int m = 1; m < KSPLIT; m <<= 1) out += __shfl_xor_sync(0xffffffffu, out, m);
            if (BONUS) out = fmaf(squk[t], vc, out);
            if (active && part == 0) store_any(p.o, ((row0 + t) * H + h) * V + col, dt, out);
        }
        __syncthreads();  // the next chunk overwrites the buffers
    }

#pragma unroll
    for (int i = 0; i < KPT; ++i) {
        const int kk = part * KPT + i;
        if (active && kk < K) p.state_out[sbase + (long long)kk * V + col] = s[i];
    }
}

template <bool DELTA, int KPT, int KSPLIT>
__device__ __forceinline__ void prefill(const AkLinearParams& p) {
    AK_DYNAMIC_SHARED(float4, smem4);
    float* smem = reinterpret_cast<float*>(smem4);
    const bool vec = decay_is_vector(p.decay_kind);
    if (DELTA || p.u == nullptr) {
        if (vec) prefill_body<DELTA, KPT, KSPLIT, true, false>(p, smem);
        else prefill_body<DELTA, KPT, KSPLIT, false, false>(p, smem);
    } else {
        if (vec) prefill_body<DELTA, KPT, KSPLIT, true, true>(p, smem);
        else prefill_body<DELTA, KPT, KSPLIT, false, true>(p, smem);
    }
}

// ==================================================================================== decode
constexpr int kDecodeCols = 64;       // value columns per block
constexpr int kDecodeColGroups = 16;  // threads across columns, 4 adjacent columns each
constexpr int kDecodeRowGroups = 16;  // threads across rows: rows rg, rg + 16, ...
constexpr int kDecodeThreads = kDecodeColGroups * kDecodeRowGroups;

template <bool DELTA, int ROWS, bool VEC_DECAY, bool BONUS>
__device__ __forceinline__ void decode_body(const AkLinearParams& p) {
    constexpr int KPAD = ROWS * kDecodeRowGroups;
    AK_SHARED(float, sq, [KPAD]);
    AK_SHARED(float, sk, [KPAD]);
    AK_SHARED(float, sd, [VEC_DECAY ? KPAD : 1]);
    AK_SHARED(float, sa, [DELTA ? KPAD : 1]);
    AK_SHARED(float, sb, [DELTA ? KPAD : 1]);
    AK_SHARED(float, suk, [BONUS ? KPAD : 1]);
    AK_SHARED(float, sv, [kDecodeCols]);
    AK_SHARED(float, red, [kDecodeRowGroups][kDecodeCols]);
    AK_SHARED(float, sds, );

    const int n_slices = (p.value_dim + kDecodeCols - 1) / kDecodeCols;
    const int slice = blockIdx.x % n_slices;
    const int h = (blockIdx.x / n_slices) % p.heads;
    const int n = blockIdx.x / (n_slices * p.heads);
    const int tid = threadIdx.x;
    const int cg = tid % kDecodeColGroups, rg = tid / kDecodeColGroups;
    const int K = p.key_dim, V = p.value_dim, H = p.heads, dt = p.dtype;
    const int col0 = slice * kDecodeCols + 4 * cg;  // first of this thread's 4 columns
    const bool active = col0 < V;                   // V % 4 == 0: all 4 columns or none

    const SeqSpan seq = seq_span(p, n);
    const long long sbase = state_offset(p, n, h);

    // State rows rg + 16 j, columns col0 .. col0 + 3, as 16-byte vectors; all loads in flight.
    float4 s[ROWS];
#pragma unroll
    for (int j = 0; j < ROWS; ++j) {
        const int kk = rg + kDecodeRowGroups * j;
        s[j] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (p.state_in && active && kk < K)
            s[j] = *reinterpret_cast<const float4*>(p.state_in + sbase + (long long)kk * V + col0);
    }

    for (int t = 0; t < seq.len; ++t) {
        const long long row = seq.first_row + t;
        for (int kk = tid; kk < KPAD; kk += kDecodeThreads) {
            const long long gi = (row * H + h) * K + kk;
            const bool in = kk < K;
            sq[kk] = in ? load_any(p.q, gi, dt) * p.scale : 0.f;
            const float kv = in ? load_any(p.k, gi, dt) : 0.f;
            sk[kk] = kv;
            if (VEC_DECAY) sd[kk] = in ? decay_m1_at(p, row, h, kk) : 0.f;
            if (DELTA) {
                sa[kk] = in ? load_any(p.a, gi, dt) : 0.f;
                sb[kk] = in ? load_any(p.b, gi, dt) : 0.f;
            }
            if (BONUS) suk[kk] = in ? load_any(p.u, (long long)h * K + kk, p.u_dtype) * kv : 0.f;
        }
        if (tid < kDecodeCols) {
            const int c = slice * kDecodeCols + tid;
            sv[tid] = c < V ? load_any(p.v, (row * H + h) * V + c, dt) : 0.f;
        }
        if (!VEC_DECAY && tid == 0) sds = decay_m1_at(p, row, h, 0);
        __syncthreads();

        const float4 vc = reinterpret_cast<const float4*>(sv)[cg];
        float4 sab = make_float4(0.f, 0.f, 0.f, 0.f);
        if (DELTA) {  // a . s per column: partial over my rows, then across the row groups
#pragma unroll
            for (int j = 0; j < ROWS; ++j) sab = fma4(sa[rg + kDecodeRowGroups * j], s[j], sab);
            reinterpret_cast<float4*>(red[rg])[cg] = sab;
            __syncthreads();
            sab = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
            for (int r = 0; r < kDecodeRowGroups; ++r) sab = sab + reinterpret_cast<const float4*>(red[r])[cg];
            __syncthreads();  // red is reused for the output below
        }
        const float ds = VEC_DECAY ? 0.f : sds;
        float4 out = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int j = 0; j < ROWS; ++j) {
            const int kk = rg + kDecodeRowGroups * j;
            float4 x = apply_decay(VEC_DECAY ? sd[kk] : ds, s[j]);
            if (DELTA) x = fma4(sb[kk], sab, x);
            x = fma4(sk[kk], vc, x);
            if (BONUS) out = fma4(sq[kk], fma4(suk[kk], vc, s[j]), out);  // S_{t-1} + u k v
            else out = fma4(sq[kk], x, out);
            s[j] = x;
        }
        reinterpret_cast<float4*>(red[rg])[cg] = out;
        __syncthreads();
        if (tid < kDecodeCols) {
            const int c = slice * kDecodeCols + tid;
            float acc = 0.f;
#pragma unroll
            for (int r = 0; r < kDecodeRowGroups; ++r) acc += red[r][tid];
            if (c < V) store_any(p.o, (row * H + h) * V + c, dt, acc);
        }
        // No barrier needed here: the next token's staging writes only buffers every thread
        // finished reading before the barrier above, and red is next written after a barrier.
    }

#pragma unroll
    for (int j = 0; j < ROWS; ++j) {
        const int kk = rg + kDecodeRowGroups * j;
        if (active && kk < K) *reinterpret_cast<float4*>(p.state_out + sbase + (long long)kk * V + col0) = s[j];
    }
}

template <bool DELTA, int ROWS>
__device__ __forceinline__ void decode(const AkLinearParams& p) {
    const bool vec = decay_is_vector(p.decay_kind);
    if (DELTA || p.u == nullptr) {
        if (vec) decode_body<DELTA, ROWS, true, false>(p);
        else decode_body<DELTA, ROWS, false, false>(p);
    } else {
        if (vec) decode_body<DELTA, ROWS, true, true>(p);
        else decode_body<DELTA, ROWS, false, true>(p);
    }
}

}  // namespace ak::linear

// ============================================================================== entry points
// Generated from src/runtime/kernel_list.rs (`linear::BINS`), one per key-dim bin:
// prefill: ak_{linear,delta}_prefill_k<64|128|256> (K <= 64 and K <= 128: 32 threads; K <= 256:
//   128 threads, four per column, 64 rows each). Grid: n_seqs * heads * ceil(V / 32); dynamic
//   shared memory PrefillLayout::floats(chunk, rows) floats. Any V >= 1.
// decode: ak_{linear,delta}_decode_k<64|128|256>; V % 4 == 0. 256 threads; grid
//   n_seqs * heads * ceil(V / 64). Bandwidth-bound at T = 1: the launch bounds ask for 3
//   (K <= 128) or 2 resident blocks per SM so enough state loads are in flight. Loops over the
//   tokens of each sequence, but pays a global-load round trip per token: meant for T = 1 (and a
//   few speculative tokens).
#include "generated/linear_recurrent_entries.cuh"
