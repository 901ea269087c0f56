// Fused differential attention, prefill (spec section 3), variants v1 and v2.
//
// One block = one diff head h, one tile of BR = 64 MT query rows, 8 warps:
//   warps 0-3 run softmax map 1 (Q1 = q head 2h against K1), warps 4-7 map 2 (Q2 against K2),
//   warp w % 4 owns query rows 16 MT (w % 4) .. +16 MT of the tile in both groups (MT m-tiles
//   of 16 rows share each K and V fragment it loads).
// Per KV tile, K1, K2 and the shared V are copied to shared memory once (cp.async, double
// buffer) and read by both groups, so each map keeps its own online-softmax state (m, l, acc)
// in registers while V traffic is paid once. Shared tiles are unpadded and XOR-swizzled
// (ak::swizzle), so ldmatrix and cp.async rows hit distinct banks; the copies are unrolled
// (load_tile_async_swizzled). Key tiles are classified once per block: clean tiles (no row of
// the block needs a mask there) run first in a loop without mask code, then the masked ones
// (tile_step<MASK>). Scores become base-2 logits in place (scale, or softcap, then ALiBi: one
// uniform branch per feature and tile), rounded once before the row max, and p = exp2(x - m)
// with one ex2.approx.ftz per score (FlashAttention-2's single FFMA form keeps the rounding
// error of m * scale in the exponent, which overflows rows of huge logits). The epilogue hands
// lambda * O2 / l2 to the map-1 warps through shared memory; they form O1 / l1 - lambda * O2 / l2,
// apply the RMSNorm over the full Dv-wide row (the row sits in one quad of lanes: a two-step
// shuffle reduction) and store.
// Fused RoPE rotates Q1 and Q2 in shared memory once per block; K arrives rotated by the host's
// pre-pass (the attention family's rope_keys: O(Sk) work, not a rotation per block and tile).
// Causal grids run heavy first (the last query tiles, which see the most keys, start first).
// The running max may lag by up to RESCALE_SLACK, so O and l are rescaled only when a row
// outgrows it, not every tile.
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
#include <type_traits>

namespace ak::diff {

constexpr int THREADS = 256;  // 8 warps: two groups of four

// MT: 16-row m-tiles per warp, so BR = 64 MT query rows per block. Each K and V fragment a warp
// loads from shared memory feeds MT tensor-core ops: MT = 2 doubles the FLOPs per shared-memory
// byte and halves the per-tile overhead per FLOP. BC: keys per KV tile; 128 halves the per-tile
// overhead per FLOP at the cost of BC / 2 more score registers. The kernel list picks both per
// instance, as registers allow (benches/NOTES.md).
template <int D, int DV, bool SHARED_K, int MT, int BC> struct Layout {
    static constexpr int BR = 64 * MT;           // query rows per block
    static constexpr int NK = SHARED_K ? 1 : 2;  // K tiles per stage
    static constexpr int Q_TILE = BR * D;
    static constexpr int K_TILE = BC * D;
    static constexpr int V_TILE = BC * DV;
    static constexpr int STAGE = NK * K_TILE + V_TILE;
    // Dynamic shared memory, in elements of T: the Q1 and Q2 tiles, then two KV stages.
    static constexpr int SMEM_ELEMS = 2 * Q_TILE + 2 * STAGE;
    // Epilogue exchange buffer (f32, fragment order) reuses the KV stages.
    static_assert(4 * 32 * MT * (DV / 2) * 4 <= 2 * STAGE * 2, "exchange buffer must fit in the KV stages");
};

// Rotate `rows` rows of a swizzled [.. x COLS] tile (the Q tiles) in place; pos(r) gives row r's
// position.
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

// What a warp needs to score its 16 MT rows of one map against a key tile.
template <int MT>
struct RowInfo {
    int Prow[MT][2];  // P(i) of rows 16 mt + gi and 16 mt + gi + 8 of the warp (key coordinates)
    int tq;           // lane % 4: this lane's column pair in a fragment
};

// One key tile for one warp: S = Qm Km^T (16 MT rows x BC keys), scale / softcap / ALiBi, masks
// when MASK (the tile crosses Sk or a causal / window limit of some row of the block), online
// softmax update of (m_run, l_run, acc), acc += P V. Clean tiles run MASK = false: no mask code.
template <bool MASK, typename T, int D, int DV, int MT, int BC>
__device__ __forceinline__ void tile_step(const AkDiffAttnParams& p, const RowInfo<MT>& ri, int Sk, const T* sQm,
                                          const T* sKm, const T* sV, int n0, int wrow, int lane,
                                          float (&acc)[MT][DV / 8][4], float (&m_run)[MT][2], float (&l_run)[MT][2]) {
    // S = Qm Km^T for this warp's 16 MT rows x BC keys: each K fragment serves the MT m-tiles
    float s[MT][BC / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int n = 0; n < BC / 8; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
    const SwizzledLane<D> lq = swz_a<D>(lane), lk = swz_bt<D>(lane);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) ldmatrix_x4(a[mt], sQm + lq.at(wrow + 16 * mt, kk));
#pragma unroll
        for (int n2 = 0; n2 < BC / 16; ++n2) {
            uint32_t kf[4];
            ldmatrix_x4(kf, sKm + lk.at(n2 * 16, kk));
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                Mma<T>::run(s[mt][2 * n2], a[mt], kf[0], kf[1]);
                Mma<T>::run(s[mt][2 * n2 + 1], a[mt], kf[2], kf[3]);
            }
        }
    }

