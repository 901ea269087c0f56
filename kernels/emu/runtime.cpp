// The emulated device's execution engine: CUDA kernels compiled as host C++ run here with GPU
// execution semantics and checkers.
//
// Execution. A launch runs its blocks one after another on the calling thread. Each CUDA thread
// of a block is a fiber (its own stack, switched in user space); a fiber runs until it blocks
// at a barrier or a warp collective, exits, or (random schedule) is preempted at a memory
// access. Warp collectives (shfl, vote, syncwarp, ldmatrix, mma) are computed once for the whole
// group by the last lane to arrive, from every lane's operands, as the PTX ISA defines them.
//
// Checkers. The kernel objects are compiled with GCC's kernel-address instrumentation in
// outline mode, so every load and store they make calls __asan_{load,store}N_noabort below.
// Each access is classified (the fiber's own stack, the block's shared window, a global
// allocation, the module's read-only data) and checked:
// - memcheck: a global access inside a live allocation, a shared access inside one of the
//   block's shared arrays (dynamic or static); anything else stops the launch at once;
// - initcheck: a read of global or shared bytes never written (per-byte init shadows);
// - racecheck: two accesses to a shared byte from different threads, at least one a write, not
//   ordered by a barrier or, within one warp, by a warp collective (per-byte access shadows);
//   reading or writing the destination of a cp.async before the wait_group that covers it;
// - synccheck: divergent barriers or collectives, collectives waiting for exited lanes,
//   deadlock (no fiber can run but some have not finished);
// - streamcheck: a launch's first access to each allocation is checked against the
//   allocation's last writer on another stream (ordered by the clocks driver.cpp keeps); the
//   allocations a launch wrote record it as their last writer when it ends.
// Each finding names the kernel, block, thread and source line (addr2line over the PCs).
#include "emu/runtime.h"

#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <unordered_map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#define AK_HIDDEN __attribute__((visibility("hidden")))
#define AK_NOINLINE __attribute__((noinline))

