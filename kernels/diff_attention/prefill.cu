// Fused differential attention, prefill (spec section 3), variants v1 and v2.
//
// One block = one diff head h, one tile of BR query rows, 8 warps:
//   warps 0-3 run softmax map 1 (Q1 = q head 2h against K1), warps 4-7 map 2 (Q2 against K2),
//   warp w % 4 owns query rows 16 * (w % 4) .. +16 of the tile in both groups.
// Per KV tile, K1, K2 and the shared V are copied to shared memory once (cp.async, double
// buffer) and read by both groups, so each map keeps its own online-softmax state (m, l, acc)
// in registers while V traffic is paid once. Shared tiles are unpadded and XOR-swizzled
// (ak::swizzle), so ldmatrix and cp.async rows hit distinct banks. The epilogue hands
// lambda * O2 / l2 to the map-1 warps through shared memory; they form O1 / l1 - lambda * O2 / l2,
// apply the RMSNorm over the full Dv-wide row (the row sits in one quad of lanes: a two-step
// shuffle reduction) and store.
// A row with no allowed key has O1 = O2 = 0, so it comes out as 0 (norm of zero is 0) and its
// lse is -inf.
//
// v1: K1 = k head 2g, K2 = k head 2g+1, V = v head g of width Dv = 2d, lambda per head, norm.
// v2: K1 = K2 = k head g (loaded once), V width Dv = d, lambda per token, no norm.
#include "params.h"
#include "common/dtype.cuh"
#include "common/rope.cuh"
#include "common/tile.cuh"
#include <math.h>

