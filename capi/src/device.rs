//! The device handle and the memory helpers a C program without its own CUDA runtime needs:
//! allocate, free, copy host <-> device, synchronise.
//!
//! The copies accept only ranges inside buffers this handle allocated (`ak_alloc`), so they
//! cannot write memory the caller did not give them; an engine with its own allocator uses its
//! own copies (cudaMemcpy) and passes its device addresses to the ops.

use crate::{guard, required, AkStatus, CUstream_st, Failure, Res};
use attn_kernels::{DType, DeviceRead, DeviceTensor, Error, Gpu};
use cudarc::driver::{result, sys};
use std::collections::BTreeMap;
use std::ffi::{c_int, c_void};
use std::sync::Mutex;

/// An open device: a `Gpu` handle (the device's primary context, the library's caches) and the
/// buffers `ak_alloc` made on it. Opaque to C; shareable between threads.
pub struct AkDevice {
    gpu: Gpu,
    /// Buffers of `ak_alloc` by device address: the tensor and the bytes asked for.
    buffers: Mutex<BTreeMap<u64, (DeviceTensor, u64)>>,
}

impl AkDevice {
    /// The handle enqueuing on `stream` (NULL: the legacy default stream).
    ///
    /// # Safety
    /// `stream` is NULL or a live stream of this device's primary context that outlives the
    /// returned handle and everything enqueued through it.
    pub(crate) unsafe fn on_stream(&self, stream: *mut CUstream_st) -> Gpu {
        // SAFETY: the caller's promise, passed on; NULL is CUDA's legacy default stream.
        unsafe { self.gpu.with_raw_stream(stream.cast::<sys::CUstream_st>()) }
    }

    /// The buffer of `ak_alloc` holding `[addr, addr + bytes)`, or an error naming `arg`.
    fn check_range(&self, arg: &str, addr: u64, bytes: u64) -> Res<()> {
        let buffers = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        let inside = buffers
            .range(..=addr)
            .next_back()
            .is_some_and(|(&base, &(_, size))| matches!((addr.checked_add(bytes), base.checked_add(size)), (Some(end), Some(limit)) if end <= limit));
        if inside {
            Ok(())
        } else {
            Err(Error::invalid(arg, format!("[{addr:#x}, +{bytes}) is not inside a buffer of ak_alloc on this device")).into())
        }
    }
}

/// Open device `ordinal` and store its handle in `*out` (NULL on failure).
///
/// With the environment variable `ATTN_KERNELS_DEVICE=emu` this opens the emulated device
/// instead (the library's CUDA kernels run on the CPU with GPU semantics and memory/race
/// checkers; a build with the `emulator` feature): `ordinal` must then be 0, and the process
/// must not use the real CUDA driver.
///
/// # Safety
/// `out` is NULL (refused) or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn ak_device_open(ordinal: c_int, out: *mut *mut AkDevice) -> AkStatus {
    guard(|| {
        // SAFETY: the caller's promise: NULL or writable.
        let out = unsafe { out.as_mut() }.ok_or_else(|| Failure::null("out"))?;
        *out = std::ptr::null_mut();
        let ordinal = usize::try_from(ordinal).map_err(|_| Error::invalid("ordinal", format!("{ordinal} is negative")))?;
        let gpu = if std::env::var("ATTN_KERNELS_DEVICE").as_deref() == Ok("emu") {
            if ordinal != 0 {
                return Err(Error::NoDevice(format!("device ordinal {ordinal} requested, the emulated device is device 0")).into());
            }
            Gpu::first()?
        } else {
            Gpu::new(ordinal)?
        };
        *out = Box::into_raw(Box::new(AkDevice { gpu, buffers: Mutex::new(BTreeMap::new()) }));
        Ok(())
    })
}

