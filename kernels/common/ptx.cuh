// Every inline PTX instruction the kernels use, and nothing else. Each wrapper has two branches:
// the device branch is the `asm` nvcc compiles; the AK_EMU branch calls the emulated device
// (kernels/emu/), which computes the instruction for the whole warp as the PTX ISA defines it.
// Kernels never write `asm` themselves, so both compilations run the same kernel code.
//
// Shared-memory operands are 32-bit shared-window addresses (`smem_addr`), as in PTX.
#pragma once
#include <stdint.h>
#ifdef AK_EMU
#include "emu/emu_api.h"
#endif

// Block-level shared arrays. Declared through these macros so that under emulation they are one
// array per block (a raw `__shared__` there would be a per-thread local; cuda_emu.h makes it a
// compile error). AK_SHARED(float, red, [8]) declares `float red[8]`; AK_DYNAMIC_SHARED(T, p)
// names the launch's dynamic shared memory as `T* p` (an array on the device).
#ifdef AK_EMU
#define AK_SHARED(T, name, dims)                                                             \
    static const char ak_shared_site_##name = 0;                                             \
    T(&name) dims = *reinterpret_cast<T(*) dims>(ak_emu_static_shared(&ak_shared_site_##name, \
                                                                      sizeof(T dims), 16))
#define AK_DYNAMIC_SHARED(T, name) T* const name = static_cast<T*>(ak_emu_dynamic_shared())
#else
#define AK_SHARED(T, name, dims) __shared__ __align__(16) T name dims
#define AK_DYNAMIC_SHARED(T, name) extern __shared__ __align__(128) T name[]
#endif

namespace ak::ptx {

// Generic pointer to shared memory -> shared-window address (cvta.to.shared).
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ------------------------------------------------------------------ cp.async (sm_80)

// cp.async.cg.shared.global: copy `src_bytes` (0..16) bytes global -> shared and zero-fill the
// rest of the 16-byte destination. With src_bytes == 0 the source is not read.
__device__ __forceinline__ void cp_async_cg_16(uint32_t dst, const void* src, int src_bytes) {
#ifdef AK_EMU
    ak_emu_cp_async(dst, src, 16, src_bytes);
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
#endif
}

// cp.async.commit_group: close this thread's current group of copies.
__device__ __forceinline__ void cp_async_commit() {
#ifdef AK_EMU
    ak_emu_cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// cp.async.wait_group N: wait until at most N of this thread's committed groups are pending.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef AK_EMU
    ak_emu_cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// ------------------------------------------------------------------ ldmatrix (sm_75)

// ldmatrix.sync.aligned.m8n8.x{1,2,4}{.trans}.shared.b16: lane l gives the address of row l % 8
// of matrix l / 8; register i of every lane receives a slice of matrix i.
__device__ __forceinline__ void ldmatrix_x1(uint32_t& r0, uint32_t addr) {
#ifdef AK_EMU
    uint32_t r[4];
    ak_emu_ldmatrix(1, 0, addr, r);
    r0 = r[0];
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r0) : "r"(addr));
#endif
}

__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], uint32_t addr) {
#ifdef AK_EMU
    uint32_t t[4];
    ak_emu_ldmatrix(2, 0, addr, t);
    r[0] = t[0];
    r[1] = t[1];
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
#endif
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
#ifdef AK_EMU
    ak_emu_ldmatrix(4, 0, addr, r);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#endif
}

__device__ __forceinline__ void ldmatrix_x1_trans(uint32_t& r0, uint32_t addr) {
#ifdef AK_EMU
    uint32_t r[4];
    ak_emu_ldmatrix(1, 1, addr, r);
    r0 = r[0];
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r0) : "r"(addr));
#endif
}

__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], uint32_t addr) {
#ifdef AK_EMU
    uint32_t t[4];
    ak_emu_ldmatrix(2, 1, addr, t);
    r[0] = t[0];
    r[1] = t[1];
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(addr));
#endif
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
#ifdef AK_EMU
    ak_emu_ldmatrix(4, 1, addr, r);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#endif
}

// ------------------------------------------------------------------ mma.sync (sm_80)

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32: d = a * b + c with a 16x16
// (4 registers of 2 elements), b 16x8 (2 registers), c and d 16x8 f32 (4 floats per lane).
__device__ __forceinline__ void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifdef AK_EMU
    const uint32_t b[2] = {b0, b1};
    ak_emu_mma_m16n8k16(AK_EMU_F16, d, a, b, d);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifdef AK_EMU
    const uint32_t b[2] = {b0, b1};
    ak_emu_mma_m16n8k16(AK_EMU_BF16, d, a, b, d);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// ------------------------------------------------------------------ misc

// prefetch.global.L2: a hint, no architectural effect (the emulated device checks the address).
__device__ __forceinline__ void prefetch_l2(const void* p) {
#ifdef AK_EMU
    ak_emu_prefetch_l2(p);
#else
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p));
#endif
}

// mov.u32 %laneid: this thread's lane. Volatile, so the compiler reads it where it is written
// and does not hoist it, or what is computed from it, out of a loop (see tile.cuh, fresh_zero).
__device__ __forceinline__ unsigned laneid() {
#ifdef AK_EMU
    return (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31u;
#else
    unsigned r;
    asm volatile("mov.u32 %0, %%laneid;\n" : "=r"(r));
    return r;
#endif
}

// ex2.approx.ftz.f32: 2^x, subnormal inputs and results flushed to (signed) zero.
__device__ __forceinline__ float ex2_approx_ftz(float x) {
#ifdef AK_EMU
    return ak_emu_ex2_approx(x, 1);
#else
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
#endif
}

}  // namespace ak::ptx
