// Attention prefill for Hopper (sm_90a): the spec's attention op (section 1) with wgmma, TMA and
// warp specialisation. The same math as prefill.cu (the online softmax of attention/flash.cuh,
// bit for bit the same transform, masks and rounding); what changes is who moves the data and
// which instruction multiplies it. The producer's ring loop, the consumer's tile step and the
// epilogue's staging live in attention/flash_sm90.cuh (shared with the fused diff kernel).
//
// The kernel is persistent: a block (one per SM) runs one block tile of BM = 128 query rows of
// one (sequence, query head) per round of gridDim.x tiles (flash_sm90.cuh's Schedule: a snake
// over the blocks, heaviest causal tiles first), in three warpgroups:
//   producer (warpgroup 0, 24 registers)   one elected thread issues every copy by TMA: per
//              tile its Q, once the last tile's O has left the Q area (mbarrier q_empty), and
//              K(t) and V(t) of each visited key tile into a ring of STAGES stages that runs on
//              across tiles (the next tile's first stages load during the last one's epilogue);
//              mbarriers full_k / full_v (expect-tx of the bytes) say K / V landed, empty_k /
//              empty_v (256 arrivals) that both consumers are done with them.
//   consumers (warpgroups 1 and 2, 240 registers), 64 query rows each, per key tile:
//              S = Q K^T       wgmma m64nBNk16, Q and K from 128B-swizzled shared memory
//              softmax         flash.cuh's softmax_tile on the accumulators (a wgmma
//                              accumulator is mma.sync's fragment per warp)
//              O += P V        wgmma m64nDVk16, P from registers (packed by softmax_tile in
//                              the register-A fragment), V MN-major from the stage as TMA
//                              wrote it (row-major keys x Dv, no transpose pass)
//              then arrive on empty[s].
// The consumer pipelines by one tile (flash_sm90.cuh's consume): the softmax of tile t runs while
// the P V of tile t - 1 is in flight, and K(t) is released once S(t) retires.
// Tiles are visited as prefill.cu does (TileOrder: clean tiles without per-element masks
// first); the producer walks the same order. Causal tiles are numbered heavy first within a head.
// Epilogue per consumer: O / l staged into the consumer's own Q rows in shared memory (same
// swizzle), then 16-byte stores, then an arrival on q_empty; lse = ln 2 (m + log2 l), -inf and
// o = 0 for rows that see no key.
//
// Shared memory (from a 1024-byte aligned base): Q as D/64 column blocks of BM rows x 128 bytes
// (an area of max(D, DV)/64 such blocks, which O is staged in at the end), then STAGES x (K as
// D/64 blocks of BN rows, V as DV/64 blocks of BN rows); every row is one 128-byte swizzle row
// (the TMA box is 64 elements x rows, CU_TENSOR_MAP_SWIZZLE_128B), so the wgmma descriptors are
// K-major SW128 for Q and K (8-row groups 1024 bytes apart, k-steps 32 bytes apart in the row)
// and MN-major SW128 for V (64-column blocks BN x 128 bytes apart, 8-key groups 1024 bytes
// apart).
//
// Fused RoPE: the host rotates Q and K once each (prefill.cu's rope_pass) and this kernel reads
// the rotated copies. Dv = 2D (D = 64, 128): the Q area is BM x max(D, DV) so the staged O fits.
// Consumer ping-pong for D <= 128 (flash_sm90.cuh's Turns). Not done (issue 18): TMA stores; a
// dynamic (atomic) tile scheduler, which the emulated device cannot check yet (no atomics).
#include "params.h"
#include "common/dtype.cuh"
#include "common/tile.cuh"
#include "attention/flash_sm90.cuh"
#include <type_traits>

