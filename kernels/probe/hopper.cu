// Conformance probes of the Hopper (sm_90a) instructions of common/hopper.cuh: mbarrier,
// wgmma, elect.sync, named barriers, setmaxnreg, stmatrix. As in collectives.cu, each kernel
// reads operands from `in`, runs the instructions and writes what it observed to `out`; the
// tests (tests/emu_hopper.rs) compare with models written from the PTX ISA. Layouts of `in` and
// `out` are documented per kernel and mirrored by src/runtime/probe.rs.
#include <stdint.h>
#include "params.h"
#include "common/ptx.cuh"
#include "common/hopper.cuh"

namespace ak::probe {

// mbarrier, scripted. in: [steps, then 4 words per step {thread, op, arg, slot}]; one block of
// 64 threads executes the steps in order, one thread each, with __syncthreads between steps.
// ops: 0 init(arg) | 1 arrive(count arg), token to slot | 2 arrive.expect_tx(arg), token to slot |
// 3 expect_tx(arg) | 4 complete_tx(arg) | 5 test_wait.parity(arg) | 6 test_wait(token of slot) |
// 7 try_wait.parity(arg) until it succeeds. out[step]: the test results (5, 6: 0 or 1; 7: 1),
// 0 for the other ops.
// mode 1 (producer / consumer through one shared slot, ordered only by two mbarriers): thread 32
// writes round r's 32 words then arrives on `full` (count 1); warp 0 waits on `full` (parity
// r & 1), reads them, arrives on `empty` (count 32), which thread 32 waits for before the next
// round. in[i] for round r, lane l: in[32 r + l]; out[32 r + l] what lane l read; p.n rounds.
__device__ __forceinline__ void mbarrier(const AkProbeParams& p) {
    AK_SHARED(uint64_t, bars, [2]);
    AK_SHARED(uint32_t, slot, [32]);
    const uint32_t* in = static_cast<const uint32_t*>(p.in);
    uint32_t* out = static_cast<uint32_t*>(p.out);
    const unsigned tid = threadIdx.x;
    const uint32_t full = ak::ptx::smem_addr(&bars[0]), empty = ak::ptx::smem_addr(&bars[1]);
    if (p.mode == 1) {
        if (tid == 0) {
            ak::hopper::mbar_init(full, 1);
            ak::hopper::mbar_init(empty, 32);
        }
        __syncthreads();
        for (int r = 0; r < p.n; ++r) {
            if (tid == 32) {
                ak::hopper::mbar_wait_parity(empty, (r & 1) ^ 1);  // the slot is free
                for (int i = 0; i < 32; ++i) slot[i] = in[32 * r + i];
                ak::hopper::mbar_arrive(full);
            } else if (tid < 32) {
                ak::hopper::mbar_wait_parity(full, r & 1);
                out[32 * r + tid] = slot[tid];
                ak::hopper::mbar_arrive(empty);
            }
        }
        return;
    }
    uint64_t tok[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int steps = (int)in[0];
    for (int s = 0; s < steps; ++s) {
        const uint32_t* st = in + 1 + 4 * s;
        if (st[0] == tid) {
            const uint32_t arg = st[2], k = st[3] & 7;
            uint32_t r = 0;
            switch (st[1]) {
                case 0: ak::hopper::mbar_init(full, arg); break;
                case 1: tok[k] = ak::hopper::mbar_arrive(full, arg); break;
                case 2: tok[k] = ak::hopper::mbar_arrive_expect_tx(full, arg); break;
                case 3: ak::hopper::mbar_expect_tx(full, arg); break;
                case 4: ak::hopper::mbar_complete_tx(full, arg); break;
                case 5: r = (uint32_t)ak::hopper::mbar_test_wait_parity(full, arg); break;
                case 6: r = (uint32_t)ak::hopper::mbar_test_wait(full, tok[k]); break;
                case 7: ak::hopper::mbar_wait_parity(full, arg); r = 1; break;
                default: break;
            }
            out[s] = r;
        }
        __syncthreads();
    }
}

// wgmma m64nNk16, one warpgroup (128 threads), dynamic shared memory of image bytes + 1024.
// in: header {N, bf16, a_from_desc, scale_d, ksteps (1..4), peek, image_bytes, trans} (trans: bit 0
// imm-trans-a, bit 1 imm-trans-b: MN-major operands); per k-step
// {desc_a lo, hi, desc_b lo, hi} (start addresses relative to the image, which the kernel places
// at a 1024-byte aligned shared address); per k-step 128 x 4 A registers; 128 x N/2 C floats;
// the image. The k-steps accumulate into one accumulator in one commit group (the first with
// scale_d from the header, the others with 1), then wait_group 0.
// out: 128 x N/2 D floats; with peek, then 128 words: each thread's d[0] between the commit and
// the wait (undefined on a GPU; the emulated device's poison).
template <int N, bool BF16>
__device__ void wgmma_run(const AkProbeParams& p, uint8_t* image) {
    const uint32_t* in = static_cast<const uint32_t*>(p.in);
    const unsigned t = threadIdx.x;
    const int a_desc = (int)in[2], scale_d = (int)in[3], ks = (int)in[4], peek = (int)in[5], trans = (int)in[7];
    const uint32_t* descs = in + 8;
    const uint32_t* aregs = descs + 4 * ks;
    const uint32_t* cin = aregs + ks * 128 * 4;
    const uint32_t base = ak::ptx::smem_addr(image) >> 4;
    float d[N / 2];
    for (int i = 0; i < N / 2; ++i) d[i] = __uint_as_float(cin[t * (N / 2) + i]);
    // One A fragment per k-step, all live until the wait: A registers stay as issued until the
    // wgmma.wait_group (the tests use at most 4 k-steps).
    constexpr int MAX_KS = 4;
    uint32_t a[MAX_KS][4];
    for (int k = 0; k < ks && k < MAX_KS; ++k)
        for (int j = 0; j < 4; ++j) a[k][j] = aregs[(k * 128 + t) * 4 + j];
    ak::hopper::wgmma_fence();
    for (int k = 0; k < ks && k < MAX_KS; ++k) {
        const uint64_t da = ((uint64_t)descs[4 * k + 1] << 32 | descs[4 * k]) + base;
        const uint64_t db = ((uint64_t)descs[4 * k + 3] << 32 | descs[4 * k + 2]) + base;
        const int sd = k == 0 ? scale_d : 1;
        if (a_desc) {
            if (trans == 0) ak::hopper::wgmma_ss<N, BF16, 0, 0>(d, da, db, sd);
            else if (trans == 1) ak::hopper::wgmma_ss<N, BF16, 1, 0>(d, da, db, sd);
            else if (trans == 2) ak::hopper::wgmma_ss<N, BF16, 0, 1>(d, da, db, sd);
            else ak::hopper::wgmma_ss<N, BF16, 1, 1>(d, da, db, sd);
        } else {
            if (trans & 2) ak::hopper::wgmma_rs<N, BF16, 1>(d, a[k], db, sd);
            else ak::hopper::wgmma_rs<N, BF16, 0>(d, a[k], db, sd);
        }
    }
    ak::hopper::wgmma_commit();
    uint32_t* out = static_cast<uint32_t*>(p.out);
    if (peek) out[128 * (N / 2) + t] = __float_as_uint(d[0]);
    ak::hopper::wgmma_wait<0>();
    ak::hopper::fence_operands(d);
    for (int i = 0; i < N / 2; ++i) out[t * (N / 2) + i] = __float_as_uint(d[i]);
}

__device__ __forceinline__ void wgmma(const AkProbeParams& p) {
    AK_DYNAMIC_SHARED(uint8_t, smem);
    const uint32_t* in = static_cast<const uint32_t*>(p.in);
    const int n = (int)in[0], bf16 = (int)in[1], ks = (int)in[4];
    const uint32_t bytes = in[6];
    uint8_t* image = smem + ((1024 - (ak::ptx::smem_addr(smem) & 1023)) & 1023);
    const uint32_t* src = in + 8 + 4 * ks + ks * 128 * 4 + 128 * (n / 2);
    for (uint32_t i = threadIdx.x; i < bytes / 4; i += blockDim.x) reinterpret_cast<uint32_t*>(image)[i] = src[i];
    ak::hopper::fence_proxy_async();  // generic-proxy writes, read by wgmma (async proxy)
    __syncthreads();
#define AK_WGMMA_CASE(NN)                                   \
    case NN:                                                \
        if (bf16) wgmma_run<NN, true>(p, image);            \
        else wgmma_run<NN, false>(p, image);                \
        break;
    switch (n) {
        AK_WGMMA_CASE(8)
        AK_WGMMA_CASE(16)
        AK_WGMMA_CASE(32)
        AK_WGMMA_CASE(64)
        AK_WGMMA_CASE(96)
        AK_WGMMA_CASE(128)
        AK_WGMMA_CASE(192)
        AK_WGMMA_CASE(256)
        default: break;
    }
#undef AK_WGMMA_CASE
}

// The other Hopper instructions.
// mode 0, elect.sync (one warp): lanes in p.mask elect; out[l] = leader | is_elected << 8, and
//   0xffffffff for lanes outside the mask.
// mode 1, stmatrix (one warp): in = 256 words of shared image (64 rows of 16 bytes), 32 row
//   indices, 32 x 4 registers; .x{p.n}, .trans when p.width is 1; out = the image afterwards.
// mode 2, named barriers and setmaxnreg (256 threads, two warpgroups): warpgroup 0 writes
//   in[t] to a shared slot, bar.arrive 1, 256; warpgroup 1 bar.sync 1, 256, reads the slot of
//   thread t - 128 into out[t]; then the other way round through barrier 2 (out[t - 128] for
//   warpgroup 0 gets what thread t wrote). setmaxnreg.dec 40 in warpgroup 0, .inc 232 in 1.
__device__ __forceinline__ void hopper_misc(const AkProbeParams& p) {
    AK_SHARED(uint32_t, buf, [256]);
    const uint32_t* in = static_cast<const uint32_t*>(p.in);
    uint32_t* out = static_cast<uint32_t*>(p.out);
    const unsigned t = threadIdx.x, l = t & 31u;
    if (p.mode == 0) {
        uint32_t r = 0xffffffffu;
        if ((p.mask >> l) & 1u) {
            unsigned leader = 0;
            const int me = ak::hopper::elect_sync(p.mask, &leader);
            r = leader | (uint32_t)me << 8;
        }
        out[l] = r;
    } else if (p.mode == 1) {
        for (int i = l; i < 256; i += 32) buf[i] = in[i];
        __syncwarp();
        const uint32_t addr = ak::ptx::smem_addr(&buf[in[256 + l] * 4]);
        const uint32_t* rg = in + 288 + 4 * l;
        if (p.n == 1) {
            const uint32_t r[1] = {rg[0]};
            if (p.width) ak::hopper::stmatrix<1, true>(addr, r);
            else ak::hopper::stmatrix<1, false>(addr, r);
        } else if (p.n == 2) {
            const uint32_t r[2] = {rg[0], rg[1]};
            if (p.width) ak::hopper::stmatrix<2, true>(addr, r);
            else ak::hopper::stmatrix<2, false>(addr, r);
        } else {
            const uint32_t r[4] = {rg[0], rg[1], rg[2], rg[3]};
            if (p.width) ak::hopper::stmatrix<4, true>(addr, r);
            else ak::hopper::stmatrix<4, false>(addr, r);
        }
        __syncwarp();
        for (int i = l; i < 256; i += 32) out[i] = buf[i];
    } else {
        if (t < 128) ak::hopper::setmaxnreg_dec<40>();
        else ak::hopper::setmaxnreg_inc<232>();
        if (t < 128) {
            buf[t] = in[t];
            ak::hopper::named_bar_arrive(1, 256);
            ak::hopper::named_bar_sync(2, 256);
            out[t] = buf[128 + t];
        } else {
            ak::hopper::named_bar_sync(1, 256);
            out[t] = buf[t - 128];
            buf[t] = in[t];
            ak::hopper::named_bar_arrive(2, 256);
        }
    }
}

// cp.async.bulk.tensor (TMA) through a tensor map, one block of 128 threads. in: the 128-byte
// CUtensorMap, then at word 32 {rank, c0..c4, box bytes}; dynamic shared memory box bytes + 1024
// (the box lands at a 1024-byte aligned address). Thread 0 initialises an mbarrier, arrives with
// expect_tx(box bytes) and issues the copy; every thread waits for phase 0 and copies the box
// bytes to out. mode 1 (misuse, for racecheck): thread 0 issues the copy without arriving (the
// phase never completes), then after a __syncthreads every thread reads the box without waiting.
// Modes 2 and 3: as mode 0, but the threads first write the box's bytes through the generic proxy
// and the copy overwrites them after a __syncthreads: mode 3 with a fence.proxy.async between
// (correct), mode 2 without (misuse).
__device__ __forceinline__ void tma(const AkProbeParams& p) {
    AK_SHARED(uint64_t, bar, [1]);
    AK_DYNAMIC_SHARED(uint8_t, smem);
    uint8_t* box = smem + ((1024 - (ak::ptx::smem_addr(smem) & 1023)) & 1023);
    const uint32_t* in = static_cast<const uint32_t*>(p.in);
    const uint32_t* hdr = in + 32;
    const int rank = (int)hdr[0];
    const uint32_t bytes = hdr[6];
    const uint32_t mbar = ak::ptx::smem_addr(&bar[0]), dst = ak::ptx::smem_addr(box);
    if (threadIdx.x == 0) ak::hopper::mbar_init(mbar, 1);
    if (p.mode >= 2) {
        for (uint32_t i = threadIdx.x; i < bytes; i += blockDim.x) box[i] = 0xa5;
        if (p.mode == 3) ak::hopper::fence_proxy_async();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        if (p.mode != 1) ak::hopper::mbar_arrive_expect_tx(mbar, bytes);
        else ak::hopper::mbar_expect_tx(mbar, bytes);
        const int c[5] = {(int)hdr[1], (int)hdr[2], (int)hdr[3], (int)hdr[4], (int)hdr[5]};
        switch (rank) {
            case 1: { const int k[1] = {c[0]}; ak::hopper::tma_load<1>(dst, in, k, mbar); } break;
            case 2: { const int k[2] = {c[0], c[1]}; ak::hopper::tma_load<2>(dst, in, k, mbar); } break;
            case 3: { const int k[3] = {c[0], c[1], c[2]}; ak::hopper::tma_load<3>(dst, in, k, mbar); } break;
            case 4: { const int k[4] = {c[0], c[1], c[2], c[3]}; ak::hopper::tma_load<4>(dst, in, k, mbar); } break;
            default: ak::hopper::tma_load<5>(dst, in, c, mbar); break;
        }
    }
    if (p.mode != 1) ak::hopper::mbar_wait_parity(mbar, 0);
    else __syncthreads();
    uint32_t* out = static_cast<uint32_t*>(p.out);
    for (uint32_t i = threadIdx.x; i < bytes / 4; i += blockDim.x) out[i] = reinterpret_cast<const uint32_t*>(box)[i];
}

// Kernels that misuse the Hopper instructions on purpose, for the emulated device's checkers.
// in: 2048 bytes of zeros (an operand image); out: 128 words. 128 threads unless noted.
// 0: try_wait on an mbarrier no thread initialised; 1: an mbarrier phase that can never
// complete (count 2, one arrival, a wait: deadlock); 2: complete_tx beyond the tx range
// (underflow); 3: an accumulator register written between wgmma issue and wait; 4: a wgmma
// group never waited for; 5: shared memory a pending wgmma reads written before the wait;
// 6: wgmma without wgmma.fence; 7: setmaxnreg counts differing within the warpgroup;
// 8: the correct wgmma sequence (runs clean). 256 threads: 9: warpgroup 1 overwrites an operand
// of warpgroup 0's wgmma ordered only after its issue (an mbarrier warpgroup 0 arrives on before
// its wait_group); 10: the same with the arrival after the wait_group (runs clean). 128 threads:
// 11: an A-operand register written between wgmma issue and wait. 256 threads: 12: every thread
// of warpgroup 0 reads a shared word, then arrives on an mbarrier; a thread of warpgroup 1 waits
// for the phase and overwrites the word (runs clean: each read is ordered before the write);
// 13: the same with the arrivals before the reads (the write races with them). 128 threads:
// 14: mode 8 without the fence.proxy.async between the operand's generic writes and the wgmma.
// 256 threads, 8 KB of operand image: 15: readers forgotten at each ordered write (above).
__device__ __forceinline__ void hopper_misbehave(const AkProbeParams& p) {
    AK_SHARED(uint64_t, bar, [3]);
    AK_DYNAMIC_SHARED(uint8_t, smem);
    uint8_t* image = smem + ((1024 - (ak::ptx::smem_addr(smem) & 1023)) & 1023);
    const unsigned t = threadIdx.x;
    uint32_t* out = static_cast<uint32_t*>(p.out);
    const uint32_t b0 = ak::ptx::smem_addr(&bar[0]);
    if (p.mode <= 2) {
        if (p.mode == 0) {
            if (t == 0) out[0] = (uint32_t)ak::hopper::mbar_try_wait_parity(b0, 0);
        } else if (p.mode == 1) {
            if (t == 0) ak::hopper::mbar_init(b0, 2);
            __syncthreads();
            if (t == 0) {
                ak::hopper::mbar_arrive(b0);
                ak::hopper::mbar_wait_parity(b0, 0);
            }
        } else if (t == 0) {
            ak::hopper::mbar_init(b0, 1);
            ak::hopper::mbar_expect_tx(b0, 64);
            ak::hopper::mbar_complete_tx(b0, 64);
            ak::hopper::mbar_complete_tx(b0, (1u << 20) + 8);
        }
        out[t] = 0;
        return;
    }
    if (p.mode == 15) {
        // 8 KB read by warpgroup 1 twice, each word by a different thread each time, thread 0
        // rewriting it after each round (ordered by mbarriers both ways), all in one barrier
        // epoch: clean, and only if the emulator forgets a byte's readers at an ordered write
        // (two readers per byte would otherwise need more per-reader lists than it keeps).
        uint32_t* words = reinterpret_cast<uint32_t*>(image);
        const uint32_t b1 = ak::ptx::smem_addr(&bar[1]), b2 = ak::ptx::smem_addr(&bar[2]);
        if (t == 0) {
            ak::hopper::mbar_init(b0, 128);  // round 1 read
            ak::hopper::mbar_init(b1, 1);    // rewritten after round 1
            ak::hopper::mbar_init(b2, 128);  // round 2 read
            for (int i = 0; i < 2048; ++i) words[i] = (uint32_t)i;
        }
        __syncthreads();
        if (t == 0) {
            for (int r = 0; r < 2; ++r) {
                ak::hopper::mbar_wait_parity(r ? b2 : b0, 0);
                for (int i = 0; i < 2048; ++i) words[i] = (uint32_t)(i + 1 + r);
                if (r == 0) ak::hopper::mbar_arrive(b1);
            }
        } else if (t >= 128) {
            uint32_t sum = 0;
            for (int r = 0; r < 2; ++r) {
                if (r) ak::hopper::mbar_wait_parity(b1, 0);
                for (int i = (int)((t + r) & 127); i < 2048; i += 128) sum += words[i];
                ak::hopper::mbar_arrive(r ? b2 : b0);
            }
            out[t - 128] = sum;
        }
        return;
    }
    if (p.mode == 12 || p.mode == 13) {
        uint32_t* word = reinterpret_cast<uint32_t*>(image);
        if (t == 0) {
            *word = 5u;
            ak::hopper::mbar_init(b0, 128);
        }
        __syncthreads();
        if (t < 128) {
            if (p.mode == 13) ak::hopper::mbar_arrive(b0);
            out[t] = *word;
            if (p.mode == 12) ak::hopper::mbar_arrive(b0);
        } else {
            ak::hopper::mbar_wait_parity(b0, 0);
            if (t == 128) *word = 6u;
        }
        return;
    }
    if (p.mode == 7) {
        if (t < 32) ak::hopper::setmaxnreg_dec<40>();
        else ak::hopper::setmaxnreg_dec<48>();
        out[t] = 0;
        return;
    }
    const uint32_t* zeros = static_cast<const uint32_t*>(p.in);
    if (t < 128)
        for (int i = t; i < 512; i += 128) reinterpret_cast<uint32_t*>(image)[i] = zeros[i];
    if (p.mode != 14) ak::hopper::fence_proxy_async();
    if ((p.mode == 9 || p.mode == 10) && t == 0) ak::hopper::mbar_init(b0, 128);
    __syncthreads();
    if ((p.mode == 9 || p.mode == 10) && t >= 128) {  // warpgroup 1: overwrite an operand byte once the mbarrier says so
        ak::hopper::mbar_wait_parity(b0, 0);
        if (t == 128) image[16] = 1;
        out[t - 128] = 0;
        return;
    }
    // B: 8 x 16 K-major, no swizzle: two core matrices 128 bytes apart (LBO), SBO unused.
    const uint64_t db = ak::hopper::make_desc(ak::ptx::smem_addr(image), 128, 256, ak::hopper::kSwizzleNone);
    uint32_t a[4] = {0x3c003c00u, 0x3c003c00u, 0x3c003c00u, 0x3c003c00u};
    float d[4] = {1.f, 2.f, 3.f, 4.f};
    if (p.mode != 6) ak::hopper::wgmma_fence();
    ak::hopper::wgmma_rs<8, false>(d, a, db, 1);
    ak::hopper::wgmma_commit();
    if (p.mode == 4) {
        out[t] = 0;
        return;
    }
    if (p.mode == 3 && t == 5) d[1] = 7.f;
    if (p.mode == 11 && t == 5) a[1] = 0u;
    if (p.mode == 5 && t == 0) image[16] = 1;
    if (p.mode == 9) ak::hopper::mbar_arrive(b0);
    ak::hopper::wgmma_wait<0>();
    ak::hopper::fence_operands(d);
    if (p.mode == 10) ak::hopper::mbar_arrive(b0);
    if (p.mode < 9 || p.mode == 11 || p.mode == 14) out[t] = __float_as_uint(d[0] + d[1] + d[2] + d[3]);
}

}  // namespace ak::probe

// Entry points (generated from src/runtime/kernel_list.rs, `ProbeKernel`).
#include "generated/probe_hopper_entries.cuh"