namespace ak::diff {

constexpr int BR = 64;        // query rows per block
constexpr int BC = 64;        // keys per KV tile
constexpr int THREADS = 256;  // 8 warps: two groups of four

template <int D, int DV, bool SHARED_K> struct Layout {
    static constexpr int NK = SHARED_K ? 1 : 2;  // K tiles per stage
    static constexpr int Q_TILE = BR * D;
    static constexpr int K_TILE = BC * D;
    static constexpr int V_TILE = BC * DV;
    static constexpr int STAGE = NK * K_TILE + V_TILE;
    // Dynamic shared memory, in elements of T: the Q1 and Q2 tiles, then two KV stages.
    static constexpr int SMEM_ELEMS = 2 * Q_TILE + 2 * STAGE;
    // Epilogue exchange buffer (f32, fragment order) reuses the KV stages.
    static_assert(4 * 32 * (DV / 2) * 4 <= 2 * STAGE * 2, "exchange buffer must fit in the KV stages");
};

// Rotate `rows` rows of a swizzled [.. x COLS] tile in place; pos(r) gives row r's position.
template <typename T, int COLS, typename PosFn>
__device__ __forceinline__ void rope_tile(T* tile, int rows, const AkRopeTable& rt, PosFn pos) {
    const int half = rt.rotary_dim >> 1;
    for (int it = threadIdx.x; it < rows * half; it += THREADS) {
        const int r = it / half, i = it - r * half;
        const int pp = pos(r);  // may be negative (default query positions with Sq > Sk)
        float2 cs = rope_cos_sin(rt, pp < 0 ? -pp : pp, i);
        if (pp < 0) cs.y = -cs.y;  // cos(-x) = cos x, sin(-x) = -sin x
        const int2 pr = rope_pair(rt, i);
        T& a = tile[swizzle<COLS>(r, pr.x)];
        T& b = tile[swizzle<COLS>(r, pr.y)];
        const float2 y = rope_rotate(to_float(a), to_float(b), cs, rt.attention_factor);
        a = from_float<T>(y.x);
        b = from_float<T>(y.y);
    }
}

template <typename T, int D, int DV, bool SHARED_K>
__device__ __forceinline__ void diff_prefill(const AkDiffAttnParams& p) {
    using L = Layout<D, DV, SHARED_K>;
    AK_DYNAMIC_SHARED(unsigned char, smem_raw);
    T* sQ = reinterpret_cast<T*>(smem_raw);  // [2][BR][D]
    T* sKV = sQ + 2 * L::Q_TILE;              // [2 stages][K1 (K2) V]

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int map = warp >> 2, wrow = (warp & 3) * 16;
    const int b = blockIdx.z, h = blockIdx.y, row0 = blockIdx.x * BR;

    int q_start = 0, k_start = 0, Sq = p.seqlen_q, Sk = p.seqlen_k;
    if (p.cu_seqlens_q) { q_start = p.cu_seqlens_q[b]; Sq = p.cu_seqlens_q[b + 1] - q_start; }
    if (p.cu_seqlens_k) { k_start = p.cu_seqlens_k[b]; Sk = p.cu_seqlens_k[b + 1] - k_start; }
    if (row0 >= Sq) return;

    const int kvh = h / p.kv_groups;
    const T* qb = static_cast<const T*>(p.q) + b * p.q_batch_stride + q_start * p.q_row_stride;
    const T* kb = static_cast<const T*>(p.k) + b * p.k_batch_stride + k_start * p.k_row_stride;
    const T* vb = static_cast<const T*>(p.v) + b * p.v_batch_stride + k_start * p.v_row_stride +
                  kvh * p.v_head_stride;
    const T* k1 = kb + (SHARED_K ? kvh : 2 * kvh) * p.k_head_stride;
    const T* k2 = SHARED_K ? k1 : k1 + p.k_head_stride;

    // ---- Q1, Q2 -> shared (rows past Sq zero-filled)
    {
        constexpr int CH = BR * D / 8;
        for (int c = tid; c < 2 * CH; c += THREADS) {
            const int m = c / CH, rem = c - m * CH, r = rem / (D / 8), col = (rem % (D / 8)) * 8;
            const bool ok = row0 + r < Sq;
            const T* src = qb + (long long)(ok ? row0 + r : 0) * p.q_row_stride + (2 * h + m) * p.q_head_stride + col;
            cp_async_16(sQ + m * L::Q_TILE + swizzle<D>(r, col), src, ok);
        }
        cp_async_commit();
    }

    auto load_kv = [&](int n0, int stage) {
        T* sK = sKV + stage * L::STAGE;
        T* sV = sK + L::NK * L::K_TILE;
        constexpr int KCH = BC * D / 8;
        for (int c = tid; c < L::NK * KCH; c += THREADS) {
            const int m = c / KCH, rem = c - m * KCH, r = rem / (D / 8), col = (rem % (D / 8)) * 8;
            const bool ok = n0 + r < Sk;
            const T* src = (m ? k2 : k1) + (long long)(ok ? n0 + r : 0) * p.k_row_stride + col;
            cp_async_16(sK + m * L::K_TILE + swizzle<D>(r, col), src, ok);
        }
        constexpr int VCH = BC * DV / 8;
        for (int c = tid; c < VCH; c += THREADS) {
            const int r = c / (DV / 8), col = (c % (DV / 8)) * 8;
            const bool ok = n0 + r < Sk;
            const T* src = vb + (long long)(ok ? n0 + r : 0) * p.v_row_stride + col;
            cp_async_16(sV + swizzle<DV>(r, col), src, ok);
        }
    };

    // ---- key range that can be allowed for any row of this tile
    const int shift = Sk - Sq;  // P(i) = i + shift
    const int row_last = min(row0 + BR, Sq) - 1;
    const int P0 = row0 + shift, Plast = row_last + shift;
    int kv_lo = 0, kv_hi = Sk;
    if (p.causal) kv_hi = min(kv_hi, Plast + 1);
    if (p.window_right >= 0) kv_hi = min(kv_hi, Plast + p.window_right + 1);
    if (p.window_left >= 0) kv_lo = max(kv_lo, P0 - p.window_left);
    const int nt_lo = kv_lo / BC;
    const int nt_hi = kv_hi > kv_lo ? (kv_hi + BC - 1) / BC : nt_lo;

    if (nt_lo < nt_hi) {
        load_kv(nt_lo * BC, 0);
        cp_async_commit();
    }
    const bool rope = p.rope.lo != nullptr;
    if (rope) {
        cp_async_wait<1>();  // the Q group (a KV group may still be in flight; an empty wait is fine)
        if (nt_lo >= nt_hi) cp_async_wait<0>();
        __syncthreads();
        const int nrows = min(BR, Sq - row0);
        for (int m = 0; m < 2; ++m)
            rope_tile<T, D>(sQ + m * L::Q_TILE, nrows, p.rope, [&](int r) {
                const int i = row0 + r;
                return p.position_ids_q ? p.position_ids_q[b * p.pos_q_batch_stride + q_start + i] : i + shift;
            });
    }

    // ---- per-thread state: rows wrow + gi and wrow + gi + 8
    const int gi = lane >> 2, tq = lane & 3;
    float acc[DV / 8][4];
#pragma unroll
    for (int n = 0; n < DV / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
    int Prow[2];
    Prow[0] = row0 + wrow + gi + shift;
    Prow[1] = Prow[0] + 8;
    const float slope = p.alibi_slopes ? p.alibi_slopes[h] : 0.f;  // one slope per diff head, both maps
    const T* sQm = sQ + map * L::Q_TILE;

    for (int nt = nt_lo; nt < nt_hi; ++nt) {
        const int stage = (nt - nt_lo) & 1, n0 = nt * BC;
        if (nt + 1 < nt_hi) {
            load_kv(n0 + BC, stage ^ 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        T* sK1 = sKV + stage * L::STAGE;
        T* sK2 = SHARED_K ? sK1 : sK1 + L::K_TILE;
        const T* sV = sK1 + L::NK * L::K_TILE;
        if (rope) {
            const int nrows = min(BC, Sk - n0);
            auto kpos = [&](int r) {
                const int j = n0 + r;
                return p.position_ids_k ? p.position_ids_k[b * p.pos_k_batch_stride + k_start + j] : j;
            };
            rope_tile<T, D>(sK1, nrows, p.rope, kpos);
            if (!SHARED_K) rope_tile<T, D>(sK2, nrows, p.rope, kpos);
            __syncthreads();
        }
        const T* sKm = map ? sK2 : sK1;

        // S = Qm Km^T for this warp's 16 rows x BC keys
        float s[BC / 8][4];
#pragma unroll
        for (int n = 0; n < BC / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            uint32_t a[4];
            ldmatrix_x4(a, sQm + swizzle<D>(wrow + a_row(lane), kk * 16 + a_col(lane)));
#pragma unroll
            for (int n2 = 0; n2 < BC / 16; ++n2) {
                uint32_t kf[4];
                ldmatrix_x4(kf, sKm + swizzle<D>(n2 * 16 + bt_row(lane), kk * 16 + bt_col(lane)));
                Mma<T>::run(s[2 * n2], a, kf[0], kf[1]);
                Mma<T>::run(s[2 * n2 + 1], a, kf[2], kf[3]);
            }
        }

        // scale, softcap, ALiBi, mask; scores leave in base-2 units (x log2 e) so the softmax
        // subtracts its row max from values rounded the same way (the max element gives exactly
        // exp2(0) = 1 however large the logits are)
        const bool need_mask = (n0 + BC > Sk) || (p.causal && n0 + BC - 1 > P0) ||
                               (p.window_left >= 0 && n0 < Plast - p.window_left) ||
                               (p.window_right >= 0 && n0 + BC - 1 > P0 + p.window_right);
#pragma unroll
        for (int n = 0; n < BC / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int j = n0 + n * 8 + 2 * tq + (e & 1);
                const int Pi = Prow[e >> 1];
                float x = s[n][e] * p.scale;
                if (p.softcap > 0.f) x = p.softcap * tanhf(x / p.softcap);
                if (p.alibi_slopes) x -= slope * fabsf((float)(Pi - j));
                if (need_mask) {
                    const bool ok = j < Sk && (!p.causal || j <= Pi) &&
                                    (p.window_left < 0 || j >= Pi - p.window_left) &&
                                    (p.window_right < 0 || j <= Pi + p.window_right);
                    if (!ok) x = -INFINITY;
                }
                s[n][e] = x * kLog2e;
            }
        }

        // online softmax, one state per row
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
            float mx = -INFINITY;
#pragma unroll
            for (int n = 0; n < BC / 8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * rr], s[n][2 * rr + 1]));
            mx = quad_max(mx);
            const float m_new = fmaxf(m_run[rr], mx);
            const float m_use = safe_max(m_new);  // all masked so far: p = 0
            const float alpha = exp2f(m_run[rr] - m_use);
            m_run[rr] = m_new;
            float sum = 0.f;
#pragma unroll
            for (int n = 0; n < BC / 8; ++n) {
#pragma unroll
                for (int e = 2 * rr; e < 2 * rr + 2; ++e) {
                    const float pe = exp2f(s[n][e] - m_use);
                    s[n][e] = pe;
                    sum += pe;
                }
            }
            l_run[rr] = l_run[rr] * alpha + sum;
#pragma unroll
            for (int n = 0; n < DV / 8; ++n) {
                acc[n][2 * rr] *= alpha;
                acc[n][2 * rr + 1] *= alpha;
            }
        }

        // acc += P V
#pragma unroll
        for (int kk = 0; kk < BC / 16; ++kk) {
            uint32_t a[4];
            pack_c_as_a<T>(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
            for (int n2 = 0; n2 < DV / 16; ++n2) {
                uint32_t vf[4];
                ldmatrix_x4_trans(vf, sV + swizzle<DV>(kk * 16 + bk_row(lane), n2 * 16 + bk_col(lane)));
                Mma<T>::run(acc[2 * n2], a, vf[0], vf[1]);
                Mma<T>::run(acc[2 * n2 + 1], a, vf[2], vf[3]);
            }
        }
        __syncthreads();  // the stage is refilled two iterations on
    }
    cp_async_wait<0>();
    __syncthreads();

    // ---- epilogue
    float inv[2];
    const int iloc[2] = {row0 + wrow + gi, row0 + wrow + gi + 8};
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
        const float l = quad_sum(l_run[rr]);
        inv[rr] = l > 0.f ? 1.f / l : 0.f;
        if (tq == 0 && iloc[rr] < Sq) {
            float* lse = map ? p.lse2 : p.lse1;
            lse[b * p.lse_batch_stride + h * p.lse_head_stride + q_start + iloc[rr]] =
                l > 0.f ? m_run[rr] * kLn2 + logf(l) : -INFINITY;
        }
    }
    float* sX = reinterpret_cast<float*>(sKV) + (warp & 3) * (DV / 2) * 32;
    if (map == 1) {
        float lam[2];
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
            const int i = min(iloc[rr], Sq - 1);
            lam[rr] = p.lambda[b * p.lambda_batch_stride + (long long)(q_start + i) * p.lambda_row_stride + h];
        }
#pragma unroll
        for (int n = 0; n < DV / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) sX[(n * 4 + e) * 32 + lane] = acc[n][e] * inv[e >> 1] * lam[e >> 1];
    }
    __syncthreads();
    if (map == 1) return;

    float ss[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < DV / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const float o = acc[n][e] * inv[e >> 1] - sX[(n * 4 + e) * 32 + lane];
            acc[n][e] = o;
            ss[e >> 1] += o * o;
        }
    if (p.norm_weight) {
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
            const float ms = quad_sum(ss[rr]) * (1.f / DV);
            const float den = ms + p.eps;
            const float r = den > 0.f ? p.norm_factor / sqrtf(den) : 0.f;  // eps = 0, zero row: 0, not NaN
#pragma unroll
            for (int n = 0; n < DV / 8; ++n) {
                const int c = n * 8 + 2 * tq;
                acc[n][2 * rr] *= r * load_any(p.norm_weight, c, p.norm_weight_dtype);
                acc[n][2 * rr + 1] *= r * load_any(p.norm_weight, c + 1, p.norm_weight_dtype);
            }
        }
    }
    T* ob = static_cast<T*>(p.o) + b * p.o_batch_stride + q_start * p.o_row_stride + h * p.o_head_stride;
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
        if (iloc[rr] >= Sq) continue;
        T* orow = ob + (long long)iloc[rr] * p.o_row_stride;
