// The emulated device's interface to kernel code compiled as host C++ (see cuda_emu.h): what
// the CUDA built-ins and the PTX wrappers of common/ptx.cuh call. Implemented in runtime.cpp.
// Every function acts for the calling CUDA thread (the current fiber); warp-wide ones block
// until the whole group has arrived, then return this lane's part of the result.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { AK_EMU_F16 = 0, AK_EMU_BF16 = 1 };
enum { AK_EMU_SHFL_UP = 0, AK_EMU_SHFL_DOWN = 1, AK_EMU_SHFL_BFLY = 2, AK_EMU_SHFL_IDX = 3 };
enum { AK_EMU_VOTE_ALL = 0, AK_EMU_VOTE_ANY = 1, AK_EMU_VOTE_UNI = 2, AK_EMU_VOTE_BALLOT = 3 };

typedef struct { unsigned x, y, z; } ak_emu_dim3;

// Built-in variables of the calling thread. Constant for the life of a CUDA thread (fiber), so
// `const` is true per fiber and lets the compiler keep them in registers.
ak_emu_dim3 ak_emu_thread_idx(void) __attribute__((const));
ak_emu_dim3 ak_emu_block_idx(void) __attribute__((const));
ak_emu_dim3 ak_emu_block_dim(void) __attribute__((const));
ak_emu_dim3 ak_emu_grid_dim(void) __attribute__((const));

// bar.sync 0 (__syncthreads) and bar.warp.sync (__syncwarp).
void ak_emu_syncthreads(void);
void ak_emu_syncwarp(unsigned mask);

// shfl.sync.{up,down,bfly,idx}.b32 d|p, a, b, c, membermask. Returns d; *pred receives p.
unsigned ak_emu_shfl(int mode, unsigned mask, unsigned a, unsigned b, unsigned c, int* pred);
// vote.sync.{all,any,uni}.pred / vote.sync.ballot.b32 and activemask.
unsigned ak_emu_vote(int mode, unsigned mask, int pred);
unsigned ak_emu_activemask(void);

// Shared-memory window: generic pointer <-> 32-bit shared address, and the block's arrays.
uint32_t ak_emu_cvta_to_shared(const void* p);
void* ak_emu_dynamic_shared(void);
// A block-level static __shared__ array: one per (declaration site, block), same address for
// every thread of the block.
void* ak_emu_static_shared(const void* site, size_t bytes, size_t align);

// cp.async.{ca,cg}.shared.global [dst], [src], cp_size, src_size; commit_group; wait_group n.
void ak_emu_cp_async(uint32_t dst, const void* src, int cp_size, int src_size);
void ak_emu_cp_async_commit(void);
void ak_emu_cp_async_wait(int n);

// ldmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16: regs[0..num) receive this lane's part.
void ak_emu_ldmatrix(int num, int trans, uint32_t addr, uint32_t* regs);
// mma.sync.aligned.m16n8k16.row.col.f32.{f16|bf16}.{f16|bf16}.f32 d, a, b, c (d may alias c).
void ak_emu_mma_m16n8k16(int dtype, float* d, const uint32_t* a, const uint32_t* b, const float* c);

// ex2.approx{.ftz}.f32 and prefetch.global.L2.
float ak_emu_ex2_approx(float x, int ftz);
void ak_emu_prefetch_l2(const void* p);

// Registration of a kernel entry point (generated per module by build.rs).
typedef void (*ak_emu_trampoline)(void** args);
void ak_emu_register_kernel(const char* module, const char* name, ak_emu_trampoline fn);

#ifdef __cplusplus
}
#endif
