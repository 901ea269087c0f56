//! The CUDA runtime layer: the only place in the crate with `unsafe`.
//!
//! Layers, bottom up (after cudarc's own raw / result / safe split):
//! - [`params`]: the bindgen view of `kernels/params.h`.
//! - [`kernel_list`]: every entry point, written once; build.rs generates the entry points, the
//!   emulated device's registrations and [`KERNELS`] from it. Ops look kernels up by [`Key`]
//!   ([`find_kernel`], [`kernel`]) and launch the [`Kernel`] row with its launch constants.
//! - embedded modules: the fatbins build.rs compiled, loaded lazily per [`Gpu`].
//! - [`Gpu`]: a context plus one stream, a module/function cache shared by every clone, launch
//!   and timing helpers. Cloning is cheap; [`Gpu::fork`] gives a handle on a new stream that
//!   shares the caches (one per host thread for concurrent launches).
//! - [`DeviceTensor`]: an owned device buffer with dtype and shape, implementing
//!   [`TensorInfo`] so the same validation serves host and device calls.
//!
//! cudarc panics on its first driver call when libcuda is absent; [`Gpu::new`] checks for the
//! driver library first and returns [`Error::NoDriver`] instead.

pub mod emu;
/// The kernel list (`src/runtime/kernel_list.rs`): every CUDA entry point of the library with its
/// launch constants, per family, and the per-family constants and formulas the host needs. build.rs
/// includes the same file and generates from it the entry points (`extern "C" __global__` with
/// `__launch_bounds__`, and `static_assert`s proving the C++ constants equal the list's), the
/// emulated device's registrations, [`EmbeddedModule::kernels`] and the table [`KERNELS`].
pub mod kernel_list;
pub(crate) mod params;
pub mod probe;
pub(crate) mod tma;
pub mod view;

use crate::error::{Error, Result};
use crate::tensor::{checked_numel, DType, Tensor, TensorInfo};
use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use std::any::Any;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

pub use kernel_list::{Dt, Kernel, Key, ProbeKernel};
pub use params::BINDINGS_STATUS;
pub use view::{check_views, DeviceRead, DeviceView, DeviceViewMut, DeviceWrite, Layout, RawParts};
use params::KernelParams;

/// One compiled kernel module embedded in the library (a `kernels/**/*.cu` file).
#[derive(Debug)]
pub struct EmbeddedModule {
    /// Module name: the source path under kernels/ with `/` replaced by `_`, without `.cu`.
    pub name: &'static str,
    pub source: &'static str,
    /// The `extern "C" __global__` functions it exports.
    pub kernels: &'static [&'static str],
    /// Fatbin image (SASS per `CUDA_ARCHS` entry, PTX for the compute_ ones). Empty if not compiled.
    pub fatbin: &'static [u8],
    /// ptxas's resource report (registers, shared memory, spills) from the build.
    pub ptxas_report: &'static str,
}

mod manifest {
    use super::EmbeddedModule;
    include!(concat!(env!("OUT_DIR"), "/kernels_manifest.rs"));
}
pub use manifest::{CUDA_ARCHS, MODULES, NOT_COMPILED_REASON, NVCC_VERSION};

mod table {
    use super::kernel_list::{Dt::*, Kernel, Key, ProbeKernel::*};
    include!(concat!(env!("OUT_DIR"), "/kernel_table.rs"));
}
/// Every entry point of the build and its launch constants, generated from the kernel list.
pub use table::KERNELS;

/// The entry point for `key`, if the kernel list has one.
pub fn find_kernel(key: Key) -> Option<&'static Kernel> {
    KERNELS.iter().find(|k| k.key == key)
}

/// The entry point for `key`; without one, `Error::Unsupported` naming `arg`. Ops validate their
/// shapes first, so this error means the list and the op disagree.
pub fn kernel(arg: &str, key: Key) -> Result<&'static Kernel> {
    find_kernel(key).ok_or_else(|| Error::unsupported(arg, format!("no kernel {key:?} in the kernel list")))
}

impl DType {
    /// The kernel list's element type (the `T` of a kernel instance); `None` for i32.
    pub fn kernel_dt(self) -> Option<Dt> {
        match self {
            DType::F32 => Some(Dt::F32),
            DType::F16 => Some(Dt::F16),
            DType::BF16 => Some(Dt::BF16),
            DType::I32 => None,
        }
    }
}

