// Internal interface of the emulated device between its driver (driver.cpp: the CUDA driver
// API subset the crate uses) and its execution engine (runtime.cpp: fibers, warp collectives,
// checkers). Kernel code never includes this; it sees emu_api.h only.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string>
#include <vector>
#include "emu/emu_api.h"

namespace ak_emu {

enum class Schedule { InOrder, Reverse, Random };
enum class Landing { AtIssue, AtWait, Random };

struct Config {
    Schedule schedule = Schedule::InOrder;
    Landing landing = Landing::AtIssue;
    uint64_t seed = 0;
    bool checks = true;
    // streamcheck (cross-stream ordering of device-memory accesses); off with checks, or alone
    // with ATTN_KERNELS_EMU_CHECKS=-streamcheck.
    bool streamcheck = true;
    int cc_major = 9, cc_minor = 0;  // compute capability the device presents
    // Random schedule: a thread is preempted at a memory access with probability 1/preempt.
    unsigned preempt = 16;
};

// Read once from the environment (ATTN_KERNELS_EMU_*); see runtime.cpp.
const Config& config();
std::string describe_config();

// ---- global memory: every allocation the driver hands out, with an init shadow
void* mem_alloc(size_t bytes);
// false when `p` is not the base of a live allocation.
bool mem_free(void* p);
// Whether [p, p + n) lies inside one live allocation.
bool mem_valid(uintptr_t p, size_t n);
// Mark [p, p + n) as written (a host copy or memset), or copy the init state of a range.
void mem_mark_init(uintptr_t p, size_t n);
void mem_copy_init(uintptr_t dst, uintptr_t src, size_t n);

// ---- streamcheck: ordering of device-memory accesses between streams (driver.cpp keeps the
// clocks of streams, events and the host; the allocations keep their last writer)

// A vector clock: for each stream id, how many of that stream's operations are ordered before.
struct VClock {
    std::vector<uint64_t> c;
    uint64_t at(uint32_t s) const { return s < c.size() ? c[s] : 0; }
    void join(const VClock& o) {
        if (o.c.size() > c.size()) c.resize(o.c.size(), 0);
        for (size_t i = 0; i < o.c.size(); ++i)
            if (o.c[i] > c[i]) c[i] = o.c[i];
    }
    uint64_t tick(uint32_t s) {
        if (s >= c.size()) c.resize(s + 1, 0);
        return ++c[s];
    }
};

// One operation enqueued on a stream, as streamcheck sees it.
struct StreamOp {
    uint32_t stream = 0;  // stream id (kLegacyStream for the legacy/per-thread stream); 0: unchecked
    uint64_t clock = 0;   // the operation's own component, vc.at(stream)
    VClock vc;            // the stream's clock at the operation: everything ordered before it
    std::string what;     // "cuMemcpyHtoDAsync", "kernel rope_f32", ...
};
const uint32_t kLegacyStream = 1;
// "stream 3", "the legacy stream".
std::string stream_name(uint32_t id);
// An access by `op` to the device allocation holding `p` (none: nothing to check). Returns the
// finding ("" if the allocation's last write is ordered before `op`); a write then becomes the
// allocation's last write.
std::string stream_access(const StreamOp& op, uintptr_t p, bool write);

// ---- tensor maps (cuTensorMapEncodeTiled in driver.cpp, cp.async.bulk.tensor in runtime.cpp):
// the emulated driver's layout of the opaque 128-byte CUtensorMap.
struct TensorMap {
    uint32_t rank = 0, esize = 0, swizzle = 0;  // swizzle: CUtensorMapSwizzle (0 none, 1 32B, 2 64B, 3 128B)
    uint64_t addr = 0;
    uint64_t dims[5] = {}, strides[5] = {};  // strides[i]: bytes between steps of dimension i (strides[0] = esize)
    uint32_t box[5] = {}, estride[5] = {};
};
const uint64_t kTensorMapMagic = 0x50414d544b41ull;  // "AKTMAP"
inline void tensor_map_encode(const TensorMap& m, uint64_t w[16]) {
    for (int i = 0; i < 16; ++i) w[i] = 0;
    w[0] = kTensorMapMagic | (uint64_t)m.rank << 48 | (uint64_t)m.esize << 52 | (uint64_t)m.swizzle << 56;
    w[1] = m.addr;
    for (int i = 0; i < 5; ++i) {
        w[2 + i] = m.dims[i];
        w[7 + i] = m.strides[i];
        w[12 + i / 4] |= (uint64_t)(m.box[i] | m.estride[i] << 9) << (16 * (i % 4));
    }
}
inline bool tensor_map_decode(const uint64_t w[16], TensorMap& m) {
    if ((w[0] & 0xffffffffffffull) != kTensorMapMagic) return false;
    m.rank = (uint32_t)(w[0] >> 48) & 15;
    m.esize = (uint32_t)(w[0] >> 52) & 15;
    m.swizzle = (uint32_t)(w[0] >> 56) & 15;
    m.addr = w[1];
    for (int i = 0; i < 5; ++i) {
        m.dims[i] = w[2 + i];
        m.strides[i] = w[7 + i];
        const uint32_t v = (uint32_t)(w[12 + i / 4] >> (16 * (i % 4))) & 0xffff;
        m.box[i] = v & 511;
        m.estride[i] = v >> 9;
    }
    return m.rank >= 1 && m.rank <= 5;
}

// ---- kernels
ak_emu_trampoline find_kernel(const char* name);
size_t kernel_count();
const char* kernel_name(size_t i);
uint64_t kernel_launches(size_t i);

struct Launch {
    const char* name;
    ak_emu_trampoline fn;
    unsigned grid[3];
    unsigned block[3];
    unsigned dynamic_shared;
    unsigned max_shared_per_block;  // static + dynamic limit of the device
    void** args;
    const StreamOp* op;  // streamcheck: the launch as an operation of its stream (null: unchecked)
};

enum class Outcome { Ok, Findings, Fatal };
// Runs the whole grid to completion on the calling thread. `report` receives the findings.
Outcome launch(const Launch& l, std::string& report);

}  // namespace ak_emu
