// Attention prefill (spec section 1): a FlashAttention-2 style forward pass on tensor cores.
//
// One block owns BM query rows of one (sequence, query head); each warp owns WM = 16 * MT of
// those rows. The block visits the key tiles that its rows can see (causal / window limits skip
// the rest), BN keys at a time, clean tiles first and then those that need a mask (TileOrder):
//   S = Q K^T        mma.sync m16n8k16, Q and K through ldmatrix, f32 accumulators
//                    (V(t) is copied by cp.async meanwhile)
//   scores           base 2: clean tiles fold scale (and ALiBi) into the exponent's FFMA;
//                    masked tiles: x = log2(e) * (scale S | softcap tanh(scale S / softcap))
//                    - alibi, -inf where masked
//   online softmax   running max / sum per row in registers, O rescaled by 2^(m_old - m_new),
//                    exp2 with flush-to-zero (one MUFU.EX2)
//   O += P V         P packed from the S accumulators, V through ldmatrix.trans
//                    (K(next) is copied meanwhile)
// ALiBi and softcap are template arguments (four instances per tile); fused RoPE rotates Q
// once per block and reads K rotated by the rope_pass pre-pass.
// Epilogue: O / l staged through the block's Q rows in smem, written with 16-byte stores;
// lse = ln 2 * (m + log2 l), -inf for rows that see no key (o = 0 there).
//
// Shared memory rows are padded by 8 elements (16 bytes), which makes every ldmatrix phase
// and the 16-byte cp.async writes bank-conflict free without a swizzle.
#include "params.h"
#include "common/dtype.cuh"
#include "common/tile.cuh"
#include "common/rope.cuh"
#include "attention/flash.cuh"
#include <type_traits>

