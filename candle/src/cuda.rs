//! The zero-copy CUDA side (feature `cuda`): candle's CUDA storage as the library's borrowed
//! device views, outputs allocated by candle's device, launches on candle's stream.
//!
//! - An input is a [`DeviceView`] of the `CudaSlice`'s device address plus the layout's start
//!   offset, with the layout's shape and element strides: no copy, whatever the batch, row and
//!   head strides (the last dimension is contiguous; [`crate::common::device_ready`] copies the
//!   rare layouts the kernels cannot address before the op is applied).
//! - An output is a fresh `CudaSlice` of candle's device (uninitialised: the kernels write every
//!   element), wrapped as a packed [`DeviceViewMut`] for the launch and returned to candle as its
//!   storage.
//! - The library's [`Gpu`] handle is opened once per device ordinal (`Gpu::new`, the primary
//!   context, which candle uses too) and re-pointed at candle's stream for every call
//!   (`Gpu::with_stream(CudaDevice::cuda_stream())`): the kernels are ordered with candle's own
//!   work, with no synchronisation. Both crates use the same cudarc, so the stream type is the same.
//! - cudarc's per-slice event tracking (on when candle's context tracks events) is honoured:
//!   every address is taken with `device_ptr` / `device_ptr_mut` on candle's stream and the
//!   guards are dropped after the launch is enqueued.

use crate::common::ak_err;
use attn_kernels as ak;
use ak::{DeviceView, DeviceViewMut, Gpu};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, SyncOnDrop};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, CudaStorageSlice};
use candle_core::{bail, Layout, Result, Shape, Storage, Tensor};
use half::{bf16, f16};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// The library's handle for `dev`, enqueueing on candle's stream of that device.
pub(crate) fn gpu_for(dev: &CudaDevice) -> Result<Gpu> {
    static GPUS: OnceLock<Mutex<HashMap<usize, Gpu>>> = OnceLock::new();
    let stream = dev.cuda_stream();
    let ordinal = stream.context().ordinal();
    let base = {
        let mut gpus = GPUS.get_or_init(Default::default).lock().unwrap();
        match gpus.get(&ordinal) {
            Some(g) => g.clone(),
            None => {
                let g = Gpu::new(ordinal).map_err(ak_err)?;
                gpus.insert(ordinal, g.clone());
                g
            }
        }
    };
    base.with_stream(stream).map_err(ak_err)
}

/// A borrowed input: the view and the event guard of the slice it points into.
pub(crate) struct In<'a> {
    pub view: DeviceView<'a>,
    _sync: SyncOnDrop<'a>,
}

fn view_of<'a, T: DeviceRepr>(arg: &str, s: &'a CudaSlice<T>, dtype: ak::DType, l: &Layout, stream: &'a CudaStream) -> Result<In<'a>> {
    let size = std::mem::size_of::<T>();
    let (ptr, sync) = s.device_ptr(stream);
    let offset = l.start_offset();
    if offset > s.len() {
        bail!("attn-kernels: `{arg}`: layout offset {offset} beyond its {} elements", s.len());
    }
    let len_bytes = (s.len() - offset) * size;
    // SAFETY: `ptr + offset * size .. + len_bytes` lies inside the live CudaSlice, device memory
    // of candle's context (the device's primary context, the one `Gpu::new` opens), borrowed for
    // 'a. The op reads it on candle's stream, after any write candle ordered before (the guard
    // made the stream wait for them), and candle cannot free or write it while the tensor's
    // storage lock is held by the running op.
    let view = unsafe { DeviceView::from_raw(ptr + (offset * size) as u64, len_bytes, dtype, l.dims(), l.stride()) };
    let view = view.map_err(|e| candle_core::Error::wrap(format!("attn-kernels: `{arg}`: {e}")))?;
    Ok(In { view, _sync: sync })
}

/// A read view of candle CUDA storage at `l` (no copy).
pub(crate) fn input<'a>(arg: &str, s: &'a CudaStorage, l: &Layout, stream: &'a CudaStream) -> Result<In<'a>> {
    match &s.slice {
        CudaStorageSlice::F32(v) => view_of(arg, v, ak::DType::F32, l, stream),
        CudaStorageSlice::F16(v) => view_of(arg, v, ak::DType::F16, l, stream),
        CudaStorageSlice::BF16(v) => view_of(arg, v, ak::DType::BF16, l, stream),
        _ => bail!("attn-kernels: `{arg}` must be f32, f16 or bf16"),
    }
}