/// Close a device handle: waits for all work of this process on the device, then frees every
/// buffer `ak_alloc` made on it that is still allocated. NULL is a no-op.
///
/// # Safety
/// `dev` is NULL or a handle of `ak_device_open` not yet closed; no other thread uses it.
#[no_mangle]
pub unsafe extern "C" fn ak_device_close(dev: *mut AkDevice) -> AkStatus {
    guard(|| {
        if dev.is_null() {
            return Ok(());
        }
        // SAFETY: the caller's promise: a live handle of `Box::into_raw`, used by no one else.
        let dev = unsafe { Box::from_raw(dev) };
        let synced = dev.gpu.stream().context().synchronize();
        drop(dev);
        synced.map_err(|e| cuda_failure("cuCtxSynchronize", e))
    })
}

/// Whether the handle is the emulated device (`*out` = 1) or a GPU (0).
///
/// # Safety
/// `dev` is a live handle; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn ak_device_is_emulated(dev: *const AkDevice, out: *mut c_int) -> AkStatus {
    guard(|| {
        // SAFETY: the caller's promise: a live handle.
        let dev = unsafe { required("dev", dev) }?;
        // SAFETY: the caller's promise: NULL or writable.
        let out = unsafe { out.as_mut() }.ok_or_else(|| Failure::null("out"))?;
        *out = dev.gpu.info().emulated as c_int;
        Ok(())
    })
}

fn cuda_failure(call: &str, e: cudarc::driver::DriverError) -> Failure {
    Failure { status: AkStatus::AK_ERR_CUDA, msg: format!("CUDA error in {call}: {e:?}") }
}

/// Allocate `bytes` bytes of device memory (uninitialised, aligned as CUDA allocations are) and store
/// its device address in `*out_ptr`. The memory is usable on any stream once this returns.
///
/// # Safety
/// `dev` is a live handle; `out_ptr` is writable.
#[no_mangle]
pub unsafe extern "C" fn ak_alloc(dev: *const AkDevice, bytes: u64, out_ptr: *mut u64) -> AkStatus {
    guard(|| {
        // SAFETY: the caller's promise: a live handle.
        let dev = unsafe { required("dev", dev) }?;
        // SAFETY: the caller's promise: NULL or writable.
        let out = unsafe { out_ptr.as_mut() }.ok_or_else(|| Failure::null("out_ptr"))?;
        *out = 0;
        let words = usize::try_from(bytes.div_ceil(4))
            .map_err(|_| Error::invalid("bytes", format!("{bytes} exceed the address space")))?;
        let t = dev.gpu.alloc(DType::I32, &[words.max(1)])?;
        // The allocation is stream-ordered on the handle's own stream: finish it so every
        // stream may use the memory.
        dev.gpu.synchronize()?;
        let addr = t.view().parts().addr;
        dev.buffers.lock().unwrap_or_else(|p| p.into_inner()).insert(addr, (t, bytes));
        *out = addr;
        Ok(())
    })
}

/// Free a buffer of `ak_alloc` (0 is a no-op). Waits for all work of this process on the device
/// first, as cudaFree does.
///
/// # Safety
/// `dev` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn ak_free(dev: *const AkDevice, ptr: u64) -> AkStatus {
    guard(|| {
        // SAFETY: the caller's promise: a live handle.
        let dev = unsafe { required("dev", dev) }?;
        if ptr == 0 {
            return Ok(());
        }
        let mut buffers = dev.buffers.lock().unwrap_or_else(|p| p.into_inner());
        if !buffers.contains_key(&ptr) {
            return Err(Error::invalid("ptr", format!("{ptr:#x} is not a buffer of ak_alloc on this device")).into());
        }
        dev.gpu.stream().context().synchronize().map_err(|e| cuda_failure("cuCtxSynchronize", e))?;
        buffers.remove(&ptr);
        Ok(())
    })
}