namespace ak::attention {

// Tile shape per (D, Dv).
template <int D_, int DV_, int MT_, int NWARPS_, int BN_>
struct Cfg {
    static constexpr int D = D_, DV = DV_, MT = MT_, NWARPS = NWARPS_, BN = BN_;
    static constexpr int NT = NWARPS * 32;
    static constexpr int WM = 16 * MT;     // query rows per warp
    static constexpr int BM = WM * NWARPS; // query rows per block
    static constexpr int PAD = 8;
    static constexpr int QS = (D > DV ? D : DV) + PAD;  // Q rows, reused for the O staging
    static constexpr int KS = D + PAD;
    static constexpr int VS = DV + PAD;
    static constexpr int SMEM_BYTES = 2 * (BM * QS + BN * KS + BN * VS);  // one K and one V stage
    static_assert(D % 16 == 0 && DV % 16 == 0 && BN % 16 == 0, "tile shape");
    static_assert(SMEM_BYTES <= 227 * 1024, "fits the sm_90 opt-in shared memory per block");
};

// The configurations instantiated are those of the kernel list (src/runtime/kernel_list.rs,
// `attention::TILES`); the generated entry points check NT, BM, BN and SMEM_BYTES against it.

// (cos, sin) of a possibly negative position: cos(-x) = cos x, sin(-x) = -sin x.
__device__ __forceinline__ float2 rope_cs(const AkRopeTable& tab, long long pos, int i) {
    const long long a = pos < 0 ? -pos : pos;
    float2 cs = rope_cos_sin(tab, a > 0x7fffffffLL ? 0x7fffffff : (int)a, i);
    if (pos < 0) cs.y = -cs.y;
    return cs;
}

// Rotate rows [0, rows_valid) of a smem tile in place (RoPE). Warp w takes rows w, w+NWARPS, ..;
// lanes take the pairs of a row. Row r is at position ids[r] if ids is given, else first + r.
template <typename T, int NWARPS, int STRIDE>
__device__ __forceinline__ void rope_tile(T* s, int rows_valid, const AkRopeTable& tab, const int* ids,
                                          long long first, int warp, int lane) {
    const int half = tab.rotary_dim >> 1;
    for (int r = warp; r < rows_valid; r += NWARPS) {
        const long long pos = ids ? (long long)ids[r] : first + r;
        T* row = s + r * STRIDE;
        for (int i = lane; i < half; i += 32) {
            const int2 pr = rope_pair(tab, i);
            const float2 y = rope_rotate(to_float(row[pr.x]), to_float(row[pr.y]), rope_cs(tab, pos, i),
                                            tab.attention_factor);
            row[pr.x] = from_float<T>(y.x);
            row[pr.y] = from_float<T>(y.y);
        }
    }
}

// (cos, sin) of pairs i and i+1 (i even, rotary_dim % 4 == 0) at position pos >= 0 in one
// 16-byte load per table level; the same arithmetic as rope_cos_sin, so results are identical.
__device__ __forceinline__ float4 rope_cs2(const AkRopeTable& tab, long long pos, int i) {
    const int half = tab.rotary_dim >> 1;
    const long long max_pos = (long long)tab.n_hi * AK_ROPE_LO_SIZE - 1;
    const int ps = (int)(pos > max_pos ? max_pos : pos);
    const int hi = ps / AK_ROPE_LO_SIZE;
    const int lo = ps - hi * AK_ROPE_LO_SIZE;
    const float4 l = *reinterpret_cast<const float4*>(tab.lo + 2 * (lo * half + i));
    if (hi == 0) return l;
    const float4 h = *reinterpret_cast<const float4*>(tab.hi + 2 * (hi * half + i));
    return make_float4(fmaf(h.x, l.x, -h.y * l.y), fmaf(h.y, l.x, h.x * l.y), fmaf(h.z, l.z, -h.w * l.w),
                       fmaf(h.w, l.z, h.z * l.w));
}

// Vectorised RoPE of a ROWS x D smem tile for rotary_dim % 4 == 0: each item is two adjacent
// pairs of one row (NeoX: 2 + 2 contiguous elements; GPT-J: 4 contiguous elements), items are
// spread over all NT threads with a compile-time trip count so the table loads overlap.
template <typename T, int ROWS, int D, int STRIDE, int NT>
__device__ __forceinline__ void rope_tile_vec(T* s, int rows_valid, const AkRopeTable& tab, const int* ids,
                                              long long first, int tid) {
    constexpr int GROUPS = D / 4;  // pair groups per row when rotary_dim = D
    constexpr int ITEMS = ROWS * GROUPS;
    const int groups = tab.rotary_dim >> 2;
    const int half = tab.rotary_dim >> 1;
    const float f = tab.attention_factor;
#pragma unroll
    for (int it = 0; it < (ITEMS + NT - 1) / NT; ++it) {
        const int item = it * NT + tid;
        const int r = item / GROUPS, grp = item % GROUPS;
        if ((ITEMS % NT == 0 || item < ITEMS) && r < rows_valid && grp < groups) {
            const long long pos = ids ? (long long)ids[r] : first + r;
            const int i = 2 * grp;  // first pair of the item
            float4 cs = rope_cs2(tab, pos < 0 ? -pos : pos, i);
            if (pos < 0) cs.y = -cs.y, cs.w = -cs.w;
            T* row = s + r * STRIDE;
            float a0, a1, b0, b1;  // pair i = (a0, b0), pair i+1 = (a1, b1)
            if (tab.interleaved) {
                const uint2 u = *reinterpret_cast<const uint2*>(row + 2 * i);
                const float2 x01 = unpack2<T>(u.x), x23 = unpack2<T>(u.y);
                a0 = x01.x, b0 = x01.y, a1 = x23.x, b1 = x23.y;
            } else {
                const float2 xa = unpack2<T>(*reinterpret_cast<const uint32_t*>(row + i));
                const float2 xb = unpack2<T>(*reinterpret_cast<const uint32_t*>(row + i + half));
                a0 = xa.x, a1 = xa.y, b0 = xb.x, b1 = xb.y;
            }
            const float2 y0 = rope_rotate(a0, b0, make_float2(cs.x, cs.y), f);
            const float2 y1 = rope_rotate(a1, b1, make_float2(cs.z, cs.w), f);
            if (tab.interleaved) {
                *reinterpret_cast<uint2*>(row + 2 * i) = make_uint2(pack2<T>(y0.x, y0.y), pack2<T>(y1.x, y1.y));
            } else {
                *reinterpret_cast<uint32_t*>(row + i) = pack2<T>(y0.x, y1.x);
                *reinterpret_cast<uint32_t*>(row + i + half) = pack2<T>(y0.y, y1.y);
            }
        }
    }
}

// RoPE of a smem tile: the vector path when rotary_dim % 4 == 0, else pair by pair.
template <typename T, int ROWS, int D, int STRIDE, int NT>
__device__ __forceinline__ void rope_rows(T* s, int rows_valid, const AkRopeTable& tab, const int* ids,
                                          long long first, int tid) {
    if ((tab.rotary_dim & 3) == 0)
        rope_tile_vec<T, ROWS, D, STRIDE, NT>(s, rows_valid, tab, ids, first, tid);
    else
        rope_tile<T, NT / 32, STRIDE>(s, rows_valid, tab, ids, first, tid >> 5, tid & 31);
}

// The BN rows of key tile t of `src` (sk rows in all) into `dst` as one cp.async group, without
// the row predicate when the tile is whole.
template <int BN, int COLS, int STRIDE, int NT, typename T>
__device__ __forceinline__ void load_key_tile(T* dst, const T* src, long long row_stride, int t, int sk, int tid) {
    const int n0 = t * BN;
    if (n0 + BN <= sk)
        load_tile_async<BN, COLS, STRIDE, NT, true>(dst, src + n0 * row_stride, row_stride, BN, tid);
    else
        load_tile_async<BN, COLS, STRIDE, NT>(dst, src + n0 * row_stride, row_stride, sk - n0, tid);
    cp_async_commit();
}

// ALIBI, SOFTCAP: the score transform, fixed per instance so the steady-state loop carries only
// what the call uses. Masks (causal, windows, the ragged last tile) cost nothing there either:
// the tiles that need them run in a second copy of the loop body (TileOrder).
template <typename T, class C, bool ALIBI, bool SOFTCAP>
__device__ __forceinline__ void attention_forward(const AkAttnParams& p) {
    constexpr int D = C::D, DV = C::DV, MT = C::MT, BM = C::BM, BN = C::BN, NT = C::NT;
    constexpr int NTILES_S = BN / 8;  // n-tiles of S per m-tile
    constexpr int NTILES_O = DV / 8;  // n-tiles of O per m-tile

    AK_DYNAMIC_SHARED(unsigned char, smem_raw);
    T* sQ = reinterpret_cast<T*>(smem_raw);
    T* sK = sQ + BM * C::QS;  // BN x KS
    T* sV = sK + BN * C::KS;  // BN x VS

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, tq = lane & 3;  // fragment row group and column pair
    const int h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (p.heads_q / p.heads_kv);

    // This sequence's rows.
    int sq = p.seqlen_q, sk = p.seqlen_k;
    long long q_first = 0, k_first = 0;  // packed row of the sequence's first token (varlen)
    if (p.cu_seqlens_q) {
        q_first = p.cu_seqlens_q[b];
        sq = p.cu_seqlens_q[b + 1] - (int)q_first;
    }
    if (p.cu_seqlens_k) {
        k_first = p.cu_seqlens_k[b];
        sk = p.cu_seqlens_k[b + 1] - (int)k_first;
    }
    const int m0 = query_block(p.causal) * BM;  // causal: heavy first
    if (m0 >= sq) return;
    const int m_last = min(m0 + BM, sq) - 1;

    const T* q = static_cast<const T*>(p.q) + b * p.q_batch_stride + (q_first + m0) * p.q_row_stride +
                 h * p.q_head_stride;
    const T* k = static_cast<const T*>(p.k) + b * p.k_batch_stride + k_first * p.k_row_stride + hk * p.k_head_stride;
    const T* v = static_cast<const T*>(p.v) + b * p.v_batch_stride + k_first * p.v_row_stride + hk * p.v_head_stride;

    const RowLimits rows(p, sq, sk);
    int visits;
    const TileOrder order = rows.tiles<ALIBI, BN>(p, m0, m_last, visits);
    // What the loop needs once per tile, kept in shared memory rather than in registers through
    // it (at 64-key tiles every register counts): the rows' mask limits (RowLimits) in lim[0..3],
    // the TileOrder in lim[4..6]; this head's K and V.
    AK_SHARED(const void*, kv_base, [2]);
    AK_SHARED(int, lim, [7]);
    auto tile_at = [&](int s) { return TileOrder{lim[4], lim[5], lim[6]}.at(s); };
    if (tid == 0) {
        kv_base[0] = k;
        kv_base[1] = v;
        lim[4] = order.t_begin;
        lim[5] = order.lead;
        lim[6] = order.clean;
        rows.store(lim, p, m0);
    }
    __syncthreads();  // publishes lim and kv_base before the prologue's copy reads them
    auto load_k = [&](int t) {
        load_key_tile<BN, D, C::KS, NT>(sK, static_cast<const T*>(kv_base[0]), p.k_row_stride, t, lim[0] + 1, tid);
    };
    auto load_v = [&](int t) {
        load_key_tile<BN, DV, C::VS, NT>(sV, static_cast<const T*>(kv_base[1]), p.v_row_stride, t, lim[0] + 1, tid);
    };

    // Prologue: Q and the first K tile in one group.
    load_tile_async<BM, D, C::QS, NT>(sQ, q, p.q_row_stride, sq - m0, tid);
    if (visits > 0) load_k(order.at(0));
    else cp_async_commit();

    // Fused RoPE rotates Q here, once per block; K arrives rotated (the host's rope_pass pre-pass).
    if (p.rope.lo != nullptr && visits > 0) {
        cp_async_wait<0>();
        __syncthreads();
        const int* ids = p.position_ids_q ? p.position_ids_q + b * p.pos_q_batch_stride + q_first + m0 : nullptr;
        rope_rows<T, BM, D, C::QS, NT>(sQ, m_last - m0 + 1, p.rope, ids, m0 + rows.shift, tid);
        // The barrier after the first K tile lands orders these writes before any ldmatrix.
    }

    const ScoreScale sc = ScoreScale::of<ALIBI, SOFTCAP>(p, h);

    const int row_w = warp * C::WM;  // first block row of this warp
    float acc_o[MT][NTILES_O][4];
    SoftmaxRow stat[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int nt = 0; nt < NTILES_O; ++nt) acc_o[mt][nt][0] = acc_o[mt][nt][1] = acc_o[mt][nt][2] = acc_o[mt][nt][3] = 0.f;
        stat[mt][0] = stat[mt][1] = SoftmaxRow{-INFINITY, 0.f};
    }