#pragma unroll
        for (int n = 0; n < DV / 8; ++n)
            *reinterpret_cast<uint32_t*>(orow + n * 8 + 2 * tq) = Mma<T>::pack(acc[n][2 * rr], acc[n][2 * rr + 1]);
    }
}

// Baseline epilogue (unfused benchmarks): one warp per (row, head).
template <typename T> __device__ __forceinline__ void diff_epilogue(const AkDiffEpilogueParams& p) {
    const int lane = threadIdx.x & 31;
    const long long item = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (item >= (long long)p.rows * p.heads) return;
    const int row = (int)(item / p.heads), h = (int)(item % p.heads);
    const long long a_off = row * p.a_row_stride + h * p.a_head_stride;
    const long long b_off = row * p.b_row_stride + h * p.b_head_stride;
    const int half = p.a_hi ? p.dv / 2 : p.dv;  // columns held by `a` (and `b`)
    // Column c of the a (or b) row, whichever buffer holds it.
    auto at = [&](const void* lo, const void* hi, long long off, int c) {
        const T* base = c < half ? static_cast<const T*>(lo) + off + c : static_cast<const T*>(hi) + off + (c - half);
        return unpack2<T>(*reinterpret_cast<const uint32_t*>(base));
    };
    T* o = static_cast<T*>(p.o) + row * p.o_row_stride + h * p.o_head_stride;
    const float lam = p.lambda[h];
    float ss = 0.f;
    for (int c = 2 * lane; c < p.dv; c += 64) {
        const float2 x = at(p.a, p.a_hi, a_off, c);
        const float2 y = at(p.b, p.b_hi, b_off, c);
        const float o0 = x.x - lam * y.x, o1 = x.y - lam * y.y;
        ss += o0 * o0 + o1 * o1;
    }
    float r = 1.f;
    if (p.norm_weight) {
        const float den = warp_sum(ss) / p.dv + p.eps;
        r = den > 0.f ? p.norm_factor / sqrtf(den) : 0.f;
    }
    for (int c = 2 * lane; c < p.dv; c += 64) {
        const float2 x = at(p.a, p.a_hi, a_off, c);
        const float2 y = at(p.b, p.b_hi, b_off, c);
        float o0 = (x.x - lam * y.x) * r, o1 = (x.y - lam * y.y) * r;
        if (p.norm_weight) {
            o0 *= load_any(p.norm_weight, c, p.norm_weight_dtype);
            o1 *= load_any(p.norm_weight, c + 1, p.norm_weight_dtype);
        }
        *reinterpret_cast<uint32_t*>(o + c) = pack2<T>(o0, o1);
    }
}

}  // namespace ak::diff

// Entry points (generated from src/runtime/kernel_list.rs, `diff_attention::`):
// ak_diff_prefill_v<1|2>_<dtype>_d<d> (256 threads, Layout::SMEM_ELEMS elements of dynamic shared
// memory) and ak_diff_epilogue_<dtype>.
#include "generated/diff_attention_prefill_entries.cuh"