/// Copy `bytes` bytes from host `src` to device address `dst` (inside one buffer of `ak_alloc`),
/// ordered on `stream` (NULL: the legacy default stream); returns when the copy is done.
///
/// # Safety
/// `dev` is a live handle; `src` points to `bytes` readable bytes; `stream` is NULL or a live
/// stream of the device's primary context.
#[no_mangle]
pub unsafe extern "C" fn ak_memcpy_htod(dev: *const AkDevice, stream: *mut CUstream_st, dst: u64, src: *const c_void, bytes: u64) -> AkStatus {
    guard(|| {
        // SAFETY: the caller's promise: a live handle.
        let dev = unsafe { required("dev", dev) }?;
        if bytes == 0 {
            return Ok(());
        }
        dev.check_range("dst", dst, bytes)?;
        let src = host_bytes("src", src, bytes)?;
        // SAFETY: the caller's promise: `src` holds `bytes` readable bytes (checked non-null).
        let src = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), src_len(bytes)) };
        // SAFETY: the caller's promise about the stream.
        let gpu = unsafe { dev.on_stream(stream) };
        gpu.stream().context().bind_to_thread().map_err(|e| cuda_failure("cuCtxSetCurrent", e))?;
        // SAFETY: `[dst, dst + bytes)` lies in a live allocation of this context (checked
        // above); the host slice stays borrowed until the stream is synchronised below.
        unsafe { result::memcpy_htod_async(dst, src, gpu.stream().cu_stream()) }.map_err(|e| cuda_failure("cuMemcpyHtoDAsync", e))?;
        gpu.synchronize()?;
        Ok(())
    })
}

/// Copy `bytes` bytes from device address `src` (inside one buffer of `ak_alloc`) to host `dst`,
/// ordered on `stream` (NULL: the legacy default stream); returns when the copy is done.
///
/// # Safety
/// `dev` is a live handle; `dst` points to `bytes` writable bytes; `stream` is NULL or a live
/// stream of the device's primary context.
#[no_mangle]
pub unsafe extern "C" fn ak_memcpy_dtoh(dev: *const AkDevice, stream: *mut CUstream_st, dst: *mut c_void, src: u64, bytes: u64) -> AkStatus {
    guard(|| {
        // SAFETY: the caller's promise: a live handle.
        let dev = unsafe { required("dev", dev) }?;
        if bytes == 0 {
            return Ok(());
        }
        dev.check_range("src", src, bytes)?;
        let dst = host_bytes("dst", dst, bytes)?.cast_mut();
        // SAFETY: the caller's promise: `dst` holds `bytes` writable bytes (checked non-null).
        let dst = unsafe { std::slice::from_raw_parts_mut(dst.cast::<u8>(), src_len(bytes)) };
        // SAFETY: the caller's promise about the stream.
        let gpu = unsafe { dev.on_stream(stream) };
        gpu.stream().context().bind_to_thread().map_err(|e| cuda_failure("cuCtxSetCurrent", e))?;
        // SAFETY: `[src, src + bytes)` lies in a live allocation of this context (checked
        // above); the host slice stays borrowed until the stream is synchronised below.
        unsafe { result::memcpy_dtoh_async(dst, src, gpu.stream().cu_stream()) }.map_err(|e| cuda_failure("cuMemcpyDtoHAsync", e))?;
        gpu.synchronize()?;
        Ok(())
    })
}

/// Block until all work queued on `stream` (NULL: the legacy default stream) is done.
///
/// # Safety
/// `dev` is a live handle; `stream` is NULL or a live stream of the device's primary context.
#[no_mangle]
pub unsafe extern "C" fn ak_stream_synchronize(dev: *const AkDevice, stream: *mut CUstream_st) -> AkStatus {
    guard(|| {
        // SAFETY: the caller's promise: a live handle.
        let dev = unsafe { required("dev", dev) }?;
        // SAFETY: the caller's promise about the stream.
        let gpu = unsafe { dev.on_stream(stream) };
        Ok(gpu.synchronize()?)
    })
}

/// A host pointer for `bytes` bytes: non-null and a length the address space holds.
fn host_bytes(arg: &str, p: *const c_void, bytes: u64) -> Res<*const c_void> {
    if p.is_null() {
        return Err(Failure::null(arg));
    }
    if bytes > isize::MAX as u64 {
        return Err(Error::invalid("bytes", format!("{bytes} exceed the address space")).into());
    }
    Ok(p)
}

/// `bytes` as a slice length (`host_bytes` checked that it fits).
fn src_len(bytes: u64) -> usize {
    bytes as usize
}

// The header promises a handle usable from several threads at once.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<AkDevice>()
};
