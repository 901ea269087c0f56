// The online-softmax step of a FlashAttention-style prefill, shared by the mma.sync kernel
// (prefill.cu) and the wgmma kernel (prefill_sm90.cu): both hold S and O in the accumulator
// fragment of mma.sync m16n8 (a wgmma m64nN accumulator is the same fragment per warp, n-tile
// nt in registers 4 nt .. 4 nt + 3) and feed P to the next GEMM as m16n8k16 A fragments (the
// wgmma register-A fragment has the same layout).
#pragma once
#include "params.h"
#include "common/tile.cuh"

namespace ak::attention {

// The key tiles one block visits, [t_begin, t_end), in visiting order: first the clean ones,
// [t_begin + lead, t_begin + lead + clean), where no row of the block needs a mask (the tile is
// whole and inside every row's causal / window limits; under ALiBi also left of every row's
// diagonal, so |P(i) - j| = P(i) - j), then the masked ones before and after them. The online
// softmax does not depend on the order. Three ints, so the loop keeps its registers.
struct TileOrder {
    int t_begin, lead, clean;
    // Tile index of visit s.
    __device__ __forceinline__ int at(int s) const {
        if (s < clean) return t_begin + lead + s;
        s -= clean;
        return t_begin + (s < lead ? s : s + clean);
    }
};

// One sequence of a launch: its query and key counts and, varlen, the packed rows of its first
// query and key (0 otherwise). P: AkAttnParams or AkDiffAttnParams.
struct SeqSpan {
    int sq, sk, q_first, k_first;
    SeqSpan() = default;
    template <class P>
    __device__ __forceinline__ SeqSpan(const P& p, int b) : sq(p.seqlen_q), sk(p.seqlen_k), q_first(0), k_first(0) {
        if (p.cu_seqlens_q) {
            q_first = p.cu_seqlens_q[b];
            sq = p.cu_seqlens_q[b + 1] - q_first;
        }
        if (p.cu_seqlens_k) {
            k_first = p.cu_seqlens_k[b];
            sk = p.cu_seqlens_k[b + 1] - k_first;
        }
    }
};

// The query block of this CTA: causal grids run heavy first (the last blocks see the most keys).
__device__ __forceinline__ int query_block(bool causal) { return causal ? (int)(gridDim.x - 1 - blockIdx.x) : (int)blockIdx.x; }

// floor(x / n) for n > 0 and any int x; ceil likewise.
__device__ __forceinline__ int floor_div(int x, int n) { return x >= 0 ? x / n : -((-x + n - 1) / n); }
__device__ __forceinline__ int ceil_div(int x, int n) { return -floor_div(-x, n); }

// The rows' mask limits, shift P(i) - i = Sk - Sq: key j is allowed in row i iff j <= lim[0],
// j <= P(i) + lim[1], j >= P(i) - lim[2], with P(i) = lim[3] + (i - m0) (unlimited sides use
// 2^30: > any index, no overflow; Sk = lim[0] + 1). int arithmetic is safe: the host keeps
// Sq + Sk < 2^30 and clamps windows to <= Sq + Sk.
// P: AkAttnParams or AkDiffAttnParams (the mask fields have the same names).
struct RowLimits {
    int sk, shift, right_off;
    bool has_right, has_left;
    template <class P>
    __device__ __forceinline__ RowLimits(const P& p, int sq, int sk_)
        : sk(sk_), shift(sk_ - sq), right_off(p.causal ? (p.window_right >= 0 ? min(0, p.window_right) : 0) : p.window_right),
          has_right(p.causal || p.window_right >= 0), has_left(p.window_left >= 0) {}
    template <class P>
    __device__ __forceinline__ void store(int* lim, const P& p, int m0) const {
        lim[0] = sk - 1;
        lim[1] = has_right ? right_off : (1 << 30);
        lim[2] = has_left ? p.window_left : (1 << 30);
        lim[3] = m0 + shift;
    }
    // The key tiles (of BN keys) that rows [m0, m_last] see, and their visiting order.
    template <bool ALIBI, int BN, class P>
    __device__ __forceinline__ TileOrder tiles(const P& p, int m0, int m_last, int& visits) const {
        // Keys the block can see: [j_begin, j_end).
        int j_begin = 0, j_end = sk;
        if (has_left) j_begin = max(0, m0 + shift - p.window_left);
        if (has_right) j_end = min(sk, m_last + shift + right_off + 1);
        const int t_begin = j_begin / BN;
        const int t_end = j_end > j_begin ? (j_end + BN - 1) / BN : t_begin;
        // Clean tiles: whole (n0 + BN <= sk), right of every row's left limit (n0 >= P(m_last) -
        // window_left), left of every row's right limit (n0 + BN - 1 <= P(m0) + right_off) and,
        // under ALiBi, of every row's diagonal (n0 + BN - 1 <= P(m0)).
        int clean_hi = (has_right ? min(sk, m0 + shift + right_off + 1) : sk) / BN;
        if (ALIBI) clean_hi = min(clean_hi, floor_div(m0 + shift + 1, BN));
        const int clean_lo = max(t_begin, has_left ? ceil_div(m_last + shift - p.window_left, BN) : 0);
        clean_hi = min(clean_hi, t_end);
        visits = t_end - t_begin;
        return TileOrder{t_begin, clean_lo < clean_hi ? clean_lo - t_begin : 0, max(0, clean_hi - clean_lo)};
    }
};

// The score transform's constants, base 2. Signed: a negative scale flips the scores before the
// max like any other transform.
struct ScoreScale {
    float scale_log2, softcap_inv_scale, softcap_log2, alibi_log2;
    template <bool ALIBI, bool SOFTCAP, class P>
    __device__ __forceinline__ static ScoreScale of(const P& p, int h) {
        return ScoreScale{p.scale * kLog2e, SOFTCAP ? p.scale / p.softcap : 0.f, p.softcap * kLog2e,
                          ALIBI ? p.alibi_slopes[h] * kLog2e : 0.f};
    }
};

// One key tile (columns n0 ..) of this warp's MT m-tiles (block rows row_w ..): transform the
// scores in acc_s in place, update the running statistics, rescale O when a row max outgrows
// the slack, and pack P = exp2(x - m) into p_frag (A fragments of k-step nt / 2).
// DEFER (the pipelined sm_90a consumer, whose O is in flight meanwhile): O and p_frag are not
// touched; the rescale factors go to alpha and the return value says whether O needs them
// (rescale_o), and P stays in acc_s as f32 (pack_p). lim: the
// row's mask limits in shared memory (key j allowed in row i iff j <= lim[0], j <= P(i) +
// lim[1], j >= P(i) - lim[2], with P(i) = lim[3] + block row); g, tq: the lane's fragment row
// group and column pair. MASKED: apply them per element; otherwise the tile is clean.
template <typename T, bool MASKED, bool ALIBI, bool SOFTCAP, bool DEFER, int MT, int NS, int NO>
__device__ __forceinline__ bool softmax_step(float (&acc_s)[MT][NS][4], float (&acc_o)[MT][NO][4], SoftmaxRow (&stat)[MT][2],
                                             uint32_t (&p_frag)[MT][NS / 2][4], float (&alpha_out)[MT][2], const ScoreScale& sc,
                                             const int* lim, int row_w, int n0, int g, int tq) {
    // Per element the exponent is x - (m + r), the true base-2 score being x - r:
    //   clean:   x = scale S or softcap(S), [+ slope * (j - n0)]; under ALiBi
    //            r = slope * (P(i) - n0) (one int difference, rounded once), else 0
    //   masked:  x = the whole score (-inf where masked), r = 0.
    // Clean tiles have a finite score in every row, so only masked ones guard m = -inf.
    // The running max m may stay up to RESCALE_SLACK below the true one (exponents up to
    // 2^8, far inside f32, f16 and bf16 range): O and l are rescaled only when some row of
    // the warp outgrows that, which after the first tiles is rare, instead of every tile.
    // Scores are scaled to base 2 (rounded once) before the max, so the max element's
    // exponent is exactly 0. FA2's FFMA form 2^(S scale - m scale) leaves the rounding
    // error of m * scale in it, up to ulp(m) / 2: past 2^31 (f16 inputs near 60000) 2^err
    // overflows or flushes the whole row.
    // ALiBi on clean tiles: x += slope * (2 tq + col), the products made per tile (fresh_zero).
    float alibi_col0 = 0.f, alibi_tile = 0.f;
    if (ALIBI && !MASKED) {
        const unsigned zero = fresh_zero();
        alibi_col0 = (float)(2 * tq + (int)zero);
        alibi_tile = or_zero(sc.alibi_log2, zero);
    }
    float cand[MT][2];  // this tile's row max in true base-2 units
    bool grow = false;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int rh = 0; rh < 2; ++rh) {
            const int pi = lim[3] + row_w + mt * 16 + g + rh * 8;  // P(i)
            const int c0 = n0 + 2 * tq;  // column of element (nt, c): c0 + 8 nt + c
            int lo = 0, hi = 0;  // masked: allowed columns [lo, hi] relative to c0
            if (MASKED) {
                hi = min(lim[0], pi + lim[1]) - c0;
                lo = max(0, pi - lim[2]) - c0;
            }
            float mx = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < NS; ++nt) {
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    const int col = nt * 8 + c;
                    const float s_raw = acc_s[mt][nt][rh * 2 + c];
                    float x = SOFTCAP ? sc.softcap_log2 * tanh_fast(s_raw * sc.softcap_inv_scale) : s_raw * sc.scale_log2;
                    if (ALIBI && MASKED) x -= sc.alibi_log2 * (float)abs(pi - c0 - col);
                    if (ALIBI && !MASKED) x += alibi_tile * (alibi_col0 + (float)col);
                    acc_s[mt][nt][rh * 2 + c] = x;
                }
            }
            // The mask and the max in a pass of their own: fused into the transform, the
            // column compares are scheduled early and held in registers (spills at 64 keys).