#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        // MASK: allowed keys of each row, [lo, hi] relative to this lane's first column n0 + 2 tq,
        // so each score needs two compares against compile-time offsets. With Sq + Sk < 2^30
        // (host-checked) and windows clamped to Sq + Sk, none of these ints overflows.
        int lo[2] = {0, 0}, hi[2] = {0, 0};
        if (MASK) {
#pragma unroll
            for (int rr = 0; rr < 2; ++rr) {
                const int Pi = ri.Prow[mt][rr];
                int l = 0, r = Sk - 1;
                if (p.causal) r = min(r, Pi);
                if (p.window_right >= 0) r = min(r, Pi + p.window_right);
                if (p.window_left >= 0) l = max(l, Pi - p.window_left);
                lo[rr] = l - (n0 + 2 * ri.tq);
                hi[rr] = r - (n0 + 2 * ri.tq);
            }
        }

        // Base-2 logits in place, rounded once before the max, so the max element's exponent is
        // exactly 0 (the FFMA form 2^(s c - m c) keeps the rounding error of m c, up to ulp(m) / 2,
        // which past 2^31 overflows or flushes a row: f16 inputs near 60000). Softcap, then ALiBi
        // with the distance P(i) - j formed in int and converted once (exact beyond 2^24); one
        // uniform branch per feature and tile, not per score. The constants come from the launch
        // parameters (constant bank) per tile rather than living in registers.
        if (p.softcap > 0.f) {
            const float c_in = p.scale / p.softcap, c_out = p.softcap * kLog2e;
#pragma unroll
            for (int n = 0; n < BC / 8; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[mt][n][e] = c_out * tanh_fast(s[mt][n][e] * c_in);
        } else {
#pragma unroll
            for (int n = 0; n < BC / 8; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[mt][n][e] *= p.scale * kLog2e;
        }
        if (p.alibi_slopes) {
            const float slope_log2 = p.alibi_slopes[blockIdx.y] * kLog2e;  // one slope per diff head
#pragma unroll
            for (int n = 0; n < BC / 8; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int dist = ri.Prow[mt][e >> 1] - (n0 + n * 8 + 2 * ri.tq + (e & 1));
                    s[mt][n][e] = fmaf(-slope_log2, (float)abs(dist), s[mt][n][e]);
                }
        }
        if (MASK) {
#pragma unroll
            for (int n = 0; n < BC / 8; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int c = n * 8 + (e & 1);
                    if (c < lo[e >> 1] || c > hi[e >> 1]) s[mt][n][e] = -INFINITY;
                }
        }
    }

    // Online softmax, one state per row, m_run in base-2 units. The running max may lag the
    // true one by up to RESCALE_SLACK (exponents up to 2^8): O and l are rescaled only when some
    // row of the warp outgrows that (always on its first tile, rarely after), not every tile.
    // Clean tiles give every row a finite score, and they run first, so m_run is finite there.
    float cand[MT][2];
    bool grow = false;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
            float mx = -INFINITY;
#pragma unroll
            for (int n = 0; n < BC / 8; ++n) mx = fmaxf(mx, fmaxf(s[mt][n][2 * rr], s[mt][n][2 * rr + 1]));
            cand[mt][rr] = quad_max(mx);
            grow |= cand[mt][rr] > m_run[mt][rr] + RESCALE_SLACK;  // also when m_run = -inf
        }
    if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int rr = 0; rr < 2; ++rr) {
                const float m_new = fmaxf(m_run[mt][rr], cand[mt][rr]);
                const float alpha = exp2_ftz(m_run[mt][rr] - safe_max(m_new));  // old max -inf: 0
                m_run[mt][rr] = m_new;
                l_run[mt][rr] *= alpha;
#pragma unroll
                for (int n = 0; n < DV / 8; ++n) {
                    acc[mt][n][2 * rr] *= alpha;
                    acc[mt][n][2 * rr + 1] *= alpha;
                }
            }
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
            const float m_use = MASK ? safe_max(m_run[mt][rr]) : m_run[mt][rr];  // all masked so far: p = 0
            float sum = 0.f;
