// The Hopper (sm_90a) instructions of a warp-specialised wgmma kernel, as wrappers like those of
// common/ptx.cuh: the device branch is the `asm` nvcc compiles, the AK_EMU branch calls the
// emulated device (kernels/emu/runtime.cpp, which models each instruction from NVIDIA's PTX ISA
// and checks its use). The device branch of a Hopper-only instruction exists in the sm_90a pass
// only (__CUDA_ARCH_FEAT_SM90_ALL); the sm_80 and compute_90 passes compile a trap, so a fatbin
// for every architecture still builds and only sm_90a machine code can execute them.
//
// PTX ISA sections (by title): "Parallel Synchronization and Communication Instructions: mbarrier"
// (init, arrive, expect_tx, complete_tx, test_wait / try_wait, "Phase Completion of the mbarrier
// object", "Contents of the mbarrier object"); "Asynchronous Warpgroup Level Matrix Multiply-
// Accumulate Instructions" (wgmma.fence, wgmma.mma_async, wgmma.commit_group, wgmma.wait_group,
// "Matrix Descriptor Format", "Shared Memory Matrix Layout", "Register Fragments"); "elect.sync";
// "membar / fence" (fence.proxy.async); "bar, barrier"; "setmaxnreg"; "stmatrix".
#pragma once
#include <stdint.h>
#include "common/ptx.cuh"
#ifndef AK_EMU
#include "common/hopper_wgmma.cuh"
#endif

#if defined(AK_EMU) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define AK_SM90_ASM 1
#else
#define AK_SM90_ASM 0
#endif

namespace ak::hopper {

// ------------------------------------------------------------------ mbarrier (sm_90 forms)

// mbarrier.init.shared::cta.b64 [addr], count: phase 0 expecting `count` arrivals, tx-count 0.
__device__ __forceinline__ void mbar_init(uint32_t addr, unsigned count) {
#ifdef AK_EMU
    ak_emu_mbar_init(addr, count);
#elif AK_SM90_ASM
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(addr), "r"(count) : "memory");
#else
    (void)addr, (void)count;
    __trap();
#endif
}

// mbarrier.arrive.shared::cta.b64 state, [addr], count: `count` arrivals; returns the state token.
__device__ __forceinline__ uint64_t mbar_arrive(uint32_t addr, unsigned count = 1) {
#ifdef AK_EMU
    return ak_emu_mbar_arrive(addr, count, 0);
#elif AK_SM90_ASM
    uint64_t state;
    asm volatile("mbarrier.arrive.shared::cta.b64 %0, [%1], %2;\n" : "=l"(state) : "r"(addr), "r"(count) : "memory");
    return state;
#else
    (void)addr, (void)count;
    __trap();
    return 0;
#endif
}

// mbarrier.arrive.expect_tx.shared::cta.b64 state, [addr], tx: expect-tx(tx), then one arrival.
__device__ __forceinline__ uint64_t mbar_arrive_expect_tx(uint32_t addr, unsigned tx) {
#ifdef AK_EMU
    return ak_emu_mbar_arrive(addr, 1, tx);
#elif AK_SM90_ASM
    uint64_t state;
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 %0, [%1], %2;\n" : "=l"(state) : "r"(addr), "r"(tx) : "memory");
    return state;
#else
    (void)addr, (void)tx;
    __trap();
    return 0;
#endif
}

// mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [addr], tx: raise the current phase's tx-count.
__device__ __forceinline__ void mbar_expect_tx(uint32_t addr, unsigned tx) {
#ifdef AK_EMU
    ak_emu_mbar_expect_tx(addr, tx);
#elif AK_SM90_ASM
    asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(addr), "r"(tx) : "memory");
#else
    (void)addr, (void)tx;
    __trap();
#endif
}

