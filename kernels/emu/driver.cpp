// The emulated device's CUDA driver: the subset of the driver API that cudarc calls for this
// crate, implemented on the CPU. The library that holds it has the soname libcuda.so, so once it
// is loaded (Gpu::emulated) cudarc's dlopen("libcuda.so") finds it, and the crate's production
// launch path (parameter structs, grid, shared-memory sizes, module cache) runs unchanged.
//
// Device memory is host memory registered with the execution engine (runtime.cpp), which checks
// every kernel access against it. Work on every stream runs to completion when it is enqueued,
// which is one valid CUDA execution; events record wall-clock time, meaningless as GPU time.
// Because that execution hides missing ordering between streams, streamcheck keeps the order
// CUDA guarantees as vector clocks (streams, events, the host) and reports an operation that
// touches an allocation whose last write on another stream is not ordered before it.
// Arguments are validated as the driver does; an invalid one returns its CUDA error code.
// Exported: the library is built with hidden visibility, the driver API is its interface.
#pragma GCC visibility push(default)
#include <cuda.h>
#pragma GCC visibility pop

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "emu/runtime.h"

using namespace ak_emu;

namespace {

struct EmuContext {
    int magic = 0x656d7543;
};
EmuContext g_ctx;

struct EmuStream {
    unsigned flags = 0;
    // streamcheck, under g_sc_mu
    uint32_t id = 0;
    VClock vc;              // the operations of every stream ordered before this stream's next one
    uint64_t host_seen = 0; // g_host_gen when the host clock was last joined into vc
};
struct EmuEvent {
    std::chrono::steady_clock::time_point at;
    bool recorded = false;
    VClock vc;  // streamcheck: the recording stream's clock at the record, under g_sc_mu
};
struct EmuFunction {
    std::string name;
    ak_emu_trampoline fn;
    int max_dynamic_shared = 48 * 1024;
};
struct EmuModule {
    std::unordered_map<std::string, EmuFunction*> functions;
};

std::mutex g_mu;
bool g_initialised = false;
thread_local CUcontext tl_current = nullptr;
thread_local std::string tl_last_report;
std::unordered_set<void*> g_streams, g_events, g_modules, g_functions;

const int kMaxSharedOptin = 227 * 1024;  // presented as an H100 (sm_90)
const int kMaxSharedOptinSm80 = 163 * 1024;

int max_shared_optin() { return config().cc_major >= 9 ? kMaxSharedOptin : kMaxSharedOptinSm80; }

template <typename T>
bool known(std::unordered_set<void*>& set, T* p) {
    std::lock_guard<std::mutex> lk(g_mu);
    return set.count((void*)p) != 0;
}

CUresult need_init() { return g_initialised ? CUDA_SUCCESS : CUDA_ERROR_NOT_INITIALIZED; }

bool is_legacy(CUstream s) { return s == nullptr || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD; }
bool stream_ok(CUstream s) { return is_legacy(s) || known(g_streams, s); }

// ---------------------------------------------------------------------------- streamcheck
//
// Each stream has a vector clock; each operation enqueued on it ticks the stream's own
// component. cuEventRecord copies the stream's clock into the event, cuStreamWaitEvent joins the
// event's clock into the stream. Whatever the host has waited for (cuStreamSynchronize,
// cuEventSynchronize, cuCtxSynchronize, a successful cuStreamQuery/cuEventQuery, and the copies
// the CUDA documentation makes host-synchronous) is joined into the host clock, which every
// stream joins before its next operation. The legacy stream (0, CU_STREAM_LEGACY, and here also
// the per-thread stream) is one stream; it is ordered with streams created without
// CU_STREAM_NON_BLOCKING as CUDA orders them. Allocations keep their last writer (runtime.cpp).

std::mutex g_sc_mu;  // stream, event and host clocks; g_mu may be taken while it is held, never the reverse
EmuStream g_legacy{0, kLegacyStream, {}, 0};
uint32_t g_next_stream_id = kLegacyStream + 1;
VClock g_host;
uint64_t g_host_gen = 1;

bool sc_on() { return config().streamcheck; }

EmuStream* stream_of(CUstream s) { return is_legacy(s) ? &g_legacy : (EmuStream*)s; }
bool blocking(const EmuStream* st) { return st != &g_legacy && !(st->flags & CU_STREAM_NON_BLOCKING); }

// Make `st`'s clock current with the host's and the legacy stream's implicit ordering (g_sc_mu held).
void sc_catch_up_locked(EmuStream* st) {
    if (st->host_seen != g_host_gen) {
        st->vc.join(g_host);
        st->host_seen = g_host_gen;
    }
    // The legacy stream waits for all work of the blocking streams, and they wait for it.
    if (st == &g_legacy) {
        std::lock_guard<std::mutex> lk(g_mu);
        for (void* p : g_streams)
            if (blocking((EmuStream*)p)) st->vc.join(((EmuStream*)p)->vc);
    } else if (blocking(st)) {
        st->vc.join(g_legacy.vc);
    }
}

// An operation enqueued on `s`: its clock (stream 0, i.e. unchecked, when streamcheck is off).
StreamOp sc_enqueue(CUstream s, std::string what) {
    StreamOp op;
    if (!sc_on()) return op;
    EmuStream* st = stream_of(s);
    std::lock_guard<std::mutex> lk(g_sc_mu);
    sc_catch_up_locked(st);
    op.stream = st->id;
    op.clock = st->vc.tick(st->id);
    op.vc = st->vc;
    op.what = std::move(what);
    return op;
}

// The host has waited for everything `vc` covers.
void sc_host_join(const VClock& vc) {
    if (!sc_on()) return;
    std::lock_guard<std::mutex> lk(g_sc_mu);
    g_host.join(vc);
    g_host_gen++;
}
// The host has waited for all work enqueued on `s` so far.
void sc_host_join_stream(CUstream s) {
    if (!sc_on()) return;
    VClock vc;
    {
        std::lock_guard<std::mutex> lk(g_sc_mu);
        vc = stream_of(s)->vc;
    }
    sc_host_join(vc);
}

// Pinned host memory (cuMemHostAlloc): copies to it are not host-synchronous; copies to
// pageable memory are (CUDA's "API synchronization behavior").
std::map<uintptr_t, size_t> g_pinned;
bool pinned(const void* p) {
    std::lock_guard<std::mutex> lk(g_mu);
    auto it = g_pinned.upper_bound((uintptr_t)p);
    if (it == g_pinned.begin()) return false;
    --it;
    return (uintptr_t)p - it->first < it->second;
}

// The findings of a copy or memset become the calling thread's report and the call fails with
// kStreamcheckError, whose cuGetErrorString is the report (interned: callers keep the pointer).
const CUresult kStreamcheckError = CUDA_ERROR_ILLEGAL_STATE;
CUresult sc_result(const std::string& findings) {
    if (findings.empty()) return CUDA_SUCCESS;
    tl_last_report = findings;
    return kStreamcheckError;
}
std::string sc_line(const std::string& finding) {
    return finding.empty() ? "" : "emulated device streamcheck: " + finding + "\n";
}
const char* intern(const std::string& s) {
    static std::mutex mu;
    static auto* strings = new std::set<std::string>();  // never freed: the pointers are handed out
    std::lock_guard<std::mutex> lk(mu);
    return strings->insert(s).first->c_str();
}

// At exit, append the kernels this process launched to $ATTN_KERNELS_EMU_COVERAGE (one
// "name launches" line each), so CI can check that every entry point ran.
struct CoverageAtExit {
    ~CoverageAtExit() {
        const char* path = getenv("ATTN_KERNELS_EMU_COVERAGE");
        if (!path || !*path) return;
        FILE* f = fopen(path, "a");
        if (!f) return;
        for (size_t i = 0; i < kernel_count(); ++i)
            if (kernel_launches(i) > 0) fprintf(f, "%s %llu\n", kernel_name(i), (unsigned long long)kernel_launches(i));
        fclose(f);
    }
} g_coverage_at_exit;

}  // namespace

