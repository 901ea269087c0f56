//! The emulated device: the crate's CUDA kernels compiled as host C++ and run on the CPU with
//! GPU execution semantics and checkers (kernels/emu/). Its library is a stand-in for the CUDA
//! driver with the soname `libcuda.so`: once [`load`] has opened it, cudarc's own
//! `dlopen("libcuda.so")` returns it, so every op reaches it through the production launch path.
//!
//! A process uses either the real driver or the emulated one, whichever is loaded first.

use crate::error::{Error, Result};
use std::ffi::{c_char, CStr};
use std::sync::OnceLock;

mod manifest {
    include!(concat!(env!("OUT_DIR"), "/emu_manifest.rs"));
}
pub use manifest::{EMU_LIBRARY, EMU_NOT_BUILT_REASON};

/// The device name prefix the emulated driver reports.
pub const NAME_PREFIX: &str = "attn-kernels emulated device";

static LIBRARY: OnceLock<std::result::Result<libloading::Library, String>> = OnceLock::new();

/// Whether this build carries the emulated device.
pub fn is_built() -> bool {
    EMU_LIBRARY.is_some()
}

fn not_built() -> Error {
    Error::EmulatorNotBuilt(format!(
        "{}; it needs GNU g++ and the CUDA headers of the pinned nvcc set (see the README), then a rebuild",
        EMU_NOT_BUILT_REASON.unwrap_or("unknown reason")
    ))
}

#[cfg(target_os = "linux")]
fn open() -> std::result::Result<libloading::Library, String> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    const RTLD_NOLOAD: i32 = 4; // glibc
    let path = EMU_LIBRARY.ok_or("not built")?;
    // A real libcuda already in the process would keep serving cudarc.
    for name in ["libcuda.so.1", "libcuda.so"] {
        // SAFETY: RTLD_NOLOAD only looks up an already-loaded object; nothing is initialised.
        if let Ok(lib) = unsafe { Library::open(Some(name), RTLD_NOW | RTLD_NOLOAD) } {
            // SAFETY: looks up a symbol address without calling it.
            if unsafe { lib.get::<unsafe extern "C" fn() -> *const c_char>(b"ak_emu_last_report\0") }.is_err() {
                return Err(format!("the real CUDA driver ({name}) is already loaded in this process"));
            }
        }
    }
    // SAFETY: the library is ours (built by build.rs); its initialisers only register kernels.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }
        .map(libloading::Library::from)
        .map_err(|e| format!("cannot load {path}: {e}"))
}

#[cfg(not(target_os = "linux"))]
fn open() -> std::result::Result<libloading::Library, String> {
    Err("the emulated device runs on Linux only".into())
}

/// Load the emulated driver so that it serves every CUDA call of this process.
pub fn load() -> Result<()> {
    if !is_built() {
        return Err(not_built());
    }
    match LIBRARY.get_or_init(open) {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::NoDriver(format!("emulated device: {e}"))),
    }
}

/// Whether the emulated driver is the one serving this process.
pub fn is_active() -> bool {
    matches!(LIBRARY.get(), Some(Ok(_)))
}

fn library() -> Option<&'static libloading::Library> {
    LIBRARY.get().and_then(|r| r.as_ref().ok())
}

fn call_str(symbol: &[u8]) -> Option<String> {
    let lib = library()?;
    // SAFETY: the symbol is a `const char* f(void)` of our emulator returning a NUL-terminated
    // string that stays valid until the next call on this thread; it is copied at once.
    unsafe {
        let f = lib.get::<unsafe extern "C" fn() -> *const c_char>(symbol).ok()?;
        let p = f();
        (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
    }
}

/// The checker findings of this thread's last launch, if it had any.
pub fn last_report() -> Option<String> {
    call_str(b"ak_emu_last_report\0").filter(|s| !s.is_empty())
}

/// The emulator's settings (schedule, seed, checkers, compute capability).
pub fn describe() -> Option<String> {
    call_str(b"ak_emu_describe\0")
}

/// Every kernel the emulated device knows, with how often this process launched it.
pub fn kernel_launches() -> Vec<(String, u64)> {
    let Some(lib) = library() else { return Vec::new() };
    // SAFETY: plain C functions of our emulator: a count, then names (static strings) and
    // counters by index below that count.
    unsafe {
        let (Ok(count), Ok(name), Ok(launches)) = (
            lib.get::<unsafe extern "C" fn() -> usize>(b"ak_emu_kernel_count\0"),
            lib.get::<unsafe extern "C" fn(usize) -> *const c_char>(b"ak_emu_kernel_name\0"),
            lib.get::<unsafe extern "C" fn(usize) -> u64>(b"ak_emu_kernel_launches\0"),
        ) else {
            return Vec::new();
        };
        (0..count()).map(|i| (CStr::from_ptr(name(i)).to_string_lossy().into_owned(), launches(i))).collect()
    }
}