// mbarrier.complete_tx.relaxed.cta.shared::cta.b64 [addr], tx: what an asynchronous copy does as
// its bytes land (lowers the tx-count).
__device__ __forceinline__ void mbar_complete_tx(uint32_t addr, unsigned tx) {
#ifdef AK_EMU
    ak_emu_mbar_complete_tx(addr, tx);
#elif AK_SM90_ASM
    asm volatile("mbarrier.complete_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(addr), "r"(tx) : "memory");
#else
    (void)addr, (void)tx;
    __trap();
#endif
}

// mbarrier.test_wait.parity.shared::cta.b64 (non-blocking): 1 when the phase of parity `parity`
// has completed (the current phase has the other parity).
__device__ __forceinline__ int mbar_test_wait_parity(uint32_t addr, unsigned parity) {
#ifdef AK_EMU
    return ak_emu_mbar_wait(addr, parity, 1, 0);
#elif AK_SM90_ASM
    uint32_t r;
    asm volatile("{\n.reg .pred p;\nmbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(r) : "r"(addr), "r"(parity) : "memory");
    return (int)r;
#else
    (void)addr, (void)parity;
    __trap();
    return 0;
#endif
}

// mbarrier.try_wait.parity.shared::cta.b64 (potentially blocking, may time out with 0).
__device__ __forceinline__ int mbar_try_wait_parity(uint32_t addr, unsigned parity) {
#ifdef AK_EMU
    return ak_emu_mbar_wait(addr, parity, 1, 1);
#elif AK_SM90_ASM
    uint32_t r;
    asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(r) : "r"(addr), "r"(parity) : "memory");
    return (int)r;
#else
    (void)addr, (void)parity;
    __trap();
    return 0;
#endif
}

// Loop on try_wait.parity until the phase of `parity` has completed.
__device__ __forceinline__ void mbar_wait_parity(uint32_t addr, unsigned parity) {
    while (!mbar_try_wait_parity(addr, parity)) {
    }
}

// mbarrier.test_wait.shared::cta.b64 p, [addr], state: 1 when the phase `state` came from has
// completed.
__device__ __forceinline__ int mbar_test_wait(uint32_t addr, uint64_t state) {
#ifdef AK_EMU
    return ak_emu_mbar_wait(addr, state, 0, 0);
#elif AK_SM90_ASM
    uint32_t r;
    asm volatile("{\n.reg .pred p;\nmbarrier.test_wait.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(r) : "r"(addr), "l"(state) : "memory");
    return (int)r;
#else
    (void)addr, (void)state;
    __trap();
    return 0;
#endif
}

// ------------------------------------------------------------------ TMA (tensor copies)

// cp.async.bulk.tensor.{RANK}d.shared::cluster.global.tile.mbarrier::complete_tx::bytes: the box
// of the tensor map `tmap` (a CUtensorMap in global, constant or parameter memory, from
// cuTensorMapEncodeTiled) at element coordinates `c` (innermost first, may be negative or past
// the end: those elements are zero-filled) lands at shared address `dst` (128-byte aligned), in
// box order with the map's swizzle, then complete_tx of the box's bytes on the mbarrier `mbar`.
template <int RANK>
__device__ __forceinline__ void tma_load(uint32_t dst, const void* tmap, const int (&c)[RANK], uint32_t mbar) {
    static_assert(RANK >= 1 && RANK <= 5, "tensor copies have 1 to 5 dimensions");
#ifdef AK_EMU
    ak_emu_tma_load(RANK, dst, tmap, c, mbar);
#elif AK_SM90_ASM
    if constexpr (RANK == 1)
        asm volatile("cp.async.bulk.tensor.1d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2}], [%3];\n"
                     ::"r"(dst), "l"(tmap), "r"(c[0]), "r"(mbar) : "memory");
    else if constexpr (RANK == 2)
        asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
                     ::"r"(dst), "l"(tmap), "r"(c[0]), "r"(c[1]), "r"(mbar) : "memory");
    else if constexpr (RANK == 3)
        asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n"
                     ::"r"(dst), "l"(tmap), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(mbar) : "memory");
    else if constexpr (RANK == 4)
        asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];\n"
                     ::"r"(dst), "l"(tmap), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]), "r"(mbar) : "memory");
    else
        asm volatile("cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5, %6}], [%7];\n"
                     ::"r"(dst), "l"(tmap), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]), "r"(c[4]), "r"(mbar) : "memory");
#else
    (void)dst, (void)tmap, (void)c, (void)mbar;
    __trap();
#endif
}

// ------------------------------------------------------------------ wgmma

