// Conformance probes of the warp-level instructions the kernels rely on: each kernel reads
// per-lane operands from `in`, executes one instruction family through common/ptx.cuh or a CUDA
// intrinsic, and writes per-lane results to `out`. The tests (tests/emu_fidelity.rs) compare the
// results with a model written from the PTX ISA: on the emulated device that checks the
// emulator, on a GPU it checks the hardware against the same model. Layouts of `in` and `out`
// are documented per kernel and mirrored by src/runtime/probe.rs.
#include <stdint.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include "params.h"
#include "common/ptx.cuh"

namespace ak::probe {
__device__ __forceinline__ unsigned lane() { return threadIdx.x & 31u; }

// mma.sync m16n8k16, f32 accumulate. in: per lane 10 words {a0..a3, b0, b1, c0..c3 (f32 bits)};
// out: per lane 4 floats d0..d3. mode 0: f16 operands, 1: bf16. One warp.
__device__ __forceinline__ void mma(const AkProbeParams& p) {
    const unsigned l = lane();
    const uint32_t* in = static_cast<const uint32_t*>(p.in) + l * 10;
    const uint32_t a[4] = {in[0], in[1], in[2], in[3]};
    float d[4];
    for (int i = 0; i < 4; ++i) d[i] = __uint_as_float(in[6 + i]);
    if (p.mode == 0) ak::ptx::mma_m16n8k16_f16(d, a, in[4], in[5]);
    else ak::ptx::mma_m16n8k16_bf16(d, a, in[4], in[5]);
    float* out = static_cast<float*>(p.out) + l * 4;
    for (int i = 0; i < 4; ++i) out[i] = d[i];
}

// ldmatrix.m8n8 .x1/.x2/.x4 {.trans}. in: 256 words of shared-memory image (64 rows of 16 bytes),
// then 32 row indices (lane l points its address at row in[256 + l]). mode: number of matrices
// (1, 2, 4) plus 8 for .trans. out: per lane 4 words (registers beyond .num are written as 0).
__device__ __forceinline__ void ldmatrix(const AkProbeParams& p) {
    AK_SHARED(uint32_t, tile, [256]);
    const unsigned l = lane();
    const uint32_t* in = static_cast<const uint32_t*>(p.in);
    for (int i = l; i < 256; i += 32) tile[i] = in[i];
    __syncthreads();
    const uint32_t addr = ak::ptx::smem_addr(&tile[in[256 + l] * 4]);
    uint32_t r[4] = {0, 0, 0, 0};
    switch (p.mode) {
        case 1: ak::ptx::ldmatrix_x1(r[0], addr); break;
        case 2: { uint32_t t[2]; ak::ptx::ldmatrix_x2(t, addr); r[0] = t[0]; r[1] = t[1]; } break;
        case 4: ak::ptx::ldmatrix_x4(r, addr); break;
        case 9: ak::ptx::ldmatrix_x1_trans(r[0], addr); break;
        case 10: { uint32_t t[2]; ak::ptx::ldmatrix_x2_trans(t, addr); r[0] = t[0]; r[1] = t[1]; } break;
        case 12: ak::ptx::ldmatrix_x4_trans(r, addr); break;
        default: break;
    }
    uint32_t* out = static_cast<uint32_t*>(p.out) + l * 4;
    for (int i = 0; i < 4; ++i) out[i] = r[i];
}

// __shfl_*_sync with full mask. in: 32 values, then 32 per-lane `b` operands (source lane, lane
// mask or delta). mode 0: __shfl_sync, 1: __shfl_xor_sync, 2: __shfl_up_sync, 3: __shfl_down_sync;
// width from p.width. out: 32 words.
__device__ __forceinline__ void shfl(const AkProbeParams& p) {
    const unsigned l = lane();
    const uint32_t* in = static_cast<const uint32_t*>(p.in);
    const uint32_t v = in[l], b = in[32 + l];
    uint32_t r = 0;
    switch (p.mode) {
        case 0: r = __shfl_sync(0xffffffffu, v, (int)b, p.width); break;
        case 1: r = __shfl_xor_sync(0xffffffffu, v, (int)b, p.width); break;
        case 2: r = __shfl_up_sync(0xffffffffu, v, b, p.width); break;
        case 3: r = __shfl_down_sync(0xffffffffu, v, b, p.width); break;
        default: break;
    }
    static_cast<uint32_t*>(p.out)[l] = r;
}

// __ballot_sync / __any_sync / __all_sync over p.mask: only the lanes in the mask vote, the others
// write 0xffffffff. in: 32 predicates (int). mode 0: ballot, 1: any, 2: all. out: 32 words.
__device__ __forceinline__ void vote(const AkProbeParams& p) {
    const unsigned l = lane();
    const int pred = static_cast<const int*>(p.in)[l];
    uint32_t r = 0xffffffffu;
    if ((p.mask >> l) & 1u) {
        if (p.mode == 0) r = __ballot_sync(p.mask, pred);
        else if (p.mode == 1) r = (uint32_t)__any_sync(p.mask, pred);
        else r = (uint32_t)__all_sync(p.mask, pred);
    }
    static_cast<uint32_t*>(p.out)[l] = r;
}

// cp.async.cg 16 bytes with src-size in[128 + lane] (0..16). in: 512 source bytes (lane l copies
// bytes [16 l, 16 l + 16)), then 32 sizes. The shared destinations are first filled with 0xa5.
// mode 0: one group, wait_group 0, barrier; lane l then reads back the slot of lane (l + 1) % 32
//   (out: per lane 4 words).
// mode 1: two groups (first to slot A, second to slot B), wait_group 1, barrier, read slot A of
//   the next lane; then wait_group 0, barrier, read its slot B (out: per lane 8 words, A then B).
__device__ __forceinline__ void cp_async(const AkProbeParams& p) {
    AK_SHARED(uint32_t, slot_a, [128]);
    AK_SHARED(uint32_t, slot_b, [128]);
    const unsigned l = lane(), next = (l + 1) & 31u;
    const uint8_t* src = static_cast<const uint8_t*>(p.in) + 16 * l;
    const int size = static_cast<const int*>(p.in)[128 + l];
    for (int i = 0; i < 4; ++i) slot_a[4 * l + i] = slot_b[4 * l + i] = 0xa5a5a5a5u;
    __syncthreads();
    uint32_t* out = static_cast<uint32_t*>(p.out);
    if (p.mode == 0) {
        ak::ptx::cp_async_cg_16(ak::ptx::smem_addr(&slot_a[4 * l]), src, size);
        ak::ptx::cp_async_commit();
        ak::ptx::cp_async_wait<0>();
        __syncthreads();
        for (int i = 0; i < 4; ++i) out[4 * l + i] = slot_a[4 * next + i];
    } else {
        ak::ptx::cp_async_cg_16(ak::ptx::smem_addr(&slot_a[4 * l]), src, size);
        ak::ptx::cp_async_commit();
        ak::ptx::cp_async_cg_16(ak::ptx::smem_addr(&slot_b[4 * l]), src, 16 - size);
        ak::ptx::cp_async_commit();
        ak::ptx::cp_async_wait<1>();
        __syncthreads();
        for (int i = 0; i < 4; ++i) out[8 * l + i] = slot_a[4 * next + i];
        ak::ptx::cp_async_wait<0>();
        __syncthreads();
        for (int i = 0; i < 4; ++i) out[8 * l + 4 + i] = slot_b[4 * next + i];
    }
}

// ex2.approx.ftz.f32 elementwise: out[i] = 2^in[i] for i < n (floats). Any grid.
__device__ __forceinline__ void ex2(const AkProbeParams& p) {
    const float* in = static_cast<const float*>(p.in);
    float* out = static_cast<float*>(p.out);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x)
        out[i] = ak::ptx::ex2_approx_ftz(in[i]);
}