    // One visit of tile t. One K and one V stage, each copy overlapping one GEMM (FlashAttention-2's
    // pipeline; two blocks per SM on A100 and H100 hide the rest): V(t) lands during S = Q K(t)^T
    // and the softmax, K(next) during O += P V(t). MASKED: the scores are transformed in full and
    // masked per element; otherwise the tile is clean and the transform folds into one FFMA.
    auto visit = [&](auto masked, int s, int t) {
        constexpr bool MASKED = decltype(masked)::value;
        const int n0 = t * BN;
        cp_async_wait<0>();  // K(t) has landed (this thread's copies) ...
        __syncthreads();     // ... and everyone's; every warp is done with V(t - 1)
        load_v(t);
        const T* k_s = sK;
        const T* v_s = sV;

        // ---- S = Q K^T
        float acc_s[MT][NTILES_S][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < NTILES_S; ++nt) acc_s[mt][nt][0] = acc_s[mt][nt][1] = acc_s[mt][nt][2] = acc_s[mt][nt][3] = 0.f;
#pragma unroll
        for (int kt = 0; kt < D / 16; ++kt) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
                ldmatrix_x4(a[mt], sQ + (row_w + mt * 16 + a_row(lane)) * C::QS + kt * 16 + a_col(lane));
#pragma unroll
            for (int np = 0; np < BN / 16; ++np) {
                uint32_t bk[4];
                ldmatrix_x4(bk, k_s + (np * 16 + bt_row(lane)) * C::KS + kt * 16 + bt_col(lane));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    Mma<T>::run(acc_s[mt][2 * np], a[mt], bk[0], bk[1]);
                    Mma<T>::run(acc_s[mt][2 * np + 1], a[mt], bk[2], bk[3]);
                }
            }
        }

        // ---- scores in base-2 units and the online softmax; P leaves as packed A fragments.
        uint32_t p_frag[MT][BN / 16][4];
        softmax_tile<T, MASKED, ALIBI, SOFTCAP>(acc_s, acc_o, stat, p_frag, sc, lim, row_w, n0, g, tq);

        cp_async_wait<0>();  // V(t) has landed ...
        __syncthreads();     // ... everywhere; every warp is done with K(t)
        if (s + 1 < visits) load_k(tile_at(s + 1));

        // ---- O += P V