/// Whether this build carries compiled kernels.
pub fn kernels_compiled() -> bool {
    NOT_COMPILED_REASON.is_none()
}

fn require_kernels() -> Result<()> {
    match NOT_COMPILED_REASON {
        None => Ok(()),
        Some(why) => Err(Error::KernelsNotCompiled(why.to_string())),
    }
}

/// Whether a CUDA driver library (libcuda) can be loaded on this machine.
#[cfg(feature = "dynamic-loading")]
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library by its known names; no driver call is made.
    unsafe { sys::is_culib_present() }
}

/// Whether a CUDA driver library (libcuda) can be loaded on this machine.
///
/// Without our `dynamic-loading` feature cudarc either links the driver (`dynamic-linking`, as
/// candle's `cuda` feature asks: the process could not have started without it, so it is
/// present) or falls back to loading it at run time (`fallback-dynamic-loading`). Opening the
/// driver by its usual names answers both: it finds the linked library already loaded, or
/// finds out whether cudarc's own dlopen will succeed.
#[cfg(not(feature = "dynamic-loading"))]
pub fn driver_present() -> bool {
    let names: &[&str] = if cfg!(windows) { &["nvcuda.dll"] } else { &["libcuda.so.1", "libcuda.so"] };
    names.iter().any(|name| {
        // SAFETY: opens the driver library without calling into it; its initialisers are the
        // ones any CUDA program runs.
        unsafe { libloading::Library::new(*name) }.is_ok()
    })
}

fn cuda_err(context: &str, e: cudarc::driver::DriverError) -> Error {
    Error::Cuda { context: context.to_string(), msg: format!("{e:?}"), source: Some(e) }
}

/// Number of CUDA devices, or why there are none.
pub fn device_count() -> Result<usize> {
    if !driver_present() {
        return Err(Error::NoDriver("libcuda could not be loaded".into()));
    }
    cudarc::driver::result::init().map_err(|e| Error::NoDevice(format!("cuInit failed: {e:?}")))?;
    let n = CudaContext::device_count().map_err(|e| cuda_err("cuDeviceGetCount", e))?;
    Ok(n.max(0) as usize)
}

/// What the runtime read off the device.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub multiprocessors: i32,
    pub l2_bytes: i32,
    pub max_shared_per_block_optin: i32,
    pub total_memory: usize,
    /// Driver API version, e.g. 13000 for CUDA 13.0.
    pub driver_version: i32,
    /// The emulated device (kernels run on the CPU; no timing is GPU timing).
    pub emulated: bool,
}

struct Shared {
    ctx: Arc<CudaContext>,
    info: DeviceInfo,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<(&'static str, &'static str), (CudaFunction, u32)>>,
    caches: Mutex<HashMap<String, Cached>>,
    /// Fill the outputs an op allocates with NaN before its kernels run (see [`Gpu::new`]).
    poison_outputs: bool,
}

/// A cached value and when its uploads are done.
#[derive(Clone)]
struct Cached {
    value: Arc<dyn Any + Send + Sync>,
    ready: Ready,
}

/// The point on one stream after which device data made there (uploads, kernels) is complete: an
/// event recorded on that stream. A handle on another stream of the same device waits for it
/// ([`Ready::wait_on`]) before it reads the data; the same stream needs no wait.
#[derive(Clone)]
pub(crate) struct Ready {
    event: Arc<cudarc::driver::CudaEvent>,
    stream: Arc<CudaStream>,
    /// The device (context) the data lives on.
    ctx: Arc<CudaContext>,
}

impl Ready {
    /// Mark everything enqueued on `gpu`'s stream so far.
    pub(crate) fn now(gpu: &Gpu) -> Result<Ready> {
        let event = gpu.stream.record_event(None).map_err(|e| cuda_err("cuEventRecord", e))?;
        Ok(Ready { event: Arc::new(event), stream: gpu.stream.clone(), ctx: gpu.shared.ctx.clone() })
    }

    /// Make `gpu`'s stream wait for the marked work; `arg` names the data in the error when `gpu`
    /// is a handle on another device (its pointers would mean nothing there).
    pub(crate) fn wait_on(&self, gpu: &Gpu, arg: &str) -> Result<()> {
        if !Arc::ptr_eq(&self.ctx, &gpu.shared.ctx) {
            return Err(Error::invalid(arg, "was made for another device (or another Gpu::new) than this handle's"));
        }
        if !Arc::ptr_eq(&self.stream, &gpu.stream) {
            gpu.stream.wait(&self.event).map_err(|e| cuda_err("cuStreamWaitEvent", e))?;
        }
        Ok(())
    }
}