// Matrix descriptor ("Matrix Descriptor Format"): start address, leading and stride dimension
// byte offsets (all >> 4, 14 bits), base offset (3 bits at 49), swizzle mode (2 bits at 62:
// 0 none, 1 128B, 2 64B, 3 32B).
enum Swizzle : uint32_t { kSwizzleNone = 0, kSwizzle128B = 1, kSwizzle64B = 2, kSwizzle32B = 3 };
__device__ __forceinline__ uint64_t make_desc(uint32_t smem, uint32_t lbo, uint32_t sbo, Swizzle swizzle,
                                              uint32_t base_offset = 0) {
    return (uint64_t)((smem >> 4) & 0x3fff) | (uint64_t)((lbo >> 4) & 0x3fff) << 16 |
           (uint64_t)((sbo >> 4) & 0x3fff) << 32 | (uint64_t)(base_offset & 7) << 49 | (uint64_t)swizzle << 62;
}

// wgmma.fence.sync.aligned: orders this warpgroup's register accesses before the next mma_async.
__device__ __forceinline__ void wgmma_fence() {
#ifdef AK_EMU
    ak_emu_wgmma_fence();
#elif AK_SM90_ASM
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
    __trap();
#endif
}

// wgmma.commit_group.sync.aligned: close the current group of mma_async operations.
__device__ __forceinline__ void wgmma_commit() {
#ifdef AK_EMU
    ak_emu_wgmma_commit();
#elif AK_SM90_ASM
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#else
    __trap();
#endif
}

// wgmma.wait_group.sync.aligned N: at most N groups of this warpgroup still pending. Call
// fence_operands on the accumulators after it (the compiler must not move their accesses).
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#ifdef AK_EMU
    ak_emu_wgmma_wait(N);
#elif AK_SM90_ASM
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#else
    __trap();
#endif
}

// A compiler-level fence on accumulator registers (no instruction): keeps their reads and writes
// on their side of the wgmma instructions around.
template <int M>
__device__ __forceinline__ void fence_operands(float (&d)[M]) {
#ifndef AK_EMU
#pragma unroll
    for (int i = 0; i < M; ++i) asm volatile("" : "+f"(d[i])::"memory");
#else
    (void)d;
#endif
}

// wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}.{f16,bf16}, A and B from shared memory
// descriptors: d = A * B + (scale_d ? d : 0), d being this thread's N/2 floats of the 64xN
// accumulator. TRANS_A / TRANS_B (imm-trans-a / imm-trans-b) 0: the operand is K-major (A is
// M x K with K contiguous, B is N x K with K contiguous); 1: MN-major (M or N contiguous, e.g. a
// row-major V tile as the B of P V). The descriptor then describes the MN-major layout ("Shared
// Memory Matrix Layout"; make_desc's lbo / sbo play the roles given there).
template <int N, bool BF16, int TRANS_A = 0, int TRANS_B = 0>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int scale_d) {
    static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma m64nNk16: N is a multiple of 8 in [8, 256]");
    static_assert((TRANS_A | TRANS_B) >> 1 == 0, "transpose flags are 0 or 1");
#ifdef AK_EMU
    ak_emu_wgmma(N, BF16 ? AK_EMU_BF16 : AK_EMU_F16, d, nullptr, desc_a, desc_b, scale_d, TRANS_A, TRANS_B);
#else
    detail::wgmma_ss_asm<N, BF16, TRANS_A, TRANS_B>(d, desc_a, desc_b, scale_d);
#endif
}

// The same with A from registers (this thread's 4 registers of the 64x16 A fragment; a register
// A has no transpose form).
template <int N, bool BF16, int TRANS_B = 0>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
    static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma m64nNk16: N is a multiple of 8 in [8, 256]");
    static_assert(TRANS_B >> 1 == 0, "the transpose flag is 0 or 1");
#ifdef AK_EMU
    ak_emu_wgmma(N, BF16 ? AK_EMU_BF16 : AK_EMU_F16, d, a, 0, desc_b, scale_d, 0, TRANS_B);
#else
    detail::wgmma_rs_asm<N, BF16, TRANS_B>(d, a, desc_b, scale_d);
#endif
}

// ------------------------------------------------------------------ warp and block level

