// The emulated device's CUDA driver: the subset of the driver API that cudarc calls for this
// crate, implemented on the CPU. The library that holds it has the soname libcuda.so, so once it
// is loaded (Gpu::emulated) cudarc's dlopen("libcuda.so") finds it, and the crate's production
// launch path (parameter structs, grid, shared-memory sizes, module cache) runs unchanged.
//
// Device memory is host memory registered with the execution engine (runtime.cpp), which checks
// every kernel access against it. Work on every stream runs to completion when it is enqueued,
// which is one valid CUDA execution; events record wall-clock time, meaningless as GPU time.
// Arguments are validated as the driver does; an invalid one returns its CUDA error code.
// Exported: the library is built with hidden visibility, the driver API is its interface.
#pragma GCC visibility push(default)
#include <cuda.h>
#pragma GCC visibility pop

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
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
    unsigned flags;
};
struct EmuEvent {
    std::chrono::steady_clock::time_point at;
    bool recorded = false;
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

bool stream_ok(CUstream s) { return s == nullptr || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD || known(g_streams, s); }

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

// The findings of the calling thread's last launch ("" if it had none): the Rust runtime
// appends them to the launch error.
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
CUresult CUDAAPI cuCtxSynchronize(void) { return CUDA_SUCCESS; }
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
    auto* st = new EmuStream{flags};
    std::lock_guard<std::mutex> lk(g_mu);
    g_streams.insert(st);
    *s = (CUstream)st;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuStreamCreateWithPriority(CUstream* s, unsigned int flags, int) { return cuStreamCreate(s, flags); }
CUresult CUDAAPI cuStreamDestroy(CUstream s) {
    std::lock_guard<std::mutex> lk(g_mu);
    if (!g_streams.erase((void*)s)) return CUDA_ERROR_INVALID_HANDLE;
    delete (EmuStream*)s;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuStreamSynchronize(CUstream s) { return stream_ok(s) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE; }
CUresult CUDAAPI cuStreamQuery(CUstream s) { return stream_ok(s) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE; }
CUresult CUDAAPI cuStreamWaitEvent(CUstream s, CUevent e, unsigned int) {
    if (!stream_ok(s) || !known(g_events, e)) return CUDA_ERROR_INVALID_HANDLE;
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
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuEventRecordWithFlags(CUevent e, CUstream s, unsigned int) { return cuEventRecord(e, s); }
CUresult CUDAAPI cuEventSynchronize(CUevent e) { return known(g_events, e) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE; }
CUresult CUDAAPI cuEventQuery(CUevent e) { return known(g_events, e) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE; }
CUresult CUDAAPI cuEventElapsedTime(float* ms, CUevent a, CUevent b) {
    if (!ms) return CUDA_ERROR_INVALID_VALUE;
    if (!known(g_events, a) || !known(g_events, b)) return CUDA_ERROR_INVALID_HANDLE;
    auto *ea = (EmuEvent*)a, *eb = (EmuEvent*)b;
    if (!ea->recorded || !eb->recorded) return CUDA_ERROR_INVALID_HANDLE;
    *ms = std::chrono::duration<float, std::milli>(eb->at - ea->at).count();
    return CUDA_SUCCESS;
}

// ---------------------------------------------------------------------------- memory

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
    return cuMemAlloc(p, bytes);
}
CUresult CUDAAPI cuMemFree(CUdeviceptr p) {
    if (p == 0) return CUDA_SUCCESS;
    return mem_free((void*)(uintptr_t)p) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
CUresult CUDAAPI cuMemFreeAsync(CUdeviceptr p, CUstream s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return cuMemFree(p);
}
CUresult CUDAAPI cuMemHostAlloc(void** p, size_t bytes, unsigned int) {
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    *p = malloc(bytes ? bytes : 1);
    return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}
CUresult CUDAAPI cuMemFreeHost(void* p) {
    free(p);
    return CUDA_SUCCESS;
}

static bool dev_range(CUdeviceptr p, size_t n) { return n == 0 || mem_valid((uintptr_t)p, n); }

CUresult CUDAAPI cuMemcpyHtoD(CUdeviceptr dst, const void* src, size_t n) {
    if (!dev_range(dst, n) || (n && !src)) return CUDA_ERROR_INVALID_VALUE;
    memcpy((void*)(uintptr_t)dst, src, n);
    mem_mark_init((uintptr_t)dst, n);
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuMemcpyHtoDAsync(CUdeviceptr dst, const void* src, size_t n, CUstream s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return cuMemcpyHtoD(dst, src, n);
}
CUresult CUDAAPI cuMemcpyDtoH(void* dst, CUdeviceptr src, size_t n) {
    if (!dev_range(src, n) || (n && !dst)) return CUDA_ERROR_INVALID_VALUE;
    memcpy(dst, (const void*)(uintptr_t)src, n);
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuMemcpyDtoHAsync(void* dst, CUdeviceptr src, size_t n, CUstream s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return cuMemcpyDtoH(dst, src, n);
}
CUresult CUDAAPI cuMemcpyDtoD(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    if (!dev_range(dst, n) || !dev_range(src, n)) return CUDA_ERROR_INVALID_VALUE;
    memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, n);
    mem_copy_init((uintptr_t)dst, (uintptr_t)src, n);
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuMemcpyDtoDAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return cuMemcpyDtoD(dst, src, n);
}
CUresult CUDAAPI cuMemsetD8(CUdeviceptr dst, unsigned char v, size_t n) {
    if (!dev_range(dst, n)) return CUDA_ERROR_INVALID_VALUE;
    memset((void*)(uintptr_t)dst, v, n);
    mem_mark_init((uintptr_t)dst, n);
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return cuMemsetD8(dst, v, n);
}
CUresult CUDAAPI cuMemsetD32(CUdeviceptr dst, unsigned int v, size_t n) {
    if ((dst & 3) || !dev_range(dst, n * 4)) return CUDA_ERROR_INVALID_VALUE;
    unsigned* p = (unsigned*)(uintptr_t)dst;
    for (size_t i = 0; i < n; ++i) p[i] = v;
    mem_mark_init((uintptr_t)dst, n * 4);
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuMemsetD32Async(CUdeviceptr dst, unsigned int v, size_t n, CUstream s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return cuMemsetD32(dst, v, n);
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
    Launch l{ef->name.c_str(), ef->fn, {gx, gy, gz}, {bx, by, bz}, shared, (unsigned)max_shared_optin(), params};
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
        default: *s = "CUDA_ERROR_UNKNOWN"; return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuGetErrorString(CUresult e, const char** s) {
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    switch (e) {
        case CUDA_ERROR_ILLEGAL_ADDRESS: *s = "emulated device: a kernel stopped at a fatal checker finding"; break;
        case CUDA_ERROR_LAUNCH_FAILED: *s = "emulated device: a kernel ran with checker findings"; break;
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

}  // extern "C"