namespace ak_emu {

// ============================================================================ configuration

static Config read_config() {
    Config c;
    auto env = [](const char* k) -> const char* {
        const char* v = getenv(k);
        return v && *v ? v : nullptr;
    };
    if (const char* s = env("ATTN_KERNELS_EMU_SCHEDULE")) {
        if (!strcmp(s, "inorder")) {
            c.schedule = Schedule::InOrder;
            c.landing = Landing::AtIssue;
        } else if (!strcmp(s, "reverse")) {
            c.schedule = Schedule::Reverse;
            c.landing = Landing::AtWait;
        } else if (!strcmp(s, "random")) {
            c.schedule = Schedule::Random;
            c.landing = Landing::Random;
        } else {
            fprintf(stderr, "attn-kernels emulated device: ATTN_KERNELS_EMU_SCHEDULE=%s is not inorder, reverse or random; using inorder\n", s);
        }
    }
    if (const char* s = env("ATTN_KERNELS_EMU_COPIES")) {
        if (!strcmp(s, "issue")) c.landing = Landing::AtIssue;
        else if (!strcmp(s, "wait")) c.landing = Landing::AtWait;
        else if (!strcmp(s, "random")) c.landing = Landing::Random;
    }
    if (const char* s = env("ATTN_KERNELS_EMU_SEED")) {
        c.seed = strtoull(s, nullptr, 0);
    } else {
        c.seed = (uint64_t)std::chrono::steady_clock::now().time_since_epoch().count() ^ ((uint64_t)getpid() << 32);
    }
    // ATTN_KERNELS_EMU_CHECKS: `0`/`off` turns every checker off, `-streamcheck` only streamcheck
    // (comma-separated: `on,-streamcheck`).
    if (const char* s = env("ATTN_KERNELS_EMU_CHECKS")) {
        std::string v = s;
        size_t at = 0;
        while (at <= v.size()) {
            size_t end = v.find(',', at);
            if (end == std::string::npos) end = v.size();
            const std::string tok = v.substr(at, end - at);
            if (tok == "0" || tok == "off") c.checks = c.streamcheck = false;
            else if (tok == "1" || tok == "on") c.checks = c.streamcheck = true;
            else if (tok == "-streamcheck") c.streamcheck = false;
            else if (!tok.empty())
                fprintf(stderr, "attn-kernels emulated device: ATTN_KERNELS_EMU_CHECKS item `%s` is not 0, off, 1, on or -streamcheck; ignored\n", tok.c_str());
            at = end + 1;
        }
        if (!c.checks) c.streamcheck = false;  // kernel accesses are only seen with the checkers on
    }
    if (const char* s = env("ATTN_KERNELS_EMU_CC")) {
        int ma = 0, mi = 0;
        // 8.0 / 9.0, or 80 / 90
        if (sscanf(s, "%d.%d", &ma, &mi) != 2 && sscanf(s, "%d", &ma) == 1 && ma >= 10) {
            mi = ma % 10;
            ma /= 10;
        }
        if ((ma == 8 || ma == 9) && mi >= 0 && mi <= 9) {
            c.cc_major = ma;
            c.cc_minor = mi;
        } else {
            fprintf(stderr, "attn-kernels emulated device: ATTN_KERNELS_EMU_CC=%s is not 8.0, 9.0, 80 or 90; using %d.%d\n", s,
                    c.cc_major, c.cc_minor);
        }
    }
    return c;
}

// Read when the library loads; the checkers read it on every access.
static const Config g_config = read_config();
const Config& config() { return g_config; }

std::string describe_config() {
    const Config& c = config();
    const char* s = c.schedule == Schedule::InOrder ? "inorder" : c.schedule == Schedule::Reverse ? "reverse" : "random";
    const char* l = c.landing == Landing::AtIssue ? "at issue" : c.landing == Landing::AtWait ? "at wait" : "random";
    char buf[256];
    snprintf(buf, sizeof buf, "schedule %s, cp.async landing %s, seed %llu, checkers %s, compute capability %d.%d", s, l,
             (unsigned long long)c.seed, c.checks ? (c.streamcheck ? "on" : "on except streamcheck") : "off", c.cc_major,
             c.cc_minor);
    return buf;
}

// ============================================================================ global memory

struct Alloc {
    uintptr_t base;
    size_t size;
    std::unique_ptr<uint8_t[]> init;  // 1 = byte written since allocation
    // streamcheck: the last operation that wrote the allocation (w_stream 0: none), under
    // g_stream_mu.
    uint32_t w_stream = 0;
    uint64_t w_clock = 0;
    std::string w_what;
};

static std::shared_mutex g_alloc_mu;
static std::map<uintptr_t, std::shared_ptr<Alloc>> g_allocs;  // by base

static Alloc* find_alloc_locked(uintptr_t p) {
    auto it = g_allocs.upper_bound(p);
    if (it == g_allocs.begin()) return nullptr;
    --it;
    Alloc* a = it->second.get();
    return p - a->base < a->size ? a : nullptr;
}

void* mem_alloc(size_t bytes) {
    if (bytes == 0) bytes = 1;
    // 256-byte aligned like cudaMalloc; the rounding slack is not part of the allocation.
    void* p = aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (!p) return nullptr;
    auto a = std::make_shared<Alloc>();
    a->base = (uintptr_t)p;
    a->size = bytes;
    a->init.reset(new uint8_t[bytes]());
    std::unique_lock<std::shared_mutex> lk(g_alloc_mu);
    g_allocs[(uintptr_t)p] = std::move(a);
    return p;
}

bool mem_free(void* p) {
    std::shared_ptr<Alloc> a;
    {
        std::unique_lock<std::shared_mutex> lk(g_alloc_mu);
        auto it = g_allocs.find((uintptr_t)p);
        if (it == g_allocs.end()) return false;
        a = std::move(it->second);
        g_allocs.erase(it);
    }
    free(p);
    return true;
}

bool mem_valid(uintptr_t p, size_t n) {
    std::shared_lock<std::shared_mutex> lk(g_alloc_mu);
    Alloc* a = find_alloc_locked(p);
    return a && (n == 0 || n <= a->size - (p - a->base));
}

void mem_mark_init(uintptr_t p, size_t n) {
    std::shared_lock<std::shared_mutex> lk(g_alloc_mu);
    Alloc* a = find_alloc_locked(p);
    if (a && n <= a->size - (p - a->base)) memset(a->init.get() + (p - a->base), 1, n);
}

void mem_copy_init(uintptr_t dst, uintptr_t src, size_t n) {
    std::shared_lock<std::shared_mutex> lk(g_alloc_mu);
    Alloc* d = find_alloc_locked(dst);
    Alloc* s = find_alloc_locked(src);
    if (d && s && n <= d->size - (dst - d->base) && n <= s->size - (src - s->base))
        memmove(d->init.get() + (dst - d->base), s->init.get() + (src - s->base), n);
}

// ============================================================================ streamcheck

// The last writer of each allocation; driver calls and launches on any host thread update it.
static std::mutex g_stream_mu;

std::string stream_name(uint32_t id) {
    if (id == kLegacyStream) return "the legacy stream";
    char buf[32];
    snprintf(buf, sizeof buf, "stream %u", id - kLegacyStream);
    return buf;
}

// Whether `a`'s last write is unordered with `op` (the caller holds g_stream_mu): the finding's
// text, else "".
static std::string stream_hazard_locked(const StreamOp& op, const Alloc& a, bool write) {
    if (a.w_stream == 0 || a.w_stream == op.stream || op.vc.at(a.w_stream) >= a.w_clock) return "";
    char head[160];
    snprintf(head, sizeof head, " the %zu-byte allocation at %#lx", a.size, (unsigned long)a.base);
    return op.what + " on " + stream_name(op.stream) + (write ? " writes" : " reads") + head + " last written by " + a.w_what +
           " on " + stream_name(a.w_stream) + " with no event or synchronisation between";
}

static void stream_record_locked(const StreamOp& op, Alloc& a) {
    a.w_stream = op.stream;
    a.w_clock = op.clock;
    a.w_what = op.what;
}

std::string stream_access(const StreamOp& op, uintptr_t p, bool write) {
    if (op.stream == 0) return "";
    std::shared_lock<std::shared_mutex> lk(g_alloc_mu);
    Alloc* a = find_alloc_locked(p);
    if (!a) return "";
    std::lock_guard<std::mutex> sl(g_stream_mu);
    std::string finding = stream_hazard_locked(op, *a, write);
    if (write) stream_record_locked(op, *a);
    return finding;
}

// ============================================================================ kernel registry

struct KernelEntry {
    std::string module, name;
    ak_emu_trampoline fn;
    std::atomic<uint64_t> launches{0};
};
// Never destroyed: the coverage report reads it while the process exits.
static std::vector<std::unique_ptr<KernelEntry>>& registry() {
    static auto* r = new std::vector<std::unique_ptr<KernelEntry>>();
    return *r;
}
static std::mutex g_registry_mu;

static KernelEntry* find_entry(const char* name) {
    std::lock_guard<std::mutex> lk(g_registry_mu);
    for (auto& e : registry())
        if (e->name == name) return e.get();
    return nullptr;
}
ak_emu_trampoline find_kernel(const char* name) {
    KernelEntry* e = find_entry(name);
    return e ? e->fn : nullptr;
}
size_t kernel_count() { return registry().size(); }
const char* kernel_name(size_t i) { return registry()[i]->name.c_str(); }
uint64_t kernel_launches(size_t i) { return registry()[i]->launches.load(); }

// ============================================================================ fibers

#if defined(__x86_64__)
// Save callee-saved registers, MXCSR and the x87 control word on the current stack, store the
// stack pointer in *save, switch to `to` and restore the same from there.
asm(R"(
    .text
    .p2align 4
    .globl ak_emu_fiber_switch
    .hidden ak_emu_fiber_switch
    .type ak_emu_fiber_switch,@function
ak_emu_fiber_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size ak_emu_fiber_switch,.-ak_emu_fiber_switch
)");
extern "C" void ak_emu_fiber_switch(void** save, void* to);
#endif

static void fiber_entry();

struct Stack {
    char* lo = nullptr;   // lowest usable byte (a guard page sits below)
    size_t size = 0;
    void* map = nullptr;
    size_t map_size = 0;
};

static const size_t kStackSize = 256 * 1024;

static Stack new_stack() {
    Stack s;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    s.map_size = kStackSize + page;
    s.map = mmap(nullptr, s.map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s.map == MAP_FAILED) {
        fprintf(stderr, "attn-kernels emulated device: cannot map a fiber stack\n");
        abort();
    }
    mprotect(s.map, page, PROT_NONE);  // overflow faults instead of corrupting a neighbour
    s.lo = (char*)s.map + page;
    s.size = kStackSize;
    return s;
}

// ============================================================================ block state

enum class Wait : uint8_t { Ready, Running, Barrier, Collective, Done, MBar, NamedBar };

enum CollKind : uint8_t { C_SHFL, C_VOTE, C_SYNCWARP, C_LDMATRIX, C_MMA, C_ELECT, C_STMATRIX };
static const char* coll_name(int k) {
    static const char* n[] = {"shfl.sync", "vote.sync", "bar.warp.sync (__syncwarp)", "ldmatrix.sync.aligned",
                              "mma.sync.aligned", "elect.sync", "stmatrix.sync.aligned"};
    return n[k];
}

struct AsyncCopy {
    uint32_t dst;
    const uint8_t* src;
    uint8_t size, src_size;
    bool landed;
};

struct Thread {
    // fiber
    void* sp = nullptr;
    Stack stack;
#if !defined(__x86_64__)
    ucontext_t uc;
#endif
    // identity
    ak_emu_dim3 tid;
    int linear = 0, warp = 0, lane = 0;
    Wait wait = Wait::Done;
    uintptr_t wait_pc = 0;
    // collective operands and results
    union {
        struct { unsigned a, b, c, mode; } shfl;
        struct { int pred, mode; } vote;
        uint32_t addr;
        struct { uint32_t a[4], b[2]; float c[4]; } mma;
        struct { uint32_t addr, r[4]; } stm;
    } in;
    uint32_t out[4];
    float outf[4];
    int out_pred;
    // warpgroup operands (wgmma, setmaxnreg)
    float* wg_d = nullptr;
    uint32_t wg_a[4] = {};
    const uint32_t* wg_a_ptr = nullptr;  // where the A fragment lives (checked unchanged at retirement)
    uint64_t wg_da = 0, wg_db = 0;
    unsigned wg_val = 0;
    // what a thread blocked at an mbarrier or named barrier waits for (deadlock reports)
    uint32_t wait_addr = 0, wait_parity = 0;
    // cp.async: the open group and the committed groups, oldest first
    std::vector<AsyncCopy> open;
    std::vector<std::vector<AsyncCopy>> groups;
    // fence.proxy.async: per fence executed in this block, its barrier epoch and own clock
    std::vector<std::pair<uint32_t, uint32_t>> proxy_fences;
};

struct PendingCollective {
    uint8_t kind;
    int extra;
    unsigned mask, arrived;
    uintptr_t pc;
};

struct WarpState {
    unsigned present = 0, exited = 0;
    uint32_t gen = 0;  // completed collectives; orders this warp's lanes
    std::vector<PendingCollective> pending;
};

// Per shared byte: the last write and a summary of the reads since the last barrier.
struct ShadowByte {
    uint32_t w_epoch;   // barrier epoch of the last write (< block base: never written)
    uint16_t w_tid;
    uint8_t pending;    // an in-flight cp.async targets this byte
    uint8_t wg_pending; // pending wgmma.mma_async operations that read this byte
    uint32_t w_gen;     // writer's warp generation at the write
    uint32_t r_epoch;   // epoch of the reads summarised below
    uint16_t r_tid;     // the single reader, or kMany
    uint8_t w_async;    // the last write was by the async proxy (a tensor copy)
    uint8_t multi;      // Block::multi may hold this byte's readers
    uint32_t w_fences;  // fence.proxy.async the writer had executed before the write
    uint32_t r_gen;     // max warp generation of the reads (meaningful when one warp read)
    uint32_t r_warps;   // warps that read in r_epoch
    uint32_t w_clk;     // writer's own vector-clock entry at the write (kNoClock: none)
    uint32_t r_clk;     // the single reader's own clock entry at its read
    uintptr_t w_pc;
    // Reads by retired wgmma.mma_async operations (async proxy), per warpgroup: the first thread
    // of up to two reading warpgroups (kNone: empty) and its own clock at the wait_group that
    // retired the read, in barrier epoch wg_r_epoch. A later write from another warpgroup must be
    // ordered after that wait (a barrier, a named barrier or an mbarrier phase).
    uint16_t wg_r_tid[2];
    uint32_t wg_r_epoch;
    uint32_t wg_r_clk[2];
};
static const uint16_t kMany = 0xffff;
static const uint16_t kNone = 0xfffe;
static const uint32_t kNoClock = 0xffffffffu;

// The readers of one shared byte in barrier epoch `epoch` (ShadowByte keeps only a single reader
// or "many"): recorded from the read that made the readers many, so the list is complete.
// Up to kMultiReadBytes bytes per block; past that a byte's many readers are summarised as
// ShadowByte does (ordered only by a block-wide barrier, or in one warp by a warp collective:
// at worst a finding, never a missed race).
struct MultiRead {
    uint32_t epoch = 0;
    std::vector<int16_t> slot;  // per thread: its index in the lists below, or -1
    std::vector<uint16_t> tid;
    std::vector<uint32_t> clk, gen;
};
static const size_t kMultiReadBytes = 4096;

struct Finding {
    std::string kind;  // memcheck, initcheck, racecheck, synccheck
    std::string what;
    uintptr_t pc, other_pc;
    ak_emu_dim3 block, thread;
};

struct LaunchState {
    const Launch* l;
    // The live allocations when the launch began, by base (kernels use memory allocated before
    // their launch; a snapshot keeps the hot path free of locks).
    std::vector<std::shared_ptr<Alloc>> allocs;
    Alloc* last = nullptr;
    size_t last_idx = 0;  // index of `last` in allocs
    // streamcheck: per allocation of the snapshot, 1 = accessed (checked), 2 = written
    std::vector<uint8_t> touched;
    std::vector<Finding> findings;
    size_t dropped = 0;
    bool fatal = false;
    std::vector<std::pair<std::string, uintptr_t>> seen;  // dedupe (kind, pc)
};

struct SharedRegion {
    uint32_t off, size;
    const void* site;
};

struct Worker;

// An mbarrier object ("Contents of the mbarrier object"): expected and pending arrival counts,
// tx-count, and the current phase (counted from 0; its parity is phase & 1). `acc` joins the
// vector clocks of the current phase's arrivals; `done` is that of the last completed phase.
struct MBarrier {
    uint32_t expected = 0, pending = 0, phase = 0;
    int32_t tx = 0;
    std::vector<uint32_t> acc, done;
    // Shared bytes tensor copies completing on this phase wrote: `pending` until it completes.
    std::vector<std::pair<uint32_t, uint32_t>> async_bytes;
};

// bar.sync / bar.arrive id, count for id 1..15 (id 0 with every thread is __syncthreads).
struct NamedBarrier {
    int arrived = 0, count = 0;
    std::vector<uint32_t> acc;
};

// One wgmma.mma_async of a warpgroup, from issue to retirement by wait_group.
struct WgmmaOp {
    int n = 0, dtype = 0;
    bool scale_d = false, a_desc = false, loaded = false, computed = false;
    bool trans_a = false, trans_b = false;  // MN-major operands (imm-trans-a / imm-trans-b)
    bool superseded = false;  // a later pending op accumulates into the same registers
    int chained = -1;         // index in WgState::live of the op whose result is this op's C
    uint64_t da = 0, db = 0;
    float* d[128] = {};
    uint32_t a_regs[128][4] = {};         // A from registers: each thread's fragment at issue ...
    const uint32_t* a_ptr[128] = {};      // ... and where it lives (unchanged until retirement)
    std::vector<double> A, B;  // 64x16 and 16xn, read from registers / shared memory
    std::vector<float> C, D;   // 64xn
    std::vector<uint32_t> bytes;  // shared bytes it reads (wg_pending set)
    uintptr_t pc = 0;
};

// Warpgroup-wide state: the .sync.aligned rendezvous and the wgmma groups.
struct WgState {
    int arrived = 0;
    uint8_t kind = 0;
    int extra = 0;
    uintptr_t pc = 0;
    bool fenced = false;
    std::vector<std::shared_ptr<WgmmaOp>> live;  // issued, not retired, in issue order
    size_t open_from = 0;                        // live[open_from..] are not committed yet
    std::vector<size_t> group_ends;              // committed groups: end index in live of each
};

struct Block {
    LaunchState* launch;
    Worker* w;
    ak_emu_dim3 idx;
    int nthreads = 0, nwarps = 0, live = 0, done = 0;
    std::vector<WarpState> warps;
    // barrier 0
    int bar_arrived = 0;
    uint32_t base_epoch = 0;  // epochs below this belong to earlier blocks
    uint32_t epoch = 0;
    // shared window: [0, dynamic) dynamic array, then static arrays with red zones between
    uint8_t* arena = nullptr;
    uint32_t arena_cap = 0, dynamic = 0, static_top = 0;
    std::vector<SharedRegion> statics;
    bool aborted = false;
    uint64_t rng;
    std::vector<uint64_t> runnable;  // bitset over threads
    // Hopper: mbarriers by shared address, named barriers, warpgroups; vector clocks (nthreads x
    // nthreads, allocated at the first mbarrier or named barrier) order shared-memory accesses
    // across those synchronisations for racecheck.
    std::map<uint32_t, MBarrier> mbars;
    NamedBarrier named[16];
    std::vector<WgState> wgs;
    std::vector<uint32_t> vc;
    // Shared bytes read by several threads in one barrier epoch once vector clocks exist: every
    // reader with its own clock and warp generation, so that a later write ordered after each
    // read by mbarrier phases or named barriers (not a block-wide barrier) is not a finding.
    std::unordered_map<uint32_t, MultiRead> multi;
};

struct Worker {
    std::vector<std::unique_ptr<Thread>> threads;
    void* sched_sp = nullptr;
#if !defined(__x86_64__)
    ucontext_t sched_uc;
#endif
    std::vector<uint8_t> arena;
    std::vector<ShadowByte> shadow;
    uint32_t epoch = 0;
    bool wg_dirty = false;  // some shadow byte may still carry wg_pending from an aborted block
    ~Worker() {
        for (auto& t : threads)
            if (t->stack.map) munmap(t->stack.map, t->stack.map_size);
    }
};

static thread_local std::unique_ptr<Worker> tl_worker;  // per host thread, reused by its launches
// initial-exec: the checkers read these on every access; the general-dynamic model of a
// dlopen'ed library would call __tls_get_addr each time.
#define AK_TLS static __thread __attribute__((tls_model("initial-exec")))
AK_TLS Block* tl_block = nullptr;
AK_TLS Thread* tl_thread = nullptr;  // the running fiber
AK_TLS Thread* tl_attrib = nullptr;  // a lane an access is attributed to, if not tl_thread

static Worker& worker() {
    if (!tl_worker) tl_worker.reset(new Worker());
    return *tl_worker;
}

static uint64_t rng_next(uint64_t& s) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

// ============================================================================ findings

static std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
static std::string fmt(const char* f, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

static void switch_to_scheduler(Thread& t);

static void add_finding(const char* kind, std::string what, uintptr_t pc, uintptr_t other_pc = 0, bool dedupe = true) {
    Block* b = tl_block;
    LaunchState* L = b->launch;
    if (dedupe) {
        for (auto& s : L->seen)
            if (s.first == kind && s.second == pc) return;
        L->seen.emplace_back(kind, pc);
    }
    if (L->findings.size() >= 16) {
        L->dropped++;
        return;
    }
    Finding f;
    f.kind = kind;
    f.what = std::move(what);
    f.pc = pc;
    f.other_pc = other_pc;
    f.block = b->idx;
    const Thread* who = tl_attrib ? tl_attrib : tl_thread;
    f.thread = who ? who->tid : ak_emu_dim3{0, 0, 0};
    L->findings.push_back(std::move(f));
}

// add_finding attributed to thread `who` (a lane of a collective, the warpgroup of a wgmma)
// rather than to the running fiber.
static void add_finding_as(const Thread& who, const char* kind, std::string what, uintptr_t pc) {
    tl_attrib = const_cast<Thread*>(&who);
    add_finding(kind, std::move(what), pc);
    tl_attrib = nullptr;
}

// A finding after which the kernel cannot go on (the access would fault or never return):
// record it, abandon the block's fibers and stop the launch.
[[noreturn]] static void fatal(const char* kind, std::string what, uintptr_t pc) {
    Block* b = tl_block;
    b->launch->seen.clear();  // a fatal finding is always reported
    add_finding(kind, std::move(what), pc);
    tl_attrib = nullptr;
    b->launch->fatal = true;
    b->aborted = true;
    switch_to_scheduler(*tl_thread);
    __builtin_unreachable();
}

// ============================================================================ scheduling

static inline void set_runnable(Block& b, int t) { b.runnable[t >> 6] |= 1ull << (t & 63); }
static inline void clear_runnable(Block& b, int t) { b.runnable[t >> 6] &= ~(1ull << (t & 63)); }

static int pick(Block& b) {
    const size_t n = b.runnable.size();
    switch (config().schedule) {
        case Schedule::InOrder:
            for (size_t i = 0; i < n; ++i)
                if (b.runnable[i]) return (int)(i * 64 + __builtin_ctzll(b.runnable[i]));
            return -1;
        case Schedule::Reverse:
            for (size_t i = n; i-- > 0;)
                if (b.runnable[i]) return (int)(i * 64 + 63 - __builtin_clzll(b.runnable[i]));
            return -1;
        case Schedule::Random: {
            int count = 0;
            for (auto w : b.runnable) count += __builtin_popcountll(w);
            if (count == 0) return -1;
            int k = (int)(rng_next(b.rng) % (uint64_t)count);
            for (size_t i = 0; i < n; ++i) {
                uint64_t w = b.runnable[i];
                int c = __builtin_popcountll(w);
                if (k < c) {
                    while (k--) w &= w - 1;
                    return (int)(i * 64 + __builtin_ctzll(w));
                }
                k -= c;
            }
            return -1;
        }
    }
    return -1;
}

static void switch_to_scheduler(Thread& t) {
    Worker& w = *tl_block->w;
#if defined(__x86_64__)
    ak_emu_fiber_switch(&t.sp, w.sched_sp);
#else
    swapcontext(&t.uc, &w.sched_uc);
#endif
}

// Block the calling fiber until someone marks it runnable.
static void block_here(Thread& t, Wait why, uintptr_t pc) {
    t.wait = why;
    t.wait_pc = pc;
    switch_to_scheduler(t);
    t.wait = Wait::Running;
}

static void maybe_preempt(Thread& t) {
    Block& b = *tl_block;
    if (config().schedule != Schedule::Random) return;
    if (rng_next(b.rng) % config().preempt != 0) return;
    set_runnable(b, t.linear);
    block_here(t, Wait::Ready, 0);
}

// ============================================================================ shared memory checks

static inline bool ordered_before(const Block& b, const Thread& t, uint32_t epoch, uint16_t tid, uint32_t gen,
                                  uint32_t clk) {
    if (tid == t.linear || epoch < b.epoch) return true;
    if ((tid >> 5) == t.warp && gen < b.warps[t.warp].gen) return true;
    // An mbarrier phase or a named barrier between: the access's clock reached this thread. An
    // access stamped before the clocks existed precedes its thread's first release: clock 1.
    return !b.vc.empty() && b.vc[(size_t)t.linear * b.nthreads + tid] >= (clk == kNoClock ? 1u : clk);
}

static inline uint32_t own_clock(const Block& b, const Thread& t) {
    return b.vc.empty() ? kNoClock : b.vc[(size_t)t.linear * (b.nthreads + 1)];
}

// [off, off + n) inside one shared array of the block?
static bool shared_in_bounds(const Block& b, uint32_t off, uint32_t n) {
    if ((uint64_t)off + n <= b.dynamic) return true;
    for (auto& r : b.statics)
        if (off >= r.off && (uint64_t)off + n <= (uint64_t)r.off + r.size) return true;
    return false;
}

static void shared_bounds(Block& b, uint32_t off, uint32_t n, bool write, uintptr_t pc) {
    if (shared_in_bounds(b, off, n)) return;
    std::string where;
    if (off >= b.dynamic && off < b.dynamic + 64) where = fmt(" (%u bytes past the end of the dynamic shared array of %u bytes)", off - b.dynamic, b.dynamic);
    fatal("memcheck",
          fmt("%s of %u bytes at shared address 0x%x is outside the block's shared arrays%s", write ? "write" : "read", n, off,
              where.c_str()),
          pc);
}

// Note reader t (warp generation gen) of the byte at `addr`, which another thread read in this
// epoch already (s: the byte's summary before this read).
static void multi_read(Block& b, uint32_t addr, const ShadowByte& s, const Thread& t, uint32_t gen) {
    auto it = b.multi.find(addr);
    MultiRead* m = it == b.multi.end() ? nullptr : &it->second;
    if (s.r_tid != kMany) {
        // The second reader: start the list with the first (a stale list of an earlier epoch is reused).
        if (!m) {
            if (b.multi.size() >= kMultiReadBytes) return;
            m = &b.multi[addr];
            b.w->shadow[addr].multi = 1;
        }
        m->epoch = b.epoch;
        for (uint16_t r : m->tid) m->slot[r] = -1;
        m->slot.resize((size_t)b.nthreads, -1);
        m->tid.assign(1, s.r_tid);
        m->clk.assign(1, s.r_clk);
        m->gen.assign(1, s.r_gen);
        m->slot[s.r_tid] = 0;
    } else if (!m || m->epoch != b.epoch) {
        return;  // many readers before a list was started: summarised only
    }
    const int16_t k = m->slot[t.linear];
    if (k >= 0) {
        m->clk[k] = own_clock(b, t);
        m->gen[k] = gen;
    } else {
        m->slot[t.linear] = (int16_t)m->tid.size();
        m->tid.push_back((uint16_t)t.linear);
        m->clk.push_back(own_clock(b, t));
        m->gen.push_back(gen);
    }
}

// For a byte with many readers in this epoch: whether their complete list is known, and if so
// one reader whose read is not ordered before thread t's write (-1: none).
static bool multi_race(const Block& b, const Thread& t, uint32_t addr, int& race) {
    auto it = b.multi.find(addr);
    if (it == b.multi.end() || it->second.epoch != b.epoch) return false;
    const MultiRead& m = it->second;
    race = -1;
    for (size_t j = 0; j < m.tid.size(); ++j)
        if (!ordered_before(b, t, b.epoch, m.tid[j], m.gen[j], m.clk[j])) race = m.tid[j];
    return true;
}

static void shared_read(Block& b, Thread& t, uint32_t off, uint32_t n, uintptr_t pc) {
    Worker& w = *b.w;
    const uint32_t gen = b.warps[t.warp].gen;
    bool uninit = false, pending = false;
    int race_tid = -1;
    uintptr_t race_pc = 0;
    for (uint32_t i = 0; i < n; ++i) {
        ShadowByte& s = w.shadow[off + i];
        if (s.pending) pending = true;
        if (s.w_epoch < b.base_epoch) {
            uninit = true;
        } else if (!ordered_before(b, t, s.w_epoch, s.w_tid, s.w_gen, s.w_clk)) {
            race_tid = s.w_tid;
            race_pc = s.w_pc;
        }
        if (s.r_epoch != b.epoch) {
            s.r_epoch = b.epoch;
            s.r_tid = (uint16_t)t.linear;
            s.r_warps = 1u << (t.warp & 31);
            s.r_gen = gen;
            s.r_clk = own_clock(b, t);
        } else if (s.r_tid == t.linear && s.r_warps == 1u << (t.warp & 31)) {
            if (gen > s.r_gen) s.r_gen = gen;
            s.r_clk = own_clock(b, t);
        } else {
            if (!b.vc.empty()) multi_read(b, off + i, s, t, gen);
            if (s.r_tid != t.linear) s.r_tid = kMany;
            s.r_warps |= 1u << (t.warp & 31);
            if (gen > s.r_gen) s.r_gen = gen;
        }
    }
    if (pending)
        add_finding("racecheck",
                    fmt("read of %u bytes at shared address 0x%x whose asynchronous copy has not been waited for (no "
                        "covering cp.async.wait_group, or the mbarrier phase of a cp.async.bulk.tensor not complete)",
                        n, off),
                    pc);
    if (race_tid >= 0)
        add_finding("racecheck",
                    fmt("read of %u bytes at shared address 0x%x races with a write by thread %d (warp %d) not ordered "
                        "before it by a barrier or a warp collective", n, off, race_tid, race_tid >> 5),
                    pc, race_pc);
    if (uninit)
        add_finding("initcheck", fmt("read of %u bytes at shared address 0x%x never written in this block", n, off), pc);
}

// Check a write; `stamp` records it (a cp.async issue only checks, its wait stamps).
static void shared_write(Block& b, Thread& t, uint32_t off, uint32_t n, uintptr_t pc, bool stamp,
                         bool async_proxy = false) {
    Worker& w = *b.w;
    WarpState& ws = b.warps[t.warp];
    int waw = -1, war = -1, war_wg = -1, war_many = -1;
    bool pending = false, wg = false;
    uintptr_t other_pc = 0;
    for (uint32_t i = 0; i < n; ++i) {
        ShadowByte& s = w.shadow[off + i];
        if (s.pending) pending = true;
        if (s.wg_pending) wg = true;
        if (s.wg_r_epoch == b.epoch && s.wg_r_epoch >= b.base_epoch)
            for (int j = 0; j < 2; ++j) {
                const uint16_t r = s.wg_r_tid[j];
                if (r != kNone && r / 128 != t.linear / 128 && !ordered_before(b, t, s.wg_r_epoch, r, UINT32_MAX, s.wg_r_clk[j]))
                    war_wg = r / 128;
            }
        if (s.w_epoch >= b.base_epoch && !ordered_before(b, t, s.w_epoch, s.w_tid, s.w_gen, s.w_clk)) {
            waw = s.w_tid;
            other_pc = s.w_pc;
        }
        if (s.r_epoch == b.epoch && s.r_epoch >= b.base_epoch && s.r_tid != kMany &&
            ordered_before(b, t, s.r_epoch, s.r_tid, s.r_gen, s.r_clk)) {
            // the single reader's read is ordered before (same thread, an mbarrier, a named barrier)
        } else if (s.r_epoch == b.epoch && s.r_epoch >= b.base_epoch && s.r_tid == kMany && !b.vc.empty() &&
                   multi_race(b, t, off + i, war_many)) {
            if (war_many >= 0) war = war_many;  // every reader checked with its own clock
        } else if (s.r_epoch == b.epoch && s.r_epoch >= b.base_epoch) {
            const uint32_t others = s.r_warps & ~(1u << (t.warp & 31));
            if (others) war = 32 * __builtin_ctz(others);
            else if (s.r_tid != t.linear && !(s.r_gen < ws.gen)) war = s.r_tid == kMany ? t.warp * 32 : s.r_tid;
        }
        if (stamp) {
            s.w_epoch = b.epoch;
            s.w_tid = (uint16_t)t.linear;
            s.w_gen = ws.gen;
            s.w_clk = own_clock(b, t);
            s.w_pc = pc;
            s.w_async = async_proxy;
            s.w_fences = (uint32_t)t.proxy_fences.size();
            // The reads before this write are checked above; a later write must be ordered after
            // this one (or is a finding itself), so it is ordered after them too: forget them, or
            // a byte read again and again by different threads across a persistent kernel's
            // tiles would outgrow the per-reader lists.
            s.r_epoch = 0;
            if (s.multi) {
                b.multi.erase(off + i);
                s.multi = 0;
            }
        }
    }
    if (wg)
        add_finding("racecheck",
                    fmt("write of %u bytes at shared address 0x%x that a pending wgmma.mma_async reads (issued, not yet "
                        "retired by wgmma.wait_group)", n, off),
                    pc);
    if (pending)
        add_finding("racecheck",
                    fmt("write of %u bytes at shared address 0x%x whose cp.async has not been waited for", n, off), pc);
    if (waw >= 0)
        add_finding("racecheck",
                    fmt("write of %u bytes at shared address 0x%x races with a write by thread %d (warp %d) not ordered "
                        "before it", n, off, waw, waw >> 5),
                    pc, other_pc);
    if (war >= 0)
        add_finding("racecheck",
                    fmt("write of %u bytes at shared address 0x%x races with a read by another thread of warp %d not "
                        "ordered before it by a barrier or a warp collective", n, off, war >> 5),
                    pc);
    if (war_wg >= 0)
        add_finding("racecheck",
                    fmt("write of %u bytes at shared address 0x%x races with a wgmma.mma_async read by warpgroup %d: its "
                        "wgmma.wait_group is not ordered before the write by a barrier or an mbarrier",
                        n, off, war_wg),
                    pc);
}

// ============================================================================ global memory checks

struct ModuleRange {
    uintptr_t lo, hi;
};
static std::vector<ModuleRange> g_module_ranges;  // read-only data of this library
static std::once_flag g_module_once;

static int collect_ranges(struct dl_phdr_info* info, size_t, void* self) {
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD) continue;
        uintptr_t lo = info->dlpi_addr + ph.p_vaddr, hi = lo + ph.p_memsz;
        if ((uintptr_t)self >= lo && (uintptr_t)self < hi) {
            // `self` lies in this module: record all of its loadable segments.
            for (int j = 0; j < info->dlpi_phnum; ++j) {
                const ElfW(Phdr)& q = info->dlpi_phdr[j];
                if (q.p_type == PT_LOAD) g_module_ranges.push_back({info->dlpi_addr + q.p_vaddr, info->dlpi_addr + q.p_vaddr + q.p_memsz});
            }
            return 1;
        }
    }
    return 0;
}