#pragma unroll
            for (int nt = 0; nt < NS; ++nt) {
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    float& x = acc_s[mt][nt][rh * 2 + c];
                    if (MASKED && (nt * 8 + c < lo || nt * 8 + c > hi)) x = -INFINITY;
                    mx = fmaxf(mx, x);
                }
            }
            const float r = (ALIBI && !MASKED) ? sc.alibi_log2 * (float)(pi - n0) : 0.f;
            cand[mt][rh] = quad_max(mx) - r;
            grow |= cand[mt][rh] > stat[mt][rh].m + RESCALE_SLACK;  // also when m = -inf
        }
    }
    const bool rescale = __any_sync(0xffffffffu, grow);
    if (rescale) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int rh = 0; rh < 2; ++rh) {
                const float m_new = fmaxf(stat[mt][rh].m, cand[mt][rh]);
                // 0 while the old max is -inf; m stays -inf while every score was masked
                const float alpha = exp2_ftz(stat[mt][rh].m - safe_max(m_new));
                stat[mt][rh].m = m_new;
                stat[mt][rh].l *= alpha;
                if constexpr (DEFER) {
                    alpha_out[mt][rh] = alpha;
                } else {
#pragma unroll
                    for (int nt = 0; nt < NO; ++nt) {
                        acc_o[mt][nt][rh * 2] *= alpha;
                        acc_o[mt][nt][rh * 2 + 1] *= alpha;
                    }
                }
            }
        }
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int rh = 0; rh < 2; ++rh) {
            const int pi = lim[3] + row_w + mt * 16 + g + rh * 8;
            const float r = (ALIBI && !MASKED) ? sc.alibi_log2 * (float)(pi - n0) : 0.f;
            const float neg_off = -((MASKED ? safe_max(stat[mt][rh].m) : stat[mt][rh].m) + r);
            float sum = 0.f;
#pragma unroll
            for (int nt = 0; nt < NS; ++nt) {
                const float e0 = exp2_ftz(acc_s[mt][nt][rh * 2] + neg_off);
                const float e1 = exp2_ftz(acc_s[mt][nt][rh * 2 + 1] + neg_off);
                sum += e0 + e1;
                if constexpr (DEFER) {
                    acc_s[mt][nt][rh * 2] = e0;
                    acc_s[mt][nt][rh * 2 + 1] = e1;
                } else {
                    // P as the A operand of P V: n-tile nt is half (nt % 2) of k-step nt / 2.
                    p_frag[mt][nt / 2][rh + 2 * (nt % 2)] = Mma<T>::pack(e0, e1);
                }
            }
            stat[mt][rh].l += sum;
        }
    }
    return rescale;
}

