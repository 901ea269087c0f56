// Attention prefill for Hopper (sm_90a): the spec's attention op (section 1) with wgmma, TMA and
// warp specialisation. The same math as prefill.cu (the online softmax of attention/flash.cuh,
// bit for bit the same transform, masks and rounding); what changes is who moves the data and
// which instruction multiplies it.
//
// One block owns BM = 128 query rows of one (sequence, query head), in three warpgroups:
//   producer (warpgroup 0, 40 registers)   one elected thread issues every copy by TMA: the
//              block's Q once, then K(t) and V(t) of each visited key tile into a ring of STAGES
//              stages; mbarrier full[s] (expect-tx of the stage's bytes) says a stage landed,
//              empty[s] (256 arrivals) that both consumers are done with it.
//   consumers (warpgroups 1 and 2, 232 registers), 64 query rows each, per key tile:
//              S = Q K^T       wgmma m64nBNk16, Q and K from 128B-swizzled shared memory
//              softmax         flash.cuh's softmax_tile on the accumulators (a wgmma
//                              accumulator is mma.sync's fragment per warp)
//              O += P V        wgmma m64nDVk16, P from registers (packed by softmax_tile in
//                              the register-A fragment), V MN-major from the stage as TMA
//                              wrote it (row-major keys x Dv, no transpose pass)
//              then arrive on empty[s].
// Tiles are visited as prefill.cu does (TileOrder: clean tiles without per-element masks
// first); the producer walks the same order. Causal blocks are scheduled heavy first.
// Epilogue per consumer: O / l staged into the consumer's own Q rows in shared memory (same
// swizzle), then 16-byte stores; lse = ln 2 (m + log2 l), -inf and o = 0 for rows that see no key.
//
// Shared memory (from a 1024-byte aligned base): Q as D/64 column blocks of BM rows x 128 bytes,
// then STAGES x (K as D/64 blocks of BN rows, V as DV/64 blocks of BN rows); every row is one
// 128-byte swizzle row (the TMA box is 64 elements x rows, CU_TENSOR_MAP_SWIZZLE_128B), so the
// wgmma descriptors are K-major SW128 for Q and K (8-row groups 1024 bytes apart, k-steps 32
// bytes apart in the row) and MN-major SW128 for V (64-column blocks BN x 128 bytes apart, 8-key
// groups 1024 bytes apart).
//
// Fused RoPE: the host rotates Q and K once each (prefill.cu's rope_pass) and this kernel reads
// the rotated copies. Not here yet (the host dispatches it to prefill.cu): Dv != D. Not yet done for
// speed (issue 18): intra-warpgroup overlap of the softmax with the next tile's GEMMs, the
// consumers' ping-pong, a persistent scheduler, TMA stores.
#include "params.h"
#include "common/dtype.cuh"
#include "common/tile.cuh"
#include "common/hopper.cuh"
#include "attention/flash.cuh"
#include <type_traits>