static bool in_module(uintptr_t a) {
    std::call_once(g_module_once, [] { dl_iterate_phdr(collect_ranges, (void*)&collect_ranges); });
    for (auto& r : g_module_ranges)
        if (a >= r.lo && a < r.hi) return true;
    return false;
}

static Alloc* lookup_alloc(LaunchState& L, uintptr_t a) {
    if (L.last && a - L.last->base < L.last->size) return L.last;
    auto it = std::upper_bound(L.allocs.begin(), L.allocs.end(), a,
                               [](uintptr_t x, const std::shared_ptr<Alloc>& al) { return x < al->base; });
    if (it == L.allocs.begin()) return nullptr;
    Alloc* al = std::prev(it)->get();
    if (a - al->base >= al->size) return nullptr;
    L.last = al;
    L.last_idx = (size_t)(std::prev(it) - L.allocs.begin());
    return al;
}

// Where a stray address lies relative to the allocations around it, for the report.
static std::string nearest_alloc(uintptr_t a) {
    std::shared_lock<std::shared_mutex> lk(g_alloc_mu);
    std::string r;
    auto it = g_allocs.upper_bound(a);
    if (it != g_allocs.begin()) {
        const Alloc& below = *std::prev(it)->second;
        r += fmt(" (%zu bytes past the end of a %zu-byte allocation", (size_t)(a - below.base - below.size), below.size);
        if (it != g_allocs.end()) r += fmt("; %zu bytes before the next one", (size_t)(it->second->base - a));
        r += ")";
    } else if (it != g_allocs.end()) {
        r += fmt(" (%zu bytes before the lowest allocation)", (size_t)(it->second->base - a));
    }
    return r;
}

static void global_access(Block& b, uintptr_t a, uint32_t n, bool write, uintptr_t pc) {
    Alloc* al = lookup_alloc(*b.launch, a);
    if (!al) {
        if (in_module(a)) {
            if (write) fatal("memcheck", fmt("write of %u bytes to read-only kernel data at %#lx", n, (unsigned long)a), pc);
            return;
        }
        fatal("memcheck",
              fmt("%s of %u bytes at address %#lx, which is in no live device allocation%s", write ? "write" : "read", n,
                  (unsigned long)a, nearest_alloc(a).c_str()),
              pc);
    }
    const size_t off = a - al->base;
    if (n > al->size - off)
        fatal("memcheck",
              fmt("%s of %u bytes at offset %zu of a %zu-byte allocation runs %zu bytes past its end",
                  write ? "write" : "read", n, off, al->size, off + n - al->size),
              pc);
    if (LaunchState& L = *b.launch; L.l->op) {
        // streamcheck: the launch's first access to this allocation is checked against its
        // last writer; the launch's writes are recorded when it ends.
        uint8_t& t = L.touched[L.last_idx];
        if (!(t & 1)) {
            t |= 1;
            std::string finding;
            {
                std::lock_guard<std::mutex> sl(g_stream_mu);
                finding = stream_hazard_locked(*L.l->op, *al, write);
            }
            if (!finding.empty())
                add_finding("streamcheck", finding + fmt(" (the launch's first access to it, at offset %zu)", off), pc, 0,
                            false);
        }
        if (write) t |= 2;
    }
    uint8_t* init = al->init.get() + off;
    if (write) {
        memset(init, 1, n);
    } else {
        for (uint32_t i = 0; i < n; ++i)
            if (!init[i]) {
                add_finding("initcheck",
                            fmt("read of %u bytes at offset %zu of a %zu-byte allocation that was never written", n,
                                off, al->size),
                            pc);
                break;
            }
    }
}

// The hook behind every instrumented load and store of kernel code.
static inline void on_access(uintptr_t a, uint32_t n, bool write, uintptr_t pc) {
    Thread* t = tl_thread;
    if (!t) return;  // not inside a kernel (static initialisers of the kernel objects)
    if (a - (uintptr_t)t->stack.lo < t->stack.size) return;  // locals, spills, the parameter copy
    if (!config().checks) return;
    Block& b = *tl_block;
    const uintptr_t sh = a - (uintptr_t)b.arena;
    if (sh < b.arena_cap) {
        shared_bounds(b, (uint32_t)sh, n, write, pc);
        if (write) shared_write(b, *t, (uint32_t)sh, n, pc, true);
        else shared_read(b, *t, (uint32_t)sh, n, pc);
    } else {
        global_access(b, a, n, write, pc);
    }
    maybe_preempt(*t);
}

}  // namespace ak_emu

using namespace ak_emu;

#define AK_ACCESS_HOOKS(N)                                                                              \
    extern "C" AK_HIDDEN void __asan_load##N##_noabort(uintptr_t a) {                                  \
        on_access(a, N, false, (uintptr_t)__builtin_return_address(0));                               \
    }                                                                                                   \
    extern "C" AK_HIDDEN void __asan_store##N##_noabort(uintptr_t a) {                                 \
        on_access(a, N, true, (uintptr_t)__builtin_return_address(0));                                \
    }
AK_ACCESS_HOOKS(1)
AK_ACCESS_HOOKS(2)
AK_ACCESS_HOOKS(4)
AK_ACCESS_HOOKS(8)
AK_ACCESS_HOOKS(16)
extern "C" AK_HIDDEN void __asan_loadN_noabort(uintptr_t a, size_t n) {
    on_access(a, (uint32_t)n, false, (uintptr_t)__builtin_return_address(0));
}
extern "C" AK_HIDDEN void __asan_storeN_noabort(uintptr_t a, size_t n) {
    on_access(a, (uint32_t)n, true, (uintptr_t)__builtin_return_address(0));
}
extern "C" AK_HIDDEN void __asan_handle_no_return() {}

// Undefined behaviour in kernel code (GCC's -fsanitize=signed-integer-overflow,shift,bounds,
// integer-divide-by-zero with recovery): each report is a finding at the kernel source line the
// compiler recorded. The data structures start with the source location (libsanitizer's ABI).
struct UbLocation {
    const char* file;
    uint32_t line, column;
};
static void ub_finding(const void* data, const char* what, uintptr_t pc) {
    if (!tl_block || !tl_thread) return;
    const UbLocation& loc = *static_cast<const UbLocation*>(data);
    const char* f = loc.file ? loc.file : "?";
    if (const char* k = strstr(f, "kernels/")) f = k;
    add_finding("ubcheck", fmt("%s (%s:%u:%u)", what, f, loc.line, loc.column), pc);
}
extern "C" {
AK_HIDDEN void __ubsan_handle_add_overflow(void* d, void*, void*) { ub_finding(d, "signed integer overflow in +", (uintptr_t)__builtin_return_address(0)); }
AK_HIDDEN void __ubsan_handle_sub_overflow(void* d, void*, void*) { ub_finding(d, "signed integer overflow in -", (uintptr_t)__builtin_return_address(0)); }
AK_HIDDEN void __ubsan_handle_mul_overflow(void* d, void*, void*) { ub_finding(d, "signed integer overflow in *", (uintptr_t)__builtin_return_address(0)); }
AK_HIDDEN void __ubsan_handle_negate_overflow(void* d, void*) { ub_finding(d, "signed integer overflow in negation", (uintptr_t)__builtin_return_address(0)); }
AK_HIDDEN void __ubsan_handle_divrem_overflow(void* d, void*, void*) { ub_finding(d, "integer division by zero or overflow", (uintptr_t)__builtin_return_address(0)); }
AK_HIDDEN void __ubsan_handle_shift_out_of_bounds(void* d, void*, void*) { ub_finding(d, "shift out of bounds", (uintptr_t)__builtin_return_address(0)); }
AK_HIDDEN void __ubsan_handle_out_of_bounds(void* d, void*) { ub_finding(d, "array index out of bounds", (uintptr_t)__builtin_return_address(0)); }
}