// f32 -> 16-bit float conversions, round to nearest even, elementwise over n floats.
// mode 0: __float2half_rn, 1: __float2bfloat16_rn (out: n 16-bit values);
// mode 2: __floats2half2_rn, 3: __floats2bfloat162_rn of (in[2i], in[2i+1]) (out: n/2 words).
__device__ __forceinline__ void cvt(const AkProbeParams& p) {
    const float* in = static_cast<const float*>(p.in);
    const int stride = gridDim.x * blockDim.x;
    const int count = p.mode < 2 ? p.n : p.n / 2;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride) {
        switch (p.mode) {
            case 0: static_cast<__half*>(p.out)[i] = __float2half_rn(in[i]); break;
            case 1: static_cast<__nv_bfloat16*>(p.out)[i] = __float2bfloat16_rn(in[i]); break;
            case 2: static_cast<__half2*>(p.out)[i] = __floats2half2_rn(in[2 * i], in[2 * i + 1]); break;
            case 3: static_cast<__nv_bfloat162*>(p.out)[i] = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]); break;
            default: break;
        }
    }
}

// Kernels that break the rules on purpose, for the emulator's checkers. One warp; in: 16 bytes
// of global data; out: 32 words.
// mode 0: reads a cp.async destination before the wait_group that covers it (racecheck);
// mode 1: lane 5 returns before a full-mask __syncwarp the others wait at (synccheck);
// mode 2: lane 0 writes a shared word that lane 1 reads with no __syncwarp between (racecheck);
// mode 3: mode 2 with the __syncwarp: correct, must run clean.
__device__ __forceinline__ void misbehave(const AkProbeParams& p) {
    AK_SHARED(uint32_t, buf, [128]);
    const unsigned l = lane();
    uint32_t* out = static_cast<uint32_t*>(p.out);
    uint32_t r = 0;
    if (p.mode == 0) {
        if (l == 0) {
            ak::ptx::cp_async_cg_16(ak::ptx::smem_addr(&buf[0]), p.in, 16);
            ak::ptx::cp_async_commit();
            r = buf[0];  // the copy may not have landed yet
            ak::ptx::cp_async_wait<0>();
        }
    } else if (p.mode == 1) {
        if (l == 5) {
            out[l] = 0;
            return;
        }
        __syncwarp();
    } else {
        if (l == 0) buf[0] = 42u;
        if (p.mode == 3) __syncwarp();
        if (l == 1) r = buf[0];
    }
    out[l] = r;
}

}  // namespace ak::probe

// Entry points (generated from src/runtime/kernel_list.rs, `ProbeKernel`): ak_probe_<name> calls
// ak::probe::<name>. No launch bounds: the caller picks the block.
#include "generated/probe_collectives_entries.cuh"