#pragma unroll
            for (int n = 0; n < BC / 8; ++n) {
#pragma unroll
                for (int e = 2 * rr; e < 2 * rr + 2; ++e) {
                    const float pe = exp2_ftz(s[mt][n][e] - m_use);
                    s[mt][n][e] = pe;
                    sum += pe;
                }
            }
            l_run[mt][rr] += sum;
        }

    // acc += P V: each V fragment serves the MT m-tiles
    const SwizzledLane<DV> lv = swz_bk<DV>(lane);
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) pack_c_as_a<T>(a[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
        for (int n2 = 0; n2 < DV / 16; ++n2) {
            uint32_t vf[4];
            ldmatrix_x4_trans(vf, sV + lv.at(kk * 16, n2));
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                Mma<T>::run(acc[mt][2 * n2], a[mt], vf[0], vf[1]);
                Mma<T>::run(acc[mt][2 * n2 + 1], a[mt], vf[2], vf[3]);
            }
        }
    }
}

template <typename T, int D, int DV, bool SHARED_K, int MT, int BC>
__device__ __forceinline__ void diff_prefill(const AkDiffAttnParams& p) {
    using L = Layout<D, DV, SHARED_K, MT, BC>;
    constexpr int BR = L::BR;
    AK_DYNAMIC_SHARED(unsigned char, smem_raw);
    T* sQ = reinterpret_cast<T*>(smem_raw);  // [2][BR][D]
    T* sKV = sQ + 2 * L::Q_TILE;              // [2 stages][K1 (K2) V]

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int map = warp >> 2, wrow = (warp & 3) * 16 * MT;
    const int b = blockIdx.z, h = blockIdx.y;
    // Causal: the last query tiles see the most keys; schedule them first (heavy first).
    const int row0 = (p.causal ? (int)(gridDim.x - 1 - blockIdx.x) : (int)blockIdx.x) * BR;

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

    // ---- Q1, Q2 -> shared (rows past Sq zero-filled). Copies have compile-time trip counts:
    // each thread keeps one 16-byte column chunk and steps rows by a constant (tile.cuh).
    {
        const T* q1 = qb + (long long)row0 * p.q_row_stride + 2 * h * p.q_head_stride;
        load_tile_async_swizzled<BR, D, THREADS>(sQ, q1, p.q_row_stride, Sq - row0, tid);
        load_tile_async_swizzled<BR, D, THREADS>(sQ + L::Q_TILE, q1 + p.q_head_stride, p.q_row_stride, Sq - row0, tid);
        cp_async_commit();
    }

    // What the key-tile loop needs besides its accumulators lives in shared memory, written
    // once by thread 0: held in registers beside v1 d = 128's 128 accumulators it spills. K1's
    // and V's bases (K2 is one head stride on), and lim[]: Sk, the visiting order, and the
    // block's rows for the epilogue.
    AK_SHARED(const void*, kv_base, [2]);
    AK_SHARED(int, lim, [8]);
    // A whole tile (every tile but the one crossing Sk) is copied without row predicates.
    auto load_kv = [&](int n0, int stage) {
        T* sK = sKV + stage * L::STAGE;
        const int rows = lim[0] - n0;
        const T* k1s = static_cast<const T*>(kv_base[0]) + (long long)n0 * p.k_row_stride;
        const T* vs = static_cast<const T*>(kv_base[1]) + (long long)n0 * p.v_row_stride;
        auto copy = [&](auto whole) {
            constexpr bool W = decltype(whole)::value;
            load_tile_async_swizzled<BC, D, THREADS, W>(sK, k1s, p.k_row_stride, rows, tid);
            if (!SHARED_K)
                load_tile_async_swizzled<BC, D, THREADS, W>(sK + L::K_TILE, k1s + p.k_head_stride, p.k_row_stride, rows, tid);
            load_tile_async_swizzled<BC, DV, THREADS, W>(sK + L::NK * L::K_TILE, vs, p.v_row_stride, rows, tid);
        };
        if (rows >= BC)
            copy(std::true_type{});
        else
            copy(std::false_type{});
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

    // Clean tiles: no row of the block needs a mask in them (whole tile inside Sk, at or
    // below the causal / window_right limit of the block's first row, at or above the
    // window_left limit of its last row): tiles c_lo .. c_hi-1, a sub-range of nt_lo .. nt_hi-1.
    int right = Sk - 1, left = 0;  // keys every row of the block may see: [left, right]
    if (p.causal) right = min(right, P0);
    if (p.window_right >= 0) right = min(right, P0 + p.window_right);
    if (p.window_left >= 0) left = max(left, Plast - p.window_left);
    const int c_lo = min(nt_hi, max(nt_lo, (left + BC - 1) / BC));
    const int c_hi = max(c_lo, min(nt_hi, max(right + 1, 0) / BC));
    // Visiting order: c_lo .. nt_hi-1 (the clean tiles, then the masked ones above them), then
    // nt_lo .. c_lo-1 (masked ones below); the online softmax does not depend on the order.
    if (tid == 0) {
        kv_base[0] = k1;
        kv_base[1] = vb;
        lim[0] = Sk;
        lim[1] = c_lo;
        lim[2] = nt_hi;
        lim[3] = nt_hi - nt_lo;  // tiles to visit
        lim[4] = c_hi - c_lo;    // clean ones among them, visited first
        lim[5] = row0;
        lim[6] = Sq;
        lim[7] = q_start;
    }
    __syncthreads();
    const int n_tiles = lim[3];
    auto tile_at = [&](int i) {
        const int t = lim[1] + i;
        return t < lim[2] ? t : t - lim[3];
    };

    if (n_tiles > 0) {
        load_kv(tile_at(0) * BC, 0);
        cp_async_commit();
    }
    const bool rope = p.rope.lo != nullptr;
    if (rope) {
        cp_async_wait<1>();  // the Q group (a KV group may still be in flight; an empty wait is fine)
        if (n_tiles == 0) cp_async_wait<0>();
        __syncthreads();
        const int nrows = min(BR, Sq - row0);
        for (int m = 0; m < 2; ++m)
            rope_tile<T, D>(sQ + m * L::Q_TILE, nrows, p.rope, [&](int r) {
                const int i = row0 + r;
                return p.position_ids_q ? p.position_ids_q[b * p.pos_q_batch_stride + q_start + i] : i + shift;
            });
    }

    // ---- per-thread state: rows wrow + 16 mt + gi and wrow + 16 mt + gi + 8
    const int gi = lane >> 2, tq = lane & 3;
    float acc[MT][DV / 8][4];
    float m_run[MT][2], l_run[MT][2];
    RowInfo<MT> ri;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int n = 0; n < DV / 8; ++n) acc[mt][n][0] = acc[mt][n][1] = acc[mt][n][2] = acc[mt][n][3] = 0.f;
        m_run[mt][0] = m_run[mt][1] = -INFINITY;
        l_run[mt][0] = l_run[mt][1] = 0.f;
        ri.Prow[mt][0] = row0 + wrow + 16 * mt + gi + shift;
        ri.Prow[mt][1] = ri.Prow[mt][0] + 8;
    }
    ri.tq = tq;
    const T* sQm = sQ + map * L::Q_TILE;

    // Phase 0 runs the clean tiles, phase 1 the masked ones; the phase loop is unrolled, so each
    // phase has its own key-tile loop with the tile body specialised (tile_step<MASK>), and the
    // double-buffered prefetch runs on across the two (`it` counts tiles in visiting order).
    int it = 0;