namespace ak_emu {

// ============================================================================ collectives

static uint32_t b16_bits(const uint32_t reg, int half) { return half ? reg >> 16 : reg & 0xffff; }

static double b16_to_double(uint32_t bits, int dtype) {
    if (dtype == AK_EMU_BF16) {
        uint32_t u = bits << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    // IEEE binary16
    const uint32_t sign = bits >> 15, exp = (bits >> 10) & 0x1f, man = bits & 0x3ff;
    double v;
    if (exp == 0) v = std::ldexp((double)man, -24);
    else if (exp == 31) v = man ? NAN : INFINITY;
    else v = std::ldexp((double)(man | 0x400), (int)exp - 25);
    return sign ? -v : v;
}

// The exact sum of finite doubles, rounded once to float (nearest even). Two's complement
// fixed point with bit 0 worth 2^-kLsb over 12 limbs: spans 2^-400..2^367, enough for products
// of two bf16 (2^-266..2^256) and any float. mma needs it when its addends span more bits than
// a double holds, where a double sum would round before the final rounding to float.
struct ExactSum {
    static const int kLsb = 400, kLimbs = 12;
    uint64_t limb[kLimbs] = {};
    void add(double x) {
        if (x == 0) return;
        int e;
        const int64_t im = (int64_t)std::ldexp(std::frexp(x, &e), 53);  // x = im * 2^(e - 53)
        const int shift = e - 53 + kLsb;
        const unsigned __int128 v = (unsigned __int128)(uint64_t)(im < 0 ? -im : im) << (shift & 63);
        const uint64_t part[2] = {(uint64_t)v, (uint64_t)(v >> 64)};
        unsigned carry = 0;
        for (int i = shift >> 6, j = 0; i < kLimbs; ++i, ++j) {
            const unsigned __int128 p = (unsigned __int128)(j < 2 ? part[j] : 0) + carry;
            const uint64_t old = limb[i];
            limb[i] = im > 0 ? old + (uint64_t)p : old - (uint64_t)p;
            carry = im > 0 ? (unsigned)(((unsigned __int128)old + p) >> 64) : (unsigned)((unsigned __int128)old < p);
        }
    }
    float round() const {
        const bool neg = limb[kLimbs - 1] >> 63;
        uint64_t m[kLimbs];  // magnitude
        unsigned carry = neg;
        for (int i = 0; i < kLimbs; ++i) {
            const unsigned __int128 s = (unsigned __int128)(neg ? ~limb[i] : limb[i]) + carry;
            m[i] = (uint64_t)s;
            carry = (unsigned)(s >> 64);
        }
        int w = kLimbs - 1;
        while (w >= 0 && m[w] == 0) --w;
        if (w < 0) return 0.0f;
        const int top = w * 64 + 63 - __builtin_clzll(m[w]);
        const int q = std::max(top - kLsb - 23, -149);  // weight of the last kept bit: 2^q
        const int lo = q + kLsb - 1;                     // the rounding bit; bits below are sticky
        if (top < lo) return neg ? -0.0f : 0.0f;         // below half the smallest subnormal
        uint64_t win = m[lo >> 6] >> (lo & 63);
        if ((lo & 63) && (lo >> 6) + 1 < kLimbs) win |= m[(lo >> 6) + 1] << (64 - (lo & 63));
        win &= (2ull << (top - lo)) - 1;  // bits lo..top, at most 25
        bool sticky = (lo & 63) && (m[lo >> 6] & ((1ull << (lo & 63)) - 1));
        for (int i = 0; i < (lo >> 6) && !sticky; ++i) sticky = m[i] != 0;
        uint64_t r = win >> 1;
        if ((win & 1) && (sticky || (r & 1))) ++r;
        const float f = (float)std::ldexp((double)r, q);  // exact, or inf past the float range
        return neg ? -f : f;
    }
};

// Whether every value within e of x rounds to f (= (float)x) to nearest: [x - e, x + e] lies
// strictly between the midpoints of f and its neighbours.
static bool rounds_alike(double x, double e, float f) {
    if (std::fabs(f) >= __FLT_MAX__) return false;  // at the overflow boundary: decide exactly
    const auto neighbour = [](float v, bool up) {
        uint32_t u;
        memcpy(&u, &v, 4);
        if ((u << 1) == 0) u = up ? 1u : 0x80000001u;  // +-0 -> +-smallest subnormal
        else if ((u >> 31) != (uint32_t)up) ++u;        // away from zero
        else --u;                                       // towards zero
        memcpy(&v, &u, 4);
        return v;
    };
    return x - e > ((double)f + neighbour(f, false)) / 2 && x + e < ((double)f + neighbour(f, true)) / 2;
}

// Read 16 bytes of shared memory for lane `l` (ldmatrix rows), checked as that lane's read.
static void ldmatrix_row(Block& b, Thread& lt, uint32_t addr, uintptr_t pc, uint16_t out[8]) {
    if (addr % 16 != 0)
        fatal("memcheck", fmt("ldmatrix row address 0x%x of lane %d is not 16-byte aligned", addr, lt.lane), pc);
    if (config().checks) {
        tl_attrib = &lt;  // attribute the access to the lane that gave the address
        shared_bounds(b, addr, 16, false, pc);
        shared_read(b, lt, addr, 16, pc);
        tl_attrib = nullptr;
    } else if ((uint64_t)addr + 16 > b.arena_cap) {
        fatal("memcheck", fmt("ldmatrix row address 0x%x is outside the shared window", addr), pc);
    }
    memcpy(out, b.arena + addr, 16);
}

static void complete(Block& b, WarpState& ws, PendingCollective& pc, std::vector<std::unique_ptr<Thread>>& threads) {
    const int base = (int)(&ws - b.warps.data()) * 32;
    auto lane_thread = [&](int l) -> Thread& { return *threads[base + l]; };
    switch (pc.kind) {
        case C_SYNCWARP:
            break;
        case C_SHFL: {
            for (int l = 0; l < 32; ++l) {
                if (!(pc.mask >> l & 1)) continue;
                Thread& t = lane_thread(l);
                const unsigned bval = t.in.shfl.b & 0x1f, cval = t.in.shfl.c & 0x1f, seg = (t.in.shfl.c >> 8) & 0x1f;
                const int max_lane = (int)((l & seg) | (cval & ~seg)), min_lane = (int)(l & seg);
                int j = 0;
                bool p = false;
                switch (t.in.shfl.mode) {
                    case AK_EMU_SHFL_UP: j = l - (int)bval; p = j >= max_lane; break;
                    case AK_EMU_SHFL_DOWN: j = l + (int)bval; p = j <= max_lane; break;
                    case AK_EMU_SHFL_BFLY: j = l ^ (int)bval; p = j <= max_lane; break;
                    default: j = min_lane | (int)(bval & ~seg); p = j <= max_lane; break;
                }
                if (!p) j = l;
                if (!(pc.mask >> j & 1)) {
                    add_finding_as(t, "synccheck", fmt("shfl.sync of lane %d reads lane %d, which is not in the member mask 0x%08x (undefined value)", l, j, pc.mask), pc.pc);
                    j = l;
                }
                t.out[0] = lane_thread(j).in.shfl.a;
                t.out_pred = p;
            }
            break;
        }
        case C_VOTE: {
            unsigned ballot = 0;
            for (int l = 0; l < 32; ++l)
                if ((pc.mask >> l & 1) && lane_thread(l).in.vote.pred) ballot |= 1u << l;
            for (int l = 0; l < 32; ++l) {
                if (!(pc.mask >> l & 1)) continue;
                Thread& t = lane_thread(l);
                switch (pc.extra) {
                    case AK_EMU_VOTE_ALL: t.out[0] = ballot == pc.mask; break;
                    case AK_EMU_VOTE_ANY: t.out[0] = ballot != 0; break;
                    case AK_EMU_VOTE_UNI: t.out[0] = ballot == 0 || ballot == pc.mask; break;
                    default: t.out[0] = ballot; break;
                }
            }
            break;
        }
        case C_LDMATRIX: {
            const int num = pc.extra & 7, trans = pc.extra >> 3;
            uint16_t m[4][8][8];  // [matrix][row][col]
            for (int l = 0; l < 8 * num; ++l) ldmatrix_row(b, lane_thread(l), lane_thread(l).in.addr, pc.pc, m[l / 8][l % 8]);
            for (int l = 0; l < 32; ++l) {
                Thread& t = lane_thread(l);
                const int r = l / 4, c = 2 * (l % 4);
                for (int i = 0; i < num; ++i) {
                    uint16_t lo, hi;
                    if (trans) {
                        lo = m[i][c][r];
                        hi = m[i][c + 1][r];
                    } else {
                        lo = m[i][r][c];
                        hi = m[i][r][c + 1];
                    }
                    t.out[i] = (uint32_t)lo | ((uint32_t)hi << 16);
                }
            }
            break;
        }
        case C_MMA: {
            const int dtype = pc.extra;
            double A[16][16], B[16][8];
            float C[16][8];
            for (int l = 0; l < 32; ++l) {
                Thread& t = lane_thread(l);
                const int g = l >> 2, q = l & 3;
                // A: a0,a1 (g, 2q..) a2,a3 (g+8, 2q..) a4,a5 (g, 2q+8..) a6,a7 (g+8, 2q+8..)
                for (int r = 0; r < 4; ++r)
                    for (int h = 0; h < 2; ++h) {
                        const int row = g + ((r & 1) ? 8 : 0), col = 2 * q + h + ((r & 2) ? 8 : 0);
                        A[row][col] = b16_to_double(b16_bits(t.in.mma.a[r], h), dtype);
                    }
                // B: b0,b1 (k 2q.., n g)  b2,b3 (k 2q+8.., n g)
                for (int r = 0; r < 2; ++r)
                    for (int h = 0; h < 2; ++h) B[2 * q + h + 8 * r][g] = b16_to_double(b16_bits(t.in.mma.b[r], h), dtype);
                // C: c0,c1 (g, 2q..) c2,c3 (g+8, 2q..)
                for (int i = 0; i < 4; ++i) C[g + (i >= 2 ? 8 : 0)][2 * q + (i & 1)] = t.in.mma.c[i];
            }
            for (int l = 0; l < 32; ++l) {
                Thread& t = lane_thread(l);
                const int g = l >> 2, q = l & 3;
                for (int i = 0; i < 4; ++i) {
                    const int row = g + (i >= 2 ? 8 : 0), col = 2 * q + (i & 1);
                    // Products of 16-bit floats are exact in double, and TwoSum gives the exact
                    // error of each addition, so the sum is rounded once: (float)acc when the
                    // errors cannot move it across a float rounding boundary, else the exact sum.
                    double acc = C[row][col], err = 0;
                    for (int k = 0; k < 16; ++k) {
                        const double p = A[row][k] * B[k][col], s = acc + p, pp = s - acc;
                        err += std::fabs((acc - (s - pp)) + (p - pp));
                        acc = s;
                    }
                    t.outf[i] = (float)acc;
                    if (err != 0 && std::isfinite(acc) && !rounds_alike(acc, 2 * err, t.outf[i])) {
                        ExactSum sum;
                        sum.add(C[row][col]);
                        for (int k = 0; k < 16; ++k) sum.add(A[row][k] * B[k][col]);
                        t.outf[i] = sum.round();
                    }
                }
            }
            break;
        }
        case C_ELECT: {
            // "elect.sync": one leader among the lanes of membermask, the same for all of them.
            // The ISA names no rule for the choice: the lowest lane, or under the random schedule
            // any member, so a kernel that assumes lane 0 is caught.
            int leader = __builtin_ctz(pc.mask);
            if (config().schedule == Schedule::Random) {
                const int k = (int)(rng_next(b.rng) % (uint64_t)__builtin_popcount(pc.mask));
                unsigned m = pc.mask;
                for (int i = 0; i < k; ++i) m &= m - 1;
                leader = __builtin_ctz(m);
            }
            for (int l = 0; l < 32; ++l) {
                if (!(pc.mask >> l & 1)) continue;
                lane_thread(l).out[0] = (uint32_t)leader;
                lane_thread(l).out_pred = l == leader;
            }
            break;
        }
        case C_STMATRIX: {
            // "stmatrix": lane 8i + r gives the address of row r of matrix i; element (r, c) of
            // matrix i is in register i of lane 4r + c/2, half c % 2 (.trans: lane 4c + r/2, half
            // r % 2, i.e. the fragment of the transposed matrix).
            const int num = pc.extra & 7, trans = pc.extra >> 3;
            for (int l = 0; l < 8 * num; ++l) {
                Thread& lt = lane_thread(l);
                const int i = l / 8, r = l % 8;
                const uint32_t addr = lt.in.stm.addr;
                if (addr % 16 != 0)
                    fatal("memcheck", fmt("stmatrix row address 0x%x of lane %d is not 16-byte aligned", addr, l), pc.pc);
                uint16_t row[8];
                for (int c = 0; c < 8; ++c) {
                    const int src = trans ? 4 * c + r / 2 : 4 * r + c / 2, half = trans ? r % 2 : c % 2;
                    row[c] = (uint16_t)b16_bits(lane_thread(src).in.stm.r[i], half);
                }
                if (config().checks) {
                    tl_attrib = &lt;
                    shared_bounds(b, addr, 16, true, pc.pc);
                    shared_write(b, lt, addr, 16, pc.pc, true);
                    tl_attrib = nullptr;
                } else if ((uint64_t)addr + 16 > b.arena_cap) {
                    fatal("memcheck", fmt("stmatrix row address 0x%x is outside the shared window", addr), pc.pc);
                }
                memcpy(b.arena + addr, row, 16);
            }
            break;
        }
    }
}

// Arrive at a warp collective; returns when the whole member group has arrived and the result
// is in this lane's out slots.
// Lanes must meet at the same kind of collective with the same mask and shape. (Instruction
// addresses are not compared: the host compiler may duplicate one source instruction.)
static void collective(Thread& t, uint8_t kind, unsigned mask, int extra, uintptr_t pc) {
    Block& b = *tl_block;
    WarpState& ws = b.warps[t.warp];
    const unsigned bit = 1u << t.lane;
    if (mask & ~ws.present)
        fatal("synccheck",
              fmt("%s with member mask 0x%08x names lanes that do not exist in this warp (present 0x%08x)", coll_name(kind),
                  mask, ws.present),
              pc);
    if (!(mask & bit))
        fatal("synccheck", fmt("%s executed by lane %d, which is not in its member mask 0x%08x", coll_name(kind), t.lane, mask), pc);
    if (mask & ws.exited)
        fatal("synccheck", fmt("%s waits for lanes 0x%08x that have exited", coll_name(kind), mask & ws.exited), pc);
    PendingCollective* p = nullptr;
    for (auto& q : ws.pending)
        if (q.mask & bit) p = &q;
    if (!p) {
        for (auto& q : ws.pending)
            if (q.mask & mask)
                fatal("synccheck",
                      fmt("%s with mask 0x%08x overlaps a pending %s with mask 0x%08x", coll_name(kind), mask,
                          coll_name(q.kind), q.mask),
                      pc);
        ws.pending.push_back({kind, extra, mask, 0, pc});
        p = &ws.pending.back();
    } else if (p->kind != kind || p->mask != mask || p->extra != extra) {
        fatal("synccheck",
              fmt("lanes of one warp diverge at warp-synchronous instructions: %s (mask 0x%08x) here, %s (mask 0x%08x) "
                  "elsewhere",
                  coll_name(kind), mask, coll_name(p->kind), p->mask),
              pc);
    }
    p->arrived |= bit;
    if (p->arrived != p->mask) {
        block_here(t, Wait::Collective, pc);
        return;
    }
    PendingCollective done = *p;
    ws.pending.erase(ws.pending.begin() + (p - ws.pending.data()));
    complete(b, ws, done, b.w->threads);
    ws.gen++;
    for (int l = 0; l < 32; ++l)
        if ((done.mask >> l & 1) && l != t.lane) set_runnable(b, t.warp * 32 + l);
}

// ============================================================================ Hopper (sm_90)

// archcheck: a Hopper instruction on a device presenting compute capability 8.x.
static void hopper_gate(const char* what, uintptr_t pc) {
    if (config().cc_major >= 9) return;
    add_finding("archcheck",
                fmt("%s is an sm_90 instruction, but the device presents compute capability %d.%d "
                    "(ATTN_KERNELS_EMU_CC)", what, config().cc_major, config().cc_minor),
                pc);
}

// ---- vector clocks (racecheck across mbarrier phases and named barriers)

static void vc_enable(Block& b) {
    if (!b.vc.empty()) return;
    const size_t n = (size_t)b.nthreads;
    b.vc.assign(n * n, 0);
    for (size_t i = 0; i < n; ++i) b.vc[i * n + i] = 1;
}

// Release: `acc` joins the thread's clock, then the thread's own entry advances (its later
// accesses are not covered).
static void vc_release(Block& b, Thread& t, std::vector<uint32_t>& acc) {
    vc_enable(b);
    const size_t n = (size_t)b.nthreads;
    if (acc.size() != n) acc.assign(n, 0);
    uint32_t* mine = &b.vc[t.linear * n];
    for (size_t i = 0; i < n; ++i) acc[i] = std::max(acc[i], mine[i]);
    mine[t.linear]++;
}

static void vc_acquire(Block& b, Thread& t, const std::vector<uint32_t>& acc) {
    if (acc.empty()) return;
    vc_enable(b);
    const size_t n = (size_t)b.nthreads;
    uint32_t* mine = &b.vc[t.linear * n];
    for (size_t i = 0; i < n; ++i) mine[i] = std::max(mine[i], acc[i]);
}

// ---- proxies ("Memory Consistency Model": proxies; "membar / fence": fence.proxy.async)

// A shared byte last written through the generic proxy (st.shared, stmatrix, cp.async) and then
// accessed by the async proxy (a wgmma.mma_async descriptor operand, a tensor copy's write): the
// writing thread must have executed fence.proxy.async after its write, and that fence must be
// ordered before the access (the same thread, a block-wide barrier since, or a release the
// accessing thread acquired). Generic reads followed by an async write are not checked: CUTLASS's
// pipelines hand a consumed stage back to TMA with an mbarrier arrival alone.
static bool proxy_fenced(const Block& b, const Thread& t, const ShadowByte& s) {
    if (s.w_epoch < b.base_epoch || s.w_async) return true;
    const auto& fences = b.w->threads[s.w_tid]->proxy_fences;
    if (s.w_fences >= fences.size()) return false;
    const uint32_t epoch = fences[s.w_fences].first, clk = fences[s.w_fences].second;
    if (s.w_tid == t.linear || epoch < b.epoch) return true;
    return !b.vc.empty() && b.vc[(size_t)t.linear * b.nthreads + s.w_tid] >= (clk == kNoClock ? 1u : clk);
}

static void proxy_finding(const char* access, uint32_t addr, const ShadowByte& s, uintptr_t pc) {
    add_finding("racecheck",
                fmt("%s shared address 0x%x, written by thread %d through the generic proxy with no fence.proxy.async "
                    "after that write ordered before this async-proxy access",
                    access, addr, s.w_tid),
                pc, s.w_pc);
}

// ---- mbarrier ("Parallel Synchronization and Communication Instructions: mbarrier")

static const int32_t kTxMax = (1 << 20) - 1;  // tx-count range [-(2^20 - 1), 2^20 - 1]

static MBarrier& mbar_at(Block& b, uint32_t addr, const char* what, uintptr_t pc) {
    auto it = b.mbars.find(addr);
    if (it == b.mbars.end())
        fatal("synccheck", fmt("%s on shared address 0x%x, which no mbarrier.init initialised in this block", what, addr), pc);
    return it->second;
}

// "Phase Completion of the mbarrier object": pending arrivals and tx-count both zero.
static void mbar_maybe_complete(Block& b, uint32_t addr, MBarrier& m) {
    if (m.pending != 0 || m.tx != 0) return;
    m.phase++;
    m.pending = m.expected;
    for (auto& r : m.async_bytes)
        for (uint32_t i = 0; i < r.second; ++i) b.w->shadow[r.first + i].pending = 0;
    m.async_bytes.clear();
    m.done = m.acc;
    std::fill(m.acc.begin(), m.acc.end(), 0);
    for (int i = 0; i < b.nthreads; ++i) {
        Thread& w = *b.w->threads[i];
        if (w.wait == Wait::MBar && w.wait_addr == addr) set_runnable(b, i);
    }
}

static void mbar_tx(Block& b, uint32_t addr, MBarrier& m, int64_t delta, const char* what, uintptr_t pc) {
    const int64_t tx = (int64_t)m.tx + delta;
    if (tx > kTxMax || tx < -kTxMax) {
        add_finding("synccheck",
                    fmt("%s takes the tx-count of the mbarrier at 0x%x to %lld, outside [-(2^20 - 1), 2^20 - 1] (tx-count %s)",
                        what, addr, (long long)tx, tx < 0 ? "underflow: more bytes completed than expected" : "overflow"),
                    pc);
    }
    m.tx = (int32_t)std::max<int64_t>(std::min<int64_t>(tx, kTxMax), -kTxMax);
}

// ---- warpgroup collectives (.sync.aligned over 4 consecutive warps)

enum WgKind : uint8_t { W_MMA, W_FENCE, W_COMMIT, W_WAIT, W_SETMAXNREG };
static const char* wg_name(int k) {
    static const char* n[] = {"wgmma.mma_async.sync.aligned", "wgmma.fence.sync.aligned", "wgmma.commit_group.sync.aligned",
                              "wgmma.wait_group.sync.aligned", "setmaxnreg.sync.aligned"};
    return n[k];
}

// Arrive at a warpgroup-wide instruction; the last thread to arrive runs `work` for all 128, then
// every thread returns.
template <typename F>
static void wg_collective(Thread& t, uint8_t kind, int extra, uintptr_t pc, F&& work) {
    Block& b = *tl_block;
    const int wg = t.warp / 4;
    if (4 * wg + 3 >= b.nwarps || b.warps[4 * wg + 3].present != 0xffffffffu)
        fatal("synccheck",
              fmt("%s needs a whole warpgroup (4 consecutive complete warps); warp %d's warpgroup of this %d-thread "
                  "block is incomplete", wg_name(kind), t.warp, b.nthreads),
              pc);
    for (int w = 4 * wg; w < 4 * wg + 4; ++w)
        if (b.warps[w].exited)
            fatal("synccheck", fmt("%s waits for threads of warpgroup %d that have exited", wg_name(kind), wg), pc);
    WgState& s = b.wgs[wg];
    if (s.arrived == 0) {
        s.kind = kind;
        s.extra = extra;
        s.pc = pc;
    } else if (s.kind != kind || s.extra != extra) {
        fatal("synccheck",
              fmt("threads of warpgroup %d diverge at .sync.aligned instructions: %s (%d) here, %s (%d) elsewhere", wg,
                  wg_name(kind), extra, wg_name(s.kind), s.extra),
              pc);
    }
    if (++s.arrived < 128) {
        block_here(t, Wait::Collective, pc);
        return;
    }
    s.arrived = 0;
    work(s, 128 * wg);
    for (int i = 128 * wg; i < 128 * wg + 128; ++i)
        if (i != t.linear) set_runnable(b, i);
}

// ---- wgmma ("Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions")

// The poison the accumulator registers hold between mma_async and its wait_group (a signalling
// NaN with a payload no arithmetic produces): results are never visible before the wait.
static const uint32_t kWgPoison = 0x7fa5c3e1u;

// "Matrix Descriptor Format" and "Shared Memory Matrix Layout", 16-bit elements: the shared
// address of element (row, k) of an operand (row < 64 for A, < N for B: its M or N index; k < 16).
// Addresses are in 16-byte chunks of 8 elements; the swizzle modes have rows of W = 32/64/128
// bytes and XOR the chunk index (address bits 4..) with the address bits from 7 up (log2(W/16)
// bits): the pattern repeats every 8W bytes of the shared window.
// K-major (8 elements of K per chunk). No swizzle: core matrices of 8 rows x 16 bytes, (row/8,
// k/8) at start + (row/8) SBO + (k/8) LBO, rows 16 bytes apart. Swizzled: a row holds W/2
// elements of K, 8-row groups SBO apart (LBO unused).
// MN-major (8 elements of M or N per chunk, chunk c = row/8). No swizzle: core matrices of 8 K
// rows x 16 bytes, chunk c at c SBO, K rows 16 bytes apart, 8-row K groups LBO apart. Swizzled: a
// K row is W bytes, W/16 chunks of M/N; the next W/2 elements of M/N are LBO away, the K rows W
// bytes apart and 8-row K groups SBO apart.
static uint32_t desc_addr(uint64_t desc, int row, int k, bool mn_major) {
    const uint32_t start = (uint32_t)(desc & 0x3fff) << 4, lbo = (uint32_t)((desc >> 16) & 0x3fff) << 4,
                   sbo = (uint32_t)((desc >> 32) & 0x3fff) << 4;
    const int mode = (int)(desc >> 62);
    const uint32_t r = (uint32_t)row, kk = (uint32_t)k;
    if (mode == 0)
        return mn_major ? start + (r / 8) * sbo + (kk / 8) * lbo + (kk % 8) * 16 + (r % 8) * 2
                        : start + (r / 8) * sbo + (kk / 8) * lbo + (r % 8) * 16 + (kk % 8) * 2;
    const uint32_t width = mode == 1 ? 128 : mode == 2 ? 64 : 32, chunks = width / 16;
    const uint32_t lin = mn_major ? start + (r / 8 / chunks) * lbo + (r / 8 % chunks) * 16 + (kk % 8) * width +
                                        (kk / 8) * sbo + (r % 8) * 2
                                  : start + (r / 8) * sbo + (r % 8) * width + kk * 2;
    return lin ^ (((lin >> 7) & (chunks - 1)) << 4);
}

static void desc_check(uint64_t desc, const char* which, uintptr_t pc) {
    if ((desc >> 49) & 7)
        fatal("synccheck",
              fmt("wgmma.mma_async: the %s descriptor's base offset is %u; the emulated device models base offset 0 only "
                  "(matrices whose swizzle pattern starts at its repeat boundary)", which, (unsigned)((desc >> 49) & 7)),
              pc);
}

// Read the shared-memory operands of `op` (initcheck; bounds were checked at issue).
static void wgmma_load(Block& b, WgmmaOp& op) {
    if (op.loaded) return;
    op.loaded = true;
    bool uninit = false;
    auto elem = [&](uint64_t desc, int row, int k, bool mn) {
        const uint32_t a = desc_addr(desc, row, k, mn);
        if (b.w->shadow[a].w_epoch < b.base_epoch || b.w->shadow[a + 1].w_epoch < b.base_epoch) uninit = true;
        uint16_t v;
        memcpy(&v, b.arena + a, 2);
        return b16_to_double(v, op.dtype);
    };
    if (op.a_desc)
        for (int r = 0; r < 64; ++r)
            for (int k = 0; k < 16; ++k) op.A[r * 16 + k] = elem(op.da, r, k, op.trans_a);
    for (int n = 0; n < op.n; ++n)
        for (int k = 0; k < 16; ++k) op.B[k * op.n + n] = elem(op.db, n, k, op.trans_b);
    if (uninit && config().checks)
        add_finding("initcheck", "wgmma.mma_async reads shared memory never written in this block", op.pc);
}

// d = sum_k a[k] b[k] + c, products exact in double, rounded once to f32 (as mma.sync above).
static float dot16_round(double c, const double* a, const double* bcol, int bstride) {
    double acc = c, err = 0;
    for (int k = 0; k < 16; ++k) {
        const double p = a[k] * bcol[k * bstride], s = acc + p, pp = s - acc;
        err += std::fabs((acc - (s - pp)) + (p - pp));
        acc = s;
    }
    float f = (float)acc;
    if (err != 0 && std::isfinite(acc) && !rounds_alike(acc, 2 * err, f)) {
        ExactSum sum;
        sum.add(c);
        for (int k = 0; k < 16; ++k) sum.add(a[k] * bcol[k * bstride]);
        f = sum.round();
    }
    return f;
}

static void wgmma_compute(Block& b, WgState& s, size_t i) {
    WgmmaOp& op = *s.live[i];
    if (op.computed) return;
    wgmma_load(b, op);
    const std::vector<float>* c = nullptr;
    if (op.scale_d) {
        if (op.chained >= 0) {
            wgmma_compute(b, s, (size_t)op.chained);
            c = &s.live[(size_t)op.chained]->D;
        } else {
            c = &op.C;
        }
    }
    op.D.assign((size_t)64 * op.n, 0.f);
    for (int r = 0; r < 64; ++r)
        for (int n = 0; n < op.n; ++n)
            op.D[(size_t)r * op.n + n] = dot16_round(c ? (double)(*c)[(size_t)r * op.n + n] : 0.0, &op.A[r * 16], &op.B[n], op.n);
    op.computed = true;
}

// Fragment of the 64xN f32 accumulator ("Register Fragments", wgmma .m64nNk16 matrix D): thread
// t of the warpgroup (warp w = t / 32, lane l), register i: row 16w + l/4 + 8 ((i/2) % 2), column
// 8 (i/4) + 2 (l % 4) + i % 2.
static inline int d_row(int t, int i) { return 16 * (t / 32) + (t % 32) / 4 + 8 * ((i >> 1) & 1); }
static inline int d_col(int t, int i) { return 8 * (i >> 2) + 2 * (t % 4) + (i & 1); }
// A from registers ("Register Fragments", matrix A, .f16/.bf16): register r (2 elements, half h
// low first): row 16w + l/4 + 8 (r % 2), column 2 (l % 4) + h + 8 (r / 2).
static inline int a_row(int t, int r) { return 16 * (t / 32) + (t % 32) / 4 + 8 * (r & 1); }
static inline int a_col(int t, int r, int h) { return 2 * (t % 4) + h + 8 * (r >> 1); }

// Retire live[0..end): compute, write the results into the registers (unless a later pending op
// accumulates into the same ones), release the shared bytes.
static void wgmma_retire(Block& b, WgState& s, size_t end, int base, bool write, uintptr_t pc) {
    for (size_t i = 0; i < end; ++i) {
        WgmmaOp& op = *s.live[i];
        if (write) wgmma_compute(b, s, i);
        if (write && !op.superseded) {
            bool disturbed = false;
            for (int t = 0; t < 128; ++t) {
                float* d = op.d[t];
                for (int j = 0; j < op.n / 2; ++j) {
                    uint32_t u;
                    memcpy(&u, &d[j], 4);
                    if (u != kWgPoison) disturbed = true;
                    d[j] = op.D[(size_t)d_row(t, j) * op.n + d_col(t, j)];
                }
            }
            if (disturbed && config().checks)
                add_finding_as(*b.w->threads[base], "racecheck",
                               "accumulator registers of a wgmma.mma_async were written between its issue and the "
                               "wgmma.wait_group that retires it",
                               op.pc);
        }
        // A from registers: the fragment must stay as issued until the wait ("the contents of the
        // registers ... must not be modified" before wgmma.wait_group).
        if (write && !op.a_desc && config().checks) {
            bool changed = false;
            for (int t = 0; t < 128 && !changed; ++t)
                if (op.a_ptr[t] && memcmp(op.a_ptr[t], op.a_regs[t], sizeof op.a_regs[t]) != 0) changed = true;
            if (changed)
                add_finding_as(*b.w->threads[base], "racecheck",
                               "A-operand registers of a wgmma.mma_async were written between its issue and the "
                               "wgmma.wait_group that retires it",
                               op.pc);
        }
        const uint16_t reader = (uint16_t)base;
        const uint32_t clk = own_clock(b, *b.w->threads[base]);
        for (uint32_t a : op.bytes) {
            ShadowByte& sb = b.w->shadow[a];
            if (sb.wg_pending) sb.wg_pending--;
            // The read, as of this wait_group (its operands may be overwritten once it is ordered).
            if (sb.wg_r_epoch != b.epoch || sb.wg_r_epoch < b.base_epoch) {
                sb.wg_r_epoch = b.epoch;
                sb.wg_r_tid[0] = reader, sb.wg_r_clk[0] = clk;
                sb.wg_r_tid[1] = kNone;
            } else if (sb.wg_r_tid[0] == reader) {
                sb.wg_r_clk[0] = clk;
            } else {
                if (sb.wg_r_tid[1] != kNone && sb.wg_r_tid[1] != reader) sb.wg_r_tid[0] = sb.wg_r_tid[1], sb.wg_r_clk[0] = sb.wg_r_clk[1];
                sb.wg_r_tid[1] = reader, sb.wg_r_clk[1] = clk;  // a third warpgroup: the two latest are kept
            }
        }
    }
    (void)pc;
    // A pending op chained on a retired one takes its result as C now.
    for (size_t i = end; i < s.live.size(); ++i) {
        WgmmaOp& op = *s.live[i];
        if (op.chained < 0 || op.chained >= (int)end) continue;
        if (write) wgmma_compute(b, s, (size_t)op.chained);
        op.C = s.live[(size_t)op.chained]->D;
        if (op.C.empty()) op.C.assign((size_t)64 * op.n, 0.f);
        op.chained = -1;
    }
    s.live.erase(s.live.begin(), s.live.begin() + (ptrdiff_t)end);
    for (auto& op : s.live)
        if (op->chained >= 0) op->chained -= (int)end;
    s.open_from -= std::min(s.open_from, end);
    std::vector<size_t> ends;
    for (size_t e : s.group_ends)
        if (e > end) ends.push_back(e - end);
    s.group_ends = ends;
}

// A thread exits: wgmma groups its warpgroup never waited for are a finding (once), then dropped.
static void wg_on_exit(Block& b, Thread& t) {
    if (b.wgs.empty() || t.warp / 4 >= (int)b.wgs.size()) return;
    WgState& s = b.wgs[t.warp / 4];
    if (s.live.empty()) return;
    add_finding("synccheck",
                fmt("thread exits with %zu wgmma.mma_async operations of its warpgroup not retired by a wgmma.wait_group "
                    "(their results are never read)", s.live.size()),
                s.live[0]->pc);
    wgmma_retire(b, s, s.live.size(), 128 * (t.warp / 4), false, 0);
}

// ============================================================================ cp.async

static void land(Block& b, const AsyncCopy& c) {
    memcpy(b.arena + c.dst, c.src, c.src_size);
    memset(b.arena + c.dst + c.src_size, 0, c.size - c.src_size);
}

static void retire_group(Block& b, Thread& t, std::vector<AsyncCopy>& g, uintptr_t pc) {
    Worker& w = *b.w;
    for (auto& c : g) {
        if (!c.landed) land(b, c);
        for (uint32_t i = 0; i < c.size; ++i) w.shadow[c.dst + i].pending = 0;
        if (config().checks) shared_write(b, t, c.dst, c.size, pc, true);
    }
}

// ============================================================================ block execution

static void fiber_entry() {
    Thread& t = *tl_thread;
    Block& b = *tl_block;
    t.wait = Wait::Running;
    b.launch->l->fn(b.launch->l->args);
    // Thread exit: outstanding copies land (nothing waits for them), barriers and collectives
    // stop counting this thread.
    for (auto& g : t.groups) retire_group(b, t, g, 0);
    retire_group(b, t, t.open, 0);
    wg_on_exit(b, t);
    t.groups.clear();
    t.open.clear();
    t.wait = Wait::Done;
    b.done++;
    b.live--;
    WarpState& ws = b.warps[t.warp];
    ws.exited |= 1u << t.lane;
    for (auto& q : ws.pending)
        if (q.mask & (1u << t.lane))
            fatal("synccheck", fmt("lane %d exited while its warp waits for it at %s (mask 0x%08x)", t.lane, coll_name(q.kind), q.mask), q.pc);
    if (b.bar_arrived > 0 && b.bar_arrived == b.live) {
        // The exiting thread was the last one holding up barrier 0 (PTX: exit releases it).
        b.epoch = ++b.w->epoch;
        b.bar_arrived = 0;
        for (int i = 0; i < b.nthreads; ++i)
            if (b.w->threads[i]->wait == Wait::Barrier) set_runnable(b, i);
    }
    switch_to_scheduler(t);
    __builtin_unreachable();
}

#if !defined(__x86_64__)
static void fiber_entry_uc() { fiber_entry(); }
#endif

static void start_fiber(Worker& w, Thread& t) {
    if (!t.stack.lo) t.stack = new_stack();
#if defined(__x86_64__)
    uintptr_t top = ((uintptr_t)t.stack.lo + t.stack.size) & ~(uintptr_t)15;
    uintptr_t* sp = (uintptr_t*)top;
    *--sp = 0;                             // fiber_entry's (never used) return address slot
    *--sp = (uintptr_t)&fiber_entry;       // where ak_emu_fiber_switch's `ret` goes
    for (int i = 0; i < 6; ++i) *--sp = 0;  // rbp rbx r12 r13 r14 r15
    uint32_t mxcsr;
    uint16_t fcw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fcw));
    *--sp = (uintptr_t)mxcsr | ((uintptr_t)fcw << 32);
    t.sp = sp;
#else
    getcontext(&t.uc);
    t.uc.uc_stack.ss_sp = t.stack.lo;
    t.uc.uc_stack.ss_size = t.stack.size;
    t.uc.uc_link = nullptr;
    makecontext(&t.uc, fiber_entry_uc, 0);
#endif
    (void)w;
}

