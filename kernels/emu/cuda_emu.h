// The CUDA C++ surface the kernels use, for compiling the unchanged kernel sources as host C++
// on the emulated device. build.rs force-includes this header (g++ -include) with AK_EMU set.
// It maps keywords to nothing or to host attributes, built-in variables and intrinsics to the
// emulator (emu_api.h), and takes half / bfloat16 from CUDA's own headers, whose host paths
// round to nearest even like the hardware.
#pragma once
#ifndef AK_EMU
#error "cuda_emu.h is for the emulated-device build (AK_EMU)"
#endif

// A plain `__shared__` declaration inside a kernel would compile as a per-thread local here,
// silently. Kernels declare shared memory with AK_SHARED / AK_DYNAMIC_SHARED (common/ptx.cuh);
// any other use of the keyword fails to compile, naming the fix.
#define __shared__ AK_EMU_ERROR_raw___shared___is_per_thread_under_emulation_use_AK_SHARED
#define __constant__ AK_EMU_ERROR___constant___is_not_emulated
#define __global__ __attribute__((used))
#define __grid_constant__

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <vector_functions.h>
#include "emu/emu_api.h"

#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

// Built-in variables, per CUDA thread.
struct AkEmuDim3 {
    unsigned x, y, z;
    AkEmuDim3(ak_emu_dim3 d) : x(d.x), y(d.y), z(d.z) {}
};
#define threadIdx (AkEmuDim3(ak_emu_thread_idx()))
#define blockIdx (AkEmuDim3(ak_emu_block_idx()))
#define blockDim (AkEmuDim3(ak_emu_block_dim()))
#define gridDim (AkEmuDim3(ak_emu_grid_dim()))
#define warpSize 32

// Synchronisation.
static inline void __syncthreads() { ak_emu_syncthreads(); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) { ak_emu_syncwarp(mask); }
static inline unsigned __activemask() { return ak_emu_activemask(); }
static inline int __all_sync(unsigned mask, int p) { return (int)ak_emu_vote(AK_EMU_VOTE_ALL, mask, p); }
static inline int __any_sync(unsigned mask, int p) { return (int)ak_emu_vote(AK_EMU_VOTE_ANY, mask, p); }
static inline unsigned __ballot_sync(unsigned mask, int p) { return ak_emu_vote(AK_EMU_VOTE_BALLOT, mask, p); }

// Warp shuffles: the 32-bit shfl.sync with the `c` operand CUDA's headers build from `width`
// (clamp 0x1f and segment mask for up = 0 clamp); wider types move as 32-bit words.
template <typename T>
static inline T ak_emu_shfl_any(int mode, unsigned mask, T v, unsigned b, unsigned c) {
    static_assert(sizeof(T) % 4 == 0 || sizeof(T) < 4, "shuffle of an odd-sized type");
    T out;
    if (sizeof(T) < 4) {
        unsigned w = 0;
        memcpy(&w, &v, sizeof(T));
        w = ak_emu_shfl(mode, mask, w, b, c, nullptr);
        memcpy(&out, &w, sizeof(T));
    } else {
        unsigned w[sizeof(T) / 4 ? sizeof(T) / 4 : 1];
        memcpy(w, &v, sizeof(T));
        for (unsigned i = 0; i < sizeof(T) / 4; ++i) w[i] = ak_emu_shfl(mode, mask, w[i], b, c, nullptr);
        memcpy(&out, w, sizeof(T));
    }
    return out;
}
template <typename T>
static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    return ak_emu_shfl_any(AK_EMU_SHFL_IDX, mask, v, (unsigned)src, ((32u - width) << 8) | 0x1fu);
}
template <typename T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return ak_emu_shfl_any(AK_EMU_SHFL_BFLY, mask, v, (unsigned)lane_mask, ((32u - width) << 8) | 0x1fu);
}
template <typename T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return ak_emu_shfl_any(AK_EMU_SHFL_DOWN, mask, v, delta, ((32u - width) << 8) | 0x1fu);
}
template <typename T>
static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return ak_emu_shfl_any(AK_EMU_SHFL_UP, mask, v, delta, (32u - width) << 8);
}

// Address spaces.
static inline size_t __cvta_generic_to_shared(const void* p) { return ak_emu_cvta_to_shared(p); }

// Integer and float intrinsics (device semantics; IEEE round-to-nearest on the host).
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
static inline int __float_as_int(float f) { int u; memcpy(&u, &f, 4); return u; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fdividef(float a, float b) { return a / b; }
// __expf is ex2.approx of x * log2(e) on the device; keep its form. (A macro: glibc declares an
// internal __expf of its own.)
static inline float ak_emu_expf(float x) { return ak_emu_ex2_approx(x * 1.4426950408889634f, 0); }
#define __expf(x) ak_emu_expf(x)
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }

// CUDA's integer and float min / max overloads.
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