/// An operand held by the op: the storage guard of the tensor (the views borrow from it).
pub(crate) struct Held<'t> {
    arg: &'static str,
    storage: candle_core::StorageRef<'t>,
    layout: &'t Layout,
}

impl<'t> Held<'t> {
    pub(crate) fn new(arg: &'static str, t: &'t Tensor, dev: &CudaDevice) -> Result<Held<'t>> {
        let (storage, layout) = t.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) if s.device.id() == dev.id() => {}
            _ => bail!("attn-kernels: `{arg}` must be on the CUDA device of q, it is on {:?}", t.device().location()),
        }
        Ok(Held { arg, storage, layout })
    }

    pub(crate) fn input<'a>(&'a self, stream: &'a CudaStream) -> Result<In<'a>> {
        match &*self.storage {
            Storage::Cuda(s) => input(self.arg, s, self.layout, stream),
            _ => unreachable!("checked in Held::new"),
        }
    }
}

pub(crate) fn held<'t>(arg: &'static str, t: Option<&'t Tensor>, dev: &CudaDevice) -> Result<Option<Held<'t>>> {
    t.map(|t| Held::new(arg, t, dev)).transpose()
}

pub(crate) fn held_input<'a>(h: &'a Option<Held<'_>>, stream: &'a CudaStream) -> Result<Option<In<'a>>> {
    h.as_ref().map(|h| h.input(stream)).transpose()
}

enum OutSlice {
    F32(CudaSlice<f32>),
    F16(CudaSlice<f16>),
    BF16(CudaSlice<bf16>),
}

/// An output allocated by candle's device, packed row-major.
pub(crate) struct Out {
    slice: OutSlice,
    dtype: ak::DType,
    shape: Vec<usize>,
}

fn view_mut_of<'a, T: DeviceRepr>(
    s: &'a mut CudaSlice<T>,
    dtype: ak::DType,
    shape: &[usize],
    stream: &'a CudaStream,
) -> Result<(DeviceViewMut<'a>, SyncOnDrop<'a>)> {
    let len_bytes = s.len() * std::mem::size_of::<T>();
    let (ptr, sync) = s.device_ptr_mut(stream);
    // SAFETY: the whole fresh CudaSlice of candle's device (primary context), exclusively
    // borrowed for 'a; written only by the op on candle's stream.
    let view = unsafe { DeviceViewMut::from_raw_packed(ptr, len_bytes, dtype, shape) }.map_err(ak_err)?;
    Ok((view, sync))
}

impl Out {
    pub(crate) fn alloc(dev: &CudaDevice, dtype: ak::DType, shape: &[usize]) -> Result<Out> {
        let n: usize = shape.iter().product();
        // SAFETY (uninitialised memory): every op's kernels write every element of their outputs
        // (rows that see no key get o = 0 and lse = -inf); nothing reads them before.
        let slice = unsafe {
            match dtype {
                ak::DType::F32 => OutSlice::F32(dev.alloc::<f32>(n)?),
                ak::DType::F16 => OutSlice::F16(dev.alloc::<f16>(n)?),
                ak::DType::BF16 => OutSlice::BF16(dev.alloc::<bf16>(n)?),
                ak::DType::I32 => bail!("attn-kernels: internal error: i32 output"),
            }
        };
        Ok(Out { slice, dtype, shape: shape.to_vec() })
    }

    /// The allocation as a writable view for one launch.
    pub(crate) fn view<'a>(&'a mut self, stream: &'a CudaStream) -> Result<(DeviceViewMut<'a>, SyncOnDrop<'a>)> {
        let (dtype, shape) = (self.dtype, &self.shape);
        match &mut self.slice {
            OutSlice::F32(s) => view_mut_of(s, dtype, shape, stream),
            OutSlice::F16(s) => view_mut_of(s, dtype, shape, stream),
            OutSlice::BF16(s) => view_mut_of(s, dtype, shape, stream),
        }
    }

    pub(crate) fn into_storage(self, dev: &CudaDevice) -> (CudaStorage, Shape) {
        let dev = dev.clone();
        let storage = match self.slice {
            OutSlice::F32(s) => CudaStorage::wrap_cuda_slice(s, dev),
            OutSlice::F16(s) => CudaStorage::wrap_cuda_slice(s, dev),
            OutSlice::BF16(s) => CudaStorage::wrap_cuda_slice(s, dev),
        };
        (storage, Shape::from(self.shape))
    }
}