static void run_block(LaunchState& L, ak_emu_dim3 bidx) {
    const Launch& l = *L.l;
    Worker& w = worker();
    Block b;
    b.launch = &L;
    b.w = &w;
    b.idx = bidx;
    b.nthreads = (int)(l.block[0] * l.block[1] * l.block[2]);
    b.nwarps = (b.nthreads + 31) / 32;
    b.live = b.nthreads;
    b.warps.assign(b.nwarps, WarpState());
    for (int i = 0; i < b.nwarps; ++i) {
        const int lanes = std::min(32, b.nthreads - 32 * i);
        b.warps[i].present = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
    }
    b.rng = config().seed * 0x9E3779B97F4A7C15ull + ((uint64_t)bidx.x << 40 ^ (uint64_t)bidx.y << 20 ^ bidx.z) + 1;
    if (!b.rng) b.rng = 1;
    // Shared window: dynamic array, a red zone, then room for static arrays (48 KB and zones).
    b.dynamic = l.dynamic_shared;
    b.static_top = (b.dynamic + 64 + 127) & ~127u;
    b.arena_cap = b.static_top + 48 * 1024 + 64 * 64;
    if (w.arena.size() < b.arena_cap) w.arena.resize(b.arena_cap);
    if (w.shadow.size() < b.arena_cap) w.shadow.resize(b.arena_cap);
    b.arena = w.arena.data();
    memset(b.arena, 0xff, b.arena_cap);  // stale shared memory reads as NaN, never as zeros
    if (w.epoch > 0xF0000000u) {
        memset((void*)w.shadow.data(), 0, w.shadow.size() * sizeof(ShadowByte));
        w.epoch = 0;
    }
    b.base_epoch = ++w.epoch;
    b.epoch = b.base_epoch;
    b.runnable.assign((b.nthreads + 63) / 64, 0);
    b.wgs.assign((size_t)(b.nwarps + 3) / 4, WgState());
    if (w.wg_dirty) {
        for (auto& sb : w.shadow) sb.wg_pending = 0;
        w.wg_dirty = false;
    }
    while ((int)w.threads.size() < b.nthreads) w.threads.push_back(std::make_unique<Thread>());
    for (int i = 0; i < b.nthreads; ++i) {
        Thread& t = *w.threads[i];
        t.linear = i;
        t.warp = i / 32;
        t.lane = i % 32;
        t.tid = {(unsigned)(i % l.block[0]), (unsigned)((i / l.block[0]) % l.block[1]), (unsigned)(i / (l.block[0] * l.block[1]))};
        t.wait = Wait::Ready;
        t.open.clear();
        t.groups.clear();
        t.proxy_fences.clear();
        start_fiber(w, t);
        set_runnable(b, i);
    }
    tl_block = &b;
    for (;;) {
        if (b.aborted) break;
        const int next = pick(b);
        if (next < 0) {
            if (b.done == b.nthreads) break;
            // Nothing can run: report where every unfinished thread waits.
            std::string where;
            int shown = 0;
            for (int i = 0; i < b.nthreads && shown < 4; ++i) {
                Thread& t = *w.threads[i];
                if (t.wait == Wait::Done) continue;
                std::string at = t.wait == Wait::Barrier ? "__syncthreads" : "a warp collective";
                if (t.wait == Wait::MBar) {
                    auto m = b.mbars.find(t.wait_addr);
                    at = fmt("an mbarrier wait at shared address 0x%x for the phase of parity %u", t.wait_addr, t.wait_parity);
                    if (m != b.mbars.end())
                        at += fmt(" (phase %u in progress: %u of %u arrivals pending, tx-count %d; it can never complete)",
                                  m->second.phase, m->second.pending, m->second.expected, m->second.tx);
                } else if (t.wait == Wait::NamedBar) {
                    at = fmt("bar.sync %u (%d of %d threads arrived)", t.wait_addr, b.named[t.wait_addr & 15].arrived,
                             b.named[t.wait_addr & 15].count);
                }
                where += fmt("%sthread %d at %s", shown ? "; " : "", i, at.c_str());
                shown++;
            }
            tl_thread = nullptr;
            L.seen.clear();
            add_finding("synccheck", fmt("deadlock: no thread of the block can proceed (%d of %d unfinished: %s)", b.nthreads - b.done, b.nthreads, where.c_str()),
                        w.threads[0]->wait_pc);
            L.fatal = true;
            break;
        }
        clear_runnable(b, next);
        Thread& t = *w.threads[next];
        tl_thread = &t;
#if defined(__x86_64__)
        ak_emu_fiber_switch(&w.sched_sp, t.sp);
#else
        swapcontext(&w.sched_uc, &t.uc);
#endif
        tl_thread = nullptr;
    }
    for (auto& st : b.wgs)
        if (!st.live.empty()) w.wg_dirty = true;
    for (auto& kv : b.mbars)  // tensor copies whose phase never completed
        for (auto& r : kv.second.async_bytes)
            for (uint32_t i = 0; i < r.second; ++i) w.shadow[r.first + i].pending = 0;
    tl_block = nullptr;
    tl_thread = nullptr;
}