#pragma unroll
        for (int kt = 0; kt < BN / 16; ++kt) {
#pragma unroll
            for (int np = 0; np < DV / 16; ++np) {
                uint32_t bv[4];
                ldmatrix_x4_trans(bv, v_s + (kt * 16 + bk_row(lane)) * C::VS + np * 16 + bk_col(lane));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    Mma<T>::run(acc_o[mt][2 * np], p_frag[mt][kt], bv[0], bv[1]);
                    Mma<T>::run(acc_o[mt][2 * np + 1], p_frag[mt][kt], bv[2], bv[3]);
                }
            }
        }
    };

    int s = 0;
#pragma unroll 1
    for (; s < order.clean; ++s) visit(std::false_type{}, s, tile_at(s));
#pragma unroll 1
    for (; s < visits; ++s) visit(std::true_type{}, s, tile_at(s));

    // ---- epilogue: normalise, stage O in this warp's Q rows, store 16 bytes at a time
    cp_async_wait<0>();  // no copy may still target sQ (matters when no tile was visited)
    __syncthreads();
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int rh = 0; rh < 2; ++rh) {
            const float l = quad_sum(stat[mt][rh].l);
            const float inv = l > 0.f ? 1.f / l : 0.f;  // fully masked row: o = 0
            const int r = row_w + mt * 16 + g + rh * 8;  // block row
            T* srow = sQ + r * C::QS + 2 * tq;
#pragma unroll
            for (int nt = 0; nt < NTILES_O; ++nt) {
                *reinterpret_cast<uint32_t*>(srow + nt * 8) =
                    Mma<T>::pack(acc_o[mt][nt][rh * 2] * inv, acc_o[mt][nt][rh * 2 + 1] * inv);
            }
            if (p.lse && tq == 0 && m0 + r < sq) {
                const float lse = l > 0.f ? (stat[mt][rh].m + log2f(l)) * kLn2 : -INFINITY;
                p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + q_first + m0 + r] = lse;
            }
        }
    }
    __syncwarp();
    T* o = static_cast<T*>(p.o) + b * p.o_batch_stride + (q_first + m0) * p.o_row_stride + h * p.o_head_stride;
    constexpr int CHUNKS = DV / 8;