#pragma unroll
    for (int phase = 0; phase < 2; ++phase) {
        const int i_end = lim[phase == 0 ? 4 : 3];
        for (; it < i_end; ++it) {
            const int stage = it & 1, n0 = tile_at(it) * BC;
            if (it + 1 < lim[3]) {
                load_kv(tile_at(it + 1) * BC, stage ^ 1);
                cp_async_commit();
                cp_async_wait<1>();
            } else {
                cp_async_wait<0>();
            }
            __syncthreads();
            T* sK1 = sKV + stage * L::STAGE;
            T* sK2 = SHARED_K ? sK1 : sK1 + L::K_TILE;
            const T* sV = sK1 + L::NK * L::K_TILE;
            const T* sKm = map ? sK2 : sK1;
            if (phase == 0)
                tile_step<false, T, D, DV, MT, BC>(p, ri, 0, sQm, sKm, sV, n0, wrow, lane, acc, m_run, l_run);
            else
                tile_step<true, T, D, DV, MT, BC>(p, ri, lim[0], sQm, sKm, sV, n0, wrow, lane, acc, m_run, l_run);
            __syncthreads();  // the stage is refilled two iterations on
        }
    }
    cp_async_wait<0>();
    __syncthreads();

    // ---- epilogue (the block's rows, from shared memory: not held through the loop)
    const int row0_e = lim[5], Sq_e = lim[6], q_start_e = lim[7];
    float inv[MT][2];
    int iloc[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
            iloc[mt][rr] = row0_e + wrow + 16 * mt + gi + 8 * rr;
            const float l = quad_sum(l_run[mt][rr]);
            inv[mt][rr] = l > 0.f ? 1.f / l : 0.f;
            if (tq == 0 && iloc[mt][rr] < Sq_e) {
                float* lse = map ? p.lse2 : p.lse1;
                lse[b * p.lse_batch_stride + h * p.lse_head_stride + q_start_e + iloc[mt][rr]] =
                    l > 0.f ? m_run[mt][rr] * kLn2 + logf(l) : -INFINITY;
            }
        }
    // Map 2's warps hand lambda O2 / l2 over in fragment order (the exchange buffer reuses the KV
    // stages): element (mt, n, e) of a lane at ((mt DV / 8 + n) 4 + e) 32 + lane of its warp's slot.
    float* sX = reinterpret_cast<float*>(sKV) + (warp & 3) * MT * (DV / 2) * 32;
    auto slot = [&](int mt, int n, int e) { return ((mt * (DV / 8) + n) * 4 + e) * 32 + lane; };
    if (map == 1) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            float lam[2];