// ============================================================================ reports

static std::string module_path_of(uintptr_t pc, uintptr_t* base) {
    Dl_info info;
    if (pc && dladdr((void*)pc, &info) && info.dli_fname) {
        *base = (uintptr_t)info.dli_fbase;
        return info.dli_fname;
    }
    return "";
}

// "file:line" of the kernel source behind a PC (addr2line, run only when there is a finding).
static std::string source_line(uintptr_t pc) {
    if (!pc) return "?";
    uintptr_t base = 0;
    std::string path = module_path_of(pc, &base);
    if (path.empty()) return fmt("%#lx", (unsigned long)pc);
    // The return address points after the call; step back into the calling instruction.
    std::string cmd = fmt("addr2line -i -e '%s' %#lx 2>/dev/null", path.c_str(), (unsigned long)(pc - base - 1));
    std::string out;
    if (FILE* f = popen(cmd.c_str(), "r")) {
        char line[1024];
        std::vector<std::string> frames;
        while (fgets(line, sizeof line, f)) {
            std::string s(line);
            while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
            // Trim the directory up to kernels/ so lines read like the sources.
            size_t k = s.rfind("kernels/");
            if (k != std::string::npos) s = s.substr(k);
            size_t disc = s.find(" (discriminator");
            if (disc != std::string::npos) s = s.substr(0, disc);
            frames.push_back(s);
        }
        pclose(f);
        for (size_t i = 0; i < frames.size(); ++i) out += (i ? " inlined in " : "") + frames[i];
    }
    return out.empty() || out.find("??") == 0 ? fmt("%s+%#lx", path.c_str(), (unsigned long)(pc - base)) : out;
}

static std::string render(const LaunchState& L) {
    std::string r;
    for (auto& f : L.findings) {
        r += fmt("emulated device %s: kernel %s, block (%u,%u,%u), thread (%u,%u,%u): ", f.kind.c_str(), L.l->name,
                 f.block.x, f.block.y, f.block.z, f.thread.x, f.thread.y, f.thread.z);
        r += f.what;
        r += " at " + source_line(f.pc);
        if (f.other_pc) r += "; the other access at " + source_line(f.other_pc);
        r += "\n";
    }
    if (L.dropped) r += fmt("emulated device: %zu more findings not shown\n", L.dropped);
    if (!r.empty()) r += "emulated device settings: " + describe_config() + "\n";
    return r;
}

Outcome launch(const Launch& l, std::string& report) {
    if (Block* outer = tl_block) {
        (void)outer;
        report = "emulated device: a kernel launched from inside a kernel";
        return Outcome::Fatal;
    }
    if (KernelEntry* e = find_entry(l.name)) e->launches.fetch_add(1);
    LaunchState L;
    L.l = &l;
    {
        std::shared_lock<std::shared_mutex> lk(g_alloc_mu);
        L.allocs.reserve(g_allocs.size());
        for (auto& kv : g_allocs) L.allocs.push_back(kv.second);
    }
    if (l.op) L.touched.assign(L.allocs.size(), 0);
    const uint64_t nblocks = (uint64_t)l.grid[0] * l.grid[1] * l.grid[2];
    std::vector<uint64_t> order;
    if (config().schedule == Schedule::Random && nblocks <= (1u << 24)) {
        order.resize(nblocks);
        for (uint64_t i = 0; i < nblocks; ++i) order[i] = i;
        uint64_t s = config().seed * 0x2545F4914F6CDD1Dull + nblocks + 7;
        for (uint64_t i = nblocks; i > 1; --i) std::swap(order[i - 1], order[rng_next(s) % i]);
    }
    for (uint64_t k = 0; k < nblocks && !L.fatal; ++k) {
        uint64_t i = k;
        if (!order.empty()) i = order[k];
        else if (config().schedule == Schedule::Reverse) i = nblocks - 1 - k;
        const ak_emu_dim3 bidx = {(unsigned)(i % l.grid[0]), (unsigned)((i / l.grid[0]) % l.grid[1]),
                                  (unsigned)(i / ((uint64_t)l.grid[0] * l.grid[1]))};
        run_block(L, bidx);
    }
    if (l.op) {
        // The launch's writes (those it made before any fatal stop) become the allocations'
        // last writes.
        std::lock_guard<std::mutex> sl(g_stream_mu);
        for (size_t i = 0; i < L.allocs.size(); ++i)
            if (L.touched[i] & 2) stream_record_locked(*l.op, *L.allocs[i]);
    }
    report = render(L);
    if (L.fatal) return Outcome::Fatal;
    return L.findings.empty() ? Outcome::Ok : Outcome::Findings;
}

}  // namespace ak_emu