/// A GPU handle: context, one stream, and caches shared by every clone and fork.
#[derive(Clone)]
pub struct Gpu {
    shared: Arc<Shared>,
    stream: Arc<CudaStream>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("info", &self.shared.info).finish()
    }
}

impl Gpu {
    /// Open device `ordinal`. Errors (never panics) when there is no driver or no such device.
    pub fn new(ordinal: usize) -> Result<Gpu> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(Error::NoDevice(format!("device ordinal {ordinal} requested, {count} device(s) present")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| cuda_err("cuDevicePrimaryCtxRetain", e))?;
        // SAFETY: every operation of this crate enqueues its reads and writes on the stream of
        // the Gpu handle it is given, so cudarc's per-buffer event tracking is not needed; users
        // that share buffers across streams synchronise them, as with any CUDA library.
        unsafe { ctx.disable_event_tracking() };
        let attr = |a| ctx.attribute(a).map_err(|e| cuda_err("cuDeviceGetAttribute", e));
        let mut driver_version = 0i32;
        // SAFETY: cuDriverGetVersion writes one int through a valid pointer.
        unsafe { sys::cuDriverGetVersion(&mut driver_version) };
        let info = DeviceInfo {
            ordinal,
            name: ctx.name().map_err(|e| cuda_err("cuDeviceGetName", e))?,
            compute_capability: ctx.compute_capability().map_err(|e| cuda_err("cuDeviceGetAttribute", e))?,
            multiprocessors: attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
            l2_bytes: attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)?,
            max_shared_per_block_optin: attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?,
            total_memory: ctx.total_mem().map_err(|e| cuda_err("cuDeviceTotalMem", e))?,
            driver_version,
            emulated: emu::is_active(),
        };
        let poison_outputs = info.emulated || std::env::var("ATTN_KERNELS_POISON_OUTPUTS").is_ok_and(|v| v == "1");
        let stream = ctx.new_stream().map_err(|e| cuda_err("cuStreamCreate", e))?;
        Ok(Gpu {
            shared: Arc::new(Shared {
                ctx,
                info,
                modules: Mutex::new(HashMap::new()),
                functions: Mutex::new(HashMap::new()),
                caches: Mutex::new(HashMap::new()),
                poison_outputs,
            }),
            stream,
        })
    }

    /// Device 0: the GPU, or the emulated device when `ATTN_KERNELS_DEVICE=emu`.
    pub fn first() -> Result<Gpu> {
        match std::env::var("ATTN_KERNELS_DEVICE").as_deref() {
            Ok("emu") => Gpu::emulated(),
            _ => Gpu::new(0),
        }
    }

    /// The emulated device: this crate's kernels executed on the CPU with GPU semantics and
    /// checkers (memcheck, racecheck, initcheck, synccheck). Loading it makes it this process's
    /// CUDA driver, so it fails if the real driver is already in use here.
    pub fn emulated() -> Result<Gpu> {
        emu::load()?;
        Gpu::new(0)
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.shared.info
    }

    /// A handle on a new stream of the same device, sharing module and table caches.
    pub fn fork(&self) -> Result<Gpu> {
        let stream = self.shared.ctx.new_stream().map_err(|e| cuda_err("cuStreamCreate", e))?;
        Ok(Gpu { shared: self.shared.clone(), stream })
    }

    /// A handle that enqueues on `stream`, a stream of this handle's device that another library
    /// made (candle's `CudaDevice::cuda_stream()`, an engine's), sharing module and table caches.
    /// Ops on it are ordered with the caller's own work on that stream: no synchronisation and no
    /// event beyond what an op's plan needs. Errors (`stream`) when the stream belongs to another
    /// context than this handle's.
    pub fn with_stream(&self, stream: Arc<CudaStream>) -> Result<Gpu> {
        if stream.context().cu_ctx() != self.shared.ctx.cu_ctx() {
            return Err(Error::invalid(
                "stream",
                "belongs to another CUDA context than this handle's (open the handle on the same device: Gpu::new uses the primary context)",
            ));
        }
        Ok(Gpu { shared: self.shared.clone(), stream })
    }

    /// [`Gpu::with_stream`] for a raw `CUstream` (or `cudaStream_t`; null is the legacy default
    /// stream).
    ///
    /// # Safety
    /// `stream` must be a live stream of this handle's context (the device's primary context) and
    /// stay alive as long as the returned handle or anything planned on it is used; the handle
    /// does not destroy it.
    pub unsafe fn with_raw_stream(&self, stream: sys::CUstream) -> Gpu {
        // SAFETY: the caller's promise: a live stream of this context that outlives the handle.
        let stream = unsafe { self.shared.ctx.wrap_borrowed_stream(stream) };
        Gpu { shared: self.shared.clone(), stream }
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Block until all work queued on this handle's stream is done.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| cuda_err("cuStreamSynchronize", e))
    }

    /// A value computed once per device and key (RoPE tables, workspace), shared by all handles.
    /// `make` may enqueue uploads on this handle's stream; an event recorded after it lets every
    /// other stream that gets the value wait for those uploads before its next work.
    pub(crate) fn cached<T: Any + Send + Sync>(&self, key: &str, make: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        let hit = self.shared.caches.lock().unwrap().get(key).cloned();
        let entry = match hit {
            Some(entry) => entry,
            None => {
                let value: Arc<dyn Any + Send + Sync> = Arc::new(make()?);
                let made = Cached { value, ready: Ready::now(self)? };
                // Two handles may race to make the same value: the first one stored wins.
                self.shared.caches.lock().unwrap().entry(key.to_string()).or_insert(made).clone()
            }
        };
        entry.ready.wait_on(self, "cache entry")?;
        entry.value.downcast::<T>().map_err(|_| Error::invalid("cache key", format!("`{key}` holds another type")))
    }

    fn module(&self, name: &'static str) -> Result<Arc<CudaModule>> {
        if !self.shared.info.emulated {
            require_kernels()?;
        }
        if let Some(m) = self.shared.modules.lock().unwrap().get(name) {
            return Ok(m.clone());
        }
        let embedded = MODULES
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| Error::KernelsNotCompiled(format!("no kernel module named `{name}` in this build")))?;
        // Copy into an owned (malloc-aligned) buffer: include_bytes! gives no alignment guarantee.
        // The emulated driver links the kernels in and takes any image; a build without nvcc
        // has none, so it gets the module's name.
        let bytes = if embedded.fatbin.is_empty() { name.as_bytes().to_vec() } else { embedded.fatbin.to_vec() };
        let image = cudarc::nvrtc::Ptx::from_binary(bytes);
        let module = self.shared.ctx.load_module(image).map_err(|e| cuda_err(&format!("cuModuleLoadData({name})"), e))?;
        self.shared.modules.lock().unwrap().insert(name, module.clone());
        Ok(module)
    }

    fn function(&self, module: &'static str, kernel: &'static str, shared_bytes: u32) -> Result<CudaFunction> {
        let key = (module, kernel);
        let mut cached = self.shared.functions.lock().unwrap().get(&key).cloned();
        if cached.is_none() {
            let f = self
                .module(module)?
                .load_function(kernel)
                .map_err(|e| cuda_err(&format!("cuModuleGetFunction({module}::{kernel})"), e))?;
            cached = Some((f, 48 * 1024));
        }
        let (f, mut limit) = cached.unwrap();
        if shared_bytes > limit {
            if shared_bytes as i32 > self.shared.info.max_shared_per_block_optin {
                return Err(Error::unsupported(
                    "shared memory",
                    format!(
                        "{kernel} needs {shared_bytes} bytes of shared memory per block, this GPU allows {}",
                        self.shared.info.max_shared_per_block_optin
                    ),
                ));
            }
            f.set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                shared_bytes as i32,
            )
            .map_err(|e| cuda_err("cuFuncSetAttribute", e))?;
            limit = shared_bytes;
        }
        self.shared.functions.lock().unwrap().insert(key, (f.clone(), limit));
        Ok(f)
    }

    /// Load `kernel`'s module and resolve its entry point now (ops do it lazily on their first
    /// launch): an engine can call it for [`KERNELS`] at start-up to fail early on a bad build.
    pub fn preload(&self, kernel: &Kernel) -> Result<()> {
        self.function(kernel.module, kernel.name, 0).map(|_| ())
    }

    /// Launch `kernel` with one parameter struct, its block and dynamic shared memory from the
    /// table. A grid with a zero dimension launches nothing. Callers validate every argument
    /// first: this is the last step of an op.
    pub(crate) fn launch<P: KernelParams + cudarc::driver::DeviceRepr>(
        &self,
        kernel: &Kernel,
        grid: (u32, u32, u32),
        params: &P,
    ) -> Result<()> {
        self.launch_with(kernel, grid, kernel.block_dim(), kernel.smem_bytes, params)
    }

    /// [`Gpu::launch`] with a block and dynamic shared memory chosen at the call, for kernels
    /// whose table row leaves them to the launch (a probe's block, the recurrent prefill's chunk).
    pub(crate) fn launch_with<P: KernelParams + cudarc::driver::DeviceRepr>(
        &self,
        kernel: &Kernel,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_bytes: u32,
        params: &P,
    ) -> Result<()> {
        let (module, kernel) = (kernel.module, kernel.name);
        let f = self.function(module, kernel, shared_bytes)?;
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        if grid.1 > 65535 || grid.2 > 65535 {
            return Err(Error::unsupported("grid", format!("{kernel}: grid {grid:?} exceeds 65535 in y or z")));
        }
        let cfg = LaunchConfig { grid_dim: grid, block_dim: block, shared_mem_bytes: shared_bytes };
        let mut builder = self.stream.launch_builder(&f);
        builder.arg(params);
        // SAFETY: `params` is a #[repr(C)] struct from kernels/params.h (KernelParams), the
        // kernel's only argument; its device pointers were taken from live DeviceTensors that
        // the op validated for shape and size against the same struct's dimensions.
        unsafe { builder.launch(cfg) }.map_err(|e| {
            let mut err = cuda_err(&format!("launch {module}::{kernel}"), e);
            if let (Error::Cuda { msg, .. }, Some(report)) = (&mut err, emu::last_report()) {
                msg.push('\n');
                msg.push_str(&report);
            }
            err
        })?;
        Ok(())
    }

    /// Time `work` with CUDA events: `warmup` untimed runs, then `iters` timed ones (ms each).
    pub fn time_ms(&self, warmup: usize, iters: usize, mut work: impl FnMut() -> Result<()>) -> Result<Vec<f32>> {
        for _ in 0..warmup {
            work()?;
        }
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            let start = self.stream.record_event(flags).map_err(|e| cuda_err("cuEventRecord", e))?;
            work()?;
            let end = self.stream.record_event(flags).map_err(|e| cuda_err("cuEventRecord", e))?;
            end.synchronize().map_err(|e| cuda_err("cuEventSynchronize", e))?;
            times.push(start.elapsed_ms(&end).map_err(|e| cuda_err("cuEventElapsedTime", e))?);
        }
        Ok(times)
    }

    // ----------------------------------------------------------------------------- memory

    /// Allocate an uninitialised device tensor.
    pub fn alloc(&self, dtype: DType, shape: &[usize]) -> Result<DeviceTensor> {
        let bytes = byte_size("shape", dtype, shape)?;
        // SAFETY: the buffer is only handed to kernels that write it, or to `poison`/copies;
        // reading uninitialised device memory is not undefined behaviour on the host side.
        let buf = unsafe { self.stream.alloc::<u8>(bytes.max(1)) }.map_err(|e| cuda_err("cuMemAllocAsync", e))?;
        Ok(DeviceTensor { dtype, shape: shape.to_vec(), buf })
    }

    /// Allocate and fill every byte with 0xFF (NaN in f32, f16 and bf16; -1 in i32), so that
    /// elements a kernel fails to write show up in tests.
    pub fn alloc_poisoned(&self, dtype: DType, shape: &[usize]) -> Result<DeviceTensor> {
        let mut t = self.alloc(dtype, shape)?;
        self.poison(&mut t)?;
        Ok(t)
    }

    /// Allocate an output of an op: plain, or poisoned (as [`Gpu::alloc_poisoned`]) on the emulated
    /// device and when `ATTN_KERNELS_POISON_OUTPUTS=1` was set as the device was opened, so an
    /// element a kernel fails to write shows up as NaN.
    pub(crate) fn alloc_output(&self, dtype: DType, shape: &[usize]) -> Result<DeviceTensor> {
        if self.shared.poison_outputs {
            self.alloc_poisoned(dtype, shape)
        } else {
            self.alloc(dtype, shape)
        }
    }

    /// Fill every byte of `t` with 0xFF.
    pub fn poison(&self, t: &mut DeviceTensor) -> Result<()> {
        let n = t.buf.len();
        // SAFETY: writes exactly the buffer's own `n` bytes, on this handle's stream.
        unsafe { cudarc::driver::result::memset_d8_async(t.device_ptr(), 0xFF, n, self.stream.cu_stream()) }
            .map_err(|e| cuda_err("cuMemsetD8Async", e))
    }

    /// Allocate and zero.
    pub fn zeros(&self, dtype: DType, shape: &[usize]) -> Result<DeviceTensor> {
        let t = self.alloc(dtype, shape)?;
        let n = t.buf.len();
        // SAFETY: as in `poison`.
        unsafe { cudarc::driver::result::memset_d8_async(t.device_ptr(), 0, n, self.stream.cu_stream()) }
            .map_err(|e| cuda_err("cuMemsetD8Async", e))?;
        Ok(t)
    }

    /// Copy index data (cu_seqlens, position ids, block tables, slot ids) to the device as an
    /// i32 tensor of its length.
    pub fn upload_i32(&self, data: &[i32]) -> Result<DeviceTensor> {
        self.upload(&Tensor::from_i32(&[data.len()], data)?)
    }

    /// Copy a host tensor to the device.
    pub fn upload(&self, t: &Tensor) -> Result<DeviceTensor> {
        let bytes = t.to_le_bytes();
        let buf = if bytes.is_empty() {
            // SAFETY: a 1-byte placeholder allocation; never read (the tensor has no elements).
            unsafe { self.stream.alloc::<u8>(1) }
        } else {
            self.stream.clone_htod(&bytes)
        }
        .map_err(|e| cuda_err("cuMemcpyHtoDAsync", e))?;
        Ok(DeviceTensor { dtype: t.dtype(), shape: t.shape().to_vec(), buf })
    }

    /// Copy a device tensor back to the host (synchronises the stream).
    pub fn download(&self, t: &DeviceTensor) -> Result<Tensor> {
        let mut bytes = self.stream.clone_dtoh(&t.buf).map_err(|e| cuda_err("cuMemcpyDtoH", e))?;
        bytes.truncate(t.byte_len());
        Tensor::from_le_bytes("device tensor", t.dtype, &t.shape, &bytes)
    }

    /// Device-to-device copy of `src` into `dst` (same byte size), for bandwidth probes.
    pub fn copy(&self, src: &DeviceTensor, dst: &mut DeviceTensor) -> Result<()> {
        if src.byte_len() != dst.byte_len() {
            return Err(Error::invalid("dst", format!("{} bytes, source has {}", dst.byte_len(), src.byte_len())));
        }
        self.stream.memcpy_dtod(&src.buf, &mut dst.buf).map_err(|e| cuda_err("cuMemcpyDtoDAsync", e))
    }
}

