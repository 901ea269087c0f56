// Fused differential attention prefill for Hopper (sm_90a), variants v1 and v2 (spec section 3):
// the two softmax maps of a diff head on the two consumer warpgroups of one block, sharing every
// K/V stage the producer loads, subtracted (and RMS-normed, v1) in the epilogue. The same math
// as prefill.cu's fused kernel; what changes is the machinery, that of the sm_90a attention
// kernel (attention/flash_sm90.cuh: TMA ring, wgmma, flash.cuh's online softmax).
//
// The kernel is persistent, as the attention kernel: a block (one per SM) runs one block tile
// of BM = 64 query rows of one (sequence, diff head h) per round of gridDim.x tiles
// (flash_sm90.cuh's Schedule), in three warpgroups:
//   producer (warpgroup 0, 24 registers)   one elected thread issues every TMA copy: per tile
//              Q1 (q head 2h) and Q2 (q head 2h + 1), once the last tile's O has left the Q
//              area (mbarrier q_empty), then per visited key tile a stage of K1, K2 (v1: k heads
//              2g and 2g + 1; v2: the one k head g, loaded once) and V (head g), into a ring
//              that runs on across tiles (the next tile's first stages load during the last
//              one's epilogue).
//   consumers (warpgroups 1 and 2, 240 registers): consumer m runs map m + 1 over all 64 rows
//              (Qm against Km, the same V), each with its own online-softmax state, and both
//              arrive on the stage's empty barrier, so V (and in v2 K) is read from global
//              memory once for the two maps. v2 is GQA packing of the head pair: two query heads
//              of one kv head in one block.
// Epilogue: consumer 2 hands lambda O2 / l2 to consumer 1 through the Q area (free once both
// consumers' last S GEMMs retired; the ring is the next tile's), in rounds of as many fragment
// columns as the area holds (v1: two, v2: one), in accumulator-fragment order (thread t's
// element i at i x 128 + t: no bank conflicts); consumer 1 forms O = O1 / l1 - lambda O2 / l2,
// applies the RMSNorm over the Dv-wide row (v1 with norm_weight: the row's values sit in one
// quad of lanes), stages O in the Q area (swizzled) and both consumers write it out with 16-byte
// stores. lse1 and lse2 are
// written by their consumers, and every consumer thread arrives on q_empty after its stores. A
// row with no allowed key has O1 = O2 = 0: o = 0, lse = -inf.
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
    static_assert(BM * DV * 2 <= 2 * Q_BYTES, "O (T) is staged in the Q area");
    // The O2 exchange (f32, fragment order) runs through the Q area in rounds of XCHG_NT of the
    // DV / 8 fragment columns: 128 threads x 4 floats each per column.
    static constexpr int XCHG_NT = (2 * Q_BYTES / (128 * 4 * 4)) < DV / 8 ? 2 * Q_BYTES / (128 * 4 * 4) : DV / 8;
    static_assert((DV / 8) % XCHG_NT == 0, "whole exchange rounds");
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
    AK_SHARED(uint64_t, bars, [2 + Ring<STAGES>::BARRIERS]);  // q_full, q_empty, then the ring's
    AK_SHARED(int, lim, [4]);  // the current tile's mask limits (the producer's, with its Q)
    const uint32_t q_full = ptx::smem_addr(&bars[0]), q_empty = ptx::smem_addr(&bars[1]);
    const Ring<STAGES> ring{ptx::smem_addr(&bars[2])};

    const int tid = threadIdx.x, wg = tid >> 7;
    if (tid == 0) {
        mbar_init(q_full, 1);
        mbar_init(q_empty, 128 * CONSUMERS);  // the Q area is free: every consumer thread stored its O
        ring.init(CONSUMERS);
    }
    __syncthreads();  // barriers initialised; no block-wide barrier after this
    const Schedule sched(pp.query_blocks, p.heads, p.batch, p.causal != 0);
    auto tile_at = [&](int i, Tile& w) { return sm90::tile_at<ALIBI, BM, BN>(p, sched, i, w); };

    if (wg == 0) {
        // ---- producer: per tile, Q1 and Q2 (once the last tile's O has left the Q area), then
        // the ring of K1 [K2] V stages; a tile's first stages are issued before its Q, as the
        // ring frees them, so they load while the consumers finish the last tile.
        setmaxnreg_dec<PRODUCER_REGS>();
        if (tid < 32 && elect_sync(0xffffffffu)) {
            int done = 0, base = 0;  // tiles run, ring visits issued
            Tile w;
#pragma unroll 1
            for (int j = 0; j < sched.rounds; ++j) {
                const int i = sched.tile(j);
                if (!tile_at(i, w)) continue;
                const int g_kv = w.h / p.kv_groups, bq = p.cu_seqlens_q ? 0 : w.b, bk = p.cu_seqlens_k ? 0 : w.b;
                const int k_head = C::SHARED_K ? g_kv : 2 * g_kv;
                auto load_k = [&](int st, int t, uint32_t bar) {
#pragma unroll
                    for (int m = 0; m < C::NK; ++m)
#pragma unroll
                        for (int j = 0; j < D / 64; ++j)
                            tma_load<4>(s_ring + st * C::STAGE_BYTES + m * C::K_BYTES + j * BN * RB, &pp.tmap_k,
                                        {j * 64, k_head + m, w.seq.k_first + t * BN, bk}, bar);
                };
                auto load_v = [&](int st, int t, uint32_t bar) {
#pragma unroll
                    for (int j = 0; j < DV / 64; ++j)
                        tma_load<4>(s_ring + st * C::STAGE_BYTES + C::NK * C::K_BYTES + j * BN * RB, &pp.tmap_v,
                                    {j * 64, g_kv, w.seq.k_first + t * BN, bk}, bar);
                };
                const int early = min(STAGES, w.visits);
                produce(ring, w.order, 0, early, base, C::NK * C::K_BYTES, C::V_BYTES, load_k, load_v);
                if (done > 0) mbar_wait_parity(q_empty, (done - 1) & 1);
                // Q's barrier also publishes the tile's mask limits (the consumers read the last
                // tile's before their arrival on q_empty).
                RowLimits(p, w.seq.sq, w.seq.sk).store(lim, p, w.m0);
                mbar_arrive_expect_tx(q_full, 2 * C::Q_BYTES);
#pragma unroll
                for (int m = 0; m < 2; ++m)
#pragma unroll
                    for (int j = 0; j < D / 64; ++j)
                        tma_load<4>(s_q + m * C::Q_BYTES + j * BM * RB, &pp.tmap_q,
                                    {j * 64, 2 * w.h + m, w.seq.q_first + w.m0, bq}, q_full);
                produce(ring, w.order, early, w.visits, base, C::NK * C::K_BYTES, C::V_BYTES, load_k, load_v);
                base += w.visits;
                ++done;
            }
        }
        return;
    }

    // ---- consumers: consumer `map` (0 or 1) runs map map + 1 over rows 0 .. 63
    setmaxnreg_inc<CONSUMER_REGS>();
    const int map = wg - 1, lane = tid & 31, g = lane >> 2, tq = lane & 3, t = tid & 127;
    const int row_w = ((tid >> 5) & 3) * 16;  // first block row of this warp
    struct {
        uint32_t k0, v0;
        __device__ __forceinline__ uint32_t k(int st) const { return k0 + st * C::STAGE_BYTES; }
        __device__ __forceinline__ uint32_t v(int st) const { return v0 + st * C::STAGE_BYTES; }
    } const stage{s_ring + (C::SHARED_K ? 0 : map * C::K_BYTES), s_ring + C::NK * C::K_BYTES};
    int done = 0, base = 0;  // tiles run, ring visits consumed (as the producer counts them)