#pragma unroll
    for (int c = lane; c < C::WM * CHUNKS; c += 32) {
        const int r = row_w + c / CHUNKS, col = (c % CHUNKS) * 8;
        if (m0 + r < sq)
            *reinterpret_cast<uint4*>(o + r * p.o_row_stride + col) =
                *reinterpret_cast<const uint4*>(sQ + r * C::QS + col);
    }
}

// RoPE pre-pass of fused-RoPE attention: rotate every key row once into p.k_rotated (packed
// [.., rows, heads_kv, D]: row stride heads_kv * D), so the attention blocks read rotated keys
// instead of each rotating every K tile it visits (O(Sk) work, not O(Sq / BM x Sk)). The
// rotation is the one the attention kernel applies to Q (rope_rows, rounded once to T).
// QUERIES: the same for the query rows (at P(i): position_ids_q, else i + Sk - Sq) into
// p.q_rotated ([.., rows, heads_q, D]), for the sm_90a kernel, which takes Q from TMA as is.
// Grid (ceil(max rows / ROPE_ROWS), heads (kv or q), batch), ROPE_THREADS threads.
constexpr int ROPE_ROWS = 64, ROPE_THREADS = 128;
template <typename T, int D, bool QUERIES>
__device__ __forceinline__ void rope_pass(const AkAttnParams& p) {
    constexpr int STRIDE = D + 8;
    AK_SHARED(T, tile, [ROPE_ROWS * STRIDE]);
    const int tid = threadIdx.x, hh = blockIdx.y, b = blockIdx.z;
    const int* cu = QUERIES ? p.cu_seqlens_q : p.cu_seqlens_k;
    const int dense = QUERIES ? p.seqlen_q : p.seqlen_k;
    int len = dense;
    long long first_row = 0;
    if (cu) {
        first_row = cu[b];
        len = cu[b + 1] - (int)first_row;
    }
    const int n0 = blockIdx.x * ROPE_ROWS;
    if (n0 >= len) return;
    const int rows = min(ROPE_ROWS, len - n0);
    long long pos0 = n0;  // default positions: key j at j, query i at i + Sk - Sq
    if (QUERIES) pos0 += (p.cu_seqlens_k ? p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b] : p.seqlen_k) - len;
    const long long batch_stride = QUERIES ? p.q_batch_stride : p.k_batch_stride;
    const long long row_stride = QUERIES ? p.q_row_stride : p.k_row_stride;
    const long long head_stride = QUERIES ? p.q_head_stride : p.k_head_stride;
    const T* src = static_cast<const T*>(QUERIES ? p.q : p.k) + b * batch_stride + (first_row + n0) * row_stride +
                   hh * head_stride;
    load_tile_async<ROPE_ROWS, D, STRIDE, ROPE_THREADS>(tile, src, row_stride, rows, tid);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    const int* ids0 = QUERIES ? p.position_ids_q : p.position_ids_k;
    const long long ids_batch = QUERIES ? p.pos_q_batch_stride : p.pos_k_batch_stride;
    const int* ids = ids0 ? ids0 + b * ids_batch + first_row + n0 : nullptr;
    rope_rows<T, ROPE_ROWS, D, STRIDE, ROPE_THREADS>(tile, rows, p.rope, ids, pos0, tid);
    __syncthreads();
    const long long out_stride = (long long)(QUERIES ? p.heads_q : p.heads_kv) * D;
    const long long first = (cu ? 0 : (long long)b * dense) + first_row + n0;
    T* out = static_cast<T*>(QUERIES ? p.q_rotated : p.k_rotated) + first * out_stride + hh * D;
    constexpr int CHUNKS = D / 8;
    for (int c = tid; c < ROPE_ROWS * CHUNKS; c += ROPE_THREADS) {
        const int r = c / CHUNKS, col = (c % CHUNKS) * 8;
        if (r < rows)
            *reinterpret_cast<uint4*>(out + r * out_stride + col) = *reinterpret_cast<const uint4*>(tile + r * STRIDE + col);
    }
}

}  // namespace ak::attention

// Entry points (generated from src/runtime/kernel_list.rs): ak_attn_fwd_<dtype>_d<D>[_dv<Dv>], one
// per Cfg<D, DV, MT, NWARPS, BN> of the list. Grid (ceil(max Sq / BM), Hq, batch), block NT
// threads, Cfg::SMEM_BYTES of dynamic shared memory.
#include "generated/attention_prefill_entries.cuh"