namespace ak::attention::sm90 {

template <int D_, int DV_, int BN_, int STAGES_>
struct Cfg {
    static constexpr int D = D_, DV = DV_, BN = BN_, STAGES = STAGES_;
    static constexpr int BM = 64 * CONSUMERS;  // consumer warpgroups of 64 query rows
    static constexpr int NT = 128 * (CONSUMERS + 1);
    static constexpr int Q_BYTES = BM * D * 2, K_BYTES = BN * D * 2, V_BYTES = BN * DV * 2;
    // The Q area also stages O in the epilogue: BM x max(D, DV).
    static constexpr int Q_AREA = BM * (D > DV ? D : DV) * 2;
    static constexpr int STAGE_BYTES = K_BYTES + V_BYTES;
    static constexpr int SMEM_BYTES = 1024 + Q_AREA + STAGES * STAGE_BYTES;  // + alignment slack
    static constexpr bool PINGPONG = pingpong(D);
    static_assert(D % 64 == 0 && DV % 64 == 0 && D <= 256 && DV <= 256, "head dims of whole 128-byte rows, wgmma N <= 256");
    static_assert(BN % 16 == 0 && BN <= 256, "key tiles: whole k-steps of P V, one TMA box of rows");
};

template <typename T, class C, bool ALIBI, bool SOFTCAP>
__device__ __forceinline__ void attention_forward(const AkAttnSm90Params& pp) {
    using namespace ak::hopper;
    const AkAttnParams& p = pp.attn;
    constexpr int D = C::D, DV = C::DV, BM = C::BM, BN = C::BN, STAGES = C::STAGES, RB = ROW_BYTES;

    AK_DYNAMIC_SHARED(unsigned char, smem_raw);
    const uint32_t raw = ptx::smem_addr(smem_raw);
    const uint32_t s_q = (raw + 1023u) & ~1023u;  // 128B swizzle repeats every 1024 bytes
    unsigned char* const q_ptr = smem_raw + (s_q - raw);
    auto s_k = [&](int st) { return s_q + C::Q_AREA + st * C::STAGE_BYTES; };
    auto s_v = [&](int st) { return s_k(st) + C::K_BYTES; };
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
    const Schedule sched(pp.query_blocks, p.heads_q, p.batch, p.causal != 0);
    const int group = p.heads_q / p.heads_kv;
    auto tile_at = [&](int i, Tile& w) { return sm90::tile_at<ALIBI, BM, BN>(p, sched, i, w); };

    // The tensor maps are rank 4 (head dim, heads, rows, batch); varlen maps have one batch of
    // all packed rows, so a sequence's rows are at q_first / k_first there.
    if (wg == 0) {
        // ---- producer: per tile, Q (once the previous tile's O has left the Q area), then the
        // tile's K/V through the ring. The first stages of a tile are issued before its Q, as
        // the ring frees them, so they load while the consumers finish the previous tile.
        setmaxnreg_dec<PRODUCER_REGS>();
        if (tid < 32 && elect_sync(0xffffffffu)) {
            int done = 0, base = 0;  // tiles run, ring visits issued
            Tile w;
#pragma unroll 1
            for (int j = 0; j < sched.rounds; ++j) {
                const int i = sched.tile(j);
                if (!tile_at(i, w)) continue;
                const int hk = w.h / group, bq = p.cu_seqlens_q ? 0 : w.b, bk = p.cu_seqlens_k ? 0 : w.b;
                auto load_k = [&](int st, int t, uint32_t bar) {
#pragma unroll
                    for (int j = 0; j < D / 64; ++j)
                        tma_load<4>(s_k(st) + j * BN * RB, &pp.tmap_k, {j * 64, hk, w.seq.k_first + t * BN, bk}, bar);
                };
                auto load_v = [&](int st, int t, uint32_t bar) {
#pragma unroll
                    for (int j = 0; j < DV / 64; ++j)
                        tma_load<4>(s_v(st) + j * BN * RB, &pp.tmap_v, {j * 64, hk, w.seq.k_first + t * BN, bk}, bar);
                };
                const int early = min(STAGES, w.visits);
                produce(ring, w.order, 0, early, base, C::K_BYTES, C::V_BYTES, load_k, load_v);
                if (done > 0) mbar_wait_parity(q_empty, (done - 1) & 1);
                // Q's barrier also publishes the tile's mask limits (the consumers read the last
                // tile's before their arrival on q_empty).
                RowLimits(p, w.seq.sq, w.seq.sk).store(lim, p, w.m0);
                mbar_arrive_expect_tx(q_full, C::Q_BYTES);
#pragma unroll
                for (int j = 0; j < D / 64; ++j)
                    tma_load<4>(s_q + j * BM * RB, &pp.tmap_q, {j * 64, w.h, w.seq.q_first + w.m0, bq}, q_full);
                produce(ring, w.order, early, w.visits, base, C::K_BYTES, C::V_BYTES, load_k, load_v);
                base += w.visits;
                ++done;
            }
        }
        return;
    }

    // ---- consumers
    setmaxnreg_inc<CONSUMER_REGS>();
    const int c = wg - 1, lane = tid & 31, g = lane >> 2, tq = lane & 3;
    const int row_w = c * 64 + ((tid >> 5) & 3) * 16;  // first block row of this warp
    struct {
        uint32_t base;
        __device__ __forceinline__ uint32_t k(int st) const { return base + st * C::STAGE_BYTES; }
        __device__ __forceinline__ uint32_t v(int st) const { return base + st * C::STAGE_BYTES + C::K_BYTES; }
    } const stage{s_k(0)};
    int done = 0, base = 0;  // tiles run, ring visits consumed (as the producer counts them)
#pragma unroll 1
    for (int j = 0; j < sched.rounds; ++j) {
        const int i = sched.tile(j);
        Tile w;
        if (!tile_at(i, w)) continue;
        float acc_o[1][DV / 8][4];
        SoftmaxRow stat[1][2] = {{SoftmaxRow{-INFINITY, 0.f}, SoftmaxRow{-INFINITY, 0.f}}};
        {
            const ScoreScale sc = ScoreScale::of<ALIBI, SOFTCAP>(p, w.h);
#pragma unroll
            for (int nt = 0; nt < DV / 8; ++nt) acc_o[0][nt][0] = acc_o[0][nt][1] = acc_o[0][nt][2] = acc_o[0][nt][3] = 0.f;
            mbar_wait_parity(q_full, done & 1);  // Q and lim of this tile
            consume<T, D, DV, BN, STAGES, BM * RB, ALIBI, SOFTCAP, C::PINGPONG>(acc_o, stat, ring, w.order, w.visits, base, c,
                                                                               s_q + c * 64 * RB, stage, sc, lim, row_w, g, tq);
            base += w.visits;
        }
        // The tile again (a few loads): nothing of it stays live through the key loop.
        tile_at(i, w);

        // ---- epilogue: normalise, stage O in this consumer's Q rows (its wgmma reads of them
        // have retired), then 16-byte stores of whole rows.
        fence_proxy_async();  // the rows were last accessed by the async proxy (TMA, wgmma)
        float inv[2];
#pragma unroll
        for (int rh = 0; rh < 2; ++rh) {
            const float l = quad_sum(stat[0][rh].l);
            inv[rh] = l > 0.f ? 1.f / l : 0.f;  // fully masked row: o = 0
            const int r = row_w + g + rh * 8;    // block row
            if (p.lse && tq == 0 && w.m0 + r < w.seq.sq) {
                const float lse = l > 0.f ? (stat[0][rh].m + log2f(l)) * kLn2 : -INFINITY;
                p.lse[w.b * p.lse_batch_stride + w.h * p.lse_head_stride + w.seq.q_first + w.m0 + r] = lse;
            }
        }
        stage_rows<T, DV>(q_ptr, BM, acc_o, inv, row_w, g, tq);
        named_bar_sync(1 + c, 128);  // this consumer's 64 rows are staged
        T* o = static_cast<T*>(p.o) + w.b * p.o_batch_stride + ((long long)w.seq.q_first + w.m0) * p.o_row_stride +
               w.h * p.o_head_stride;
        store_staged<T, DV>(o, p.o_row_stride, q_ptr, BM, c * 64, 64, w.seq.sq - w.m0, tid & 127, 128);
        fence_proxy_async();  // the generic reads of the Q area before the next Q's TMA write
        mbar_arrive(q_empty);
        ++done;
    }
}

}  // namespace ak::attention::sm90

// Entry points (generated from src/runtime/kernel_list.rs): ak_attn_fwd_sm90_<dtype>_d<D>[_alibi]
// [_softcap], one per Cfg<D, DV, BN, STAGES> of the list (_dv<DV> when DV != D). Grid (min(SMs,
// ceil(max Sq / 128) x Hq x batch), 1, 1), block 384 threads, Cfg::SMEM_BYTES of dynamic shared
// memory; the parameter is __grid_constant__ (TMA reads the tensor maps in place).
#include "generated/attention_prefill_sm90_entries.cuh"