extern "C" {

// The findings of the calling thread's last launch, copy or memset ("" if it had none): the Rust
// runtime appends a launch's to its error; a copy's are also its cuGetErrorString.
__attribute__((visibility("default"))) const char* ak_emu_last_report(void) { return tl_last_report.c_str(); }
// The settings in force, for `info` and test logs.
__attribute__((visibility("default"))) const char* ak_emu_describe(void) {
    static std::string s = describe_config();
    return s.c_str();
}
// Kernel names and how often each was launched in this process (coverage).
__attribute__((visibility("default"))) size_t ak_emu_kernel_count(void) { return kernel_count(); }
__attribute__((visibility("default"))) const char* ak_emu_kernel_name(size_t i) { return kernel_name(i); }
__attribute__((visibility("default"))) uint64_t ak_emu_kernel_launches(size_t i) { return kernel_launches(i); }

CUresult CUDAAPI cuInit(unsigned int flags) {
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    g_initialised = true;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDriverGetVersion(int* v) {
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    *v = CUDA_VERSION;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetCount(int* n) {
    if (CUresult r = need_init()) return r;
    if (!n) return CUDA_ERROR_INVALID_VALUE;
    *n = 1;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGet(CUdevice* d, int ordinal) {
    if (CUresult r = need_init()) return r;
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetName(char* name, int len, CUdevice d) {
    if (CUresult r = need_init()) return r;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    snprintf(name, (size_t)len, "attn-kernels emulated device (CPU, sm_%d%d), not a GPU", config().cc_major, config().cc_minor);
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetUuid(CUuuid* u, CUdevice d) {
    if (!u || d != 0) return CUDA_ERROR_INVALID_VALUE;
    memcpy(u->bytes, "ak-emulated-dev", 16);
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceTotalMem(size_t* bytes, CUdevice d) {
    if (CUresult r = need_init()) return r;
    if (!bytes || d != 0) return CUDA_ERROR_INVALID_VALUE;
    *bytes = (size_t)80 << 30;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemGetInfo(size_t* free_bytes, size_t* total) {
    if (free_bytes) *free_bytes = (size_t)64 << 30;
    if (total) *total = (size_t)80 << 30;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetAttribute(int* v, CUdevice_attribute a, CUdevice d) {
    if (CUresult r = need_init()) return r;
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    const bool hopper = config().cc_major >= 9;
    switch (a) {
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = config().cc_major; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = config().cc_minor; break;
        case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = hopper ? 132 : 108; break;
        case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: *v = hopper ? 50 << 20 : 40 << 20; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *v = max_shared_optin(); break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *v = 48 * 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: *v = hopper ? 228 * 1024 : 164 * 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: *v = 2048; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR: *v = 32; break;
        case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK:
        case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: *v = 65536; break;
        case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *v = 32; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X:
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: *v = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: *v = 64; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *v = 2147483647; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y:
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *v = 65535; break;
        case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: *v = 65536; break;
        case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: *v = 1980000; break;
        case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: *v = 2619000; break;
        case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: *v = 5120; break;
        case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS:
        case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: *v = 1; break;
        // No memory pools: cudarc then allocates with cuMemAlloc, which the emulator tracks.
        case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: *v = 0; break;
        default: *v = 0; break;
    }
    return CUDA_SUCCESS;
}

// ---------------------------------------------------------------------------- contexts

CUresult CUDAAPI cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice d) {
    if (CUresult r = need_init()) return r;
    if (!c) return CUDA_ERROR_INVALID_VALUE;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    *c = (CUcontext)&g_ctx;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuDevicePrimaryCtxRelease(CUdevice d) { return d == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE; }
CUresult CUDAAPI cuCtxSetCurrent(CUcontext c) {
    if (c && c != (CUcontext)&g_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    tl_current = c;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuCtxGetCurrent(CUcontext* c) {
    if (!c) return CUDA_ERROR_INVALID_VALUE;
    *c = tl_current;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuCtxPushCurrent(CUcontext c) { return cuCtxSetCurrent(c); }
CUresult CUDAAPI cuCtxPopCurrent(CUcontext* c) {
    if (c) *c = tl_current;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuCtxGetDevice(CUdevice* d) {
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    *d = 0;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuCtxSynchronize(void) {
    if (sc_on()) {
        VClock all;
        {
            std::lock_guard<std::mutex> lk(g_sc_mu);
            all = g_legacy.vc;
            std::lock_guard<std::mutex> lk2(g_mu);
            for (void* p : g_streams) all.join(((EmuStream*)p)->vc);
        }
        sc_host_join(all);
    }
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuCtxSetFlags(unsigned int) { return CUDA_SUCCESS; }
CUresult CUDAAPI cuCtxGetStreamPriorityRange(int* lo, int* hi) {
    if (lo) *lo = 0;
    if (hi) *hi = -5;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuCtxSetLimit(CUlimit, size_t) { return CUDA_SUCCESS; }
CUresult CUDAAPI cuCtxGetLimit(size_t* v, CUlimit) {
    if (v) *v = 0;
    return CUDA_SUCCESS;
}

// ---------------------------------------------------------------------------- streams, events

CUresult CUDAAPI cuStreamCreate(CUstream* s, unsigned int flags) {
    if (CUresult r = need_init()) return r;
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    auto* st = new EmuStream();
    st->flags = flags;
    {
        std::lock_guard<std::mutex> lk(g_sc_mu);
        st->id = g_next_stream_id++;
    }
    std::lock_guard<std::mutex> lk(g_mu);
    g_streams.insert(st);
    *s = (CUstream)st;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuStreamCreateWithPriority(CUstream* s, unsigned int flags, int) { return cuStreamCreate(s, flags); }
CUresult CUDAAPI cuStreamDestroy(CUstream s) {
    // The stream's clock components live on in other clocks; its object goes.
    std::lock_guard<std::mutex> sl(g_sc_mu);
    std::lock_guard<std::mutex> lk(g_mu);
    if (!g_streams.erase((void*)s)) return CUDA_ERROR_INVALID_HANDLE;
    delete (EmuStream*)s;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuStreamSynchronize(CUstream s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    sc_host_join_stream(s);
    return CUDA_SUCCESS;
}
// Always complete (work ran when it was enqueued), so the host has waited for it.
CUresult CUDAAPI cuStreamQuery(CUstream s) { return cuStreamSynchronize(s); }
CUresult CUDAAPI cuStreamWaitEvent(CUstream s, CUevent e, unsigned int) {
    if (!stream_ok(s) || !known(g_events, e)) return CUDA_ERROR_INVALID_HANDLE;
    if (sc_on()) {
        std::lock_guard<std::mutex> lk(g_sc_mu);
        EmuStream* st = stream_of(s);
        sc_catch_up_locked(st);
        st->vc.join(((EmuEvent*)e)->vc);  // never recorded: an empty clock, no ordering (as CUDA)
    }
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuStreamIsCapturing(CUstream s, CUstreamCaptureStatus* st) {
    if (!stream_ok(s) || !st) return CUDA_ERROR_INVALID_VALUE;
    *st = CU_STREAM_CAPTURE_STATUS_NONE;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuEventCreate(CUevent* e, unsigned int) {
    if (CUresult r = need_init()) return r;
    if (!e) return CUDA_ERROR_INVALID_VALUE;
    auto* ev = new EmuEvent();
    std::lock_guard<std::mutex> lk(g_mu);
    g_events.insert(ev);
    *e = (CUevent)ev;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuEventDestroy(CUevent e) {
    std::lock_guard<std::mutex> lk(g_mu);
    if (!g_events.erase((void*)e)) return CUDA_ERROR_INVALID_HANDLE;
    delete (EmuEvent*)e;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuEventRecord(CUevent e, CUstream s) {
    if (!known(g_events, e) || !stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    auto* ev = (EmuEvent*)e;
    ev->at = std::chrono::steady_clock::now();
    ev->recorded = true;
    if (sc_on()) {
        std::lock_guard<std::mutex> lk(g_sc_mu);
        EmuStream* st = stream_of(s);
        sc_catch_up_locked(st);
        ev->vc = st->vc;
    }
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuEventRecordWithFlags(CUevent e, CUstream s, unsigned int) { return cuEventRecord(e, s); }
CUresult CUDAAPI cuEventSynchronize(CUevent e) {
    if (!known(g_events, e)) return CUDA_ERROR_INVALID_HANDLE;
    if (sc_on()) {
        VClock vc;
        {
            std::lock_guard<std::mutex> lk(g_sc_mu);
            vc = ((EmuEvent*)e)->vc;
        }
        sc_host_join(vc);
    }
    return CUDA_SUCCESS;
}
// Always complete, so the host has waited for the recorded work.
CUresult CUDAAPI cuEventQuery(CUevent e) { return cuEventSynchronize(e); }
CUresult CUDAAPI cuEventElapsedTime(float* ms, CUevent a, CUevent b) {
    if (!ms) return CUDA_ERROR_INVALID_VALUE;
    if (!known(g_events, a) || !known(g_events, b)) return CUDA_ERROR_INVALID_HANDLE;
    auto *ea = (EmuEvent*)a, *eb = (EmuEvent*)b;
    if (!ea->recorded || !eb->recorded) return CUDA_ERROR_INVALID_HANDLE;
    *ms = std::chrono::duration<float, std::milli>(eb->at - ea->at).count();
    return CUDA_SUCCESS;
}

// ---------------------------------------------------------------------------- memory

// A copy or memset enqueued on `s` (`what` names the call): streamcheck of the device allocation
// it reads (`rd`, 0: none) and the one it writes (`wr`, 0: none); `host_waits`: the call returns
// only when the operation is complete. Returns the findings' report lines.
static std::string sc_mem_op(CUstream s, const char* what, CUdeviceptr rd, CUdeviceptr wr, bool host_waits) {
    tl_last_report.clear();
    if (!sc_on()) return "";
    StreamOp op = sc_enqueue(s, what);
    std::string f;
    if (rd) f += sc_line(stream_access(op, (uintptr_t)rd, false));
    if (wr) f += sc_line(stream_access(op, (uintptr_t)wr, true));
    if (host_waits) sc_host_join(op.vc);
    return f;
}

CUresult CUDAAPI cuMemAlloc(CUdeviceptr* p, size_t bytes) {
    if (CUresult r = need_init()) return r;
    if (!p || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    void* m = mem_alloc(bytes);
    if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
    *p = (CUdeviceptr)(uintptr_t)m;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuMemAllocAsync(CUdeviceptr* p, size_t bytes, CUstream s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    CUresult r = cuMemAlloc(p, bytes);
    // Stream-ordered: the memory is usable in the order of `s`, as if `s` had written it.
    if (r == CUDA_SUCCESS) sc_mem_op(s, "cuMemAllocAsync", 0, *p, false);
    return r;
}
// Synchronous: not an operation of any stream, and not checked (the allocation and its last
// writer go).
CUresult CUDAAPI cuMemFree(CUdeviceptr p) {
    if (p == 0) return CUDA_SUCCESS;
    return mem_free((void*)(uintptr_t)p) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
CUresult CUDAAPI cuMemFreeAsync(CUdeviceptr p, CUstream s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    if (p == 0) return CUDA_SUCCESS;
    if (!mem_valid((uintptr_t)p, 0)) return CUDA_ERROR_INVALID_VALUE;
    // Freeing in the order of `s` must come after the last write on any stream.
    std::string f = sc_mem_op(s, "cuMemFreeAsync", 0, p, false);
    if (CUresult r = cuMemFree(p)) return r;
    return sc_result(f);
}
CUresult CUDAAPI cuMemHostAlloc(void** p, size_t bytes, unsigned int) {
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    *p = malloc(bytes ? bytes : 1);
    if (!*p) return CUDA_ERROR_OUT_OF_MEMORY;
    std::lock_guard<std::mutex> lk(g_mu);
    g_pinned[(uintptr_t)*p] = bytes ? bytes : 1;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuMemFreeHost(void* p) {
    {
        std::lock_guard<std::mutex> lk(g_mu);
        g_pinned.erase((uintptr_t)p);
    }
    free(p);
    return CUDA_SUCCESS;
}

static bool dev_range(CUdeviceptr p, size_t n) { return n == 0 || mem_valid((uintptr_t)p, n); }

// Host synchronisation of the copies, from the CUDA documentation ("API synchronization
// behavior"): a synchronous host-to-device copy from pageable memory waits for the stream's
// earlier work, then returns once the data is staged (the copy itself may still be running);
// from pinned memory it returns when complete. A device-to-host copy into pageable memory
// returns when complete, asynchronous or not. Device-to-device copies and memsets of device
// memory never make the host wait.
static CUresult copy_htod(CUdeviceptr dst, const void* src, size_t n, CUstream s, bool sync) {
    if (!dev_range(dst, n) || (n && !src)) return CUDA_ERROR_INVALID_VALUE;
    const bool pin = pinned(src);
    if (sync && !pin) sc_host_join_stream(s);
    std::string f = sc_mem_op(s, sync ? "cuMemcpyHtoD" : "cuMemcpyHtoDAsync", 0, n ? dst : 0, sync && pin);
    memcpy((void*)(uintptr_t)dst, src, n);
    mem_mark_init((uintptr_t)dst, n);
    return sc_result(f);
}
static CUresult copy_dtoh(void* dst, CUdeviceptr src, size_t n, CUstream s, bool sync) {
    if (!dev_range(src, n) || (n && !dst)) return CUDA_ERROR_INVALID_VALUE;
    std::string f = sc_mem_op(s, sync ? "cuMemcpyDtoH" : "cuMemcpyDtoHAsync", n ? src : 0, 0, sync || !pinned(dst));
    memcpy(dst, (const void*)(uintptr_t)src, n);
    return sc_result(f);
}
static CUresult copy_dtod(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s, bool sync) {
    if (!dev_range(dst, n) || !dev_range(src, n)) return CUDA_ERROR_INVALID_VALUE;
    std::string f = sc_mem_op(s, sync ? "cuMemcpyDtoD" : "cuMemcpyDtoDAsync", n ? src : 0, n ? dst : 0, false);
    memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, n);
    mem_copy_init((uintptr_t)dst, (uintptr_t)src, n);
    return sc_result(f);
}
static CUresult set_d8(CUdeviceptr dst, unsigned char v, size_t n, CUstream s, bool sync) {
    if (!dev_range(dst, n)) return CUDA_ERROR_INVALID_VALUE;
    std::string f = sc_mem_op(s, sync ? "cuMemsetD8" : "cuMemsetD8Async", 0, n ? dst : 0, false);
    memset((void*)(uintptr_t)dst, v, n);
    mem_mark_init((uintptr_t)dst, n);
    return sc_result(f);
}
static CUresult set_d32(CUdeviceptr dst, unsigned int v, size_t n, CUstream s, bool sync) {
    if ((dst & 3) || !dev_range(dst, n * 4)) return CUDA_ERROR_INVALID_VALUE;
    std::string f = sc_mem_op(s, sync ? "cuMemsetD32" : "cuMemsetD32Async", 0, n ? dst : 0, false);
    unsigned* p = (unsigned*)(uintptr_t)dst;
    for (size_t i = 0; i < n; ++i) p[i] = v;
    mem_mark_init((uintptr_t)dst, n * 4);
    return sc_result(f);
}

// The calls without a stream are operations of the legacy stream.
CUresult CUDAAPI cuMemcpyHtoD(CUdeviceptr dst, const void* src, size_t n) { return copy_htod(dst, src, n, nullptr, true); }
CUresult CUDAAPI cuMemcpyHtoDAsync(CUdeviceptr dst, const void* src, size_t n, CUstream s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return copy_htod(dst, src, n, s, false);
}
CUresult CUDAAPI cuMemcpyDtoH(void* dst, CUdeviceptr src, size_t n) { return copy_dtoh(dst, src, n, nullptr, true); }
CUresult CUDAAPI cuMemcpyDtoHAsync(void* dst, CUdeviceptr src, size_t n, CUstream s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return copy_dtoh(dst, src, n, s, false);
}
CUresult CUDAAPI cuMemcpyDtoD(CUdeviceptr dst, CUdeviceptr src, size_t n) { return copy_dtod(dst, src, n, nullptr, true); }
CUresult CUDAAPI cuMemcpyDtoDAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return copy_dtod(dst, src, n, s, false);
}
CUresult CUDAAPI cuMemsetD8(CUdeviceptr dst, unsigned char v, size_t n) { return set_d8(dst, v, n, nullptr, true); }
CUresult CUDAAPI cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return set_d8(dst, v, n, s, false);
}
CUresult CUDAAPI cuMemsetD32(CUdeviceptr dst, unsigned int v, size_t n) { return set_d32(dst, v, n, nullptr, true); }
CUresult CUDAAPI cuMemsetD32Async(CUdeviceptr dst, unsigned int v, size_t n, CUstream s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return set_d32(dst, v, n, s, false);
}

// ---------------------------------------------------------------------------- modules, launch

// Any image loads: the emulated kernels are linked into this library, and a module resolves
// every name registered by build.rs's generated wrappers.
CUresult CUDAAPI cuModuleLoadData(CUmodule* m, const void* image) {
    if (CUresult r = need_init()) return r;
    if (!m || !image) return CUDA_ERROR_INVALID_VALUE;
    auto* mod = new EmuModule();
    std::lock_guard<std::mutex> lk(g_mu);
    g_modules.insert(mod);
    *m = (CUmodule)mod;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuModuleUnload(CUmodule m) {
    std::lock_guard<std::mutex> lk(g_mu);
    if (!g_modules.erase((void*)m)) return CUDA_ERROR_INVALID_HANDLE;
    auto* mod = (EmuModule*)m;
    for (auto& f : mod->functions) {
        g_functions.erase(f.second);
        delete f.second;
    }
    delete mod;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuModuleGetFunction(CUfunction* f, CUmodule m, const char* name) {
    if (!f || !name) return CUDA_ERROR_INVALID_VALUE;
    if (!known(g_modules, m)) return CUDA_ERROR_INVALID_HANDLE;
    ak_emu_trampoline fn = find_kernel(name);
    if (!fn) return CUDA_ERROR_NOT_FOUND;
    std::lock_guard<std::mutex> lk(g_mu);
    auto* mod = (EmuModule*)m;
    auto it = mod->functions.find(name);
    if (it == mod->functions.end()) {
        auto* ef = new EmuFunction{name, fn};
        it = mod->functions.emplace(name, ef).first;
        g_functions.insert(ef);
    }
    *f = (CUfunction)it->second;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuFuncSetAttribute(CUfunction f, CUfunction_attribute a, int v) {
    if (!known(g_functions, f)) return CUDA_ERROR_INVALID_HANDLE;
    if (a == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) {
        if (v < 0 || v > max_shared_optin()) return CUDA_ERROR_INVALID_VALUE;
        ((EmuFunction*)f)->max_dynamic_shared = v;
    }
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuFuncGetAttribute(int* v, CUfunction_attribute a, CUfunction f) {
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    if (!known(g_functions, f)) return CUDA_ERROR_INVALID_HANDLE;
    switch (a) {
        case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *v = ((EmuFunction*)f)->max_dynamic_shared; break;
        case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
        default: *v = 0; break;
    }
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuFuncSetCacheConfig(CUfunction f, CUfunc_cache) {
    return known(g_functions, f) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

CUresult CUDAAPI cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                unsigned shared, CUstream s, void** params, void** extra) {
    tl_last_report.clear();
    if (!known(g_functions, f)) return CUDA_ERROR_INVALID_HANDLE;
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    if (extra != nullptr || params == nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (gx == 0 || gy == 0 || gz == 0 || gx > 2147483647u || gy > 65535 || gz > 65535) return CUDA_ERROR_INVALID_VALUE;
    if (bx == 0 || by == 0 || bz == 0 || bx > 1024 || by > 1024 || bz > 64 || (uint64_t)bx * by * bz > 1024)
        return CUDA_ERROR_INVALID_VALUE;
    auto* ef = (EmuFunction*)f;
    if ((int)shared > ef->max_dynamic_shared) {
        tl_last_report = "emulated device: " + ef->name + " launched with " + std::to_string(shared) +
                         " bytes of dynamic shared memory, above its limit of " + std::to_string(ef->max_dynamic_shared) +
                         " (cuFuncSetAttribute MAX_DYNAMIC_SHARED_SIZE_BYTES)";
        return CUDA_ERROR_INVALID_VALUE;
    }
    StreamOp op = sc_enqueue(s, "kernel " + ef->name);
    Launch l{ef->name.c_str(), ef->fn, {gx, gy, gz}, {bx, by, bz}, shared, (unsigned)max_shared_optin(), params,
             op.stream ? &op : nullptr};
    switch (launch(l, tl_last_report)) {
        case Outcome::Ok: return CUDA_SUCCESS;
        case Outcome::Findings: return CUDA_ERROR_LAUNCH_FAILED;
        case Outcome::Fatal: return CUDA_ERROR_ILLEGAL_ADDRESS;
    }
    return CUDA_ERROR_UNKNOWN;
}

// ---------------------------------------------------------------------------- errors

CUresult CUDAAPI cuGetErrorName(CUresult e, const char** s) {
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    switch (e) {
        case CUDA_SUCCESS: *s = "CUDA_SUCCESS"; break;
        case CUDA_ERROR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
        case CUDA_ERROR_OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
        case CUDA_ERROR_NOT_INITIALIZED: *s = "CUDA_ERROR_NOT_INITIALIZED"; break;
        case CUDA_ERROR_INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; break;
        case CUDA_ERROR_INVALID_CONTEXT: *s = "CUDA_ERROR_INVALID_CONTEXT"; break;
        case CUDA_ERROR_INVALID_HANDLE: *s = "CUDA_ERROR_INVALID_HANDLE"; break;
        case CUDA_ERROR_NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
        case CUDA_ERROR_ILLEGAL_ADDRESS: *s = "CUDA_ERROR_ILLEGAL_ADDRESS"; break;
        case CUDA_ERROR_LAUNCH_FAILED: *s = "CUDA_ERROR_LAUNCH_FAILED"; break;
        case CUDA_ERROR_ILLEGAL_STATE: *s = "CUDA_ERROR_ILLEGAL_STATE"; break;
        default: *s = "CUDA_ERROR_UNKNOWN"; return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuGetErrorString(CUresult e, const char** s) {
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    switch (e) {
        case CUDA_ERROR_ILLEGAL_ADDRESS: *s = "emulated device: a kernel stopped at a fatal checker finding"; break;
        case CUDA_ERROR_LAUNCH_FAILED: *s = "emulated device: a kernel ran with checker findings"; break;
        case kStreamcheckError:
            // A copy or memset with streamcheck findings: cudarc formats the error on the thread
            // that got it, right away, so the thread's report is the one to show.
            *s = tl_last_report.find("streamcheck") != std::string::npos
                     ? intern(tl_last_report.substr(0, tl_last_report.find_last_not_of('\n') + 1))
                     : "emulated device streamcheck: a copy or memset touched device memory last written on another "
                       "stream with no event or synchronisation between";
            break;
        default: return cuGetErrorName(e, s);
    }
    return CUDA_SUCCESS;
}

// The unversioned names the driver also exports (cuda.h maps these to their _v2 forms above).
#undef cuDeviceGetUuid
#undef cuEventElapsedTime
__attribute__((visibility("default"))) CUresult CUDAAPI cuDeviceGetUuid(CUuuid* u, CUdevice d) { return cuDeviceGetUuid_v2(u, d); }
__attribute__((visibility("default"))) CUresult CUDAAPI cuEventElapsedTime(float* ms, CUevent a, CUevent b) {
    return cuEventElapsedTime_v2(ms, a, b);
}

// cuTensorMapEncodeTiled: the requirements of its documentation (cuda.h) are checked and the
// map encoded in the emulated device's layout (runtime.h, TensorMap). Not modelled (returns
// CUDA_ERROR_NOT_SUPPORTED): packed data types, interleaved layouts, the 128B-atom swizzles,
// NaN out-of-bounds fill. Tensor maps exist from compute capability 9.0.
CUresult CUDAAPI cuTensorMapEncodeTiled(CUtensorMap* tensorMap, CUtensorMapDataType dtype, cuuint32_t rank, void* addr,
                                        const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                                        const cuuint32_t* estrides, CUtensorMapInterleave interleave,
                                        CUtensorMapSwizzle swizzle, CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob) {
    if (config().cc_major < 9) return CUDA_ERROR_NOT_SUPPORTED;
    if (!tensorMap || ((uintptr_t)tensorMap % 64) || !dims || !box || !estrides || (rank > 1 && !strides))
        return CUDA_ERROR_INVALID_VALUE;
    uint32_t esize = 0;
    switch (dtype) {
        case CU_TENSOR_MAP_DATA_TYPE_UINT8: esize = 1; break;
        case CU_TENSOR_MAP_DATA_TYPE_UINT16:
        case CU_TENSOR_MAP_DATA_TYPE_FLOAT16:
        case CU_TENSOR_MAP_DATA_TYPE_BFLOAT16: esize = 2; break;
        case CU_TENSOR_MAP_DATA_TYPE_UINT32:
        case CU_TENSOR_MAP_DATA_TYPE_INT32:
        case CU_TENSOR_MAP_DATA_TYPE_FLOAT32:
        case CU_TENSOR_MAP_DATA_TYPE_FLOAT32_FTZ:
        case CU_TENSOR_MAP_DATA_TYPE_TFLOAT32:
        case CU_TENSOR_MAP_DATA_TYPE_TFLOAT32_FTZ: esize = 4; break;
        case CU_TENSOR_MAP_DATA_TYPE_UINT64:
        case CU_TENSOR_MAP_DATA_TYPE_INT64:
        case CU_TENSOR_MAP_DATA_TYPE_FLOAT64: esize = 8; break;
        default: return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (interleave != CU_TENSOR_MAP_INTERLEAVE_NONE || oob != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) return CUDA_ERROR_NOT_SUPPORTED;
    if ((int)l2 < 0 || (int)l2 > 3) return CUDA_ERROR_INVALID_VALUE;
    uint32_t span = 0;
    switch (swizzle) {
        case CU_TENSOR_MAP_SWIZZLE_NONE: span = 0; break;
        case CU_TENSOR_MAP_SWIZZLE_32B: span = 32; break;
        case CU_TENSOR_MAP_SWIZZLE_64B: span = 64; break;
        case CU_TENSOR_MAP_SWIZZLE_128B: span = 128; break;
        default: return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (rank < 1 || rank > 5 || ((uintptr_t)addr % 16)) return CUDA_ERROR_INVALID_VALUE;
    TensorMap m;
    m.rank = rank;
    m.esize = esize;
    m.swizzle = (uint32_t)swizzle;
    m.addr = (uint64_t)(uintptr_t)addr;
    for (uint32_t i = 0; i < rank; ++i) {
        if (dims[i] == 0 || dims[i] > (1ull << 32) || box[i] == 0 || box[i] > 256 || estrides[i] == 0 || estrides[i] > 8)
            return CUDA_ERROR_INVALID_VALUE;
        m.dims[i] = dims[i];
        m.box[i] = box[i];
        m.estride[i] = i == 0 ? 1 : estrides[i];  // dimension 0 takes no stride (the documentation)
        if (i == 0) {
            m.strides[0] = esize;
        } else {
            if (strides[i - 1] % 16 || strides[i - 1] >= (1ull << 40)) return CUDA_ERROR_INVALID_VALUE;
            m.strides[i] = strides[i - 1];
        }
    }
    if ((box[0] * esize) % 16) return CUDA_ERROR_INVALID_VALUE;
    if (span && box[0] * esize > span) return CUDA_ERROR_INVALID_VALUE;
    uint64_t w[16];
    tensor_map_encode(m, w);
    memcpy(tensorMap, w, sizeof w);
    return CUDA_SUCCESS;
}

}  // extern "C"
