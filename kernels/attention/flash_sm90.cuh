// The tile steps of the sm_90a flash kernels (attention/prefill_sm90.cu, diff_attention/
// prefill_sm90.cu): a producer warpgroup filling a ring of K/V stages by TMA, consumer
// warpgroups that each run S = Q K^T and O += P V by wgmma around flash.cuh's softmax_tile, and
// the swizzled staging of the epilogue. Every tile is whole 128-byte swizzle rows (64 elements;
// TMA boxes of 64 columns, CU_TENSOR_MAP_SWIZZLE_128B), stored as column blocks of 64: a tile of
// R rows x C columns is C / 64 blocks of R x 128 bytes.
#pragma once
#include "attention/flash.cuh"
#include "common/hopper.cuh"

namespace ak::attention::sm90 {

constexpr int ROW_BYTES = 128;  // one swizzle row: 64 two-byte elements

// The block's warpgroups: one producer and CONSUMERS consumers, and the register split
// setmaxnreg makes between them (FA3's: the consumers hold S, P and O at once).
constexpr int CONSUMERS = 2;
constexpr int PRODUCER_REGS = 24, CONSUMER_REGS = 240;
static_assert(128 * PRODUCER_REGS + 128 * CONSUMERS * CONSUMER_REGS <= 65536, "register file");

// Ping-pong of the two consumers (FA3's scheduler barrier): in the steady state a consumer issues
// its tile's GEMMs only on its turn and hands the turn over once they are issued, so one
// warpgroup's softmax runs while the other's GEMMs hold the tensor cores. FA3 turns it on for QK
// head dims up to 128; above that a warpgroup's own GEMMs are long enough to cover its softmax.
constexpr bool pingpong(int d) { return d <= 128; }
constexpr int TURN_BAR = 4;  // named barriers TURN_BAR + c (consumer c's turn); 1..3 are the epilogues'

// A consumer's side of the ping-pong over `visits` tiles, each barrier 256 threads (the 128 of
// the consumer whose turn it is, which sync, and the 128 of the other, which arrive). Visit 0 and
// the last P V run outside it (FA3's placement); visits 1 .. visits - 1 are one turn each,
// consumer 0 first. Arrivals match syncs exactly, so no barrier is left half-arrived at exit:
// consumer 1 opens consumer 0's first turn and does not pass on its last.
template <bool ON>
struct Turns {
    int c, visits;
    __device__ __forceinline__ void open() const {
        if (ON && c == 1 && visits > 1) ak::hopper::named_bar_arrive(TURN_BAR, 256);
    }
    __device__ __forceinline__ void take() const {
        if (ON) ak::hopper::named_bar_sync(TURN_BAR + c, 256);
    }
    __device__ __forceinline__ void pass(int s) const {
        if (ON && !(c == 1 && s == visits - 1)) ak::hopper::named_bar_arrive(TURN_BAR + (c ^ 1), 256);
    }
};
static_assert(CONSUMERS == 2, "the ping-pong pairs two consumers");

// The block tiles of a persistent kernel, statically: tiles 0 .. total - 1 of query_blocks x
// heads x batch (query block fastest, so the blocks running at once share K/V heads in L2; causal
// blocks heaviest first within a head) in rounds of G = gridDim.x; in round j block k runs tile
// j G + k when j is even and j G + G - 1 - k when odd. Under causal the tiles of a head get
// lighter along the numbering, and round-robin (always k) would hand some blocks the heavier
// tiles of every round; the snake evens each block's total out. Every warpgroup walks the same
// sequence itself (no hand-over), skipping the tiles whose query block is past their sequence's
// end. total + G fits an int (the host takes the mma.sync kernel otherwise).
struct Schedule {
    int query_blocks, heads, total, rounds;
    bool causal;
    __device__ __forceinline__ Schedule(int query_blocks_, int heads_, int batch, bool causal_)
        : query_blocks(query_blocks_), heads(heads_), total(query_blocks_ * heads_ * batch),
          rounds((query_blocks_ * heads_ * batch + (int)gridDim.x - 1) / (int)gridDim.x), causal(causal_) {}
    // This block's tile in round j, or -1 (the last round is partial).
    __device__ __forceinline__ int tile(int j) const {
        const int k = (int)blockIdx.x, g = (int)gridDim.x;
        const int i = j * g + ((j & 1) ? g - 1 - k : k);
        return i < total ? i : -1;
    }
    // Query block, head and sequence of tile i.
    __device__ __forceinline__ void at(int i, int& m_block, int& h, int& b) const {
        const int m = i % query_blocks, hb = i / query_blocks;
        m_block = causal ? query_blocks - 1 - m : m;
        h = hb % heads;
        b = hb / heads;
    }
};

// One block tile: head h of sequence b (`seq`), rows [m0, m_last], its visited key tiles.
struct Tile {
    int h, b, m0, m_last, visits;
    SeqSpan seq;
    TileOrder order;
};

// Tile i of `sched` with BM query rows per tile and BN keys per key tile; false when i is -1 or
// its query block is past its sequence's end (nothing to do).
template <bool ALIBI, int BM, int BN, class P>
__device__ __forceinline__ bool tile_at(const P& p, const Schedule& sched, int i, Tile& w) {
    if (i < 0) return false;
    int m_block;
    sched.at(i, m_block, w.h, w.b);
    w.seq = SeqSpan(p, w.b);
    w.m0 = m_block * BM;
    if (w.m0 >= w.seq.sq) return false;
    w.m_last = min(w.m0 + BM, w.seq.sq) - 1;
    w.order = RowLimits(p, w.seq.sq, w.seq.sk).template tiles<ALIBI, BN>(p, w.m0, w.m_last, w.visits);
    return true;
}

// View a [1][N/8][4] fragment array as the N/2 floats of a wgmma accumulator (the same registers).
template <int N>
__device__ __forceinline__ float (&flat(float (&a)[1][N / 8][4]))[N / 2] {
    return reinterpret_cast<float(&)[N / 2]>(a);
}

// The ring's mbarriers, K and V apart (K is released as soon as its S GEMM retires, V after the
// P V, so two stages leave the producer a tile of slack): full_k[st] / full_v[st] (one arrival
// with the expected bytes: TMA landed the stage's K / V), empty_k[st] / empty_v[st]
// (`consumers` x 128 arrivals: every consumer thread is done reading them).
template <int STAGES>
struct Ring {
    static constexpr int BARRIERS = 4 * STAGES;
    uint32_t bars;  // shared address of full_k[], full_v[], empty_k[], empty_v[], 8 bytes each
    __device__ __forceinline__ uint32_t full_k(int st) const { return bars + 8 * st; }
    __device__ __forceinline__ uint32_t full_v(int st) const { return bars + 8 * (STAGES + st); }
    __device__ __forceinline__ uint32_t empty_k(int st) const { return bars + 8 * (2 * STAGES + st); }
    __device__ __forceinline__ uint32_t empty_v(int st) const { return bars + 8 * (3 * STAGES + st); }
    __device__ __forceinline__ void init(int consumers) const {
        for (int st = 0; st < STAGES; ++st) {
            ak::hopper::mbar_init(full_k(st), 1);
            ak::hopper::mbar_init(full_v(st), 1);
            ak::hopper::mbar_init(empty_k(st), 128 * consumers);
            ak::hopper::mbar_init(empty_v(st), 128 * consumers);
        }
    }
};

// The producer's elected thread, visits [from, to) of a block tile whose first visit is the
// ring's visit `base` (the visits of the block's earlier tiles): for each visit s (key tile
// order.at(s), ring visit n = base + s), once K (then V) of stage n % STAGES is free (every
// consumer arrived for ring visit n - STAGES), announce its bytes and issue its TMA copies:
// load_k(stage, tile, full_k), then load_v(stage, tile, full_v).
template <int STAGES, class LoadK, class LoadV>
__device__ __forceinline__ void produce(const Ring<STAGES>& ring, const TileOrder& order, int from, int to, int base,
                                        unsigned k_bytes, unsigned v_bytes, LoadK load_k, LoadV load_v) {
    using namespace ak::hopper;
#pragma unroll 1
    for (int s = from; s < to; ++s) {
        const int n = base + s, st = n % STAGES, t = order.at(s);
        const unsigned parity = (n / STAGES - 1) & 1;
        if (n >= STAGES) mbar_wait_parity(ring.empty_k(st), parity);
        mbar_arrive_expect_tx(ring.full_k(st), k_bytes);
        load_k(st, t, ring.full_k(st));
        if (n >= STAGES) mbar_wait_parity(ring.empty_v(st), parity);
        mbar_arrive_expect_tx(ring.full_v(st), v_bytes);
        load_v(st, t, ring.full_v(st));
    }
}

// One consumer warpgroup's pass over every visited key tile (clean ones first, then masked),
// software-pipelined by one tile (FA3's intra-warpgroup overlap): for tile s it issues
// S(s) = Q K(s)^T, rescales O for tile s - 1's max, issues O += P(s-1) V(s-1), waits for S(s)
// only (wait_group 1: the P V keeps the tensor cores busy), runs the softmax of tile s in S's
// registers, waits for the P V, releases stage s - 1 and packs P(s). S: wgmma m64nBNk16, Q and K
// K-major from SW128 shared memory; P V: wgmma m64nDVk16, P from registers, V MN-major as TMA
// wrote it. s_q: this consumer's 64 query rows in the first Q column block, Q_BLOCK the bytes
// between Q column blocks; stage(st): the K tile this consumer multiplies (BN rows per column
// block) and the V tile of stage st; base: the ring visit of this tile's visit 0 (the visits of
// the block's earlier tiles, persistent kernels). With PINGPONG the steady-state issues of
// consumer c (of 2) alternate with the other consumer's (Turns).
template <typename T, int D, int DV, int BN, int STAGES, int Q_BLOCK, bool ALIBI, bool SOFTCAP, bool PINGPONG, class Stage>
__device__ __forceinline__ void consume(float (&acc_o)[1][DV / 8][4], SoftmaxRow (&stat)[1][2], const Ring<STAGES>& ring,
                                        const TileOrder& order, int visits, int base, int c, uint32_t s_q, Stage stage,
                                        const ScoreScale& sc, const int* lim, int row_w, int g, int tq) {
    using namespace ak::hopper;
    constexpr bool BF16 = std::is_same<T, __nv_bfloat16>::value;
    constexpr int RB = ROW_BYTES;
    if (visits == 0) return;
    const Turns<PINGPONG> turns{c, visits};
    float acc_s[1][BN / 8][4];
    uint32_t p_frag[1][BN / 16][4];
    float alpha[1][2];
    bool grow = false;  // O waits for a rescale by alpha before the next P V
    // ---- S = Q K^T of visit s: D/16 k-steps (32 bytes apart in a swizzle row), one commit group
    auto issue_s = [&](int s) {
        const int n = base + s, st = n % STAGES;
        mbar_wait_parity(ring.full_k(st), (n / STAGES) & 1);
        const uint32_t s_k = stage.k(st);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            const uint64_t dq = make_desc(s_q + (kk / 4) * Q_BLOCK + (kk % 4) * 32, 16, 1024, kSwizzle128B);
            const uint64_t dk = make_desc(s_k + (kk / 4) * BN * RB + (kk % 4) * 32, 16, 1024, kSwizzle128B);
            wgmma_ss<BN, BF16>(flat<BN>(acc_s), dq, dk, kk > 0);
        }
        wgmma_commit();
    };
    // ---- O = alpha O + P V of visit s: BN/16 k-steps of 16 keys (two 8-key groups of 1024
    // bytes each); V's 64-column blocks are BN rows apart (LBO), its 8-key groups 1024 bytes (SBO)
    auto issue_pv = [&](int s) {
        if (grow) rescale_o(acc_o, alpha);
        const int n = base + s;
        mbar_wait_parity(ring.full_v(n % STAGES), (n / STAGES) & 1);
        const uint32_t s_v = stage.v(n % STAGES);
        wgmma_fence();
#pragma unroll
        for (int kt = 0; kt < BN / 16; ++kt) {
            const uint64_t dv = make_desc(s_v + kt * 2048, BN * RB, 1024, kSwizzle128B);
            wgmma_rs<DV, BF16, 1>(flat<DV>(acc_o), p_frag[0][kt], dv, 1);
        }
        wgmma_commit();
    };
    auto softmax = [&](auto masked, int s) {
        constexpr bool MASKED = decltype(masked)::value;
        grow = softmax_step<T, MASKED, ALIBI, SOFTCAP, true>(acc_s, acc_o, stat, p_frag, alpha, sc, lim, row_w, order.at(s) * BN, g, tq);
    };
    // Visit s >= 1: S(s) and P V(s - 1) in flight together, the softmax of s under the P V.
    auto visit = [&](auto masked, int s) {
        turns.take();
        issue_s(s);
        issue_pv(s - 1);
        turns.pass(s);
        wgmma_wait<1>();  // S(s) retired (groups retire in order); P V(s - 1) may still run
        fence_operands(flat<BN>(acc_s));
        mbar_arrive(ring.empty_k((base + s) % STAGES));  // this thread is done reading K(s)
        softmax(masked, s);
        wgmma_wait<0>();
        fence_operands(flat<DV>(acc_o));
        mbar_arrive(ring.empty_v((base + s - 1) % STAGES));  // ... and V(s - 1)
        pack_p<T>(acc_s, p_frag);
    };
    // Visit 0: nothing to overlap with.
    turns.open();
    issue_s(0);
    wgmma_wait<0>();
    fence_operands(flat<BN>(acc_s));
    mbar_arrive(ring.empty_k(base % STAGES));
    if (order.clean > 0)
        softmax(std::false_type{}, 0);
    else
        softmax(std::true_type{}, 0);
    pack_p<T>(acc_s, p_frag);
    int s = 1;
#pragma unroll 1
    for (; s < order.clean; ++s) visit(std::false_type{}, s);
#pragma unroll 1
    for (; s < visits; ++s) visit(std::true_type{}, s);
    // The last P V.
    issue_pv(visits - 1);
    wgmma_wait<0>();
    fence_operands(flat<DV>(acc_o));
    mbar_arrive(ring.empty_v((base + visits - 1) % STAGES));
}