// ============================================================================ emu_api.h

extern "C" {

ak_emu_dim3 ak_emu_thread_idx(void) { return tl_thread->tid; }
ak_emu_dim3 ak_emu_block_idx(void) { return tl_block->idx; }
ak_emu_dim3 ak_emu_block_dim(void) {
    const Launch& l = *tl_block->launch->l;
    return {l.block[0], l.block[1], l.block[2]};
}
ak_emu_dim3 ak_emu_grid_dim(void) {
    const Launch& l = *tl_block->launch->l;
    return {l.grid[0], l.grid[1], l.grid[2]};
}

AK_NOINLINE void ak_emu_syncthreads(void) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    Thread& t = *tl_thread;
    Block& b = *tl_block;
    if (!b.warps[t.warp].pending.empty())
        fatal("synccheck", "__syncthreads reached while lanes of this warp wait at a warp collective", pc);
    // Different warps may reach barrier 0 at different instructions (PTX allows it); the host
    // compiler also duplicates code, so instruction addresses are not compared here.
    b.bar_arrived++;
    if (b.bar_arrived < b.live) {
        block_here(t, Wait::Barrier, pc);
        return;
    }
    b.bar_arrived = 0;
    b.epoch = ++b.w->epoch;
    for (int i = 0; i < b.nthreads; ++i)
        if (i != t.linear && b.w->threads[i]->wait == Wait::Barrier) set_runnable(b, i);
}

AK_NOINLINE void ak_emu_syncwarp(unsigned mask) {
    collective(*tl_thread, C_SYNCWARP, mask, 0, (uintptr_t)__builtin_return_address(0));
}

AK_NOINLINE unsigned ak_emu_shfl(int mode, unsigned mask, unsigned a, unsigned b, unsigned c, int* pred) {
    Thread& t = *tl_thread;
    t.in.shfl = {a, b, c, (unsigned)mode};
    collective(t, C_SHFL, mask, mode, (uintptr_t)__builtin_return_address(0));
    if (pred) *pred = t.out_pred;
    return t.out[0];
}

AK_NOINLINE unsigned ak_emu_vote(int mode, unsigned mask, int pred) {
    Thread& t = *tl_thread;
    t.in.vote = {pred != 0, mode};
    collective(t, C_VOTE, mask, mode, (uintptr_t)__builtin_return_address(0));
    return t.out[0];
}

unsigned ak_emu_activemask(void) {
    // Lanes of the warp that have not exited (the emulator keeps a warp converged between
    // collectives, so every live lane counts as active).
    Thread& t = *tl_thread;
    WarpState& ws = tl_block->warps[t.warp];
    return ws.present & ~ws.exited;
}

uint32_t ak_emu_cvta_to_shared(const void* p) {
    Block& b = *tl_block;
    const uintptr_t off = (uintptr_t)p - (uintptr_t)b.arena;
    if (off >= b.arena_cap)
        fatal("memcheck", fmt("cvta.to.shared of %p, which is not a shared-memory address", p), (uintptr_t)__builtin_return_address(0));
    return (uint32_t)off;
}

void* ak_emu_dynamic_shared(void) { return tl_block->arena; }

void* ak_emu_static_shared(const void* site, size_t bytes, size_t align) {
    Block& b = *tl_block;
    for (auto& r : b.statics)
        if (r.site == site) return b.arena + r.off;
    if (align < 16) align = 16;
    const uint32_t off = (uint32_t)((b.static_top + align - 1) & ~(align - 1));
    const uint64_t static_bytes = off + bytes - ((b.dynamic + 64 + 127) & ~127u);
    if (off + bytes + 64 > b.arena_cap || static_bytes > 48 * 1024)
        fatal("memcheck", fmt("static shared arrays exceed 48 KB (%zu more bytes requested)", bytes), (uintptr_t)__builtin_return_address(0));
    if ((uint64_t)b.dynamic + static_bytes > b.launch->l->max_shared_per_block)
        fatal("memcheck",
              fmt("static (%llu) + dynamic (%u) shared memory exceeds the device's %u bytes per block",
                  (unsigned long long)static_bytes, b.dynamic, b.launch->l->max_shared_per_block),
              (uintptr_t)__builtin_return_address(0));
    b.statics.push_back({off, (uint32_t)bytes, site});
    b.static_top = off + (uint32_t)bytes + 64;
    return b.arena + off;
}

AK_NOINLINE void ak_emu_cp_async(uint32_t dst, const void* src, int cp_size, int src_size) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    Thread& t = *tl_thread;
    Block& b = *tl_block;
    if (!(cp_size == 4 || cp_size == 8 || cp_size == 16) || src_size < 0 || src_size > cp_size)
        fatal("memcheck", fmt("cp.async with cp-size %d and src-size %d", cp_size, src_size), pc);
    if (dst % cp_size != 0 || (src_size > 0 && (uintptr_t)src % cp_size != 0))
        fatal("memcheck", fmt("cp.async of %d bytes with misaligned operands (shared 0x%x, global %p)", cp_size, dst, src), pc);
    shared_bounds(b, dst, cp_size, true, pc);
    if (config().checks) {
        if (src_size > 0) global_access(b, (uintptr_t)src, src_size, false, pc);
        shared_write(b, t, dst, cp_size, pc, false);
    } else if (src_size > 0 && !mem_valid((uintptr_t)src, src_size)) {
        fatal("memcheck", fmt("cp.async reads %d bytes at %p, outside every device allocation", src_size, src), pc);
    }
    AsyncCopy c{dst, (const uint8_t*)src, (uint8_t)cp_size, (uint8_t)src_size, false};
    bool now = config().landing == Landing::AtIssue || (config().landing == Landing::Random && (rng_next(b.rng) & 1));
    if (now) {
        land(b, c);
        c.landed = true;
    }
    for (int i = 0; i < cp_size; ++i) b.w->shadow[dst + i].pending = 1;
    t.open.push_back(c);
    maybe_preempt(t);
}

void ak_emu_cp_async_commit(void) {
    Thread& t = *tl_thread;
    t.groups.push_back(std::move(t.open));
    t.open.clear();
}

AK_NOINLINE void ak_emu_cp_async_wait(int n) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    Thread& t = *tl_thread;
    Block& b = *tl_block;
    size_t keep = n < 0 ? 0 : (size_t)n;
    if (t.groups.size() <= keep) return;
    const size_t retire = t.groups.size() - keep;
    for (size_t i = 0; i < retire; ++i) retire_group(b, t, t.groups[i], pc);
    t.groups.erase(t.groups.begin(), t.groups.begin() + retire);
}

AK_NOINLINE void ak_emu_ldmatrix(int num, int trans, uint32_t addr, uint32_t* regs) {
    Thread& t = *tl_thread;
    if (!(num == 1 || num == 2 || num == 4)) fatal("synccheck", fmt("ldmatrix .x%d", num), (uintptr_t)__builtin_return_address(0));
    t.in.addr = addr;
    collective(t, C_LDMATRIX, 0xffffffffu, num | (trans ? 8 : 0), (uintptr_t)__builtin_return_address(0));
    for (int i = 0; i < num; ++i) regs[i] = t.out[i];
}

AK_NOINLINE void ak_emu_mma_m16n8k16(int dtype, float* d, const uint32_t* a, const uint32_t* b, const float* c) {
    Thread& t = *tl_thread;
    for (int i = 0; i < 4; ++i) t.in.mma.a[i] = a[i];
    t.in.mma.b[0] = b[0];
    t.in.mma.b[1] = b[1];
    for (int i = 0; i < 4; ++i) t.in.mma.c[i] = c[i];
    collective(t, C_MMA, 0xffffffffu, dtype, (uintptr_t)__builtin_return_address(0));
    for (int i = 0; i < 4; ++i) d[i] = t.outf[i];
}

float ak_emu_ex2_approx(float x, int ftz) {
    if (ftz && std::fpclassify(x) == FP_SUBNORMAL) x = std::copysign(0.f, x);
    float y = (float)std::exp2((double)x);
    if (ftz && std::fpclassify(y) == FP_SUBNORMAL) y = 0.f;
    return y;
}

AK_NOINLINE void ak_emu_prefetch_l2(const void* p) {
    // A prefetch never faults on the device; the emulator only notes an address outside every
    // allocation, which is almost always an indexing mistake.
    if (config().checks && tl_block && !mem_valid((uintptr_t)p, 1) && !in_module((uintptr_t)p))
        add_finding("memcheck", fmt("prefetch.global.L2 of %p, outside every device allocation", p), (uintptr_t)__builtin_return_address(0));
}

void ak_emu_register_kernel(const char* module, const char* name, ak_emu_trampoline fn) {
    std::lock_guard<std::mutex> lk(g_registry_mu);
    auto e = std::make_unique<KernelEntry>();
    e->module = module;
    e->name = name;
    e->fn = fn;
    registry().push_back(std::move(e));
}


// ---------------------------------------------------------------------------- Hopper

AK_NOINLINE void ak_emu_mbar_init(uint32_t addr, unsigned count) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    Block& b = *tl_block;
    hopper_gate("mbarrier.init", pc);
    if (addr % 8 != 0) fatal("memcheck", fmt("mbarrier.init at shared address 0x%x, not 8-byte aligned", addr), pc);
    shared_bounds(b, addr, 8, true, pc);
    if (count < 1 || count > (1u << 20) - 1)
        fatal("synccheck", fmt("mbarrier.init with count %u, outside [1, 2^20 - 1]", count), pc);
    vc_enable(b);
    MBarrier m;
    m.expected = m.pending = count;
    b.mbars[addr] = std::move(m);
}

AK_NOINLINE uint64_t ak_emu_mbar_arrive(uint32_t addr, unsigned count, unsigned tx) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    Thread& t = *tl_thread;
    Block& b = *tl_block;
    const char* what = tx ? "mbarrier.arrive.expect_tx" : "mbarrier.arrive";
    hopper_gate(what, pc);
    MBarrier& m = mbar_at(b, addr, what, pc);
    if (tx) mbar_tx(b, addr, m, (int64_t)tx, what, pc);  // expect-tx first, then arrive-on
    if (count < 1 || count > m.pending)
        fatal("synccheck",
              fmt("%s with count %u on the mbarrier at 0x%x, whose current phase has %u arrivals pending", what, count, addr,
                  m.pending),
              pc);
    // The state token: the phase the arrival belongs to (opaque to the kernel).
    const uint64_t token = 0xa6e0000000000000ull | m.phase;
    vc_release(b, t, m.acc);
    m.pending -= count;
    mbar_maybe_complete(b, addr, m);
    maybe_preempt(t);
    return token;
}

AK_NOINLINE void ak_emu_mbar_expect_tx(uint32_t addr, unsigned tx) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    Block& b = *tl_block;
    hopper_gate("mbarrier.expect_tx", pc);
    MBarrier& m = mbar_at(b, addr, "mbarrier.expect_tx", pc);
    mbar_tx(b, addr, m, (int64_t)tx, "mbarrier.expect_tx", pc);
}

AK_NOINLINE void ak_emu_mbar_complete_tx(uint32_t addr, unsigned tx) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    Thread& t = *tl_thread;
    Block& b = *tl_block;
    hopper_gate("mbarrier.complete_tx", pc);
    MBarrier& m = mbar_at(b, addr, "mbarrier.complete_tx", pc);
    mbar_tx(b, addr, m, -(int64_t)tx, "mbarrier.complete_tx", pc);
    // The bytes' writes (made before by the issuing thread) are ordered before the phase's end.
    vc_release(b, t, m.acc);
    mbar_maybe_complete(b, addr, m);
    maybe_preempt(t);
}

// test_wait / try_wait ("mbarrier.test_wait / mbarrier.try_wait"): with .parity, whether the
// phase of that parity has completed: the current phase (in progress) when its parity matches,
// else the immediately preceding one, complete. With a state token, whether the token's phase
// has completed. try_wait blocks until then (a deadlock when it never can), except that under
// the random schedule it may time out and return 0, as the ISA allows.
AK_NOINLINE int ak_emu_mbar_wait(uint32_t addr, uint64_t state_or_parity, int parity, int blocking) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    Thread& t = *tl_thread;
    Block& b = *tl_block;
    const char* what = blocking ? (parity ? "mbarrier.try_wait.parity" : "mbarrier.try_wait")
                                : (parity ? "mbarrier.test_wait.parity" : "mbarrier.test_wait");
    hopper_gate(what, pc);
    if (!parity && (state_or_parity >> 52) != 0xa6e)
        fatal("synccheck", fmt("%s with a state that no mbarrier.arrive returned (0x%llx)", what, (unsigned long long)state_or_parity), pc);
    for (;;) {
        MBarrier& m = mbar_at(b, addr, what, pc);
        const bool done = parity ? (m.phase & 1) != (uint32_t)(state_or_parity & 1)
                                 : m.phase > (uint32_t)(state_or_parity & 0xffffffffu);
        if (done) {
            vc_acquire(b, t, m.done);
            maybe_preempt(t);
            return 1;
        }
        if (!blocking) {
            maybe_preempt(t);
            return 0;
        }
        if (config().schedule == Schedule::Random && rng_next(b.rng) % 4 == 0) return 0;  // a time-out
        t.wait_addr = addr;
        t.wait_parity = (uint32_t)(state_or_parity & 1);
        block_here(t, Wait::MBar, pc);
    }
}

AK_NOINLINE void ak_emu_wgmma_fence(void) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    hopper_gate("wgmma.fence", pc);
    wg_collective(*tl_thread, W_FENCE, 0, pc, [](WgState& s, int) { s.fenced = true; });
}

AK_NOINLINE void ak_emu_wgmma_commit(void) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    hopper_gate("wgmma.commit_group", pc);
    wg_collective(*tl_thread, W_COMMIT, 0, pc, [](WgState& s, int) {
        // An empty group is legal (wait_group counts it).
        s.group_ends.push_back(s.live.size());
        s.open_from = s.live.size();
    });
}

AK_NOINLINE void ak_emu_wgmma_wait(int n) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    hopper_gate("wgmma.wait_group", pc);
    Block& b = *tl_block;
    wg_collective(*tl_thread, W_WAIT, n, pc, [&](WgState& s, int base) {
        const size_t keep = n < 0 ? 0 : (size_t)n;
        if (s.group_ends.size() > keep) wgmma_retire(b, s, s.group_ends[s.group_ends.size() - keep - 1], base, true, pc);
        s.fenced = false;  // the kernel may now touch the registers: the next mma_async needs a fence
    });
}