// elect.sync d|p, membermask: one leader lane of `mask`; returns whether this lane is it, and
// the leader's lane in *leader.
__device__ __forceinline__ int elect_sync(unsigned mask, unsigned* leader = nullptr) {
#ifdef AK_EMU
    int p = 0;
    const unsigned d = ak_emu_elect_sync(mask, &p);
    if (leader) *leader = d;
    return p;
#elif AK_SM90_ASM
    uint32_t d, p;
    asm volatile("{\n.reg .pred p;\nelect.sync %0|p, %2;\nselp.u32 %1, 1, 0, p;\n}\n" : "=r"(d), "=r"(p) : "r"(mask));
    if (leader) *leader = d;
    return (int)p;
#else
    (void)mask, (void)leader;
    __trap();
    return 0;
#endif
}

// fence.proxy.async.shared::cta: generic-proxy shared-memory writes become visible to the async
// proxy (wgmma operands, bulk copies) and the other way round.
__device__ __forceinline__ void fence_proxy_async() {
#ifdef AK_EMU
    ak_emu_fence_proxy_async();
#elif AK_SM90_ASM
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#else
    __trap();
#endif
}

// bar.sync id, count / bar.arrive id, count (count a multiple of 32; sm_70+, not Hopper-only).
__device__ __forceinline__ void named_bar_sync(int id, int count) {
#ifdef AK_EMU
    ak_emu_bar_named(id, count, 0);
#else
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
#endif
}
__device__ __forceinline__ void named_bar_arrive(int id, int count) {
#ifdef AK_EMU
    ak_emu_bar_named(id, count, 1);
#else
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
#endif
}

// setmaxnreg.{inc,dec}.sync.aligned.u32 N (warpgroup-wide; N a multiple of 8 in [24, 256]).
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
    static_assert(N % 8 == 0 && N >= 24 && N <= 256, "setmaxnreg: a multiple of 8 in [24, 256]");
#ifdef AK_EMU
    ak_emu_setmaxnreg(1, N);
#elif AK_SM90_ASM
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#else
    __trap();
#endif
}
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
    static_assert(N % 8 == 0 && N >= 24 && N <= 256, "setmaxnreg: a multiple of 8 in [24, 256]");
#ifdef AK_EMU
    ak_emu_setmaxnreg(0, N);
#elif AK_SM90_ASM
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#else
    __trap();
#endif
}

// stmatrix.sync.aligned.m8n8.x{1,2,4}{.trans}.shared.b16: the inverse of ldmatrix (lane l gives
// the address of row l % 8 of matrix l / 8; register i of every lane holds its slice of matrix i).
template <int NUM, bool TRANS>
__device__ __forceinline__ void stmatrix(uint32_t addr, const uint32_t (&r)[NUM]) {
    static_assert(NUM == 1 || NUM == 2 || NUM == 4, "stmatrix .x1, .x2 or .x4");
#ifdef AK_EMU
    ak_emu_stmatrix(NUM, TRANS, addr, r);
#elif AK_SM90_ASM
    if constexpr (NUM == 1 && !TRANS)
        asm volatile("stmatrix.sync.aligned.m8n8.x1.shared.b16 [%0], {%1};\n" ::"r"(addr), "r"(r[0]) : "memory");
    else if constexpr (NUM == 1)
        asm volatile("stmatrix.sync.aligned.m8n8.x1.trans.shared.b16 [%0], {%1};\n" ::"r"(addr), "r"(r[0]) : "memory");
    else if constexpr (NUM == 2 && !TRANS)
        asm volatile("stmatrix.sync.aligned.m8n8.x2.shared.b16 [%0], {%1, %2};\n" ::"r"(addr), "r"(r[0]), "r"(r[1]) : "memory");
    else if constexpr (NUM == 2)
        asm volatile("stmatrix.sync.aligned.m8n8.x2.trans.shared.b16 [%0], {%1, %2};\n" ::"r"(addr), "r"(r[0]), "r"(r[1])
                     : "memory");
    else if constexpr (!TRANS)
        asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(r[0]), "r"(r[1]),
                     "r"(r[2]), "r"(r[3])
                     : "memory");
    else
        asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(r[0]),
                     "r"(r[1]), "r"(r[2]), "r"(r[3])
                     : "memory");
#else
    (void)addr, (void)r;
    __trap();
#endif
}

}  // namespace ak::hopper
