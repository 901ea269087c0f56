// Internal interface of the emulated device between its driver (driver.cpp: the CUDA driver
// API subset the crate uses) and its execution engine (runtime.cpp: fibers, warp collectives,
// checkers). Kernel code never includes this; it sees emu_api.h only.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string>
#include "emu/emu_api.h"

namespace ak_emu {

enum class Schedule { InOrder, Reverse, Random };
enum class Landing { AtIssue, AtWait, Random };

struct Config {
    Schedule schedule = Schedule::InOrder;
    Landing landing = Landing::AtIssue;
    uint64_t seed = 0;
    bool checks = true;
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
};

enum class Outcome { Ok, Findings, Fatal };
// Runs the whole grid to completion on the calling thread. `report` receives the findings.
Outcome launch(const Launch& l, std::string& report);

}  // namespace ak_emu
