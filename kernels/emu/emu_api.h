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

// ---- Hopper (sm_90a), kernels/common/hopper.cuh. Each is a checker finding (archcheck) when the
// device presents compute capability 8.x (ATTN_KERNELS_EMU_CC).

// mbarrier on a 64-bit shared object at `addr`: init (expected arrival count); arrive with
// `count` arrivals after adding `tx` to the tx-count (tx 0: plain arrive), returns the state
// token; expect_tx / complete_tx adjust the tx-count; test_wait / try_wait on a state token or a
// phase parity (try_wait may block until the phase completes; it returns 1 or 0).
void ak_emu_mbar_init(uint32_t addr, unsigned count);
uint64_t ak_emu_mbar_arrive(uint32_t addr, unsigned count, unsigned tx);
void ak_emu_mbar_expect_tx(uint32_t addr, unsigned tx);
void ak_emu_mbar_complete_tx(uint32_t addr, unsigned tx);
int ak_emu_mbar_wait(uint32_t addr, uint64_t state_or_parity, int parity, int blocking);

// wgmma.fence / commit_group / wait_group N (warpgroup-wide, .sync.aligned).
void ak_emu_wgmma_fence(void);
void ak_emu_wgmma_commit(void);
void ak_emu_wgmma_wait(int n);
// wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16|bf16}.{f16|bf16}: d[0..n/2) is this thread's
// accumulator fragment; a_regs (4 registers) or, when null, desc_a; desc_b; scale_d 0: d = a*b.
void ak_emu_wgmma(int n, int dtype, float* d, const uint32_t* a_regs, uint64_t desc_a, uint64_t desc_b, int scale_d,
                  int trans_a, int trans_b);

// elect.sync d|p, membermask: returns d (the leader's lane), *pred receives p.
unsigned ak_emu_elect_sync(unsigned mask, int* pred);
// fence.proxy.async.shared::cta
void ak_emu_fence_proxy_async(void);
// bar.sync / bar.arrive id, count (count 0: every thread of the block).
void ak_emu_bar_named(int id, int count, int arrive_only);
// setmaxnreg.{inc,dec}.sync.aligned.u32 n
void ak_emu_setmaxnreg(int inc, unsigned n);
// stmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16 [addr], regs[0..num)
void ak_emu_stmatrix(int num, int trans, uint32_t addr, const uint32_t* regs);

// cp.async.bulk.tensor.{rank}d.shared::cluster.global.tile.mbarrier::complete_tx::bytes
// [dst], [tmap, coords], [mbar]: the box at `coords` of the tensor map (made by the emulated
// cuTensorMapEncodeTiled) lands in shared memory, then complete_tx of its bytes on the mbarrier.
void ak_emu_tma_load(int rank, uint32_t dst, const void* tmap, const int* coords, uint32_t mbar);

// Registration of a kernel entry point (generated per module by build.rs).
typedef void (*ak_emu_trampoline)(void** args);
void ak_emu_register_kernel(const char* module, const char* name, ak_emu_trampoline fn);

#ifdef __cplusplus
}
#endif