#pragma unroll
            for (int rr = 0; rr < 2; ++rr) {
                const int i = min(iloc[mt][rr], Sq_e - 1);
                lam[rr] = p.lambda[b * p.lambda_batch_stride + (long long)(q_start_e + i) * p.lambda_row_stride + h];
            }
#pragma unroll
            for (int n = 0; n < DV / 8; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) sX[slot(mt, n, e)] = acc[mt][n][e] * inv[mt][e >> 1] * lam[e >> 1];
        }
    }
    __syncthreads();
    if (map == 1) return;

    T* ob = static_cast<T*>(p.o) + b * p.o_batch_stride + q_start_e * p.o_row_stride + h * p.o_head_stride;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        float ss[2] = {0.f, 0.f};
#pragma unroll
        for (int n = 0; n < DV / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float o = acc[mt][n][e] * inv[mt][e >> 1] - sX[slot(mt, n, e)];
                acc[mt][n][e] = o;
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
                    acc[mt][n][2 * rr] *= r * load_any(p.norm_weight, c, p.norm_weight_dtype);
                    acc[mt][n][2 * rr + 1] *= r * load_any(p.norm_weight, c + 1, p.norm_weight_dtype);
                }
            }
        }
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
            if (iloc[mt][rr] >= Sq_e) continue;
            T* orow = ob + (long long)iloc[mt][rr] * p.o_row_stride;
#pragma unroll
            for (int n = 0; n < DV / 8; ++n)
                *reinterpret_cast<uint32_t*>(orow + n * 8 + 2 * tq) =
                    Mma<T>::pack(acc[mt][n][2 * rr], acc[mt][n][2 * rr + 1]);
        }
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
