// Fused differential attention prefill for Hopper (sm_90a), variants v1 and v2 (spec section 3):
// the two softmax maps of a diff head on the two consumer warpgroups of one block, sharing every
// K/V stage the producer loads, subtracted (and RMS-normed, v1) in the epilogue. The same math
// as prefill.cu's fused kernel; what changes is the machinery, that of the sm_90a attention
// kernel (attention/flash_sm90.cuh: TMA ring, wgmma, flash.cuh's online softmax).
//
// One block owns BM = 64 query rows of one (sequence, diff head h), in three warpgroups:
//   producer (warpgroup 0, 24 registers)   one elected thread issues every TMA copy: Q1 (q head
//              2h) and Q2 (q head 2h + 1) once, then per visited key tile a stage of K1, K2
//              (v1: k heads 2g and 2g + 1; v2: the one k head g, loaded once) and V (head g).
//   consumers (warpgroups 1 and 2, 240 registers): consumer m runs map m + 1 over all 64 rows
//              (Qm against Km, the same V), each with its own online-softmax state, and both
//              arrive on the stage's empty barrier, so V (and in v2 K) is read from global
//              memory once for the two maps. v2 is GQA packing of the head pair: two query heads
//              of one kv head in one block.
// Epilogue: consumer 2 hands lambda O2 / l2 to consumer 1 through shared memory (the ring, free
// once both are done), in accumulator-fragment order (thread t's element i at i x 128 + t: no
// bank conflicts); consumer 1 forms O = O1 / l1 - lambda O2 / l2, applies the RMSNorm over the
// Dv-wide row (v1 with norm_weight: the row's values sit in one quad of lanes), stages O in the
// Q area (swizzled) and both consumers write it out with 16-byte stores. lse1 and lse2 are
// written by their consumers. A row with no allowed key has O1 = O2 = 0: o = 0, lse = -inf.
// Fused RoPE: Q and K arrive rotated once by the host's pre-passes (attention's rope_pass).
//
// Shared memory (1024-byte aligned): Q1, Q2 (D/64 column blocks of 64 rows x 128 bytes each),
// then STAGES x (K1 [, K2] as D/64 blocks of BN rows, V as DV/64 blocks of BN rows).
#include "params.h"
#include "common/dtype.cuh"
#include "common/tile.cuh"
#include "attention/flash_sm90.cuh"
#include <type_traits>