// The step of the mma.sync kernel: O rescaled and P packed in place.
template <typename T, bool MASKED, bool ALIBI, bool SOFTCAP, int MT, int NS, int NO>
__device__ __forceinline__ void softmax_tile(float (&acc_s)[MT][NS][4], float (&acc_o)[MT][NO][4], SoftmaxRow (&stat)[MT][2],
                                             uint32_t (&p_frag)[MT][NS / 2][4], const ScoreScale& sc, const int* lim,
                                             int row_w, int n0, int g, int tq) {
    float unused[MT][2];
    softmax_step<T, MASKED, ALIBI, SOFTCAP, false>(acc_s, acc_o, stat, p_frag, unused, sc, lim, row_w, n0, g, tq);
}

// O *= alpha per row: the rescale a deferred softmax_step asked for (when it returned true).
template <int MT, int NO>
__device__ __forceinline__ void rescale_o(float (&acc_o)[MT][NO][4], const float (&alpha)[MT][2]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NO; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc_o[mt][nt][e] *= alpha[mt][e >> 1];
}

// P (the exponentials a deferred softmax_step left in acc_s) as the A operand of P V: n-tile nt
// is half (nt % 2) of k-step nt / 2.
template <typename T, int MT, int NS>
__device__ __forceinline__ void pack_p(const float (&acc_s)[MT][NS][4], uint32_t (&p_frag)[MT][NS / 2][4]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int rh = 0; rh < 2; ++rh)
#pragma unroll
            for (int nt = 0; nt < NS; ++nt)
                p_frag[mt][nt / 2][rh + 2 * (nt % 2)] = Mma<T>::pack(acc_s[mt][nt][rh * 2], acc_s[mt][nt][rh * 2 + 1]);
}



}  // namespace ak::attention