// Byte offset of element (r, col) in a swizzled tile of `rows` rows (column blocks of 64).
__device__ __forceinline__ int staged(int rows, int r, int col) {
    return (col / 64) * rows * ROW_BYTES + r * ROW_BYTES + ((((col % 64) >> 3) ^ (r & 7)) << 4) + (col % 8) * 2;
}

// Write a thread's accumulator rows (fragment rows row_w + g and + 8, columns 8 nt + 2 tq, + 1)
// times scale[rh] into a swizzled tile of `rows` rows at `tile`, as T.
template <typename T, int N>
__device__ __forceinline__ void stage_rows(unsigned char* tile, int rows, const float (&acc)[1][N / 8][4], const float (&scale)[2],
                                           int row_w, int g, int tq) {
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
        const int r = row_w + g + rh * 8;
#pragma unroll
        for (int nt = 0; nt < N / 8; ++nt)
            *reinterpret_cast<uint32_t*>(tile + staged(rows, r, nt * 8 + 2 * tq)) =
                Mma<T>::pack(acc[0][nt][rh * 2] * scale[rh], acc[0][nt][rh * 2 + 1] * scale[rh]);
    }
}

// Copy rows [r0, r0 + n) of a staged tile (`rows` rows, N columns) to global rows o + r * stride
// in 16-byte chunks, `threads` threads from index i0; rows at or past `valid` are not written.
template <typename T, int N>
__device__ __forceinline__ void store_staged(T* o, long long stride, const unsigned char* tile, int rows, int r0, int n, int valid,
                                             int i0, int threads) {
    constexpr int CHUNKS = N / 8;
#pragma unroll 4
    for (int i = i0; i < n * CHUNKS; i += threads) {
        const int r = r0 + i / CHUNKS, col = (i % CHUNKS) * 8;
        if (r < valid) *reinterpret_cast<uint4*>(o + r * stride + col) = *reinterpret_cast<const uint4*>(tile + staged(rows, r, col));
    }
}

}  // namespace ak::attention::sm90