namespace ak::attention::sm90 {

template <int D_, int BN_, int STAGES_>
struct Cfg {
    static constexpr int D = D_, DV = D_, BN = BN_, STAGES = STAGES_;
    static constexpr int CONSUMERS = 2;       // consumer warpgroups of 64 query rows
    static constexpr int BM = 64 * CONSUMERS;
    static constexpr int NT = 128 * (CONSUMERS + 1);
    static constexpr int ROW_BYTES = 128;     // one swizzle row: 64 elements
    static constexpr int Q_BYTES = BM * D * 2, K_BYTES = BN * D * 2, V_BYTES = BN * DV * 2;
    static constexpr int STAGE_BYTES = K_BYTES + V_BYTES;
    static constexpr int SMEM_BYTES = 1024 + Q_BYTES + STAGES * STAGE_BYTES;  // + alignment slack
    static constexpr int PRODUCER_REGS = 40, CONSUMER_REGS = 232;
    static_assert(D % 64 == 0 && D <= 256, "head dims of whole 128-byte rows, wgmma N <= 256");
    static_assert(BN % 16 == 0 && BN <= 256, "key tiles: whole k-steps of P V, one TMA box of rows");
    static_assert(128 * PRODUCER_REGS + 128 * CONSUMERS * CONSUMER_REGS <= 65536, "register file");
};

// View a [1][N/8][4] fragment array as the N/2 floats of a wgmma accumulator (the same registers).
template <int N>
__device__ __forceinline__ float (&flat(float (&a)[1][N / 8][4]))[N / 2] {
    return reinterpret_cast<float(&)[N / 2]>(a);
}

template <typename T, class C, bool ALIBI, bool SOFTCAP>
__device__ __forceinline__ void attention_forward(const AkAttnSm90Params& pp) {
    using namespace ak::hopper;
    const AkAttnParams& p = pp.attn;
    constexpr int D = C::D, DV = C::DV, BM = C::BM, BN = C::BN, STAGES = C::STAGES, RB = C::ROW_BYTES;
    constexpr bool BF16 = std::is_same<T, __nv_bfloat16>::value;

    AK_DYNAMIC_SHARED(unsigned char, smem_raw);
    const uint32_t raw = ptx::smem_addr(smem_raw);
    const uint32_t s_q = (raw + 1023u) & ~1023u;  // 128B swizzle repeats every 1024 bytes
    unsigned char* const q_ptr = smem_raw + (s_q - raw);
    auto s_k = [&](int st) { return s_q + C::Q_BYTES + st * C::STAGE_BYTES; };
    auto s_v = [&](int st) { return s_k(st) + C::K_BYTES; };
    AK_SHARED(uint64_t, bars, [1 + 2 * STAGES]);  // q_full, full[STAGES], empty[STAGES]
    AK_SHARED(int, lim, [4]);
    auto full = [&](int st) { return ptx::smem_addr(&bars[1 + st]); };
    auto empty = [&](int st) { return ptx::smem_addr(&bars[1 + STAGES + st]); };
    const uint32_t q_full = ptx::smem_addr(&bars[0]);

    const int tid = threadIdx.x, wg = tid >> 7;
    const int h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (p.heads_q / p.heads_kv);
    int sq = p.seqlen_q, sk = p.seqlen_k;
    int q_first = 0, k_first = 0;  // packed row of the sequence's first token (varlen)
    if (p.cu_seqlens_q) {
        q_first = p.cu_seqlens_q[b];
        sq = p.cu_seqlens_q[b + 1] - q_first;
    }
    if (p.cu_seqlens_k) {
        k_first = p.cu_seqlens_k[b];
        sk = p.cu_seqlens_k[b + 1] - k_first;
    }
    const int m_block = p.causal ? (int)(gridDim.x - 1 - blockIdx.x) : (int)blockIdx.x;
    const int m0 = m_block * BM;
    if (m0 >= sq) return;
    const int m_last = min(m0 + BM, sq) - 1;
    const RowLimits rows(p, sq, sk);
    int visits;
    const TileOrder order = rows.tiles<ALIBI, BN>(p, m0, m_last, visits);
    if (tid == 0) {
        rows.store(lim, p, m0);
        mbar_init(q_full, 1);
        for (int st = 0; st < STAGES; ++st) {
            mbar_init(full(st), 1);
            mbar_init(empty(st), 128 * C::CONSUMERS);
        }
    }
    __syncthreads();  // barriers initialised, lim published; no block-wide barrier after this

    // The tensor maps are rank 4 (head dim, heads, rows, batch); varlen maps have one batch of
    // all packed rows, so a sequence's rows are at q_first / k_first there.
    const int bq = p.cu_seqlens_q ? 0 : b, bk = p.cu_seqlens_k ? 0 : b;
    if (wg == 0) {
        // ---- producer
        setmaxnreg_dec<C::PRODUCER_REGS>();
        if (tid < 32 && elect_sync(0xffffffffu)) {
            mbar_arrive_expect_tx(q_full, C::Q_BYTES);
#pragma unroll
            for (int j = 0; j < D / 64; ++j) tma_load<4>(s_q + j * BM * RB, &pp.tmap_q, {j * 64, h, q_first + m0, bq}, q_full);
#pragma unroll 1
            for (int s = 0; s < visits; ++s) {
                const int st = s % STAGES, t = order.at(s);
                if (s >= STAGES) mbar_wait_parity(empty(st), (s / STAGES - 1) & 1);  // both consumers done
                mbar_arrive_expect_tx(full(st), C::STAGE_BYTES);
                const int row = k_first + t * BN;
#pragma unroll
                for (int j = 0; j < D / 64; ++j) tma_load<4>(s_k(st) + j * BN * RB, &pp.tmap_k, {j * 64, hk, row, bk}, full(st));
#pragma unroll
                for (int j = 0; j < DV / 64; ++j) tma_load<4>(s_v(st) + j * BN * RB, &pp.tmap_v, {j * 64, hk, row, bk}, full(st));
            }
        }
        return;
    }

    // ---- consumers
    setmaxnreg_inc<C::CONSUMER_REGS>();
    const int c = wg - 1, lane = tid & 31, g = lane >> 2, tq = lane & 3;
    const int row_w = c * 64 + ((tid >> 5) & 3) * 16;  // first block row of this warp
    const ScoreScale sc = ScoreScale::of<ALIBI, SOFTCAP>(p, h);
    float acc_o[1][DV / 8][4];
    SoftmaxRow stat[1][2] = {{SoftmaxRow{-INFINITY, 0.f}, SoftmaxRow{-INFINITY, 0.f}}};
#pragma unroll
    for (int nt = 0; nt < DV / 8; ++nt) acc_o[0][nt][0] = acc_o[0][nt][1] = acc_o[0][nt][2] = acc_o[0][nt][3] = 0.f;
    mbar_wait_parity(q_full, 0);

    auto visit = [&](auto masked, int s) {
        constexpr bool MASKED = decltype(masked)::value;
        const int st = s % STAGES, n0 = order.at(s) * BN;
        mbar_wait_parity(full(st), (s / STAGES) & 1);

        // ---- S = Q K^T: D/16 k-steps, one commit group
        float acc_s[1][BN / 8][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            const uint64_t dq = make_desc(s_q + (kk / 4) * BM * RB + c * 64 * RB + (kk % 4) * 32, 16, 1024, kSwizzle128B);
            const uint64_t dk = make_desc(s_k(st) + (kk / 4) * BN * RB + (kk % 4) * 32, 16, 1024, kSwizzle128B);
            wgmma_ss<BN, BF16>(flat<BN>(acc_s), dq, dk, kk > 0);
        }
        wgmma_commit();
        wgmma_wait<0>();
        fence_operands(flat<BN>(acc_s));

        uint32_t p_frag[1][BN / 16][4];
        softmax_tile<T, MASKED, ALIBI, SOFTCAP>(acc_s, acc_o, stat, p_frag, sc, lim, row_w, n0, g, tq);

        // ---- O += P V: BN/16 k-steps of 16 keys (two 8-key groups of 1024 bytes each)
        wgmma_fence();
#pragma unroll
        for (int kt = 0; kt < BN / 16; ++kt) {
            const uint64_t dv = make_desc(s_v(st) + kt * 2048, BN * RB, 1024, kSwizzle128B);
            wgmma_rs<DV, BF16, 1>(flat<DV>(acc_o), p_frag[0][kt], dv, 1);
        }
        wgmma_commit();
        wgmma_wait<0>();
        fence_operands(flat<DV>(acc_o));
        mbar_arrive(empty(st));  // this thread is done reading the stage
    };
    int s = 0;
#pragma unroll 1
    for (; s < order.clean; ++s) visit(std::false_type{}, s);
#pragma unroll 1
    for (; s < visits; ++s) visit(std::true_type{}, s);

    // ---- epilogue: normalise, stage O in this consumer's Q rows (its wgmma reads of them have
    // retired), then 16-byte stores of whole rows.
    fence_proxy_async();  // the rows were last accessed by the async proxy (TMA, wgmma)
    auto staged = [&](int r, int col) {  // byte offset of O(r, col) in the swizzled Q layout
        return (col / 64) * BM * RB + r * RB + ((((col % 64) >> 3) ^ (r & 7)) << 4) + (col % 8) * 2;
    };
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
        const float l = quad_sum(stat[0][rh].l);
        const float inv = l > 0.f ? 1.f / l : 0.f;  // fully masked row: o = 0
        const int r = row_w + g + rh * 8;            // block row
#pragma unroll
        for (int nt = 0; nt < DV / 8; ++nt)
            *reinterpret_cast<uint32_t*>(q_ptr + staged(r, nt * 8 + 2 * tq)) =
                Mma<T>::pack(acc_o[0][nt][rh * 2] * inv, acc_o[0][nt][rh * 2 + 1] * inv);
        if (p.lse && tq == 0 && m0 + r < sq) {
            const float lse = l > 0.f ? (stat[0][rh].m + log2f(l)) * kLn2 : -INFINITY;
            p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + q_first + m0 + r] = lse;
        }
    }
    named_bar_sync(1 + c, 128);  // this consumer's 64 rows are staged
    T* o = static_cast<T*>(p.o) + b * p.o_batch_stride + ((long long)q_first + m0) * p.o_row_stride + h * p.o_head_stride;
    constexpr int CHUNKS = DV / 8;
#pragma unroll 4
    for (int i = tid & 127; i < 64 * CHUNKS; i += 128) {
        const int r = c * 64 + i / CHUNKS, col = (i % CHUNKS) * 8;
        if (m0 + r < sq)
            *reinterpret_cast<uint4*>(o + r * p.o_row_stride + col) = *reinterpret_cast<const uint4*>(q_ptr + staged(r, col));
    }
}

}  // namespace ak::attention::sm90

// Entry points (generated from src/runtime/kernel_list.rs): ak_attn_fwd_sm90_<dtype>_d<D>[_alibi]
// [_softcap], one per Cfg<D, BN, STAGES> of the list. Grid (ceil(max Sq / 128), Hq, batch), block
// 384 threads, Cfg::SMEM_BYTES of dynamic shared memory; the parameter is __grid_constant__ (TMA
// reads the tensor maps in place).
#include "generated/attention_prefill_sm90_entries.cuh"