fn byte_size(arg: &str, dtype: DType, shape: &[usize]) -> Result<usize> {
    checked_numel(arg, shape)?
        .checked_mul(dtype.size())
        .ok_or_else(|| Error::invalid(arg, format!("byte size of {dtype} {shape:?} overflows")))
}

/// An owned, contiguous device tensor.
pub struct DeviceTensor {
    dtype: DType,
    shape: Vec<usize>,
    buf: CudaSlice<u8>,
}

impl std::fmt::Debug for DeviceTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceTensor({} {:?})", self.dtype, self.shape)
    }
}

impl TensorInfo for DeviceTensor {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

impl DeviceTensor {
    pub fn byte_len(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    fn device_ptr(&self) -> sys::CUdeviceptr {
        let (ptr, _sync) = self.buf.device_ptr(self.buf.stream());
        ptr
    }

    /// Device address for a kernel parameter struct (read-only use).
    pub fn kernel_ptr(&self) -> *const c_void {
        self.device_ptr() as usize as *const c_void
    }

    /// Device address for a kernel parameter struct (the kernel writes through it).
    pub fn kernel_ptr_mut(&mut self) -> *mut c_void {
        self.device_ptr() as usize as *mut c_void
    }

    /// Same buffer, new shape with the same element count.
    pub fn reshape(mut self, shape: &[usize]) -> Result<DeviceTensor> {
        if checked_numel("shape", shape)? != self.numel() {
            return Err(Error::shape("shape", format!("{} elements", self.numel()), shape));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }
}

/// Optional pointer helpers for parameter structs.
pub fn opt_ptr(t: Option<&DeviceTensor>) -> *const c_void {
    t.map_or(std::ptr::null(), |t| t.kernel_ptr())
}