#pragma unroll 1
    for (int j = 0; j < sched.rounds; ++j) {
        const int i = sched.tile(j);
        Tile w;
        if (!tile_at(i, w)) continue;
        float acc_o[1][DV / 8][4];
        SoftmaxRow stat[1][2] = {{SoftmaxRow{-INFINITY, 0.f}, SoftmaxRow{-INFINITY, 0.f}}};
        {
            const ScoreScale sc = ScoreScale::of<ALIBI, SOFTCAP>(p, w.h);  // one ALiBi slope per diff head
#pragma unroll
            for (int nt = 0; nt < DV / 8; ++nt) acc_o[0][nt][0] = acc_o[0][nt][1] = acc_o[0][nt][2] = acc_o[0][nt][3] = 0.f;
            mbar_wait_parity(q_full, done & 1);  // Q1, Q2 and lim of this tile
            consume<T, D, DV, BN, STAGES, BM * RB, ALIBI, SOFTCAP, C::PINGPONG>(
                acc_o, stat, ring, w.order, w.visits, base, map, s_q + map * C::Q_BYTES, stage, sc, lim, row_w, g, tq);
            base += w.visits;
        }
        // The tile again (a few loads): nothing of it stays live through the key loop.
        tile_at(i, w);

        // ---- epilogue
        float inv[2];
        int row[2];  // block rows of this thread's two fragment rows
#pragma unroll
        for (int rh = 0; rh < 2; ++rh) {
            const float l = quad_sum(stat[0][rh].l);
            inv[rh] = l > 0.f ? 1.f / l : 0.f;  // no allowed key: O = 0
            row[rh] = row_w + g + rh * 8;
            if (tq == 0 && w.m0 + row[rh] < w.seq.sq) {
                float* lse = map ? p.lse2 : p.lse1;
                lse[w.b * p.lse_batch_stride + w.h * p.lse_head_stride + w.seq.q_first + w.m0 + row[rh]] =
                    l > 0.f ? (stat[0][rh].m + log2f(l)) * kLn2 : -INFINITY;
            }
        }
        // lambda O2 / l2 goes to consumer 1 through the Q area (the ring already takes the next
        // tile's stages), C::XCHG_NT fragment columns per round.
        fence_proxy_async();     // the Q area was last accessed by the async proxy (TMA, wgmma)
        named_bar_sync(1, 256);  // both consumers' wgmma reads of Q1 / Q2 retired: the area is free
        float* const xchg = reinterpret_cast<float*>(q_ptr);
        float lam[2] = {0.f, 0.f};
        if (map == 1)
#pragma unroll
            for (int rh = 0; rh < 2; ++rh) {
                const int r = w.seq.q_first + w.m0 + min(row[rh], w.seq.sq - 1 - w.m0);  // rows past Sq: any valid lambda
                lam[rh] = p.lambda[w.b * p.lambda_batch_stride + (long long)r * p.lambda_row_stride + w.h];
            }
#pragma unroll
        for (int r0 = 0; r0 < DV / 8; r0 += C::XCHG_NT) {
            if (map == 1)
#pragma unroll
                for (int nt = r0; nt < r0 + C::XCHG_NT; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) xchg[((nt - r0) * 4 + e) * 128 + t] = acc_o[0][nt][e] * inv[e >> 1] * lam[e >> 1];
            named_bar_sync(2, 256);  // this round's lambda O2 / l2 is in the exchange
            if (map == 0)
#pragma unroll
                for (int nt = r0; nt < r0 + C::XCHG_NT; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc_o[0][nt][e] = acc_o[0][nt][e] * inv[e >> 1] - xchg[((nt - r0) * 4 + e) * 128 + t];
            named_bar_sync(3, 256);  // read: the exchange may be overwritten
        }
        if (map == 0) {
            if (p.norm_weight) {
                float ss[2] = {0.f, 0.f};
#pragma unroll
                for (int nt = 0; nt < DV / 8; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) ss[e >> 1] += acc_o[0][nt][e] * acc_o[0][nt][e];
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
            stage_rows<T, DV>(q_ptr, BM, acc_o, one, row_w, g, tq);
        }
        named_bar_sync(2, 256);  // O is staged
        T* o = static_cast<T*>(p.o) + w.b * p.o_batch_stride + ((long long)w.seq.q_first + w.m0) * p.o_row_stride +
               w.h * p.o_head_stride;
        store_staged<T, DV>(o, p.o_row_stride, q_ptr, BM, 0, BM, w.seq.sq - w.m0, t + 128 * map, 256);
        fence_proxy_async();  // the generic accesses of the Q area before the next Q's TMA write
        mbar_arrive(q_empty);
        ++done;
    }
}

}  // namespace ak::diff::sm90

// Entry points (generated from src/runtime/kernel_list.rs, `diff_attention::sm90_*`):
// ak_diff_prefill_sm90_v<1|2>_<dtype>_d<d>[_alibi][_softcap]. Grid (min(SMs, ceil(max Sq / 64)
// x H x batch), 1, 1), block 384 threads, Cfg::SMEM_BYTES of dynamic shared memory; the parameter is
// __grid_constant__ (TMA reads the tensor maps in place).
#include "generated/diff_attention_prefill_sm90_entries.cuh"