AK_NOINLINE void ak_emu_wgmma(int n, int dtype, float* d, const uint32_t* a_regs, uint64_t desc_a, uint64_t desc_b,
                              int scale_d, int trans_a, int trans_b) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    Thread& t = *tl_thread;
    Block& b = *tl_block;
    hopper_gate("wgmma.mma_async", pc);
    if (n < 8 || n > 256 || n % 8 || (dtype != AK_EMU_F16 && dtype != AK_EMU_BF16))
        fatal("synccheck", fmt("wgmma.mma_async m64n%dk16 with dtype %d: N is a multiple of 8 in [8, 256], f16 or bf16", n, dtype), pc);
    if (trans_a && a_regs)
        fatal("synccheck", "wgmma.mma_async with A from registers and imm-trans-a (only a descriptor A can be MN-major)", pc);
    t.wg_d = d;
    if (a_regs) memcpy(t.wg_a, a_regs, sizeof t.wg_a);
    t.wg_a_ptr = a_regs;
    t.wg_da = desc_a;
    t.wg_db = desc_b;
    const int extra = n | dtype << 9 | (a_regs ? 1 : 0) << 10 | (scale_d ? 1 : 0) << 11 | (trans_a ? 1 : 0) << 12 |
                      (trans_b ? 1 : 0) << 13;
    wg_collective(t, W_MMA, extra, pc, [&](WgState& s, int base) {
        const std::unique_ptr<Thread>* th = &b.w->threads[base];
        auto op = std::make_shared<WgmmaOp>();
        op->n = n;
        op->dtype = dtype;
        op->scale_d = scale_d != 0;
        op->a_desc = a_regs == nullptr;
        op->trans_a = trans_a != 0;
        op->trans_b = trans_b != 0;
        op->da = th[0]->wg_da;
        op->db = th[0]->wg_db;
        op->pc = pc;
        for (int i = 1; i < 128; ++i)
            if (th[i]->wg_db != op->db || (op->a_desc && th[i]->wg_da != op->da))
                fatal("synccheck", "wgmma.mma_async with descriptors that differ between the threads of the warpgroup", pc);
        if (!s.fenced && config().checks)
            add_finding("synccheck",
                        "wgmma.mma_async without a wgmma.fence.sync.aligned since the kernel started or the warpgroup's "
                        "last wgmma.wait_group (register accesses are not ordered before it)",
                        pc);
        if (op->a_desc) desc_check(op->da, "A", pc);
        desc_check(op->db, "B", pc);
        // Every shared byte it reads, bounds-checked now and flagged until retirement.
        std::vector<uint32_t> addrs;
        if (op->a_desc)
            for (int r = 0; r < 64; ++r)
                for (int k = 0; k < 16; ++k) addrs.push_back(desc_addr(op->da, r, k, op->trans_a));
        for (int c = 0; c < n; ++c)
            for (int k = 0; k < 16; ++k) addrs.push_back(desc_addr(op->db, c, k, op->trans_b));
        Thread& last = t;
        for (uint32_t a : addrs) {
            if (a % 2) fatal("memcheck", fmt("wgmma.mma_async operand element at odd shared address 0x%x", a), pc);
            tl_attrib = &last;
            shared_bounds(b, a, 2, false, pc);
            tl_attrib = nullptr;
            for (uint32_t k = 0; k < 2; ++k) {
                ShadowByte& sb = b.w->shadow[a + k];
                // Writes by other threads must be ordered before the issue (barrier, mbarrier).
                if (config().checks && sb.w_epoch >= b.base_epoch && sb.w_tid / 128 != (uint32_t)base / 128 &&
                    !ordered_before(b, last, sb.w_epoch, sb.w_tid, sb.w_gen, sb.w_clk))
                    add_finding("racecheck",
                                fmt("wgmma.mma_async reads shared address 0x%x, written by thread %d with no barrier or "
                                    "mbarrier ordering the write before the issue", a + k, sb.w_tid),
                                pc, sb.w_pc);
                if (config().checks && !proxy_fenced(b, last, sb)) proxy_finding("wgmma.mma_async reads", a + k, sb, pc);
                if (sb.wg_pending < 255) sb.wg_pending++;
                op->bytes.push_back(a + k);
            }
        }
        op->A.assign(64 * 16, 0.0);
        op->B.assign((size_t)16 * n, 0.0);
        if (!op->a_desc)
            for (int i = 0; i < 128; ++i) {
                memcpy(op->a_regs[i], th[i]->wg_a, sizeof op->a_regs[i]);
                op->a_ptr[i] = th[i]->wg_a_ptr;
            }
        if (!op->a_desc)
            for (int i = 0; i < 128; ++i)
                for (int r = 0; r < 4; ++r)
                    for (int h = 0; h < 2; ++h)
                        op->A[a_row(i, r) * 16 + a_col(i, r, h)] = b16_to_double(b16_bits(th[i]->wg_a[r], h), dtype);
        // Accumulating into the registers of a pending op of the same shape chains on its result.
        int prev = -1;
        for (int j = (int)s.live.size() - 1; j >= 0 && prev < 0; --j)
            if (s.live[(size_t)j]->d[0] == th[0]->wg_d) prev = j;
        if (prev >= 0) {
            WgmmaOp& p = *s.live[(size_t)prev];
            for (int i = 0; i < 128; ++i)
                if (p.d[i] != th[i]->wg_d || p.n != n)
                    fatal("synccheck",
                          "wgmma.mma_async accumulates into registers of a pending wgmma.mma_async of another shape or "
                          "fragment (retire it with wgmma.wait_group first)",
                          pc);
            p.superseded = true;
            if (op->scale_d) op->chained = prev;
        } else if (op->scale_d) {
            op->C.assign((size_t)64 * n, 0.f);
            for (int i = 0; i < 128; ++i)
                for (int j = 0; j < n / 2; ++j) op->C[(size_t)d_row(i, j) * n + d_col(i, j)] = th[i]->wg_d[j];
        }
        for (int i = 0; i < 128; ++i) {
            op->d[i] = th[i]->wg_d;
            for (int j = 0; j < n / 2; ++j) memcpy(&th[i]->wg_d[j], &kWgPoison, 4);
        }
        const bool now = config().landing == Landing::AtIssue || (config().landing == Landing::Random && (rng_next(b.rng) & 1));
        s.live.push_back(op);
        if (now) wgmma_load(b, *op);
    });
}

AK_NOINLINE unsigned ak_emu_elect_sync(unsigned mask, int* pred) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    Thread& t = *tl_thread;
    hopper_gate("elect.sync", pc);
    collective(t, C_ELECT, mask, 0, pc);
    if (pred) *pred = t.out_pred;
    return t.out[0];
}

AK_NOINLINE void ak_emu_fence_proxy_async(void) {
    Thread& t = *tl_thread;
    const Block& b = *tl_block;
    hopper_gate("fence.proxy.async", (uintptr_t)__builtin_return_address(0));
    if (config().checks) t.proxy_fences.emplace_back(b.epoch, own_clock(b, t));
}

AK_NOINLINE void ak_emu_bar_named(int id, int count, int arrive_only) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    Thread& t = *tl_thread;
    Block& b = *tl_block;
    if (id < 0 || id > 15) fatal("synccheck", fmt("bar %d: barrier ids are 0..15", id), pc);
    if (count == 0 && !arrive_only && id == 0) {
        ak_emu_syncthreads();
        return;
    }
    if (count <= 0 || count % 32 || count > b.nthreads)
        fatal("synccheck", fmt("bar.%s %d, %d: the thread count must be a positive multiple of 32 up to the block's %d",
                               arrive_only ? "arrive" : "sync", id, count, b.nthreads),
              pc);
    if (id == 0)
        fatal("synccheck", "bar.sync / bar.arrive 0 with a thread count: barrier 0 is __syncthreads (every thread)", pc);
    if (!b.warps[t.warp].pending.empty())
        fatal("synccheck", "bar.sync / bar.arrive reached while lanes of this warp wait at a warp collective", pc);
    NamedBarrier& nb = b.named[id];
    if (nb.arrived == 0) nb.count = count;
    else if (nb.count != count)
        fatal("synccheck", fmt("bar %d used with thread counts %d and %d in one phase", id, nb.count, count), pc);
    vc_release(b, t, nb.acc);
    if (++nb.arrived == nb.count) {
        // Everyone who arrived is released and sees every arrival's accesses.
        std::vector<uint32_t> acc = nb.acc;
        nb.arrived = 0;
        std::fill(nb.acc.begin(), nb.acc.end(), 0);
        if (count == b.live) b.epoch = ++b.w->epoch;  // the whole block: as __syncthreads
        for (int i = 0; i < b.nthreads; ++i) {
            Thread& o = *b.w->threads[i];
            if (o.wait == Wait::NamedBar && o.wait_addr == (uint32_t)id) {
                vc_acquire(b, o, acc);
                set_runnable(b, i);
            }
        }
        if (!arrive_only) vc_acquire(b, t, acc);
        return;
    }
    if (arrive_only) return;
    t.wait_addr = (uint32_t)id;
    block_here(t, Wait::NamedBar, pc);
}

AK_NOINLINE void ak_emu_setmaxnreg(int inc, unsigned n) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    Thread& t = *tl_thread;
    Block& b = *tl_block;
    const char* what = inc ? "setmaxnreg.inc" : "setmaxnreg.dec";
    hopper_gate(what, pc);
    // "setmaxnreg": imm-reg-count in [24, 256], a multiple of 8, the same for the warpgroup.
    if (n < 24 || n > 256 || n % 8)
        add_finding("synccheck", fmt("%s.sync.aligned.u32 %u: the count must be a multiple of 8 in [24, 256]", what, n), pc);
    t.wg_val = n;
    wg_collective(t, W_SETMAXNREG, inc, pc, [&](WgState&, int base) {
        for (int i = 1; i < 128; ++i)
            if (b.w->threads[base + i]->wg_val != b.w->threads[base]->wg_val) {
                add_finding("synccheck",
                            fmt("%s with register counts that differ within the warpgroup (%u and %u)", what,
                                b.w->threads[base]->wg_val, b.w->threads[base + i]->wg_val),
                            pc);
                break;
            }
    });
}

AK_NOINLINE void ak_emu_stmatrix(int num, int trans, uint32_t addr, const uint32_t* regs) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    Thread& t = *tl_thread;
    hopper_gate("stmatrix", pc);
    if (!(num == 1 || num == 2 || num == 4)) fatal("synccheck", fmt("stmatrix .x%d", num), pc);
    t.in.stm.addr = addr;
    for (int i = 0; i < 4; ++i) t.in.stm.r[i] = i < num ? regs[i] : 0;
    collective(t, C_STMATRIX, 0xffffffffu, num | (trans ? 8 : 0), pc);
}


// "cp.async.bulk.tensor" (tile mode, CTA-local destination, an mbarrier for completion): the box
// lands when the copy is issued, stamped as the issuing thread's writes, which its complete_tx
// releases to the threads that then see the phase complete (so reading the box without waiting
// on the mbarrier is a racecheck finding).
AK_NOINLINE void ak_emu_tma_load(int rank, uint32_t dst, const void* tmap, const int* coords, uint32_t mbar) {
    const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    Thread& t = *tl_thread;
    Block& b = *tl_block;
    hopper_gate("cp.async.bulk.tensor", pc);
    uint64_t w[16];
    if (!mem_valid((uintptr_t)tmap, sizeof w) && !in_module((uintptr_t)tmap) &&
        (uintptr_t)tmap - (uintptr_t)t.stack.lo >= t.stack.size)
        fatal("memcheck", fmt("cp.async.bulk.tensor: tensor map at %p is in no device allocation or kernel parameter", tmap), pc);
    memcpy(w, tmap, sizeof w);
    TensorMap m;
    if (!tensor_map_decode(w, m))
        fatal("memcheck", fmt("cp.async.bulk.tensor: %p holds no tensor map made by cuTensorMapEncodeTiled", tmap), pc);
    if ((int)m.rank != rank)
        fatal("synccheck", fmt("cp.async.bulk.tensor.%dd with a tensor map of rank %u", rank, m.rank), pc);
    if (dst % 128) fatal("memcheck", fmt("cp.async.bulk.tensor destination 0x%x is not 128-byte aligned", dst), pc);
    const uint32_t span = m.swizzle == 1 ? 32 : m.swizzle == 2 ? 64 : m.swizzle == 3 ? 128 : 0;
    if (span && m.box[0] * m.esize != span)
        fatal("synccheck",
              fmt("cp.async.bulk.tensor: a box row of %u bytes under the %u-byte swizzle; the emulated device models rows "
                  "of exactly the swizzle span", m.box[0] * m.esize, span),
              pc);
    MBarrier& bar = mbar_at(b, mbar, "cp.async.bulk.tensor (its mbarrier)", pc);
    uint32_t n[5] = {1, 1, 1, 1, 1};
    uint64_t total = 1;
    for (int i = 0; i < rank; ++i) {
        n[i] = (m.box[i] + m.estride[i] - 1) / m.estride[i];
        total *= n[i];
    }
    const uint64_t bytes = total * m.esize;
    shared_bounds(b, dst, (uint32_t)bytes, true, pc);
    uint64_t idx[5] = {0, 0, 0, 0, 0};
    uint8_t zero[8] = {};
    for (uint64_t e = 0; e < total; ++e) {
        uint64_t r = e;
        bool in = true;
        uint64_t gaddr = m.addr;
        for (int i = 0; i < rank; ++i) {
            idx[i] = r % n[i];
            r /= n[i];
            const int64_t g = (int64_t)coords[i] + (int64_t)idx[i] * m.estride[i];
            if (g < 0 || (uint64_t)g >= m.dims[i]) in = false;
            else gaddr += (uint64_t)g * m.strides[i];
        }
        uint32_t a = dst + (uint32_t)(e * m.esize);
        if (span) a ^= ((a >> 7) & (span / 16 - 1)) << 4;
        const uint8_t* src = zero;
        if (in) {
            if (config().checks) global_access(b, (uintptr_t)gaddr, m.esize, false, pc);
            else if (!mem_valid((uintptr_t)gaddr, m.esize))
                fatal("memcheck", fmt("cp.async.bulk.tensor reads %#lx, outside every device allocation", (unsigned long)gaddr), pc);
            src = (const uint8_t*)(uintptr_t)gaddr;
        }
        if (config().checks) {
            for (uint32_t i = 0; i < m.esize; ++i)
                if (!proxy_fenced(b, t, b.w->shadow[a + i])) {
                    proxy_finding("cp.async.bulk.tensor writes", a + i, b.w->shadow[a + i], pc);
                    break;
                }
            shared_write(b, t, a, m.esize, pc, true, true);
        }
        memcpy(b.arena + a, src, m.esize);
        // Not visible to anyone until the mbarrier phase completes (racecheck until then).
        for (uint32_t i = 0; i < m.esize; ++i) b.w->shadow[a + i].pending = 1;
        bar.async_bytes.emplace_back(a, m.esize);
    }
    MBarrier& mb = mbar_at(b, mbar, "cp.async.bulk.tensor (its mbarrier)", pc);
    mbar_tx(b, mbar, mb, -(int64_t)bytes, "cp.async.bulk.tensor complete_tx", pc);
    vc_release(b, t, mb.acc);
    mbar_maybe_complete(b, mbar, mb);
    maybe_preempt(t);
}

}  // extern "C"