namespace ak::diff::sm90 {

using namespace ak::attention;
using namespace ak::attention::sm90;

template <int D_, int DV_, bool SHARED_K_, int BN_, int STAGES_>
struct Cfg {
    static constexpr int D = D_, DV = DV_, BN = BN_, STAGES = STAGES_;
    static constexpr bool SHARED_K = SHARED_K_;  // v2: K1 = K2
    static constexpr int BM = 64;                // query rows: each consumer runs one map over all
    static constexpr int NT = 128 * (CONSUMERS + 1);
    static constexpr int NK = SHARED_K ? 1 : 2;  // K tiles per stage
    static constexpr int Q_BYTES = BM * D * 2, K_BYTES = BN * D * 2, V_BYTES = BN * DV * 2;
    static constexpr int STAGE_BYTES = NK * K_BYTES + V_BYTES;
    static constexpr int SMEM_BYTES = 1024 + 2 * Q_BYTES + STAGES * STAGE_BYTES;  // + alignment slack
    static constexpr bool PINGPONG = pingpong(D);
    static_assert(D % 64 == 0 && DV % 64 == 0 && DV <= 256, "whole 128-byte rows, wgmma N <= 256");
    static_assert(BN % 16 == 0 && BN <= 256, "key tiles: whole k-steps of P V, one TMA box of rows");
    static_assert(128 * DV * 2 <= STAGES * STAGE_BYTES, "the O2 exchange (f32) fits in the ring");
    static_assert(BM * DV * 2 <= 2 * Q_BYTES, "O (T) is staged in the Q area");
};

template <typename T, class C, bool ALIBI, bool SOFTCAP>
__device__ __forceinline__ void diff_forward(const AkDiffSm90Params& pp) {
    using namespace ak::hopper;
    const AkDiffAttnParams& p = pp.diff;
    constexpr int D = C::D, DV = C::DV, BM = C::BM, BN = C::BN, STAGES = C::STAGES, RB = ROW_BYTES;

    AK_DYNAMIC_SHARED(unsigned char, smem_raw);
    const uint32_t raw = ptx::smem_addr(smem_raw);
    const uint32_t s_q = (raw + 1023u) & ~1023u;  // 128B swizzle repeats every 1024 bytes
    unsigned char* const q_ptr = smem_raw + (s_q - raw);
    const uint32_t s_ring = s_q + 2 * C::Q_BYTES;
    AK_SHARED(uint64_t, bars, [1 + Ring<STAGES>::BARRIERS]);  // q_full, then the ring's
    AK_SHARED(int, lim, [4]);
    const uint32_t q_full = ptx::smem_addr(&bars[0]);
    const Ring<STAGES> ring{ptx::smem_addr(&bars[1])};

    const int tid = threadIdx.x, wg = tid >> 7;
    const int h = blockIdx.y, b = blockIdx.z;
    const int g_kv = h / p.kv_groups;
    const SeqSpan seq(p, b);
    const int m0 = query_block(p.causal) * BM;
    if (m0 >= seq.sq) return;
    const int m_last = min(m0 + BM, seq.sq) - 1;
    const RowLimits rows(p, seq.sq, seq.sk);
    int visits;
    const TileOrder order = rows.tiles<ALIBI, BN>(p, m0, m_last, visits);
    if (tid == 0) {
        rows.store(lim, p, m0);
        mbar_init(q_full, 1);
        ring.init(CONSUMERS);
    }
    __syncthreads();  // barriers initialised, lim published

    const int bq = p.cu_seqlens_q ? 0 : b, bk = p.cu_seqlens_k ? 0 : b;
    if (wg == 0) {
        // ---- producer: Q1 and Q2 once, then the ring of K1 [K2] V stages
        setmaxnreg_dec<PRODUCER_REGS>();
        if (tid < 32 && elect_sync(0xffffffffu)) {
            mbar_arrive_expect_tx(q_full, 2 * C::Q_BYTES);
#pragma unroll
            for (int m = 0; m < 2; ++m)
#pragma unroll
                for (int j = 0; j < D / 64; ++j)
                    tma_load<4>(s_q + m * C::Q_BYTES + j * BM * RB, &pp.tmap_q, {j * 64, 2 * h + m, seq.q_first + m0, bq}, q_full);
            const int k_head = C::SHARED_K ? g_kv : 2 * g_kv;
            produce(
                ring, order, 0, visits, 0, C::NK * C::K_BYTES, C::V_BYTES,
                [&](int st, int t, uint32_t bar) {
#pragma unroll
                    for (int m = 0; m < C::NK; ++m)
#pragma unroll
                        for (int j = 0; j < D / 64; ++j)
                            tma_load<4>(s_ring + st * C::STAGE_BYTES + m * C::K_BYTES + j * BN * RB, &pp.tmap_k,
                                        {j * 64, k_head + m, seq.k_first + t * BN, bk}, bar);
                },
                [&](int st, int t, uint32_t bar) {
#pragma unroll
                    for (int j = 0; j < DV / 64; ++j)
                        tma_load<4>(s_ring + st * C::STAGE_BYTES + C::NK * C::K_BYTES + j * BN * RB, &pp.tmap_v,
                                    {j * 64, g_kv, seq.k_first + t * BN, bk}, bar);
                });
        }
        return;
    }

    // ---- consumers: consumer `map` (0 or 1) runs map map + 1 over rows 0 .. 63
    setmaxnreg_inc<CONSUMER_REGS>();
    const int map = wg - 1, lane = tid & 31, g = lane >> 2, tq = lane & 3, t = tid & 127;
    const int row_w = ((tid >> 5) & 3) * 16;  // first block row of this warp
    const ScoreScale sc = ScoreScale::of<ALIBI, SOFTCAP>(p, h);  // one ALiBi slope per diff head
    float acc_o[1][DV / 8][4];
    SoftmaxRow stat[1][2] = {{SoftmaxRow{-INFINITY, 0.f}, SoftmaxRow{-INFINITY, 0.f}}};
#pragma unroll
    for (int nt = 0; nt < DV / 8; ++nt) acc_o[0][nt][0] = acc_o[0][nt][1] = acc_o[0][nt][2] = acc_o[0][nt][3] = 0.f;
    mbar_wait_parity(q_full, 0);
    struct {
        uint32_t k0, v0;
        __device__ __forceinline__ uint32_t k(int st) const { return k0 + st * C::STAGE_BYTES; }
        __device__ __forceinline__ uint32_t v(int st) const { return v0 + st * C::STAGE_BYTES; }
    } const stage{s_ring + (C::SHARED_K ? 0 : map * C::K_BYTES), s_ring + C::NK * C::K_BYTES};
    consume<T, D, DV, BN, STAGES, BM * RB, ALIBI, SOFTCAP, C::PINGPONG>(acc_o, stat, ring, order, visits, 0, map,
                                                                       s_q + map * C::Q_BYTES, stage, sc, lim, row_w, g, tq);

    // ---- epilogue
    float inv[2];
    int row[2];  // block rows of this thread's two fragment rows
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
        const float l = quad_sum(stat[0][rh].l);
        inv[rh] = l > 0.f ? 1.f / l : 0.f;  // no allowed key: O = 0
        row[rh] = row_w + g + rh * 8;
        if (tq == 0 && m0 + row[rh] < seq.sq) {
            float* lse = map ? p.lse2 : p.lse1;
            lse[b * p.lse_batch_stride + h * p.lse_head_stride + seq.q_first + m0 + row[rh]] =
                l > 0.f ? (stat[0][rh].m + log2f(l)) * kLn2 : -INFINITY;
        }
    }
    fence_proxy_async();         // the ring and Q were last accessed by the async proxy (TMA, wgmma)
    named_bar_sync(1, 256);      // both consumers are done with the ring: it holds the exchange now
    float* const xchg = reinterpret_cast<float*>(q_ptr + 2 * C::Q_BYTES);
    if (map == 1) {
#pragma unroll
        for (int rh = 0; rh < 2; ++rh) {
            const int i = seq.q_first + m0 + min(row[rh], seq.sq - 1 - m0);  // rows past Sq: any valid lambda
            const float lam = p.lambda[b * p.lambda_batch_stride + (long long)i * p.lambda_row_stride + h];
#pragma unroll
            for (int nt = 0; nt < DV / 8; ++nt)
#pragma unroll
                for (int c = 0; c < 2; ++c) xchg[(nt * 4 + rh * 2 + c) * 128 + t] = acc_o[0][nt][rh * 2 + c] * inv[rh] * lam;
        }
    }
    named_bar_sync(2, 256);  // lambda O2 / l2 is in the exchange
    if (map == 0) {
        float ss[2] = {0.f, 0.f};
#pragma unroll
        for (int nt = 0; nt < DV / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float o = acc_o[0][nt][e] * inv[e >> 1] - xchg[(nt * 4 + e) * 128 + t];
                acc_o[0][nt][e] = o;
                ss[e >> 1] += o * o;
            }
        if (p.norm_weight) {
#pragma unroll
            for (int rh = 0; rh < 2; ++rh) {
                const float den = quad_sum(ss[rh]) * (1.f / DV) + p.eps;
                const float r = den > 0.f ? p.norm_factor / sqrtf(den) : 0.f;  // eps = 0, zero row: 0, not NaN
#pragma unroll
                for (int nt = 0; nt < DV / 8; ++nt) {
                    const int col = nt * 8 + 2 * tq;
                    acc_o[0][nt][2 * rh] *= r * load_any(p.norm_weight, col, p.norm_weight_dtype);
                    acc_o[0][nt][2 * rh + 1] *= r * load_any(p.norm_weight, col + 1, p.norm_weight_dtype);
                }
            }
        }
        const float one[2] = {1.f, 1.f};
        stage_rows<T, DV>(q_ptr, BM, acc_o, one, row_w, g, tq);  // Q1 and Q2 are no longer read
    }
    named_bar_sync(3, 256);  // O is staged
    T* o = static_cast<T*>(p.o) + b * p.o_batch_stride + ((long long)seq.q_first + m0) * p.o_row_stride + h * p.o_head_stride;
    store_staged<T, DV>(o, p.o_row_stride, q_ptr, BM, 0, BM, seq.sq - m0, tid - 128, 256);
}

}  // namespace ak::diff::sm90

// Entry points (generated from src/runtime/kernel_list.rs, `diff_attention::sm90_*`):
// ak_diff_prefill_sm90_v<1|2>_<dtype>_d<d>[_alibi][_softcap]. Grid (ceil(max Sq / 64), H,
// batch), block 384 threads, Cfg::SMEM_BYTES of dynamic shared memory; the parameter is
// __grid_constant__ (TMA reads the tensor maps in place).
#include "generated/diff_attention_prefill_sm90_entries.cuh"
